"""`tuneforge data validate|preview`: check data and templates before spending GPU hours."""

from __future__ import annotations

import sys

from tuneforge.config import RunConfig

USAGE = """usage:
  tuneforge data validate [CONFIG.yaml] [--dataset NAME --dataset_dir DIR] [--key value ...]
  tuneforge data preview  [CONFIG.yaml] [--rows N] [--key value ...]

validate reads every row a run would read and reports each bad one as file:line with the field and
the reason, counts per category, token-length percentiles after templating and truncated rows.
It exits 0 when every row is good and 2 otherwise. No model weights are loaded (only the tokenizer).

preview prints the first N rows as the model sees them, with the trained tokens between ⟦ and ⟧.
"""


def run_data(argv: list[str]) -> int:
    from tuneforge.cli.args import split_args
    from tuneforge.config import load_config

    asks_help = any(a in ("-h", "--help") for a in argv)
    if not argv or asks_help or argv[0] not in ("validate", "preview"):
        print(USAGE)
        return 0 if asks_help else 2
    action, rest = argv[0], argv[1:]
    config, overrides, options = split_args(rest, flags=("rows",))
    # the whole schema, as `train` reads it: a key train refuses is refused here too
    cfg = load_config(config, overrides)
    if action == "validate":
        return validate(cfg)
    return preview(cfg, int(options.get("rows", 3)))


def validate(cfg: RunConfig) -> int:
    from tuneforge.data.validate import validate_data
    from tuneforge.inference.loading import image_facts
    from tuneforge.model.loader import load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    report = validate_data(cfg.data, tokenizer, image_facts(cfg.model, tokenizer, cfg.data))
    print(report.render())
    return 0 if report.clean else 2


def preview(cfg: RunConfig, rows: int) -> int:
    from tuneforge.data.validate import mark_trainable, preview_rows
    from tuneforge.inference.loading import image_facts
    from tuneforge.model.loader import load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    shown = preview_rows(cfg.data, tokenizer, rows, image_facts(cfg.model, tokenizer, cfg.data))
    color = sys.stdout.isatty()
    for example in shown.rows:
        print(f"── {example.source}: {len(example.input_ids)} tokens, {example.trainable_tokens} trained ──")
        print(mark_trainable(example, tokenizer, color))
    for problem in shown.problems:
        print(f"bad row: {problem.message}")
    for source in shown.dropped:
        print(f"no trainable token within cutoff_len: {source}")
    return 0
