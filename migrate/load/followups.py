"""After the creates: sync updates, status changes, hashes, and closes for deletions.

What each loaded issue needs was decided before load wrote anything (load/decision.py, the
decisions `migrate plan` lists); this module sends it. Fields sync may change go out in sync
batches; a status through a single PATCH (sync cannot change it); a change only in what Procore
cannot change records the new hash. A record that Procore refused an update for is quarantined
with the payload hash it refused, and is not re-sent until its plan changes again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from migrate.errors import ApiError
from migrate.ids import ENTITY_ISSUE
from migrate.load.decision import CLOSED, IssueDecision, Request
from migrate.load.issues import chunked, error_message, hint_for, payload_title
from migrate.load.state import (
    LoadContext,
    finish_batch,
    quarantine_load,
    release_load_quarantine,
    start_batch,
)
from migrate.store.planned import MapRow, PlanEntry, PlannedIssue, update_loaded, with_payloads

#: Seed 001: what a sync update may change.
SYNC_FIELDS = (
    "title",
    "description",
    "due_date",
    "location_id",
    "assignee_id",
    "issue_type",
    "priority",
    "trade_id",
)


@dataclass
class FollowUpWork:
    """The decisions about loaded issues that take a write (or a new recorded hash)."""

    sync_updates: list[IssueDecision] = field(default_factory=list)
    status_changes: list[IssueDecision] = field(default_factory=list)
    #: Changed only in what Procore cannot change (origin, attachments): new hash, no call.
    hash_only: list[IssueDecision] = field(default_factory=list)
    #: Deleted at the source and not closed in Procore yet (closed with --apply-deletions).
    closes: list[IssueDecision] = field(default_factory=list)

    def add(self, decision: IssueDecision) -> bool:
        """Keep ``decision`` if it is follow-up work; False when it is not."""
        kept = False
        if Request.SYNC_UPDATE in decision.requests:
            self.sync_updates.append(decision)
            kept = True
        if Request.STATUS_PATCH in decision.requests:
            self.status_changes.append(decision)
            kept = True
        if Request.CLOSE in decision.requests:
            self.closes.append(decision)
            kept = True
        if decision.records_hash:
            self.hash_only.append(decision)
            kept = True
        return kept


def _planned(decision: IssueDecision) -> tuple[PlanEntry, MapRow]:
    assert decision.entry is not None and decision.row is not None
    return decision.entry, decision.row


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
            for decision in work.hash_only:
                entry, _row = _planned(decision)
                update_loaded(
                    ctx.store,
                    ENTITY_ISSUE,
                    ctx.project_id,
                    entry.source_id,
                    payload_hash=entry.payload_hash,
                )
                release_load_quarantine(ctx.store, ENTITY_ISSUE, entry.source_id, ctx.run_id)

    def push_updates(self, work: FollowUpWork) -> None:
        """Sync updates in batches of ≤ 1000; per-item refusals go to quarantine."""
        ctx = self.ctx
        status_pending = {d.source_id for d in work.status_changes}
        for batch in chunked(work.sync_updates, ctx.options.batch_size):
            items: list[dict[str, Any]] = []
            by_id: dict[int, tuple[PlannedIssue, IssueDecision]] = {}
            decision_of = {d.source_id: d for d in batch}
            for issue in with_payloads(ctx.store, [_planned(d)[0] for d in batch]):
                decision = decision_of[issue.source_id]
                target_id = decision.target_id
                assert target_id is not None
                item: dict[str, Any] = {"id": target_id}
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
                by_id[target_id] = (issue, decision)
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
                    issue, decision = found
                    # Fields done, status not yet: record the hash the plan has with the old
                    # status, so a run stopped before the PATCH sends only the PATCH next time.
                    new_hash = (
                        decision.fields_hash
                        if issue.source_id in status_pending and decision.fields_hash
                        else issue.payload_hash
                    )
                    update_loaded(
                        ctx.store,
                        ENTITY_ISSUE,
                        ctx.project_id,
                        issue.source_id,
                        payload_hash=new_hash,
                        title=payload_title(issue.payload),
                    )
                    release_load_quarantine(ctx.store, ENTITY_ISSUE, issue.source_id, ctx.run_id)
                    ctx.count("updated")
                for failure in errors:
                    if not isinstance(failure, Mapping):
                        continue
                    found = by_id.get(_as_int(failure.get("id")))
                    if found is None:
                        continue
                    issue, decision = found
                    item_errors = failure.get("errors") or {}
                    self._hold(
                        issue,
                        _planned(decision)[1],
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
            d.source_id for d in work.status_changes if d.source_id not in status_pending
        }

    def push_status_changes(self, work: FollowUpWork) -> None:
        """One PATCH per status change (sync cannot change a status)."""
        ctx = self.ctx
        for decision in work.status_changes:
            entry, row = _planned(decision)
            if entry.source_id in self._refused_updates:
                continue  # its field update was refused: it is quarantined as a whole
            status = entry.status
            entity = self._patch_status(entry.source_id, row, status, issue=entry)
            if entity is None:
                continue
            with ctx.store.transaction():
                update_loaded(
                    ctx.store,
                    ENTITY_ISSUE,
                    ctx.project_id,
                    entry.source_id,
                    payload_hash=entry.payload_hash,
                    target_status=entity.get("status") or status,
                )
                release_load_quarantine(ctx.store, ENTITY_ISSUE, entry.source_id, ctx.run_id)
            ctx.count("status_changed")

    def close_deleted(self, work: FollowUpWork) -> list[str]:
        """Close in Procore the loaded issues deleted or voided at the source; the source ids
        of those closed now."""
        ctx = self.ctx
        closed: list[str] = []
        for decision in work.closes:
            row = decision.row
            assert row is not None
            entity = self._patch_status(decision.source_id, row, CLOSED, issue=None)
            if entity is None:
                continue
            with ctx.store.transaction():
                update_loaded(
                    ctx.store,
                    ENTITY_ISSUE,
                    ctx.project_id,
                    decision.source_id,
                    target_status=entity.get("status") or CLOSED,
                )
            closed.append(decision.source_id)
            ctx.count("closed")
        return closed

    # -- helpers -------------------------------------------------------------------------------
    def _patch_status(
        self, source_id: str, row: MapRow, status: str | None, *, issue: PlanEntry | None
    ) -> Mapping[str, Any] | None:
        ctx = self.ctx
        kind = "status_patch" if issue is not None else "close"
        with ctx.store.transaction():
            batch_id, _ = start_batch(ctx.store, ctx.run_id, kind, 1)
        assert row.target_id is not None  # only loaded rows get a status PATCH
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


def _as_int(value: Any) -> int:
    """A Procore id from an answer; -1 (no issue has it) when it is not a number."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1
