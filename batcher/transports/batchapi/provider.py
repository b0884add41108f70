"""The provider's Files and Batches endpoints, over one aiohttp session.

Every call either returns the provider's JSON object (or a file's bytes) or
raises the `RequestFailed` its failure stands for, exactly as a chat request
would (client.failure_of): the transport decides what to retry. Nothing here
retries, and nothing here knows about parts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from batcher.errors import RequestFailed, Retryable
from batcher.job.gateway import Gateway
from batcher.kinds.completion import error_for_status, parse_json
from batcher.transports.client import failure_of, read_capped

#: Batches listed a page at a time when a lost creation is looked for.
PAGE = 100


class BatchProvider:
    """`POST /files`, `POST /batches`, `GET /batches/{id}`, `GET /batches`, cancel, file content."""

    def __init__(self, base_url: str, api_key: str | None, *, timeout: float, gateway: Gateway | None = None):
        """`gateway`: the endpoint's headers and query, on every call (Azure's api-version)."""
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._gateway = gateway if gateway is not None else Gateway.of(api_key)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"BatchProvider(base_url={self.base_url!r})"  # never the key

    async def __aenter__(self) -> BatchProvider:
        self._session = aiohttp.ClientSession(
            headers=self._gateway.headers, timeout=self._timeout, cookie_jar=aiohttp.DummyCookieJar()
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def upload(self, name: str, data: bytes) -> dict[str, Any]:
        """A batch input file, uploaded with `purpose=batch`: the file object."""
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", data, filename=name, content_type="application/jsonl")
        return await self._call("POST", "/files", data=form)

    async def create(self, file_id: str, endpoint: str, metadata: Mapping[str, str]) -> dict[str, Any]:
        """A batch of the requests in `file_id`, to finish within 24 hours."""
        body = {
            "input_file_id": file_id,
            "endpoint": endpoint,
            "completion_window": "24h",
            "metadata": dict(metadata),
        }
        return await self._call("POST", "/batches", json=body)

    async def get(self, batch_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/batches/{batch_id}")

    async def cancel(self, batch_id: str) -> dict[str, Any]:
        return await self._call("POST", f"/batches/{batch_id}/cancel")

    async def find(self, metadata: Mapping[str, str], *, since: float) -> dict[str, Any] | None:
        """The newest batch whose metadata holds all of `metadata`, created at `since` or later."""

        def holds(batch: dict[str, Any]) -> bool:
            found = batch.get("metadata") or {}
            return all(found.get(k) == v for k, v in metadata.items())

        return await self._newest("/batches", {}, holds, since)

    async def find_file(self, name: str, size: int, *, since: float) -> dict[str, Any] | None:
        """The newest batch input file named `name` of `size` bytes, made at `since` or later."""

        def same(file: dict[str, Any]) -> bool:
            return file.get("filename") == name and file.get("bytes") == size

        return await self._newest("/files", {"purpose": "batch", "order": "desc"}, same, since)

    async def _newest(
        self, path: str, params: dict[str, Any], matches: Callable[[dict[str, Any]], bool], since: float
    ) -> dict[str, Any] | None:
        """The newest object of a list (a page at a time, newest first) that `matches`, made at
        `since` or later."""
        after = None
        while True:
            page = await self._call(
                "GET", path, params={"limit": PAGE, **params, **({"after": after} if after else {})}
            )
            items = page.get("data") or []
            for item in items:
                if matches(item):
                    return item
            older = [i for i in items if (i.get("created_at") or 0) < since]
            if older or not page.get("has_more") or not items:
                return None  # (listed newest first: the rest are older still)
            after = items[-1].get("id")

    async def content(self, file_id: str) -> bytes:
        """A file's bytes (an output or error file)."""
        # Output files are larger than any answer (a 50,000-request batch is tens of MB): read whole,
        # with time limits on each read rather than on the download.
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._timeout.total, sock_read=self._timeout.total
        )
        return await self._call("GET", f"/files/{file_id}/content", raw=True, timeout=timeout)

    async def _call(self, method: str, path: str, *, raw: bool = False, **kwargs: Any) -> Any:
        assert self._session is not None, "use BatchProvider as an async context manager"
        if self._gateway.query:
            kwargs["params"] = {**self._gateway.query, **kwargs.get("params", {})}
        try:
            async with self._session.request(
                method, self.base_url + path, allow_redirects=False, **kwargs
            ) as resp:
                data = await resp.read() if raw and resp.status == 200 else await read_capped(resp)
                if resp.status != 200:
                    raise error_for_status(resp.status, parse_json(data), data, resp.headers)
                if raw:
                    return data
                payload = parse_json(data)
                if not isinstance(payload, dict):
                    raise Retryable(
                        f"{path}: the answer is not a JSON object", type="invalid_response", status=200
                    )
                return payload
        except (RequestFailed, TimeoutError, aiohttp.ClientError, OSError) as e:
            raise failure_of(e, self._api_key, *self._gateway.secrets) from None
