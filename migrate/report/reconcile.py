"""Reconciliation: source ↔ staging ↔ Procore, per entity and field by field per loaded issue.

``fetch_target`` only reads Procore (coordination issues with ``view=extended``, every page, and
the project's locations); ``reconcile`` only reads the staging DB and compares. What each
loaded issue is expected to look like comes from what transform planned and load recorded:

- title, status, priority, issue_type, due_date, assignee: ``planned_issues``;
- location: the planned path (node names, root first) against the path Procore's location ids
  give, walked through ``parent_id`` (names joined by ">" are ambiguous when a name holds ">");
- attachments: the files load sent at create (``id_map.attachment_ids``), by count and by name,
  and by content: a file matches when the sha256 of the bytes storage received
  (``uploads.sent_sha256``, hashed while they were sent) equals the staged sha256 of that
  attachment and Procore lists a file of that name on the issue. Procore's API gives no size
  or digest of an attachment, and issue files are never downloaded: the sent digest is the
  proof (inspection files are downloaded and hashed: see ``migrate.report.inspections``).

Orphans are Procore issues carrying a uuid this migration derives (``migrate.ids.issue_uuid``
for any source id the staging DB knows, or a planned uuid) that id_map does not map to them.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from migrate.ids import ENTITY_ISSUE, issue_uuid
from migrate.quarantine import open_quarantine_records, quarantined_source_ids
from migrate.report.paths import actual_path, path_of, path_text
from migrate.report.quota import QuotaFigures, quota_figures
from migrate.report.status import parse_time, request_total
from migrate.store.db import Store
from migrate.store.ledger import LedgerRow, read_ledger, unaccounted
from migrate.store.planned import (
    id_map_rows,
    known_issue_source_ids,
    loaded_issue_rows,
    loaded_location_rows,
    loaded_then_deleted_rows,
    planned_uuids,
)
from migrate.store.runs import run_rows
from migrate.store.uploads import sent_sha256s
from migrate.text import procore_name

if TYPE_CHECKING:
    from migrate.report.inspections import InspectionReconciliation, InspectionTarget

MISMATCH_COLUMNS = (
    "entity",
    "source_id",
    "identifier",
    "procore_id",
    "field",
    "expected",
    "actual",
    "note",
)
MISSING_COLUMNS = ("entity", "source_id", "identifier", "title", "procore_id", "uuid", "loaded_at")
ORPHAN_COLUMNS = (
    "procore_id",
    "uuid",
    "title",
    "status",
    "source_id",
    "staging_state",
    "why",
)
QUARANTINE_COLUMNS = ("entity", "stage", "reason", "hint", "source_id", "created_at", "record")
TOP_LOCATIONS = 15
NO_LOCATION = "(no location)"
LINK_REMOVED = "[link removed]"
_URL_RE = re.compile(r"(?i)\b(?:https?|ftp|file)://[^\s\"'<>]*|\bwww\.[^\s\"'<>]+")


class TargetReader(Protocol):
    """What reconciliation needs from the Procore client (read-only calls)."""

    def coordination_issues(self, project_id: int, *, view: str = "extended") -> Iterable[Any]:
        """Every coordination issue of the project (all pages)."""

    def locations(self, project_id: int) -> Iterable[Any]:
        """Every location of the project (all pages)."""


@dataclass(frozen=True)
class TargetSnapshot:
    """What Procore holds now, as its API answered."""

    project_id: int
    issues: list[dict[str, Any]]
    locations: list[dict[str, Any]]


@dataclass(frozen=True)
class Check:
    """One comparison and whether it ran (and why not)."""

    name: str
    ran: bool
    detail: str


@dataclass
class QuarantineGroup:
    """Open quarantine rows sharing entity, stage and reason."""

    entity: str
    stage: str
    reason: str
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def hints(self) -> list[str]:
        """The records' distinct hints, in record order: records of one reason may need
        different fixes (issues in different deleted areas, say)."""
        return list(dict.fromkeys(str(r["hint"]) for r in self.records if r.get("hint")))


@dataclass
class Reconciliation:
    """Everything the report shows; lists hold plain dicts ready for CSV and HTML."""

    target_project_id: int | None
    online: bool
    checks: list[Check]
    entity_rows: list[dict[str, Any]]
    matched: int
    matched_by_entity: dict[str, int]
    mismatches: list[dict[str, Any]]
    missing: list[dict[str, Any]]
    orphans: list[dict[str, Any]]
    attachments_after_load: list[dict[str, Any]]
    deleted_after_load: list[dict[str, Any]]
    quarantine: list[QuarantineGroup]
    issue_results: dict[str, str]
    #: source id -> "matched", "mismatched: <file names>", "none" or "not checked: …"
    attachment_results: dict[str, str]
    runs: list[dict[str, Any]]
    status_before: list[tuple[str, int]]
    status_after: list[tuple[str, int]]
    by_location: list[tuple[str, int]]
    #: The latest load run's use of Procore's quota, from its stored readings (None: no run
    #: stored any).
    quota: QuotaFigures | None
    #: Every staged checklist's outcome and the inspections' field differences (issue 14).
    inspections: InspectionReconciliation | None = None
    #: Where every source field went, as transform stored it (transform/ledger.py).
    field_ledger: list[LedgerRow] = field(default_factory=list)

    @property
    def quarantined(self) -> int:
        return sum(len(group.records) for group in self.quarantine)

    @property
    def clean(self) -> bool:
        """No mismatch, missing record or orphan, and no source field without a destination."""
        return not (self.mismatches or self.missing or self.orphans or self.fields_unaccounted)

    @property
    def fields_unaccounted(self) -> list[LedgerRow]:
        return unaccounted(self.field_ledger)


# -- reading Procore ---------------------------------------------------------------------------


def _flatten(items: Iterable[Any]) -> list[dict[str, Any]]:
    # Clients may yield items or whole pages; accept both.
    flat: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, list):
            flat.extend(i for i in item if isinstance(i, dict))
        elif isinstance(item, dict):
            flat.append(item)
    return flat


def fetch_target(reader: TargetReader, project_id: int) -> TargetSnapshot:
    """Read every coordination issue (extended view: with attachments) and every location."""
    issues = _flatten(reader.coordination_issues(project_id, view="extended"))
    locations = _flatten(reader.locations(project_id))
    return TargetSnapshot(project_id=project_id, issues=issues, locations=locations)


# -- helpers ---------------------------------------------------------------------------------


def strip_links(value: Any) -> Any:
    """A copy of a JSON-able value with every URL replaced by "[link removed]"."""
    if isinstance(value, str):
        return _URL_RE.sub(LINK_REMOVED, value)
    if isinstance(value, Mapping):
        return {str(k): strip_links(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strip_links(v) for v in value]
    return value


def link_free_record(text: str | None, *, indent: int | None = 2) -> str:
    """A quarantine record (JSON text) with its links removed (pretty unless indent=None)."""
    if not text:
        return ""
    try:
        value = json.loads(text)
    except ValueError:
        return strip_links(text)
    return json.dumps(strip_links(value), indent=indent, ensure_ascii=False, sort_keys=True)


def _rows(store: Store, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    cursor = store.conn.execute(sql, params)
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def _json_list(text: str | None) -> list[Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, list) else None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def _date(value: Any) -> str | None:
    return None if value in (None, "") else str(value)[:10]


# -- the comparison --------------------------------------------------------------------------


def reconcile(
    store: Store,
    target_project_id: int | None,
    target: TargetSnapshot | None,
    inspections: InspectionTarget | None = None,
) -> Reconciliation:
    """Compare the staging DB with ``target`` (None: offline, staging-only checks) and the
    inspections with ``inspections`` (None: Procore's inspections were not read)."""
    from migrate.report.inspections import reconcile_inspections

    project = target_project_id
    loaded = loaded_issue_rows(store, project)
    # The name each file was uploaded under: load cleans control characters out of it.
    attachment_info = {
        row["id"]: {**row, "filename": procore_name(row["filename"] or "") or None}
        for row in _rows(store, "SELECT id, filename, sha256 FROM attachments")
    }
    sent_sha256 = sent_sha256s(store)
    checks: list[Check] = []
    mismatches: list[dict[str, Any]] = []
    missing: list[dict[str, Any]] = []
    orphans: list[dict[str, Any]] = []
    issue_results: dict[str, str] = {}
    attachment_results: dict[str, str] = {}
    matched_by_entity = {"issue": 0, "checklist_item": 0, "location": 0}

    online = target is not None
    procore_issues = {int(i["id"]): i for i in target.issues} if target else {}
    locations_by_id = {int(loc["id"]): loc for loc in target.locations} if target else {}

    if online:
        for row in loaded:
            kind = _kind(row["source_id"])
            actual = procore_issues.get(row["target_id"])
            if actual is None:
                missing.append(_missing_row(kind, row))
                issue_results[row["source_id"]] = "missing in Procore"
                attachment_results[row["source_id"]] = "not checked: missing in Procore"
                continue
            files = _attachment_check(row, actual, attachment_info, sent_sha256)
            attachment_results[row["source_id"]] = files.status
            rows = _compare_issue(kind, row, actual, locations_by_id, files)
            mismatches.extend(rows)
            if rows:
                issue_results[row["source_id"]] = "mismatch: " + ", ".join(
                    sorted({r["field"] for r in rows})
                )
            else:
                issue_results[row["source_id"]] = "matches"
                matched_by_entity[kind] += 1
        location_mismatches, location_missing, matched_locations = _compare_locations(
            store, project, locations_by_id
        )
        mismatches.extend(location_mismatches)
        missing.extend(location_missing)
        matched_by_entity["location"] = matched_locations
        orphans = _orphans(store, project, procore_issues, loaded)
        checks.extend(_online_checks(len(procore_issues), len(locations_by_id)))
        checks.extend(_inspection_checks(inspections))
    else:
        for row in loaded:
            issue_results[row["source_id"]] = "loaded (not checked: offline)"
            attachment_results[row["source_id"]] = "not checked: offline"
        checks.append(
            Check(
                "Procore read-back",
                False,
                "offline: Procore was not read, so no field, missing or orphan check ran; the "
                "report shows the staging DB and id_map only",
            )
        )

    inspection_rec = reconcile_inspections(
        store, project, inspections if online else None, locations_by_id
    )
    mismatches.extend(inspection_rec.mismatches)
    missing.extend(inspection_rec.missing)
    entity_rows = _entity_rows(
        store, project, issue_results, missing, orphans, matched_by_entity, online
    )
    entity_rows.append(inspection_rec.entity_row())
    orphans.extend(inspection_rec.orphans)  # after the issue row counted the issues' own
    status_after = _status_after(loaded, procore_issues, online)
    by_location = _by_location(store, loaded, procore_issues, locations_by_id, online)
    reconciliation = Reconciliation(
        target_project_id=project,
        online=online,
        checks=checks,
        entity_rows=entity_rows,
        matched=matched_by_entity["issue"] + matched_by_entity["checklist_item"],
        matched_by_entity=matched_by_entity,
        mismatches=mismatches,
        missing=missing,
        orphans=orphans,
        attachments_after_load=_rows(
            store,
            "SELECT attachment_id, container_id AS source_id, filename, size, waiting_for "
            "FROM v_attachments_pending WHERE waiting_for LIKE 'after load%' "
            "ORDER BY container_id, attachment_id",
        ),
        deleted_after_load=loaded_then_deleted_rows(store, project),
        quarantine=_quarantine_groups(store),
        issue_results=issue_results,
        attachment_results=attachment_results,
        runs=_run_history(store),
        status_before=_status_before(store),
        status_after=status_after,
        by_location=by_location,
        quota=quota_figures(store),
        inspections=inspection_rec,
        field_ledger=read_ledger(store),
    )
    return reconciliation


def _kind(source_id: str) -> str:
    return "checklist_item" if source_id.startswith("checklist_item:") else "issue"


def _missing_row(kind: str, row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "entity": kind,
        "source_id": row["source_id"],
        "identifier": row.get("identifier"),
        "title": row.get("title"),
        "procore_id": row["target_id"],
        "uuid": row.get("uuid"),
        "loaded_at": row.get("updated_at"),
    }


def _compare_issue(
    kind: str,
    row: Mapping[str, Any],
    actual: Mapping[str, Any],
    locations_by_id: Mapping[int, dict[str, Any]],
    files: AttachmentCheck,
) -> list[dict[str, Any]]:
    notes = []
    if row.get("planned_hash") is None:
        notes.append("no planned row any more (deleted at the source?)")
    elif row.get("loaded_hash") != row.get("planned_hash"):
        notes.append("staging changed after load: `migrate load` sends the update")
    if row.get("status") and row.get("target_status") and row["status"] != row["target_status"]:
        notes.append("status change not loaded yet")
    note = "; ".join(notes)
    found: list[dict[str, Any]] = []

    def differ(name: str, expected: Any, got: Any, why: str = "") -> None:
        found.append(
            {
                "entity": kind,
                "source_id": row["source_id"],
                "identifier": row.get("identifier"),
                "procore_id": row["target_id"],
                "field": name,
                "expected": _text(expected),
                "actual": _text(got),
                "note": "; ".join(n for n in (why, note) if n),
            }
        )

    if row.get("planned_hash") is None:
        return found  # nothing planned to compare with; listed under deleted-after-load
    if row.get("uuid") and str(actual.get("uuid") or "").lower() != str(row["uuid"]).lower():
        differ("uuid", row["uuid"], actual.get("uuid"))  # id_map points at another issue
    for name in ("title", "status", "priority", "issue_type"):
        if (row.get(name) or None) != (actual.get(name) or None):
            differ(name, row.get(name), actual.get(name))
    expected_path = _json_list(row.get("location_path"))
    got_path = actual_path(actual, locations_by_id)
    if (expected_path or None) != (got_path or None):
        differ("location", path_text(expected_path), path_text(got_path))
    assignee = actual.get("assignee") or {}
    if row.get("assignee_id") != assignee.get("id"):
        differ(
            "assignee",
            _person(row.get("assignee_id"), row.get("assignee_login")),
            _person(assignee.get("id"), assignee.get("login")),
        )
    if _date(row.get("due_date")) != _date(actual.get("due_date")):
        differ("due_date", _date(row.get("due_date")), _date(actual.get("due_date")))

    if len(files.expected_names) != len(files.actual_names):
        differ("attachment_count", len(files.expected_names), len(files.actual_names))
    elif Counter(files.expected_names) != Counter(files.actual_names):
        only_expected = sorted(
            (Counter(files.expected_names) - Counter(files.actual_names)).elements()
        )
        only_actual = sorted(
            (Counter(files.actual_names) - Counter(files.expected_names)).elements()
        )
        differ("attachment_names", only_expected, only_actual)
    for name, staged, sent in files.unproven:
        differ(
            "attachment_sha256",
            f"{name}: {staged or 'not staged'}",
            f"{name}: {sent or 'not recorded'}",
            "the bytes sent are not the staged file"
            if sent
            else "no sha256 was recorded for the bytes sent (an upload made before migrate "
            "hashed them): compare this file in Procore by hand",
        )
    return found


@dataclass(frozen=True)
class AttachmentCheck:
    """One loaded issue's files: names expected and listed, and files whose bytes differ."""

    expected_names: list[str]
    actual_names: list[str]
    unproven: list[tuple[str, str | None, str | None]]  # (name, staged sha256, sent sha256)
    status: str


def _attachment_check(
    row: Mapping[str, Any],
    actual: Mapping[str, Any],
    attachment_info: Mapping[str, Mapping[str, Any]],
    sent_sha256: Mapping[tuple[str, int], str | None],
) -> AttachmentCheck:
    """A file matches when the sha256 sent is its staged sha256 and Procore lists its name."""
    sent = _json_list(row.get("sent_attachment_ids"))
    if sent is None:
        sent = _json_list(row.get("planned_attachment_ids")) or []
    actual_names = [
        str(a.get("name") or "") for a in actual.get("attachments") or [] if isinstance(a, dict)
    ]
    listed = Counter(actual_names)
    expected_names: list[str] = []
    unproven: list[tuple[str, str | None, str | None]] = []
    mismatched: list[str] = []
    for attachment_id in sent:
        info = attachment_info.get(attachment_id) or {}
        name = info.get("filename") or f"attachment-{attachment_id}"
        expected_names.append(name)
        staged = info.get("sha256")
        sent_digest = sent_sha256.get((attachment_id, row["target_project_id"]))
        proven = sent_digest is not None and sent_digest == staged
        if not proven:
            unproven.append((name, staged, sent_digest))
        if listed[name] > 0:
            listed[name] -= 1
        else:
            proven = False
        if not proven:
            mismatched.append(name)
    if not sent:
        status = "none"
    elif mismatched:
        status = "mismatched: " + ", ".join(mismatched)
    else:
        status = "matched"
    return AttachmentCheck(expected_names, actual_names, unproven, status)


def _person(user_id: Any, login: Any) -> str | None:
    if user_id is None:
        return None
    return f"{user_id} ({login})" if login else str(user_id)


def _compare_locations(
    store: Store, project: int | None, by_id: Mapping[int, dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    mismatches: list[dict[str, Any]] = []
    missing: list[dict[str, Any]] = []
    matched = 0
    for row in loaded_location_rows(store, project):
        if row["target_id"] not in by_id:
            missing.append(
                {
                    "entity": "location",
                    "source_id": row["source_id"],
                    "identifier": None,
                    "title": row["path_text"],
                    "procore_id": row["target_id"],
                    "uuid": None,
                    "loaded_at": row["updated_at"],
                }
            )
            continue
        expected = _json_list(row["path"])
        actual = path_of(row["target_id"], by_id)
        if expected is not None and expected != actual:
            mismatches.append(
                {
                    "entity": "location",
                    "source_id": row["source_id"],
                    "identifier": None,
                    "procore_id": row["target_id"],
                    "field": "location",
                    "expected": path_text(expected),
                    "actual": path_text(actual),
                    "note": "",
                }
            )
        else:
            matched += 1
    return mismatches, missing, matched


def _orphans(
    store: Store,
    project: int | None,
    procore_issues: Mapping[int, dict[str, Any]],
    loaded: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    mapped_ids = {row["target_id"] for row in loaded}
    ours = planned_uuids(store)
    if project is not None:
        for source_id in sorted(known_issue_source_ids(store) | quarantined_source_ids(store)):
            ours.setdefault(issue_uuid(project, source_id), source_id)
    id_map_state = {
        source_id: (row.state, row.target_id)
        for source_id, row in id_map_rows(store, ENTITY_ISSUE, project).items()
    }
    journey = {
        source_id: state
        for source_id, state in store.conn.execute("SELECT source_id, state FROM v_issue_journey")
    }
    found: list[dict[str, Any]] = []
    for procore_id, issue in sorted(procore_issues.items()):
        uuid = str(issue.get("uuid") or "").lower()
        if procore_id in mapped_ids or uuid not in ours:
            continue
        source_id = ours[uuid]
        state, target_id = id_map_state.get(source_id, (None, None))
        if state == "sent":
            why = (
                "created by a load that stopped before recording it; `migrate load` "
                "finds and records it"
            )
        elif state == "loaded":
            why = f"id_map maps {source_id} to Procore issue {target_id}, not this one"
        elif state == "rejected":
            why = "id_map says Procore refused this record, yet Procore has it"
        else:
            why = (
                "carries the uuid migrate derives for this record, but id_map does not "
                "know it (created outside this staging DB, or by an earlier one)"
            )
        found.append(
            {
                "procore_id": procore_id,
                "uuid": issue.get("uuid"),
                "title": issue.get("title"),
                "status": issue.get("status"),
                "source_id": source_id,
                "staging_state": journey.get(source_id, state or "unknown"),
                "why": why,
            }
        )
    return found


def _online_checks(issues: int, locations: int) -> list[Check]:
    checks = [
        Check(
            "Procore read-back",
            True,
            f"read {issues} coordination issues (view=extended, every page) and "
            f"{locations} locations",
        ),
        Check("uuid", True, "the Procore issue id_map names carries the planned uuid"),
    ]
    for name in ("title", "status", "priority", "issue_type", "due_date", "assignee"):
        checks.append(Check(name, True, "planned value against Procore's"))
    checks.append(
        Check(
            "location", True, "planned path against the path of Procore's location ids (parent_id)"
        )
    )
    checks.append(Check("attachment_count", True, "files sent at create against Procore's list"))
    checks.append(
        Check(
            "attachment_names", True, "file names sent at create against Procore's attachment names"
        )
    )
    checks.append(
        Check(
            "attachment_sha256",
            True,
            "the sha256 of the bytes storage received, hashed as they were sent, against the "
            "staged file's; a file matches when they are equal and Procore lists its name",
        )
    )
    checks.append(Check("missing", True, "every id_map 'loaded' issue and location looked up"))
    checks.append(
        Check("orphans", True, "Procore issues whose uuid migrate derives but id_map does not map")
    )
    return checks


def _inspection_checks(read: InspectionTarget | None) -> list[Check]:
    if read is None:
        return [Check("inspections", False, "Procore's inspections were not read")]
    return [
        Check(
            "inspections",
            True,
            f"read {len(read.lists)} inspections, {len(read.items)} items, "
            f"{len(read.comments)} item comments and {len(read.item_files)} item files",
        ),
        Check(
            "inspection header",
            True,
            "identifier, description, status, inspection date, location path, responsible "
            "contractor, inspection type and template against the plan",
        ),
        Check(
            "inspection items",
            True,
            "every planned item's answer (by type), comments (bodies) and files, joined with "
            "Procore's items on section and item position",
        ),
        Check(
            "inspection files",
            True,
            f"every file by name, and by the sha256 of the bytes its url served "
            f"({len(read.digests)} downloaded)",
        ),
    ]


def _entity_rows(
    store: Store,
    project: int | None,
    issue_results: Mapping[str, str],
    missing: list[dict[str, Any]],
    orphans: list[dict[str, Any]],
    matched_by_entity: Mapping[str, int],
    online: bool,
) -> list[dict[str, Any]]:
    from migrate.report.status import build_status

    status = build_status(store, project)
    source_counts = {
        # The listing leaves voided issues out; the voided list names them.
        "issue": _count(
            store,
            "SELECT COUNT(*) FROM (SELECT source_id FROM raw_issues WHERE deleted_at_run IS NULL "
            "UNION SELECT source_id FROM raw_voided_issues WHERE deleted_at_run IS NULL)",
        ),
        "checklist_item": _count(store, "SELECT COUNT(*) FROM checklist_items"),
        "location": _count(store, "SELECT COUNT(*) FROM raw_areas WHERE deleted_at_run IS NULL"),
    }
    mismatched = Counter(
        _kind(sid) for sid, result in issue_results.items() if result.startswith("mismatch")
    )
    missing_by = Counter(row["entity"] for row in missing)
    orphans_by = Counter(_kind(str(row["source_id"])) for row in orphans)
    rows = []
    for entity, states in status.entities.items():
        loaded = states["loaded"]
        rows.append(
            {
                "entity": entity,
                "source": source_counts[entity],
                "staging": states["extracted"],
                "planned": states["planned"],
                "skipped": states["skipped"],
                "quarantined": states["quarantined"],
                "loaded": loaded,
                "in_procore": loaded - missing_by[entity] if online else None,
                "matching": matched_by_entity[entity] if online else None,
                "mismatching": (
                    mismatched[entity]
                    if entity != "location"
                    else loaded - missing_by[entity] - matched_by_entity[entity]
                )
                if online
                else None,
                "missing": missing_by[entity] if online else None,
                "orphans": orphans_by[entity] if online and entity != "location" else None,
            }
        )
    return rows


def _count(store: Store, sql: str) -> int:
    row = store.conn.execute(sql).fetchone()
    return int(row[0] or 0) if row else 0


def _quarantine_groups(store: Store) -> list[QuarantineGroup]:
    groups: dict[tuple[str, str, str], QuarantineGroup] = {}
    for row in open_quarantine_records(store):
        key = (row["entity"], row["stage"], row["reason"])
        group = groups.get(key)
        if group is None:
            group = groups[key] = QuarantineGroup(row["entity"], row["stage"], row["reason"])
        group.records.append(
            {
                "source_id": row["source_id"],
                "created_at": row["created_at"],
                "hint": row["hint"],
                "record": link_free_record(row["record"]),
                "record_compact": link_free_record(row["record"], indent=None),
            }
        )
    return sorted(groups.values(), key=lambda g: (-len(g.records), g.entity, g.reason))


def _run_history(store: Store) -> list[dict[str, Any]]:
    history = []
    for row in run_rows(store):
        start, end = parse_time(row["started_at"]), parse_time(row["finished_at"])
        requests = json.loads(row["requests"]) if row["requests"] else {}
        total, _ = request_total(requests)
        history.append(
            {
                "run_id": row["id"],
                "command": row["command"],
                "status": row["status"],
                "started_at": row["started_at"],
                "finished_at": row["finished_at"],
                "duration_seconds": round((end - start).total_seconds(), 1)
                if start and end
                else None,
                "requests": total,
                "counts": _compact_counts(row["counts"]),
                "error": row["error"],
            }
        )
    return history


def _compact_counts(text: str | None, limit: int = 240) -> str:
    full = _counts_text(text)
    return full if len(full) <= limit else full[: limit - 1] + "…"


def _counts_text(text: str | None) -> str:
    if not text:
        return ""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return _brief(value)


def _brief(value: Any) -> str:
    """Nested counts as short text, zeros and empty values left out: "issues (new 60)"."""
    if isinstance(value, dict):
        parts = []
        for key, item in value.items():
            if item in (0, None, False, "", [], {}):
                continue
            inner = _brief(item)
            if inner:
                parts.append(f"{key} ({inner})" if isinstance(item, dict) else f"{key} {inner}")
        return ", ".join(parts)
    if isinstance(value, list):
        return ", ".join(_brief(v) for v in value[:5]) + (" …" if len(value) > 5 else "")
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _status_before(store: Store) -> list[tuple[str, int]]:
    return [
        (str(status or "(none)"), int(number))
        for status, number in store.conn.execute(
            "SELECT status, COUNT(*) FROM issues WHERE deleted = 0 GROUP BY status "
            "ORDER BY COUNT(*) DESC, status"
        )
    ]


def _status_after(
    loaded: list[dict[str, Any]], procore_issues: Mapping[int, dict[str, Any]], online: bool
) -> list[tuple[str, int]]:
    counts: Counter[str] = Counter()
    for row in loaded:
        if online:
            issue = procore_issues.get(row["target_id"])
            if issue is not None:
                counts[str(issue.get("status") or "(none)")] += 1
        else:
            counts[str(row.get("target_status") or row.get("status") or "(none)")] += 1
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def _by_location(
    store: Store,
    loaded: list[dict[str, Any]],
    procore_issues: Mapping[int, dict[str, Any]],
    locations_by_id: Mapping[int, dict[str, Any]],
    online: bool,
) -> list[tuple[str, int]]:
    counts: Counter[str] = Counter()
    for row in loaded:
        if online:
            issue = procore_issues.get(row["target_id"])
            if issue is None:
                continue
            path = actual_path(issue, locations_by_id)
        else:
            path = _json_list(row.get("location_path"))
        counts[path_text(path) or NO_LOCATION] += 1
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:TOP_LOCATIONS]
