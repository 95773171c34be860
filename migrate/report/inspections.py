"""Inspections in the report: every staged checklist accounted for, and every inspection load
created reconciled field by field with what Procore holds now (issue 14 point 6).

``fetch_inspections`` only reads Procore, over HTTP, with the client's read-back calls: the
inspections id_map names (``filters[id]``), their sections and items (answers), the items'
comments and files, the project's vendors, and the bytes of every file (each ``url`` is
downloaded and hashed; Procore's API gives no digest). ``reconcile_inspections`` only reads the
staging DB and compares, joining planned items with Procore's items in pandas on (inspection,
section position, item position): the template load built copies its sections and items in
that order, so the position pair names one item whatever ids Procore gave it.

What is compared for each planned inspection whose id_map row is ``loaded``:

- header: identifier, description, status, inspection date, location (path, through
  ``parent_id``), responsible contractor (the planned vendor when the project has one of that
  name, else none: transform put the name in the description), inspection type and template;
- every item: its name and type, its answer by type (status, response option, text, number,
  date; "no answer" when the plan has none), its comments (bodies, as a multiset), its files;
- files by name and sha256: the checklist's files on the inspection, each item's on the item.

Outcome per staged checklist: ``match``, ``differs`` (which fields), ``missing in Procore``,
``not loaded yet`` (planned, not yet created), ``skipped`` / ``quarantined`` (with the reason
transform or load gave), or ``not planned`` (no plan row, no skip, no quarantine: transform has
not run since it was extracted, or inspections are switched off); the source side is read
from the staging DB's view ``v_inspection_journey`` (migration 10). Field differences and
missing inspections go into the report's mismatches and missing lists, so they fail its
verdict like an issue's.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from migrate.errors import MigrateError
from migrate.ids import ENTITY_INSPECTION, ENTITY_PROJECT_TEMPLATE
from migrate.report.paths import actual_path, path_text
from migrate.report.views import rows as view_rows
from migrate.store.db import Store
from migrate.store.planned import (
    MapRow,
    PlannedInspection,
    PlannedInspectionTemplate,
    attachment_files,
    id_map_rows,
    planned_inspection_rows,
    planned_inspection_templates,
    planned_locations,
)
from migrate.text import procore_name

if TYPE_CHECKING:
    from migrate.clients.procore import ProcoreClient

#: The entity transform quarantines and skips checklists under (migrate.transform.inspections).
SOURCE_ENTITY_CHECKLIST = "checklist"
#: Quarantine entities that hold a checklist back: transform's and load's.
HOLDING_ENTITIES = (SOURCE_ENTITY_CHECKLIST, ENTITY_INSPECTION)
#: The report's name for the entity (mismatch and missing rows, the per-entity table).
REPORT_ENTITY = "inspection"

MATCH = "match"
DIFFERS = "differs"
MISSING = "missing in Procore"
NOT_LOADED = "not loaded yet"
SKIPPED = "skipped"
QUARANTINED = "quarantined"
NOT_PLANNED = "not planned"
OFFLINE = "loaded (not checked: offline)"
#: Outcomes in the order the report lists their counts.
OUTCOMES = (MATCH, DIFFERS, MISSING, NOT_LOADED, SKIPPED, QUARANTINED, NOT_PLANNED, OFFLINE)

CSV_COLUMNS = (
    "source_id",
    "identifier",
    "name",
    "template",
    "planned_status",
    "procore_id",
    "outcome",
    "fields",
    "items",
    "answers_matching",
    "comments",
    "files",
    "reason",
)
#: Whole numbers in inspections.csv (empty where they do not apply).
INT_COLUMNS = ("procore_id", "items", "answers_matching", "comments", "files")
#: Procore shows an inspection's status as a label.
STATUS_OF_LABEL = {"open": "open", "in review": "in_review", "closed": "closed"}
NO_ANSWER = "(no answer)"


# -- reading Procore ---------------------------------------------------------------------------


@dataclass(frozen=True)
class InspectionTarget:
    """What Procore holds for the inspections id_map names, as its API answered."""

    lists: dict[int, dict[str, Any]]
    #: list section id -> its position
    section_positions: dict[int, int]
    items: list[dict[str, Any]]
    comments: list[dict[str, Any]]
    item_files: list[dict[str, Any]]
    vendors: list[dict[str, Any]]
    #: a file's url -> the sha256 of the bytes it served, or "download failed: …"
    digests: dict[str, str] = field(default_factory=dict)
    #: the project's other inspections (not named by id_map)
    unmapped: list[dict[str, Any]] = field(default_factory=list)


class _Digest:
    """A sink that hashes what is written to it."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()

    def write(self, chunk: bytes, /) -> int:
        self.hash.update(chunk)
        return len(chunk)


def _download_digest(client: ProcoreClient, url: str) -> str:
    """sha256 of the bytes at a file's (pre-signed) url; the url is never shown: it signs."""
    sink = _Digest()
    try:
        client.storage.download("GET", url, sink)
    except MigrateError as exc:
        status = getattr(exc, "status", None)
        return f"download failed: {'HTTP ' + str(status) if status else type(exc).__name__}"
    return sink.hash.hexdigest()


def loaded_inspection_ids(store: Store, project_id: int) -> list[int]:
    """The Procore ids of the inspections id_map records as loaded into the project."""
    rows = id_map_rows(store, ENTITY_INSPECTION, project_id).values()
    return sorted(int(row.target_id) for row in rows if row.is_loaded and row.target_id)


def _chunks(ids: Sequence[int], size: int = 100) -> Iterable[list[int]]:
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])


def fetch_inspections(
    client: ProcoreClient, project_id: int, list_ids: Iterable[int]
) -> InspectionTarget:
    """Read back the inspections ``list_ids``, their items, comments and files (with bytes)."""
    wanted = {int(i) for i in list_ids}
    # Every inspection of the project: those id_map names, and any other made from a template
    # migrate built (a duplicate shows up as an orphan).
    every = client.inspections(project_id)
    lists = {int(row["id"]): row for row in every if int(row["id"]) in wanted}
    unmapped = [row for row in every if int(row["id"]) not in wanted]
    found = sorted(lists)
    section_positions: dict[int, int] = {}
    items: list[dict[str, Any]] = []
    comments: list[dict[str, Any]] = []
    item_files: list[dict[str, Any]] = []
    if found:
        path = f"/rest/v1.0/projects/{project_id}/checklist/list_sections"
        for chunk in _chunks(found):
            for page in client.list_paged(path, {"filters[list_id][]": chunk}):
                for section in page:
                    section_positions[int(section["id"])] = int(section.get("position") or 0)
        items = client.inspection_items(project_id, found)
        item_ids = [int(item["id"]) for item in items]
        if item_ids:
            comments = client.inspection_item_comments(project_id, item_ids)
            item_files = client.inspection_item_attachments(project_id, item_ids)
    vendors = client.vendors(project_id) if found else []
    urls = [str(a["url"]) for row in lists.values() for a in row.get("attachments") or []]
    urls += [str((f.get("attachment") or {}).get("url")) for f in item_files]
    unique = [url for url in dict.fromkeys(urls) if url]
    # Downloads are independent: as many at once as load uploads (one pool, one HTTP client).
    with ThreadPoolExecutor(max_workers=max(1, int(client.settings.workers))) as pool:
        hashed = pool.map(lambda url: _download_digest(client, url), unique)
        digests = dict(zip(unique, hashed, strict=True))
    return InspectionTarget(
        lists, section_positions, items, comments, item_files, vendors, digests, unmapped
    )


# -- the comparison ----------------------------------------------------------------------------


@dataclass
class InspectionReconciliation:
    """One row per staged (or planned) checklist, and the field-level differences."""

    rows: list[dict[str, Any]]
    mismatches: list[dict[str, Any]]
    missing: list[dict[str, Any]]
    online: bool
    #: Checklists the staging DB knows (v_inspection_journey rows).
    staged: int = 0
    #: Procore inspections of a template migrate built, carrying a planned checklist's
    #: identifier, that id_map does not name (a duplicate), in the report's orphan shape.
    orphans: list[dict[str, Any]] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """How many checklists have each outcome (every outcome present, maybe 0)."""
        counts = dict.fromkeys(OUTCOMES, 0)
        counts.update(Counter(row["outcome"] for row in self.rows))
        return counts

    @property
    def loaded(self) -> int:
        c = self.counts
        return c[MATCH] + c[DIFFERS] + c[MISSING] + c[OFFLINE]

    def entity_row(self) -> dict[str, Any]:
        """The inspection line of the report's per-entity table."""
        c, staged = self.counts, self.staged
        planned = c[MATCH] + c[DIFFERS] + c[MISSING] + c[OFFLINE] + c[NOT_LOADED]
        return {
            "entity": REPORT_ENTITY,
            "source": staged,
            "staging": staged,
            "planned": planned,
            "skipped": c[SKIPPED],
            "quarantined": c[QUARANTINED],
            "loaded": self.loaded,
            "in_procore": self.loaded - c[MISSING] if self.online else None,
            "matching": c[MATCH] if self.online else None,
            "mismatching": c[DIFFERS] if self.online else None,
            "missing": c[MISSING] if self.online else None,
            "orphans": len(self.orphans) if self.online else None,
        }


def _status_text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip().lower()
    return STATUS_OF_LABEL.get(text, text)


def answer_text(response: Mapping[str, Any] | None) -> str:
    """A planned answer as people read it."""
    if not response:
        return NO_ANSWER
    if "status" in response:
        return str(response["status"])
    if "response_option" in response:
        return f"option {response['response_option']}"
    for key, label in (("text_value", "text"), ("number_value", "number"), ("date_value", "date")):
        if key in response:
            return f"{label} {_value_text(key, response[key])}"
    return json.dumps(dict(response), sort_keys=True)


def procore_answer_text(item: Mapping[str, Any]) -> str:
    """Procore's answer of a list item (v1.1 ``item_response``), in :func:`answer_text` form."""
    response = item.get("item_response")
    if not response:
        return NO_ANSWER
    payload = response.get("payload") or {}
    option = payload.get("response_option")
    if option:
        return f"option {option.get('name')}"
    for key, label in (("text_value", "text"), ("number_value", "number"), ("date_value", "date")):
        if payload.get(key) is not None:
            return f"{label} {_value_text(key, payload[key])}"
    return str(response.get("status") or NO_ANSWER)


def _value_text(key: str, value: Any) -> str:
    if key == "number_value" and isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:g}" if isinstance(value, float) else str(value)
    if key == "date_value":
        return str(value)[:10]
    return str(value)


def expected_file_name(names: Mapping[str, str], attachment_id: str, filename: str | None) -> str:
    """The name Procore must show for a file: transform's name, cleaned as load sends it."""
    return procore_name(names.get(attachment_id) or filename or attachment_id) or attachment_id


def _file_text(files: Iterable[tuple[str, str]]) -> str:
    """Files as "name (sha256 prefix)"; a download that failed shows why in full."""
    return " | ".join(
        f"{name} ({digest[:12] if digest.isalnum() else digest})" for name, digest in sorted(files)
    )


@dataclass
class _Planned:
    """A planned inspection, ready to compare."""

    entry: PlannedInspection
    row: MapRow | None
    payload: dict[str, Any]
    template_name: str | None
    inspection_type: str | None


def reconcile_inspections(
    store: Store,
    project_id: int | None,
    target: InspectionTarget | None,
    locations: Mapping[int, Mapping[str, Any]],
) -> InspectionReconciliation:
    """Compare what transform planned (and load recorded) with ``target`` (None: offline)."""
    planned = _planned(store, project_id)
    online = target is not None
    compared: dict[str, tuple[str, list[dict[str, Any]], dict[str, Any]]] = {}
    missing: list[dict[str, Any]] = []
    if target is not None:
        compared = _compare_all(store, planned, target, locations)
        for source_id, (outcome, _rows, _tally) in compared.items():
            if outcome == MISSING:
                p = planned[source_id]
                missing.append(
                    {
                        "entity": REPORT_ENTITY,
                        "source_id": source_id,
                        "identifier": p.entry.identifier,
                        "title": p.template_name,
                        "procore_id": p.row.target_id if p.row else None,
                        "uuid": None,
                        "loaded_at": None,
                    }
                )
    # The source side: every checklist's state, from the staging DB's own view of it.
    journey = {step["source_id"]: step for step in view_rows(store, "v_inspection_journey")}
    rows: list[dict[str, Any]] = []
    mismatches: list[dict[str, Any]] = []
    for source_id in sorted({*journey, *planned}):
        step = journey.get(source_id) or {}
        plan = planned.get(source_id)
        row: dict[str, Any] = dict.fromkeys(CSV_COLUMNS)
        row.update(
            source_id=source_id,
            identifier=(plan.entry.identifier if plan else None) or step.get("identifier"),
            name=step.get("name") or (plan.template_name if plan else None),
            template=plan.template_name if plan else step.get("template_name"),
            planned_status=plan.entry.status if plan else None,
        )
        held = (
            f"quarantined at {step['quarantine_stage']}: {step['quarantine_reason']}"
            if step.get("quarantine_reason")
            else None
        )
        if plan is not None and plan.row is not None and plan.row.is_loaded:
            row["procore_id"] = plan.row.target_id
            if target is None:
                row["outcome"] = OFFLINE
            else:
                outcome, differences, tally = compared[source_id]
                row.update(tally)
                row["outcome"] = outcome
                if differences:
                    row["fields"] = "; ".join(dict.fromkeys(d["field"] for d in differences))
                    mismatches.extend(differences)
            row["reason"] = held
        elif plan is not None:
            row["outcome"] = QUARANTINED if held else NOT_LOADED
            row["reason"] = held or _not_loaded_reason(plan.row)
        elif step.get("skipped_reason"):
            row["outcome"], row["reason"] = SKIPPED, step["skipped_reason"]
        elif held:
            row["outcome"], row["reason"] = QUARANTINED, held
        else:
            row["outcome"] = NOT_PLANNED
            row["reason"] = (
                "no inspection planned: `migrate transform` has not run since it was extracted, "
                "or inspections are switched off"
            )
        if row["procore_id"] is None and step.get("procore_id") is not None:
            row["procore_id"] = step["procore_id"]  # loaded earlier, no longer planned
        rows.append(row)
    orphans = _orphans(store, project_id, planned, target, journey) if target else []
    return InspectionReconciliation(rows, mismatches, missing, online, len(journey), orphans)


def _orphans(
    store: Store,
    project_id: int | None,
    planned: Mapping[str, _Planned],
    target: InspectionTarget,
    journey: Mapping[str, Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """Unmapped Procore inspections made from a template migrate built that carry the
    identifier of a planned checklist: a second copy of it (a create whose answer was lost and
    never recorded, or one made by hand from the migrated template)."""
    if project_id is None:
        return []
    ours = {
        int(row.target_id)
        for row in id_map_rows(store, ENTITY_PROJECT_TEMPLATE, project_id).values()
        if row.is_loaded and row.target_id
    }
    by_identifier: dict[str, str] = {}
    for source_id, plan in sorted(planned.items()):
        if plan.entry.identifier:
            by_identifier.setdefault(str(plan.entry.identifier), source_id)
    found = []
    for inspection in target.unmapped:
        template = inspection.get("list_template_id") or inspection.get("template_id")
        owner = by_identifier.get(str(inspection.get("identifier")))
        if template not in ours or owner is None:
            continue
        plan = planned[owner]
        mapped = plan.row.target_id if plan.row is not None else None
        found.append(
            {
                "procore_id": inspection.get("id"),
                "uuid": None,
                "title": f"inspection {inspection.get('identifier')} ({inspection.get('name')})",
                "status": inspection.get("status"),
                "source_id": owner,
                "staging_state": (journey.get(owner) or {}).get("state"),
                "why": (
                    f"made from a migrated template with checklist {owner}'s identifier; "
                    + (
                        f"id_map maps that checklist to inspection {mapped}, not this one"
                        if mapped
                        else "id_map does not name it (a create whose answer was lost?)"
                    )
                ),
            }
        )
    return found


def _not_loaded_reason(row: MapRow | None) -> str:
    if row is None or row.state == "pending":
        return "planned; `migrate load` creates it"
    if row.state == "sent":
        return "sent by a load that stopped before recording it; `migrate load` finds it"
    return f"id map state {row.state}"


def _templates(store: Store) -> dict[str, PlannedInspectionTemplate]:
    return {template.source_id: template for template in planned_inspection_templates(store)}


def _planned(store: Store, project_id: int | None) -> dict[str, _Planned]:
    templates = _templates(store)
    rows = id_map_rows(store, ENTITY_INSPECTION, project_id) if project_id is not None else {}
    found: dict[str, _Planned] = {}
    for entry in planned_inspection_rows(store):
        template = templates.get(entry.template_source_id)
        found[entry.source_id] = _Planned(
            entry,
            rows.get(entry.source_id),
            entry.payload,
            template.name if template else None,
            template.inspection_type if template else None,
        )
    return found


def _compare_all(
    store: Store,
    planned: Mapping[str, _Planned],
    target: InspectionTarget,
    locations: Mapping[int, Mapping[str, Any]],
) -> dict[str, tuple[str, list[dict[str, Any]], dict[str, Any]]]:
    import pandas as pd

    loaded = {s: p for s, p in planned.items() if p.row is not None and p.row.is_loaded}
    paths = {loc.source_id: list(loc.path) for loc in planned_locations(store)}
    vendors = {str(v.get("name") or "").strip().lower(): v for v in target.vendors}
    templates = _templates(store)
    every_file = [a for p in loaded.values() for a in p.entry.attachment_ids]
    every_file += [
        a
        for p in loaded.values()
        for item in p.payload.get("items") or []
        for a in item.get("attachment_ids") or []
    ]
    staged_files = attachment_files(store, every_file)

    # Planned items: where each sits in its template (section position, item position).
    place: dict[tuple[str, str], tuple[int, int, str, str]] = {}
    for template_id, template in templates.items():
        for section in template.payload.get("sections") or []:
            for item in section.get("items") or []:
                place[(template_id, str(item["source_id"]))] = (
                    int(section.get("position") or 0),
                    int(item.get("position") or 0),
                    str(item.get("name") or ""),
                    str(item.get("type") or ""),
                )
    planned_rows = []
    for source_id, p in loaded.items():
        for item in p.payload.get("items") or []:
            where = place.get(
                (p.entry.template_source_id, str(item.get("template_item_source_id")))
            )
            planned_rows.append(
                {
                    "source_id": source_id,
                    "list_id": p.row.target_id if p.row else None,
                    "section_position": where[0] if where else -1,
                    "item_position": where[1] if where else -1,
                    "name": where[2] if where else str(item.get("template_item_source_id")),
                    "type": where[3] if where else "",
                    "item_source_id": str(item.get("source_id")),
                    "expected_answer": answer_text(item.get("response")),
                    "expected_comments": sorted(
                        str(c.get("body")) for c in item.get("comments") or []
                    ),
                    "expected_files": sorted(
                        (
                            expected_file_name(
                                p.entry.attachment_names, a, staged_files.get(a, ("", "", None))[2]
                            ),
                            staged_files.get(a, ("(not stored)", "", None))[0],
                        )
                        for a in item.get("attachment_ids") or []
                    ),
                }
            )
    comments_of: dict[int, list[str]] = {}
    for comment in target.comments:
        comments_of.setdefault(int(comment["item_id"]), []).append(str(comment.get("body")))
    files_of: dict[int, list[tuple[str, str]]] = {}
    for attached in target.item_files:
        shown = attached.get("attachment") or {}
        digest = target.digests.get(str(shown.get("url")), "download failed: no url")
        files_of.setdefault(int(attached["item_id"]), []).append((str(shown.get("name")), digest))
    procore_rows = [
        {
            "list_id": int(item["list_id"]),
            "section_position": target.section_positions.get(int(item.get("section_id") or 0), -2),
            "item_position": int(item.get("position") or 0),
            "procore_item_id": int(item["id"]),
            "procore_name": str(item.get("name") or ""),
            "procore_type": str((item.get("type") or {}).get("name") or ""),
            "actual_answer": procore_answer_text(item),
            "actual_comments": sorted(comments_of.get(int(item["id"]), [])),
            "actual_files": sorted(files_of.get(int(item["id"]), [])),
        }
        for item in target.items
    ]
    keys = ["list_id", "section_position", "item_position"]
    planned_frame = pd.DataFrame(
        planned_rows,
        columns=[
            *keys,
            "source_id",
            "name",
            "type",
            "item_source_id",
            "expected_answer",
            "expected_comments",
            "expected_files",
        ],
    )
    procore_frame = pd.DataFrame(
        procore_rows,
        columns=[
            *keys,
            "procore_item_id",
            "procore_name",
            "procore_type",
            "actual_answer",
            "actual_comments",
            "actual_files",
        ],
    )
    joined = planned_frame.merge(procore_frame, on=keys, how="outer", indicator=True)
    source_of_list = {p.row.target_id: s for s, p in loaded.items() if p.row is not None}

    differences: dict[str, list[dict[str, Any]]] = {s: [] for s in loaded}
    tallies: dict[str, Counter[str]] = {s: Counter() for s in loaded}

    def differ(source_id: str, name: str, expected: Any, actual: Any, note: str = "") -> None:
        p = loaded[source_id]
        differences[source_id].append(
            {
                "entity": REPORT_ENTITY,
                "source_id": source_id,
                "identifier": p.entry.identifier,
                "procore_id": p.row.target_id if p.row else None,
                "field": name,
                "expected": expected,
                "actual": actual,
                "note": note,
            }
        )

    for record in joined.to_dict("records"):
        side = record["_merge"]
        if side == "right_only":
            owner = source_of_list.get(int(record["list_id"]))
            if (
                owner is None
                or record["actual_answer"] == NO_ANSWER
                and not (record["actual_comments"] or record["actual_files"])
            ):
                continue  # an item the checklist left unanswered, untouched in Procore
            differ(
                owner,
                f"item {record['procore_name']}",
                "(not in the plan)",
                f"{record['actual_answer']}; {len(record['actual_comments'])} comment(s); "
                f"{len(record['actual_files'])} file(s)",
            )
            continue
        source_id = str(record["source_id"])
        if int(record["list_id"]) not in target.lists:
            continue  # the inspection is missing: reported once, below
        tally = tallies[source_id]
        tally["items"] += 1
        if side == "left_only":
            differ(
                source_id, f"item {record['name']}", "in the template", "(no such item in Procore)"
            )
            continue
        label = record["name"]
        if record["procore_name"] != record["name"]:
            differ(source_id, f"item name: {label}", record["name"], record["procore_name"])
        if record["type"] and record["procore_type"] != record["type"]:
            differ(source_id, f"item type: {label}", record["type"], record["procore_type"])
        if record["expected_answer"] == record["actual_answer"]:
            tally["answers"] += 1
        else:
            differ(
                source_id, f"response: {label}", record["expected_answer"], record["actual_answer"]
            )
        tally["comments"] += len(record["expected_comments"])
        if record["expected_comments"] != record["actual_comments"]:
            differ(
                source_id,
                f"comments: {label}",
                " | ".join(record["expected_comments"]),
                " | ".join(record["actual_comments"]),
            )
        tally["files"] += len(record["expected_files"])
        _compare_files(
            lambda n, e, a, s=source_id: differ(s, n, e, a),
            f"item {label}",
            record["expected_files"],
            record["actual_files"],
        )

    results: dict[str, tuple[str, list[dict[str, Any]], dict[str, Any]]] = {}
    for source_id, p in loaded.items():
        assert p.row is not None and p.row.target_id is not None
        actual = target.lists.get(p.row.target_id)
        if actual is None:
            results[source_id] = (MISSING, [], {})
            continue
        _compare_header(
            p,
            actual,
            paths,
            vendors,
            locations,
            lambda n, e, a, note="", s=source_id: differ(s, n, e, a, note),
        )
        expected_list_files = sorted(
            (
                expected_file_name(
                    p.entry.attachment_names, a, staged_files.get(a, ("", "", None))[2]
                ),
                staged_files.get(a, ("(not stored)", "", None))[0],
            )
            for a in p.entry.attachment_ids
        )
        actual_list_files = sorted(
            (str(a.get("name")), target.digests.get(str(a.get("url")), "download failed: no url"))
            for a in actual.get("attachments") or []
        )
        tallies[source_id]["files"] += len(expected_list_files)
        _compare_files(
            lambda n, e, a, s=source_id: differ(s, n, e, a),
            "inspection",
            expected_list_files,
            actual_list_files,
        )
        found = differences[source_id]
        tally = tallies[source_id]
        results[source_id] = (
            DIFFERS if found else MATCH,
            found,
            {
                "items": tally["items"],
                "answers_matching": tally["answers"],
                "comments": tally["comments"],
                "files": tally["files"],
            },
        )
    return results


def _compare_files(
    differ: Any, where: str, expected: Sequence[tuple[str, str]], actual: Sequence[tuple[str, str]]
) -> None:
    """Files by name and by content: a name missing or extra, then a sha256 that differs."""
    if list(expected) == list(actual):
        return
    expected_names = Counter(name for name, _ in expected)
    actual_names = Counter(name for name, _ in actual)
    if expected_names != actual_names:
        differ(
            f"file names: {where}",
            " | ".join(sorted(expected_names.elements())),
            " | ".join(sorted(actual_names.elements())),
        )
        return
    differ(f"file sha256: {where}", _file_text(expected), _file_text(actual))


def _compare_header(
    p: _Planned,
    actual: Mapping[str, Any],
    paths: Mapping[str, list[str]],
    vendors: Mapping[str, Mapping[str, Any]],
    locations: Mapping[int, Mapping[str, Any]],
    differ: Any,
) -> None:
    body = p.payload.get("list") or {}
    entry = p.entry

    def check(name: str, expected: Any, got: Any, note: str = "") -> None:
        if (expected or None) != (got or None):
            differ(name, expected, got, note)

    check("identifier", body.get("identifier"), actual.get("identifier"))
    check("description", body.get("description"), actual.get("description"))
    check("status", entry.status, _status_text(actual.get("status")))
    check(
        "inspection_date",
        str(body["inspection_date"])[:10] if body.get("inspection_date") else None,
        str(actual["inspection_date"])[:10] if actual.get("inspection_date") else None,
    )
    expected_path = paths.get(entry.location_source_id or "") if entry.location_source_id else None
    check("location", path_text(expected_path), path_text(actual_path(actual, locations)))
    wanted = (entry.responsible_contractor or "").strip()
    vendor = vendors.get(wanted.lower()) if wanted else None
    contractor = (actual.get("responsible_contractor") or {}).get("name")
    check(
        "responsible_contractor",
        vendor.get("name") if vendor else None,
        contractor,
        "" if vendor or not wanted else f"{wanted!r} is not a project vendor: named in the text",
    )
    if wanted and vendor is None and wanted not in str(actual.get("description") or ""):
        differ(
            "responsible_contractor (text)",
            f"description names {wanted}",
            "description does not name it",
            "",
        )
    check("inspection_type", p.inspection_type, (actual.get("inspection_type") or {}).get("name"))
    check("template", p.template_name, actual.get("list_template_name") or actual.get("name"))


def summary_text(counts: Mapping[str, int]) -> str:
    """One line for the CLI and the demo: "Inspections: 40 migrated, 40 match; …"."""
    migrated = sum(counts.get(k, 0) for k in (MATCH, DIFFERS, MISSING, OFFLINE))
    parts = [f"{migrated} migrated"]
    if counts.get(OFFLINE):
        parts.append(f"{counts[OFFLINE]} not checked (offline)")
    else:
        parts.append(f"{counts.get(MATCH, 0)} match")
    for outcome in (DIFFERS, MISSING, NOT_LOADED, SKIPPED, QUARANTINED, NOT_PLANNED):
        if counts.get(outcome):
            parts.append(f"{counts[outcome]} {outcome}")
    staged = sum(counts.values())
    return f"Inspections: {', '.join(parts)} (of {staged} checklists)."
