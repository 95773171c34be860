"""FieldSession (migrate/clients/bim360field.py) against the BIM 360 Field simulator over loopback.

Login, logout, credential errors, re-login when tickets expire mid-paging (also from several
threads at once), paging until the short page, streamed downloads and 404s.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from migrate.clients.bim360field import FieldSession, MalformedBody
from migrate.clients.http import HttpClient, RetryPolicy
from migrate.errors import EXIT_USAGE, ApiError, CredentialError
from migrate.sandbox.field_server import FieldApp
from migrate.sandbox.generator import GeneratedProject
from migrate.sandbox.httpbase import Request, Response, RunningServer, json_response
from migrate.settings import Secret

USER = "demo@example.com"
PASSWORD = "Field-Pa55word-9f3e"
FAST = RetryPolicy(max_attempts=6, base=0.01, cap=0.05, rate_limit_floor=0.01)


class TicketRecordingApp(FieldApp):
    """The simulator, remembering every ticket it issued (it forgets expired ones)."""

    def __init__(self, project: Any, **kwargs: Any) -> None:
        self.issued: list[str] = []
        super().__init__(project, password=PASSWORD, **kwargs)

    def _login(self, request: Request) -> Response:
        response = super()._login(request)
        if response.status == 200:
            assert isinstance(response.body, bytes)
            self.issued.append(json.loads(response.body)["ticket"])
        return response


@pytest.fixture(scope="module")
def project() -> GeneratedProject:
    return GeneratedProject(seed=11, issues=230)


@contextlib.contextmanager
def _serve(project: GeneratedProject, **options: Any) -> Iterator[tuple[TicketRecordingApp, str]]:
    app = TicketRecordingApp(project, **options)
    server = RunningServer(app)
    try:
        yield app, server.url
    finally:
        server.stop()


@pytest.fixture
def field(project: GeneratedProject) -> Iterator[tuple[TicketRecordingApp, str]]:
    with _serve(project) as served:
        yield served


def _session(url: str, password: str = PASSWORD, **kwargs: Any) -> FieldSession:
    http = HttpClient(url, policy=FAST, secrets=[password])
    return FieldSession(http, Secret(USER), Secret(password), **kwargs)


def test_login_and_logout(field: tuple[TicketRecordingApp, str], project: GeneratedProject) -> None:
    app, url = field
    session = _session(url, project_id=project.main.id)
    with session:
        assert session.logins == 1 and len(app.issued) == 1
        assert session.project_call("POST", "/api/project")["id"] == project.main.id
    assert app.calls["logout"] == 1
    # The ticket really is dead after logout.
    stale = requests.post(f"{url}/api/projects", data={"ticket": app.issued[0]})
    assert stale.status_code == 401
    # A call after logout simply logs in again.
    assert isinstance(session.json("POST", "/api/projects"), list)
    assert session.logins == 2
    session.logout()
    session.http.close()


def test_bad_credentials_are_a_one_line_credential_error(
    field: tuple[TicketRecordingApp, str],
) -> None:
    app, url = field
    wrong = "not-the-Pa55word-71"
    session = _session(url, password=wrong)
    with pytest.raises(CredentialError) as caught:
        session.login()
    message = str(caught.value)
    assert caught.value.exit_code == EXIT_USAGE == 2
    assert "\n" not in message
    assert wrong not in message and PASSWORD not in message
    assert message == (
        "BIM 360 Field rejected the credentials in BIM360_FIELD_USERNAME / "
        "BIM360_FIELD_PASSWORD. Check them, then run the command again."
    )
    assert app.issued == []
    session.http.close()


def test_relogin_when_the_ticket_expires_mid_paging(project: GeneratedProject) -> None:
    with _serve(project, ticket_max_calls=2) as (app, url):
        session = _session(url, project_id=project.main.id, page_size=25)
        pages = list(session.pages("POST", "/api/get_issues", {"project_id": project.main.id}))
        ids = [row["id"] for _, rows in pages for row in rows]
        expected = app.counts()["issues"] - app.counts()["voided_issues"]
        assert len(ids) == len(set(ids)) == expected
        assert [offset for offset, _ in pages] == list(range(0, 25 * len(pages), 25))
        # 2 calls per ticket: every other page needed a new login, each retried once.
        assert session.logins == len(app.issued) >= len(pages) // 2
        session.http.close()


def test_relogin_is_shared_by_threads(project: GeneratedProject) -> None:
    with _serve(project, ticket_max_calls=5) as (app, url):
        session = _session(url, project_id=project.main.id)
        barrier = threading.Barrier(4)

        def work(_: int) -> int:
            barrier.wait()
            return sum(
                len(session.project_call("POST", "/fieldapi/issues/v1/types")) for _ in range(10)
            )

        with ThreadPoolExecutor(4) as pool:
            totals = list(pool.map(work, range(4)))
        assert totals == [10 * len(project.main.issue_types)] * 4
        # 40 calls at 5 per ticket need about 8 tickets; a login per thread per expiry
        # would need far more.
        assert session.logins == len(app.issued) <= 12
        session.http.close()


@pytest.mark.parametrize(("page_size", "count", "calls"), [(10, 25, 3), (10, 20, 3), (10, 0, 1)])
def test_paging_stops_at_the_short_page(page_size: int, count: int, calls: int) -> None:
    project = GeneratedProject(seed=3, issues=count, checklists=count)
    with _serve(project) as (app, url):
        session = _session(url, page_size=page_size)
        pages = list(
            session.pages("GET", "/fieldapi/checklists/v1", {"project_id": project.main.id})
        )
        live = app.counts()["checklists"]
        assert sum(len(rows) for _, rows in pages) == live
        assert app.calls["checklists"] == len(pages) == (live // page_size) + 1
        assert len(pages) <= calls
        session.http.close()


def test_page_size_is_capped_at_what_the_service_serves(project: GeneratedProject) -> None:
    with _serve(project) as (app, url):
        session = _session(url, page_size=500)
        assert session.page_size == 100
        pages = list(session.pages("POST", "/api/get_issues", {"project_id": project.main.id}))
        assert [len(rows) for _, rows in pages][:2] == [100, 100]
        session.http.close()


def test_download_streams_the_exact_bytes(project: GeneratedProject) -> None:
    big = GeneratedProject(seed=5, issues=3, big_attachment_size=12 * 1024 * 1024)
    record = big.main.issue(0)
    item = next(a for a in record["attachments"] if a["size"] == 12 * 1024 * 1024)
    with _serve(big) as (app, url):
        session = _session(url, project_id=big.main.id)

        class Sink(io.RawIOBase):
            """Hashes what it is given and remembers the largest single write."""

            def __init__(self) -> None:
                self.digest = hashlib.sha256()
                self.largest = 0

            def writable(self) -> bool:
                return True

            def write(self, chunk: Any) -> int:
                self.digest.update(chunk)
                self.largest = max(self.largest, len(chunk))
                return len(chunk)

        sink = Sink()
        written = session.download(sink, object_type="Attachment", object_id=item["id"])
        assert written == item["size"]
        assert sink.digest.hexdigest() == big.attachment_sha256(
            item["id"], item["size"], item["content_type"]
        )
        assert sink.largest <= 1024 * 1024  # streamed in chunks, never held whole
        session.http.close()


def test_download_of_a_missing_file_is_file_not_found(
    field: tuple[TicketRecordingApp, str], project: GeneratedProject
) -> None:
    _, url = field
    session = _session(url, project_id=project.main.id)
    sink = io.BytesIO()
    missing = project.main.make_id(0x00000A77, 0x7000, 1)
    with pytest.raises(FileNotFoundError, match=missing):
        session.download(sink, object_type="Attachment", object_id=missing)
    assert sink.getvalue() == b""
    session.http.close()


def test_download_relogs_in_when_the_ticket_expired(project: GeneratedProject) -> None:
    record = next(
        r
        for r in project.main.iter_issues()
        if any(a["type"] == "Attachment" for a in r["attachments"])
    )
    item = next(a for a in record["attachments"] if a["type"] == "Attachment")
    with _serve(project) as (app, url):
        session = _session(url, project_id=project.main.id)
        session.login()
        app.expire_tickets()
        sink = io.BytesIO()
        assert (
            session.download(sink, object_type="Attachment", object_id=item["id"]) == item["size"]
        )
        assert session.logins == 2
        session.http.close()


def test_error_answers_carry_the_status_and_no_ticket(
    field: tuple[TicketRecordingApp, str], project: GeneratedProject
) -> None:
    app, url = field
    session = _session(url, project_id=project.main.id)
    with pytest.raises(ApiError) as caught:
        session.project_call("POST", "/fieldapi/issues/v1/retrieve", ids="nope")
    assert caught.value.status == 404
    assert all(ticket not in str(caught.value) for ticket in app.issued)
    session.http.close()


class BrokenJsonApp(TicketRecordingApp):
    def __init__(self, project: Any) -> None:
        super().__init__(project)
        self.add_route(
            "POST",
            "/broken",
            lambda request: Response(200, b'[{"id": "x", ', {"Content-Type": "application/json"}),
            "broken",
        )
        self.add_route("POST", "/object", lambda request: json_response({"a": 1}), "object")


def test_a_body_that_is_not_json_is_malformed_body(project: GeneratedProject) -> None:
    app = BrokenJsonApp(project)
    server = RunningServer(app)
    try:
        session = _session(server.url)
        with pytest.raises(MalformedBody) as caught:
            session.json("POST", "/broken")
        assert caught.value.body_text == '[{"id": "x", '
        with pytest.raises(MalformedBody, match="JSON dict where a list was expected"):
            list(session.pages("POST", "/object"))
        session.http.close()
    finally:
        server.stop()
