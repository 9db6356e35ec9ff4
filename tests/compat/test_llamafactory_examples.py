"""LLaMA-Factory's own example files, unchanged: every one trains for a step, loads, or is refused in a
sentence, and docs/llamafactory-examples.md says which (regenerate it with
`.venv/bin/python -m tests.compat.test_llamafactory_examples --write`)."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parent / "fixtures" / "llamafactory"
EXAMPLES = FIXTURES / "examples"
TABLE = HERE.parent.parent / "docs" / "llamafactory-examples.md"


def example_files() -> list[Path]:
    return sorted(EXAMPLES.rglob("*.yaml"))


def is_inference(keys: dict) -> bool:
    return "stage" not in keys and "do_train" not in keys and "model_name_or_path" in keys


VISION_FAMILIES = {
    "qwen3-vl": "qwen3_vl",
    "qwen2.5-vl": "qwen2_5_vl",
    "qwen2-vl": "qwen2_vl",
    "llava": "llava",
}


def tiny_family(keys: dict) -> str | None:
    """The tiny vision-language family standing in for an example's model, None for text models (and for
    vision-language ones tuneforge has no family for, which then meet a text model)."""
    name = str(keys.get("model_name_or_path", "")).lower()
    if "moe" in name or "-a3b" in name:  # Qwen3-VL-MoE is its own architecture
        return None
    return next((family for marker, family in VISION_FAMILIES.items() if marker in name), None)


def outcome(path: Path, model_dir: Path, out: Path) -> str | Callable[[], str]:
    """What happens to one file with only the model, the data folder and the run's length changed; a DeepSpeed
    example is launched as a user runs it and gives a function that waits for its outcome."""
    from tuneforge.config import ConfigError, load_config, load_subset
    from tuneforge.data.conversation import DataError
    from tuneforge.train.stages import run_stage
    from tuneforge.utils.errors import UserError

    keys = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    place = [f"model_name_or_path={model_dir}", f"dataset_dir={FIXTURES / 'data'}"]
    try:
        if is_inference(keys):
            load_subset(path, place, ("model", "data", "generating"))
            return "loads for chat/serve"
        length = ["max_steps=1", "max_samples=8", "cutoff_len=128", f"output_dir={out}", "save_steps=1000"]
        cfg = load_config(path, [*place, *length, "overwrite_output_dir=true", "logging_steps=1"])
        if cfg.training.do_predict:
            from tuneforge.eval.predict import run_predict

            run_predict(
                cfg.model_copy(update={"generating": cfg.generating.model_copy(update={"max_new_tokens": 4})})
            )
            results = json.loads((out / "predict_results.json").read_text())
            assert set(results) >= {"predict_bleu-4", "predict_rouge-l"}, path
            return "predicts (BLEU-4 and ROUGE of generated answers)"
        if cfg.llamafactory.get("deepspeed"):
            wait = _launch(path, [*place, *length, "overwrite_output_dir=true", "logging_steps=1"])
            return lambda: _reported(lambda: (wait(), _trained(cfg, path, out))[1], model_dir, out)
        run_stage(cfg)
    except (ConfigError, DataError, UserError) as err:
        return _refusal(err, model_dir, out)
    return _trained(cfg, path, out)


def _trained(cfg, path: Path, out: Path) -> str:
    from tuneforge.train.callbacks import read_metrics

    losses = [r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert losses and all(math.isfinite(v) for v in losses), path
    return f"trains (stage {cfg.finetuning.stage}, {cfg.finetuning.finetuning_type})"


def _refusal(err: Exception, model_dir: Path, out: Path) -> str:
    from tuneforge.config import ConfigError

    lines = str(err).splitlines()
    problems = err.problems if isinstance(err, ConfigError) else [" ".join(x.strip() for x in lines[:2])]
    return "refused: " + " / ".join(_anonymous(p, model_dir, out) for p in problems)


def _reported(finish: Callable[[], str], model_dir: Path, out: Path) -> str:
    from tuneforge.utils.errors import UserError

    try:
        return finish()
    except UserError as err:
        return _refusal(err, model_dir, out)


def _launch(path: Path, overrides: list[str]) -> Callable[[], None]:
    """`tuneforge train` as a user runs it, from the folder LLaMA-Factory's relative paths
    (examples/deepspeed/...) are written for: DeepSpeed's processes run under torchrun. Started now (most of
    its time is imports, on one core), waited for by the function it returns, which raises the run's error."""
    import itertools
    import os
    import subprocess

    from tuneforge.utils.errors import UserError

    repo = HERE.parent.parent
    argv = [sys.executable, "-m", "tuneforge.cli.main", "train", str(path), *overrides]
    process = subprocess.Popen(
        argv, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ)
    )

    def wait() -> None:
        _, stderr = process.communicate(timeout=600)
        if process.returncode:
            lines = stderr.splitlines()
            said = [
                i for i, line in enumerate(lines) if line.startswith("tuneforge: ")
            ]  # the last is the error
            if not said:
                raise UserError(stderr[-2000:])
            # the error and its indented lines, not what torchrun prints after it (its log, with times and pids)
            ours = list(itertools.takewhile(lambda line: line.startswith("  - "), lines[said[-1] + 1 :]))
            raise UserError("\n".join([lines[said[-1]], *ours])[len("tuneforge: ") :])

    return wait


def _anonymous(problem: str, model_dir: Path, out: Path) -> str:
    """A problem sentence without this machine's paths, so the table is the same everywhere."""
    return problem.replace(str(FIXTURES), "…").replace(str(model_dir), "MODEL").replace(str(out), "OUT")


def render_table(results: dict[str, str]) -> str:
    lines = [
        "# LLaMA-Factory's example files in tuneforge",
        "",
        "Every YAML file under LLaMA-Factory's `examples/` (commit ff6d4d12eeb0), run by",
        "`tests/compat/test_llamafactory_examples.py` with only `model_name_or_path` and `dataset_dir` changed",
        "(plus `max_steps: 1`, `max_samples: 8`, `cutoff_len: 128` and `output_dir`, to keep the test short).",
        "Vision-language examples run on a tiny random model of their family (Qwen2-VL, Qwen2.5-VL, Qwen3-VL,",
        "LLaVA) with a PIL image processor; those of a family tuneforge does not train meet the tiny text model.",
        '"trains" means one optimizer step ran with a finite loss on a tiny model; "refused" quotes the sentence',
        "tuneforge prints before loading any weights.",
        "",
        "| file | outcome |",
        "|---|---|",
    ]
    lines += [f"| `{name}` | {result.replace('|', '/')} |" for name, result in sorted(results.items())]
    trained = sum(r.startswith("trains") for r in results.values())
    loads = sum(r.startswith("loads") for r in results.values())
    lines += [
        "",
        f"{trained} train, {loads} load for chat/serve, {len(results) - trained - loads} are refused.",
        "",
    ]
    return "\n".join(lines)


def all_outcomes(model_dir: Path, tmp: Path, vision_dir: Callable[[str], Path]) -> dict[str, str]:
    """Each example on the tiny text model, or on `vision_dir(family)` when its model is a vision-language one."""
    results = {}
    paths = example_files()
    # the DeepSpeed examples first: their processes start while the others train in this one
    for i, path in sorted(
        enumerate(paths), key=lambda item: "deepspeed" not in item[1].read_text(encoding="utf-8")
    ):
        family = tiny_family(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
        chosen = vision_dir(family) if family else model_dir
        results[str(path.relative_to(EXAMPLES))] = outcome(path, chosen, tmp / f"run{i}")
    return {name: result if isinstance(result, str) else result() for name, result in sorted(results.items())}


def save_tiny_model(tokenizer, path: Path) -> Path:
    """A tiny LLaMA whose layer sizes are multiples of 64, so the QLoRA examples run with bitsandbytes on CPU."""
    from tests.helpers import tiny_llama

    sizes = {"hidden_size": 64, "intermediate_size": 128}
    tiny_llama(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **sizes).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.slow
def test_every_example_trains_loads_or_is_refused_as_the_table_says(
    smollm2_tokenizer, tiny_vision_model, tmp_path
):
    results = all_outcomes(save_tiny_model(smollm2_tokenizer, tmp_path / "tiny"), tmp_path, tiny_vision_model)
    assert all(not r.startswith("refused: unknown key") and "Traceback" not in r for r in results.values())
    for name in ("train_lora/qwen3_lora_sft.yaml", "train_lora/qwen3_lora_dpo.yaml", "train_lora/qwen3_lora_kto.yaml",
                 "train_lora/qwen3_lora_pretrain.yaml", "train_lora/qwen3_lora_reward.yaml",
                 "train_lora/qwen3vl_lora_sft.yaml", "train_full/qwen3vl_full_sft.yaml",
                 "extras/oft/qwen2_5vl_oft_sft.yaml"):  # fmt: skip
        assert results[name].startswith("trains"), (name, results[name])
    assert TABLE.read_text(encoding="utf-8") == render_table(results), (
        "docs/llamafactory-examples.md is out of date: .venv/bin/python -m tests.compat.test_llamafactory_examples --write"
    )


if __name__ == "__main__" and "--write" in sys.argv:
    import os
    import tempfile

    sys.path.insert(0, str(HERE.parent.parent))
    os.environ.setdefault("TUNEFORGE_HOME", str(HERE.parent.parent / ".cache" / "test-home"))
    from transformers import AutoTokenizer

    from tests.helpers import save_tiny_vision_model
    from tuneforge.model.sources import resolve_model_path

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("smollm2-135m-instruct"))
        model_dir = save_tiny_model(tokenizer, Path(tmp) / "tiny")

        def vision_dir(family: str) -> Path:
            folder = Path(tmp) / f"tiny-{family}"
            return folder if folder.is_dir() else save_tiny_vision_model(folder, tokenizer, family)

        TABLE.parent.mkdir(exist_ok=True)
        TABLE.write_text(render_table(all_outcomes(model_dir, Path(tmp), vision_dir)), encoding="utf-8")
    print(f"wrote {TABLE}")
