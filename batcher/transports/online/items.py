"""A request in the online pool: the row it carries, or the rows of a packed request.

An `Item` is made once a row is taken from the feed and lives until its request is answered or
fails for good; it keeps what the results line needs of each row (id, number, kept columns) and,
for a parse function that reads it, the row itself.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Item:
    row_id: str
    row_number: int
    body: dict[str, Any]
    kept: dict[str, Any]
    prompt_chars: int
    #: The input row, kept only for a parse function that wants it.
    row: dict[str, Any] | None = None
    #: The worker task carrying the row (asked once a worker: each asking is a system call).
    worker: asyncio.Task | None = None
    #: The rows of a packed request (embeddings: several rows, one request); None for one row.
    members: list[Any] | None = None


def rows_of(item: Item) -> list[tuple[str, int, dict[str, Any], bool]]:
    """(id, row number, kept columns, whether a copy riding on another) of each row a request carries."""
    if item.members is None:
        return [(item.row_id, item.row_number, item.kept, False)]
    return [
        (m.row_id, m.row_number, m.kept, m is not member)
        for member in item.members
        for m in (member, *member.copies)
    ]
