"""OpenAI's wire format for models, completions and chat completions (pydantic models).

One module for the protocol, shared by every server that speaks it here. Requests refuse
unknown fields (a typo must not be silently ignored); fields OpenAI defines that we do not
implement are accepted only at their neutral value (``presence_penalty: 0``, ``user``, ...),
since common clients send them, and refused otherwise with a message naming the field.
"""

from __future__ import annotations

from typing import Any, Literal

from openai import types as openai_types
from openai.types import completion_choice as openai_completion_choice
from openai.types.chat import ChatCompletion
from pydantic import BaseModel, ConfigDict, Field, field_validator

Stop = str | list[str] | None
PromptIn = str | list[str] | list[int] | list[list[int]]

MAX_STOP = 4
MAX_N = 16


def _neutral(name: str, value: Any, allowed: tuple[Any, ...]) -> Any:
    if value not in allowed:
        shown = " or ".join("null" if a is None else repr(a) for a in allowed)
        raise ValueError(f"not supported by this server; leave it out or send {shown}")
    return value


ENGINE_HEADER = "X-Modeledit-Engine"
"""Every /v1 answer names its engine (``embedded`` or ``vllm``): nobody has to guess."""


class _Request(BaseModel):
    """Fields both endpoints share."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="a version id (`v0`, `v3`), `active`, or the base model's "
                       "name (= `v0`); see GET /v1/models", examples=["active"])
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="0 = greedy (deterministic)")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=MAX_N, description="choices per prompt")
    seed: int | None = Field(None, ge=0, lt=2**63,
                             description="same seed and request: same text, whatever else runs")
    stop: Stop = Field(None, description=f"up to {MAX_STOP} strings that end the text (not "
                       "included); the model's end-of-turn and end-of-text tokens always stop it")
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    user: str | None = Field(None, max_length=256, description="accepted, not used")
    ignore_eos: bool = Field(False, description="vLLM's extension: generate past the "
                             "end-of-text and end-of-turn tokens (benchmarks, tests)")

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: Stop) -> Stop:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings")
        if any(not s for s in stops):
            raise ValueError("a stop string must not be empty")
        return value

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, value: float, info: Any) -> float:
        return _neutral(info.field_name, value, (0, 0.0))

    @field_validator("logit_bias")
    @classmethod
    def _no_bias(cls, value: dict | None) -> dict | None:
        if value:
            raise ValueError("logit_bias is not supported by this server; leave it out or send {}")
        return value

    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class CompletionRequest(_Request):
    """``POST /v1/completions``."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"model": "active", "prompt": "The mother tongue of Danielle Darrieux is",
         "max_tokens": 8, "temperature": 0},
        {"model": "v0", "prompt": [464, 2802, 11880], "max_tokens": 0, "echo": True,
         "logprobs": 1},
    ]})

    prompt: PromptIn = Field(description="text, texts, token ids, or lists of token ids")
    max_tokens: int = Field(16, ge=0, description="0 with echo + logprobs scores the prompt")
    logprobs: int | None = Field(None, ge=0, le=20,
                                 description="log-prob of each token and this many alternatives")
    echo: bool = Field(False, description="prepend the prompt (and its log-probs) to the answer")
    best_of: int | None = None
    suffix: str | None = None

    @field_validator("best_of")
    @classmethod
    def _best_of(cls, value: int | None) -> int | None:
        return _neutral("best_of", value, (None, 1))

    @field_validator("suffix")
    @classmethod
    def _suffix(cls, value: str | None) -> str | None:
        return _neutral("suffix", value, (None, ""))

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: PromptIn) -> PromptIn:
        if isinstance(value, list) and not value:
            raise ValueError("prompt is empty; give text or token ids")
        if isinstance(value, list) and any(isinstance(p, list) and not p for p in value):
            raise ValueError("a token-id prompt is empty")
        return value


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"] = Field(
        description="developer is read as system")
    content: str | list[TextPart]
    name: str | None = Field(None, max_length=256, description="the participant's name; "
                             "passed to the chat template, which may ignore it")

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"] = Field(description="only text: no JSON mode or schema")


class ChatRequest(_Request):
    """``POST /v1/chat/completions``."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"model": "active", "messages": [
            {"role": "user", "content": "What is the mother tongue of Danielle Darrieux?"}],
         "max_tokens": 32, "temperature": 0},
    ]})

    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, description="default: the configured cap")
    max_completion_tokens: int | None = Field(None, ge=1, description="as max_tokens")
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[Any] | None = None
    tool_choice: Literal["none"] | None = None
    parallel_tool_calls: bool | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    service_tier: Literal["auto", "default"] | None = None
    modalities: list[Literal["text"]] | None = None

    @field_validator("tools")
    @classmethod
    def _tools(cls, value: list | None) -> list | None:
        if value:
            raise ValueError("tools are not supported by this server; leave them out")
        return value

    @field_validator("store")
    @classmethod
    def _store(cls, value: bool | None) -> bool | None:
        return _neutral("store", value, (None, False))

    def limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def limit_param(self) -> str:
        """The field :meth:`limit` read, for an error that names it."""
        return "max_completion_tokens" if self.max_completion_tokens else "max_tokens"


# -- responses -----------------------------------------------------------------------------
# Answers are the ``openai`` package's own types (what its clients parse), built and validated
# by both backends and sent as set (``exclude_unset``: no field OpenAI's clients do not expect
# appears as a null). Where OpenAI's wire answers carry a null its types do not admit, a subclass
# admits exactly that null and nothing else.
USAGE = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
CARD = {"id": "v3", "object": "model", "created": 1764806400, "owned_by": "embedded",
        "root": "v3", "parent": "v2", "state": "committed", "active": True}


class ModelCard(openai_types.Model):
    """OpenAI's model card, plus what a version is: the same schema under both backends."""

    model_config = ConfigDict(json_schema_extra={"examples": [CARD]})

    owned_by: Literal["embedded", "vllm"] = Field(
        description="the engine that answers for this model: `embedded` (this process) or "
        "`vllm`")
    root: str = Field(description="the version id this name resolves to now")
    parent: str | None = Field(None, description="the version this one was edited from")
    state: str = Field(description="committed, or held (kept inactive by the quality gate)")
    active: bool = Field(False, description="this version is what `active` means now")


class ModelList(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"object": "list", "data": [CARD]}]})

    object: Literal["list"] = "list"
    data: list[ModelCard]


class CompletionLogprobs(openai_completion_choice.Logprobs):
    """OpenAI's, where the first prompt token under ``echo`` has no log-prob (``null``)."""

    token_logprobs: list[float | None] | None = None
    top_logprobs: list[dict[str, float] | None] | None = None


class CompletionChoice(openai_types.CompletionChoice):
    """OpenAI's, where a streamed chunk has ``finish_reason: null`` until the choice ends."""

    finish_reason: Literal["stop", "length", "content_filter"] | None = None
    logprobs: CompletionLogprobs | None = None


class CompletionResponse(openai_types.Completion):
    """``POST /v1/completions``'s answer, and each chunk of its stream."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "cmpl-1", "object": "text_completion", "created": 1764806400, "model": "v3",
        "choices": [{"index": 0, "text": " English.", "finish_reason": "stop",
                     "logprobs": None}], "usage": USAGE}]})

    model: str = Field(description="the version that answered (`active` resolved)")
    choices: list[CompletionChoice]


class ChatResponse(ChatCompletion):
    """``POST /v1/chat/completions``'s answer (OpenAI's type; ``model`` is the version)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1764806400, "model": "v3",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "English."},
                     "finish_reason": "stop", "logprobs": None}], "usage": USAGE}]})



class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


_Request.model_rebuild()
CompletionRequest.model_rebuild()
ChatRequest.model_rebuild()
