"""What is done, durably: the run directory's journal, lock and job record.

The journal is two append-only JSONL files, one line per finished row: results
(successes) and errors (rows whose latest attempt failed). The rows finished in
one event-loop turn go to the OS together in one write when the turn ends, so a
killed process loses at most the answers of the turn it interrupts. A row counts
as done only once its line is fsynced; lines are fsynced in batches (every
`SYNC_SECONDS`, or sooner when `SYNC_ROWS` wait), so a power cut loses at most
the unsynced tail, which was never reported done and is sent again on resume.
A torn or garbled line left by a crash is dropped on the next start.
With `--output-format jsonl` the journal *is* the output; other formats keep it
in `.batcher/` and derive their files from it. See docs/checkpoints.md.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from batcher.errors import ConfigError, WriteFailed
from batcher.jsoncodec import dumps
from batcher.store.jobrecord import POSITIONS, recorded_job, refusal, write_job
from batcher.store.journal import FastLine, Journal, iter_journal, read_journal, write_atomically
from batcher.store.locks import try_lock
from batcher.store.parts import PARTS_DIR, parts_in, remove, writer_gone
from batcher.store.progress import DoneRows, Progress, Unplaced, add_spend
from batcher.store.vectors import VECTORS_FILE, VectorFile, cut_lines_beyond

SYNC_ROWS = 4096
SYNC_SECONDS = 0.2
STATE_DIR = ".batcher"


class Checkpoint:
    """The run directory: lock, job record, journal, and what is done."""

    def __init__(self, directory: Path, *, hidden_journal: bool = False, vectors: bool = False):
        """`vectors`: results carry embeddings, kept in vectors.f32 beside the journal (vectors.py)."""
        self.directory = directory
        journal_dir = directory / STATE_DIR if hidden_journal else directory
        self.results_path = journal_dir / "results.jsonl"
        self.errors_path = journal_dir / "errors.jsonl"
        self.results = Journal(self.results_path)
        self.errors = Journal(self.errors_path)
        self.vectors_path = directory / STATE_DIR / VECTORS_FILE if vectors else None
        self.vectors: VectorFile | None = None
        #: Where other processes (a Ray run's workers) journal the rows they finish (parts.py).
        self.parts_dir = directory / STATE_DIR / PARTS_DIR
        self._lock_fd: int | None = None
        #: Records added this loop turn, not yet handed to the OS.
        self._unwritten: list[tuple[bool, dict[str, Any]]] = []
        #: Records written but not yet fsynced, in arrival order.
        self._pending: list[tuple[bool, dict[str, Any]]] = []
        self._wake = asyncio.Event()
        self._write_failed: WriteFailed | None = None

    @classmethod
    def of_run(cls, directory: Path, output_format: str, endpoint: str = "chat") -> Checkpoint:
        """A run directory's checkpoint: its journal is the output itself for chat in jsonl, else in
        .batcher/ (embeddings keep their vectors beside it, and derive even results.jsonl)."""
        embeddings = endpoint == "embeddings"
        return cls(directory, hidden_journal=output_format != "jsonl" or embeddings, vectors=embeddings)

    @classmethod
    def of_part(cls, directory: Path) -> Checkpoint:
        """A journal part's (parts.py): the files of a hidden journal, vectors beside them."""
        return cls(directory, hidden_journal=True, vectors=True)

    # -- opening -------------------------------------------------------------

    def open(self, identity: dict[str, Any], *, force: bool) -> Progress:
        """Lock the directory, check or write its job record, load what is done."""
        try:
            self.results_path.parent.mkdir(parents=True, exist_ok=True)
            self._lock()
            by_position = self._check_job(identity, force)
            return self.load(by_position=by_position)
        except BaseException as e:
            self.close()
            if isinstance(e, OSError):
                raise ConfigError(
                    f"{self.directory} cannot be used as the output directory: {e.strerror or e}"
                ) from None
            raise

    def _lock(self) -> None:
        self._lock_fd = try_lock(self.directory)  # released by close(), or by the OS at death
        if self._lock_fd is None:
            raise ConfigError(
                f"{self.directory} is in use by another batcher run; wait for it to finish or stop it first"
            )

    def positions_hold(self, identity: dict[str, Any], recorded: dict[str, Any] | None) -> bool:
        """Whether every journal line's row number points into the input `identity` names."""
        if recorded is None:
            return not _has_lines(self.results_path) and not _has_lines(self.errors_path)
        # Forced onto other input bytes, earlier lines' row numbers point into the old file.
        return recorded.get(POSITIONS) is True and all(
            recorded.get(k) == identity.get(k) for k in ("input_kind", "input_fingerprint")
        )

    def _check_job(self, identity: dict[str, Any], force: bool) -> bool:
        """Refuse a different job (unless forced); record this one; say whether row numbers hold."""
        recorded = recorded_job(self.directory)
        if not force and (refused := refusal(self.directory, identity, recorded)):
            raise refused
        by_position = self.positions_hold(identity, recorded)
        write_job(self.directory, identity, by_position)
        return by_position

    def load(self, *, by_position: bool = True, repair: bool = True) -> Progress:
        """Read the journal into done and failed rows, repairing a torn tail unless told not to.

        `by_position`: the journal's row numbers can be trusted (see `open`).
        """
        unbacked = 0
        if self.vectors_path is not None and repair:
            unbacked = cut_lines_beyond(self.results_path, self.vectors_path)
        try:
            progress = Progress(done=DoneRows(by_position=by_position))
            broken = self._load_results(progress, repair)
        except Unplaced:  # a line from before row numbers: go by ids
            progress = Progress(done=DoneRows(by_position=False))
            broken = self._load_results(progress, repair)
        unwritten = self._take_parts(progress, write=repair)
        progress.done.freeze()
        done, failed = progress.done, progress.failed
        errors_seen = 0

        def on_error(record: dict[str, Any]) -> None:
            nonlocal errors_seen
            errors_seen += 1
            if not done.has(record["id"], record.get("row_number")):
                failed[record["id"]] = record

        broken += read_journal(self.errors_path, on_error, repair=repair)
        for record in unwritten:  # (the parts' failures, where the parts were only read)
            on_error(record)
        for record in failed.values():  # answers that did not parse were paid for too
            add_spend(progress, record.get("usage"), record.get("cost_usd"))
        progress.repaired_lines = broken + unbacked
        if repair and len(failed) != errors_seen:
            self._rewrite_errors(failed)
        return progress

    def _load_results(self, progress: Progress, repair: bool) -> int:
        done = progress.done

        def on_record(record: dict[str, Any]) -> None:
            done.add(record["id"], record.get("row_number"))
            add_spend(progress, record.get("usage"), record.get("cost_usd"))

        def on_lines(lines: list[FastLine]) -> None:
            if not lines:
                return
            ids, numbers, prompts, completions, costs = zip(*lines, strict=True)
            if done.positions is not None:
                done.mark_all(list(map(int, numbers)))
            else:
                for row_id in ids:
                    done.add(json.loads(b'"' + row_id + b'"') if b"\\" in row_id else row_id.decode(), None)
            progress.prompt_tokens += sum(map(int, filter(None, prompts)))
            progress.completion_tokens += sum(map(int, filter(None, completions)))
            progress.cost_usd += sum(float(c) for c in costs if c != b"null")
            progress.unpriced += sum(1 for p, c in zip(prompts, costs, strict=True) if p and c == b"null")

        return read_journal(self.results_path, on_record, on_lines, repair=repair)

    def _take_parts(self, progress: Progress, *, write: bool) -> list[dict[str, Any]]:
        """The rows other processes finished (parts.py) and the journal lacks: appended to it (with
        `write`; then the parts whose writers are gone are deleted) and counted done. The failures
        among them, when they were only read, to count as failed; else none."""
        taken: list[tuple[bool, dict[str, Any]]] = []
        done = progress.done
        for part in parts_in(self.parts_dir):
            gone = writer_gone(part)
            for ok, record in Checkpoint.of_part(part).records():
                if done.has(record["id"], record.get("row_number")):
                    continue
                if ok:
                    done.add(record["id"], record.get("row_number"))
                    add_spend(progress, record.get("usage"), record.get("cost_usd"))
                taken.append((ok, record))
            if gone and write:
                self._absorb(taken)
                taken = []
                remove(part)
        if write:
            self._absorb(taken)  # (the rows of parts still being written: their parts stay)
            return []
        return [record for ok, record in taken if not ok]

    def _absorb(self, rows: list[tuple[bool, dict[str, Any]]]) -> None:
        """Append finished rows to the journal and make them durable now (no event loop needed)."""
        if not rows:
            return
        for ok, record in rows:
            self._append(ok, record)
        self._write()
        if self._write_failed is not None:
            raise self._write_failed
        try:
            for fd in self._fds():
                os.fsync(fd)
        except OSError as e:
            raise _write_failed(self.directory, e) from None
        self._pending.clear()

    def records(self) -> Iterator[tuple[bool, dict[str, Any]]]:
        """Every line of the journal as the record it was added as (results first; a vector read
        back from the vector file), read without repair. (A worker's part is read so: parts.py.)"""
        vectors = VectorFile(self.vectors_path) if self.vectors_path and self.vectors_path.exists() else None
        try:
            for record in iter_journal(self.results_path):
                if "vector_at" in record:
                    try:  # (a vector that never reached the file: the row is sent again)
                        record["embedding"] = vectors.read(record.pop("vector_at"), record.pop("dims"))
                    except (WriteFailed, AttributeError):
                        continue
                yield True, record
            for record in iter_journal(self.errors_path):
                yield False, record
        finally:
            if vectors is not None:
                vectors.close()

    def _rewrite_errors(self, failed: dict[str, dict[str, Any]]) -> None:
        """Keep one line per row that still stands failed (its latest)."""
        self.errors.close()
        write_atomically(self.errors_path, "".join(dumps(r) + "\n" for r in failed.values()))

    # -- writing -------------------------------------------------------------

    def add(self, ok: bool, record: dict[str, Any]) -> None:
        """Append a finished row: written at the end of this loop turn, durable at the next `sync`.

        Raises the WriteFailed of an earlier write, so that no more rows are sent.
        """
        if self._write_failed is not None:  # (check(), inlined: this runs once a row)
            raise self._write_failed
        if not self._unwritten:
            asyncio.get_running_loop().call_soon(self._write)
        self._append(ok, record)
        if len(self._pending) + len(self._unwritten) >= SYNC_ROWS:
            self._wake.set()

    def _append(self, ok: bool, record: dict[str, Any]) -> None:
        vector = record.get("embedding")
        if vector is None:
            (self.results if ok else self.errors).append(record)
        else:  # the line points at the vector; the record handed on keeps it
            line = dict(record)
            del line["embedding"]
            line.update(self._vector_at(vector))
            self.results.append(line)
        self._unwritten.append((ok, record))

    def _vector_at(self, vector: bytes) -> dict[str, int]:
        if self.vectors is None:
            assert self.vectors_path is not None, "a vector for a run that keeps none"
            self.vectors = VectorFile(self.vectors_path)
        return {"vector_at": self.vectors.append(vector), "dims": len(vector) // 4}

    def check(self) -> None:
        """Raise the WriteFailed of a journal write that failed, if one did."""
        if self._write_failed is not None:
            raise self._write_failed

    def _write(self) -> None:
        """The rows added this loop turn, to the OS: one write a file, not one a row."""
        batch, self._unwritten = self._unwritten, []
        if not batch:
            return
        if self.vectors is not None and (error := self.vectors.write()) is not None:
            self._write_failed = _write_failed(self.directory, error)  # no line may point past them
            return
        (ok_whole, ok_error), (failed_whole, failed_error) = self.results.write(), self.errors.write()
        error = ok_error or failed_error
        if error is None:
            self._pending += batch
            return
        # A full disk: what went whole is kept and reported; the rest is sent again on resume.
        whole = {True: ok_whole, False: failed_whole}
        for ok, record in batch:
            if whole[ok]:
                whole[ok] -= 1
                self._pending.append((ok, record))
        self._write_failed = _write_failed(self.directory, error)

    async def sync(self) -> list[tuple[bool, dict[str, Any]]]:
        """Make every row written so far durable; return those that just became so."""
        self._write()
        count = len(self._pending)
        if not count:
            return []
        try:
            for fd in self._fds():
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

    def _fds(self) -> list[int]:
        """The journal's open files, vectors first (lines point into them)."""
        files = (self.vectors, self.results, self.errors)
        return [fd for fd in (f.fileno() for f in files if f is not None) if fd is not None]

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
            self.check()

    def journal_files(self) -> list[Path]:
        """The files that only grow while a session runs, vectors first (lines point into them)."""
        files = [self.results_path, self.errors_path]
        return [self.vectors_path, *files] if self.vectors_path is not None else files

    def flush(self) -> None:
        """Hand the rows added since the last write to the OS (not yet durable)."""
        if self._write_failed is None:
            self._write()

    def close(self, progress: Progress | None = None) -> None:
        """Close the journal (after a final `sync`) and release the lock."""
        self.flush()  # rows added since the last sync: on disk, if not yet durable
        self.results.close()
        self.errors.close()
        if self.vectors is not None:
            self.vectors.close()
        if progress is not None:
            self._rewrite_errors(progress.failed)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _write_failed(directory: Path, error: OSError) -> WriteFailed:
    return WriteFailed(
        f"cannot write to {directory}: {error.strerror or error}; "
        "the rows not yet on disk will be sent again on resume"
    )


def _has_lines(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False
