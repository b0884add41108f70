"""A Ray run's worker: batcher's online pool on the batches Ray Data hands it, journaled as it goes.

Each `SendBatches` actor holds one `RowWorker`: the job's endpoints (their connections, and a
`RayLimiter` drawing on the cluster's budget, limits.py) and one window of `concurrency` requests
in flight for all the batches it sends at once. Every row it finishes goes to the driver with its
batch and, as it is finished, to the worker's own journal part in the run directory
(store/parts.py), so that a kill of the worker or of the driver re-pays the requests in flight, not
the batches. A worker handed a batch again (its first worker died) takes the rows the dead one
finished from its part instead of sending them.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batcher.errors import BatcherError
from batcher.inputs.sources import InputRow
from batcher.job import Job
from batcher.job.endpoints import EndpointConfig
from batcher.outputs.stats import RunStats
from batcher.store.checkpoint import Checkpoint
from batcher.store.locks import try_lock
from batcher.store.parts import parts_in, reachable, writer_gone
from batcher.transports.online.endpoints import Endpoint, Router
from batcher.transports.ray.budget import ClusterBudget
from batcher.transports.ray.inputs import block, payloads
from batcher.transports.ray.limits import RayLimiter
from batcher.transports.ray.reuse import ClusterReuse

Row = tuple[bool, dict[str, Any]]
#: A worker asks the run's switch this often whether the run is stopping (a batch being sent stops then).
SWITCH_SECONDS = 0.2
#: Counters a worker's pool keeps that the driver adds to its own.
COUNTERS = ("requests", "answers", "connection_failures", "never_connected", "retries", "rate_limited")


class Part:
    """A worker's journal part (store/parts.py): a checkpoint of its own in the run's parts
    directory, locked while the worker lives and fsynced every 0.2 s."""

    def __init__(self, parts_dir: Path):
        directory = parts_dir / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        directory.mkdir(parents=True)
        self._lock = try_lock(directory)
        self.checkpoint = Checkpoint.of_part(directory)
        self.checkpoint.results_path.parent.mkdir()
        self._syncing = asyncio.Lock()
        self._syncer: asyncio.Task | None = None

    def add(self, ok: bool, record: dict[str, Any]) -> None:
        if self._syncer is None:
            self._syncer = asyncio.create_task(self.checkpoint.keep_syncing(lambda rows: None))
        self.checkpoint.add(ok, record)

    async def sync(self) -> None:
        async with self._syncing:  # (the batches a worker sends at once share the part)
            await self.checkpoint.sync()


class GoneParts:
    """The rows of parts whose writers are gone, for a worker handed their batches again.

    Ray Data hands a dead worker's batches to a worker again; the rows the dead one finished are in
    its part. The last `keep` rows of each gone part are indexed (those of the batches it held
    are its last), by id and row number."""

    def __init__(self, parts_dir: Path, *, keep: int = 4096):
        self._dir, self._keep = parts_dir, keep
        self._seen: set[str] = set()
        self._rows: dict[tuple[str, int], Row] = {}

    def refresh(self) -> None:
        """Index the parts whose writers have gone since the last look (a directory listing)."""
        for part in parts_in(self._dir):
            if part.name in self._seen or not writer_gone(part):
                continue
            self._seen.add(part.name)
            for ok, record in deque(Checkpoint.of_part(part).records(), maxlen=self._keep):
                self._rows[record["id"], record.get("row_number")] = (ok, record)

    def take(self, row_id: str, number: int) -> Row | None:
        """The finished row with this id and number, if a gone worker finished it."""
        return self._rows.get((row_id, number)) if self._rows else None


class BatchRows:
    """One batch's row store (recording.RowStore): its finished rows, kept to hand back to the
    driver, and written to the worker's part (if it keeps one) as they come."""

    def __init__(self, part: Part | None):
        self.records: list[Row] = []
        self._part = part

    def add(self, ok: bool, record: dict[str, Any]) -> None:
        if self._part is not None:
            self._part.add(ok, record)
        self.records.append((ok, record))

    def check(self) -> None:
        if self._part is not None:
            self._part.checkpoint.check()

    async def sync(self) -> list[Row]:
        if self._part is not None:
            await self._part.sync()
        return []  # (the worker's stats are not the run's: the driver counts what it journals)

    async def keep_syncing(self, on_durable: Callable[[list[Row]], None]) -> None:
        await asyncio.Event().wait()  # the part keeps itself synced


class RowWorker:
    """batcher's online pool for the batches a worker is handed (by `SendBatches`, or a pipeline
    stage: batcher/ray.py)."""

    def __init__(
        self,
        job: Job,
        input_kind: str,
        endpoints: list[tuple[EndpointConfig, str, Any]],
        parts: tuple[str, str] | None = None,
        budget: Any = None,
        reuse: Any = None,
    ):
        """`endpoints`: each endpoint's config, the base URL it answers at, and its keeper (its
        actor's name, or the actor's handle). `parts`: the run's parts directory and the session's
        token (store/parts.py), or None to keep no part. `budget`: the run's budget actor
        (budget.py), if a budget is set; `reuse`: its cache and de-duplication actor (reuse.py),
        if `--cache` or `--dedupe` is set (for chat)."""
        from batcher.kinds import kind_of

        self.job, self.kind = job, kind_of(job, input_kind)
        self._endpoints = endpoints
        self._parts = parts
        self._budget = ClusterBudget(budget) if budget is not None else None
        self._reuse_keeper = reuse
        self._router: Router | None = None
        self._reuse: Any = None
        self._part: Part | None = None
        self._gone: GoneParts | None = None
        #: The pools sending a batch now, and whether the run is stopping (none begun then).
        self._runners: set[Any] = set()
        self._stopping = False

    def stop(self) -> None:
        """The run is stopping: the batches being sent send no more rows; their requests on the
        wire are answered and kept (the rows not sent go to the next session)."""
        self._stopping = True
        for runner in self._runners:
            runner.request_stop()

    async def _open(self) -> Router:
        import ray

        window = asyncio.Semaphore(self.job.concurrency)  # in flight, for all the worker's batches
        endpoints = []
        for config, base_url, keeper in self._endpoints:
            job = self.job
            endpoint = Endpoint(
                config, base_url, kind=self.kind, timeout=job.timeout, connections=job.concurrency
            )
            handle = ray.get_actor(keeper, namespace="batcher") if isinstance(keeper, str) else keeper
            endpoint.limits = RayLimiter(handle, window=window)
            await endpoint.client.__aenter__()
            endpoints.append(endpoint)
        if self._parts is not None and reachable(Path(self._parts[0]), self._parts[1]):
            parts_dir = Path(self._parts[0])
            self._part = Part(parts_dir)
            self._gone = GoneParts(parts_dir)
        return Router(endpoints)

    async def process(self, rows: list[InputRow], keys: dict[str, str]) -> tuple[list[Row], dict, Any]:
        """Send `rows`; (their records, the pool's counters, the error that stopped it or None).

        `keys`: the endpoints' API keys by the environment variable each is read from. They come
        with the work, in Ray's memory: never in its runtime_env (which its dashboard shows), a
        file or a log; a worker keeps them in its own environment, as a local run has them."""
        os.environ.update(keys)
        from batcher.store.progress import DoneRows, Progress
        from batcher.transports.online.runner import Runner
        from batcher.transports.recording import Recorder

        if self._router is None:
            self._router = await self._open()
            if self._reuse_keeper is not None:  # identical requests once a cluster, and the cache
                cache = self.job.cache is not None
                self._reuse = ClusterReuse(self._reuse_keeper, within_run=self.job.dedupe, cache=cache)
            elif self.job.dedupe:  # embeddings, or a pipeline stage: identical requests once a worker
                from batcher.kinds.reuse import InputReuse, Reuse

                within = {"within_run": True, "cache": None}
                self._reuse = InputReuse(**within) if self.job.embeddings else Reuse(**within)
        store = BatchRows(self._part)
        rows = self._left(rows, store)
        stats = RunStats(total=len(rows))
        recorder = Recorder(store, Progress(done=DoneRows(by_position=False)), stats)
        runner = Runner(
            job=self.job,
            kind=self.kind,
            router=self._router,
            recorder=recorder,
            answers=self.job.answer_format,
            reuse=self._reuse,
            budget=self._budget,
        )
        if self._stopping:
            runner.request_stop()
        clustered = isinstance(self._reuse, ClusterReuse)
        if clustered:
            await self._reuse.prefetch([self.kind.builder.build(row.row) for row in rows])
        self._runners.add(runner)
        try:
            outcome = await runner.run(iter(rows))
        finally:
            self._runners.discard(runner)
        if clustered:
            await self._reuse.hand_over()
        return store.records, {name: getattr(stats, name) for name in COUNTERS}, outcome.error

    def _left(self, rows: list[InputRow], store: BatchRows) -> list[InputRow]:
        """The rows to send: those a gone worker finished are taken from its part instead."""
        if self._gone is None:
            return rows
        self._gone.refresh()
        left = []
        for row in rows:
            found = self._gone.take(row.row_id, row.number)
            if found is None:
                left.append(row)
            else:
                store.records.append(found)  # (in the gone part already)
        return left


class SendBatches:
    """A Ray Data actor of a run: its RowWorker sends each batch it is handed, unless the run stops."""

    def __init__(
        self,
        job: Job,
        input_kind: str,
        endpoints: list,
        keys: dict[str, str],
        switch: Any,
        parts: tuple[str, str] | None = None,
        budget: Any = None,
        reuse: Any = None,
    ):
        """`keys`: the endpoints' API keys by the variable each is read from. They come with the
        work, in Ray's memory: never in its runtime_env (which its dashboard shows), a file or a log."""
        self._worker = RowWorker(job, input_kind, endpoints, parts, budget, reuse)
        self._keys, self._switch = keys, switch
        self._watch: asyncio.Task | None = None

    async def __call__(self, batch: Any) -> Any:
        (rows,) = payloads(batch)  # one batch a block (inputs.py)
        if isinstance(rows, BatcherError):  # the input no longer reads as it did at the scan
            self._switch.stop.remote()
            return block(([], {}, rows))
        if self._watch is None:
            self._watch = asyncio.create_task(self._watch_switch())
        if await self._switch.stopped.remote():
            return block(([], {}, None))  # not sent: the run is stopping; the next session sends them
        records, counters, error = await self._worker.process(rows, self._keys)
        if error is not None:
            self._switch.stop.remote()
        return block((records, counters, error))

    async def _watch_switch(self) -> None:
        """Ask the switch every `SWITCH_SECONDS`; once the run stops, stop the batches being sent."""
        from ray.exceptions import RayActorError

        try:
            while not await self._switch.stopped.remote():
                await asyncio.sleep(SWITCH_SECONDS)
        except RayActorError:
            pass  # the switch is gone: the run has ended
        self._worker.stop()
