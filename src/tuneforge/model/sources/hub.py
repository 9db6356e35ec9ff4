"""A hub id (`org/name`): downloaded with huggingface_hub (or ModelScope's client with USE_MODELSCOPE_HUB=1 or
ms_hub_token) into the standard cache, resuming, offline from the cache with HF_HUB_OFFLINE=1."""

from __future__ import annotations

from pathlib import Path

from tuneforge.model import hub
from tuneforge.model.sources import ModelRequest, register_source


@register_source("hub", order=40)
class HubSource:
    def claims(self, name: str) -> bool:
        return hub.looks_like_repo_id(name)

    def resolve(self, request: ModelRequest) -> Path:
        snapshot = hub.fetch(
            request.name,
            request.revision,
            request.cache_dir,
            request.token,
            request.ms_token,
            request.trust_remote_code,
        )
        return hub.check_snapshot(snapshot, request.name)
