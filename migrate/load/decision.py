"""What load does with each issue: the one decision `migrate plan` shows and `migrate load` runs.

:func:`decide_issues` compares the planned rows with the id map, the open quarantine and the
skipped records, without asking Procore, and gives every issue record one
:class:`IssueDecision`: its :class:`Action` and the exact :class:`Request` s load will make for
it. The dry-run plan (load/plan.py) lists these decisions; load (load/__init__.py) executes
them. Neither decides anything on its own, so the plan the engineer signs off is the load.

A loaded issue whose planned payload hash changed is looked at field by field: the id map keeps
the hash and the status Procore has, so the hash the planned payload would have with the old
status (and with the attachments as they were at create) tells whether anything but the status
changed. Fields sync may change go out as a sync update item, a status as one PATCH (sync cannot
change a status); a change only in what Procore cannot change after create (the origin, files
added later) records the new hash without a request.

Deletions: a loaded issue whose source is gone (deleted, voided, or no longer planned) is
reported, and closed (one PATCH) only with ``--apply-deletions``; :func:`check_deletions`
refuses a run that would close more than :func:`deletion_limit` of them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from migrate.errors import ConfigError
from migrate.ids import ENTITY_INSPECTION
from migrate.load.state import OpenQuarantine, open_quarantine
from migrate.store.db import Store
from migrate.store.planned import (
    InspectionEntry,
    MapRow,
    PlanEntry,
    attachment_sha256s,
    payload_hash,
    planned_inspections_with_map_rows,
    planned_with_map_rows,
    skipped_records,
    unplanned_inspection_map_rows,
    unplanned_map_rows,
    with_payloads,
)

#: Entity names in quarantine and skipped_records that belong to coordination issues.
ISSUE_SOURCE_ENTITIES = ("issue", "checklist_item", "coordination_issue")
CLOSED = "closed"
#: How many planned payloads are read at once to tell a field change from a status change.
PAYLOAD_BATCH = 500
#: Deletions: without --max-deletions, load closes at most this many issues, or
#: DELETION_SHARE of the loaded ones if that is more (see deletion_limit).
DELETION_FLOOR = 25
DELETION_SHARE = 0.10

DELETION_HINT = (
    "reported only; `migrate load --apply-deletions` closes it in Procore "
    "(see `migrate plan --show deleted_at_source`)"
)
ATTACHMENTS_HINT = (
    "Procore cannot add attachments to an existing coordination issue: decide whether to add "
    "them by hand or leave them in the footer"
)


class Action(enum.StrEnum):
    """What happens to a record; the names are the plan's kinds."""

    CREATE = "create"
    UPDATE = "update"  # fields sync may change differ (and maybe the status too)
    STATUS_CHANGE = "status_change"  # only the status differs
    UNCHANGED = "unchanged"
    BLOCKED = "blocked"
    SKIPPED = "skipped"
    DELETED_AT_SOURCE = "deleted_at_source"


class Request(enum.StrEnum):
    """One request load makes for one record (a sync item is one entry of a sync call)."""

    SYNC_CREATE = "sync_create"
    SYNC_UPDATE = "sync_update"
    STATUS_PATCH = "status_patch"
    CLOSE = "close"  # only made with --apply-deletions
    LOOK_UP = "look_up"  # a row a dead run left in flight whose source is gone: ask Procore


@dataclass(frozen=True, slots=True)
class IssueDecision:
    """The decision for one issue record and the requests it takes."""

    source_id: str
    action: Action
    requests: tuple[Request, ...] = ()
    #: The planned row (no payload), None when the record is not planned.
    entry: PlanEntry | None = None
    #: The id map row for the project, None when there is none.
    row: MapRow | None = None
    #: With a sync update and a status PATCH: the hash the record has once its fields are sent
    #: and its status not yet (what a run stopped between the two must record).
    fields_hash: str | None = None
    #: Only the recorded hash moves on (what changed cannot be changed in Procore).
    records_hash: bool = False
    #: Planned attachments that were not sent at create (Procore cannot add them now).
    attachments_added: tuple[str, ...] = ()
    detail: str | None = None
    hint: str | None = None

    @property
    def target_id(self) -> int | None:
        return self.row.target_id if self.row is not None else None

    @property
    def title(self) -> str | None:
        """The title Procore has (deleted records; planned ones carry theirs in the plan)."""
        return self.row.title if self.row is not None else None

    def as_deletion(self) -> dict[str, Any]:
        """The record as the deletion lists show it: source id, Procore id, title, status."""
        row = self.row
        return {
            "source_id": self.source_id,
            "target_id": self.target_id,
            "title": self.title,
            "target_status": row.target_status if row is not None else None,
        }


def decide_issues(
    store: Store, project_id: int, *, retry_rejected: bool = False
) -> Iterator[IssueDecision]:
    """Every issue record's decision: planned ones in source id order, then the rest.

    Reads only the store (never Procore) and holds one batch of payloads at a time. A stream:
    consume it to the end before writing to the store. ``retry_rejected``: creates Procore
    refused before are sent again though their payload did not change.
    """
    held = open_quarantine(store, ISSUE_SOURCE_ENTITIES)
    skipped = skipped_records(store, ISSUE_SOURCE_ENTITIES)
    changed: list[tuple[PlanEntry, MapRow, tuple[str, ...]]] = []
    for entry, row in planned_with_map_rows(store, project_id):
        quarantined = held.pop(entry.source_id, None)
        decision = _decide_planned(entry, row, quarantined, retry_rejected)
        if decision is not None:
            yield decision
            continue
        assert row is not None
        changed.append((entry, row, _added(entry, row)))
        if len(changed) >= PAYLOAD_BATCH:
            yield from _decide_changed(store, changed)
            changed = []
    yield from _decide_changed(store, changed)
    yield from _decide_unplanned(store, project_id, held, skipped)


def _added(entry: PlanEntry, row: MapRow) -> tuple[str, ...]:
    return tuple(sorted(set(entry.attachment_ids) - set(row.attachment_ids)))


def _blocks(quarantined: OpenQuarantine | None, entry: PlanEntry) -> bool:
    """An open quarantine row holds this planned record back.

    Transform's rows always do; a load row does when Procore refused this very payload. A load
    row without a refused hash (held back on our side, e.g. a file missing) does not: load
    tries again on every run.
    """
    if quarantined is None:
        return False
    if quarantined.stage != "load":
        return True
    return quarantined.refused_hash is not None and quarantined.refused_hash == entry.payload_hash


def _decide_planned(
    entry: PlanEntry,
    row: MapRow | None,
    quarantined: OpenQuarantine | None,
    retry_rejected: bool,
) -> IssueDecision | None:
    """The decision, or None when the planned payload must be read (a loaded issue whose
    payload hash changed)."""
    if row is None or not row.is_loaded:
        return _decide_not_loaded(entry, row, quarantined, retry_rejected)
    added = _added(entry, row)
    if _blocks(quarantined, entry):
        assert quarantined is not None
        return _blocked(entry, row, quarantined, added)
    if entry.payload_hash != row.payload_hash:
        return None
    # Same payload, yet Procore's status can differ (closed by --apply-deletions, or by hand,
    # then back at the source).
    if _status_differs(entry, row):
        return IssueDecision(
            entry.source_id,
            Action.STATUS_CHANGE,
            (Request.STATUS_PATCH,),
            entry,
            row,
            attachments_added=added,
        )
    return IssueDecision(entry.source_id, Action.UNCHANGED, (), entry, row, attachments_added=added)


def _decide_not_loaded(
    entry: PlanEntry,
    row: MapRow | None,
    quarantined: OpenQuarantine | None,
    retry_rejected: bool,
) -> IssueDecision:
    """A planned issue not in Procore yet: create it, unless something holds it back."""
    detail = None
    if row is not None and row.state == "rejected":
        # Procore refused this record's create. Sent again when its payload changed, or when
        # the engineer asks (--retry-rejected); otherwise it stays out, quarantined or released.
        if quarantined is not None and quarantined.stage != "load":
            return _blocked(entry, row, quarantined)
        if retry_rejected:
            detail = "refused before; sent again (--retry-rejected)"
        elif row.payload_hash != entry.payload_hash:
            detail = "refused before; the planned payload has changed since"
        elif quarantined is not None:
            return _blocked(entry, row, quarantined)
        else:
            return IssueDecision(
                entry.source_id,
                Action.BLOCKED,
                entry=entry,
                row=row,
                detail="refused by Procore before, and its quarantine row was released: not "
                "sent again until its payload changes",
                hint="`migrate load --retry-rejected` sends it again as it is",
            )
    elif _blocks(quarantined, entry):
        assert quarantined is not None
        return _blocked(entry, row, quarantined)
    elif row is not None and row.state == "sent":
        detail = "was in flight when a load stopped: re-sent with the same uuid"
    return IssueDecision(
        entry.source_id, Action.CREATE, (Request.SYNC_CREATE,), entry, row, detail=detail
    )


def _blocked(
    entry: PlanEntry,
    row: MapRow | None,
    quarantined: OpenQuarantine,
    added: tuple[str, ...] = (),
) -> IssueDecision:
    return IssueDecision(
        entry.source_id,
        Action.BLOCKED,
        entry=entry,
        row=row,
        attachments_added=added,
        detail=quarantined.detail,
        hint=quarantined.hint,
    )


def _status_differs(entry: PlanEntry, row: MapRow) -> bool:
    return row.target_status is not None and entry.status != row.target_status


def _decide_changed(
    store: Store, changed: Sequence[tuple[PlanEntry, MapRow, tuple[str, ...]]]
) -> Iterator[IssueDecision]:
    """Loaded issues whose payload hash changed: a field update, a status change, or neither."""
    if not changed:
        return
    sha_of = attachment_sha256s(
        store,
        {a for entry, row, _ in changed for a in (*row.attachment_ids, *entry.attachment_ids)},
    )
    issues = {issue.source_id: issue for issue in with_payloads(store, [e for e, _, _ in changed])}
    for entry, row, added in changed:
        issue = issues.get(entry.source_id)
        if issue is None:  # re-planned while this was read: the next plan or load sees it
            continue
        old_status = dict(issue.payload)
        if row.target_status is not None:
            old_status["status"] = row.target_status
        # The planned payload with Procore's status, with today's files and with those sent.
        fields_hash = payload_hash(
            old_status, issue.location_source_id, [sha_of.get(a, "") for a in issue.attachment_ids]
        )
        as_sent = payload_hash(
            old_status, issue.location_source_id, [sha_of.get(a, "") for a in row.attachment_ids]
        )
        fields_same = row.payload_hash in (fields_hash, as_sent)
        status_differs = _status_differs(entry, row)
        requests: tuple[Request, ...] = ()
        if not fields_same:
            requests += (Request.SYNC_UPDATE,)
        if status_differs:
            requests += (Request.STATUS_PATCH,)
        if not requests:
            yield IssueDecision(
                entry.source_id,
                Action.UNCHANGED,
                (),
                entry,
                row,
                records_hash=True,
                attachments_added=added,
                detail="changed only where Procore cannot change an issue after create "
                "(origin, files): the new hash is recorded, nothing is sent",
            )
            continue
        yield IssueDecision(
            entry.source_id,
            Action.UPDATE if not fields_same else Action.STATUS_CHANGE,
            requests,
            entry,
            row,
            fields_hash=fields_hash if len(requests) > 1 else None,
            attachments_added=added,
        )


def _decide_unplanned(
    store: Store,
    project_id: int,
    held: dict[str, OpenQuarantine],
    skipped: dict[str, str],
) -> Iterator[IssueDecision]:
    """Records that are not planned: skipped, held at transform, or gone from the source."""
    mapped = {row.source_id: row for row in unplanned_map_rows(store, project_id)}
    for source_id, reason in sorted(skipped.items()):
        row = mapped.pop(source_id, None)
        held.pop(source_id, None)
        if row is not None and row.is_loaded:
            yield _deleted(row, reason)
        elif row is not None and row.state == "sent":
            yield _in_flight(row, reason)
        else:
            yield IssueDecision(source_id, Action.SKIPPED, row=row, detail=reason)
    for source_id, quarantined in sorted(held.items()):
        row = mapped.pop(source_id, None)
        if row is not None and row.state == "sent":
            yield _in_flight(row, quarantined.detail)
            continue
        yield IssueDecision(
            source_id,
            Action.BLOCKED,
            row=row,
            detail=quarantined.detail,
            hint=quarantined.hint,
        )
    for row in mapped.values():
        reason = "no longer planned (gone from staging, or checklist items switched off)"
        if row.is_loaded:
            yield _deleted(row, reason)
        elif row.state == "sent":
            yield _in_flight(row, reason)


def _deleted(row: MapRow, reason: str) -> IssueDecision:
    closes = row.target_status != CLOSED
    return IssueDecision(
        row.source_id,
        Action.DELETED_AT_SOURCE,
        (Request.CLOSE,) if closes else (),
        row=row,
        detail=reason if closes else f"{reason}; already closed in Procore",
        hint=DELETION_HINT if closes else None,
    )


def _in_flight(row: MapRow, reason: str) -> IssueDecision:
    return IssueDecision(
        row.source_id,
        Action.DELETED_AT_SOURCE,
        (Request.LOOK_UP,),
        row=row,
        detail=f"{reason}; was in flight when a load stopped",
        hint="load looks it up in Procore first: if Procore has it, it is reported (and "
        "closed with --apply-deletions) like any deleted issue",
    )


# -- deletions are deliberate ----------------------------------------------------------------------


def deletion_limit(loaded: int) -> int:
    """How many loaded issues one run may close without --max-deletions.

    10 % of the issues loaded into the project, or 25 if that is more: a few issues deleted at
    the source between delta runs close without a second thought; a source project that was
    swapped or emptied by mistake (every issue "deleted") does not.
    """
    return max(DELETION_FLOOR, int(loaded * DELETION_SHARE))


def check_deletions(
    closing: Sequence[IssueDecision], loaded: int, max_deletions: int | None, project_id: int
) -> None:
    """Refuse (ConfigError, exit 2) to close more issues than allowed; nothing is written."""
    count = len(closing)
    if max_deletions is not None:
        if count <= max_deletions:
            return
        allowed = f"more than --max-deletions {max_deletions} allows"
    else:
        limit = deletion_limit(loaded)
        if count <= limit:
            return
        allowed = (
            f"more than the {limit} allowed without --max-deletions (10 % of the {loaded} "
            f"loaded issues, at least {DELETION_FLOOR})"
        )
    raise TooManyDeletions(
        f"Refusing to close {count} issues in Procore project {project_id}: {allowed}. "
        "Nothing was written to Procore. Check the list with `migrate plan --show "
        "deleted_at_source` (a wrong [source] project_id makes every issue look deleted); if "
        f"they are really gone at the source, run again with --max-deletions {count}."
    )


class TooManyDeletions(ConfigError):
    """--apply-deletions would close more issues than the engineer allowed."""


def closing(decisions: Iterable[IssueDecision]) -> list[IssueDecision]:
    """The decisions that close an issue in Procore (with --apply-deletions)."""
    return [d for d in decisions if Request.CLOSE in d.requests]


__all__ = [
    "Action",
    "IssueDecision",
    "Request",
    "TooManyDeletions",
    "check_deletions",
    "closing",
    "decide_issues",
    "deletion_limit",
    "InspectionDecision",
    "decide_inspections",
]


# -- inspections (issue 14) ------------------------------------------------------------------------

#: Entity names in quarantine and skipped_records that belong to inspections.
INSPECTION_SOURCE_ENTITIES = ("checklist", ENTITY_INSPECTION)
INSPECTION_DELETION_HINT = (
    "reported only: migrate does not delete inspections (Procore's delete is not used); "
    "delete it in Procore by hand if it must go"
)


@dataclass(frozen=True, slots=True)
class InspectionDecision:
    """The decision for one checklist: create, update, unchanged, blocked, skipped, deleted."""

    source_id: str
    action: Action
    entry: InspectionEntry | None = None
    row: MapRow | None = None
    detail: str | None = None
    hint: str | None = None

    @property
    def target_id(self) -> int | None:
        return self.row.target_id if self.row is not None else None

    @property
    def in_flight(self) -> bool:
        """A dead run sent its create without recording the answer: look it up first."""
        return self.row is not None and self.row.state == "sent"


def decide_inspections(
    store: Store, project_id: int, *, retry_rejected: bool = False
) -> Iterator[InspectionDecision]:
    """Every checklist's decision: planned ones in source id order, then the rest.

    Reads only the store. An inspection is ``loaded`` once created; its recorded hash is the
    planned one only when every answer, comment, file and its status were done, so a loaded
    row without that hash is finished by an update (what a stopped run left half done), and a
    different hash is a checklist changed at the source.
    """
    held = open_quarantine(store, INSPECTION_SOURCE_ENTITIES)
    skipped = skipped_records(store, INSPECTION_SOURCE_ENTITIES)
    for entry, row in planned_inspections_with_map_rows(store, project_id):
        quarantined = held.pop(entry.source_id, None)
        yield _decide_inspection(entry, row, quarantined, retry_rejected)
    unplanned = {row.source_id: row for row in unplanned_inspection_map_rows(store, project_id)}
    for source_id, reason in sorted(skipped.items()):
        row = unplanned.pop(source_id, None)
        held.pop(source_id, None)
        if row is not None and row.is_loaded:
            yield InspectionDecision(
                source_id,
                Action.DELETED_AT_SOURCE,
                row=row,
                detail=reason,
                hint=INSPECTION_DELETION_HINT,
            )
        else:
            yield InspectionDecision(source_id, Action.SKIPPED, row=row, detail=reason)
    for source_id, quarantined in sorted(held.items()):
        yield InspectionDecision(
            source_id,
            Action.BLOCKED,
            row=unplanned.pop(source_id, None),
            detail=quarantined.detail,
            hint=quarantined.hint,
        )
    for row in unplanned.values():
        if row.is_loaded or row.state == "sent":
            yield InspectionDecision(
                row.source_id,
                Action.DELETED_AT_SOURCE,
                row=row,
                detail="no longer planned (deleted at the source, or gone from staging)"
                + ("; was in flight when a load stopped" if row.state == "sent" else ""),
                hint=INSPECTION_DELETION_HINT,
            )


def _decide_inspection(
    entry: InspectionEntry,
    row: MapRow | None,
    quarantined: OpenQuarantine | None,
    retry_rejected: bool,
) -> InspectionDecision:
    def blocked(by: OpenQuarantine) -> InspectionDecision:
        return InspectionDecision(
            entry.source_id, Action.BLOCKED, entry, row, detail=by.detail, hint=by.hint
        )

    if quarantined is not None and quarantined.stage != "load":
        return blocked(quarantined)
    if row is not None and row.is_loaded:
        if row.payload_hash == entry.payload_hash:
            return InspectionDecision(entry.source_id, Action.UNCHANGED, entry, row)
        why = (
            "created, but its answers, comments, files or status were not all done when a "
            "load stopped: finished now"
            if row.payload_hash is None
            else "changed at the source: header, new answers, comments and files are sent; "
            "an answer, comment or file Procore already holds is not changed"
        )
        return InspectionDecision(entry.source_id, Action.UPDATE, entry, row, detail=why)
    refused_now = (
        quarantined is not None
        and quarantined.refused_hash is not None
        and quarantined.refused_hash == entry.payload_hash
    )
    detail = None
    if row is not None and row.state == "rejected":
        if retry_rejected:
            detail = "refused before; sent again (--retry-rejected)"
        elif row.payload_hash != entry.payload_hash:
            detail = "refused before; the planned checklist has changed since"
        elif quarantined is not None:
            return blocked(quarantined)
        else:
            return InspectionDecision(
                entry.source_id,
                Action.BLOCKED,
                entry,
                row,
                detail="refused by Procore before, and its quarantine row was released: not "
                "sent again until the checklist changes",
                hint="`migrate load --retry-rejected` sends it again as it is",
            )
    elif refused_now and not retry_rejected:
        assert quarantined is not None
        return blocked(quarantined)
    elif row is not None and row.state == "sent":
        detail = (
            "was in flight when a load stopped: looked up in Procore by identifier before it "
            "is created again"
        )
    return InspectionDecision(entry.source_id, Action.CREATE, entry, row, detail=detail)
