"""Injected faults: what goes wrong at a real provider, on purpose and reproducibly.

Each admitted request draws at most one fault, then its latency, from one generator seeded with
`SimulatorConfig.seed`, so the same arrivals meet the same faults. 429 storms are a function of
time since start, not of the draw.
"""

from __future__ import annotations

import asyncio
import random
import time

from aiohttp import web

from batcher.simulator.config import SimulatorConfig
from batcher.simulator.contract import error_response

#: What a proxy in front of the provider answers when the provider is down.
_PROXY_PAGE = "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body>"
#: A body cut off mid-JSON, served with status 200.
_BROKEN_BODY = '{"id": "chatcmpl-broken", "choices": [{"mess'
#: How long a hung answer waits: longer than any client's patience.
_HANG_SECONDS = 3600.0


class Faults:
    """The faults and latency a simulator's requests meet, drawn from its seeded generator."""

    def __init__(self, config: SimulatorConfig):
        self.config = config
        self._rng = random.Random(config.seed)
        self._started = time.monotonic()

    def draw(self) -> str | None:
        """Which injected fault (if any) this request meets, drawn from the seeded generator."""
        roll = self._rng.random()
        config = self.config
        for name, rate in (
            ("error", config.error_rate),
            ("drop", config.drop_rate),
            ("garbage", config.garbage_rate),
            ("html", config.html_rate),
            ("slow", config.slow_rate),
            ("hang", config.hang_rate),
            ("huge", config.huge_rate),
            ("invalid", config.invalid_answer_rate),
        ):
            if roll < rate:
                return name
            roll -= rate
        return None

    def latency(self, fault: str | None) -> float:
        """Seconds before answering: the mean latency with its jitter, or a slow or hung answer's."""
        config = self.config
        # Drawn even for slow and hung answers, so a fault does not shift the draws that follow.
        jitter = self._rng.uniform(1 - config.latency_jitter, 1 + config.latency_jitter)
        if fault == "slow":
            return config.slow_ms / 1000
        if fault == "hang":
            return _HANG_SECONDS
        return config.latency_ms / 1000 * jitter

    def in_storm(self) -> bool:
        """Whether now falls in one of the 429 storms (`storm_seconds` every `storm_every`)."""
        every = self.config.storm_every
        return bool(every) and (time.monotonic() - self._started) % every < self.config.storm_seconds


def storm_refusal() -> web.Response:
    headers = {"retry-after": "1", "retry-after-ms": "1000"}
    return error_response(429, "rate_limit_error", "Rate limit reached (a simulated storm).", headers=headers)


def server_error(status: int, headers: dict[str, str]) -> web.Response:
    """The injected error: `status` (500 by default; a 503 says retry-after: 1)."""
    if status == 503:
        headers["retry-after"] = "1"
    message = "The server had an error while processing your request."
    return error_response(status, "internal_error", message, headers=headers)


def proxy_page() -> web.Response:
    return web.Response(status=502, text=_PROXY_PAGE, content_type="text/html")


def broken_body(headers: dict[str, str]) -> web.Response:
    return web.Response(status=200, text=_BROKEN_BODY, content_type="application/json", headers=headers)


async def huge_body(request: web.Request, size: int) -> web.StreamResponse:
    """A 200 JSON body of about `size` bytes (whole MiB), which a client should stop reading."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    chunk = b" " * (1 << 20)
    try:
        await response.write(b'{"padding": "')
        for _ in range(size >> 20):
            await response.write(chunk)
        await response.write(b'"}')
        await response.write_eof()
    except (ConnectionError, RuntimeError):
        pass  # the client stopped reading, as it should
    return response


async def wait_unless_gone(request: web.Request, seconds: float) -> bool:
    """Sleep `seconds`; False as soon as the client has closed the connection."""
    deadline = time.monotonic() + seconds
    while True:
        if request.transport is None or request.transport.is_closing():
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        await asyncio.sleep(min(left, 0.05))
