"""The Procore simulator over real HTTP on loopback: auth, quota, issues, locations, uploads."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tracemalloc
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from migrate.sandbox.httpbase import RunningServer
from migrate.sandbox.procore_server import ProcoreApp

PROJECT = 5100
OTHER_PROJECT = 5101
COMPANY = 4100


class Api:
    """A tiny Procore caller for tests: token, company header, JSON."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.app: ProcoreApp = server.app  # type: ignore[assignment]
        self.url = server.url
        self.session = requests.Session()
        self.token = self.fetch_token()

    def fetch_token(self) -> str:
        reply = self.session.post(
            f"{self.url}/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": "demo-client",
                "client_secret": "demo-secret",
            },
            timeout=5,
        )
        assert reply.status_code == 200, reply.text
        return reply.json()["access_token"]

    def headers(self, company: int | None = COMPANY) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"}
        if company is not None:
            headers["Procore-Company-Id"] = str(company)
        return headers

    def get(self, path: str, params: Any = None, **kwargs: Any) -> requests.Response:
        return self.session.get(
            self.url + path,
            params=params,
            headers=kwargs.pop("headers", self.headers()),
            timeout=5,
            **kwargs,
        )

    def post(self, path: str, body: Any, **kwargs: Any) -> requests.Response:
        return self.session.post(
            self.url + path,
            json=body,
            headers=kwargs.pop("headers", self.headers()),
            timeout=5,
            **kwargs,
        )

    def patch(self, path: str, body: Any, **kwargs: Any) -> requests.Response:
        return self.session.patch(
            self.url + path,
            json=body,
            headers=kwargs.pop("headers", self.headers()),
            timeout=5,
            **kwargs,
        )

    def sync(self, updates: list[Any], project: int = PROJECT) -> requests.Response:
        return self.patch(
            "/rest/v1.0/coordination_issues/sync", {"project_id": project, "updates": updates}
        )

    def upload(
        self, data: bytes, filename: str = "photo.jpg", content_type: str = "image/jpeg"
    ) -> str:
        """Create an upload and store its bytes; returns the upload uuid."""
        instructions = self.post(
            f"/rest/v1.1/projects/{PROJECT}/uploads",
            {"response_filename": filename, "response_content_type": content_type},
        )
        assert instructions.status_code == 201, instructions.text
        body = instructions.json()
        stored = requests.post(
            body["url"],
            data=body["fields"],
            files={"file": (filename, data, content_type)},
            timeout=10,
        )
        assert stored.status_code == 204, stored.text
        return body["uuid"]


@pytest.fixture
def make_api() -> Iterator[Any]:
    servers: list[RunningServer] = []

    def start(state: dict[str, Any] | None = None, **options: Any) -> Api:
        server = RunningServer(ProcoreApp(state, **options))
        servers.append(server)
        return Api(server)

    yield start
    for server in servers:
        server.stop()
        server.app.close()  # type: ignore[attr-defined]


@pytest.fixture
def api(make_api: Any) -> Api:
    return make_api()


def new_uuid() -> str:
    return str(uuid.uuid4())


# -- auth and headers --------------------------------------------------------------------


def test_token_grant_accepts_the_right_client_and_refuses_others(api: Api) -> None:
    good = requests.post(
        f"{api.url}/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "demo-client",
            "client_secret": "demo-secret",
        },
        timeout=5,
    )
    assert good.status_code == 200
    body = good.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 5400
    assert isinstance(body["created_at"], int) and len(body["access_token"]) > 20
    assert "X-Rate-Limit-Limit" not in good.headers  # the login host is not the REST quota

    bad = requests.post(
        f"{api.url}/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "demo-client",
            "client_secret": "wrong",
        },
        timeout=5,
    )
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"
    assert "wrong" not in bad.text

    password = requests.post(
        f"{api.url}/oauth/token",
        data={"grant_type": "password", "client_id": "demo-client", "client_secret": "demo-secret"},
        timeout=5,
    )
    assert password.status_code == 400 and password.json()["error"] == "unsupported_grant_type"
    assert api.app.rate_stats()["requests"] == 0


def test_rest_calls_need_a_live_bearer_token(api: Api) -> None:
    me = "/rest/v1.0/me"
    assert api.get(me, headers={}).status_code == 401
    unknown = api.get(me, headers={"Authorization": "Bearer not-a-token"})
    assert unknown.status_code == 401 and unknown.json()["error"] == "invalid_token"
    assert "WWW-Authenticate" in unknown.headers
    assert api.get(me).status_code == 200

    api.app.advance_clock(5400 + 1)
    expired = api.get(me)
    assert expired.status_code == 401
    assert expired.json()["error_description"] == "The access token expired"
    api.token = api.fetch_token()
    assert api.get(me).status_code == 200


def test_company_header_is_required_except_for_companies_and_me(api: Api) -> None:
    issues = "/rest/v1.0/coordination_issues"
    missing = api.get(issues, {"project_id": PROJECT}, headers=api.headers(company=None))
    assert missing.status_code == 400
    assert missing.json() == {"errors": "Missing Procore-Company-Id header!"}
    wrong = api.get(issues, {"project_id": PROJECT}, headers=api.headers(company=9999))
    assert wrong.status_code == 403
    assert api.get(issues, {"project_id": PROJECT}).status_code == 200

    companies = api.get("/rest/v1.0/companies", headers=api.headers(company=None))
    assert companies.status_code == 200 and companies.json()[0]["id"] == COMPANY
    assert api.get("/rest/v1.0/me", headers=api.headers(company=None)).status_code == 200
    projects = api.get("/rest/v1.0/projects", {"company_id": COMPANY})
    assert [p["id"] for p in projects.json()] == [PROJECT, OTHER_PROJECT]
    users = api.get(f"/rest/v1.0/projects/{PROJECT}/users").json()
    assert {u["email_address"] for u in users} == {
        "alice.carter@example.com",
        "Bruno.Diaz@example.com",
        "chen.wei@example.com",
    }


def test_unknown_project_is_404_and_another_companys_project_is_403(make_api: Any) -> None:
    api = make_api(
        {
            "company": {"id": COMPANY, "name": "Sandbox Builders"},
            "projects": [
                {"id": PROJECT, "name": "Ours", "company_id": COMPANY},
                {"id": 5199, "name": "Theirs", "company_id": 4199},
            ],
            "users": [],
            "assignee_user_ids": {},
            "locations": {},
            "coordination_issues": {},
        }
    )
    assert api.sync([{"title": "x"}], project=424242).status_code == 404
    assert api.sync([{"title": "x"}], project=5199).status_code == 403
    assert api.sync([{"title": "x"}]).status_code == 200


# -- sync ----------------------------------------------------------------------------------


def test_sync_creates_then_updates_with_full_issue_objects(api: Api) -> None:
    location = api.app.find_or_create_location(PROJECT, ["North Building", "Level 1"])
    created = api.sync(
        [
            {
                "title": "Pipe clash",
                "uuid": new_uuid(),
                "priority": "high",
                "issue_type": "clash",
                "location_id": location["id"],
                "assignee_id": 7002,
                "due_date": "2025-03-01",
                "description": "Sprinkler vs duct",
                "origin": {
                    "title": "Issue 12",
                    "origin_id": "field-12",
                    "origin_type": "bim360field",
                    "deep_link_url": "https://field.example/issues/12",
                },
            },
            {"title": "Second"},
        ]
    )
    assert created.status_code == 200
    body = created.json()
    assert body["errors"] == []
    first, second = body["entities"]
    assert first["issue_number"] == 2 and second["issue_number"] == 3  # seed issue is #1
    assert first["status"] == "open" and first["attachments"] == []
    assert first["location"] == {
        "id": location["id"],
        "name": "North Building>Level 1",
        "node_name": "Level 1",
        "parent_id": location["parent_id"],
    }
    assert first["assignee"] == {
        "id": 7002,
        "name": "Bruno Diaz",
        "login": "Bruno.Diaz@example.com",
        "company_name": "Diaz Mechanical",
    }
    assert first["origin"]["origin_id"] == "field-12"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", first["created_at"])

    updated = api.sync(
        [
            {
                "id": first["id"],
                "title": "Pipe clash (moved)",
                "priority": "low",
                "location_id": None,
                "assignee_id": 7001,
            }
        ]
    ).json()
    assert updated["errors"] == []
    entity = updated["entities"][0]
    assert (entity["title"], entity["priority"], entity["location"]) == (
        "Pipe clash (moved)",
        "low",
        None,
    )
    assert entity["assignee"]["id"] == 7001 and entity["uuid"] == first["uuid"]
    assert len(api.app.issues(PROJECT)) == 3


def test_sync_envelope_refuses_more_than_1000_items(api: Api) -> None:
    too_many = api.sync([{"title": f"t{i}"} for i in range(1001)])
    assert too_many.status_code == 400
    assert "1000" in json.dumps(too_many.json()["errors"])
    assert len(api.app.issues(PROJECT)) == 1
    exactly = api.sync([{"title": f"t{i}"} for i in range(1000)])
    assert exactly.status_code == 200 and len(exactly.json()["entities"]) == 1000
    assert api.sync(None).status_code == 400  # type: ignore[arg-type]


def test_title_limit_counts_code_points(api: Api) -> None:
    # 80 code points but 200+ UTF-8 bytes and fewer grapheme clusters: still valid.
    fancy = ("🏗" * 30) + ("e\u0301" * 20) + ("Ж" * 10)
    assert len(fancy) == 80 and len(fancy.encode()) > 80
    reply = api.sync(
        [{"title": fancy}, {"title": "x" * 81}, {"title": fancy + "!"}, {"title": "   "}, {}]
    ).json()
    assert [e["title"] for e in reply["entities"]] == [fancy]
    assert [e["errors"] for e in reply["errors"]] == [
        {"title": ["is too long (maximum is 80 characters)"]},
        {"title": ["is too long (maximum is 80 characters)"]},
        {"title": ["can't be blank"]},
        {"title": ["can't be blank"]},
    ]
    assert api.app.issues(PROJECT)[-1]["title"] == fancy


def test_reused_uuid_is_taken_even_within_one_batch_and_in_other_case(api: Api) -> None:
    key = new_uuid()
    reply = api.sync([{"title": "a", "uuid": key}, {"title": "b", "uuid": key}]).json()
    assert len(reply["entities"]) == 1
    assert reply["errors"] == [
        {"title": "b", "uuid": key, "errors": {"uuid": ["has already been taken"]}}
    ]
    again = api.sync([{"title": "c", "uuid": key.upper()}]).json()
    assert again["errors"][0]["errors"] == {"uuid": ["has already been taken"]}
    bad = api.sync([{"title": "d", "uuid": "not-a-uuid"}]).json()
    assert bad["errors"][0]["errors"] == {"uuid": ["is not a valid UUID"]}
    # The same uuid in another project is a different issue.
    assert api.sync([{"title": "e", "uuid": key}], project=OTHER_PROJECT).json()["errors"] == []


def test_sync_update_may_not_touch_status_or_attachments(api: Api) -> None:
    issue = api.sync([{"title": "keep me"}]).json()["entities"][0]
    upload = api.upload(b"late attachment")
    reply = api.sync(
        [
            {"id": issue["id"], "status": "closed"},
            {"id": issue["id"], "attachment_upload_uuids": [upload], "title": "changed"},
            {"id": issue["id"], "uuid": new_uuid()},
            {"id": 999999, "title": "ghost"},
        ]
    ).json()
    assert reply["entities"] == []
    errors = [set(e["errors"]) for e in reply["errors"]]
    assert errors == [{"status"}, {"attachment_upload_uuids"}, {"uuid"}, {"id"}]
    shown = api.get(f"/rest/v1.0/coordination_issues/{issue['id']}", {"project_id": PROJECT}).json()
    assert (shown["title"], shown["status"]) == ("keep me", "open")
    assert api.app.uploads(PROJECT)[0]["state"] == "stored"  # not consumed by the refusal


def test_sync_checks_references_enums_and_dates(api: Api) -> None:
    foreign = api.app.find_or_create_location(OTHER_PROJECT, ["Depot"])
    reply = api.sync(
        [
            {"title": "a", "location_id": foreign["id"]},
            {"title": "b", "location_id": 123456789},
            {"title": "c", "assignee_id": 7003},  # a project user, but not an assignee
            {"title": "d", "assignee_id": 7004},  # an assignee of the other project only
            {"title": "e", "status": "parked", "priority": "urgent", "issue_type": "rfi"},
            {"title": "f", "due_date": "03/01/2025"},
            {"title": "g", "due_date": "2025-02-30"},
            {"title": "h", "colour": "red"},
            {"title": "i", "location_id": "12"},
        ]
    ).json()
    assert reply["entities"] == []
    assert [e["errors"] for e in reply["errors"]] == [
        {"location_id": ["must be a location in this project"]},
        {"location_id": ["must be a location in this project"]},
        {"assignee_id": ["is not a permitted assignee on this project"]},
        {"assignee_id": ["is not a permitted assignee on this project"]},
        {
            "status": ["is not included in the list"],
            "priority": ["is not included in the list"],
            "issue_type": ["is not included in the list"],
        },
        {"due_date": ["must be a date formatted YYYY-MM-DD"]},
        {"due_date": ["must be a date formatted YYYY-MM-DD"]},
        {"colour": ["is not a permitted attribute"]},
        {"location_id": ["must be a location in this project"]},
    ]


def test_mixed_batch_keeps_the_good_items_in_order(api: Api) -> None:
    good_key = new_uuid()
    bad = {"title": "bad", "priority": "sky-high"}
    reply = api.sync([{"title": "good 1", "uuid": good_key}, bad, {"title": "good 2"}]).json()
    assert [e["title"] for e in reply["entities"]] == ["good 1", "good 2"]
    assert reply["errors"] == [{**bad, "errors": {"priority": ["is not included in the list"]}}]
    titles = [i["title"] for i in api.app.issues(PROJECT)]
    assert titles[-2:] == ["good 1", "good 2"] and "bad" not in titles


# -- single create, show, update, list ------------------------------------------------------


def test_single_create_show_and_status_update(api: Api) -> None:
    created = api.post(
        "/rest/v1.0/coordination_issues",
        {"project_id": PROJECT, "coordination_issue": {"title": "Single", "priority": "medium"}},
    )
    assert created.status_code == 201
    issue = created.json()
    invalid = api.post(
        "/rest/v1.0/coordination_issues",
        {"project_id": PROJECT, "coordination_issue": {"title": "x" * 81}},
    )
    assert invalid.status_code == 422
    assert invalid.json() == {"errors": {"title": ["is too long (maximum is 80 characters)"]}}

    path = f"/rest/v1.0/coordination_issues/{issue['id']}"
    normal = api.get(path, {"project_id": PROJECT}).json()
    assert "attachments" not in normal and normal["title"] == "Single"
    assert api.get(path, {"project_id": PROJECT, "view": "extended"}).json()["attachments"] == []
    assert api.get(path, {"project_id": OTHER_PROJECT}).status_code == 404

    for status in ("ready_for_review", "closed", "open", "blocked"):
        moved = api.patch(path, {"project_id": PROJECT, "coordination_issue": {"status": status}})
        assert moved.status_code == 200 and moved.json()["status"] == status
    upload = api.upload(b"bytes")
    refused = api.patch(
        path, {"project_id": PROJECT, "coordination_issue": {"attachment_upload_uuids": [upload]}}
    )
    assert refused.status_code == 422 and "attachment_upload_uuids" in refused.json()["errors"]
    assert (
        api.patch(
            path, {"project_id": PROJECT, "coordination_issue": {"status": "done"}}
        ).status_code
        == 422
    )
    assert (
        api.patch(
            "/rest/v1.0/coordination_issues/999999",
            {"project_id": PROJECT, "coordination_issue": {"status": "open"}},
        ).status_code
        == 404
    )


def test_list_pages_with_headers_filters_and_views(api: Api) -> None:
    api.sync([{"title": f"Batch item {n}"} for n in range(1, 8)])  # issue numbers 2..8
    listing = "/rest/v1.0/coordination_issues"
    first = api.get(listing, {"project_id": PROJECT, "per_page": 3})
    assert first.headers["Total"] == "8" and first.headers["Per-Page"] == "3"
    assert len(first.json()) == 3 and 'rel="next"' in first.headers["Link"]
    next_url = re.search(r'<([^>]+)>; rel="next"', first.headers["Link"]).group(1)
    second = api.session.get(next_url, headers=api.headers(), timeout=5)
    assert [i["issue_number"] for i in second.json()] == [4, 5, 6]
    last = api.get(listing, {"project_id": PROJECT, "per_page": 3, "page": 3})
    assert len(last.json()) == 2 and 'rel="next"' not in last.headers["Link"]
    assert api.get(listing, {"project_id": PROJECT, "per_page": 500}).headers["Per-Page"] == "100"
    assert api.get(listing, {"project_id": PROJECT, "page": 0}).status_code == 400

    everything = api.get(listing, {"project_id": PROJECT}).json()
    assert "attachments" not in everything[0]
    wanted = [everything[1]["id"], everything[4]["id"]]
    by_ids = api.get(listing, {"project_id": PROJECT, "filters[ids][]": wanted}).json()
    assert [i["id"] for i in by_ids] == wanted
    by_title = api.get(listing, {"project_id": PROJECT, "filters[search]": "item 7"}).json()
    assert [i["title"] for i in by_title] == ["Batch item 7"]
    by_number = api.get(listing, {"project_id": PROJECT, "filters[search]": "8"}).json()
    assert [(i["issue_number"], i["title"]) for i in by_number] == [(8, "Batch item 7")]
    compact = api.get(listing, {"project_id": PROJECT, "view": "compact"}).json()
    assert compact[0] == {"id": everything[0]["id"]}
    extended = api.get(listing, {"project_id": PROJECT, "view": "extended"}).json()
    assert extended[0]["attachments"] == []
    assert api.get(listing, {"project_id": PROJECT, "filters[status]": "open"}).status_code == 400

    api.app.advance_clock(120)
    changed = api.sync([{"id": everything[2]["id"], "title": "Touched later"}]).json()
    since = changed["entities"][0]["updated_at"]
    recent = api.get(
        listing, {"project_id": PROJECT, "filters[updated_at]": f"{since}...2999-01-01T00:00:00Z"}
    ).json()
    assert [i["title"] for i in recent] == ["Touched later"]


def test_assignees_list_who_can_be_assigned(api: Api) -> None:
    reply = api.get("/rest/v1.0/coordination_issues/assignees", {"project_id": PROJECT})
    assert reply.status_code == 200
    assert reply.json() == [
        {
            "id": 7001,
            "name": "Alice Carter",
            "login": "alice.carter@example.com",
            "company_name": "Sandbox Builders",
        },
        {
            "id": 7002,
            "name": "Bruno Diaz",
            "login": "Bruno.Diaz@example.com",
            "company_name": "Diaz Mechanical",
        },
    ]


# -- locations -----------------------------------------------------------------------------


def test_find_or_create_by_path_creates_missing_ancestors(api: Api) -> None:
    path = f"/rest/v1.0/projects/{PROJECT}/locations"
    existing = api.post(
        f"{path}/find_or_create_by_path", {"location": {"path": ["North Building", "Level 1"]}}
    )
    assert existing.status_code == 200 and existing.json()["name"] == "North Building>Level 1"
    before = int(api.get(path).headers["Total"])
    created = api.post(
        f"{path}/find_or_create_by_path",
        {"location": {"path": ["South Building", "Level 3", "Plant Room"]}},
    )
    assert created.status_code == 201
    leaf = created.json()
    assert (leaf["name"], leaf["node_name"]) == ("South Building>Level 3>Plant Room", "Plant Room")
    assert int(api.get(path).headers["Total"]) == before + 3
    children = api.get(path, {"filters[parent_id]": leaf["parent_id"]}).json()
    assert [c["id"] for c in children] == [leaf["id"]]
    assert [loc["node_name"] for loc in api.get(path, {"filters[search]": "plant"}).json()] == [
        "Plant Room"
    ]
    again = api.post(
        f"{path}/find_or_create_by_path",
        {"location": {"path": ["South Building", "Level 3", "Plant Room"]}},
    )
    assert again.status_code == 200 and again.json()["id"] == leaf["id"]
    for bad in ([], ["North Building", "  "], ["ok", 3]):
        refused = api.post(f"{path}/find_or_create_by_path", {"location": {"path": bad}})
        assert refused.status_code == 422, bad


def test_admin_location_create_refuses_duplicates(api: Api) -> None:
    path = f"/rest/v1.0/projects/{PROJECT}/locations"
    root = api.post(path, {"location": {"node_name": "Car Park", "parent_id": None}})
    assert root.status_code == 201 and root.json()["parent_id"] is None
    child = api.post(path, {"location": {"node_name": "P1", "parent_id": root.json()["id"]}})
    assert child.status_code == 201 and child.json()["name"] == "Car Park>P1"
    duplicate = api.post(path, {"location": {"node_name": "P1", "parent_id": root.json()["id"]}})
    assert duplicate.status_code == 422
    assert duplicate.json() == {"errors": {"node_name": ["has already been taken"]}}
    orphan = api.post(path, {"location": {"node_name": "X", "parent_id": 1}})
    assert orphan.status_code == 422


# -- uploads -------------------------------------------------------------------------------


def test_upload_flow_attaches_the_exact_bytes(api: Api) -> None:
    data = os.urandom(300_000)
    upload = api.upload(data, filename="clash photo.jpg")
    assert api.app.uploads(PROJECT)[0]["state"] == "stored"
    created = api.sync([{"title": "With photo", "attachment_upload_uuids": [upload]}]).json()
    assert created["errors"] == []
    attachment = created["entities"][0]["attachments"][0]
    assert (attachment["name"], attachment["content_type"]) == ("clash photo.jpg", "image/jpeg")
    assert set(attachment) == {"id", "name", "content_type", "url"}
    downloaded = requests.get(attachment["url"], timeout=10)
    assert downloaded.status_code == 200
    assert hashlib.sha256(downloaded.content).digest() == hashlib.sha256(data).digest()
    stored = api.app.issues(PROJECT)[-1]["attachments"][0]
    assert stored["sha256"] == hashlib.sha256(data).hexdigest() and stored["size"] == len(data)
    assert api.app.uploads(PROJECT)[0]["state"] == "referenced"

    reused = api.sync([{"title": "Again", "attachment_upload_uuids": [upload]}]).json()
    assert "already attached" in reused["errors"][0]["errors"]["attachment_upload_uuids"][0]
    with_token = requests.get(attachment["url"], headers=api.headers(), timeout=5)
    assert with_token.status_code == 400
    api.app.advance_clock(3601)
    assert requests.get(attachment["url"], timeout=5).status_code == 403  # presigned URL expired


def test_storage_refuses_altered_missing_late_or_doubly_authorised_posts(api: Api) -> None:
    def instructions() -> dict[str, Any]:
        reply = api.post(
            f"/rest/v1.1/projects/{PROJECT}/uploads",
            {"response_filename": "a.pdf", "response_content_type": "application/pdf"},
        )
        assert reply.status_code == 201
        return reply.json()

    def store(body: dict[str, Any], fields: dict[str, str], **kwargs: Any) -> requests.Response:
        return requests.post(
            body["url"],
            data=fields,
            files={"file": ("a.pdf", b"%PDF-1.4", "application/pdf")},
            timeout=5,
            **kwargs,
        )

    body = instructions()
    assert {"key", "policy", "x-amz-signature"} <= set(body["fields"])
    altered = {**body["fields"], "Content-Type": "image/png"}
    assert store(body, altered).status_code == 403
    missing = {k: v for k, v in body["fields"].items() if k != "x-amz-date"}
    assert store(body, missing).status_code == 403
    assert (
        store(body, {**body["fields"], "policy": body["fields"]["policy"] + "x"}).status_code == 403
    )
    assert store(body, {**body["fields"], "acl": "public-read"}).status_code == 403
    sent_token = store(body, body["fields"], headers={"Authorization": f"Bearer {api.token}"})
    assert sent_token.status_code == 400 and "<Code>InvalidArgument</Code>" in sent_token.text
    assert store(body, body["fields"]).status_code == 204  # the untouched form still works

    late = instructions()
    api.app.advance_clock(3601)
    assert store(late, late["fields"]).status_code == 403
    unstored = instructions()["uuid"]
    reply = api.sync([{"title": "No bytes", "attachment_upload_uuids": [unstored]}]).json()
    assert "post it to storage first" in reply["errors"][0]["errors"]["attachment_upload_uuids"][0]
    ghost = api.sync([{"title": "Ghost", "attachment_upload_uuids": ["01NOPE"]}]).json()
    assert "does not exist" in ghost["errors"][0]["errors"]["attachment_upload_uuids"][0]

    stale = api.upload(b"old")
    api.app.advance_clock(7 * 24 * 3600 + 1)
    api.token = api.fetch_token()
    expired = api.sync([{"title": "Stale", "attachment_upload_uuids": [stale]}]).json()
    assert "expired" in expired["errors"][0]["errors"]["attachment_upload_uuids"][0]
    # 4 upload creates + 3 syncs; the 8 storage posts were not counted against the quota.
    assert api.app.rate_stats()["requests"] == 7


class _StreamedForm:
    """A multipart body generated on the fly, so the client holds no copy of the file either."""

    def __init__(self, fields: dict[str, str], size: int, seed: bytes) -> None:
        self.boundary = "sandbox" + uuid.uuid4().hex
        head = "".join(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
            for k, v in fields.items()
        )
        head += (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="file"; '
            'filename="big.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
        )
        self.head = head.encode()
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()
        self.size = size
        self.block = hashlib.sha256(seed).digest() * 2048  # 64 KiB of repeating bytes
        self.sha256 = hashlib.sha256()
        self._parts = self._generate()
        self._pending = b""

    def _generate(self) -> Iterator[bytes]:
        yield self.head
        left = self.size
        while left > 0:
            piece = self.block[: min(left, len(self.block))]
            self.sha256.update(piece)
            left -= len(piece)
            yield piece
        yield self.tail

    def __len__(self) -> int:
        return len(self.head) + self.size + len(self.tail)

    def read(self, amount: int = -1) -> bytes:
        while not self._pending:
            self._pending = next(self._parts, b"")
            if not self._pending:
                return b""
        out, self._pending = self._pending[:amount], self._pending[amount:]
        return out


def test_storage_streams_a_large_file_without_holding_it(api: Api) -> None:
    reply = api.post(
        f"/rest/v1.1/projects/{PROJECT}/uploads",
        {"response_filename": "big.bin", "response_content_type": "application/octet-stream"},
    )
    body = reply.json()
    form = _StreamedForm(body["fields"], 24 * 1024 * 1024, b"seed")
    tracemalloc.start()
    try:
        stored = requests.post(
            body["url"],
            data=form,
            timeout=30,
            headers={"Content-Type": f"multipart/form-data; boundary={form.boundary}"},
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stored.status_code == 204, stored.text
    assert peak < 4 * 1024 * 1024, f"peak traced memory {peak} bytes for a 24 MiB upload"
    snapshot = api.app.uploads(PROJECT)[0]
    assert snapshot["size"] == 24 * 1024 * 1024
    assert snapshot["sha256"] == form.sha256.hexdigest()


# -- rate limits ---------------------------------------------------------------------------


def test_every_rest_response_carries_rate_limit_headers(api: Api) -> None:
    api.app.faults.inject("error", path="/rest/v1.0/me")
    replies = [
        api.get("/rest/v1.0/me"),  # injected 5xx
        api.get("/rest/v1.0/me"),
        api.get("/rest/v1.0/me", headers={}),  # 401
        api.get("/rest/v1.0/coordination_issues/1", {"project_id": PROJECT}),  # 404
        api.get("/rest/v1.0/no_such_endpoint"),  # unrouted
    ]
    assert [r.status_code for r in replies][1:] == [200, 401, 404, 404]
    assert replies[0].status_code >= 500
    remaining = [int(r.headers["X-Rate-Limit-Remaining"]) for r in replies]
    assert remaining == [149, 148, 147, 146, 145]
    for reply in replies:
        assert reply.headers["X-Rate-Limit-Limit"] == "150"
        assert int(reply.headers["X-Rate-Limit-Reset"]) >= int(api.app.now())
    assert api.app.rate_stats()["requests"] == 5


def test_spike_window_answers_429_with_retry_after(make_api: Any) -> None:
    api = make_api(spike_limit=5, spike_window=10.0)
    for _ in range(5):
        assert api.get("/rest/v1.0/me").status_code == 200
    limited = api.get("/rest/v1.0/me")
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 10
    assert limited.headers["X-Rate-Limit-Remaining"] == "0"
    assert limited.headers["X-Rate-Limit-Limit"] == "5"
    assert "surpassed the max number of requests" in limited.text
    stats = api.app.rate_stats()
    assert (stats["requests"], stats["rate_limited"], stats["max_in_spike_window"]) == (6, 1, 6)
    api.app.advance_clock(10.5)
    assert api.get("/rest/v1.0/me").status_code == 200


def test_hourly_window_is_reported_when_it_is_closer_to_running_out(make_api: Any) -> None:
    api = make_api(hourly_limit=4, spike_limit=100)
    first = api.get("/rest/v1.0/me")
    assert first.headers["X-Rate-Limit-Limit"] == "4"
    assert first.headers["X-Rate-Limit-Remaining"] == "3"
    for _ in range(3):
        api.get("/rest/v1.0/companies", headers=api.headers(company=None))
    limited = api.get("/rest/v1.0/me")
    assert limited.status_code == 429
    assert 3500 <= int(limited.headers["Retry-After"]) <= 3600
    api.app.advance_clock(3601)
    assert api.get("/rest/v1.0/me").status_code == 200


def _align_clock(api: Api, length: float, into: float) -> None:
    """Move the simulator's clock to ``into`` seconds after a multiple of ``length``."""
    now = api.app.now()
    api.app.advance_clock(math.ceil(now / length) * length + into - now)


@pytest.mark.parametrize(("rate_windows", "free_after_reset"), [("sliding", 2), ("fixed", 5)])
def test_window_reading_decides_what_frees_at_the_reset(
    make_api: Any, rate_windows: str, free_after_reset: int
) -> None:
    # Two requests early in a 10 s window, three 5 s later. 10.5 s after the first two, a
    # sliding log has let just those two go; a fixed window has started afresh.
    api = make_api(spike_limit=5, spike_window=10.0, rate_windows=rate_windows)
    _align_clock(api, 10.0, 0.5)
    statuses = [api.get("/rest/v1.0/me").status_code for _ in range(2)]
    api.app.advance_clock(5.0)
    statuses += [api.get("/rest/v1.0/me").status_code for _ in range(4)]
    assert statuses == [200] * 5 + [429]
    limited_reset = int(api.get("/rest/v1.0/me").headers["X-Rate-Limit-Reset"])
    api.app.advance_clock(5.0)
    after = [api.get("/rest/v1.0/me").status_code for _ in range(free_after_reset + 1)]
    assert after == [200] * free_after_reset + [429]
    if rate_windows == "fixed":  # the reset is the end of the fixed window: a multiple of 10
        assert limited_reset % 10 == 0
    assert api.app.rate_stats()["rate_windows"] == rate_windows


@pytest.mark.parametrize("retry_after", [True, False])
def test_429_carries_retry_after_only_when_switched_on(make_api: Any, retry_after: bool) -> None:
    api = make_api(spike_limit=1, retry_after=retry_after)
    assert api.get("/rest/v1.0/me").status_code == 200
    limited = api.get("/rest/v1.0/me")
    assert limited.status_code == 429
    assert ("Retry-After" in limited.headers) is retry_after
    assert int(limited.headers["X-Rate-Limit-Reset"]) >= int(api.app.now())


def test_unknown_window_reading_is_refused() -> None:
    with pytest.raises(ValueError, match="rate_windows"):
        ProcoreApp(rate_windows="leaky")


def test_failed_requests_consume_quota(make_api: Any) -> None:
    api = make_api(spike_limit=3)
    assert api.get("/rest/v1.0/me", headers={}).status_code == 401
    assert api.get("/rest/v1.0/coordination_issues", {"project_id": 1}).status_code == 404
    assert api.sync([{"title": "x"}] * 1001).status_code == 400
    assert api.get("/rest/v1.0/me").status_code == 429
    assert api.app.rate_stats()["quota_rejections"] == 1


# -- faults --------------------------------------------------------------------------------


def test_error_and_rate_limit_faults_apply_nothing(api: Api) -> None:
    api.app.faults.inject("error", path="coordination_issues/sync")
    failed = api.sync([{"title": "lost to 5xx"}])
    assert failed.status_code in (500, 502, 503) and "X-Rate-Limit-Limit" in failed.headers
    api.app.faults.inject("rate_limit", path="coordination_issues/sync", retry_after=2)
    limited = api.sync([{"title": "lost to 429"}])
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "2"
    assert [i["title"] for i in api.app.issues(PROJECT)] == ["Existing duct clash at grid C4"]
    assert api.app.call_counts()["coordination_issues.sync"] == 2
    assert api.app.rate_stats()["rate_limited"] == 1


def test_drop_applies_nothing_but_lost_response_applies_the_write(api: Api) -> None:
    api.app.faults.inject("drop", path="coordination_issues/sync")
    with pytest.raises(requests.exceptions.RequestException):
        api.sync([{"title": "dropped"}])
    assert len(api.app.issues(PROJECT)) == 1

    key = new_uuid()
    api.app.faults.inject("lost_response", path="coordination_issues/sync")
    with pytest.raises(requests.exceptions.RequestException):
        api.sync([{"title": "applied in the dark", "uuid": key}])
    assert api.app.issues(PROJECT)[-1]["uuid"] == key
    retry = api.sync([{"title": "applied in the dark", "uuid": key}]).json()
    assert retry["errors"][0]["errors"] == {"uuid": ["has already been taken"]}
    found = api.get(
        "/rest/v1.0/coordination_issues", {"project_id": PROJECT, "filters[search]": "in the dark"}
    ).json()
    assert [i["uuid"] for i in found] == [key]


# -- Python API ----------------------------------------------------------------------------


def test_python_api_snapshot_tamper_delete_and_add(api: Api) -> None:
    issue = api.sync([{"title": "Original", "uuid": new_uuid()}]).json()["entities"][0]
    snapshot = api.app.snapshot()
    json.dumps(snapshot)
    project = snapshot["projects"][str(PROJECT)]
    assert [i["title"] for i in project["issues"]] == ["Existing duct clash at grid C4", "Original"]
    assert {loc["name"] for loc in project["locations"]} >= {"North Building>Level 2>Room 201"}
    project["issues"][1]["title"] = "mutating the copy"
    assert api.app.issues(PROJECT)[1]["title"] == "Original"

    api.app.advance_clock(5)
    tampered = api.app.tamper_issue(issue["id"], title="Edited in Procore", status="closed")
    assert tampered["updated_at"] > issue["updated_at"]
    path = f"/rest/v1.0/coordination_issues/{issue['id']}"
    shown = api.get(path, {"project_id": PROJECT}).json()
    assert (shown["title"], shown["status"]) == ("Edited in Procore", "closed")

    api.app.delete_issue(issue["id"])
    assert api.get(path, {"project_id": PROJECT}).status_code == 404
    again = api.sync([{"title": "Recreate", "uuid": issue["uuid"]}]).json()
    assert again["errors"][0]["errors"] == {"uuid": ["has already been taken"]}

    added = api.app.add_issue(PROJECT, title="Made by hand", location_path=["Annex", "Roof"])
    assert added["location_name"] == "Annex>Roof" and added["issue_number"] == 3
    with pytest.raises(ValueError, match="title"):
        api.app.add_issue(PROJECT, title="x" * 81)


def test_company_trades_are_listed_and_a_sync_names_only_them(api: Api) -> None:
    """GET /rest/v1.0/companies/{company_id}/trades (issue 15): {id, name, active, ...};
    filters[active] keeps the available ones; a trade_id must be one of them."""
    listed = api.get(f"/rest/v1.0/companies/{COMPANY}/trades").json()
    assert {"Drywall", "ELECTRICAL", "Fire Protection"} <= {t["name"] for t in listed}
    assert set(listed[0]) == {"id", "name", "active", "created_at", "updated_at"}
    active = api.get(f"/rest/v1.0/companies/{COMPANY}/trades", {"filters[active]": "true"}).json()
    assert [t for t in listed if t["active"]] == active and len(active) < len(listed)
    assert api.get("/rest/v1.0/companies/999/trades").status_code == 403
    drywall = next(t["id"] for t in listed if t["name"] == "Drywall")
    reply = api.sync([{"title": "a", "trade_id": drywall}, {"title": "b", "trade_id": 1}]).json()
    assert [e["trade_id"] for e in reply["entities"]] == [drywall]
    assert [e["errors"] for e in reply["errors"]] == [
        {"trade_id": ["is not a trade of this company"]}
    ]
