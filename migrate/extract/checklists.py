"""Checklists: the listing, the headers, details of new and changed ones, then what joins them.

**Listing and details.** ``/fieldapi/checklists/v1`` is paged and, like issues, each listing
record's content hash decides which details to fetch again
(``raw_checklist_details.listing_hash`` is the hash the stored details belong to), so a re-run
with no change fetches no details and a resumed run only the ones still missing.

**Headers.** ``/api/get_checklist_headers`` (asked with a mobile version above 1.10, so
checklists of rich-content templates are in it) is paged into ``raw_checklist_headers``. It is
the only source of a checklist's tags, and it says outright whether a checklist is deleted.
Deletion is therefore read from the header's ``deleted`` flag; absence from the listing is the
fallback only where the headers say nothing: no header for the checklist (a header listing
that skipped it, or one whose header is gone), or a header whose ``deleted`` is missing or
null. Absence cannot be the rule, because it cannot tell "deleted" from "not listed to this
caller"; nor can it be dropped, because the header call belongs to the mobile sync API and an
older service may not carry the flag. Where the two disagree the explicit flag wins. A
checklist whose header says deleted is not fetched (its details would answer 404); one deleted
before any extract saw its details gets a row from its header (``deleted = 1``, no items), so
the deletion is on record for the plan and the report. The header listing costs one call per
100 checklists (deleted ones included) beside one detail call per checklist; the listing
stays, as it is the documented index of the details API.

**Joins** (after the details, in one transaction, for the checklists whose details were
saved this pass and those whose template changed this pass):

- each checklist item to its template item: same template, same ``position`` (Field numbers
  a template's items and the checklist items filled from them alike: seed 003 shows item
  ``position`` 2-5 with display numbers 1.-4.) and the same display type. Sections are not
  part of the key: positions are unique within a template, and a section renamed after use
  changes nothing an answer means. An item that matches nothing (its template is gone or
  malformed, or was edited after the checklist was filled) keeps ``template_item_id`` NULL
  and becomes a source problem: it is never dropped.
- each custom field value to its definition, by position (:func:`map_checklist`); when a
  template's definitions change, its checklists are mapped again from their stored details.

Known limit: a checklist item's linked-issue list shows the linked issues' current
description; only the ids are kept, so a changed description alone is not a checklist change.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from migrate.clients.bim360field import FieldSession, MalformedBody
from migrate.errors import ApiError
from migrate.extract.listing import extract_listing
from migrate.extract.normalise import (
    Definition,
    HeaderFacts,
    Problem,
    map_checklist,
    map_checklist_header,
    record_id,
)
from migrate.extract.reference import MOBILE_APP_VERSION
from migrate.extract.save import save_checklists, write_rows
from migrate.extract.state import Context
from migrate.store.db import select_in
from migrate.store.records import save_raw_batch

LISTING_CURSOR = "checklists:listing"
LIST_PATH = "/fieldapi/checklists/v1"
HEADERS_CURSOR = "checklists:headers"
HEADERS_PATH = "/api/get_checklist_headers"
_ACTIVE = "SELECT source_id FROM raw_checklists WHERE deleted_at_run IS NULL"
#: Details fetched before they are stored together; at most this many are fetched again after
#: a crash.
SAVE_EVERY = 20


def extract_checklist_listing(ctx: Context) -> None:
    extract_listing(
        ctx,
        cursor=LISTING_CURSOR,
        entity="checklists",
        raw_table="raw_checklists",
        method="GET",
        path=LIST_PATH,
        params={"project_id": ctx.project_id},
    )


def extract_checklist_headers(ctx: Context) -> None:
    extract_listing(
        ctx,
        cursor=HEADERS_CURSOR,
        entity="checklist_headers",
        raw_table="raw_checklist_headers",
        method="POST",
        path=HEADERS_PATH,
        params={"project_id": ctx.project_id, "application_version": MOBILE_APP_VERSION},
        id_key="completed_checklist_id",
    )


def header_facts(ctx: Context) -> tuple[dict[str, HeaderFacts], list[Problem]]:
    """What each current header says (deleted flag, tags), and the problems of the headers
    stored this pass (older ones were recorded when they were stored)."""
    facts: dict[str, HeaderFacts] = {}
    problems: list[Problem] = []
    rows = ctx.store.conn.execute(
        "SELECT source_id, payload, changed_run >= ? FROM raw_checklist_headers "
        "WHERE deleted_at_run IS NULL",
        (ctx.pass_id,),
    )
    for source_id, payload, fresh in rows:
        fact, mapped = map_checklist_header(json.loads(payload), source_id)
        facts[source_id] = fact
        if fresh:
            problems.extend(mapped.problems)
    return facts, problems


def pending_checklist_details(ctx: Context) -> list[tuple[str, str]]:
    """(checklist id, listing hash) of checklists whose details must be fetched: new or
    changed in the listing, and not deleted by their header."""
    rows = ctx.store.conn.execute(
        """
        SELECT h.source_id, h.content_hash FROM raw_checklists h
          LEFT JOIN raw_checklist_details d ON d.source_id = h.source_id
         WHERE h.deleted_at_run IS NULL
           AND (d.source_id IS NULL OR d.listing_hash IS NOT h.content_hash
                OR d.deleted_at_run IS NOT NULL OR (? AND d.last_seen_run < ?))
         ORDER BY h.source_id
        """,
        (int(ctx.full_refresh), ctx.pass_id),
    )
    pending = [(source_id, basis) for source_id, basis in rows]
    facts, _ = header_facts(ctx)
    return [
        (source_id, basis) for source_id, basis in pending if not _header_deleted(facts, source_id)
    ]


def _header_deleted(facts: dict[str, HeaderFacts], checklist_id: str) -> bool:
    fact = facts.get(checklist_id)
    return fact is not None and fact.deleted == 1


def template_definitions(conn: Any, template_ids: Iterable[str]) -> dict[str, list[Definition]]:
    """The live custom field definitions of each checklist template, in position order."""
    found: dict[str, list[tuple[bool, int, Definition]]] = {}
    for definition_id, name, display_type, template_id, position in select_in(
        conn,
        "SELECT f.id, f.name, f.display_type, f.container_id, f.position FROM custom_fields f "
        "JOIN raw_custom_fields r ON r.source_id = f.id AND r.deleted_at_run IS NULL "
        "WHERE f.container_type = 'Checklist' AND f.container_id IN ({marks})",
        template_ids,
    ):
        found.setdefault(template_id, []).append(
            (position is None, position or 0, Definition(definition_id, name, display_type))
        )
    return {
        template_id: [
            definition for *_, definition in sorted(rows, key=lambda r: (r[0], r[1], r[2].id))
        ]
        for template_id, rows in found.items()
    }


def _template_id(record: Any) -> str | None:
    template = record.get("template") if isinstance(record, dict) else None
    value = template.get("id") if isinstance(template, dict) else None
    return value if isinstance(value, str) and value else None


def map_details(conn: Any, records: dict[str, Any]) -> list[tuple[str, Any]]:
    """``(id, Mapped)`` of checklist details, custom field values joined to definitions."""
    definitions = template_definitions(
        conn, {t for t in map(_template_id, records.values()) if t is not None}
    )
    return [
        (
            checklist_id,
            map_checklist(record, checklist_id, definitions.get(_template_id(record) or "", [])),
        )
        for checklist_id, record in records.items()
    ]


def fetch_checklist(session: FieldSession, project_id: str, checklist_id: str) -> Any | None:
    """One checklist's complete record, or None when the source no longer has it (404)."""
    path = f"{LIST_PATH}/{checklist_id}"
    try:
        answer = session.json("GET", path, {"project_id": project_id})
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise
    if not isinstance(answer, dict):
        raise MalformedBody(
            path, str(answer)[:2048], f"a JSON {type(answer).__name__} where an object was expected"
        )
    return answer


def save_checklist_details(ctx: Context, fetched: list[tuple[str, str, Any | None]]) -> None:
    """Several fetched details ``(id, header hash, record or None if gone)``, one transaction."""
    store = ctx.store
    endpoint = f"GET {LIST_PATH}/:id"
    with store.transaction():
        problems: list[Problem] = []
        wanted: dict[str, Any] = {}
        basis: dict[str, str] = {}
        gone: list[str] = []
        for checklist_id, header_hash, record in fetched:
            if record is None:
                gone.append(checklist_id)
                continue
            source_id, problem = record_id(record, "checklists")
            if problem is None and source_id != checklist_id:
                problem = Problem(
                    "checklists",
                    checklist_id,
                    f"asked for checklist {checklist_id}, got {source_id}; ignored",
                    record,
                )
            if problem is not None:
                problems.append(problem)
                continue
            wanted[checklist_id] = record
            basis[checklist_id] = header_hash
        # Deleted since it was listed: the flags step marks it deleted.
        store.conn.executemany(
            "UPDATE raw_checklists SET deleted_at_run = ? WHERE source_id = ? AND "
            "deleted_at_run IS NULL",
            [(ctx.run_id, checklist_id) for checklist_id in gone],
        )
        saved = save_raw_batch(store, "raw_checklist_details", list(wanted.items()), ctx.run_id)
        store.conn.executemany(
            "UPDATE raw_checklist_details SET listing_hash = ? WHERE source_id = ?",
            [(basis[checklist_id], checklist_id) for checklist_id in wanted],
        )
        for checklist_id in wanted:
            ctx.tally.change("checklist_details", saved[checklist_id].change)
        save_checklists(ctx, map_details(store.conn, wanted), endpoint=endpoint)
        ctx.problems(problems, endpoint=endpoint)


def extract_checklist_details(ctx: Context) -> None:
    """Fetch details one by one (the API has no batch read); store them SAVE_EVERY at a time."""
    ctx.tally.touch("checklist_details")
    pending = pending_checklist_details(ctx)
    ctx.progress.start("checklist details", len(pending))
    ctx.note("details_start", entity="checklists", counts={"pending": len(pending)})
    fetched: list[tuple[str, str, Any | None]] = []
    try:
        for checklist_id, basis in pending:
            try:
                record = fetch_checklist(ctx.session, ctx.project_id, checklist_id)
            except MalformedBody as exc:
                with ctx.store.transaction():
                    ctx.problems(
                        [Problem("checklists", checklist_id, str(exc), exc.body_text)],
                        endpoint=f"GET {LIST_PATH}/:id",
                    )
                if "checklist_details" not in ctx.tally.incomplete:
                    ctx.tally.incomplete.append("checklist_details")
                continue
            fetched.append((checklist_id, basis, record))
            if len(fetched) >= SAVE_EVERY:
                save_checklist_details(ctx, fetched)
                ctx.progress.advance("checklist details", len(fetched))
                fetched = []
        save_checklist_details(ctx, fetched)
        ctx.progress.advance("checklist details", len(fetched))
    finally:
        ctx.progress.finish("checklist details")


#: Live checklists not saved this pass whose template's custom field definitions changed (or one
#: went) this pass.
_REMAP_SCOPE = """
    SELECT d.source_id FROM raw_checklist_details d
      JOIN checklists c ON c.id = d.source_id
     WHERE c.deleted = 0 AND d.deleted_at_run IS NULL AND d.last_seen_run < ?
       AND c.template_id IN (
           SELECT f.container_id FROM custom_fields f
             JOIN raw_custom_fields r ON r.source_id = f.id
            WHERE f.container_type = 'Checklist'
              AND (r.changed_run >= ? OR r.deleted_at_run >= ?))
     ORDER BY d.source_id
"""


def remap_for_new_definitions(ctx: Context) -> None:
    """Map again, from their stored details, the live checklists of templates whose custom
    field definitions changed this pass and whose details were not saved this pass (those
    were joined to the new definitions already)."""
    conn = ctx.store.conn
    ids = [
        source_id
        for (source_id,) in conn.execute(_REMAP_SCOPE, (ctx.pass_id, ctx.pass_id, ctx.pass_id))
    ]
    if not ids:
        return
    ctx.note("checklists_remapped", counts={"checklists": len(ids)})
    for start in range(0, len(ids), SAVE_EVERY):
        part = {
            source_id: json.loads(payload)
            for source_id, payload in select_in(
                conn,
                "SELECT source_id, payload FROM raw_checklist_details WHERE source_id IN ({marks})",
                ids[start : start + SAVE_EVERY],
            )
        }
        with ctx.store.transaction():
            save_checklists(ctx, map_details(conn, part), endpoint=f"GET {LIST_PATH}/:id (stored)")
            # Joined again below, with every checklist saved this pass.
            conn.executemany(
                "UPDATE raw_checklist_details SET last_seen_run = ? WHERE source_id = ?",
                [(ctx.run_id, source_id) for source_id in part],
            )


def refresh_checklist_flags(ctx: Context) -> None:
    """Deleted flags and tags from the headers (absence from the listing as the fallback),
    then the template item of every checklist item this pass touched."""
    conn = ctx.store.conn
    facts, problems = header_facts(ctx)
    active = {source_id for (source_id,) in conn.execute(_ACTIVE)}
    with ctx.store.transaction():
        ctx.problems(problems, endpoint=f"POST {HEADERS_PATH}")
        updates: list[tuple[int, str | None, str]] = []
        newly_deleted = 0
        for checklist_id, deleted, tags in conn.execute(
            "SELECT id, deleted, tags FROM checklists"
        ).fetchall():
            fact = facts.get(checklist_id)
            if fact is not None and fact.deleted is not None:
                now_deleted = fact.deleted
            else:
                now_deleted = int(checklist_id not in active)
            now_tags = None if fact is None else fact.tags
            if (now_deleted, now_tags) != (deleted, tags):
                updates.append((now_deleted, now_tags, checklist_id))
                newly_deleted += now_deleted and not deleted
        conn.executemany("UPDATE checklists SET deleted = ?, tags = ? WHERE id = ?", updates)
        # A checklist deleted before any extract saw its details: on record from its header.
        known = {checklist_id for (checklist_id,) in conn.execute("SELECT id FROM checklists")}
        header_only = [
            fact.row
            for checklist_id, fact in facts.items()
            if fact.deleted == 1 and checklist_id not in known
        ]
        write_rows(ctx, header_only, "checklists", "id")
        ctx.tally.change("checklists", "deleted", newly_deleted + len(header_only))
        conn.execute(
            "UPDATE raw_checklist_details SET deleted_at_run = ? WHERE deleted_at_run IS NULL "
            "AND source_id IN (SELECT id FROM checklists WHERE deleted = 1)",
            (ctx.run_id,),
        )
        join_template_items(ctx)


#: Checklists whose items are joined this pass: details saved this pass, or template changed.
_JOIN_SCOPE = """
    SELECT c.id FROM checklists c
     WHERE ?
        OR c.id IN (SELECT source_id FROM raw_checklist_details WHERE last_seen_run >= ?)
        OR c.template_id IN (SELECT source_id FROM raw_checklist_templates WHERE changed_run >= ?)
"""


def join_template_items(ctx: Context) -> None:
    """``checklist_items.template_item_id`` for the checklists in scope (module docstring);
    every item left unjoined is a source problem (one per checklist when its whole template is
    missing)."""
    conn = ctx.store.conn
    scope = (int(ctx.full_refresh), ctx.pass_id, ctx.pass_id)
    conn.execute(
        f"""
        UPDATE checklist_items SET template_item_id = (
            SELECT t.id FROM checklist_template_items t
              JOIN checklists c ON c.id = checklist_items.checklist_id
             WHERE t.template_id = c.template_id AND t.position = checklist_items.position
               AND t.display_type IS checklist_items.display_type)
         WHERE checklist_id IN ({_JOIN_SCOPE})
        """,
        scope,
    )
    unjoined = conn.execute(
        f"""
        SELECT i.id, i.checklist_id, c.template_id, c.template_name,
               EXISTS (SELECT 1 FROM checklist_templates t WHERE t.id = c.template_id),
               i.position, i.display_type, i.question_text,
               (SELECT json_object('id', t.id, 'display_type', t.display_type,
                                   'question_text', t.question_text)
                  FROM checklist_template_items t
                 WHERE t.template_id = c.template_id AND t.position = i.position)
          FROM checklist_items i JOIN checklists c ON c.id = i.checklist_id
         WHERE i.template_item_id IS NULL AND c.deleted = 0 AND i.checklist_id IN ({_JOIN_SCOPE})
         ORDER BY i.checklist_id, i.position, i.id
        """,
        scope,
    ).fetchall()
    problems: list[Problem] = []
    missing_template: dict[tuple[str, str | None], list[str]] = {}
    for (
        item_id,
        checklist_id,
        template_id,
        template_name,
        template_known,
        position,
        display_type,
        question,
        candidate,
    ) in unjoined:
        if not template_known:
            missing_template.setdefault((checklist_id, template_id), []).append(item_id)
            continue
        found = (
            f"its item at that position is {json.loads(candidate)['display_type']!r}"
            if candidate
            else "it has no item at that position"
        )
        problems.append(
            Problem(
                "checklist_items",
                item_id,
                f"checklist {checklist_id}: item {item_id} (position {position}, "
                f"{display_type!r}: {question!r}) matches no item of template {template_id} "
                f"({template_name!r}): {found}; kept with template_item_id NULL",
                {
                    "checklist_id": checklist_id,
                    "position": position,
                    "display_type": display_type,
                    "template_item": json.loads(candidate) if candidate else None,
                },
            )
        )
    for (checklist_id, template_id), item_ids in missing_template.items():
        problems.append(
            Problem(
                "checklists",
                checklist_id,
                f"checklist {checklist_id}: its template {template_id} is not among the "
                "templates /api/templates gave (gone, or malformed: see its own problem), so "
                f"none of its {len(item_ids)} items is joined to a template item; kept with "
                "template_item_id NULL",
                {"template_id": template_id, "item_ids": item_ids},
            )
        )
    ctx.problems(problems, endpoint=f"POST /api/templates + GET {LIST_PATH}/:id")


def extract_checklists(ctx: Context) -> None:
    extract_checklist_listing(ctx)
    extract_checklist_headers(ctx)
    extract_checklist_details(ctx)
    remap_for_new_definitions(ctx)
    refresh_checklist_flags(ctx)
