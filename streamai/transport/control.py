"""Client control messages (data channel or WebSocket): size, rate and shape checked.

A bad message is answered with an ``error`` event naming what was wrong; it never
raises into the session.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from ..ratelimit import TokenBucket


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PromptMessage(_Message):
    type: Literal["prompt"]
    text: str = Field(max_length=2000)


class ParamsMessage(_Message):
    type: Literal["params"]
    params: dict[str, Any]


class InterruptMessage(_Message):
    type: Literal["interrupt"]


class PingMessage(_Message):
    type: Literal["ping"]
    t: float | None = None


ControlMessage = Annotated[PromptMessage | ParamsMessage | InterruptMessage | PingMessage, Field(discriminator="type")]
_adapter: TypeAdapter[ControlMessage] = TypeAdapter(ControlMessage)


class ControlRejected(ValueError):
    """Why a control message was refused (sent back to the client as an ``error`` event)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _depth(value: Any, limit: int) -> int:
    stack = [(value, 1)]
    deepest = 0
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > limit:
            return depth
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


class ControlParser:
    """Turns raw client messages into typed ones, enforcing size, depth and rate limits."""

    def __init__(self, max_bytes: int = 16384, rate_per_s: float = 20.0, burst: int = 40, max_depth: int = 8) -> None:
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self.bucket = TokenBucket(rate_per_s, burst)
        self.rejected = 0

    def parse(self, raw: str | bytes) -> PromptMessage | ParamsMessage | InterruptMessage | PingMessage:
        try:
            return self._parse(raw)
        except ControlRejected:
            self.rejected += 1
            raise

    def _parse(self, raw: str | bytes) -> PromptMessage | ParamsMessage | InterruptMessage | PingMessage:
        size = len(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw)
        if size > self.max_bytes:
            raise ControlRejected("too_large", f"control message of {size} bytes exceeds {self.max_bytes}")
        if not self.bucket.take():
            raise ControlRejected("rate_limited", "too many control messages; slow down")
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ControlRejected("bad_encoding", "control messages are UTF-8 JSON text") from None
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            raise ControlRejected("bad_json", "control message is not valid JSON") from None
        if not isinstance(value, dict):
            raise ControlRejected("bad_message", "control message must be a JSON object with a 'type'")
        if _depth(value, self.max_depth) > self.max_depth:
            raise ControlRejected("too_deep", f"control message nests deeper than {self.max_depth}")
        try:
            return _adapter.validate_python(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(map(str, first["loc"])) or "message"
            raise ControlRejected("bad_message", f"{where}: {first['msg']}") from None
