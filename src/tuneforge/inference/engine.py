"""One base model (with adapters merged in) answering chats, streamed token by token."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from tuneforge.config import RunConfig
from tuneforge.data.template import chat_template_for, render_prompt
from tuneforge.model.loader import load_for_inference, load_tokenizer


class ChatEngine:
    """Loads the model once; `stream` yields text pieces of the answer, `chat` returns it whole."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.tokenizer = load_tokenizer(cfg.model)
        self.template = chat_template_for(self.tokenizer, cfg.data.template)
        self.model = load_for_inference(cfg.model)

    def _generation_kwargs(self) -> dict[str, object]:
        g = self.cfg.generating
        kwargs: dict[str, object] = {"max_new_tokens": g.max_new_tokens, "do_sample": g.do_sample}
        if g.do_sample:
            kwargs.update(temperature=g.temperature, top_p=g.top_p, top_k=g.top_k)
        if g.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = g.repetition_penalty
        eos = {self.tokenizer.eos_token_id, self.model.generation_config.eos_token_id}
        flat = set()
        for e in eos:
            flat.update(e if isinstance(e, list) else [e])
        kwargs["eos_token_id"] = sorted(x for x in flat if x is not None)
        kwargs["pad_token_id"] = self.tokenizer.pad_token_id
        return kwargs

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        return render_prompt(messages, self.tokenizer, self.template, self.cfg.generating.default_system)

    def stream(self, messages: list[dict[str, str]]) -> Iterator[str]:
        """Answer the last user message; yields decoded text pieces (never a broken multi-byte character)."""
        import torch
        from transformers import GenerationConfig, TextIteratorStreamer

        ids = torch.tensor([self.prompt_ids(messages)])
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        config = GenerationConfig(**self._generation_kwargs())
        errors: list[BaseException] = []

        def work() -> None:
            try:
                with torch.no_grad():
                    self.model.generate(
                        input_ids=ids,
                        attention_mask=torch.ones_like(ids),
                        generation_config=config,
                        streamer=streamer,
                    )
            except BaseException as err:  # surfaced in the caller's thread below
                errors.append(err)
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        yield from (piece for piece in streamer if piece)
        thread.join()
        if errors:
            raise errors[0]

    def chat(self, messages: list[dict[str, str]]) -> str:
        return "".join(self.stream(messages))
