"""The prebuilt encoders give exactly json.dumps's text (hashes and stored plans depend on it)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migrate.jsontext import canonical_json, compact_json, default_json
from migrate.store.records import content_hash

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(alphabet=st.characters(codec=None))
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(VALUES)
def test_same_text_as_json_dumps(value: Any) -> None:
    assert canonical_json(value) == json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True
    )
    assert compact_json(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=True)
    assert default_json(value) == json.dumps(value)


def test_key_order_does_not_change_canonical_text_and_unknown_types_are_refused() -> None:
    assert canonical_json({"b": 1, "a": [{"d": 2, "c": "\u00e9\ud800"}]}) == (
        '{"a":[{"c":"\\u00e9\\ud800","d":2}],"b":1}'
    )
    assert content_hash({"b": 1, "a": 2}) == content_hash({"a": 2, "b": 1})
    for encode in (canonical_json, compact_json, default_json):
        with pytest.raises(TypeError, match="not JSON serializable"):
            encode({"when": object()})
