"""Field areas → the Procore location tree (planned_locations).

A path is the list of node names from the root, built from the ``parent_id`` chain of the staged
areas, never by splitting ``full_path``: one Field area name contains ">" and must stay one
node. mappings/locations.csv may move a subtree elsewhere. Every prefix of a path becomes a
planned location so load can create the tree parent first; two Field areas that end up on the
same path share one planned location (``field_area_ids`` lists both).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from migrate.mappings import Mappings
from migrate.store.db import Store
from migrate.store.planned import insert_planned_locations
from migrate.text import procore_name

ENTITY = "area"
DELETED_AT_SOURCE = "deleted at source"


def location_source_id(path: Sequence[str]) -> str:
    """``path:["North Building","Level 1"]``: stable, and unambiguous even with ">" in a name."""
    return "path:" + json.dumps(list(path), ensure_ascii=False)


@dataclass(frozen=True)
class AreaRejection:
    """An area that cannot become a location, and what to do about it."""

    area_id: str
    reason: str
    hint: str
    record: Mapping[str, Any]


@dataclass
class LocationPlan:
    """What map_areas decided for every staged area."""

    #: planned_locations rows (without plan_run), sorted by source_id.
    rows: list[dict[str, Any]] = field(default_factory=list)
    #: Field area id → planned location source_id, for the live areas that plan.
    area_location: dict[str, str] = field(default_factory=dict)
    #: Field area id → node names as Field has them (for footers and title templates).
    area_names: dict[str, list[str]] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    rejected: list[AreaRejection] = field(default_factory=list)
    deleted: set[str] = field(default_factory=set)

    @property
    def planned_area_count(self) -> int:
        return len(self.area_location)


def target_location_index(
    locations: Iterable[Mapping[str, Any]],
) -> dict[tuple[int | None, str], int]:
    """(parent id, node name) → Procore location id, from the target_locations snapshot."""
    index: dict[tuple[int | None, str], int] = {}
    for location in locations:
        key = (location.get("parent_id"), location.get("node_name") or "")
        # Names are unique under one parent in Procore; keep the lowest id if a snapshot
        # somehow holds two, so the answer does not depend on row order.
        if key not in index or location["id"] < index[key]:
            index[key] = int(location["id"])
    return index


def existing_target_id(
    path: Sequence[str], index: Mapping[tuple[int | None, str], int]
) -> int | None:
    """Procore id of the location at `path` (names compared exactly, as Procore does), or None."""
    parent: int | None = None
    for name in path:
        found = index.get((parent, name))
        if found is None:
            return None
        parent = found
    return parent


def map_areas(
    areas: Sequence[Mapping[str, Any]],
    mappings: Mappings,
    target_index: Mapping[tuple[int | None, str], int],
) -> LocationPlan:
    """Decide the planned location of every area (pure: rows in, plan out)."""
    by_id = {str(area["id"]): area for area in areas}
    plan = LocationPlan()
    names: dict[str, list[str] | AreaRejection] = {}

    def chain(area_id: str) -> list[str] | AreaRejection:
        """Node names root→leaf, or why they cannot be built (memoised, iterative)."""
        walk: list[str] = []
        seen: set[str] = set()
        current: str | None = area_id
        outcome: list[str] | AreaRejection = []
        while current:
            if current in names:
                outcome = names[current]
                break
            if current in seen:
                for walked in walk:
                    names[walked] = _reject(
                        by_id[walked],
                        "the area's parent chain loops back on itself",
                        "fix the area tree in BIM 360 Field, then run extract and transform again",
                    )
                return names[area_id]
            area = by_id.get(current)
            if area is None:
                broken = walk.pop()  # the area whose parent is missing
                outcome = names[broken] = _reject(
                    by_id[broken],
                    f"parent area {current} is not among the staged areas",
                    "run `migrate extract` again; if the parent stays missing, move the area "
                    "under an existing one in BIM 360 Field",
                )
                break
            seen.add(current)
            walk.append(current)
            parent = area.get("parent_id")
            current = str(parent) if parent else None
        # Unwind root first: each area extends its parent's path or inherits its rejection.
        for walked in reversed(walk):
            if isinstance(outcome, AreaRejection):
                outcome = names[walked] = _reject(
                    by_id[walked],
                    f"parent area {outcome.area_id} cannot become a location",
                    "fix that area first (see `migrate quarantine list`)",
                )
                continue
            raw_name = by_id[walked].get("name")
            if raw_name is None or not str(raw_name).strip():
                outcome = names[walked] = _reject(
                    by_id[walked],
                    "the area has a blank name",
                    "give the area a name in BIM 360 Field, then run extract and transform again",
                )
                continue
            outcome = names[walked] = [*outcome, str(raw_name)]
        return names[area_id]

    paths: dict[str, tuple[str, ...]] = {}
    for area_id in sorted(by_id):
        area = by_id[area_id]
        if area.get("deleted"):
            plan.deleted.add(area_id)
            plan.skipped.append((area_id, DELETED_AT_SOURCE))
            names_or_rejection = chain(area_id)
            if not isinstance(names_or_rejection, AreaRejection):
                plan.area_names[area_id] = names_or_rejection  # for messages about it
            continue
        outcome = chain(area_id)
        if isinstance(outcome, AreaRejection):
            plan.rejected.append(outcome)
            continue
        # Procore gets node names without control or bidi characters; the areas table keeps
        # Field's names, and footers and titles quote them as Field has them.
        target_path = tuple(procore_name(name) for name in mappings.location_path_for(outcome))
        if target_path and not all(name.strip() for name in target_path):
            plan.rejected.append(
                _reject(
                    area,
                    "a location name is blank once its control characters are removed",
                    "rename the area in BIM 360 Field (or map it in "
                    f"{mappings.file('locations.csv')}), then run extract and transform again",
                )
            )
            continue
        if not target_path:
            plan.rejected.append(
                _reject(
                    area,
                    "the area maps to an empty location path",
                    f"check the row for this area in {mappings.file('locations.csv')}",
                )
            )
            continue
        plan.area_names[area_id] = outcome
        paths[area_id] = target_path
        plan.area_location[area_id] = location_source_id(target_path)

    by_path: dict[tuple[str, ...], list[str]] = {}
    for area_id, path in paths.items():
        for length in range(1, len(path) + 1):
            by_path.setdefault(path[:length], [])
        by_path[path].append(area_id)
    parents = {path[:-1] for path in by_path if len(path) > 1}
    for path, area_ids in by_path.items():
        plan.rows.append(
            {
                "source_id": location_source_id(path),
                "path": json.dumps(list(path), ensure_ascii=False),
                "path_text": ">".join(path),
                "parent_source_id": location_source_id(path[:-1]) if len(path) > 1 else None,
                "depth": len(path) - 1,
                "is_leaf": 0 if path in parents else 1,
                "field_area_ids": json.dumps(sorted(area_ids)),
                "existing_target_id": existing_target_id(path, target_index),
            }
        )
    plan.rows.sort(key=lambda row: row["source_id"])
    return plan


def _reject(area: Mapping[str, Any], reason: str, hint: str) -> AreaRejection:
    return AreaRejection(str(area["id"]), reason, hint, dict(area))


# -- SQLite ----------------------------------------------------------------------------------

_AREA_COLUMNS = ("id", "parent_id", "name", "full_path", "identifier", "deleted", "depth")


def read_areas(store: Store) -> list[dict[str, Any]]:
    """Every staged area (a project has hundreds to a few thousand: held in memory)."""
    rows = store.conn.execute(
        f"SELECT {', '.join(_AREA_COLUMNS)} FROM areas ORDER BY id"
    ).fetchall()
    return [dict(zip(_AREA_COLUMNS, row, strict=True)) for row in rows]


def read_target_index(store: Store, project_id: int) -> dict[tuple[int | None, str], int]:
    """The target_locations snapshot of `project_id` as a (parent id, node name) index."""
    rows = store.conn.execute(
        "SELECT id, node_name, parent_id FROM target_locations WHERE project_id = ?",
        (project_id,),
    ).fetchall()
    return target_location_index(
        {"id": row[0], "node_name": row[1], "parent_id": row[2]} for row in rows
    )


def save_planned_locations(store: Store, plan: LocationPlan, run_id: int) -> None:
    """Insert the planned rows (the caller has emptied the table in the same transaction)."""
    insert_planned_locations(store, plan.rows, run_id)
