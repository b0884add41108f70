"""What a run directory holds done: the rows with a result on disk, the failed, and the spend.

`DoneRows` knows a done row by its position in the input (a byte a row) where every journal line
was written against the input as it is, by id otherwise; `Progress` adds the failed rows and the
tokens and USD of the answers kept. Both are read from the journal by checkpoint.Checkpoint.load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from batcher.inputs.idset import IdSet


class DoneRows:
    """The rows with a result on disk.

    Known by position (a byte per input line or row number, so 1 MB for a
    million rows, and resume passes over them without reading their ids) when
    every journal line was written against the input as it is now; otherwise
    (after --force onto a changed input, or a journal from before row numbers)
    by id, in an `IdSet`.
    """

    def __init__(self, *, by_position: bool):
        self.positions: bytearray | None = bytearray() if by_position else None
        self.ids: IdSet | None = None if by_position else IdSet()
        self._count = 0

    def add(self, row_id: str, number: int | None) -> None:
        if self.ids is not None:
            self.ids.add(row_id)
            return
        if not isinstance(number, int) or number < 1:
            raise Unplaced
        self.mark(number)

    def mark(self, number: int) -> None:
        self.mark_all([number])

    def mark_all(self, numbers: list[int]) -> None:
        positions = self.positions
        if numbers and (top := max(numbers)) >= len(positions):
            positions.extend(bytes(top - len(positions) + 4096))
        for number in numbers:
            positions[number] = 1
        if positions:
            positions[0] = 0  # numbers start at 1; a 0 is no row's

    def freeze(self) -> None:
        if self.ids is not None:
            self.ids.freeze()
            self._count = len(self.ids)
        else:
            self._count = self.positions.count(1)

    def has(self, row_id: str, number: int | None) -> bool:
        if self.ids is not None:
            return row_id in self.ids
        return isinstance(number, int) and 0 < number < len(self.positions) and bool(self.positions[number])

    def __len__(self) -> int:
        """Distinct rows done (a row paid twice after a crash has two lines)."""
        return self._count


class Unplaced(Exception):
    """A journal line without a row number where every line should have one."""


@dataclass
class Progress:
    """What a run directory holds: done and failed rows, tokens so far."""

    #: Rows whose result was on disk when the session began.
    done: DoneRows = field(default_factory=lambda: DoneRows(by_position=True))
    #: Latest error record of each row that failed and has not succeeded since.
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Tokens and USD of each row's latest answer (a result, or one that did not parse).
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    #: Answers whose model has no price (their cost is unknown, not 0).
    unpriced: int = 0
    #: Lines dropped on load because a crash had torn or garbled them.
    repaired_lines: int = 0


def add_spend(progress: Progress, usage: dict[str, Any] | None, cost: float | None) -> None:
    if not isinstance(usage, dict):
        return
    progress.prompt_tokens += usage.get("prompt_tokens") or 0
    progress.completion_tokens += usage.get("completion_tokens") or 0
    if isinstance(cost, (int, float)):
        progress.cost_usd += cost
    else:
        progress.unpriced += 1
