"""Vectors beside the journal: one file of raw float32, the results lines pointing into it.

An embedding's results line would be kilobytes of JSON numbers (a 1,536-float
vector is about 30 KB as JSON, 6 KB as float32), and the journal is read
whole on every resume. So vectors go to `.batcher/vectors.f32`, little-endian
float32, appended in the order their results lines are appended; each line
carries `vector_at` (the vector's byte offset) and `dims`. The two files are
written together at the end of each event-loop turn, the vectors first, and
fsynced in the same order, so a line on disk points at bytes already handed to
the OS before it. After a power cut the journal may still be ahead of the
vectors (the OS flushes files in its own order): on load, the lines at the end
of the journal whose vector lies beyond the end of the file are cut off, and
their rows are sent again. Vectors with no line (a crash between the writes)
are dead bytes that nothing points at. See docs/embeddings.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import BinaryIO

VECTORS_FILE = "vectors.f32"
#: How much of the journal's end is looked at for lines beyond the vectors (each line points
#: further than the one before it, so only the last lines can).
_TAIL_BYTES = 1 << 20


class VectorFile:
    """`vectors.f32`: appended at the end of each loop turn, read back by offset."""

    def __init__(self, path: Path):
        self.path = path
        self._file: BinaryIO | None = None
        self._reader: BinaryIO | None = None
        self._pending: list[bytes] = []
        self._end = path.stat().st_size if path.exists() else 0

    def append(self, vector: bytes) -> int:
        """Queue a vector for the next `write`; its byte offset in the file."""
        at = self._end
        self._pending.append(vector)
        self._end += len(vector)
        return at

    def write(self) -> OSError | None:
        """Hand the queued vectors to the OS in one write; the error that stopped it, if one did."""
        pending, self._pending = self._pending, []
        if not pending:
            return None
        data = memoryview(b"".join(pending))
        done = 0
        try:
            if self._file is None:
                self._file = self.path.open("ab", buffering=0)
            while done < len(data):
                done += self._file.write(data[done:])
        except OSError as e:
            return e
        return None

    def fileno(self) -> int | None:
        return self._file.fileno() if self._file is not None else None

    def read(self, at: int, dims: int) -> bytes:
        """The vector of `dims` floats at byte offset `at`."""
        if self._reader is None:
            self._reader = self.path.open("rb")
        self._reader.seek(at)
        return self._reader.read(dims * 4)

    def close(self) -> None:
        for f in (self._file, self._reader):
            if f is not None:
                f.close()
        self._file = self._reader = None


def cut_lines_beyond(journal: Path, vectors: Path) -> int:
    """Cut off the journal's last lines whose vector is not (wholly) in the vectors file; how many."""
    if not journal.exists():
        return 0
    size = vectors.stat().st_size if vectors.exists() else 0
    with journal.open("rb") as f:
        f.seek(0, os.SEEK_END)
        length = f.tell()
        start = max(0, length - _TAIL_BYTES)
        f.seek(start)
        tail = f.read()
    lines = tail.split(b"\n")
    offset = length - len(tail)  # where lines[0] starts (it may be the middle of a line)
    cut, dropped = None, 0
    position = offset
    for i, raw in enumerate(lines):
        whole = i > 0 or start == 0  # the window's first line may begin before it
        if whole and _points_beyond(raw, size):
            if cut is None:
                cut = position
            dropped += 1
        position += len(raw) + 1
    if cut is None:
        return 0
    with journal.open("r+b") as f:
        f.truncate(cut)
        os.fsync(f.fileno())
    return dropped


def _points_beyond(raw: bytes, size: int) -> bool:
    if b'"vector_at"' not in raw:
        return False
    try:
        record = json.loads(raw)
        return record["vector_at"] + record["dims"] * 4 > size
    except (ValueError, KeyError, TypeError):
        return False  # a torn or foreign line: the journal's own repair deals with it
