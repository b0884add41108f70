"""One request over aiohttp, and what its answer means (the request kind reads a good answer).

This is the only module that knows aiohttp's exceptions; an error answer is read by
kinds/completion.py, and a failure to connect becomes `Unreachable` here. `job_level_cause` says
which failures,
met before anything succeeded, mean the job is wrong rather than the row.
Redirects are not followed: a POST that is redirected is almost always a wrong
base URL, and following it could carry the key to another host.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import yarl

from batcher import jsoncodec
from batcher.errors import (
    RequestFailed,
    Retryable,
    Unreachable,
)
from batcher.job.gateway import Gateway
from batcher.kinds import RequestKind
from batcher.kinds.completion import MAX_BODY_BYTES, Completion, error_for_status, parse_json


class ApiClient:
    """Posts one kind of request (kinds/__init__.py) to `{base_url}{kind.path}` on one aiohttp session."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        kind: RequestKind,
        timeout: float,
        connections: int,
        gateway: Gateway | None = None,
    ):
        """`gateway`: the endpoint's headers and query (job/gateway.py); None: the key as a Bearer only."""
        self.url = base_url.rstrip("/") + kind.path  # (without the query: it is shown in messages)
        self._gateway = gateway if gateway is not None else Gateway.of(api_key)
        # parsed once, not by aiohttp for every request
        self._url = yarl.URL(self.url)
        if self._gateway.query:
            self._url = self._url.update_query(self._gateway.query)
        self._read_answer, self._read_stream = kind.read_answer, kind.read_stream
        self._api_key = api_key
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"ApiClient(url={self.url!r})"  # never the key

    async def __aenter__(self) -> ApiClient:
        self._session = aiohttp.ClientSession(
            headers=self._gateway.with_defaults({"Content-Type": "application/json"}),
            timeout=self._timeout,
            connector=aiohttp.TCPConnector(limit=self._connections),
            cookie_jar=aiohttp.DummyCookieJar(),  # an API needs none, and the jar costs every request
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, body: dict[str, Any]) -> Completion:
        """Send one request; raise a `RequestFailed` subclass for anything but success."""
        assert self._session is not None, "use ApiClient as an async context manager"
        started = time.perf_counter()
        try:
            async with self._session.post(
                self._url, data=jsoncodec.dumpb(body), allow_redirects=False
            ) as resp:
                request_id = resp.headers.get("x-request-id")
                if resp.status == 200 and body.get("stream"):
                    completion = await self._read_stream(resp)
                else:
                    raw = await read_capped(resp)
                    payload = parse_json(raw)
                    if resp.status != 200:
                        raise error_for_status(resp.status, payload, raw, resp.headers)
                    completion = self._read_answer(payload, raw)
        except (RequestFailed, TimeoutError, aiohttp.ClientError, OSError) as e:
            raise failure_of(e, self._api_key, *self._gateway.secrets) from None
        completion.latency_ms = round((time.perf_counter() - started) * 1000, 1)
        completion.request_id = request_id
        completion.headers = resp.headers
        return completion


def failure_of(e: Exception, api_key: str | None, *secrets: str) -> RequestFailed:
    """The RequestFailed an exception met while talking to the server stands for (never with the key,
    nor the header values in `secrets`)."""
    failure = _failure_of(e)
    message = failure.message
    if api_key:  # a server that echoes the key
        message = message.replace(api_key, "[the key]")
    for secret in secrets:
        message = message.replace(secret, "[a header value]")
    if message != failure.message:
        failure.message = message
        failure.args = (message,)
    return failure


def _failure_of(e: Exception) -> RequestFailed:
    if isinstance(e, RequestFailed):
        return e
    if isinstance(e, TimeoutError):
        return Retryable("the request timed out", type="timeout")
    if isinstance(e, aiohttp.ClientConnectorError):
        return unreachable(e)
    return Retryable(f"connection failed: {_describe(e)}", type="connection_error")


def unreachable(e: aiohttp.ClientConnectorError) -> Unreachable:
    """What a failed connection means, and what to check."""
    where = f"{e.host}:{e.port}"
    if isinstance(e, aiohttp.ClientConnectorDNSError):
        return Unreachable(
            f"the host name {e.host} does not resolve", hint="check the host name in the base URL"
        )
    if isinstance(e, aiohttp.ClientSSLError):
        return Unreachable(
            f"the TLS handshake with {where} failed ({_describe(e.os_error)})",
            hint="if the server speaks plain http, use http:// in the base URL",
        )
    return Unreachable(
        f"cannot connect to {where} ({_describe(e.os_error)})",
        hint="check that the server is running and that the base URL has the right host and port",
    )


def job_level_cause(failure: RequestFailed, base_url: str, path: str = "/chat/completions") -> str | None:
    """What a failure says is wrong with the job itself, when nothing has succeeded yet; None if not."""
    if isinstance(failure, Unreachable):
        return f"{failure.message}: {failure.hint}"
    if failure.status == 404 or (failure.status == 400 and failure.param == "model"):
        # (said once: a message of a body that is no OpenAI error already begins "HTTP 404")
        said = failure.message
        if not said.startswith("HTTP "):
            said = f"HTTP {failure.status}: {said}"
        if failure.param == "model" or failure.type == "model_not_found" or "model" in failure.message:
            return (
                f"the server does not serve this model ({said}); "
                f"check --model against the models listed at {base_url}/models"
            )
        return (
            f"nothing answers at {base_url}{path} ({said}); an OpenAI-compatible base URL usually ends in /v1"
        )
    if failure.type == "redirect":
        return failure.message
    return None


def _describe(e: BaseException) -> str:
    # aiohttp's messages name host and port, never headers.
    return str(e) or type(e).__name__


async def read_capped(resp: aiohttp.ClientResponse) -> bytes:
    length = resp.content_length  # (a property that parses the header each time it is read)
    if length is not None and length <= MAX_BODY_BYTES:
        return await resp.read()  # (aiohttp reads no more than that)
    if (length or 0) > MAX_BODY_BYTES:
        raise Retryable(
            f"response body of {resp.content_length} bytes is over the {MAX_BODY_BYTES} byte cap",
            type="invalid_response",
            status=resp.status,
        )
    chunks, size = [], 0
    async for chunk in resp.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise Retryable(
                f"response body is over the {MAX_BODY_BYTES} byte cap",
                type="invalid_response",
                status=resp.status,
            )
        chunks.append(chunk)
    return b"".join(chunks)
