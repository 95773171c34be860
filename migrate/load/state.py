"""The load stage's own state in staging: write batches, load quarantine, the run's context.

The id map and the planned rows have their home in ``migrate.store.planned``. Every write call
load makes is a ``load_batches`` row committed ``sent`` before the call and ``confirmed`` or
``failed`` after it. These functions only touch SQLite (the ``save_*`` layer); callers wrap
them in ``store.transaction()`` where several must commit together.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from migrate.ids import ENTITY_ISSUE
from migrate.quarantine import Held, hold
from migrate.store.db import Store, select_in, utc_now

STAGE = "load"


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
    return dict(
        select_in(
            store.conn,
            "SELECT id, sent_at FROM load_batches WHERE id IN ({marks})",
            (b for b in batch_ids if b),
        )
    )


def fail_open_batches(store: Store) -> int:
    """Batches still ``sent`` from a run that died: their rows are re-sent; mark them failed."""
    with store.transaction():
        cursor = store.conn.execute(
            "UPDATE load_batches SET state = 'failed', confirmed_at = ? WHERE state = 'sent'",
            (utc_now(),),
        )
    return cursor.rowcount


# -- quarantine --------------------------------------------------------------------------------


def quarantine_load(
    store: Store,
    entity: str,
    source_id: str,
    *,
    reason: str,
    hint: str,
    record: Mapping[str, Any],
    run_id: int,
) -> None:
    """Hold a record back with Procore's reason (refreshes its open load row if it has one)."""
    hold(store, entity, STAGE, [Held(source_id, reason, hint, dict(record))], run_id)


def release_load_quarantine(store: Store, entity: str, source_id: str, run_id: int) -> None:
    """The record is in Procore now: close its open load-stage quarantine rows."""
    store.conn.execute(
        "UPDATE quarantine SET released_at = ?, released_run = ? WHERE entity = ? "
        "AND source_id = ? AND stage = ? AND released_at IS NULL",
        (utc_now(), run_id, entity, source_id, STAGE),
    )


@dataclass(frozen=True, slots=True)
class OpenQuarantine:
    """The newest open quarantine row of a record."""

    row_id: int
    stage: str
    reason: str
    hint: str | None
    #: For a load-stage row, the payload hash Procore refused (None: held back on our side,
    #: e.g. a missing file, or a close that was refused).
    refused_hash: str | None

    @property
    def detail(self) -> str:
        return f"quarantine {self.row_id} ({self.stage}): {self.reason}"


def open_quarantine(store: Store, entities: Iterable[str]) -> dict[str, OpenQuarantine]:
    """source id -> its newest open quarantine row, for these entities (any stage)."""
    found: dict[str, OpenQuarantine] = {}
    rows = select_in(
        store.conn,
        "SELECT id, source_id, stage, reason, hint, CASE WHEN stage = 'load' AND "
        "json_valid(record) AND json_type(record) = 'object' THEN "
        "json_extract(record, '$.payload_hash') END FROM quarantine "
        "WHERE released_at IS NULL AND entity IN ({marks})",
        entities,
    )
    for row_id, source_id, stage, reason, hint, refused in sorted(rows):
        found[str(source_id)] = OpenQuarantine(
            row_id, stage, reason, hint, refused if isinstance(refused, str) else None
        )
    return found


def open_quarantine_count(store: Store) -> int:
    """Open quarantine rows of every stage (what makes the exit code 3)."""
    (count,) = store.conn.execute(
        "SELECT COUNT(*) FROM quarantine WHERE released_at IS NULL"
    ).fetchone()
    return int(count)


# -- the run's context -------------------------------------------------------------------------


@dataclass
class LoadContext:
    """What every load phase shares: store, client, target project, counters."""

    store: Store
    client: Any
    project_id: int
    run_id: int
    options: Any  # LoadOptions
    uploader: Any  # uploads.Uploader
    progress: Any = None  # results.Progress
    log: Any = None
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
