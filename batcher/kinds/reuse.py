"""Answers reused instead of bought again: identical requests within a session, and a cache across runs.

Identical bodies (a blake2b of canonical JSON) are sent once; the cache keeps accepted answers at
temperature 0 in SQLite. See docs/reuse.md.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import sqlite3
from collections import OrderedDict
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from batcher.errors import ConfigError
from batcher.jsoncodec import canonical
from batcher.kinds.completion import Completion

log = logging.getLogger("batcher")

#: Answers kept in memory for rows that repeat a request already answered.
RECENT = 10_000
#: Bytes of vectors kept for inputs that repeat one answered lately (embeddings).
RECENT_BYTES = 16 * 1024 * 1024
#: What `try_find` says when an identical request is on the wire.
ON_THE_WIRE = object()
COMMIT_EVERY = 100
CACHE_FILE = "answers.sqlite3"


def request_key(body: dict[str, Any]) -> bytes:
    return hashlib.blake2b(canonical(body), digest_size=16).digest()


class Reuse:
    """Finds an answer a row can reuse, and records answers for the rows after it."""

    def __init__(self, *, within_run: bool, cache: AnswerCache | None, keep_body: bool = False):
        self.within_run = within_run
        #: Whether reused answers need the whole response (OpenAI Batch output); memory otherwise.
        self.keep_body = keep_body
        self.cache = cache
        self._recent: OrderedDict[bytes, tuple[Completion, str]] = OrderedDict()
        self._in_flight: dict[bytes, asyncio.Future | None] = {}

    def key(self, body: dict[str, Any]) -> bytes | None:
        """The body's key, or None when nothing could reuse its answer."""
        if self.within_run or (self.cache is not None and _cacheable(body)):
            return request_key(body)
        return None

    def caches(self, body: dict[str, Any]) -> bool:
        """The cache keeps (and may already hold) this body's answer."""
        return self.cache is not None and _cacheable(body)

    def cached(self, key: bytes, body: dict[str, Any]) -> Completion | None:
        """The cache's answer alone (the Batch API plans rows before any is on the wire)."""
        return self.cache.get(key) if self.caches(body) else None

    def remember(self, key: bytes, completion: Completion) -> None:
        """Keep an answer the cache wants (`caches` said so of its body) for later runs."""
        if self.cache is not None:
            self.cache.put(key, completion)

    def try_find(self, key: bytes, body: dict[str, Any]) -> tuple[Completion, str] | None | object:
        """`find` without waiting: `ON_THE_WIRE` when an identical request is (then await `find`)."""
        if self.within_run:
            if (recent := self._recent.get(key)) is not None:
                self._recent.move_to_end(key)
                return recent
            if key in self._in_flight:
                return ON_THE_WIRE
        if self.cache is not None and _cacheable(body):
            cached = self.cache.get(key)
            if cached is not None:
                return cached, "cache"
        if self.within_run:
            self._in_flight[key] = None  # on the wire; a future only when another row waits for it
        return None

    async def find(self, key: bytes, body: dict[str, Any]) -> tuple[Completion, str] | None:
        """An answer to reuse and where it comes from (a row id, or "cache"); None: send it yourself.

        Waits for an identical request on the wire; a None from it means it failed.
        """
        while (found := self.try_find(key, body)) is ON_THE_WIRE:
            pending = self._in_flight[key]
            if pending is None:  # the first to wait for it makes the future
                pending = self._in_flight[key] = asyncio.get_running_loop().create_future()
            if (found := await asyncio.shield(pending)) is not None:
                return found
            # It failed: the first row to get here sends it again, the others wait for that.
        return found

    def settle(self, key: bytes, body: dict[str, Any], completion: Completion | None, row_id: str) -> None:
        """The request of `key` is over: its accepted answer, or None when it failed or was stopped."""
        pending = self._in_flight.pop(key, None)
        found = (completion, row_id) if completion is not None else None
        if pending is not None and not pending.done():
            pending.set_result(found)
        if completion is None:
            return
        if self.cache is not None and _cacheable(body):
            self.cache.put(key, completion)
        if self.within_run:
            if not self.keep_body:  # (its record is written: what it holds is its own)
                completion.body, completion.headers = {}, None
            self._recent[key] = found
            if len(self._recent) > RECENT:
                self._recent.popitem(last=False)


class InputReuse:
    """Identical inputs of packed requests (embeddings) sent once a run, and the cache across runs.

    A row whose request (its input, model, dimensions) is the same as one on the wire rides on
    it as a copy (`Member.copies`), recorded with its answer or its error; one answered lately
    (`RECENT_BYTES` of vectors kept) or held by the cache is answered at once.
    """

    def __init__(self, *, within_run: bool, cache: AnswerCache | None):
        self.within_run, self.cache = within_run, cache
        self._on_the_wire: dict[bytes, Any] = {}
        self._recent: OrderedDict[bytes, tuple[Completion, str]] = OrderedDict()
        self._recent_bytes = 0

    def screen(self, body: dict[str, Any], member: Any) -> tuple[Completion, str] | None | object:
        """An answer for `member` and where it comes from; ON_THE_WIRE (it became a copy of the row
        that is); or None: send it (its key is kept on it for `settle`)."""
        key = member.key = request_key(body)
        if self.within_run:
            if (recent := self._recent.get(key)) is not None:
                return recent
            if (first := self._on_the_wire.get(key)) is not None:
                first.copies.append(member)
                return ON_THE_WIRE
        if self.cache is not None and (cached := self.cache.get(key)) is not None:
            return cached, "cache"
        if self.within_run:
            self._on_the_wire[key] = member
        return None

    def settle(self, member: Any, answer: Completion | None) -> None:
        """`member`'s request is over: its answer, or None when it failed (identical rows then send)."""
        key = member.key
        if key is None:
            return
        self._on_the_wire.pop(key, None)
        if answer is None:
            return
        if self.cache is not None:
            self.cache.put(key, answer)
        if self.within_run:
            self._recent[key] = (answer, member.row_id)
            self._recent_bytes += len(answer.vector or b"")
            while self._recent_bytes > RECENT_BYTES:
                _, (old, _) = self._recent.popitem(last=False)
                self._recent_bytes -= len(old.vector or b"")


def _cacheable(body: dict[str, Any]) -> bool:
    if "input" in body and "messages" not in body:
        return True  # an embedding: the same input always gets the same vector
    temperature = body.get("temperature")
    return temperature == 0 and not isinstance(temperature, bool)


class AnswerCache:
    """Accepted answers by request key, in one SQLite file shared by every run that names it."""

    def __init__(self, directory: Path):
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(directory / CACHE_FILE, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS answers (key BLOB PRIMARY KEY, completion TEXT)")
        except (OSError, sqlite3.Error) as e:
            raise ConfigError(f"{directory} cannot be used as an answer cache: {e}") from None
        self._unsaved: list[tuple[bytes, str]] = []

    def get(self, key: bytes) -> Completion | None:
        row = self._db.execute("SELECT completion FROM answers WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            fields = json.loads(row[0])
            if fields.get("vector") is not None:
                fields["vector"] = base64.b64decode(fields["vector"])
            return Completion(**fields)
        except (ValueError, TypeError):
            return None  # an entry of another version: ask again

    def put(self, key: bytes, completion: Completion) -> None:
        fields = asdict(replace(completion, headers=None))
        if completion.vector is not None:
            fields["vector"] = base64.b64encode(completion.vector).decode("ascii")
        self._unsaved.append((key, json.dumps(fields, ensure_ascii=False, default=str)))
        if len(self._unsaved) >= COMMIT_EVERY:
            self.save()

    def save(self) -> None:
        if not self._unsaved:
            return
        try:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?)", self._unsaved)
            self._db.execute("COMMIT")
        except sqlite3.Error as e:  # a cache that cannot be written costs only what it would have kept
            log.warning("answer cache: %d answers not kept: %s", len(self._unsaved), e)
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        self._unsaved.clear()

    def close(self) -> None:
        self.save()
        self._db.close()
