"""The Chat Completions request kind: a row to a body, its tokens, an answer to a Completion, a record.

A request kind is everything that differs between the API's endpoints
(`kinds.RequestKind`): this one posts to `/chat/completions`, one row a request;
the answer is a `chat.completion` object, or a stream of `chat.completion.chunk`
events (`stream: true`) merged here into the same Completion.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from .client import MAX_BODY_BYTES, Completion, error_for_status, parse_json, snippet
from .errors import Retryable
from .prompts import RequestBuilder
from .sinks import result_record
from .tokens import TokenEstimator


def read_answer(payload: Any, text: str | bytes) -> Completion:
    """The Completion a 200 body holds; RequestFailed when it holds an error or no chat completion."""
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        # Some gateways answer errors with status 200.
        raise error_for_status(500, payload, text, {})
    try:
        choice = payload["choices"][0]
        message = choice.get("message") or {}
    except (TypeError, KeyError, IndexError, AttributeError):
        raise Retryable(
            f"HTTP 200 with a body that is not a chat completion: {snippet(text)!r}",
            type="invalid_response",
            status=200,
        ) from None
    return Completion(
        content=message.get("content"),
        tool_calls=message.get("tool_calls") or None,
        finish_reason=choice.get("finish_reason"),
        usage=payload.get("usage"),
        model=payload.get("model"),
        request_id=None,
        latency_ms=0.0,
        body=payload,
    )


async def read_stream(resp: aiohttp.ClientResponse) -> Completion:
    """Read SSE `chat.completion.chunk` events up to `[DONE]` into one Completion."""
    stream = _Stream()
    size = 0
    async for raw in resp.content:
        size += len(raw)
        if size > MAX_BODY_BYTES:
            raise Retryable("streamed response is over the size cap", type="invalid_response", status=200)
        line = raw.decode("utf-8", errors="replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return stream.completion()
        stream.add(data)
    raise Retryable("the stream ended before [DONE]", type="connection_error", status=200)


class _Stream:
    """The chunks of a streamed chat completion, merged as they come into what a whole answer says."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.fields: dict[str, Any] = dict.fromkeys(("id", "created", "model", "usage"))
        self.finish_reason: str | None = None

    def add(self, data: str) -> None:
        chunk = parse_json(data)
        if not isinstance(chunk, dict):
            raise Retryable(f"stream event is not JSON: {data[:200]!r}", type="invalid_response", status=200)
        if isinstance(chunk.get("error"), dict):
            raise error_for_status(500, chunk, data, {})
        for key in self.fields:
            self.fields[key] = chunk.get(key) or self.fields[key]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) == 0:
                self._add_delta(choice.get("delta") or {})
                self.finish_reason = choice.get("finish_reason") or self.finish_reason

    def _add_delta(self, delta: dict[str, Any]) -> None:
        if delta.get("content"):
            self.content.append(delta["content"])
        for call in delta.get("tool_calls") or ():
            merged = self.tool_calls.setdefault(call.get("index", 0), {"function": {"arguments": ""}})
            for key in ("id", "type"):
                if call.get(key):
                    merged[key] = call[key]
            function = call.get("function") or {}
            if function.get("name"):
                merged["function"]["name"] = function["name"]
            merged["function"]["arguments"] += function.get("arguments") or ""

    def completion(self) -> Completion:
        calls = [self.tool_calls[i] for i in sorted(self.tool_calls)] or None
        text = "".join(self.content) if self.content or not calls else None
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            message["tool_calls"] = calls
        fields = self.fields
        body = {
            "id": fields["id"],
            "object": "chat.completion",
            "created": fields["created"],
            "model": fields["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason}],
            "usage": fields["usage"],
        }
        return Completion(text, calls, self.finish_reason, fields["usage"], fields["model"], None, 0.0, body)


class ChatKind:
    """Chat Completions (see kinds.RequestKind)."""

    path = "/chat/completions"
    read_answer = staticmethod(read_answer)
    read_one = staticmethod(read_answer)  # (a chat answer is one row's)
    read_stream = staticmethod(read_stream)
    record = staticmethod(result_record)

    def __init__(self, builder: RequestBuilder):
        self.builder = builder
        self.estimator = TokenEstimator()
