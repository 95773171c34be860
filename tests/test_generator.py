"""The generated project: determinism, realism, awkward data, memory, dump/load round trip."""

from __future__ import annotations

import hashlib
import json
import tracemalloc
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests

from migrate.sandbox.field_server import FieldApp
from migrate.sandbox.generator import (
    AWKWARD_AREA_NAME,
    AWKWARD_ISSUES,
    BLOCK_SIZE,
    CHECKLIST_ITEM_TYPES,
    PLUS_MINUS,
    PRIORITIES,
    STATUSES,
    UNKNOWN_ASSIGNEE,
    YES_NO,
    GeneratedProject,
    load_project,
    parse_id,
)
from migrate.sandbox.httpbase import RunningServer

PROCORE_STATUSES = {
    "blocked",
    "open",
    "ready_for_review",
    "moved_to_observation",
    "unblocked",
    "closed",
}
PROCORE_PRIORITIES = {"low", "medium", "high", "critical"}
PROCORE_TYPES = {
    "building_code",
    "existing_condition",
    "clash",
    "other",
    "coordination",
    "constructability",
    "client_feedback",
    "requirement_change",
    "design_review",
}


@pytest.fixture(scope="module")
def project() -> GeneratedProject:
    return GeneratedProject(seed=7, issues=300)


@pytest.fixture(scope="module")
def issues(project: GeneratedProject) -> list[dict[str, Any]]:
    return list(project.main.iter_issues())


def test_same_seed_gives_the_same_project_and_another_seed_does_not() -> None:
    one, two, other = (GeneratedProject(seed=s, issues=50) for s in (3, 3, 4))
    assert one.users == two.users and one.companies == two.companies
    assert one.main.areas == two.main.areas
    assert list(one.main.iter_issues()) == list(two.main.iter_issues())
    assert list(one.main.iter_checklists()) == list(two.main.iter_checklists())
    assert one.target_state() == two.target_state()
    assert one.main.issue(5) != other.main.issue(5)
    assert one.users != other.users
    assert one.main.id != other.main.id


def test_records_do_not_depend_on_generation_order(project: GeneratedProject) -> None:
    forwards = [project.main.issue(i) for i in range(20)]
    backwards = [project.main.issue(i) for i in reversed(range(20))][::-1]
    assert forwards == backwards


def test_ids_are_a_pure_function_of_the_index(project: GeneratedProject) -> None:
    main, second = project.projects
    for index in (0, 1, 299, 123_456):
        assert main.issue_index(main.issue_id(index)) == index
    assert project.project["id"] == main.id and project.find_project(second.id) is second
    assert main.issue(17)["id"] == main.issue_id(17)
    assert main.issue_index(second.issue_id(0)) is None  # other project's id
    assert main.issue_index("not-a-guid") is None
    assert parse_id("0169b770-5abe-11e4-b890-000a2702005e") is not None
    assert main.issue_index("0169b770-5abe-11e4-b890-000a2702005e") is None
    all_ids = [r["id"] for p in project.projects for r in p.iter_issues()]
    all_ids += [
        a["id"] for p in project.projects for r in p.iter_issues() for a in r["attachments"]
    ]
    assert len(all_ids) == len(set(all_ids))
    for identifier in all_ids[:5]:
        assert len(identifier) == 36


def test_every_status_and_priority_appears(issues: list[dict[str, Any]]) -> None:
    statuses = Counter(r["fields"]["f--status"] for r in issues)
    assert set(statuses) == set(STATUSES)
    assert {r["fields"]["f--priority"] for r in issues} == set(PRIORITIES)
    assert statuses["Closed"] > statuses["Void"] > 0


def test_status_history_leads_to_the_current_status(issues: list[dict[str, Any]]) -> None:
    for record in issues:
        history = record["history"]
        assert history[-1]["status"] == record["fields"]["f--status"]
        assert history[-1]["end_dt"] is None and history[0]["previous_status"] is None
        for before, after in zip(history, history[1:], strict=False):
            assert after["previous_status"] == before["status"]
            assert before["end_dt"] == after["start_dt"] >= before["start_dt"]
        assert history[0]["start_dt"] == record["created_at"]
        assert record["updated_at"] >= history[-1]["start_dt"]
        closed = record["fields"]["f--status"] == "Closed"
        assert (
            (record["closed_at"] == history[-1]["start_dt"])
            if closed
            else (record["closed_at"] is None)
        )


def test_timestamps_use_the_seed_formats(issues: list[dict[str, Any]]) -> None:
    record = next(r for r in issues if r["comments"])
    assert len(record["created_at"]) == 25 and record["created_at"].endswith(" -0400")
    assert "T" in record["comments"][0]["created_at"]  # comments use ISO 8601, as in the seed
    assert record["comments"][0]["created_at"].endswith("-04:00")
    dated = next(r for r in issues if r["fields"]["f--due_date"])
    assert len(dated["fields"]["f--due_date"]) == 10


def test_awkward_data_is_there_on_purpose(
    project: GeneratedProject, issues: list[dict[str, Any]]
) -> None:
    def fields(name: str) -> dict[str, Any]:
        return issues[AWKWARD_ISSUES[name]]["fields"]

    emoji = fields("emoji_description")["f--description"]
    assert "📷" in emoji and any(unicodedata.combining(c) for c in emoji)
    assert len(fields("long_description")["f--description"]) > 2000
    assert fields("empty_description")["f--description"] == ""
    duplicate = AWKWARD_ISSUES["duplicate_identifier"]
    assert (
        issues[duplicate]["fields"]["f--identifier"]
        == issues[duplicate - 1]["fields"]["f--identifier"]
    )
    assert fields("missing_area")["f--area_id"] is None
    deleted_areas = {a["id"] for a in project.main.areas if a["deleted"]}
    assert fields("deleted_area")["f--area_id"] in deleted_areas
    emails = {u["email"] for u in project.users}
    mismatch = fields("assignee_case_mismatch")["f--assigned_to"]
    assert mismatch not in emails and mismatch.lower() in {e.lower() for e in emails}
    assert fields("assignee_unknown")["f--assigned_to"] == UNKNOWN_ASSIGNEE
    assert UNKNOWN_ASSIGNEE.lower() not in {e.lower() for e in emails}
    names = [a["name"] for r in issues for a in r["attachments"] if a["type"] == "Attachment"]
    assert any(n.startswith("../") for n in names) and any("\\" in n for n in names)
    assert any(" " in n for n in names) and any(not n.isascii() for n in names)
    assert any(n != n.strip() for n in names)
    assert any(r["fields"]["f--assigned_to"] is None for r in issues)


def test_area_tree_is_deep_with_repeated_names(project: GeneratedProject) -> None:
    areas = project.main.areas
    by_id = {a["id"]: a for a in areas}
    depths = []
    for area in areas:
        parent = by_id.get(area["parent_id"])
        if parent is None:
            assert area["parent_id"] is None and area["path"] in ("", None)
            assert area["full_path"] == area["name"]
            depths.append(1)
        else:
            assert area["path"] == parent["full_path"]
            assert area["full_path"] == f"{parent['full_path']}>{area['name']}"
            depth = 1
            while parent is not None:
                depth += 1
                parent = by_id.get(parent["parent_id"])
            depths.append(depth)
        assert area["deleted"] in (0, 1)
    assert max(depths) == 4 and min(depths) == 1
    assert any(a["path"] is None for a in areas)
    assert any(a["deleted"] for a in areas)
    room_101 = [a for a in areas if a["name"] == "Room 101"]
    assert len({a["parent_id"] for a in room_101}) >= 2
    with_arrow = [a for a in areas if ">" in a["name"]]
    assert [a["name"] for a in with_arrow] == [AWKWARD_AREA_NAME]
    assert len(project.projects[1].areas) < len(areas)


def test_people_types_and_custom_fields(project: GeneratedProject) -> None:
    assert 15 <= len(project.users) <= 40
    company_names = {c["id"]: c["name"] for c in project.companies}
    for user in project.users:
        assert company_names[user["company"]["id"]] == user["company"]["name"]
    assert len({u["email"] for u in project.users}) == len(project.users)
    assert project.users[0]["email"] == "demo@example.com"
    main = project.main
    assert len({t["category_name"] for t in main.issue_types}) >= 4
    assert len({c["category_name"] for c in main.root_causes}) >= 3
    issue_cfs = [d for d in main.custom_fields if d["container_type"] == "Issue"]
    checklist_cfs = [d for d in main.custom_fields if d["container_type"] == "Checklist"]
    assert issue_cfs and checklist_cfs
    template_ids = {t["id"] for t in main.templates}
    assert all(d["container_id"] in template_ids for d in checklist_cfs)
    drop_down = next(d for d in main.custom_fields if d["display_type"] == "drop-down")
    assert drop_down["possible_values"].startswith("---\n- ''\n")  # YAML, like Rails writes it
    typed = main.issue_fields["category"]
    assert typed["fields"] and all(f["id"].startswith("cf--") for f in typed["fields"])
    record = next(r for r in main.iter_issues() if r["fields"]["f--issue_type_id"] == typed["id"])
    assert {f["id"] for f in typed["fields"]} <= set(record["fields"])
    other = next(r for r in main.iter_issues() if r["fields"]["f--issue_type_id"] != typed["id"])
    assert not {f["id"] for f in typed["fields"]} & set(other["fields"])


def test_checklists_link_to_real_issues(project: GeneratedProject) -> None:
    main = project.main
    assert main.checklist_count == 300 // 8
    assert GeneratedProject(issues=8).main.checklist_count == 3
    checklists = list(main.iter_checklists())
    assert any(c["deleted"] for c in checklists)
    links = 0
    for checklist in checklists:
        for section in checklist["sections"]:
            for item in section["items"]:
                assert item["is_conforming"] in ("Yes", "No", "Other")
                for link in item["issues"]:
                    assert item["is_conforming"] == "No"
                    source = main.issue(main.issue_index(link["id"]))
                    assert link["identifier"] == source["fields"]["f--identifier"]
                    links += 1
    assert links > 0
    assert any(c["signatures"] for c in checklists)
    assert any(i["attachments"] for c in checklists for s in c["sections"] for i in s["items"])


def test_attachment_bytes_are_deterministic_streamed_and_signed(
    project: GeneratedProject, issues: list[dict[str, Any]]
) -> None:
    files = [a for r in issues for a in r["attachments"] if a["type"] == "Attachment"]
    sizes = [a["size"] for a in files]
    assert min(sizes) < 10_000 and 1 <= sum(s >= 5 * 2**20 for s in sizes) <= 3
    assert max(sizes) <= 8 * 2**20
    jpeg = next(a for a in files if a["content_type"] == "image/jpeg" and a["size"] > BLOCK_SIZE)
    chunks = list(project.attachment_chunks(jpeg["id"], jpeg["size"], jpeg["content_type"]))
    assert all(len(c) <= BLOCK_SIZE for c in chunks) and len(chunks) > 1
    data = b"".join(chunks)
    assert len(data) == jpeg["size"] and data.startswith(b"\xff\xd8\xff")
    assert project.attachment_sha256(jpeg["id"], jpeg["size"], jpeg["content_type"]) == (
        hashlib.sha256(data).hexdigest()
    )
    again = GeneratedProject(seed=7, issues=300)
    assert b"".join(again.attachment_chunks(jpeg["id"], jpeg["size"], "image/jpeg")) == data
    other = files[-1]
    assert project.attachment_sha256(other["id"], jpeg["size"]) != hashlib.sha256(data).hexdigest()
    assert b"".join(project.attachment_chunks(jpeg["id"], 0)) == b""


def test_a_100k_issue_project_is_generated_on_demand() -> None:
    tracemalloc.start()
    project = GeneratedProject(seed=7, issues=100_000)
    last = project.main.issue(99_999)
    voided = project.main.voided_indexes()
    checklist = project.main.checklist(project.main.checklist_count - 1)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert last["id"] == project.main.issue_id(99_999)
    assert 3_000 < len(voided) < 8_000
    assert checklist["identifier"] == f"{100_000 // 8:06d}"
    assert peak < 10 * 2**20, f"{peak / 2**20:.1f} MiB"


def test_a_50_mb_attachment_streams_in_constant_memory() -> None:
    size = 50 * 1024 * 1024
    project = GeneratedProject(issues=5, big_attachment_size=size)
    big = next(a for a in project.main.issue(0)["attachments"] if a["size"] == size)
    tracemalloc.start()
    total = sum(len(c) for c in project.attachment_chunks(big["id"], size))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert total == size
    assert peak < 1 * 2**20


def test_target_state_matches_the_contract(project: GeneratedProject) -> None:
    state = project.target_state()
    assert json.loads(json.dumps(state)) == state
    assert set(state) == {
        "company",
        "projects",
        "users",
        "assignee_user_ids",
        "vendors",
        "trades",
        "locations",
        "coordination_issues",
    }
    assert state["company"]["id"] == 4100
    # The Field "Trade" values: some are Procore trades by name (any case), some are not.
    trade_names = {t["name"].lower() for t in state["trades"] if t["active"]}
    field_trades = {"drywall", "electrical", "mechanical", "plumbing", "concrete", "glazing"}
    assert field_trades & trade_names and field_trades - trade_names
    assert not all(t["active"] for t in state["trades"])
    vendor_names = {v["name"] for v in state["vendors"]}
    field_names = {c["name"] for c in project.companies}
    assert vendor_names < field_names  # some Field companies are missing from Procore
    used = {c["company"]["name"] for c in project.main.iter_checklists()}
    assert used & vendor_names and used - vendor_names
    assert [p["id"] for p in state["projects"]] == [5100, 5101]
    assert state["projects"][0]["name"] == project.main.name
    assert all(p["company_id"] == 4100 for p in state["projects"])
    field_emails = {u["email"] for u in project.users}
    procore = state["users"]
    exact = [u for u in procore if u["email_address"] in field_emails]
    case_only = [
        u
        for u in procore
        if u["email_address"] not in field_emails
        and u["email_address"].lower() in {e.lower() for e in field_emails}
    ]
    procore_only = [
        u for u in procore if u["email_address"].lower() not in {e.lower() for e in field_emails}
    ]
    missing = (
        field_emails
        - {u["email_address"].lower() for u in procore}
        - {u["email_address"] for u in procore}
    )
    assert len(exact) > len(procore) // 2
    assert case_only and procore_only and missing
    assert all(
        {"id", "name", "email_address", "company_name", "project_ids"} <= set(u) for u in procore
    )
    user_ids = {u["id"] for u in procore}
    for project_id, assignees in state["assignee_user_ids"].items():
        members = {u["id"] for u in procore if int(project_id) in u["project_ids"]}
        assert set(assignees) < members <= user_ids
    field_paths = {tuple(a["full_path"].split(">")) for a in project.main.areas}
    existing = [tuple(p) for p in state["locations"]["5100"]]
    assert sum(p in field_paths for p in existing) >= 2
    assert any(p not in field_paths for p in existing)
    for issue in state["coordination_issues"]["5100"]:
        assert issue["status"] in PROCORE_STATUSES
        assert issue["priority"] in PROCORE_PRIORITIES
        assert issue["issue_type"] in PROCORE_TYPES
        assert len(issue["title"]) <= 80


# -- dump / load ------------------------------------------------------------------------------
def _answers(project: Any) -> list[Any]:
    """A set of API answers from a FieldApp over ``project``, with the ticket blanked."""
    server = RunningServer(FieldApp(project))
    try:
        http = requests.Session()
        ticket = http.post(
            f"{server.url}/api/login", data={"username": "demo@example.com", "password": "demo"}
        ).json()["ticket"]
        main = project.main.id
        results = []
        for method, path, params in [
            ("POST", "/api/projects", {}),
            ("POST", "/fieldapi/admin/v1/locations", {}),
            ("POST", "/fieldapi/admin/v1/users", {}),
            ("POST", "/api/custom_fields", {}),
            ("POST", "/fieldapi/issues/v1/fields", {}),
            ("POST", "/fieldapi/issues/v1/search", {"limit": 100}),
            ("POST", "/api/get_issues", {"limit": 100}),
            ("POST", "/api/get_voided_issues", {}),
            (
                "POST",
                "/fieldapi/issues/v1/retrieve",
                {
                    "ids": ",".join(
                        project.main.issue_id(i) for i in range(project.main.issue_count)
                    )
                },
            ),
            ("GET", f"/api/v1/projects/{main}/issue_changes", {}),
            ("GET", "/fieldapi/checklists/v1", {"limit": 100}),
            ("POST", "/api/get_checklist_headers", {"limit": 100}),
            ("POST", "/api/templates", {"application_version": "4.7"}),
            ("POST", "/api/get_issues", {"project_id": project.projects[1].id}),
        ]:
            params = {"ticket": ticket, "project_id": main} | params
            reply = http.request(
                method,
                server.url + path,
                data=params if method == "POST" else None,
                params=params if method == "GET" else None,
            )
            assert reply.status_code == 200, (path, reply.text[:200])
            results.append(json.loads(reply.text.replace(ticket, "T").replace(server.url, "U")))
        for row in results[10]:
            reply = http.get(
                f"{server.url}/fieldapi/checklists/v1/{row['id']}",
                params={"ticket": ticket, "project_id": main},
            )
            results.append(json.loads(reply.text.replace(ticket, "T").replace(server.url, "U")))
        record = project.main.issue(AWKWARD_ISSUES["big_attachment"])
        item = record["attachments"][0]
        blob = http.post(
            f"{server.url}/api/binary_data",
            data={
                "ticket": ticket,
                "project_id": main,
                "object_type": "Attachment",
                "object_id": item["id"],
            },
        ).content
        results.append(hashlib.sha256(blob).hexdigest())
        http.close()
        return results
    finally:
        server.stop()


def test_dump_and_load_serve_identically(tmp_path: Path) -> None:
    original = GeneratedProject(seed=9, issues=40)
    path = tmp_path / "project.json"
    original.dump(path)
    document = json.loads(path.read_text(encoding="utf-8"))  # one valid JSON document
    assert [len(p["issues"]) for p in document["projects"]] == [40, 12]
    with load_project(path) as loaded:
        assert loaded.seed == 9
        assert loaded.users == original.users and loaded.companies == original.companies
        assert loaded.target_state() == original.target_state()
        assert [loaded.main.issue(i) for i in range(40)] == list(original.main.iter_issues())
        assert loaded.main.voided_indexes() == original.main.voided_indexes()
        assert _answers(loaded) == _answers(original)


def test_dump_streams_records_instead_of_building_one_document(tmp_path: Path) -> None:
    project = GeneratedProject(seed=7, issues=1_500)
    tracemalloc.start()
    project.dump(tmp_path / "big.json")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    size = (tmp_path / "big.json").stat().st_size
    assert size > 2 * 2**20
    assert peak < size / 4, f"dump peaked at {peak / 2**20:.1f} MiB for {size / 2**20:.1f} MiB"
    with load_project(tmp_path / "big.json") as loaded:
        assert loaded.main.issue(1_499) == project.main.issue(1_499)


def test_load_refuses_other_files(tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text('{"format":"something-else/9",\n"header":{}}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="something-else"):
        load_project(other)
    empty = tmp_path / "empty.json"
    empty.write_text("[]\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not a"):
        load_project(empty)


def test_default_checklists_cover_every_field_item_type_and_case(project: GeneratedProject) -> None:
    """Issue 14 point 5: the default project holds every case the inspection load must carry."""
    main = project.main
    checklists = list(main.iter_checklists())
    live = [c for c in checklists if not c["deleted"]]
    items = [i for c in live for s in c["sections"] for i in s["items"]]
    shown = {i["display_type"] for i in items}
    assert shown == set(CHECKLIST_ITEM_TYPES)
    drop_downs = {tuple(i["possible_values"]) for i in items if i["display_type"] == "drop-down"}
    assert drop_downs == {PLUS_MINUS, YES_NO}
    assert {i["is_conforming"] for i in items} == {"Yes", "No", "Other"}
    assert any(i["response"] == "N/A" for i in items)
    assert any("|" in (i["response"] or "") for i in items if i["display_type"] == "multi-select")
    assert all(i["response"] is None for i in items if i["display_type"] == "group_start")
    # Non-conforming items with and without a linked issue.
    assert any(i["issues"] for i in items if i["is_conforming"] == "No")
    assert any(not i["issues"] for i in items if i["is_conforming"] == "No")
    # Signatures: item-level ones named by the item's response, field-level ones by the
    # custom field value that holds them; every one is a Signature object with bytes.
    for checklist in live:
        held = {s["id"] for s in checklist["signatures"]}
        named = {
            i["response"]
            for s in checklist["sections"]
            for i in s["items"]
            if i["display_type"] == "signature" and i["response"]
        } | {
            v["value"]
            for v in checklist["custom_field_values"]
            if v["display_type"] == "signature" and v["value"]
        }
        assert held == named
    assert any(i["display_type"] == "signature" and i["response"] for i in items)
    assert any(
        v["display_type"] == "signature" and v["value"]
        for c in live
        for v in c["custom_field_values"]
    )
    assert any(c["attachments"] for c in live)  # checklist photos and documents
    assert any(a["type"] == "Attachment" for c in live for a in c["attachments"])
    assert any(a["type"] == "Attachment" for i in items for a in i["attachments"])
    assert any(c["comments"] for c in live)
    assert any(c["deleted"] for c in checklists)
    assert {c["source"].get("type") for c in live} == {None, "Task", "Equipment"}
    task_ids = {t["id"] for t in main.tasks}
    assert all(c["source"]["id"] in task_ids for c in live if c["source"].get("type") == "Task")
    assert {c["tags"] for c in live} >= {"", "weekly", "level-2,mep"}
    definitions = {
        d["container_id"]: d for d in main.custom_fields if d["container_type"] == "Checklist"
    }
    assert {
        d["display_type"] for d in main.custom_fields if d["container_type"] == "Checklist"
    } == {
        "checkbox",
        "date",
        "drop-down",
        "numeric",
        "text",
        "signature",
    }
    assert all(c["template"]["id"] in {t["id"] for t in main.templates} for c in live)
    assert definitions  # values join to definitions by template and position
    # Every template is used, and rich (single/multi-select) ones are flagged.
    assert {c["template"]["id"] for c in live} == {t["id"] for t in main.templates}
    assert {t["name"] for t in main.templates if t["rich"]} == {"Wall closing checklist"}


def test_a_tiny_project_still_covers_every_item_type() -> None:
    tiny = GeneratedProject(seed=11, issues=8, checklists=4).main
    shown = {
        i["display_type"] for c in tiny.iter_checklists() for s in c["sections"] for i in s["items"]
    }
    assert shown == set(CHECKLIST_ITEM_TYPES)
