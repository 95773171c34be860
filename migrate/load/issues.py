"""Coordination issues: creates through ``PATCH /coordination_issues/sync``, ≤ 1000 a call.

Batches go one at a time so the id map stays exact: each batch's rows are committed ``sent``
before the call and ``loaded``/``rejected`` right after the answer. An item answered
``{"uuid": ["has already been taken"]}`` was created by an earlier attempt whose answer never
arrived (a lost response, or a process killed mid-call): it is looked up (issues updated since
that attempt was sent, matched by uuid) and recorded, never created twice. Per-item errors
become quarantine rows with Procore's message; the rest of the batch is recorded as loaded.

That answer is our simulator's reading; what Procore does with a reused uuid is unknown until a
preflight probe saw it (migrate/contract.py). Unless Procore was seen to refuse the repeat, a
create that may have reached Procore is never sent again blindly: rows a dead run left ``sent``
are looked up by uuid before their batch goes out, and a sync whose answer is lost is not
re-sent by the HTTP layer but looked up, and only what Procore does not hold goes out again.

A status that create does not take (seed 000: open or closed) is created as open and moved to
the planned one afterwards (load/__init__.py), as the contract says.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from migrate.errors import TransportError
from migrate.ids import ENTITY_ISSUE, issue_uuid
from migrate.load.state import (
    LoadContext,
    batch_sent_at,
    finish_batch,
    quarantine_load,
    release_load_quarantine,
    start_batch,
)
from migrate.store.db import utc_now
from migrate.store.planned import (
    MapRow,
    PlanEntry,
    PlannedIssue,
    mark_loaded,
    mark_rejected,
    mark_sent,
    mark_unsent,
    with_payloads,
)

if TYPE_CHECKING:  # `migrate status` imports this package: it must not import requests
    from migrate.clients.procore import SyncResult

#: Procore's limit of items per sync call.
MAX_SYNC_ITEMS = 1000
#: How far before a batch's sent_at the look-up for "already taken" items reaches, for a
#: Procore clock a little behind ours.
LOOKUP_SLACK = timedelta(minutes=2)
TAKEN = "has already been taken"
#: Messages that mean an upload (not the issue) was at fault: new uploads fix them.
UPLOAD_PROBLEMS = ("does not exist", "has expired", "has no file", "already attached")


def chunked(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    """``items`` in consecutive slices of at most ``size`` (the 2 500 → 1000/1000/500 rule)."""
    size = max(1, min(size, MAX_SYNC_ITEMS))
    return [items[start : start + size] for start in range(0, len(items), size)]


def error_message(errors: Any) -> str:
    """Procore's per-item errors as one readable line: ``field: message; …``."""
    if isinstance(errors, Mapping):
        parts = []
        for field, messages in errors.items():
            texts = messages if isinstance(messages, list) else [messages]
            parts.append(f"{field} {'; '.join(str(t) for t in texts)}")
        return "; ".join(parts) or "Procore refused the item without saying why"
    return str(errors)


_HINTS = {
    "assignee_id": "The assignee is not on the project's coordination-issue assignee list in "
    "Procore: add them there and run `migrate load --retry-rejected`, or map "
    "the user differently in mappings/users.csv and run `migrate transform` "
    "then `migrate load`.",
    "location_id": "The location is no longer in this Procore project (deleted there after "
    "migrate created it): restore it in Procore and run `migrate load "
    "--retry-rejected`, or map the area elsewhere in mappings/locations.csv.",
    "title": "Shorten or fix the title (the title_template row of mappings/fields.csv), then "
    "run `migrate transform` and `migrate load` again.",
    "status": "Map the BIM 360 Field status to a Procore status in mappings/status.csv.",
    "priority": "Map the priority to low, medium, high or critical in the mappings.",
    "issue_type": "Map the issue type to one of Procore's issue types in the mappings.",
    "due_date": "Fix the due date at the source or in the mappings (YYYY-MM-DD).",
    "uuid": "Procore keeps the uuid of a deleted issue: restore it from Procore's recycle bin, "
    "then run `migrate load` again.",
}


def hint_for(errors: Any) -> str:
    """What to do about a refused item, from the fields Procore complained about."""
    if isinstance(errors, Mapping):
        for field in errors:
            if field in _HINTS:
                return _HINTS[field]
    return (
        "Fix the record (see reason), run `migrate transform` and `migrate load` again; "
        "an unchanged record is re-sent only with `migrate load --retry-rejected`."
    )


def _instant(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class IssueCreator:
    """Sends planned issue creates in sync batches and records every outcome."""

    def __init__(self, ctx: LoadContext) -> None:
        self.ctx = ctx

    # -- public ----------------------------------------------------------------------------
    def push(self, issues: Sequence[PlanEntry], previous: Mapping[str, MapRow]) -> None:
        """Create ``issues`` (rows pending, sent by a dead run, or rejected then changed).

        Payloads are read batch by batch, so memory holds one batch of them at a time.
        """
        for batch in chunked(list(issues), self.ctx.options.batch_size):
            planned = with_payloads(self.ctx.store, batch)
            if not self.ctx.readings.reuse_refused:
                planned = self._found_in_flight(planned, previous)
            if planned:
                self._batch(planned, previous, retry_round=False)

    def _found_in_flight(
        self, batch: Sequence[PlannedIssue], previous: Mapping[str, MapRow]
    ) -> list[PlannedIssue]:
        """``batch`` less the rows a dead run left ``sent`` that Procore holds (recorded now).

        Procore was not seen to refuse a reused uuid, so re-sending one might create it twice.
        """
        in_flight = [
            issue
            for issue in batch
            if previous.get(issue.source_id) is not None
            and previous[issue.source_id].state == "sent"
        ]
        if not in_flight:
            return list(batch)
        found = self._look_up(in_flight, previous, since=None, local_problem=True)
        return [issue for issue in batch if issue.uuid not in found]

    def resolve_orphans(self, rows: Sequence[MapRow]) -> None:
        """Rows a dead run left ``sent`` whose plan has gone since (deleted at the source).

        Nothing will re-send them, so find out whether Procore has them: found, they are
        recorded (and then reported as deleted at source); not found, they never got there.
        """
        ctx = self.ctx
        orphans = [
            PlannedIssue(
                source_id=row.source_id,
                source_kind="",
                status=None,
                payload={},
                location_source_id=None,
                uuid=issue_uuid(ctx.project_id, row.source_id),
                attachment_ids=row.attachment_ids,
                payload_hash=row.payload_hash or "",
            )
            for row in sorted(rows, key=lambda row: row.source_id)
        ]
        if not orphans:
            return
        previous = {row.source_id: row for row in rows}
        found = self._look_up(orphans, previous, since=None, local_problem=True)
        with ctx.store.transaction():
            for orphan in orphans:
                if orphan.uuid not in found:
                    mark_unsent(ctx.store, ENTITY_ISSUE, ctx.project_id, orphan.source_id)

    # -- one batch ---------------------------------------------------------------------------
    def _batch(
        self, batch: Sequence[PlannedIssue], previous: Mapping[str, MapRow], *, retry_round: bool
    ) -> None:
        ctx = self.ctx
        needed = sorted({a for issue in batch for a in issue.attachment_ids})
        uploads = ctx.uploader.prepare(needed)
        ctx.uploads_done += uploads.done
        ctx.uploads_reused += uploads.reused
        items: list[dict[str, Any]] = []
        sending: dict[str, PlannedIssue] = {}
        held: list[tuple[PlannedIssue, str, dict[str, Any]]] = []
        for issue in batch:
            problem = None
            item = dict(issue.payload)
            item["uuid"] = issue.uuid
            if "status" in item:  # a status create refuses goes out as open, then is moved
                item["status"] = ctx.readings.create_status(item["status"])
            if issue.location_source_id:
                location_id = ctx.location_ids.get(issue.location_source_id)
                if location_id is None:
                    problem = (
                        f"location {issue.location_source_id} has no Procore id "
                        "(it was not created)"
                    )
                else:
                    item["location_id"] = location_id
            failed = [a for a in issue.attachment_ids if a in uploads.failed]
            if failed:
                problem = "; ".join(uploads.failed[a] for a in failed)
            elif issue.attachment_ids:
                item["attachment_upload_uuids"] = [uploads.ready[a] for a in issue.attachment_ids]
            if problem is not None:
                held.append((issue, problem, item))
                continue
            items.append(item)
            sending[issue.uuid] = issue
        if held:
            self._hold_back(held, previous)
        if not items:
            return
        with ctx.store.transaction():
            batch_id, sent_at = start_batch(ctx.store, ctx.run_id, "sync_create", len(items))
            # A row re-sent after a dead run keeps the hash of its first send until confirmed:
            # if that first send is what reached Procore, the hash must say so.
            mark_sent(
                ctx.store,
                ENTITY_ISSUE,
                ctx.project_id,
                batch_id,
                {
                    issue.source_id: issue.payload_hash
                    for issue in sending.values()
                    if (
                        previous.get(issue.source_id) is None
                        or previous[issue.source_id].state != "sent"
                    )
                },
            )
            mark_sent(
                ctx.store,
                ENTITY_ISSUE,
                ctx.project_id,
                batch_id,
                {
                    issue.source_id: previous[issue.source_id].payload_hash or issue.payload_hash
                    for issue in sending.values()
                    if previous.get(issue.source_id) is not None
                    and previous[issue.source_id].state == "sent"
                },
            )
        sent_items = items_by_uuid(items)
        reply = self._send(batch_id, sent_at, sending, sent_items, previous, lost_answers=0)
        if reply is None:
            return
        ctx.sync_sizes.append(len(sending))
        entities, errors = reply.entities, reply.errors
        taken: list[PlannedIssue] = []
        retry: list[PlannedIssue] = []
        answered: set[str] = set()
        with ctx.store.transaction():
            for entity in entities:
                created = sending.get(str(entity.get("uuid") or "").lower())
                if created is None:
                    continue
                answered.add(created.uuid)
                self._loaded(
                    created,
                    entity,
                    batch_id,
                    payload_hash=created.payload_hash,
                    upload_uuids=sent_items[created.uuid].get("attachment_upload_uuids", []),
                )
                ctx.count("created")
            for failure in errors:
                if not isinstance(failure, Mapping):
                    continue
                refused = sending.get(str(failure.get("uuid") or "").lower())
                if refused is None:
                    continue
                issue = refused
                answered.add(issue.uuid)
                item_errors = failure.get("errors") or {}
                if TAKEN in _messages(item_errors, "uuid"):
                    taken.append(issue)
                elif not retry_round and _only_upload_trouble(item_errors):
                    ctx.uploader.forget(issue.attachment_ids, error_message(item_errors))
                    retry.append(issue)
                else:
                    self._reject(issue, item_errors, failure, batch_id)
            missing = [issue for issue in sending.values() if issue.uuid not in answered]
            finish_batch(ctx.store, batch_id, entities=len(entities), errors=len(errors))
        if ctx.progress is not None:
            ctx.progress.advance("coordination_issues", len(sending) - len(retry))
        if taken or missing:
            earliest = min(
                [
                    sent_at,
                    *batch_sent_at(
                        ctx.store,
                        [
                            previous[i.source_id].batch_id or ""
                            for i in [*taken, *missing]
                            if i.source_id in previous
                        ],
                    ).values(),
                ]
            )
            self._look_up(
                [*taken, *missing],
                previous,
                since=earliest,
                batch_id=batch_id,
                sent_items=sent_items,
            )
        if retry:
            self._batch(retry, {}, retry_round=True)

    def _send(
        self,
        batch_id: str,
        sent_at: str,
        sending: dict[str, PlannedIssue],
        sent_items: Mapping[str, Mapping[str, Any]],
        previous: Mapping[str, MapRow],
        *,
        lost_answers: int,
    ) -> SyncResult | None:
        """The sync answer for ``sending``; None when a lost answer was resolved by look-ups.

        Where Procore refuses a reused uuid the HTTP layer may simply send again. Otherwise a
        sync that may have been applied is looked up by uuid (recorded, and dropped from
        ``sending``) and only the rest goes out again, as often and with the backoff the
        retry policy gives any request.
        """
        ctx = self.ctx
        items = [dict(sent_items[key]) for key in sending]
        if ctx.readings.reuse_refused:
            return ctx.client.sync_issues(ctx.project_id, items)
        try:
            return ctx.client.sync_issues(ctx.project_id, items, resend=False)
        except TransportError:
            # As often as the retry policy would have sent it again, with its backoff.
            if lost_answers + 1 >= ctx.client.api.policy.max_attempts:
                raise
            ctx.client.api.back_off(lost_answers + 1, "sync answer lost")
        found = self._look_up(
            list(sending.values()),
            previous,
            since=sent_at,
            batch_id=batch_id,
            local_problem=True,
            sent_items=sent_items,
        )
        for key in found:
            sending.pop(key, None)
        if not sending:
            with ctx.store.transaction():
                finish_batch(ctx.store, batch_id, entities=len(found), errors=0)
            if ctx.progress is not None:
                ctx.progress.advance("coordination_issues", len(found))
            return None
        if ctx.progress is not None and found:
            ctx.progress.advance("coordination_issues", len(found))
        return self._send(
            batch_id, sent_at, sending, sent_items, previous, lost_answers=lost_answers + 1
        )

    # -- outcomes ----------------------------------------------------------------------------
    def _loaded(
        self,
        issue: PlannedIssue,
        entity: Mapping[str, Any],
        batch_id: str | None,
        *,
        payload_hash: str,
        upload_uuids: Iterable[str],
    ) -> None:
        ctx = self.ctx
        mark_loaded(
            ctx.store,
            ENTITY_ISSUE,
            ctx.project_id,
            issue.source_id,
            int(entity["id"]),
            payload_hash=payload_hash,
            target_status=entity.get("status"),
            attachment_ids=issue.attachment_ids,
            batch_id=batch_id,
            title=payload_title(issue.payload),
        )
        ctx.uploader.mark_referenced(upload_uuids)
        ctx.loaded_now.add(issue.source_id)
        release_load_quarantine(ctx.store, issue.quarantine_entity, issue.source_id, ctx.run_id)

    def _reject(
        self,
        issue: PlannedIssue,
        item_errors: Any,
        submitted: Mapping[str, Any],
        batch_id: str | None,
    ) -> None:
        ctx = self.ctx
        mark_rejected(
            ctx.store,
            ENTITY_ISSUE,
            ctx.project_id,
            issue.source_id,
            payload_hash=issue.payload_hash,
            batch_id=batch_id,
        )
        payload = {k: v for k, v in submitted.items() if k != "errors"}
        quarantine_load(
            ctx.store,
            issue.quarantine_entity,
            issue.source_id,
            reason=f"Procore refused the coordination issue: {error_message(item_errors)}",
            hint=hint_for(item_errors),
            record={
                "payload": payload,
                "payload_hash": issue.payload_hash,
                "procore_errors": item_errors,
                "batch_id": batch_id,
                "action": "create",
            },
            run_id=ctx.run_id,
        )
        ctx.count("rejected")

    def _hold_back(
        self,
        held: Sequence[tuple[PlannedIssue, str, dict[str, Any]]],
        previous: Mapping[str, MapRow],
    ) -> None:
        """Problems on our side (missing blob, upload refused): quarantine, retry next run.

        A row a dead run left ``sent`` may be in Procore already: it is looked up rather than
        sent without what it lacks now, and only held back if Procore does not have it.
        """
        ctx = self.ctx
        in_flight = [
            issue
            for issue, _, _ in held
            if previous.get(issue.source_id) is not None
            and previous[issue.source_id].state == "sent"
        ]
        found = (
            self._look_up(in_flight, previous, since=None, local_problem=True)
            if in_flight
            else set()
        )
        with ctx.store.transaction():
            for issue, problem, item in held:
                if issue.uuid in found:
                    continue
                quarantine_load(
                    ctx.store,
                    issue.quarantine_entity,
                    issue.source_id,
                    reason=f"not sent: {problem}",
                    hint="Run `migrate extract` to fetch missing attachment files, then "
                    "`migrate load` again; held-back records are retried on every run.",
                    record={"payload": dict(item), "payload_hash": None, "action": "create"},
                    run_id=ctx.run_id,
                )
                ctx.count("rejected")
        if ctx.progress is not None:
            ctx.progress.advance("coordination_issues", len(held))

    def _look_up(
        self,
        issues: Sequence[PlannedIssue],
        previous: Mapping[str, MapRow],
        *,
        since: str | None,
        batch_id: str | None = None,
        local_problem: bool = False,
        sent_items: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> set[str]:
        """Find issues Procore already has by uuid and record them; the rest as refused.

        Returns the uuids found. With ``local_problem`` the ones not found are left alone.
        """
        ctx = self.ctx
        if since is None:
            since = min(
                batch_sent_at(
                    ctx.store,
                    [
                        previous[i.source_id].batch_id or ""
                        for i in issues
                        if i.source_id in previous
                    ],
                ).values(),
                default=utc_now(),
            )
        start = _instant(since) - LOOKUP_SLACK
        end = datetime.now(UTC) + timedelta(days=1)
        wanted = {issue.uuid: issue for issue in issues}
        found: dict[str, Mapping[str, Any]] = {}
        # Imported here: importing the client pulls in requests, which `migrate status`
        # (it computes the plan through this package) has no use for.
        from migrate.clients.procore import ISSUES_PATH

        # Paged by hand (not coordination_issues()) to stop at the page holding the last one.
        for page in ctx.client.list_paged(
            ISSUES_PATH,
            {
                "project_id": ctx.project_id,
                "view": "normal",
                "filters[updated_at]": f"{_iso(start)}...{_iso(end)}",
            },
        ):
            for entity in page:
                key = str(entity.get("uuid") or "").lower()
                if key in wanted:
                    found[key] = entity
            if len(found) == len(wanted):
                break
        with ctx.store.transaction():
            for key, issue in wanted.items():
                entity = found.get(key)
                row = previous.get(issue.source_id)
                if entity is not None:
                    # Created by an earlier send: its hash is the one that send recorded.
                    first_hash = (
                        row.payload_hash
                        if row is not None and row.state == "sent" and row.payload_hash
                        else issue.payload_hash
                    )
                    sent = (sent_items or {}).get(key)
                    self._loaded(
                        issue,
                        entity,
                        batch_id,
                        payload_hash=first_hash,
                        upload_uuids=sent.get("attachment_upload_uuids", [])
                        if sent is not None
                        else ctx.uploader.upload_uuids(issue.attachment_ids),
                    )
                    ctx.count("created")
                elif not local_problem:
                    self._reject(
                        issue,
                        {
                            "uuid": [
                                f"{TAKEN} in Procore, but no coordination issue with this uuid is "
                                "visible (deleted in Procore?)"
                            ]
                        },
                        {"uuid": issue.uuid},
                        batch_id,
                    )
        return set(found)


def payload_title(payload: Mapping[str, Any]) -> str | None:
    """The title a sync item sets (recorded in the id map for the deletion lists)."""
    title = payload.get("title")
    return title if isinstance(title, str) else None


def items_by_uuid(items: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Sync items by their (lower-case) uuid."""
    return {str(item["uuid"]).lower(): item for item in items}


def _messages(errors: Any, field: str) -> list[str]:
    if not isinstance(errors, Mapping):
        return []
    value = errors.get(field) or []
    return [str(m) for m in (value if isinstance(value, list) else [value])]


def _only_upload_trouble(errors: Any) -> bool:
    if not isinstance(errors, Mapping) or set(errors) != {"attachment_upload_uuids"}:
        return False
    return all(
        any(p in m for p in UPLOAD_PROBLEMS) for m in _messages(errors, "attachment_upload_uuids")
    )
