"""A completion sent as server-sent events: `chat.completion.chunk`s, then `data: [DONE]`.

The chunks spell out exactly the completion the request would get unstreamed: its text a word
at a time, or each tool call's arguments in 16-character pieces; usage comes last, and only
when `stream_options.include_usage` asks for it. With `n` > 1 the choices' chunks take turns,
each naming its choice's `index`; with logprobs, each text chunk is one token and carries its entry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from itertools import zip_longest
from typing import Any

from aiohttp import web

#: Characters of tool-call arguments per chunk.
_ARGUMENTS_PER_CHUNK = 16


async def stream(
    request: web.Request, body: dict[str, Any], completion: dict[str, Any], headers: dict[str, str]
) -> web.StreamResponse:
    """Send `completion` to the client as a stream of chunks, its choices' chunks interleaved."""
    response = web.StreamResponse(headers={**headers, "Content-Type": "text/event-stream"})
    await response.prepare(request)
    base = {
        "id": completion["id"],
        "object": "chat.completion.chunk",
        "created": completion["created"],
        "model": completion["model"],
        "system_fingerprint": "fp_simulator",
    }
    spelled = [_choice_chunks(base, choice) for choice in completion["choices"]]
    for turn in zip_longest(*spelled):
        for chunk in turn:
            if chunk is not None:
                await _send(response, chunk)
    if (body.get("stream_options") or {}).get("include_usage"):
        await _send(response, {**base, "choices": [], "usage": completion["usage"]})
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def _choice_chunks(base: dict[str, Any], choice: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The chunks of one choice: its role, the deltas that spell it out, its finish_reason."""
    index = choice["index"]
    yield _chunk(base, index, {"role": "assistant", "content": ""})
    for delta, logprobs in _deltas(choice["message"], choice.get("logprobs")):
        yield _chunk(base, index, delta, logprobs=logprobs)
    yield _chunk(base, index, {}, choice["finish_reason"])


def _deltas(
    message: dict[str, Any], logprobs: dict[str, Any] | None
) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
    """The deltas that spell out a message, after the first (its role), each with its logprobs:
    with logprobs, a token a chunk, as OpenAI streams them; without, a word a chunk."""
    if not message.get("tool_calls"):
        tokens = (logprobs or {}).get("content")
        if tokens:
            for entry in tokens:
                yield {"content": entry["token"]}, {"content": [entry], "refusal": None}
            return
        for piece in re.findall(r"\S+\s*", message["content"] or ""):
            yield {"content": piece}, None
        return
    for index, call in enumerate(message["tool_calls"]):
        function = {"name": call["function"]["name"], "arguments": ""}
        yield (
            {"tool_calls": [{"index": index, "id": call["id"], "type": "function", "function": function}]},
            None,
        )
        arguments = call["function"]["arguments"]
        for start in range(0, len(arguments), _ARGUMENTS_PER_CHUNK):
            piece = arguments[start : start + _ARGUMENTS_PER_CHUNK]
            yield {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}, None


def _chunk(
    base: dict[str, Any],
    index: int,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    *,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        **base,
        "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}],
    }


async def _send(response: web.StreamResponse, chunk: dict[str, Any]) -> None:
    await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
