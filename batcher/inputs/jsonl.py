"""JSON Lines, a line at a time: one line parsed, the byte-order mark a first line may carry passed
over, and runs of lines passed over by counting newlines (resume's hot path).

A parse error names what is wrong and where in the line ("Expecting ',' delimiter at character
23"); the line itself is named by the caller, who knows its number in the file (the decoder's own
"line 1 column 23" would always say line 1).
"""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any, BinaryIO

from batcher.jsoncodec import orjson

#: The UTF-8 byte-order mark that spreadsheet exports and some editors write at a file's start.
BOM = b"\xef\xbb\xbf"
_SKIP_READ = 1 << 20


def without_bom(raw: bytes) -> bytes:
    """A file's first line without the byte-order mark it may start with (no other line has one)."""
    return raw[3:] if raw.startswith(BOM) else raw


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
        raise ValueError(f"is not valid UTF-8 (byte {e.start + 1})") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("is nested too deeply") from None
    except json.JSONDecodeError as e:  # (its text ends "line 1 column 23 (char 22)": of the line alone)
        raise ValueError(f"is not valid JSON ({e.msg} at character {e.pos + 1})") from None
    except ValueError as e:
        raise ValueError(f"is not valid JSON ({e})") from None


def done_run(done: bytearray, start: int) -> int:
    """How many numbers from `start` on are marked done (a C-speed search)."""
    if start >= len(done):
        return 0
    end = done.find(0, start)
    return (len(done) if end == -1 else end) - start


def skip_lines(f: BinaryIO, count: int) -> Generator[None, None, int]:
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
