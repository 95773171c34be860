"""Procore location paths: node names root → leaf, walked through ``parent_id``.

Names joined by ">" are ambiguous when a name holds ">", so the report compares paths as
lists of node names; the reconciliation of issues, locations and inspections uses these.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def path_of(location_id: Any, by_id: Mapping[int, Mapping[str, Any]]) -> list[str] | None:
    """Node names root → leaf for a Procore location id, via parent_id (None if unknown)."""
    names: list[str] = []
    seen: set[int] = set()
    current = by_id.get(location_id) if isinstance(location_id, int) else None
    if current is None:
        return None
    while current is not None:
        if current["id"] in seen:  # a cycle would be Procore's bug; stop rather than loop
            break
        seen.add(current["id"])
        names.append(str(current.get("node_name") or current.get("name") or ""))
        parent = current.get("parent_id")
        current = by_id.get(parent) if parent is not None else None
    return list(reversed(names))


def actual_path(
    record: Mapping[str, Any], by_id: Mapping[int, Mapping[str, Any]]
) -> list[str] | None:
    """The location path of a Procore record with a ``location`` (an issue, an inspection)."""
    location = record.get("location")
    if not location:
        return None
    path = path_of(location.get("id"), by_id)
    if path is None:
        # Not in the locations list (deleted since?): the ">"-joined name is all there is.
        return str(location.get("name") or "").split(">")
    return path


def path_text(path: list[str] | None) -> str:
    """A location path for people: node names joined by " > "."""
    return "" if not path else " > ".join(path)
