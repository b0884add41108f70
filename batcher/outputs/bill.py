"""The bill of a Batch API run with a deadline: the rows and their cost by way, and what the Batch
API saved against sending every row online.

Read from the journal at the end of each session (every session's rows), so a resumed run's bill
is the whole run's. A row's way is its record's: `batch_id` set for a batch's answer, none for an
online one (or one reused from the cache, which cost nothing). What it would have cost online is
its usage at the online price (the price table's; None where the model has none).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from batcher.limits.costs import Prices


def bill(records: Iterable[tuple[bool, dict[str, Any]]], prices: Prices, model: str | None) -> dict[str, Any]:
    """Rows and USD by way, and the saving against an all-online run (USD)."""
    rows = {"batch": 0, "online": 0}
    cost = {"batch": 0.0, "online": 0.0}
    all_online = 0.0
    for ok, record in records:
        if not ok:
            continue
        way = "batch" if record.get("batch_id") else "online"
        rows[way] += 1
        paid = record.get("cost_usd") or 0.0
        cost[way] += paid
        if way == "batch" and record.get("usage"):
            at_online = prices.cost(record.get("model") or model, record["usage"])
            all_online += paid * 2 if at_online is None else at_online
        else:
            all_online += paid
    spent = cost["batch"] + cost["online"]
    return {
        "rows_batch": rows["batch"],
        "rows_online": rows["online"],
        "cost_batch_usd": round(cost["batch"], 6),
        "cost_online_usd": round(cost["online"], 6),
        "cost_all_online_usd": round(all_online, 6),
        "saving_usd": round(all_online - spent, 6),
    }


def deadline_summary(shown: dict[str, Any], finished_at: float, rows_left: int) -> dict[str, Any]:
    """The deadline as summary.json tells it: when, whether it was met, when the run went online."""
    return {
        "deadline": shown["deadline"],
        "at": _iso(shown["at"]),
        "met": rows_left == 0 and finished_at <= shown["at"],
        "finished_at": _iso(finished_at),
        "went_online_at": _iso(shown["online_since"]) if shown.get("online_since") else None,
        "go_online_at": _iso(shown["go_online_at"]) if shown.get("go_online_at") else None,
        "margin_s": shown.get("margin_seconds"),
    }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
