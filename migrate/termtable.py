"""Tables and sizes as the terminal shows them: one renderer for every table the CLI prints.

A cell holds one line of text with control and bidi characters shown as escapes
(:func:`migrate.text.terminal_line`); nothing (None) prints as an empty cell. A cell longer
than its column is cut with an ellipsis ("…"), never silently. Columns that carry sentences
(a quarantine hint, a plan's detail) wrap instead: on a terminal they share its remaining
width, or go on lines of their own under the row when too little is left; elsewhere (a
pipe, a file) a last column of them is never cut and the others wrap at :data:`WRAP_WIDTH`.
Columns are aligned by display width (a CJK character takes two cells), numbers to the right.

Sizes are written one way everywhere, report included: :func:`size_text` (decimal units).
"""

from __future__ import annotations

import shutil
import sys
import textwrap
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from migrate.text import terminal_line

#: Widest a plain (not wrapped) column gets before its cells are cut with an ellipsis.
CELL_WIDTH = 40
#: Where a wrapped column that is not the last one wraps when no terminal width is known.
WRAP_WIDTH = 60
#: Narrowest a wrapped column gets in the grid; on a narrower terminal it goes under its row.
MIN_WRAP_WIDTH = 24
ELLIPSIS = "…"
GAP = "  "


@dataclass(frozen=True)
class Column:
    """One column: its header, whether numbers align right, whether its text wraps."""

    name: str
    right: bool = False
    wrap: bool = False
    #: Narrowest the column gets, so that tables printed one under another line up.
    min_width: int = 0


def cell_text(value: Any) -> str:
    """What a cell shows: nothing for None, else the value on one line, controls escaped."""
    return "" if value is None else terminal_line(value)


def display_width(text: str) -> int:
    """Terminal cells ``text`` takes: wide (CJK) characters two, combining marks none."""
    width = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def cut(text: str, width: int) -> str:
    """``text`` in at most ``width`` cells; a longer one ends with "…"."""
    if display_width(text) <= width:
        return text
    kept, used = [], 0
    for char in text:
        size = display_width(char)
        if used + size > width - 1:
            break
        kept.append(char)
        used += size
    return "".join(kept) + ELLIPSIS


def pad(text: str, width: int, *, right: bool = False) -> str:
    room = " " * max(0, width - display_width(text))
    return room + text if right else text + room


def terminal_width() -> int | None:
    """Columns of the terminal stdout writes to, or None when stdout is not a terminal."""
    if not sys.stdout.isatty():
        return None
    return shutil.get_terminal_size().columns


def render(
    columns: Sequence[Column],
    rows: Iterable[Sequence[Any]],
    *,
    width: int | None = None,
    indent: str = "",
) -> list[str]:
    """The header line, then each row (a wrapped row takes more than one line).

    ``width`` is the terminal's (see :func:`terminal_width`); None means no terminal: the
    last wrapped column is then never cut.
    """
    cells = [[cell_text(value) for value in row] for row in rows]
    widths = [
        max([column.min_width, display_width(column.name)] + [display_width(r[i]) for r in cells])
        for i, column in enumerate(columns)
    ]
    plain = [i for i, column in enumerate(columns) if not column.wrap]
    wrapped = [i for i, column in enumerate(columns) if column.wrap]
    for i in plain:
        widths[i] = min(widths[i], max(CELL_WIDTH, display_width(columns[i].name)))
    below: list[int] = []
    if wrapped:
        shares = _wrap_widths(columns, widths, wrapped, width, indent)
        if any(shares[i] < min(widths[i], MIN_WRAP_WIDTH) for i in wrapped):
            below = wrapped  # too narrow a terminal: each sentence on lines of its own
        for i, share in shares.items():
            widths[i] = min(widths[i], share)
    grid = [i for i in range(len(columns)) if i not in below]
    lines = [
        _line([columns[i].name for i in grid], [columns[i] for i in grid], widths, grid, indent)
    ]
    for row in cells:
        parts = [
            _wrap(row[i], widths[i]) if columns[i].wrap else [cut(row[i], widths[i])] for i in grid
        ]
        for n in range(max(len(part) for part in parts)):
            texts = [part[n] if n < len(part) else "" for part in parts]
            lines.append(_line(texts, [columns[i] for i in grid], widths, grid, indent))
        for i in below:
            if row[i]:
                lines.extend(_sentence(columns[i].name, row[i], width or 0, indent + "    "))
    return lines


def render_records(
    records: Sequence[Mapping[str, Any]],
    *,
    wrap: Sequence[str] = ("detail", "hint", "reason", "title"),
    width: int | None = None,
    indent: str = "",
) -> list[str]:
    """:func:`render` for dicts with the same keys: numbers right, ``wrap`` columns wrapped."""
    if not records:
        return []
    names = list(records[0])
    columns = [
        Column(
            name,
            right=_numeric(record.get(name) for record in records),
            wrap=name in wrap,
        )
        for name in names
    ]
    return render(columns, ([r.get(n) for n in names] for r in records), width=width, indent=indent)


def size_text(size: int | float) -> str:
    """Bytes as people read them, in decimal units: 812 B, 14.1 kB, 6.3 MB, 0.7 GB.

    The one way migrate writes a size (terminal, report, logs); GB from 0.5 GB up.
    """
    if size >= 500_000_000:
        return f"{size / 1e9:.1f} GB"
    for unit, scale in (("MB", 1_000_000), ("kB", 1000)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{int(size)} B"


def _numeric(values: Iterable[Any]) -> bool:
    seen = [v for v in values if v is not None and v != ""]
    return bool(seen) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in seen)


def _wrap_widths(
    columns: Sequence[Column],
    widths: list[int],
    wrapped: list[int],
    width: int | None,
    indent: str,
) -> dict[int, int]:
    """How wide each wrapped column may be: the room left on the terminal, shared so that a
    column needing less than its share keeps its own width and leaves the rest to others."""
    if width is None:
        last = wrapped[-1] == len(columns) - 1
        return {i: sys.maxsize if last and i == wrapped[-1] else WRAP_WIDTH for i in wrapped}
    fixed = sum(widths[i] for i in range(len(columns)) if i not in wrapped)
    room = width - len(indent) - fixed - len(GAP) * (len(columns) - 1)
    shares: dict[int, int] = {}
    waiting = sorted(wrapped, key=lambda i: widths[i])
    while waiting:
        share = max(0, room // len(waiting))
        i = waiting.pop(0)
        shares[i] = min(widths[i], share) if waiting else max(0, room)
        room -= shares[i]
    return shares


def _wrap(text: str, width: int) -> list[str]:
    if display_width(text) <= width:
        return [text]
    lines = textwrap.wrap(text, width=width, break_long_words=True, break_on_hyphens=False)
    return [cut(line, width) for line in lines] or [""]


def _sentence(name: str, text: str, width: int, indent: str) -> list[str]:
    """``    hint: text`` wrapped to the terminal, continuation lines under the text."""
    lead = f"{indent}{name}: "
    room = max(MIN_WRAP_WIDTH, width - len(lead))
    return [
        (lead if n == 0 else " " * len(lead)) + line for n, line in enumerate(_wrap(text, room))
    ]


def _line(
    texts: Sequence[str],
    columns: Sequence[Column],
    widths: Sequence[int],
    indexes: Sequence[int],
    indent: str,
) -> str:
    cells = [
        pad(text, widths[index], right=column.right)
        for text, column, index in zip(texts, columns, indexes, strict=True)
    ]
    return (indent + GAP.join(cells)).rstrip()
