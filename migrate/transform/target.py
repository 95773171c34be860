"""Procore reference data for transform: the project's assignees and existing locations.

Read once per run (read-only calls) into target_assignees and target_locations, so mapping and
validation know the target without calling it per record. ``--offline`` reuses the last
snapshot instead; with none stored that is an error, not an empty target.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from migrate.errors import EXIT_USAGE, MigrateError
from migrate.store.db import Store


class TargetReader(Protocol):
    """The read calls transform needs (ProcoreClient provides them); `trades` only when
    fields.csv has a trade target."""

    def check_access(self, project_id: int) -> Mapping[str, Any]: ...

    def assignees(self, project_id: int) -> Iterable[Mapping[str, Any]]: ...

    def locations(self, project_id: int) -> Iterable[Mapping[str, Any]]: ...

    def trades(self, company_id: int) -> Iterable[Mapping[str, Any]]: ...


class NoSnapshotError(MigrateError):
    """--offline was asked for but no Procore snapshot of the project is stored."""

    exit_code = EXIT_USAGE


def snapshot_target(
    store: Store, client: TargetReader, project_id: int, run_id: int
) -> dict[str, int]:
    """Replace the project's target_assignees and target_locations with what Procore has now.

    Both lists are read before anything is written, so a failed call leaves the previous
    snapshot intact. Returns how many rows of each were stored.
    """
    assignees = [_assignee_row(p, project_id, run_id) for p in client.assignees(project_id)]
    locations = [_location_row(p, project_id, run_id) for p in client.locations(project_id)]
    with store.transaction():
        store.conn.execute("DELETE FROM target_assignees WHERE project_id = ?", (project_id,))
        store.conn.execute("DELETE FROM target_locations WHERE project_id = ?", (project_id,))
        store.conn.executemany(
            "INSERT OR REPLACE INTO target_assignees (project_id, id, name, login, login_lower, "
            "company_name, snapshot_run) VALUES (?, ?, ?, ?, ?, ?, ?)",
            assignees,
        )
        store.conn.executemany(
            "INSERT OR REPLACE INTO target_locations (project_id, id, name, node_name, parent_id, "
            "snapshot_run) VALUES (?, ?, ?, ?, ?, ?)",
            locations,
        )
    return {"assignees": len(assignees), "locations": len(locations)}


def require_snapshot(store: Store, project_id: int) -> dict[str, int]:
    """Row counts of the stored snapshot of `project_id`; NoSnapshotError when there is none."""
    counts = {
        "assignees": _count(store, "target_assignees", project_id),
        "locations": _count(store, "target_locations", project_id),
    }
    if not any(counts.values()):
        raise NoSnapshotError(
            f"--offline needs a stored snapshot of Procore project {project_id}'s assignees and "
            f"locations, and {store.path} has none. Run `migrate transform` once without "
            "--offline (it reads them from Procore)."
        )
    return counts


def snapshot_trades(store: Store, client: TargetReader, company_id: int, run_id: int) -> int:
    """Replace the company's target_trades with what Procore has now; how many were stored."""
    rows = [
        (
            company_id,
            int(trade["id"]),
            trade.get("name"),
            int(trade.get("active", True) is not False),
            run_id,
        )
        for trade in client.trades(company_id)
    ]
    with store.transaction():
        store.conn.execute("DELETE FROM target_trades WHERE company_id = ?", (company_id,))
        store.conn.executemany(
            "INSERT OR REPLACE INTO target_trades (company_id, id, name, active, snapshot_run) "
            "VALUES (?, ?, ?, ?, ?)",
            rows,
        )
    return len(rows)


def read_trades(store: Store) -> list[dict[str, Any]]:
    """The snapshot's available trades (a staging DB serves one Procore company), by id."""
    rows = store.conn.execute(
        "SELECT id, name FROM target_trades WHERE active = 1 ORDER BY id"
    ).fetchall()
    return [{"id": row[0], "name": row[1]} for row in rows]


def read_assignees(store: Store, project_id: int) -> list[dict[str, Any]]:
    """The snapshot's assignees of `project_id`, by id."""
    rows = store.conn.execute(
        "SELECT id, name, login, company_name FROM target_assignees WHERE project_id = ? "
        "ORDER BY id",
        (project_id,),
    ).fetchall()
    return [{"id": row[0], "name": row[1], "login": row[2], "company_name": row[3]} for row in rows]


def _count(store: Store, table: str, project_id: int) -> int:
    return int(
        store.conn.execute(
            f"SELECT COUNT(*) FROM {table} WHERE project_id = ?", (project_id,)
        ).fetchone()[0]
    )


def _assignee_row(person: Mapping[str, Any], project_id: int, run_id: int) -> tuple[Any, ...]:
    login = person.get("login") or person.get("email_address") or None
    return (
        project_id,
        int(person["id"]),
        person.get("name"),
        login,
        login.strip().casefold() if login else None,
        person.get("company_name"),
        run_id,
    )


def _location_row(place: Mapping[str, Any], project_id: int, run_id: int) -> tuple[Any, ...]:
    parent = place.get("parent_id")
    return (
        project_id,
        int(place["id"]),
        place.get("name"),
        place.get("node_name"),
        int(parent) if parent is not None else None,
        run_id,
    )
