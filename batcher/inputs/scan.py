"""The first pass over an input: every row checked before anything is sent.

`scan` parses each row, names it, builds its request and sees its kept columns, and refuses the
input with one InputError listing every problem found (rows failing alike told once, ids missing
from some rows, repeated ids found by a second read only when their hashes repeat). A run that
starts has thus already seen every row it will send.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from batcher.errors import InputError
from batcher.inputs.formats import BATCH_INPUT
from batcher.inputs.idset import IdSet
from batcher.inputs.problems import Problems
from batcher.inputs.scanning import Kept, Unnamed
from batcher.inputs.sources import Builder, Source


@dataclass(frozen=True)
class Scan:
    kind: str
    total: int
    #: blake2b of the input's bytes: resuming checks the input has not changed.
    fingerprint: str
    #: Per kept column: its Arrow type (Parquet input) or the Python type names seen (JSONL, CSV).
    kept_types: dict[str, Any]


def scan(
    source: Source,
    builder: Builder,
    fingerprint: str,
    on_body: Callable[[int, str, dict[str, Any]], None] | None = None,
) -> Scan:
    """Check every row; raise one InputError listing the problems found.

    `on_body(number, row_id, body)` sees the request body of every good row.
    """
    columns = source.columns(builder)
    ids = IdSet()
    kept = Kept(source.kept_names(builder.keep_columns), typed=not source.is_parquet)
    unnamed = Unnamed() if source.id_column is None and not source.tabular else None
    problems = Problems()
    total = 0
    for number, (position, record) in enumerate(source.records(columns), start=1):
        total += 1
        try:
            row_id, row = source.identify(record, position)
            ids.add(row_id)
            body = builder.build(row)
            if source.kind != BATCH_INPUT:
                kept.see(row)
            if unnamed is not None:
                unnamed.see(number, position, row)
            if on_body is not None:
                on_body(position, row_id, body)
        except ValueError as e:
            problems.add(number, f"{source.unit} {position} {e}")
            if problems.full:
                break
    _refuse(source, problems, unnamed, columns, ids)
    if total == 0:
        raise InputError("has no rows", path=source.name)
    kept_types = source.parquet_types(list(kept.types)) if source.is_parquet else kept.types
    return Scan(kind=source.kind, total=total, fingerprint=fingerprint, kept_types=kept_types)


def _refuse(
    source: Source, problems: Problems, unnamed: Unnamed | None, columns: list[str] | None, ids: IdSet
) -> None:
    """One InputError listing the problems (in file order, rows failing alike as one), if any: the
    rows' own, those of ids missing from some rows only, and repeated ids (found by a second read,
    only when their hashes repeat)."""
    for problem in unnamed.problems(source.unit) if unnamed is not None else []:
        problems.add(*problem)
    repeated = ids.repeated_hashes()
    if repeated and not problems.full:
        for problem in _duplicates(source, columns, repeated):
            problems.add(*problem)
    refusal = problems.refusal(source.name)
    if refusal is not None:
        raise refusal


def _duplicates(source: Source, columns: list[str] | None, repeated: set[int]) -> list[tuple[int, str]]:
    """A second read, only when hashes repeat: which ids really repeat, and where."""
    first_seen: dict[str, str] = {}
    found = []
    for number, (position, record) in enumerate(source.records(columns), start=1):
        where = f"{source.unit} {position}"
        try:
            row_id, _ = source.identify(record, position)
        except ValueError:
            continue
        if IdSet.hash_of(row_id) not in repeated:
            continue
        if row_id in first_seen:
            found.append((number, f"{where} repeats id {row_id!r} (first seen at {first_seen[row_id]})"))
        else:
            first_seen[row_id] = where
    return found
