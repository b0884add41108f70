"""The report's charts as inline SVG: lines over a run's active time, against its limits, and a
histogram. Drawn as text, with no script and no library, so the page opens anywhere offline.
"""

from __future__ import annotations

import html
import math
from typing import Any, Protocol

BLUE, RED, AMBER, GREY = "#2563eb", "#dc2626", "#d97706", "#6b7280"


class TimeAxis(Protocol):
    """What a line chart's x axis is made of (report.Series)."""

    #: Seconds of active time at each point, the sessions' starts after the first, and in all.
    x: list[float]
    sessions_at: list[float]
    span: float


def duration(seconds: float) -> str:
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


def line_chart(
    title: str,
    series: TimeAxis,
    values: list[float],
    limit: list[float | None] | None,
    name: str,
    second: list[float] | None = None,
    colour: str = BLUE,
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

    parts = [_svg(title), *_grid(top, step), *_time_axis(series, px)]
    legend = ""
    if limits:
        parts.append(polyline("limit", [v or 0.0 for v in limit], AMBER, 'stroke-dasharray="8 4" '))
        legend = "dashed amber: the limit"
    if second is not None:
        parts.append(polyline("retries", second, AMBER))
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


def _time_axis(series: TimeAxis, px: Any) -> list[str]:
    """The time labels under a chart, and a dashed line where each session began."""
    span = series.span or 1.0
    labels = [
        f'<text x="{px(span * i / 4):.1f}" y="{_H - 14}" text-anchor="middle" font-size="11">'
        f"{duration(span * i / 4)}</text>"
        for i in range(5)
    ]
    starts = [
        f'<line x1="{px(at):.1f}" x2="{px(at):.1f}" y1="{_TOP}" y2="{_H - _BOTTOM}" '
        f'stroke="{GREY}" stroke-dasharray="3 3"/>'
        for at in series.sessions_at
    ]
    return labels + starts


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


def histogram(bins: list[tuple[float, float, int]]) -> str:
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
            f'fill="{BLUE}"><title>{low:,.0f}-{high:,.0f} ms: {count}</title></rect>'
        )
        if i % max(1, len(bins) // 6) == 0:
            parts.append(f'<text x="{x:.1f}" y="{_H - 14}" font-size="11">{low:,.0f}</text>')
    parts.append("</svg>")
    return f'<figure data-chart="latency"><figcaption>{title}</figcaption>{"".join(parts)}</figure>'
