"""`--executor ray`: a job's rows sent by workers on a Ray cluster, under one limit, journaled once.

The driver (this process) reads the rows left, as a local run does (streamed,
never held whole), and deals them out in batches to `--workers` Ray actors.
Each actor runs batcher's own online pool (runner.py) on its batch, with its
own connections and a `RayLimiter` drawing on the cluster's one budget
(raylimits.py), and hands the finished rows back. Only the driver writes the
run directory, through the session's Recorder, so results, errors, summary,
status, report and resume are those of a local run, and a row is written once.

What a crash costs (docs/ray.md): a worker that dies has its batch dealt again
to a new worker: the rows of that batch it had already sent are paid twice. A
driver that dies takes its workers with it; the same command then sends every
row not yet journaled: at most `workers x BATCH_ROWS x IN_FLIGHT` rows are paid
twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Iterator
from typing import Any

from .endpoints import Endpoint, EndpointConfig, Router
from .errors import BatcherError, RunAborted
from .job import Job
from .outcome import RunOutcome
from .raylimits import RayLimiter, keeper_actor
from .recording import Recorder
from .sources import InputRow
from .stats import RunStats

log = logging.getLogger("batcher")

#: Rows a worker is handed at a time, and batches a worker holds at once (one sending, one waiting).
BATCH_ROWS = 64
IN_FLIGHT = 2
#: Counters a worker's pool keeps that the driver adds to its own.
COUNTERS = ("requests", "retries", "rate_limited")


class Collected:
    """A worker's stand-in for the checkpoint: finished rows kept to hand back to the driver."""

    def __init__(self) -> None:
        self.records: list[tuple[bool, dict[str, Any]]] = []

    def add(self, ok: bool, record: dict[str, Any]) -> None:
        self.records.append((ok, record))

    def check(self) -> None:
        pass

    async def sync(self) -> list:
        return []  # the driver's journal makes them durable

    async def keep_syncing(self, on_durable: Any) -> None:
        await asyncio.Event().wait()


class RowWorker:
    """A Ray actor: batcher's online pool for the batches it is handed (made by `RayTransport`)."""

    def __init__(self, job: Job, input_kind: str, endpoints: list[tuple[EndpointConfig, str, str]]):
        """`endpoints`: each endpoint's config, the base URL it answers at, and its keeper (its
        actor's name, or the actor's handle)."""
        from .session import kind_of

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
        from .checkpoint import DoneRows, Progress
        from .runner import Runner

        if self._router is None:
            self._router = await self._open()
            if self.job.dedupe:  # identical requests sent once a worker (not yet once a cluster)
                from .reuse import InputReuse, Reuse

                within = {"within_run": True, "cache": None}
                self._reuse = InputReuse(**within) if self.job.embeddings else Reuse(**within)
        collected = Collected()
        stats = RunStats(total=len(rows))
        recorder = Recorder(collected, Progress(done=DoneRows(by_position=False)), stats)  # type: ignore[arg-type]
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


class RayTransport:
    """Deals rows out to Ray workers and journals what they hand back (transport.Transport)."""

    def __init__(self, *, job: Job, input_kind: str, recorder: Recorder, endpoints: list[Endpoint]):
        self.job, self.input_kind, self.recorder = job, input_kind, recorder
        self.stats = recorder.stats
        self._endpoints = endpoints
        self._stop = asyncio.Event()
        self._abort: BatcherError | None = None
        self.interrupted = False
        self._keys: dict[str, str] = {}

    def request_stop(self) -> None:
        """Ctrl-C / SIGTERM: deal no more rows; the batches out are finished and journaled."""
        self.interrupted = True
        self._stop.set()

    def _fail(self, error: BatcherError) -> None:
        if self._abort is None:
            self._abort = error
        self._stop.set()

    async def run(self, rows: Iterator[InputRow | None]) -> RunOutcome:
        import ray

        connect(self.job)
        run_id = uuid.uuid4().hex[:12]
        keepers, endpoints = [], []
        for n, endpoint in enumerate(self._endpoints):
            name = f"batcher-{run_id}-{n}"
            keepers.append(keeper_actor(name, endpoint.config.rpm, endpoint.config.tpm))
            endpoints.append((endpoint.config, endpoint.base_url, name))
        ray.get([keeper.__ray_ready__.remote() for keeper in keepers])
        worker_class = ray.remote(num_cpus=0)(RowWorker)
        keys = {e.config.api_key_env: e.api_key for e in self._endpoints if e.api_key}

        def new_worker() -> Any:
            return worker_class.remote(self.job, self.input_kind, endpoints)

        workers = [new_worker() for _ in range(self.job.workers)]
        self._keys = keys
        syncer = asyncio.create_task(self.recorder.keep_syncing())
        try:
            await self._deal(rows, workers, new_worker)
        except BatcherError as e:
            self._fail(e)
        finally:
            if (error := await self.recorder.stop_syncing(syncer)) is not None:
                self._fail(error)
            for actor in [*workers, *keepers]:
                ray.kill(actor)
        return RunOutcome.of(self.stats, self._abort, self.interrupted)

    async def _deal(self, rows: Iterator[InputRow | None], workers: list[Any], replacement: Any) -> None:
        """Keep every worker busy with IN_FLIGHT batches until the rows end or a stop; journal what
        comes back. `workers` is kept current: a dead worker's place goes to its replacement."""
        from ray.exceptions import RayActorError

        pending: dict[asyncio.Future, tuple[Any, list[InputRow]]] = {}
        exhausted = False
        free = [w for w in workers for _ in range(IN_FLIGHT)]
        replaced: dict[Any, Any] = {}
        while True:
            while free and not exhausted and not self._stop.is_set():
                batch = _take(rows, BATCH_ROWS)
                exhausted = len(batch) < BATCH_ROWS
                if batch:
                    worker = free.pop()
                    pending[asyncio.ensure_future(worker.process.remote(batch, self._keys))] = (worker, batch)
            if not pending:
                return
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                worker, batch = pending.pop(future)
                try:
                    records, counters, error = future.result()
                except RayActorError:  # the worker died: its batches go to a new one
                    log.warning("a Ray worker died; its %d rows go to a new worker", len(batch))
                    if worker not in replaced:
                        replaced[worker] = replacement()
                        workers[workers.index(worker)] = replaced[worker]
                    free.append(replaced[worker])
                    rows, exhausted = _again(batch, rows), False
                    continue
                self._journal(records, counters, error)
                free.append(worker)

    def _journal(self, records: list[tuple[bool, dict[str, Any]]], counters: dict, error: Any) -> None:
        for ok, record in records:
            self.recorder.add(ok, record)
        for name, value in counters.items():
            setattr(self.stats, name, getattr(self.stats, name) + value)
        self.recorder.changed()
        if error is not None:
            self._fail(error if isinstance(error, BatcherError) else RunAborted(str(error)))


def _take(rows: Iterator[InputRow | None], count: int) -> list[InputRow]:
    batch: list[InputRow] = []
    for row in rows:
        if row is not None:
            batch.append(row)
            if len(batch) == count:
                break
    return batch


def _again(batch: list[InputRow], rows: Iterator[InputRow | None]) -> Iterator[InputRow | None]:
    yield from batch
    yield from rows


def connect(job: Job) -> None:
    """Join the Ray cluster at `job.ray_address`, or the one running (RAY_ADDRESS), or start one here."""
    import ray

    if ray.is_initialized():
        return
    if job.ray_address is None and not os.environ.get("RAY_ADDRESS"):
        # A cluster of this run's own: on this machine's loopback only, and no usage report sent.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        address=job.ray_address,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
