"""The problems a scan finds in an input, each told once: rows failing alike are one problem.

Five hundred rows without a model are one problem on "lines 1-20 and 480 more", not twenty
lines of the same words and a count that counts rows. A scan stops looking after MAX_PROBLEMS
different problems, or MAX_ROWS rows with problems (a file failing on every row is refused
after a second's reading, not after all of it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from batcher.errors import InputError
from batcher.inputs.scanning import MAX_PROBLEMS
from batcher.words import plural

#: A problem's text: "line 12 has no column 'text' ..." (the unit, the position, the reason).
_PLACED = re.compile(r"(line|row) (\d+) (.*)", re.DOTALL)
#: Positions a grouped problem names before "and N more".
SHOWN = 20
#: Rows that share a problem and are still told one by one, as before grouping was worth it.
ALONE = 2
#: Rows with problems after which a scan stops looking.
MAX_ROWS = 100_000
#: A reason's first word, said of several rows.
_PLURAL_VERBS = {"has": "have", "is": "are", "needs": "need", "names": "name", "repeats": "repeat"}


@dataclass
class _Group:
    unit: str
    #: (order in the file, position) of its first rows: problems are listed in file order.
    places: list[tuple[int, int]] = field(default_factory=list)
    rows: int = 0


class Problems:
    """Problems found so far, grouped by their reason (the text after "line N")."""

    def __init__(self) -> None:
        self._groups: dict[str, _Group] = {}
        self._rows = 0
        #: Texts that name no single row, in the order found.
        self._others: list[tuple[int, str]] = []

    def __len__(self) -> int:
        """Problems, not rows: a reason shared by many rows counts once."""
        return len(self._groups) + len(self._others)

    @property
    def full(self) -> bool:
        """MAX_PROBLEMS different problems found, or MAX_ROWS rows with one: time to stop looking."""
        return len(self) >= MAX_PROBLEMS or self._rows >= MAX_ROWS

    def add(self, number: int, text: str) -> None:
        """A problem of the row `number`-th in the file, told as "line 12 has ..." or "row 3 is ..."."""
        self._rows += 1
        placed = _PLACED.fullmatch(text)
        if placed is None:
            self._others.append((number, text))
            return
        unit, position, reason = placed.group(1), int(placed.group(2)), placed.group(3)
        group = self._groups.get(reason)
        if group is None:
            if self.full:
                return
            group = self._groups[reason] = _Group(unit)
        group.rows += 1
        if len(group.places) < SHOWN:
            group.places.append((number, position))

    def lines(self) -> list[str]:
        """Each problem as a line, in file order (a problem of two rows told of each)."""
        told = list(self._others)
        for reason, group in self._groups.items():
            if group.rows <= ALONE:
                told += [(number, f"{group.unit} {position} {reason}") for number, position in group.places]
            else:
                told.append((group.places[0][0], _told(group, reason)))
        return [text for _, text in sorted(told)]

    def refusal(self, name: str) -> InputError | None:
        """The InputError listing every problem, or None when there is none."""
        if not len(self):
            return None
        listed = self.lines()
        rows = sum(g.rows for g in self._groups.values()) + len(self._others)
        unit = next((g.unit for g in self._groups.values()), "row")
        spread = f" in {rows:,} {unit}s" if rows > len(self) else ""
        if self._rows >= MAX_ROWS:
            listed.append(f"(stopped looking after {MAX_ROWS:,} {unit}s with problems)")
        elif self.full:
            listed.append(f"(stopped looking after {MAX_PROBLEMS} different problems)")
        return InputError(
            f"has {plural(len(self), 'problem')}{spread}; nothing was sent:\n  " + "\n  ".join(listed),
            path=name,
        )


def _told(group: _Group, reason: str) -> str:
    more = group.rows - len(group.places)
    where = _ranges([position for _, position in group.places]) + (f" and {more:,} more" if more else "")
    verb, space, rest = reason.partition(" ")
    return f"{group.unit}s {where}: {_PLURAL_VERBS.get(verb, verb)}{space}{rest}"


def _ranges(positions: list[int]) -> str:
    """1, 2, 3, 7, 9, 10 -> "1-3, 7, 9-10"."""
    spans: list[list[int]] = []
    for position in sorted(positions):
        if spans and position == spans[-1][1] + 1:
            spans[-1][1] = position
        else:
            spans.append([position, position])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
