"""The Files endpoints: upload (multipart), list, retrieve, download and delete, kept in memory.

An upload is read as a stream and refused past 512 MB, OpenAI's limit for any file; the Batch
API's own limits (200 MB, 50,000 requests) are checked when a batch is created from the file, as
OpenAI checks them. Output and error files of batches are stored here too (purpose
`batch_output`). Nothing survives a restart of the simulator.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web

from batcher.simulator.contract import error_response
from batcher.simulator.paging import page_response

#: Purposes a client may upload for (batch_output is the server's own).
PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
MAX_UPLOAD_BYTES = 512 * 1024 * 1024

#: The key check every endpoint makes: None to go on, or the 401 to answer.
Authorize = Callable[[web.Request], web.Response | None]


@dataclass(slots=True)
class StoredFile:
    """One file: its bytes and what the `file` object says of them."""

    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }


class UploadRefused(Exception):
    """An upload OpenAI would refuse with 400 (or 413): what is wrong and the field it names."""

    def __init__(self, message: str, param: str | None, status: int = 400):
        super().__init__(message)
        self.param = param
        self.status = status

    def response(self) -> web.Response:
        return error_response(self.status, "invalid_request_error", str(self), self.param)


class Files:
    """The simulator's files, and the handlers of `/v1/files`."""

    def __init__(self, authorize: Authorize, *, delay_ms: float = 0.0):
        self._authorize = authorize
        #: How late an upload (already stored) or a download is answered: a client may die waiting.
        self._delay = delay_ms / 1000
        self._files: dict[str, StoredFile] = {}

    def add(self, filename: str, purpose: str, content: bytes) -> StoredFile:
        stored = StoredFile(f"file-{uuid.uuid4().hex[:24]}", filename, purpose, content, int(time.time()))
        self._files[stored.id] = stored
        return stored

    def get(self, file_id: str) -> StoredFile | None:
        return self._files.get(file_id)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/files", self.upload),
            web.get("/v1/files", self.list),
            web.get("/v1/files/{file_id}", self.retrieve),
            web.get("/v1/files/{file_id}/content", self.content),
            web.delete("/v1/files/{file_id}", self.delete),
        ]

    # -- handlers ---------------------------------------------------------------------------

    async def upload(self, request: web.Request) -> web.Response:
        refused = self._authorize(request)
        if refused is not None:
            return refused
        try:
            filename, purpose, content = await _read_upload(request)
        except UploadRefused as e:
            return e.response()
        stored = self.add(filename, purpose, content)
        await asyncio.sleep(self._delay)
        return web.json_response(stored.to_json())

    async def list(self, request: web.Request) -> web.Response:
        refused = self._authorize(request)
        if refused is not None:
            return refused
        purpose = request.query.get("purpose")
        newest_first = [f.to_json() for f in reversed(self._files.values()) if purpose in (None, f.purpose)]
        return page_response(newest_first, request, default_limit=10_000)

    async def retrieve(self, request: web.Request) -> web.Response:
        stored, refused = self._find(request)
        return refused or web.json_response(stored.to_json())

    async def content(self, request: web.Request) -> web.Response:
        stored, refused = self._find(request)
        if refused is not None:
            return refused
        await asyncio.sleep(self._delay)
        return web.Response(body=stored.content, content_type="application/octet-stream")

    async def delete(self, request: web.Request) -> web.Response:
        stored, refused = self._find(request)
        if refused is not None:
            return refused
        del self._files[stored.id]
        return web.json_response({"id": stored.id, "object": "file", "deleted": True})

    def _find(self, request: web.Request) -> tuple[Any, web.Response | None]:
        """The file the path names, or the 401 or 404 to answer instead."""
        refused = self._authorize(request)
        if refused is not None:
            return None, refused
        file_id = request.match_info["file_id"]
        stored = self._files.get(file_id)
        if stored is None:
            return None, error_response(404, "invalid_request_error", f"No such File object: {file_id}", "id")
        return stored, None


async def _read_upload(request: web.Request) -> tuple[str, str, bytes]:
    """The filename, purpose and bytes of a multipart upload, checked as OpenAI checks them."""
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError, KeyError) as e:
        raise UploadRefused(f"Expected a multipart/form-data body: {e}", None) from e
    fields: dict[str, str] = {}
    upload: tuple[str, bytes] | None = None
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue  # a nested multipart: not something OpenAI reads either
        if part.name == "file":
            upload = (part.filename or "file", await _read_part(part))
        elif part.name:
            fields[part.name] = await part.text()
    if upload is None:
        raise UploadRefused("Missing required parameter: 'file'.", "file")
    purpose = fields.get("purpose")
    if purpose not in PURPOSES:
        raise UploadRefused(
            f"Invalid value for 'purpose': {purpose!r}. Supported values are: {', '.join(PURPOSES)}.",
            "purpose",
        )
    if purpose == "batch" and not upload[0].endswith(".jsonl"):
        raise UploadRefused("Invalid file format for Batch API. Must be .jsonl", "file")
    return upload[0], purpose, upload[1]


async def _read_part(part: BodyPartReader) -> bytes:
    content = bytearray()
    while chunk := await part.read_chunk():
        content += chunk
        if len(content) > MAX_UPLOAD_BYTES:
            raise UploadRefused("File is too large: the limit is 512 MB.", "file", status=413)
    return bytes(content)
