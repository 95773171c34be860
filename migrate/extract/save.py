"""``save_*``: write mapped rows into the normalised tables (SQLite only, no HTTP).

Called inside the transaction that also stores the raw records and the cursor, so a page or a
batch is stored whole or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from migrate.extract.normalise import BINARY_KINDS, Mapped, Problem
from migrate.extract.state import Context
from migrate.store import strip_secret_params, upsert_rows
from migrate.store.db import execute_in, select_in
from migrate.store.records import storable_text, upsert


def delete_where_in(
    ctx: Context, table: str, column: str, values: Iterable[Any], extra: str = ""
) -> None:
    """DELETE FROM table WHERE column IN values [AND extra], ``extra`` being literal SQL."""
    execute_in(
        ctx.store.conn, f'DELETE FROM "{table}" WHERE "{column}" IN ({{marks}}){extra}', values
    )


def _clean(value: Any) -> Any:
    """A column value as stored: JSON for lists and objects, no ticket in any URL in text, no
    lone surrogate."""
    if isinstance(value, dict | list):
        value = json.dumps(value, ensure_ascii=False)
    if isinstance(value, str):
        value = storable_text(value)
        if "=" in value:
            value = strip_secret_params(value)
    return value


def save_rows(
    ctx: Context,
    mapped: Mapped,
    table: str,
    pk: str | Sequence[str] | None,
    *,
    endpoint: str | None,
) -> None:
    """Upsert rows whose references may dangle (a dangling one becomes NULL + a problem)."""
    rows = mapped.rows.get(table, [])
    if rows:
        clean = [{column: _clean(value) for column, value in row.items()} for row in rows]
        upsert_rows(ctx.store, table, clean, pk, run_id=ctx.run_id, endpoint=endpoint)


def write_rows(
    ctx: Context, rows: Sequence[dict[str, Any]], table: str, pk: str | Sequence[str] | None
) -> None:
    """Upsert rows (store.records.upsert) whose references are written in the same
    transaction (children of the record being saved), so nothing can dangle. Columns a row
    leaves out keep their stored values."""
    clean = [{column: _clean(value) for column, value in row.items()} for row in rows]
    upsert(ctx.store, table, clean, pk)


def insert_rows(ctx: Context, mapped: Mapped, table: str) -> None:
    write_rows(ctx, mapped.rows.get(table, []), table, None)


def save_attachments(
    ctx: Context, containers: Sequence[tuple[str, str]], mapped: Mapped, *, endpoint: str | None
) -> None:
    """Upsert attachment metadata of ``containers``; forget attachments they no longer have.

    The download columns (state, sha256, size, error, downloaded_run) are left alone, so a
    re-extract never makes a stored file pending again, except when the source now declares
    a different size, or a download that failed for a reason of the source (404, wrong size)
    gets another chance because its container changed.
    """
    rows = mapped.rows.get("attachments", [])
    keep = {row["id"] for row in rows}
    conn = ctx.store.conn
    ctx.problems(_claimed_twice(conn, rows), endpoint=endpoint)
    by_type: dict[str, list[str]] = {}
    for container_type, container_id in containers:
        by_type.setdefault(container_type, []).append(container_id)
    for container_type, ids in by_type.items():
        gone = [
            attachment_id
            for (attachment_id,) in select_in(
                conn,
                "SELECT id FROM attachments WHERE container_type = ? AND container_id IN ({marks})",
                ids,
                (container_type,),
            )
            if attachment_id not in keep
        ]
        delete_where_in(ctx, "attachments", "id", gone)
    binary = [row for row in rows if row["kind"] in BINARY_KINDS]
    links = [dict(row, state="skipped") for row in rows if row["kind"] not in BINARY_KINDS]
    for part in (binary, links):
        write_rows(ctx, part, "attachments", "id")
    execute_in(
        conn,
        "UPDATE attachments SET state = 'pending', failure = NULL, error = NULL "
        "WHERE ((state = 'failed' AND failure IN ('size_mismatch', 'not_found')) "
        "OR (state = 'stored' AND size_expected IS NOT NULL AND size IS NOT size_expected)) "
        "AND id IN ({marks})",
        [row["id"] for row in binary],
    )


def _claimed_twice(conn: Any, rows: Sequence[Mapping[str, Any]]) -> list[Problem]:
    """Attachment ids listed by two containers: the id is one row, so say which one lost it."""
    owner: dict[str, tuple[str, str]] = {
        attachment_id: (container_type, container_id)
        for attachment_id, container_type, container_id in select_in(
            conn,
            "SELECT id, container_type, container_id FROM attachments WHERE id IN ({marks})",
            [row["id"] for row in rows],
        )
    }
    problems = []
    for row in rows:
        claim = (row["container_type"], row["container_id"])
        previous = owner.get(row["id"])
        if previous is not None and previous != claim:
            problems.append(
                Problem(
                    "attachment",
                    row["id"],
                    f"attachment {row['id']} is listed by {previous[0]} {previous[1]} and by "
                    f"{claim[0]} {claim[1]}; it is kept under the latter only, so the former "
                    "loses it: check both records in BIM 360 Field",
                    dict(row),
                )
            )
        owner[row["id"]] = claim
    return problems


def save_issue_batch(
    ctx: Context, mapped: Mapped, issue_ids: Sequence[str], *, endpoint: str
) -> None:
    """Rows of a retrieve batch: issues, their comments and attachments."""
    save_rows(ctx, mapped, "issues", "source_id", endpoint=endpoint)
    delete_where_in(
        ctx, "comments", "container_id", list(issue_ids), " AND container_type = 'Issue'"
    )
    write_rows(ctx, mapped.rows.get("comments", []), "comments", "id")
    save_attachments(
        ctx, [("Issue", issue_id) for issue_id in issue_ids], mapped, endpoint=endpoint
    )
    ctx.problems(mapped.problems, endpoint=endpoint)


def save_checklists(ctx: Context, details: Sequence[tuple[str, Mapped]], *, endpoint: str) -> None:
    """Rows of several checklist details: the checklists, their sections, items, comments,
    custom field values and files (checklist, item, signatures), each replaced whole."""
    if not details:
        return
    conn = ctx.store.conn
    ids = [checklist_id for checklist_id, _ in details]
    merged = Mapped()
    for _, mapped in details:
        merged.extend(mapped)
    old_items = sorted(
        item_id
        for (item_id,) in select_in(
            conn, "SELECT id FROM checklist_items WHERE checklist_id IN ({marks})", ids
        )
    )
    save_rows(ctx, merged, "checklists", "id", endpoint=endpoint)
    delete_where_in(ctx, "checklist_items", "checklist_id", ids)
    delete_where_in(ctx, "checklist_sections", "checklist_id", ids)
    delete_where_in(ctx, "comments", "container_id", ids, " AND container_type = 'Checklist'")
    delete_where_in(ctx, "checklist_custom_field_values", "checklist_id", ids)
    write_rows(ctx, merged.rows.get("checklist_sections", []), "checklist_sections", "id")
    write_rows(ctx, merged.rows.get("checklist_items", []), "checklist_items", "id")
    write_rows(ctx, merged.rows.get("comments", []), "comments", "id")
    write_rows(
        ctx,
        merged.rows.get("checklist_custom_field_values", []),
        "checklist_custom_field_values",
        ("checklist_id", "custom_field_id"),
    )
    new_items = [row["id"] for row in merged.rows.get("checklist_items", [])]
    containers = [("Checklist", checklist_id) for checklist_id in ids] + [
        ("ChecklistItem", item_id) for item_id in dict.fromkeys([*old_items, *new_items])
    ]
    save_attachments(ctx, containers, merged, endpoint=endpoint)
    ctx.problems(merged.problems, endpoint=endpoint)
