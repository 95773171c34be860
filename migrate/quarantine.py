"""Quarantine: records held back with the reason, a hint, and the record itself.

Transform quarantines records that break a mapping rule or a Procore validation rule; load
quarantines what Procore refused. A row stays open until a later run no longer finds the
problem (transform releases it with ``released_run``) or a person releases it. All SQL on the
``quarantine`` table lives here.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from migrate.errors import EXIT_USAGE, MigrateError
from migrate.store.db import Store, select_in, strip_secret_params, utc_now

#: The stage name of rows load holds back (what Procore refused).
LOAD_STAGE = "load"

LIST_COLUMNS = (
    "id",
    "entity",
    "source_id",
    "stage",
    "reason",
    "hint",
    "run_id",
    "created_at",
    "released_at",
    "released_run",
)


class QuarantineNotFound(MigrateError):
    """No quarantine row has the id asked for."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Held:
    """One record to quarantine: which, why, what to do, and the record as JSON-able data."""

    source_id: str
    reason: str
    hint: str
    record: Any


def record_json(record: Any) -> str:
    """The record as stored: readable JSON, tickets and tokens stripped from every URL."""
    text = json.dumps(record, ensure_ascii=False, sort_keys=True, default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from the source cannot be stored as UTF-8
        text = json.dumps(record, ensure_ascii=True, sort_keys=True, default=str)
    return strip_secret_params(text)


def hold(store: Store, entity: str, stage: str, held: Sequence[Held], run_id: int) -> None:
    """Quarantine `held` records: refresh the open row of a record already held, else add one.

    A `Held.record` that is a str is taken as JSON already made by `record_json`.

    Every row this touches gets `run_id`, which is how `release_unconfirmed` tells which open
    rows the run did not confirm. Call inside the caller's transaction.
    """
    if not held:
        return
    conn = store.conn
    open_rows: dict[str, list[int]] = {}
    for row_id, source_id in conn.execute(
        "SELECT id, source_id FROM quarantine WHERE entity = ? AND stage = ? "
        "AND released_at IS NULL AND source_id IN (SELECT value FROM json_each(?))",
        (entity, stage, json.dumps([item.source_id for item in held])),
    ):
        open_rows.setdefault(source_id, []).append(row_id)
    now = utc_now()
    updates, inserts = [], []
    for item in held:
        record = item.record if isinstance(item.record, str) else record_json(item.record)
        for row_id in open_rows.get(item.source_id, ()):
            updates.append((item.reason, item.hint, record, run_id, row_id))
        if item.source_id not in open_rows:
            inserts.append(
                (entity, item.source_id, stage, item.reason, item.hint, record, run_id, now)
            )
    conn.executemany(
        "UPDATE quarantine SET reason = ?, hint = ?, record = ?, run_id = ? WHERE id = ?", updates
    )
    conn.executemany(
        "INSERT INTO quarantine (entity, source_id, stage, reason, hint, record, run_id, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        inserts,
    )


def release_unconfirmed(
    store: Store, stage: str, entities: Iterable[str], run_id: int
) -> dict[str, int]:
    """Release the open rows of `entities` that run `run_id` did not hold again; count per entity.

    A record the run planned, skipped, or no longer saw at all is no longer blocked.
    """
    entities = list(entities)
    marks = ", ".join("?" for _ in entities)
    where = (
        f"stage = ? AND released_at IS NULL AND entity IN ({marks}) "
        "AND (run_id IS NULL OR run_id <> ?)"
    )
    params = (stage, *entities, run_id)
    counts = dict(
        store.conn.execute(
            f"SELECT entity, COUNT(*) FROM quarantine WHERE {where} GROUP BY entity", params
        ).fetchall()
    )
    store.conn.execute(
        f"UPDATE quarantine SET released_at = ?, released_run = ? WHERE {where}",
        (utc_now(), run_id, *params),
    )
    return {entity: counts.get(entity, 0) for entity in entities}


# -- what load holds back ---------------------------------------------------------------------


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
    hold(store, entity, LOAD_STAGE, [Held(source_id, reason, hint, dict(record))], run_id)


def release_load_quarantine(store: Store, entity: str, source_id: str, run_id: int) -> None:
    """The record is in Procore now: close its open load-stage quarantine rows."""
    store.conn.execute(
        "UPDATE quarantine SET released_at = ?, released_run = ? WHERE entity = ? "
        "AND source_id = ? AND stage = ? AND released_at IS NULL",
        (utc_now(), run_id, entity, source_id, LOAD_STAGE),
    )


def open_quarantine_count(store: Store) -> int:
    """Open quarantine rows of every stage (what makes the exit code 3)."""
    (count,) = store.conn.execute(
        "SELECT COUNT(*) FROM quarantine WHERE released_at IS NULL"
    ).fetchone()
    return int(count)


# -- reading and releasing by hand ------------------------------------------------------------


def list_quarantine(store: Store, *, include_released: bool = False) -> list[dict[str, Any]]:
    """Quarantine rows, oldest first, without the record (see show_quarantine for it)."""
    sql = f"SELECT {', '.join(LIST_COLUMNS)} FROM quarantine"
    if not include_released:
        sql += " WHERE released_at IS NULL"
    rows = store.conn.execute(sql + " ORDER BY id").fetchall()
    return [dict(zip(LIST_COLUMNS, row, strict=True)) for row in rows]


def show_quarantine(store: Store, quarantine_id: int) -> dict[str, Any]:
    """One quarantine row with its record parsed; QuarantineNotFound (exit 2) for an unknown id."""
    row = store.conn.execute(
        f"SELECT {', '.join(LIST_COLUMNS)}, record FROM quarantine WHERE id = ?",
        (_as_id(quarantine_id),),
    ).fetchone()
    if row is None:
        raise _not_found(store, quarantine_id)
    result = dict(zip((*LIST_COLUMNS, "record"), row, strict=True))
    if result["record"] is not None:
        with contextlib.suppress(ValueError):  # unparsable stays text: still what was held
            result["record"] = json.loads(result["record"])
    return result


def release_quarantine(store: Store, quarantine_ids: Iterable[int]) -> list[int]:
    """Release rows by hand (released_run stays NULL); returns the ids that were open.

    Use it when the problem was fixed outside migrate (in Procore, say). A record that still
    fails is quarantined again by the next run.
    """
    ids = [_as_id(value) for value in quarantine_ids]
    with store.transaction():
        known = {
            row[0]: row[1]
            for row in store.conn.execute(
                "SELECT id, released_at FROM quarantine "
                "WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps(ids),),
            )
        }
        for value in ids:
            if value not in known:
                raise _not_found(store, value)
        released = sorted(value for value in set(ids) if known[value] is None)
        store.conn.executemany(
            "UPDATE quarantine SET released_at = ? WHERE id = ? AND released_at IS NULL",
            [(utc_now(), value) for value in released],
        )
    return released


def open_counts(store: Store) -> Mapping[str, int]:
    """Open quarantine rows per entity."""
    return dict(
        store.conn.execute(
            "SELECT entity, COUNT(*) FROM quarantine WHERE released_at IS NULL GROUP BY entity"
        ).fetchall()
    )


def _as_id(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise QuarantineNotFound(
            f"{value!r} is not a quarantine id (a number from `migrate quarantine list`)."
        ) from None


def _not_found(store: Store, value: int) -> QuarantineNotFound:
    return QuarantineNotFound(
        f"No quarantine row {value} in {store.path}. Run `migrate quarantine list` to see the ids."
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


# -- inspections (load, issue 14) ---------------------------------------------------------------


def inspections_with_refused_parts(store: Store, entities: Iterable[str]) -> set[str]:
    """Checklist ids whose answers, comments or files (these load entities) Procore refused
    and are still quarantined (the load row's record names its ``inspection``)."""
    return {
        str(inspection)
        for (inspection,) in select_in(
            store.conn,
            "SELECT json_extract(record, '$.inspection') FROM quarantine "
            "WHERE released_at IS NULL AND stage = 'load' AND json_valid(record) "
            "AND entity IN ({marks})",
            entities,
        )
        if inspection is not None
    }


# -- moved from report (issue 19) -------------------------------------------------------------


def open_quarantine_records(store: Store) -> list[dict[str, Any]]:
    """Open quarantine rows with their record text (entity, stage, reason, hint, source_id,
    created_at, record), ordered by entity, stage, reason, source id."""
    columns = ("entity", "stage", "reason", "hint", "source_id", "created_at", "record")
    rows = store.conn.execute(
        f"SELECT {', '.join(columns)} FROM quarantine "
        "WHERE released_at IS NULL ORDER BY entity, stage, reason, source_id, id"
    ).fetchall()
    return [dict(zip(columns, row, strict=True)) for row in rows]


def quarantined_source_ids(store: Store) -> set[str]:
    """The source id of every quarantine row, open or released, of any entity."""
    return {
        source_id
        for (source_id,) in store.conn.execute(
            "SELECT DISTINCT source_id FROM quarantine WHERE source_id IS NOT NULL"
        )
    }


def open_counts_by_source_kind(store: Store) -> dict[tuple[str, bool], int]:
    """(entity, whether the source id is a checklist item's) -> open quarantine rows."""
    return {
        (entity, bool(checklist)): int(number)
        for entity, checklist, number in store.conn.execute(
            "SELECT entity, COALESCE(source_id LIKE 'checklist_item:%', 0), COUNT(*) "
            "FROM quarantine WHERE released_at IS NULL GROUP BY 1, 2"
        )
    }
