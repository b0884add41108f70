"""Planning: a session's rows made into parts, each a batch's worth of one model's requests.

Each row's request line goes into a part's input file and what its result record
needs (id, row number, kept columns; the whole row for a parse function) into the
rows file beside it. With --dedupe, a row whose request is the very same as an
earlier one's in its part is not sent: it rides in the rows file as a copy and is
given that answer. With --cache, a row whose answer the cache holds is answered at
once and not planned. Every part also carries its rows' worst case at online
prices, which a budget holds while the part's batch may run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from batcher.errors import RequestFailed
from batcher.inputs.sources import InputRow
from batcher.job import Job
from batcher.jsoncodec import dumpb
from batcher.kinds import RequestKind
from batcher.kinds.completion import Completion
from batcher.kinds.reuse import Reuse
from batcher.transports.batchapi.parts import MAX_BYTES, Part, PartsLog, batch_line, split

Row = dict[str, Any]


@dataclass(slots=True)
class Planned:
    """One request on its way into a part: its line, its row's record fields, model and reuse key."""

    line: bytes
    row: Row
    model: Any = None
    key: bytes | None = None
    #: Tokens and USD its request could cost at most, at online prices (what a budget holds).
    worst: tuple[int, float] = (0, 0.0)


class Planner:
    """Writes parts for rows (`plan`) and for rows sent again (`again`)."""

    def __init__(
        self,
        *,
        job: Job,
        kind: RequestKind,
        log: PartsLog,
        reuse: Reuse | None,
        wants_row: bool,
        on_cached: Callable[[Row, Completion], None],
    ):
        self.job, self.kind, self.log, self.reuse = job, kind, log, reuse
        self.wants_row = wants_row
        #: Records a row the cache answered; raises RequestFailed when the row cannot use it.
        self.on_cached = on_cached

    def requests(self, rows: Iterable[InputRow]) -> Iterator[Planned]:
        """Each row's request, but for the rows the cache answers (recorded through `on_cached`)."""
        build, keep, path, reuse = self.kind.builder.build, self.job.keep_columns, self.kind.path, self.reuse
        for row in rows:
            body = build(row.row)
            info: Row = {
                "id": row.row_id,
                "row_number": row.number,
                "kept": {k: row.row.get(k) for k in keep},
            }
            if self.wants_row:
                info["row"] = row.row
            key = reuse.key(body) if reuse is not None else None
            if key is not None and reuse.caches(body):
                if (cached := reuse.cached(key, body)) is not None:
                    try:
                        self.on_cached(info, cached)
                        continue
                    except RequestFailed:
                        pass  # the cached answer does not parse for this row: it is sent
                info["key"] = key.hex()
            yield Planned(batch_line(row.row_id, body, path), info, body.get("model"), key, self._worst(body))

    def groups(self, requests: Iterable[Planned]) -> Iterator[list[Planned]]:
        """Requests in parts' worth: one model a part (a batch runs one), under the size and file limits."""
        return split(
            requests,
            max_requests=self.job.batch_size,
            max_bytes=MAX_BYTES,
            size=lambda request: len(request.line),
            key=lambda request: request.model,
        )

    def write(self, number: int, round_: int, group: list[Planned]) -> Part:
        """The part of `group`, its identical requests sent once when --dedupe says so."""
        firsts: dict[bytes, Row] = {}
        lines, rows = [], []
        tokens, cost = 0, 0.0
        for request in group:
            if self.job.dedupe and request.key is not None:
                if (first := firsts.get(request.key)) is not None:
                    first.setdefault("copies", []).append(request.row)
                    continue
                firsts[request.key] = request.row
            lines.append(request.line)
            rows.append(request.row)
            tokens, cost = tokens + request.worst[0], cost + request.worst[1]
        infos = [dumpb(row) + b"\n" for row in rows]
        return self.log.write_part(number, round_, lines, infos, (tokens, cost))

    def again(self, part: Part, rows: list[Row]) -> list[Planned]:
        """The requests of `part` for `rows` (each with its copies), to go in a new part."""
        by_id = {}
        for line in self.log.read_lines(part):
            request = json.loads(line)
            by_id[request["custom_id"]] = line, request["body"]
        return [Planned(by_id[row["id"]][0], row, worst=self._worst(by_id[row["id"]][1])) for row in rows]

    def _worst(self, body: dict[str, Any]) -> tuple[int, float]:
        """Tokens and USD a request could cost at most, at online prices: what a budget holds while
        its batch may run (worked out for every part, so a budget given later holds too)."""
        estimator = self.kind.estimator
        prompt, most = estimator.parts(body, estimator.prompt_chars(body))
        usage = {"prompt_tokens": prompt, "completion_tokens": most}
        return prompt + most, self.job.price_table.cost(body.get("model"), usage) or 0.0
