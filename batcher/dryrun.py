"""`run --dry-run`: every check a run makes before its first request, and what it would send.

Nothing is sent or written; tokens are estimated at 4 characters a token and completions at
max_tokens (256 where unset), so the cost shown is an upper bound.
"""

from __future__ import annotations

import os
import tempfile
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .batchapi.parts import MAX_BYTES, batch_line, split
from .checkpoint import Checkpoint, DoneRows
from .embeddings import PackCount, check_one_shape
from .errors import ConfigError
from .job import BATCH_API, Job
from .mirror import read_run
from .session import identity_of, prepare
from .storage import is_remote
from .tokens import DEFAULT_COMPLETION_TOKENS

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
    #: Rows to send, and the requests they make (as many, but for embeddings, packed).
    to_send: int = 0
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: Rows that set no max_tokens, whose completion was counted at DEFAULT_COMPLETION_TOKENS.
    completion_guessed: int = 0
    #: USD at most for the rows to send (completions at max_tokens), and rows with no price.
    cost_usd: float = 0.0
    unpriced: int = 0
    #: The same at Batch API prices, and in batch-api mode the parts' input files: (requests, bytes).
    batch_cost_usd: float = 0.0
    parts: list[tuple[int, int]] = field(default_factory=list)
    #: (where, request body) of the first rows to send.
    samples: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


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
    recorded = checkpoint.recorded_job()
    done, failed = DoneRows(by_position=True), {}
    if recorded is not None:
        identity = identity_of(job, source, source.fingerprint())
        if not job.force and (refused := checkpoint.refusal(identity, recorded)):
            raise refused
        progress = checkpoint.load(by_position=checkpoint.positions_hold(identity, recorded), repair=False)
        done, failed = progress.done, progress.failed
    retry_failed, prices = job.retry_failed, job.price_table
    estimator = kind.estimator
    result = Plan(job, source.kind, 0, "resume" if recorded is not None else "new")
    line_sizes = array("L")  # of the Batch input lines, in batch-api mode, and each line's model
    line_models, models = array("L"), {}

    packs = PackCount(kind.limits) if job.embeddings else None
    until = source.position_of_row(job.limit) if job.limit is not None else None  # --limit

    def on_body(number: int, row_id: str, body: dict[str, Any]) -> None:
        if done.has(row_id, number) or (row_id in failed and not retry_failed):
            return
        if until is not None and number > until:
            return
        result.to_send += 1
        prompt = round(estimator.prompt_chars(body) / estimator.chars_per_token)
        completion = body.get("max_completion_tokens") or body.get("max_tokens")
        if packs is not None:  # embeddings: no completion, rows packed many to a request
            completion = 0
            packs.add(body, prompt)
        elif not completion:
            completion = DEFAULT_COMPLETION_TOKENS
            result.completion_guessed += 1
        result.prompt_tokens += prompt
        result.completion_tokens += completion
        usage = {"prompt_tokens": prompt, "completion_tokens": completion}
        cost = prices.cost(body.get("model"), usage)
        if cost is None:
            result.unpriced += 1
        else:
            result.cost_usd += cost
            result.batch_cost_usd += prices.cost(body.get("model"), usage, batch=True)
        if job.mode == BATCH_API:
            line_sizes.append(len(batch_line(row_id, body, kind.path)))
            line_models.append(models.setdefault(body.get("model"), len(models)))
        if len(result.samples) < SAMPLES:
            result.samples.append((f"{source.unit} {number}", body))

    scan = source.scan(kind.builder, source.fingerprint(), on_body)
    if job.embeddings:
        check_one_shape(kind.builder, job.output_format)
    result.input_kind, result.rows = scan.kind, scan.total
    online_packs = packs is not None and job.mode != BATCH_API  # (a Batch API line is a row)
    result.requests = packs.requests if online_packs else result.to_send
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


def _check_writable(directory: Path) -> None:
    existing = directory
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(
            f"{directory} cannot be used as the output directory: {existing} is not a directory"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{directory} cannot be used as the output directory: {existing} is not writable")
