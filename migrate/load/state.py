"""The load stage's own state in staging: write batches, load quarantine, the run's context.

The id map and the planned rows have their home in ``migrate.store.planned``. Every write call
load makes is a ``load_batches`` row committed ``sent`` before the call and ``confirmed`` or
``failed`` after it. These functions only touch SQLite (the ``save_*`` layer); callers wrap
them in ``store.transaction()`` where several must commit together.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from migrate.contract import LoadReadings
from migrate.ids import ENTITY_ISSUE
from migrate.load.options import LoadOptions
from migrate.load.uploads import Uploader

# The load-stage quarantine functions live with the quarantine table's other SQL; their names
# stay importable from here.
from migrate.quarantine import OpenQuarantine as OpenQuarantine
from migrate.quarantine import open_quarantine as open_quarantine
from migrate.quarantine import open_quarantine_count as open_quarantine_count
from migrate.quarantine import quarantine_load as quarantine_load
from migrate.quarantine import release_load_quarantine as release_load_quarantine
from migrate.results import Progress
from migrate.runlog import RunLog
from migrate.store.db import Store, select_in, utc_now

if TYPE_CHECKING:  # the plan imports this package: it must not import requests
    from migrate.clients.procore import ProcoreClient

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
    #: What the last preflight saw Procore do (uuid reuse, statuses): load follows it.
    readings: LoadReadings = field(default_factory=LoadReadings)

    def count(self, kind: str, entity: str = ENTITY_ISSUE, n: int = 1) -> None:
        """Add to a per-entity counter (created, updated, status_changed, rejected …)."""
        self.counts.setdefault(entity, Counter())[kind] += n
