"""The output files derived from the journal's records (kinds/records.py).

For `--output-format parquet` and `openai-batch`, a sink writes the chosen files
from the journal's records: each session rewrites
results from the journal into a temporary file, appends new results as they
arrive (Parquet in row groups of `ROW_GROUP_ROWS`), and renames it into place
when the session ends. Errors are written at the end of the session, since a
row that fails now may still succeed later in it. After a kill -9 the files of
the last finished session remain; the next session rebuilds them.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from array import array
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from batcher.errors import WriteFailed
from batcher.inputs.sources import arrow
from batcher.job import BATCH_OUTPUT
from batcher.jsoncodec import dumps
from batcher.store.journal import iter_journal
from batcher.store.vectors import VectorFile

ROW_GROUP_ROWS = 1000


# -- derived outputs ---------------------------------------------------------------


class Sink:
    """An output format fed with durable records: this session's as they come, then at `close`
    the earlier sessions' results, read from the journal up to where it ended when the session
    began. No rebuild stands before the first request of a resumed run (a million vectors take
    a while to copy); the cost is paid once, as the session ends."""

    #: The results journal and its length when the session began (None: nothing earlier).
    earlier: tuple[Path, int] | None = None

    def write_result(self, record: dict[str, Any]) -> None: ...

    def close(self, errors: Iterable[dict[str, Any]]) -> None:
        if self.earlier is not None:
            path, end = self.earlier
            for record in iter_journal(path, end):
                self.write_result(record)
        self.finish(errors)

    def finish(self, errors: Iterable[dict[str, Any]]) -> None:
        """Write the files whole (results, then the rows that stand failed)."""


class OpenAIBatchSink(Sink):
    """OpenAI Batch output lines: results.jsonl (200s) and errors.jsonl (the rest)."""

    def __init__(self, directory: Path):
        self.results_path = directory / "results.jsonl"
        self.errors_path = directory / "errors.jsonl"
        self._tmp = self.results_path.with_name("results.jsonl.partial")
        self._file = self._tmp.open("w", encoding="utf-8")

    def write_result(self, record: dict[str, Any]) -> None:
        response = record.get("response") or {"status_code": 200, "request_id": None, "body": None}
        self._file.write(dumps(_batch_line(record["id"], response, None)) + "\n")

    def finish(self, errors: Iterable[dict[str, Any]]) -> None:
        _finish(self._file, self._tmp, self.results_path)
        tmp = self.errors_path.with_name("errors.jsonl.partial")
        with tmp.open("w", encoding="utf-8") as f:
            for record in errors:
                f.write(dumps(_batch_error_line(record)) + "\n")
            _finish(f, tmp, self.errors_path)


def _batch_line(custom_id: str, response: dict[str, Any] | None, error: dict[str, Any] | None) -> dict:
    return {
        "id": f"batch_req_{uuid.uuid4().hex}",
        "custom_id": custom_id,
        "response": response,
        "error": error,
    }


def _batch_error_line(record: dict[str, Any]) -> dict[str, Any]:
    error = record.get("error") or {}
    if error.get("status"):
        body = {
            "error": {
                "message": error.get("message"),
                "type": error.get("type"),
                "param": error.get("param"),
                "code": None,
            }
        }
        return _batch_line(
            record["id"], {"status_code": error["status"], "request_id": None, "body": body}, None
        )
    return _batch_line(record["id"], None, {"code": error.get("type"), "message": error.get("message")})


def _finish(f: Any, tmp: Path, final: Path) -> None:
    f.flush()
    os.fsync(f.fileno())
    f.close()
    os.replace(tmp, final)


def _arrow_type(pa: Any, seen: Any) -> Any:
    """A kept column's Parquet type: the input's own, or one that fits every JSON value seen."""
    if not isinstance(seen, set):
        return seen
    if seen and seen <= {"bool"}:
        return pa.bool_()
    if seen and seen <= {"int"}:
        return pa.int64()
    if seen and seen <= {"int", "float"}:
        return pa.float64()
    if seen <= {"str"}:
        return pa.string()
    return pa.large_string()  # mixed or nested values, kept as JSON text


class Schemas:
    """The Arrow schemas of results and errors, with the kept columns typed (see `_arrow_type`)."""

    def __init__(
        self,
        kept_types: dict[str, Any],
        answer_types: dict[str, str] | None = None,
        *,
        batches: bool = False,
        dims: int | None = None,
    ):
        """`batches`: the run goes through the Batch API, and its lines say which batch answered them.
        `dims`: results are embeddings of that many dimensions (an `embedding` column, no answer's)."""
        pa, _ = arrow()
        batch = [("batch_id", pa.string())] if batches else []
        usage = pa.struct(
            [("prompt_tokens", pa.int64()), ("completion_tokens", pa.int64()), ("total_tokens", pa.int64())]
        )
        kept = [(name, _arrow_type(pa, seen)) for name, seen in kept_types.items()]
        answer = [
            (name, pa.large_string() if kind == "json" else pa.type_for_alias(kind))
            for name, kind in (answer_types or {}).items()
        ]
        if dims is None:
            answer_columns = [
                ("content", pa.string()),
                ("tool_calls", pa.string()),
                ("finish_reason", pa.string()),
                ("choices", pa.large_string()),  # JSON text, null unless the answer had n > 1
                ("logprobs", pa.large_string()),  # JSON text, null unless logprobs were asked
            ]
        else:
            answer_columns = [("embedding", pa.list_(pa.float32(), dims))]
        self.results = pa.schema(
            [
                ("id", pa.string()),
                ("row_number", pa.int64()),
                *answer_columns,
                ("usage", usage),
                ("cost_usd", pa.float64()),
                ("model", pa.string()),
                ("latency_ms", pa.float64()),
                ("attempts", pa.int64()),
                ("reused_from", pa.string()),
                *batch,
                *answer,
                *kept,
            ]
        )
        self.error = pa.struct(
            [("type", pa.string()), ("message", pa.string()), ("status", pa.int64()), ("param", pa.string())]
        )
        self.errors = pa.schema(
            [
                ("id", pa.string()),
                ("row_number", pa.int64()),
                ("error", self.error),
                ("attempts", pa.int64()),
                ("usage", usage),  # of an answer that did not parse
                ("cost_usd", pa.float64()),
                ("content", pa.string()),
                *batch,
                *kept,
            ]
        )
        #: Columns held as JSON text: tool calls, choices, logprobs, values of mixed or nested types.
        self.json_columns = {"tool_calls", "choices", "logprobs"} | {
            n for n, t in [*answer, *kept] if t == pa.large_string()
        }

    def row(self, record: dict[str, Any], schema: Any) -> dict[str, Any]:
        """A journal record as a row of `schema` (but for an embedding, which `table` adds)."""
        row = {}
        for name in schema.names:
            value = record.get(name)
            if name in self.json_columns and value is not None and not isinstance(value, str):
                value = json.dumps(value, ensure_ascii=False)
            row[name] = value
        return row


class ParquetSink(Sink):
    """results.parquet written in row groups as results arrive; errors.parquet at the end."""

    def __init__(self, directory: Path, schemas: Schemas):
        pa, pq = arrow()
        self._pa, self._pq = pa, pq
        self.results_path = directory / "results.parquet"
        self.errors_path = directory / "errors.parquet"
        self._schemas = schemas
        self.results_schema, self.errors_schema = self._schemas.results, self._schemas.errors
        self._row = self._schemas.row
        self._tmp = self.results_path.with_name("results.parquet.partial")
        self._writer = pq.ParquetWriter(self._tmp, self.results_schema)
        self._buffer: list[dict[str, Any]] = []

    def write_result(self, record: dict[str, Any]) -> None:
        self._buffer.append(self._row(record, self.results_schema))
        if len(self._buffer) >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            table = self._pa.Table.from_pylist(self._buffer, schema=self.results_schema)
            self._writer.write_table(table)
            self._buffer = []

    def finish(self, errors: Iterable[dict[str, Any]]) -> None:
        self._flush()
        self._writer.close()
        os.replace(self._tmp, self.results_path)
        self.write_errors(self._pa, self._pq, self._schemas, self.errors_path, errors)

    @staticmethod
    def write_errors(
        pa: Any, pq: Any, schemas: Schemas, path: Path, errors: Iterable[dict[str, Any]]
    ) -> None:
        """errors.parquet, whole, from the rows that stand failed."""
        tmp = path.with_name(path.name + ".partial")
        schema = schemas.errors
        with pq.ParquetWriter(tmp, schema) as writer:
            batch: list[dict[str, Any]] = []
            for record in errors:
                batch.append(schemas.row(record, schema))
                if len(batch) >= ROW_GROUP_ROWS:
                    writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                    batch = []
            if batch:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
        os.replace(tmp, path)


class VectorSink(Sink):
    """Embeddings: results.parquet with an `embedding` column of fixed_size_list<float32>[dims], or
    results.jsonl with the vector as a JSON list (the slow choice for large corpora). The vectors of
    earlier sessions are read from vectors.f32, where the journal's lines point."""

    def __init__(self, directory: Path, output_format: str, schemas: Any, vectors: VectorFile):
        """`schemas(dims)`: the Schemas once the first vector says how many dimensions there are."""
        self._pa, self._pq = arrow()
        self._parquet = output_format == "parquet"
        suffix = "parquet" if self._parquet else "jsonl"
        self.results_path = directory / f"results.{suffix}"
        self.errors_path = directory / f"errors.{suffix}"
        self._tmp = self.results_path.with_name(self.results_path.name + ".partial")
        self._schemas_for, self._schemas = schemas, None
        self._vectors = vectors
        self._writer: Any = None
        self._rows: list[dict[str, Any]] = []
        self._floats: list[bytes] = []

    def write_result(self, record: dict[str, Any]) -> None:
        vector = record.get("embedding")
        if vector is None:
            vector = self._vectors.read(record["vector_at"], record["dims"])
        if self._writer is None:
            self._open(len(vector) // 4)
        if not self._parquet:
            line = {k: v for k, v in record.items() if k not in ("embedding", "vector_at", "dims")}
            line["embedding"] = _floats(vector)
            self._writer.write(dumps(line) + "\n")
            return
        self._rows.append(self._schemas.row(record, self._columns))
        self._floats.append(vector)
        if len(self._rows) >= ROW_GROUP_ROWS:
            self._flush()

    def _open(self, dims: int) -> None:
        self._schemas = self._schemas_for(dims)
        self._dims = dims
        if self._parquet:
            results = self._schemas.results
            self._columns = results.remove(results.get_field_index("embedding"))
            self._writer = self._pq.ParquetWriter(self._tmp, results)
        else:
            self._writer = self._tmp.open("w", encoding="utf-8")

    def _flush(self) -> None:
        if not self._rows:
            return
        pa, data = self._pa, b"".join(self._floats)
        if len(data) != len(self._rows) * self._dims * 4:
            raise WriteFailed(
                f"the vectors of this run do not all have {self._dims} dimensions: one column cannot "
                "hold them; run rows of different models or dimensions into different directories"
            )
        values = pa.Array.from_buffers(pa.float32(), len(data) // 4, [None, pa.py_buffer(data)])
        table = pa.Table.from_pylist(self._rows, schema=self._columns)
        results = self._schemas.results
        index = results.get_field_index("embedding")
        table = table.add_column(
            index, results.field(index), pa.FixedSizeListArray.from_arrays(values, self._dims)
        )
        self._writer.write_table(table)
        self._rows, self._floats = [], []

    def finish(self, errors: Iterable[dict[str, Any]]) -> None:
        if self._writer is None:
            self._open(1)  # no vector at all: an empty file all the same
        if self._parquet:
            self._flush()
            self._writer.close()
            os.replace(self._tmp, self.results_path)
            ParquetSink.write_errors(self._pa, self._pq, self._schemas, self.errors_path, errors)
            return
        _finish(self._writer, self._tmp, self.results_path)
        tmp = self.errors_path.with_name("errors.jsonl.partial")
        with tmp.open("w", encoding="utf-8") as f:
            for record in errors:
                f.write(dumps(record) + "\n")
            _finish(f, tmp, self.errors_path)


def _floats(vector: bytes) -> list[float]:
    floats = array("f", vector)
    if sys.byteorder == "big":
        floats.byteswap()
    return floats.tolist()


def open_sink(
    output_format: str,
    directory: Path,
    results_journal: Path,
    kept_types: dict[str, Any],
    answer_types: dict[str, str] | None = None,
    *,
    batches: bool = False,
    vectors: VectorFile | None = None,
) -> Sink | None:
    """The sink for a derived format (it adds the journal's earlier results when it closes).

    `vectors`: the results are embeddings, their earlier vectors in that file."""
    if vectors is not None:
        sink: Sink = VectorSink(
            directory,
            output_format,
            lambda dims: Schemas(kept_types, None, batches=batches, dims=dims),
            vectors,
        )
    elif output_format == "jsonl":
        return None
    elif output_format == BATCH_OUTPUT:
        sink = OpenAIBatchSink(directory)
    else:
        sink = ParquetSink(directory, Schemas(kept_types, answer_types, batches=batches))
    if results_journal.exists():
        sink.earlier = (results_journal, results_journal.stat().st_size)
    return sink
