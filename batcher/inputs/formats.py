"""Which kind of file an input is: by its name, and where the name does not say, by its first bytes.

A known suffix decides (`.jsonl`, `.parquet`, `.csv`, `.tsv`), so a JSONL file with a bad first line
is still named by that line. A file of another name is JSONL when its first line holds a JSON
object, Parquet when it starts as Parquet does; anything else (a spreadsheet, prose, one JSON
document, a compressed file) is refused with a message listing what batcher reads, rather than
"line 1 is not valid JSON".
"""

from __future__ import annotations

from typing import Any

from batcher.errors import InputError
from batcher.inputs.jsonl import parse_json_line, without_bom

JSONL, PARQUET, CSV, TSV = "jsonl", "parquet", "csv", "tsv"
#: What a row is: data for a prompt template, a chat request (`messages`), an OpenAI Batch input
#: line (job.BATCH_OUTPUT is the output format of that name).
TEMPLATE, CHAT, BATCH_INPUT = "template", "chat", "openai-batch"
#: What each kind is called in messages.
LABELS = {JSONL: "JSONL", PARQUET: "Parquet", CSV: "CSV", TSV: "TSV"}
KINDS_READ = (
    "JSONL (one JSON object a line: .jsonl, or - for standard input), Parquet (.parquet), "
    "CSV or TSV with a header row (.csv, .tsv) and OpenAI Batch input files (.jsonl)"
)
_BY_SUFFIX = {
    ".jsonl": JSONL,
    ".ndjson": JSONL,
    ".parquet": PARQUET,
    ".pq": PARQUET,
    ".csv": CSV,
    ".tsv": TSV,
}
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zip", ".7z", ".lz4", ".snappy")
_SPREADSHEETS = (".xlsx", ".xls", ".xlsm", ".ods", ".numbers")
_PARQUET_MAGIC = b"PAR1"
#: The most of a first line read to tell JSONL from what is not.
_FIRST_LINE_BYTES = 1 << 22


def kind_of_file(path: Any) -> str:
    """JSONL, PARQUET, CSV or TSV; InputError naming the kinds batcher reads for anything else."""
    suffix = path.suffix.lower()
    if suffix in _BY_SUFFIX:
        return _BY_SUFFIX[suffix]
    if suffix in _COMPRESSED:
        raise _not_read(path, "is compressed: decompress it first (e.g. gunzip)")
    if suffix in _SPREADSHEETS:
        raise _not_read(path, "is a spreadsheet: save it as CSV (UTF-8) first")
    head, first = _first_line(path)
    if head.startswith(_PARQUET_MAGIC):
        return PARQUET
    if first is not None:
        try:
            if isinstance(parse_json_line(first), dict):
                return JSONL
        except ValueError:
            pass
    if suffix == ".json" and first is not None and first.lstrip().startswith((b"[", b"{")):
        raise _not_read(
            path,
            "holds one JSON document, not JSON Lines (one object a line): convert it, e.g. "
            f"jq -c '.[]' {path.name} > rows.jsonl",
        )
    raise _not_read(path, "is not a kind of file batcher reads")


def _first_line(path: Any) -> tuple[bytes, bytes | None]:
    """The file's first bytes, and its first line that is not blank (None if there is none)."""
    try:
        with path.open("rb") as f:  # (an object store's stream: read forward only)
            line = f.readline(_FIRST_LINE_BYTES)
            head, line = line[: len(_PARQUET_MAGIC)], without_bom(line)
            while line and not line.strip():
                line = f.readline(_FIRST_LINE_BYTES)
    except OSError as e:
        raise InputError(f"cannot be read: {e.strerror or e}", path=path) from None
    return head, line or None


def _not_read(path: Any, why: str) -> InputError:
    return InputError(f"{why}; batcher reads {KINDS_READ}", path=path)
