"""`-` as the input: JSONL rows piped into standard input, copied to a file before they are read.

A run reads its input twice (the scan, then the rows) and knows it again on resume by a hash of its
bytes, so standard input is first copied, a megabyte at a time, to a hidden file beside the run
directory. Once the session has checked every row and opened the run directory, the copy is moved
into it as `.batcher/input.jsonl` (where the Python API keeps the rows it is handed in memory); a run
refused before that, and a dry run, leave nothing behind. Piping the same rows again resumes the
run; other rows are refused as any changed input is.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import Any, BinaryIO

from batcher.errors import ConfigError, InputError
from batcher.storage import is_remote
from batcher.store.checkpoint import STATE_DIR

STDIN = "-"
#: What messages call it.
NAME = "standard input"
#: The copy's name in the run directory's state folder.
COPY_NAME = "input.jsonl"
_COPY_BYTES = 1 << 20

#: A stream can be read once: the one last copied, and where its copy is now.
_copy: dict[str, Any] = {"stream": None, "path": None}


def is_stdin(path: Any) -> bool:
    return not is_remote(path) and str(path) == STDIN


def spool(output: Any, stream: BinaryIO | None = None) -> Path:
    """A file holding what `stream` (standard input) holds, beside the run directory `output`;
    a stream is read the first time only, later calls get the same file."""
    if is_remote(output):
        raise ConfigError(
            f"{output}: rows piped into standard input are kept in the run directory, so it must be on "
            "this machine: give a local --output, or put the rows in a file and name it"
        )
    if stream is None:
        if sys.stdin is None or sys.stdin.isatty():
            raise InputError(
                "nothing on standard input: pipe JSONL rows into it (cat rows.jsonl | batcher run - ...) "
                "or name the input file"
            )
        stream = sys.stdin.buffer
    if _copy["stream"] is stream:
        return _copy["path"]
    output = Path(output)
    copy = _nearest(output) / f".{output.name}.stdin-{secrets.token_hex(6)}.jsonl"
    try:
        with copy.open("xb") as f:  # (made as the run's other files are, by the umask; mkstemp: 0600)
            atexit.register(_remove, copy)  # unless it was moved into the run directory by then
            shutil.copyfileobj(stream, f, _COPY_BYTES)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise ConfigError(f"cannot copy standard input beside {output}: {e.strerror or e}") from None
    _copy.update(stream=stream, path=copy)
    return copy


def keep_in(source: Any, directory: Path) -> None:
    """Move the copy of standard input that `source` reads into the run `directory`, whose job was
    accepted; `source` reads it there from now on. Any other source is left as it is."""
    if _copy["path"] is None or source.path != _copy["path"]:
        return
    kept = directory / STATE_DIR / COPY_NAME
    if source.path == kept:
        return
    try:
        kept.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(source.path, kept)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            tmp = kept.with_name(kept.name + ".tmp")  # another filesystem: copied, then moved there
            shutil.copyfile(source.path, tmp)
            os.replace(tmp, kept)
            source.path.unlink()
    except OSError as e:
        raise ConfigError(f"cannot keep standard input's rows in {kept}: {e.strerror or e}") from None
    source.path = _copy["path"] = kept


def _nearest(output: Path) -> Path:
    """The folder the run directory is in, or the nearest one above it that exists."""
    folder = output.absolute().parent
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    return folder


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
