"""Full tuning: every parameter of the model trains; GaLore or APOLLO can make its optimizer memory-light."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, field_validator, model_validator

from tuneforge.config.plugins import Params
from tuneforge.config.schema import split_names
from tuneforge.model.adapters import register_adapter

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from tuneforge.config import FinetuningArguments, ModelArguments


class FullParams(Params):
    use_galore: bool = Field(False, description="GaLore: low-rank projected gradients for full tuning.")
    galore_target: list[str] = Field(
        default_factory=lambda: ["all"], description="GaLore: linear modules to project (`all` or names)."
    )
    galore_rank: int = Field(16, gt=0, description="GaLore: projection rank.")
    galore_update_interval: int = Field(200, gt=0, description="GaLore: steps between projection updates.")
    galore_scale: float = Field(2.0, gt=0, description="GaLore: scale of the projected update.")
    galore_layerwise: bool = Field(
        False, description="GaLore: step each layer during backward (less memory)."
    )
    use_apollo: bool = Field(False, description="APOLLO: memory-light AdamW for full tuning.")
    apollo_target: list[str] = Field(
        default_factory=lambda: ["all"], description="APOLLO: linear modules it applies to (`all` or names)."
    )
    apollo_rank: int = Field(16, gt=0, description="APOLLO: projection rank.")
    apollo_update_interval: int = Field(200, gt=0, description="APOLLO: steps between projection updates.")
    apollo_scale: float = Field(32.0, gt=0, description="APOLLO: scale of the update.")

    _split_projection_targets = field_validator("galore_target", "apollo_target", mode="before")(split_names)

    @model_validator(mode="after")
    def _one_optimizer(self) -> FullParams:
        if self.use_galore and self.use_apollo:
            raise ValueError("use_galore and use_apollo are both on; choose one")
        return self


@register_adapter("full", FullParams)
def build_full(
    model: PreTrainedModel, args: FinetuningArguments, model_args: ModelArguments
) -> PreTrainedModel:
    for param in model.parameters():
        param.requires_grad_(True)
    return model
