"""Count what the pipeline does not migrate (issue 15 point 5), so nothing is left unnamed.

One listing per Field family outside the four the pipeline moves: project photos, library
files and folders, equipment, tasks and daily updates. Only counts and the sizes the source
declares are kept (``source_inventory``); the records themselves stay in Field and, when it is
available, in the official project export (``extract.export``), which ``kept_in`` names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from migrate.extract.state import Context
from migrate.store import utc_now
from migrate.store.leftbehind import InventoryRow, save_inventory

DATABASE_ARCHIVE = "the project export's database archive"
FILES_ARCHIVE = "the project export's files archive"


@dataclass(frozen=True)
class Family:
    """A Field family the pipeline leaves in Field: how to list it and where it is kept."""

    name: str
    method: str
    path: str
    kept_in: str
    #: Extra parameters the call needs to list everything (a silent default could hide some).
    params: tuple[tuple[str, str], ...] = ()
    paged: bool = False
    #: The key holding a record's declared size in bytes, if the family has one.
    size_key: str | None = None


FAMILIES = (
    Family("photos", "POST", "/api/get_photos", FILES_ARCHIVE, paged=True, size_key="size"),
    Family(
        "library files",
        "POST",
        "/api/library/all_files",
        FILES_ARCHIVE,
        params=(("include_hidden", "0"),),
        size_key="size",
    ),
    Family("library folders", "POST", "/api/library/all_folders", DATABASE_ARCHIVE),
    Family(
        "equipment",
        "POST",
        "/api/get_equipment",
        DATABASE_ARCHIVE,
        params=(("step", "headers"), ("details", "none")),
        paged=True,
    ),
    Family("tasks", "POST", "/api/get_tasks", DATABASE_ARCHIVE, paged=True),
    Family(
        "daily updates",
        "GET",
        "/api/v1/projects/{project_id}/daily_updates",
        DATABASE_ARCHIVE,
        params=(("filter", "all"),),
    ),
)


def extract_inventory(ctx: Context) -> list[InventoryRow]:
    """Count every family in :data:`FAMILIES` and record the counts (replacing the last)."""
    rows = []
    ctx.progress.start("not migrated (counted)", len(FAMILIES))
    try:
        for family in FAMILIES:
            records = 0
            size = 0
            has_sizes = False
            for record in _records(ctx, family):
                records += 1
                value = record.get(family.size_key) if family.size_key else None
                if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                    size += value
                    has_sizes = True
            rows.append(
                InventoryRow(
                    family=family.name,
                    endpoint=f"{family.method} {family.path}",
                    records=records,
                    bytes=size if has_sizes else None,
                    kept_in=family.kept_in,
                    counted_at=utc_now(),
                )
            )
            ctx.progress.advance("not migrated (counted)")
    finally:
        ctx.progress.finish("not migrated (counted)")
    save_inventory(ctx.store, rows, run_id=ctx.run_id)
    ctx.note(
        "inventory",
        counts={row.family: row.records for row in rows},
        message="families the migration does not move, counted",
    )
    return rows


def _records(ctx: Context, family: Family) -> Iterator[dict[str, Any]]:
    path = family.path.format(project_id=ctx.project_id)
    params: dict[str, Any] = {"project_id": ctx.project_id, **dict(family.params)}
    fetch: Callable[[], Iterator[Any]]
    if family.paged:

        def fetch() -> Iterator[Any]:
            for _offset, rows in ctx.session.pages(family.method, path, params):
                yield from rows

    else:

        def fetch() -> Iterator[Any]:
            answer = ctx.session.json(family.method, path, params)
            yield from answer if isinstance(answer, list) else []

    for record in fetch():
        yield record if isinstance(record, dict) else {}


__all__ = ["FAMILIES", "Family", "extract_inventory"]
