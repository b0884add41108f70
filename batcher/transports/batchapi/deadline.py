"""A Batch API run with a deadline (`--deadline`): the batches pay half while there is time; the
rows they have not answered go online when there is just enough left.

The run keeps its deadline in `.batcher/deadline.json` (so a resumed run keeps it unless given
anew; a duration counts from the run's first start, kept there too), with the moment it went
online, once it has. While its batches run it keeps an estimate of the latest moment the
unanswered rows can go online and still be done by the deadline:

    go online at = deadline - (online time + margin)
    online time  = the longer of (unanswered requests / the online RPM) and (their tokens / the TPM)
    margin       = MARGIN_SECONDS + MARGIN_SHARE x online time

The RPM and TPM are the job's (`--rpm`, `--tpm`, or the endpoint's), else what the server
announces in its rate-limit headers (asked once, with a one-token request, at the start); with
none, a request is taken to hold one of the `--concurrency` places for ASSUMED_SECONDS_A_REQUEST.
The margin pays for cancelling the batches and collecting what they finished (a provider goes on
answering while "cancelling"), and for the online pool's start and its retries. See
docs/batch-api.md, Deadlines.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from batcher.job import Job
from batcher.job.deadline import Deadline
from batcher.limits.headers import announced, is_per_minute
from batcher.outputs.stats import RunStats
from batcher.store.checkpoint import STATE_DIR
from batcher.store.journal import write_atomically
from batcher.transports.batchapi.parts import Part, PartState

log = logging.getLogger("batcher")
#: Requests and tokens a minute (None: not known).
Limits = tuple[float | None, float | None]

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
    #: The online requests a minute it counts on (None: only a TPM is known).
    rpm: float | None = None


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
        except (FileNotFoundError, ValueError, TypeError):  # none, or (written atomically) hand-edited
            return None

    def save(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        write_atomically(state_dir / DEADLINE_FILE, (json.dumps(asdict(self)) + "\n").encode())

    def went_online(self, state_dir: Path, now: float | None = None) -> None:
        """Kept before the first batch is cancelled: a resumed run goes on from there."""
        self.online_since = time.time() if now is None else now
        self.save(state_dir)


def online_rate(job: Job, learned: Limits = (None, None)) -> tuple[float | None, float | None, bool]:
    """Requests and tokens a second online (None: no such limit), and whether the rate is assumed.
    `learned`: the RPM and TPM the server announced, for the limits the job does not give."""
    config = job.endpoint_configs[0]  # (batch-api mode takes one endpoint)
    rpm, tpm = config.rpm or learned[0], config.tpm or learned[1]
    if rpm is None and tpm is None:
        return job.concurrency / ASSUMED_SECONDS_A_REQUEST, None, True
    return (rpm / 60 if rpm else None), (tpm / 60 if tpm else None), False


def estimate(
    job: Job, deadline: RunDeadline, requests: int, tokens: int, learned: Limits = (None, None)
) -> Estimate:
    """The latest moment `requests` (of `tokens` at most) can go online and be done by the deadline."""
    per_second, tokens_per_second, assumed = online_rate(job, learned)
    seconds = requests / per_second if per_second else 0.0
    if tokens_per_second:
        seconds = max(seconds, tokens / tokens_per_second)
    margin = MARGIN_SECONDS + MARGIN_SHARE * seconds if requests else 0.0
    rpm = per_second * 60 if per_second else None
    return Estimate(seconds, margin, deadline.at - seconds - margin, assumed, rpm)


class DeadlineWatch:
    """A run's deadline while its batches run: the estimate each pass, and the moment to go online."""

    def __init__(self, job: Job, deadline: RunDeadline, state_dir: Path, stats: RunStats):
        self.job, self.deadline, self.state_dir, self.stats = job, deadline, state_dir, stats
        self.latest: Estimate | None = None
        #: The RPM and TPM the server announced (`learn`), for what the job does not say.
        self.learned: Limits = (None, None)
        #: When this session cancelled the batches (time.monotonic()), or None.
        self._cancelled_at: float | None = None
        self._show()

    @property
    def online(self) -> bool:
        """The run has gone online: no part is created or planned again; live batches are cancelled."""
        return self.deadline.online_since is not None

    def due(self, parts: Iterable[Part]) -> bool:
        """The estimate made again for the rows the batches have not answered; whether it is time."""
        requests, tokens = unanswered(parts)
        first = self.latest is None
        self.latest = estimate(self.job, self.deadline, requests, tokens, self.learned)
        self._show()
        now = time.time()
        if first and requests and self.latest.go_online_at < now:
            late = now + self.latest.online_seconds + self.latest.margin - self.deadline.at
            log.warning(
                "the deadline (%s) cannot be met online alone: %d requests need about %.0f s online "
                "and a margin of %.0f s, %.0f s more than is left; going online now to finish as early "
                "as the limits allow",
                self.deadline.text,
                requests,
                self.latest.online_seconds,
                self.latest.margin,
                late,
            )
        return bool(requests) and now >= self.latest.go_online_at

    @property
    def needs_rate(self) -> bool:
        """Neither the job nor the endpoint says how fast rows may go online."""
        return not self.online and online_rate(self.job, self.learned)[2]

    def learn(self, headers: Mapping[str, str] | None) -> None:
        """The per-minute limits a server's answer announces (x-ratelimit-limit-*), if any."""
        if not headers:
            return
        found = []
        for kind in ("requests", "tokens"):
            limit, remaining, reset = announced(headers, kind)
            found.append(limit if limit and is_per_minute(limit, remaining, reset) else None)
        self.learned = (found[0], found[1])
        if any(found):
            log.info("deadline: the server announces %s RPM and %s TPM", found[0], found[1])

    def capped(self, wait: float) -> float:
        """A wait between passes, cut short to end at the moment to go online."""
        if self.online or self.latest is None:
            return wait
        return min(wait, max(0.1, self.latest.go_online_at - time.time()))

    def go_online(self) -> None:
        """Kept before the first batch is cancelled, so that a resumed run goes on from here."""
        if self.deadline.online_since is None:
            self.deadline.went_online(self.state_dir)
            log.info("deadline %s: the batches are cancelled and the rows left go online", self.deadline.text)
        self._cancelled_at = time.monotonic()
        self._show()

    def waited_for_cancelling(self) -> bool:
        """The batches asked to cancel have had the margin's fixed part to end in."""
        return self._cancelled_at is not None and time.monotonic() - self._cancelled_at >= MARGIN_SECONDS

    def _show(self) -> None:
        """The deadline and the estimate, for the progress line and (kept) `batcher status`."""
        shown = {
            "deadline": self.deadline.text,
            "at": self.deadline.at,
            "online_since": self.deadline.online_since,
        }
        if self.latest is not None:
            shown.update(
                go_online_at=self.latest.go_online_at,
                online_seconds=round(self.latest.online_seconds, 1),
                margin_seconds=round(self.latest.margin, 1),
                rate_assumed=self.latest.rate_assumed,
                online_rpm=self.latest.rpm,
            )
        self.stats.deadline = shown
        if shown != self.deadline.estimate:  # (it changes as the batches answer, not every pass)
            self.deadline.estimate = shown
            self.deadline.save(self.state_dir)


def unanswered(parts: Iterable[Part]) -> tuple[int, int]:
    """The requests of parts not collected that their batches have not answered, and their tokens
    at most (each part's worst case, in the share of its requests left)."""
    requests, tokens = 0, 0
    for part in parts:
        if part.state == PartState.COLLECTED or not part.requests:
            continue
        counts = (part.batch or {}).get("request_counts") or {}
        left = max(0, part.requests - (counts.get("completed") or 0) - (counts.get("failed") or 0))
        requests += left
        tokens += part.worst_tokens * left // part.requests
    return requests, tokens


def deadline_of(directory: Path) -> dict[str, Any] | None:
    """`batcher status`: a run's deadline, its latest estimate, and the last session's bill."""
    kept = RunDeadline.read(directory / STATE_DIR)
    if kept is None:
        return None
    told = asdict(kept)
    try:
        told["bill"] = json.loads((directory / "summary.json").read_text()).get("deadline")
    except (OSError, ValueError):
        told["bill"] = None
    return told
