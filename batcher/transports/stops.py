"""Failures that stop a run instead of failing a row, and what the user is told.

A row's failure is written to errors.jsonl; these say the job itself cannot
work, so the run stops (exit 3) with no row marked failed, and the same
command continues once the cause is fixed: a key refused, a job that never got
an answer (a wrong host, port, path or model: found in seconds, see
docs/retries.md), nothing but 429s or an unreachable server for `--patience`
seconds, or many rows in a row failing alike (recording.FailureStreak).
"""

from __future__ import annotations

import os

from batcher.errors import (
    RateLimited,
    RequestFailed,
    RunAborted,
)

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
