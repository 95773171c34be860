"""Checklists into Procore Inspections, over real HTTP against the simulator (issue 14, load).

Planned rows come from tests/inspection_rows.py (the transform contract). Every test compares
what Procore holds (``ProcoreApp.inspections_of``) with what was planned, field by field: the
header, each item's answer, comments and files (name and sha256), checklist files, status.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from migrate.errors import EXIT_QUARANTINED
from migrate.load import load_from_settings
from migrate.load.plan import compute_plan
from migrate.sandbox.faults import FaultConfig
from migrate.sandbox.httpbase import Request, Route, RunningServer
from migrate.settings import Settings, load_settings
from migrate.store import open_store
from tests.inspection_rows import (
    TEMPLATES,
    PlantedInspection,
    add_file,
    plant_inspections,
    replan,
)
from tests.test_load import (
    ACCESS_CHECK,
    GENEROUS,
    PROCORE_ENV,
    PROJECT,
    RecordingProcoreApp,
    calls_since,
    db_rows,
    location_paths,
    settings_for,
)

REPO = Path(__file__).resolve().parents[1]
VENDORS = {"diaz mechanical": 9001, "wei electric": 9002}
ITEM_NAMES = {
    item["source_id"]: item["name"]
    for template in TEMPLATES.values()
    for section in template["sections"]
    for item in section["items"]
}
#: Simulator routes that change Procore.
WRITE_ROUTES = (
    "inspection_types.create",
    "response_sets.create",
    "company_templates.create",
    "company_sections.create",
    "company_items.create",
    "project_templates.create_from_company_template",
    "lists.create.v1.1",
    "lists.update",
    "lists.close",
    "lists.reopen",
    "item_response.create",
    "list_comments.create",
    "item_attachments.create",
    "list_attachments.create",
    "uploads.create",
)
SWITCHES = {
    "defaults": {},
    "item-type-ids": {"inspection_item_type_field": "id"},
    "decimal-numbers": {"inspection_number_values": "decimal"},
    "repost-replaces": {"inspection_response_repost": "replace"},
    "closed-not-locked": {"inspection_closed_locked": False},
    "repeatable-type-names": {"inspection_type_names": "repeatable"},
}


class App(RecordingProcoreApp):
    """The simulator; ``hold_answers`` delays the answer of these routes after applying them
    (a process killed meanwhile has its write in Procore but not in its id map)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hold_answers: dict[str, float] = {}

    def decorate(self, request: Request, route: Route | None, response: Any) -> None:
        if route is not None and route.name in self.hold_answers:
            time.sleep(self.hold_answers[route.name])
        super().decorate(request, route, response)


@pytest.fixture
def served() -> Iterator[App]:
    app = App(**GENEROUS)
    server = RunningServer(app)
    app.url = server.url  # type: ignore[attr-defined]
    yield app
    server.stop()
    app.close()


def serve(**options: Any) -> tuple[App, RunningServer]:
    app = App(**GENEROUS, **options)
    return app, RunningServer(app)


def prepared(tmp: Path, url: str, count: int, **kwargs: Any) -> tuple[Settings, list[Any]]:
    settings = settings_for(tmp, url)
    open_store(settings.staging.path).close()
    return settings, plant_inspections(settings, count, **kwargs)


def writes(app: App) -> dict[str, int]:
    counts = app.call_counts()
    return {route: counts.get(route, 0) for route in WRITE_ROUTES if counts.get(route)}


# -- what Procore holds against what was planned --------------------------------------------------


def _answer(response: dict[str, Any] | None, responded_with: str | None) -> Any:
    if response is None:
        return None
    if response["key"] == "response_option_id":
        return ("response_option", responded_with)
    return (response["key"], response["value"])


def procore_view(app: App) -> dict[str, Any]:
    """Every migrated inspection by identifier (ids differ per run); none may be there twice."""
    paths = location_paths(app)
    view: dict[str, Any] = {}
    for inspection in app.inspections_of(PROJECT):
        identifier = inspection["identifier"]
        assert identifier not in view, f"inspection {identifier} is in Procore twice"
        view[identifier] = {
            "template": inspection["template"],
            "type": inspection["inspection_type"],
            "description": inspection["description"],
            "inspection_date": inspection["inspection_date"],
            "status": inspection["status"],
            "location": paths.get(inspection["location_id"]) if inspection["location_id"] else None,
            "contractor": inspection["responsible_contractor_id"],
            "files": sorted((f["name"], f["sha256"]) for f in inspection["files"]),
            "items": {
                item["name"]: {
                    "answer": _answer(item["response"], item["responded_with"]),
                    "comments": item["comments"],
                    "files": sorted((f["name"], f["sha256"]) for f in item["files"]),
                }
                for section in inspection["sections"]
                for item in section["items"]
            },
        }
    return view


def planned_answer(response: dict[str, Any] | None) -> tuple[str, Any] | None:
    """A planned response as (payload key, value): what Procore shows for it."""
    if response is None:
        return None
    ((key, value),) = response.items()
    return (key, value)


def planned_view(planted: list[PlantedInspection]) -> dict[str, Any]:
    view: dict[str, Any] = {}
    for one in planted:
        template = TEMPLATES[one.template]
        items = {}
        for section in template["sections"]:
            for item in section["items"]:
                items[item["name"]] = {"answer": None, "comments": [], "files": []}
        for item in one.payload["items"]:
            items[ITEM_NAMES[item["template_item_source_id"]]] = {
                "answer": planned_answer(item["response"]),
                "comments": [c["body"] for c in item["comments"]],
                "files": sorted(one.files[a] for a in item["attachment_ids"]),
            }
        listed = one.payload["list"]
        view[listed["identifier"]] = {
            "template": template["name"],
            "type": template["inspection_type"],
            "description": listed["description"],
            "inspection_date": listed["inspection_date"],
            "status": one.status,
            "location": one.location,
            "contractor": VENDORS.get((one.contractor or "").lower()),
            "files": sorted(one.files[a] for a in one.list_files),
            "items": items,
        }
    return view


def inspection_states(settings: Settings) -> dict[str, int]:
    rows = db_rows(
        settings,
        "SELECT m.state, m.payload_hash = p.payload_hash, COUNT(*) FROM id_map m "
        "JOIN planned_inspections p ON p.source_id = m.source_id "
        "WHERE m.entity = 'inspection' GROUP BY 1, 2",
    )
    return {f"{state}{'' if same else ' (unfinished)'}": n for state, same, n in rows}


# -- exactly once, as planned ----------------------------------------------------------------------


def test_every_checklist_lands_once_as_planned_and_a_rerun_writes_nothing(
    served: App, tmp_path: Path
) -> None:
    settings, planted = prepared(tmp_path, served.url, 16)  # type: ignore[attr-defined]
    result = load_from_settings(settings, PROCORE_ENV)
    assert result.exit_code == 0
    assert result.counts["inspection"]["created"] == 16
    assert procore_view(served) == planned_view(planted)
    assert inspection_states(settings) == {"loaded": 16}
    # Building blocks: listed first and reused by name (Procore's standard set is not copied).
    sets = [s["name"] for s in served.inspections.response_sets.values()]
    assert Counter(sets) == {"Yes/No/N/A": 1, "Acceptable/Rework/N/A": 1}
    assert sorted(t["name"] for t in served.inspections.inspection_types.values()) == [
        "Commissioning",
        "Quality",
    ]
    assert len(served.inspections.project_templates) == 2
    # Checklist files go with the create (upload_ids): no separate attachment call.
    assert served.call_counts().get("list_attachments.create", 0) == 0

    before = served.call_counts()
    again = load_from_settings(settings, PROCORE_ENV)
    assert calls_since(served, before) == ACCESS_CHECK  # no write, no other read
    assert again.counts["inspection"]["unchanged"] == 16
    assert again.write_requests == 0


def test_plan_lists_exactly_the_writes_load_makes(served: App, tmp_path: Path) -> None:
    settings, planted = prepared(tmp_path, served.url, 12)  # type: ignore[attr-defined]
    plan = compute_plan(open_store(settings.staging.path, read_only=True), PROJECT)
    assert plan.counts()["inspection"]["create"] == 12
    assert sorted(row["source_id"] for row in plan.rows("create", "inspection")) == [
        p.source_id for p in planted
    ]
    asked = plan.inspection_requests
    load_from_settings(settings, PROCORE_ENV)
    done = served.call_counts()
    assert asked["create"] == done["lists.create.v1.1"]
    assert asked["uploads"] == done["uploads.create"]
    assert asked["answers"] == done["item_response.create"]
    assert asked["comments"] == done["list_comments.create"]
    assert asked["item_files"] == done["item_attachments.create"]
    assert asked["status"] == done["lists.close"] + done.get("lists.update", 0)
    after = compute_plan(open_store(settings.staging.path, read_only=True), PROJECT)
    assert after.counts()["inspection"]["unchanged"] == 12
    assert after.counts()["inspection"]["create"] == 0
    assert "Inspection requests" not in "\n".join(after.summary_lines())


@pytest.mark.parametrize("switches", list(SWITCHES.values()), ids=list(SWITCHES))
def test_every_simulator_reading_ends_in_the_planned_state(
    switches: dict[str, Any], tmp_path: Path
) -> None:
    app, server = serve(**switches)
    try:
        settings, planted = prepared(tmp_path, server.url, 8)
        result = load_from_settings(settings, PROCORE_ENV)
        assert result.exit_code == 0, db_rows(settings, "SELECT reason FROM quarantine")
        assert procore_view(app) == planned_view(planted)
        before = app.call_counts()
        load_from_settings(settings, PROCORE_ENV)
        assert calls_since(app, before) == ACCESS_CHECK
    finally:
        server.stop()
        app.close()


# -- writes whose outcome is unknown -------------------------------------------------------------


@pytest.mark.parametrize("repost", ["refuse", "replace"])
def test_rows_a_dead_run_left_sent_are_found_in_procore_not_sent_again(
    repost: str, tmp_path: Path
) -> None:
    """The id map says 'sent' (the process died before the answer was recorded) for an
    inspection create, an answer, a comment and an item file that Procore has: load finds
    each of them and sends none again, whatever Procore does with a second answer."""
    app, server = serve(inspection_response_repost=repost)
    try:
        settings, planted = prepared(tmp_path, server.url, 6)
        load_from_settings(settings, PROCORE_ENV)
        expected = procore_view(app)
        store = open_store(settings.staging.path)
        with store.transaction():
            store.conn.execute(
                "UPDATE id_map SET state = 'sent', target_id = NULL, payload_hash = NULL "
                "WHERE entity = 'inspection' AND source_id = 'cl-00001'"
            )
            store.conn.execute(
                "UPDATE id_map SET payload_hash = NULL "
                "WHERE entity = 'inspection' AND source_id = 'cl-00000'"
            )
            for entity, source_id in (
                ("inspection_item_response", "cl-00000-ti-finish"),
                ("inspection_item_comment", "cl-00000-ti-clean:comment"),
                ("inspection_item_file", "att-00000-photo"),
            ):
                changed = store.conn.execute(
                    "UPDATE id_map SET state = 'sent', target_id = NULL "
                    "WHERE entity = ? AND source_id = ?",
                    (entity, source_id),
                ).rowcount
                assert changed == 1, (entity, source_id)
        store.close()
        plan = compute_plan(open_store(settings.staging.path, read_only=True), PROJECT)
        assert plan.source_ids("inspection", "create") == ["cl-00001"]
        assert plan.source_ids("inspection", "update") == ["cl-00000"]

        before = writes(app)
        result = load_from_settings(settings, PROCORE_ENV)
        assert result.exit_code == 0
        assert writes(app) == before  # found, every one of them
        assert procore_view(app) == expected
        assert inspection_states(settings) == {"loaded": 6}
        (sent,) = db_rows(settings, "SELECT COUNT(*) FROM id_map WHERE state = 'sent'")[0]
        assert sent == 0
    finally:
        server.stop()
        app.close()


def test_lost_answers_are_looked_for_never_sent_twice(served: App, tmp_path: Path) -> None:
    """Procore applies a create, then the connection drops before the answer: nothing is in
    Procore twice and nothing is missing (creates have no idempotency key to lean on)."""
    settings, planted = prepared(tmp_path, served.url, 6)  # type: ignore[attr-defined]
    for path in (
        r"/companies/\d+/inspection_types$",
        r"/checklist/list_templates$",
        r"/sections$",
        r"/items$",
        r"/checklist/lists$",
        r"/item_response$",
        r"/comments$",
        r"/item_attachments$",
    ):
        served.faults.inject("lost_response", path=path, method="POST", count=2)
    result = load_from_settings(settings, PROCORE_ENV)
    assert result.exit_code == 0, db_rows(settings, "SELECT reason FROM quarantine")
    assert served.faults.fired["lost_response"] >= 10
    assert procore_view(served) == planned_view(planted)
    assert len(served.inspections.company_templates) == 2
    assert len(served.inspections.company_items) == sum(
        len(s["items"]) for t in TEMPLATES.values() for s in t["sections"]
    )


def change_two_checklists(settings: Settings, *, new_answers: bool) -> tuple[str, str]:
    """Checklists changed at the source after load: cl-00004 gets a longer description, a new
    comment, item file and checklist file, and is closed (``new_answers``: two answers change
    too); cl-00002, closed in Procore (locked by default), gets a comment. Returns the sha256
    of the new item file and of the new checklist file."""
    sha = add_file(settings, "att-new-photo", ("ChecklistItem", "cl-00004-ti-slump"), "x")
    doc_sha = add_file(settings, "att-new-doc", ("Checklist", "cl-00004"), "y")

    def change(payload: dict[str, Any], columns: dict[str, Any]) -> None:
        payload["list"]["description"] += "\nEdited at the source."
        if new_answers:
            payload["items"][0]["response"] = {"status": "conforming"}  # was non_conforming
            payload["items"][2]["response"] = {"text_value": "Answered later"}
        payload["items"][4]["comments"].append({"key": "comment", "body": "Pour moved"})
        payload["items"][3]["attachment_ids"].append("att-new-photo")
        columns["attachment_names"]["att-new-photo"] = "Slump test.png"
        columns["attachment_names"]["att-new-doc"] = "Late scan.png"
        columns["attachment_ids"].append("att-new-doc")
        columns["status"] = "closed"

    def comment_on_closed(payload: dict[str, Any], columns: dict[str, Any]) -> None:
        payload["items"][1]["comments"].append({"key": "comment-2", "body": "Seen again"})

    replan(settings, "cl-00004", change)
    replan(settings, "cl-00002", comment_on_closed)
    return sha, doc_sha


#: Every inspection write: creates (POST), the header update that carries upload_ids, close
#: and reopen (PATCH).
WRITE_PATHS = (
    ("POST", r"/companies/\d+/inspection_types$"),
    ("POST", r"/checklist/item/response_sets$"),
    ("POST", r"/checklist/list_templates$"),
    ("POST", r"/sections$"),
    ("POST", r"/items$"),
    ("POST", r"/create_from_company_template$"),
    ("POST", r"/checklist/lists$"),
    ("POST", r"/item_response$"),
    ("POST", r"/comments$"),
    ("POST", r"/item_attachments$"),
    ("PATCH", r"/checklist/lists/\d+$"),
    ("PATCH", r"/close$"),
    ("PATCH", r"/reopen$"),
)


@pytest.mark.slow
def test_writes_procore_applies_after_the_client_gave_up_are_not_made_twice(
    served: App, tmp_path: Path
) -> None:
    """Each kind of inspection write is answered past the client's read timeout, and Procore
    applies it after the client stopped waiting: load finds what it made before sending it
    again, so nothing is in Procore twice and nothing is missing."""
    settings, planted = prepared(tmp_path, served.url, 6)  # type: ignore[attr-defined]
    settings = replace(settings, target=replace(settings.target, timeout=0.3))
    served.faults.configure(FaultConfig(slow_seconds=0.6))

    def slow_every_write() -> None:
        for method, path in WRITE_PATHS:
            served.faults.inject("slow", path=path, method=method)

    slow_every_write()
    result = load_from_settings(settings, PROCORE_ENV)
    assert result.exit_code == 0, db_rows(settings, "SELECT reason FROM quarantine")
    assert served.faults.fired["slow"] >= 10
    time.sleep(0.6)  # anything still on its way has landed
    assert procore_view(served) == planned_view(planted)
    assert len(served.inspections.company_templates) == 2
    assert len(served.inspections.company_items) == sum(
        len(s["items"]) for t in TEMPLATES.values() for s in t["sections"]
    )
    assert Counter(s["name"] for s in served.inspections.response_sets.values()) == {
        "Yes/No/N/A": 1,
        "Acceptable/Rework/N/A": 1,
    }

    # A changed checklist: a header update with a new checklist file (upload_ids), a new
    # comment and item file, then closed.
    sha, doc_sha = change_two_checklists(settings, new_answers=False)
    slow_every_write()
    result = load_from_settings(settings, PROCORE_ENV)
    assert result.exit_code == 0, db_rows(settings, "SELECT reason FROM quarantine")
    time.sleep(0.6)
    view = procore_view(served)
    changed = view["000004"]
    assert changed["description"].endswith("Edited at the source.")
    assert changed["status"] == "closed"
    assert changed["files"].count(("Late scan.png", doc_sha)) == 1
    assert changed["items"]["2.1 Slump (mm)"]["files"] == [("Slump test.png", sha)]
    assert changed["items"]["2.2 Pour date"]["comments"] == ["Pour moved"]
    reopened = view["000002"]
    assert reopened["status"] == "closed"
    assert reopened["items"]["1.2 Finish"]["comments"].count("Seen again") == 1
    (referenced,) = db_rows(settings, "SELECT COUNT(*) FROM uploads WHERE state != 'referenced'")[0]
    assert referenced == 0
    before = served.call_counts()
    load_from_settings(settings, PROCORE_ENV)
    assert calls_since(served, before) == ACCESS_CHECK


# -- refusals ------------------------------------------------------------------------------------


def test_refused_writes_are_quarantined_and_the_run_goes_on(served: App, tmp_path: Path) -> None:
    settings, planted = prepared(tmp_path, served.url, 6)  # type: ignore[attr-defined]

    def bad_date(payload: dict[str, Any], columns: dict[str, Any]) -> None:
        payload["list"]["inspection_date"] = "2015-02-30"

    def decimal_slump(payload: dict[str, Any], columns: dict[str, Any]) -> None:
        payload["items"][3]["response"] = {"number_value": 12.5}

    replan(settings, "cl-00000", bad_date)
    replan(settings, "cl-00001", decimal_slump)
    result = load_from_settings(settings, PROCORE_ENV)
    assert result.exit_code == EXIT_QUARANTINED
    held = db_rows(
        settings,
        "SELECT entity, source_id, reason, hint FROM quarantine WHERE released_at IS NULL "
        "ORDER BY entity",
    )
    assert [(e, s) for e, s, _, _ in held] == [
        ("inspection", "cl-00000"),
        ("inspection_item_response", "cl-00001-ti-slump"),
    ]
    assert "inspection_date" in held[0][2] and held[0][3]
    assert "number_value" in held[1][2] and "whole numbers" in held[1][3]
    view = procore_view(served)
    assert "000000" not in view
    expected = planned_view(planted)
    expected["000001"]["items"]["2.1 Slump (mm)"]["answer"] = None
    del expected["000000"]
    assert view == expected  # the refused answer is missing, the rest of its checklist is there

    before = served.call_counts()
    again = load_from_settings(settings, PROCORE_ENV)
    assert calls_since(served, before) == ACCESS_CHECK
    assert again.exit_code == EXIT_QUARANTINED
    plan = compute_plan(open_store(settings.staging.path, read_only=True), PROJECT)
    assert plan.source_ids("inspection", "blocked") == ["cl-00000"]

    # --retry-rejected sends both again as they are (Procore refuses them again): the plan
    # says so first.
    retry = compute_plan(
        open_store(settings.staging.path, read_only=True), PROJECT, retry_rejected=True
    )
    assert retry.source_ids("inspection", "create") == ["cl-00000"]
    assert retry.source_ids("inspection", "update") == ["cl-00001"]
    before = served.call_counts()
    load_from_settings(settings, PROCORE_ENV, retry_rejected=True)
    after = served.call_counts()
    assert after["lists.create.v1.1"] - before["lists.create.v1.1"] == 1
    assert after["item_response.create"] - before["item_response.create"] == 1

    # Fixed at the source: the refused answer goes out, its quarantine row is released.
    def whole_slump(payload: dict[str, Any], columns: dict[str, Any]) -> None:
        payload["items"][3]["response"] = {"number_value": 12}

    replan(settings, "cl-00001", whole_slump)
    load_from_settings(settings, PROCORE_ENV)
    assert procore_view(served)["000001"]["items"]["2.1 Slump (mm)"]["answer"] == (
        "number_value",
        12,
    )
    assert db_rows(
        settings, "SELECT entity, source_id FROM quarantine WHERE released_at IS NULL"
    ) == [("inspection", "cl-00000")]


# -- a checklist changed after load ----------------------------------------------------------------


def test_a_checklist_changed_after_load_gets_what_procore_can_take(
    served: App, tmp_path: Path
) -> None:
    settings, planted = prepared(tmp_path, served.url, 6)  # type: ignore[attr-defined]
    load_from_settings(settings, PROCORE_ENV)
    sha, _ = change_two_checklists(settings, new_answers=True)
    plan = compute_plan(open_store(settings.staging.path, read_only=True), PROJECT)
    assert plan.source_ids("inspection", "update") == ["cl-00002", "cl-00004"]
    result = load_from_settings(settings, PROCORE_ENV)
    assert result.exit_code == 0, db_rows(settings, "SELECT reason FROM quarantine")
    view = procore_view(served)
    changed = view["000004"]
    assert changed["description"].endswith("Edited at the source.")
    assert changed["status"] == "closed"
    items = changed["items"]
    assert items["1.1 Forms clean?"]["answer"] == ("status", "non_conforming")  # kept
    assert items["1.3 Notes"]["answer"] == ("text_value", "Answered later")
    assert items["2.2 Pour date"]["comments"] == ["Pour moved"]
    assert items["2.1 Slump (mm)"]["files"] == [("Slump test.png", sha)]
    assert "Late scan.png" in [name for name, _ in changed["files"]]
    reopened = view["000002"]
    assert reopened["status"] == "closed"
    assert reopened["items"]["1.2 Finish"]["comments"][-1] == "Seen again"
    before = served.call_counts()
    load_from_settings(settings, PROCORE_ENV)
    assert calls_since(served, before) == ACCESS_CHECK


# -- kill -9, then resume ------------------------------------------------------------------------

CHILD = (
    "import os, sys\n"
    "from migrate.load import load_from_settings\n"
    "from migrate.settings import load_settings\n"
    "load_from_settings(load_settings(sys.argv[1]), os.environ)\n"
)
#: Routes whose answer is held after they are applied, so kills land in that window.
HELD = (
    "company_items.create",
    "lists.create.v1.1",
    "item_response.create",
    "list_comments.create",
    "item_attachments.create",
    "lists.close",
)


def write_config(tmp: Path, url: str) -> Path:
    config = tmp / "migration.toml"
    config.write_text(
        f'[target]\nbase_url = "{url}"\nauth_url = "{url}"\n'
        f"company_id = 4100\nproject_id = {PROJECT}\nworkers = 2\n\n"
        '[staging]\npath = "staging.db"\nblobs = "blobs"\nlogs = "logs"\n',
        encoding="utf-8",
    )
    return config


def planted_workdir(
    tmp: Path, url: str, count: int
) -> tuple[Path, Settings, list[PlantedInspection]]:
    """A project folder (migration.toml, staging DB) with ``count`` planned inspections."""
    work = tmp / "work"
    work.mkdir()
    config = write_config(work, url)
    settings = load_settings(config)
    open_store(settings.staging.path).close()
    return config, settings, plant_inspections(settings, count)


@pytest.mark.slow
def test_killed_during_inspection_load_then_resumed_equals_a_clean_run(tmp_path: Path) -> None:
    app, server = serve()
    try:
        config, settings, planted = planted_workdir(tmp_path, server.url, 20)
        expected = planned_view(planted)
        app.hold_answers = dict.fromkeys(HELD, 0.15)
        rng = random.Random(14)
        env = {**os.environ, **PROCORE_ENV, "PYTHONPATH": str(REPO)}
        kills = 0
        left_sent = 0  # writes a dead process left in flight (sent, outcome not recorded)
        for round_number in range(8):
            child = subprocess.Popen(
                [sys.executable, "-c", CHILD, str(config)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            target = sum(app.call_counts().values()) + (
                3 if round_number == 0 else rng.randint(5, 60)
            )
            deadline = time.monotonic() + 120
            while child.poll() is None and time.monotonic() < deadline:
                if sum(app.call_counts().values()) >= target:
                    os.kill(child.pid, signal.SIGKILL)
                    kills += 1
                    break
                time.sleep(0.001)
            child.wait(60)
            if child.returncode == 0:
                break
            assert child.returncode == -signal.SIGKILL, child.stderr.read() if child.stderr else ""
            time.sleep(0.2)  # let the simulator finish what the dead process started
            left_sent += db_rows(settings, "SELECT COUNT(*) FROM id_map WHERE state = 'sent'")[0][0]
        assert kills >= 4
        assert left_sent >= 2
        app.hold_answers = {}
        result = load_from_settings(settings, PROCORE_ENV)
        assert result.exit_code == 0, db_rows(settings, "SELECT reason FROM quarantine")
        assert procore_view(app) == expected
        assert inspection_states(settings) == {"loaded": 20}
        assert len(app.inspections.company_templates) == 2
        assert len(app.inspections.project_templates) == 2
        before = app.call_counts()
        load_from_settings(settings, PROCORE_ENV)
        assert calls_since(app, before) == ACCESS_CHECK
    finally:
        server.stop()
        app.close()


@pytest.mark.slow
def test_a_create_killed_before_its_answer_leaves_its_uploads_referenced(tmp_path: Path) -> None:
    """kill -9 after Procore made an inspection with its checklist files (upload_ids) and
    before its answer came back: the resumed run finds the inspection, and the uploads it
    consumed are referenced, as after a clean run; no file is in Procore twice."""
    app, server = serve()
    try:
        config, settings, planted = planted_workdir(tmp_path, server.url, 6)
        assert planted[0].list_files  # the first create carries upload_ids
        app.hold_answers = {"lists.create.v1.1": 30.0}
        env = {**os.environ, **PROCORE_ENV, "PYTHONPATH": str(REPO)}
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while not app.inspections_of(PROJECT) and time.monotonic() < deadline:
                assert child.poll() is None, "the run ended before its first create"
                time.sleep(0.01)
        finally:
            child.kill()
            child.wait(30)
        (made,) = app.inspections_of(PROJECT)
        assert sorted(f["name"] for f in made["files"]) == sorted(
            name for name, _ in planned_view(planted)[made["identifier"]]["files"]
        )
        assert db_rows(
            settings,
            "SELECT state FROM id_map WHERE entity = 'inspection' AND source_id = 'cl-00000'",
        ) == [("sent",)]
        app.hold_answers = {}

        result = load_from_settings(settings, PROCORE_ENV)
        assert result.exit_code == 0, db_rows(settings, "SELECT reason FROM quarantine")
        assert procore_view(app) == planned_view(planted)
        list_files = sorted(a for one in planted for a in one.list_files)
        assert db_rows(
            settings,
            "SELECT attachment_id, state FROM uploads ORDER BY attachment_id",
        ) == [(a, "referenced") for a in list_files]
        assert app.call_counts()["lists.create.v1.1"] == len(planted)
    finally:
        server.stop()
        app.close()


def test_checklist_files_a_dead_update_attached_are_found_not_attached_again(
    served: App, tmp_path: Path
) -> None:
    """A run died after Procore applied an update carrying new checklist files (upload_ids)
    and before it recorded them: the next run finds the files on the inspection, marks their
    uploads referenced, and does not send the uploads again (Procore refuses a second use)."""
    settings, planted = prepared(tmp_path, served.url, 6)  # type: ignore[attr-defined]
    load_from_settings(settings, PROCORE_ENV)
    doc_sha = add_file(settings, "att-new-doc", ("Checklist", "cl-00004"), "y")

    def new_file(payload: dict[str, Any], columns: dict[str, Any]) -> None:
        columns["attachment_names"]["att-new-doc"] = "Late scan.png"
        columns["attachment_ids"].append("att-new-doc")

    replan(settings, "cl-00004", new_file)
    assert load_from_settings(settings, PROCORE_ENV).exit_code == 0
    # What the dead run left: Procore holds the file; the staging DB knows nothing of it.
    store = open_store(settings.staging.path)
    with store.transaction():
        store.conn.execute(
            "DELETE FROM id_map WHERE entity = 'inspection_file' AND source_id = 'att-new-doc'"
        )
        store.conn.execute(
            "UPDATE id_map SET payload_hash = 'the plan before the change' "
            "WHERE entity = 'inspection' AND source_id = 'cl-00004'"
        )
        store.conn.execute(
            "UPDATE uploads SET state = 'stored' WHERE attachment_id = 'att-new-doc'"
        )
    store.close()
    uploads_before = served.call_counts()["uploads.create"]

    result = load_from_settings(settings, PROCORE_ENV)
    assert result.exit_code == 0, db_rows(settings, "SELECT reason FROM quarantine")
    assert served.call_counts()["uploads.create"] == uploads_before
    assert procore_view(served)["000004"]["files"].count(("Late scan.png", doc_sha)) == 1
    assert db_rows(settings, "SELECT state FROM uploads WHERE attachment_id = 'att-new-doc'") == [
        ("referenced",)
    ]
    assert inspection_states(settings) == {"loaded": 6}


# -- a generated project, end to end (extract -> transform -> load) ------------------------------


def _expected_from_plan(store: Any, vendors: dict[str, int]) -> dict[str, Any]:
    """What Procore must hold for each planned inspection, read from the planned rows."""
    from migrate.store.planned import (
        attachment_sha256s,
        planned_inspection_rows,
        planned_inspection_templates,
    )
    from migrate.text import procore_name

    templates = {t.source_id: t for t in planned_inspection_templates(store)}
    expected: dict[str, Any] = {}
    for row in planned_inspection_rows(store):
        template = templates[row.template_source_id]
        where = {}
        for s_index, section in enumerate(template.payload["sections"]):
            for i_index, item in enumerate(section["items"]):
                where[item["source_id"]] = (s_index, i_index)
        files = list(row.attachment_ids) + [
            a for item in row.payload["items"] for a in item["attachment_ids"]
        ]
        sha = attachment_sha256s(store, files)

        def named(ids: list[str], row: Any = row, sha: dict[str, str] = sha) -> list[Any]:
            return sorted((procore_name(row.attachment_names[a]), sha[a]) for a in ids)

        items = {}
        for item in row.payload["items"]:
            answer = planned_answer(item["response"])
            if answer is not None or item["comments"] or item["attachment_ids"]:
                items[where[item["template_item_source_id"]]] = {
                    "answer": answer,
                    "comments": [c["body"] for c in item["comments"]],
                    "files": named(item["attachment_ids"]),
                }
        expected[row.source_id] = {
            "identifier": row.identifier,
            "template": template.name,
            "description": row.payload["list"]["description"],
            "inspection_date": row.payload["list"]["inspection_date"],
            "status": row.status,
            "contractor": vendors.get((row.responsible_contractor or "").strip().lower()),
            "files": named(list(row.attachment_ids)),
            "items": items,
        }
    return expected


def _held_in_procore(app: Any, targets: dict[int, str]) -> dict[str, Any]:
    held: dict[str, Any] = {}
    for inspection in app.inspections_of(app.project_id_for_tests):
        source_id = targets[inspection["id"]]
        assert source_id not in held, f"checklist {source_id} is in Procore twice"
        items = {}
        for s_index, section in enumerate(inspection["sections"]):
            for i_index, item in enumerate(section["items"]):
                answer = _answer(item["response"], item["responded_with"])
                if answer is not None or item["comments"] or item["files"]:
                    items[(s_index, i_index)] = {
                        "answer": answer,
                        "comments": item["comments"],
                        "files": sorted((f["name"], f["sha256"]) for f in item["files"]),
                    }
        held[source_id] = {
            "identifier": inspection["identifier"],
            "template": inspection["template"],
            "description": inspection["description"],
            "inspection_date": inspection["inspection_date"],
            "status": inspection["status"],
            "contractor": inspection["responsible_contractor_id"],
            "files": sorted((f["name"], f["sha256"]) for f in inspection["files"]),
            "items": items,
        }
    return held


@pytest.mark.slow
def test_a_generated_project_lands_as_planned_and_a_rerun_writes_nothing(
    tmp_path: Path,
) -> None:
    from migrate.extract import extract_from_settings
    from migrate.mappings import write_default_mappings
    from migrate.sandbox.runner import Sandbox, SandboxOptions
    from migrate.transform import transform_from_settings
    from tests.test_transform_inspections import make_settings

    write_default_mappings(tmp_path / "mappings")
    # Procore's real windows would pace this test to ~80 s; what it proves is what lands.
    with Sandbox(SandboxOptions(procore_options=GENEROUS)) as sandbox:
        settings = make_settings(sandbox, tmp_path)
        env = sandbox.environment()
        extract_from_settings(settings, env)
        transform_from_settings(settings, env)
        result = load_from_settings(settings, env)
        app = sandbox.procore_app
        app.project_id_for_tests = sandbox.procore_project_id  # type: ignore[attr-defined]
        held_back = db_rows(
            settings,
            "SELECT entity, source_id, reason FROM quarantine WHERE released_at IS NULL "
            "AND stage = 'load'",
        )
        assert held_back == [], held_back
        assert result.exit_code in (0, EXIT_QUARANTINED)
        targets = {
            target: source
            for source, target in db_rows(
                settings,
                "SELECT source_id, target_id FROM id_map WHERE entity = 'inspection' "
                "AND state = 'loaded'",
            )
        }
        vendors = {
            str(v["name"]).strip().lower(): vid
            for vid, v in app._vendors.items()
            if sandbox.procore_project_id in v["project_ids"]
        }
        store = open_store(settings.staging.path, read_only=True)
        expected = _expected_from_plan(store, vendors)
        store.close()
        assert len(expected) > 10
        held = _held_in_procore(app, targets)
        assert set(held) == set(expected)
        for source_id, planned in expected.items():
            assert held[source_id] == planned, source_id
        before = app.call_counts()
        again = load_from_settings(settings, env)
        assert calls_since(app, before) == ACCESS_CHECK
        assert again.counts["inspection"]["unchanged"] == len(expected)
