"""A `batcher run`'s input read by Ray Data on the cluster (`--executor ray`): the driver plans, the
cluster reads.

The journal names every row by its line (JSONL) or row (Parquet) number, and resume passes over
the rows done by those numbers, so the input is read in ranges whose first number is known before
they are read:

- **Parquet:** a range a row group; its first row number comes from the footer (row counts), read
  on the driver. Nothing else of the file is read there.
- **JSONL:** a range a span of bytes, holding the lines that start in it. Where the first of them
  stands in the file comes from counting newlines, a chunk a Ray task, in parallel; the counts add
  up to each range's first line number. No line is parsed twice.
- **CSV, TSV:** one range, read by one task: a quoted field may hold a newline, so where a row
  starts cannot be found without reading every row before it.

Each range goes to a Ray Data read task with its slice of the done set (a byte a number, as
store/progress.py keeps it) and the ids to pass over, so done rows are passed over where they are
read, without being parsed; a range wholly done is not read at all. A read task yields its rows in
batches (`Reader.batch_rows`), each batch one record of one block (the rows pickled), so that Ray
Data's block shaping, which goes by bytes, keeps every batch a block of its own and deals it to one
worker.

A local input is read on the driver's node (the only one that has the file); an object store's
anywhere in the cluster, each task making its filesystem from its own machine's credentials.
"""

from __future__ import annotations

import io
import itertools
import math
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from batcher.errors import BatcherError, InputError
from batcher.inputs.jsonl import parse_json_line, without_bom
from batcher.inputs.sources import InputRow, Source
from batcher.storage import is_remote

#: Rows a worker is handed at a time, where its workers keep journal parts (what a kill re-pays is
#: then the requests in flight, whatever the batch: the larger batch costs less a row) ...
BATCH_ROWS = 256
#: ... and where they keep none (a run directory in an object store: a kill re-pays the batches out).
BATCH_ROWS_WITHOUT_PARTS = 64
#: A JSONL input is counted and read in spans of about this many bytes a worker ...
_SPANS_A_WORKER = 4
#: ... none smaller or larger than these.
_MIN_SPAN, _MAX_SPAN = 1 << 20, 64 << 20
_READ = 1 << 20


@dataclass(frozen=True)
class Range:
    """A part of the input read by one task: numbers `first` .. `first + count - 1`."""

    first: int
    #: How many numbers it spans; None for the last span of a JSONL input not counted.
    count: int | None
    #: JSONL: the bytes its lines start in.
    start: int = 0
    end: int = 0
    #: Parquet: its row group.
    group: int = -1


def plan(source: Source, done: bytearray | None, workers: int, until: int | None = None) -> list[Range]:
    """The ranges of `source` that hold a row not done (`done`: a byte a number, or None) at a
    position up to `until` (--limit), or at any."""
    if source.csv is not None:
        ranges = [Range(1, None)]
    else:
        ranges = _parquet_ranges(source) if source.is_parquet else _jsonl_ranges(source, workers)
    return [r for r in ranges if not _all_done(done, r) and (until is None or r.first <= until)]


def _parquet_ranges(source: Source) -> list[Range]:
    metadata = source.parquet_file().metadata
    ranges, first = [], 1
    for group in range(metadata.num_row_groups):
        count = metadata.row_group(group).num_rows
        if count:
            ranges.append(Range(first, count, group=group))
        first += count
    return ranges


def _jsonl_ranges(source: Source, workers: int) -> list[Range]:
    try:
        size = source.path.stat().st_size
    except OSError as e:
        raise InputError(f"cannot be read: {e.strerror or e}", path=source.path) from None
    span = min(_MAX_SPAN, max(_MIN_SPAN, size // max(1, workers * _SPANS_A_WORKER)))
    edges = [*range(0, size, span), size]
    if len(edges) <= 2:  # one span: counted if here (a small file; it sizes the workers' pool)
        if not size or is_remote(source.path):
            return [Range(1, None, 0, size)] if size else []
        return [Range(1, _newlines(source.path, 0, size - 1) + 1, 0, size)]
    # The lines that start in [a, b) are those after a newline in [a - 1, b - 1) (and the first line).
    spans = list(zip(edges, edges[1:], strict=False))
    if is_remote(source.path):  # counted where the store is near, in parallel
        import ray

        count = ray.remote(num_cpus=1)(_newlines)
        counts = ray.get([count.remote(source.path, max(0, a - 1), b - 1) for a, b in spans])
    else:  # counted here, at the speed of the disk: the file is on this node only
        counts = [_newlines(source.path, max(0, a - 1), b - 1) for a, b in spans]
    ranges, first = [], 1
    for (a, b), newlines in zip(spans, counts, strict=True):
        lines = newlines + (1 if a == 0 else 0)
        ranges.append(Range(first, lines, a, b))
        first += lines
    return ranges


def _newlines(path: Any, start: int, end: int) -> int:
    with _open(path) as f:
        f.seek(start)
        newlines, left = 0, end - start
        while left > 0 and (chunk := f.read(min(_READ, left))):
            newlines += chunk.count(b"\n")
            left -= len(chunk)
    return newlines


def _open(path: Any) -> Any:
    return io.BufferedReader(path.open_random(), _READ) if is_remote(path) else path.open("rb")


#: The one column of a block of the run's pipeline: a pickled payload (a batch of rows going to a
#: worker, or what the worker made of them coming back).
PAYLOAD = "payload"


def block(payload: Any) -> Any:
    """`payload` as a Ray Data block of one record: a batch of rows (or the error that stopped
    reading them), or a worker's records for one."""
    import pyarrow as pa

    return pa.table({PAYLOAD: pa.array([pickle.dumps(payload)], pa.binary())})


def payloads(batch: Any) -> list[Any]:
    """The payloads of a block (or of a batch of blocks), in order."""
    return [pickle.loads(value) for value in batch[PAYLOAD].to_pylist()]


def most_batches(ranges: list[Range], done: bytearray | None, batch_rows: int) -> int | None:
    """The most batches `ranges` can be read in (a read task batches its own range), or None where
    a range is not counted: more workers than that would never be handed a batch."""
    most = 0
    for r in ranges:
        if r.count is None:
            return None
        done_in = done[r.first : r.first + r.count].count(1) if done is not None else 0
        most += math.ceil((r.count - done_in) / batch_rows)
    return most


def _all_done(done: bytearray | None, r: Range) -> bool:
    if r.count is None or done is None:
        return r.count == 0
    part = done[r.first : r.first + r.count]
    return len(part) == r.count and part.count(1) == r.count


def datasource(reader: Reader, ranges: list[Range], done: bytearray | None) -> Any:
    """The rows left of a run's input as a Ray Data datasource (for `ray.data.read_datasource`): a
    read task a range, each with its slice of the done set."""
    from ray.data import Datasource, ReadTask
    from ray.data.block import BlockMetadata

    def done_of(r: Range) -> bytes:
        if done is None:
            return b""
        return bytes(done[r.first : None if r.count is None else r.first + r.count])

    class RunInput(Datasource):  # (made here: ray.data is imported only by a Ray run)
        @property
        def supports_distributed_reads(self) -> bool:
            return is_remote(reader.source.path)  # a local file is read on the driver's node

        def estimate_inmemory_data_size(self) -> None:
            return None

        def get_read_tasks(self, parallelism: int, **_: Any) -> list[Any]:
            unknown = BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=None)
            return [ReadTask(partial(reader.read, r, done_of(r)), unknown) for r in ranges]

    return RunInput()


@dataclass(frozen=True)
class Reader:
    """What every read task of a run has: the input, the columns it reads (Parquet), the ids to pass
    over (transports.base.SkipIds, or an object reference to them: one copy for the cluster) or None, and
    a callable saying the run is stopping, asked before each batch is yielded."""

    source: Source
    columns: list[str] | None
    skip: Any
    stopped: Callable[[], bool]
    #: The position of the last row to read (--limit), or None: every row.
    until: int | None = None
    #: Rows a batch.
    batch_rows: int = BATCH_ROWS

    def read(self, r: Range, done: bytes) -> Iterator[Any]:
        """A read task: the range's rows not done, a block of one batch at a time (or, where the
        input no longer reads as it did at the scan, a block of the error, which stops the run)."""
        skip = self.skip
        if skip is not None and not callable(skip):  # an object reference: fetched once a task
            import ray

            skip = ray.get(skip)
        if self.source.csv is not None:  # its one range, from row 1 (`done` is a byte a row from row 1)
            left = self.source.table_rows(self.columns, bytearray(1) + done, skip)
            rows = (row for row in left if row is not None)
        elif self.source.is_parquet:
            rows = self._parquet(r, done, skip)
        else:
            rows = self._jsonl(r, done, skip)
        if self.until is not None:
            rows = itertools.takewhile(lambda row: row.number <= self.until, rows)
        batch: list[InputRow] = []
        try:
            for row in rows:
                batch.append(row)
                if len(batch) == self.batch_rows:
                    if self.stopped():
                        return
                    yield block(batch)
                    batch = []
        except BatcherError as e:
            yield block(e)
            return
        if batch and not self.stopped():
            yield block(batch)

    def _jsonl(self, r: Range, done: bytes, skip: Any) -> Iterator[InputRow]:
        source = self.source
        try:
            with _open(source.path) as f:
                if r.start > 0:  # past the line that ends in our first byte or after it: the last range's
                    f.seek(r.start - 1)
                    f.readline()
                number = r.first - 1
                position = f.tell()
                while position < r.end:
                    raw = f.readline()
                    if not raw:
                        return
                    position += len(raw)
                    number += 1
                    if number == 1:
                        raw = without_bom(raw)
                    at = number - r.first
                    if at < len(done) and done[at] or not raw.strip():
                        continue
                    row = source.input_row(number, parse_json_line, raw, skip)
                    if row is not None:
                        yield row
        except OSError as e:
            raise InputError(f"cannot be read: {e.strerror or e}", path=source.path) from None

    def _parquet(self, r: Range, done: bytes, skip: Any) -> Iterator[InputRow]:
        source = self.source
        number = r.first - 1
        try:
            for batch in source.parquet_file().iter_batches(
                batch_size=4096, row_groups=[r.group], columns=self.columns
            ):
                for record in batch.to_pylist():
                    number += 1
                    at = number - r.first
                    if at < len(done) and done[at]:
                        continue
                    row = source.input_row(number, None, record, skip)
                    if row is not None:
                        yield row
        except InputError:
            raise
        except Exception as e:
            raise InputError(f"cannot be read from row {number + 1} on ({e})", path=source.path) from None
