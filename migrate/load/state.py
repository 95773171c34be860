"""The load stage's state in staging: id map state machine, write batches, load quarantine.

Every planned record moves ``pending → sent (batch) → loaded (Procore id, payload hash)`` or
``→ rejected`` (with a quarantine row). ``sent`` is committed before the write call and the
outcome right after it, so a process killed at any instant leaves rows that say exactly what
may have reached Procore: ``sent`` rows are re-sent with the same uuid on the next run.

These functions only touch SQLite (the ``save_*`` layer); callers wrap them in
``store.transaction()`` where several must commit together.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from migrate.clients.procore import ProcoreClient
from migrate.ids import ENTITY_ISSUE
from migrate.load.options import LoadOptions
from migrate.load.uploads import Uploader

# The load-stage quarantine functions live with the quarantine table's other SQL; their names
# stay importable from here.
from migrate.quarantine import open_load_quarantine as open_load_quarantine
from migrate.quarantine import open_quarantine_count as open_quarantine_count
from migrate.quarantine import quarantine_load as quarantine_load
from migrate.quarantine import release_load_quarantine as release_load_quarantine
from migrate.results import Progress
from migrate.runlog import RunLog
from migrate.store.db import Store, utc_now

STAGE = "load"


@dataclass(frozen=True)
class MapRow:
    """One id_map row."""

    source_id: str
    target_id: int | None
    state: str
    batch_id: str | None
    payload_hash: str | None
    target_status: str | None
    attachment_ids: tuple[str, ...]


def id_map_rows(store: Store, entity: str, project_id: int) -> dict[str, MapRow]:
    """Every id_map row of ``entity`` for the Procore project, by source id."""
    rows = store.conn.execute(
        "SELECT source_id, target_id, state, batch_id, payload_hash, target_status, "
        "attachment_ids FROM id_map WHERE entity = ? AND target_project_id = ?",
        (entity, project_id),
    )
    return {
        row[0]: MapRow(
            source_id=row[0],
            target_id=row[1],
            state=row[2],
            batch_id=row[3],
            payload_hash=row[4],
            target_status=row[5],
            attachment_ids=tuple(json.loads(row[6])) if row[6] else (),
        )
        for row in rows
    }


def _upsert(store: Store, entity: str, project_id: int, source_id: str, **values: Any) -> None:
    values["updated_at"] = utc_now()
    columns = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    updates = ", ".join(f"{c} = excluded.{c}" for c in values)
    store.conn.execute(
        f"INSERT INTO id_map (entity, source_id, target_project_id, {columns}) "
        f"VALUES (?, ?, ?, {marks}) ON CONFLICT (entity, source_id, target_project_id) "
        f"DO UPDATE SET {updates}",
        (entity, source_id, project_id, *values.values()),
    )


def mark_sent(
    store: Store, entity: str, project_id: int, batch_id: str, hashes: Mapping[str, str]
) -> None:
    """Record that these records (source id -> payload hash) are in ``batch_id``'s call."""
    for source_id, payload_hash in hashes.items():
        _upsert(
            store,
            entity,
            project_id,
            source_id,
            state="sent",
            batch_id=batch_id,
            payload_hash=payload_hash,
            target_id=None,
        )


def mark_loaded(
    store: Store,
    entity: str,
    project_id: int,
    source_id: str,
    target_id: int,
    *,
    payload_hash: str | None,
    target_status: str | None = None,
    attachment_ids: Iterable[str] | None = None,
    batch_id: str | None = None,
) -> None:
    """Record the Procore id of a record Procore confirmed."""
    values: dict[str, Any] = {
        "state": "loaded",
        "target_id": target_id,
        "payload_hash": payload_hash,
    }
    if target_status is not None:
        values["target_status"] = target_status
    if attachment_ids is not None:
        values["attachment_ids"] = json.dumps(sorted(attachment_ids))
    if batch_id is not None:
        values["batch_id"] = batch_id
    _upsert(store, entity, project_id, source_id, **values)


def update_loaded(
    store: Store,
    entity: str,
    project_id: int,
    source_id: str,
    *,
    payload_hash: str | None = None,
    target_status: str | None = None,
) -> None:
    """Change the hash or Procore status of a row that is already loaded."""
    sets: dict[str, Any] = {"updated_at": utc_now()}
    if payload_hash is not None:
        sets["payload_hash"] = payload_hash
    if target_status is not None:
        sets["target_status"] = target_status
    assignments = ", ".join(f"{column} = ?" for column in sets)
    store.conn.execute(
        f"UPDATE id_map SET {assignments} WHERE entity = ? AND source_id = ? "
        "AND target_project_id = ? AND state = 'loaded'",
        (*sets.values(), entity, source_id, project_id),
    )


def mark_rejected(
    store: Store,
    entity: str,
    project_id: int,
    source_id: str,
    *,
    payload_hash: str,
    batch_id: str | None,
) -> None:
    """Record that Procore refused to create this record (its reason is in quarantine)."""
    _upsert(
        store,
        entity,
        project_id,
        source_id,
        state="rejected",
        batch_id=batch_id,
        payload_hash=payload_hash,
        target_id=None,
    )


def mark_unsent(store: Store, entity: str, project_id: int, source_id: str) -> None:
    """A ``sent`` row that turned out never to have reached Procore."""
    _upsert(store, entity, project_id, source_id, state="pending", target_id=None)


# -- load_batches ------------------------------------------------------------------------------


def start_batch(store: Store, run_id: int, kind: str, item_count: int) -> tuple[str, str]:
    """Insert a ``sent`` load_batches row; return (batch id, sent_at). Call in a transaction."""
    sent_at = utc_now()
    (number,) = store.conn.execute(
        "SELECT COUNT(*) + 1 FROM load_batches WHERE run_id = ?", (run_id,)
    ).fetchone()
    batch_id = f"{run_id}-{number}-{kind}"
    store.conn.execute(
        "INSERT INTO load_batches (id, run_id, kind, item_count, state, sent_at) "
        "VALUES (?, ?, ?, ?, 'sent', ?)",
        (batch_id, run_id, kind, item_count, sent_at),
    )
    return batch_id, sent_at


def finish_batch(
    store: Store, batch_id: str, *, entities: int, errors: int, state: str = "confirmed"
) -> None:
    """Mark a batch confirmed (Procore answered) or failed (no usable answer)."""
    store.conn.execute(
        "UPDATE load_batches SET state = ?, confirmed_at = ?, entities = ?, errors = ? "
        "WHERE id = ?",
        (state, utc_now(), entities, errors, batch_id),
    )


def batch_sent_at(store: Store, batch_ids: Iterable[str]) -> dict[str, str]:
    """sent_at of each known batch id."""
    wanted = sorted({b for b in batch_ids if b})
    found: dict[str, str] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        for batch_id, sent_at in store.conn.execute(
            f"SELECT id, sent_at FROM load_batches WHERE id IN ({marks})", chunk
        ):
            found[batch_id] = sent_at
    return found


def fail_open_batches(store: Store) -> int:
    """Batches still ``sent`` from a run that died: their rows are re-sent; mark them failed."""
    with store.transaction():
        cursor = store.conn.execute(
            "UPDATE load_batches SET state = 'failed', confirmed_at = ? WHERE state = 'sent'",
            (utc_now(),),
        )
    return cursor.rowcount


# -- the run's context -------------------------------------------------------------------------


@dataclass
class LoadContext:
    """What every load phase shares: store, client, target project, counters."""

    store: Store
    client: ProcoreClient
    project_id: int
    run_id: int
    options: LoadOptions
    uploader: Uploader
    progress: Progress | None = None
    log: RunLog | None = None
    location_ids: dict[str, int] = field(default_factory=dict)
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    uploads_done: int = 0
    uploads_reused: int = 0
    sync_sizes: list[int] = field(default_factory=list)
    #: Source ids of issues this run created (or found already created), for the counts.
    loaded_now: set[str] = field(default_factory=set)

    def count(self, kind: str, entity: str = ENTITY_ISSUE, n: int = 1) -> None:
        """Add to a per-entity counter (created, updated, status_changed, rejected …)."""
        self.counts.setdefault(entity, Counter())[kind] += n
