"""What is done, durably: the run directory's journal, lock and job record.

The journal is two append-only JSONL files, one line per finished row: results
(successes) and errors (rows whose latest attempt failed). A row counts as done
only once its line is fsynced; lines are flushed and fsynced in small batches
(`SYNC_ROWS` rows or `SYNC_SECONDS`, whichever comes first), so a crash loses at
most the unsynced tail, which was never reported done and is sent again on
resume. A torn or garbled line left by a crash is dropped on the next start.
With `--output-format jsonl` the journal *is* the output; other formats keep it
in `.batcher/` and derive their files from it. See docs/checkpoints.md.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from .errors import ConfigError, WriteFailed
from .idset import IdSet

SYNC_ROWS = 64
SYNC_SECONDS = 0.2
JOB_FILE = "job.json"
#: Job record fields shown for information but not compared on resume: the
#: input is recognised by its fingerprint, wherever the file now lives.
_INFORMATIONAL = ("input", "rows", "kept_types")
LOCK_FILE = ".lock"
STATE_DIR = ".batcher"


@dataclass
class Progress:
    """What a run directory holds: done and failed ids, tokens so far."""

    #: Ids whose result was on disk when the session began (compact: see idset.py).
    done: IdSet = field(default_factory=IdSet)
    #: Latest error record of each row that failed and has not succeeded since.
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: Lines dropped on load because a crash had torn or garbled them.
    repaired_lines: int = 0


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, default=str, separators=(",", ":"))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` so that a crash leaves the old or the new file whole."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
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


# A results line as `dumps` writes it: the id first, usage in a fixed layout. Quotes
# inside JSON strings are escaped, so an unescaped `"usage":` is always a key.
_RESULT_LINE = re.compile(
    rb'\{"id":"([^"\\]*)",.*?"usage":(?:null|\{"prompt_tokens":(\d+),"completion_tokens":(\d+),'
    rb'"total_tokens":\d+\}),',
    re.S,
)


def read_journal(
    path: Path, on_record: Callable[[dict[str, Any]], None], fast: Callable[[re.Match], None] | None = None
) -> int:
    """Stream a journal file's whole records to `on_record`; return how many lines were broken.

    Broken lines are those a crash tore (no newline at the end, or bytes that do
    not parse). They were never reported done; the file is rewritten without them
    so that appends start on a clean line.
    """
    if not path.exists():
        return 0
    broken = 0
    with path.open("rb") as f:
        for raw in f:
            if fast is not None and raw.endswith(b"}\n") and (match := _RESULT_LINE.match(raw)):
                fast(match)  # a whole line of ours: no need to parse all of it
                continue
            record = _parse_line(raw)
            if record is not None:
                on_record(record)
            elif raw.strip():
                broken += 1
    if broken:
        tmp = path.with_name(path.name + ".tmp")
        with path.open("rb") as src, tmp.open("wb") as dst:
            for raw in src:
                if _parse_line(raw) is not None:
                    dst.write(raw)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    return broken


def iter_journal(path: Path) -> Iterator[dict[str, Any]]:
    """Stream the records of a journal file, skipping any broken line."""
    if not path.exists():
        return
    with path.open("rb") as f:
        for raw in f:
            record = _parse_line(raw)
            if record is not None:
                yield record


class Journal:
    """One append-only JSONL file.

    Each line goes to the OS in one unbuffered write as soon as it is added, so
    a killed process loses nothing it finished; `fsync` (in batches) then makes
    lines survive a power cut too.
    """

    def __init__(self, path: Path):
        self.path = path
        self._file: BinaryIO | None = None

    def append(self, record: dict[str, Any]) -> None:
        if self._file is None:
            self._file = self.path.open("ab", buffering=0)
        data = memoryview((dumps(record) + "\n").encode("utf-8"))
        while data:  # a short write (e.g. at a file size limit) is followed by the error that explains it
            data = data[self._file.write(data) :]

    def fileno(self) -> int | None:
        return self._file.fileno() if self._file is not None else None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class Checkpoint:
    """The run directory: lock, job record, journal, and what is done."""

    def __init__(self, directory: Path, *, hidden_journal: bool = False):
        self.directory = directory
        journal_dir = directory / STATE_DIR if hidden_journal else directory
        self.results_path = journal_dir / "results.jsonl"
        self.errors_path = journal_dir / "errors.jsonl"
        self.results = Journal(self.results_path)
        self.errors = Journal(self.errors_path)
        self._lock_fd: int | None = None
        #: Records appended but not yet fsynced, in arrival order.
        self._pending: list[tuple[bool, dict[str, Any]]] = []
        self._wake = asyncio.Event()

    # -- opening -------------------------------------------------------------

    def open(self, identity: dict[str, Any], *, force: bool) -> Progress:
        """Lock the directory, check or write its job record, load what is done."""
        try:
            self.results_path.parent.mkdir(parents=True, exist_ok=True)
            self._lock()
            self._check_job(identity, force)
            return self.load()
        except BaseException as e:
            self.close()
            if isinstance(e, OSError):
                raise ConfigError(
                    f"{self.directory} cannot be used as the output directory: {e.strerror or e}"
                ) from None
            raise

    def _lock(self) -> None:
        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                f"{self.directory} is in use by another batcher run; wait for it to finish or stop it first"
            ) from None
        self._lock_fd = fd  # released by close(), or by the OS when the process dies

    def recorded_job(self) -> dict[str, Any] | None:
        """The job record of an earlier session, if there is a readable one."""
        try:
            recorded = json.loads((self.directory / JOB_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return recorded if isinstance(recorded, dict) else None

    def same_job(self, identity: dict[str, Any], recorded: dict[str, Any] | None) -> bool:
        return recorded is not None and all(
            recorded.get(k) == v for k, v in identity.items() if k not in _INFORMATIONAL
        )

    def _check_job(self, identity: dict[str, Any], force: bool) -> None:
        path = self.directory / JOB_FILE
        if path.exists() and not force:
            try:
                recorded = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                recorded = None
            if not isinstance(recorded, dict):
                raise ConfigError(f"{path} is damaged; re-run with --force to replace it")
            changed = [k for k in identity if k not in _INFORMATIONAL and recorded.get(k) != identity[k]]
            if changed:
                lines = "\n  ".join(f"{k}: was {recorded.get(k)!r}, now {identity[k]!r}" for k in changed)
                raise ConfigError(
                    f"{self.directory} holds a different job, so resuming into it is refused:\n  {lines}\n"
                    "Use another --output directory, or --force to continue this one anyway "
                    "(rows already done are kept and not sent again)."
                )
        write_atomically(path, json.dumps(identity, indent=2) + "\n")

    def load(self) -> Progress:
        """Read the journal (repairing a torn tail) into done and failed ids."""
        progress = Progress()

        def on_result(record: dict[str, Any]) -> None:
            progress.done.add(record["id"])
            usage = record.get("usage") or {}
            progress.prompt_tokens += usage.get("prompt_tokens") or 0
            progress.completion_tokens += usage.get("completion_tokens") or 0

        errors_seen = 0

        def on_error(record: dict[str, Any]) -> None:
            nonlocal errors_seen
            errors_seen += 1
            if record["id"] not in progress.done:
                progress.failed[record["id"]] = record

        add_done = progress.done.add
        tokens = [0, 0]

        def on_fast_result(match: re.Match) -> None:
            row_id, prompt, completion = match.groups()
            add_done(row_id.decode("utf-8"))
            if prompt is not None:
                tokens[0] += int(prompt)
                tokens[1] += int(completion)

        broken_results = read_journal(self.results_path, on_result, fast=on_fast_result)
        progress.prompt_tokens += tokens[0]
        progress.completion_tokens += tokens[1]
        progress.done.freeze()
        broken_errors = read_journal(self.errors_path, on_error)
        progress.repaired_lines = broken_results + broken_errors
        if len(progress.failed) != errors_seen:
            self._rewrite_errors(progress.failed)
        return progress

    def _rewrite_errors(self, failed: dict[str, dict[str, Any]]) -> None:
        """Keep one line per row that still stands failed (its latest)."""
        self.errors.close()
        write_atomically(self.errors_path, "".join(dumps(r) + "\n" for r in failed.values()))

    # -- writing -------------------------------------------------------------

    def add(self, ok: bool, record: dict[str, Any]) -> None:
        """Append a finished row; it becomes durable at the next `sync`."""
        try:
            (self.results if ok else self.errors).append(record)
        except OSError as e:
            raise WriteFailed(f"cannot write to {self.directory}: {e.strerror or e}") from None
        self._pending.append((ok, record))
        if len(self._pending) >= SYNC_ROWS:
            self._wake.set()

    async def sync(self) -> list[tuple[bool, dict[str, Any]]]:
        """Make every appended row durable; return those that just became so."""
        count = len(self._pending)
        if not count:
            return []
        try:
            fds = [fd for fd in (self.results.fileno(), self.errors.fileno()) if fd is not None]
            for fd in fds:
                await asyncio.to_thread(os.fsync, fd)
        except OSError as e:
            raise WriteFailed(
                f"cannot write to {self.directory}: {e.strerror or e}; "
                f"the rows not yet on disk will be sent again on resume"
            ) from None
        # Taken off only now: a sync cancelled mid-fsync leaves them for the final one.
        batch = self._pending[:count]
        del self._pending[:count]
        return batch

    async def keep_syncing(self, on_durable: Callable[[list], None]) -> None:
        """Sync every `SYNC_SECONDS`, or sooner when `SYNC_ROWS` rows wait; until cancelled."""
        # No asyncio.wait_for here: on Python 3.11 it can swallow the cancellation
        # that ends this loop when its timeout fires in the same instant.
        loop = asyncio.get_running_loop()
        while True:
            timer = loop.call_later(SYNC_SECONDS, self._wake.set)
            try:
                await self._wake.wait()
            finally:
                timer.cancel()
            self._wake.clear()
            on_durable(await self.sync())

    def close(self, progress: Progress | None = None) -> None:
        """Close the journal (after a final `sync`) and release the lock."""
        self.results.close()
        self.errors.close()
        if progress is not None:
            self._rewrite_errors({k: v for k, v in progress.failed.items() if k not in progress.done})
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def inspect(directory: Path) -> dict[str, Any]:
    """A run directory's progress, read without changing or locking anything."""
    job_path = directory / JOB_FILE
    if not job_path.exists():
        raise ConfigError(f"{directory} is not a batcher run directory (no {JOB_FILE})")
    try:
        job = json.loads(job_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{job_path} cannot be read: {e}") from None
    journal_dir = directory if job.get("output_format", "jsonl") == "jsonl" else directory / STATE_DIR
    done: set[str] = set()
    prompt_tokens = completion_tokens = 0
    for record in iter_journal(journal_dir / "results.jsonl"):
        if record["id"] in done:
            continue
        done.add(record["id"])
        usage = record.get("usage") or {}
        prompt_tokens += usage.get("prompt_tokens") or 0
        completion_tokens += usage.get("completion_tokens") or 0
    failed = {r["id"] for r in iter_journal(journal_dir / "errors.jsonl")} - done
    total = job.get("rows") or 0
    return {
        "directory": str(directory),
        "running": _is_locked(directory),
        "input": job.get("input"),
        "model": job.get("model"),
        "rows_total": total,
        "rows_ok": len(done),
        "rows_failed": len(failed),
        "rows_remaining": max(0, total - len(done) - len(failed)),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _is_locked(directory: Path) -> bool:
    try:
        fd = os.open(directory / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
