"""The internal shapes every dataset format is converted to: a `Conversation` or, for pretraining, a `Document`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from tuneforge.utils.errors import TuneforgeError

Role = Literal["system", "user", "assistant", "tool"]
PROMPT_SIDE = ("user", "tool")


class DataError(TuneforgeError):
    """Bad data: the message names the file, row and field and says what to do.

    `category` groups problems in reports (`missing_field`, `wrong_type`, `turn_order`, ...).
    """

    exit_code = 2

    def __init__(self, message: str, category: str = "invalid"):
        super().__init__(message)
        self.category = category


@dataclass(frozen=True)
class Message:
    role: Role
    content: str
    tool_calls: tuple[dict[str, Any], ...] | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = list(self.tool_calls)
        return out


@dataclass
class Conversation:
    """Prompt-side turns (user or tool) alternating with assistant turns, ending with an answer.

    `rejected` holds the dispreferred last answer of preference data; `kto_label` says whether a
    KTO example is desirable. `source` is `file:line` for messages. `images` are the absolute paths of the
    row's image files, one per `<image>` placeholder in its prompt turns, in order.
    """

    messages: list[Message]
    system: str | None = None
    source: str = "?"
    tools: str | None = None
    rejected: Message | None = None
    kto_label: bool | None = None
    images: tuple[str, ...] = ()

    def as_chat(self) -> list[dict[str, Any]]:
        """The messages as `apply_chat_template` wants them, system first when present."""
        chat = [{"role": "system", "content": self.system}] if self.system else []
        return chat + [m.as_dict() for m in self.messages]

    def validate(self) -> None:
        """Raise `DataError` unless turns alternate prompt side / assistant and end with a non-empty answer."""
        if not self.messages:
            raise DataError(f"{self.source}: the conversation has no messages", "empty")
        for i, message in enumerate(self.messages):
            expected = PROMPT_SIDE if i % 2 == 0 else ("assistant",)
            if message.role not in expected:
                raise DataError(
                    f"{self.source}: turn {i + 1} is from '{message.role}' but '{' or '.join(expected)}' was "
                    "expected; turns must alternate user, assistant, user, ...",
                    "turn_order",
                )
        if self.messages[-1].role != "assistant":
            raise DataError(
                f"{self.source}: the conversation ends with a {self.messages[-1].role} turn; it needs an answer "
                "to train on (odd number of turns?)",
                "turn_order",
            )
        for i, message in enumerate(self.messages):
            if message.role == "assistant" and not message.content.strip() and not message.tool_calls:
                raise DataError(
                    f"{self.source}: turn {i + 1} (assistant) is empty or only whitespace", "empty"
                )
        if self.rejected is not None and not self.rejected.content.strip():
            raise DataError(f"{self.source}: the rejected answer is empty or only whitespace", "empty")


@dataclass
class Document:
    """Plain text for continued pretraining (`columns: {prompt: text}`); every token is trained on."""

    text: str
    source: str = "?"

    def validate(self) -> None:
        if not self.text.strip():
            raise DataError(f"{self.source}: the text is empty or only whitespace", "empty")


Example = Conversation | Document
