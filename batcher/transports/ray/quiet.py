"""A Ray run's standard error without Ray's known false alarms.

Ray Data creates its actors with their arguments in the object store and restarts allowed, and
Ray's core then logs an error-level line, on every run, from C++ straight to file descriptor 2
("Actor ... has constructor arguments in the object store and max_restarts > 0", Ray issues
53727 and 57733: nothing the user did, and nothing failed). Python's logging cannot reach a line
written there, and Ray's backend log level would silence its real errors too. So for the length of
a run, descriptor 2 is a pipe whose lines a thread copies to the real standard error, all but
those of `FALSE_ALARMS`; the line stays in the Ray session's own driver log. Python's `sys.stderr`
writes to descriptor 2 as well, so batcher's own lines keep their order with Ray's.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator

#: Lines of Ray's that say nothing wrong (each with the issue that tracks it).
FALSE_ALARMS = (
    b"has constructor arguments in the object store and max_restarts > 0",  # ray#57733
)


@contextlib.contextmanager
def without_false_alarms() -> Iterator[None]:
    """Standard error as it is, less Ray's `FALSE_ALARMS`, until the block ends."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no descriptor 2 (a daemon, an embedding): nothing to filter
        yield
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    copier = threading.Thread(target=_copy, args=(read_end, saved), name="batcher-stderr", daemon=True)
    copier.start()
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last write end closes: the copier reads to its end
        copier.join(timeout=5)
        os.close(saved)


def _copy(read_end: int, saved: int) -> None:
    """Copy the pipe to `saved` as it comes, less the lines of a false alarm. An unended line is
    held only if it may be one of Ray's log lines (`[date ...`, written whole); any other (a
    progress bar's `\r` redraw) goes on at once."""
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        pending = b""
        while chunk := pipe.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            kept = [line + b"\n" for line in lines if not any(alarm in line for alarm in FALSE_ALARMS)]
            if pending and not pending.startswith(b"["):
                kept.append(pending)
                pending = b""
            if kept:
                _write(saved, b"".join(kept))
        if pending:
            _write(saved, pending)


def _write(fd: int, data: bytes) -> None:
    with contextlib.suppress(OSError):
        while data:
            data = data[os.write(fd, data) :]
