"""`batcher.ray.process`: batcher as one stage of a Ray Data pipeline, under one limit for all its actors.

    import ray, batcher.ray
    ds = ray.data.read_parquet("s3://bucket/reviews/")
    ds = batcher.ray.process(ds, model="gpt-4o-mini", prompt="Classify: {text}", base_url=..., rpm=3000)
    ds.write_parquet("s3://bucket/labelled/")

Each batch of rows goes through batcher's own online pool (retries, 429s,
answer checks, packing for embeddings) in one of `workers` actors, all drawing
on one budget held by a named actor (transports/ray/limits.py), and comes back with the
result columns added: `content`, `finish_reason`, `usage_*`, `cost_usd`,
`error` (and `embedding` for embeddings). A row that fails has its error and
nulls. The stage keeps no journal: resuming a pipeline is the pipeline's
business (Ray Data's checkpointing); `batcher run --executor ray` is the
resumable way.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from typing import Any

from batcher.inputs.sources import InputRow
from batcher.job import build_job
from batcher.transports.ray.limits import keeper_actor
from batcher.transports.ray.worker import RowWorker


def process(
    ds: Any,
    *,
    model: str,
    prompt: str,
    base_url: str | None = None,
    rpm: float | None = None,
    tpm: float | None = None,
    workers: int = 2,
    batch_size: int = 64,
    **options: Any,
) -> Any:
    """`ds` with batcher's result columns added, every request under one `rpm` / `tpm` budget.

    `options` are job settings (system, max_tokens, temperature, endpoint, dimensions, api_key_env,
    concurrency, max_retries, ...); the key is read from the environment of the process calling this
    and travels to the stage's actors with their work.
    """
    import ray

    settings = {"model": model, "prompt": prompt, "rpm": rpm, "tpm": tpm, **options}
    if base_url is not None:
        settings["base_url"] = base_url
    job = build_job({**settings, "input": "pipeline", "output": tempfile.gettempdir(), "executor": "ray"})
    if job.uses_simulator:
        raise ValueError("a pipeline stage needs a server's base_url (the embedded simulator lives in a run)")
    config = job.endpoint_configs[0]
    name, in_flight = f"batcher-stage-{uuid.uuid4().hex[:12]}", workers * job.concurrency
    keeper = keeper_actor(name, config.rpm, config.tpm, max_window=in_flight)
    return ds.map_batches(
        _Stage,
        # (the key, and the variables `env:` headers read, travel with the work: never a runtime_env)
        fn_constructor_args=(job, config, keeper, config.environment()),
        compute=ray.data.ActorPoolStrategy(size=workers),
        batch_size=batch_size,
        batch_format="pyarrow",
        num_cpus=0.25,
    )


class _Stage:
    """A map_batches actor: one worker's pool, sending the rows of each batch it is given."""

    def __init__(self, job: Any, config: Any, keeper: Any, keys: dict[str, str]):
        self._keeper = keeper  # (held: the keeper lives while a stage actor does)
        self._worker = RowWorker(job, "template", [(config, config.base_url, keeper)])
        self._keys = keys
        self._embeddings = job.embeddings

    async def __call__(self, batch: Any) -> Any:
        rows = [InputRow(str(i), i + 1, row) for i, row in enumerate(batch.to_pylist())]
        records, _, error = await self._worker.process(rows, self._keys)
        if error is not None:
            raise error
        by_row = {int(record["id"]): (ok, record) for ok, record in records}
        return _with_results(
            batch, [by_row.get(i, (False, None)) for i in range(len(rows))], self._embeddings
        )


def _with_results(batch: Any, outcomes: list[tuple[bool, dict[str, Any] | None]], embeddings: bool) -> Any:
    import pyarrow as pa

    def column(name: str, ok_only: bool = True) -> list[Any]:
        return [(record or {}).get(name) if ok or not ok_only else None for ok, record in outcomes]

    usage = [(record or {}).get("usage") or {} if ok else {} for ok, record in outcomes]
    errors = [
        None if ok else json.dumps((record or {}).get("error") or {"message": "not sent"})
        for ok, record in outcomes
    ]
    added = {
        "prompt_tokens": pa.array([u.get("prompt_tokens") for u in usage], pa.int64()),
        "completion_tokens": pa.array([u.get("completion_tokens") for u in usage], pa.int64()),
        "cost_usd": pa.array(column("cost_usd", ok_only=False), pa.float64()),
        "error": pa.array(errors, pa.string()),
    }
    if embeddings:
        vectors = [
            list(memoryview(v).cast("f")) if isinstance(v, bytes) else None for v in column("embedding")
        ]
        added = {"embedding": pa.array(vectors, pa.list_(pa.float32())), **added}
    else:
        added = {
            "content": pa.array(column("content"), pa.string()),
            "finish_reason": pa.array(column("finish_reason"), pa.string()),
            **added,
        }
    for name, values in added.items():
        batch = batch.append_column(name, values)
    return batch
