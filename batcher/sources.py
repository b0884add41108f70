"""Stream input rows from JSONL, Parquet (by record batch) or OpenAI Batch files.

A new run reads its input twice, both times streamed: `scan` checks every row
before anything is sent (parse, id, duplicate id, template columns, request
shape) and counts them; `rows` then yields them for sending. Finding a bad line
before spending money is worth a second read of the file. A resume whose input
has the fingerprint (a hash of the bytes) of the scan it recorded skips the scan.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .errors import ConfigError, InputError
from .idset import IdSet
from .jsoncodec import orjson
from .prompts import BATCH_INPUT, CHAT, TEMPLATE, RequestBuilder
from .storage import is_remote

PARQUET_SUFFIXES = (".parquet", ".pq")
#: `rows` yields a None for every this many rows it passes over by id.
SKIP_CHUNK = 1024
#: Runs of at least this many done lines are passed over by counting newlines.
_BULK_SKIP = 32
_SKIP_READ = 1 << 20
#: How many problems a scan lists before it stops looking.
MAX_PROBLEMS = 20
_BATCH_ROWS = 4096


@dataclass(frozen=True, slots=True)
class InputRow:
    row_id: str
    #: Where the row stands in its file, from 1: its line number (JSONL) or row number (Parquet).
    number: int
    row: dict[str, Any]


@dataclass(frozen=True)
class Scan:
    kind: str
    total: int
    #: blake2b of the input's bytes: resuming checks the input has not changed.
    fingerprint: str
    #: Per kept column: its Arrow type (Parquet input) or the Python type names seen (JSONL).
    kept_types: dict[str, Any]


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


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


_fast_loads = orjson.loads if orjson is not None else None


def parse_json_line(raw: bytes) -> Any:
    """Parse one JSONL line; ValueError names what is wrong (NaN/Infinity refused)."""
    if _fast_loads is not None:
        try:
            return _fast_loads(raw)  # refuses all the stdlib refuses, and more: the stdlib rules on that
        except ValueError:
            pass
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"is not valid UTF-8 (byte {e.start})") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("is nested too deeply") from None
    except ValueError as e:
        raise ValueError(f"is not valid JSON ({e})") from None


def _row_id(value: Any, column: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        if value is None:
            raise ValueError(f"has no '{column}' (--id-column names the column that identifies each row)")
        raise ValueError(f"has a '{column}' that is not a string or an integer but {type(value).__name__}")
    row_id = str(value)
    if not row_id.strip():
        raise ValueError(f"has an empty '{column}'")
    return row_id


class Source:
    """One input file, of a kind found by looking at it."""

    def __init__(
        self,
        path: Path,
        *,
        id_column: str,
        has_template: bool,
        request_field: str = "messages",
        endpoint_path: str = "/chat/completions",
    ):
        """`request_field`: the field a request-shaped row carries (`messages`; `input` for embeddings);
        `endpoint_path`: where a Batch input file's lines must say they go."""
        self.path = path
        self.id_column = id_column
        self.request_field, self.endpoint_path = request_field, endpoint_path
        try:
            if not path.exists():
                raise InputError("was not found", path=path)
            if path.is_dir():
                raise InputError("is a directory, not an input file", path=path)
        except OSError as e:  # an object store that cannot be reached
            raise InputError(f"cannot be read: {e.strerror or e}", path=path) from None
        self.is_parquet = path.suffix.lower() in PARQUET_SUFFIXES
        #: What a position in the file is called in messages and in `row_number`.
        self.unit = "row" if self.is_parquet else "line"
        self.kind = self._detect(has_template)

    def _detect(self, has_template: bool) -> str:
        if self.is_parquet:
            if not has_template:
                raise ConfigError(f"{self.path}: a Parquet input needs a prompt template (--prompt)")
            return TEMPLATE
        first = None
        for number, raw in self._lines():
            try:
                first = parse_json_line(raw)
            except ValueError as e:
                raise InputError(str(e), path=self.path, where=f"line {number}") from None
            break
        if isinstance(first, dict) and "custom_id" in first and "body" in first:
            if has_template:
                raise ConfigError(
                    f"{self.path} is an OpenAI Batch input file (its lines carry their own request "
                    "bodies), so --prompt does not apply: leave it out"
                )
            return BATCH_INPUT
        if has_template:
            return TEMPLATE
        if isinstance(first, dict) and self.request_field in first:
            return CHAT
        raise ConfigError(
            f"{self.path}: rows have no '{self.request_field}', so they need a prompt template "
            "(--prompt 'Summarize: {text}')"
        )

    # -- reading -----------------------------------------------------------

    def _lines(self) -> Iterator[tuple[int, bytes]]:
        try:
            with self.path.open("rb") as f:
                for number, raw in enumerate(f, start=1):
                    if raw.strip():
                        yield number, raw
        except OSError as e:
            raise InputError(f"cannot be read: {e.strerror or e}", path=self.path) from None

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
            raise InputError(f"is not a readable Parquet file ({e})", path=self.path) from None

    def _parquet_rows(self, columns: list[str] | None) -> Iterator[tuple[int, Any]]:
        parquet = self.parquet_file()
        names = parquet.schema_arrow.names
        if columns is not None:
            missing = [c for c in columns if c not in names]
            if missing:
                raise InputError(
                    f"has no column {', '.join(repr(c) for c in missing)} (columns: {', '.join(names)})",
                    path=self.path,
                )
        number = 0
        try:
            for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, columns=columns):
                for row in batch.to_pylist():
                    number += 1
                    yield number, row
        except Exception as e:
            raise InputError(f"cannot be read from row {number + 1} on ({e})", path=self.path) from None

    def _records(self, columns: list[str] | None = None) -> Iterator[tuple[int, Any]]:
        if self.is_parquet:
            return self._parquet_rows(columns)
        return self._jsonl_rows()

    def _identify(self, record: Any) -> tuple[str, dict[str, Any]]:
        """The row id and the row; ValueError says what is wrong with it."""
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
            return _row_id(record.get("custom_id"), "custom_id"), record
        return _row_id(record.get(self.id_column), self.id_column), record

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
            raise InputError(f"cannot be read: {e.strerror or e}", path=self.path) from None
        return digest.hexdigest()

    def scan(
        self,
        builder: RequestBuilder,
        fingerprint: str,
        on_body: Callable[[int, str, dict[str, Any]], None] | None = None,
    ) -> Scan:
        """Check every row; raise one InputError listing the problems found.

        `on_body(number, row_id, body)` sees the request body of every good row.
        """
        columns = self.columns(builder)
        ids = IdSet()
        kept_types: dict[str, Any] = {name: set() for name in builder.keep_columns}
        problems: list[tuple[int, str]] = []
        total = 0
        for number, (position, record) in enumerate(self._records(columns), start=1):
            total += 1
            where = f"{self.unit} {position}"
            try:
                row_id, row = self._identify(record)
                ids.add(row_id)
                body = builder.build(row)
                if self.kind != BATCH_INPUT:
                    for name, types in kept_types.items():
                        if name not in row:
                            raise ValueError(f"has no column {name!r} named in keep_columns")
                        if row[name] is not None and not self.is_parquet:
                            types.add(type(row[name]).__name__)
                if on_body is not None:
                    on_body(position, row_id, body)
            except ValueError as e:
                problems.append((number, f"{where} {e}"))
                if len(problems) >= MAX_PROBLEMS:
                    break
        repeated = ids.repeated_hashes()
        if repeated and len(problems) < MAX_PROBLEMS:
            problems += self._duplicates(columns, repeated)
        if problems:
            problems.sort()
            listed = [text for _, text in problems[:MAX_PROBLEMS]]
            if len(problems) >= MAX_PROBLEMS:
                listed.append(f"(stopped after {MAX_PROBLEMS} problems)")
            raise InputError(
                f"has {len(listed)} problem(s); nothing was sent:\n  " + "\n  ".join(listed), path=self.path
            )
        if total == 0:
            raise InputError("has no rows", path=self.path)
        if self.is_parquet:
            kept_types = self.parquet_types(list(kept_types))
        return Scan(kind=self.kind, total=total, fingerprint=fingerprint, kept_types=kept_types)

    def parquet_types(self, columns: list[str]) -> dict[str, Any]:
        schema = self.parquet_file().schema_arrow
        return {name: schema.field(name).type for name in columns}

    def columns(self, builder: RequestBuilder) -> list[str] | None:
        if not self.is_parquet:
            return None
        return list(dict.fromkeys([self.id_column, *builder.placeholders, *builder.keep_columns]))

    def _duplicates(self, columns: list[str] | None, repeated: set[int]) -> list[tuple[int, str]]:
        """A second read, only when hashes repeat: which ids really repeat, and where."""
        first_seen: dict[str, str] = {}
        found = []
        for number, (position, record) in enumerate(self._records(columns), start=1):
            where = f"{self.unit} {position}"
            try:
                row_id, _ = self._identify(record)
            except ValueError:
                continue
            if IdSet.hash_of(row_id) not in repeated:
                continue
            if row_id in first_seen:
                found.append((number, f"{where} repeats id {row_id!r} (first seen at {first_seen[row_id]})"))
            else:
                first_seen[row_id] = where
        return found

    def rows(
        self,
        builder: RequestBuilder,
        *,
        done: bytearray | None = None,
        skip: Callable[[str], bool] | None = None,
    ) -> Iterator[InputRow | None]:
        """Every row, in file order, for sending (after a clean `scan`).

        Rows marked in `done` (a byte per line or row number, see checkpoint.py)
        are passed over without being parsed, long runs of them by counting
        newlines: resume's hot path. Rows whose id `skip` accepts are passed over
        after parsing. A None comes now and then while rows are passed over, so a
        consumer can yield to its event loop.
        """
        done = done if done is not None else bytearray()
        if self.is_parquet:
            yield from self._parquet_rows_left(builder, done, skip)
            return
        try:
            with self.path.open("rb") as f:
                number = skipped = 0  # lines read, rows passed over by id
                while True:
                    run = _done_run(done, number + 1)
                    if run >= _BULK_SKIP:
                        number += yield from _skip_lines(f, run)
                    raw = f.readline()
                    if not raw:
                        return
                    number += 1
                    if number < len(done) and done[number] or not raw.strip():
                        continue
                    row = self.input_row(number, parse_json_line, raw, skip)
                    if row is not None:
                        yield row
                    elif (skipped := skipped + 1) % SKIP_CHUNK == 0:
                        yield None
        except OSError as e:
            raise InputError(f"cannot be read: {e.strerror or e}", path=self.path) from None

    def _parquet_rows_left(
        self, builder: RequestBuilder, done: bytearray, skip: Callable[[str], bool] | None
    ) -> Iterator[InputRow | None]:
        parquet = self.parquet_file()
        number = skipped = 0  # rows read, rows passed over by id
        try:
            batches = parquet.iter_batches(batch_size=_BATCH_ROWS, columns=self.columns(builder))
            for batch in batches:
                if _done_run(done, number + 1) >= batch.num_rows:
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
        except InputError:
            raise
        except Exception as e:
            raise InputError(f"cannot be read from row {number + 1} on ({e})", path=self.path) from None

    def input_row(
        self, number: int, parse: Callable[[bytes], Any] | None, raw: Any, skip: Callable[[str], bool] | None
    ) -> InputRow | None:
        try:
            row_id, row = self._identify(parse(raw) if parse is not None else raw)
        except ValueError as e:  # the file changed since the scan
            raise InputError(str(e), path=self.path, where=f"{self.unit} {number}") from None
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


def _done_run(done: bytearray, start: int) -> int:
    """How many numbers from `start` on are marked done (a C-speed search)."""
    if start >= len(done):
        return 0
    end = done.find(0, start)
    return (len(done) if end == -1 else end) - start


def _skip_lines(f: BinaryIO, count: int) -> Generator[None, None, int]:
    """Move `f` past `count` lines by counting newlines a chunk at a time; return how many it passed."""
    passed = 0
    while passed < count:
        start = f.tell()
        chunk = f.read(_SKIP_READ)
        if not chunk:
            break
        newlines = chunk.count(b"\n")
        if passed + newlines < count:
            passed += newlines
            yield None
            continue
        end = -1
        for _ in range(count - passed):
            end = chunk.index(b"\n", end + 1)
        f.seek(start + end + 1)
        passed = count
    return passed
