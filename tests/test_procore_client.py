"""ProcoreClient over real HTTP against the Procore simulator (and a small look-alike for the
paging edge cases the simulator never produces)."""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from migrate.clients.http import HttpClient, RetryPolicy
from migrate.clients.procore import (
    MAX_SYNC_ITEMS,
    ProcoreClient,
    SyncResult,
    UploadBytesMismatch,
)
from migrate.clients.ratebudget import RateBudget
from migrate.errors import EXIT_USAGE, ApiError, ConfigError, CredentialError
from migrate.sandbox.httpbase import App, Request, Response, RunningServer, json_response
from migrate.sandbox.procore_server import ProcoreApp
from migrate.settings import Secret, TargetCredentials, TargetSettings

COMPANY = 4100
PROJECT = 5100
FAST = RetryPolicy(max_attempts=3, base=0.01, cap=0.05, connect_timeout=2, read_timeout=10)
DEMO = TargetCredentials(client_id=Secret("demo-client"), client_secret=Secret("demo-secret"))


class FakeClock:
    """The client's monotonic clock, moved by the test together with the simulator's."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Connect = Callable[..., tuple[ProcoreApp, ProcoreClient]]


@pytest.fixture
def connect() -> Iterator[Connect]:
    """``connect(app_kwargs..., credentials=…, company_id=…, clock=…)`` → (app, client)."""
    opened: list[tuple[ProcoreApp, RunningServer, ProcoreClient]] = []

    def make(
        *,
        credentials: TargetCredentials = DEMO,
        company_id: int | None = COMPANY,
        clock: Callable[[], float] = time.monotonic,
        **app_kwargs: Any,
    ) -> tuple[ProcoreApp, ProcoreClient]:
        app = ProcoreApp(**app_kwargs)
        server = RunningServer(app)
        settings = TargetSettings(
            base_url=server.url, auth_url=server.url, company_id=company_id, project_id=PROJECT
        )
        # The budget reads the simulator's clock, which tests move forward to expire things.
        client = ProcoreClient(
            settings, credentials, budget=RateBudget(wall=app.now), policy=FAST, clock=clock
        )
        opened.append((app, server, client))
        return app, client

    yield make
    for app, server, client in opened:
        client.close()
        server.stop()
        app.close()


def status_count(app: ProcoreApp, status: int) -> int:
    with app.lock:
        return sum(n for (_, code), n in app.statuses.items() if code == status)


def fetch_token(url: str) -> str:
    with HttpClient(url, policy=FAST) as http:
        response = http.request(
            "POST",
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": "demo-client",
                "client_secret": "demo-secret",
            },
        )
        return response.json()["access_token"]


# -- tokens and headers -----------------------------------------------------------------------


def test_one_token_serves_many_calls_with_the_company_header(connect: Connect) -> None:
    app, client = connect()
    assert [c["id"] for c in client.companies()] == [COMPANY]
    assert {p["id"] for p in client.projects(COMPANY)} == {5100, 5101}
    # The simulator answers 400 "Missing Procore-Company-Id header!" without it.
    assert {a["id"] for a in client.assignees(PROJECT)} == {7001, 7002}
    assert app.calls["oauth.token"] == 1
    assert client.token_requests == 1


def test_token_is_renewed_before_it_expires(connect: Connect) -> None:
    clock = FakeClock()
    app, client = connect(token_ttl=60.0, clock=clock)
    client.assignees(PROJECT)
    clock.now += 55  # inside the last tenth of the lifetime
    app.advance_clock(55)
    client.assignees(PROJECT)
    assert app.calls["oauth.token"] == 2
    assert status_count(app, 401) == 0  # renewed before Procore had to refuse it


def test_a_401_renews_the_token_once_and_retries_the_call(connect: Connect) -> None:
    app, client = connect(token_ttl=60.0)
    client.assignees(PROJECT)
    app.advance_clock(61)  # expired behind the client's back
    assert {a["id"] for a in client.assignees(PROJECT)} == {7001, 7002}
    assert app.calls["oauth.token"] == 2
    assert status_count(app, 401) == 1


class RefusesOneFreshToken(ProcoreApp):
    """Procore refusing, once, the first call made with a token renewed after a 401: what a
    struggling Procore does while a new token is not yet known to every server."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.grants = 0
        self.refuse_next = False
        self.refused = False

    def _token(self, request: Request) -> Response:
        response = super()._token(request)
        self.grants += 1
        if self.grants == 2 and not self.refused:  # the renewal after the first 401
            self.refuse_next = True
        return response

    def before(self, request: Request, route: Any) -> Response | None:
        if request.path.startswith("/rest/") and self.refuse_next:
            self.refuse_next, self.refused = False, True
            return self._unauthorized("The access token is invalid")
        return super().before(request, route)


def test_a_fresh_token_refused_once_is_a_transient_fault_not_a_credential_error() -> None:
    app = RefusesOneFreshToken(token_ttl=60.0)
    server = RunningServer(app)
    settings = TargetSettings(
        base_url=server.url, auth_url=server.url, company_id=COMPANY, project_id=PROJECT
    )
    try:
        with ProcoreClient(settings, DEMO, budget=RateBudget(wall=app.now), policy=FAST) as client:
            client.assignees(PROJECT)
            app.advance_clock(61)  # the token expires behind the client's back
            assert {a["id"] for a in client.assignees(PROJECT)} == {7001, 7002}
            assert client.api.stats.retries == {"HTTP 401 on a fresh token": 1}
    finally:
        server.stop()
        app.close()
    assert app.refused
    assert app.calls["oauth.token"] == 3  # expired → new token → refused once → another
    assert status_count(app, 401) == 2


def test_fresh_tokens_refused_every_time_end_as_a_service_fault_not_exit_2(
    connect: Connect,
) -> None:
    app, client = connect(token_ttl=0.0)  # every token is expired on arrival
    with pytest.raises(ApiError) as caught:
        client.assignees(PROJECT)
    assert not isinstance(caught.value, CredentialError)
    assert caught.value.exit_code == 1 and caught.value.status == 401
    message = str(caught.value)
    assert "freshly issued tokens" in message and "run the same command again" in message
    # One token, then one more per refusal up to max_attempts (3): bounded, not a loop.
    assert app.calls["oauth.token"] == 4
    assert client.api.stats.retries == {"HTTP 401 on a fresh token": 2}


def test_bad_client_credentials_are_a_one_line_credential_error(connect: Connect) -> None:
    secret = "wrong-secret-4f9a"
    app, client = connect(
        credentials=TargetCredentials(client_id=Secret("demo-client"), client_secret=Secret(secret))
    )
    with pytest.raises(CredentialError) as caught:
        client.companies()
    message = str(caught.value)
    assert "PROCORE_CLIENT_SECRET" in message and "invalid_client" in message
    assert secret not in message and "\n" not in message
    assert caught.value.exit_code == EXIT_USAGE
    assert app.calls["oauth.token"] == 1  # a refusal is not retried


def test_a_given_access_token_that_expires_asks_for_a_new_one(connect: Connect) -> None:
    app, other = connect(token_ttl=600.0)
    server_url = other.settings.base_url
    token = fetch_token(server_url)
    settings = TargetSettings(base_url=server_url, auth_url=server_url, company_id=COMPANY)
    with ProcoreClient(
        settings,
        TargetCredentials(access_token=Secret(token)),
        budget=RateBudget(wall=app.now),
        policy=FAST,
    ) as client:
        assert client.assignees(PROJECT)
        app.advance_clock(601)
        with pytest.raises(CredentialError) as caught:
            client.assignees(PROJECT)
    message = str(caught.value)
    assert "PROCORE_ACCESS_TOKEN" in message and "PROCORE_CLIENT_ID" in message
    assert token not in message
    assert app.calls["oauth.token"] == 1  # only the test's own: a given token is not renewed


def test_without_company_id_only_the_company_list_works(connect: Connect) -> None:
    app, client = connect(company_id=None)
    assert client.companies()
    calls = sum(app.calls.values())
    with pytest.raises(ConfigError, match="company_id"):
        client.assignees(PROJECT)
    assert sum(app.calls.values()) == calls  # refused before any request


def test_another_company_is_an_api_error_with_its_status(connect: Connect) -> None:
    _, client = connect(company_id=9999)
    with pytest.raises(ApiError) as caught:
        client.assignees(PROJECT)
    assert caught.value.status == 403


# -- paging -----------------------------------------------------------------------------------


def test_paging_follows_link_headers_across_pages(connect: Connect) -> None:
    app, client = connect()
    for number in range(250):
        app.find_or_create_location(PROJECT, ["Tower", f"Room {number:03d}"])
    pages = list(client.list_paged(f"/rest/v1.0/projects/{PROJECT}/locations"))
    rows = [row for page in pages for row in page]
    assert [len(page) for page in pages] == [100, 100, len(rows) - 200]
    assert len(rows) == len({row["id"] for row in rows}) >= 251
    assert app.calls["locations.list"] == 3
    tower = next(row for row in rows if row["name"] == "Tower")
    children = client.locations(PROJECT, parent_id=tower["id"])
    assert len(children) == 250 and {c["parent_id"] for c in children} == {tower["id"]}


TOKEN = "look-alike-token-2c81"


class LookAlike(App):
    """Serves a token and one paged list whose Link/Total headers a test chooses."""

    name = "look-alike"

    def __init__(self, mode: str, total: int = 250) -> None:
        super().__init__()
        self.mode = mode
        self.total = total
        self.elsewhere = ""
        self.headers_seen: list[dict[str, str]] = []
        self.add_route("POST", "/oauth/token", self._token, "token")
        self.add_route("GET", "/rest/v1.0/things", self._things, "things")

    def _token(self, request: Request) -> Response:
        return json_response(
            {
                "access_token": TOKEN,
                "token_type": "bearer",
                "expires_in": 5400,
                "created_at": int(time.time()),
            }
        )

    def _things(self, request: Request) -> Response:
        self.headers_seen.append({k.lower(): v for k, v in request.headers.items()})
        page = int(request.param("page") or 1)
        per_page = int(request.param("per_page") or 100)
        rows = list(range((page - 1) * per_page, min(page * per_page, self.total)))
        own = f"http://{request.headers['Host']}/rest/v1.0/things"
        if self.mode == "loop" and self.calls["things"] < 5:  # a client that loops, stops
            headers = {"Link": f'<{own}?page=2&per_page={per_page}>; rel="next"'}
        elif self.mode == "loop":
            headers = {}
        elif self.mode == "elsewhere":
            headers = {"Link": f'<{self.elsewhere}/rest/v1.0/things?page=2>; rel="next"'}
        else:  # "total": no Link header at all, only the count
            headers = {"Total": str(self.total)}
        return json_response(rows, headers=headers)


@pytest.fixture
def look_alike() -> Iterator[Callable[[str], tuple[LookAlike, ProcoreClient]]]:
    opened: list[tuple[RunningServer, ProcoreClient]] = []

    def make(mode: str) -> tuple[LookAlike, ProcoreClient]:
        app = LookAlike(mode)
        server = RunningServer(app)
        settings = TargetSettings(base_url=server.url, auth_url=server.url, company_id=COMPANY)
        client = ProcoreClient(settings, DEMO, budget=RateBudget(), policy=FAST)
        opened.append((server, client))
        return app, client

    yield make
    for server, client in opened:
        client.close()
        server.stop()


def test_every_call_carries_the_bearer_token_and_company_id(look_alike: Callable) -> None:
    app, client = look_alike("total")
    list(client.list_paged("/rest/v1.0/things"))
    seen = app.headers_seen[0]
    assert seen["authorization"] == f"Bearer {TOKEN}"
    assert seen["procore-company-id"] == str(COMPANY)


def test_paging_by_total_when_there_is_no_link_header(look_alike: Callable) -> None:
    app, client = look_alike("total")
    pages = list(client.list_paged("/rest/v1.0/things"))
    assert [len(page) for page in pages] == [100, 100, 50]
    assert app.calls["things"] == 3


def test_a_repeated_next_link_stops_paging_instead_of_looping(look_alike: Callable) -> None:
    app, client = look_alike("loop")
    with pytest.raises(ApiError, match="same next-page link twice"):
        list(client.list_paged("/rest/v1.0/things"))
    assert app.calls["things"] == 2


def test_a_next_link_to_another_host_gets_no_token(look_alike: Callable) -> None:
    app, client = look_alike("elsewhere")
    other, _ = look_alike("total")
    other_server = RunningServer(other)
    try:
        app.elsewhere = other_server.url
        with pytest.raises(ApiError, match="refusing to send the token"):
            list(client.list_paged("/rest/v1.0/things"))
        assert other.calls["things"] == 0
    finally:
        other_server.stop()


# -- locations and issues -----------------------------------------------------------------------


def test_find_or_create_location_says_whether_it_created(connect: Connect) -> None:
    app, client = connect()
    created, was_new = client.find_or_create_location(PROJECT, ["North Building", "Level 3"])
    found, again_new = client.find_or_create_location(PROJECT, ["North Building", "Level 3"])
    assert was_new is True and again_new is False
    assert created["id"] == found["id"] and found["name"] == "North Building>Level 3"
    with pytest.raises(ValueError):
        client.find_or_create_location(PROJECT, ["North Building", " "])
    assert app.calls["locations.find_or_create_by_path"] == 2


def test_sync_returns_refused_items_as_data(connect: Connect) -> None:
    app, client = connect()
    key = str(uuid.uuid4())
    result = client.sync_issues(
        PROJECT,
        [
            {"uuid": key, "title": "Clash at grid B2", "priority": "high"},
            {"title": ""},
            {"title": "Bad priority", "priority": "urgent"},
            {"uuid": key, "title": "Same uuid again"},
        ],
    )
    assert isinstance(result, SyncResult)
    assert [e["title"] for e in result.entities] == ["Clash at grid B2"]
    assert [sorted(e["errors"]) for e in result.errors] == [["title"], ["priority"], ["uuid"]]
    assert result.errors[2]["errors"]["uuid"] == ["has already been taken"]
    # A repeat of a sync whose answer was lost: the item comes back as "already taken".
    repeat = client.sync_issues(PROJECT, [{"uuid": key, "title": "Clash at grid B2"}])
    assert repeat.entities == [] and repeat.errors[0]["errors"]["uuid"]
    assert len([i for i in app.issues(PROJECT) if i["uuid"] == key]) == 1


def test_sync_of_more_than_1000_items_is_refused_before_any_request(connect: Connect) -> None:
    app, client = connect()
    client.companies()
    before = app.rate_stats()["requests"]
    with pytest.raises(ValueError, match="at most 1000"):
        client.sync_issues(PROJECT, [{"title": f"#{n}"} for n in range(MAX_SYNC_ITEMS + 1)])
    assert app.rate_stats()["requests"] == before
    assert app.calls["coordination_issues.sync"] == 0
    assert client.sync_issues(PROJECT, []) == SyncResult()
    assert app.calls["coordination_issues.sync"] == 0


def test_sync_envelope_errors_raise_with_their_status(connect: Connect) -> None:
    _, client = connect()
    with pytest.raises(ApiError) as caught:
        client.sync_issues(999, [{"title": "Nowhere"}])
    assert caught.value.status == 404
    assert "999" in str(caught.value)


def test_listing_filtering_showing_and_updating_issues(connect: Connect) -> None:
    app, client = connect()
    made = client.sync_issues(PROJECT, [{"title": f"Leak {n}"} for n in range(3)]).entities
    ids = [issue["id"] for issue in made]
    listed = client.coordination_issues(PROJECT, ids=ids[:2])
    assert [i["id"] for i in listed] == ids[:2] and "attachments" in listed[0]
    assert [i["title"] for i in client.coordination_issues(PROJECT, search="leak 2")] == ["Leak 2"]
    window = ("2000-01-01T00:00:00Z", "2999-01-01T00:00:00Z")
    assert len(client.coordination_issues(PROJECT, updated_at=window)) == 4  # + the seeded one
    closed = client.update_issue(PROJECT, ids[0], {"status": "closed"})
    assert closed["status"] == "closed"
    assert client.show_issue(PROJECT, ids[0])["status"] == "closed"
    single = client.create_issue(PROJECT, {"title": "One at a time", "issue_type": "clash"})
    assert single["issue_type"] == "clash"
    with pytest.raises(ApiError) as caught:
        client.show_issue(PROJECT, 123)
    assert caught.value.status == 404
    counts = client.requests_made()
    assert counts["GET /rest/v1.0/coordination_issues/{id}"] == 2
    assert counts["PATCH /rest/v1.0/coordination_issues/{id}"] == 1
    assert counts["PATCH /rest/v1.0/coordination_issues/sync"] == 1


# -- uploads --------------------------------------------------------------------------------------


def test_upload_end_to_end_lands_as_an_attachment(connect: Connect, tmp_path: Path) -> None:
    app, client = connect()
    data = os.urandom(300_000)
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    name = "Façade crack, level 2.jpg"
    upload = client.create_upload(PROJECT, name, "image/jpeg")
    budget_before = client.budget.requests
    # Success proves no Authorization header went to storage: the simulator answers 400 to it.
    digest = hashlib.sha256(data).hexdigest()
    with path.open("rb") as source:
        sent = client.put_upload_bytes(upload, source, sha256=digest, size=len(data))
    assert (sent.size, sent.sha256) == (len(data), digest)
    assert client.budget.requests == budget_before  # storage is not Procore's quota
    assert app.calls["storage.upload"] == 1
    assert not any("/s3/" in key for key in client.requests_made())

    issue = client.sync_issues(
        PROJECT, [{"title": "Crack in facade", "attachment_upload_uuids": [upload.uuid]}]
    ).entities[0]
    shown = client.show_issue(PROJECT, issue["id"])
    assert [(a["name"], a["content_type"]) for a in shown["attachments"]] == [(name, "image/jpeg")]
    stored = next(i for i in app.issues(PROJECT) if i["id"] == issue["id"])["attachments"]
    assert stored[0]["size"] == len(data)
    assert stored[0]["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_storage_failure_is_retried_with_the_whole_file(connect: Connect, tmp_path: Path) -> None:
    app, client = connect()
    data = os.urandom(150_000)
    path = tmp_path / "plan.pdf"
    path.write_bytes(data)
    upload = client.create_upload(PROJECT, "plan.pdf", "application/pdf")
    app.faults.inject("error", path="^/s3/")  # storage answers 500 once
    digest = hashlib.sha256(data).hexdigest()
    with path.open("rb") as source:
        sent = client.put_upload_bytes(upload, source, sha256=digest)
    assert app.calls["storage.upload"] == 2
    assert (sent.size, sent.sha256) == (len(data), digest)  # hashed again on the second send
    stored = next(u for u in app.uploads(PROJECT) if u["uuid"] == upload.uuid)
    assert (stored["size"], stored["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())


def test_an_expired_upload_is_refused_with_403(connect: Connect, tmp_path: Path) -> None:
    app, client = connect()
    path = tmp_path / "late.pdf"
    path.write_bytes(b"%PDF-1.4 late")
    upload = client.create_upload(PROJECT, "late.pdf", "application/pdf")
    app.advance_clock(3601)
    with pytest.raises(ApiError) as caught, path.open("rb") as source:
        client.put_upload_bytes(upload, source, sha256=hashlib.sha256(b"%PDF-1.4 late").hexdigest())
    assert caught.value.status == 403


def test_bytes_that_are_not_the_expected_file_never_reach_storage_whole(
    connect: Connect, tmp_path: Path
) -> None:
    app, client = connect()
    wanted = os.urandom(200_000)
    other = bytearray(wanted)
    other[-1] ^= 0xFF  # same size, the last byte differs: only the whole hash can tell
    path = tmp_path / "photo.jpg"
    path.write_bytes(other)
    upload = client.create_upload(PROJECT, "photo.jpg", "image/jpeg")
    with pytest.raises(UploadBytesMismatch) as caught, path.open("rb") as source:
        client.put_upload_bytes(
            upload, source, sha256=hashlib.sha256(wanted).hexdigest(), size=len(wanted)
        )
    assert caught.value.actual == hashlib.sha256(other).hexdigest()
    assert sum(client.storage.stats.requests.values()) == 1  # cut off, not retried
    # An upload is stored only from a whole body: this one never will be.
    (stored,) = [u for u in app.uploads(PROJECT) if u["uuid"] == upload.uuid]
    assert (stored["state"], stored["sha256"], stored["size"]) == ("created", None, None)


def test_a_file_of_the_wrong_size_is_refused_before_anything_is_sent(
    connect: Connect, tmp_path: Path
) -> None:
    app, client = connect()
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"truncated")
    upload = client.create_upload(PROJECT, "photo.jpg", "image/jpeg")
    with (
        pytest.raises(UploadBytesMismatch, match="has 9 bytes, not the 5000 expected"),
        path.open("rb") as source,
    ):
        client.put_upload_bytes(upload, source, sha256="0" * 64, size=5000)
    assert app.calls.get("storage.upload", 0) == 0


# -- secrets ----------------------------------------------------------------------------------


def test_no_token_or_secret_in_logs_or_errors(
    connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app, client = connect(token_ttl=60.0)
    messages: list[str] = []
    client.assignees(PROJECT)
    app.advance_clock(61)  # forces a 401 and a renewal
    client.assignees(PROJECT)
    for call in (
        lambda: client.show_issue(PROJECT, 1),
        lambda: client.sync_issues(999, [{"title": "x"}]),
    ):
        with pytest.raises(ApiError) as caught:
            call()
        messages.append(str(caught.value))
    _, refused = connect(
        credentials=TargetCredentials(
            client_id=Secret("demo-client"), client_secret=Secret("not-the-secret-77")
        )
    )
    with pytest.raises(CredentialError) as denied:
        refused.companies()
    messages.append(str(denied.value))

    with app.lock:
        tokens = list(app._tokens)  # every token the simulator issued
    assert len(tokens) == 2
    text = caplog.text + "\n".join(messages)
    assert "Bearer" not in caplog.text or "Bearer ***" in caplog.text
    for secret in (*tokens, "demo-secret", "not-the-secret-77"):
        assert secret not in text
