"""Transform of checklists into planned Procore inspections (issue 14 points 2 and 3).

A generated sandbox project is extracted over HTTP and transformed; the planned templates and
inspections are checked against the generator's own records (the ground truth), never against
the code under test. Failure paths change what the Field simulator serves, or the mapping
files, and check what was planned, quarantined and kept.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from migrate.extract import extract_from_settings
from migrate.mappings import DEFAULT_FILES, MappingError, load_mappings, write_default_mappings
from migrate.results import TransformResult
from migrate.sandbox.generator import CHECKLIST_ITEM_TYPES, GeneratedProject
from migrate.sandbox.httpbase import Request
from migrate.sandbox.runner import Sandbox
from migrate.settings import (
    MappingsSettings,
    Settings,
    SourceSettings,
    StagingSettings,
    TargetSettings,
    TransformSettings,
)
from migrate.store import Store, open_store
from migrate.store.planned import (
    PlannedInspection,
    inspection_payload_hash,
    planned_inspection_counts,
    planned_inspection_rows,
    planned_inspection_templates,
)
from migrate.transform import plan_hash, transform_from_settings
from migrate.transform.inspections import DISPLAY_TYPES
from tests.test_extract_checklists import rewritten

PLUS_MINUS_STATUS = {
    "+": "conforming",
    "-": "non_conforming",
    "Yes": "conforming",
    "No": "non_conforming",
    "N/A": "not_applicable",
}


class Pipeline:
    def __init__(self, sandbox: Sandbox, settings: Settings, result: TransformResult) -> None:
        self.sandbox = sandbox
        self.settings = settings
        self.result = result

    @property
    def project(self) -> GeneratedProject:
        return self.sandbox.project.main  # type: ignore[no-any-return]

    def store(self) -> Store:
        return open_store(self.settings.staging.path)


def make_settings(sandbox: Sandbox, work: Path, **transform: Any) -> Settings:
    return Settings(
        source=SourceSettings(base_url=sandbox.field_url, project_id=sandbox.field_project_id),
        target=TargetSettings(
            base_url=sandbox.procore_url,
            auth_url=sandbox.procore_url,
            company_id=sandbox.procore_company_id,
            project_id=sandbox.procore_project_id,
        ),
        staging=StagingSettings(path=work / "staging.db", blobs=work / "blobs", logs=work / "logs"),
        mappings=MappingsSettings(dir=work / "mappings"),
        transform=TransformSettings(**transform),
    )


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    work = tmp_path_factory.mktemp("inspections")
    write_default_mappings(work / "mappings")
    with Sandbox() as sandbox:
        settings = make_settings(sandbox, work)
        extract_from_settings(settings, sandbox.environment())
        result = transform_from_settings(settings, sandbox.environment())
        yield Pipeline(sandbox, settings, result)


def copy_of(pipeline: Pipeline, target: Path, **transform: Any) -> Settings:
    """The pipeline's staging (and mappings) copied to `target`, settings pointing there."""
    source = pipeline.settings.staging.path.parent
    shutil.copytree(source, target)
    settings = make_settings(pipeline.sandbox, target, **transform)
    return settings


def offline(settings: Settings) -> TransformResult:
    return transform_from_settings(settings, {}, offline=True)


def rows_by_id(store: Store) -> dict[str, PlannedInspection]:
    return {row.source_id: row for row in planned_inspection_rows(store)}


def template_items(store: Store) -> dict[str, dict[str, Any]]:
    return {
        item["source_id"]: item
        for template in planned_inspection_templates(store)
        for section in template.payload["sections"]
        for item in section["items"]
    }


def dump(store: Store, table: str, where: str = "1") -> list[tuple[Any, ...]]:
    return store.conn.execute(f"SELECT * FROM {table} WHERE {where} ORDER BY 1, 2").fetchall()


def field_items(checklist: dict[str, Any]) -> list[dict[str, Any]]:
    return [item for section in checklist["sections"] for item in section["items"]]


# -- the plan ------------------------------------------------------------------------------------


def test_every_checklist_is_planned_skipped_or_quarantined(pipeline: Pipeline) -> None:
    project = pipeline.project
    checklists = [project.checklist(i) for i in range(project.checklist_count)]
    deleted = {c["id"] for c in checklists if c["deleted"]}
    live = {c["id"] for c in checklists if not c["deleted"]}
    counts = pipeline.result.counts["checklists"]
    assert counts["extracted"] == len(checklists)
    assert counts["skipped"] == len(deleted) > 0
    assert counts["quarantined"] == 0 and counts["planned"] == len(live)
    assert pipeline.result.counts["checklist_templates"]["planned"] == len(project.templates)
    with pipeline.store() as store:
        planned = rows_by_id(store)
        assert set(planned) == live
        skipped = dict(
            store.conn.execute(
                "SELECT source_id, reason FROM skipped_records WHERE entity = 'checklist'"
            ).fetchall()
        )
        assert skipped == {checklist_id: "deleted at source" for checklist_id in deleted}
        assert planned_inspection_counts(store) == {
            "templates": len(project.templates),
            "inspections": len(live),
            "items": sum(len(field_items(c)) for c in checklists if not c["deleted"]),
        }
        for checklist in checklists:
            if checklist["deleted"]:
                continue
            row = planned[checklist["id"]]
            assert row.template_source_id == checklist["template"]["id"]
            assert row.identifier == checklist["identifier"]
            assert (
                row.status
                == {"Open": "open", "In Progress": "open", "Closed": "closed"}[checklist["status"]]
            )
            assert row.location_source_id is None  # Field checklists have no area
            assert row.responsible_contractor == checklist["company"]["name"]
            listed = row.payload["list"]
            assert listed["inspection_date"] == checklist["created_at"][:10]
            description = listed["description"]
            # The company name stays in the text whatever load finds among the vendors.
            assert f"Responsible company: {checklist['company']['name']}" in description
            assert f"Created: {checklist['created_at']} by {checklist['created_by']}" in description
            for comment in checklist["comments"]:
                assert f"{comment['created_at']} {comment['created_by']}:" in description
            if checklist["priority"]:
                assert f"Priority: {checklist['priority']}" in description
            if checklist["phase"]:
                assert f"Phase: {checklist['phase']}" in description
            if checklist["source"]:
                assert checklist["source"]["type"] in description
                assert checklist["source"]["name"] in description
            for tag in filter(None, checklist["tags"].split(",")):
                assert tag in description
            assert [item["source_id"] for item in row.payload["items"]] == [
                item["id"] for item in field_items(checklist)
            ]


def test_templates_use_every_procore_item_type(pipeline: Pipeline) -> None:
    project = pipeline.project
    with pipeline.store() as store:
        templates = {t.source_id: t for t in planned_inspection_templates(store)}
        items = template_items(store)
    for template in project.templates:
        planned = templates[template["id"]]
        assert planned.name == template["name"]
        assert planned.inspection_type == template["checklist_type"]  # the default: * keeps it
        field = [i for section in template["sections"] for i in section["items"]]
        assert [i["source_id"] for s in planned.payload["sections"] for i in s["items"]] == [
            i["id"] for i in field
        ]
    types = {item["type"] for item in items.values()}
    assert types == {"default", "multiple_choice", "text", "number", "date", "signature"}
    for template in project.templates:
        for section in template["sections"]:
            for field_item in section["items"]:
                planned_item = items[field_item["id"]]
                shown, values = field_item["display_type"], field_item["possible_values"]
                expected = {
                    "numeric": "number",
                    "date": "date",
                    "signature": "signature",
                    "text": "text",
                    "multi-select": "text",
                    "group_start": "text",
                    "checkbox": "multiple_choice",
                    "single-select": "multiple_choice",
                    "drop-down": "default",
                }[shown]
                assert planned_item["type"] == expected, field_item
                if expected == "multiple_choice":
                    names = [r["name"] for r in planned_item["response_set"]["responses"]]
                    assert names == (values or ["Checked", "Not checked"])
                else:
                    assert planned_item["response_set"] is None


def test_every_answer_lands_in_its_item(pipeline: Pipeline) -> None:
    """Each Field item type's answer, checked against the generator's record."""
    project = pipeline.project
    seen: set[str] = set()
    with pipeline.store() as store:
        planned = rows_by_id(store)
        items = template_items(store)
    for index in range(project.checklist_count):
        checklist = project.checklist(index)
        if checklist["deleted"]:
            continue
        row = planned[checklist["id"]]
        by_id = {item["source_id"]: item for item in row.payload["items"]}
        for field_item in field_items(checklist):
            shown, answer = field_item["display_type"], field_item["response"]
            seen.add(shown)
            item = by_id[field_item["id"]]
            response = item["response"]
            comments = {c["key"]: c["body"] for c in item["comments"]}
            assert "question" not in comments  # the template reads as the checklist does
            if field_item["comment"]:
                assert comments["comment"] == field_item["comment"]
            if field_item["spec_ref"]:
                assert comments["spec_ref"] == f"Spec reference: {field_item['spec_ref']}"
            assert item["attachment_ids"] == sorted(
                a["id"] for a in field_item["attachments"] if a["type"] != "UriReference"
            )
            if shown == "drop-down":
                assert response == {"status": PLUS_MINUS_STATUS[answer]}
            elif shown == "single-select":
                assert response == {"response_option": answer}
                set_ = items[item["template_item_source_id"]]["response_set"]
                status = {r["name"]: r["corresponding_status"] for r in set_["responses"]}
                assert status[answer] == field_item["is_conforming"].lower()
            elif shown == "multi-select":
                assert response == {"text_value": answer.replace("|", "; ")}
                said = "non-conforming" if field_item["is_conforming"] == "No" else "conforming"
                assert comments["conforming"] == f"BIM 360 Field marked this answer {said}."
            elif shown == "text":
                assert response == ({"text_value": answer} if answer else None)
            elif shown == "numeric":
                if Decimal(answer) == int(Decimal(answer)):
                    assert response == {"number_value": int(Decimal(answer))}
                else:  # not rounded: the exact value is in a comment
                    assert response is None and answer in comments["response"]
            elif shown == "date":
                month, day, year = answer.split("/")
                assert response == {"date_value": f"{year}-{month}-{day}"}
            elif shown == "checkbox":
                assert response == {"response_option": {"1": "Checked", "0": "Not checked"}[answer]}
            elif shown == "signature":
                assert response is None
                if answer:
                    name = f"{field_item['question_text']}.png"
                    assert row.attachment_names[answer] == name
                    assert answer in row.attachment_ids
                    assert name in comments["signature"]
                    # Field's signature records name no signer or time: the item's stamp instead.
                    assert (
                        "records no signer or time for the signature itself"
                        in (comments["signature"])
                    )
                    assert field_item["created_by"] in comments["signature"]
            elif shown == "group_start":
                assert response is None
    # The transform knows every display type the simulator serves (and seed 003 lists).
    assert seen == set(CHECKLIST_ITEM_TYPES) == set(DISPLAY_TYPES)


def test_files_signatures_and_their_names(pipeline: Pipeline) -> None:
    project = pipeline.project
    with pipeline.store() as store:
        planned = rows_by_id(store)
        definitions = {d["custom_field_id"]: d["name"] for d in project.custom_fields}
        shas = dict(store.conn.execute("SELECT id, sha256 FROM attachments").fetchall())
        for index in range(project.checklist_count):
            checklist = project.checklist(index)
            if checklist["deleted"]:
                continue
            row = planned[checklist["id"]]
            files = sorted(a["id"] for a in checklist["attachments"] if a["type"] != "UriReference")
            signatures = {s["id"] for s in checklist["signatures"]}
            assert row.attachment_ids[: len(files)] == tuple(files)
            assert set(row.attachment_ids[len(files) :]) == signatures
            item_files = [a for i in field_items(checklist) for a in i["attachments"]]
            for attachment in checklist["attachments"] + item_files:
                if attachment["type"] == "Attachment":
                    assert row.attachment_names[attachment["id"]] == attachment["name"]
                elif attachment["type"] == "UriReference":
                    assert attachment["id"] not in row.attachment_names
                    assert attachment["path"] in row.payload["list"]["description"]
            for value in checklist["custom_field_values"]:
                if value["display_type"] == "signature" and value["value"]:
                    names = {row.attachment_names[value["value"]]}
                    assert names <= {f"{name}.png" for name in definitions.values()}
            # One hash formula: the stored hash is inspection_payload_hash of the row.
            sha256s = [shas[i] for i in row.attachment_ids] + [
                shas[i] for item in row.payload["items"] for i in item["attachment_ids"]
            ]
            assert row.payload_hash == inspection_payload_hash(
                row.payload,
                template_source_id=row.template_source_id,
                status=row.status,
                responsible_contractor=row.responsible_contractor,
                location_source_id=row.location_source_id,
                attachment_ids=row.attachment_ids,
                attachment_names=row.attachment_names,
                attachment_sha256s=sha256s,
            )


def test_linked_issues_are_named_both_ways(pipeline: Pipeline) -> None:
    project = pipeline.project
    issue_index = {project.issue_id(i): i for i in range(project.issue_count)}
    links = 0
    with pipeline.store() as store:
        planned = rows_by_id(store)
        descriptions = {
            source_id: json.loads(payload)["description"]
            for source_id, payload in store.conn.execute(
                "SELECT source_id, payload FROM planned_issues WHERE source_kind = 'issue'"
            )
        }
        as_issues = store.conn.execute(
            "SELECT COUNT(*) FROM planned_issues WHERE source_kind = 'checklist_item'"
        ).fetchone()[0]
    assert as_issues == 0  # checklist_items_as_issues is off by default
    for index in range(project.checklist_count):
        checklist = project.checklist(index)
        if checklist["deleted"]:
            continue
        items = {i["source_id"]: i for i in planned[checklist["id"]].payload["items"]}
        for field_item in field_items(checklist):
            for linked in field_item["issues"]:
                links += 1
                comments = {c["key"]: c["body"] for c in items[field_item["id"]]["comments"]}
                identifier = project.issue(issue_index[linked["id"]])["fields"]["f--identifier"]
                assert identifier in comments[f"issue:{linked['id']}"]
                if linked["id"] in descriptions:
                    footer = descriptions[linked["id"]]
                    assert "Raised from inspection items:" in footer
                    assert (
                        f"Inspection {checklist['identifier']} ({checklist['name']}), item "
                        f"{field_item['display_number']} {field_item['question_text']}" in footer
                    )
    assert links


def test_items_as_issues_stay_inspection_items(pipeline: Pipeline, tmp_path: Path) -> None:
    settings = copy_of(pipeline, tmp_path / "both", checklist_items_as_issues=True)
    result = offline(settings)
    with open_store(settings.staging.path) as store:
        as_issues = {
            source_id.removeprefix("checklist_item:")
            for (source_id,) in store.conn.execute(
                "SELECT source_id FROM planned_issues WHERE source_kind = 'checklist_item'"
            )
        }
        items = {
            item["source_id"]: item
            for row in planned_inspection_rows(store)
            for item in row.payload["items"]
        }
    assert as_issues and result.counts["checklists"]["planned"] > 0
    for item_id in as_issues:
        assert "as_issue" in {c["key"] for c in items[item_id]["comments"]}
        assert not [c for c in items[item_id]["comments"] if c["key"].startswith("issue:")]


# -- idempotence and the switch ------------------------------------------------------------------


def test_a_rerun_leaves_identical_rows_and_hash(pipeline: Pipeline, tmp_path: Path) -> None:
    settings = copy_of(pipeline, tmp_path / "again")
    with open_store(settings.staging.path) as store:
        before = {
            t: dump(store, t) for t in ("planned_inspection_templates", "planned_inspections")
        }
        skipped = dump(store, "skipped_records", "entity = 'checklist'")
    again = offline(settings)
    assert again.plan_hash == pipeline.result.plan_hash
    with open_store(settings.staging.path) as store:
        assert plan_hash(store) == again.plan_hash
        for table, rows in before.items():
            assert dump(store, table) == rows  # plan_run included: nothing was rewritten
        assert dump(store, "skipped_records", "entity = 'checklist'") == skipped


def test_switched_off_plans_no_inspection_then_on_again(pipeline: Pipeline, tmp_path: Path) -> None:
    settings = copy_of(pipeline, tmp_path / "off", checklists_as_inspections=False)
    off = offline(settings)
    assert "checklists" not in off.counts
    with open_store(settings.staging.path) as store:
        assert planned_inspection_counts(store) == {"templates": 0, "inspections": 0, "items": 0}
        assert not store.conn.execute(
            "SELECT 1 FROM skipped_records WHERE entity = 'checklist'"
        ).fetchall()
        assert not store.conn.execute(
            "SELECT 1 FROM planned_issues WHERE payload LIKE '%Raised from inspection items%'"
        ).fetchall()
    on = offline(replace(settings, transform=TransformSettings()))
    assert on.plan_hash == pipeline.result.plan_hash


# -- quarantine ----------------------------------------------------------------------------------


def test_unmapped_type_and_status_are_quarantined_then_released(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    settings = copy_of(pipeline, tmp_path / "unmapped")
    mappings = settings.mappings.dir
    (mappings / "inspection_types.csv").write_text(
        "field_checklist_type,procore_inspection_type\nQA/QC,Quality\n", encoding="utf-8"
    )
    (mappings / "inspection_statuses.csv").write_text(
        "field_status,procore_status\nOpen,open\nClosed,closed\n", encoding="utf-8"
    )
    result = offline(settings)
    project = pipeline.project
    with open_store(settings.staging.path) as store:
        held = {
            (entity, source_id): (reason, hint)
            for entity, source_id, reason, hint in store.conn.execute(
                "SELECT entity, source_id, reason, hint FROM quarantine "
                "WHERE released_at IS NULL AND entity IN ('checklist', 'checklist_template')"
            )
        }
        planned = rows_by_id(store)
        templates = {t.source_id: t for t in planned_inspection_templates(store)}
    for template in project.templates:
        key = ("checklist_template", template["id"])
        if template["checklist_type"] == "QA/QC":
            assert templates[template["id"]].inspection_type == "Quality"
            assert key not in held
        else:
            reason, hint = held[key]
            assert f"unmapped checklist type '{template['checklist_type']}'" in reason
            assert "inspection_types.csv" in hint
    for index in range(project.checklist_count):
        checklist = project.checklist(index)
        if checklist["deleted"]:
            continue
        key = ("checklist", checklist["id"])
        qa = checklist["checklist_type"] == "QA/QC"
        if qa and checklist["status"] != "In Progress":
            assert checklist["id"] in planned and key not in held
            continue
        reason, hint = held[key]
        if checklist["status"] == "In Progress":
            assert "unmapped checklist status 'In Progress'" in reason
            assert "inspection_statuses.csv" in hint
        if not qa:
            assert "is quarantined" in reason and "inspection_types.csv" in hint
    assert result.counts["checklists"]["quarantined"] == len(
        [k for k in held if k[0] == "checklist"]
    )
    # The mappings fixed: everything is released and the plan is the clean run's.
    for name in ("inspection_types.csv", "inspection_statuses.csv"):
        (mappings / name).write_text(DEFAULT_FILES[name], encoding="utf-8")
    fixed = offline(settings)
    assert fixed.counts["checklists"]["released"] == result.counts["checklists"]["quarantined"]
    assert fixed.plan_hash == pipeline.result.plan_hash


@contextlib.contextmanager
def field_change(sandbox: Sandbox, route: str, change: Any) -> Iterator[None]:
    with rewritten(sandbox.field_app, route, change):  # type: ignore[arg-type]
        yield


def test_unknown_display_types_are_quarantined_with_a_hint(tmp_path: Path) -> None:
    """A template item and a checklist item of a display type Field may add one day."""
    write_default_mappings(tmp_path / "mappings")
    with Sandbox() as sandbox:
        project = sandbox.project.main
        first, second = project.templates[0], project.templates[1]
        odd_template_item = first["sections"][0]["items"][0]["id"]
        odd_checklist = project.checklist(1)  # uses the second template
        odd_item = field_items(odd_checklist)[0]["id"]
        edited = project.checklist(2)  # its template's first question was edited since
        edited_item = field_items(edited)[0]
        edited_template_item = project.templates[2]["sections"][0]["items"][0]["id"]

        def templates(request: Request, answer: list[dict[str, Any]]) -> list[dict[str, Any]]:
            for template in answer:
                for section in template["sections"]:
                    for item in section["items"]:
                        if item["id"] == odd_template_item:
                            item["display_type"] = "slider"
                        if item["id"] == edited_template_item:
                            item["question_text"] = "Forms clean, oiled and inspected"
            return answer

        def checklist(request: Request, answer: dict[str, Any]) -> dict[str, Any]:
            for section in answer["sections"]:
                for item in section["items"]:
                    if item["id"] == odd_item:
                        item["display_type"] = "slider"
            return answer

        settings = make_settings(sandbox, tmp_path)
        with (
            field_change(sandbox, "templates", templates),
            field_change(sandbox, "checklist", checklist),
        ):
            extract_from_settings(settings, sandbox.environment())
        result = transform_from_settings(settings, sandbox.environment())
    with open_store(settings.staging.path) as store:
        held = {
            (entity, source_id): (reason, hint)
            for entity, source_id, reason, hint in store.conn.execute(
                "SELECT entity, source_id, reason, hint FROM quarantine "
                "WHERE released_at IS NULL AND entity IN ('checklist', 'checklist_template')"
            )
        }
        planned = rows_by_id(store)
    reason, hint = held[("checklist_template", first["id"])]
    assert "display type 'slider'" in reason and odd_template_item in reason
    assert "drop-down" in hint and "report the new type" in hint
    reason, hint = held[("checklist", odd_checklist["id"])]
    assert "display type 'slider'" in reason
    for index in range(project.checklist_count):
        checklist = project.checklist(index)
        if checklist["deleted"]:
            continue
        if checklist["template"]["id"] == first["id"]:
            reason, _hint = held[("checklist", checklist["id"])]
            assert f"its template {first['id']} is quarantined" in reason
        elif checklist["id"] != odd_checklist["id"]:
            assert checklist["id"] in planned  # the run went on
    assert second["id"] != first["id"]
    comments = {
        c["key"]: c["body"]
        for item in planned[edited["id"]].payload["items"]
        if item["source_id"] == edited_item["id"]
        for c in item["comments"]
    }
    assert comments["question"] == (
        "In this BIM 360 Field checklist the item reads: "
        f"{edited_item['display_number']} {edited_item['question_text']} (section Formwork)"
    )
    assert result.counts["checklist_templates"]["quarantined"] == 1


# -- the mapping files ---------------------------------------------------------------------------


def test_inspection_mapping_files_are_validated_and_default_when_absent(tmp_path: Path) -> None:
    folder = tmp_path / "mappings"
    write_default_mappings(folder)
    for name in ("inspection_types.csv", "inspection_statuses.csv", "responses.csv"):
        (folder / name).unlink()
    # A folder written before issue 14 plans with the defaults.
    absent = load_mappings(folder)
    assert absent.inspection_type_for("Safety").value == "Safety"
    assert absent.inspection_type_for("").value == "Inspection"
    assert absent.inspection_status_for("closed").value == "closed"
    assert absent.response_status_for(" n/a ") == "n/a"
    assert absent.response_status_for("Maybe") is None

    (folder / "inspection_types.csv").write_text(
        "field_checklist_type,procore_inspection_type\n,*\nSafety,\nQA/QC,Quality\nqa/qc,QC\n",
        encoding="utf-8",
    )
    (folder / "inspection_statuses.csv").write_text(
        "field_status,procore_status\nOpen,opened\nClosed,\n,open\n", encoding="utf-8"
    )
    (folder / "responses.csv").write_text(
        "field_response,corresponding_status\n+,pass\n,yes\n", encoding="utf-8"
    )
    with pytest.raises(MappingError) as raised:
        load_mappings(folder)
    where = "mappings/"
    problems = [p.replace(str(folder.parent) + "/", "") for p in raised.value.problems]
    text = "\n".join(problems)
    assert f"{where}inspection_types.csv:2: checklists without a type have no name" in text
    assert f'{where}inspection_types.csv:3: "Safety" has no procore_inspection_type' in text
    assert f'{where}inspection_types.csv:5: duplicate field_checklist_type "qa/qc"' in text
    assert (
        f'{where}inspection_statuses.csv:2: "Open" → "opened" is not a Procore inspection '
        "status (allowed: open, in_review, closed, skip)." in text
    )
    assert f'{where}inspection_statuses.csv:3: "Closed" has no procore_status' in text
    assert f'{where}responses.csv:2: "+" → "pass" is not a Procore response status' in text
    assert f"{where}responses.csv:3: field_response is empty." in text
    assert len(problems) == 7
