"""Extract of checklists for Procore Inspections (issue 14 point 1), against the Field simulator.

Templates with their typed items (rich content included), the headers' explicit deleted flag
(absence from the listing as the fallback), each checklist's source and tags, every checklist
item joined to its template item, custom field values joined to their definitions, templates
mapped again only when they change, and malformed templates kept as source problems. Ground
truth is the generator's own data or the simulator's answer over HTTP, never the code under
test.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from migrate.extract import extract_from_settings
from migrate.extract.checklists import SAVE_EVERY
from migrate.extract.reference import MOBILE_APP_VERSION
from migrate.sandbox.generator import (
    CHECKLIST_ITEM_TYPES,
    KIND_CF_VALUE,
    RICH_ITEM_TYPES,
    GeneratedProject,
)
from migrate.sandbox.httpbase import Request, Response, json_response
from migrate.settings import load_settings
from tests.test_extract import (
    ENV,
    PASSWORD,
    USER,
    RecordingFieldApp,
    extract,
    serve,
    snapshot,
    write_config,
)
from tests.test_extract_resume import _kill_when, committed

Change = Callable[[Request, Any], Any]


# -- helpers -------------------------------------------------------------------------------------
@contextlib.contextmanager
def rewritten(app: RecordingFieldApp, route_name: str, change: Change) -> Iterator[None]:
    """The simulator answers ``route_name`` with ``change(request, answer)`` instead."""
    route = next(route for route in app.routes if route.name == route_name)
    original = route.handler

    def handler(request: Request) -> Response:
        response = original(request)
        if response.status != 200:
            return response
        assert isinstance(response.body, bytes)
        return json_response(change(request, json.loads(response.body)), response.status)

    route.handler = handler
    try:
        yield
    finally:
        route.handler = original


def served_templates(app: RecordingFieldApp) -> list[dict[str, Any]]:
    """What /api/templates answers a rich-content client, fetched over HTTP."""
    with requests.Session() as http:
        ticket = http.post(
            f"{app.url}/api/login", data={"username": USER, "password": PASSWORD}, timeout=30
        ).json()["ticket"]
        reply = http.post(
            f"{app.url}/api/templates",
            data={
                "ticket": ticket,
                "project_id": app.project.main.id,
                "application_version": MOBILE_APP_VERSION,
            },
            timeout=30,
        )
        http.post(f"{app.url}/api/logout", data={"ticket": ticket}, timeout=30)
    assert reply.status_code == 200
    answer: list[dict[str, Any]] = reply.json()
    return answer


def query(workdir: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(workdir / "staging.db")
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def problems(workdir: Path, run_id: int) -> list[tuple[str, str, str]]:
    return [
        (entity, source_id, reason)
        for entity, source_id, reason in query(
            workdir,
            "SELECT entity, source_id, reason FROM source_problems WHERE run_id = ? ORDER BY id",
            (run_id,),
        )
    ]


def copy_workdir(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def project() -> GeneratedProject:
    # Five checklists: the first four use each template once, the fifth is deleted.
    return GeneratedProject(seed=7, issues=40)


@pytest.fixture(scope="module")
def field(project: GeneratedProject) -> Iterator[RecordingFieldApp]:
    with serve(project) as app:
        yield app


@pytest.fixture
def app(field: RecordingFieldApp) -> RecordingFieldApp:
    field.forget()
    return field


@pytest.fixture(scope="module")
def clean(field: RecordingFieldApp, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A staging dir from one clean run."""
    workdir = tmp_path_factory.mktemp("clean")
    result = extract(field, workdir)
    assert result.completed and result.source_problems == 0
    return workdir


# -- templates -----------------------------------------------------------------------------------
def test_templates_and_their_items_are_staged_as_the_simulator_serves_them(
    app: RecordingFieldApp, clean: Path, project: GeneratedProject
) -> None:
    served = served_templates(app)
    assert {t["id"] for t in served} == {t["id"] for t in project.main.templates}
    staged = {
        row[0]: row[1:]
        for row in query(
            clean,
            "SELECT id, name, checklist_type, created_at, updated_at, content_hash "
            "FROM checklist_templates",
        )
    }
    assert staged.keys() == {t["id"] for t in served}
    expected_items = set()
    for template in served:
        name, checklist_type, created_at, updated_at, digest = staged[template["id"]]
        assert (name, checklist_type, created_at, updated_at) == (
            template["name"],
            template["checklist_type"],
            template["created_at"],
            template["updated_at"],
        )
        assert digest and len(digest) == 64
        for section_position, section in enumerate(template["sections"]):
            for item in section["items"]:
                expected_items.add(
                    (
                        item["id"],
                        template["id"],
                        section_position,
                        section["section_name"],
                        item["position"],
                        item["display_number"],
                        item["question_text"],
                        item["display_type"],
                        tuple(item["possible_values"]),
                    )
                )
    staged_items = {
        (*row[:-1], tuple(json.loads(row[-1])))
        for row in query(
            clean,
            "SELECT id, template_id, section_position, section_name, position, display_number, "
            "question_text, display_type, possible_values FROM checklist_template_items",
        )
    }
    assert staged_items == expected_items
    # Rich content (single- and multi-select items) is there, with its choices.
    rich = {t["id"] for t in project.main.templates if t["rich"]}
    assert rich and rich <= staged.keys()
    choices = {
        display_type: json.loads(values)
        for display_type, values in query(
            clean,
            "SELECT display_type, possible_values FROM checklist_template_items "
            "WHERE display_type IN ('single-select', 'multi-select')",
        )
    }
    assert set(choices) == set(RICH_ITEM_TYPES) and all(choices.values())
    # Every Field item type is among the staged template items.
    shown = {
        shown for (shown,) in query(clean, "SELECT display_type FROM checklist_template_items")
    }
    assert shown == set(CHECKLIST_ITEM_TYPES)


def test_a_rerun_without_change_maps_no_template_again_and_a_changed_one_is_remapped(
    app: RecordingFieldApp, clean: Path, tmp_path: Path, project: GeneratedProject
) -> None:
    workdir = copy_workdir(clean, tmp_path / "rerun")
    before = query(workdir, "SELECT source_id, changed_run FROM raw_checklist_templates")
    result = extract(app, workdir)
    # One call lists every template (there is no cheaper way to see a change); nothing is
    # mapped again and no checklist is fetched again.
    assert app.calls["templates"] == 1 and app.calls["checklist"] == 0
    assert result.counts["checklist_templates"] == {
        "new": 0,
        "changed": 0,
        "unchanged": len(project.main.templates),
        "deleted": 0,
    }
    assert query(workdir, "SELECT source_id, changed_run FROM raw_checklist_templates") == before
    assert result.source_problems == 0

    # The source rewords one question and drops another template's last item.
    reworded = project.main.templates[1]["id"]
    trimmed = project.main.templates[3]
    dropped = trimmed["sections"][-1]["items"][-1]["id"]

    def edit(request: Request, answer: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for template in answer:
            if template["id"] == reworded:
                template["sections"][1]["items"][0]["question_text"] = "Fence intact?"
            if template["id"] == trimmed["id"]:
                template["sections"][-1]["items"].pop()
        return answer

    app.forget()
    with rewritten(app, "templates", edit):
        again = extract(app, workdir)
    assert app.calls["checklist"] == 0
    assert again.counts["checklist_templates"]["changed"] == 2
    assert query(
        workdir,
        "SELECT question_text FROM checklist_template_items WHERE template_id = ? "
        "AND section_position = 1 ORDER BY position LIMIT 1",
        (reworded,),
    ) == [("Fence intact?",)]
    assert query(workdir, "SELECT 1 FROM checklist_template_items WHERE id = ?", (dropped,)) == []
    # The checklist items of the trimmed template are joined again: the one whose template
    # item is gone is kept, unjoined, as a source problem.
    orphans = query(
        workdir,
        "SELECT i.id FROM checklist_items i JOIN checklists c ON c.id = i.checklist_id "
        "WHERE c.template_id = ? AND i.template_item_id IS NULL",
        (trimmed["id"],),
    )
    live_of_trimmed = query(
        workdir,
        "SELECT id FROM checklists WHERE template_id = ? AND deleted = 0",
        (trimmed["id"],),
    )
    assert len(orphans) == len(live_of_trimmed) >= 1
    found = problems(workdir, again.run_id)
    assert {(entity, source_id) for entity, source_id, _ in found} == {
        ("checklist_items", item_id) for (item_id,) in orphans
    }
    assert all("has no item at that position" in reason for *_, reason in found)


def test_a_malformed_template_is_a_source_problem_while_the_others_are_staged(
    app: RecordingFieldApp, tmp_path: Path, project: GeneratedProject
) -> None:
    broken = project.main.templates[1]["id"]
    odd = project.main.templates[2]
    odd_item = odd["sections"][0]["items"][0]["id"]

    def corrupt(request: Request, answer: list[dict[str, Any]]) -> list[Any]:
        for template in answer:
            if template["id"] == broken:
                template["sections"] = "Site, Fall protection"
            if template["id"] == odd["id"]:
                template["sections"][0]["items"][0]["question_text"] = 12345
        return [*answer, "not a template", {"name": "no id"}]

    with rewritten(app, "templates", corrupt):
        result = extract(app, tmp_path)
    assert result.completed
    staged = {
        template_id for (template_id,) in query(tmp_path, "SELECT id FROM checklist_templates")
    }
    assert staged == {t["id"] for t in project.main.templates} - {broken}
    assert query(
        tmp_path, "SELECT question_text FROM checklist_template_items WHERE id = ?", (odd_item,)
    ) == [("12345",)]
    found = problems(tmp_path, result.run_id)
    reasons = "\n".join(reason for *_, reason in found)
    assert ("checklist_templates", broken) in {(e, s) for e, s, _ in found}
    assert "sections should be a list, got text; template not staged" in reasons
    assert "checklist_templates record is text, not an object; skipped" in reasons
    assert "checklist_templates record has no id" in reasons
    assert f"checklist_template_items {odd_item}: question_text should be text" in reasons
    # The checklists of the broken template keep every item, unjoined, with one problem each.
    of_broken = query(
        tmp_path, "SELECT id FROM checklists WHERE template_id = ? AND deleted = 0", (broken,)
    )
    assert of_broken
    for (checklist_id,) in of_broken:
        assert query(
            tmp_path,
            "SELECT count(*), count(template_item_id) FROM checklist_items WHERE checklist_id = ?",
            (checklist_id,),
        ) == [(sum(len(s["items"]) for s in project.main.templates[1]["sections"]), 0)]
        assert ("checklists", checklist_id) in {(e, s) for e, s, _ in found}
    # Every other item is joined.
    assert query(
        tmp_path,
        "SELECT count(*) FROM checklist_items i JOIN checklists c ON c.id = i.checklist_id "
        "WHERE c.template_id <> ? AND i.template_item_id IS NULL",
        (broken,),
    ) == [(0,)]


# -- checklist items, custom fields ----------------------------------------------------------------
def test_every_checklist_item_is_joined_to_its_template_item(
    clean: Path, project: GeneratedProject
) -> None:
    main = project.main
    expected: dict[str, str] = {}
    for checklist in main.iter_checklists():
        if checklist["deleted"]:
            continue
        template = next(t for t in main.templates if t["id"] == checklist["template"]["id"])
        template_items = [item for section in template["sections"] for item in section["items"]]
        items = [item for section in checklist["sections"] for item in section["items"]]
        assert len(items) == len(template_items)
        expected.update(
            (item["id"], template_item["id"])
            for item, template_item in zip(items, template_items, strict=True)
        )
    staged = dict(query(clean, "SELECT id, template_item_id FROM checklist_items"))
    assert staged == expected


def test_custom_field_values_carry_their_definition_and_signatures_their_field(
    clean: Path, project: GeneratedProject
) -> None:
    main = project.main
    expected: dict[tuple[str, str], tuple[str, str]] = {}
    signature_fields: dict[str, str] = {}
    for checklist in main.iter_checklists():
        if checklist["deleted"]:
            continue
        for value in checklist["custom_field_values"]:
            # The generator names each value after its definition's position in the catalogue.
            position = next(
                n
                for n in range(len(main.custom_fields))
                if main.make_id(KIND_CF_VALUE, n, checklist["index"]) == value["id"]
            )
            definition = main.custom_fields[position]
            expected[(checklist["id"], value["id"])] = (
                definition["custom_field_id"],
                definition["name"],
            )
            if value["display_type"] == "signature" and value["value"]:
                signature_fields[value["value"]] = definition["custom_field_id"]
    assert expected and signature_fields
    staged = {
        (checklist_id, value_id): (definition_id, name)
        for checklist_id, value_id, definition_id, name in query(
            clean,
            "SELECT checklist_id, custom_field_id, definition_id, name "
            "FROM checklist_custom_field_values",
        )
    }
    assert staged == expected
    signed = dict(
        query(
            clean,
            "SELECT id, custom_field_id FROM attachments WHERE kind = 'Signature' "
            "AND container_type <> 'Issue' AND custom_field_id IS NOT NULL",
        )
    )
    assert signed == signature_fields


def test_changed_definitions_are_joined_again_without_fetching_a_checklist(
    app: RecordingFieldApp, clean: Path, tmp_path: Path, project: GeneratedProject
) -> None:
    main = project.main
    renamed = next(
        d
        for d in main.custom_fields
        if d["container_type"] == "Checklist" and d["container_id"] == main.templates[0]["id"]
    )
    dropped = next(
        d
        for d in main.custom_fields
        if d["container_type"] == "Checklist" and d["container_id"] == main.templates[1]["id"]
    )

    def edit(request: Request, answer: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for definition in answer:
            if definition["custom_field_id"] == renamed["custom_field_id"]:
                definition["name"] = "Inspector on site"
        return [d for d in answer if d["custom_field_id"] != dropped["custom_field_id"]]

    workdir = copy_workdir(clean, tmp_path / "rerun")
    with rewritten(app, "custom_fields", edit):
        result = extract(app, workdir)
    assert app.calls["checklist"] == 0
    assert {
        name
        for (name,) in query(
            workdir,
            "SELECT name FROM checklist_custom_field_values WHERE definition_id = ?",
            (renamed["custom_field_id"],),
        )
    } == {"Inspector on site"}
    # Template 1 now defines fewer fields than its checklists have values: the order proves
    # nothing, so none is joined, each such checklist is a problem, and every value is kept.
    of_template = [
        checklist_id
        for (checklist_id,) in query(
            workdir,
            "SELECT id FROM checklists WHERE template_id = ? AND deleted = 0",
            (main.templates[1]["id"],),
        )
    ]
    assert of_template
    values = query(
        workdir,
        "SELECT count(*), count(definition_id) FROM checklist_custom_field_values "
        f"WHERE checklist_id IN ({', '.join('?' * len(of_template))})",
        tuple(of_template),
    )
    assert values[0][0] > 0 and values[0][1] == 0
    found = problems(workdir, result.run_id)
    assert {source_id for entity, source_id, _ in found if "none is joined" in _} == set(
        of_template
    )
    # Everything else is as a clean run left it.
    assert query(
        workdir, "SELECT count(*) FROM checklist_items WHERE template_item_id IS NULL"
    ) == [(0,)]


# -- headers: deleted flags, tags; sources ----------------------------------------------------
def test_sources_tags_and_checklists_deleted_before_any_extract(
    clean: Path, project: GeneratedProject
) -> None:
    main = project.main
    checklists = list(main.iter_checklists())
    staged = {
        row[0]: row[1:]
        for row in query(
            clean, "SELECT id, source_type, source_id, source_name, tags, deleted FROM checklists"
        )
    }
    assert staged.keys() == {c["id"] for c in checklists}
    for checklist in checklists:
        source = checklist["source"]
        tags = [tag for tag in checklist["tags"].split(",") if tag]
        expected = (
            (None, None, None)
            if checklist["deleted"]
            else (source.get("type"), source.get("id"), source.get("name"))
        )
        assert staged[checklist["id"]] == (*expected, json.dumps(tags), int(checklist["deleted"]))
    assert {c["source"].get("type") for c in checklists if not c["deleted"]} >= {
        "Task",
        "Equipment",
    }
    # A checklist deleted before the first extract is on record from its header, without items.
    deleted = [c for c in checklists if c["deleted"]]
    assert deleted
    for checklist in deleted:
        assert query(
            clean,
            "SELECT identifier, name, template_id FROM checklists WHERE id = ?",
            (checklist["id"],),
        ) == [(checklist["identifier"], checklist["name"], checklist["template"]["id"])]
        assert query(
            clean, "SELECT count(*) FROM checklist_items WHERE checklist_id = ?", (checklist["id"],)
        ) == [(0,)]


def test_deletion_follows_the_header_flag_and_absence_only_where_headers_are_silent(
    app: RecordingFieldApp, clean: Path, tmp_path: Path, project: GeneratedProject
) -> None:
    live = [c["id"] for c in project.main.iter_checklists() if not c["deleted"]]
    flagged, silent, kept, retagged = live[:4]

    def headers(request: Request, answer: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for header in answer:
            checklist_id = header["completed_checklist_id"]
            if checklist_id == flagged:
                header["deleted"] = True  # ... though the listing still lists it
            if checklist_id == silent:
                del header["deleted"]  # says nothing: the listing's absence decides
            if checklist_id == retagged:
                header["tags"] = "punch, level-3"
        return answer

    def listing(request: Request, answer: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [row for row in answer if row["id"] not in (silent, kept)]

    workdir = copy_workdir(clean, tmp_path / "rerun")
    with rewritten(app, "checklist_headers", headers), rewritten(app, "checklists", listing):
        result = extract(app, workdir)
    assert result.completed and result.source_problems == 0
    flags = dict(query(workdir, "SELECT id, deleted FROM checklists"))
    assert (flags[flagged], flags[silent], flags[kept], flags[retagged]) == (1, 1, 0, 0)
    assert result.counts["checklists"]["deleted"] == 2
    assert app.asked_for("checklist") == []  # a checklist its header deletes is not fetched
    assert query(workdir, "SELECT tags FROM checklists WHERE id = ?", (retagged,)) == [
        ('["punch", "level-3"]',)
    ]


# -- the sandbox: a demo-sized project holds every case (issue 14 point 5) ---------------------
def test_a_demo_sized_project_stages_every_checklist_case(tmp_path: Path) -> None:
    from migrate.cli import main as cli

    demo = next(command for name, command in cli.commands.items() if name == "demo")
    defaults: dict[str | None, Any] = {param.name: param.default for param in demo.params}
    project = GeneratedProject(seed=int(defaults["seed"]), issues=int(defaults["issues"]))
    with serve(project) as app:
        result = extract(app, tmp_path)
    assert result.completed and result.source_problems == 0

    def one(sql: str) -> Any:
        return query(tmp_path, sql)[0][0]

    live = "checklist_id IN (SELECT id FROM checklists WHERE deleted = 0)"
    shown = {
        shown
        for (shown,) in query(tmp_path, f"SELECT display_type FROM checklist_items WHERE {live}")
    }
    assert shown == set(CHECKLIST_ITEM_TYPES)
    assert (
        one(f"SELECT count(*) FROM checklist_items WHERE {live} AND template_item_id IS NULL") == 0
    )
    assert one(
        "SELECT count(*) FROM attachments a JOIN checklist_items i ON i.response = a.id "
        "WHERE a.kind = 'Signature' AND i.display_type = 'signature'"
    )
    assert one(
        "SELECT count(*) FROM attachments WHERE kind = 'Signature' AND custom_field_id IS NOT NULL"
    )
    for container in ("Checklist", "ChecklistItem"):
        assert one(
            f"SELECT count(*) FROM attachments WHERE kind = 'Attachment' "
            f"AND container_type = '{container}'"
        )
    assert one("SELECT count(*) FROM comments WHERE container_type = 'Checklist'")
    assert one(
        f"SELECT count(*) FROM checklist_items WHERE {live} "
        "AND json_array_length(linked_issue_ids) > 0"
    )
    assert one(
        f"SELECT count(*) FROM checklist_items WHERE {live} AND is_conforming = 'No' "
        "AND json_array_length(linked_issue_ids) = 0"
    )
    assert one("SELECT count(*) FROM checklists WHERE deleted = 1")
    assert {kind for (kind,) in query(tmp_path, "SELECT DISTINCT source_type FROM checklists")} >= {
        "Task",
        "Equipment",
    }
    assert one("SELECT count(*) FROM checklist_custom_field_values WHERE name IS NOT NULL")


# -- kill -9 in the checklist phase, then resume ---------------------------------------------------
@pytest.mark.slow
def test_kill_9_mid_headers_and_details_then_resume_gives_a_clean_runs_db(tmp_path: Path) -> None:
    project = GeneratedProject(seed=7, issues=400)  # 50 checklists: 3 header pages of 20
    with serve(project) as app:
        line = f'project_id = "{project.main.id}"'
        reference = write_config(tmp_path / "reference", app.url, project_line=line, page_size=20)
        extract_from_settings(load_settings(reference, env={}), ENV)
        app.forget()
        workdir = tmp_path / "killed"
        config = write_config(workdir, app.url, project_line=line, page_size=20)
        headers = (
            "SELECT position FROM cursors WHERE endpoint = 'extract:checklists:headers' "
            "AND position > 0"
        )
        _kill_when(app, config, "checklist_headers", 2, ready=lambda: committed(workdir, headers))
        cursor = query(
            workdir,
            "SELECT position, state FROM cursors WHERE endpoint = ?",
            ("extract:checklists:headers",),
        )
        assert cursor and 0 < cursor[0][0] < 50 and '"done": false' in cursor[0][1]
        assert query(workdir, "SELECT count(*) FROM raw_checklist_details") == [(0,)]

        details = f"SELECT count(*) >= {SAVE_EVERY} FROM raw_checklist_details"
        _kill_when(
            app, config, "checklist", SAVE_EVERY + 5, ready=lambda: committed(workdir, details)
        )
        saved = query(workdir, "SELECT count(*) FROM raw_checklist_details")[0][0]
        assert SAVE_EVERY <= saved < 50

        result = extract_from_settings(load_settings(config, env={}), ENV)
    assert result.completed and result.pass_run_id < result.run_id
    assert snapshot(workdir / "staging.db") == snapshot(tmp_path / "reference" / "staging.db")
    # Only details in flight or fetched but not yet stored at the kill were fetched again.
    fetched = Counter(app.asked_for("checklist"))
    assert max(fetched.values()) <= 2
    assert sum(1 for n in fetched.values() if n == 2) <= SAVE_EVERY
    assert query(
        workdir,
        "SELECT count(*) FROM checklist_items i JOIN checklists c ON c.id = i.checklist_id "
        "WHERE c.deleted = 0 AND i.template_item_id IS NULL",
    ) == [(0,)]
