"""The Python API: `run`, `arun` and `iter_results`, the CLI's engine for scripts and notebooks.

Sources are paths, lists of dicts or strings, pyarrow Tables or pandas DataFrames; in-memory data
is written once into the run directory so calls resume. See docs/python-api.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

from batcher.errors import ConfigError
from batcher.inputs.sources import KEEP_ALL, arrow
from batcher.job import Job, build_job
from batcher.job.files import check_settings
from batcher.jsoncodec import dumps
from batcher.kinds.records import RESERVED_COLUMNS
from batcher.outputs.sinks import Schemas
from batcher.storage import is_remote, location
from batcher.store.checkpoint import STATE_DIR, Checkpoint
from batcher.store.jobrecord import recorded_job
from batcher.store.journal import iter_journal, write_atomically
from batcher.store.vectors import VectorFile

Record = dict[str, Any]
#: A parse function, as Curator users write them: (input row, answer text) -> columns.
Parse = Callable[[dict[str, Any], str | None], dict[str, Any]]


def run(
    source: Any,
    *,
    model: str | None = None,
    prompt: str | None = None,
    base_url: str | None = None,
    output: str | os.PathLike | None = None,
    progress: bool = False,
    parse: Parse | None = None,
    **options: Any,
) -> Any:
    """Send every row of `source`; return one `pyarrow.Table` row per input row, in input order.

    The table has the columns of results.parquet (id, row_number, content,
    tool_calls, finish_reason, usage, model, latency_ms, attempts, kept
    columns) and `error` (type, message, status, param) for rows that failed.

    `output` is the run directory: results, errors, summary and checkpoint, so
    that calling again resumes. Without one, the run happens in a temporary
    directory that is removed afterwards (nothing to resume). `options` are the
    job-file settings: system, id_column, keep_columns, max_tokens,
    temperature, top_p, api_key_env, concurrency, rpm, tpm, max_retries,
    timeout, output_format, retry_failed, force, ... (see docs/reference.md).
    The key is read from the environment variable `api_key_env` names.

    `parse(row, answer) -> dict` turns each answer into columns of your own
    (what it raises makes the answer a `parse_error`, asked again up to
    `parse_retries` times). It is not part of the job's record: keep it the same
    across calls that resume one run directory.

    Raises `batcher.BatcherError` (a `ConfigError` or `InputError` before
    anything is sent; `RunAborted` when the run stops, e.g. the key refused).
    Failed rows do not raise: they come back with `error` set.
    """
    call = _Call(source, model, prompt, base_url, output, progress, parse, options)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(call.table())
    # Called from inside a running loop (a notebook cell): give the run its own.
    with ThreadPoolExecutor(1, thread_name_prefix="batcher") as pool:
        return pool.submit(asyncio.run, call.table()).result()


async def arun(
    source: Any,
    *,
    model: str | None = None,
    prompt: str | None = None,
    base_url: str | None = None,
    output: str | os.PathLike | None = None,
    progress: bool = False,
    parse: Parse | None = None,
    **options: Any,
) -> Any:
    """`run`, awaited in the caller's event loop."""
    return await _Call(source, model, prompt, base_url, output, progress, parse, options).table()


def iter_results(
    source: Any,
    *,
    model: str | None = None,
    prompt: str | None = None,
    base_url: str | None = None,
    output: str | os.PathLike | None = None,
    progress: bool = False,
    parse: Parse | None = None,
    **options: Any,
) -> Iterator[Record]:
    """Yield each row's record (a results or errors line as a dict) as soon as it is durable.

    Records come in the order rows finish. A row that fails carries `error`;
    one retried within the session comes once, when it is settled. Rows done in
    an earlier session of `output` are not yielded again (`run` returns them
    all). Leaving the loop early stops the run as Ctrl-C would: requests on the
    wire finish and are kept, and calling again resumes.
    """
    call = _Call(source, model, prompt, base_url, output, progress, parse, options)
    records: queue.Queue = queue.Queue()
    done = object()
    state: dict[str, Any] = {}

    def work() -> None:
        try:
            asyncio.run(call.session(on_record=lambda ok, record: records.put(record), state=state))
        except BaseException as e:  # handed to the consumer's thread
            state["error"] = e
        finally:
            records.put(done)

    thread = threading.Thread(target=work, name="batcher", daemon=True)
    thread.start()
    try:
        while (record := records.get()) is not done:
            yield record
    finally:
        if thread.is_alive() and (stop := state.get("stop")) is not None:
            with suppress(RuntimeError):  # the run's loop closed in the meantime
                stop()
        thread.join()
    if "error" in state:
        raise state["error"]


class _Call:
    """One call of the API: its job, its run directory and what it leaves behind."""

    def __init__(
        self,
        source: Any,
        model: str | None,
        prompt: str | None,
        base_url: str | None,
        output: str | os.PathLike | None,
        progress: bool,
        parse: Parse | None,
        options: dict[str, Any],
    ):
        check_settings(options, "batcher options")
        for name in ("input", "output"):
            if name in options:
                raise ConfigError(f"batcher options: pass the {name} as the `source`/`output` argument")
        self.source = source
        self.settings = {"model": model, "prompt": prompt, "base_url": base_url, **options}
        if output is not None and is_remote(location(output)):
            raise ConfigError(
                f"{output}: the Python API keeps its run directory on this machine (it reads the table "
                "back from it); give a local output, or run `batcher run -o URI` for an object store"
            )
        self.output = Path(output) if output is not None else None
        self.progress = progress
        self.parse = parse

    async def table(self) -> Any:
        with ExitStack() as stack:
            job = await self._job(stack)
            await self._run(job)
            return results_table(job)

    async def session(self, *, on_record: Callable[[bool, Record], None], state: dict[str, Any]) -> None:
        with ExitStack() as stack:
            job = await self._job(stack)
            await self._run(job, on_record=on_record, state=state)

    async def _job(self, stack: ExitStack) -> Job:
        directory = self.output
        if directory is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="batcher-")))
        settings = {**self.settings, "output": directory}
        path, implied = await asyncio.to_thread(_input_file, self.source, directory)
        for key, value in implied.items():
            if settings.get(key) is None:
                settings[key] = value
        return build_job({**settings, "input": path})

    async def _run(
        self,
        job: Job,
        *,
        on_record: Callable[[bool, Record], None] | None = None,
        state: dict[str, Any] | None = None,
    ) -> None:
        from batcher.progress import Watch
        from batcher.session import run_job

        loop = asyncio.get_running_loop()
        watch = Watch(show=self.progress)

        def on_start(runner: Any) -> None:
            if state is not None:
                state["stop"] = lambda: loop.call_soon_threadsafe(runner.request_stop)
            watch.on_start(runner)

        try:
            outcome = await run_job(
                job, on_start=on_start, on_record=on_record, parse=self.parse, on_progress=watch.on_progress
            )
        finally:
            watch.close()
        if outcome.error is not None:
            raise outcome.error


def _input_file(source: Any, directory: Path) -> tuple[Path, dict[str, Any]]:
    """A path for `source`, writing in-memory data into the run directory; settings it implies."""
    if isinstance(source, (str, os.PathLike)):
        return Path(source), {}
    pa, pq = arrow()
    if type(source).__module__.split(".")[0] == "pandas":
        source = pa.Table.from_pandas(source, preserve_index=False)
    # Rows without an `id` are named by their position, from 1, as a file's are (inputs/sources.py).
    if isinstance(source, pa.Table):
        sink = pa.BufferOutputStream()
        pq.write_table(source, sink)
        return _write_if_changed(directory, "input.parquet", sink.getvalue().to_pybytes()), {}
    if isinstance(source, Iterable) and not isinstance(source, (bytes, Mapping)):
        rows, implied = [], {}
        for number, row in enumerate(source):
            if isinstance(row, str):
                row, implied = {"text": row}, {"prompt": "{text}"}
            elif not isinstance(row, Mapping):
                raise ConfigError(
                    f"source item {number} is a {type(row).__name__}; give dicts (rows) or strings (prompts)"
                )
            rows.append(dumps(dict(row)))
        data = ("\n".join(rows) + "\n").encode("utf-8") if rows else b""
        return _write_if_changed(directory, "input.jsonl", data), implied
    raise ConfigError(
        f"cannot read a {type(source).__name__} as input: give a path, a list of dicts or strings, "
        "a pyarrow.Table or a pandas DataFrame"
    )


def _write_if_changed(directory: Path, name: str, data: bytes) -> Path:
    """Keep the file of an earlier call when the data is the same, so its run resumes."""
    path = directory / STATE_DIR / name
    try:
        if path.read_bytes() == data:
            return path
    except OSError:
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, data)
    except OSError as e:
        raise ConfigError(f"{directory} cannot be used as the output directory: {e.strerror or e}") from None
    return path


def results_table(job: Job) -> Any:
    """Every row's latest outcome in the run directory, in input order, as a `pyarrow.Table`."""
    pa, _ = arrow()
    checkpoint = Checkpoint.of_run(job.output, job.output_format, job.endpoint)
    results: dict[str, Record] = {}
    for record in iter_journal(checkpoint.results_path):
        results[record["id"]] = record
    failed: dict[str, Record] = {}
    for record in iter_journal(checkpoint.errors_path):
        if record["id"] not in results:
            failed[record["id"]] = record
    answer_types = job.answer_format.column_types() if job.answer_format else None
    dims = next((r["dims"] for r in results.values() if "dims" in r), 1) if job.embeddings else None
    schemas = Schemas(_kept_types(job, checkpoint), answer_types, dims=dims)
    schema = schemas.results.append(pa.field("error", schemas.error))
    records = sorted((*results.values(), *failed.values()), key=lambda r: r.get("row_number") or 0)
    table = pa.Table.from_pylist([schemas.row(r, schema) for r in records], schema=schema)
    if dims is not None:
        table = _with_vectors(table, records, checkpoint, dims)
    return _with_parsed_columns(table, records, schema.names)


def _with_parsed_columns(table: Any, records: list[Record], names: list[str]) -> Any:
    """`table` with the columns a parse function added, typed from their values."""
    pa, _ = arrow()
    internal = {"response", "vector_at", "dims"}
    extra = dict.fromkeys(k for r in records for k in r if k not in names and k not in internal)
    for name in extra:
        values = [r.get(name) for r in records]
        try:
            column = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: as JSON text
            column = pa.array([None if v is None else json.dumps(v, default=str) for v in values])
        table = table.append_column(name, column)
    return table


def _with_vectors(table: Any, records: list[Record], checkpoint: Checkpoint, dims: int) -> Any:
    """`table` with its `embedding` column read from the run's vector file (null for failed rows)."""
    pa, _ = arrow()
    vectors = VectorFile(checkpoint.vectors_path)
    sizes = {r["dims"] for r in records if "dims" in r}
    if len(sizes) > 1:
        raise ConfigError(
            f"the results hold vectors of {' and '.join(map(str, sorted(sizes)))} dimensions, which one "
            "column cannot: give every row the same model and dimensions"
        )
    zeros = bytes(dims * 4)
    try:
        data = b"".join(vectors.read(r["vector_at"], dims) if "vector_at" in r else zeros for r in records)
    finally:
        vectors.close()
    values = pa.Array.from_buffers(pa.float32(), len(data) // 4, [None, pa.py_buffer(data)])
    mask = pa.array(["vector_at" not in r for r in records], pa.bool_())
    column = pa.FixedSizeListArray.from_arrays(values, dims, mask=mask)
    index = table.schema.get_field_index("embedding")
    return table.set_column(index, table.schema.field(index), column)


def _kept_types(job: Job, checkpoint: Checkpoint) -> dict[str, Any]:
    """The kept columns and their types, as the run recorded them (`*`: every column it kept)."""
    recorded = recorded_job(checkpoint.directory) or {}
    kept, names = recorded.get("kept_types"), job.keep_columns
    if isinstance(kept, dict):
        return {name: set(kept.get(name) or ()) for name in (tuple(kept) if names == (KEEP_ALL,) else names)}
    _, pq = arrow()  # a Parquet input: its own column types
    schema = pq.read_schema(job.input.open_random() if is_remote(job.input) else job.input)
    if names == (KEEP_ALL,):  # as prepare._columns_kept chose them
        answers = job.answer_format.columns if job.answer_format else ()
        taken = {*RESERVED_COLUMNS, *answers, recorded.get("id_column")}
        names = tuple(name for name in schema.names if name not in taken)
    return {name: schema.field(name).type for name in names}
