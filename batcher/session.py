"""A session of a job, assembled: check the job and its input, open the run directory, run, finish.

The order is that of the guarantees in docs/reliability.md: everything that can be found wrong
before sending (the job, the input, the run directory) raises before the first
request; the input is scanned once (not again on resume when its bytes are
unchanged; prepare.py); the run directory is locked and its journal read; the endpoints,
the sink and the answer cache are opened; the transport (transports/base.py) sends
what is left; and whatever happens, the outputs are closed and summary.json written.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batcher.errors import ConfigError, WriteFailed
from batcher.inputs.scan import Scan
from batcher.inputs.sources import Source
from batcher.job import BATCH_API, BATCH_OUTPUT, RAY, Job
from batcher.job.answers import ParseFunction
from batcher.kinds import RequestKind
from batcher.kinds.embeddings import check_one_shape
from batcher.kinds.records import RESERVED_COLUMNS
from batcher.kinds.reuse import AnswerCache, InputReuse, Reuse
from batcher.outcome import RunOutcome, Status
from batcher.outputs.sinks import Sink, open_sink
from batcher.outputs.stats import RunStats
from batcher.outputs.timeline import Timeline, timeline_path
from batcher.prepare import identity_of, prepare, scan_unless_recorded, with_columns_kept
from batcher.storage import is_remote
from batcher.store import stdin
from batcher.store.checkpoint import STATE_DIR, Checkpoint
from batcher.store.journal import write_atomically
from batcher.store.mirror import Mirror
from batcher.store.progress import Progress
from batcher.store.vectors import VectorFile
from batcher.transports.base import RowsLeft, Transport
from batcher.transports.batchapi.parts import PartsLog, PartState
from batcher.transports.online.endpoints import Endpoint, Router
from batcher.transports.online.runner import Runner
from batcher.transports.recording import Recorder
from batcher.words import plural

log = logging.getLogger("batcher")


async def run_job(
    job: Job,
    *,
    on_progress: Callable[[RunStats], None] | None = None,
    on_start: Callable[[Transport], None] | None = None,
    on_record: Callable[[bool, dict[str, Any]], None] | None = None,
    parse: Callable[[dict[str, Any], str | None], dict[str, Any]] | None = None,
    handle_signals: bool = False,
) -> RunOutcome:
    """Run one session of `job`: check the input, resume the run directory, send what is left.

    Everything that can be found wrong before sending (input, job, run
    directory) raises a `BatcherError` before the first request. `on_start`
    gets the transport just before the first request (its `stats`, and
    `request_stop` to end the session early); `on_record(ok, record)` gets
    each result or error record once it is durable.
    """
    source, kind = prepare(job)
    hooks = Hooks(on_progress, on_start, on_record, parse, handle_signals)
    if not is_remote(job.output):
        return await _run_session(job, source, kind, hooks, None)
    mirror = Mirror(str(job.output), commit_seconds=job.commit_seconds)
    staging = await asyncio.to_thread(mirror.pull)
    try:
        return await _run_session(dataclasses.replace(job, output=staging), source, kind, hooks, mirror)
    finally:
        await asyncio.to_thread(mirror.release)


@dataclasses.dataclass(frozen=True)
class Hooks:
    """What the caller of `run_job` hears of the session, and may do to it."""

    on_progress: Callable[[RunStats], None] | None = None
    on_start: Callable[[Transport], None] | None = None
    on_record: Callable[[bool, dict[str, Any]], None] | None = None
    parse: Callable[[dict[str, Any], str | None], dict[str, Any]] | None = None
    handle_signals: bool = False


async def _run_session(
    job: Job, source: Source, kind: RequestKind, hooks: Hooks, mirror: Mirror | None
) -> RunOutcome:
    """`run_job` in a local run directory (`mirror`: the object store it is committed to)."""
    job, kind, checkpoint, scan, progress = await _open_run(job, source, kind, mirror)
    stats = _stats_at_start(job, scan, progress)
    opened = _Opened()
    outcome = None
    try:
        opened.cache = AnswerCache(Path(job.cache)) if job.cache else None
        opened.sink = _open_sink(job, checkpoint, scan)
        opened.router = router = Router(await _endpoints(job, kind, opened.simulators))
        async with contextlib.AsyncExitStack() as clients:
            recorder = Recorder(
                checkpoint,
                progress,
                stats,
                sink=opened.sink,
                on_progress=hooks.on_progress,
                on_record=hooks.on_record,
            )
            # (a run directory staged from an object store: no worker keeps a part on this disk)
            parts_dir = checkpoint.parts_dir if mirror is None else None
            transport = await _open_transport(
                clients, job, kind, router, recorder, hooks.parse, opened.cache, parts_dir
            )
            if hooks.on_start is not None:
                hooks.on_start(transport)
            rows = RowsLeft(job, source, kind.builder, progress)
            outcome = await _send(job, rows, transport, router, hooks.handle_signals, mirror)
    finally:
        stats.finished = time.monotonic()
        await opened.close(stats)
        try:
            _finish(job, checkpoint, progress, opened.sink, stats, outcome, mirror)
        finally:
            await opened.stop_simulators()
    return outcome


async def _open_run(
    job: Job, source: Source, kind: RequestKind, mirror: Mirror | None
) -> tuple[Job, RequestKind, Checkpoint, Scan, Progress]:
    """The input scanned (unless unchanged since its scan) and the run directory opened on it; with
    keep_columns '*', the job and kind keeping the columns the scan found."""
    checkpoint = Checkpoint.of_run(job.output, job.output_format, job.endpoint)
    scan = await asyncio.to_thread(scan_unless_recorded, job, source, kind.builder, checkpoint)
    if job.embeddings:
        check_one_shape(kind.builder, job.output_format)
    progress = checkpoint.open(identity_of(job, source, scan.fingerprint, scan), force=job.force)
    stdin.keep_in(source, job.output)  # rows piped in, kept in the run directory once it is opened
    job, kind = with_columns_kept(job, source, kind, scan)
    log.info(
        "%s: %d rows; %d done and %d failed before this session; %d torn lines repaired",
        job.output,
        scan.total,
        len(progress.done),
        len(progress.failed),
        progress.repaired_lines,
    )
    if mirror is not None:
        mirror.track(checkpoint.journal_files() + [timeline_path(job.output)])
    return job, kind, checkpoint, scan, progress


def _open_sink(job: Job, checkpoint: Checkpoint, scan: Scan) -> Sink | None:
    answer_types = job.answer_format.column_types() if job.answer_format else None
    return open_sink(
        job.output_format,
        job.output,
        checkpoint.results_path,
        scan.kept_types,
        answer_types,
        batches=job.mode == BATCH_API,
        vectors=VectorFile(checkpoint.vectors_path) if checkpoint.vectors_path else None,
    )


@dataclasses.dataclass
class _Opened:
    """What a session opened besides the run directory, closed whatever happens."""

    cache: AnswerCache | None = None
    sink: Sink | None = None
    router: Router | None = None
    simulators: list[Any] = dataclasses.field(default_factory=list)

    async def close(self, stats: RunStats) -> None:
        if self.router is not None:
            stats.endpoints = self.router.summary()
            for endpoint in self.router.endpoints:
                endpoint.limits.close()
        if self.cache is not None:
            self.cache.close()

    async def stop_simulators(self) -> None:
        for simulator in self.simulators:
            await simulator.stop()


async def _send(
    job: Job,
    rows: RowsLeft,
    transport: Transport,
    router: Router,
    handle_signals: bool,
    mirror: Mirror | None,
) -> RunOutcome:
    """The transport sends the rows left, Ctrl-C / SIGTERM asking it to stop, the timeline (and the
    object store's commits) kept beside it."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM) if handle_signals else ()
    for sig in signals:
        loop.add_signal_handler(sig, transport.request_stop)
    stats = transport.stats
    timeline = Timeline(timeline_path(job.output), stats, router.limits)
    background = [timeline.keep_recording()]
    if mirror is not None:
        background.append(mirror.keep_committing(transport.request_stop))
    tasks = [asyncio.create_task(work) for work in background]
    try:
        outcome = await transport.run(rows)
    finally:
        for task in tasks:
            task.cancel()
        timeline.record()
        for sig in signals:
            loop.remove_signal_handler(sig)
    if job.limit is not None and not outcome.stopped_early and stats.remaining:
        outcome.note = (
            f"sent the first {plural(job.limit, 'row')} (--limit);"
            f" {plural(stats.remaining, 'row is', 'rows are')} left: the same job without --limit sends them"
        )
    return outcome


def _stats_at_start(job: Job, scan: Scan, progress: Progress) -> RunStats:
    """The session's figures before it sends: what earlier sessions did."""
    return RunStats(
        total=scan.total,
        ok=len(progress.done),
        failed=len(progress.failed),
        prompt_tokens=progress.prompt_tokens,
        completion_tokens=progress.completion_tokens,
        cost_usd=progress.cost_usd,
        unpriced=progress.unpriced,
        skipped=len(progress.done) + (0 if job.retry_failed else len(progress.failed)),
    )


async def _open_transport(
    stack: contextlib.AsyncExitStack,
    job: Job,
    kind: RequestKind,
    router: Router,
    recorder: Recorder,
    parse: Callable[[dict[str, Any], str | None], dict[str, Any]] | None,
    cache: AnswerCache | None,
    parts_dir: Path | None = None,
) -> Transport:
    """The job's transport, its connections opened in `stack`: the online pool, or the Batch API."""
    parts = PartsLog(recorder.checkpoint.directory / STATE_DIR)
    answers = (
        ParseFunction(parse, taken={*RESERVED_COLUMNS, *job.keep_columns}) if parse else job.answer_format
    )
    reuse: Reuse | InputReuse | None = None
    if (job.dedupe or cache) and job.embeddings and job.mode != BATCH_API:  # rows packed online
        reuse = InputReuse(within_run=job.dedupe, cache=cache)
    elif job.dedupe or cache:
        reuse = Reuse(within_run=job.dedupe, cache=cache, keep_body=job.output_format == BATCH_OUTPUT)
    if job.mode == BATCH_API:
        return await _batch_transport(stack, job, kind, router, recorder, parts, answers, reuse)
    if any(part.state != PartState.COLLECTED for part in parts.load().values()):
        raise ConfigError(
            f"{job.output} has batches at the provider not yet collected: run it with --mode batch-api "
            "to collect them (sending their rows online as well would pay for them twice)"
        )
    if job.executor == RAY:
        from batcher.transports.ray.transport import RayTransport

        return RayTransport(
            job=job,
            input_kind=kind.builder.kind,
            recorder=recorder,
            endpoints=router.endpoints,
            parts_dir=parts_dir,
        )
    for endpoint in router.endpoints:
        await stack.enter_async_context(endpoint.client)
    return Runner(job=job, kind=kind, router=router, recorder=recorder, answers=answers, reuse=reuse)


async def _batch_transport(
    stack: contextlib.AsyncExitStack,
    job: Job,
    kind: RequestKind,
    router: Router,
    recorder: Recorder,
    parts: PartsLog,
    answers: Any,
    reuse: Reuse | InputReuse | None,
) -> Transport:
    """The Batch API transport; with a deadline (given, or kept by the run), the online pool after it."""
    from batcher.job.deadline import parse_deadline
    from batcher.transports.batchapi.deadline import DeadlineWatch, RunDeadline
    from batcher.transports.batchapi.provider import BatchProvider
    from batcher.transports.batchapi.transport import BatchTransport

    if not router.single:
        raise ConfigError("batch-api mode takes one endpoint: its batches live there")
    endpoint = router.endpoints[0]
    provider = BatchProvider(
        endpoint.base_url, endpoint.api_key, timeout=job.timeout, gateway=endpoint.gateway
    )
    await stack.enter_async_context(provider)
    state_dir = recorder.checkpoint.directory / STATE_DIR
    given = parse_deadline(job.deadline) if job.deadline else None
    deadline = await asyncio.to_thread(RunDeadline.open, state_dir, given)
    watch = DeadlineWatch(job, deadline, state_dir, recorder.stats) if deadline is not None else None
    batch = BatchTransport(
        job=job,
        kind=kind,
        recorder=recorder,
        provider=provider,
        log_=parts,
        answers=answers,
        reuse=reuse,
        deadline=watch,
    )
    if watch is None:
        return batch
    from batcher.transports.deadline import DeadlineTransport

    await stack.enter_async_context(endpoint.client)  # (the online pool's, should it go online)
    return DeadlineTransport(
        batch,
        lambda: Runner(job=job, kind=kind, router=router, recorder=recorder, answers=answers, reuse=reuse),
        endpoint.client,  # (to ask the server its limits, when the job gives none)
    )


async def _endpoints(job: Job, kind: RequestKind, simulators: list[Any]) -> list[Endpoint]:
    """The job's endpoints, an embedded simulator started for each that names one."""
    endpoints = []
    for config in job.endpoint_configs:
        base_url = config.base_url
        if config.uses_simulator:
            from batcher.simulator import Simulator

            simulators.append(Simulator(job.simulator))
            base_url = await simulators[-1].start()
        endpoints.append(
            Endpoint(config, base_url, kind=kind, timeout=job.timeout, connections=job.concurrency)
        )
    return endpoints


def _deadline_bill(job: Job, checkpoint: Checkpoint, stats: RunStats) -> dict[str, Any]:
    """A deadline run's summary: the deadline, met or not, and the bill by way (outputs/bill.py)."""
    from batcher.outputs.bill import bill, deadline_summary

    told = deadline_summary(stats.deadline, time.time(), stats.remaining)
    told.update(bill(checkpoint.records(), job.price_table, job.model), rows_paid_twice=stats.paid_twice)
    stats.deadline_bill = told  # (for the run's last line)
    return told


def _finish(
    job: Job,
    checkpoint: Checkpoint,
    progress: Progress,
    sink: Sink | None,
    stats: RunStats,
    outcome: RunOutcome | None,
    mirror: Mirror | None,
) -> None:
    """Close the outputs and write summary.json; the lock is released whatever happens. In an
    object store, the journal's last lines are committed first and the outputs put last."""
    uncommitted = None
    if mirror is not None:
        checkpoint.flush()
        try:
            mirror.finish()
        except WriteFailed as e:
            uncommitted = e
    try:
        if sink is not None:
            sink.close(progress.failed.values())
        checkpoint.close(progress)
        status = outcome.status if outcome is not None else Status.FAILED
        summary = stats.summary(status)
        if stats.deadline is not None:
            summary["deadline"] = _deadline_bill(job, checkpoint, stats)
        summary = json.dumps(summary, indent=2) + "\n"
        write_atomically(job.output / "summary.json", summary)
    except OSError as e:
        checkpoint.close()
        raise WriteFailed(f"cannot finish writing {job.output}: {e.strerror or e}") from None
    if uncommitted is not None:
        raise uncommitted
    if mirror is not None:
        mirror.put_outputs()
