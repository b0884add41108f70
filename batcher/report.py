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

from . import timeline
from .checkpoint import inspect, read_progress
from .stats import LatencyHistogram
from .words import usd

#: Points per chart at most: longer runs are summed into wider intervals.
MAX_POINTS = 240
EXAMPLES = 3
_BLUE, _RED, _AMBER, _GREY = "#2563eb", "#dc2626", "#d97706", "#6b7280"


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
        ("active time", _duration(f["active_seconds"]), "active_seconds"),
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
        _line_chart("Requests per minute, against the RPM limit", s, s.requests, s.rpm_limit, "requests"),
        _line_chart("Tokens per minute, against the TPM limit", s, s.tokens, s.tpm_limit, "tokens"),
        _line_chart("Rows done per minute", s, s.rows, None, "rows"),
        _line_chart("429s and retries per minute", s, s.rate_limited, None, "rate_limited", s.retries, _RED),
        _histogram(report.latency),
    ]
    title = f"batcher report: {report.directory}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="generator" content="batcher">
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px auto; max-width: 980px; color: #111827; }}
h1 {{ font-size: 20px; }} h2 {{ font-size: 16px; margin-top: 28px; }}
.meta {{ color: {_GREY}; }}
.cards {{ display: grid; grid-template-columns: repeat(4, 1fr); gap: 8px; }}
.card {{ border: 1px solid #e5e7eb; border-radius: 6px; padding: 8px 10px; }}
.label {{ color: {_GREY}; font-size: 12px; }} .value {{ font-size: 18px; font-weight: 600; }}
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
</body></html>
"""


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


_W, _H, _LEFT, _RIGHT, _TOP, _BOTTOM = 900, 240, 64, 16, 12, 36


def _nice(top: float) -> tuple[float, float]:
    """A rounded axis maximum and tick step for values up to `top`."""
    if top <= 0:
        return 1.0, 0.25
    step = 10 ** math.floor(math.log10(top / 4))
    for factor in (1, 2, 2.5, 5, 10):
        if top / (step * factor) <= 5:
            step *= factor
            break
    return step * math.ceil(top / step), step


def _line_chart(
    title: str,
    series: Series,
    values: list[float],
    limit: list[float | None] | None,
    name: str,
    second: list[float] | None = None,
    colour: str = _BLUE,
) -> str:
    xs = series.x
    caption = f"<figcaption>{html.escape(title)}</figcaption>"
    if not xs:
        return f'<figure data-chart="{name}">{caption}<p>no data yet</p></figure>'
    limits = [v for v in (limit or []) if v]
    top, step = _nice(max([*values, *(second or []), *limits, 0.0]) * 1.05)
    span = series.span or 1.0

    def px(x: float) -> float:
        return _LEFT + (_W - _LEFT - _RIGHT) * x / span

    def path(ys: list[float]) -> str:
        return " ".join(f"{px(x):.1f},{_y(y, top):.1f}" for x, y in zip(xs, ys, strict=True))

    def polyline(series_name: str, ys: list[float], stroke: str, extra: str = "") -> str:
        return (
            f'<polyline data-series="{series_name}" fill="none" stroke="{stroke}" stroke-width="2.5" '
            f'{extra}points="{path(ys)}"/>'
        )

    parts = [_svg(title), *_grid(top, step)]
    for i in range(5):
        x = span * i / 4
        parts.append(
            f'<text x="{px(x):.1f}" y="{_H - 14}" text-anchor="middle" font-size="11">{_duration(x)}</text>'
        )
    for at in series.sessions_at:
        parts.append(
            f'<line x1="{px(at):.1f}" x2="{px(at):.1f}" y1="{_TOP}" y2="{_H - _BOTTOM}" '
            f'stroke="{_GREY}" stroke-dasharray="3 3"/>'
        )
    legend = ""
    if limits:
        parts.append(polyline("limit", [v or 0.0 for v in limit], _AMBER, 'stroke-dasharray="8 4" '))
        legend = "dashed amber: the limit"
    if second is not None:
        parts.append(polyline("retries", second, _AMBER))
        legend = "red: 429s, amber: retries"
    parts.append(polyline(name, values, colour))
    if len(xs) <= 60:  # few points: mark each, so even one interval shows
        parts += [
            f'<circle cx="{px(x):.1f}" cy="{_y(y, top):.1f}" r="3" fill="{colour}"/>'
            for x, y in zip(xs, values, strict=True)
        ]
    parts.append("</svg>")
    if legend:
        caption = f'<figcaption>{html.escape(title)} <span class="meta">({legend})</span></figcaption>'
    return f'<figure data-chart="{name}">{caption}{"".join(parts)}</figure>'


def _y(value: float, top: float) -> float:
    return _TOP + (_H - _TOP - _BOTTOM) * (1 - value / top)


def _svg(title: str) -> str:
    return f'<svg viewBox="0 0 {_W} {_H}" width="100%" role="img" aria-label="{html.escape(title)}">'


def _grid(top: float, step: float) -> list[str]:
    """Horizontal grid lines with their values, from 0 to `top`."""
    lines, tick = [], 0.0
    while tick <= top + 1e-9:
        y = _y(tick, top)
        lines.append(f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        lines.append(
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{tick:,.0f}</text>'
        )
        tick += step
    return lines


def _histogram(bins: list[tuple[float, float, int]]) -> str:
    title = "Latency of answers (ms)"
    if not bins:
        return f'<figure data-chart="latency"><figcaption>{title}</figcaption><p>no answers yet</p></figure>'
    top, step = _nice(max(count for _, _, count in bins) * 1.05)
    width = (_W - _LEFT - _RIGHT) / len(bins)
    parts = [_svg(title), *_grid(top, step)]
    for i, (low, high, count) in enumerate(bins):
        height = (_H - _TOP - _BOTTOM) * count / top
        x = _LEFT + i * width
        parts.append(
            f'<rect data-bin="{low:g}-{high:g}" data-count="{count}" x="{x + 1:.1f}" '
            f'y="{_H - _BOTTOM - height:.1f}" width="{max(1.0, width - 2):.1f}" height="{height:.1f}" '
            f'fill="{_BLUE}"><title>{low:,.0f}-{high:,.0f} ms: {count}</title></rect>'
        )
        if i % max(1, len(bins) // 6) == 0:
            parts.append(f'<text x="{x:.1f}" y="{_H - 14}" font-size="11">{low:,.0f}</text>')
    parts.append("</svg>")
    return f'<figure data-chart="latency"><figcaption>{title}</figcaption>{"".join(parts)}</figure>'


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
