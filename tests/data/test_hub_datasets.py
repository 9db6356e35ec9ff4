"""Hub datasets (`hf_hub_url`, `dataset_dir: REMOTE:org/repo`) through the real `datasets` client, against a
local server that speaks the Hub's protocol, then offline from the cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.model.hub_server import serve

REPO = Path(__file__).resolve().parents[2]
ROWS = [{"instruction": f"Say {i}.", "output": f"{i}"} for i in range(7)]
COUNT = (
    "import sys; from tuneforge.config import DataArguments; from tuneforge.data.loader import load_examples;"
    "from tuneforge.data.streaming import iter_conversations;"
    "a = DataArguments(dataset=[sys.argv[1]], dataset_dir=sys.argv[2], streaming=sys.argv[3] == 'stream');"
    "rows = list(iter_conversations(a, print)) if a.streaming else load_examples(a).examples;"
    "print(len(rows), rows[0].source, rows[-1].messages[-1].content)"
)


def count(
    name: str, dataset_dir: str, env: dict[str, str], mode: str = "load"
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", COUNT, name, dataset_dir, mode],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, **env},
    )  # fmt: skip


def test_hf_hub_url_and_remote_dataset_dir_then_offline(tmp_path):
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "data" / "train.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS))
    (repo / "README.md").write_text("---\nlicense: mit\n---\n")
    (repo / "dataset_info.json").write_text(json.dumps({"remote_rows": {"hf_hub_url": "acme/rows"}}))
    local = tmp_path / "local"
    local.mkdir()
    (local / "dataset_info.json").write_text(
        json.dumps({"rows": {"hf_hub_url": "acme/rows", "split": "train"}})
    )
    home = {"HF_HOME": str(tmp_path / "hf-home")}
    server, hub, url = serve(repo, "acme/rows", kind="dataset")
    try:
        online = {**home, "HF_ENDPOINT": url, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0"}
        first = count("rows", str(local), online)
        assert first.returncode == 0, first.stderr[-2000:]
        assert first.stdout.split()[:2] == ["7", "acme/rows[train]:1"] and first.stdout.split()[-1] == "6"
        streamed = count("rows", str(local), online, "stream")
        assert streamed.returncode == 0 and streamed.stdout.split()[0] == "7", streamed.stderr[-2000:]
        remote = count("remote_rows", "REMOTE:acme/rows", online)
        assert remote.returncode == 0 and remote.stdout.split()[0] == "7", remote.stderr[-2000:]
    finally:
        server.shutdown()
    offline = count("rows", str(local), {**home, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert offline.returncode == 0 and offline.stdout.split()[0] == "7", offline.stderr[-2000:]
    missing = count("rows", str(local), {"HF_HOME": str(tmp_path / "empty"), "HF_DATASETS_OFFLINE": "1"})
    assert missing.returncode != 0 and "not in the datasets cache and offline mode is on" in missing.stderr
