"""The BIM 360 Field simulator over real HTTP: shapes against the seed, auth, paging, faults."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from typing import Any

import pytest
import requests

from migrate.sandbox.faults import FaultConfig
from migrate.sandbox.field_server import FieldApp
from migrate.sandbox.generator import STATUSES, GeneratedProject
from migrate.sandbox.httpbase import RunningServer

# -- examples from seeds/003 (repaired where the README says they are not valid JSON) -----------
SEED_LOCATION = {
    "full_path": "Building Two>Floor Two",
    "path": "Building Two",
    "name": "Floor Two",
    "identifier": "",
    "id": "00000000-0002-0000-0000-afea20000001",
    "parent_id": "00000000-0001-0000-0000-afea10000003",
    "deleted": 0,
}
SEED_COMPANY = {
    "account_company": True,
    "address": {
        "country": "US",
        "address3": None,
        "postal_code": "56000",
        "county": None,
        "latitude": None,
        "city": "Sioux Falls",
        "address2": None,
        "state": "SD",
        "longitude": None,
        "address1": "7 Emeritus St",
    },
    "url": "www.testaccount.com",
    "duns_no": None,
    "ein_no": None,
    "telephone": None,
    "company_type": "",
    "name": "Test Account Company",
    "fax": None,
    "description": None,
    "company_category": "Contractor",
    "id": "f47f034f-b727-11e1-9edf-ad27ba32cc68",
}
SEED_USER = {
    "roles": "project_admin,document_manager,contractor",
    "company": {"id": "f47f034f-b727-11e1-9edf-ad27ba32cc68", "name": "Gaylord Focker, Inc."},
    "junior": False,
    "first_name": "test",
    "telephone": None,
    "email": "testadmin@gmail.com",
    "last_name": "admin",
    "id": "f47f035a-b727-11e1-9edf-ad27ba32cc68",
}
SEED_PROJECT_NAME = {
    "id": "12345678-12312-12313-1231312",
    "name": "Daniel's SNout House",
    "a360_project_id": None,
    "updated_at": "2013-07-10T12:30:10Z",
    "include_in_reports": True,
}
SEED_TYPE = {
    "category_name": "Punch List",
    "name": "Punch List",
    "id": "f498d0ed-0be0-11e2-9694-14f6960d7e4f",
}
SEED_ROOT_CAUSE = {
    "category_name": "Human",
    "name": "Drunk",
    "id": "99b432f1-13e2-11e2-9453-24b41a66b040",
}
SEED_FIELD = {
    "display_type": "drop-down",
    "required": True,
    "position": 10001,
    "name": "Issue type",
    "possible_values": [],
    "id": "f--issue_type_id",
}
SEED_FIELDS = {
    "common": {"fields": [SEED_FIELD]},
    "category": {
        "category": "Safety",
        "fields": [SEED_FIELD],
        "name": "Safety Incident",
        "id": "f498d134-0be0-11e2-9694-14f6960d7e4f",
    },
    "ancillary": {
        "fields": [
            {
                "display_type": "numeric",
                "required": False,
                "name": "Labor hours",
                "possible_values": [],
                "id": "f--labor_hours",
            }
        ]
    },
}
_URL = (
    "https://bim360field.autodesk.com/api/binary_data?ticket=t&project_id=p&object_id=o"
    "&object_type=Attachment&image_type=original&page=0"
)
SEED_RETRIEVE = {
    "id": "00000aac-0001-0000-0000-00000000000b",
    "created_by": "quentin@example.org",
    "fields": [
        {
            "id": "f--identifier",
            "name": "Identifier",
            "display_type": "text",
            "value": "austinpowers",
        }
    ],
    "comments": [
        {
            "created_at": "2013-06-04T13:01:18-04:00",
            "created_by": "barry.walker@autodesk.com",
            "comment_text": "first",
            "id": "f3f72b19-cd37-11e2-a818-cadae7f720b9",
        }
    ],
    "attachments": [
        {
            "id": "0169b770-5abe-11e4-b890-000a2702005e",
            "type": "Attachment",
            "name": "Example_JPG_iPhone4S.jpg",
            "caption": "hotel",
            "tags": "suitcase",
            "content_type": "image/jpeg",
            "original_url": _URL,
            "thumb_url": _URL,
            "num_pages": 1,
            "composites": [{"page": 0, "url": _URL}],
            "created_at": "2014-10-23 10:08:04 -0400",
            "updated_at": "2014-10-23 10:08:04 -0400",
            "created_by": "moe.syzlack@moes.springfield.somewhere.gov",
        },
        {
            "type": "DocumentReference",
            "num_pages": 1,
            "content_type": "application/pdf",
            "thumb_url": _URL,
            "composites": [{"page": 0, "url": _URL}],
            "original_url": _URL,
            "id": "429f6331-cd38-11e2-a818-cadae7f720b9",
        },
        {
            "type": "UriReference",
            "path": "http://www.google.com",
            "name": "Google",
            "id": "565199f2-cd38-11e2-a818-cadae7f720b9",
        },
    ],
}
SEED_SEARCH = {
    "id": "00000aac-0001-0000-0000-00000000000b",
    "closed_at": "closed at date",
    "fields": [
        {"value": "000001", "name": "Identifier", "display_type": "text", "id": "f--identifier"}
    ],
}
SEED_CHECKLIST_ROW = {
    "status": "Open",
    "created_at": "2013-05-20 12:23:07 -0400",
    "checklist_type": "Safety",
    "identifier": "000001",
    "name": "Field Safety Checklist",
    "id": "8e6c33ea-c169-11e2-92bf-93adab508ed6",
    "updated_at": "2013-05-20 12:49:09 -0400",
    "created_by": "moe@example.com",
}
SEED_ITEM = {
    "created_at": "2013-06-04 13:00:17 -0400",
    "issues": [
        {"description": "d", "identifier": "BW-00059", "id": "f3f72b20-cd37-11e2-a818-cadae7f720b9"}
    ],
    "question_text": "q",
    "created_by": "barry.walker@autodesk.com",
    "display_type": "single-select",
    "response": "Non-conforming choice",
    "display_number": "3.",
    "position": 4,
    "comment": None,
    "spec_ref": "Division 10 Specialties",
    "is_conforming": "No",
    "attachments": SEED_RETRIEVE["attachments"],
    "id": "3b8f9f56-cd38-11e2-a818-cadae7f720b9",
    "possible_values": ["Conforming Choice", "Non-conforming choice"],
    "updated_at": "2013-06-04 13:03:19 -0400",
}
SEED_CHECKLIST = {
    "comments": SEED_RETRIEVE["comments"],
    "status": "Open",
    "created_at": "2013-06-04 13:00:17 -0400",
    "created_by": "moe@example.com",
    "checklist_type": "QA/QC",
    "project_id": "ca0e24b0-be43-11e2-92b9-bd56764d1fb2",
    "company": {"name": "Acme Drywall", "id": "9662301c-be44-11e2-92b9-bd56764d1fb2"},
    "custom_field_values": [
        {"value": "0", "display_type": "checkbox", "id": "3b8f9f42-cd38-11e2-a818-cadae7f720b9"}
    ],
    "description": "d",
    "source": {},
    "phase": None,
    "identifier": "000009",
    "signatures": [
        {"type": "Signature", "original_url": _URL, "id": "429f6326-cd38-11e2-a818-cadae7f720b9"}
    ],
    "name": "Wall closing checklist",
    "template": {"name": "Wall closing checklist", "id": "402980b2-cd34-11e2-a818-cadae7f720b9"},
    "attachments": SEED_RETRIEVE["attachments"],
    "id": "3b8f9f38-cd38-11e2-a818-cadae7f720b9",
    "sections": [{"items": [SEED_ITEM], "section_name": "Section 1"}],
    "priority": "Medium",
    "updated_at": "2013-06-04 13:03:28 -0400",
}
SEED_CHANGE = {
    "id": "issue id value",
    "status": "Open",
    "previous_status": "Draft",
    "user": "email of user if available",
    "start_dt": "2014-01-01 10:00:00 -0400",
    "end_dt": None,
}
CUSTOM_FIELD_KEYS = {
    "custom_field_id",
    "container_id",
    "container_type",
    "display_type",
    "default_value",
    "required",
    "position",
    "updated_at",
    "name",
    "possible_values",
}
HEADER_KEYS = {
    "completed_checklist_id",
    "checklist_template_id",
    "checklist_type",
    "identifier",
    "name",
    "description",
    "created_by",
    "phase",
    "priority",
    "status",
    "tags",
    "created_at",
    "updated_at",
    "deleted",
}


def assert_shape(actual: Any, example: Any, where: str = "$") -> None:
    """Same keys at every level and compatible types (None in either side matches anything)."""
    if example is None or actual is None:
        return
    if isinstance(example, dict):
        assert isinstance(actual, dict), f"{where}: expected an object, got {actual!r:.80}"
        if not example:  # the seed shows an empty object ("source": {}): keys unknown
            return
        assert set(actual) == set(example), (
            f"{where}: keys differ: extra {set(actual) - set(example)}, "
            f"missing {set(example) - set(actual)}"
        )
        for key, value in example.items():
            if key != "value":  # field values take the type of their field
                assert_shape(actual[key], value, f"{where}.{key}")
    elif isinstance(example, list):
        assert isinstance(actual, list), f"{where}: expected a list"
        if not example:
            return
        for position, element in enumerate(actual):
            model = example[0]
            if isinstance(element, dict) and "type" in element:
                same = [
                    e for e in example if isinstance(e, dict) and e.get("type") == element["type"]
                ]
                if not same:
                    continue
                model = same[0]
            assert_shape(element, model, f"{where}[{position}]")
    elif isinstance(example, bool):
        assert isinstance(actual, bool), f"{where}: expected bool, got {actual!r}"
    elif isinstance(example, int | float):
        assert isinstance(actual, int | float) and not isinstance(actual, bool), where
    else:
        assert isinstance(actual, type(example)), f"{where}: {type(actual)} vs {type(example)}"


class Field:
    """A running FieldApp plus a logged-in session: enough to poke every endpoint."""

    def __init__(self, project: GeneratedProject, **app_options: Any) -> None:
        self.project = project
        self.app = FieldApp(project, **app_options)
        self.server = RunningServer(self.app)
        self.url = self.server.url
        self.http = requests.Session()
        self.ticket = self.login()
        self.project_id = project.main.id

    def login(self, password: str = "demo") -> str:
        reply = self.http.post(
            f"{self.url}/api/login", data={"username": "demo@example.com", "password": password}
        )
        assert reply.status_code == 200, reply.text
        return reply.json()["ticket"]

    def post(self, path: str, **params: Any) -> requests.Response:
        params.setdefault("ticket", self.ticket)
        params.setdefault("project_id", self.project_id)
        return self.http.post(self.url + path, data=params, timeout=30)

    def get(self, path: str, **params: Any) -> requests.Response:
        params.setdefault("ticket", self.ticket)
        params.setdefault("project_id", self.project_id)
        return self.http.get(self.url + path, params=params, timeout=30)

    def ok(self, method: str, path: str, **params: Any) -> Any:
        reply = (self.post if method == "POST" else self.get)(path, **params)
        assert reply.status_code == 200, (path, reply.status_code, reply.text[:300])
        return reply.json()

    def close(self) -> None:
        self.http.close()
        self.server.stop()


@pytest.fixture(scope="module")
def project() -> GeneratedProject:
    return GeneratedProject(seed=7, issues=300, checklists=130)


@pytest.fixture(scope="module")
def field(project: GeneratedProject) -> Any:
    """A shared read-only server; tests that mutate or fault use ``fresh``."""
    running = Field(project)
    yield running
    running.close()


@pytest.fixture
def fresh() -> Any:
    running = Field(GeneratedProject(seed=7, issues=60))
    yield running
    running.close()


def _issue_with(project: GeneratedProject, predicate: Any) -> dict[str, Any]:
    return next(r for r in project.main.iter_issues() if predicate(r))


# -- auth -----------------------------------------------------------------------------------------
def test_login_returns_a_36_character_ticket_and_rejects_bad_credentials(field: Field) -> None:
    assert len(field.ticket) == 36
    bad = requests.post(
        f"{field.url}/api/login", data={"username": "demo@example.com", "password": "nope"}
    )
    assert bad.status_code == 401
    assert "nope" not in bad.text
    assert bad.json()["error"] == "Unauthorized"
    wrong_user = requests.post(
        f"{field.url}/api/login", params={"username": "someone@example.com", "password": "demo"}
    )
    assert wrong_user.status_code == 401


ROUTES = [
    ("POST", "/api/logout"),
    ("POST", "/api/projects"),
    ("POST", "/api/project"),
    ("POST", "/fieldapi/admin/v1/project_names"),
    ("POST", "/fieldapi/admin/v1/ping"),
    ("POST", "/fieldapi/admin/v1/locations"),
    ("POST", "/api/areas"),
    ("POST", "/fieldapi/admin/v1/companies"),
    ("POST", "/fieldapi/admin/v1/users"),
    ("POST", "/fieldapi/issues/v1/types"),
    ("POST", "/fieldapi/issues/v1/fields"),
    ("POST", "/fieldapi/issues/v1/root_causes"),
    ("POST", "/api/custom_fields"),
    ("GET", "/fieldapi/issues/v1/list"),
    ("POST", "/fieldapi/issues/v1/search"),
    ("POST", "/fieldapi/issues/v1/retrieve"),
    ("POST", "/api/get_issues"),
    ("POST", "/api/get_voided_issues"),
    ("GET", "/api/v1/projects/P/issue_changes"),
    ("GET", "/api/v1/projects/P/issue_changes/I"),
    ("GET", "/fieldapi/checklists/v1"),
    ("GET", "/fieldapi/checklists/v1/C.json"),
    ("POST", "/api/get_checklist_headers"),
    ("POST", "/api/binary_data"),
    ("GET", "/api/binary_data"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("ticket", [None, "00000000-0000-0000-0000-000000000000"])
def test_every_call_but_login_needs_a_live_ticket(
    field: Field, method: str, path: str, ticket: str | None
) -> None:
    params = {"project_id": field.project_id} | ({"ticket": ticket} if ticket else {})
    reply = requests.request(
        method,
        field.url + path.replace("/P/", f"/{field.project_id}/"),
        data=params if method == "POST" else None,
        params=params if method == "GET" else None,
    )
    assert reply.status_code == 401
    assert reply.json()["error"] == "Unauthorized"


def test_logout_expires_the_ticket(fresh: Field) -> None:
    assert fresh.post("/fieldapi/admin/v1/ping").text == "I;200;Successful"
    assert fresh.post("/api/logout").status_code == 200
    assert fresh.post("/fieldapi/admin/v1/ping").status_code == 401


def test_ticket_expires_after_max_calls_and_a_new_login_works() -> None:
    running = Field(GeneratedProject(issues=10), ticket_max_calls=3)
    try:
        for _ in range(3):
            assert running.post("/api/projects").status_code == 200
        assert running.post("/api/projects").status_code == 401
        assert running.post("/api/projects").status_code == 401  # it stays dead
        running.ticket = running.login()
        assert running.post("/api/projects").status_code == 200
    finally:
        running.close()


def test_ticket_expires_after_max_seconds() -> None:
    now = [1000.0]  # the simulator's clock for ticket ages, moved by hand: no sleep to outlast
    running = Field(GeneratedProject(issues=10), ticket_max_seconds=30, ticket_clock=lambda: now[0])
    try:
        now[0] += 30
        assert running.post("/api/projects").status_code == 200  # 30 s old: still alive
        now[0] += 0.5
        assert running.post("/api/projects").status_code == 401
        assert running.post("/api/projects").status_code == 401  # it stays dead
    finally:
        running.close()


# -- project scoping ----------------------------------------------------------------------------
def test_project_scoped_calls_need_a_visible_project(
    field: Field, project: GeneratedProject
) -> None:
    for path in (
        "/api/project",
        "/fieldapi/admin/v1/locations",
        "/fieldapi/issues/v1/search",
        "/api/get_issues",
        "/api/binary_data",
    ):
        assert (
            field.post(path, project_id="00000330-dead-0000-0000-000000000001").status_code == 404
        ), path
        assert field.post(path, project_id="").status_code == 404, path
    listed = field.ok("POST", "/api/projects")
    assert [p["id"] for p in listed] == [p.id for p in project.projects]
    other = project.projects[1]
    other_issue = other.issue_id(0)
    # An issue of the second project is not visible through the first project.
    assert field.post("/fieldapi/issues/v1/retrieve", ids=other_issue).status_code == 404
    found = field.ok("POST", "/fieldapi/issues/v1/retrieve", ids=other_issue, project_id=other.id)
    assert found[0]["id"] == other_issue
    assert field.ok("POST", "/fieldapi/issues/v1/search", count=1, project_id=other.id) == {
        "count": other.issue_count
    }
    assert len(field.ok("POST", "/fieldapi/admin/v1/users", project_id=other.id)) < len(
        field.ok("POST", "/fieldapi/admin/v1/users")
    )


def test_form_and_query_string_parameters_are_equivalent(field: Field) -> None:
    as_form = field.post("/fieldapi/issues/v1/search", offset=30, limit=7)
    as_query = field.http.post(
        f"{field.url}/fieldapi/issues/v1/search",
        params={"ticket": field.ticket, "project_id": field.project_id, "offset": 30, "limit": 7},
    )
    assert as_form.status_code == as_query.status_code == 200
    assert as_form.json() == as_query.json()
    assert len(as_form.json()) == 7


# -- shapes --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "example"),
    [
        ("/fieldapi/admin/v1/locations", [SEED_LOCATION]),
        ("/fieldapi/admin/v1/companies", [SEED_COMPANY]),
        ("/fieldapi/admin/v1/users", [SEED_USER]),
        ("/fieldapi/admin/v1/project_names", [SEED_PROJECT_NAME]),
        ("/fieldapi/issues/v1/types", [SEED_TYPE]),
        ("/fieldapi/issues/v1/root_causes", [SEED_ROOT_CAUSE]),
        ("/fieldapi/issues/v1/fields", SEED_FIELDS),
        ("/fieldapi/issues/v1/search", [SEED_SEARCH]),
    ],
)
def test_reference_endpoints_have_the_seed_shape(field: Field, path: str, example: Any) -> None:
    answer = field.ok("POST", path)
    assert answer
    assert_shape(answer, example)


def test_list_custom_fields_headers_and_changes_have_the_documented_shape(
    field: Field, project: GeneratedProject
) -> None:
    listed = field.ok("GET", "/fieldapi/issues/v1/list", limit=5)
    assert_shape(listed, [SEED_SEARCH])
    definitions = field.ok("POST", "/api/custom_fields")
    assert {d["container_type"] for d in definitions} == {"Issue", "Checklist"}
    for definition in definitions:
        assert set(definition) == CUSTOM_FIELD_KEYS
        if definition["display_type"] == "drop-down":
            assert definition["possible_values"].startswith("---\n- ")
    headers = field.ok("POST", "/api/get_checklist_headers", limit=100)
    assert all(set(h) >= HEADER_KEYS for h in headers)
    assert_shape(
        field.ok("GET", f"/api/v1/projects/{field.project_id}/issue_changes"), [SEED_CHANGE]
    )
    one = field.ok(
        "GET", f"/api/v1/projects/{field.project_id}/issue_changes/{project.main.issue_id(6)}"
    )
    assert_shape(one, [{k: v for k, v in SEED_CHANGE.items() if k != "previous_status"}])
    assert field.post("/fieldapi/admin/v1/ping").text == "I;200;Successful"
    assert field.ok("POST", "/api/project")["id"] == field.project_id


def test_retrieve_gives_complete_records_with_ticketed_urls(
    field: Field, project: GeneratedProject
) -> None:
    with_all = _issue_with(
        project,
        lambda r: (
            {a["type"] for a in r["attachments"]} >= {"Attachment", "DocumentReference"}
            and r["comments"]
        ),
    )
    uri = _issue_with(project, lambda r: any(a["type"] == "UriReference" for a in r["attachments"]))
    ids = [with_all["id"], uri["id"], project.main.issue_id(0)]
    answer = field.ok("POST", "/fieldapi/issues/v1/retrieve", ids=",".join(ids))
    assert [r["id"] for r in answer] == ids
    # Plus ``signatures`` (get_object_issues says issues carry them; the switch
    # issue_signatures="field_only" leaves it out: tests/test_extract_renditions.py).
    assert_shape(answer, [{**SEED_RETRIEVE, "signatures": []}])
    record = answer[0]
    assert [f["id"] for f in record["fields"]][:13] == [
        "f--identifier",
        "f--issue_type_id",
        "f--responsible_company_id",
        "f--description",
        "f--priority",
        "f--status",
        "f--area_id",
        "f--location_detail",
        "f--root_cause_id",
        "f--due_date",
        "f--assigned_to",
        "f--labor_hours",
        "f--cost",
    ]
    assert {f["id"]: f["value"] for f in record["fields"]} == with_all["fields"]
    assert record["comments"] == with_all["comments"]
    for item in record["attachments"]:
        for key in ("original_url", "thumb_url"):
            if key in item:
                assert f"ticket={field.ticket}" in item[key]
                assert item[key].startswith(field.url + "/api/binary_data?")
    photo = next(a for a in record["attachments"] if a["type"] == "Attachment")
    stored = next(a for a in with_all["attachments"] if a["id"] == photo["id"])
    download = field.http.get(photo["original_url"])  # the URL alone is enough
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == project.attachment_sha256(
        stored["id"], stored["size"], stored["content_type"]
    )


def test_retrieve_limits(field: Field, project: GeneratedProject) -> None:
    ids = [project.main.issue_id(i) for i in range(101)]
    assert field.post("/fieldapi/issues/v1/retrieve", ids=",".join(ids)).status_code == 400
    assert len(field.ok("POST", "/fieldapi/issues/v1/retrieve", ids=",".join(ids[:100]))) == 100
    assert field.post("/fieldapi/issues/v1/retrieve", ids="").status_code == 400
    unknown = project.main.issue_id(10_000)
    reply = field.post("/fieldapi/issues/v1/retrieve", ids=f"{ids[0]},{unknown}")
    assert reply.status_code == 404
    assert field.post("/fieldapi/issues/v1/retrieve", ids="not-an-id").status_code == 404


def test_get_issues_flat_records_and_voided_issues(field: Field, project: GeneratedProject) -> None:
    voided = field.ok("POST", "/api/get_voided_issues")
    expected_void = [project.main.issue_id(i) for i in project.main.voided_indexes()]
    assert voided == expected_void and voided
    count = field.ok("POST", "/api/get_issues", count_only=1)["count"]
    assert count == project.main.issue_count - len(voided)
    seen: list[dict[str, Any]] = []
    while True:
        page = field.ok("POST", "/api/get_issues", offset=len(seen), limit=100)
        seen.extend(page)
        if not page:
            break
    assert len(seen) == count
    assert not set(voided) & {r["id"] for r in seen}
    first = seen[0]
    source = project.main.issue(0)
    assert first["updated_at"] == source["updated_at"]
    assert first["description"] == source["fields"]["f--description"]
    assert {
        "attachments",
        "comments",
        "document_references",
        "uri_references",
        "custom_field_values",
    } <= set(first)
    with_files = next(r for r in seen if r["attachments"])
    assert {"id", "filename", "size", "content_type"} <= set(with_files["attachments"][0])


def test_issue_changes_follow_each_issue_to_its_current_status(
    field: Field, project: GeneratedProject
) -> None:
    changes = field.ok("GET", f"/api/v1/projects/{field.project_id}/issue_changes")
    by_issue: dict[str, list[dict[str, Any]]] = {}
    for change in changes:
        by_issue.setdefault(change["id"], []).append(change)
    assert len(by_issue) == project.main.issue_count
    for record in project.main.iter_issues():
        history = by_issue[record["id"]]
        assert history[-1]["status"] == record["fields"]["f--status"]
        assert history[-1]["end_dt"] is None
        assert history[0]["previous_status"] is None
        for before, after in zip(history, history[1:], strict=False):
            assert after["previous_status"] == before["status"]
            assert before["end_dt"] == after["start_dt"]
    closed = field.ok(
        "GET", f"/api/v1/projects/{field.project_id}/issue_changes", status="Closed,Void"
    )
    assert closed and {c["status"] for c in closed} == {"Closed", "Void"}
    start, end = "2015-01-01", "2015-02-28"
    window = field.ok(
        "GET", f"/api/v1/projects/{field.project_id}/issue_changes", start_dt=start, end_dt=end
    )
    assert window and all(start <= c["start_dt"][:10] <= end for c in window)
    assert len(window) < len(changes)
    assert (
        field.get(
            f"/api/v1/projects/{field.project_id}/issue_changes", start_dt="yesterday"
        ).status_code
        == 400
    )
    assert (
        field.get(
            f"/api/v1/projects/{field.project_id}/issue_changes/{project.main.issue_id(9999)}"
        ).status_code
        == 404
    )


def test_large_issue_changes_are_streamed_with_the_same_content(fresh: Field) -> None:
    whole = fresh.get(f"/api/v1/projects/{fresh.project_id}/issue_changes")
    fresh.app.stream_threshold = 1000
    streamed = fresh.get(f"/api/v1/projects/{fresh.project_id}/issue_changes")
    assert len(whole.content) > 5000
    assert streamed.content == whole.content
    assert int(streamed.headers["Content-Length"]) == len(whole.content)


# -- paging -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/fieldapi/issues/v1/search"),
        ("GET", "/fieldapi/issues/v1/list"),
        ("POST", "/api/get_issues"),
        ("GET", "/fieldapi/checklists/v1"),
        ("POST", "/api/get_checklist_headers"),
        ("POST", "/api/areas"),
    ],
)
def test_paging_defaults_to_25_caps_at_100_and_ends_cleanly(
    field: Field, method: str, path: str
) -> None:
    assert len(field.ok(method, path)) == 25
    everything: list[str] = []
    while True:
        page = field.ok(method, path, offset=len(everything), limit=40)
        everything.extend(json.dumps(row, sort_keys=True) for row in page)
        if len(page) < 40:
            break
    assert len(set(everything)) == len(everything) > 40
    capped = field.ok(method, path, limit=500)
    # Silently capped: a page shorter than asked for above 100 is NOT the last page.
    assert len(capped) == min(100, len(everything))
    assert field.ok(method, path, offset=len(everything)) == []
    assert field.ok(method, path, offset=0, limit=100)[:40] == [
        json.loads(row) for row in everything[:40]
    ]
    for bad in ({"limit": 0}, {"limit": "ten"}, {"offset": -1}):
        assert (field.post if method == "POST" else field.get)(path, **bad).status_code == 400


def test_search_count_conditions_and_area_filter(field: Field, project: GeneratedProject) -> None:
    assert field.ok("POST", "/fieldapi/issues/v1/search", count="true") == {"count": 300}
    condition = json.dumps(['f--status,in,["Closed","Void"]'])
    closed = field.ok(
        "POST", "/fieldapi/issues/v1/search", conditions=condition, limit=100, count=1
    )
    expected = sum(
        1 for r in project.main.iter_issues() if r["fields"]["f--status"] in ("Closed", "Void")
    )
    assert closed == {"count": expected}
    page = field.ok("POST", "/fieldapi/issues/v1/search", conditions=condition, limit=10)
    assert all(
        {f["id"]: f["value"] for f in r["fields"]}["f--status"] in ("Closed", "Void") for r in page
    )
    assert (
        field.post("/fieldapi/issues/v1/search", conditions='["f--status,between,1"]').status_code
        == 400
    )
    no_area = field.ok("GET", "/fieldapi/issues/v1/list", area_ids="No Area", limit=100)
    assert no_area and all(
        {f["id"]: f["value"] for f in r["fields"]}["f--area_id"] is None for r in no_area
    )


# -- checklists ---------------------------------------------------------------------------------
def test_checklists_list_detail_and_headers(field: Field, project: GeneratedProject) -> None:
    main = project.main
    listed = field.ok("GET", "/fieldapi/checklists/v1.json", limit=100)
    assert_shape(listed, [SEED_CHECKLIST_ROW])
    live = [c for c in main.iter_checklists() if not c["deleted"]]
    assert [c["id"] for c in listed] == [c["id"] for c in live][:100]
    headers = field.ok("POST", "/api/get_checklist_headers", limit=100, application_version="4.7")
    deleted = [h for h in headers if h["deleted"]]
    assert deleted and all(h["deleted_at"] for h in deleted)
    assert (
        field.get(f"/fieldapi/checklists/v1/{deleted[0]['completed_checklist_id']}").status_code
        == 404
    )
    linked_issue_ids = []
    for row in listed:
        detail = field.ok("GET", f"/fieldapi/checklists/v1/{row['id']}.json")
        assert_shape(detail, SEED_CHECKLIST)
        for section in detail["sections"]:
            for item in section["items"]:
                assert item["is_conforming"] in ("Yes", "No", "Other")
                linked_issue_ids += [link["id"] for link in item["issues"]]
        for signature in detail["signatures"]:
            assert f"ticket={field.ticket}" in signature["original_url"]
    assert linked_issue_ids
    retrieved = field.ok(
        "POST", "/fieldapi/issues/v1/retrieve", ids=",".join(dict.fromkeys(linked_issue_ids))
    )
    assert len(retrieved) == len(set(linked_issue_ids))
    assert field.get("/fieldapi/checklists/v1/nope").status_code == 404


# -- binary data --------------------------------------------------------------------------------
def test_binary_data_streams_the_generator_bytes(field: Field, project: GeneratedProject) -> None:
    record = _issue_with(
        project,
        lambda r: any(a["type"] == "Attachment" and a["size"] > 200_000 for a in r["attachments"]),
    )
    item = next(a for a in record["attachments"] if a["type"] == "Attachment")
    reply = field.post("/api/binary_data", object_type="Attachment", object_id=item["id"])
    assert reply.status_code == 200
    assert int(reply.headers["Content-Length"]) == item["size"] == len(reply.content)
    assert reply.headers["Content-Type"] == item["content_type"]
    assert hashlib.sha256(reply.content).hexdigest() == project.attachment_sha256(
        item["id"], item["size"], item["content_type"]
    )
    thumb = field.post(
        "/api/binary_data", object_type="Attachment", object_id=item["id"], image_type="thumb"
    )
    assert thumb.status_code == 200 and 0 < len(thumb.content) < item["size"]
    assert (
        field.post(
            "/api/binary_data", object_type="Attachment", object_id=project.main.issue_id(0)
        ).status_code
        == 404
    )
    groups = item["id"].split("-")
    no_such_slot = "-".join(groups[:3] + ["7ffe"] + groups[4:])
    assert (
        field.post("/api/binary_data", object_type="Attachment", object_id=no_such_slot).status_code
        == 404
    )
    assert field.post("/api/binary_data", object_type="Attachment").status_code == 400
    assert field.post("/api/binary_data", object_id=item["id"]).status_code == 400
    assert (
        field.post("/api/binary_data", object_type="Photo", object_id=item["id"]).status_code == 400
    )
    assert (
        field.post(
            "/api/binary_data", object_type="Attachment", object_id=item["id"], page=5
        ).status_code
        == 404
    )


def test_binary_data_for_signatures_and_document_references(
    field: Field, project: GeneratedProject
) -> None:
    checklist = next(
        c for c in project.main.iter_checklists() if c["signatures"] and not c["deleted"]
    )
    signature = checklist["signatures"][0]
    reply = field.post("/api/binary_data", object_type="Signature", object_id=signature["id"])
    assert reply.status_code == 200 and len(reply.content) == signature["size"]
    assert reply.content.startswith(b"\x89PNG")
    record = _issue_with(
        project, lambda r: any(a["type"] == "DocumentReference" for a in r["attachments"])
    )
    reference = next(a for a in record["attachments"] if a["type"] == "DocumentReference")
    by_reference = field.post(
        "/api/binary_data", object_type="DocumentReference", object_id=reference["id"]
    )
    by_document = field.post(
        "/api/binary_data", object_type="Document", object_id=reference["document_id"]
    )
    assert by_reference.status_code == by_document.status_code == 200
    assert by_reference.content == by_document.content
    assert by_reference.content.startswith(b"%PDF")
    uri = _issue_with(project, lambda r: any(a["type"] == "UriReference" for a in r["attachments"]))
    uri_id = next(a["id"] for a in uri["attachments"] if a["type"] == "UriReference")
    assert (
        field.post("/api/binary_data", object_type="Attachment", object_id=uri_id).status_code
        == 404
    )


@pytest.mark.slow
def test_a_50_mb_attachment_streams_without_being_held() -> None:
    size = 50 * 1024 * 1024
    project = GeneratedProject(issues=20, big_attachment_size=size)
    running = Field(project)
    try:
        big = next(a for a in project.main.issue(0)["attachments"] if a["size"] == size)
        digest = hashlib.sha256()
        tracemalloc.start()
        tracemalloc.reset_peak()
        with running.http.post(
            f"{running.url}/api/binary_data",
            stream=True,
            data={
                "ticket": running.ticket,
                "project_id": running.project_id,
                "object_type": "Attachment",
                "object_id": big["id"],
            },
        ) as reply:
            assert int(reply.headers["Content-Length"]) == size
            received = 0
            for chunk in reply.iter_content(256 * 1024):
                digest.update(chunk)
                received += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert received == size
        assert digest.hexdigest() == project.attachment_sha256(big["id"], size, big["content_type"])
        print(
            f"\n50 MB download: peak traced Python memory (server + client) {peak / 2**20:.2f} MiB"
        )
        assert peak < 8 * 2**20, f"streaming held {peak / 2**20:.1f} MiB"
    finally:
        running.close()


# -- faults -------------------------------------------------------------------------------------
def test_injected_error_is_a_5xx_once(fresh: Field) -> None:
    fresh.app.faults.inject("error", path="/fieldapi/issues/v1/search")
    assert fresh.post("/fieldapi/issues/v1/search").status_code in (500, 502, 503)
    assert fresh.post("/fieldapi/issues/v1/search").status_code == 200


def test_injected_rate_limit_carries_retry_after(fresh: Field) -> None:
    fresh.app.faults.inject("rate_limit", path="/api/get_issues", retry_after=0)
    reply = fresh.post("/api/get_issues")
    assert reply.status_code == 429 and reply.headers["Retry-After"] == "0"
    assert fresh.post("/api/get_issues").status_code == 200


def test_injected_drop_cuts_the_body(fresh: Field) -> None:
    fresh.app.faults.inject("drop", path="/api/get_issues")
    with pytest.raises(requests.exceptions.RequestException):
        fresh.post("/api/get_issues").json()
    assert fresh.post("/api/get_issues").status_code == 200


def test_injected_slow_delays_the_answer(fresh: Field) -> None:
    fresh.app.faults.configure(FaultConfig(slow_seconds=0.4))
    fresh.app.faults.inject("slow", path="/api/projects")
    started = time.monotonic()
    assert fresh.post("/api/projects").status_code == 200
    assert time.monotonic() - started >= 0.4  # a lower bound: holds however busy the machine
    assert fresh.app.faults.fired["slow"] == 1
    assert fresh.post("/api/projects").status_code == 200
    assert fresh.app.faults.fired["slow"] == 1  # the injection was used up by one request


def test_lost_logout_still_expires_the_ticket(fresh: Field) -> None:
    fresh.app.faults.inject("lost_response", path="/api/logout")
    with pytest.raises(requests.exceptions.RequestException):
        fresh.post("/api/logout").json()
    assert fresh.post("/api/projects").status_code == 401


def test_random_faults_leave_auth_first(fresh: Field) -> None:
    fresh.app.faults.configure(FaultConfig(error_rate=1.0))
    assert requests.post(f"{fresh.url}/api/projects").status_code == 401
    assert fresh.post("/api/projects").status_code in (500, 502, 503)


# -- determinism and mutations ------------------------------------------------------------------
def _snapshot(running: Field) -> list[str]:
    calls = [
        ("POST", "/fieldapi/admin/v1/locations", {}),
        ("POST", "/fieldapi/admin/v1/users", {}),
        ("POST", "/fieldapi/issues/v1/search", {"limit": 100}),
        ("POST", "/api/get_issues", {"limit": 100, "offset": 20}),
        (
            "POST",
            "/fieldapi/issues/v1/retrieve",
            {"ids": ",".join(running.project.main.issue_id(i) for i in range(40))},
        ),
        ("GET", f"/api/v1/projects/{running.project_id}/issue_changes", {}),
        ("POST", "/api/get_checklist_headers", {"limit": 100}),
    ]
    answers = []
    for method, path, params in calls:
        reply = (running.post if method == "POST" else running.get)(path, **params)
        assert reply.status_code == 200
        answers.append(reply.text.replace(running.ticket, "T").replace(running.url, "U"))
    first = running.ok("GET", "/fieldapi/checklists/v1", limit=3)
    for row in first:
        answers.append(
            running.get(f"/fieldapi/checklists/v1/{row['id']}")
            .text.replace(running.ticket, "T")
            .replace(running.url, "U")
        )
    return answers


def test_same_seed_same_answers_other_seed_other_answers() -> None:
    servers = [Field(GeneratedProject(seed=s, issues=80)) for s in (11, 11, 12)]
    try:
        one, two, other = (_snapshot(s) for s in servers)
        assert one == two
        assert all(a != b for a, b in zip(one, other, strict=True))
    finally:
        for server in servers:
            server.close()


def _fields(record: dict[str, Any]) -> dict[str, Any]:
    return {f["id"]: f["value"] for f in record["fields"]}


def test_mutations_show_through_every_endpoint(fresh: Field) -> None:
    app, main = fresh.app, fresh.project.main
    before = app.counts()
    target = next(r for r in main.iter_issues() if r["fields"]["f--status"] == "Open")
    issue_id = target["id"]
    old_mobile = next(
        r for r in fresh.ok("POST", "/api/get_issues", limit=100) if r["id"] == issue_id
    )

    app.update_issue(issue_id, status="Closed", priority="High", description="Fixed ✓")
    comment_id = app.add_comment(issue_id, "Closed after walk-through", "demo@example.com")
    attachment_id = app.add_attachment(issue_id, "after repair.jpg", 70_000, "image/jpeg")

    record = fresh.ok("POST", "/fieldapi/issues/v1/retrieve", ids=issue_id)[0]
    values = _fields(record)
    assert (values["f--status"], values["f--priority"], values["f--description"]) == (
        "Closed",
        "High",
        "Fixed ✓",
    )
    assert record["comments"][-1]["id"] == comment_id
    assert record["attachments"][-1]["id"] == attachment_id
    searched = next(
        r for r in fresh.ok("POST", "/fieldapi/issues/v1/search", limit=100) if r["id"] == issue_id
    )
    assert searched["closed_at"] and _fields(searched)["f--status"] == "Closed"
    mobile = next(r for r in fresh.ok("POST", "/api/get_issues", limit=100) if r["id"] == issue_id)
    assert mobile["updated_at"] > old_mobile["updated_at"]
    assert mobile != old_mobile and mobile["comments"][-1]["comment_text"].startswith("Closed")
    history = fresh.ok("GET", f"/api/v1/projects/{fresh.project_id}/issue_changes/{issue_id}")
    assert [h["status"] for h in history][-2:] == ["Open", "Closed"]
    download = fresh.post("/api/binary_data", object_type="Attachment", object_id=attachment_id)
    assert len(download.content) == 70_000

    new_id = app.add_issue(description="Added during the freeze", status="Open")
    assert fresh.ok("POST", "/fieldapi/issues/v1/retrieve", ids=new_id)[0]["id"] == new_id
    assert fresh.ok("POST", "/fieldapi/issues/v1/search", count=1) == {"count": 61}

    app.void_issue(new_id)
    assert new_id in fresh.ok("POST", "/api/get_voided_issues")
    assert new_id not in {r["id"] for r in fresh.ok("POST", "/api/get_issues", offset=50)}

    app.delete_issue(issue_id)
    assert fresh.post("/fieldapi/issues/v1/retrieve", ids=issue_id).status_code == 404
    assert (
        fresh.post(
            "/api/binary_data", object_type="Attachment", object_id=attachment_id
        ).status_code
        == 404
    )
    assert issue_id not in {
        r["id"] for r in fresh.ok("POST", "/fieldapi/issues/v1/search", limit=100)
    }
    after = app.counts()
    assert after["issues"] == before["issues"]  # one added, one deleted
    assert after["voided_issues"] == before["voided_issues"] + 1
    with pytest.raises(KeyError):
        app.update_issue(issue_id, status="Open")
    with pytest.raises(ValueError):
        app.update_issue(main.issue_id(2), status="Parked")


def test_counts_agree_with_the_api(fresh: Field) -> None:
    counts = fresh.app.counts()
    assert counts["issues"] == fresh.ok("POST", "/fieldapi/issues/v1/search", count=1)["count"]
    assert counts["voided_issues"] == len(fresh.ok("POST", "/api/get_voided_issues"))
    assert counts["issue_changes"] == len(
        fresh.ok("GET", f"/api/v1/projects/{fresh.project_id}/issue_changes")
    )
    assert counts["areas"] == len(fresh.ok("POST", "/fieldapi/admin/v1/locations"))
    assert counts["users"] == len(fresh.ok("POST", "/fieldapi/admin/v1/users"))
    assert counts["checklists"] == len(fresh.ok("GET", "/fieldapi/checklists/v1", limit=100))
    assert counts["checklists"] + counts["deleted_checklists"] == len(
        fresh.ok("POST", "/api/get_checklist_headers", limit=100, application_version="1.11")
    )
    retrieved = fresh.ok(
        "POST",
        "/fieldapi/issues/v1/retrieve",
        ids=",".join(fresh.project.main.issue_id(i) for i in range(60)),
    )
    assert counts["comments"] == sum(len(r["comments"]) for r in retrieved)
    assert counts["issue_attachments"] == sum(
        1 for r in retrieved for a in r["attachments"] if a["type"] == "Attachment"
    )


def test_concurrent_readers_and_writers_agree(fresh: Field) -> None:
    errors: list[BaseException] = []
    comments_before = fresh.app.counts()["comments"]

    def read() -> None:
        try:
            with requests.Session() as http:
                for _ in range(10):
                    reply = http.post(
                        f"{fresh.url}/api/get_issues",
                        data={"ticket": fresh.ticket, "project_id": fresh.project_id, "limit": 100},
                    )
                    assert reply.status_code == 200
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(4)]
    for thread in readers:
        thread.start()
    for n in range(20):
        fresh.app.add_comment(fresh.project.main.issue_id(n % 10), f"note {n}")
    for thread in readers:
        thread.join()
    assert not errors
    assert fresh.app.counts()["comments"] == comments_before + 20
    retrieved = fresh.ok(
        "POST", "/fieldapi/issues/v1/retrieve", ids=fresh.project.main.issue_id(3)
    )[0]
    assert [c["comment_text"] for c in retrieved["comments"]][-2:] == ["note 3", "note 13"]


# -- scale ----------------------------------------------------------------------------------------
_SCALE_SCRIPT = textwrap.dedent("""
    import json, resource, time
    import requests
    from migrate.sandbox.field_server import FieldApp
    from migrate.sandbox.generator import GeneratedProject
    from migrate.sandbox.httpbase import RunningServer

    def rss_mib():
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize() / 2**20

    def peak_rss_mib():
        # VmHWM, not ru_maxrss: Linux keeps the forking parent's ru_maxrss across exec.
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024

    started = time.monotonic()
    project = GeneratedProject(seed=7, issues=100_000)
    server = RunningServer(FieldApp(project))
    http = requests.Session()
    ticket = http.post(server.url + "/api/login",
                       data={"username": "demo@example.com", "password": "demo"}).json()["ticket"]
    rss_before = rss_mib()
    seen = 0
    while True:
        page = http.post(server.url + "/api/get_issues", data={
            "ticket": ticket, "project_id": project.main.id, "offset": seen, "limit": 100}).json()
        seen += len(page)
        if not page:
            break
    print(json.dumps({"issues": seen, "seconds": time.monotonic() - started,
                      "rss_before_mib": rss_before, "rss_after_mib": rss_mib(),
                      "max_rss_mib": peak_rss_mib(),
                      "voided": len(project.main.voided_indexes())}))
    server.stop()
""")


@pytest.mark.slow
def test_serving_100k_issues_stays_small() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _SCALE_SCRIPT],
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ),
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    print(
        f"\n100k issues: paged {figures['issues']} mobile issues in {figures['seconds']:.1f} s; "
        f"RSS {figures['rss_before_mib']:.0f} MiB before, {figures['rss_after_mib']:.0f} MiB "
        f"after, peak {figures['max_rss_mib']:.0f} MiB"
    )
    assert figures["issues"] == 100_000 - figures["voided"]
    assert figures["max_rss_mib"] < 250


def test_statuses_all_reachable_through_search(field: Field) -> None:
    seen = set()
    offset = 0
    while True:
        page = field.ok("POST", "/fieldapi/issues/v1/search", offset=offset, limit=100)
        seen.update(_fields(r)["f--status"] for r in page)
        offset += 100
        if not page:
            break
    assert seen == set(STATUSES)


# -- checklist templates, rich content, sources, signatures (issue 14 point 5) -------------------
TEMPLATE_KEYS = {"id", "name", "checklist_type", "created_at", "updated_at", "sections"}
TEMPLATE_ITEM_KEYS = {
    "id",
    "question_text",
    "display_type",
    "possible_values",
    "position",
    "display_number",
}


def test_templates_serve_rich_content_only_to_new_enough_clients(
    field: Field, project: GeneratedProject
) -> None:
    main = project.main
    everything = field.ok("POST", "/api/templates", application_version="4.7")
    assert [t["id"] for t in everything] == [t["id"] for t in main.templates]
    for template in everything:
        assert set(template) == TEMPLATE_KEYS
        for section in template["sections"]:
            assert set(section) == {"section_name", "items"}
            assert all(set(item) == TEMPLATE_ITEM_KEYS for item in section["items"])
    shown = {
        item["display_type"]
        for template in everything
        for section in template["sections"]
        for item in section["items"]
    }
    assert {"single-select", "multi-select", "signature", "group_start"} <= shown
    rich = {t["id"] for t in main.templates if t["rich"]}
    for version in (None, "1.10", "1.9.9", "beta"):
        params = {} if version is None else {"application_version": version}
        plain = field.ok("POST", "/api/templates", **params)
        assert {t["id"] for t in plain} == {t["id"] for t in everything} - rich
    one = main.templates[2]["id"]
    assert [t["id"] for t in field.ok("POST", "/api/templates", ids=one)] == [one]
    headers = field.ok("POST", "/api/get_checklist_headers", limit=100)
    all_headers = field.ok(
        "POST", "/api/get_checklist_headers", limit=100, application_version="1.11"
    )
    assert {h["checklist_template_id"] for h in headers}.isdisjoint(rich)
    assert rich <= {h["checklist_template_id"] for h in all_headers}
    assert len(all_headers) == min(100, main.checklist_count)


def test_checklists_of_a_task_or_equipment_and_their_source(
    field: Field, project: GeneratedProject
) -> None:
    main = project.main
    live = [c for c in main.iter_checklists() if not c["deleted"]]
    for kind, catalogue in (("Task", main.tasks), ("Equipment", main.equipment)):
        source = next(c["source"] for c in live if c["source"].get("type") == kind)
        assert source["id"] in {entry["id"] for entry in catalogue}
        listed = field.ok("GET", "/fieldapi/checklists/v1", source_id=source["id"], limit=100)
        expected = [c["id"] for c in live if c["source"].get("id") == source["id"]]
        assert [row["id"] for row in listed] == expected[:100] and expected
        detail = field.ok("GET", f"/fieldapi/checklists/v1/{expected[0]}")
        assert detail["source"] == source
    assert field.ok("GET", "/fieldapi/checklists/v1", source_id="nope") == []


def test_every_signature_a_checklist_names_is_served_as_binary_data(
    field: Field, project: GeneratedProject
) -> None:
    checklist = next(
        c
        for c in project.main.iter_checklists()
        if not c["deleted"] and c["template"]["name"] == "Pre-pour concrete inspection"
    )
    detail = field.ok("GET", f"/fieldapi/checklists/v1/{checklist['id']}")
    signature_ids = [s["id"] for s in detail["signatures"]]
    named = [v["value"] for v in detail["custom_field_values"] if v["display_type"] == "signature"]
    assert set(filter(None, named)) <= set(signature_ids) and any(named)
    for signature_id in signature_ids:
        reply = field.post("/api/binary_data", object_type="Signature", object_id=signature_id)
        assert reply.status_code == 200 and reply.content.startswith(b"\x89PNG")
