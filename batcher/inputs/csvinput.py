"""CSV and TSV inputs: a header row naming the columns, then a record a row, read streamed by
pyarrow's CSV reader a block at a time (as Parquet is read a record batch at a time).

Every column is read as text: a CSV holds no types, and guessing them would turn an id "007" into 7
and a zip code into a number; an empty field is an empty string (in a CSV, "" and nothing look the
same). Quoted fields may hold the delimiter, quotes ("") and newlines, so a row is named by its
number among the data rows (row 1: the first after the header), never by its line. A UTF-8
byte-order mark before the header is passed over.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from batcher.errors import InputError
from batcher.storage import is_remote

_BLOCK_BYTES = 1 << 20


def _csv() -> tuple[Any, Any]:
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")  # (see sources.arrow)
    import pyarrow as pa
    import pyarrow.csv as pcsv

    return pa, pcsv


class CsvFile:
    """One CSV (or TSV) file: its header's names, and its rows as record batches of text columns."""

    def __init__(self, path: Any, delimiter: str, name: str):
        self.path, self.delimiter, self.name = path, delimiter, name
        self._names: list[str] | None = None

    def names(self) -> list[str]:
        """The header's column names (read once); InputError for an empty file or a name given twice."""
        if self._names is None:
            reader, _ = self._open(None)
            names = list(reader.schema.names)
            reader.close()
            seen: set[str] = set()
            for name in names:
                if name and name in seen:
                    raise InputError(
                        f"names the column {name!r} twice in its header: rename one", path=self.name
                    )
                seen.add(name)
            self._names = names
        return self._names

    def batches(self, columns: list[str] | None) -> Iterator[Any]:
        """Record batches of the file's rows: the columns named (all but unnamed ones when None), as text."""
        read = columns if columns is not None else [n for n in self.names() if n]
        reader, bad_rows = self._open(read)
        rows = 0
        try:
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                rows += batch.num_rows
                yield batch
        except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ...
            if bad_rows:
                raise _bad_row(self.name, bad_rows[0]) from None
            raise InputError(
                f"cannot be read from row {rows + 1} on ({_reason(e)})", path=self.name
            ) from None
        finally:
            reader.close()

    def _open(self, columns: list[str] | None) -> tuple[Any, list[Any]]:
        """A streaming reader of `columns` as text (None: the header alone is wanted, types guessed),
        and the list its rows of the wrong width are put in as they are met."""
        pa, pcsv = _csv()
        bad_rows: list[Any] = []

        def on_bad_row(row: Any) -> str:
            bad_rows.append(row)
            return "error"

        convert = pcsv.ConvertOptions()
        if columns is not None:
            convert = pcsv.ConvertOptions(
                column_types={name: pa.string() for name in columns}, include_columns=columns
            )
        try:
            source = self.path.open("rb") if is_remote(self.path) else str(self.path)
            reader = pcsv.open_csv(
                source,
                # One thread: the reader then knows each bad row's number (and a stream reads in order).
                read_options=pcsv.ReadOptions(use_threads=False, block_size=_BLOCK_BYTES),
                parse_options=pcsv.ParseOptions(
                    delimiter=self.delimiter, newlines_in_values=True, invalid_row_handler=on_bad_row
                ),
                convert_options=convert,
            )
        except Exception as e:
            if bad_rows:
                raise _bad_row(self.name, bad_rows[0]) from None
            if "Empty CSV file" in str(e):
                raise InputError(
                    "is empty: a CSV input starts with a header row naming its columns", path=self.name
                ) from None
            raise InputError(f"cannot be read as CSV ({_reason(e)})", path=self.name) from None
        return reader, bad_rows


def _bad_row(name: str, row: Any) -> InputError:
    where = f"row {row.number - 1}" if row.number else None  # (the reader counts the header as row 1)
    return InputError(
        f"has {row.actual_columns} fields where the header names {row.expected_columns} columns "
        "(a field holding the delimiter, a quote or a newline must be quoted)",
        path=name,
        where=where,
    )


def _reason(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
