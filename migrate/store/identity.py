"""Which migration a staging DB holds: one BIM 360 Field project into one Procore project.

A staging DB is the record of one migration: its id map says which Procore issue stands for
which Field issue, and a deletion is inferred from what the last extract no longer listed.
Pointing it at another project would close every loaded issue and load the other project's
issues beside them, so the identity is pinned in ``staging_identity``: each part by the first
run that knows it (extract the source project, transform and load the Procore company and
project). A later run configured for another identity raises IdentityMismatch before it
changes anything. A DB an earlier version made has its identity inferred from what it holds
(the extract pass cursor, the recorded run arguments, the staged records) when this version
first opens it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from migrate.errors import IdentityMismatch
from migrate.store.base import utc_now

if TYPE_CHECKING:  # db.open_store calls this module: no import back at run time
    from migrate.store.db import Store

__all__ = [
    "Identity",
    "PinnedIdentity",
    "ensure_identity_row",
    "has_identity_row",
    "infer_identity",
    "pin_identity",
    "read_identity",
]


@dataclass(frozen=True)
class Identity:
    """A migration's identity as configured; None where the command does not know a part."""

    source_project_id: str | None = None
    target_company_id: int | None = None
    target_project_id: int | None = None


@dataclass(frozen=True)
class PinnedIdentity:
    """What the staging DB is pinned to, and which run pinned (or what inferred) each part."""

    identity: Identity
    pinned_by: dict[str, str]


# (column, what it is, where it is configured)
_PARTS = (
    ("source_project_id", "BIM 360 Field project", "[source] project_id"),
    ("target_company_id", "Procore company", "[target] company_id"),
    ("target_project_id", "Procore project", "[target] project_id"),
)
_TABLE = "staging_identity"


def has_identity_row(store: Store) -> bool:
    """True when the DB has its identity row (even if no part is pinned yet)."""
    exists = store.conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (_TABLE,)
    ).fetchone()
    return bool(exists) and bool(store.conn.execute(f"SELECT 1 FROM {_TABLE}").fetchone())


def ensure_identity_row(store: Store) -> None:
    """Create the identity row if missing, inferred from what the DB holds (see infer_identity).

    A new DB holds nothing, so its row starts empty and the first runs pin it. Call on a
    writable store after the migrations.
    """
    if has_identity_row(store):
        return
    with store.transaction():
        if store.conn.execute(f"SELECT 1 FROM {_TABLE}").fetchone():
            return  # another process made it meanwhile
        inferred = infer_identity(store)
        values: dict[str, Any] = {"id": 1, "created_at": utc_now()}
        for column, (value, how) in inferred.items():
            values[column] = value
            values[_pinned_by_column(column)] = how
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        store.conn.execute(
            f"INSERT INTO {_TABLE} ({columns}) VALUES ({marks})", tuple(values.values())
        )


def read_identity(store: Store) -> PinnedIdentity:
    """The pinned identity (parts not pinned yet are None)."""
    row = store.conn.execute(
        f"SELECT {', '.join(_all_columns())} FROM {_TABLE} WHERE id = 1"
    ).fetchone()
    if row is None:
        return PinnedIdentity(Identity(), {})
    found = dict(zip(_all_columns(), row, strict=True))
    identity = Identity(
        source_project_id=_as_text(found["source_project_id"]),
        target_company_id=_as_int(found["target_company_id"]),
        target_project_id=_as_int(found["target_project_id"]),
    )
    pinned_by = {
        column: str(found[_pinned_by_column(column)] or "")
        for column, _, _ in _PARTS
        if found[column] is not None
    }
    return PinnedIdentity(identity, pinned_by)


def pin_identity(
    store: Store,
    configured: Identity,
    *,
    command: str,
    where: str = "the config",
    run_id: int | None = None,
) -> Identity:
    """Check `configured` against the pinned identity; pin the parts not pinned yet.

    Raises IdentityMismatch (one line, exit 2) naming the pinned value, the configured one
    and how to start a new staging DB; nothing is written then. On a read-only store the
    check runs but nothing is pinned. Returns the identity pinned afterwards.
    """
    if store.read_only:
        pinned = read_identity(store)
        _refuse_mismatch(store, pinned, configured, where)
        return pinned.identity
    with store.transaction():
        pinned = read_identity(store)
        _refuse_mismatch(store, pinned, configured, where)
        by = f"migrate {command}" + (f" (run {run_id})" if run_id is not None else "")
        by += f" at {utc_now()}"
        for column, _, _ in _PARTS:
            value = getattr(configured, column)
            if value is not None and getattr(pinned.identity, column) is None:
                store.conn.execute(
                    f"UPDATE {_TABLE} SET {column} = ?, {_pinned_by_column(column)} = ? "
                    "WHERE id = 1",
                    (value, by),
                )
        return read_identity(store).identity


def _refuse_mismatch(
    store: Store, pinned: PinnedIdentity, configured: Identity, where: str
) -> None:
    clashes = []
    for column, what, setting in _PARTS:
        want = getattr(configured, column)
        have = getattr(pinned.identity, column)
        if want is not None and have is not None and want != have:
            clashes.append((column, what, setting, have, want))
    if not clashes:
        return
    said = "; ".join(
        f"{what} {_show(have)} (pinned by {pinned.pinned_by.get(column) or 'an earlier run'}), "
        f"but {where} names {_show(want)}"
        for column, what, _, have, want in clashes
    )
    back = " and ".join(f"{setting} back to {_show(have)}" for _, _, setting, have, _ in clashes)
    tag = re.sub(r"[^A-Za-z0-9_-]+", "-", str(clashes[0][4])).strip("-") or "new"
    stem = re.sub(r"\.db$", "", store.path.replace("\\", "/").rsplit("/", 1)[-1]) or "staging"
    raise IdentityMismatch(
        f"{store.path} is the staging DB of another migration: {said}. A staging DB holds one "
        f"migration. To start a new one, point [staging] path and blobs at new files (e.g. path = "
        f'"{stem}-{tag}.db", blobs = "blobs-{tag}"); to continue this one, set {back}.'
    )


# -- inferring the identity of a DB made before it was recorded -------------------------------


def infer_identity(store: Store) -> dict[str, tuple[Any, str]]:
    """column → (value, what it was inferred from), for the parts the DB's contents show.

    Earlier versions recorded the source project in the extract pass cursor and in the extract
    runs' arguments, and the Procore project in the transform and load runs' arguments; the
    staged records and the id map are the last resort. The Procore company was never recorded.
    """
    found: dict[str, tuple[Any, str]] = {}
    source = _infer_source(store)
    if source is not None:
        found["source_project_id"] = (str(source[0]), source[1])
    target = _infer_target_project(store)
    if target is not None and _as_int(target[0]) is not None:
        found["target_project_id"] = (_as_int(target[0]), target[1])
    return found


def _infer_source(store: Store) -> tuple[Any, str] | None:
    conn = store.conn
    # "extract:pass" is the cursor of an unfinished extract pass, as every version wrote it.
    row = conn.execute(
        "SELECT json_extract(state, '$.project_id') FROM cursors WHERE endpoint = 'extract:pass'"
    ).fetchone()
    if row and row[0] not in (None, ""):
        return row[0], "inferred from the unfinished extract pass"
    found = _latest_run_arg(store, "extract", "project_id")
    if found is not None:
        return found
    values = _distinct(
        store, "SELECT json_extract(payload, '$.project_id') AS value FROM raw_issues"
    )
    if len(values) == 1:
        return values[0], "inferred from the staged issues"
    values = _distinct(store, "SELECT id AS value FROM projects")
    if len(values) == 1:
        return values[0], "inferred from the staged project"
    return None


def _infer_target_project(store: Store) -> tuple[Any, str] | None:
    for command in ("transform", "load"):
        found = _latest_run_arg(store, command, "target_project_id")
        if found is not None:
            return found
    values = _distinct(store, "SELECT target_project_id AS value FROM id_map")
    if len(values) == 1:
        return values[0], "inferred from the id map"
    return None


def _latest_run_arg(store: Store, command: str, key: str) -> tuple[Any, str] | None:
    """The newest value of ``args.<key>`` among runs of `command`, succeeded runs first."""
    row = store.conn.execute(
        "SELECT id, json_extract(args, ?) AS value FROM runs "
        "WHERE command = ? AND value IS NOT NULL AND value <> '' "
        "ORDER BY status = 'succeeded' DESC, id DESC LIMIT 1",
        (f"$.{key}", command),
    ).fetchone()
    if row is None:
        return None
    return row[1], f"inferred from {command} run {row[0]}"


def _distinct(store: Store, sql: str) -> list[Any]:
    """Up to two distinct non-empty values of the `value` column of `sql` (one means: agreed)."""
    rows = store.conn.execute(
        f"SELECT DISTINCT value FROM ({sql}) WHERE value IS NOT NULL AND value <> '' LIMIT 2"
    ).fetchall()
    return [value for (value,) in rows]


def _all_columns() -> list[str]:
    return [name for column, _, _ in _PARTS for name in (column, _pinned_by_column(column))]


def _pinned_by_column(column: str) -> str:
    return column.removesuffix("_id") + "_pinned_by"


def _as_text(value: Any) -> str | None:
    return None if value is None else str(value)


def _as_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else str(value)
