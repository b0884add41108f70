"""What a scan keeps track of across an input's rows besides each request: the row ids' rules, the
kept columns and the types of their values, and whether rows named by position really have no id.
"""

from __future__ import annotations

from typing import Any

#: The id column when none is named; a file without it names its rows by position.
DEFAULT_ID = "id"
#: How many problems a scan lists before it stops looking.
MAX_PROBLEMS = 20


def checked_id(value: Any, column: str) -> str:
    """A row's id (the value of `column`) as text; ValueError says what is wrong with it."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        if value is None:
            raise ValueError(f"has no '{column}' (--id-column names the column that identifies each row)")
        raise ValueError(f"has a '{column}' that is not a string or an integer but {type(value).__name__}")
    row_id = str(value)
    if not row_id.strip():
        raise ValueError(f"has an empty '{column}'")
    return row_id


class Kept:
    """The kept columns a scan sees, with the Python types of their values (JSONL, CSV; a Parquet
    schema types its own); given no names ('*' of a JSONL input), every key of every row."""

    def __init__(self, names: list[str] | None, *, typed: bool):
        self.every = names is None
        self.typed = typed
        self.types: dict[str, set[str]] = {name: set() for name in names or ()}

    def see(self, row: dict[str, Any]) -> None:
        if self.every:
            for name, value in row.items():
                types = self.types.setdefault(name, set())
                if value is not None:
                    types.add(type(value).__name__)
            return
        for name, types in self.types.items():
            if name not in row:
                raise ValueError(f"has no column {name!r} named in keep_columns")
            if self.typed and row[name] is not None:
                types.add(type(row[name]).__name__)


class Unnamed:
    """A JSONL scan whose first row has no `id`, so rows are named by line: if a later row has one
    after all, the file is refused, naming the rows without (as a file with ids everywhere but a
    few rows is)."""

    def __init__(self) -> None:
        self.named = 0
        #: (order in the file, line) of the first rows without an id.
        self.without: list[tuple[int, int]] = []

    def see(self, number: int, position: int, row: dict[str, Any]) -> None:
        if row.get(DEFAULT_ID) is not None:
            self.named += 1
        elif len(self.without) < MAX_PROBLEMS:
            self.without.append((number, position))

    def problems(self, unit: str) -> list[tuple[int, str]]:
        if not self.named:
            return []
        return [
            (
                number,
                f"{unit} {position} has no '{DEFAULT_ID}' where other rows have one: give every row "
                "an id, or none (rows are then named by their line)",
            )
            for number, position in self.without
        ]
