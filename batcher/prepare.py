"""A job made ready to run, before its run directory is touched: the checks that need no input read
(keys, extras, a model, a budget's prices; job/preflight.py), the input opened (`-` spooled first), the
request kind chosen, and the job record a run directory keeps of it (`identity_of`), with the scan
skipped where that record says the input is unchanged since it was scanned.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import urllib.parse
from typing import Any

from batcher.errors import ConfigError
from batcher.inputs.scan import Scan, scan
from batcher.inputs.sources import KEEP_ALL, Source
from batcher.job import Job, preflight
from batcher.kinds import RequestKind, kind_of
from batcher.kinds.embeddings import EmbeddingsKind
from batcher.kinds.prompts import TEMPLATE, RequestBuilder
from batcher.kinds.records import RESERVED_COLUMNS
from batcher.limits.costs import PricedRows
from batcher.store import stdin
from batcher.store.checkpoint import Checkpoint
from batcher.store.jobrecord import recorded_job, same_job

log = logging.getLogger("batcher")


def prepare(job: Job) -> tuple[Source, RequestKind]:
    """The job's input and request kind, after the checks that need no input read."""
    clash = [c for c in job.keep_columns if c in RESERVED_COLUMNS]
    if clash:
        raise ConfigError(f"keep_columns cannot keep {', '.join(clash)}: results already use that name")
    answer_columns = job.answer_format.columns if job.answer_format else []
    clash = [c for c in answer_columns if c in RESERVED_COLUMNS or c in job.keep_columns]
    if clash:
        raise ConfigError(
            f"the answer schema's {', '.join(clash)} would clash with a result column of that name: rename it"
        )
    _refuse_keys_in_clear(job)
    preflight.check(job)  # a model named, extras installed, keys set, a budget's models priced
    source = _open_input(job)
    kind = kind_of(job, source.kind)
    if source.kind != TEMPLATE:  # rows naming their own models: priced, under a max_cost
        kind.builder = PricedRows.under(job, kind.builder)
    return source, kind


def _refuse_keys_in_clear(job: Job) -> None:
    """A key (or a header carrying a credential) never goes over plain http to another machine, unless
    allowed."""
    for endpoint in job.endpoint_configs:
        if (
            (os.environ.get(endpoint.api_key_env) or preflight.carries_credential(endpoint))
            and not endpoint.uses_simulator
            and not job.allow_insecure_http
            and _in_clear(endpoint.base_url)
        ):
            raise ConfigError(
                f"{endpoint.base_url} is plain http to another machine, so the key (in "
                f"${endpoint.api_key_env} or a header) would cross the network unencrypted. Use https, or "
                "allow it with --allow-insecure-http (allow_insecure_http = true) on a network you trust."
            )


def _open_input(job: Job) -> Source:
    """The job's input (`-`: standard input, copied to a file first: store/stdin.py)."""
    keep_all = KEEP_ALL in job.keep_columns
    if keep_all and len(job.keep_columns) > 1:
        raise ConfigError("keep_columns '*' keeps every column: give it alone, not with other names")
    path, name = (stdin.spool(job.output), stdin.NAME) if stdin.is_stdin(job.input) else (job.input, None)
    shape = {"request_field": "input", "endpoint_path": EmbeddingsKind.path} if job.embeddings else {}
    source = Source(path, id_column=job.id_column, has_template=job.prompt is not None, name=name, **shape)
    if keep_all and source.kind != TEMPLATE:
        raise ConfigError(
            f"{source.name}: keep_columns '*' keeps the columns of rows filled into a prompt; these rows are "
            "requests themselves (their fields are sent), so name the columns to keep"
        )
    return source


def identity_of(job: Job, source: Source, fingerprint: str, scan: Scan | None = None) -> dict[str, Any]:
    """The job record of this job on this input (store/checkpoint.py), with the scan's figures once known."""
    identity = {**job.identity(), "input_kind": source.kind, "input_fingerprint": fingerprint}
    identity["id_column"] = source.id_column  # (None: rows named by position, the file having no ids)
    if scan is not None:
        identity["rows"] = scan.total
        identity["kept_types"] = (
            None if source.is_parquet else {k: sorted(v) for k, v in scan.kept_types.items()}
        )
    return identity


def scan_unless_recorded(job: Job, source: Source, builder: RequestBuilder, checkpoint: Checkpoint) -> Scan:
    """Scan the input, unless this directory recorded a scan of the very same job and bytes."""
    fingerprint = source.fingerprint()
    recorded = recorded_job(checkpoint.directory)
    identity = identity_of(job, source, fingerprint)
    # (rows checked for priced models under a max_cost are scanned again: the budget may be new)
    unchanged = same_job(identity, recorded) and isinstance(recorded.get("rows"), int)
    if unchanged and not isinstance(builder, PricedRows):
        if source.is_parquet:
            kept = source.parquet_types(source.kept_names(job.keep_columns) or [])
        else:
            kept = {name: set(types) for name, types in (recorded.get("kept_types") or {}).items()}
        if set(kept) == set(job.keep_columns) or job.keep_columns == (KEEP_ALL,):
            log.info("%s: unchanged since its scan; not scanned again", source.name)
            return _columns_kept(job, source, Scan(source.kind, recorded["rows"], fingerprint, kept))
    return _columns_kept(job, source, scan(source, builder, fingerprint))


def _columns_kept(job: Job, source: Source, scan: Scan) -> Scan:
    """With keep_columns '*': the scan's kept columns but the id column and those a result already
    names (left out rather than renamed: a renamed column would be found under no name one knows)."""
    if job.keep_columns != (KEEP_ALL,):
        return scan
    taken = {*RESERVED_COLUMNS, *(job.answer_format.columns if job.answer_format else ()), source.id_column}
    kept = {name: types for name, types in scan.kept_types.items() if name not in taken}
    return dataclasses.replace(scan, kept_types=kept)


def with_columns_kept(job: Job, source: Source, kind: RequestKind, scan: Scan) -> tuple[Job, RequestKind]:
    """The job and request kind keeping, for keep_columns '*', the columns the scan found."""
    if job.keep_columns != (KEEP_ALL,):
        return job, kind
    job = dataclasses.replace(job, keep_columns=tuple(scan.kept_types))
    return job, kind_of(job, source.kind)


def _in_clear(base_url: str) -> bool:
    """True when the URL is plain http to a host other than this machine."""
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme != "http":
        return False
    host = parts.hostname or ""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True
