"""A key's limits shared by every batcher process on this machine that uses it.

A limit belongs to the key, not to a process: two runs on one key must together
stay under it. The state the pacers and the adaptive rate need is small (when
each bucket is full again, a pause, the rate the 429s allow), so it lives in one
JSON file per base URL and key under the user's cache directory, named by a hash
of both (never the key itself), read and written under `flock`. The kernel
drops a lock whose holder dies, even by `kill -9`; a file torn by a kill, or
older than `STALE_SECONDS` (a reboot restarts the monotonic clock the times are
in), is read as no state at all, which costs one burst, never a stuck run.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("batcher")

#: A state file not written for this long is ignored (its times may be from before a reboot).
STALE_SECONDS = 300.0
#: How often a run with no rate of its own looks for one another run found.
CHECK_SECONDS = 0.05


def cache_dir() -> Path:
    """The user's cache directory for batcher ($XDG_CACHE_HOME/batcher, else ~/.cache/batcher)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "batcher"


def state_path(base_url: str, api_key: str | None) -> Path:
    digest = hashlib.sha256(f"{base_url}\0{api_key or ''}".encode()).hexdigest()[:32]
    return cache_dir() / "limits" / f"{digest}.json"


class SharedState:
    """The file holding one key's limit state, opened once per run."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self._seen: tuple[int, int] | None = None
        self._checked = -STALE_SECONDS

    @classmethod
    def open(cls, base_url: str, api_key: str | None) -> SharedState | None:
        """The state for this base URL and key; None (limits kept in this process) when it cannot be."""
        path = state_path(base_url, api_key)
        try:
            return cls(path)
        except OSError as e:
            log.warning("limits not shared with other runs on this key: %s: %s", path.parent, e.strerror)
            return None

    def changed(self) -> bool:
        """Whether another process wrote since this one last read or wrote (one fstat every 50 ms)."""
        now = time.monotonic()
        if now - self._checked < CHECK_SECONDS:
            return False
        self._checked = now
        stat = os.fstat(self._fd)
        return (stat.st_mtime_ns, stat.st_size) != self._seen

    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """The state, under an exclusive lock; what the block leaves in it is written back."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            state = self._read()
            before = dict(state)
            yield state
            if state != before:
                self._write(state)
            stat = os.fstat(self._fd)
            self._seen = (stat.st_mtime_ns, stat.st_size)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _read(self) -> dict[str, Any]:
        raw = os.pread(self._fd, 1 << 16, 0)
        try:
            state = json.loads(raw) if raw else {}
        except ValueError:
            return {}  # torn by a kill mid-write: start afresh
        if not isinstance(state, dict) or abs(time.time() - state.get("written", 0)) > STALE_SECONDS:
            return {}
        return state

    def _write(self, state: dict[str, Any]) -> None:
        state["written"] = time.time()
        data = json.dumps(state, separators=(",", ":")).encode()
        os.pwrite(self._fd, data, 0)
        os.ftruncate(self._fd, len(data))

    def close(self) -> None:
        os.close(self._fd)
