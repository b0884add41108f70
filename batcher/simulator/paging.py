"""OpenAI's cursor pages: `limit` items after the one named by `after`, newest first.

A page is {"object": "list", "data", "first_id", "last_id", "has_more"}; the SDK asks for the next
page with `after` = the last id it was given, for as long as `has_more` is true.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web

from batcher.simulator.contract import Invalid


def cursor_page(objects: Sequence[dict[str, Any]], query: Any, default_limit: int = 20) -> dict[str, Any]:
    """The page of `objects` (newest first) that a request's `limit` and `after` ask for."""
    limit = _limit(query.get("limit"), default_limit)
    after = query.get("after")
    start = 0
    if after:
        ids = [o["id"] for o in objects]
        if after not in ids:
            raise Invalid(f"Invalid 'after': no object with id '{after}'.", "after")
        start = ids.index(after) + 1
    data = list(objects[start : start + limit])
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": start + limit < len(objects),
    }


def _limit(text: str | None, default: int) -> int:
    if text is None:
        return default
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if not 1 <= limit <= 10_000:
        raise Invalid(f"Invalid 'limit': expected an integer between 1 and 10000, got {text!r}.", "limit")
    return limit


def page_response(
    objects: Sequence[dict[str, Any]], request: web.Request, default_limit: int = 20
) -> web.Response:
    """A cursor page as the answer to a list request; 400 for a bad `limit` or `after`."""
    try:
        return web.json_response(cursor_page(objects, request.query, default_limit))
    except Invalid as e:
        return e.response()
