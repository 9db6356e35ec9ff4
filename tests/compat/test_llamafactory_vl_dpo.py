"""LLaMA-Factory's `qwen3vl_lora_dpo.yaml`, unchanged but for the model and the data folder, trains on its
hub dataset `llamafactory/RLHF-V` (here a small copy with the same columns and embedded image bytes, served
by a local server that speaks the Hub's protocol) with the real `datasets` client."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.compat.test_llamafactory_examples import EXAMPLES, FIXTURES
from tests.helpers import SHADE_QUESTION, SHADES, shade_images
from tests.model.hub_server import serve

REPO = Path(__file__).resolve().parents[2]


def rlhf_v_copy(folder: Path) -> Path:
    """RLHF-V's layout: sharegpt `conversations`, `chosen`/`rejected` turns, `images` as datasets' Image cells."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    shade_images(folder)
    rows = []
    for image, answer in SHADES.items():
        other = next(a for a in SHADES.values() if a != answer)
        data = io.BytesIO((folder / image).read_bytes()).getvalue()
        rows.append({
            "conversations": [{"from": "human", "value": f"<image>{SHADE_QUESTION}"}],
            "chosen": {"from": "gpt", "value": answer},
            "rejected": {"from": "gpt", "value": other},
            "images": [{"bytes": data, "path": image}],
        })  # fmt: skip
    repo = folder / "repo"
    (repo / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows * 4), repo / "data" / "train-00000-of-00001.parquet")
    (repo / "README.md").write_text("---\nlicense: cc-by-nc-4.0\n---\n")
    return repo


def test_qwen3vl_lora_dpo_example_trains_on_its_hub_dataset(tmp_path, tiny_vision_model):
    server, _, url = serve(rlhf_v_copy(tmp_path), "llamafactory/RLHF-V", kind="dataset")
    out = tmp_path / "run"
    env = {**os.environ, "HF_ENDPOINT": url, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "0",
           "HF_DATASETS_OFFLINE": "0", "TUNEFORGE_HOME": str(tmp_path / "home")}  # fmt: skip
    overrides = [f"model_name_or_path={tiny_vision_model('qwen3_vl')}", f"dataset_dir={FIXTURES / 'data'}",
                 "max_steps=2", "cutoff_len=128", f"output_dir={out}", "logging_steps=1", "save_steps=1000"]  # fmt: skip
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tuneforge.cli.main", "train", str(EXAMPLES / "train_lora" / "qwen3vl_lora_dpo.yaml"),
             *overrides],
            capture_output=True, text=True, cwd=REPO, env=env, timeout=600,
        )  # fmt: skip
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "rewards/margins" in r] == [1, 2]
    config = json.loads((out / "adapter_config.json").read_text())
    assert "language_model" in config["target_modules"] and "visual" not in config["target_modules"]
    # the embedded image bytes became files under TUNEFORGE_HOME, which the rows name
    assert list((tmp_path / "home" / "cache" / "media").rglob("*"))
