"""`batcher report DIR`: one self-contained HTML page of a run (inline SVG, no script, no network).

Built from the journal, the timeline and summary.json, read without locking, so it works on
finished, failed and running directories. See docs/report.md.
"""

from __future__ import annotations

import html
import json
import math
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batcher.outputs import timeline
from batcher.outputs.charts import GREY, RED, duration, histogram, line_chart
from batcher.outputs.stats import LatencyHistogram
from batcher.store.figures import inspect, read_progress
from batcher.words import usd

#: Points per chart at most: longer runs are summed into wider intervals.
MAX_POINTS = 240
EXAMPLES = 3


@dataclass
class Series:
    """Per-minute rates over active time: x in seconds since the run began."""

    x: list[float] = field(default_factory=list)
    rows: list[float] = field(default_factory=list)
    requests: list[float] = field(default_factory=list)
    tokens: list[float] = field(default_factory=list)
    rate_limited: list[float] = field(default_factory=list)
    retries: list[float] = field(default_factory=list)
    rpm_limit: list[float | None] = field(default_factory=list)
    tpm_limit: list[float | None] = field(default_factory=list)
    #: Active time at which each session after the first began, and in all.
    sessions_at: list[float] = field(default_factory=list)
    span: float = 0.0


@dataclass
class Report:
    """The figures of a run directory, as the page shows them."""

    directory: Path
    status: str
    figures: dict[str, Any]
    series: Series
    latency: list[tuple[float, float, int]]
    errors: list[dict[str, Any]]
    endpoints: dict[str, Any] | None
    #: A Batch API run's deadline and its bill (summary.json's `deadline`), or None.
    deadline: dict[str, Any] | None = None


def build(directory: Path) -> Report:
    """Read a run directory (without locking or changing it) into a Report."""
    job, progress = read_progress(directory)
    info = inspect(directory, (job, progress))
    try:
        summary = json.loads((directory / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        summary = {}
    lines = list(timeline.read(timeline.timeline_path(directory)))
    status = "running" if info["running"] else summary.get("status", "not finished")
    series, totals, latency = _series(lines)
    seconds = totals["seconds"]
    figures = {
        "rows_total": info["rows_total"],
        "rows_ok": info["rows_ok"],
        "rows_failed": info["rows_failed"],
        "rows_remaining": info["rows_remaining"],
        "prompt_tokens": info["prompt_tokens"],
        "completion_tokens": info["completion_tokens"],
        "total_tokens": info["total_tokens"],
        "cost_usd": info["cost_usd"],
        "answers_unpriced": info["answers_unpriced"],
        "sessions": len({line.get("session") for line in lines}),
        "active_seconds": round(totals["seconds"], 1),
        "requests": int(totals["requests"]),
        "retries": int(totals["retries"]),
        "rate_limited_429": int(totals["rate_limited"]),
        "rows_per_minute": round(totals["rows_done"] / seconds * 60, 1) if seconds else None,
        "model": job.get("model"),
        "input": job.get("input"),
    }
    return Report(
        directory=directory,
        status=status,
        figures=figures,
        series=series,
        latency=latency,
        errors=_errors(progress.failed),
        endpoints=(summary.get("session") or {}).get("endpoints"),
        deadline=summary.get("deadline"),
    )


def _series(lines: list[dict[str, Any]]) -> tuple[Series, dict[str, float], list[tuple[float, float, int]]]:
    totals: dict[str, float] = defaultdict(float)
    latency: Counter[int] = Counter()
    for line in lines:
        for name in ("seconds", "requests", "retries", "rate_limited", "rows_done"):
            totals[name] += line.get(name) or 0
        for slot, count in (line.get("latency_ms") or {}).items():
            latency[int(slot)] += count
    group = max(1, math.ceil(len(lines) / MAX_POINTS))
    series = Series()
    elapsed = 0.0
    session = lines[0].get("session") if lines else None
    for start in range(0, len(lines), group):
        chunk = lines[start : start + group]
        began = elapsed
        for line in chunk:
            if line.get("session") != session:
                session = line.get("session")
                series.sessions_at.append(elapsed)
            elapsed += line.get("seconds") or 0
        seconds = sum(line.get("seconds") or 0 for line in chunk) or 1.0
        per_minute = 60.0 / seconds

        def rate(*names: str, chunk: list = chunk, per_minute: float = per_minute) -> float:
            return sum((line.get(name) or 0) for line in chunk for name in names) * per_minute

        series.x.append((began + elapsed) / 2)  # each point at the middle of its interval
        series.rows.append(rate("rows_done"))
        series.requests.append(rate("requests"))
        series.tokens.append(rate("prompt_tokens", "completion_tokens"))
        series.rate_limited.append(rate("rate_limited"))
        series.retries.append(rate("retries"))
        series.rpm_limit.append(chunk[-1].get("rpm_limit"))
        series.tpm_limit.append(chunk[-1].get("tpm_limit"))
    series.span = elapsed
    return series, totals, _rebin(latency)


def _rebin(counts: Counter[int], bins: int = 30) -> list[tuple[float, float, int]]:
    """The latency histogram's fine bins summed into at most `bins` log-spaced ones: (from, to, count)."""
    if not counts:
        return []
    low, high = min(counts), max(counts) + 1
    width = max(1, math.ceil((high - low) / bins))
    merged: Counter[int] = Counter()
    for slot, count in counts.items():
        merged[(slot - low) // width] += count
    edge = LatencyHistogram.bin_ms
    return [
        (edge(low + i * width - 0.5), edge(low + (i + 1) * width - 0.5), merged.get(i, 0))
        for i in range(max(merged) + 1)
    ]


def _errors(failed: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows standing failed, by error type: count and a few examples."""
    groups: dict[str, dict[str, Any]] = {}
    for row_id, record in failed.items():
        error = record.get("error") or {}
        kind = str(error.get("type") or "unknown")
        group = groups.setdefault(kind, {"type": kind, "count": 0, "examples": []})
        group["count"] += 1
        if len(group["examples"]) < EXAMPLES:
            group["examples"].append(
                {
                    "id": row_id,
                    "status": error.get("status"),
                    "message": str(error.get("message") or "")[:300],
                }
            )
    return sorted(groups.values(), key=lambda g: -g["count"])


# -- the page -----------------------------------------------------------------------------------


def write(directory: Path, output: Path | None = None) -> Path:
    """Write the report of `directory` (to `directory/report.html` unless told); its path."""
    report = build(directory)
    path = output or directory / "report.html"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render(report), encoding="utf-8")
    tmp.replace(path)
    return path


def render(report: Report) -> str:
    f, s = report.figures, report.series
    cost = usd(f["cost_usd"]) + (f" + {f['answers_unpriced']} unpriced" if f["answers_unpriced"] else "")
    cards = [
        ("status", report.status, "status"),
        ("rows done", f"{f['rows_ok']:,} of {f['rows_total']:,}", "rows_ok"),
        ("rows failed", f"{f['rows_failed']:,}", "rows_failed"),
        ("rows remaining", f"{f['rows_remaining']:,}", "rows_remaining"),
        ("tokens", f"{f['total_tokens']:,}", "total_tokens"),
        ("cost", cost, "cost_usd"),
        ("requests", f"{f['requests']:,}", "requests"),
        ("retries", f"{f['retries']:,}", "retries"),
        ("429s", f"{f['rate_limited_429']:,}", "rate_limited_429"),
        ("sessions", f"{f['sessions']}", "sessions"),
        ("active time", duration(f["active_seconds"]), "active_seconds"),
        ("rows / min", f"{f['rows_per_minute'] or 0:,.1f}", "rows_per_minute"),
    ]
    values = {
        "status": report.status,
        "rows_ok": f["rows_ok"],
        "rows_failed": f["rows_failed"],
        "rows_remaining": f["rows_remaining"],
        "total_tokens": f["total_tokens"],
        "cost_usd": f["cost_usd"],
        "requests": f["requests"],
        "retries": f["retries"],
        "rate_limited_429": f["rate_limited_429"],
        "sessions": f["sessions"],
        "active_seconds": f["active_seconds"],
        "rows_per_minute": f["rows_per_minute"],
    }
    card_html = "".join(
        f'<div class="card"><div class="label">{html.escape(label)}</div>'
        f'<div class="value" data-figure="{key}" data-value="{html.escape(str(values[key]))}">'
        f"{html.escape(text)}</div></div>"
        for label, text, key in cards
    )
    charts = [
        line_chart("Requests per minute, against the RPM limit", s, s.requests, s.rpm_limit, "requests"),
        line_chart("Tokens per minute, against the TPM limit", s, s.tokens, s.tpm_limit, "tokens"),
        line_chart("Rows done per minute", s, s.rows, None, "rows"),
        line_chart("429s and retries per minute", s, s.rate_limited, None, "rate_limited", s.retries, RED),
        histogram(report.latency),
    ]
    title = f"batcher report: {report.directory}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="generator" content="batcher">
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px auto; max-width: 980px; color: #111827; }}
h1 {{ font-size: 20px; }} h2 {{ font-size: 16px; margin-top: 28px; }}
.meta {{ color: {GREY}; }}
.cards {{ display: grid; grid-template-columns: repeat(4, 1fr); gap: 8px; }}
.card {{ border: 1px solid #e5e7eb; border-radius: 6px; padding: 8px 10px; }}
.label {{ color: {GREY}; font-size: 12px; }} .value {{ font-size: 18px; font-weight: 600; }}
figure {{ margin: 18px 0; }} figcaption {{ font-weight: 600; margin-bottom: 4px; }}
table {{ border-collapse: collapse; width: 100%; }}
td, th {{ border-bottom: 1px solid #e5e7eb; padding: 4px 6px; text-align: left; vertical-align: top; }}
code {{ font-size: 12px; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="meta">model {html.escape(str(f["model"]))} &middot; input {html.escape(str(f["input"]))}
&middot; written {time.strftime("%Y-%m-%d %H:%M:%S %Z")}</p>
<div class="cards">{card_html}</div>
{"".join(charts)}
<h2>Errors by type</h2>
{_errors_table(report.errors)}
{_endpoints_table(report.endpoints)}
{_deadline_table(report.deadline)}
</body></html>
"""


def _errors_table(groups: list[dict[str, Any]]) -> str:
    if not groups:
        return '<p data-errors="0">No row stands failed.</p>'
    rows = []
    for group in groups:
        examples = "<br>".join(
            f"<code>{html.escape(str(e['id']))}</code> {html.escape(str(e['status'] or ''))} "
            f"{html.escape(e['message'])}"
            for e in group["examples"]
        )
        rows.append(
            f'<tr data-error-type="{html.escape(group["type"])}"><td>{html.escape(group["type"])}</td>'
            f'<td data-count="{group["count"]}">{group["count"]:,}</td><td>{examples}</td></tr>'
        )
    return (
        f'<table data-errors="{sum(g["count"] for g in groups)}"><tr><th>type</th><th>rows</th>'
        f"<th>examples</th></tr>{''.join(rows)}</table>"
    )


def _endpoints_table(endpoints: dict[str, Any] | None) -> str:
    if not endpoints:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{e['requests']:,}</td><td>{e['answered']:,}</td>"
        f"<td>{e['failures']:,}</td><td>{e['rate_limited_429']:,}</td><td>{e['tokens']:,}</td>"
        f"<td>{e['times_rested']}</td><td>{html.escape(str(e['retired'] or ''))}</td></tr>"
        for name, e in endpoints.items()
    )
    return (
        "<h2>Endpoints (last session)</h2><table><tr><th>endpoint</th><th>requests</th><th>answered</th>"
        f"<th>failures</th><th>429s</th><th>tokens</th><th>rests</th><th>retired</th></tr>{rows}</table>"
    )


def _deadline_table(told: dict[str, Any] | None) -> str:
    """A deadline run's deadline, met or not, and its bill by way (outputs/bill.py)."""
    if not told:
        return ""
    rows = [
        ("deadline", f"{told['deadline']} ({told['at']})"),
        ("met", "yes" if told["met"] else "no"),
        ("went online", told["went_online_at"] or "no: the batches answered every row"),
        ("rows by batch, at the Batch price", f"{told['rows_batch']:,} ({usd(told['cost_batch_usd'])})"),
        ("rows online, at the online price", f"{told['rows_online']:,} ({usd(told['cost_online_usd'])})"),
        ("all online would have cost", usd(told["cost_all_online_usd"])),
        ("saved", usd(told["saving_usd"])),
        ("rows paid twice", f"{told['rows_paid_twice']:,}"),
    ]
    cells = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f'<h2>Deadline (last session)</h2><table data-deadline-met="{told["met"]}">{cells}</table>'
