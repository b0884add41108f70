"""Failures that stop a run instead of failing a row, and what the user is told.

A row's failure is written to errors.jsonl; these say the job itself cannot
work, so the run stops (exit 3) with no row marked failed, and the same
command continues once the cause is fixed: a key refused, a job that never got
an answer (a wrong host, port, path or model: found in seconds, see
docs/retries.md), nothing but 429s or an unreachable server for `--patience`
seconds, or many rows in a row failing alike (recording.FailureStreak).

`Stop` is the stop state every transport holds, so that they stop alike: the first error wins
and is what the run ends with; Ctrl-C stops new work, and a second cuts short the wait for work in
flight. `Patience` is how long a run waits while nothing succeeds.
"""

from __future__ import annotations

import asyncio
import enum
import os
import time
from collections.abc import Callable

from batcher.errors import (
    BatcherError,
    RateLimited,
    RequestFailed,
    RunAborted,
)
from batcher.outcome import RunOutcome
from batcher.outputs.stats import RunStats

#: Seconds a server that cannot be reached is tried again at the start of a session before the
#: run stops (a typo in a host or port should be found in seconds, a server starting up waited for).
FAST_STOP_SECONDS = 3.0


def key_refused(error: RequestFailed, base_url: str, api_key_env: str) -> RunAborted:
    """401/403 (the key), or another refusal of the account (no credit left)."""
    if error.status in (401, 403):
        hint = (
            f"check the key in ${api_key_env}"
            if os.environ.get(api_key_env)
            else f"${api_key_env} is not set"
        )
        cause = f"{base_url} refused the key (HTTP {error.status}: {error.message}); {hint}"
    else:
        cause = f"{base_url} refuses this account (HTTP {error.status}, {error.type}: {error.message})"
    return RunAborted(
        f"{cause}. No row was marked failed: fix it and run the same command again to continue."
    )


def never_answered(cause: str) -> RunAborted:
    """The first requests all failed for a reason that is the job's (client.job_level_cause)."""
    return RunAborted(
        f"{cause}. Nothing was sent successfully and no row was marked failed: fix it and run "
        "the same command again."
    )


def stalled_for(seconds: float, failure: RequestFailed) -> RunAborted:
    """Nothing but 429s, or a server out of reach, for `--patience` seconds."""
    if isinstance(failure, RateLimited):
        seen = f"every request was answered 429 ({failure.type}: {failure.message})"
        hint = "the key's quota or a daily limit may be used up"
    else:
        seen = f"the server could not be reached ({failure.message})"
        hint = "the server is down"
    return RunAborted(
        f"for {seconds:.0f} s nothing succeeded: {seen}; {hint}. No row was marked failed: "
        "run the same command again later to continue (--patience sets how long to wait)."
    )


def failing_alike(count: int, failure: RequestFailed) -> RunAborted:
    """The last `count` rows failed the same way: the job, not the rows, is wrong."""
    return RunAborted(
        f"the last {count} rows all failed alike, so the problem is the job, not the rows "
        f"(HTTP {failure.status}, {failure.type}: {failure.message}). Stopped early without "
        "marking them failed: fix the model name, base URL, key or account, then run the "
        "same command again."
    )


class RunState(enum.Enum):
    """Where a transport's run stands (as httpx's `ClientState`)."""

    #: Work goes out.
    RUNNING = "running"
    #: Stopping: no new work; what is in flight is waited for and made durable.
    STOPPING = "stopping"
    #: Asked to stop again: work in flight is no longer waited for (it is sent again on resume).
    FORCED = "forced"


class Stop:
    """One run's stop, the same in every transport.

    `interrupt()` (Ctrl-C, SIGTERM) and `fail(error)` both end new work; the first error is kept
    (later ones are consequences) and is what the run ends with. An interrupt while the run is
    already stopping forces the stop. `stopped` and `forced` are events a transport can wait on;
    `on_stop` and `on_force` are called once each, for a transport whose work lies elsewhere
    (the Ray driver's switch).
    """

    def __init__(
        self, on_stop: Callable[[], None] | None = None, on_force: Callable[[], None] | None = None
    ) -> None:
        self.state = RunState.RUNNING
        self.error: BatcherError | None = None
        self.interrupted = False
        self.stopped = asyncio.Event()
        self.forced = asyncio.Event()
        self._on_stop, self._on_force = on_stop, on_force

    @property
    def stopping(self) -> bool:
        return self.state is not RunState.RUNNING

    def interrupt(self) -> None:
        if self.stopping:
            self._force()
        self.interrupted = True
        self._stop()

    def fail(self, error: BatcherError) -> None:
        if self.error is None:
            self.error = error
        self._stop()

    def outcome(self, stats: RunStats) -> RunOutcome:
        """How the run ended: stopped by its error, interrupted, or done (with failed rows or not)."""
        return RunOutcome.of(stats, self.error, self.interrupted)

    def _stop(self) -> None:
        if self.state is RunState.RUNNING:
            self.state = RunState.STOPPING
            self.stopped.set()
            if self._on_stop is not None:
                self._on_stop()

    def _force(self) -> None:
        if self.state is not RunState.FORCED:
            self.state = RunState.FORCED
            self.forced.set()
            if self._on_force is not None:
                self._on_force()


class Patience:
    """How long a run goes on while nothing succeeds (`--patience`), and the stop once that is over."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self._clock = seconds, clock
        self.started = clock()
        self.last_success: float | None = None

    def succeeded(self) -> None:
        self.last_success = self._clock()

    def never_succeeded_for(self, seconds: float) -> bool:
        """Whether nothing has succeeded since the start, `seconds` or more ago."""
        return self.last_success is None and self._clock() - self.started >= seconds

    def over(self, failure: RequestFailed) -> RunAborted | None:
        """The stop, when nothing has succeeded for `seconds` (since the last success, or the start)."""
        waited = self._clock() - (self.last_success or self.started)
        return stalled_for(waited, failure) if waited >= self.seconds else None
