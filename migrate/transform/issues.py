"""Field issues → planned coordination issues, skipped records or quarantine.

`map_issue` is pure: one staged issue (with its comments, status history and attachments) and
the run's `IssueContext` in, a `Planned`, `Skipped` or `Rejected` out. `plan_issues` streams the
issues table in batches (contiguous source_id ranges), fetches each batch's children with one
range query per table, maps the batch (in worker processes when there are several batches)
and writes it with executemany, so memory stays flat however big the project is.

The stored payload is its canonical JSON (sorted keys, ASCII escapes), which is also what the
payload hash covers.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import traceback
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from typing import Any, NamedTuple

from migrate.errors import MigrateError
from migrate.ids import issue_uuid
from migrate.jsontext import canonical_json, compact_json, default_json
from migrate.mappings import (
    STANDARD_FIELDS,
    AssigneeDirectory,
    FieldUsers,
    Lookup,
    Mappings,
    TradeDirectory,
    field_value,
)
from migrate.quarantine import Held, hold, record_json
from migrate.store.db import Store, open_store
from migrate.store.planned import (
    HASHED_COLUMNS,
    PLANNED_COLUMNS,
    UNSENT_DUE_DATE,
    UNSENT_TRADE,
    insert_planned_issues,
    insert_skipped,
    payload_hash_of_json,
)
from migrate.transform.description import DescriptionWriter, clean_text
from migrate.transform.titles import make_title
from migrate.transform.validate import describe_problems, normalise_due_date, payload_problems

ENTITY = "issue"
SOURCE_KIND = "issue"
DELETED_AT_SOURCE = "deleted at source"
BATCH_SIZE = 500
#: Attachment kinds that become Procore attachments (files); others are listed in the footer.
#: Attachment kinds uploaded to the coordination issue. A signature is its image, named after its
#: field, with who signed when in its caption (kept in the description's Files section).
FILE_KINDS = ("Attachment", "DocumentReference", "Signature")
#: BIM 360 Field's web app, for the origin deep link (a link for people, not an API call).
FIELD_WEB_URL = "https://bim360field.autodesk.com"
ORIGIN_TYPE = "bim360_field_issue"


@dataclass
class IssueContext:
    """Everything a mapping needs besides the record; built once per run."""

    mappings: Mappings
    title_template: str
    target_project_id: int
    unresolved_assignee: str  # unassign | quarantine
    assignees: AssigneeDirectory
    #: The staged Field users: an assignee written as a user id or a name is read through them.
    field_users: FieldUsers = field(default_factory=lambda: FieldUsers(()))
    #: The company's Procore trades (fields.csv's trade target resolves against them).
    trades: TradeDirectory = field(default_factory=lambda: TradeDirectory(()))
    #: Field area id → planned location source_id (live areas that plan).
    area_location: Mapping[str, str] = field(default_factory=dict)
    #: Field area id → node names (display only).
    area_names: Mapping[str, Sequence[str]] = field(default_factory=dict)
    deleted_areas: frozenset[str] = frozenset()
    #: Field area id → reason the area itself is quarantined.
    rejected_areas: Mapping[str, str] = field(default_factory=dict)
    companies: Mapping[str, str] = field(default_factory=dict)
    root_causes: Mapping[str, str] = field(default_factory=dict)
    issue_types: Mapping[str, tuple[str | None, str | None]] = field(default_factory=dict)
    custom_field_definitions: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    field_project_id: str | None = None
    #: The zone whose calendar day a due date-time becomes ([transform] time_zone).
    time_zone: tzinfo = UTC
    #: Field issue id → footer lines naming the inspection items it was raised from (issue 14).
    raised_from: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    run_id: int = 0
    # A project has few distinct statuses, priorities, types and emails: ask the mappings
    # once per value, not once per record.
    _memo: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    _description_writer: DescriptionWriter | None = None

    def describe(
        self,
        record: Mapping[str, Any],
        assignee_note: str,
        not_migrated: Sequence[Mapping[str, Any]],
        unsent: Sequence[tuple[str, str]] = (),
        files: Sequence[Mapping[str, str]] = (),
    ) -> str:
        """The description (Field text and footer) of a staged issue; `unsent` holds
        (label, value) of values Procore did not take (kept as footer lines), `files` the
        migrated files' captions and tags (see `described_files`)."""
        writer = self._description_writer
        if writer is None:
            writer = self._description_writer = DescriptionWriter(
                self.mappings, self.custom_field_definitions
            )
        return writer.describe(record, assignee_note, not_migrated, unsent, files)

    def resolve_assignee(self, value: str) -> tuple[int | None, str]:
        """Memoised Mappings.resolve_assignee (an email, Field user id or name)."""
        key = ("assignee", value)
        answer = self._memo.get(key)
        if answer is None:
            answer = self._memo[key] = self.mappings.resolve_assignee(
                value, self.assignees, self.field_users
            )
        return answer

    def resolve_trade(self, value: str) -> tuple[int | None, str]:
        """Memoised Mappings.resolve_trade."""
        key = ("trade", value)
        answer = self._memo.get(key)
        if answer is None:
            answer = self._memo[key] = self.mappings.resolve_trade(value, self.trades)
        return answer

    def status_for(self, value: str | None) -> Lookup:
        key = ("status", value)
        answer = self._memo.get(key)
        if answer is None:
            answer = self._memo[key] = self.mappings.status_for(value)
        return answer

    def priority_for(self, value: str | None) -> Lookup:
        key = ("priority", value)
        answer = self._memo.get(key)
        if answer is None:
            answer = self._memo[key] = self.mappings.priority_for(value)
        return answer

    def issue_type_for(self, category: str | None, type_name: str | None) -> Lookup:
        key = ("type", category, type_name)
        answer = self._memo.get(key)
        if answer is None:
            answer = self._memo[key] = self.mappings.issue_type_for(category, type_name)
        return answer

    def area_path(self, area_id: str) -> str:
        """The area's names joined with ">" (as extract stages area_path)."""
        key = ("area", area_id)
        answer = self._memo.get(key)
        if answer is None:
            answer = self._memo[key] = ">".join(self.area_names[area_id])
        return answer

    def deep_link(self, kind: str, source_id: str) -> str:
        if self.field_project_id:
            return f"{FIELD_WEB_URL}/projects/{self.field_project_id}/{kind}/{source_id}"
        return f"{FIELD_WEB_URL}/{kind}/{source_id}"


class Planned(NamedTuple):
    """A planned_issues row (see migration 2). A tuple: one is made per planned issue."""

    source_id: str
    source_kind: str
    identifier: str | None
    payload: dict[str, Any]
    location_source_id: str | None
    attachment_ids: list[str]
    payload_json: str
    payload_hash: str

    def row(self, run_id: int) -> tuple[Any, ...]:
        """A planned_issues row: store.planned.PLANNED_COLUMNS in order."""
        payload = self.payload
        return (
            self.source_id,
            self.source_kind,
            self.identifier,
            payload["title"],
            payload["status"],
            payload.get("priority"),
            payload.get("issue_type"),
            self.location_source_id,
            payload.get("assignee_id"),
            payload.get("due_date"),
            payload["uuid"],
            self.payload_json,
            default_json(self.attachment_ids) if self.attachment_ids else "[]",
            self.payload_hash,
            run_id,
        )


@dataclass(frozen=True)
class Skipped:
    source_id: str
    reason: str


@dataclass(frozen=True)
class Rejected:
    source_id: str
    reason: str
    hint: str


Outcome = Planned | Skipped | Rejected


# -- pure mapping -------------------------------------------------------------------------------


class Problems:
    """Reasons and hints collected for one record: all of them are reported at once."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.hints: list[str] = []

    def add(self, reason: str, hint: str) -> None:
        self.reasons.append(reason)
        if hint and hint not in self.hints:
            self.hints.append(hint)

    def __bool__(self) -> bool:
        return bool(self.reasons)

    def rejected(self, source_id: str) -> Rejected:
        return Rejected(
            source_id,
            "; ".join(self.reasons),
            " ".join(hint if hint.endswith(".") else hint + "." for hint in self.hints),
        )


def map_issue(record: Mapping[str, Any], context: IssueContext) -> Outcome:
    """Plan, skip or reject one staged issue (pure).

    `record` holds the issues columns plus ``comments``, ``status_history`` and
    ``attachments`` lists, ``responsible_company_name``, ``root_cause_name`` and ``area_path``
    (see `plan_issues` for how they are filled).
    """
    source_id = record["source_id"]
    if record.get("deleted"):
        return Skipped(source_id, DELETED_AT_SOURCE)
    mappings = context.mappings
    # The voided list is the source's word for it, whatever a stale detail record says.
    status_source = "Void" if record.get("voided") else record.get("status")
    status = context.status_for(status_source)
    if status.value == "skip":
        return Skipped(
            source_id,
            f"status '{status_source}' maps to skip in {mappings.file('status.csv')}",
        )
    problems = Problems()
    if status.unmapped:
        if status_source:
            problems.add(f"unmapped status '{status_source}'", status.hint)
        else:
            problems.add(
                "the issue has no status",
                "set a status on the issue in BIM 360 Field and run extract again",
            )
    priority = context.priority_for(record.get("priority"))
    if priority.unmapped:
        shown = record.get("priority") or ""
        problems.add(f"unmapped priority '{shown}'", priority.hint)
    category, type_name = record.get("category_name"), record.get("issue_type_name")
    issue_type = context.issue_type_for(category, type_name)
    if issue_type.unmapped:
        shown = " > ".join(str(part) for part in (category, type_name) if part) or "(none)"
        problems.add(f"unknown issue type '{shown}'", issue_type.hint)

    identifier = _clean(record.get("identifier"))
    if not identifier and not str(record.get("description") or "").strip():
        problems.add(
            "empty description and identifier",
            "give the issue an identifier or a description in BIM 360 Field and run extract again",
        )
        title = ""
    else:
        title = make_title(context.title_template, record)
        if not title:
            problems.add(
                "empty title",
                f"the title template '{context.title_template}' gives nothing for this issue; "
                f"change the title_template row in {mappings.file('fields.csv')} or fill in "
                "the fields it uses in BIM 360 Field",
            )

    definitions = context.custom_field_definitions
    due_ref = mappings.fields.due_date
    due_raw = _field_value(record, due_ref, definitions) if due_ref else None
    due_date, due_ok = normalise_due_date(due_raw, context.time_zone)
    # Not a date: the issue still loads, without a due date; the footer keeps the value and
    # `migrate plan` lists the issue (see UNSENT_DUE_DATE).
    unsent = [(UNSENT_DUE_DATE, str(due_raw))] if not due_ok else []

    trade_id: int | None = None
    trade_ref = mappings.fields.trade
    trade_value = _field_value(record, trade_ref, definitions) if trade_ref else None
    if trade_value is not None and trade_value != "":
        trade_id, why = context.resolve_trade(str(trade_value))
        if trade_id is None and why:
            # The issue loads without a trade; the footer keeps the value (and plan lists it).
            unsent.append((UNSENT_TRADE, f"{_clean(trade_value)} ({why})"))

    assignee_id: int | None = None
    assignee_note = ""
    assignee_ref = mappings.fields.assignee
    assignee_value = _field_value(record, assignee_ref, definitions) if assignee_ref else None
    if assignee_value:
        assignee_id, note = context.resolve_assignee(str(assignee_value))
        if assignee_id is None:
            if context.unresolved_assignee == "quarantine":
                problems.add("assignee cannot be resolved", note)
            else:
                assignee_note = note

    location_source_id = _location_for(record.get("area_id"), context, problems)

    attachment_ids, attachment_hashes, not_migrated = split_attachments(
        record.get("attachments") or ()
    )
    if problems:
        return problems.rejected(source_id)

    files = described_files(record.get("attachments") or (), attachment_ids)
    description = context.describe(record, assignee_note, not_migrated, unsent, files)
    payload: dict[str, Any] = {
        "uuid": issue_uuid(context.target_project_id, source_id),
        "title": title,
        "description": description,
        "status": status.value,
        "origin": {
            "origin_type": ORIGIN_TYPE,
            "origin_id": source_id,
            "title": f"BIM 360 Field issue {identifier or source_id}",
            "deep_link_url": context.deep_link("issues", source_id),
        },
    }
    for key, value in (
        ("priority", priority.value),
        ("issue_type", issue_type.value),
        ("assignee_id", assignee_id),
        ("due_date", due_date),
        ("trade_id", trade_id),
    ):
        if value is not None:
            payload[key] = value
    return finish_planned(
        source_id,
        SOURCE_KIND,
        identifier or None,
        payload,
        location_source_id,
        attachment_ids,
        attachment_hashes,
        context,
    )


def finish_planned(
    source_id: str,
    source_kind: str,
    identifier: str | None,
    payload: dict[str, Any],
    location_source_id: str | None,
    attachment_ids: list[str],
    attachment_hashes: list[str],
    context: IssueContext,
) -> Planned | Rejected:
    """Validate the payload against the sync rules and seal it (JSON text and payload hash)."""
    # Source text reaches origin (the identifier); control characters must not reach Procore.
    origin = payload.get("origin")
    if isinstance(origin, dict) and not _printable_text(origin.values()):
        payload["origin"] = {
            key: clean_text(value).replace("\n", " ") if isinstance(value, str) else value
            for key, value in origin.items()
        }
    errors = payload_problems(
        payload, assignee_ids=context.assignees.ids, trade_ids=context.trades.ids
    )
    if errors:
        # Mapping should never produce this: it is the last guard before Procore.
        return Rejected(
            source_id,
            "Procore would refuse the planned payload: " + describe_problems(errors),
            "fix the value in BIM 360 Field or the mapping that produced it, then run "
            "transform again.",
        )
    # The stored payload is its canonical JSON (sorted keys, ASCII): the hash is built around it.
    payload_json = canonical_json(payload)
    digest = payload_hash_of_json(payload_json, location_source_id, attachment_hashes)
    return Planned(
        source_id,
        source_kind,
        identifier,
        payload,
        location_source_id,
        attachment_ids,
        payload_json,
        digest,
    )


def _printable_text(values: Iterable[Any]) -> bool:
    """All values are str with nothing to clean (what joining them tells at C speed)."""
    try:
        return "".join(values).isprintable()
    except TypeError:  # a value that is not text
        return False


def _field_value(record: Mapping[str, Any], ref: str, definitions: Any) -> Any:
    """mappings.field_value, with a standard field's record key looked up once per ref."""
    key = _standard_key(ref)
    return record.get(key) if key is not None else field_value(record, ref, definitions)


@functools.lru_cache(maxsize=64)
def _standard_key(ref: str) -> str | None:
    standard = STANDARD_FIELDS.get(ref.strip().lower())
    return standard.record_key if standard is not None else None


def _location_for(area_id: Any, context: IssueContext, problems: Problems) -> str | None:
    if not area_id:
        return None
    area_id = str(area_id)
    location = context.area_location.get(area_id)
    if location is not None:
        return location
    if area_id in context.rejected_areas:
        problems.add(
            "location is quarantined",
            f"area {area_id} cannot become a location ({context.rejected_areas[area_id]}); "
            "fix it first (see `migrate quarantine list`)",
        )
    elif area_id in context.deleted_areas:
        names = " > ".join(context.area_names.get(area_id, ())) or area_id
        problems.add(
            "location does not exist",
            f"area '{names}' ({area_id}) is deleted in BIM 360 Field; move the issue to a live "
            "area (or clear its area) in BIM 360 Field and run extract again",
        )
    else:
        problems.add(
            "location does not exist",
            f"area {area_id} is not among the staged BIM 360 Field areas; run `migrate "
            "extract` again, or clear the issue's area in BIM 360 Field",
        )
    return None


def split_attachments(
    attachments: Sequence[Mapping[str, Any]],
) -> tuple[list[str], list[str], list[dict[str, str]]]:
    """(ids to upload at create, their sha256 in the same order, [{name, reason}] for the rest).

    Only stored files go to Procore; links, signatures and files that are not downloaded are
    listed in the description footer with the reason (and their caption and tags).
    """
    if not attachments:
        return [], [], []
    files = sorted(
        (str(a["id"]), a["sha256"])
        for a in attachments
        if a.get("kind") in FILE_KINDS and a.get("state") == "stored" and a.get("sha256")
    )
    migrated = {attachment_id for attachment_id, _ in files}
    not_migrated = []
    for attachment in sorted(attachments, key=lambda a: str(a["id"])):
        if str(attachment["id"]) in migrated:
            continue
        name = attachment.get("filename") or str(attachment["id"])
        not_migrated.append(
            {"name": name, "reason": _not_migrated_reason(attachment), **_notes(attachment)}
        )
    return [i for i, _ in files], [h for _, h in files], not_migrated


def described_files(
    attachments: Sequence[Mapping[str, Any]], migrated_ids: Sequence[str]
) -> list[dict[str, str]]:
    """[{name, caption, tags}] of the migrated files that have a caption or tags: Procore's
    attachments take neither, so the description keeps them beside the file's name."""
    if not migrated_ids:
        return []
    migrated = set(migrated_ids)
    return [
        {"name": attachment.get("filename") or str(attachment["id"]), **notes}
        for attachment in sorted(attachments, key=lambda a: str(a["id"]))
        if str(attachment["id"]) in migrated and (notes := _notes(attachment))
    ]


def _notes(attachment: Mapping[str, Any]) -> dict[str, str]:
    """The attachment's caption and tags (comma-separated in Field), where it has them."""
    notes = {}
    caption = _clean(attachment.get("caption"))
    if caption:
        notes["caption"] = caption
    tags = [tag.strip() for tag in str(attachment.get("tags") or "").split(",") if tag.strip()]
    if tags:
        notes["tags"] = ", ".join(tags)
    return notes


_FAILURES = {
    "not_found": "not found in BIM 360 Field (the file is gone at the source)",
    "size_mismatch": "the file BIM 360 Field sent did not have the size it declared",
}


def _not_migrated_reason(attachment: Mapping[str, Any]) -> str:
    kind, state = attachment.get("kind"), attachment.get("state")
    if kind == "UriReference":
        url = attachment.get("source_url")
        return f"a link, not a file: {url}" if url else "a link, not a file"
    if state == "failed":
        failure = _FAILURES.get(attachment.get("failure") or "")
        if failure:
            return failure
        error = attachment.get("error")
        return f"download failed: {error}" if error else "download failed"
    if state == "skipped":
        error = attachment.get("error")
        return f"not downloaded: {error}" if error else "not downloaded"
    return "not downloaded yet (run `migrate extract` to fetch it)"


def _clean(value: Any) -> str:
    return " ".join(str(value).split()) if value is not None else ""


# -- SQLite: streaming driver --------------------------------------------------------------------

ISSUE_COLUMNS = (
    "source_id",
    "identifier",
    "description",
    "status",
    "priority",
    "issue_type_id",
    "issue_type_name",
    "category_name",
    "area_id",
    "area_path",
    "location_detail",
    "responsible_company_id",
    "root_cause_id",
    "assigned_to_email",
    "due_date",
    "created_by",
    "created_at",
    "updated_at",
    "closed_at",
    "voided",
    "deleted",
    "custom_fields",
    "labor_hours",
    "cost",
    "responsible_company_name",
    "root_cause_name",
)
#: Field's ancillary standard fields, shown with the custom fields in the footer (the footer
#: has no line of its own for them, and nothing may be dropped silently).
ANCILLARY_FIELDS = (("labor_hours", "Labor hours", "f--labor_hours"), ("cost", "Cost", "f--cost"))
_ISSUE_SELECT = f"SELECT {', '.join(ISSUE_COLUMNS)} FROM issues"

_HASHED_POSITIONS = tuple(PLANNED_COLUMNS.index(c) for c in HASHED_COLUMNS)


def plan_hash_lines(rows: Iterable[Sequence[Any]]) -> bytes:
    """The plan hash's input for planned rows: one JSON array a line (see transform.plan_hash)."""
    lines = [compact_json(row) for row in rows]
    return ("\n".join(lines) + "\n").encode("ascii") if lines else b""


def batch_bounds(store: Store, batch_size: int = BATCH_SIZE) -> list[tuple[str, str]]:
    """(first, last) source_id of each run of `batch_size` issues in source_id order.

    A few dozen pairs even for 100 000 issues; each names exactly its issues, and children
    keyed by issue id are found by the same range on their index.
    """
    bounds: list[tuple[str, str]] = []
    first: str | None = None
    previous = ""
    for position, (source_id,) in enumerate(
        store.conn.execute("SELECT source_id FROM issues ORDER BY source_id")
    ):
        if position % batch_size == 0:
            if first is not None:
                bounds.append((first, previous))
            first = source_id
        previous = source_id
    if first is not None:
        bounds.append((first, previous))
    return bounds


def read_issues(store: Store, first: str, last: str) -> list[dict[str, Any]]:
    """The staged issues with first <= source_id <= last, children attached, in order."""
    rows = store.conn.execute(
        _ISSUE_SELECT + " WHERE source_id BETWEEN ? AND ? ORDER BY source_id", (first, last)
    ).fetchall()
    records = [dict(zip(ISSUE_COLUMNS, row, strict=True)) for row in rows]
    attach_children(store, records, first, last)
    return records


def attach_children(store: Store, records: list[dict[str, Any]], first: str, last: str) -> None:
    """Fill comments, status_history and attachments of a batch, one range query per table."""
    conn = store.conn
    by_id: dict[str, dict[str, Any]] = {}
    for record in records:
        record["comments"] = []
        record["status_history"] = []
        record["attachments"] = []
        by_id[record["source_id"]] = record
    bounds = (first, last)
    for container_id, created_by, created_at, text in conn.execute(
        "SELECT container_id, created_by, created_at, text FROM comments "
        "WHERE container_type = 'Issue' AND container_id BETWEEN ? AND ? "
        "ORDER BY container_id, created_at, id",
        bounds,
    ):
        by_id[container_id]["comments"].append(
            {"created_by": created_by, "created_at": created_at, "text": text}
        )
    for issue_id, status, previous, user, start_dt, end_dt in conn.execute(
        "SELECT issue_id, status, previous_status, user, start_dt, end_dt "
        "FROM issue_status_history WHERE issue_id BETWEEN ? AND ? ORDER BY issue_id, start_dt, id",
        bounds,
    ):
        by_id[issue_id]["status_history"].append(
            {
                "status": status,
                "previous_status": previous,
                "user": user,
                "start_dt": start_dt,
                "end_dt": end_dt,
            }
        )
    for (
        attachment_id,
        container_id,
        kind,
        filename,
        state,
        sha256,
        url,
        error,
        failure,
        caption,
        tags,
    ) in conn.execute(
        "SELECT id, container_id, kind, filename, state, sha256, source_url, error, failure, "
        "caption, tags "
        "FROM attachments WHERE container_type = 'Issue' AND container_id BETWEEN ? AND ? "
        "ORDER BY container_id, id",
        bounds,
    ):
        by_id[container_id]["attachments"].append(
            {
                "id": attachment_id,
                "kind": kind,
                "filename": filename,
                "state": state,
                "sha256": sha256,
                "source_url": url,
                "error": error,
                "failure": failure,
                "caption": caption,
                "tags": tags,
            }
        )


def enrich(record: dict[str, Any], context: IssueContext) -> None:
    """Names the footer shows for ids, the area path from the tree, custom fields parsed."""
    company = record.get("responsible_company_id")
    if company and not record.get("responsible_company_name"):
        record["responsible_company_name"] = context.companies.get(company, company)
    cause = record.get("root_cause_id")
    if cause and not record.get("root_cause_name"):
        record["root_cause_name"] = context.root_causes.get(cause, cause)
    type_id = record.get("issue_type_id")
    if type_id and (not record.get("issue_type_name") or not record.get("category_name")):
        name, category = context.issue_types.get(type_id, (None, None))
        record["issue_type_name"] = record.get("issue_type_name") or name
        record["category_name"] = record.get("category_name") or category
    area = record.get("area_id")
    if area and area in context.area_names:
        record["area_path"] = context.area_path(area)
    raw = record.get("custom_fields")
    custom = json.loads(raw) if isinstance(raw, str) and raw else (raw or {})
    for key, name, field_id in ANCILLARY_FIELDS:
        value = record.get(key)
        if value is not None and value != "" and name not in custom:
            custom[name] = {"value": value, "id": field_id}
    _point_signatures_at_their_files(custom, record.get("attachments"))
    record["custom_fields"] = custom
    raised_from = context.raised_from.get(record["source_id"])
    if raised_from:
        record["raised_from"] = raised_from


def _point_signatures_at_their_files(custom: dict[str, Any], attachments: Any) -> None:
    """A signature field's value is the id of its signature: say which file holds the image."""
    signed = {
        str(a.get("id")): a.get("filename") or str(a.get("id"))
        for a in attachments or ()
        if a.get("kind") == "Signature"
    }
    if not signed:
        return
    for name, raw in custom.items():
        value = raw.get("value") if isinstance(raw, Mapping) else raw
        if isinstance(value, str) and value in signed:
            detail = dict(raw) if isinstance(raw, Mapping) else {}
            custom[name] = {**detail, "value": f"signed (the image is the file {signed[value]})"}


def raw_payloads(store: Store, source_ids: Sequence[str]) -> dict[str, Any]:
    """The raw_issue_details payloads of these issues (what a quarantine row keeps)."""
    if not source_ids:
        return {}
    return {
        source_id: json.loads(payload)
        for source_id, payload in store.conn.execute(
            "SELECT source_id, payload FROM raw_issue_details "
            "WHERE source_id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(source_ids)),),
        )
    }


@dataclass
class EntityTally:
    """Per-entity counts of one transform run."""

    extracted: int = 0
    planned: int = 0
    quarantined: int = 0
    skipped: int = 0
    released: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "extracted": self.extracted,
            "planned": self.planned,
            "quarantined": self.quarantined,
            "skipped": self.skipped,
            "released": self.released,
        }


@dataclass
class BatchResult:
    """One mapped batch, ready to write: planned_issues rows, (source_id, reason), Held."""

    count: int = 0
    planned: list[tuple[Any, ...]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    held: list[Held] = field(default_factory=list)
    #: plan_hash_lines of `planned`, made where the batch is mapped (in a worker, in parallel).
    hash_lines: bytes = b""


def collect(
    outcomes: Iterable[tuple[Mapping[str, Any], Outcome]],
    run_id: int,
    record_for: Callable[[Mapping[str, Any]], Any],
) -> BatchResult:
    """Sort a batch's outcomes into rows (quarantined records serialised here)."""
    result = BatchResult()
    for record, outcome in outcomes:
        result.count += 1
        if isinstance(outcome, Planned):
            result.planned.append(outcome.row(run_id))
        elif isinstance(outcome, Skipped):
            result.skipped.append((outcome.source_id, outcome.reason))
        else:
            result.held.append(
                Held(
                    outcome.source_id, outcome.reason, outcome.hint, record_json(record_for(record))
                )
            )
    positions = _HASHED_POSITIONS
    result.hash_lines = plan_hash_lines([row[i] for i in positions] for row in result.planned)
    return result


def write_batch(
    store: Store,
    entity: str,
    batch: BatchResult,
    run_id: int,
    tally: EntityTally,
    digest: Any | None = None,
) -> None:
    """Write one batch with executemany (inside the caller's transaction) and count it.

    `digest` (a hashlib object), when given, takes the batch's plan hash lines.
    """
    insert_planned_issues(store, batch.planned)
    if digest is not None:
        digest.update(batch.hash_lines)
    insert_skipped(
        store, [(entity, source_id, reason, run_id) for source_id, reason in batch.skipped]
    )
    hold(store, entity, "transform", batch.held, run_id)
    tally.extracted += batch.count
    tally.planned += len(batch.planned)
    tally.skipped += len(batch.skipped)
    tally.quarantined += len(batch.held)


def map_range(store: Store, context: IssueContext, first: str, last: str) -> BatchResult:
    """Read, enrich and map the issues first..last (the unit of work, in or out of process)."""
    records = read_issues(store, first, last)
    outcomes = []
    for record in records:
        enrich(record, context)
        outcomes.append((record, map_issue(record, context)))
    raw = raw_payloads(store, [o.source_id for _r, o in outcomes if isinstance(o, Rejected)])
    return collect(
        outcomes,
        context.run_id,
        lambda record: {"staged": record, "raw": raw.get(record["source_id"])},
    )


def plan_issues(
    store: Store,
    context: IssueContext,
    run_id: int,
    *,
    advance: Callable[[int], None] | None = None,
    batch_size: int = BATCH_SIZE,
    workers: int = 1,
    digest: Any | None = None,
) -> EntityTally:
    """Map every staged issue and write the outcomes, batch by batch (inside the caller's
    transaction).

    With `workers` > 1 (and a file-backed store with MIN_BATCHES_FOR_WORKERS batches) they are
    mapped by that many worker processes (see START_METHOD), each reading staging through its
    own connection; this process only writes, in batch order, so the result is the same as
    with one worker. A worker that raises or dies ends the call with WorkerFailed.
    `digest` takes the plan hash lines of the planned rows, in source_id order.
    """
    context.run_id = run_id
    tally = EntityTally()
    bounds = batch_bounds(store, batch_size)
    if workers > 1 and len(bounds) >= MIN_BATCHES_FOR_WORKERS and store.path != ":memory:":
        batches: Generator[BatchResult, None, None] = _map_in_processes(
            store.path, context, bounds, workers
        )
    else:
        batches = (map_range(store, context, first, last) for first, last in bounds)
    # Closing, if writing fails, cancels the batches not started and waits for those being
    # mapped.
    with contextlib.closing(batches):
        for batch in batches:
            write_batch(store, ENTITY, batch, run_id, tally, digest)
            if advance is not None:
                advance(batch.count)
    return tally


# -- worker processes -------------------------------------------------------------------------

#: How worker processes start: "spawn" (a fresh interpreter that imports this module) is the
#: one start method every OS has, and the only one on Windows; using it everywhere means what
#: the tests prove on Linux is what runs on an engineer's Windows or macOS laptop. Tests
#: monkeypatch this to run the same machinery on every start method the OS offers. (A
#: program that calls transform with workers guards its entry point with ``if __name__ ==
#: "__main__":``, as spawn imports the main module again; the `migrate` command does.)
START_METHOD = "spawn"
#: Batches submitted to workers and not yet written, per worker: bounds memory (each mapped
#: batch is ~1 MB), and keeps a fast worker from running far ahead of a slow one.
IN_FLIGHT_PER_WORKER = 2
#: Workers started at most, whatever `workers` asks: a spawned worker costs ~85 MB and ~0.5 s
#: of CPU to start (it imports what this module imports), and more of them would shave
#: seconds off a stage that is a rounding error of a quota-bound migration (BENCHMARKS.md).
#: Also keeps below Windows' limit of 61 ProcessPoolExecutor workers.
MAX_WORKERS = 4
#: Fewer batches than this (20 000 issues) are mapped here, not in workers: one process maps
#: them before spawned workers would have started (bench, 10 000 issues: 1.3-1.8 s in one
#: process, 3.1-5.6 s with two spawned workers, each importing for ~0.5 s of CPU first).
MIN_BATCHES_FOR_WORKERS = 40


class WorkerFailed(MigrateError):
    """A worker process raised, or died without sending its result: the run's transaction is
    rolled back, so the plan is what it was before the run."""


def _map_in_processes(
    path: str, context: IssueContext, bounds: list[tuple[str, str]], workers: int
) -> Generator[BatchResult, None, None]:
    """Batch results in `bounds` order, mapped by `workers` (at most MAX_WORKERS) processes.

    Each worker gets the context once (pickled at start) and opens staging through its own
    connection; WAL lets it read while this process holds the write transaction. At most
    IN_FLIGHT_PER_WORKER batches a worker are submitted and not yet written (flat memory).
    Closing the generator (the writer failed, Ctrl-C) cancels what has not started and waits
    for the batches being mapped, so no worker outlives the call.
    """
    pool_size = min(workers, MAX_WORKERS, len(bounds))
    pool = ProcessPoolExecutor(
        max_workers=pool_size,
        mp_context=multiprocessing.get_context(START_METHOD),
        initializer=_start_worker,
        # map_range is looked up now, so a test can swap in a mapper that fails in a worker.
        initargs=(path, context, map_range),
    )
    try:
        upcoming = iter(bounds)
        in_flight: collections.deque[Future[BatchResult]] = collections.deque(
            pool.submit(_map_batch, first, last)
            for first, last in itertools.islice(upcoming, IN_FLIGHT_PER_WORKER * pool_size)
        )
        for index in range(len(bounds)):
            yield _batch_result(in_flight.popleft(), index, len(bounds))
            for first, last in itertools.islice(upcoming, 1):
                in_flight.append(pool.submit(_map_batch, first, last))
    except BrokenProcessPool:  # from submit: a worker died between two results
        raise _ended_abruptly("while batches were being handed out") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _batch_result(future: Future[BatchResult], index: int, batches: int) -> BatchResult:
    """The future's batch, or WorkerFailed saying what happened to the worker that mapped it."""
    try:
        return future.result()
    except BrokenProcessPool:
        raise _ended_abruptly(f"while batch {index + 1} of {batches} was due") from None
    except Exception as exc:  # raised in the worker (its traceback rides along as the cause)
        detail = "".join(traceback.format_exception_only(exc)).strip()
        raise WorkerFailed(
            f"a transform worker failed ({detail}); nothing of this run was kept. Run "
            "transform again; if it fails the same way, keep the log and report it"
        ) from exc


def _ended_abruptly(when: str) -> WorkerFailed:
    return WorkerFailed(
        f"a transform worker process ended abruptly (killed, out of memory, or it could not "
        f"start) {when}; nothing of this run was kept, run transform again"
    )


@dataclass
class _Worker:
    """What one worker process keeps between batches."""

    path: str
    context: IssueContext
    mapper: Callable[[Store, IssueContext, str, str], BatchResult]
    store: Store | None = None


_worker: _Worker | None = None


def _start_worker(
    path: str,
    context: IssueContext,
    mapper: Callable[[Store, IssueContext, str, str], BatchResult],
) -> None:
    """A worker process's initializer: keep the run's context; end with the parent."""
    global _worker
    # Ctrl-C reaches every process of the console (POSIX and Windows alike); the parent
    # decides what it means and stops the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_parent()
    _worker = _Worker(path, context, mapper)


def _map_batch(first: str, last: str) -> BatchResult:
    """Map one batch in a worker (the task ProcessPoolExecutor runs)."""
    worker = _worker
    if worker is None:  # pragma: no cover - the initializer always ran first
        raise RuntimeError("transform worker started without its initializer")
    if worker.store is None:
        # Opened by the first batch, not the initializer: an error here is this batch's,
        # reported with its message, where an initializer's would only break the pool.
        worker.store = open_store(worker.path)
    return worker.mapper(worker.store, worker.context, first, last)


def exit_with_parent() -> None:
    """In a multiprocessing child: end this process as soon as its parent has ended.

    ProcessPoolExecutor's workers wait for tasks on a queue whose writing end they hold
    themselves, so a parent killed with kill -9 (or by the OOM killer) would leave them
    waiting forever. The parent's sentinel becomes ready when the parent ends, on every OS.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)  # what the parent would have done: nothing of a dead run is worth keeping

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
