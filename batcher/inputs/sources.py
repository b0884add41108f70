"""Stream input rows from JSONL, Parquet (by record batch), CSV/TSV (by block) or OpenAI Batch files.

A new run reads its input twice, both times streamed: `scan` checks every row
before anything is sent (parse, id, duplicate id, template columns, request
shape) and counts them; `rows` then yields them for sending. Finding a bad line
before spending money is worth a second read of the file. A resume whose input
has the fingerprint (a hash of the bytes) of the scan it recorded skips the scan.
Rows of a file without an `id` at all are named by their position (see `Source`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from batcher.errors import ConfigError, InputError
from batcher.inputs.csvinput import CsvFile
from batcher.inputs.formats import BATCH_INPUT, CHAT, CSV, JSONL, LABELS, PARQUET, TEMPLATE, TSV, kind_of_file
from batcher.inputs.jsonl import done_run, parse_json_line, skip_lines, without_bom
from batcher.inputs.scanning import DEFAULT_ID, checked_id
from batcher.storage import is_remote

#: `--keep-columns '*'`: every column of the input.
KEEP_ALL = "*"
#: `rows` yields a None for every this many rows it passes over by id.
SKIP_CHUNK = 1024
#: Runs of at least this many done lines are passed over by counting newlines.
_BULK_SKIP = 32
_BATCH_ROWS = 4096


class Builder(Protocol):
    """What turns a row into a request body (a request kind's builder): the scan checks every row
    with it, and reads only the columns it names."""

    #: Columns a row's request reads (a Parquet scan reads only these and the id).
    placeholders: list[str]
    keep_columns: tuple[str, ...]

    def build(self, row: dict[str, Any]) -> dict[str, Any]:
        """The request body of a row; ValueError names what is wrong with the row."""


@dataclass(frozen=True, slots=True)
class InputRow:
    row_id: str
    #: Where the row stands in its file, from 1: its line number (JSONL) or row number (Parquet, CSV).
    number: int
    row: dict[str, Any]


def arrow() -> tuple[Any, Any]:
    """pyarrow and pyarrow.parquet, imported only when a Parquet file is involved.

    Arrow's default allocator (mimalloc) keeps freed memory for reuse, which
    showed as +40 MB of resident memory on a 100k-row Parquet run; the system
    allocator gives it back. A user's own ARROW_DEFAULT_MEMORY_POOL wins.
    """
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")  # read when pyarrow loads
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pa, pq


class Source:
    """One input file, of a kind found by looking at it (formats.py).

    Its rows are named by `id_column`. With None (no --id-column given), by the column `id`, or,
    when the file has no `id` at all (no such Parquet or CSV column; no `id` in JSONL's first row),
    by their position: line number (JSONL) or row number (Parquet, CSV), as text. A JSONL file where
    only some rows have an `id` is refused, naming the rows without one.
    """

    def __init__(
        self,
        path: Path,
        *,
        id_column: str | None,
        has_template: bool,
        request_field: str = "messages",
        endpoint_path: str = "/chat/completions",
        name: str | None = None,
    ):
        """`request_field`: the field a request-shaped row carries (`messages`; `input` for embeddings);
        `endpoint_path`: where a Batch input file's lines must say they go; `name`: what messages
        call the input (its path, unless told otherwise)."""
        self.path = path
        self.name = name or str(path)
        self.request_field, self.endpoint_path = request_field, endpoint_path
        try:
            if not path.exists():
                raise InputError("was not found", path=self.name)
            if path.is_dir():
                raise InputError("is a directory, not an input file", path=self.name)
        except OSError as e:  # an object store that cannot be reached
            raise InputError(f"cannot be read: {e.strerror or e}", path=self.name) from None
        #: JSONL, PARQUET, CSV or TSV (formats.py).
        self.format = kind_of_file(path)
        self.is_parquet = self.format == PARQUET
        #: Read a block of rows at a time, by column (Parquet, CSV), rather than a line at a time.
        self.tabular = self.format != JSONL
        self.csv = (
            CsvFile(path, "\t" if self.format == TSV else ",", self.name)
            if self.format in (CSV, TSV)
            else None
        )
        #: What a position in the file is called in messages and in `row_number`.
        self.unit = "row" if self.tabular else "line"
        self.kind, first = self._detect(has_template)
        #: The column naming each row; None: rows are named by their position.
        self.id_column = self._id_column(id_column, first)

    def _detect(self, has_template: bool) -> tuple[str, Any]:
        """The input kind (kinds/prompts.py), and the first row of a JSONL file."""
        if self.tabular:
            if not has_template:
                raise ConfigError(
                    f"{self.name}: a {LABELS[self.format]} input needs a prompt template "
                    "(--prompt 'Summarize: {text}')"
                )
            return TEMPLATE, None
        first = None
        for number, raw in self._lines():
            try:
                first = parse_json_line(raw)
            except ValueError as e:
                raise InputError(str(e), path=self.name, where=f"line {number}") from None
            break
        if isinstance(first, dict) and "custom_id" in first and "body" in first:
            if has_template:
                raise ConfigError(
                    f"{self.name} is an OpenAI Batch input file (its lines carry their own request "
                    "bodies), so --prompt does not apply: leave it out"
                )
            return BATCH_INPUT, first
        if has_template:
            return TEMPLATE, first
        if isinstance(first, dict) and self.request_field in first:
            return CHAT, first
        raise ConfigError(
            f"{self.name}: rows have no '{self.request_field}', so they need a prompt template "
            "(--prompt 'Summarize: {text}')"
        )

    def _id_column(self, given: str | None, first: Any) -> str | None:
        if given is not None or self.kind == BATCH_INPUT:
            return given or DEFAULT_ID
        if self.tabular:
            return DEFAULT_ID if DEFAULT_ID in self.column_names() else None
        has_id = not isinstance(first, dict) or first.get(DEFAULT_ID) is not None
        return DEFAULT_ID if has_id else None

    # -- reading -----------------------------------------------------------

    def _lines(self) -> Iterator[tuple[int, bytes]]:
        try:
            with self.path.open("rb") as f:
                for number, raw in enumerate(f, start=1):
                    if number == 1:
                        raw = without_bom(raw)
                    if raw.strip():
                        yield number, raw
        except OSError as e:
            raise InputError(f"cannot be read: {e.strerror or e}", path=self.name) from None

    def _jsonl_rows(self) -> Iterator[tuple[int, Any]]:
        """(line number, parsed row or the ValueError that parsing raised)."""
        for number, raw in self._lines():
            try:
                yield number, parse_json_line(raw)
            except ValueError as e:
                yield number, e

    def parquet_file(self) -> Any:
        _, pq = arrow()
        try:
            # Read a column chunk at a time through a small buffer, not whole row groups at once.
            source = self.path.open_random() if is_remote(self.path) else self.path
            return pq.ParquetFile(source, pre_buffer=False, buffer_size=1 << 20)
        except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ...
            raise InputError(f"is not a readable Parquet file ({e})", path=self.name) from None

    def column_names(self) -> list[str]:
        """The columns of a Parquet or CSV input (empty for JSONL, whose rows each have their own)."""
        if self.csv is not None:
            return self.csv.names()
        return list(self.parquet_file().schema_arrow.names) if self.is_parquet else []

    def _batches(self, columns: list[str] | None) -> Iterator[Any]:
        """The record batches of a Parquet or CSV input: the columns named (None: all)."""
        if columns is not None:
            names = self.column_names()
            missing = [c for c in columns if c not in names]
            if missing:
                raise InputError(
                    f"has no column {', '.join(repr(c) for c in missing)} (columns: {', '.join(names)})",
                    path=self.name,
                )
        if self.csv is not None:
            yield from self.csv.batches(columns)
            return
        number = 0
        try:
            for batch in self.parquet_file().iter_batches(batch_size=_BATCH_ROWS, columns=columns):
                yield batch
                number += batch.num_rows
        except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ...
            raise InputError(f"cannot be read from row {number + 1} on ({e})", path=self.name) from None

    def records(self, columns: list[str] | None = None) -> Iterator[tuple[int, Any]]:
        """(position, parsed row or the ValueError that parsing raised) of every row."""
        if not self.tabular:
            yield from self._jsonl_rows()
            return
        number = 0
        for batch in self._batches(columns):
            for row in batch.to_pylist():
                number += 1
                yield number, row

    def identify(self, record: Any, position: int) -> tuple[str, dict[str, Any]]:
        """The row id (`position` names a row of a file without ids) and the row; ValueError says
        what is wrong with it."""
        if isinstance(record, ValueError):
            raise record
        if not isinstance(record, dict):
            raise ValueError(f"is not a JSON object but {type(record).__name__}")
        if self.kind == BATCH_INPUT:
            if record.get("method", "POST") != "POST":
                raise ValueError(f"needs method POST, not {record.get('method')!r}")
            path = self.endpoint_path
            url = record.get("url", "/v1" + path)
            if not isinstance(url, str) or not url.rstrip("/").endswith(path):
                raise ValueError(f"needs url /v1{path}, not {url!r}")
            if not isinstance(record.get("body"), dict):
                raise ValueError("needs 'body', a JSON object holding the request")
            return checked_id(record.get("custom_id"), "custom_id"), record
        if self.id_column is None:
            return str(position), record
        return checked_id(record.get(self.id_column), self.id_column), record

    # -- the two passes -----------------------------------------------------

    def fingerprint(self) -> str:
        """blake2b of the input's bytes (a fast read: no parsing); of an object store's object, of its
        size and the time it was written (objects are replaced whole: reading a 100 GB object to
        recognise it would cost a download)."""
        digest = hashlib.blake2b(digest_size=16)
        try:
            if is_remote(self.path):
                stat = self.path.stat()
                digest.update(f"{stat.st_size}:{stat.st_mtime}".encode())
                return digest.hexdigest()
            with self.path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
        except OSError as e:
            raise InputError(f"cannot be read: {e.strerror or e}", path=self.name) from None
        return digest.hexdigest()

    def parquet_types(self, columns: list[str]) -> dict[str, Any]:
        schema = self.parquet_file().schema_arrow
        return {name: schema.field(name).type for name in columns}

    def kept_names(self, keep: tuple[str, ...]) -> list[str] | None:
        """The columns `keep` names; for '*' every named column of a Parquet or CSV input, or None for
        a JSONL input (whose scan finds its columns)."""
        if tuple(keep) != (KEEP_ALL,):
            return list(keep)
        return [name for name in self.column_names() if name] if self.tabular else None

    def columns(self, builder: Builder) -> list[str] | None:
        """The columns a Parquet or CSV input is read for (None for JSONL)."""
        if not self.tabular:
            return None
        named = [self.id_column] if self.id_column is not None else []
        kept = self.kept_names(builder.keep_columns) or []
        return list(dict.fromkeys([*named, *builder.placeholders, *kept]))

    def rows(
        self,
        builder: Builder,
        *,
        done: bytearray | None = None,
        skip: Callable[[str], bool] | None = None,
    ) -> Iterator[InputRow | None]:
        """Every row, in file order, for sending (after a clean `scan`).

        Rows marked in `done` (a byte per line or row number, see store/progress.py)
        are passed over without being parsed, long runs of them by counting
        newlines: resume's hot path. Rows whose id `skip` accepts are passed over
        after parsing. A None comes now and then while rows are passed over, so a
        consumer can yield to its event loop.
        """
        done = done if done is not None else bytearray()
        if self.tabular:
            yield from self.table_rows(self.columns(builder), done, skip)
            return
        try:
            with self.path.open("rb") as f:
                number = skipped = 0  # lines read, rows passed over by id
                while True:
                    run = done_run(done, number + 1)
                    if run >= _BULK_SKIP:
                        number += yield from skip_lines(f, run)
                    raw = f.readline()
                    if not raw:
                        return
                    number += 1
                    if number == 1:
                        raw = without_bom(raw)
                    if number < len(done) and done[number] or not raw.strip():
                        continue
                    row = self.input_row(number, parse_json_line, raw, skip)
                    if row is not None:
                        yield row
                    elif (skipped := skipped + 1) % SKIP_CHUNK == 0:
                        yield None
        except OSError as e:
            raise InputError(f"cannot be read: {e.strerror or e}", path=self.name) from None

    def table_rows(
        self, columns: list[str] | None, done: bytearray, skip: Callable[[str], bool] | None
    ) -> Iterator[InputRow | None]:
        """`rows` of a Parquet or CSV input (its `columns`): a batch wholly done is not converted."""
        number = skipped = 0  # rows read, rows passed over by id
        for batch in self._batches(columns):
            if done_run(done, number + 1) >= batch.num_rows:
                number += batch.num_rows
                yield None
                continue
            for record in batch.to_pylist():
                number += 1
                if number < len(done) and done[number]:
                    continue
                row = self.input_row(number, None, record, skip)
                if row is not None:
                    yield row
                elif (skipped := skipped + 1) % SKIP_CHUNK == 0:
                    yield None

    def input_row(
        self, number: int, parse: Callable[[bytes], Any] | None, raw: Any, skip: Callable[[str], bool] | None
    ) -> InputRow | None:
        try:
            row_id, row = self.identify(parse(raw) if parse is not None else raw, number)
        except ValueError as e:  # the file changed since the scan
            raise InputError(str(e), path=self.name, where=f"{self.unit} {number}") from None
        if skip is not None and skip(row_id):
            return None
        return InputRow(row_id, number, row)

    def position_of_row(self, count: int) -> int:
        """The position (`InputRow.number`) of the `count`-th row: the same number where a position
        is a row; in JSONL, where blank lines hold no row, found by reading lines (not parsing them)."""
        if self.unit != "line":
            return count
        seen = last = 0
        for last, _ in self._lines():
            seen += 1
            if seen == count:
                return last
        return last + count - seen  # (past the end: every row)
