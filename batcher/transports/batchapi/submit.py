"""A part put at the provider: its file uploaded, its batch created, each step safe to repeat after
a kill, and nothing left behind at the provider (docs/batch-api.md, "No strays").

- Upload: the intent (`upload_asked_at`) is on disk before the file goes, and the file's name
  carries the part's hash. A part found still uploading after a kill is looked for among the
  provider's files (the same name and size, made since it was asked for) and that file is
  adopted: a kill during an upload leaves no unused file behind.
- Create: the intent (a new nonce) is on disk before the batch is asked for. A creation in doubt
  (a kill, a timeout, a 5xx) is looked for by its nonce among the provider's batches, and asked for
  again only once `LIST_LAG_SECONDS` have passed since with no batch listed. A provider's list can
  lag behind a create; looking again for that long is what keeps a part from becoming two batches.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from batcher.errors import RequestFailed
from batcher.transports.batchapi.parts import Part, PartState
from batcher.transports.batchapi.provider import BatchProvider

#: How far back, before a creation or an upload was asked for, it is looked for (clock skew).
FIND_SLACK_SECONDS = 300
#: How long a creation in doubt is looked for in the provider's list before it is asked for again.
LIST_LAG_SECONDS = 10.0

Record = Callable[..., Awaitable[None]]


class Submitter:
    """Uploads a part's file and creates its batch, recording each step through `record`."""

    def __init__(self, provider: BatchProvider, endpoint: str, record: Record, read: Callable[[Part], Any]):
        """`endpoint`: the Batches API's name of the parts' endpoint; `record(part, state, **changes)`
        makes a step durable; `read(part)` gives a part's request lines (checked against its hash)."""
        self.provider, self.endpoint, self._record, self._read = provider, endpoint, record, read

    @staticmethod
    def file_name(part: Part) -> str:
        """The part's file name at the provider: its own name and the start of its hash."""
        return f"{part.file.removesuffix('.jsonl')}-{part.sha256[:16]}.jsonl"

    async def upload(self, part: Part) -> None:
        """The part's file at the provider: one a killed upload left there, or uploaded now."""
        name = self.file_name(part)
        found = None
        if part.upload_asked_at:  # a kill may have come after the file was stored
            found = await self.provider.find_file(
                name, part.size, since=part.upload_asked_at - FIND_SLACK_SECONDS
            )
        if found is None:
            await self._record(part, PartState.PLANNED, upload_asked_at=time.time())
            data = b"".join(await self._read(part))
            found = await self.provider.upload(name, data)
        await self._record(part, PartState.UPLOADED, file_id=found["id"], provider=self.provider.base_url)

    async def create(self, part: Part, *, crowded: bool) -> None:
        """Ask for the part's batch, the intent (a new nonce) on disk first. `crowded`: other
        parts' batches are live (an enqueued-token refusal then means "wait")."""
        await self._record(
            part,
            PartState.CREATING,
            nonce=uuid.uuid4().hex,
            creations=part.creations + 1,
            asked_at=time.time(),
            crowded=crowded,
        )
        try:
            batch = await self.provider.create(part.file_id, self.endpoint, self.metadata(part))
        except RequestFailed as failure:
            if not failure.retryable:
                raise
            if not await self.find(part):  # the answer is lost, not the batch: it may exist
                raise
            return
        await self._record(part, PartState.CREATED, batch_id=batch["id"], batch=batch)

    async def find(self, part: Part) -> bool:
        """Adopt the batch a creation in doubt made, if the provider lists it; whether it did."""
        found = await self.provider.find(self.metadata(part), since=part.asked_at - FIND_SLACK_SECONDS)
        if found is not None:
            await self._record(part, PartState.CREATED, batch_id=found["id"], batch=found)
        return found is not None

    @staticmethod
    def may_ask_again(part: Part) -> bool:
        """A creation in doubt not listed: the list has had `LIST_LAG_SECONDS` to show it."""
        return time.time() >= part.asked_at + LIST_LAG_SECONDS

    @staticmethod
    def metadata(part: Part) -> dict[str, str]:
        return {"batcher_part": str(part.number), "batcher_nonce": part.nonce or ""}
