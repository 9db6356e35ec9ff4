"""The OpenAI request bodies the server accepts, validated by pydantic (unknown fields are ignored,
as OpenAI-compatible servers do, so clients that send extra options keep working)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class ImageUrl(BaseModel):
    model_config = ConfigDict(extra="ignore")
    url: str


class ImagePart(BaseModel):
    """An image for a vision-language model: a `data:` URL (base64) or a `file://` path on the server."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["image_url"]
    image_url: ImageUrl


class VideoPart(BaseModel):
    """A video (vLLM's `video_url` part): a `data:` URL (base64) or a `file://` path on the server."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["video_url"]
    video_url: ImageUrl


class InputAudio(BaseModel):
    model_config = ConfigDict(extra="ignore")
    data: str  # base64
    format: str = "wav"


class AudioPart(BaseModel):
    """A sound for an audio-language model, as OpenAI's `input_audio` part: base64 data and its format."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["input_audio"]
    input_audio: InputAudio


IMAGE = "<image>"  # where an image part stood, as the chat template's data format marks it
PLACEHOLDER = {ImagePart: IMAGE, VideoPart: "<video>", AudioPart: "<audio>"}


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart | ImagePart | VideoPart | AudioPart] | None = None
    tool_calls: list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The text, with `<image>` (`<video>`, `<audio>`) where each media part stood."""
        if isinstance(self.content, list):
            return "".join(
                part.text if isinstance(part, TextPart) else PLACEHOLDER[type(part)] for part in self.content
            )
        return self.content or ""

    def image_urls(self) -> list[str]:
        """The URLs of the image parts (`media()`: every media part)."""
        return [url for kind, url in self.media() if kind == "image"]

    def media(self) -> list[tuple[str, str]]:
        """(kind, URL) of each media part in order; audio as a `data:` URL of its base64 data."""
        if not isinstance(self.content, list):
            return []
        found = []
        for part in self.content:
            if isinstance(part, ImagePart):
                found.append(("image", part.image_url.url))
            elif isinstance(part, VideoPart):
                found.append(("video", part.video_url.url))
            elif isinstance(part, AudioPart):
                found.append(
                    ("audio", f"data:audio/{part.input_audio.format};base64,{part.input_audio.data}")
                )
        return found


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str = ""
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    stop: str | list[str] | None = None
    max_tokens: int | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    repetition_penalty: float | None = Field(None, gt=0)
    seed: int | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        stops = [value] if isinstance(value, str) else value
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        return [s for s in stops if s]


MAX_LOGPROBS = 20  # alternatives per token, as OpenAI's chat API and vLLM's default allow


def conversation(messages: list[ChatMessage]) -> tuple[str | None, list[dict[str, Any]]]:
    """(system prompt, user/assistant/tool turns) as the chat template expects them."""
    system = [m.text() for m in messages if m.role in ("system", "developer")]
    turns: list[dict[str, Any]] = []
    for m in messages:
        if m.role in ("system", "developer"):
            continue
        turn: dict[str, Any] = {"role": m.role, "content": m.text()}
        if m.tool_calls:
            turn["tool_calls"] = m.tool_calls
        turns.append(turn)
    return ("\n".join(system) if system else None), turns


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)

    def conversation(self) -> tuple[str | None, list[dict[str, Any]]]:
        return conversation(self.messages)

    def image_urls(self) -> list[str]:
        """Every image part's URL, in the order of the messages."""
        return [url for m in self.messages for url in m.image_urls()]

    def media(self) -> list[tuple[str, str]]:
        """(kind, URL) of every image, video and audio part, in the order of the messages."""
        return [found for m in self.messages for found in m.media()]

    def wants_tool_calls(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"


class CompletionRequest(_Sampling):
    # text, several texts, token ids, or several lists of token ids (as OpenAI and vLLM accept)
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = 16  # OpenAI's default for completions; 0 with echo scores the prompt
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)


class TokenizeRequest(BaseModel):
    """vLLM's /tokenize: a text, or chat messages rendered by the served template."""

    model_config = ConfigDict(extra="ignore")
    model: str = ""
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str = ""
    tokens: list[int]
