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
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, InputError
from .idset import IdSet
from .prompts import CHAT, OPENAI_BATCH, TEMPLATE, RequestBuilder

PARQUET_SUFFIXES = (".parquet", ".pq")
#: `rows` yields a None for every this many rows it passes over.
SKIP_CHUNK = 1024
#: How many problems a scan lists before it stops looking.
MAX_PROBLEMS = 20
_BATCH_ROWS = 4096


@dataclass(frozen=True, slots=True)
class InputRow:
    row_id: str
    #: Where the row stands in its file: "line 12" or "row 12".
    where: str
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


def parse_json_line(raw: bytes) -> Any:
    """Parse one JSONL line; ValueError names what is wrong (NaN/Infinity refused)."""
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

    def __init__(self, path: Path, *, id_column: str, has_template: bool):
        self.path = path
        self.id_column = id_column
        if not path.exists():
            raise InputError("was not found", path=path)
        if path.is_dir():
            raise InputError("is a directory, not an input file", path=path)
        self.is_parquet = path.suffix.lower() in PARQUET_SUFFIXES
        self.kind = self._detect(has_template)

    def _detect(self, has_template: bool) -> str:
        if self.is_parquet:
            if not has_template:
                raise ConfigError(f"{self.path}: a Parquet input needs a prompt template (--prompt)")
            return TEMPLATE
        first = None
        for where, raw in self._lines():
            try:
                first = parse_json_line(raw)
            except ValueError as e:
                raise InputError(str(e), path=self.path, where=where) from None
            break
        if isinstance(first, dict) and "custom_id" in first and "body" in first:
            if has_template:
                raise ConfigError(
                    f"{self.path} is an OpenAI Batch input file (its lines carry their own request "
                    "bodies), so --prompt does not apply: leave it out"
                )
            return OPENAI_BATCH
        if has_template:
            return TEMPLATE
        if isinstance(first, dict) and "messages" in first:
            return CHAT
        raise ConfigError(
            f"{self.path}: rows have no 'messages', so they need a prompt template "
            "(--prompt 'Summarize: {text}')"
        )

    # -- reading -----------------------------------------------------------

    def _lines(self) -> Iterator[tuple[str, bytes]]:
        try:
            with self.path.open("rb") as f:
                for number, raw in enumerate(f, start=1):
                    if raw.strip():
                        yield f"line {number}", raw
        except OSError as e:
            raise InputError(f"cannot be read: {e.strerror or e}", path=self.path) from None

    def _jsonl_rows(self) -> Iterator[tuple[str, Any]]:
        """(where, parsed row or the ValueError that parsing raised)."""
        for where, raw in self._lines():
            try:
                yield where, parse_json_line(raw)
            except ValueError as e:
                yield where, e

    def _parquet_file(self) -> Any:
        _, pq = arrow()
        try:
            # Read a column chunk at a time through a small buffer, not whole row groups at once.
            return pq.ParquetFile(self.path, pre_buffer=False, buffer_size=1 << 20)
        except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ...
            raise InputError(f"is not a readable Parquet file ({e})", path=self.path) from None

    def _parquet_rows(self, columns: list[str] | None) -> Iterator[tuple[str, Any]]:
        parquet = self._parquet_file()
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
                    yield f"row {number}", row
        except Exception as e:
            raise InputError(f"cannot be read from row {number + 1} on ({e})", path=self.path) from None

    def _records(self, columns: list[str] | None = None) -> Iterator[tuple[str, Any]]:
        if self.is_parquet:
            return self._parquet_rows(columns)
        return self._jsonl_rows()

    def _identify(self, record: Any) -> tuple[str, dict[str, Any]]:
        """The row id and the row; ValueError says what is wrong with it."""
        if isinstance(record, ValueError):
            raise record
        if not isinstance(record, dict):
            raise ValueError(f"is not a JSON object but {type(record).__name__}")
        if self.kind == OPENAI_BATCH:
            if record.get("method", "POST") != "POST":
                raise ValueError(f"needs method POST, not {record.get('method')!r}")
            url = record.get("url", "/v1/chat/completions")
            if not isinstance(url, str) or not url.rstrip("/").endswith("/chat/completions"):
                raise ValueError(f"needs url /v1/chat/completions, not {url!r}")
            if not isinstance(record.get("body"), dict):
                raise ValueError("needs 'body', a JSON object holding the chat request")
            return _row_id(record.get("custom_id"), "custom_id"), record
        return _row_id(record.get(self.id_column), self.id_column), record

    # -- the two passes -----------------------------------------------------

    def fingerprint(self) -> str:
        """blake2b of the input's bytes (a fast read: no parsing)."""
        digest = hashlib.blake2b(digest_size=16)
        try:
            with self.path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
        except OSError as e:
            raise InputError(f"cannot be read: {e.strerror or e}", path=self.path) from None
        return digest.hexdigest()

    def scan(self, builder: RequestBuilder, fingerprint: str) -> Scan:
        """Check every row; raise one InputError listing the problems found."""
        columns = self._columns(builder)
        ids = IdSet()
        kept_types: dict[str, Any] = {name: set() for name in builder.keep_columns}
        problems: list[tuple[int, str]] = []
        total = 0
        for number, (where, record) in enumerate(self._records(columns), start=1):
            total += 1
            try:
                row_id, row = self._identify(record)
                ids.add(row_id)
                builder.build(row)
                if self.kind != OPENAI_BATCH:
                    for name, types in kept_types.items():
                        if name not in row:
                            raise ValueError(f"has no column {name!r} named in keep_columns")
                        if row[name] is not None and not self.is_parquet:
                            types.add(type(row[name]).__name__)
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
        schema = self._parquet_file().schema_arrow
        return {name: schema.field(name).type for name in columns}

    def _columns(self, builder: RequestBuilder) -> list[str] | None:
        if not self.is_parquet:
            return None
        return list(dict.fromkeys([self.id_column, *builder.placeholders, *builder.keep_columns]))

    def _duplicates(self, columns: list[str] | None, repeated: set[int]) -> list[tuple[int, str]]:
        """A second read, only when hashes repeat: which ids really repeat, and where."""
        first_seen: dict[str, str] = {}
        found = []
        for number, (where, record) in enumerate(self._records(columns), start=1):
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
        self, builder: RequestBuilder, skip: Callable[[str], bool] | None = None
    ) -> Iterator[InputRow | None]:
        """Every row, in file order, for sending (after a clean `scan`).

        Rows whose id `skip` accepts are passed over; a None comes for every
        `SKIP_CHUNK` of them, so a consumer can yield to its event loop. On JSONL
        lines whose first key is the id (and stands once), that is decided
        without parsing the line: resume's hot path.
        """
        if skip is not None and not self.is_parquet and self.kind != OPENAI_BATCH:
            yield from self._rows_skipping(skip)
            return
        skipped = 0
        for where, record in self._records(self._columns(builder)):
            try:
                row_id, row = self._identify(record)
            except ValueError as e:  # the file changed since the scan
                raise InputError(str(e), path=self.path, where=where) from None
            if skip is not None and skip(row_id):
                skipped += 1
                if skipped % SKIP_CHUNK == 0:
                    yield None
                continue
            yield InputRow(row_id, where, row)

    def _rows_skipping(self, skip: Callable[[str], bool]) -> Iterator[InputRow | None]:
        key = json.dumps(self.id_column).encode()
        pattern = rb"\{\s*" + re.escape(key) + rb'\s*:\s*("(?:[^"\\]|\\.)*"|-?\d+)\s*[,}]'
        leading_id = re.compile(pattern).match
        skipped = 0
        try:
            with self.path.open("rb") as f:
                for number, raw in enumerate(f, start=1):
                    # Only when the key stands once: json.loads keeps the *last* of repeated keys.
                    match = leading_id(raw) if raw.count(key) == 1 else None
                    if match is not None:
                        token = match[1]
                        if not token.startswith(b'"'):
                            row_id = str(int(token))
                        elif b"\\" in token:
                            row_id = json.loads(token)
                        else:
                            row_id = token[1:-1].decode("utf-8", errors="replace")
                        if skip(row_id):
                            skipped += 1
                            if skipped % SKIP_CHUNK == 0:
                                yield None
                            continue
                    if not raw.strip():
                        continue
                    where = f"line {number}"
                    try:
                        row_id, row = self._identify(parse_json_line(raw))
                    except ValueError as e:  # the file changed since the scan
                        raise InputError(str(e), path=self.path, where=where) from None
                    if skip(row_id):
                        skipped += 1
                        if skipped % SKIP_CHUNK == 0:
                            yield None
                        continue
                    yield InputRow(row_id, where, row)
        except OSError as e:
            raise InputError(f"cannot be read: {e.strerror or e}", path=self.path) from None
