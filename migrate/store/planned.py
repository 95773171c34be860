"""The plan's tables: what transform planned (``planned_*``, ``skipped_records``) and what load
recorded of it (``id_map``), with the payload hash that ties the two together.

Every read and write of these tables that load and the dry-run plan make lives here, so the
SQL has one home and the rows one shape: a planned issue is a :class:`PlanEntry` (no payload;
payloads are read a batch at a time with :func:`with_payloads`), an id map row a
:class:`MapRow`. Writes only touch SQLite; callers wrap them in ``store.transaction()`` where
several must commit together.

The id map's state machine: ``pending → sent (batch) → loaded (Procore id, payload hash)`` or
``→ rejected``. ``sent`` is committed before the write call and the outcome right after it, so
a process killed at any instant leaves rows that say exactly what may have reached Procore.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from migrate.ids import ENTITY_INSPECTION, ENTITY_ISSUE, ENTITY_LOCATION
from migrate.jsontext import canonical_json
from migrate.store.db import Store, select_in, utc_now
from migrate.store.records import content_hash

# -- the payload hash ----------------------------------------------------------------------------


def payload_hash(
    payload: Mapping[str, Any],
    location_source_id: str | None,
    attachment_sha256s: Sequence[str],
) -> str:
    """The hash a planned issue carries: its payload, its location and its files' sha256s.

    sha256 over ``canonical_json({"attachments": …, "location_source_id": …, "payload": …})``.
    Load compares it with the hash recorded at the last write to see whether anything changed.
    """
    return payload_hash_of_json(
        canonical_json(dict(payload)), location_source_id, attachment_sha256s
    )


def payload_hash_of_json(
    payload_json: str,
    location_source_id: str | None,
    attachment_sha256s: Sequence[str],
) -> str:
    """:func:`payload_hash` for a payload already in canonical JSON (transform stores that text,
    so the hash is built around it instead of encoding the payload a second time)."""
    # Keys in canonical (sorted) order; a hex digest (or "" for a file without one) needs no
    # JSON escaping.
    if all(digest.isascii() and digest.isalnum() or not digest for digest in attachment_sha256s):
        attachments = ",".join(f'"{digest}"' for digest in attachment_sha256s)
    else:
        attachments = canonical_json(list(attachment_sha256s))[1:-1]
    text = (
        f'{{"attachments":[{attachments}],"location_source_id":'
        f'{_location_json(location_source_id)},"payload":{payload_json}}}'
    )
    return hashlib.sha256(text.encode("ascii")).hexdigest()


@functools.lru_cache(maxsize=4096)
def _location_json(location_source_id: str | None) -> str:
    # Location ids repeat across a project's issues: encode each once.
    return canonical_json(location_source_id)


# -- planned issues ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanEntry:
    """A planned_issues row without its payload: all that deciding what to send needs.

    A few hundred bytes an issue where the parsed payload is a few kilobytes, so load holds
    the entries it acts on and reads payloads only for the batch it is sending.
    """

    source_id: str
    source_kind: str
    uuid: str
    status: str | None
    location_source_id: str | None
    attachment_ids: tuple[str, ...]
    payload_hash: str

    @property
    def quarantine_entity(self) -> str:
        # Load names its quarantine rows after the Procore entity; `status` folds them onto
        # issue / checklist_item by source id.
        return ENTITY_ISSUE


@dataclass(frozen=True, slots=True)
class PlannedIssue(PlanEntry):
    """One planned_issues row with its payload (the exact sync item)."""

    payload: dict[str, Any] = field(default_factory=dict)


_ENTRY_COLUMNS = (
    "p.source_id, p.source_kind, p.uuid, p.status, p.location_source_id, p.attachment_ids, "
    "p.payload_hash"
)


def _entry_fields(row: Sequence[Any]) -> dict[str, Any]:
    """PlanEntry's fields from a row that starts with _ENTRY_COLUMNS."""
    return {
        "source_id": row[0],
        "source_kind": row[1],
        "uuid": row[2].lower(),
        "status": row[3],
        "location_source_id": row[4],
        "attachment_ids": tuple(json.loads(row[5] or "[]")),
        "payload_hash": row[6],
    }


def planned_issues(store: Store, source_ids: Iterable[str]) -> list[PlannedIssue]:
    """These planned issues with their payloads, in source id order (gone ones left out)."""
    rows = sorted(
        select_in(
            store.conn,
            f"SELECT {_ENTRY_COLUMNS}, p.payload FROM planned_issues p "
            "WHERE p.source_id IN ({marks})",
            source_ids,
        ),
        key=lambda row: row[0],
    )
    return [PlannedIssue(**_entry_fields(r), payload=json.loads(r[7])) for r in rows]


def with_payloads(store: Store, entries: Sequence[PlanEntry]) -> list[PlannedIssue]:
    """`entries` with their payloads read now, in the same order.

    An entry whose row has gone since (a transform ran meanwhile) is left out: the next load
    sees the new plan.
    """
    found = {
        issue.source_id: issue
        for issue in planned_issues(store, [entry.source_id for entry in entries])
    }
    return [found[entry.source_id] for entry in entries if entry.source_id in found]


def planned_titles(store: Store) -> dict[str, str]:
    """source id -> planned title, for people reading the plan."""
    return dict(store.conn.execute("SELECT source_id, title FROM planned_issues"))


def skipped_records(store: Store, entities: Iterable[str]) -> dict[str, str]:
    """source id -> reason of the records a mapping leaves out, for these source entities."""
    return dict(
        select_in(
            store.conn,
            "SELECT source_id, reason FROM skipped_records WHERE entity IN ({marks})",
            entities,
        )
    )


def attachment_sha256s(store: Store, attachment_ids: Iterable[str]) -> dict[str, str]:
    """attachment id -> sha256 of the stored file (attachments without one are left out)."""
    return {
        attachment_id: sha256
        for attachment_id, sha256 in select_in(
            store.conn, "SELECT id, sha256 FROM attachments WHERE id IN ({marks})", attachment_ids
        )
        if sha256
    }


# -- planned locations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedLocation:
    source_id: str
    path: tuple[str, ...]
    path_text: str
    is_leaf: bool
    existing_target_id: int | None

    @property
    def payload_hash(self) -> str:
        return content_hash({"path": list(self.path)})


def planned_locations(store: Store) -> list[PlannedLocation]:
    """Every planned location, parents before children."""
    return [
        PlannedLocation(
            source_id=r[0],
            path=tuple(json.loads(r[1])),
            path_text=r[2],
            is_leaf=bool(r[3]),
            existing_target_id=r[4],
        )
        for r in store.conn.execute(
            "SELECT source_id, path, path_text, is_leaf, existing_target_id FROM planned_locations "
            "ORDER BY depth, source_id"
        )
    ]


# -- the id map ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MapRow:
    """One id_map row."""

    source_id: str
    target_id: int | None
    state: str
    batch_id: str | None
    payload_hash: str | None
    target_status: str | None
    attachment_ids: tuple[str, ...]
    #: The title Procore has (recorded at create and update; None for rows older than that).
    title: str | None = None

    @property
    def is_loaded(self) -> bool:
        return self.state == "loaded" and self.target_id is not None


_MAP_COLUMNS = (
    "m.source_id, m.target_id, m.state, m.batch_id, m.payload_hash, m.target_status, "
    "m.attachment_ids"
)


def _map_row(row: Sequence[Any], title: str | None = None) -> MapRow:
    """A MapRow from a row holding _MAP_COLUMNS."""
    return MapRow(
        source_id=row[0],
        target_id=row[1],
        state=row[2],
        batch_id=row[3],
        payload_hash=row[4],
        target_status=row[5],
        attachment_ids=tuple(json.loads(row[6])) if row[6] else (),
        title=title,
    )


def id_map_rows(store: Store, entity: str, project_id: int | None) -> dict[str, MapRow]:
    """Every id_map row of ``entity`` for the Procore project, by source id (None: any
    project, one row a source id)."""
    clause, params = _project_clause(project_id, "m")
    rows = store.conn.execute(
        f"SELECT {_MAP_COLUMNS} FROM id_map m WHERE m.entity = ?{clause}", (entity, *params)
    )
    return {row[0]: _map_row(row) for row in rows}


def planned_with_map_rows(
    store: Store, project_id: int
) -> Iterator[tuple[PlanEntry, MapRow | None]]:
    """Every planned issue with its id map row for the project, in source id order.

    A stream: one row in memory at a time. Read it to the end before writing to the store.
    """
    for row in store.conn.execute(
        f"SELECT {_ENTRY_COLUMNS}, m.state, {_MAP_COLUMNS} FROM planned_issues p "
        "LEFT JOIN id_map m ON m.entity = ? AND m.source_id = p.source_id "
        "AND m.target_project_id = ? ORDER BY p.source_id",
        (ENTITY_ISSUE, project_id),
    ):
        yield PlanEntry(**_entry_fields(row)), (_map_row(row[8:]) if row[7] is not None else None)


def unplanned_map_rows(store: Store, project_id: int) -> Iterator[MapRow]:
    """Issue id map rows of the project whose source is no longer planned, in source id order.

    Their ``title`` is the one Procore has, or for rows recorded before titles were, the
    source identifier's origin title.
    """
    for row in store.conn.execute(
        f"SELECT {_MAP_COLUMNS}, COALESCE(m.title, 'BIM 360 Field issue ' || i.identifier) "
        "FROM id_map m LEFT JOIN issues i ON i.source_id = m.source_id "
        "WHERE m.entity = ? AND m.target_project_id = ? AND NOT EXISTS "
        "(SELECT 1 FROM planned_issues p WHERE p.source_id = m.source_id) ORDER BY m.source_id",
        (ENTITY_ISSUE, project_id),
    ):
        yield _map_row(row, row[7])


def loaded_count(store: Store, entity: str, project_id: int) -> int:
    """How many records of ``entity`` are loaded into the project."""
    (count,) = store.conn.execute(
        "SELECT COUNT(*) FROM id_map WHERE entity = ? AND target_project_id = ? "
        "AND state = 'loaded' AND target_id IS NOT NULL",
        (entity, project_id),
    ).fetchone()
    return int(count)


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
    for source_id, hashed in hashes.items():
        _upsert(
            store,
            entity,
            project_id,
            source_id,
            state="sent",
            batch_id=batch_id,
            payload_hash=hashed,
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
    title: str | None = None,
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
    if title is not None:
        values["title"] = title
    _upsert(store, entity, project_id, source_id, **values)


def update_loaded(
    store: Store,
    entity: str,
    project_id: int,
    source_id: str,
    *,
    payload_hash: str | None = None,
    target_status: str | None = None,
    title: str | None = None,
) -> None:
    """Change the hash, Procore status or title of a row that is already loaded."""
    sets: dict[str, Any] = {"updated_at": utc_now()}
    if payload_hash is not None:
        sets["payload_hash"] = payload_hash
    if target_status is not None:
        sets["target_status"] = target_status
    if title is not None:
        sets["title"] = title
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


def in_flight_count(store: Store, project_id: int | None) -> int:
    """id_map rows sent or pending (a create whose answer is not yet recorded); any project
    when ``project_id`` is None."""
    sql = "SELECT COUNT(*) FROM id_map WHERE state IN ('sent', 'pending')"
    params: tuple[Any, ...] = ()
    if project_id is not None:
        sql += " AND target_project_id = ?"
        params = (project_id,)
    row = store.conn.execute(sql, params).fetchone()
    return int(row[0] or 0) if row else 0


# -- counts for status and reports ---------------------------------------------------------------

#: Issue id map rows carry checklist items too (source ids ``checklist_item:…``).
_KIND_OF_ISSUE_ID = (
    "CASE WHEN source_id LIKE 'checklist_item:%' THEN 'checklist_item' ELSE 'issue' END"
)
#: A planned row neither loaded nor rejected yet (``sent`` included: a killed load).
_NOT_YET_LOADED = "(m.state IS NULL OR m.state IN ('pending', 'sent'))"


def _project_clause(project_id: int | None, alias: str = "") -> tuple[str, tuple[Any, ...]]:
    """An ``AND target_project_id = ?`` clause and its parameter; nothing for any project."""
    if project_id is None:
        return "", ()
    prefix = f"{alias}." if alias else ""
    return f" AND {prefix}target_project_id = ?", (project_id,)


def planned_issue_counts(store: Store) -> dict[str, int]:
    """source kind (issue / checklist_item) -> how many planned_issues rows."""
    return {
        kind: int(number)
        for kind, number in store.conn.execute(
            "SELECT source_kind, COUNT(*) FROM planned_issues GROUP BY source_kind"
        )
    }


def planned_location_count(store: Store) -> int:
    """How many planned_locations rows."""
    row = store.conn.execute("SELECT COUNT(*) FROM planned_locations").fetchone()
    return int(row[0] or 0) if row else 0


def issue_map_state_counts(store: Store, project_id: int | None) -> dict[tuple[str, str], int]:
    """(source kind, state) -> how many issue id_map rows; any project when None."""
    clause, params = _project_clause(project_id)
    return {
        (kind, state): int(number)
        for kind, state, number in store.conn.execute(
            f"SELECT {_KIND_OF_ISSUE_ID}, state, COUNT(*) FROM id_map WHERE entity = ?{clause} "
            "GROUP BY 1, 2",
            (ENTITY_ISSUE, *params),
        )
    }


def map_state_counts(store: Store, entity: str, project_id: int | None) -> dict[str, int]:
    """state -> how many id_map rows of ``entity``; any project when None."""
    clause, params = _project_clause(project_id)
    return {
        state: int(number)
        for state, number in store.conn.execute(
            f"SELECT state, COUNT(*) FROM id_map WHERE entity = ?{clause} GROUP BY state",
            (entity, *params),
        )
    }


def unloaded_planned_issue_counts(store: Store, project_id: int | None) -> dict[str, int]:
    """source kind -> planned issues neither loaded nor rejected yet (``sent`` counts)."""
    clause, params = _project_clause(project_id, "m")
    return {
        kind: int(number)
        for kind, number in store.conn.execute(
            "SELECT p.source_kind, COUNT(*) FROM planned_issues p LEFT JOIN id_map m "
            f"ON m.entity = ? AND m.source_id = p.source_id{clause} WHERE {_NOT_YET_LOADED} "
            "GROUP BY p.source_kind",
            (ENTITY_ISSUE, *params),
        )
    }


def unloaded_planned_location_count(store: Store, project_id: int | None) -> int:
    """Planned locations neither loaded nor rejected yet (``sent`` counts)."""
    return _unloaded_count(store, "planned_locations", ENTITY_LOCATION, project_id)


def _unloaded_count(store: Store, table: str, entity: str, project_id: int | None) -> int:
    """Rows of a planned_* ``table`` whose ``entity`` id_map row is not loaded or rejected."""
    clause, params = _project_clause(project_id, "m")
    row = store.conn.execute(
        f"SELECT COUNT(*) FROM {table} p LEFT JOIN id_map m "
        f"ON m.entity = ? AND m.source_id = p.source_id{clause} WHERE {_NOT_YET_LOADED}",
        (entity, *params),
    ).fetchone()
    return int(row[0] or 0) if row else 0


def loaded_then_deleted(store: Store, project_id: int | None) -> list[str]:
    """Source ids of loaded issues whose source was deleted or voided since, in order."""
    return [row["source_id"] for row in loaded_then_deleted_rows(store, project_id)]


# -- planned inspections (transform, issue 14) ---------------------------------------------------
# One Procore inspection template per Field checklist template and one inspection per Field
# checklist (migration 9; the JSON shapes are described in migrate/transform/inspections.py).
# Transform replaces the plan with `sync_*` (rows whose hash did not
# change keep their plan_run, so an unchanged input leaves every row byte-identical); load and
# the report read it with `planned_inspection_templates` / `planned_inspection_rows`.

_TEMPLATE_COLUMNS = ("source_id", "name", "inspection_type", "payload", "payload_hash")
_INSPECTION_COLUMNS = (
    "source_id",
    "template_source_id",
    "identifier",
    "status",
    "location_source_id",
    "responsible_contractor",
    "payload",
    "attachment_ids",
    "attachment_names",
    "payload_hash",
)


@dataclass(frozen=True, slots=True)
class PlannedInspectionTemplate:
    """One planned_inspection_templates row, payload parsed."""

    source_id: str
    name: str
    inspection_type: str
    payload: dict[str, Any]
    payload_hash: str


@dataclass(frozen=True, slots=True)
class PlannedInspection:
    """One planned_inspections row, JSON columns parsed."""

    source_id: str
    template_source_id: str
    identifier: str | None
    status: str
    location_source_id: str | None
    responsible_contractor: str | None
    payload: dict[str, Any]
    #: Checklist-level files and signatures (sent as upload_ids at create).
    attachment_ids: tuple[str, ...]
    #: attachment id → the file name Procore must show, for every file of the checklist.
    attachment_names: dict[str, str]
    payload_hash: str


class TemplateRow(NamedTuple):
    """planned_inspection_templates columns (plan_run aside), JSON as canonical text."""

    source_id: str
    name: str
    inspection_type: str
    payload: str
    payload_hash: str


class InspectionRow(NamedTuple):
    """planned_inspections columns (plan_run aside), JSON as canonical text."""

    source_id: str
    template_source_id: str
    identifier: str | None
    status: str
    location_source_id: str | None
    responsible_contractor: str | None
    payload: str
    attachment_ids: str
    attachment_names: str
    payload_hash: str


def template_payload_hash(payload: Mapping[str, Any]) -> str:
    """The hash of a planned inspection template: its payload (name, type, sections, items)."""
    return payload_hash(payload, None, ())


def inspection_payload_hash(
    payload: Mapping[str, Any] | str,
    *,
    template_source_id: str,
    status: str,
    responsible_contractor: str | None,
    location_source_id: str | None,
    attachment_ids: Sequence[str],
    attachment_names: Mapping[str, str],
    attachment_sha256s: Sequence[str],
) -> str:
    """The one hash of a planned inspection (transform writes it, load and the report check it).

    :func:`payload_hash` over the payload with the header columns folded in (``{"attachment_ids",
    "attachment_names", "payload", "responsible_contractor", "status", "template_source_id"}``),
    the location, and the sha256 of every file: the checklist's (``attachment_ids`` order) then
    each item's (item order, each item's ``attachment_ids`` order). `payload` may be given as
    its canonical JSON already (the text the row stores).
    """
    payload_json = payload if isinstance(payload, str) else canonical_json(dict(payload))
    # canonical_json of the folded dict, written around the payload's text (keys sorted).
    folded = (
        f'{{"attachment_ids":{canonical_json(list(attachment_ids))},'
        f'"attachment_names":{canonical_json(dict(attachment_names))},'
        f'"payload":{payload_json},'
        f'"responsible_contractor":{canonical_json(responsible_contractor)},'
        f'"status":{canonical_json(status)},'
        f'"template_source_id":{canonical_json(template_source_id)}}}'
    )
    return payload_hash_of_json(folded, location_source_id, attachment_sha256s)


def template_row(
    source_id: str, name: str, inspection_type: str, payload: Mapping[str, Any]
) -> TemplateRow:
    """A planned_inspection_templates row with its hash."""
    payload_json = canonical_json(dict(payload))
    return TemplateRow(
        source_id,
        name,
        inspection_type,
        payload_json,
        payload_hash_of_json(payload_json, None, ()),
    )


def inspection_row(
    source_id: str,
    template_source_id: str,
    identifier: str | None,
    status: str,
    location_source_id: str | None,
    responsible_contractor: str | None,
    payload: Mapping[str, Any],
    attachment_ids: Sequence[str],
    attachment_names: Mapping[str, str],
    attachment_sha256s: Sequence[str],
) -> InspectionRow:
    """A planned_inspections row with its hash (:func:`inspection_payload_hash`)."""
    payload_json = canonical_json(dict(payload))
    digest = inspection_payload_hash(
        payload_json,
        template_source_id=template_source_id,
        status=status,
        responsible_contractor=responsible_contractor,
        location_source_id=location_source_id,
        attachment_ids=attachment_ids,
        attachment_names=attachment_names,
        attachment_sha256s=attachment_sha256s,
    )
    return InspectionRow(
        source_id,
        template_source_id,
        identifier,
        status,
        location_source_id,
        responsible_contractor,
        payload_json,
        canonical_json(list(attachment_ids)),
        canonical_json(dict(attachment_names)),
        digest,
    )


def _sync(
    store: Store, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], run_id: int
) -> None:
    """Make `table` hold exactly `rows`: upsert each, keep plan_run where the hash is unchanged,
    delete the rest (inside the caller's transaction)."""
    updates = ", ".join(f"{column} = excluded.{column}" for column in columns[1:])
    store.conn.executemany(
        f"INSERT INTO {table} ({', '.join(columns)}, plan_run) "
        f"VALUES ({', '.join('?' for _ in columns)}, ?) "
        f"ON CONFLICT (source_id) DO UPDATE SET {updates}, plan_run = CASE "
        f"WHEN {table}.payload_hash = excluded.payload_hash THEN {table}.plan_run "
        "ELSE excluded.plan_run END",
        [(*row, run_id) for row in rows],
    )
    store.conn.execute(
        f"DELETE FROM {table} WHERE source_id NOT IN (SELECT value FROM json_each(?))",
        (json.dumps([row[0] for row in rows]),),
    )


def sync_planned_inspection_templates(
    store: Store, rows: Sequence[TemplateRow], run_id: int
) -> None:
    """Replace the planned inspection templates with `rows` (idempotent; see `_sync`)."""
    _sync(store, "planned_inspection_templates", _TEMPLATE_COLUMNS, rows, run_id)


def sync_planned_inspections(store: Store, rows: Sequence[InspectionRow], run_id: int) -> None:
    """Replace the planned inspections with `rows` (idempotent; see `_sync`)."""
    _sync(store, "planned_inspections", _INSPECTION_COLUMNS, rows, run_id)


def sync_skipped_records(
    store: Store, entities: Sequence[str], rows: Sequence[tuple[str, str, str]], run_id: int
) -> None:
    """Make skipped_records hold exactly `rows` ``(entity, source id, reason)`` for `entities`;
    a row whose reason is unchanged keeps its run."""
    wanted = {(entity, source_id): reason for entity, source_id, reason in rows}
    held = {
        (entity, source_id): reason
        for entity, source_id, reason in select_in(
            store.conn,
            "SELECT entity, source_id, reason FROM skipped_records WHERE entity IN ({marks})",
            entities,
        )
    }
    store.conn.executemany(
        "DELETE FROM skipped_records WHERE entity = ? AND source_id = ?",
        [key for key in held if key not in wanted],
    )
    store.conn.executemany(
        "INSERT OR REPLACE INTO skipped_records (entity, source_id, reason, run_id) "
        "VALUES (?, ?, ?, ?)",
        [(*key, reason, run_id) for key, reason in wanted.items() if held.get(key) != reason],
    )


def planned_inspection_templates(store: Store) -> list[PlannedInspectionTemplate]:
    """Every planned inspection template, in source id order."""
    return [
        PlannedInspectionTemplate(row[0], row[1], row[2], json.loads(row[3]), row[4])
        for row in store.conn.execute(
            f"SELECT {', '.join(_TEMPLATE_COLUMNS)} FROM planned_inspection_templates "
            "ORDER BY source_id"
        )
    ]


def _planned_inspection(row: Sequence[Any]) -> PlannedInspection:
    return PlannedInspection(
        source_id=row[0],
        template_source_id=row[1],
        identifier=row[2],
        status=row[3],
        location_source_id=row[4],
        responsible_contractor=row[5],
        payload=json.loads(row[6]),
        attachment_ids=tuple(json.loads(row[7] or "[]")),
        attachment_names=dict(json.loads(row[8] or "{}")),
        payload_hash=row[9],
    )


def planned_inspection_rows(
    store: Store, source_ids: Iterable[str] | None = None
) -> Iterator[PlannedInspection]:
    """Planned inspections (all, or these checklist ids), in source id order; a stream."""
    select = f"SELECT {', '.join(_INSPECTION_COLUMNS)} FROM planned_inspections"
    if source_ids is None:
        for row in store.conn.execute(select + " ORDER BY source_id"):
            yield _planned_inspection(row)
        return
    rows = sorted(
        select_in(store.conn, select + " WHERE source_id IN ({marks})", source_ids),
        key=lambda row: row[0],
    )
    for row in rows:
        yield _planned_inspection(row)


def planned_inspection_counts(store: Store) -> dict[str, int]:
    """How many planned inspection templates, inspections and inspection items."""
    templates = store.conn.execute("SELECT COUNT(*) FROM planned_inspection_templates").fetchone()
    inspections, items = store.conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(json_array_length(payload, '$.items')), 0) "
        "FROM planned_inspections"
    ).fetchone()
    return {"templates": int(templates[0]), "inspections": int(inspections), "items": int(items)}


def planned_inspection_hash_rows(store: Store) -> Iterator[tuple[str, Sequence[Any]]]:
    """(table, row without payload and plan_run) of every planned template then inspection,
    each by source id: what the plan hash covers (the payload enters through payload_hash)."""
    for table, columns in (
        ("planned_inspection_templates", _TEMPLATE_COLUMNS),
        ("planned_inspections", _INSPECTION_COLUMNS),
    ):
        hashed = ", ".join(column for column in columns if column != "payload")
        for row in store.conn.execute(f"SELECT {hashed} FROM {table} ORDER BY source_id"):
            yield table, tuple(row)


# -- issue 15, losses inside transform: what the plan lists about planned issues --------------

#: Description footer labels of values Procore did not take: transform writes the lines,
#: `migrate plan` finds the issues by them (here, so a read-only command imports no stage).
UNSENT_DUE_DATE = "Due date (not a date, not sent)"
UNSENT_TRADE = "Trade (no Procore trade, not sent)"


def planned_issues_with_footer_label(store: Store, label: str) -> list[tuple[str, str | None]]:
    """(source_id, identifier) of planned issues whose description has a ``label:`` line."""
    return [
        (str(row[0]), row[1])
        for row in store.conn.execute(
            "SELECT source_id, identifier FROM planned_issues "
            "WHERE instr(payload, ?) > 0 ORDER BY source_id",
            (json.dumps(f"{label}: ")[1:-1],),
        )
    ]


def planned_issue_type_counts(store: Store, source_kind: str = "issue") -> dict[str, int]:
    """Procore issue type (or "" for none) -> planned issues of `source_kind` with it."""
    return {
        str(issue_type or ""): int(number)
        for issue_type, number in store.conn.execute(
            "SELECT issue_type, COUNT(*) FROM planned_issues WHERE source_kind = ? "
            "GROUP BY issue_type",
            (source_kind,),
        )
    }


# -- inspections (load) ----------------------------------------------------------------------------
# What load and the plan read of planned_inspections with the id map (issue 14); payloads and
# templates are read with the transform block's planned_inspection_rows / _templates.
# The inspection's id map row is ``loaded`` once Procore created it; its payload hash is recorded
# only when every detail (answers, comments, files, status) is done, so a row loaded with no hash
# is an inspection a stopped run left half answered.


@dataclass(frozen=True, slots=True)
class InspectionEntry:
    """A planned_inspections row without its payload."""

    source_id: str
    template_source_id: str
    identifier: str | None
    status: str
    location_source_id: str | None
    responsible_contractor: str | None
    attachment_ids: tuple[str, ...]
    attachment_names: dict[str, str]
    payload_hash: str


_INSPECTION_ENTRY_COLUMNS = (
    "p.source_id, p.template_source_id, p.identifier, p.status, p.location_source_id, "
    "p.responsible_contractor, p.attachment_ids, p.attachment_names, p.payload_hash"
)


def _inspection_entry(row: Sequence[Any]) -> InspectionEntry:
    return InspectionEntry(
        source_id=row[0],
        template_source_id=row[1],
        identifier=row[2],
        status=row[3],
        location_source_id=row[4],
        responsible_contractor=row[5],
        attachment_ids=tuple(json.loads(row[6] or "[]")),
        attachment_names=dict(json.loads(row[7] or "{}")),
        payload_hash=row[8],
    )


def planned_inspections_with_map_rows(
    store: Store, project_id: int
) -> Iterator[tuple[InspectionEntry, MapRow | None]]:
    """Every planned inspection with its id map row for the project, in source id order."""
    for row in store.conn.execute(
        f"SELECT {_INSPECTION_ENTRY_COLUMNS}, m.state, {_MAP_COLUMNS} FROM planned_inspections p "
        "LEFT JOIN id_map m ON m.entity = ? AND m.source_id = p.source_id "
        "AND m.target_project_id = ? ORDER BY p.source_id",
        (ENTITY_INSPECTION, project_id),
    ):
        yield _inspection_entry(row), (_map_row(row[10:]) if row[9] is not None else None)


def unplanned_inspection_map_rows(store: Store, project_id: int) -> list[MapRow]:
    """Inspection id map rows of the project whose checklist is no longer planned."""
    return [
        _map_row(row)
        for row in store.conn.execute(
            f"SELECT {_MAP_COLUMNS} FROM id_map m WHERE m.entity = ? AND m.target_project_id = ? "
            "AND NOT EXISTS (SELECT 1 FROM planned_inspections p WHERE p.source_id = m.source_id) "
            "ORDER BY m.source_id",
            (ENTITY_INSPECTION, project_id),
        )
    ]


def map_rows_of(
    store: Store, entity: str, project_id: int, source_ids: Iterable[str]
) -> dict[str, MapRow]:
    """id_map rows of ``entity`` for these source ids in the project."""
    return {
        row[0]: _map_row(row)
        for row in select_in(
            store.conn,
            f"SELECT {_MAP_COLUMNS} FROM id_map m WHERE m.entity = ? "
            "AND m.target_project_id = ? AND m.source_id IN ({marks})",
            source_ids,
            (entity, project_id),
        )
    }


def attachment_files(
    store: Store, attachment_ids: Iterable[str]
) -> dict[str, tuple[str, str, str | None]]:
    """attachment id -> (sha256, content type, file name) of stored files (others left out)."""
    return {
        attachment_id: (sha256, content_type or "application/octet-stream", filename)
        for attachment_id, sha256, content_type, filename, state in select_in(
            store.conn,
            "SELECT id, sha256, content_type, filename, state FROM attachments "
            "WHERE id IN ({marks})",
            attachment_ids,
        )
        if sha256 and state == "stored"
    }


# -- inspections (report) --------------------------------------------------------------------------
# What `migrate status` and the report read of the planned inspections (issue 14 point 6).


def unloaded_planned_inspection_count(store: Store, project_id: int | None) -> int:
    """Planned inspections neither loaded nor rejected yet (``sent`` counts)."""
    return _unloaded_count(store, "planned_inspections", ENTITY_INSPECTION, project_id)


def unfinished_inspection_count(store: Store, project_id: int | None) -> int:
    """Inspections created in Procore whose answers, comments, files or status a stopped load
    left undone (their id map row is ``loaded`` without a payload hash: see load's block)."""
    clause, params = _project_clause(project_id)
    row = store.conn.execute(
        "SELECT COUNT(*) FROM id_map WHERE entity = ? AND state = 'loaded' "
        f"AND payload_hash IS NULL{clause}",
        (ENTITY_INSPECTION, *params),
    ).fetchone()
    return int(row[0] or 0) if row else 0


# -- moved from transform and report (issue 19) --------------------------------------------------

#: planned_issues columns in the order of the rows transform writes (``Planned.row``).
PLANNED_COLUMNS = (
    "source_id",
    "source_kind",
    "identifier",
    "title",
    "status",
    "priority",
    "issue_type",
    "location_source_id",
    "assignee_id",
    "due_date",
    "uuid",
    "payload",
    "attachment_ids",
    "payload_hash",
    "plan_run",
)
#: The columns the plan hash covers: all but the run that wrote the row and the payload (which
#: enters through payload_hash).
HASHED_COLUMNS = tuple(c for c in PLANNED_COLUMNS if c not in ("payload", "plan_run"))
_INSERT_PLANNED = (
    f"INSERT INTO planned_issues ({', '.join(PLANNED_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in PLANNED_COLUMNS)})"
)
_INSERT_SKIPPED = (
    "INSERT INTO skipped_records (entity, source_id, reason, run_id) VALUES (?, ?, ?, ?)"
)
_LOCATION_HASH_ORDER = "ORDER BY source_id"
_ISSUE_HASH_ORDER = "ORDER BY source_kind <> 'issue', source_kind, source_id"


def _dict_rows(store: Store, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    cursor = store.conn.execute(sql, tuple(params))
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def clear_plan(store: Store, skipped_entities: Sequence[str]) -> None:
    """Empty the plan before transform rewrites it (in the caller's transaction): every planned
    issue and location, and the skipped records of ``skipped_entities``."""
    # Children first: planned_issues references planned_locations.
    store.conn.execute("DELETE FROM planned_issues")
    store.conn.execute("DELETE FROM planned_locations")
    marks = ", ".join("?" for _ in skipped_entities)
    store.conn.execute(
        f"DELETE FROM skipped_records WHERE entity IN ({marks})", tuple(skipped_entities)
    )


def insert_planned_issues(store: Store, rows: Iterable[Sequence[Any]]) -> None:
    """Insert planned_issues rows, each holding PLANNED_COLUMNS in order."""
    store.conn.executemany(_INSERT_PLANNED, rows)


def insert_skipped(store: Store, rows: Iterable[tuple[str, str, str, int]]) -> None:
    """Insert skipped_records rows: (entity, source id, reason, run id)."""
    store.conn.executemany(_INSERT_SKIPPED, rows)


def insert_planned_locations(store: Store, rows: Iterable[Mapping[str, Any]], run_id: int) -> None:
    """Insert planned_locations rows (dicts of every column but plan_run)."""
    store.conn.executemany(
        "INSERT INTO planned_locations (source_id, path, path_text, parent_source_id, depth, "
        "is_leaf, field_area_ids, existing_target_id, plan_run) "
        "VALUES (:source_id, :path, :path_text, :parent_source_id, :depth, :is_leaf, "
        ":field_area_ids, :existing_target_id, :plan_run)",
        [{**row, "plan_run": run_id} for row in rows],
    )


def planned_location_hash_rows(store: Store) -> Iterator[Sequence[Any]]:
    """Every planned_locations row (all columns but plan_run), by source id: the plan hash's
    locations part."""
    columns = [
        row[1]
        for row in store.conn.execute("PRAGMA table_info(planned_locations)")
        if row[1] != "plan_run"
    ]
    return iter(
        store.conn.execute(
            f"SELECT {', '.join(columns)} FROM planned_locations {_LOCATION_HASH_ORDER}"
        )
    )


def planned_issue_hash_chunks(store: Store, size: int = 5000) -> Iterator[list[Any]]:
    """planned_issues rows (HASHED_COLUMNS) in the order transform writes them, ``size`` at a
    time: Field issues, then checklist items, each by source id."""
    rows = store.conn.execute(
        f"SELECT {', '.join(HASHED_COLUMNS)} FROM planned_issues {_ISSUE_HASH_ORDER}"
    )
    while chunk := rows.fetchmany(size):
        yield chunk


def loaded_issue_rows(store: Store, project_id: int | None) -> list[dict[str, Any]]:
    """Loaded issue id_map rows with what was planned for them (planned_issues, the planned
    location's path, the assignee's login), by source id; any project when None."""
    clause, params = _project_clause(project_id, "m")
    return _dict_rows(
        store,
        "SELECT m.source_id, m.target_id, m.payload_hash AS loaded_hash, m.target_status, "
        "m.attachment_ids AS sent_attachment_ids, m.updated_at, m.target_project_id, "
        "p.title, p.status, p.priority, p.issue_type, p.due_date, p.assignee_id, p.uuid, "
        "p.identifier, p.payload_hash AS planned_hash, p.attachment_ids AS planned_attachment_ids, "
        "p.location_source_id, l.path AS location_path, a.login AS assignee_login "
        "FROM id_map m "
        "LEFT JOIN planned_issues p ON p.source_id = m.source_id "
        "LEFT JOIN planned_locations l ON l.source_id = p.location_source_id "
        "LEFT JOIN target_assignees a ON a.id = p.assignee_id "
        "AND a.project_id = m.target_project_id "
        f"WHERE m.entity = ? AND m.state = 'loaded'{clause} ORDER BY m.source_id",
        (ENTITY_ISSUE, *params),
    )


def loaded_location_rows(store: Store, project_id: int | None) -> list[dict[str, Any]]:
    """Loaded location id_map rows with their planned path, by source id (source_id,
    target_id, updated_at, path, path_text); any project when None."""
    clause, params = _project_clause(project_id, "m")
    return _dict_rows(
        store,
        "SELECT m.source_id, m.target_id, m.updated_at, l.path, l.path_text FROM id_map m "
        "LEFT JOIN planned_locations l ON l.source_id = m.source_id "
        f"WHERE m.entity = ? AND m.state = 'loaded'{clause} ORDER BY m.source_id",
        (ENTITY_LOCATION, *params),
    )


def loaded_then_deleted_rows(store: Store, project_id: int | None) -> list[dict[str, Any]]:
    """Loaded issues whose source was deleted or voided since, by source id (source_id,
    identifier, procore_id, what: deleted / voided); any project when None."""
    clause, params = _project_clause(project_id, "m")
    return _dict_rows(
        store,
        "SELECT m.source_id, i.identifier, m.target_id AS procore_id, "
        "CASE WHEN i.deleted = 1 THEN 'deleted' ELSE 'voided' END AS what "
        "FROM id_map m JOIN issues i ON i.source_id = m.source_id "
        "WHERE m.entity = ? AND m.state = 'loaded' AND (i.deleted = 1 OR i.voided = 1)"
        f"{clause} ORDER BY m.source_id",
        (ENTITY_ISSUE, *params),
    )


def planned_uuids(store: Store) -> dict[str, str]:
    """Planned uuid (lower case) -> source id."""
    return {
        str(uuid).lower(): source_id
        for uuid, source_id in store.conn.execute("SELECT uuid, source_id FROM planned_issues")
    }


def known_issue_source_ids(store: Store) -> set[str]:
    """Every issue source id the staging DB knows outside quarantine: staged, planned, skipped
    or in the issue id map (any project)."""
    return {
        source_id
        for (source_id,) in store.conn.execute(
            "SELECT source_id FROM issues UNION SELECT source_id FROM planned_issues "
            "UNION SELECT source_id FROM skipped_records WHERE source_id IS NOT NULL "
            "UNION SELECT source_id FROM id_map WHERE entity = ?",
            (ENTITY_ISSUE,),
        )
    }


def skipped_counts(store: Store) -> dict[tuple[str, bool], int]:
    """(entity, whether the source id is a checklist item's) -> how many skipped_records rows."""
    return {
        (entity, bool(checklist)): int(number)
        for entity, checklist, number in store.conn.execute(
            "SELECT entity, COALESCE(source_id LIKE 'checklist_item:%', 0), COUNT(*) "
            "FROM skipped_records "
            "GROUP BY 1, 2"
        )
    }
