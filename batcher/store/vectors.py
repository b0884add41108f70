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
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from batcher.errors import WriteFailed

VECTORS_FILE = "vectors.f32"
#: The journal is read backwards this many bytes at a time.
_CHUNK_BYTES = 1 << 20


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
        """The vector of `dims` floats at byte offset `at`; WriteFailed if the file is short of it."""
        if self._reader is None:
            self._reader = self.path.open("rb")
        self._reader.seek(at)
        vector = self._reader.read(dims * 4)
        if len(vector) != dims * 4:
            raise WriteFailed(
                f"{self.path} ends before the vector at byte {at:,} that a results line points to: "
                "the run directory was damaged; run the same command again to send those rows anew"
            )
        return vector

    def close(self) -> None:
        for f in (self._file, self._reader):
            if f is not None:
                f.close()
        self._file = self._reader = None


def cut_lines_beyond(journal: Path, vectors: Path) -> int:
    """Cut off the journal's last lines whose vector is not (wholly) in the vectors file; how many.

    Each line points further than the one before it, so the journal is read backwards from its
    end only until a line whose vector is whole: after a power cut, the lines written since the
    last fsync, however many they are.
    """
    if not journal.exists():
        return 0
    size = vectors.stat().st_size if vectors.exists() else 0
    cut, dropped = None, 0
    with journal.open("rb") as f:
        for start, raw in _lines_backwards(f):
            beyond = _points_beyond(raw, size)
            if beyond is False:
                break  # this line's vector is whole, and so is every one before it
            if beyond:
                cut, dropped = start, dropped + 1
    if cut is None:
        return 0
    with journal.open("r+b") as f:
        f.truncate(cut)
        os.fsync(f.fileno())
    return dropped


def _lines_backwards(f: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(offset, bytes) of each line of a file, the last first (a torn last line included)."""
    position = f.seek(0, os.SEEK_END)
    rest = b""  # the start of the line that runs into the chunk read before
    while position > 0:
        step = min(_CHUNK_BYTES, position)
        position -= step
        f.seek(position)
        data = f.read(step) + rest
        lines = data.split(b"\n")
        rest = lines[0]
        offset = position + len(data)
        for raw in reversed(lines[1:]):
            offset -= len(raw) + 1
            if raw:
                yield offset + 1, raw
    if rest:
        yield 0, rest


def _points_beyond(raw: bytes, size: int) -> bool | None:
    """Whether a line's vector reaches past `size` bytes; None for a line that points nowhere
    (torn, or not ours: the journal's own repair deals with it)."""
    if b'"vector_at"' not in raw:
        return None
    try:
        record = json.loads(raw)
        return record["vector_at"] + record["dims"] * 4 > size
    except (ValueError, KeyError, TypeError):
        return None
