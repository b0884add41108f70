"""A completion sent as server-sent events: `chat.completion.chunk`s, then `data: [DONE]`.

The chunks spell out exactly the completion the request would get unstreamed: its text a word
at a time, or each tool call's arguments in 16-character pieces; usage comes last, and only
when `stream_options.include_usage` asks for it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from aiohttp import web

#: Characters of tool-call arguments per chunk.
_ARGUMENTS_PER_CHUNK = 16


async def stream(
    request: web.Request, body: dict[str, Any], completion: dict[str, Any], headers: dict[str, str]
) -> web.StreamResponse:
    """Send `completion` to the client as a stream of chunks."""
    response = web.StreamResponse(headers={**headers, "Content-Type": "text/event-stream"})
    await response.prepare(request)
    choice = completion["choices"][0]
    base = {
        "id": completion["id"],
        "object": "chat.completion.chunk",
        "created": completion["created"],
        "model": completion["model"],
        "system_fingerprint": "fp_simulator",
    }
    await _send(response, _chunk(base, {"role": "assistant", "content": ""}))
    for delta in _deltas(choice["message"]):
        await _send(response, _chunk(base, delta))
    await _send(response, _chunk(base, {}, choice["finish_reason"]))
    if (body.get("stream_options") or {}).get("include_usage"):
        await _send(response, {**base, "choices": [], "usage": completion["usage"]})
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def _deltas(message: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The deltas that spell out a message, after the first (its role)."""
    if not message.get("tool_calls"):
        for piece in re.findall(r"\S+\s*", message["content"] or ""):
            yield {"content": piece}
        return
    for index, call in enumerate(message["tool_calls"]):
        function = {"name": call["function"]["name"], "arguments": ""}
        yield {"tool_calls": [{"index": index, "id": call["id"], "type": "function", "function": function}]}
        arguments = call["function"]["arguments"]
        for start in range(0, len(arguments), _ARGUMENTS_PER_CHUNK):
            piece = arguments[start : start + _ARGUMENTS_PER_CHUNK]
            yield {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}


def _chunk(base: dict[str, Any], delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        **base,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


async def _send(response: web.StreamResponse, chunk: dict[str, Any]) -> None:
    await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
