"""Paged listings (get_issues, checklist headers): one page, one transaction, one cursor step.

A page's raw records and the cursor that points past it commit together, so a resumed pass
starts at the first page not yet stored and never asks for a stored page again. When the last
(short) page is stored, records the pass did not see are marked deleted in the raw table, in
the same transaction; if a page could not be read, deletions are not inferred this pass.

An id listed twice in one pass (on one page, or on two) is a source problem, like a duplicate
area: the first record is kept, the second is recorded in ``source_problems`` with both raw
records, and the listing goes on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from migrate.clients.bim360field import FieldSession, MalformedBody
from migrate.errors import MigrateError
from migrate.extract.normalise import Problem, duplicate_id, record_id
from migrate.extract.raw import save_raw_batch
from migrate.extract.state import CURSOR_PREFIX, Context
from migrate.store import mark_missing
from migrate.store.cursors import clear_cursors
from migrate.store.db import select_in

#: After this many unreadable pages in a row the listing gives up for this pass.
MAX_BAD_PAGES = 3

#: Asked once a listing has read its last page: None when the listing is whole, otherwise why
#: it is not (a sentence naming the counts). Runs before anything is marked deleted.
WholeCheck = Callable[[], str | None]


class ListingNotWhole(MigrateError):
    """A finished listing holds fewer (or more) records than the source counts.

    Nothing is marked deleted and the pass is abandoned, so the next run lists again from the
    start. Exit 1: the staging DB is intact; the login or the source has to change.
    """


def fetch_page(
    session: FieldSession, method: str, path: str, params: dict[str, Any], offset: int
) -> list[Any]:
    """One page of an offset/limit listing (at most ``session.page_size`` records)."""
    rows = session.json(method, path, {**params, "offset": offset, "limit": session.page_size})
    if not isinstance(rows, list):
        raise MalformedBody(
            path, str(rows)[:2048], f"a JSON {type(rows).__name__} where a list was expected"
        )
    return rows


def save_page(
    ctx: Context,
    *,
    cursor: str,
    entity: str,
    raw_table: str,
    rows: list[Any],
    offset: int,
    last: bool,
    incomplete: bool,
    endpoint: str,
    id_key: str = "id",
) -> None:
    """Store one page's raw records and move the cursor past it, in one transaction."""
    store = ctx.store
    with store.transaction():
        problems: list[Problem] = []
        records: dict[str, Any] = {}
        where = f"one listing ({endpoint}, again at offset {offset})"
        for record in rows:
            source_id, problem = record_id(record, entity, id_key)
            if problem is not None or source_id is None:
                problems.extend([problem] if problem is not None else [])
            elif source_id in records:
                problems.append(duplicate_id(entity, source_id, records[source_id], record, where))
            else:
                records[source_id] = record
        for source_id, first in listed_earlier(ctx, raw_table, list(records)).items():
            problems.append(duplicate_id(entity, source_id, first, records.pop(source_id), where))
        saved_records = save_raw_batch(store, raw_table, list(records.items()), ctx.run_id)
        for saved in saved_records.values():
            ctx.tally.change(entity, saved.change)
        ctx.problems(problems, endpoint=endpoint)
        if last and not incomplete:
            # Every record this pass saw has last_seen_run >= the pass's first run.
            gone = mark_missing(store, raw_table, ctx.pass_id, ctx.run_id)
            ctx.note("listing_missing", entity=entity, counts={"missing": len(gone)})
        ctx.set_cursor(cursor, offset + len(rows), done=last, incomplete=incomplete)


def listed_earlier(ctx: Context, raw_table: str, source_ids: list[str]) -> dict[str, Any]:
    """Raw records of ``source_ids`` already stored by an earlier page of this pass's listing.

    A record stored in this pass has ``last_seen_run`` at or after the pass's first run; the
    raw table belongs to this listing alone.
    """
    return {
        source_id: json.loads(payload)
        for source_id, payload in select_in(
            ctx.store.conn,
            f"SELECT source_id, payload FROM {raw_table} "
            "WHERE last_seen_run >= ? AND source_id IN ({marks})",
            source_ids,
            (ctx.pass_id,),
        )
    }


def extract_listing(
    ctx: Context,
    *,
    cursor: str,
    entity: str,
    raw_table: str,
    method: str,
    path: str,
    params: dict[str, Any],
    id_key: str = "id",
    check_whole: WholeCheck | None = None,
) -> None:
    """Page through a listing from this pass's cursor to the short page (records keyed by
    ``id_key``).

    With ``check_whole``, the last page is stored without inferring deletions, then the check
    decides: whole, the missing records are marked deleted as usual; not whole, the pass is
    abandoned and ListingNotWhole raised (a killed run re-reads an empty last page and checks
    again).
    """
    offset, state = ctx.cursor(cursor)
    if state.get("done"):
        return
    incomplete = bool(state.get("incomplete"))
    endpoint = f"{method} {path}"
    bad_pages = 0
    page_size = ctx.session.page_size
    ctx.tally.touch(entity)
    ctx.progress.start(entity, None)
    ctx.note("listing_start", entity=entity, offset=offset)
    try:
        while True:
            try:
                rows = fetch_page(ctx.session, method, path, params, offset)
            except MalformedBody as exc:
                # Skip the unreadable page; without it the listing is not whole, so nothing
                # may be marked deleted this pass.
                bad_pages += 1
                incomplete = True
                give_up = bad_pages >= MAX_BAD_PAGES
                with ctx.store.transaction():
                    ctx.problems(
                        [Problem(entity, None, f"page at offset {offset}: {exc}", exc.body_text)],
                        endpoint=endpoint,
                    )
                    ctx.set_cursor(cursor, offset + page_size, done=give_up, incomplete=True)
                if entity not in ctx.tally.incomplete:
                    ctx.tally.incomplete.append(entity)
                if give_up:
                    return
                offset += page_size
                continue
            bad_pages = 0
            last = len(rows) < page_size
            checked_last = last and check_whole is not None and not incomplete
            save_page(
                ctx,
                cursor=cursor,
                entity=entity,
                raw_table=raw_table,
                rows=rows,
                offset=offset,
                last=last and not checked_last,
                incomplete=incomplete,
                endpoint=endpoint,
                id_key=id_key,
            )
            ctx.progress.advance(entity, len(rows))
            if checked_last:
                assert check_whole is not None
                _finish_checked(ctx, cursor, raw_table, entity, endpoint, check_whole())
            if last:
                break
            offset += len(rows)
        ctx.note("listing_done", entity=entity, counts=dict(ctx.tally.counts[entity]))
    finally:
        ctx.progress.finish(entity)


def _finish_checked(
    ctx: Context, cursor: str, raw_table: str, entity: str, endpoint: str, why_not: str | None
) -> None:
    store = ctx.store
    offset, _state = ctx.cursor(cursor)
    with store.transaction():
        if why_not is None:
            gone = mark_missing(store, raw_table, ctx.pass_id, ctx.run_id)
            ctx.note("listing_missing", entity=entity, counts={"missing": len(gone)})
            ctx.set_cursor(cursor, offset, done=True, incomplete=False)
            return
        ctx.problems([Problem(entity, None, why_not, None)], endpoint=endpoint)
        # Records of this pass would read as listed twice if the same pass listed again.
        clear_cursors(store, CURSOR_PREFIX)
    ctx.note("listing_not_whole", entity=entity, reason=why_not)
    raise ListingNotWhole(
        f"{why_not} Nothing was marked deleted. Make sure the BIM 360 Field login sees every "
        "issue of the project (no saved default filter, a project role with access to all "
        "issues), then run `migrate extract` again: it lists from the start."
    )
