"""`run --dry-run`: every check a run makes before its first request, and what it would send.

Nothing is sent or written. Tokens and cost are shown as expected and at most (completions at
max_tokens, 256 where unset): estimates.py says how, docs/estimates.md why.
"""

from __future__ import annotations

import os
import tempfile
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batcher.cli.estimates import Estimate, Tally
from batcher.errors import ConfigError
from batcher.inputs.scan import scan as scan_input
from batcher.job import BATCH_API, Job
from batcher.job.preflight import check_keys
from batcher.kinds.embeddings import PackCount, check_one_shape
from batcher.kinds.tokens import DEFAULT_COMPLETION_TOKENS
from batcher.prepare import identity_of, prepare
from batcher.storage import is_remote
from batcher.store.checkpoint import STATE_DIR, Checkpoint
from batcher.store.jobrecord import recorded_job, refusal
from batcher.store.mirror import read_run
from batcher.store.progress import DoneRows
from batcher.transports.batchapi.parts import MAX_BYTES, batch_line, split
from batcher.words import clock, plural, usd

#: How many request bodies a dry run shows.
SAMPLES = 3


@dataclass
class Plan:
    """What `batcher run` would do with a job, found without sending anything."""

    job: Job
    input_kind: str
    rows: int
    #: "new", or "resume" into a directory holding this job's earlier sessions.
    directory: str
    done: int = 0
    failed: int = 0
    #: Rows to send, and the requests they make (fewer: identical ones sent once; embeddings packed).
    to_send: int = 0
    requests: int = 0
    #: Tokens and USD expected and at most (estimates.py).
    estimate: Estimate = field(default_factory=Estimate)
    #: In batch-api mode, the parts' input files: (requests, bytes).
    parts: list[tuple[int, int]] = field(default_factory=list)
    #: What the checks found worth saying that does not stop the run (no key for a local server).
    notes: list[str] = field(default_factory=list)
    #: (where, request body) of the first rows to send.
    samples: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def where(self) -> str:
        """Where the requests go: the embedded simulator, a URL, or each endpoint's name and URL."""
        configs = self.job.endpoint_configs
        shown = ["the embedded simulator" if c.uses_simulator else c.base_url for c in configs]
        if len(shown) == 1:
            return shown[0]
        return ", ".join(f"{c.name} ({where})" for c, where in zip(configs, shown, strict=True))

    def figures(self) -> list[str]:
        """The lines of tokens, cost (expected and at most) and batches, and how they were estimated."""
        job, estimate = self.job, self.estimate
        prompt, expected = estimate.prompt_tokens, estimate.completion_expected
        most = estimate.completion_at_most
        if job.embeddings:
            tokens = f"about {prompt:,} (inputs; embeddings have no completion)"
        else:
            guessed = (
                f"; {plural(estimate.guessed, 'request sets', 'requests set')} no max_tokens:"
                f" {DEFAULT_COMPLETION_TOKENS} each at most"
            )
            tokens = (
                f"about {prompt:,} prompt + {expected:,} completion expected = {prompt + expected:,};"
                f" at most {prompt + most:,} (completions at max_tokens{guessed if estimate.guessed else ''})"
            )
        cost = f"about {usd(estimate.cost_at_most)} at most ({usd(estimate.cost_expected)} expected)"
        lines = [f"tokens:   {tokens}", f"estimate: {estimate.method}"]
        if job.mode == BATCH_API:
            cost = (
                f"about {usd(estimate.batch_cost_at_most)} at most at Batch prices"
                f" ({usd(estimate.cost_at_most)} online); {usd(estimate.batch_cost_expected)} expected"
            )
            sizes = ", ".join(f"{n:,} requests in {_size(size)}" for n, size in self.parts[:5])
            more = f", and {len(self.parts) - 5} more" if len(self.parts) > 5 else ""
            lines.append(f"batches:  {len(self.parts):,} ({sizes}{more})")
            if job.deadline:
                lines.append(f"deadline: {self._deadline()}")
        if estimate.unpriced:
            models = ", ".join(estimate.unpriced_models[:3])
            cost += (
                f", and {plural(estimate.unpriced, 'request')} of a model with no price ({models}):"
                " set [prices] or --price"
            )
        lines.append(f"cost:     {cost}")
        return lines

    def _deadline(self) -> str:
        """When the deadline falls, and the estimate: the latest moment every request could go online."""
        from batcher.job.deadline import parse_deadline
        from batcher.transports.batchapi.deadline import RunDeadline, estimate

        kept = RunDeadline.read(self.job.output / STATE_DIR) if not is_remote(self.job.output) else None
        now = time.time()
        given = parse_deadline(self.job.deadline)
        at = given.moment(kept.first_start if kept is not None else now)
        tokens = self.estimate.prompt_tokens + self.estimate.completion_at_most
        est = estimate(self.job, RunDeadline(given.text, at, now), self.requests, tokens)
        text = (
            f"{given.text} ({clock(at, date=True)}); every request online would take about"
            f" {est.online_seconds:,.0f} s and a margin of {est.margin:,.0f} s"
            + (" (the online rate assumed from --concurrency: give --rpm)" if est.rate_assumed else "")
        )
        if est.go_online_at < now:
            return text + ": it cannot be met online alone; the run will do its best"
        latest = clock(est.go_online_at, date=True)
        return text + f": what the batches have not answered by {latest} goes online"


def plan(job: Job) -> Plan:
    """Check everything a run checks before sending; estimate what it would send."""
    if not is_remote(job.output):
        return _plan(job, job.output)
    with tempfile.TemporaryDirectory(prefix="batcher-plan-") as copy:  # the store's run, as it is
        read_run(str(job.output), Path(copy), new_ok=True)
        return _plan(job, Path(copy))


def _plan(job: Job, directory: Path) -> Plan:
    source, kind = prepare(job)
    _check_writable(directory)
    checkpoint = Checkpoint.of_run(directory, job.output_format, job.endpoint)
    recorded = recorded_job(directory)
    done, failed, progress = DoneRows(by_position=True), {}, None
    if recorded is not None:
        identity = identity_of(job, source, source.fingerprint())
        if not job.force and (refused := refusal(directory, identity, recorded)):
            raise refused
        progress = checkpoint.load(by_position=checkpoint.positions_hold(identity, recorded), repair=False)
        done, failed = progress.done, progress.failed
    retry_failed = job.retry_failed
    tally = Tally(
        kind.estimator,
        dedupe=job.dedupe and not job.embeddings,
        embeddings=job.embeddings,
        labels=job.answer_format.labels if job.answer_format else (),
    )
    result = Plan(job, source.kind, 0, "resume" if recorded is not None else "new", notes=check_keys(job))
    line_sizes = array("L")  # of the Batch input lines, in batch-api mode, and each line's model
    line_models, models = array("L"), {}

    packs = PackCount(kind.limits) if job.embeddings else None
    until = source.position_of_row(job.limit) if job.limit is not None else None  # --limit

    def on_body(number: int, row_id: str, body: dict[str, Any]) -> None:
        if done.has(row_id, number):
            tally.add(body, done=True)
            return
        if (row_id in failed and not retry_failed) or (until is not None and number > until):
            return
        result.to_send += 1
        prompt = tally.add(body)
        if packs is not None:  # embeddings: rows packed many to a request
            packs.add(body, prompt)
        if job.mode == BATCH_API:
            line_sizes.append(len(batch_line(row_id, body, kind.path)))
            line_models.append(models.setdefault(body.get("model"), len(models)))
        if len(result.samples) < SAMPLES:
            result.samples.append((f"{source.unit} {number}", body))

    scan = scan_input(source, kind.builder, source.fingerprint(), on_body)
    if job.embeddings:
        check_one_shape(kind.builder, job.output_format)
    result.input_kind, result.rows = scan.kind, scan.total
    online_packs = packs is not None and job.mode != BATCH_API  # (a Batch API line is a row)
    result.estimate = tally.estimate(job.price_table, progress)
    result.requests = packs.requests if online_packs else result.estimate.requests
    result.done, result.failed = len(done), len(failed)
    groups = split(
        range(len(line_sizes)),
        max_requests=job.batch_size,
        max_bytes=MAX_BYTES,
        size=line_sizes.__getitem__,
        key=line_models.__getitem__,
    )
    result.parts = [(len(group), sum(line_sizes[i] for i in group)) for group in groups]
    return result


def _size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"


def _check_writable(directory: Path) -> None:
    """Refuse, as the run would, an output directory that cannot be made or written: the nearest
    folder that exists, and a run directory's own state folder."""
    existing = directory
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(
            f"{directory} cannot be used as the output directory: {existing} is not a directory"
        )
    for folder in (existing, directory / STATE_DIR):
        if folder.exists() and not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigError(f"{directory} cannot be used as the output directory: {folder} is not writable")
