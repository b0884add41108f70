"""Parts: a batch's worth of rows each, and the journal of what became of them.

A part's input file is written whole in the run directory before anything is
uploaded; each step of its life (uploaded, creating, created, ended, collected)
is one line appended to `parts.jsonl` and fsynced before the step that depends
on it, so that a resumed run knows, for every part, what the provider may
already hold (docs/batch-api.md has the states and why nothing is paid twice).
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from batcher.errors import RunAborted
from batcher.jsoncodec import dumpb
from batcher.store.checkpoint import STATE_DIR
from batcher.store.journal import write_atomically

#: The provider's limits on one batch input file.
MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
PARTS_FILE = "parts.jsonl"
T = TypeVar("T")
PARTS_DIR = "parts"


class PartState(enum.StrEnum):
    """How far a part has got, in the order of its life (parts.jsonl holds the values)."""

    #: Its input file written in the run directory.
    PLANNED = "planned"
    #: The file uploaded (its id kept): a batch may be created from it.
    UPLOADED = "uploaded"
    #: A batch asked for (the nonce kept): the provider may hold one even if the answer was lost.
    CREATING = "creating"
    #: The batch created (its id kept): running at the provider.
    CREATED = "created"
    #: The batch ended (completed, failed, expired or cancelled): its files are to be collected.
    ENDED = "ended"
    #: Its rows journaled, or sent again in a later part.
    COLLECTED = "collected"


#: States in which the provider may hold a live batch of the part's rows.
LIVE = (PartState.CREATING, PartState.CREATED)


@dataclass
class Part:
    """One batch's worth of rows, and how far it has got."""

    number: int
    #: 0 for rows sent the first time; n for rows sent again the n-th time.
    round: int
    #: The input file, relative to the parts directory, its request count, size and sha256.
    file: str
    requests: int
    size: int
    sha256: str
    #: Beside it, what a result record needs of each row: id, row number, kept columns.
    rows_file: str = ""
    state: PartState = PartState.PLANNED
    #: The base URL its file and batch live at (for `batcher cancel`), and the file's id there.
    provider: str = ""
    file_id: str | None = None
    #: The nonce of the latest creation asked for (in the batch's metadata), and how many there were.
    nonce: str | None = None
    creations: int = 0
    #: When its file's upload was last asked for (time.time()), or 0: a killed one is looked for.
    upload_asked_at: float = 0.0
    #: When the latest creation was asked for (time.time()): a lost one is looked for from then on.
    asked_at: float = 0.0
    #: Other parts' batches were live when it was made (an enqueued-token refusal then means "wait").
    crowded: bool = False
    batch_id: str | None = None
    #: Its rows' worst case at online prices (prompt estimate + max_tokens), held against a budget
    #: while its batch may run (0 when the run has no budget).
    worst_tokens: int = 0
    worst_cost: float = 0.0
    #: The provider's last word on the batch (status, request_counts, errors).
    batch: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.state = PartState(self.state)  # (a plain string when read back from parts.jsonl)

    @property
    def live(self) -> bool:
        """The provider may hold a batch of this part that has not ended."""
        return self.state in LIVE


def split(
    items: Iterable[T],
    *,
    max_requests: int = MAX_REQUESTS,
    max_bytes: int = MAX_BYTES,
    size: Callable[[T], int] = len,
    key: Callable[[T], Hashable] = lambda item: None,
) -> Iterator[list[T]]:
    """Request lines (or items carrying them, `size` their bytes) in groups under both limits, each
    group of one `key` (a batch runs one model), every group in the order its items came."""
    groups: dict[Hashable, tuple[list[T], int]] = {}
    for item in items:
        n = size(item)
        if n > max_bytes:
            raise ValueError(f"a request line of {n} bytes is over the {max_bytes}-byte file limit")
        k = key(item)
        group, total = groups.get(k, ([], 0))
        if group and (len(group) >= max_requests or total + n > max_bytes):
            yield group
            group, total = [], 0
        group.append(item)
        groups[k] = group, total + n
    for group, _ in groups.values():
        yield group


class PartsLog:
    """The parts of a run directory (`.batcher/parts.jsonl` and `.batcher/parts/`)."""

    def __init__(self, state_dir: Path):
        self.path = state_dir / PARTS_FILE
        self.files = state_dir / PARTS_DIR

    def write_part(
        self,
        number: int,
        round_: int,
        lines: list[bytes],
        rows: list[bytes] | None = None,
        worst: tuple[int, float] = (0, 0.0),
    ) -> Part:
        """Write a part's input file (and its rows file) whole, then record the part as planned."""
        self.files.mkdir(parents=True, exist_ok=True)
        name = f"part-{number:05d}"
        if rows is not None:
            write_atomically(self.files / f"{name}.rows.jsonl", b"".join(rows))
        data = b"".join(lines)
        write_atomically(self.files / f"{name}.jsonl", data)
        part = Part(
            number,
            round_,
            f"{name}.jsonl",
            len(lines),
            len(data),
            hashlib.sha256(data).hexdigest(),
            rows_file=f"{name}.rows.jsonl" if rows is not None else "",
            worst_tokens=worst[0],
            worst_cost=worst[1],
        )
        self.record(part)
        return part

    def read_rows(self, part: Part) -> list[dict[str, Any]]:
        """What a result record needs of each row of a part, in the part's order."""
        with (self.files / part.rows_file).open("rb") as f:
            return [json.loads(line) for line in f]

    def record(self, part: Part, state: PartState | None = None, **changes: Any) -> None:
        """Move `part` on (its fields updated) and make that durable before returning."""
        if state is not None:
            part.state = state
        for name, value in changes.items():
            setattr(part, name, value)
        line = json.dumps(asdict(part), separators=(",", ":")) + "\n"
        with self.path.open("ab") as f:
            f.write(line.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())

    def load(self) -> dict[int, Part]:
        """Every part as its latest line says (a torn last line, left by a crash, is ignored)."""
        parts: dict[int, Part] = {}
        if not self.path.exists():
            return parts
        whole = 0
        with self.path.open("rb") as f:
            for raw in f:
                if not raw.endswith(b"\n"):
                    break  # torn: that step is not known to have been recorded
                whole += len(raw)
                try:
                    fields = json.loads(raw)
                    part = Part(**fields)
                except (ValueError, TypeError):
                    continue
                parts[part.number] = part
        if whole < self.path.stat().st_size:  # cut the torn tail off, or the next step would join it
            with self.path.open("r+b") as f:
                f.truncate(whole)
                os.fsync(f.fileno())
        return parts

    def read_lines(self, part: Part) -> list[bytes]:
        """The request lines of a part's input file, checked against the hash it was planned with."""
        data = (self.files / part.file).read_bytes()
        if hashlib.sha256(data).hexdigest() != part.sha256:
            raise RunAborted(
                f"{self.files / part.file} changed since it was planned: the run directory was edited; "
                "nothing was sent from it"
            )
        return data.splitlines(keepends=True)


def batch_line(row_id: str, body: dict[str, Any], path: str) -> bytes:
    """A row's line of a Batch input file."""
    return dumpb({"custom_id": row_id, "method": "POST", "url": "/v1" + path, "body": body}) + b"\n"


def batches_of(directory: Path) -> list[dict[str, Any]]:
    """A Batch API run's parts as last recorded: state, batch, and the provider's last word on it."""
    parts = PartsLog(directory / STATE_DIR).load()
    return [
        {
            "part": part.number,
            "round": part.round,
            "requests": part.requests,
            "state": part.state,
            "batch_id": part.batch_id,
            "status": part.batch.get("status"),
            "request_counts": part.batch.get("request_counts"),
        }
        for part in sorted(parts.values(), key=lambda p: p.number)
    ]
