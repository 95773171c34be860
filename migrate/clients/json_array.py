"""Read a JSON array one element at a time from a file, with the standard library's decoder.

BIM 360 Field answers ``issue_changes`` with the whole project's status history in one array
(about 280 000 changes, 80 MB, at 100 000 issues). Parsed at once it costs several hundred MB;
read element by element from the downloaded body it costs one element. Each element is decoded
by :class:`json.JSONDecoder` exactly as ``json.loads`` would decode it (same number types, same
refusal of NaN and Infinity through ``parse_constant``), so what is stored does not depend on
how the body was read.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable, Iterator
from typing import IO, Any

_WHITESPACE = " \t\n\r"
_DELIMITERS = _WHITESPACE + ",]"
_READ_SIZE = 1 << 20


class NotAJsonArray(ValueError):
    """The text is not one JSON array; ``excerpt`` shows where, ``position`` in characters."""

    def __init__(self, reason: str, excerpt: str, position: int) -> None:
        self.reason = reason
        self.excerpt = excerpt
        self.position = position
        super().__init__(f"{reason} at character {position}")


def iter_json_array(
    body: IO[bytes],
    *,
    parse_constant: Callable[[str], Any] | None = None,
    read_size: int = _READ_SIZE,
) -> Iterator[Any]:
    """Yield the elements of the UTF-8 JSON array in ``body`` (read from where it stands).

    Raises :class:`NotAJsonArray` when the text is anything else: another JSON value, an
    element that is not JSON, a missing comma, text after the closing bracket. Elements
    already yielded stay valid; callers that must be all-or-nothing keep them aside until the
    iterator ends.
    """
    decoder = json.JSONDecoder(parse_constant=parse_constant)
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="strict")
    text = ""
    pos = 0
    consumed = 0  # characters dropped from the front of `text`, for positions in messages
    at_end = False

    def more() -> bool:
        nonlocal text, pos, consumed, at_end
        if at_end:
            return False
        chunk = body.read(read_size)
        try:
            decoded = utf8.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            raise NotAJsonArray("a body that is not UTF-8", _excerpt(text, pos), consumed) from exc
        if not chunk:
            at_end = True
            text += decoded
            return bool(decoded)
        # Drop what was already parsed, so memory holds about one read. Only when something
        # was read: the caller then decodes again from the new position.
        if pos > read_size:
            consumed += pos
            text, pos = text[pos:], 0
        text += decoded
        return True

    def skip_whitespace() -> bool:
        """Move past whitespace; False at the end of the body."""
        nonlocal pos
        while True:
            while pos < len(text) and text[pos] in _WHITESPACE:
                pos += 1
            if pos < len(text):
                return True
            if not more():
                return False

    def state() -> tuple[str, int]:
        return text, pos

    def fail(reason: str) -> NotAJsonArray:
        return NotAJsonArray(reason, _excerpt(text, pos), consumed + pos)

    if not skip_whitespace():
        raise fail("an empty body where a JSON array was expected")
    if text[pos] != "[":
        raise fail("a JSON value that is not an array")
    pos += 1
    if not skip_whitespace():
        raise fail("a JSON array cut short")
    if text[pos] == "]":
        pos += 1
    else:
        while True:
            value, pos = _decode_one(decoder, skip_whitespace, more, state, fail)
            yield value
            if not skip_whitespace():
                raise fail("a JSON array cut short")
            if text[pos] == "]":
                pos += 1
                break
            if text[pos] != ",":
                raise fail("a missing comma between array elements")
            pos += 1
    if skip_whitespace():
        raise fail("text after the end of the JSON array")


def _decode_one(
    decoder: json.JSONDecoder,
    skip_whitespace: Callable[[], bool],
    more: Callable[[], bool],
    state: Callable[[], tuple[str, int]],
    fail: Callable[[str], NotAJsonArray],
) -> tuple[Any, int]:
    """Decode the element at the current position, reading more of the body as needed.

    A value is accepted only when a delimiter follows it (or the body has ended).
    """
    if not skip_whitespace():
        raise fail("a JSON array cut short")
    while True:
        text, pos = state()
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            if more():
                continue
            raise fail("an array element that is not JSON") from None
        except ValueError as exc:  # parse_constant refused NaN or Infinity
            raise fail(str(exc) or "an array element that is not JSON") from None
        # Accepted only before a delimiter: "0." or "12" at the end of what was read so far
        # may be the start of "0.5" or "123" in the next read.
        if (end < len(text) and text[end] in _DELIMITERS) or not more():
            return value, end


def _excerpt(text: str, pos: int, width: int = 200) -> str:
    start = max(0, pos - width // 2)
    return text[start : start + width]
