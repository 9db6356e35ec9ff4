"""Qwen2-Audio: an audio file is `<|audio_bos|>` + one `<|AUDIO|>` per encoder output frame + `<|audio_eos|>`.

The audio is mixed to mono and resampled to `audio_sampling_rate`; the model's Whisper feature extractor turns
it into log-mel frames padded to its window (30 s for the released checkpoints, longer audio is cut there),
and the encoder halves the frame count twice (a stride-2 convolution, then pooling), as LLaMA-Factory counts
the tokens: ((frames - 1) // 2 + 1 - 2) // 2 + 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tuneforge.data.conversation import DataError
from tuneforge.data.media import audio_file, load_audio
from tuneforge.data.visual import VisionFamily, register_family

if TYPE_CHECKING:
    import torch


@register_family
class Qwen2Audio(VisionFamily):
    model_types = ("qwen2_audio",)
    kinds = ("audio",)

    def __init__(self, *args: object, **kwargs: object):
        super().__init__(*args, **kwargs)
        self.audio_token_id: int = (
            getattr(self.config, "audio_token_id", None) or self.config.audio_token_index
        )
        self.audio_token = self.token(self.audio_token_id)
        self.media_token_ids.add(self.audio_token_id)
        ids = self.tokenizer.convert_tokens_to_ids(["<|audio_bos|>", "<|audio_eos|>"])
        if self.tokenizer.unk_token_id in ids or None in ids:
            raise DataError(
                "the tokenizer has no <|audio_bos|> and <|audio_eos|> tokens (Qwen2-Audio's)", "multimodal"
            )
        self.start, self.end = self.bracket(*ids)
        if self.image_processor.sampling_rate != self.args.audio_sampling_rate:
            raise DataError(
                f"audio_sampling_rate is {self.args.audio_sampling_rate} but the model's feature extractor takes "
                f"{self.image_processor.sampling_rate} Hz audio; set audio_sampling_rate: "
                f"{self.image_processor.sampling_rate}",
                "multimodal",
            )

    def _features(self, audios: list[Any]) -> dict[str, Any]:
        made = self.image_processor(
            audios,
            sampling_rate=self.args.audio_sampling_rate,
            return_attention_mask=True,
            padding="max_length",
            return_tensors="pt",
        )
        return {"input_features": made["input_features"], "feature_attention_mask": made["attention_mask"]}

    def _load(self, ref: str, source: str) -> Any:
        audio = load_audio(audio_file(ref), self.args.audio_sampling_rate, source)
        if not len(audio):
            raise DataError(f"{source}: audio {audio_file(ref)} holds no samples", "media")
        return audio

    def audio_text(self, ref: str, source: str) -> str:
        frames = int(self._features([self._load(ref, source)])["feature_attention_mask"].sum())
        tokens = ((frames - 1) // 2 + 1 - 2) // 2 + 1
        return self.start + self.audio_token * tokens + self.end

    def audio_inputs(self, refs: Sequence[str]) -> dict[str, torch.Tensor]:
        return self._features([self._load(ref, ref) for ref in refs])
