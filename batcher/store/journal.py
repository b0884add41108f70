"""Append-only JSONL files that survive crashes: written in whole lines, read back with repair.

A journal line reaches the OS in one write (`Journal.write`), so a killed
process leaves whole lines and at most one torn last line; `read_journal` drops
torn or garbled lines (and with `repair` rewrites the file without them, so
later appends start on a clean line). Results lines in batcher's own layout are
read in bulk from their first bytes, which makes resuming a million-row run
fast. `write_atomically` replaces small files (job.json, summary.json) whole.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from batcher.jsoncodec import dumpb


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: str | bytes) -> None:
    """Replace `path` with `data` so that a crash leaves the old or the new file whole."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _parse_line(raw: bytes) -> dict[str, Any] | None:
    if not raw.endswith(b"\n"):
        return None  # torn: the crash came before the line was whole
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) and "id" in record else None


# The start of a results line as jsoncodec writes `result_record`: id, row number,
# usage, after the newline that ends the line before. Quotes and newlines inside
# JSON strings are escaped, so these keys cannot be text and a raw newline ends a
# line. (A leading literal lets the regex engine skip ahead; `^` would not.)
_RESULT_START = re.compile(
    rb'\n\{"id":"([^"\\\n]*(?:\\.[^"\\\n]*)*)","row_number":(\d+),"usage":(?:null|\{"prompt_tokens":(\d+),'
    rb'"completion_tokens":(\d+),"total_tokens":\d+\}),"cost_usd":(null|[-+.\deE]+)[,}]'
)
_READ_CHUNK = 1 << 22
#: (id, row number, prompt tokens, completion tokens, cost) as the bytes of a results line.
FastLine = tuple[bytes, bytes, bytes | None, bytes | None, bytes]


def read_journal(
    path: Path,
    on_record: Callable[[dict[str, Any]], None],
    on_lines: Callable[[list[FastLine]], None] | None = None,
    *,
    repair: bool = True,
) -> int:
    """Stream a journal file's whole records; return how many lines were broken.

    With `on_lines`, results lines in batcher's own layout go to it in bulk, read
    from their first bytes by one regex search a chunk (resume's hot path); any
    other line is parsed and goes to `on_record`. Broken lines are those a crash
    tore (no newline at the end, or bytes that do not parse). They were never
    reported done; with `repair` the file is rewritten without them so that
    appends start on a clean line.
    """
    if not path.exists():
        return 0
    broken = 0
    with path.open("rb") as f:
        tail = b""
        while True:
            data = f.read(_READ_CHUNK)
            chunk = tail + data
            cut = chunk.rfind(b"\n") + 1 if data else len(chunk)
            chunk, tail = chunk[:cut], chunk[cut:]
            broken += _read_chunk(chunk, on_record, on_lines)
            if not data:
                break
    if broken and repair:
        _rewrite_without_broken_lines(path)
    return broken


def _read_chunk(
    chunk: bytes,
    on_record: Callable[[dict[str, Any]], None],
    on_lines: Callable[[list[FastLine]], None] | None,
) -> int:
    """Hand a chunk's lines on (see read_journal); return how many were broken."""
    if on_lines is not None:
        found = _RESULT_START.findall(b"\n" + chunk)
        if len(found) == chunk.count(b"\n") and chunk.endswith(b"\n"):
            on_lines(found)  # every line of the chunk is a whole line of ours
            return 0
    broken = 0
    for raw in chunk.splitlines(keepends=True):
        if on_lines is not None and raw.endswith(b"\n") and (match := _RESULT_START.match(b"\n" + raw)):
            on_lines([match.groups()])
            continue
        record = _parse_line(raw)
        if record is not None:
            on_record(record)
        elif raw.strip():
            broken += 1
    return broken


def _rewrite_without_broken_lines(path: Path) -> None:
    """The journal rewritten (atomically, fsynced) with only its whole lines, so appends start clean."""
    tmp = path.with_name(path.name + ".tmp")
    with path.open("rb") as src, tmp.open("wb") as dst:
        for raw in src:
            if _parse_line(raw) is not None:
                dst.write(raw)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def iter_journal(path: Path, end: int | None = None) -> Iterator[dict[str, Any]]:
    """Stream the records of a journal file (its first `end` bytes), skipping any broken line."""
    if not path.exists():
        return
    left = end if end is not None else -1
    with path.open("rb") as f:
        for raw in f:
            if left >= 0:
                if left < len(raw):
                    return
                left -= len(raw)
            record = _parse_line(raw)
            if record is not None:
                yield record


class Journal:
    """One append-only JSONL file, whose appended lines reach the OS together at `write`."""

    def __init__(self, path: Path):
        self.path = path
        self._file: BinaryIO | None = None
        self._lines: list[bytes] = []

    def append(self, record: dict[str, Any]) -> None:
        self._lines.append(dumpb(record))

    def write(self) -> tuple[int, OSError | None]:
        """Hand the appended lines to the OS in one unbuffered write.

        Returns how many of them are whole in the file, and the error that
        stopped the rest (a full disk), if one did.
        """
        lines, self._lines = self._lines, []
        if not lines:
            return 0, None
        data = memoryview(b"\n".join(lines) + b"\n")
        done = 0
        try:
            if self._file is None:
                self._file = self.path.open("ab", buffering=0)
            while done < len(data):  # a short write is followed by the error that explains it
                done += self._file.write(data[done:])
        except OSError as e:
            return bytes(data[:done]).count(b"\n"), e
        return len(lines), None

    def fileno(self) -> int | None:
        return self._file.fileno() if self._file is not None else None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
