"""The one internal shape every dataset format is converted to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["system", "user", "assistant"]


class DataError(Exception):
    """Bad data: the message names the file, row and field and says what to do."""


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass
class Conversation:
    """Alternating user/assistant messages with an optional system prompt; `source` is `file:row` for errors."""

    messages: list[Message]
    system: str | None = None
    source: str = "?"
    tags: dict[str, str] = field(default_factory=dict)

    def as_chat(self) -> list[dict[str, str]]:
        """The messages as `apply_chat_template` wants them, system first when present."""
        chat = [{"role": "system", "content": self.system}] if self.system else []
        return chat + [{"role": m.role, "content": m.content} for m in self.messages]

    def validate(self) -> None:
        """Raise `DataError` unless turns go user, assistant, user, ... and end with a non-empty answer."""
        if not self.messages:
            raise DataError(f"{self.source}: the conversation has no messages")
        for i, message in enumerate(self.messages):
            expected = "user" if i % 2 == 0 else "assistant"
            if message.role != expected:
                raise DataError(
                    f"{self.source}: turn {i + 1} is from '{message.role}' but '{expected}' was expected; "
                    "turns must alternate user, assistant, user, ..."
                )
        if self.messages[-1].role != "assistant":
            raise DataError(
                f"{self.source}: the conversation ends with a user turn; it needs an answer to train on"
            )
        for i, message in enumerate(self.messages):
            if message.role == "assistant" and not message.content.strip():
                raise DataError(f"{self.source}: turn {i + 1} (assistant) is empty")
