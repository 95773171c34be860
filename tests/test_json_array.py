"""The streamed JSON-array reader decodes exactly what json.loads decodes, or refuses."""

from __future__ import annotations

import io
import json
import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migrate.clients.json_array import NotAJsonArray, iter_json_array

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def _refuse(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def read_all(text: str | bytes, read_size: int = 7) -> list[Any]:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return list(iter_json_array(io.BytesIO(data), parse_constant=_refuse, read_size=read_size))


@settings(max_examples=200, deadline=None)
@given(
    elements=st.lists(values, max_size=12),
    indent=st.sampled_from([None, 0, 2]),
    ascii_only=st.booleans(),
    read_size=st.integers(min_value=1, max_value=64),
)
def test_every_array_reads_as_json_loads_reads_it(
    elements: list[Any], indent: int | None, ascii_only: bool, read_size: int
) -> None:
    text = json.dumps(elements, indent=indent, ensure_ascii=ascii_only)
    assert read_all(text, read_size) == json.loads(text)


def test_numbers_split_across_reads_are_read_whole() -> None:
    text = "[1234567890123, 0.5e-3, -17]"
    for read_size in range(1, len(text) + 1):
        assert read_all(text, read_size) == [1234567890123, 0.0005, -17]


def test_multibyte_characters_split_across_reads() -> None:
    text = json.dumps(["Überfüllung 🚧", {"zone": "Bâtiment Ω"}], ensure_ascii=False)
    for read_size in range(1, 9):
        assert read_all(text, read_size) == json.loads(text)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "an empty body"),
        ("   ", "an empty body"),
        ('{"a": 1}', "not an array"),
        ("[1, 2", "cut short"),
        ("[1 2]", "missing comma"),
        ("[1,]", "not JSON"),
        ("[1] x", "text after the end"),
        ("[NaN]", "NaN is not JSON"),
        ('[{"a": Infinity}]', "Infinity is not JSON"),
        ("[{'a': 1}]", "not JSON"),
    ],
)
def test_anything_but_one_array_is_refused(text: str, reason: str) -> None:
    with pytest.raises(NotAJsonArray, match=reason):
        read_all(text)


def test_a_body_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(NotAJsonArray, match="not UTF-8"):
        read_all(b'["a", "\xff"]')


def test_memory_holds_about_one_read_not_the_body() -> None:
    # A 2 MB body read 64 KiB at a time: the parsed part of the buffer is dropped as it goes,
    # so what the reader allocates stays near one read, not the body.
    text = json.dumps([{"issue_id": str(i), "status": "Open"} for i in range(50_000)])
    assert len(text) > 2_000_000
    body = io.BytesIO(text.encode())
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_json_array(body, read_size=64 * 1024))
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 50_000
    assert peak < 1_000_000, peak
