"""`--executor ray`: a job's rows read and sent on a Ray cluster, under one limit, journaled once.

A Ray Data pipeline: the input is read by Ray Data tasks on the cluster (inputs.py: ranges
planned on the driver, done rows passed over where they are read), in batches of 64 rows dealt to
`--workers` actors. Each actor runs batcher's own online pool (transports/online/runner.py) on
its batch, with its own connections and a `RayLimiter` drawing on the cluster's one budget
(limits.py), and the finished rows come back to the driver (this process), which alone writes the
run directory, through the session's Recorder: results, errors, summary, status, report and
resume are those of a local run, and a row is written once.

Stopping (Ctrl-C, SIGTERM, a fatal answer such as a 401): a `Switch` actor is turned off; read
tasks yield no more batches and workers send none they have not begun, the batches being sent are
finished and journaled. A second Ctrl-C stops waiting for them.

What a crash costs (docs/ray.md): a worker that dies has its batches sent again by a new worker: the
rows of those batches it had already sent are paid twice. A driver that dies takes its workers with
it; the same command then sends every row not yet journaled: at most the rows of the batches out
at workers (`workers x IN_FLIGHT x BATCH_ROWS`) and of finished batches not yet taken by the driver
are paid twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from batcher.errors import BatcherError, RunAborted
from batcher.inputs.sources import InputRow
from batcher.job import Job
from batcher.job.endpoints import EndpointConfig
from batcher.outcome import RunOutcome
from batcher.outputs.stats import RunStats
from batcher.transports.base import RowsLeft
from batcher.transports.online.endpoints import Endpoint, Router
from batcher.transports.ray.inputs import block, payloads
from batcher.transports.ray.limits import RayLimiter, keeper_actor
from batcher.transports.recording import Recorder
from batcher.transports.stops import Stop

log = logging.getLogger("batcher")

#: Batches a worker sends at once (inputs.BATCH_ROWS rows each), and batches it holds: those
#: waiting their turn are ready when one ends (Ray Data's dispatch is a round trip through the
#: driver) and are not begun if the run stops, so they cost nothing twice.
IN_FLIGHT = 2
QUEUED = 2
#: Ray Data's target block size for the run: below one batch's, so that a batch is a block.
BLOCK_BYTES = 1024
_END, _ABANDON = object(), object()
#: Counters a worker's pool keeps that the driver adds to its own.
COUNTERS = ("requests", "answers", "connection_failures", "never_connected", "retries", "rate_limited")


class Collected:
    """A worker's row store (recording.RowStore): finished rows kept to hand back to the driver,
    whose journal makes them durable."""

    def __init__(self) -> None:
        self.records: list[tuple[bool, dict[str, Any]]] = []

    def add(self, ok: bool, record: dict[str, Any]) -> None:
        self.records.append((ok, record))

    def check(self) -> None:
        pass

    async def sync(self) -> list[tuple[bool, dict[str, Any]]]:
        return []  # the driver's journal makes them durable

    async def keep_syncing(self, on_durable: Callable[[list[tuple[bool, dict[str, Any]]]], None]) -> None:
        await asyncio.Event().wait()


class RowWorker:
    """A Ray actor: batcher's online pool for the batches it is handed (made by `RayTransport`)."""

    def __init__(self, job: Job, input_kind: str, endpoints: list[tuple[EndpointConfig, str, str]]):
        """`endpoints`: each endpoint's config, the base URL it answers at, and its keeper (its
        actor's name, or the actor's handle)."""
        from batcher.kinds import kind_of

        self.job, self.kind = job, kind_of(job, input_kind)
        self._endpoints = endpoints
        self._router: Router | None = None
        self._reuse: Any = None

    async def _open(self) -> Router:
        import ray

        endpoints = []
        for config, base_url, keeper in self._endpoints:
            job = self.job
            endpoint = Endpoint(
                config, base_url, kind=self.kind, timeout=job.timeout, connections=job.concurrency
            )
            handle = ray.get_actor(keeper, namespace="batcher") if isinstance(keeper, str) else keeper
            endpoint.limits = RayLimiter(handle)
            await endpoint.client.__aenter__()
            endpoints.append(endpoint)
        return Router(endpoints)

    async def process(
        self, rows: list[InputRow], keys: dict[str, str]
    ) -> tuple[list[tuple[bool, dict[str, Any]]], dict, Any]:
        """Send `rows`; (their records, the pool's counters, the error that stopped it or None).

        `keys`: the endpoints' API keys by the environment variable each is read from. They come
        with the work, in Ray's memory: never in its runtime_env (which its dashboard shows), a
        file or a log; a worker keeps them in its own environment, as a local run has them."""
        os.environ.update(keys)
        from batcher.store.progress import DoneRows, Progress
        from batcher.transports.online.runner import Runner

        if self._router is None:
            self._router = await self._open()
            if self.job.dedupe:  # identical requests sent once a worker (not yet once a cluster)
                from batcher.kinds.reuse import InputReuse, Reuse

                within = {"within_run": True, "cache": None}
                self._reuse = InputReuse(**within) if self.job.embeddings else Reuse(**within)
        collected = Collected()
        stats = RunStats(total=len(rows))
        recorder = Recorder(collected, Progress(done=DoneRows(by_position=False)), stats)
        runner = Runner(
            job=self.job,
            kind=self.kind,
            router=self._router,
            recorder=recorder,
            answers=self.job.answer_format,
            reuse=self._reuse,
        )
        outcome = await runner.run(iter(rows))
        return collected.records, {name: getattr(stats, name) for name in COUNTERS}, outcome.error


class Switch:
    """A Ray actor saying whether the run is stopping: read tasks and workers ask it before each batch."""

    def __init__(self) -> None:
        self._stopped = False

    def stop(self) -> None:
        self._stopped = True

    def stopped(self) -> bool:
        return self._stopped


class Asking:
    """A read task's question, is the run stopping?, put to the switch at most every `seconds` (a
    round trip a batch slowed reading; the workers ask before every batch they send). Yes if the
    switch is gone: the run has ended."""

    def __init__(self, switch: Any, seconds: float = 0.5):
        self._switch, self._seconds = switch, seconds
        self._asked_at, self._stopped = -math.inf, False

    def __call__(self) -> bool:
        import ray
        from ray.exceptions import RayActorError

        now = time.monotonic()
        if not self._stopped and now - self._asked_at >= self._seconds:
            self._asked_at = now
            try:
                self._stopped = ray.get(self._switch.stopped.remote())
            except RayActorError:
                self._stopped = True
        return self._stopped


class SendBatches:
    """A Ray Data actor of a run: its RowWorker sends each batch it is handed, unless the run stops."""

    def __init__(self, job: Job, input_kind: str, endpoints: list, keys: dict[str, str], switch: Any):
        """`keys`: the endpoints' API keys by the variable each is read from. They come with the
        work, in Ray's memory: never in its runtime_env (which its dashboard shows), a file or a log."""
        self._worker = RowWorker(job, input_kind, endpoints)
        self._keys, self._switch = keys, switch

    async def __call__(self, batch: Any) -> Any:
        (rows,) = payloads(batch)  # one batch a block (inputs.py)
        if isinstance(rows, BatcherError):  # the input no longer reads as it did at the scan
            self._switch.stop.remote()
            return block(([], {}, rows))
        if await self._switch.stopped.remote():
            return block(([], {}, None))  # not sent: the run is stopping; the next session sends them
        records, counters, error = await self._worker.process(rows, self._keys)
        if error is not None:
            self._switch.stop.remote()
        return block((records, counters, error))


class RayTransport:
    """Runs the job's Ray Data pipeline and journals what comes back (transports.base.Transport)."""

    def __init__(self, *, job: Job, input_kind: str, recorder: Recorder, endpoints: list[Endpoint]):
        self.job, self.input_kind, self.recorder = job, input_kind, recorder
        self.stats = recorder.stats
        self._endpoints = endpoints
        self._switch: Any = None
        self._results: asyncio.Queue = asyncio.Queue()
        self.stop = Stop(on_stop=self._stop_workers, on_force=lambda: self._results.put_nowait(_ABANDON))

    def request_stop(self) -> None:
        """Ctrl-C / SIGTERM: send no more batches, journal those being sent; a second call stops
        waiting for them (they are sent again on resume)."""
        self.stop.interrupt()

    def _stop_workers(self) -> None:
        if self._switch is not None:
            self._switch.stop.remote()

    async def run(self, rows: RowsLeft) -> RunOutcome:
        import ray

        connect(self.job)
        run_id = uuid.uuid4().hex[:12]
        keepers, endpoints = [], []
        for n, endpoint in enumerate(self._endpoints):
            name = f"batcher-{run_id}-{n}"
            keepers.append(keeper_actor(name, endpoint.config.rpm, endpoint.config.tpm))
            endpoints.append((endpoint.config, endpoint.base_url, name))
        self._switch = ray.remote(num_cpus=0)(Switch).remote()
        ray.get([actor.__ray_ready__.remote() for actor in [*keepers, self._switch]])
        if self.stop.stopping:  # (asked before the switch was there)
            self._stop_workers()
        # (the keys, and the variables `env:` headers and query read: EndpointConfig.environment)
        keys = {name: value for e in self._endpoints for name, value in e.config.environment().items()}
        syncer = asyncio.create_task(self.recorder.keep_syncing())
        try:
            with _blocks_of_one_batch():
                # Planning reads the Parquet footer or counts the JSONL's lines: off the event loop.
                dataset = await asyncio.to_thread(self._pipeline, rows, endpoints, keys)
                if dataset is not None:
                    await self._collect(dataset)
        except BatcherError as e:
            self.stop.fail(e)
        finally:
            if (error := await self.recorder.stop_syncing(syncer)) is not None:
                self.stop.fail(error)
            for actor in [*keepers, self._switch]:
                ray.kill(actor)
        return self.stop.outcome(self.stats)

    def _pipeline(self, rows: RowsLeft, endpoints: list, keys: dict[str, str]) -> Any:
        """The job as a Ray Data dataset: the input's ranges read, their batches sent by the workers.
        None when no range holds a row left."""
        import ray.data

        from batcher.transports.ray.inputs import Reader, datasource, plan

        for handler in logging.getLogger("ray.data").handlers:  # its console: errors only (the rest
            if handler.name == "console":  # stays in the Ray session's ray-data.log)
                handler.setLevel(logging.ERROR)

        source = rows.source
        ranges = plan(source, rows.done, self.job.workers, rows.until)
        if not ranges:
            return None
        skip = ray.put(rows.skip) if rows.skip is not None else None
        reader = Reader(source, source.columns(rows.builder), skip, Asking(self._switch), rows.until)
        dataset = ray.data.read_datasource(datasource(reader, ranges, rows.done))
        return dataset.map_batches(
            SendBatches,
            fn_constructor_args=(self.job, self.input_kind, endpoints, keys, self._switch),
            compute=ray.data.ActorPoolStrategy(
                size=self.job.workers,
                max_tasks_in_flight_per_actor=IN_FLIGHT + QUEUED,
                max_concurrent_calls_per_actor=IN_FLIGHT,
            ),
            batch_size=1,
            batch_format="pyarrow",
            num_cpus=0,
        )

    async def _collect(self, dataset: Any) -> None:
        """Journal the batches the workers finish, as they come (taken from Ray Data by a thread)."""
        loop = asyncio.get_running_loop()
        results = self._results

        def pull() -> None:
            item: Any = _END
            try:
                for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
                    for sent in payloads(batch):
                        loop.call_soon_threadsafe(results.put_nowait, sent)
            except Exception as e:  # the cluster failed the run: a task failed past its retries
                item = e
            loop.call_soon_threadsafe(results.put_nowait, item)

        threading.Thread(target=pull, name="batcher-ray-results", daemon=True).start()
        while (item := await results.get()) is not _END and item is not _ABANDON:
            if isinstance(item, Exception):
                log.debug("the Ray pipeline failed", exc_info=item)
                raise RunAborted(f"the Ray cluster stopped the run: {_cause(item)}")
            self._journal(*item)

    def _journal(self, records: list[tuple[bool, dict[str, Any]]], counters: dict, error: Any) -> None:
        for ok, record in records:
            self.recorder.add(ok, record)
        for name, value in counters.items():
            setattr(self.stats, name, getattr(self.stats, name) + value)
        self.recorder.changed()
        if error is not None:
            self.stop.fail(error if isinstance(error, BatcherError) else RunAborted(str(error)))


@contextlib.contextmanager
def _blocks_of_one_batch() -> Iterator[None]:
    """Ray Data's target block size below one batch's, for the run only. Blocks are shaped by bytes:
    so every batch (one record) stays a block of its own, and a task of its own for one worker."""
    import ray.data

    context = ray.data.DataContext.get_current()
    before, context.target_max_block_size = context.target_max_block_size, BLOCK_BYTES
    try:
        yield
    finally:
        context.target_max_block_size = before


def _cause(error: Exception) -> str:
    """A Ray error's last line: its cause (the lines before are the tasks it passed through)."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(error).__name__


def connect(job: Job) -> None:
    """Join the Ray cluster at `job.ray_address`, or the one running (RAY_ADDRESS), or start one here."""
    import ray

    if ray.is_initialized():
        return
    if job.ray_address is None and not os.environ.get("RAY_ADDRESS"):
        # A cluster of this run's own: on this machine's loopback only, and no usage report sent.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")  # batcher's own bar counts the rows
    ray.init(
        address=job.ray_address,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
