"""An output directory in an object store: a local run directory, committed to the store in parts.

An object store has no append and no fsync, and the journal's guarantee
(checkpoint.py) rests on both. So a run whose output is `s3://...` works in a
local staging directory, which is an ordinary run directory (journal, vectors,
lock), and this module keeps the store in step with it:

- **Pull.** Before the session opens its checkpoint, the staging directory is
  made afresh from the store: the job record, and each journal file as the
  concatenation of its committed parts. The store is the truth; nothing left
  on this machine by an earlier session is trusted.
- **Commit.** Every `commit_seconds` (5 unless told), and once more when the session ends, the
  bytes each journal file grew by since the last commit are put as one new
  immutable object, `.batcher/commits/<file>/<start>-<end>`, named by the byte
  range it holds in the file as the store has it. A put is atomic, so a part is
  there whole or not at all, and parts are whole lines (the journal writes
  whole lines in one write, and the sizes are read between writes). Vectors
  are committed before the lines that point into them. The parts of a file,
  in order of their ranges, are the file: a gap or an overlap is refused.
- **Outputs.** results.parquet, summary.json and the rest are put whole when
  the session ends.
- **Lease.** `.batcher/lease.json` names the session holding the directory and
  until when; each commit renews it. Another session is refused while the lease
  holds, unless its holder was a process on this machine that is gone (a
  `kill -9`). Object stores offer no compare-and-swap through pyarrow, so two
  sessions started in the same second could both take it; the loser finds out
  at its next commit and stops.

What a crash costs: the rows answered since the last commit (at most
`commit_seconds` of answers) and those on the wire are sent again and paid
twice. No row is lost (a row is done only once its part is in the store) and
none is written twice (a row's parts are read once, and resume skips done rows).
See docs/object-stores.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from batcher.errors import ConfigError, WriteFailed
from batcher.storage import RemoteDirectory, is_remote, location
from batcher.store.jobrecord import JOB_FILE

log = logging.getLogger("batcher")

#: Seconds a lease holds without being renewed (at least three commits' worth).
LEASE_SECONDS = 60.0
COMMITS = ".batcher/commits"
LEASE = ".batcher/lease.json"


@dataclass
class _Tracked:
    """A growing file of the staging directory: how much of it the store has."""

    path: Path
    name: str  # its path in the run directory, and so in the store
    local: int  # bytes of the local file the store has (the rest is to commit)
    store: int  # the file's length in the store


class Mirror:
    """A run directory in an object store, worked on in a local staging directory."""

    def __init__(self, uri: str, *, commit_seconds: float = 5.0, staging: Path | None = None):
        self.commit_seconds = commit_seconds
        self.remote = RemoteDirectory(uri)
        self.uri = self.remote.uri
        self.staging = staging or staging_for(self.uri)
        self.session = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self._lengths: dict[str, int] = {}
        self._tracked: list[_Tracked] = []
        self._leased = False
        self._putting = threading.Lock()
        self.lost: WriteFailed | None = None

    # -- the session's start -------------------------------------------------------

    def pull(self) -> Path:
        """Take the lease and make the staging directory from the store; its path."""
        try:
            self._take_lease()
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging.mkdir(parents=True)
            job = self.remote.read(JOB_FILE)
            if job is not None:
                (self.staging / JOB_FILE).write_bytes(job)
            self._lengths = pull_parts(self.remote, self.staging)
        except OSError as e:
            self.release()
            raise ConfigError(f"{self.uri} cannot be used as the output directory: {e}") from None
        except BaseException:
            self.release()
            raise
        return self.staging

    def _take_lease(self) -> None:
        held = _read_lease(self.remote)
        if held is not None and not _lapsed(held):
            until = time.strftime("%H:%M:%S", time.localtime(held.get("expires", 0)))
            raise ConfigError(
                f"{self.uri} is in use by another batcher run (session {held.get('session')} on "
                f"{held.get('host')}, pid {held.get('pid')}); wait for it to finish or stop it. If it "
                f"died on another machine, its lease lapses at {until}."
            )
        self._put_lease()
        self._leased = True

    def _put_lease(self) -> None:
        lease = {
            "session": self.session,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "expires": time.time() + max(LEASE_SECONDS, 3 * self.commit_seconds),
        }
        self.remote.put(LEASE, json.dumps(lease).encode())

    def track(self, files: list[Path]) -> None:
        """Commit the growth of `files` (in this order) from now on: called once the checkpoint has
        opened, after its load rewrote what it rewrites. Vectors go first: lines point into them."""
        job = self.staging / JOB_FILE  # put now, not only at the end: a crashed session's parts
        try:  # are resumed with the job they belong to, and a different job refused
            self.remote.put_file(JOB_FILE, job)
        except OSError as e:
            raise ConfigError(f"{self.uri} cannot be used as the output directory: {e}") from None
        for path in files:
            name = path.relative_to(self.staging).as_posix()
            size = path.stat().st_size if path.exists() else 0
            self._tracked.append(_Tracked(path, name, size, self._lengths.get(name, 0)))

    # -- during the session ----------------------------------------------------------

    def _growth(self) -> list[tuple[_Tracked, int]]:
        """Each tracked file's size now: read between writes, so at the end of a whole line."""
        return [(t, t.path.stat().st_size if t.path.exists() else 0) for t in self._tracked]

    def _put_growth(self, growth: list[tuple[_Tracked, int]]) -> None:
        """Put what each file grew by as a part; renew the lease (or find it lost). One at a time:
        a commit cancelled at the session's end may still be putting in its thread."""
        with self._putting:
            self._put_growth_now(growth)

    def _put_growth_now(self, growth: list[tuple[_Tracked, int]]) -> None:
        held = _read_lease(self.remote)
        if held is not None and held.get("session") != self.session:
            raise WriteFailed(
                f"{self.uri} was taken over by another batcher run (session {held.get('session')} on "
                f"{held.get('host')}); this one stops, and its rows not yet committed are sent again"
            )
        for tracked, size in growth:
            if size <= tracked.local:
                continue
            with tracked.path.open("rb") as f:
                f.seek(tracked.local)
                data = f.read(size - tracked.local)
            end = tracked.store + len(data)
            self.remote.put(f"{COMMITS}/{tracked.name}/{tracked.store:016d}-{end:016d}", data)
            tracked.local, tracked.store = size, end
        self._put_lease()

    async def commit(self) -> None:
        """Put what the journal grew by since the last commit."""
        await asyncio.to_thread(self._put_growth, self._growth())

    async def keep_committing(self, on_lost: object) -> None:
        """Commit every `commit_seconds` until cancelled; a store that cannot be reached is tried
        again at the next; a lease taken over stops the session (`on_lost()`)."""
        while True:
            await asyncio.sleep(self.commit_seconds)
            try:
                await self.commit()
            except WriteFailed as e:
                self.lost = e
                on_lost()  # type: ignore[operator]
                return
            except OSError as e:
                log.warning("%s: cannot commit the latest rows (%s); trying again", self.uri, e)

    # -- the session's end -------------------------------------------------------------

    def finish(self) -> None:
        """The last commit, once the journal is written (before the checkpoint closes). Raises
        WriteFailed if the store cannot be reached: the rows not committed are sent again."""
        if self.lost is not None:
            raise self.lost
        try:
            self._put_growth(self._growth())
        except OSError as e:
            raise WriteFailed(
                f"cannot commit the last rows to {self.uri}: {e}; they will be sent again on resume"
            ) from None

    def put_outputs(self) -> None:
        """Put the outputs (results, errors, summary, job record) whole, beside the commits."""
        try:
            for path in sorted(self.staging.iterdir()):
                if path.is_file() and not path.name.startswith("."):
                    self.remote.put_file(path.name, path)
        except OSError as e:
            raise WriteFailed(
                f"cannot put the outputs in {self.uri}: {e}; every answer is committed, and the same "
                "command writes them again"
            ) from None

    def release(self) -> None:
        """Give up the lease (unless another session holds it now) and remove the staging directory.
        Without the lease, nothing is touched: the staging directory may be a live session's."""
        if not self._leased:
            return
        self._leased = False
        try:
            held = _read_lease(self.remote)
            if held is None or held.get("session") == self.session:
                self.remote.delete(LEASE)
        except OSError as e:
            log.warning("%s: cannot give up the lease (%s); it lapses by itself", self.uri, e)
        shutil.rmtree(self.staging, ignore_errors=True)


def staging_for(uri: str) -> Path:
    """The local staging directory of an output in an object store: under $BATCHER_STAGING, or the
    system's temporary directory; one per URI."""
    base = os.environ.get("BATCHER_STAGING") or os.path.join(tempfile.gettempdir(), "batcher-staging")
    return Path(base) / hashlib.sha256(uri.encode()).hexdigest()[:16]


def pull_parts(remote: RemoteDirectory, into: Path) -> dict[str, int]:
    """Each committed file made whole again in `into` from its parts; the files' lengths by name."""
    ranges: dict[str, list[tuple[int, int, str]]] = {}
    prefix = COMMITS + "/"
    for name in remote.list(COMMITS):
        file, _, span = name[len(prefix) :].rpartition("/")
        start, _, end = span.partition("-")
        if not (file and start.isdigit() and end.isdigit()):
            continue  # not a part of ours
        ranges.setdefault(file, []).append((int(start), int(end), name))
    lengths = {}
    for file, parts in ranges.items():
        target = into / file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"")
        at = 0
        for start, end, name in sorted(parts):
            if start != at:
                raise ConfigError(
                    f"{remote.uri}/{name} does not follow the part before it (which ends at byte {at}): "
                    f"a part of {file} is missing or was written twice, so the run cannot be trusted"
                )
            remote.copy_to(name, target, append=True)
            at = end
        lengths[file] = at
    return lengths


@contextlib.contextmanager
def readable(directory: str) -> Iterator[tuple[Path, bool | None]]:
    """A run directory to read (status, report): a local one as it is, or a copy of one in an object
    store, made in a temporary directory without taking its lease; and whether a session holds the
    store's (None for a local one, which says so itself)."""
    if not is_remote(location(directory)):
        yield Path(directory), None
        return
    with tempfile.TemporaryDirectory(prefix="batcher-read-") as copy:
        yield Path(copy), read_run(directory, Path(copy))


def read_run(uri: str, into: Path, *, new_ok: bool = False) -> bool:
    """A copy of the run directory at `uri` in `into`, read without its lease; whether a session
    holds it now. `new_ok`: an empty directory is one too (the dry run of a first session)."""
    remote = RemoteDirectory(uri)
    try:
        job = remote.read(JOB_FILE)
        if job is None and not new_ok:
            raise ConfigError(f"{uri} is not a batcher run directory (no {JOB_FILE})")
        if job is not None:
            (into / JOB_FILE).write_bytes(job)
        pull_parts(remote, into)
        held = _read_lease(remote)
    except OSError as e:
        raise ConfigError(f"{uri} cannot be read: {e}") from None
    return held is not None and not _lapsed(held)


def _read_lease(remote: RemoteDirectory) -> dict | None:
    raw = remote.read(LEASE)
    try:
        lease = json.loads(raw) if raw else None
    except ValueError:
        return None
    return lease if isinstance(lease, dict) else None


def _lapsed(lease: dict) -> bool:
    """The lease ran out, or its holder was a process on this machine that is gone."""
    expires = lease.get("expires")
    if not isinstance(expires, (int, float)) or expires < time.time():
        return True
    if lease.get("host") == socket.gethostname() and isinstance(lease.get("pid"), int):
        try:
            os.kill(lease["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    return False
