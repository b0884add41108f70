"""Journal parts: rows finished by other processes (a Ray run's workers), beside the run's journal.

A Ray worker journals each row it finishes into a part of its own, `.batcher/parts/<name>/`: the
files of a checkpoint (results.jsonl, errors.jsonl, and vectors.f32 for embeddings) written as the
run's own journal is (a loop turn's rows in one write, fsynced every 0.2 s), and locked (locks.py)
while its writer lives. A row a worker finished thereby survives a kill of the worker or of the
driver: when the driver opens the run directory, its checkpoint takes from the parts the rows it
has not journaled yet, then deletes the parts whose writers are gone; and a worker that replaces
a dead one takes from the dead one's part the rows of the batches it is handed again, rather than
pay for them twice (transports/ray/worker.py). What a kill re-pays is then the requests in flight. The parts
directory holds the run's token (`RUN`): a worker that cannot read it there (a node of the cluster
that does not see the driver's disk) keeps no part. See docs/ray.md.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from batcher.store.locks import is_locked

PARTS_DIR = "parts"
#: A file in the parts directory holding the session's token.
TOKEN_FILE = "RUN"


def parts_in(parts_dir: Path) -> list[Path]:
    """The parts in `parts_dir`, by name."""
    try:
        return sorted(p for p in parts_dir.iterdir() if p.is_dir())
    except FileNotFoundError:
        return []


def writer_gone(part: Path) -> bool:
    """Whether the process writing `part` has ended (or been killed)."""
    return not is_locked(part)


def remove(part: Path) -> None:
    shutil.rmtree(part, ignore_errors=True)


def write_token(parts_dir: Path, token: str) -> None:
    """Say which session the parts directory serves (read by the workers: `reachable`)."""
    parts_dir.mkdir(parents=True, exist_ok=True)
    (parts_dir / TOKEN_FILE).write_text(token, encoding="utf-8")


def reachable(parts_dir: Path, token: str) -> bool:
    """Whether this process sees the driver's parts directory (the same disk, or a shared one)."""
    try:
        return (parts_dir / TOKEN_FILE).read_text(encoding="utf-8") == token
    except OSError:
        return False
