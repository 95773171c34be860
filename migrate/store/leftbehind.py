"""What a migration leaves behind, as the staging DB records it (issue 15 points 4 and 5).

``project_exports``: BIM 360 Field's own project export, one row per archive kind (database,
files) with its state, blob store key and size, or why it is not available. ``source_inventory``:
one row per Field family the pipeline does not migrate (photos, library files and folders,
equipment, tasks, daily updates), with the count and declared bytes extract found. Extract
writes both; ``migrate status`` and the report read them. The SQL for both tables lives here.
"""

from __future__ import annotations

from dataclasses import dataclass

from migrate.store.base import utc_now
from migrate.store.db import Store


@dataclass(frozen=True)
class ExportArchive:
    """One archive of Field's project export, as recorded."""

    kind: str  # database or files
    state: str  # stored, not_available, failed
    sha256: str | None
    size: int | None
    requested_at: str
    finished_at: str | None
    stored_at: str | None
    reason: str | None


@dataclass(frozen=True)
class InventoryRow:
    """One Field family outside the pipeline: how many records, how many bytes, where kept."""

    family: str
    endpoint: str
    records: int
    bytes: int | None
    kept_in: str | None
    counted_at: str


def save_export_archive(
    store: Store,
    *,
    kind: str,
    state: str,
    requested_at: str,
    run_id: int,
    sha256: str | None = None,
    size: int | None = None,
    finished_at: str | None = None,
    reason: str | None = None,
) -> None:
    """Record one archive's outcome (replacing what an earlier run recorded for ``kind``)."""
    with store.transaction():
        store.conn.execute(
            "INSERT OR REPLACE INTO project_exports (kind, state, sha256, size, requested_at, "
            "finished_at, stored_at, reason, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                kind,
                state,
                sha256,
                size,
                requested_at,
                finished_at,
                utc_now() if state == "stored" else None,
                reason,
                run_id,
            ),
        )


def save_export_unavailable(store: Store, *, requested_at: str, run_id: int, reason: str) -> None:
    """No archive this time: every kind recorded so far, or both usual ones, say why.

    An archive stored by an earlier run stays recorded as stored (its bytes are still in the
    blob store); only kinds without a stored copy become not_available.
    """
    kinds = {"database", "files"} | {archive.kind for archive in export_archives(store)}
    stored = {archive.kind for archive in export_archives(store) if archive.state == "stored"}
    for kind in sorted(kinds - stored):
        save_export_archive(
            store,
            kind=kind,
            state="not_available",
            requested_at=requested_at,
            run_id=run_id,
            reason=reason,
        )


def export_archives(store: Store) -> list[ExportArchive]:
    """The recorded archives, by kind."""
    rows = store.conn.execute(
        "SELECT kind, state, sha256, size, requested_at, finished_at, stored_at, reason "
        "FROM project_exports ORDER BY kind"
    )
    return [ExportArchive(*row) for row in rows]


def save_inventory(store: Store, rows: list[InventoryRow], *, run_id: int) -> None:
    """Replace the inventory with this run's counts (one transaction)."""
    with store.transaction():
        store.conn.execute("DELETE FROM source_inventory")
        store.conn.executemany(
            "INSERT INTO source_inventory (family, endpoint, records, bytes, kept_in, run_id, "
            "counted_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    row.family,
                    row.endpoint,
                    row.records,
                    row.bytes,
                    row.kept_in,
                    run_id,
                    row.counted_at,
                )
                for row in rows
            ],
        )


def inventory(store: Store) -> list[InventoryRow]:
    """The counted families, in the order extract counted them."""
    rows = store.conn.execute(
        "SELECT family, endpoint, records, bytes, kept_in, counted_at FROM source_inventory "
        "ORDER BY rowid"
    )
    return [InventoryRow(*row) for row in rows]


__all__ = [
    "ExportArchive",
    "InventoryRow",
    "export_archives",
    "inventory",
    "save_export_archive",
    "save_export_unavailable",
    "save_inventory",
]
