"""Where requests go: one endpoint, or several serving the same model, chosen by free capacity.

Each endpoint has its own pool, buckets and cool-down; one that keeps failing is rested, one that
refuses its key retired. See docs/endpoints.md.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from batcher.errors import (
    AuthenticationFailed,
    BatcherError,
    NoEndpointLeft,
    RateLimited,
    RequestFailed,
    Unreachable,
)
from batcher.job.endpoints import EndpointConfig
from batcher.job.gateway import Gateway
from batcher.limits.ratelimits import Limiter, Permit, RateLimits, Verdict
from batcher.limits.shared import SharedState
from batcher.outputs.stats import LatencyHistogram
from batcher.transports.client import ApiClient, job_level_cause
from batcher.transports.stops import FAST_STOP_SECONDS, key_refused, never_answered

if TYPE_CHECKING:
    from batcher.kinds import RequestKind

REST_AFTER = 5
REST_SECONDS = 10.0
MAX_REST_SECONDS = 300.0


@dataclass
class EndpointStats:
    requests: int = 0
    answered: int = 0
    failures: int = 0
    rate_limited: int = 0
    tokens: int = 0
    rests: int = 0
    retired: str | None = None
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "answered": self.answered,
            "failures": self.failures,
            "rate_limited_429": self.rate_limited,
            "tokens": self.tokens,
            "times_rested": self.rests,
            "retired": self.retired,
            "latency_ms_p50": self.latency.percentile(0.5),
        }


class Endpoint:
    """A client, its buckets, and how it is doing."""

    def __init__(
        self, config: EndpointConfig, base_url: str, *, kind: RequestKind, timeout: float, connections: int
    ):
        self.config = config
        self.name = config.name
        #: Where requests go (the embedded simulator's own address, when it is one).
        self.base_url = base_url
        api_key = self.api_key
        # A key's limit is shared with other runs on it (an embedded simulator is the run's own).
        shared = None if config.uses_simulator else SharedState.open(base_url, api_key)
        self.limits: Limiter = RateLimits(config.rpm, config.tpm, concurrency=connections, shared=shared)
        #: Its headers and query, `env:` values read (and the Batch API's calls carry them too).
        self.gateway = Gateway.of(api_key, config.headers, config.query)
        self.client = ApiClient(
            base_url, api_key, kind=kind, timeout=timeout, connections=connections, gateway=self.gateway
        )
        self.stats = EndpointStats()
        self._failing = 0
        self._rest = REST_SECONDS
        self.resting_until = 0.0

    @property
    def api_key(self) -> str | None:
        """Its key, read from its environment variable when needed (never kept in a file or printed)."""
        return os.environ.get(self.config.api_key_env) or (
            "sk-simulator" if self.config.uses_simulator else None
        )

    def body(self, body: dict[str, Any]) -> dict[str, Any]:
        """The request as this endpoint wants it: its own model name, where it has one."""
        return {**body, "model": self.config.model} if self.config.model else body

    @property
    def available(self) -> bool:
        return self.stats.retired is None and time.monotonic() >= self.resting_until

    def weight(self) -> float:
        rpm, tpm = self.limits.limits()
        return rpm or tpm or 1.0

    def answered(self) -> None:
        """An answer: its failures in a row, and the rest the next run of them earns, start over."""
        self._failing = 0
        self._rest = REST_SECONDS

    def failed_itself(self) -> None:
        """A failure of its own (not the row's): the REST_AFTER-th in a row rests it, longer each time."""
        self._failing += 1
        if self._failing >= REST_AFTER:
            self._failing = 0
            self.stats.rests += 1
            self.resting_until = time.monotonic() + self._rest
            self._rest = min(MAX_REST_SECONDS, self._rest * 2)


class Router:
    """Picks the endpoint for each request and keeps track of which ones to rest."""

    def __init__(self, endpoints: list[Endpoint]):
        self.endpoints = endpoints
        self.single = len(endpoints) == 1

    async def acquire(self, tokens: int) -> tuple[Endpoint, Permit]:
        """Wait until an endpoint may take a request of about `tokens`; that endpoint, and its permit."""
        if self.single:
            endpoint = self.endpoints[0]
            return endpoint, await endpoint.limits.acquire(tokens)
        while True:
            ready = [e for e in self.endpoints if e.available]
            if not ready:
                if all(e.stats.retired for e in self.endpoints):
                    raise NoEndpointLeft(self.retired_message())
                wake = min(e.resting_until for e in self.endpoints if e.stats.retired is None)
                await asyncio.sleep(max(0.01, wake - time.monotonic()))
                continue
            choices = [e for e in ready if e.limits.has_room(tokens)] or ready
            endpoint = random.choices(choices, weights=[e.weight() for e in choices])[0]
            permit = await endpoint.limits.acquire(tokens)
            if endpoint.available:
                return endpoint, permit
            endpoint.limits.settle(permit, Verdict.FAILED)  # rested or retired while it waited

    def answered(self, endpoint: Endpoint, usage: dict[str, Any] | None, latency_ms: float) -> None:
        stats = endpoint.stats
        stats.answered += 1
        if not self.single:  # (one endpoint's figures are the run's: summary() has none)
            stats.latency.add(latency_ms)
            if usage:
                stats.tokens += (usage.get("prompt_tokens") or 0) + (usage.get("completion_tokens") or 0)
        endpoint.answered()

    def failed(self, endpoint: Endpoint, failure: RequestFailed) -> bool:
        """Count a failed request; True when it retired the endpoint (send the row elsewhere, at once)."""
        stats = endpoint.stats
        if isinstance(failure, RateLimited):
            stats.rate_limited += 1
            return False
        stats.failures += 1
        if self.single:
            return False
        if isinstance(failure, AuthenticationFailed):
            self.retire(endpoint, f"HTTP {failure.status}: {failure.message}")
            return True
        if not failure.endpoint_fault:
            return False  # the row's own fault (or its answer's), wherever it is sent
        endpoint.failed_itself()
        return False

    def retire(self, endpoint: Endpoint, reason: str) -> None:
        """Send nothing more to `endpoint` this session (its key refused, nothing there)."""
        endpoint.stats.retired = reason

    def limits(self) -> tuple[float | None, float | None]:
        """The RPM and TPM in force over every endpoint still in use (None where one has none)."""
        live = [e.limits for e in self.endpoints if e.stats.retired is None] or [
            e.limits for e in self.endpoints
        ]
        rpms, tpms = zip(*(limits.limits() for limits in live), strict=True)
        rpm = None if None in rpms else sum(rpms)
        tpm = None if None in tpms else sum(tpms)
        return rpm, tpm

    def retired_message(self) -> str:
        reasons = "; ".join(f"{e.name}: {e.stats.retired}" for e in self.endpoints)
        return (
            f"no endpoint can be used ({reasons}). No row was marked failed: fix them "
            "and run the same command again to continue."
        )

    def summary(self) -> dict[str, Any] | None:
        if self.single:
            return None
        return {e.name: e.stats.summary() for e in self.endpoints}


def job_level_stop(
    failure: RequestFailed, endpoint: Endpoint, router: Router, path: str, started: float
) -> BatcherError | None:
    """The run's end, when a failure says the job itself is wrong (see client.job_level_cause).

    With several endpoints, the one at fault is retired instead and the run goes on."""
    if isinstance(failure, AuthenticationFailed):
        return key_refused(failure, endpoint.base_url, endpoint.config.api_key_env)
    if endpoint.stats.answered:
        return None  # trouble that starts later in a run is retried
    cause = job_level_cause(failure, endpoint.base_url, path)
    if cause is None:
        return None
    if isinstance(failure, Unreachable) and time.monotonic() - started < FAST_STOP_SECONDS:
        return None  # the server may be starting: a few more tries first
    if not router.single:
        router.retire(endpoint, cause)
        return None
    return never_answered(cause)
