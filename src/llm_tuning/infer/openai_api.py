"""The OpenAI wire format the server speaks: request schemas, error bodies, responses and stream chunks.

Pure data and text handling, no model: `llm_tuning.infer.server` does the generation.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ApiError(Exception):
    """An error answered with an HTTP status and OpenAI's `{"error": {...}}` body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error") -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(BaseModel):
    include_usage: bool = False


SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1


class SamplingRequest(BaseModel):
    """The fields both endpoints share; unknown OpenAI fields are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0, le=2, allow_inf_nan=False)
    top_p: float = Field(default=1.0, gt=0, le=1, allow_inf_nan=False)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)  # what torch.manual_seed takes
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1, description="only one choice per request")

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ApiError(400, "`stop` takes up to 4 non-empty strings", "stop")
        return stops

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class ChatRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)


class CompletionRequest(SamplingRequest):
    prompt: str | list[str]
    echo: bool = False
    logprobs: int | None = None

    def prompt_string(self) -> str:
        if self.echo or self.logprobs:
            raise ApiError(
                400,
                "`echo` and `logprobs` are not supported by this server",
                "echo" if self.echo else "logprobs",
            )
        if isinstance(self.prompt, list):
            if len(self.prompt) != 1:
                raise ApiError(
                    400, "send one prompt per request (a string, or a list holding one string)", "prompt"
                )
            return self.prompt[0]
        return self.prompt


def _param(loc: tuple) -> str:
    """The field path of a validation error, without pydantic's union members (`content.str`, `list[...]`)."""
    fields = {
        name
        for m in (ChatRequest, CompletionRequest, ChatMessage, TextPart, StreamOptions)
        for name in m.model_fields
    }
    parts = []
    for part in loc:
        if not isinstance(part, int) and part not in fields:
            break
        parts.append(str(part))
    return ".".join(parts)


def parse_request(body: bytes, schema: type[SamplingRequest]) -> Any:
    """Validate a JSON body against `schema`, turning every problem into a 400 ApiError naming the field."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ApiError(400, f"the request body is not valid JSON: {err}") from None
    except RecursionError:
        raise ApiError(400, "the request body is not valid JSON: it is nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:  # a lone surrogate such as "\ud800" is valid JSON but no text: the tokenizer would fail on it
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "the request body holds an unpaired UTF-16 surrogate (\\ud800-\\udfff)") from None
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        param = _param(first["loc"]) or None
        raise ApiError(400, f"{param}: {first['msg']}" if param else first["msg"], param) from None


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}  # fmt: skip


def chat_response(rid: str, model: str, text: str, finish: str, prompt_tokens: int, new_tokens: int) -> dict:
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "finish_reason": finish,
        "logprobs": None,
    }
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [choice], "usage": usage(prompt_tokens, new_tokens)}  # fmt: skip


def completion_response(
    rid: str, model: str, text: str, finish: str, prompt_tokens: int, new_tokens: int
) -> dict:
    choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [choice], "usage": usage(prompt_tokens, new_tokens)}  # fmt: skip


def chunk(rid: str, model: str, chat: bool, text: str | None = None, finish: str | None = None,
          role: bool = False, usage_: dict | None = None) -> str:  # fmt: skip
    """One server-sent event: a text delta, the closing finish_reason, or (choices empty) the usage."""
    if chat:
        delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
        if text is not None:
            delta["content"] = text
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
    else:
        choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
    body = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()), "model": model, "choices": [] if usage_ else [choice]}  # fmt: skip
    if usage_:
        body["usage"] = usage_
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


DONE = "data: [DONE]\n\n"


class StopFilter:
    """Cut streamed text at the first stop string, holding back a tail that might start one."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.text = ""  # everything received
        self.sent = 0  # characters of `text` already released
        self.stopped = False

    def feed(self, piece: str) -> str:
        """The text that can be released now; sets `stopped` once a stop string shows up."""
        if self.stopped:
            return ""
        self.text += piece
        cuts = [i for i in (self.text.find(s, max(0, self.sent - self.hold)) for s in self.stops) if i >= 0]
        if cuts:
            self.stopped = True
            end = min(cuts)
        else:
            end = max(self.sent, len(self.text) - self.hold)
        out, self.sent = self.text[self.sent : end], max(self.sent, end)
        return out

    def flush(self) -> str:
        """The held-back tail once generation has ended."""
        if self.stopped:
            return ""
        out, self.sent = self.text[self.sent :], len(self.text)
        return out
