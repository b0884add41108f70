"""The Chat Completions request kind: a row to a body, its tokens, an answer to a Completion, a record.

A request kind is everything that differs between the API's endpoints
(`kinds.RequestKind`): this one posts to `/chat/completions`, one row a request;
the answer is a `chat.completion` object, or a stream of `chat.completion.chunk`
events (`stream: true`) merged here into the same Completion.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from batcher.errors import RequestFailed, Retryable
from batcher.kinds.completion import MAX_BODY_BYTES, Completion, error_for_status, parse_json, snippet
from batcher.kinds.prompts import RequestBuilder
from batcher.kinds.records import result_record
from batcher.kinds.tokens import TokenEstimator


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
    """The chunks of a streamed chat completion, merged as they come into what a whole answer says:
    every choice by its `index` (a request with `n` > 1 interleaves them), each with its logprobs."""

    def __init__(self) -> None:
        self.choices: dict[int, _StreamedChoice] = {}
        self.fields: dict[str, Any] = dict.fromkeys(("id", "created", "model", "usage"))

    def add(self, data: str) -> None:
        chunk = parse_json(data)
        if not isinstance(chunk, dict):
            raise Retryable(f"stream event is not JSON: {data[:200]!r}", type="invalid_response", status=200)
        if isinstance(chunk.get("error"), dict):
            raise error_for_status(500, chunk, data, {})
        for key in self.fields:
            self.fields[key] = chunk.get(key) or self.fields[key]
        for choice in chunk.get("choices") or ():
            index = choice.get("index")
            if not isinstance(index, int):
                index = 0
            merged = self.choices.get(index)
            if merged is None:
                merged = self.choices[index] = _StreamedChoice()
            merged.add(choice)

    def completion(self) -> Completion:
        streamed = self.choices or {0: _StreamedChoice()}
        choices = [streamed[index].whole(index) for index in sorted(streamed)]
        first = choices[0]
        message = first["message"]
        fields = self.fields
        body = {
            "id": fields["id"],
            "object": "chat.completion",
            "created": fields["created"],
            "model": fields["model"],
            "choices": choices,
            "usage": fields["usage"],
        }
        return Completion(
            message["content"],
            message.get("tool_calls"),
            first["finish_reason"],
            fields["usage"],
            fields["model"],
            None,
            0.0,
            body,
        )


class _StreamedChoice:
    """One choice of a stream: its text, tool calls and logprobs, merged delta by delta."""

    __slots__ = ("content", "tool_calls", "finish_reason", "logprobs")

    def __init__(self) -> None:
        self.content: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        #: The choice's logprobs: each chunk's lists (`content`, `refusal`) joined; None if none came.
        self.logprobs: dict[str, Any] | None = None

    def add(self, choice: dict[str, Any]) -> None:
        self._add_delta(choice.get("delta") or {})
        self.finish_reason = choice.get("finish_reason") or self.finish_reason
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict):
            self._add_logprobs(logprobs)

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

    def _add_logprobs(self, logprobs: dict[str, Any]) -> None:
        merged = self.logprobs if self.logprobs is not None else {}
        for key, value in logprobs.items():
            if isinstance(value, list):
                joined = merged.get(key)
                if isinstance(joined, list):
                    joined.extend(value)
                else:
                    merged[key] = list(value)
            else:
                merged.setdefault(key, value)
        self.logprobs = merged

    def whole(self, index: int) -> dict[str, Any]:
        """The choice as a whole answer holds it."""
        calls = [self.tool_calls[i] for i in sorted(self.tool_calls)] or None
        text = "".join(self.content) if self.content or not calls else None
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            message["tool_calls"] = calls
        return {
            "index": index,
            "message": message,
            "logprobs": self.logprobs,
            "finish_reason": self.finish_reason,
        }


class ChatKind:
    """Chat Completions (see kinds.RequestKind)."""

    path = "/chat/completions"
    read_answer = staticmethod(read_answer)
    read_one = staticmethod(read_answer)  # (a chat answer is one row's)
    read_stream = staticmethod(read_stream)
    record = staticmethod(result_record)

    #: Its tokens are counted with the completion's: estimated, then corrected by the answer.
    charges_input_only = False

    def __init__(self, builder: RequestBuilder):
        self.builder = builder
        self.estimator = TokenEstimator()

    # One row a request: nothing to pack (see kinds.RequestKind).
    def packer(self, reuse: Any = None) -> None:
        return None

    @staticmethod
    def unpack(completion: Completion, members: list[Any]) -> list[Completion]:
        return [completion]

    @staticmethod
    def splits_on(failure: RequestFailed) -> bool:
        return False

    @staticmethod
    def halves(body: dict[str, Any], members: list[Any]) -> list[tuple[dict[str, Any], list[Any]]]:
        return [(body, members)]
