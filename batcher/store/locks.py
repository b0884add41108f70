"""Directories held by a living process: an flock on their `.lock` file, released by the OS at death.

A run directory is locked by the `batcher run` that writes it, a journal part by the Ray worker
that writes it (parts.py); a lock that nobody holds says its writer is gone, killed or not.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = ".lock"


def try_lock(directory: Path) -> int | None:
    """Hold `directory` for this process: the lock's file descriptor, or None if another holds it."""
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd  # released by closing it, or by the OS when the process dies


def is_locked(directory: Path) -> bool:
    """Whether a living process holds `directory`."""
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
