"""`batcher cancel DIR`: cancel a Batch API run's live batches at the provider.

A cancelled batch keeps (and bills) what it answered before it stopped; the
next `batcher run` of the same command collects that, and sends the rest again
in new batches. A creation still in doubt is looked up by its nonce first, so
a batch the run does not know the id of is cancelled too.
"""

from __future__ import annotations

from pathlib import Path

from batcher.errors import ConfigError, RequestFailed
from batcher.job.gateway import Gateway
from batcher.store.checkpoint import STATE_DIR
from batcher.store.locks import is_locked
from batcher.transports.batchapi.parts import Part, PartsLog, PartState
from batcher.transports.batchapi.provider import BatchProvider
from batcher.transports.batchapi.submit import FIND_SLACK_SECONDS


async def cancel_batches(
    directory: Path, api_key: str | None, timeout: float = 60, gateway: Gateway | None = None
) -> list[tuple[Part, str]]:
    """Ask the provider to cancel every batch of `directory` that may still run; (part, what became of it).
    `gateway`: the headers and query the run sent its calls with."""
    if is_locked(directory):
        raise ConfigError(
            f"{directory} is in use by a batcher run, which would send the cancelled rows again: "
            "stop it first (Ctrl-C leaves its batches running)"
        )
    parts = [
        p
        for p in PartsLog(directory / STATE_DIR).load().values()
        if p.state in (PartState.CREATING, PartState.CREATED)
    ]
    cancelled = []
    for part in sorted(parts, key=lambda p: p.number):
        async with BatchProvider(part.provider, api_key, timeout=timeout, gateway=gateway) as provider:
            batch_id = part.batch_id
            if batch_id is None:  # a creation in doubt: the provider may have made it
                metadata = {"batcher_part": str(part.number), "batcher_nonce": part.nonce or ""}
                found = await provider.find(metadata, since=part.asked_at - FIND_SLACK_SECONDS)
                if found is None:
                    continue
                batch_id = found["id"]
            try:
                batch = await provider.cancel(batch_id)
            except RequestFailed as failure:  # e.g. it ended meanwhile: the next run collects it
                cancelled.append((part, f"{batch_id} not cancelled: {failure.message}"))
                continue
            cancelled.append((part, f"{batch_id} {batch.get('status', '')}".strip()))
    return cancelled
