"""Locations: the planned tree in Procore with as few calls as possible, ids in the id map.

Procore has no bulk create, but ``find_or_create_by_path`` on a leaf creates its missing
ancestors for free and answers the leaf (with its ``parent_id``). So: one call per leaf that
is not in Procore yet, then the ids still unknown (grand-parents and up) are learnt either by
one paged list of the project's locations or by a find_or_create per node, whichever takes
fewer calls. Paths are matched node by node through ``parent_id`` — never by splitting the
``name``, which is ambiguous when a node name contains ">".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from migrate.ids import ENTITY_LOCATION
from migrate.store.db import Store
from migrate.store.planned import PlannedLocation, id_map_rows, mark_loaded, planned_locations

if TYPE_CHECKING:  # the plan imports this package: it must not import requests
    from migrate.clients.procore import ProcoreClient

#: Procore's locations list pages hold at most this many rows.
LIST_PAGE_SIZE = 100

Path = tuple[str, ...]


@dataclass
class LocationCounts:
    created: int = 0
    unchanged: int = 0
    rejected: int = 0
    calls: int = 0


def _paths_by_id(locations: Iterable[dict[str, Any]]) -> dict[Path, int]:
    """Full node paths of listed locations, walking parent_id (names are never split)."""
    nodes = {loc["id"]: (loc.get("node_name"), loc.get("parent_id")) for loc in locations}
    resolved: dict[int, Path | None] = {}

    def path_of(location_id: int, depth: int = 0) -> Path | None:
        if location_id in resolved:
            return resolved[location_id]
        node = nodes.get(location_id)
        if node is None or depth > 100 or not isinstance(node[0], str):
            return None
        name: str = node[0]
        parent_id = node[1]
        if parent_id is None:
            result: Path | None = (name,)
        else:
            parent = path_of(parent_id, depth + 1)
            result = None if parent is None else (*parent, name)
        resolved[location_id] = result
        return result

    found: dict[Path, int] = {}
    for location_id in nodes:
        path = path_of(location_id)
        if path is not None:
            found[path] = location_id
    return found


def push_locations(
    store: Store,
    client: ProcoreClient,
    project_id: int,
    *,
    advance: Callable[[int], None] | None = None,
) -> LocationCounts:
    """Create the planned locations Procore lacks and record every planned location's id."""
    counts = LocationCounts()
    planned = planned_locations(store)
    loaded = {
        source_id: row
        for source_id, row in id_map_rows(store, ENTITY_LOCATION, project_id).items()
        if row.state == "loaded" and row.target_id
    }
    todo = [loc for loc in planned if loc.source_id not in loaded]
    counts.unchanged = len(planned) - len(todo)
    if advance and counts.unchanged:
        advance(counts.unchanged)
    if not todo:
        return counts
    known: dict[Path, int] = {}  # path -> Procore id, learnt now
    for loc in planned:
        if loc.source_id in loaded:
            known[loc.path] = loaded[loc.source_id].target_id  # type: ignore[assignment]

    def record(loc: PlannedLocation, target_id: int, created: bool) -> None:
        with store.transaction():
            mark_loaded(
                store,
                ENTITY_LOCATION,
                project_id,
                loc.source_id,
                target_id,
                payload_hash=loc.payload_hash,
            )
        if created:
            counts.created += 1
        else:
            counts.unchanged += 1
        if advance:
            advance(1)

    # Locations the transform snapshot already saw in Procore need no call at all.
    pending: list[PlannedLocation] = []
    for loc in todo:
        if loc.existing_target_id is not None:
            known[loc.path] = loc.existing_target_id
            record(loc, loc.existing_target_id, created=False)
        else:
            pending.append(loc)
    # Leaves: one call each creates the leaf and every missing ancestor.
    ancestors_of_created: set[Path] = set()
    for loc in pending:
        if not loc.is_leaf:
            continue
        location, created = client.find_or_create_location(project_id, list(loc.path))
        counts.calls += 1
        known[loc.path] = int(location["id"])
        record(loc, int(location["id"]), created)
        parent_path = loc.path[:-1]
        if parent_path and location.get("parent_id") is not None:
            known.setdefault(parent_path, int(location["parent_id"]))
        if created:
            ancestors_of_created.update(loc.path[:i] for i in range(1, len(loc.path)))
    rest = [loc for loc in pending if not loc.is_leaf]
    for loc in list(rest):
        if loc.path in known:
            record(loc, known[loc.path], created=loc.path in ancestors_of_created)
            rest.remove(loc)
    if not rest:
        return counts
    # Inner nodes still unknown: a paged list or one call each, whichever is fewer.
    (listed_before,) = store.conn.execute(
        "SELECT COUNT(*) FROM target_locations WHERE project_id = ?", (project_id,)
    ).fetchone()
    estimated_pages = max(1, math.ceil((listed_before + len(planned)) / LIST_PAGE_SIZE))
    if len(rest) <= estimated_pages:
        for loc in rest:
            location, created = client.find_or_create_location(project_id, list(loc.path))
            counts.calls += 1
            record(loc, int(location["id"]), created or loc.path in ancestors_of_created)
        return counts
    listed = client.locations(project_id)
    counts.calls += max(1, math.ceil(len(listed) / LIST_PAGE_SIZE))
    paths = _paths_by_id(listed)
    for loc in rest:
        target_id = paths.get(loc.path)
        if target_id is None:
            # Not created as an ancestor (its planned children changed?): ask for it directly.
            location, created = client.find_or_create_location(project_id, list(loc.path))
            counts.calls += 1
            target_id, is_new = int(location["id"]), created
        else:
            is_new = loc.path in ancestors_of_created
        record(loc, target_id, is_new)
    return counts
