"""Transform: every mapping rule, title edge cases, each quarantine reason and hint, release,
determinism, checklist items — on hand-made records written straight into a fresh store."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from migrate.errors import EXIT_USAGE
from migrate.ids import NAMESPACE_MIGRATE, issue_uuid
from migrate.load.plan import compute_plan
from migrate.mappings import DEFAULT_FILES, MappingError, default_mappings, load_mappings
from migrate.processes import process_alive
from migrate.quarantine import (
    QuarantineNotFound,
    list_quarantine,
    release_quarantine,
    show_quarantine,
)
from migrate.settings import MappingsSettings, Settings, StagingSettings, TargetSettings
from migrate.settings import TransformSettings as TS
from migrate.store import Store, open_store, start_run
from migrate.transform import (
    StagingBusy,
    TransformOptions,
    plan_hash,
    run,
    transform_from_settings,
)
from migrate.transform import issues as transform_issues
from migrate.transform.target import NoSnapshotError
from migrate.transform.validate import normalise_due_date, payload_problems

PROJECT = 5100
ALICE, BRUNO, CHEN = 7001, 7002, 7003

# Field areas: two buildings with a "Level 1" each, a name with ">" in it, a deleted subtree.
AREAS = [
    # id, parent, name, deleted
    ("a-north", None, "North Building", 0),
    ("a-n1", "a-north", "Level 1", 0),
    ("a-n1-101", "a-n1", "Room 101", 0),
    ("a-stair", "a-north", "Stair 2 > Landing", 0),
    ("a-south", None, "South Building", 0),
    ("a-s1", "a-south", "Level 1", 0),
    ("a-old", None, "Old Trailer", 1),
    ("a-old-desk", "a-old", "Desk", 1),
]


# -- building a staging DB by hand ------------------------------------------------------------


def make_store(path: Path) -> Store:
    """A fresh store with reference data and a Procore snapshot (no issues yet)."""
    store = open_store(path)
    with store.transaction():
        conn = store.conn
        conn.execute("INSERT INTO projects (id, name) VALUES ('proj-1', 'Harbor Point')")
        for area_id, parent, name, deleted in AREAS:
            conn.execute(
                "INSERT INTO areas (id, parent_id, name, full_path, deleted) "
                "VALUES (?, ?, ?, ?, ?)",
                (area_id, parent, name, name, deleted),
            )
        conn.execute("INSERT INTO companies (id, name) VALUES ('c-1', 'Acme Drywall')")
        conn.execute("INSERT INTO root_causes (id, name) VALUES ('rc-1', 'Design error')")
        for type_id, name, category in (
            ("t-clash", "Clash", "Coordination"),
            ("t-punch", "Punch item", "Quality"),
            ("t-code", "Code Violation", "Safety"),
        ):
            conn.execute(
                "INSERT INTO issue_types (id, name, category_name) VALUES (?, ?, ?)",
                (type_id, name, category),
            )
        conn.execute(
            "INSERT INTO custom_fields (id, name, container_type, position) "
            "VALUES ('cf-1', 'Beverage of Choice', 'Issue', 1)"
        )
        run_id = start_run(store, "snapshot-for-test", {})
        for person_id, login in (
            (ALICE, "alice@example.com"),
            (BRUNO, "Bruno.Diaz@example.com"),
            (CHEN, "chen@example.com"),
        ):
            conn.execute(
                "INSERT INTO target_assignees (project_id, id, name, login, login_lower, "
                "snapshot_run) VALUES (?, ?, ?, ?, ?, ?)",
                (PROJECT, person_id, login.split("@")[0], login, login.lower(), run_id),
            )
        for loc_id, parent, node in ((9001, None, "North Building"), (9002, 9001, "Level 1")):
            conn.execute(
                "INSERT INTO target_locations (project_id, id, name, node_name, parent_id, "
                "snapshot_run) VALUES (?, ?, ?, ?, ?, ?)",
                (PROJECT, loc_id, node, node, parent, run_id),
            )
    return store


def add_issue(store: Store, source_id: str, **fields: Any) -> None:
    """One staged issue; `comments`, `history` and `attachments` lists go to their tables."""
    comments = fields.pop("comments", [])
    history = fields.pop("history", [])
    attachments = fields.pop("attachments", [])
    raw = fields.pop("raw", None)
    row = {
        "source_id": source_id,
        "identifier": source_id.upper(),
        "description": "Leak at joint",
        "status": "Open",
        "priority": "High",
        "issue_type_id": "t-punch",
        "issue_type_name": "Punch item",
        "category_name": "Quality",
        "area_id": None,
        "assigned_to_email": None,
        "due_date": None,
        "voided": 0,
        "deleted": 0,
        "created_by": "moe@example.com",
        "created_at": "2014-10-23 10:08:04 -0400",
        **fields,
    }
    if isinstance(row.get("custom_fields"), dict):
        row["custom_fields"] = json.dumps(row["custom_fields"])
    with store.transaction():
        conn = store.conn
        columns = ", ".join(row)
        conn.execute(
            f"INSERT INTO issues ({columns}) VALUES ({', '.join('?' for _ in row)})",
            tuple(row.values()),
        )
        for n, comment in enumerate(comments):
            conn.execute(
                "INSERT INTO comments (id, container_type, container_id, created_by, "
                "created_at, text) VALUES (?, 'Issue', ?, ?, ?, ?)",
                (f"{source_id}-c{n}", source_id, comment[0], comment[1], comment[2]),
            )
        for status, previous, user, start in history:
            conn.execute(
                "INSERT INTO issue_status_history (issue_id, status, previous_status, user, "
                "start_dt) VALUES (?, ?, ?, ?, ?)",
                (source_id, status, previous, user, start),
            )
        for attachment in attachments:
            values = {
                "container_type": "Issue",
                "container_id": source_id,
                "kind": "Attachment",
                "state": "pending",
                **attachment,
            }
            conn.execute(
                f"INSERT INTO attachments ({', '.join(values)}) "
                f"VALUES ({', '.join('?' for _ in values)})",
                tuple(values.values()),
            )
        if raw is not None:
            run_id = start_run(store, "extract", {})
            conn.execute(
                "INSERT INTO raw_issue_details (source_id, payload, content_hash, first_seen_run, "
                "last_seen_run, changed_run, fetched_at) VALUES (?, ?, 'x', ?, ?, ?, 'now')",
                (source_id, json.dumps(raw), run_id, run_id, run_id),
            )


def transform(store: Store, mappings: Any = None, **settings: Any) -> Any:
    return plan_with(store, mappings, TS(**settings))


def plan_with(
    store: Store, mappings: Any = None, settings: TS | None = None, **options: Any
) -> Any:
    """One library run of the stage against the stored snapshot (no Procore client)."""
    return run(
        store,
        None,
        options=TransformOptions(
            target_project_id=PROJECT,
            mappings=mappings or default_mappings(),
            settings=settings or TS(),
            **options,
        ),
    )


def planned(store: Store, source_id: str) -> dict[str, Any]:
    cursor = store.conn.execute("SELECT * FROM planned_issues WHERE source_id = ?", (source_id,))
    row = cursor.fetchone()
    assert row is not None, f"{source_id} is not planned"
    result = dict(zip([d[0] for d in cursor.description], row, strict=True))
    result["payload"] = json.loads(result["payload"])
    return result


def held(store: Store, source_id: str, entity: str = "issue") -> dict[str, Any]:
    cursor = store.conn.execute(
        "SELECT * FROM quarantine WHERE entity = ? AND source_id = ? AND released_at IS NULL",
        (entity, source_id),
    )
    rows = cursor.fetchall()
    assert len(rows) == 1, f"{source_id}: {len(rows)} open quarantine rows"
    return dict(zip([d[0] for d in cursor.description], rows[0], strict=True))


def skipped(store: Store, source_id: str, entity: str = "issue") -> str | None:
    row = store.conn.execute(
        "SELECT reason FROM skipped_records WHERE entity = ? AND source_id = ?", (entity, source_id)
    ).fetchone()
    return row[0] if row else None


@pytest.fixture
def store(tmp_path: Path):
    with make_store(tmp_path / "staging.db") as opened:
        yield opened


def write_mappings(folder: Path, **overrides: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in DEFAULT_FILES.items():
        (folder / name).write_text(overrides.get(name, text), encoding="utf-8")
    return folder


# -- status, priority, issue type --------------------------------------------------------------


@pytest.mark.parametrize(
    ("field_status", "procore"),
    [
        ("Draft", "open"),
        ("Open", "open"),
        ("Work Completed", "ready_for_review"),
        ("Ready to Inspect", "ready_for_review"),
        ("Not Approved", "open"),
        ("In Dispute", "open"),  # blocked: neither create nor update may set it (docs)
        ("Closed", "closed"),
        ("closed", "closed"),
    ],
)
def test_status_mapping(store: Store, field_status: str, procore: str) -> None:
    add_issue(store, "i1", status=field_status)
    transform(store)
    row = planned(store, "i1")
    assert row["status"] == procore == row["payload"]["status"]


def test_void_and_voided_and_deleted_issues_are_skipped_with_the_reason(store: Store) -> None:
    add_issue(store, "void", status="Void")
    add_issue(store, "voided", status="Open", voided=1)
    add_issue(store, "gone", deleted=1)
    result = transform(store)
    assert skipped(store, "void") == "status 'Void' maps to skip in mappings/status.csv"
    assert skipped(store, "voided") == "status 'Void' maps to skip in mappings/status.csv"
    assert skipped(store, "gone") == "deleted at source"
    assert result.counts["issues"] == {
        "extracted": 3,
        "planned": 0,
        "quarantined": 0,
        "skipped": 3,
        "released": 0,
    }


def test_unmapped_status_is_quarantined_with_a_hint_and_the_raw_record(store: Store) -> None:
    add_issue(store, "parked", status="Parked", raw={"id": "parked", "fields": []})
    add_issue(store, "nostatus", status=None)
    transform(store)
    row = held(store, "parked")
    assert row["stage"] == "transform"
    assert row["reason"] == "unmapped status 'Parked'"
    assert row["hint"] == "add a row for status 'Parked' to mappings/status.csv."
    record = json.loads(row["record"])
    assert record["staged"]["status"] == "Parked"
    assert record["raw"] == {"id": "parked", "fields": []}
    assert held(store, "nostatus")["reason"] == "the issue has no status"


def test_priority_mapping(store: Store) -> None:
    add_issue(store, "low", priority="Low")
    add_issue(store, "crit", priority="CRITICAL")
    add_issue(store, "none", priority="")
    add_issue(store, "urgent", priority="Urgent")
    transform(store)
    assert planned(store, "low")["payload"]["priority"] == "low"
    assert planned(store, "crit")["payload"]["priority"] == "critical"
    assert "priority" not in planned(store, "none")["payload"]
    row = held(store, "urgent")
    assert row["reason"] == "unmapped priority 'Urgent'"
    assert row["hint"] == "add a row for priority 'Urgent' to mappings/priority.csv."


def test_issue_type_mapping_by_category_and_type(store: Store) -> None:
    add_issue(
        store,
        "coord",
        issue_type_id="t-clash",
        issue_type_name="Clash",
        category_name="Coordination",
    )
    add_issue(
        store,
        "code",
        issue_type_id="t-code",
        issue_type_name="Code Violation",
        category_name="Safety",
    )
    add_issue(
        store,
        "other",
        issue_type_id="t-punch",
        issue_type_name="Punch item",
        category_name="Quality",
    )
    # Only the id is staged: name and category come from the issue_types table.
    add_issue(store, "by-id", issue_type_id="t-clash", issue_type_name=None, category_name=None)
    transform(store)
    assert planned(store, "coord")["issue_type"] == "coordination"  # category row wins
    assert planned(store, "code")["issue_type"] == "building_code"
    assert planned(store, "other")["issue_type"] == "other"  # the *,* default row
    assert planned(store, "by-id")["issue_type"] == "coordination"


def test_unknown_issue_type_without_a_default_row_is_quarantined(
    store: Store, tmp_path: Path
) -> None:
    folder = write_mappings(
        tmp_path / "maps",
        **{"issue_types.csv": ("category,type,procore_issue_type\nCoordination,*,coordination\n")},
    )
    add_issue(store, "punch")
    transform(store, load_mappings(folder))
    row = held(store, "punch")
    assert row["reason"] == "unknown issue type 'Quality > Punch item'"
    assert "add a row for category 'Quality', type 'Punch item'" in row["hint"]
    assert "issue_types.csv" in row["hint"]


# -- assignees ---------------------------------------------------------------------------------


def test_assignee_matching(store: Store, tmp_path: Path) -> None:
    folder = write_mappings(
        tmp_path / "maps",
        **{
            "users.csv": (
                "field_email,procore\nold.chen@example.com,chen@example.com\nnum@example.com,7002\n"
            )
        },
    )
    add_issue(store, "exact", assigned_to_email="alice@example.com")
    add_issue(store, "case", assigned_to_email="bruno.diaz@EXAMPLE.com")
    add_issue(store, "row", assigned_to_email="old.chen@example.com")
    add_issue(store, "rowid", assigned_to_email="num@example.com")
    add_issue(store, "nobody", assigned_to_email=None)
    transform(store, load_mappings(folder))
    assert planned(store, "exact")["assignee_id"] == ALICE
    assert planned(store, "case")["payload"]["assignee_id"] == BRUNO
    assert planned(store, "row")["assignee_id"] == CHEN
    assert planned(store, "rowid")["assignee_id"] == BRUNO
    assert "assignee_id" not in planned(store, "nobody")["payload"]


def test_unresolved_assignee_is_unassigned_with_a_footer_note_by_default(store: Store) -> None:
    add_issue(store, "gone", assigned_to_email="j.ortega@closed.example.com")
    transform(store)
    payload = planned(store, "gone")["payload"]
    assert "assignee_id" not in payload
    assert (
        "Assignee not carried over: j.ortega@closed.example.com is not among the project's "
        "coordination-issue assignees in Procore"
    ) in payload["description"]


def test_unresolved_assignee_policy_quarantine(store: Store) -> None:
    add_issue(store, "gone", assigned_to_email="j.ortega@closed.example.com")
    transform(store, unresolved_assignee="quarantine")
    row = held(store, "gone")
    assert row["reason"] == "assignee cannot be resolved"
    assert "add a row for 'j.ortega@closed.example.com' to mappings/users.csv" in row["hint"]


# -- titles ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identifier", "description", "expected"),
    [
        ("A1", "x" * 77, "A1 " + "x" * 77),  # exactly 80
        ("A1", "word " * 15 + "tail", None),  # 81+: cut at a word, ellipsis
        ("A1", "Crack 🚧 near façade 👨‍👩‍👧‍👦 " * 6, None),  # emoji never split
        ("A1", "cafe\u0301 " * 20, None),  # combining marks
    ],
)
def test_title_edge_cases(
    store: Store, identifier: str, description: str, expected: str | None
) -> None:
    add_issue(store, "t", identifier=identifier, description=description)
    transform(store)
    title = planned(store, "t")["payload"]["title"]
    assert len(title) <= 80
    if expected is not None:
        assert title == expected
    else:
        head = title[:-1]
        assert title.endswith("…") and not head.endswith("\u200d")
        assert f"A1 {' '.join(description.split())}".startswith(head)
        if "\u0301" in description:
            assert head.endswith("e\u0301")  # never a cut between a letter and its accent
    full = " ".join(description.split())
    assert full in planned(store, "t")["payload"]["description"]  # full text kept


def test_eighty_one_code_points_are_cut_at_a_word(store: Store) -> None:
    add_issue(store, "t", identifier="A1", description="x" * 30 + " " + "y" * 47)  # 81
    add_issue(store, "u", identifier="A1", description="z" * 90)  # one long word: cut inside
    transform(store)
    assert planned(store, "t")["payload"]["title"] == "A1 " + "x" * 30 + "…"
    assert planned(store, "u")["title"] == "A1…"


def test_empty_description_and_identifier_is_quarantined(store: Store) -> None:
    add_issue(store, "blank", identifier="  ", description="\n")
    transform(store)
    row = held(store, "blank")
    assert row["reason"] == "empty description and identifier"
    assert "give the issue an identifier or a description" in row["hint"]


def with_title_template(folder: Path, template: str) -> Any:
    """The default mappings with `template` as fields.csv's title_template row."""
    fields_csv = DEFAULT_FILES["fields.csv"].replace("{identifier} {description},", f"{template},")
    return load_mappings(write_mappings(folder, **{"fields.csv": fields_csv}))


def test_template_giving_an_empty_title_is_quarantined(store: Store, tmp_path: Path) -> None:
    add_issue(store, "noarea", identifier="A1", area_id=None)
    transform(store, with_title_template(tmp_path / "maps", "{area}"))
    row = held(store, "noarea")
    assert row["reason"] == "empty title"
    assert "title template '{area}'" in row["hint"]


def test_title_template_comes_from_fields_csv(store: Store, tmp_path: Path) -> None:
    add_issue(store, "t", description="Leak")
    transform(store, with_title_template(tmp_path / "maps", "{type}: {description}"))
    assert planned(store, "t")["title"] == "Punch item: Leak"


# -- description, due date, attachments -----------------------------------------------------


def test_description_has_the_full_text_and_the_field_footer(store: Store) -> None:
    add_issue(
        store,
        "full",
        description="Water leak.\nSee photo.",
        identifier="000042",
        responsible_company_id="c-1",
        root_cause_id="rc-1",
        location_detail="by the door",
        area_id="a-n1-101",
        custom_fields={"Beverage of Choice": "Wine"},
        labor_hours=4.0,
        cost="250.00",
        comments=[
            ("barry@example.com", "2013-06-04T13:01:29-04:00", "second"),
            ("moe@example.com", "2013-06-04T13:01:18-04:00", "first"),
        ],
        history=[
            ("Open", None, "moe@example.com", "2013-06-01 09:00:00 -0400"),
            ("Work Completed", "Open", "barry@example.com", "2013-06-03 09:00:00 -0400"),
        ],
        attachments=[
            {
                "id": "u1",
                "kind": "UriReference",
                "filename": "Spec",
                "source_url": "https://specs.example.com/09",
            },
            {"id": "f1", "filename": "broken.jpg", "state": "failed", "error": "HTTP 500"},
            {"id": "f2", "filename": "gone.jpg", "state": "failed", "failure": "not_found"},
        ],
    )
    transform(store)
    text = planned(store, "full")["payload"]["description"]
    body, footer = text.split("\n\n---\n")
    assert body == "Water leak.\nSee photo."
    for line in (
        "From BIM 360 Field",
        "Identifier: 000042",
        "Issue type: Quality > Punch item",
        "Status: Open",
        "Responsible company: Acme Drywall",
        "Root cause: Design error",
        "Area: North Building > Level 1 > Room 101",
        "Location detail: by the door",
        "Beverage of Choice: Wine",
        "2013-06-04T13:01:18-04:00 moe@example.com:",
        "first",
        "2013-06-01 09:00:00 -0400: Open by moe@example.com",
        "Open → Work Completed by barry@example.com",
        "Spec: a link, not a file: https://specs.example.com/09",
        "Labor hours: 4",
        "Cost: 250.00",
        "broken.jpg: download failed: HTTP 500",
        "gone.jpg: not found in BIM 360 Field",
    ):
        assert line in footer, line
    assert footer.index("first") < footer.index("second")  # comments oldest first


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-03-05", "2024-03-05"),
        ("2024-03-05 13:00:17 -0400", "2024-03-05"),
        ("2024-03-05T23:30:00Z", "2024-03-05"),
        ("03/05/2024", "2024-03-05"),
        ("2011-02-07 12:37:21 EST", "2011-02-07"),
        (None, None),
        ("", None),
    ],
)
def test_due_date_normalised(store: Store, raw: str | None, expected: str | None) -> None:
    add_issue(store, "due", due_date=raw)
    transform(store)
    assert planned(store, "due")["due_date"] == expected
    assert planned(store, "due")["payload"].get("due_date") == expected


@pytest.mark.parametrize("raw", ["31/02/2020", "2020-02-30", "next week"])
def test_unparseable_due_date_loads_without_it_and_the_footer_keeps_it(
    store: Store, raw: str
) -> None:
    """Quarantine would hold back a whole issue for one field: it plans, the value is kept."""
    add_issue(store, "due", due_date=raw)
    transform(store)
    row = planned(store, "due")
    assert row["due_date"] is None and "due_date" not in row["payload"]
    assert f"Due date (not a date, not sent): {raw}" in row["payload"]["description"]


@pytest.mark.parametrize(
    ("raw", "zone", "expected"),
    [
        ("2014-10-14T08:54:16+14:00", "UTC", "2014-10-13"),
        ("2014-10-14T08:54:16.250+0000", "UTC", "2014-10-14"),
        ("2014-10-14T02:00:00Z", "America/New_York", "2014-10-13"),
        ("2014-10-14T08:54:16+14:00", "Pacific/Kiritimati", "2014-10-14"),
        ("2011-02-07 23:37:21 EST", "UTC", "2011-02-08"),
    ],
)
def test_due_date_times_become_the_day_in_the_stated_time_zone(
    store: Store, raw: str, zone: str, expected: str
) -> None:
    add_issue(store, "due", due_date=raw)
    transform(store, time_zone=zone)
    assert planned(store, "due")["payload"]["due_date"] == expected


def test_only_stored_files_are_planned_as_attachments(store: Store) -> None:
    sha = "ab" * 32
    add_issue(
        store,
        "att",
        attachments=[
            {"id": "z-photo", "state": "stored", "sha256": sha, "size": 3},
            {
                "id": "a-doc",
                "kind": "DocumentReference",
                "state": "stored",
                "sha256": "cd" * 32,
                "size": 4,
            },
            {"id": "m-later", "filename": "later.jpg", "state": "pending"},
        ],
    )
    transform(store)
    row = planned(store, "att")
    assert json.loads(row["attachment_ids"]) == ["a-doc", "z-photo"]
    assert "later.jpg: not downloaded yet" in row["payload"]["description"]


def test_file_captions_and_tags_stay_beside_the_file_in_the_description(store: Store) -> None:
    """Procore attachments take no caption or tags: the file's line in the footer keeps them."""
    add_issue(
        store,
        "cap",
        attachments=[
            {
                "id": "p1",
                "filename": "IMG_0001.jpg",
                "state": "stored",
                "sha256": "ab" * 32,
                "size": 3,
                "caption": "before repair",
                "tags": "punch,level-2",
            },
            {
                "id": "p2",
                "filename": "IMG_0002.jpg",
                "state": "stored",
                "sha256": "cd" * 32,
                "size": 3,
            },
            {"id": "p3", "filename": "IMG_0003.jpg", "state": "pending", "caption": "overview"},
        ],
    )
    transform(store)
    text = planned(store, "cap")["payload"]["description"]
    assert 'Files:\n  IMG_0001.jpg: caption "before repair"; tags punch, level-2' in text
    assert "IMG_0002.jpg" not in text  # nothing to keep beside it
    assert (
        "IMG_0003.jpg: not downloaded yet (run `migrate extract` to fetch it); caption "
        '"overview"' in text
    )


@pytest.mark.parametrize(
    ("category", "type_name", "expected"),
    [
        ("Punch List", "Pre-Punch List", "constructability"),
        ("Work List", "Work to Complete List", "constructability"),
        ("Commissioning", "Commissioning", "constructability"),
        ("QA/QC", "Non-conforming", "building_code"),
        ("Safety", "Safety Infraction", "building_code"),
        ("Clash", "Clearence", "clash"),
    ],
)
def test_field_standard_categories_have_default_issue_types(
    store: Store, category: str, type_name: str, expected: str
) -> None:
    add_issue(store, "typed", category_name=category, issue_type_name=type_name)
    transform(store)
    assert planned(store, "typed")["payload"]["issue_type"] == expected


def test_plan_warns_when_most_issues_fall_to_the_catch_all_type(
    store: Store, tmp_path: Path
) -> None:
    for n in range(3):
        add_issue(store, f"t{n}", category_name="Punch List", issue_type_name="Punch List")
    add_issue(store, "t3", category_name="Coordination", issue_type_name="Clash")
    transform(store)
    assert not [w for w in compute_plan(store, PROJECT).warnings if "issue type" in w]
    folder = write_mappings(
        tmp_path / "mappings",
        **{
            "issue_types.csv": "category,type,procore_issue_type\nCoordination,*,coordination\n"
            "*,*,other\n"
        },
    )
    transform(store, load_mappings(folder))
    warnings = compute_plan(store, PROJECT).warnings
    assert "3 of 4 issues (75%) get issue type 'other'" in "\n".join(warnings), warnings


# -- locations ----------------------------------------------------------------------------------


def test_areas_become_a_location_tree(store: Store) -> None:
    add_issue(store, "room", area_id="a-n1-101")
    add_issue(store, "stair", area_id="a-stair")
    add_issue(store, "south", area_id="a-s1")
    add_issue(store, "none", area_id=None)
    result = transform(store)
    rows = {
        row[0]: row
        for row in store.conn.execute(
            "SELECT source_id, parent_source_id, depth, is_leaf, field_area_ids, "
            "existing_target_id "
            "FROM planned_locations"
        )
    }
    room = 'path:["North Building", "Level 1", "Room 101"]'
    assert planned(store, "room")["location_source_id"] == room
    assert rows[room][1:] == ('path:["North Building", "Level 1"]', 2, 1, '["a-n1-101"]', None)
    assert rows['path:["North Building", "Level 1"]'][5] == 9002  # in the Procore snapshot
    assert rows['path:["North Building"]'][3] == 0  # not a leaf
    # ">" inside a name stays one node; the same name under another parent stays distinct.
    assert (
        planned(store, "stair")["location_source_id"]
        == 'path:["North Building", "Stair 2 > Landing"]'
    )
    assert planned(store, "south")["location_source_id"] == 'path:["South Building", "Level 1"]'
    assert planned(store, "none")["location_source_id"] is None
    assert skipped(store, "a-old", "area") == "deleted at source"
    assert result.counts["areas"] == {
        "extracted": 8,
        "planned": 6,
        "quarantined": 0,
        "skipped": 2,
        "released": 0,
    }


def test_locations_csv_moves_a_subtree(store: Store, tmp_path: Path) -> None:
    folder = write_mappings(
        tmp_path / "maps",
        **{"locations.csv": ("field_path,procore_path\nSouth Building,Campus > South Wing\n")},
    )
    add_issue(store, "south", area_id="a-s1")
    transform(store, load_mappings(folder))
    assert (
        planned(store, "south")["location_source_id"] == 'path:["Campus", "South Wing", "Level 1"]'
    )


@pytest.mark.parametrize(
    ("area_id", "hint"),
    [
        ("a-old-desk", "area 'Old Trailer > Desk' (a-old-desk) is deleted in BIM 360 Field"),
        ("a-missing", "area a-missing is not among the staged BIM 360 Field areas"),
    ],
)
def test_issue_in_a_deleted_or_unknown_area_is_quarantined(
    store: Store, area_id: str, hint: str
) -> None:
    store.conn.execute("PRAGMA foreign_keys = OFF")  # the source may point at a vanished area
    add_issue(store, "lost", area_id=area_id)
    transform(store)
    row = held(store, "lost")
    assert row["reason"] == "location does not exist"
    assert row["hint"].startswith(hint)


def test_area_with_a_blank_name_and_its_issue_are_quarantined(store: Store) -> None:
    with store.transaction():
        store.conn.execute(
            "INSERT INTO areas (id, parent_id, name) VALUES ('a-blank', 'a-north', '  ')"
        )
        store.conn.execute(
            "INSERT INTO areas (id, parent_id, name) VALUES ('a-under', 'a-blank', 'Room')"
        )
    add_issue(store, "i", area_id="a-under")
    result = transform(store)
    assert held(store, "a-blank", "area")["reason"] == "the area has a blank name"
    assert (
        held(store, "a-under", "area")["reason"] == "parent area a-blank cannot become a location"
    )
    assert held(store, "i")["reason"] == "location is quarantined"
    counts = result.counts["areas"]
    assert counts["planned"] + counts["quarantined"] + counts["skipped"] == counts["extracted"]


# -- validation, uuids ----------------------------------------------------------------------


def test_payload_validation_mirrors_the_sync_rules() -> None:
    good = {
        "uuid": issue_uuid(PROJECT, "x"),
        "title": "T",
        "status": "open",
        "origin": {"origin_type": "a", "origin_id": "b", "title": "c", "deep_link_url": "d"},
    }
    assert payload_problems(good, assignee_ids={ALICE}) == {}
    bad = {
        **good,
        "title": "x" * 81,
        "status": "parked",
        "priority": "urgent",
        "issue_type": "bug",
        "due_date": "2020-02-30",
        "assignee_id": 1,
        "trade": 3,
        "uuid": "nope",
        "origin": {"origin_type": "a"},
    }
    assert set(payload_problems(bad, assignee_ids={ALICE}, location_resolvable=False)) == {
        "title",
        "status",
        "priority",
        "issue_type",
        "due_date",
        "assignee_id",
        "trade",
        "uuid",
        "origin",
        "location_id",
    }
    assert normalise_due_date("2020-02-30") == (None, False)


GOOD_PAYLOAD = {
    "uuid": issue_uuid(PROJECT, "x"),
    "title": "T",
    "status": "open",
    "priority": "low",
    "issue_type": "clash",
    "due_date": "2024-02-29",
    "assignee_id": ALICE,
    "description": "d",
    "origin": {"origin_type": "a", "origin_id": "b", "title": "c", "deep_link_url": "d"},
}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("title", "x" * 81),
        ("title", " \u3000 "),
        ("title", 5),
        ("status", "parked"),
        ("status", None),
        ("priority", "urgent"),
        ("issue_type", "bug"),
        ("due_date", "2023-02-29"),
        ("due_date", "20240101"),
        ("uuid", "nope"),
        ("uuid", issue_uuid(PROJECT, "x").upper()),
        ("origin", {"origin_type": "a"}),
        ("origin", {**GOOD_PAYLOAD["origin"], "title": ""}),
        ("assignee_id", 1),
        ("assignee_id", True),
        ("assignee_id", str(ALICE)),
        ("description", 3),
        ("trade_id", 4),
    ],
)
def test_each_sync_rule_is_checked(field: str, value: Any) -> None:
    assert payload_problems(GOOD_PAYLOAD, assignee_ids={ALICE}) == {}
    broken = {**GOOD_PAYLOAD, field: value}
    if value is None:
        del broken[field]
    assert list(payload_problems(broken, assignee_ids={ALICE})) == [field]


def test_uuid_follows_the_contract(store: Store) -> None:
    add_issue(store, "i1")
    transform(store)
    expected = str(uuid.uuid5(NAMESPACE_MIGRATE, f"procore-project:{PROJECT}:field-issue:i1"))
    assert planned(store, "i1")["uuid"] == expected == planned(store, "i1")["payload"]["uuid"]
    origin = planned(store, "i1")["payload"]["origin"]
    assert origin["origin_id"] == "i1" and origin["deep_link_url"].endswith("/proj-1/issues/i1")


# -- mapping files, re-runs, determinism ------------------------------------------------------


def test_mapping_file_error_names_file_and_line_and_exits_2(tmp_path: Path) -> None:
    folder = write_mappings(
        tmp_path / "maps",
        **{"status.csv": ("field_status,procore_status\nOpen,open\nParked,parkd\n")},
    )
    settings = Settings(
        staging=StagingSettings(path=tmp_path / "staging.db", logs=tmp_path / "logs"),
        mappings=MappingsSettings(dir=folder),
        target=TargetSettings(project_id=PROJECT),
    )
    with pytest.raises(MappingError) as caught:
        transform_from_settings(settings, {}, offline=True)
    assert caught.value.exit_code == EXIT_USAGE
    assert "status.csv:3:" in str(caught.value) and '"parkd"' in str(caught.value)
    assert not (tmp_path / "staging.db").exists()  # refused before touching the store


def test_a_locked_staging_db_is_a_clear_error_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "staging.db"
    make_store(path).close()
    with open_store(path) as first:
        add_issue(first, "i1")
        transform(first)
        before = plan_hash(first)
        first.conn.execute("BEGIN IMMEDIATE")  # another command is writing
        with (
            open_store(path, busy_timeout_ms=50) as second,
            pytest.raises(StagingBusy, match="locked by another migrate command"),
        ):
            transform(second)
        first.conn.execute("ROLLBACK")
        assert plan_hash(first) == before


def test_offline_without_a_snapshot_is_an_error(tmp_path: Path) -> None:
    settings = Settings(
        staging=StagingSettings(path=tmp_path / "staging.db", logs=tmp_path / "logs"),
        mappings=MappingsSettings(dir=write_mappings(tmp_path / "maps")),
        target=TargetSettings(project_id=PROJECT),
    )
    with open_store(settings.staging.path) as store, store.transaction():
        # Extracted, but Procore was never snapshotted.
        store.conn.execute("INSERT INTO areas (id, name) VALUES ('a-1', 'Level 1')")
    with pytest.raises(NoSnapshotError) as caught:
        transform_from_settings(settings, {}, offline=True)
    assert caught.value.exit_code == EXIT_USAGE
    assert "without --offline" in str(caught.value)


def test_rerun_after_fixing_a_mapping_releases_the_quarantined_rows(
    store: Store, tmp_path: Path
) -> None:
    folder = write_mappings(tmp_path / "maps")
    add_issue(store, "parked", status="Parked")
    add_issue(store, "fine")
    first = transform(store, load_mappings(folder))
    assert first.counts["issues"]["quarantined"] == 1
    row = held(store, "parked")
    second = transform(store, load_mappings(folder))  # same problem: same open row
    assert held(store, "parked")["id"] == row["id"]
    assert second.counts["issues"]["released"] == 0
    (folder / "status.csv").write_text(
        DEFAULT_FILES["status.csv"] + "Parked,blocked\n", encoding="utf-8"
    )
    third = transform(store, load_mappings(folder))
    assert planned(store, "parked")["status"] == "blocked"
    released = store.conn.execute(
        "SELECT released_at, released_run FROM quarantine WHERE id = ?", (row["id"],)
    ).fetchone()
    assert released[0] is not None and released[1] == third.run_id
    assert third.counts["issues"] == {
        "extracted": 2,
        "planned": 2,
        "quarantined": 0,
        "skipped": 0,
        "released": 1,
    }


def test_two_runs_give_identical_plans(store: Store) -> None:
    add_issue(
        store,
        "b",
        area_id="a-n1",
        assigned_to_email="alice@example.com",
        comments=[("m@example.com", "2014-01-01T00:00:00Z", "ok")],
        custom_fields={"Beverage of Choice": "Tea"},
        due_date="03/05/2024",
    )
    add_issue(store, "a", description="Émoji 🚧 " * 20)
    add_issue(store, "c", status="Parked")

    def snapshot() -> list[tuple[Any, ...]]:
        return store.conn.execute(
            "SELECT source_id, title, payload, payload_hash, attachment_ids, location_source_id "
            "FROM planned_issues ORDER BY source_id"
        ).fetchall()

    first = transform(store)
    rows = snapshot()
    second = transform(store)
    assert first.plan_hash == second.plan_hash == plan_hash(store)
    assert snapshot() == rows
    assert first.run_id != second.run_id


#: Every start method this OS offers: START_METHOD ("spawn") is what runs, and the others
#: show the worker machinery does not lean on what a start method happens to share.
START_METHODS = multiprocessing.get_all_start_methods()


@pytest.fixture(params=START_METHODS)
def start_method(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(transform_issues, "START_METHOD", request.param)
    monkeypatch.setattr(transform_issues, "MIN_BATCHES_FOR_WORKERS", 2)  # 14 batches here
    return str(request.param)


def test_spawn_is_the_start_method_and_every_os_has_it() -> None:
    assert transform_issues.START_METHOD == "spawn" in START_METHODS


def test_worker_processes_give_the_same_plan_and_quarantine(
    store: Store, start_method: str
) -> None:
    for n in range(40):
        add_issue(
            store,
            f"i{n:02d}",
            status=("Parked" if n % 7 == 0 else "Open"),
            area_id=("a-old" if n % 9 == 0 else "a-n1"),
            raw={"n": n},
        )

    def outcome(**options: Any) -> tuple[Any, ...]:
        result = plan_with(store, **options)
        return (
            result.plan_hash,
            result.counts,
            store.conn.execute("SELECT * FROM planned_issues ORDER BY source_id").fetchall(),
            store.conn.execute(
                "SELECT entity, source_id, reason, hint, record FROM quarantine "
                "WHERE released_at IS NULL ORDER BY id"
            ).fetchall(),
        )

    serial = outcome(workers=1)
    parallel = outcome(workers=2, batch_size=3)  # 14 batches over two worker processes
    assert parallel[0] == serial[0] == plan_hash(store) and parallel[1] == serial[1]
    assert [row[:-1] for row in parallel[2]] == [row[:-1] for row in serial[2]]  # plan_run aside
    assert parallel[3] == serial[3] and len(serial[3]) == 10
    assert json.loads(serial[3][0][4])["raw"] == {"n": 0}
    assert multiprocessing.active_children() == []


# The failing mappers stand in for transform_issues.map_range, which _map_in_processes hands to
# its workers by reference: module-level functions, so a spawned worker imports this module to
# find them (where transform_issues.map_range is the real one again, hence the saved reference).
_REAL_MAP_RANGE = transform_issues.map_range
FAILING_BATCH = "i21"  # batch 8 of 14


def _raising_mapper(store: Store, context: Any, first: str, last: str) -> Any:
    if first == FAILING_BATCH and multiprocessing.parent_process() is not None:
        raise ValueError("boom")
    return _REAL_MAP_RANGE(store, context, first, last)


def _exiting_mapper(store: Store, context: Any, first: str, last: str) -> Any:
    if first == FAILING_BATCH and multiprocessing.parent_process() is not None:
        os._exit(3)  # dies without a word, as a crashed interpreter would
    return _REAL_MAP_RANGE(store, context, first, last)


def _killed_mapper(store: Store, context: Any, first: str, last: str) -> Any:
    if first == FAILING_BATCH and multiprocessing.parent_process() is not None:
        os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer does
    return _REAL_MAP_RANGE(store, context, first, last)


@pytest.mark.parametrize(
    ("mapper", "said"),
    [
        (_raising_mapper, r"^a transform worker failed \(ValueError: boom\); nothing of this run"),
        (_exiting_mapper, r"^a transform worker process ended abruptly .*; nothing of this run"),
        pytest.param(
            _killed_mapper,
            r"^a transform worker process ended abruptly .*; nothing of this run",
            marks=pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="no SIGKILL here"),
        ),
    ],
)
def test_a_failing_worker_stops_the_run_and_the_previous_plan_is_kept(
    store: Store, monkeypatch: pytest.MonkeyPatch, start_method: str, mapper: Any, said: str
) -> None:
    for n in range(40):
        add_issue(store, f"i{n:02d}")
    before = plan_with(store, workers=1)
    rows = store.conn.execute("SELECT * FROM planned_issues ORDER BY source_id").fetchall()
    with store.transaction():  # what a finished run would plan differently
        store.conn.execute(
            "UPDATE issues SET description = 'changed since' WHERE source_id IN ('i01', 'i30')"
        )
    monkeypatch.setattr(transform_issues, "map_range", mapper)

    with pytest.raises(transform_issues.WorkerFailed, match=said) as failed:
        plan_with(store, workers=2, batch_size=3)

    assert "\n" not in str(failed.value)  # the CLI's one line
    assert store.conn.execute("SELECT * FROM planned_issues ORDER BY source_id").fetchall() == rows
    assert plan_hash(store) == before.plan_hash
    status, error = store.conn.execute(
        "SELECT status, error FROM runs ORDER BY id DESC LIMIT 1"
    ).fetchone()
    assert status == "failed" and re.search(said, error)
    assert multiprocessing.active_children() == []
    monkeypatch.setattr(transform_issues, "map_range", _REAL_MAP_RANGE)
    after = plan_with(store, workers=2, batch_size=3)  # the same run without the failure
    assert after.plan_hash != before.plan_hash and after.counts["issues"]["planned"] == 40


def _pool_parent(facts_file: str) -> None:
    """A transform-like parent: one worker started as transform starts its workers, idle."""
    import threading
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context(transform_issues.START_METHOD),
        initializer=transform_issues._start_worker,
        initargs=(facts_file, None, _REAL_MAP_RANGE),
    )
    facts = pool.submit(_worker_facts).result()
    Path(facts_file).write_text(json.dumps(facts), encoding="utf-8")
    threading.Event().wait()  # until killed


def _worker_facts() -> list[int]:
    return [os.getpid(), int(signal.getsignal(signal.SIGINT))]


def test_workers_end_with_a_killed_parent_and_leave_ctrl_c_to_it(tmp_path: Path) -> None:
    facts_file = tmp_path / "worker.json"
    parent = multiprocessing.get_context("spawn").Process(
        target=_pool_parent, args=(str(facts_file),)
    )
    parent.start()
    try:
        deadline = time.monotonic() + 120
        while not facts_file.exists() and parent.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        worker_pid, sigint = json.loads(facts_file.read_text(encoding="utf-8"))
        assert sigint == int(signal.SIG_IGN)
        assert process_alive(worker_pid)
    finally:
        parent.kill()  # kill -9 on POSIX, TerminateProcess on Windows: no clean-up runs
        parent.join()
    deadline = time.monotonic() + 120  # a generous bound for a busy machine, not a timing
    while process_alive(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not process_alive(worker_pid)


# -- checklist items -----------------------------------------------------------------------------


def add_checklists(store: Store) -> None:
    with store.transaction():
        conn = store.conn
        for cid, deleted in (("cl-1", 0), ("cl-gone", 1)):
            conn.execute(
                "INSERT INTO checklists (id, identifier, name, checklist_type, status, priority, "
                "deleted) VALUES (?, '000009', 'Wall closing checklist', 'Coordination', "
                "'Open', 'Medium', ?)",
                (cid, deleted),
            )
        for item_id, checklist, conforming, linked in (
            ("it-no", "cl-1", "No", None),
            ("it-linked", "cl-1", "No", '["i1"]'),
            ("it-yes", "cl-1", "Yes", None),
            ("it-gone", "cl-gone", "No", "[]"),
        ):
            conn.execute(
                "INSERT INTO checklist_items (id, checklist_id, section_name, display_number, "
                "question_text, response, is_conforming, comment, linked_issue_ids) "
                "VALUES (?, ?, 'Section 1', '3.', 'Fire stopping complete?', '-', ?, "
                "'Minor rework needed.', ?)",
                (item_id, checklist, conforming, linked),
            )


def test_checklist_items_as_issues_off_plans_none(store: Store) -> None:
    add_checklists(store)
    result = transform(store)
    assert "checklist_items" not in result.counts
    assert (
        store.conn.execute(
            "SELECT COUNT(*) FROM planned_issues WHERE source_kind = 'checklist_item'"
        ).fetchone()[0]
        == 0
    )


def test_checklist_items_as_issues_on(store: Store) -> None:
    add_checklists(store)
    add_issue(store, "z-after-checklist-items")  # sorts after "checklist_item:…", "i…" before
    result = transform(store, checklist_items_as_issues=True)
    assert result.counts["checklist_items"] == {
        "extracted": 2,
        "planned": 1,
        "quarantined": 0,
        "skipped": 1,
        "released": 0,
    }
    # The plan hash built while writing (issues, then checklist items) is the one read back.
    kinds = [
        row[0]
        for row in store.conn.execute("SELECT source_kind FROM planned_issues ORDER BY source_id")
    ]
    assert kinds[-1] == "issue" and "checklist_item" in kinds
    assert result.plan_hash == plan_hash(store)
    row = planned(store, "checklist_item:it-no")
    assert row["source_kind"] == "checklist_item"
    assert row["issue_type"] == "coordination"  # checklist type as the category
    assert row["payload"]["priority"] == "medium"
    assert row["title"] == "000009 #3 Wall closing checklist: Fire stopping complete?"
    description = row["payload"]["description"]
    for line in (
        "Checklist: Wall closing checklist (000009)",
        "Section: Section 1",
        "Question: Fire stopping complete?",
        "Response: -",
        "Comment: Minor rework needed.",
    ):
        assert line in description
    assert skipped(store, "checklist_item:it-gone", "checklist_item") == "deleted at source"
    # Switched off again: nothing planned, nothing left blocking.
    assert "checklist_items" not in transform(store).counts


# -- invariants and the quarantine library ---------------------------------------------------


def test_every_issue_is_planned_quarantined_or_skipped(store: Store) -> None:
    for n, status in enumerate(("Open", "Void", "Parked", "Closed", "Draft")):
        add_issue(store, f"i{n}", status=status, area_id=("a-old" if n == 4 else "a-n1"))
    result = transform(store)
    counts = result.counts["issues"]
    assert counts["extracted"] == 5
    assert counts["planned"] + counts["quarantined"] + counts["skipped"] == 5
    assert (counts["planned"], counts["quarantined"], counts["skipped"]) == (2, 2, 1)


def test_quarantine_list_show_release(store: Store) -> None:
    add_issue(store, "parked", status="Parked")
    transform(store)
    rows = list_quarantine(store)
    assert [(r["entity"], r["source_id"], r["stage"]) for r in rows] == [
        ("issue", "parked", "transform")
    ]
    shown = show_quarantine(store, rows[0]["id"])
    assert shown["record"]["staged"]["source_id"] == "parked"
    with pytest.raises(QuarantineNotFound) as caught:
        show_quarantine(store, 999)
    assert caught.value.exit_code == EXIT_USAGE
    assert "No quarantine row 999" in str(caught.value)
    assert release_quarantine(store, [rows[0]["id"]]) == [rows[0]["id"]]
    assert list_quarantine(store) == []
    assert len(list_quarantine(store, include_released=True)) == 1
    transform(store)  # still broken: held again, in a new row
    assert len(list_quarantine(store)) == 1
