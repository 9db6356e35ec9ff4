"""The train page's dataset picker: dataset names from a folder's dataset_info.json, and the first rows
rendered through the chosen template with the trained span marked (the same code as `tuneforge data preview`)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from tuneforge.board.paths import check_paths
from tuneforge.board.requests import Problems
from tuneforge.config import ConfigError, build_config
from tuneforge.data.conversation import DataError

MAX_ROWS = 20


class DatasetPreviews:
    """Lists and previews datasets for the board; tokenizers are loaded once per model."""

    def __init__(self, roots: list[Path], check_model: Any):
        self.roots = roots
        self.check_model = check_model
        self._tokenizers: dict[str, Any] = {}
        self._lock = threading.Lock()

    def datasets(self, dataset_dir: str) -> list[str]:
        from tuneforge.data.loader import read_dataset_info

        problems = check_paths({"dataset_dir": dataset_dir}, self.roots, ("dataset_dir",))
        if problems:
            raise Problems(problems)
        try:
            return sorted(read_dataset_info(dataset_dir))
        except DataError as err:
            raise Problems([str(err)]) from None

    def preview(self, flat: dict[str, Any], rows: int) -> dict[str, Any]:
        """The first `rows` rows of the form's datasets as training would see them."""
        from tuneforge.data.validate import preview_rows, trainable_segments
        from tuneforge.inference.loading import image_facts

        flat = {k: v for k, v in flat.items() if v is not None}
        problems = check_paths({"dataset_dir": flat.get("dataset_dir", "data")}, self.roots, ("dataset_dir",))
        model = str(flat.get("model_name_or_path") or "")
        problem = (
            self.check_model(model) if model else "key 'model_name_or_path': pick a model to preview with"
        )
        if problem:
            problems.append(problem)
        if not flat.get("dataset"):
            problems.append("key 'dataset': pick a dataset to preview")
        if problems:
            raise Problems(problems)
        try:
            cfg = build_config(flat)
        except ConfigError as err:
            raise Problems(list(err.problems)) from None
        try:
            tokenizer = self._tokenizer(cfg.model)
            family = image_facts(cfg.model, tokenizer, cfg.data)  # a vision-language model's image tokens
            shown = preview_rows(cfg.data, tokenizer, max(1, min(rows, MAX_ROWS)), family)
        except DataError as err:
            raise Problems([str(err)]) from None
        return {
            "rows": [
                {
                    "source": example.source,
                    "tokens": len(example.input_ids),
                    "trained": example.trainable_tokens,
                    "truncated": example.truncated,
                    "segments": trainable_segments(example, tokenizer),
                }
                for example in shown.rows
            ],
            "problems": [p.message for p in shown.problems],
            "dropped": shown.dropped,
        }

    def _tokenizer(self, model_args: Any) -> Any:
        from tuneforge.model.loader import load_tokenizer

        with self._lock:
            key = model_args.model_name_or_path
            if key not in self._tokenizers:
                self._tokenizers[key] = load_tokenizer(model_args)
            return self._tokenizers[key]
