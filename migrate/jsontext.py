"""JSON text for hashing and storing: each format is one `json.JSONEncoder`, built once.

Each function is the public `.encode` of an encoder made at import, and gives exactly
`json.dumps`'s text for the same options (hashes and stored plans depend on that, see
tests/test_jsontext.py). Building the encoder once, rather than once per `json.dumps` call,
also saves a microsecond or two a call; nothing here reaches below json's documented API.

None checks for reference cycles (a cycle is a RecursionError, not json's ValueError): they
encode records and payloads, which are trees.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

#: Sorted keys, no whitespace: equal data gives equal text, whatever the key order (what hashes
#: cover). ASCII escapes, so that any string the JSON parser can produce (even a lone
#: surrogate) encodes, and a hash never depends on the platform's text encoding.
canonical_json: Callable[[Any], str] = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, check_circular=False
).encode
#: Keys in insertion order, no whitespace, ASCII escapes.
compact_json: Callable[[Any], str] = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=True, check_circular=False
).encode
#: `json.dumps(obj)` with its default options.
default_json: Callable[[Any], str] = json.JSONEncoder(check_circular=False).encode
