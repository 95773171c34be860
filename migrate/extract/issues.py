"""Issues: listing, voided ids, complete records (retrieve), status history, flags.

BIM 360 Field has no reliable updated-since filter, so change detection is by content hash:

1. the mobile listing (``/api/get_issues``, 100 a page) is stored in ``raw_issues``; its records
   carry ``updated_at`` and every comment and attachment, so their hash moves on any change;
   it asks for all issues (``default_to_all_issues``) and, before inferring deletions, checks
   that it plus the voided ids are every issue the search counts, else it stops
   (ListingNotWhole) rather than take hidden issues for deleted ones;
2. ``/api/get_voided_issues`` gives the voided ids (the listing leaves voided issues out),
   read before the listing;
3. only issues whose listing hash differs from the one their stored details were retrieved
   for (``raw_issue_details.listing_hash``), or that became voided, are retrieved again,
   100 ids a call. This is derived from the DB, so a resumed run retrieves only the rest;
4. status history (one call for the project) is fetched when any issue was retrieved;
5. flags: voided / deleted and names copied from reference tables, by SQL.

Known limit: a voided issue is not listed, so an edit made while it stays voided is only
picked up by ``--full-refresh``.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from typing import IO, Any

from migrate.clients.bim360field import MAX_RETRIEVE_IDS, FieldSession, MalformedBody
from migrate.errors import ApiError
from migrate.extract.listing import extract_listing
from migrate.extract.normalise import Mapped, Problem, map_issue, map_status_history, record_id
from migrate.extract.save import delete_where_in, insert_rows, save_issue_batch
from migrate.extract.state import Context
from migrate.store import Change, mark_missing
from migrate.store.db import execute_in, select_in
from migrate.store.records import save_raw_batch, storable_text

LISTING_CURSOR = "issues:listing"
VOIDED_CURSOR = "issues:voided"
HISTORY_CURSOR = "issues:history"
#: Issues whose status history is stored per step (see extract_status_history).
HISTORY_SLICE = 2000
RETRIEVE_PATH = "/fieldapi/issues/v1/retrieve"
SEARCH_PATH = "/fieldapi/issues/v1/search"
VOIDED_BASIS = "voided"

_ACTIVE_LISTED = "SELECT source_id FROM raw_issues WHERE deleted_at_run IS NULL"
_ACTIVE_VOIDED = "SELECT source_id FROM raw_voided_issues WHERE deleted_at_run IS NULL"


# -- 1. listing ----------------------------------------------------------------------------------


def extract_issue_listing(ctx: Context) -> None:
    extract_listing(
        ctx,
        cursor=LISTING_CURSOR,
        entity="issues",
        raw_table="raw_issues",
        method="POST",
        path="/api/get_issues",
        # Without it a login's saved default filter may decide what is listed (seed 003).
        params={"project_id": ctx.project_id, "default_to_all_issues": "true"},
        check_whole=lambda: listing_not_whole(ctx),
    )


def listing_not_whole(ctx: Context) -> str | None:
    """None when the listing plus the voided ids are every issue the search counts.

    The search's default filter is All Issues (seed 003) and includes voided issues, which the
    mobile listing leaves out (or not: the union counts each issue once either way). Asked
    after the listing's last page and before anything is marked deleted from it.
    """
    if "voided_issues" in ctx.tally.incomplete:
        ctx.note("listing_unchecked", reason="the voided ids could not be read this pass")
        return None
    answer = ctx.session.project_call("POST", SEARCH_PATH, count="1")
    total = answer.get("count") if isinstance(answer, dict) else None
    if isinstance(total, str) and total.isdigit():
        total = int(total)
    if not isinstance(total, int) or isinstance(total, bool):
        return (
            f"BIM 360 Field's issue search answered {str(answer)[:80]!r} where a count was "
            "expected, so the listing could not be checked."
        )
    (listed,) = ctx.store.conn.execute(
        "SELECT count(*) FROM (SELECT source_id FROM raw_issues WHERE last_seen_run >= ? "
        f"UNION {_ACTIVE_VOIDED})",
        (ctx.pass_id,),
    ).fetchone()
    if listed == total:
        return None
    return (
        f"BIM 360 Field listed {listed} issues (voided ones included) but its search counts "
        f"{total}."
    )


# -- 2. voided ---------------------------------------------------------------------------------


def fetch_voided_ids(session: FieldSession) -> Any:
    return session.project_call("POST", "/api/get_voided_issues")


def extract_voided(ctx: Context) -> None:
    """Voided issue ids -> raw_voided_issues (ids no longer voided are marked deleted there)."""
    ctx.tally.touch("voided_issues")
    if ctx.is_done(VOIDED_CURSOR):
        return
    endpoint = "POST /api/get_voided_issues"
    try:
        answer = fetch_voided_ids(ctx.session)
    except MalformedBody as exc:
        with ctx.store.transaction():
            ctx.problems(
                [Problem("voided_issues", None, str(exc), exc.body_text)], endpoint=endpoint
            )
        ctx.tally.incomplete.append("voided_issues")
        return
    problems: list[Problem] = []
    if not isinstance(answer, list):
        problems.append(
            Problem(
                "voided_issues",
                None,
                "get_voided_issues answered with "
                f"{type(answer).__name__}, not a list of ids; nothing stored",
                answer,
            )
        )
        with ctx.store.transaction():
            ctx.problems(problems, endpoint=endpoint)
        ctx.tally.incomplete.append("voided_issues")
        return
    ids: list[str] = []
    for value in answer:
        if isinstance(value, str) and value and storable_text(value) == value:
            ids.append(value)
        else:
            problems.append(
                Problem(
                    "voided_issues",
                    None,
                    f"a voided issue id is not text ({json.dumps(value)[:60]}); ignored",
                    value,
                )
            )
    with ctx.store.transaction():
        saved = save_raw_batch(
            ctx.store,
            "raw_voided_issues",
            [(issue_id, {"id": issue_id}) for issue_id in ids],
            ctx.run_id,
        )
        for result in saved.values():
            ctx.tally.change("voided_issues", result.change)
        gone = mark_missing(ctx.store, "raw_voided_issues", ids, ctx.run_id)
        ctx.tally.change("voided_issues", "deleted", len(gone))
        ctx.problems(problems, endpoint=endpoint)
        ctx.mark_done(VOIDED_CURSOR)


# -- 3. details -----------------------------------------------------------------------------------


def pending_issue_details(ctx: Context) -> list[tuple[str, str]]:
    """(issue id, basis) of issues to retrieve: new, changed, newly voided or back again.

    The basis is the listing hash the details will correspond to ("voided" for voided issues,
    which are not listed). With a full refresh, every issue not yet retrieved in this pass.
    """
    rows = ctx.store.conn.execute(
        f"""
        WITH wanted(source_id, basis) AS (
            SELECT source_id, content_hash FROM raw_issues
             WHERE deleted_at_run IS NULL AND source_id NOT IN ({_ACTIVE_VOIDED})
            UNION ALL
            SELECT source_id, ? FROM raw_voided_issues WHERE deleted_at_run IS NULL
        )
        SELECT w.source_id, w.basis FROM wanted w
          LEFT JOIN raw_issue_details d ON d.source_id = w.source_id
         WHERE d.source_id IS NULL OR d.listing_hash IS NOT w.basis
            OR d.deleted_at_run IS NOT NULL OR (? AND d.last_seen_run < ?)
         ORDER BY w.source_id
        """,
        (VOIDED_BASIS, int(ctx.full_refresh), ctx.pass_id),
    )
    return [(source_id, basis) for source_id, basis in rows]


def fetch_issue_details(session: FieldSession, ids: Sequence[str]) -> tuple[list[Any], list[str]]:
    """Complete records for ``ids`` (at most 100), and the ids the source no longer has.

    retrieve answers 404 for the whole call when any id is unknown (deleted since it was
    listed), so a 404 splits the batch until the missing ids are found.
    """
    try:
        answer = session.project_call("POST", RETRIEVE_PATH, ids=",".join(ids))
    except ApiError as exc:
        if exc.status != 404:
            raise
        if len(ids) == 1:
            return [], list(ids)
        middle = len(ids) // 2
        first, first_gone = fetch_issue_details(session, ids[:middle])
        second, second_gone = fetch_issue_details(session, ids[middle:])
        return first + second, first_gone + second_gone
    if not isinstance(answer, list):
        raise MalformedBody(
            RETRIEVE_PATH,
            str(answer)[:2048],
            f"a JSON {type(answer).__name__} where a list was expected",
        )
    return answer, []


def _custom_field_positions(ctx: Context) -> dict[str, int]:
    return {
        field_id: position
        for field_id, position in ctx.store.conn.execute(
            "SELECT id, position FROM custom_fields WHERE position IS NOT NULL"
        )
    }


def save_issue_details(
    ctx: Context,
    batch: Sequence[tuple[str, str]],
    records: list[Any],
    gone: Sequence[str],
    positions: dict[str, int],
) -> None:
    """One retrieve batch: raw details with their basis, normalised rows, ids now gone."""
    store = ctx.store
    conn = store.conn
    endpoint = f"POST {RETRIEVE_PATH}"
    basis = dict(batch)
    ids = list(basis)
    listings = {
        source_id: json.loads(payload)
        for source_id, payload in select_in(
            conn,
            "SELECT source_id, payload FROM raw_issues WHERE deleted_at_run IS NULL AND "
            "source_id IN ({marks})",
            ids,
        )
    }
    voided = {
        source_id
        for (source_id,) in select_in(conn, _ACTIVE_VOIDED + " AND source_id IN ({marks})", ids)
    }
    with store.transaction():
        mapped = Mapped()
        wanted: dict[str, Any] = {}
        for record in records:
            source_id, problem = record_id(record, "issues")
            if problem is None and (source_id not in basis or source_id in wanted):
                problem = Problem(
                    "issues",
                    source_id,
                    f"retrieve returned issue {source_id} "
                    "that was not asked for (or twice); ignored",
                    record,
                )
            if problem is not None:
                mapped.problems.append(problem)
                continue
            assert source_id is not None
            wanted[source_id] = record
        stored = save_raw_batch(store, "raw_issue_details", list(wanted.items()), ctx.run_id)
        conn.executemany(
            "UPDATE raw_issue_details SET listing_hash = ? WHERE source_id = ?",
            [(basis[source_id], source_id) for source_id in wanted],
        )
        for source_id, record in wanted.items():
            ctx.tally.change("issue_details", stored[source_id].change)
            mapped.extend(
                map_issue(
                    record,
                    source_id,
                    listings.get(source_id),
                    content_hash=stored[source_id].digest,
                    voided=source_id in voided,
                    custom_field_positions=positions,
                )
            )
        saved = list(wanted)
        for source_id in ids:
            if source_id not in saved and source_id not in gone:
                mapped.problems.append(
                    Problem(
                        "issues",
                        source_id,
                        f"retrieve did not return issue {source_id}; it is "
                        "asked for again by the next run",
                        None,
                    )
                )
        save_issue_batch(ctx, mapped, saved, endpoint=endpoint)
        if gone:
            # Deleted between listing and retrieve: the flags step marks the issue deleted.
            for table in ("raw_issues", "raw_voided_issues"):
                execute_in(
                    conn,
                    f"UPDATE {table} SET deleted_at_run = ? WHERE deleted_at_run IS NULL AND "
                    "source_id IN ({marks})",
                    gone,
                    (ctx.run_id,),
                )
            ctx.note("issues_gone", counts={"gone": len(gone)})


def extract_issue_details(ctx: Context) -> None:
    ctx.tally.touch("issue_details")
    pending = pending_issue_details(ctx)
    ctx.progress.start("issue details", len(pending))
    ctx.note("details_start", entity="issues", counts={"pending": len(pending)})
    positions = _custom_field_positions(ctx)
    try:
        for start in range(0, len(pending), MAX_RETRIEVE_IDS):
            batch = pending[start : start + MAX_RETRIEVE_IDS]
            try:
                records, gone = fetch_issue_details(ctx.session, [i for i, _ in batch])
            except MalformedBody as exc:
                with ctx.store.transaction():
                    ctx.problems(
                        [
                            Problem(
                                "issues",
                                None,
                                f"retrieve of {len(batch)} issues: {exc}",
                                exc.body_text,
                            )
                        ],
                        endpoint=f"POST {RETRIEVE_PATH}",
                    )
                ctx.tally.incomplete.append("issue_details")
                continue
            save_issue_details(ctx, batch, records, gone, positions)
            ctx.progress.advance("issue details", len(batch))
    finally:
        ctx.progress.finish("issue details")


# -- 4. status history ---------------------------------------------------------------------------


def _history_needed(ctx: Context) -> bool:
    if ctx.full_refresh:
        return True
    conn = ctx.store.conn
    retrieved = conn.execute(
        "SELECT 1 FROM raw_issue_details WHERE last_seen_run >= ? LIMIT 1", (ctx.pass_id,)
    ).fetchone()
    never = conn.execute(
        "SELECT 1 FROM issues i WHERE i.deleted = 0 AND NOT EXISTS "
        "(SELECT 1 FROM raw_issue_changes c WHERE c.source_id = i.source_id) LIMIT 1"
    ).fetchone()
    return retrieved is not None or never is not None


def fetch_status_history(session: FieldSession, project_id: str, spool: IO[bytes]) -> Iterator[Any]:
    """Every status change of the project's issues (one call), read one change at a time."""
    return session.json_array(
        "GET", f"/api/v1/projects/{project_id}/issue_changes", {"project_id": project_id}, spool
    )


def extract_status_history(ctx: Context) -> None:
    """issue_changes -> raw_issue_changes (one record per issue) and issue_status_history.

    Status changes move an issue's ``updated_at``, so when no issue was retrieved in this pass
    the history cannot have changed and the call is skipped.

    The one answer holds the whole project's history (about 280 000 changes at 100 000
    issues): it is downloaded to a temporary file, read one change at a time into a temporary
    table, and stored a slice of issues at a time, so memory holds one slice, not the project.
    """
    ctx.tally.touch("issue_changes")
    if ctx.is_done(HISTORY_CURSOR):
        return
    endpoint = "GET /api/v1/projects/:id/issue_changes"
    if not _history_needed(ctx):
        with ctx.store.transaction():
            ctx.mark_done(HISTORY_CURSOR)
        return
    conn = ctx.store.conn
    try:
        try:
            problems = _stage_history(ctx)
        except MalformedBody as exc:
            with ctx.store.transaction():
                ctx.problems(
                    [Problem("issue_changes", None, str(exc), exc.body_text)], endpoint=endpoint
                )
            ctx.tally.incomplete.append("issue_changes")
            return
        _store_history(ctx, problems, endpoint)
    finally:
        # DDL, not DELETE: a DELETE outside a transaction would open one implicitly.
        conn.execute("DROP TABLE IF EXISTS temp.history_changes")


def _stage_history(ctx: Context) -> list[Problem]:
    """Download the answer and stage its changes in temp.history_changes; the problems found.

    All or nothing: a body that is not one JSON array rolls the staged changes back.
    """
    conn = ctx.store.conn
    problems: list[Problem] = []
    with tempfile.TemporaryFile() as spool, ctx.store.transaction():
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS history_changes "
            "(seq INTEGER PRIMARY KEY, issue_id TEXT NOT NULL, change TEXT NOT NULL)"
        )
        rows: list[tuple[str, str]] = []
        for change in fetch_status_history(ctx.session, ctx.project_id, spool):
            issue_id, problem = record_id(change, "issue_changes")
            if problem is not None:
                problems.append(problem)
                continue
            assert issue_id is not None  # record_id gives an id or a problem
            rows.append((issue_id, json.dumps(change, ensure_ascii=False)))
            if len(rows) >= _HISTORY_ROWS_PER_INSERT:
                _insert_history_rows(conn, rows)
        _insert_history_rows(conn, rows)
    return problems


def _store_history(ctx: Context, problems: list[Problem], endpoint: str) -> None:
    """Store the staged changes a slice of issues at a time (raw records and history rows)."""
    store = ctx.store
    conn = store.conn
    known = {source_id for (source_id,) in conn.execute("SELECT source_id FROM issues")}
    # Issues created after the listing are left for the next run (issue and history).
    issue_ids = [
        issue_id
        for (issue_id,) in conn.execute(
            "SELECT issue_id FROM temp.history_changes GROUP BY issue_id ORDER BY MIN(seq)"
        )
        if issue_id in known
    ]
    del known
    with store.transaction():
        without = {
            source_id
            for (source_id,) in conn.execute(
                "SELECT i.source_id FROM issues i WHERE NOT EXISTS (SELECT 1 FROM "
                "issue_status_history h WHERE h.issue_id = i.source_id)"
            )
        }
        for start in range(0, len(issue_ids), HISTORY_SLICE):
            problems += _save_history_slice(
                ctx, _history_of(conn, issue_ids[start : start + HISTORY_SLICE]), without
            )
        gone = mark_missing(store, "raw_issue_changes", issue_ids, ctx.run_id)
        ctx.tally.change("issue_changes", "deleted", len(gone))
        ctx.problems(problems, endpoint=endpoint)
        ctx.mark_done(HISTORY_CURSOR)


#: Changes inserted into the temporary table per statement.
_HISTORY_ROWS_PER_INSERT = 5000


def _insert_history_rows(conn: sqlite3.Connection, rows: list[tuple[str, str]]) -> None:
    conn.executemany("INSERT INTO temp.history_changes (issue_id, change) VALUES (?, ?)", rows)
    rows.clear()


def _history_of(conn: sqlite3.Connection, issue_ids: Sequence[str]) -> dict[str, list[Any]]:
    """The staged changes of these issues, by issue, each issue's in the order received."""
    grouped: dict[str, list[Any]] = {issue_id: [] for issue_id in issue_ids}
    rows = sorted(
        select_in(
            conn,
            "SELECT seq, issue_id, change FROM temp.history_changes WHERE issue_id IN ({marks})",
            issue_ids,
        )
    )
    for _seq, issue_id, change in rows:
        grouped[issue_id].append(json.loads(change))
    return grouped


def _save_history_slice(
    ctx: Context, changes_by_issue: dict[str, list[Any]], without: set[str]
) -> list[Problem]:
    """Store some issues' changes (raw, and as status history rows where they changed or the
    issue has none yet); the problems found mapping them."""
    rewrite: list[str] = []
    mapped = Mapped()
    stored = save_raw_batch(
        ctx.store, "raw_issue_changes", list(changes_by_issue.items()), ctx.run_id
    )
    for issue_id, saved in stored.items():
        change = saved.change
        ctx.tally.change("issue_changes", change)
        if change is not Change.UNCHANGED or ctx.full_refresh or issue_id in without:
            rewrite.append(issue_id)
            mapped.extend(map_status_history(issue_id, changes_by_issue[issue_id]))
    delete_where_in(ctx, "issue_status_history", "issue_id", rewrite)
    insert_rows(ctx, mapped, "issue_status_history")
    return mapped.problems


# -- 5. flags --------------------------------------------------------------------------------


def refresh_issue_flags(ctx: Context) -> None:
    """voided / deleted from the raw listings, and names copied from the reference tables."""
    conn = ctx.store.conn
    with ctx.store.transaction():
        newly_deleted = conn.execute(
            f"SELECT count(*) FROM issues WHERE deleted = 0 AND source_id NOT IN "
            f"({_ACTIVE_LISTED}) AND source_id NOT IN ({_ACTIVE_VOIDED})"
        ).fetchone()[0]
        ctx.tally.change("issues", "deleted", newly_deleted)
        conn.execute(
            f"UPDATE issues SET deleted = CASE WHEN source_id IN ({_ACTIVE_LISTED}) OR "
            f"source_id IN ({_ACTIVE_VOIDED}) THEN 0 ELSE 1 END"
        )
        conn.execute(f"UPDATE issues SET voided = source_id IN ({_ACTIVE_VOIDED})")
        # The raw details of a deleted issue are marked too, so an issue that comes back is
        # retrieved again whatever its listing hash.
        conn.execute(
            "UPDATE raw_issue_details SET deleted_at_run = ? WHERE deleted_at_run IS NULL AND "
            "source_id IN (SELECT source_id FROM issues WHERE deleted = 1)",
            (ctx.run_id,),
        )
        conn.execute("""
            UPDATE issues SET
              issue_type_name = (SELECT name FROM issue_types t WHERE t.id = issues.issue_type_id),
              category_name = (SELECT category_name FROM issue_types t
                                WHERE t.id = issues.issue_type_id),
              area_path = (SELECT full_path FROM areas a WHERE a.id = issues.area_id),
              responsible_company_name = (SELECT name FROM companies c
                                           WHERE c.id = issues.responsible_company_id),
              root_cause_name = (SELECT name FROM root_causes r
                                  WHERE r.id = issues.root_cause_id)
        """)
    ctx.note("issue_flags", counts={"deleted": newly_deleted})


def extract_issues(ctx: Context) -> None:
    """All issue steps of the pass, in order."""
    extract_voided(ctx)  # first: the listing's completeness check counts the voided ids
    extract_issue_listing(ctx)
    extract_issue_details(ctx)
    extract_status_history(ctx)
    refresh_issue_flags(ctx)
