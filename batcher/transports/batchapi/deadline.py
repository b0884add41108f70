"""A Batch API run with a deadline (`--deadline`): the batches pay half while there is time; the
rows they have not answered go online when there is just enough left.

The run keeps its deadline in `.batcher/deadline.json` (so a resumed run keeps it unless given
anew; a duration counts from the run's first start, kept there too), with the moment it went
online, once it has. While its batches run it keeps an estimate of the latest moment the
unanswered rows can go online and still be done by the deadline:

    go online at = deadline - (online time + margin)
    online time  = the longer of (unanswered requests / the online RPM) and (their tokens / the TPM)
    margin       = MARGIN_SECONDS + MARGIN_SHARE x online time

The RPM and TPM are the job's (`--rpm`, `--tpm`, or the endpoint's); with neither, a request is
taken to hold one of the `--concurrency` places for ASSUMED_SECONDS_A_REQUEST. The margin pays for
cancelling the batches and collecting what they finished (a provider goes on answering while
"cancelling"), and for the online pool's start and its retries. See docs/batch-api.md, Deadlines.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from batcher.job import Job
from batcher.job.deadline import Deadline
from batcher.store.journal import write_atomically

DEADLINE_FILE = "deadline.json"
#: A request's time on the wire when no limit says how fast requests may go (the online estimate).
ASSUMED_SECONDS_A_REQUEST = 2.0
#: The margin: a fixed part for cancelling and collecting, and a share of the online time.
MARGIN_SECONDS = 10.0
MARGIN_SHARE = 0.1


@dataclass
class Estimate:
    """When the unanswered rows must go online, and what that is made of (seconds; epoch for `at`)."""

    online_seconds: float
    margin: float
    go_online_at: float
    #: No limit was known: the online rate is assumed from --concurrency.
    rate_assumed: bool = False


@dataclass
class RunDeadline:
    """A run's deadline, as kept in its run directory."""

    text: str
    at: float
    first_start: float
    #: When the run went online (its batches cancelled), or None while its batches run.
    online_since: float | None = None
    #: The latest estimate (for `batcher status` and the report), or None before the first.
    estimate: dict[str, Any] | None = None

    @classmethod
    def open(cls, state_dir: Path, given: Deadline | None, now: float | None = None) -> RunDeadline | None:
        """The run's deadline: `given` (counted from the run's first start), else the one kept."""
        now = time.time() if now is None else now
        kept = cls.read(state_dir)
        if given is None:
            return kept
        first_start = kept.first_start if kept is not None else now
        at = given.moment(first_start)
        if kept is not None and kept.text == given.text and kept.at == at:
            return kept
        online_since = kept.online_since if kept is not None else None
        deadline = cls(given.text, at, first_start, online_since)
        deadline.save(state_dir)
        return deadline

    @classmethod
    def read(cls, state_dir: Path) -> RunDeadline | None:
        path = state_dir / DEADLINE_FILE
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError):  # (written atomically: only a hand-edited file gets here)
            return None

    def save(self, state_dir: Path) -> None:
        write_atomically(state_dir / DEADLINE_FILE, (json.dumps(asdict(self)) + "\n").encode())

    def went_online(self, state_dir: Path, now: float | None = None) -> None:
        """Kept before the first batch is cancelled: a resumed run goes on from there."""
        self.online_since = time.time() if now is None else now
        self.save(state_dir)


def online_rate(job: Job) -> tuple[float | None, float | None, bool]:
    """Requests and tokens a second online (None: no such limit), and whether the rate is assumed."""
    config = job.endpoint_configs[0]  # (batch-api mode takes one endpoint)
    rpm, tpm = config.rpm, config.tpm
    if rpm is None and tpm is None:
        return job.concurrency / ASSUMED_SECONDS_A_REQUEST, None, True
    return (rpm / 60 if rpm else None), (tpm / 60 if tpm else None), False


def estimate(job: Job, deadline: RunDeadline, requests: int, tokens: int) -> Estimate:
    """The latest moment `requests` (of `tokens` at most) can go online and be done by the deadline."""
    per_second, tokens_per_second, assumed = online_rate(job)
    seconds = requests / per_second if per_second else 0.0
    if tokens_per_second:
        seconds = max(seconds, tokens / tokens_per_second)
    margin = MARGIN_SECONDS + MARGIN_SHARE * seconds if requests else 0.0
    return Estimate(seconds, margin, deadline.at - seconds - margin, assumed)
