"""An answer of the API: `Completion` (a good one), and the failure an error answer stands for.

The OpenAI error contract (`{"error": {"message", "type", "param"}}` and its status) is read here,
once, for every place an answer arrives: the online client's HTTP responses, the lines of a Batch
API output file (each carries its status) and an error a server puts in a 200 body. Every failure
leaves as a `RequestFailed` subclass that says what to do next: `Retryable` (and `RateLimited`),
`BadRequest` (the row fails) or `AuthenticationFailed` (the run stops).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from batcher import jsoncodec
from batcher.errors import AuthenticationFailed, BadRequest, RateLimited, RequestFailed, Retryable

#: Bodies larger than this are refused (a broken proxy can send hundreds of MB).
MAX_BODY_BYTES = 32 * 1024 * 1024
_RETRYABLE_STATUS = {408, 409, 429}


@dataclass(slots=True)
class Completion:
    """A successful answer, the same whether it came whole or streamed."""

    content: str | None
    tool_calls: list[dict[str, Any]] | None
    finish_reason: str | None
    usage: dict[str, Any] | None
    model: str | None
    request_id: str | None
    latency_ms: float
    #: The whole chat.completion object (rebuilt from chunks for a stream).
    body: dict[str, Any]
    #: The answer's headers (rate-limit headers for the limiter).
    headers: Mapping[str, str] | None = None
    #: USD at the job's prices, once known.
    cost: float | None = None
    #: An embedding: the vector as little-endian float32 bytes (embeddings.py).
    vector: bytes | None = None


def retry_after(headers: Any) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_for_status(status: int, payload: Any, text: str | bytes, headers: Any) -> RequestFailed:
    """The exception an HTTP error answer stands for."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message") or f"HTTP {status}")
        type_ = str(error.get("type") or error.get("code") or f"http_{status}")
        param = error.get("param")
        param = str(param) if param is not None else None
    else:
        message = f"HTTP {status} with a body that is not an OpenAI error object: {snippet(text)!r}"
        type_, param = f"http_{status}", None
    kwargs = {"type": type_, "status": status, "param": param}
    failure = _failure_for_status(status, message, error, headers, kwargs)
    failure.headers = headers
    return failure


def _failure_for_status(
    status: int, message: str, error: dict | None, headers: Any, kwargs: dict[str, Any]
) -> RequestFailed:
    type_ = kwargs["type"]
    if status == 429 and "insufficient_quota" in (type_, str(error.get("code") if error else None)):
        return AuthenticationFailed(message, **kwargs)  # no credit left: waiting will not help
    if status == 429:
        return RateLimited(message, retry_after=retry_after(headers), **kwargs)
    if status in (401, 403):
        return AuthenticationFailed(message, **kwargs)
    if status in _RETRYABLE_STATUS or status >= 500:
        return Retryable(message, retry_after=retry_after(headers), **kwargs)
    if 300 <= status < 400:
        location = headers.get("location", "?")
        failure = BadRequest(
            f"the server redirected (HTTP {status}) to {location}; set the base URL to where it points",
            type="redirect",
            status=status,
        )
    else:
        failure = BadRequest(message, **kwargs)
    # A redirect or a 404 (no such model or path there) is about the endpoint, not the row.
    failure.endpoint_fault = 300 <= status < 400 or status == 404
    return failure


def snippet(body: str | bytes) -> str:
    """The start of a body, for a message."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    return " ".join(text.split())[:200]


def parse_json(body: str | bytes) -> Any:
    try:
        return jsoncodec.loads(body)
    except ValueError:
        if not isinstance(body, bytes):
            return None
    try:  # bytes that are not UTF-8 are read as before, with replacement characters
        return jsoncodec.loads(body.decode("utf-8", errors="replace"))
    except ValueError:
        return None
