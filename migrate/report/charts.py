"""Hand-written inline SVG charts for the HTML report: no dependency, no script, no fonts.

Every function returns one ``<svg class="chart" data-chart="…">`` element sized in CSS pixels,
with a ``<title>`` for screen readers. An empty series still draws the frame and says so, so a
chart never silently disappears from the report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from html import escape

BAR_COLOR = "#3b6ea8"
AFTER_COLOR = "#2e8b57"
LINE_COLOR = "#3b6ea8"
LIMIT_COLOR = "#c0392b"
AVERAGE_COLOR = "#e08e0b"
GRID_COLOR = "#dddddd"
TEXT_COLOR = "#333333"
FONT = "font-family:system-ui,-apple-system,'Segoe UI',sans-serif;font-size:12px"


def _open(chart_id: str, title: str, width: int, height: int) -> list[str]:
    return [
        f'<svg class="chart" data-chart="{escape(chart_id)}" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'style="{FONT}" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text class="chart-title" x="{width / 2:.1f}" y="16" text-anchor="middle" '
        f'font-weight="bold" fill="{TEXT_COLOR}">{escape(title)}</text>',
    ]


def _empty(parts: list[str], width: int, height: int, message: str) -> str:
    parts.append(
        f'<rect x="0.5" y="24.5" width="{width - 1}" height="{height - 25}" fill="none" '
        f'stroke="{GRID_COLOR}"/>'
    )
    parts.append(
        f'<text class="no-data" x="{width / 2:.1f}" y="{height / 2 + 10:.1f}" '
        f'text-anchor="middle" fill="#888">{escape(message)}</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts)


def _truncate(label: str, limit: int, *, keep_end: bool = False) -> str:
    if len(label) <= limit:
        return label
    return "…" + label[-(limit - 1) :] if keep_end else label[: limit - 1] + "…"


def nice_ceiling(value: float) -> float:
    """A round number at least ``value`` (1, 1.2, 1.5, 2, 2.5 … 8 × 10^n) for an axis."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7.5, 8, 10):
        candidate = step * 10**exponent
        if candidate >= value:
            return float(candidate)
    return float(10 ** (exponent + 1))


def axis_top(value: float, ticks: int = 4) -> float:
    """An axis end whose ``ticks`` equal steps are round numbers (whole for counts)."""
    return nice_ceiling(max(value, ticks) / ticks) * ticks


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:,.1f}"


def bar_chart(
    chart_id: str,
    title: str,
    data: Sequence[tuple[str, float]],
    *,
    width: int = 560,
    color: str = BAR_COLOR,
    label_chars: int = 34,
    keep_label_end: bool = False,
    empty_message: str = "No data",
) -> str:
    """Horizontal bars, one per (label, value), in the order given, value printed at the end.

    Long labels are cut to ``label_chars`` (keeping the end with ``keep_label_end``, which
    suits paths whose leaf matters most); the full label is in the tooltip.
    """
    bar_height, gap, top = 18, 6, 30
    longest = max((len(_truncate(label, label_chars)) for label, _ in data), default=8)
    label_width = int(min(width * 0.55, 6.8 * longest + 14))
    height = top + max(1, len(data)) * (bar_height + gap) + 10
    parts = _open(chart_id, title, width, height)
    if not data:
        return _empty(parts, width, max(height, 90), empty_message)
    biggest = max(value for _, value in data) or 1
    plot_width = width - label_width - 70
    for index, (label, value) in enumerate(data):
        y = top + index * (bar_height + gap)
        length = max(1.0, plot_width * value / biggest) if value else 0.0
        parts.append(
            f'<text x="{label_width - 6}" y="{y + bar_height - 5}" text-anchor="end" '
            f'fill="{TEXT_COLOR}"><title>{escape(label)}</title>'
            f"{escape(_truncate(label, label_chars, keep_end=keep_label_end))}</text>"
        )
        parts.append(
            f'<rect class="bar" x="{label_width}" y="{y}" width="{length:.1f}" '
            f'height="{bar_height}" fill="{color}"><title>{escape(label)}: '
            f"{_number(value)}</title></rect>"
        )
        parts.append(
            f'<text x="{label_width + length + 5:.1f}" y="{y + bar_height - 5}" '
            f'fill="{TEXT_COLOR}">{_number(value)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def _time_axis(
    parts: list[str],
    start: datetime,
    end: datetime,
    left: float,
    right: float,
    baseline: float,
) -> None:
    span = max((end - start).total_seconds(), 1.0)
    for fraction in (0.0, 0.5, 1.0):
        x = left + (right - left) * fraction
        moment = datetime.fromtimestamp(start.timestamp() + span * fraction, tz=start.tzinfo)
        text = moment.strftime("%H:%M:%S" if span < 6 * 3600 else "%m-%d %H:%M")
        anchor = ("start", "middle", "end")[int(fraction * 2)]
        parts.append(
            f'<text x="{x:.1f}" y="{baseline + 16:.1f}" text-anchor="{anchor}" '
            f'fill="{TEXT_COLOR}">{text}</text>'
        )


def _value_axis(
    parts: list[str], top_value: float, left: float, right: float, top: float, baseline: float
) -> None:
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = baseline - (baseline - top) * fraction
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="{GRID_COLOR}"/>'
        )
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{TEXT_COLOR}">'
            f"{_number(top_value * fraction)}</text>"
        )


def line_chart(
    chart_id: str,
    title: str,
    points: Sequence[tuple[datetime, float]],
    *,
    width: int = 560,
    height: int = 240,
    y_label: str = "",
    empty_message: str = "No data",
) -> str:
    """A step line over time (e.g. records loaded so far), with dots at each point."""
    parts = _open(chart_id, title, width, height)
    if not points:
        return _empty(parts, width, height, empty_message)
    left, right, top, baseline = 60.0, width - 20.0, 34.0, height - 30.0
    ordered = sorted(points, key=lambda p: p[0])
    start, end = ordered[0][0], ordered[-1][0]
    span = max((end - start).total_seconds(), 1.0)
    top_value = axis_top(max(value for _, value in ordered))
    _value_axis(parts, top_value, left, right, top, baseline)
    _time_axis(parts, start, end, left, right, baseline)

    def x_of(moment: datetime) -> float:
        return left + (right - left) * (moment - start).total_seconds() / span

    def y_of(value: float) -> float:
        return baseline - (baseline - top) * value / top_value

    path = [f"M{x_of(start):.1f},{baseline:.1f}"]
    previous = 0.0
    for moment, value in ordered:
        x = x_of(moment)
        path.append(f"L{x:.1f},{y_of(previous):.1f}")
        path.append(f"L{x:.1f},{y_of(value):.1f}")
        previous = value
    parts.append(
        f'<path class="series" d="{" ".join(path)}" fill="none" stroke="{LINE_COLOR}" '
        'stroke-width="2"/>'
    )
    for moment, value in ordered:
        parts.append(
            f'<circle class="point" cx="{x_of(moment):.1f}" cy="{y_of(value):.1f}" r="3" '
            f'fill="{LINE_COLOR}"><title>{moment.strftime("%Y-%m-%d %H:%M:%S")}: '
            f"{_number(value)}</title></circle>"
        )
    if y_label:
        parts.append(
            f'<text x="14" y="{(top + baseline) / 2:.1f}" fill="{TEXT_COLOR}" '
            f'transform="rotate(-90 14 {(top + baseline) / 2:.1f})" text-anchor="middle">'
            f"{escape(y_label)}</text>"
        )
    parts.append("</svg>")
    return "\n".join(parts)


def rate_chart(
    chart_id: str,
    title: str,
    buckets: Sequence[tuple[datetime, float]],
    *,
    limit: float | None,
    limit_label: str,
    averages: Sequence[tuple[datetime, datetime, float]] = (),
    width: int = 560,
    height: int = 240,
    empty_message: str = "No data",
) -> str:
    """Columns per minute, a dashed limit line and optional average segments per run."""
    parts = _open(chart_id, title, width, height)
    if not buckets and not averages:
        return _empty(parts, width, height, empty_message)
    left, right, top, baseline = 60.0, width - 20.0, 34.0, height - 44.0
    moments = [m for m, _ in buckets] + [m for a in averages for m in a[:2]]
    start, end = min(moments), max(moments)
    minutes = max(1, math.ceil((end - start).total_seconds() / 60) + 1)
    highest = max([v for _, v in buckets] + [a[2] for a in averages] + [limit or 0])
    top_value = axis_top(highest * 1.05)
    _value_axis(parts, top_value, left, right, top, baseline)
    column = (right - left) / minutes

    def y_of(value: float) -> float:
        return baseline - (baseline - top) * value / top_value

    def x_of(moment: datetime) -> float:
        return left + column * (moment - start).total_seconds() / 60

    for moment, value in buckets:
        x = x_of(moment)
        parts.append(
            f'<rect class="bar" x="{x + 1:.1f}" y="{y_of(value):.1f}" '
            f'width="{max(column - 2, 1):.1f}" height="{baseline - y_of(value):.1f}" '
            f'fill="{BAR_COLOR}"><title>{moment.strftime("%H:%M")}: {_number(value)} '
            "write calls</title></rect>"
        )
    for first, last, value in averages:
        parts.append(
            f'<line class="average" x1="{x_of(first):.1f}" y1="{y_of(value):.1f}" '
            f'x2="{max(x_of(last), x_of(first) + column):.1f}" y2="{y_of(value):.1f}" '
            f'stroke="{AVERAGE_COLOR}" stroke-width="3"><title>run average: {_number(value)} '
            "requests per minute</title></line>"
        )
    if limit:
        parts.append(
            f'<line class="limit" x1="{left}" y1="{y_of(limit):.1f}" x2="{right}" '
            f'y2="{y_of(limit):.1f}" stroke="{LIMIT_COLOR}" stroke-dasharray="6 4" '
            f'stroke-width="2"><title>{escape(limit_label)}</title></line>'
        )
    _time_axis(parts, start, end, left, right, baseline)
    _legend(
        parts,
        20.0,
        height - 8.0,
        [
            ("box", BAR_COLOR, "write calls/min"),
            ("bar", AVERAGE_COLOR, "requests/min (run average)"),
            *([("dash", LIMIT_COLOR, limit_label)] if limit else []),
        ],
    )
    parts.append("</svg>")
    return "\n".join(parts)


def _legend(parts: list[str], x: float, y: float, items: Sequence[tuple[str, str, str]]) -> None:
    """One row of legend entries; widths estimated from the text (no font metrics here)."""
    for kind, color, label in items:
        if kind == "box":
            parts.append(
                f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="10" height="10" fill="{color}"/>'
            )
        elif kind == "bar":
            parts.append(
                f'<rect x="{x:.1f}" y="{y - 6:.1f}" width="12" height="3" fill="{color}"/>'
            )
        else:
            parts.append(
                f'<line x1="{x:.1f}" y1="{y - 4:.1f}" x2="{x + 12:.1f}" '
                f'y2="{y - 4:.1f}" stroke="{color}" stroke-dasharray="4 2" '
                'stroke-width="2"/>'
            )
        parts.append(
            f'<text x="{x + 15:.1f}" y="{y:.1f}" fill="{TEXT_COLOR}">{escape(label)}</text>'
        )
        x += 15 + 6.4 * len(label) + 12
