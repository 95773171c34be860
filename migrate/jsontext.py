"""JSON text for hashing and storing, with the encoders built once (and a quicker loads).

`json.dumps` and `JSONEncoder.encode` build a fresh C encoder on every call, which costs more
than encoding a short list and a sixth of a payload's time (measured: 13 hashed columns of a
planned issue 4.0 → 1.3 µs, a 1.3 KB payload 7.0 → 5.9 µs). The functions here call one C
encoder made at import and give exactly `json.dumps`'s text for the same options; where the
interpreter has no C encoder, or its encoder disagrees with `json.dumps` on a sample, they are
`json.dumps` itself.

None checks for reference cycles (a cycle is a RecursionError, not json's ValueError): they
encode records and payloads, which are trees.
"""

from __future__ import annotations

import json
import json.scanner
from collections.abc import Callable
from typing import Any

try:
    from json.encoder import c_make_encoder as _c_make_encoder
    from json.encoder import encode_basestring_ascii as _encode_basestring_ascii
except ImportError:  # pragma: no cover - CPython always has the C accelerator
    _c_make_encoder = None

_SAMPLE = {
    "b": [1, 2.5, None, True, False, "x\u00e9\U0001f6a7\ud800\n"],
    "a": {"z": "", "y": -0.0, "x": [{}]},
    "c": float("nan"),
}


def _encoder(*, sort_keys: bool, item_separator: str, key_separator: str) -> Callable[[Any], str]:
    reference = json.JSONEncoder(
        sort_keys=sort_keys,
        separators=(item_separator, key_separator),
        ensure_ascii=True,
        check_circular=False,
    ).encode
    if _c_make_encoder is None:  # pragma: no cover
        return reference
    try:
        chunks = _c_make_encoder(
            None,
            json.JSONEncoder().default,
            _encode_basestring_ascii,
            None,
            key_separator,
            item_separator,
            sort_keys,
            False,
            True,
        )
    except TypeError:  # pragma: no cover - another interpreter's private signature
        return reference
    join = "".join

    def encode(obj: Any) -> str:
        return join(chunks(obj, 0))

    try:
        agrees = encode(_SAMPLE) == reference(_SAMPLE) and encode("s\u00e9") == reference("s\u00e9")
    except Exception:  # pragma: no cover
        agrees = False
    return encode if agrees else reference


#: Sorted keys, no whitespace: equal data gives equal text, whatever the key order (what hashes
#: cover). ASCII escapes, so that any string the JSON parser can produce (even a lone
#: surrogate) encodes, and a hash never depends on the platform's text encoding.
canonical_json: Callable[[Any], str] = _encoder(
    sort_keys=True, item_separator=",", key_separator=":"
)
#: Keys in insertion order, no whitespace, ASCII escapes.
compact_json: Callable[[Any], str] = _encoder(
    sort_keys=False, item_separator=",", key_separator=":"
)
#: `json.dumps(obj)` with its default options.
default_json: Callable[[Any], str] = _encoder(
    sort_keys=False, item_separator=", ", key_separator=": "
)


_scan = json.scanner.make_scanner(json.JSONDecoder())


def parse_json(text: str) -> Any:
    """`json.loads(text)` for a str, skipping its wrapper (whitespace matching, a decoder
    call) when the text is exactly one JSON value, as the JSON this program stores is."""
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        return json.loads(text)  # not JSON from its first character: json.loads says why
    if end != len(text):
        return json.loads(text)  # whitespace around it, or more after it
    return value
