"""The uploads table: one row per attachment file per Procore project. All its SQL lives here."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from migrate.store.db import Store, select_in, utc_now

#: (sha256, sent_sha256, upload_uuid, state, created_at) of one upload row.
UploadRow = tuple[str, str | None, str | None, str, str]


def upload_rows(
    store: Store, project_id: int, attachment_ids: Iterable[str]
) -> dict[str, UploadRow]:
    """The upload row of each attachment that has one in ``project_id``."""
    return {
        attachment_id: (sha256, sent_sha256, upload_uuid, state, created_at)
        for attachment_id, sha256, sent_sha256, upload_uuid, state, created_at in select_in(
            store.conn,
            "SELECT attachment_id, sha256, sent_sha256, upload_uuid, state, created_at "
            "FROM uploads WHERE target_project_id = ? AND attachment_id IN ({marks})",
            attachment_ids,
            (project_id,),
        )
    }


def save_upload(
    store: Store, project_id: int, attachment_id: str, sha256: str, **values: Any
) -> None:
    """Insert or update the upload row of one attachment (its own transaction)."""
    values["updated_at"] = utc_now()
    columns = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    updates = ", ".join(f"{c} = excluded.{c}" for c in values)
    with store.transaction():
        store.conn.execute(
            f"INSERT INTO uploads (attachment_id, target_project_id, sha256, {columns}) "
            f"VALUES (?, ?, ?, {marks}) ON CONFLICT (attachment_id, target_project_id) "
            f"DO UPDATE SET sha256 = excluded.sha256, {updates}",
            (attachment_id, project_id, sha256, *values.values()),
        )


def mark_referenced(store: Store, project_id: int, upload_uuids: Iterable[str]) -> None:
    """Uploads an issue create has consumed (call inside the batch's transaction)."""
    now = utc_now()
    for upload_uuid in upload_uuids:
        store.conn.execute(
            "UPDATE uploads SET state = 'referenced', updated_at = ? "
            "WHERE target_project_id = ? AND upload_uuid = ?",
            (now, project_id, upload_uuid),
        )


def mark_failed(store: Store, project_id: int, attachment_ids: Iterable[str], reason: str) -> None:
    """Uploads Procore refused at create: the next run makes new ones."""
    for attachment_id in attachment_ids:
        store.conn.execute(
            "UPDATE uploads SET state = 'failed', error = ?, updated_at = ? "
            "WHERE target_project_id = ? AND attachment_id = ?",
            (reason, utc_now(), project_id, attachment_id),
        )


def sent_sha256s(store: Store) -> dict[tuple[str, int], str | None]:
    """(attachment id, project id) -> the sha256 of the bytes sent to Procore."""
    return {
        (attachment_id, project_id): sent
        for attachment_id, project_id, sent in store.conn.execute(
            "SELECT attachment_id, target_project_id, sent_sha256 FROM uploads"
        )
    }


def uploaded_count(store: Store, project_id: int | None) -> int:
    """Files stored in (or referenced by) Procore, in ``project_id`` (None: any project)."""
    sql = "SELECT COUNT(*) FROM uploads WHERE state IN ('stored', 'referenced')"
    params: tuple[Any, ...] = ()
    if project_id is not None:
        sql += " AND target_project_id = ?"
        params = (project_id,)
    row = store.conn.execute(sql, params).fetchone()
    return int(row[0] or 0) if row else 0


# -- inspections (issue 14): files confirmed on an inspection ------------------------------------


def mark_attachments_referenced(
    store: Store, project_id: int, attachment_ids: Iterable[str]
) -> None:
    """The uploads of attachments Procore shows it holds (call inside a transaction).

    For a write found in Procore rather than answered (a dead run's create, a lost answer):
    the upload ids it carried are not known, the files it attached are.
    """
    now = utc_now()
    store.conn.executemany(
        "UPDATE uploads SET state = 'referenced', updated_at = ? "
        "WHERE target_project_id = ? AND attachment_id = ? AND state = 'stored'",
        [(now, project_id, attachment_id) for attachment_id in attachment_ids],
    )
