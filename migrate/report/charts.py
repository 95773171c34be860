"""Hand-written inline SVG charts for the HTML report: no dependency, no script, no fonts.

Every function returns one ``<svg class="chart" data-chart="…">`` element with a ``viewBox``
(the page's CSS scales it down to a narrow window) and a ``<title>`` for screen readers; its
``data-*`` attributes carry the figures it was drawn from. An empty series still draws the frame
and says so, so a chart never silently disappears from the report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape

BAR_COLOR = "#3b6ea8"
AFTER_COLOR = "#2e8b57"
LINE_COLOR = "#3b6ea8"
LIMIT_COLOR = "#c0392b"
REFUSED_COLOR = "#c0392b"
PROCORE_COLOR = "#e08e0b"
#: Colours of the load-progress lines, in order.
SERIES_COLORS = ("#3b6ea8", "#2e8b57", "#8e44ad", "#e08e0b", "#7f8c8d", "#16a085")
GRID_COLOR = "#dddddd"
TEXT_COLOR = "#333333"
FONT = "font-family:system-ui,-apple-system,'Segoe UI',sans-serif;font-size:12px"


def _open(
    chart_id: str,
    title: str,
    width: int,
    height: int,
    data: Mapping[str, str | int] | None = None,
) -> list[str]:
    attributes = "".join(
        f' data-{escape(key)}="{escape(str(value))}"' for key, value in (data or {}).items()
    )
    return [
        f'<svg class="chart" data-chart="{escape(chart_id)}"{attributes} role="img" '
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


def empty_chart(
    chart_id: str, title: str, message: str, *, width: int = 560, height: int = 250
) -> str:
    """A chart's frame saying why it has nothing to show."""
    return _empty(_open(chart_id, title, width, height), width, height, message)


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


@dataclass(frozen=True)
class Series:
    """One series of a :func:`time_chart`.

    ``kind``: ``"columns"`` (each point a column ``seconds`` wide starting at its moment;
    ``stack_on`` names an earlier columns series it sits on), ``"steps"`` (a running total: a
    step line) or ``"dots"``.
    """

    kind: str
    label: str
    color: str
    points: Sequence[tuple[datetime, float]]
    seconds: float = 0.0
    stack_on: str = ""
    unit: str = ""


def _time_ticks(
    parts: list[str], start: float, span: float, left: float, right: float, baseline: float
) -> None:
    for fraction in (0.0, 0.5, 1.0):
        x = left + (right - left) * fraction
        moment = datetime.fromtimestamp(start + span * fraction, tz=UTC)
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


def _legend_rows(items: Sequence[tuple[str, str, str]], width: float) -> list[list[int]]:
    """Legend entries (by index) per row, wrapped to ``width`` (text widths estimated)."""
    rows: list[list[int]] = [[]]
    x = 0.0
    for index, (_, _, label) in enumerate(items):
        wide = 15 + 6.4 * len(label) + 12
        if rows[-1] and x + wide > width:
            rows.append([])
            x = 0.0
        rows[-1].append(index)
        x += wide
    return rows


def _legend(parts: list[str], x0: float, y: float, items: Sequence[tuple[str, str, str]]) -> None:
    """One row of legend entries; widths estimated from the text (no font metrics here)."""
    x = x0
    for kind, color, label in items:
        if kind == "box":
            parts.append(
                f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="10" height="10" fill="{color}"/>'
            )
        elif kind == "dot":
            parts.append(f'<circle cx="{x + 5:.1f}" cy="{y - 4:.1f}" r="4" fill="{color}"/>')
        elif kind == "line":
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


def time_chart(
    chart_id: str,
    title: str,
    series: Sequence[Series],
    *,
    start: datetime,
    end: datetime,
    limit: float | None = None,
    limit_label: str = "",
    y_label: str = "",
    data: Mapping[str, str | int] | None = None,
    width: int = 560,
    height: int = 250,
    empty_message: str = "No data",
) -> str:
    """Values over time on one value axis: columns, step lines and dots, a dashed limit.

    The time axis runs from ``start`` to ``end`` (the whole run, so a quiet stretch shows as
    one). ``data`` becomes ``data-*`` attributes of the ``<svg>``, so tests read the figures
    the chart was drawn from.
    """
    legend = [
        ({"columns": "box", "steps": "line", "dots": "dot"}[s.kind], s.color, s.label)
        for s in series
    ]
    if limit:
        legend.append(("dash", LIMIT_COLOR, limit_label))
    legend_rows = _legend_rows(legend, width - 40)
    total_height = height + 16 * (len(legend_rows) - 1)
    data = {"start": start.isoformat(), "end": end.isoformat(), **(data or {})}
    parts = _open(chart_id, title, width, total_height, data)
    if not any(s.points for s in series):
        return _empty(parts, width, total_height, empty_message)
    left, right, top, baseline = 60.0, width - 20.0, 34.0, height - 44.0
    first, span = start.timestamp(), max((end - start).total_seconds(), 1.0)

    def x_of(moment: datetime) -> float:
        return left + (right - left) * min(max((moment.timestamp() - first) / span, 0.0), 1.0)

    stacked: dict[str, dict[datetime, float]] = {}
    highest = limit or 0.0
    for s in series:
        below = stacked.get(s.stack_on, {})
        tops = {m: v + below.get(m, 0.0) for m, v in s.points}
        stacked[s.label] = tops
        highest = max([highest, *tops.values()])
    top_value = axis_top(highest * 1.05)
    _value_axis(parts, top_value, left, right, top, baseline)

    def y_of(value: float) -> float:
        return baseline - (baseline - top) * value / top_value

    # Dots last, over the limit line: they are what Procore itself said.
    drawing_order = [s for s in series if s.kind != "dots"] + [None]
    drawing_order += [s for s in series if s.kind == "dots"]
    for item in drawing_order:
        if item is None:
            if limit:
                parts.append(
                    f'<line class="limit" x1="{left}" y1="{y_of(limit):.1f}" x2="{right}" '
                    f'y2="{y_of(limit):.1f}" stroke="{LIMIT_COLOR}" stroke-dasharray="6 4" '
                    f'stroke-width="2"><title>{escape(limit_label)}</title></line>'
                )
            continue
        s = item
        tops = stacked[s.label]
        unit = f" {s.unit}" if s.unit else ""
        if s.kind == "columns":
            for moment, value in s.points:
                if not value:
                    continue
                # A column that began before the chart (a window open when the run started)
                # is cut at its edge rather than drawn over the axis.
                x = x_of(moment)
                wide = x_of(moment + timedelta(seconds=s.seconds)) - x
                gap = 1.0 if wide > 4 else 0.0
                y = y_of(tops[moment])
                parts.append(
                    f'<rect class="bar" x="{x + gap / 2:.1f}" y="{y:.1f}" '
                    f'width="{max(wide - gap, 0.5):.1f}" '
                    f'height="{max(y_of(tops[moment] - value) - y, 0.5):.1f}" fill="{s.color}">'
                    f"<title>{moment.strftime('%H:%M:%S')}: {_number(value)}{escape(unit)}"
                    "</title></rect>"
                )
        elif s.kind == "steps":
            ordered = sorted(s.points)
            path = [f"M{x_of(ordered[0][0]):.1f},{y_of(ordered[0][1]):.1f}"]
            for moment, value in ordered[1:]:
                path.append(f"H{x_of(moment):.1f}V{y_of(value):.1f}")
            path.append(f"H{x_of(end):.1f}")
            last_moment, last_value = ordered[-1]
            parts.append(
                f'<path class="series" d="{"".join(path)}" fill="none" stroke="{s.color}" '
                f'stroke-width="2"><title>{escape(s.label)}: {_number(last_value)}{escape(unit)} '
                f"by {last_moment.strftime('%H:%M:%S')}</title></path>"
            )
        else:
            for moment, value in s.points:
                parts.append(
                    f'<circle class="point" cx="{x_of(moment):.1f}" cy="{y_of(value):.1f}" '
                    f'r="3.5" fill="{s.color}" stroke="#ffffff" stroke-width="1">'
                    f"<title>{moment.strftime('%H:%M:%S')}: "
                    f"{_number(value)}{escape(unit)}</title></circle>"
                )
    _time_ticks(parts, first, span, left, right, baseline)
    if y_label:
        middle = (top + baseline) / 2
        parts.append(
            f'<text x="14" y="{middle:.1f}" fill="{TEXT_COLOR}" '
            f'transform="rotate(-90 14 {middle:.1f})" text-anchor="middle">'
            f"{escape(y_label)}</text>"
        )
    for row, indexes in enumerate(legend_rows):
        _legend(parts, 20.0, height - 8.0 + 16 * row, [legend[i] for i in indexes])
    parts.append("</svg>")
    return "\n".join(parts)
