"""Checklists: headers paged from /fieldapi/checklists/v1, details of new and changed ones.

Like issues, the header's content hash decides which details to fetch again
(``raw_checklist_details.listing_hash`` is the header hash the stored details belong to), so
a re-run with no change fetches no details and a resumed run only the ones still missing.
Deleted checklists drop out of the header list; they are kept with ``deleted = 1``.

Known limit: a checklist item's linked-issue list shows the linked issues' current
description; only the ids are kept, so a changed description alone is not a checklist change.
"""

from __future__ import annotations

from typing import Any

from migrate.clients.bim360field import FieldSession, MalformedBody
from migrate.errors import ApiError
from migrate.extract.listing import extract_listing
from migrate.extract.normalise import Problem, map_checklist, record_id
from migrate.extract.save import save_checklists
from migrate.extract.state import Context
from migrate.store.records import save_raw_batch

LISTING_CURSOR = "checklists:listing"
LIST_PATH = "/fieldapi/checklists/v1"
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


def pending_checklist_details(ctx: Context) -> list[tuple[str, str]]:
    """(checklist id, header hash) of checklists whose details must be fetched."""
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
    return [(source_id, basis) for source_id, basis in rows]


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
        save_checklists(
            ctx,
            [
                (checklist_id, map_checklist(record, checklist_id))
                for checklist_id, record in wanted.items()
            ],
            endpoint=endpoint,
        )
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


def refresh_checklist_flags(ctx: Context) -> None:
    conn = ctx.store.conn
    with ctx.store.transaction():
        newly_deleted = conn.execute(
            f"SELECT count(*) FROM checklists WHERE deleted = 0 AND id NOT IN ({_ACTIVE})"
        ).fetchone()[0]
        ctx.tally.change("checklists", "deleted", newly_deleted)
        conn.execute(f"UPDATE checklists SET deleted = id NOT IN ({_ACTIVE})")
        conn.execute(
            "UPDATE raw_checklist_details SET deleted_at_run = ? WHERE deleted_at_run IS NULL "
            "AND source_id IN (SELECT id FROM checklists WHERE deleted = 1)",
            (ctx.run_id,),
        )


def extract_checklists(ctx: Context) -> None:
    extract_checklist_listing(ctx)
    extract_checklist_details(ctx)
    refresh_checklist_flags(ctx)
