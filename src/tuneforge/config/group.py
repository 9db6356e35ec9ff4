"""The base of every config group: unknown keys refused, assignments validated, `model_*` names allowed."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigGroup(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())
