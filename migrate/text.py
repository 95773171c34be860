"""Text from BIM 360 Field made safe for where it goes: a terminal, a Procore name, a CSV cell.

Source text is whatever people typed into Field over years, or whatever someone planted there.
Three destinations interpret some characters instead of showing them:

- a **terminal** runs escape sequences (ESC, OSC titles and hyperlinks, BEL, CR overwriting a
  line, C1 controls such as CSI) and reorders text around bidi overrides, so a record can
  rewrite what the engineer sees: :func:`terminal_safe` shows each such character as a visible
  escape (``\\x1b``, ``\\u202e``) instead;
- a **Procore name** (a location node, an upload's file name) keeps control characters forever
  and shows them to every Procore user: :func:`procore_name` drops them (line breaks and tabs
  become one space). The staging DB keeps the original; only what is sent is cleaned;
- a **spreadsheet** runs a CSV cell that starts with ``= + - @``, TAB or CR as a formula
  (OWASP "CSV injection"): :func:`csv_cell` prefixes such a cell with one ``'``, which
  spreadsheets show and do not evaluate. The original is the cell without that first ``'``:
  :func:`csv_original` undoes it.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Bidi embeddings, overrides and isolates, and the marks that steer them (U+061C, U+200E/F):
# they reorder what a reader sees without being visible themselves ("Trojan Source").
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
# C0 controls, DEL and C1 controls, plus the line and paragraph separators some terminals and
# editors break lines on.
_CONTROLS = "\x00-\x1f\x7f-\x9f\u2028\u2029"
_UNSAFE = re.compile(f"[{_CONTROLS}{_BIDI}]")
_LINE_BREAKS = re.compile(r"[\t\n\r\x0b\x0c\x85\u2028\u2029]+")
#: First characters that make a spreadsheet read a cell as a formula (OWASP).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CSV_ESCAPE = "'"


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _visible_but_layout(match: re.Match[str]) -> str:
    return match.group() if match.group() in "\n\t" else _visible(match)


def terminal_safe(text: object) -> str:
    """``text`` with every control or bidi character shown as ``\\x..`` or ``\\u....``.

    Newlines and tabs are kept (multi-line output stays multi-line); use
    :func:`terminal_line` for one table cell or one line.
    """
    value = str(text)
    return value if value.isprintable() else _UNSAFE.sub(_visible_but_layout, value)


def terminal_line(text: object) -> str:
    """Like :func:`terminal_safe`, but newlines and tabs are shown as escapes too."""
    value = str(text)
    return value if value.isprintable() else _UNSAFE.sub(_visible, value)


def terminal_json(text: str) -> str:
    """JSON text with C1 and bidi characters written as ``\\uXXXX`` (same value once parsed).

    ``json.dumps`` already escapes C0 controls; with ``ensure_ascii=False`` it leaves C1
    controls and bidi overrides raw, which a terminal would act on.
    """
    # Outside strings JSON has only ASCII; a raw newline there is layout (indent), kept.
    return _UNSAFE.sub(
        lambda m: m.group() if m.group() == "\n" else f"\\u{ord(m.group()):04x}", text
    )


def procore_name(text: str) -> str:
    """A name as Procore should store it: no control or bidi characters.

    A name without any comes back unchanged. Otherwise each run of line breaks and tabs
    becomes one space, the other control and bidi characters are dropped, and the ends are
    trimmed. The caller keeps the original (the staging DB does).
    """
    if not _UNSAFE.search(text):
        return text
    return _UNSAFE.sub("", _LINE_BREAKS.sub(" ", text)).strip()


def csv_cell(value: Any) -> Any:
    """A CSV cell that no spreadsheet runs as a formula: ``'=1+1`` for ``=1+1``.

    Only strings are changed: those starting with ``= + - @``, TAB or CR, and, so that the
    quote can always be taken off again, those that already start with quotes before one of
    them. Numbers (``-3``) stay numbers. :func:`csv_original` gives the value back.
    """
    if isinstance(value, str) and value.lstrip(CSV_ESCAPE).startswith(FORMULA_STARTS):
        return CSV_ESCAPE + value
    return value


def csv_original(cell: str) -> str:
    """The value :func:`csv_cell` was given, from the cell it wrote."""
    if cell.startswith(CSV_ESCAPE) and cell.lstrip(CSV_ESCAPE).startswith(FORMULA_STARTS):
        return cell[1:]
    return cell


def json_for_terminal(value: Any) -> str:
    """``value`` as indented JSON that is safe to print (see :func:`terminal_json`)."""
    return terminal_json(json.dumps(value, indent=2, ensure_ascii=False, default=str))
