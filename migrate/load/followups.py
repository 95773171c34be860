"""After the creates: delta updates, status changes, deletions, attachments added after load.

A loaded issue whose planned payload hash changed is looked at field by field without asking
Procore: the id map keeps the hash and the status Procore has, so the hash the planned payload
would have with the old status (and the attachments as they were) tells whether anything but
the status changed. Fields sync may change go out in sync batches; a status through a single
PATCH (sync cannot change it); attachments Procore can no longer take are reported. A record
that Procore refused an update for is not re-sent until its plan changes again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from migrate.errors import ApiError
from migrate.ids import ENTITY_ISSUE
from migrate.load.issues import (
    PlanEntry,
    PlannedIssue,
    chunked,
    error_message,
    hint_for,
    with_payloads,
)
from migrate.load.state import (
    LoadContext,
    MapRow,
    finish_batch,
    open_load_quarantine,
    quarantine_load,
    release_load_quarantine,
    start_batch,
    update_loaded,
)
from migrate.store.db import Store
from migrate.store.records import canonical_json

#: Seed 001: what a sync update may change (trade_id is never planned, so never sent).
SYNC_FIELDS = (
    "title",
    "description",
    "due_date",
    "location_id",
    "assignee_id",
    "issue_type",
    "priority",
)
CLOSED = "closed"


def planned_hash(
    payload: Mapping[str, Any], location_source_id: str | None, attachment_sha256s: Sequence[str]
) -> str:
    """The payload hash exactly as transform computes it (transform/issues.finish_planned)."""
    return hashlib.sha256(
        canonical_json(
            {
                "payload": dict(payload),
                "location_source_id": location_source_id,
                "attachments": list(attachment_sha256s),
            }
        ).encode("ascii")
    ).hexdigest()


@dataclass
class FollowUpWork:
    """What the loaded issues need, decided from staging alone."""

    #: Payloads are read again batch by batch when sent (see PlanEntry).
    sync_updates: list[tuple[PlanEntry, MapRow]] = field(default_factory=list)
    status_changes: list[tuple[PlanEntry, MapRow]] = field(default_factory=list)
    #: Changed only in what Procore cannot change (origin, attachments): new hash, no call.
    hash_only: list[tuple[PlanEntry, MapRow]] = field(default_factory=list)
    unchanged: int = 0
    held: int = 0  # refused before with this very payload: not re-sent
    #: Loaded issues whose source gained files after load: {source_id, target_id, attachment_ids}.
    attachments_after_load: list[dict[str, Any]] = field(default_factory=list)
    #: Loaded issues deleted or voided at the source: {source_id, target_id, target_status}.
    deleted_at_source: list[dict[str, Any]] = field(default_factory=list)


def _sha256_of(store: Store, attachment_ids: Iterable[str]) -> dict[str, str]:
    wanted = sorted(set(attachment_ids))
    found: dict[str, str] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        for attachment_id, sha256 in store.conn.execute(
            f"SELECT id, sha256 FROM attachments WHERE id IN ({marks})", chunk
        ):
            if sha256:
                found[attachment_id] = sha256
    return found


def _with_status(payload: Mapping[str, Any], status: str | None) -> dict[str, Any]:
    changed = dict(payload)
    if status is not None:
        changed["status"] = status
    return changed


def classify(
    store: Store,
    planned: Mapping[str, PlanEntry],
    rows: Mapping[str, MapRow],
    deleted_source_ids: Iterable[str],
    loaded_now: Iterable[str] = (),
) -> FollowUpWork:
    """Sort loaded issues into sync update / status change / hash only / unchanged.

    ``loaded_now``: created by this run, so not counted as unchanged. Payloads are read only
    for issues whose payload hash changed, a batch at a time.
    """
    created = set(loaded_now)
    work = FollowUpWork()
    held = open_load_quarantine(store)
    loaded = {sid: row for sid, row in rows.items() if row.state == "loaded" and row.target_id}
    changed: list[tuple[PlanEntry, MapRow]] = []
    for source_id, row in sorted(loaded.items()):
        entry = planned.get(source_id)
        if entry is None:
            continue
        added = sorted(set(entry.attachment_ids) - set(row.attachment_ids))
        if added:
            work.attachments_after_load.append(
                {"source_id": source_id, "target_id": row.target_id, "attachment_ids": added}
            )
        if entry.payload_hash == row.payload_hash:
            # Same payload, yet Procore's status can still differ (closed by --apply-deletions,
            # then back at the source): the plan calls that a status change, and so do we.
            if _status_differs(entry, row):
                work.status_changes.append((entry, row))
            else:
                work.unchanged += source_id not in created
            continue
        if held.get((ENTITY_ISSUE, source_id), "") == entry.payload_hash:
            work.held += 1
            continue
        changed.append((entry, row))
    sha_of = _sha256_of(
        store, [a for entry, row in changed for a in (*row.attachment_ids, *entry.attachment_ids)]
    )
    for batch in chunked(changed, 500):
        by_id = {issue.source_id: issue for issue in with_payloads(store, [e for e, _ in batch])}
        for entry, row in batch:
            issue = by_id.get(entry.source_id)
            if issue is None:  # re-planned meanwhile: the next load looks at it
                continue
            old_status_payload = _with_status(issue.payload, row.target_status)
            candidates = {
                planned_hash(
                    old_status_payload,
                    issue.location_source_id,
                    [sha_of.get(a, "") for a in issue.attachment_ids],
                ),
                planned_hash(
                    old_status_payload,
                    issue.location_source_id,
                    [sha_of.get(a, "") for a in sorted(row.attachment_ids)],
                ),
            }
            fields_same = row.payload_hash in candidates
            status_differs = _status_differs(entry, row)
            if not fields_same:
                work.sync_updates.append((entry, row))
            if status_differs:
                work.status_changes.append((entry, row))
            if fields_same and not status_differs:
                work.hash_only.append((entry, row))
    work.status_changes.sort(key=lambda pair: pair[0].source_id)
    wanted = set(deleted_source_ids)
    for source_id, row in sorted(loaded.items()):
        if source_id in wanted and source_id not in planned:
            work.deleted_at_source.append(
                {
                    "source_id": source_id,
                    "target_id": row.target_id,
                    "target_status": row.target_status,
                }
            )
    return work


def _status_differs(entry: PlanEntry, row: MapRow) -> bool:
    return row.target_status is not None and entry.status != row.target_status


class FollowUps:
    """Sends the delta: sync updates, status PATCHes, closes for deletions."""

    def __init__(self, ctx: LoadContext) -> None:
        self.ctx = ctx
        #: Issues whose field update Procore refused: their status change waits with them.
        self._refused_updates: set[str] = set()

    def record_hash_only(self, work: FollowUpWork) -> None:
        """Nothing Procore can change differs: only the recorded hash moves on."""
        ctx = self.ctx
        if not work.hash_only:
            return
        with ctx.store.transaction():
            for issue, _row in work.hash_only:
                update_loaded(
                    ctx.store,
                    ENTITY_ISSUE,
                    ctx.project_id,
                    issue.source_id,
                    payload_hash=issue.payload_hash,
                )
                release_load_quarantine(ctx.store, ENTITY_ISSUE, issue.source_id, ctx.run_id)
        ctx.count("unchanged", n=len(work.hash_only))

    def push_updates(self, work: FollowUpWork) -> None:
        """Sync updates in batches of ≤ 1000; per-item refusals go to quarantine."""
        ctx = self.ctx
        status_pending = {issue.source_id for issue, _ in work.status_changes}
        sha_of = _sha256_of(
            ctx.store, [a for issue, _ in work.sync_updates for a in issue.attachment_ids]
        )
        for batch in chunked(work.sync_updates, ctx.options.batch_size):
            items: list[dict[str, Any]] = []
            by_id: dict[int, tuple[PlannedIssue, MapRow]] = {}
            row_of = {entry.source_id: row for entry, row in batch}
            for issue in with_payloads(ctx.store, [entry for entry, _ in batch]):
                row = row_of[issue.source_id]
                assert row.target_id is not None
                item: dict[str, Any] = {"id": row.target_id}
                for name in SYNC_FIELDS:
                    if name == "location_id":
                        item[name] = (
                            ctx.location_ids.get(issue.location_source_id)
                            if issue.location_source_id
                            else None
                        )
                    else:
                        # Absent means "none" in the plan: send null so Procore clears it.
                        item[name] = issue.payload.get(name)
                items.append(item)
                by_id[row.target_id] = (issue, row)
            with ctx.store.transaction():
                batch_id, _ = start_batch(ctx.store, ctx.run_id, "sync_update", len(items))
            reply = ctx.client.sync_issues(ctx.project_id, items)
            ctx.sync_sizes.append(len(items))
            entities, errors = reply.entities, reply.errors
            with ctx.store.transaction():
                for entity in entities:
                    found = by_id.get(_as_int(entity.get("id")))
                    if found is None:
                        continue
                    issue, row = found
                    if issue.source_id in status_pending:
                        # Fields done, status not yet: record the hash the plan would have with
                        # the old status, so a rerun sends only the PATCH.
                        new_hash = planned_hash(
                            _with_status(issue.payload, row.target_status),
                            issue.location_source_id,
                            [sha_of.get(a, "") for a in issue.attachment_ids],
                        )
                    else:
                        new_hash = issue.payload_hash
                    update_loaded(
                        ctx.store,
                        ENTITY_ISSUE,
                        ctx.project_id,
                        issue.source_id,
                        payload_hash=new_hash,
                    )
                    release_load_quarantine(ctx.store, ENTITY_ISSUE, issue.source_id, ctx.run_id)
                    ctx.count("updated")
                for failure in errors:
                    if not isinstance(failure, Mapping):
                        continue
                    found = by_id.get(_as_int(failure.get("id")))
                    if found is None:
                        continue
                    issue, row = found
                    item_errors = failure.get("errors") or {}
                    self._hold(
                        issue,
                        row,
                        f"Procore refused the update: {error_message(item_errors)}",
                        hint_for(item_errors),
                        failure,
                        "sync_update",
                        batch_id,
                    )
                    status_pending.discard(issue.source_id)
                finish_batch(ctx.store, batch_id, entities=len(entities), errors=len(errors))
            if ctx.progress is not None:
                ctx.progress.advance("updates", len(items))
        self._refused_updates = {
            sid
            for sid in {i.source_id for i, _ in work.status_changes}
            if sid not in status_pending
        }

    def push_status_changes(self, work: FollowUpWork) -> None:
        """One PATCH per status change (sync cannot change a status)."""
        for issue, row in work.status_changes:
            if issue.source_id in self._refused_updates:
                continue  # its field update was refused: it is quarantined as a whole
            status = issue.status
            entity = self._patch_status(issue.source_id, row, status, issue=issue)
            if entity is None:
                continue
            ctx = self.ctx
            with ctx.store.transaction():
                update_loaded(
                    ctx.store,
                    ENTITY_ISSUE,
                    ctx.project_id,
                    issue.source_id,
                    payload_hash=issue.payload_hash,
                    target_status=entity.get("status") or status,
                )
                release_load_quarantine(ctx.store, ENTITY_ISSUE, issue.source_id, ctx.run_id)
            ctx.count("status_changed")

    def close_deleted(self, work: FollowUpWork) -> None:
        """Close in Procore the loaded issues deleted or voided at the source."""
        ctx = self.ctx
        for deleted in work.deleted_at_source:
            if deleted["target_status"] == CLOSED:
                continue
            row = MapRow(
                deleted["source_id"],
                deleted["target_id"],
                "loaded",
                None,
                None,
                deleted["target_status"],
                (),
            )
            entity = self._patch_status(deleted["source_id"], row, CLOSED, issue=None)
            if entity is None:
                continue
            with ctx.store.transaction():
                update_loaded(
                    ctx.store,
                    ENTITY_ISSUE,
                    ctx.project_id,
                    deleted["source_id"],
                    target_status=entity.get("status") or CLOSED,
                )
            deleted["target_status"] = CLOSED
            ctx.count("closed")

    # -- helpers -------------------------------------------------------------------------------
    def _patch_status(
        self, source_id: str, row: MapRow, status: str | None, *, issue: PlanEntry | None
    ) -> Mapping[str, Any] | None:
        ctx = self.ctx
        kind = "status_patch" if issue is not None else "close"
        with ctx.store.transaction():
            batch_id, _ = start_batch(ctx.store, ctx.run_id, kind, 1)
        try:
            entity = ctx.client.update_issue(ctx.project_id, row.target_id, {"status": status})
        except ApiError as exc:
            if exc.status is None or not 400 <= exc.status < 500 or exc.status in (401, 429):
                raise
            what = "status change" if issue is not None else "close"
            reason = (
                f"Procore refused the {what} to {status!r} of coordination issue "
                f"{row.target_id}: HTTP {exc.status} {exc.body_excerpt}"
            )
            hint = (
                "The issue is gone from Procore (deleted there?): restore it, or release "
                "this row with `migrate quarantine release`."
                if exc.status == 404
                else "Check the status mapping and the issue in Procore, then run `migrate load` "
                "again."
            )
            with ctx.store.transaction():
                finish_batch(ctx.store, batch_id, entities=0, errors=1, state="failed")
                quarantine_load(
                    ctx.store,
                    ENTITY_ISSUE,
                    source_id,
                    reason=reason,
                    hint=hint,
                    record={
                        "payload": {"status": status},
                        "target_id": row.target_id,
                        "payload_hash": issue.payload_hash if issue else None,
                        "action": kind,
                        "batch_id": batch_id,
                    },
                    run_id=ctx.run_id,
                )
            ctx.count("rejected")
            return None
        with ctx.store.transaction():
            finish_batch(ctx.store, batch_id, entities=1, errors=0)
        if ctx.progress is not None:
            ctx.progress.advance("updates", 1)
        return entity if isinstance(entity, Mapping) else {}

    def _hold(
        self,
        issue: PlanEntry,
        row: MapRow,
        reason: str,
        hint: str,
        submitted: Mapping[str, Any],
        action: str,
        batch_id: str,
    ) -> None:
        ctx = self.ctx
        payload = {k: v for k, v in submitted.items() if k != "errors"}
        quarantine_load(
            ctx.store,
            ENTITY_ISSUE,
            issue.source_id,
            reason=reason,
            hint=hint,
            record={
                "payload": payload,
                "payload_hash": issue.payload_hash,
                "target_id": row.target_id,
                "procore_errors": submitted.get("errors"),
                "action": action,
                "batch_id": batch_id,
            },
            run_id=ctx.run_id,
        )
        ctx.count("rejected")


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
