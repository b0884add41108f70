"""Parts: a batch's worth of rows each, and the journal of what became of them.

A part's input file is written whole in the run directory before anything is
uploaded; each step of its life (uploaded, creating, created, ended, collected)
is one line appended to `parts.jsonl` and fsynced before the step that depends
on it, so that a resumed run knows, for every part, what the provider may
already hold (docs/batch-api.md has the states and why nothing is paid twice).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..journal import write_atomically

#: The provider's limits on one batch input file.
MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
PARTS_FILE = "parts.jsonl"
PARTS_DIR = "parts"

PLANNED, UPLOADED, CREATING, CREATED, ENDED, COLLECTED = (
    "planned",
    "uploaded",
    "creating",
    "created",
    "ended",
    "collected",
)
#: States in which the provider may hold a live batch of the part's rows.
LIVE = (CREATING, CREATED)


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
    state: str = PLANNED
    file_id: str | None = None
    #: The nonce of the latest creation asked for (in the batch's metadata), and how many there were.
    nonce: str | None = None
    creations: int = 0
    batch_id: str | None = None
    #: The provider's last word on the batch (status, request_counts, errors).
    batch: dict[str, Any] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        """The provider may hold a batch of this part that has not ended."""
        return self.state in LIVE


def split(
    lines: Iterable[bytes], *, max_requests: int = MAX_REQUESTS, max_bytes: int = MAX_BYTES
) -> Iterator[list[bytes]]:
    """Request lines (each ending in a newline) in groups under both limits, in order."""
    group: list[bytes] = []
    size = 0
    for line in lines:
        if len(line) > max_bytes:
            raise ValueError(f"a request line of {len(line)} bytes is over the {max_bytes}-byte file limit")
        if group and (len(group) >= max_requests or size + len(line) > max_bytes):
            yield group
            group, size = [], 0
        group.append(line)
        size += len(line)
    if group:
        yield group


class PartsLog:
    """The parts of a run directory (`.batcher/parts.jsonl` and `.batcher/parts/`)."""

    def __init__(self, state_dir: Path):
        self.path = state_dir / PARTS_FILE
        self.files = state_dir / PARTS_DIR

    def write_part(self, number: int, round_: int, lines: list[bytes]) -> Part:
        """Write a part's input file whole, then record the part as planned."""
        self.files.mkdir(parents=True, exist_ok=True)
        data = b"".join(lines)
        name = f"part-{number:05d}.jsonl"
        write_atomically(self.files / name, data)
        part = Part(number, round_, name, len(lines), len(data), hashlib.sha256(data).hexdigest())
        self.record(part)
        return part

    def record(self, part: Part, state: str | None = None, **changes: Any) -> None:
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
        with self.path.open("rb") as f:
            for raw in f:
                if not raw.endswith(b"\n"):
                    break  # torn: that step is not known to have been recorded
                try:
                    fields = json.loads(raw)
                    part = Part(**fields)
                except (ValueError, TypeError):
                    continue
                parts[part.number] = part
        return parts

    def read_lines(self, part: Part) -> list[bytes]:
        """The request lines of a part's input file, checked against the hash it was planned with."""
        data = (self.files / part.file).read_bytes()
        if hashlib.sha256(data).hexdigest() != part.sha256:
            raise ValueError(f"{self.files / part.file} changed since it was planned")
        return data.splitlines(keepends=True)
