"""`--executor ray`: a job's rows read and sent on a Ray cluster, under one limit, journaled once.

A Ray Data pipeline: the input is read by Ray Data tasks on the cluster (inputs.py: ranges
planned on the driver, done rows passed over where they are read), in batches of 256 rows (64
without journal parts) dealt to `--workers` actors. Each actor runs batcher's own online pool
(transports/online/runner.py) on its batch, with its own connections and a `RayLimiter` drawing on
the cluster's one budget (limits.py), and the finished rows come back to the driver (this
process), which alone writes the run directory, through the session's Recorder: results, errors,
summary, status, report and resume are those of a local run, and a row is written once.

Stopping (Ctrl-C, SIGTERM, a fatal answer such as a 401): a `Switch` actor is turned off; read
tasks yield no more batches, workers begin none, and the batches being sent send no more rows
(worker.py asks the switch every 0.2 s): their requests on the wire are answered and journaled. A
second Ctrl-C stops waiting for them.

What a crash costs (docs/ray.md): each worker journals the rows it finishes in a part of its own
(store/parts.py), so a killed worker or driver re-pays the requests it had in flight. Without parts
(a run directory in an object store), the rows of the batches being sent (`workers x IN_FLIGHT x
inputs.BATCH_ROWS_WITHOUT_PARTS`) and of finished batches not yet taken by the
driver are paid twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import shutil
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from batcher.errors import BatcherError, RunAborted
from batcher.job import Job
from batcher.limits.costs import Budget
from batcher.outcome import RunOutcome
from batcher.store.parts import write_token
from batcher.transports.base import RowsLeft
from batcher.transports.online.endpoints import Endpoint
from batcher.transports.ray.budget import budget_actor
from batcher.transports.ray.inputs import payloads
from batcher.transports.ray.limits import keeper_actor
from batcher.transports.ray.quiet import without_false_alarms
from batcher.transports.ray.reuse import reuse_actor
from batcher.transports.ray.worker import SendBatches
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


class RayTransport:
    """Runs the job's Ray Data pipeline and journals what comes back (transports.base.Transport)."""

    def __init__(
        self,
        *,
        job: Job,
        input_kind: str,
        recorder: Recorder,
        endpoints: list[Endpoint],
        parts_dir: Path | None = None,
    ):
        """`parts_dir`: where the workers journal the rows they finish (store/parts.py), or None
        (a run directory in an object store, staged on the driver's disk: no worker part)."""
        self.job, self.input_kind, self.recorder = job, input_kind, recorder
        self.stats = recorder.stats
        self._endpoints = endpoints
        self._parts_dir = parts_dir
        #: Whether every batch came back (and so every row in the parts is in the run's journal).
        self._all_back = False
        self._switch: Any = None
        self._budget: Any = None
        self._reuse: Any = None
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
        keepers, endpoints = self._start_actors(run_id)
        ray.get([actor.__ray_ready__.remote() for actor in [*keepers, self._switch]])
        if self.stop.stopping:  # (asked before the switch was there)
            self._stop_workers()
        # (the keys, and the variables `env:` headers and query read: EndpointConfig.environment)
        keys = {name: value for e in self._endpoints for name, value in e.config.environment().items()}
        parts = None
        if self._parts_dir is not None:
            parts = (str(self._parts_dir), run_id)
            write_token(self._parts_dir, run_id)
        syncer = asyncio.create_task(self.recorder.keep_syncing())
        try:
            with _blocks_of_one_batch(), without_false_alarms():
                # Planning reads the Parquet footer or counts the JSONL's lines: off the event loop.
                dataset = await asyncio.to_thread(self._pipeline, rows, endpoints, keys, parts)
                if dataset is not None:
                    await self._collect(dataset)
        except BatcherError as e:
            self.stop.fail(e)
        finally:
            if (error := await self.recorder.stop_syncing(syncer)) is not None:
                self.stop.fail(error)
            elif self._all_back and self._parts_dir is not None:
                shutil.rmtree(self._parts_dir, ignore_errors=True)  # every row in them is journaled
            if self._reuse is not None:  # (the cache's last answers committed)
                ray.get(self._reuse.close.remote())
            for actor in [*keepers, self._switch]:
                ray.kill(actor)
        return self.stop.outcome(self.stats)

    def _start_actors(self, run_id: str) -> tuple[list[Any], list[tuple[Any, str, str]]]:
        """The run's actors but the switch (made here too): a limits keeper an endpoint, the budget's
        and the cache's if set; and each endpoint's (config, base URL, keeper's name)."""
        import ray

        keepers, endpoints = [], []
        for n, endpoint in enumerate(self._endpoints):
            name = f"batcher-{run_id}-{n}"
            config, in_flight = endpoint.config, self.job.workers * self.job.concurrency
            keepers.append(keeper_actor(name, config.rpm, config.tpm, max_window=in_flight))
            endpoints.append((endpoint.config, endpoint.base_url, name))
        self._switch = ray.remote(num_cpus=0)(Switch).remote()
        budget = Budget.of_run(self.job, self.stats)
        if budget.limited:
            self._budget = budget_actor(budget)
            keepers.append(self._budget)
        if (self.job.cache or self.job.dedupe) and not self.job.embeddings:
            # (a path of the driver's, whose working directory the actor does not share)
            cache = str(Path(self.job.cache).resolve()) if self.job.cache else None
            self._reuse = reuse_actor(cache, self.job.dedupe)
            keepers.append(self._reuse)
        return keepers, endpoints

    def _pipeline(
        self, rows: RowsLeft, endpoints: list, keys: dict[str, str], parts: tuple[str, str] | None
    ) -> Any:
        """The job as a Ray Data dataset: the input's ranges read, their batches sent by the workers.
        None when no range holds a row left."""
        import ray.data

        from batcher.transports.ray import inputs

        for handler in logging.getLogger("ray.data").handlers:  # its console: errors only (the rest
            if handler.name == "console":  # stays in the Ray session's ray-data.log)
                handler.setLevel(logging.ERROR)

        source = rows.source
        ranges = inputs.plan(source, rows.done, self.job.workers, rows.until)
        if not ranges:
            return None
        skip = ray.put(rows.skip) if rows.skip is not None else None
        batch_rows = inputs.BATCH_ROWS if parts is not None else inputs.BATCH_ROWS_WITHOUT_PARTS
        columns, asking = source.columns(rows.builder), Asking(self._switch)
        reader = inputs.Reader(source, columns, skip, asking, rows.until, batch_rows)
        dataset = ray.data.read_datasource(inputs.datasource(reader, ranges, rows.done))
        # No more workers than batches (a small job starts no process that would idle); fewer
        # batches than workers (rows passed over by id, --limit, a stop) is no fault of the user's.
        most = inputs.most_batches(ranges, rows.done, batch_rows)
        workers = max(1, min(self.job.workers, most)) if most is not None else self.job.workers
        warnings.filterwarnings("ignore", "The minimum number of concurrent actors", UserWarning)
        return dataset.map_batches(
            SendBatches,
            fn_constructor_args=(
                *(self.job, self.input_kind, endpoints, keys),
                *(self._switch, parts, self._budget, self._reuse),
            ),
            compute=ray.data.ActorPoolStrategy(
                size=workers,
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
        self._all_back = item is _END

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
        # Ray's default for a new cluster, token authentication, without its warning that it is on
        # (RAY_AUTH_MODE, which would say so, is read when Ray is imported: too early for a run).
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")  # batcher's own bar counts the rows
    ray.init(
        address=job.ray_address,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
