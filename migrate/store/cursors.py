"""Paging cursors, committed in the same transaction as the page they describe."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from migrate.store.db import Store, StoreError, utc_now


@dataclass(frozen=True)
class Cursor:
    """A stored paging position; `state` holds whatever else resuming needs (JSON)."""

    endpoint: str
    run_id: int
    position: int
    state: dict[str, Any]
    updated_at: str


def get_cursor(store: Store, endpoint: str) -> Cursor | None:
    """Where paging of `endpoint` stopped, or None if it has not started (or was cleared)."""
    row = store.conn.execute(
        "SELECT endpoint, run_id, position, state, updated_at FROM cursors WHERE endpoint = ?",
        (endpoint,),
    ).fetchone()
    if row is None:
        return None
    return Cursor(row[0], row[1], row[2], json.loads(row[3]), row[4])


def set_cursor(
    store: Store,
    endpoint: str,
    run_id: int,
    position: int,
    state: Mapping[str, Any] | None = None,
) -> None:
    """Record that paging of `endpoint` resumes at `position`.

    Must be called inside store.transaction() together with the page's rows: a cursor
    committed on its own could run ahead of the data after a crash.
    """
    if not store.in_transaction:
        raise StoreError(
            f"set_cursor({endpoint!r}) outside a transaction: write the page's rows and the "
            "cursor inside one `with store.transaction():` block"
        )
    store.conn.execute(
        "INSERT INTO cursors (endpoint, run_id, position, state, updated_at) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (endpoint) DO UPDATE SET run_id = excluded.run_id, "
        "position = excluded.position, state = excluded.state, updated_at = excluded.updated_at",
        (endpoint, run_id, int(position), json.dumps(dict(state or {}), sort_keys=True), utc_now()),
    )


def clear_cursor(store: Store, endpoint: str) -> None:
    """Forget the cursor (paging finished, or a fresh pass is wanted)."""
    with store.transaction():
        store.conn.execute("DELETE FROM cursors WHERE endpoint = ?", (endpoint,))


def clear_cursors(store: Store, prefix: str) -> None:
    """Forget every cursor whose endpoint starts with `prefix` (a stage's whole pass)."""
    with store.transaction():
        store.conn.execute(
            "DELETE FROM cursors WHERE endpoint LIKE ? ESCAPE '\\'", (_like_prefix(prefix),)
        )


def _like_prefix(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"
