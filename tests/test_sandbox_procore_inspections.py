"""The Procore simulator's Inspections tool over real HTTP: shapes, strictness, switches, quota.

Each shape and rule here is the reading written up in /work/notes/procore-inspections-api.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from migrate.sandbox.httpbase import RunningServer
from migrate.sandbox.procore_server import ProcoreApp
from tests.test_sandbox_procore import COMPANY, OTHER_PROJECT, PROJECT, Api

COMPANY_PATH = f"/rest/v1.0/companies/{COMPANY}"
LISTS = f"/rest/v1.1/projects/{PROJECT}/checklist/lists"
LISTS_V10 = f"/rest/v1.0/projects/{PROJECT}/checklist/lists"
ITEMS = f"/rest/v1.1/projects/{PROJECT}/checklist/list_items"
ITEMS_V10 = f"/rest/v1.0/projects/{PROJECT}/checklist/list_items"


@pytest.fixture
def make_api() -> Iterator[Callable[..., Api]]:
    """A Procore simulator with the given options (the ``inspection_*`` switches among them)."""
    servers: list[RunningServer] = []

    def start(**options: Any) -> Api:
        server = RunningServer(ProcoreApp(None, **options))
        servers.append(server)
        return Api(server)

    yield start
    for server in servers:
        server.stop()
        server.app.close()  # type: ignore[attr-defined]


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()


def created(reply: requests.Response, status: int = 201) -> Any:
    assert reply.status_code == status, reply.text
    return reply.json()


def refused(reply: requests.Response, status: int, field: str | None = None) -> Any:
    assert reply.status_code == status, reply.text
    body = reply.json()
    if field is not None:
        assert field in body["errors"], body
    return body


def build_template(api: Api, name: str = "Wall closing") -> dict[str, Any]:
    """A company template with one item of every answerable type (and a signature item),
    copied into the project; returns the ids a test needs."""
    kind = created(
        api.post(f"{COMPANY_PATH}/inspection_types", {"inspection_type": {"name": f"{name} QA"}})
    )
    response_set = created(
        api.post(
            f"{COMPANY_PATH}/checklist/item/response_sets",
            {
                "response_set": {
                    "name": f"{name} choices",
                    "memberships_attributes": [
                        {"response_attributes": {"name": "Good", "corresponding_status": "yes"}},
                        {"response_attributes": {"name": "Bad", "corresponding_status": "no"}},
                        {"response_attributes": {"name": "Skip", "corresponding_status": "n/a"}},
                    ],
                }
            },
        )
    )
    template = created(
        api.post(
            f"{COMPANY_PATH}/checklist/list_templates",
            {"list_template": {"name": name, "inspection_type_id": kind["id"]}},
        )
    )
    section = created(
        api.post(
            f"{COMPANY_PATH}/checklist/list_templates/{template['id']}/sections",
            {"section": {"name": "Framing", "position": 1}},
        )
    )
    items: dict[str, int] = {}
    for position, item_type in enumerate(
        ("default", "multiple_choice", "text", "number", "date", "signature"), start=1
    ):
        fields: dict[str, Any] = {
            "name": f"{item_type} question",
            "position": position,
            "section_id": section["id"],
            "type": item_type,
        }
        if item_type == "multiple_choice":
            fields["response_set_id"] = response_set["id"]
        item = created(
            api.post(
                f"{COMPANY_PATH}/inspection_templates/{template['id']}/items",
                {"inspection_template_item": fields},
            )
        )
        items[item_type] = item["id"]
    project_template = created(
        api.post(
            f"/rest/v1.0/projects/{PROJECT}/checklist/list_templates/create_from_company_template",
            {"source_template_id": template["id"]},
        )
    )
    return {
        "inspection_type": kind["id"],
        "response_set": response_set,
        "company_template": template["id"],
        "section": section["id"],
        "company_items": items,
        "template": project_template["id"],
    }


def new_inspection(api: Api, template_id: int, **fields: Any) -> dict[str, Any]:
    return created(api.post(LISTS, {"list_template_id": template_id, "list": fields}))


def items_by_type(api: Api, list_id: int) -> dict[str, dict[str, Any]]:
    rows = created(api.get(ITEMS, {"filters[list_id][]": list_id}), 200)
    return {row["type"]["name"]: row for row in rows}


# -- reference data -----------------------------------------------------------------------------
def test_item_types_need_a_scope_and_page_like_every_list(api: Api) -> None:
    refused(api.get("/rest/v1.0/checklist/item_types"), 400)
    page = api.get("/rest/v1.0/checklist/item_types", {"project_id": PROJECT, "per_page": 4})
    assert page.status_code == 200 and page.headers["Total"] == "6"
    assert 'rel="next"' in page.headers["Link"]
    everything = created(api.get("/rest/v1.0/checklist/item_types", {"company_id": COMPANY}), 200)
    assert {t["name"] for t in everything} == {
        "default",
        "multiple_choice",
        "text",
        "number",
        "date",
        "signature",
    }
    assert all(set(t) == {"id", "category", "name"} for t in everything)
    one = created(
        api.get(f"/rest/v1.0/checklist/item_types/{everything[2]['id']}", {"company_id": COMPANY}),
        200,
    )
    assert one == everything[2]
    refused(api.get("/rest/v1.0/checklist/item_types/1", {"company_id": COMPANY}), 404)


def test_inspection_types_are_named_once_per_company(api: Api) -> None:
    path = f"{COMPANY_PATH}/inspection_types"
    kind = created(api.post(path, {"inspection_type": {"name": "Pre-pour"}}))
    assert set(kind) == {
        "id",
        "name",
        "created_at",
        "updated_at",
        "audit_transaction_timestamp",
        "source_id",
        "deleted_at",
        "company_id",
        "is_deletable",
    }
    assert kind["company_id"] == COMPANY and kind["is_deletable"]
    refused(api.post(path, {"inspection_type": {"name": "pre-POUR"}}), 422, "name")
    refused(api.post(path, {"inspection_type": {"name": " "}}), 422, "name")
    refused(api.post(path, {"inspection_type": {"name": "X", "colour": "red"}}), 422, "colour")
    refused(api.post(path, {"name": "X"}), 400, "inspection_type")
    listed = created(api.get(path), 200)
    assert [k["name"] for k in listed] == ["Pre-pour"]
    assert created(api.get(f"{path}/{kind['id']}"), 200) == kind
    refused(api.get("/rest/v1.0/companies/9999/inspection_types"), 403)


def test_repeatable_type_names_switch(make_api: Any) -> None:
    api = make_api(inspection_type_names="repeatable")
    path = f"{COMPANY_PATH}/inspection_types"
    created(api.post(path, {"inspection_type": {"name": "Safety"}}))
    created(api.post(path, {"inspection_type": {"name": "Safety"}}))


def test_response_sets_hold_named_responses_with_a_corresponding_status(api: Api) -> None:
    path = f"{COMPANY_PATH}/checklist/item/response_sets"
    standard = created(api.get(path), 200)
    assert len(standard) == 1 and standard[0]["procore_standard"] is True
    body = {
        "response_set": {
            "name": "Finish",
            "memberships_attributes": [
                {"response_attributes": {"name": "Acceptable", "corresponding_status": "yes"}},
                {"response_attributes": {"name": "Rework", "corresponding_status": "no"}},
            ],
        }
    }
    made = created(api.post(path, body))
    assert [(r["name"], r["corresponding_status"]) for r in made["responses"]] == [
        ("Acceptable", "yes"),
        ("Rework", "no"),
    ]
    assert set(made["responses"][0]) == {"id", "item_status_id", "name", "corresponding_status"}
    assert made["in_use"] is False and made["procore_standard"] is False
    assert created(api.get(f"{path}/{made['id']}"), 200) == made
    responses = created(api.get(f"{path}/{made['id']}/responses"), 200)
    assert [r["id"] for r in responses] == [r["id"] for r in made["responses"]]
    bad = {
        "response_set": {
            "name": "Bad",
            "memberships_attributes": [
                {"response_attributes": {"name": "Maybe", "corresponding_status": "perhaps"}}
            ],
        }
    }
    refused(api.post(path, bad), 422, "memberships_attributes[0].corresponding_status")
    refused(api.post(path, {"response_set": {"name": ""}}), 422, "name")
    page = api.get(path, {"filters[id][]": made["id"]})
    assert [s["id"] for s in page.json()] == [made["id"]]


def test_template_items_are_typed_and_checked(api: Api) -> None:
    ids = build_template(api)
    items_path = f"{COMPANY_PATH}/inspection_templates/{ids['company_template']}/items"
    listed = created(api.get(items_path), 200)
    assert [i["type"]["name"] for i in listed] == [
        "default",
        "multiple_choice",
        "text",
        "number",
        "date",
        "signature",
    ]
    choice = listed[1]
    assert choice["response_set"]["id"] == ids["response_set"]["id"]
    # Company template items show responses with an item status, not yes/no/n/a.
    assert {r["status"] for r in choice["response_set"]["responses"]} == {
        "conforming",
        "non_conforming",
        "not_applicable",
    }
    assert listed[0]["response_set"] is None

    def item(**fields: Any) -> requests.Response:
        base = {"name": "Q", "section_id": ids["section"], "type": "text"}
        return api.post(items_path, {"inspection_template_item": {**base, **fields}})

    refused(item(type="multiple_choice"), 422, "response_set_id")
    refused(item(response_set_id=ids["response_set"]["id"]), 422, "response_set_id")
    refused(item(type="checkbox"), 422, "type")
    refused(item(section_id=999999), 422, "section_id")
    refused(item(details="why"), 422, "details")
    refused(item(name=""), 422, "name")
    refused(
        api.post(
            f"{COMPANY_PATH}/inspection_templates/999999/items",
            {"inspection_template_item": {"name": "Q"}},
        ),
        404,
    )
    assert created(item(), 201)["type"]["name"] == "text"
    shown = created(
        api.get(f"{COMPANY_PATH}/checklist/list_templates/{ids['company_template']}"), 200
    )
    assert [len(s["items"]) for s in shown["sections"]] == [7]


def test_item_type_field_switch_names_types_by_id(make_api: Any) -> None:
    api = make_api(inspection_item_type_field="id")
    template = created(
        api.post(f"{COMPANY_PATH}/checklist/list_templates", {"list_template": {"name": "T"}})
    )
    section = created(
        api.post(
            f"{COMPANY_PATH}/checklist/list_templates/{template['id']}/sections",
            {"section": {"name": "S"}},
        )
    )
    types = created(api.get("/rest/v1.0/checklist/item_types", {"company_id": COMPANY}), 200)
    text = next(t for t in types if t["name"] == "text")
    path = f"{COMPANY_PATH}/inspection_templates/{template['id']}/items"
    body = {"name": "Q", "section_id": section["id"]}
    refused(api.post(path, {"inspection_template_item": {**body, "type": "text"}}), 422, "type")
    made = created(api.post(path, {"inspection_template_item": {**body, "type": str(text["id"])}}))
    assert made["type"] == text


def test_project_template_copies_the_company_template_and_stays_synced(api: Api) -> None:
    ids = build_template(api)
    shown = created(
        api.get(f"/rest/v1.1/projects/{PROJECT}/checklist/list_templates/{ids['template']}"), 200
    )
    assert shown["synced_to"] == {
        "company_id": COMPANY,
        "list_template_id": ids["company_template"],
    }
    assert [s["name"] for s in shown["sections"]] == ["Framing"]
    copied = shown["sections"][0]["items"]
    assert [i["synced_to"]["item_id"] for i in copied] == list(ids["company_items"].values())
    assert copied[1]["response_set"]["responses"][0]["corresponding_status"] == "yes"
    refused(
        api.post(
            f"/rest/v1.0/projects/{PROJECT}/checklist/list_templates/create_from_company_template",
            {"source_template_id": ids["company_template"]},
        ),
        422,
        "source_template_id",
    )
    created(
        api.post(
            f"{COMPANY_PATH}/inspection_templates/{ids['company_template']}/items",
            {"inspection_template_item": {"name": "Late", "section_id": ids["section"]}},
        )
    )
    again = created(
        api.get(f"/rest/v1.0/projects/{PROJECT}/checklist/list_templates/{ids['template']}"), 200
    )
    assert [i["name"] for i in again["sections"][0]["items"]][-1] == "Late"
    listed = created(api.get(f"/rest/v1.0/projects/{PROJECT}/checklist/list_templates"), 200)
    assert [t["id"] for t in listed] == [ids["template"]]
    refused(
        api.get(f"/rest/v1.0/projects/{OTHER_PROJECT}/checklist/list_templates/{ids['template']}"),
        404,
    )


def test_empty_project_template_and_its_refusals(api: Api) -> None:
    path = f"/rest/v1.0/projects/{PROJECT}/checklist/list_templates"
    made = created(api.post(path, {"list_template": {"name": "Bare", "description": "d"}}))
    assert made["sections"] == [] and made["synced_to"] is None
    refused(api.post(path, {"list_template": {"name": "X", "trade_id": 5}}), 422, "trade_id")
    refused(
        api.post(path, {"list_template": {"name": "X", "inspection_type_id": 1}}),
        422,
        "inspection_type_id",
    )
    refused(api.post(path, {"list_template": {"name": "X", "sections": []}}), 422, "sections")
    inspection = new_inspection(api, made["id"])
    assert inspection["item_count"] == 0


# -- inspections ----------------------------------------------------------------------------------
LIST_KEYS = {
    "id",
    "name",
    "list_template_id",
    "list_template_name",
    "number",
    "status",
    "location",
    "created_at",
    "updated_at",
    "closed_at",
    "drawing_ids",
    "current_drawing_revision_ids",
    "default_response_phrasing",
    "description",
    "deleted",
    "due_at",
    "identifier",
    "inspection_date",
    "inspection_type",
    "private",
    "created_by",
    "closed_by",
    "responsible_contractor",
    "point_of_contact",
    "trade",
    "inspectors",
    "distribution_members",
    "signature_requests",
    "managed_equipment_id",
    "specification_section",
    "attachments",
    "conforming_item_count",
    "deficient_item_count",
    "not_applicable_item_count",
    "neutral_item_count",
    "inspected_item_count",
    "observations_count",
    "closed_observations_count",
    "item_count",
    "respondable_item_count",
    "custom_fields",
    "template_id",
    "overdue",
}


def test_an_inspection_is_created_from_a_template_with_its_items(api: Api) -> None:
    ids = build_template(api)
    location = api.app.find_or_create_location(PROJECT, ["North Building", "Level 1"])
    inspection = new_inspection(
        api,
        ids["template"],
        identifier="000012",
        description="Prior to closing walls.",
        inspection_date="2015-03-02",
        location_id=location["id"],
        responsible_contractor_id=9001,
        inspection_type_id=ids["inspection_type"],
    )
    assert set(inspection) == LIST_KEYS
    assert inspection["status"] == "Open" and inspection["number"] == 1
    assert inspection["name"] == inspection["list_template_name"] == "Wall closing"
    assert inspection["location"]["name"] == "North Building>Level 1"
    assert inspection["responsible_contractor"] == {"id": 9001, "name": "Diaz Mechanical"}
    assert inspection["item_count"] == 6 and inspection["respondable_item_count"] == 5
    assert inspection["private"] is True
    shown = created(api.get(f"{LISTS_V10}/{inspection['id']}"), 200)
    assert shown == inspection
    sections = created(
        api.get(
            f"/rest/v1.0/projects/{PROJECT}/checklist/list_sections",
            {"filters[list_id][]": inspection["id"]},
        ),
        200,
    )
    assert [s["name"] for s in sections] == ["Framing"]
    template = created(
        api.get(f"/rest/v1.1/projects/{PROJECT}/checklist/list_templates/{ids['template']}"), 200
    )
    template_items = [i["id"] for i in template["sections"][0]["items"]]
    items = created(api.get(ITEMS, {"filters[list_id][]": inspection["id"]}), 200)
    assert [i["template_item_id"] for i in items] == template_items
    assert all(i["section_id"] == sections[0]["id"] for i in items)
    assert all(i["status"] == "none" and i["item_response"] is None for i in items)
    assert {i["id"] for i in items}.isdisjoint(template_items)


def test_inspection_create_refuses_what_procore_would(api: Api) -> None:
    ids = build_template(api)
    other = api.app.find_or_create_location(OTHER_PROJECT, ["Depot"])

    def create(fields: dict[str, Any], **body: Any) -> requests.Response:
        return api.post(LISTS, {"list_template_id": ids["template"], "list": fields, **body})

    refused(api.post(LISTS, {"list": {}}), 400, "list_template_id")
    refused(api.post(LISTS, {"list_template_id": ids["template"]}), 400, "list")
    refused(api.post(LISTS, {"list_template_id": 999999, "list": {}}), 404)
    refused(api.post(LISTS, {"list_template_id": ids["company_template"], "list": {}}), 404)
    refused(create({"title": "x"}), 422, "title")
    refused(create({"name": "x"}), 422, "name")  # the name comes from the template
    refused(create({"status": "Closed"}), 422, "status")
    refused(create({"location_id": other["id"]}), 422, "location_id")
    refused(create({"responsible_contractor_id": 424242}), 422, "responsible_contractor_id")
    refused(create({"trade_id": 1}), 422, "trade_id")
    refused(create({"inspection_date": "03/02/2015"}), 422, "inspection_date")
    refused(create({"inspector_ids": [1]}), 422, "inspector_ids")
    refused(create({"upload_ids": ["01NOPE"]}), 422, "upload_ids")
    refused(create({}, sections=[]), 422, "sections")
    created(create({"number": 7}))
    refused(create({"number": 7}), 422, "number")
    assert new_inspection(api, ids["template"])["number"] == 8
    # The v1.0 path takes the same body.
    assert (
        created(
            api.post(
                LISTS_V10, {"list_template_id": ids["template"], "list": {"status": "in_review"}}
            )
        )["status"]
        == "In Review"
    )


def test_each_item_type_takes_its_own_response_only(api: Api) -> None:
    ids = build_template(api)
    inspection = new_inspection(api, ids["template"])
    items = items_by_type(api, inspection["id"])
    options = {r["name"]: r["id"] for r in ids["response_set"]["responses"]}

    def respond(kind: str, payload: dict[str, Any]) -> requests.Response:
        return api.post(
            f"/rest/v1.0/projects/{PROJECT}/checklist/items/{items[kind]['id']}/item_response",
            {"item_response": payload},
        )

    refused(respond("default", {"text_value": "fine"}), 422, "text_value")
    refused(respond("default", {"status": "yes"}), 422, "status")
    refused(respond("default", {"status": "conforming", "text_value": "x"}), 422, "base")
    refused(respond("default", {"grade": "A"}), 422, "grade")
    refused(respond("multiple_choice", {"response_option_id": 999}), 422, "response_option_id")
    refused(respond("multiple_choice", {"status": "conforming"}), 422, "status")
    refused(respond("number", {"number_value": 12.5}), 422, "number_value")
    refused(respond("number", {"number_value": "12"}), 422, "number_value")
    refused(respond("date", {"date_value": "06/05/2013"}), 422, "date_value")
    refused(respond("text", {"text_value": 5}), 422, "text_value")
    refused(respond("signature", {"text_value": "signed"}), 422, "base")
    refused(
        api.post(
            f"/rest/v1.0/projects/{PROJECT}/checklist/items/999999/item_response",
            {"item_response": {"status": "conforming"}},
        ),
        404,
    )

    answer = created(respond("default", {"status": "non_conforming"}))
    assert set(answer) == {"item_id", "status", "responded_at", "responder", "item_type", "payload"}
    assert answer["status"] == "non_conforming" and answer["item_type"]["name"] == "default"
    choice = created(respond("multiple_choice", {"response_option_id": options["Skip"]}))
    assert choice["payload"]["response_option"] == {"id": options["Skip"], "name": "Skip"}
    assert choice["status"] == "not_applicable"
    created(respond("text", {"text_value": "OK"}))
    created(respond("number", {"number_value": 12}))
    created(respond("date", {"date_value": "2013-06-05"}))
    refused(respond("text", {"text_value": "again"}), 422, "base")

    after = items_by_type(api, inspection["id"])
    assert after["default"]["status"] == "no" and after["default"]["responded_with"] == "Fail"
    assert after["multiple_choice"]["status"] == "n/a"
    assert after["multiple_choice"]["response"]["name"] == "Skip"
    assert after["text"]["item_response"]["payload"]["text_value"] == "OK"
    assert after["number"]["responded_with"] == "12"
    shown = created(
        api.get(
            f"/rest/v1.0/projects/{PROJECT}/checklist/items/{items['date']['id']}/item_response"
        ),
        200,
    )
    assert shown["payload"]["date_value"] == "2013-06-05"
    header = created(api.get(f"{LISTS_V10}/{inspection['id']}"), 200)
    assert header["deficient_item_count"] == 1 and header["not_applicable_item_count"] == 1
    assert header["inspected_item_count"] == 5 and header["neutral_item_count"] == 3
    v10 = created(
        api.get(
            ITEMS_V10,
            {"filters[list_id][]": inspection["id"], "filters[item_response_status]": "null"},
        ),
        200,
    )
    assert [i["type"]["name"] for i in v10] == ["signature"]
    refused(api.get(ITEMS_V10, {"filters[item_response_status]": "yes"}), 400)


def test_response_switches_decimal_numbers_and_replacing(make_api: Any) -> None:
    api = make_api(inspection_number_values="decimal", inspection_response_repost="replace")
    ids = build_template(api)
    items = items_by_type(api, new_inspection(api, ids["template"])["id"])
    path = f"/rest/v1.0/projects/{PROJECT}/checklist/items/{items['number']['id']}/item_response"
    created(api.post(path, {"item_response": {"number_value": 12.5}}))
    replaced = created(api.post(path, {"item_response": {"number_value": 3}}))
    assert replaced["payload"]["number_value"] == 3


def test_closing_locks_the_inspection_until_it_is_reopened(api: Api) -> None:
    ids = build_template(api)
    inspection = new_inspection(api, ids["template"])
    items = items_by_type(api, inspection["id"])
    respond = f"/rest/v1.0/projects/{PROJECT}/checklist/items/{items['text']['id']}/item_response"
    close = f"{LISTS}/{inspection['id']}/close"
    closed = created(api.patch(close, None), 200)
    assert closed["status"] == "Closed" and closed["closed_at"] and closed["closed_by"]
    assert created(api.patch(close, None), 200)["closed_at"] == closed["closed_at"]
    refused(api.patch(close, {"list": {"status": "closed"}}), 400)
    refused(api.post(respond, {"item_response": {"text_value": "late"}}), 422, "base")
    refused(
        api.patch(f"{LISTS}/{inspection['id']}", {"list": {"description": "late"}}), 422, "base"
    )
    reopened = created(api.patch(f"{LISTS}/{inspection['id']}/reopen", None), 200)
    assert reopened["status"] == "Open" and reopened["closed_at"] is None
    created(api.post(respond, {"item_response": {"text_value": "now"}}))
    updated = created(
        api.patch(f"{LISTS}/{inspection['id']}", {"list": {"status": "closed", "name": "Renamed"}}),
        200,
    )
    assert updated["status"] == "Closed" and updated["name"] == "Renamed"
    refused(api.patch(f"{LISTS}/{inspection['id']}", {"list": {"colour": "red"}}), 422, "colour")
    refused(api.patch(f"{LISTS}/999999/close", None), 404)


def test_closed_unlocked_switch_accepts_late_answers(make_api: Any) -> None:
    api = make_api(inspection_closed_locked=False)
    ids = build_template(api)
    inspection = new_inspection(api, ids["template"], status="closed")
    items = items_by_type(api, inspection["id"])
    created(
        api.post(
            f"/rest/v1.0/projects/{PROJECT}/checklist/items/{items['text']['id']}/item_response",
            {"item_response": {"text_value": "late"}},
        )
    )


def test_comments_belong_to_an_item_of_the_inspection(api: Api) -> None:
    ids = build_template(api)
    first = new_inspection(api, ids["template"])
    second = new_inspection(api, ids["template"])
    items = items_by_type(api, first["id"])
    path = f"/rest/v1.0/checklist/lists/{first['id']}/comments"
    body = {"project_id": PROJECT, "item_id": items["text"]["id"], "comment": {"body": "Seen."}}
    comment = created(api.post(path, body))
    assert set(comment) == {"id", "body", "item_id", "created_at", "updated_at", "created_by"}
    assert set(comment["created_by"]) == {"id", "company_name", "login", "name"}
    refused(api.post(path, {k: v for k, v in body.items() if k != "item_id"}), 400, "item_id")
    refused(api.post(path, {k: v for k, v in body.items() if k != "project_id"}), 400)
    other_item = items_by_type(api, second["id"])["text"]["id"]
    refused(api.post(path, {**body, "item_id": other_item}), 422, "item_id")
    refused(api.post(path, {**body, "comment": {"body": ""}}), 422, "body")
    refused(api.post(path, {**body, "comment": {"body": "x", "author": "me"}}), 422, "author")
    refused(api.post("/rest/v1.0/checklist/lists/999999/comments", body), 404)
    listed = created(
        api.get(
            f"/rest/v1.0/projects/{PROJECT}/checklist/list_item_comments",
            {"filters[item_id][]": items["text"]["id"]},
        ),
        200,
    )
    assert [c["body"] for c in listed] == ["Seen."]


def test_inspection_files_come_from_uploads_or_the_deprecated_form(api: Api) -> None:
    ids = build_template(api)
    first = api.upload(b"first photo", "one.jpg")
    inspection = new_inspection(api, ids["template"], upload_ids=[first])
    assert [a["name"] for a in inspection["attachments"]] == ["one.jpg"]
    refused(
        api.post(LISTS, {"list_template_id": ids["template"], "list": {"upload_ids": [first]}}),
        422,
        "upload_ids",
    )
    path = f"/rest/v1.0/projects/{PROJECT}/checklist/lists/{inspection['id']}/attachments"
    second = api.upload(b"signature png", "Inspector signature.png", "image/png")
    made = created(api.post(path, {"attachment": {"upload_id": second}}))
    assert set(made) == {
        "id",
        "url",
        "thumbnail_url",
        "name",
        "filename",
        "content_type",
        "viewable_document_id",
    }
    assert made["name"] == "Inspector signature.png" and made["content_type"] == "image/png"
    downloaded = requests.get(made["url"], timeout=5)
    assert (
        hashlib.sha256(downloaded.content).hexdigest()
        == hashlib.sha256(b"signature png").hexdigest()
    )
    refused(api.post(path, {"attachment": {"upload_id": second}}), 422, "upload_id")
    refused(api.post(path, {"attachment": {}}), 400, "upload_id")
    refused(api.post(path, {"attachment": {"upload_id": second, "name": "x"}}), 422, "name")
    form = api.session.post(
        api.url + path,
        headers=api.headers(),
        files={"attachment": ("legacy.pdf", b"%PDF-1.4 legacy", "application/pdf")},
        timeout=5,
    )
    assert form.status_code == 201, form.text
    names = [
        a["name"] for a in created(api.get(f"{LISTS_V10}/{inspection['id']}"), 200)["attachments"]
    ]
    assert names == ["one.jpg", "Inspector signature.png", "legacy.pdf"]


def test_item_files_by_form_and_bulk_link(api: Api) -> None:
    ids = build_template(api)
    inspection = new_inspection(api, ids["template"])
    item = items_by_type(api, inspection["id"])["default"]
    path = f"/rest/v1.0/checklist/lists/{inspection['id']}/items/{item['id']}/item_attachments"

    def send(fields: dict[str, Any], attach: bool = True) -> requests.Response:
        files = {"attachment": ("crack.jpg", b"jpeg bytes", "image/jpeg")} if attach else None
        return api.session.post(
            api.url + path, headers=api.headers(), data=fields, files=files, timeout=5
        )

    refused(send({"project_id": PROJECT, "section_id": 1}), 422, "section_id")
    refused(send({"project_id": PROJECT}), 400, "section_id")
    refused(
        send({"project_id": PROJECT, "section_id": item["section_id"], "caption": "c"}),
        422,
        "caption",
    )
    no_file = api.session.post(
        api.url + path,
        headers=api.headers(),
        files={"project_id": (None, str(PROJECT)), "section_id": (None, str(item["section_id"]))},
        timeout=5,
    )
    refused(no_file, 400, "attachment")
    refused(api.post(path, {"project_id": PROJECT}), 400)
    one = created(send({"project_id": PROJECT, "section_id": item["section_id"]}), 200)
    assert one["item_id"] == item["id"] and one["attachment"]["name"] == "crack.jpg"
    assert set(one["attachment"]) == {"id", "url", "filename", "name"}

    bulk = f"/rest/v1.0/projects/{PROJECT}/checklist/list_item_attachments/bulk_create"
    other = items_by_type(api, inspection["id"])["text"]
    linked = created(
        api.post(bulk, {"item_id": other["id"], "prostore_file_ids": [one["attachment"]["id"]]})
    )
    assert linked[0]["attachment"]["id"] == one["attachment"]["id"]
    refused(
        api.post(bulk, {"item_id": other["id"], "prostore_file_ids": [one["attachment"]["id"]]}),
        409,
    )
    refused(api.post(bulk, {"item_id": other["id"], "prostore_file_ids": [5]}), 422)
    refused(api.post(bulk, {"item_id": other["id"]}), 400, "prostore_file_ids")
    listed = created(
        api.get(
            f"/rest/v1.0/projects/{PROJECT}/checklist/list_item_attachments",
            {"filters[item_id][]": [item["id"], other["id"]]},
        ),
        200,
    )
    assert [(a["item_id"], a["attachment"]["name"]) for a in listed] == [
        (item["id"], "crack.jpg"),
        (other["id"], "crack.jpg"),
    ]
    snapshot = api.app.inspections_of(PROJECT)[0]
    files = snapshot["sections"][0]["items"][0]["files"]
    assert files[0]["sha256"] == hashlib.sha256(b"jpeg bytes").hexdigest()


def test_lists_page_and_filter_for_reconciliation(api: Api) -> None:
    ids = build_template(api)
    second = build_template(api, "Pre-pour")
    made = [new_inspection(api, ids["template"], identifier=f"C-{n}") for n in range(3)]
    made.append(new_inspection(api, second["template"], identifier="P-1"))
    first_page = api.get(LISTS_V10, {"per_page": 3})
    assert first_page.headers["Total"] == "4" and len(first_page.json()) == 3
    assert 'rel="next"' in first_page.headers["Link"]
    last = api.get(LISTS_V10, {"per_page": 3, "page": 2})
    assert [i["id"] for i in first_page.json() + last.json()] == [i["id"] for i in made]
    by_template = created(api.get(LISTS_V10, {"filters[template_id][]": second["template"]}), 200)
    assert [i["identifier"] for i in by_template] == ["P-1"]
    by_id = created(api.get(LISTS_V10, {"filters[id][]": [made[0]["id"], made[2]["id"]]}), 200)
    assert [i["id"] for i in by_id] == [made[0]["id"], made[2]["id"]]
    assert [
        i["identifier"] for i in created(api.get(LISTS_V10, {"filters[query]": "c-1"}), 200)
    ] == ["C-1"]
    refused(api.get(LISTS_V10, {"filters[colour]": "red"}), 400)
    refused(api.get(LISTS_V10, {"filters[id][]": "x"}), 400)
    items = api.get(ITEMS, {"filters[list_id][]": [i["id"] for i in made], "per_page": 10})
    assert items.headers["Total"] == str(6 * 4)
    refused(api.get(ITEMS, {"filters[item_response_status]": "null"}), 400)


def test_inspection_calls_count_against_the_quota_refusals_included(make_api: Any) -> None:
    api = make_api(spike_limit=12)
    before = api.app.rate_stats()["requests"]
    refused(api.get(f"{LISTS_V10}/123"), 404)
    refused(api.post(f"{COMPANY_PATH}/inspection_types", {"inspection_type": {}}), 422)
    reply = api.get("/rest/v1.0/checklist/item_types", {"project_id": PROJECT})
    assert "X-Rate-Limit-Remaining" in reply.headers
    assert api.app.rate_stats()["requests"] - before == 3
    statuses = {api.get(f"{LISTS_V10}").status_code for _ in range(12)}
    assert 429 in statuses


def test_company_header_and_path_company_are_both_checked(api: Api) -> None:
    path = f"{COMPANY_PATH}/inspection_types"
    assert api.get(path, headers=api.headers(company=None)).status_code == 400
    assert api.get("/rest/v1.0/companies/4101/inspection_types").status_code == 403
    assert api.get("/rest/v1.0/companies/x/inspection_types").status_code == 404
    assert api.get("/rest/v1.0/projects/999/checklist/lists").status_code == 404


def test_vendors_list_the_project_directory(api: Api) -> None:
    vendors = created(api.get(f"/rest/v1.0/projects/{PROJECT}/vendors"), 200)
    assert [v["name"] for v in vendors] == ["Diaz Mechanical", "Wei Electric"]
    other = created(api.get(f"/rest/v1.0/projects/{OTHER_PROJECT}/vendors"), 200)
    assert [v["id"] for v in other] == [9002]
    assert [
        v["id"]
        for v in created(
            api.get(f"/rest/v1.0/projects/{PROJECT}/vendors", {"filters[search]": "wei"}), 200
        )
    ] == [9002]


def test_snapshot_reports_what_the_inspections_hold(api: Api) -> None:
    ids = build_template(api)
    inspection = new_inspection(api, ids["template"], identifier="000009")
    items = items_by_type(api, inspection["id"])
    created(
        api.post(
            f"/rest/v1.0/projects/{PROJECT}/checklist/items/{items['default']['id']}/item_response",
            {"item_response": {"status": "conforming"}},
        )
    )
    created(
        api.post(
            f"/rest/v1.0/checklist/lists/{inspection['id']}/comments",
            {"project_id": PROJECT, "item_id": items["default"]["id"], "comment": {"body": "ok"}},
        )
    )
    [held] = api.app.inspections_of(PROJECT)
    assert held["identifier"] == "000009" and held["template"] == "Wall closing"
    default = held["sections"][0]["items"][0]
    assert default["response"] == {"key": "status", "value": "conforming"}
    assert default["status"] == "yes" and default["comments"] == ["ok"]
    assert api.app.inspections_of(OTHER_PROJECT) == []


@pytest.mark.parametrize(
    "option, value",
    [
        ("inspection_item_type_field", "label"),
        ("inspection_number_values", "float"),
        ("inspection_response_repost", "merge"),
        ("inspection_type_names", "any"),
    ],
)
def test_unknown_switch_values_are_refused(make_api: Any, option: str, value: str) -> None:
    with pytest.raises(ValueError, match=option):
        make_api(**{option: value})


def test_switches_reach_the_simulator_through_sandbox_options() -> None:
    from migrate.sandbox.runner import Sandbox, SandboxOptions

    options = SandboxOptions(
        issues=8,
        procore_options={"inspection_closed_locked": False, "inspection_number_values": "decimal"},
    )
    sandbox = Sandbox(options)
    try:
        chosen = sandbox.procore_app.inspections.options
        assert chosen.closed_locked is False and chosen.number_values == "decimal"
        assert chosen.response_repost == "refuse"  # the strict default stays
        vendors = sandbox.procore_app._vendors
        assert vendors and all(5100 in v["project_ids"] for v in vendors.values())
    finally:
        sandbox.procore_app.close()
