"""A local Hugging Face model folder, checked for config.json, intact weights and a model_type."""

from __future__ import annotations

from pathlib import Path

from tuneforge.model.folder import check_model_folder
from tuneforge.model.sources import ModelRequest, register_source


@register_source("folder", order=30)
class FolderSource:
    def claims(self, name: str) -> bool:
        return Path(name).expanduser().is_dir()

    def resolve(self, request: ModelRequest) -> Path:
        return check_model_folder(Path(request.name).expanduser())
