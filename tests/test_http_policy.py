"""HTTP policy (migrate/clients/http.py) against a small App over real loopback sockets.

Faults come from the sandbox's own injector (``app.faults``) or from a scripted route that
answers chosen statuses and headers; waits are observed through the client's ``sleep``
parameter, a recording wrapper around the real ``time.sleep`` scaled down so the file is fast.
"""

from __future__ import annotations

import hashlib
import io
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import pytest

from migrate.clients.http import HttpClient, RetryPolicy, redact, strip_query_param
from migrate.errors import (
    ApiError,
    ConfigError,
    IncompleteBody,
    ServiceUnavailable,
    TransportError,
)
from migrate.sandbox.faults import FaultConfig
from migrate.sandbox.httpbase import (
    App,
    HTTPError,
    Request,
    Response,
    RunningServer,
    json_response,
)
from migrate.stopping import Stopped

TICKET = "5f2c1d9e-0b7a-4c3e-9a61-7d8e2f4b1c00"
PASSWORD = "correct horse battery staple"


def blob_bytes(size: int) -> Iterator[bytes]:
    """Deterministic bytes, produced in chunks so a large body is never held whole."""
    block = hashlib.sha256(b"blob").digest() * 2048  # 64 KiB
    sent = 0
    while sent < size:
        chunk = block[: min(len(block), size - sent)]
        sent += len(chunk)
        yield chunk


class PolicyApp(App):
    """Items to read and write, a scripted route, and a blob to stream."""

    name = "policy"

    def __init__(self) -> None:
        super().__init__()
        self.script: deque[tuple[int, dict[str, str], Any]] = deque()
        self.bodies: list[bytes] = []
        self.items: dict[str, dict[str, Any]] = {}
        self.add_route("GET", "/items", self.list_items, "list")
        self.add_route("POST", "/items", self.create_item, "create")
        self.add_route("PATCH", "/items/{item_id}", self.update_item, "update")
        self.add_route("GET", "/scripted", self.scripted, "scripted")
        self.add_route("GET", "/status/{code}", self.status, "status")
        self.add_route("POST", "/echo_error", self.echo_error, "echo_error")
        self.add_route("GET", "/blob/{size}", self.blob, "blob")

    def list_items(self, request: Request) -> Response:
        return json_response(sorted(self.items.values(), key=lambda item: item["id"]))

    def create_item(self, request: Request) -> Response:
        self.bodies.append(request.body)
        item_id = str(len(self.items) + 1)
        self.items[item_id] = {"id": item_id, "name": request.param("name")}
        return json_response(self.items[item_id], 201)

    def update_item(self, request: Request) -> Response:
        self.bodies.append(request.body)
        item = self.items.get(request.path_params["item_id"])
        if item is None:
            raise HTTPError(404, {"error": "no such item"})
        item.update(request.json())
        return json_response(item)

    def scripted(self, request: Request) -> Response:
        if not self.script:
            return json_response({"ok": True})
        status, headers, body = self.script.popleft()
        return json_response(body if body is not None else {"error": "scripted"}, status, headers)

    def status(self, request: Request) -> Response:
        code = int(request.path_params["code"])
        return json_response({"errors": {"title": ["is too long"]}, "code": code}, code)

    def echo_error(self, request: Request) -> Response:
        # A careless service that repeats the credentials it was sent in its error body.
        return json_response({"error": f"ticket {request.param('ticket')} is not valid here"}, 409)

    def blob(self, request: Request) -> Response:
        size = int(request.path_params["size"])
        return Response(
            200, blob_bytes(size), {"Content-Type": "application/octet-stream"}, length=size
        )


class RecordingSleep:
    """A real sleep, scaled down, that records what it was asked to wait."""

    def __init__(self, scale: float = 0.001) -> None:
        self.calls: list[float] = []
        self.scale = scale
        self._lock = threading.Lock()

    def __call__(self, seconds: float) -> None:
        with self._lock:
            self.calls.append(seconds)
        time.sleep(seconds * self.scale)


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    running = RunningServer(PolicyApp(), port=0)
    yield running
    running.stop()


@pytest.fixture()
def app(server: RunningServer) -> PolicyApp:
    app = server.app
    assert isinstance(app, PolicyApp)
    app.faults.clear()
    app.reset_counts()
    app.script.clear()
    app.bodies.clear()
    app.items.clear()
    return app


@pytest.fixture()
def sleeper() -> RecordingSleep:
    return RecordingSleep()


def make_client(server: RunningServer, sleeper: RecordingSleep, **kwargs: Any) -> HttpClient:
    kwargs.setdefault("policy", RetryPolicy(max_attempts=5, read_timeout=5))
    return HttpClient(server.url, sleep=sleeper, secrets=(PASSWORD,), **kwargs)


# -- retries ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retried(server, app, sleeper, status):
    app.script.extend([(status, {}, None), (status, {}, None)])
    with make_client(server, sleeper) as client:
        response = client.request("GET", "/scripted")
    assert response.status_code == 200
    assert app.calls["scripted"] == 3
    assert client.stats.retries == {f"HTTP {status}": 2}
    assert len(sleeper.calls) <= 2  # full jitter may draw a zero wait, which is not slept
    assert all(0 <= s <= 0.5 for s in sleeper.calls)  # base 0.25, doubled once


def test_503_honours_retry_after(server, app, sleeper):
    app.script.append((503, {"Retry-After": "3"}, None))
    with make_client(server, sleeper) as client:
        assert client.request("GET", "/scripted").status_code == 200
    assert sleeper.calls == [3.0]
    assert client.stats.slept["backoff"] == 3.0


def test_dropped_half_body_is_retried_on_a_new_connection(server, app, sleeper):
    app.items["1"] = {"id": "1", "name": "kept"}
    app.faults.inject("drop", path="^/items$", method="GET")
    with make_client(server, sleeper) as client:
        response = client.request("GET", "/items")
        assert response.json() == [{"id": "1", "name": "kept"}]
    assert app.calls["list"] == 2
    assert client.stats.retries == {"incomplete body": 1}
    assert client.connections_opened == 2  # the broken connection was not reused


def test_slow_answer_beyond_read_timeout_is_retried(server, app, sleeper):
    # 10 s against a 1 s read timeout: the answers that are not slowed come well within it on
    # a busy machine, the slowed one never does.
    app.faults.configure(FaultConfig(slow_seconds=10.0))
    app.faults.inject("slow", path="^/items$")
    policy = RetryPolicy(max_attempts=3, read_timeout=1.0)
    with make_client(server, sleeper, policy=policy) as client:
        assert client.request("GET", "/items").status_code == 200
    # Gave up on the slow answer (a timeout retry), did not wait it out.
    assert app.calls["list"] == 2
    assert client.stats.retries == {"timeout": 1}


def test_429_with_retry_after_zero_backs_off_instead_of_spinning(server, app, sleeper):
    app.faults.inject("rate_limit", count=4, retry_after=0, path="^/items$")
    with make_client(server, sleeper, policy=RetryPolicy(max_attempts=6)) as client:
        assert client.request("GET", "/items").status_code == 200
    assert app.calls["list"] == 5
    # A floor on every wait, doubling while the 429s keep coming.
    assert sleeper.calls == [0.5, 1.0, 2.0, 4.0]
    assert client.stats.slept["rate_limit"] == 7.5
    assert client.stats.retries == {"HTTP 429": 4}


def test_429_with_retry_after_waits_that_long(server, app, sleeper):
    app.faults.inject("rate_limit", retry_after=2, path="^/items$")
    with make_client(server, sleeper) as client:
        assert client.request("GET", "/items").status_code == 200
    assert sleeper.calls == [2.0]


def test_429_without_retry_after_waits_until_rate_limit_reset(server, app, sleeper):
    now = 1_700_000_000.0
    app.script.append(
        (
            429,
            {
                "X-Rate-Limit-Limit": "3600",
                "X-Rate-Limit-Remaining": "0",
                "X-Rate-Limit-Reset": str(int(now) + 7),
            },
            None,
        )
    )
    with make_client(server, sleeper, clock=lambda: now) as client:
        assert client.request("GET", "/scripted").status_code == 200
    assert sleeper.calls == [7.0]


def test_429_with_neither_header_still_waits_the_floor(server, app, sleeper):
    app.script.extend([(429, {}, None), (429, {}, None)])
    with make_client(server, sleeper) as client:
        assert client.request("GET", "/scripted").status_code == 200
    assert len(sleeper.calls) == 2
    assert sleeper.calls[0] >= 0.5 and sleeper.calls[1] >= 1.0


def test_post_and_patch_are_retried_with_the_same_body(server, app, sleeper):
    app.faults.inject("error", count=2, path="^/items$", method="POST")
    app.faults.inject("drop", path="^/items/1$", method="PATCH")
    with make_client(server, sleeper) as client:
        created = client.request("POST", "/items", data={"name": "Door 1"})
        assert created.status_code == 201
        updated = client.request("PATCH", "/items/1", json={"name": "Door 1A"})
        assert updated.json() == {"id": "1", "name": "Door 1A"}
    # The errors were answered before the handler ran: one item, not three.
    assert app.calls["create"] == 3 and app.calls["update"] == 2
    assert len(app.items) == 1
    assert app.bodies == [b"name=Door+1", b'{"name": "Door 1A"}']


def test_file_body_is_rewound_before_a_retry(server, app, sleeper):
    app.faults.inject("error", path="^/items$", method="POST")
    body = io.BytesIO(b"name=From+a+file")
    with make_client(server, sleeper) as client:
        response = client.request(
            "POST",
            "/items",
            data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert response.json()["name"] == "From a file"
    assert app.bodies == [b"name=From+a+file"]


def test_lost_response_on_post_is_retried_and_applies_twice(server, app, sleeper):
    # Why Procore creates carry a client uuid: a retried POST whose answer was lost has
    # already been applied once. The HTTP layer retries; the caller must make that safe.
    app.faults.inject("lost_response", path="^/items$", method="POST")
    with make_client(server, sleeper) as client:
        assert client.request("POST", "/items", data={"name": "twice"}).status_code == 201
    assert [item["name"] for item in app.items.values()] == ["twice", "twice"]


def test_retry_false_makes_a_single_attempt(server, app, sleeper):
    app.faults.inject("error", path="^/items$")
    with make_client(server, sleeper) as client, pytest.raises(TransportError) as caught:
        client.request("POST", "/items", data={"name": "once"}, retry=False)
    assert caught.value.attempts == 1
    assert app.calls["create"] == 1 and sleeper.calls == []


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_client_errors_are_returned_not_retried(server, app, sleeper, status):
    with make_client(server, sleeper) as client:
        response = client.request("GET", f"/status/{status}")
    assert response.status_code == status
    assert response.json()["code"] == status
    assert app.calls["status"] == 1
    assert client.stats.retries == {}
    assert sleeper.calls == []


def test_status_outside_ok_raises_api_error_with_redacted_excerpt(server, app, sleeper):
    with make_client(server, sleeper) as client, pytest.raises(ApiError) as caught:
        client.request("POST", "/echo_error", data={"ticket": TICKET}, ok=(200,))
    error = caught.value
    assert error.status == 409
    assert str(error) == (
        f"POST {server.url}/echo_error answered HTTP 409: "
        '{"error":"ticket *** is not valid here"}. This is unexpected; keep the log, '
        "then run the same command again to resume."
    )
    assert app.calls["echo_error"] == 1


def test_exhausted_attempts_raise_transport_error_without_secrets(server, app, sleeper, caplog):
    caplog.set_level(logging.DEBUG)  # urllib3's own debug lines print request URLs
    app.faults.inject("error", count=3, path="^/items$")
    with make_client(server, sleeper, policy=RetryPolicy(max_attempts=3)) as client:
        client.add_secret(TICKET)
        with pytest.raises(TransportError) as caught:
            client.request("GET", "/items", params={"ticket": TICKET, "password": PASSWORD})
    error = caught.value
    text = str(error)
    assert TICKET not in text and "correct horse" not in text
    assert text.startswith(f"GET {server.url}/items failed after 3 attempts (last error: HTTP 5")
    assert text.endswith("so run the same command again to resume.")
    assert error.exit_code == 1 and error.attempts == 3
    assert error.__cause__ is None and error.__suppress_context__
    assert app.calls["list"] == 3 and len(sleeper.calls) <= 2  # no wait after the last try
    assert caplog.records and TICKET not in caplog.text and "horse" not in caplog.text
    assert "ticket=***" in caplog.text  # the URL lines were there, masked


def closed_port() -> int:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_connection_refused_names_the_url_and_keeps_the_ticket_out(sleeper):
    port = closed_port()
    url = f"http://127.0.0.1:{port}/api/attachments?ticket={TICKET}&id=9"
    client = HttpClient(
        f"http://127.0.0.1:{port}",
        sleep=sleeper,
        policy=RetryPolicy(connect_timeout=1, give_up_after=0, give_up_failures=3),
    )
    with client, pytest.raises(ServiceUnavailable) as caught:
        client.request("GET", url)
    text = str(caught.value)
    assert TICKET not in text
    assert text.startswith(
        f"http://127.0.0.1:{port} has not answered for 0 s: 3 attempts in a row got no answer, "
        f"across every request in flight (last: GET http://127.0.0.1:{port}/api/attachments?"
        "ticket=***&id=9: connection failed ([Errno 111] Connection refused))."
    )
    assert text.endswith("run the same command again to resume once it answers.")
    assert caught.value.exit_code == 1
    assert client.stats.retries == {"connection": 2}


# -- giving up on a service that answers nothing ---------------------------------------------------


def test_a_dead_service_is_given_up_by_every_thread_at_once(sleeper):
    port = closed_port()
    policy = RetryPolicy(
        max_attempts=2,
        base=0.01,
        cap=0.05,
        connect_timeout=1,
        give_up_after=0.3,
        give_up_failures=6,
    )
    client = HttpClient(f"http://127.0.0.1:{port}", policy=policy)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            client.request("POST", "/uploads", data={"n": "1"})
        except BaseException as exc:  # noqa: BLE001 - the test inspects whatever came
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    with client:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads)
        # Each thread went past its own max_attempts: the shared rule decided, for all.
        assert client.stats.total_requests >= 6
        assert [type(error) for error in errors] == [ServiceUnavailable] * 4
        assert len({str(error) for error in errors}) == 1  # one verdict, told to every thread
        assert client.given_up.is_set()
        made = client.stats.total_requests
        with pytest.raises(ServiceUnavailable):
            client.request("GET", "/items")
        assert client.stats.total_requests == made  # a new request is not even attempted


def test_an_outage_shorter_than_give_up_after_is_ridden_out_past_max_attempts(sleeper):
    app = PolicyApp()
    running = RunningServer(app, port=0)
    port = running.port
    running.stop()
    policy = RetryPolicy(max_attempts=2, base=0.01, cap=0.05, give_up_after=600)
    client = HttpClient(running.url, policy=policy)
    answers: list[int] = []
    worker = threading.Thread(
        target=lambda: answers.append(client.request("GET", "/items").status_code)
    )
    with client:
        worker.start()
        deadline = time.monotonic() + 60
        while client.stats.total_requests < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert client.stats.total_requests >= 5 and worker.is_alive()  # beyond max_attempts
        back = RunningServer(app, port=port)
        try:
            worker.join(timeout=60)
        finally:
            back.stop()
    assert answers == [200] and not client.given_up.is_set()
    assert app.calls["list"] == 1


def test_a_request_failing_alone_while_the_service_answers_ends_at_max_attempts(
    server, app, sleeper
):
    app.faults.configure(FaultConfig(slow_seconds=10.0))  # against a 1 s read timeout
    app.faults.inject("slow", count=3, path="^/items$")

    class OthersGetAnswers:
        """Before each attempt at /items, another request to the service gets its answer."""

        def __init__(self) -> None:
            self.busy = False

        def before_request(self, method: str, url: str) -> None:
            if url.endswith("/items") and not self.busy:
                self.busy = True
                try:
                    client.request("GET", "/scripted")
                finally:
                    self.busy = False

        def after_response(self, response: Any) -> None:
            pass

    policy = RetryPolicy(max_attempts=3, read_timeout=1.0, give_up_after=600)
    client = make_client(server, sleeper, policy=policy, hooks=[OthersGetAnswers()])
    with client, pytest.raises(TransportError) as caught:
        client.request("GET", "/items")
    assert not isinstance(caught.value, ServiceUnavailable)
    assert caught.value.attempts == 3 and "read timeout" in str(caught.value)
    assert app.calls["list"] == 3 and app.calls["scripted"] == 3
    assert not client.given_up.is_set()


def test_a_backoff_wait_ends_at_once_when_a_stop_is_requested(server, app):
    app.script.append((503, {"Retry-After": "3600"}, None))
    stop = threading.Event()
    client = HttpClient(server.url, policy=RetryPolicy(max_attempts=3), stop=stop)
    caught: list[BaseException] = []

    def work() -> None:
        try:
            client.request("GET", "/scripted")
        except BaseException as exc:  # noqa: BLE001
            caught.append(exc)

    worker = threading.Thread(target=work)
    with client:
        worker.start()
        deadline = time.monotonic() + 60
        while not client.stats.slept and time.monotonic() < deadline:
            time.sleep(0.01)
        assert client.stats.slept == {"backoff": 3600.0}  # it is in the hour-long wait
        stop.set()
        worker.join(timeout=60)  # a guard against a hang, not a measurement
        assert not worker.is_alive()
    assert [type(exc) for exc in caught] == [Stopped]
    assert app.calls["scripted"] == 1  # no attempt after the stop


def test_a_download_stops_between_chunks_when_a_stop_is_requested(server, app, tmp_path):
    stop = threading.Event()

    class StopAfterFirstChunk(io.BytesIO):
        def write(self, chunk: Any) -> int:
            stop.set()
            return super().write(chunk)

    with HttpClient(server.url, stop=stop) as client, pytest.raises(Stopped):
        client.download("GET", "/blob/8000000", StopAfterFirstChunk(), chunk_size=65536)
    assert app.calls["blob"] == 1


# -- hooks, stats, pool --------------------------------------------------------------------------


class RecordingHook:
    def __init__(self, name: str, events: list[tuple[Any, ...]]) -> None:
        self.name = name
        self.events = events

    def before_request(self, method: str, url: str) -> None:
        self.events.append((self.name, "before", method, url))

    def after_response(self, response: Any) -> None:
        self.events.append((self.name, "after", response.status_code))


def test_hooks_run_around_every_attempt_in_order(server, app, sleeper):
    events: list[tuple[Any, ...]] = []
    app.script.append((503, {}, None))
    hooks = (RecordingHook("pace", events), RecordingHook("quota", events))
    with make_client(server, sleeper, hooks=hooks) as client:
        client.request("GET", "/scripted", params={"page": 2})
    url = f"{server.url}/scripted"
    assert events == [
        ("pace", "before", "GET", url),
        ("quota", "before", "GET", url),
        ("pace", "after", 503),
        ("quota", "after", 503),
        ("pace", "before", "GET", url),
        ("quota", "before", "GET", url),
        ("pace", "after", 200),
        ("quota", "after", 200),
    ]


def test_stats_count_requests_retries_and_waits(server, app, sleeper):
    app.faults.inject("rate_limit", retry_after=1, path="^/items$", method="GET")
    with make_client(server, sleeper) as client:
        client.request("GET", "/items")
        client.request("POST", "/items", data={"name": "a"})
        client.request("GET", "/items?per_page=1")
        client.request("GET", "/status/404")
        snapshot = client.stats.snapshot()
    assert snapshot == {
        "requests": {"GET /items": 3, "GET /status/404": 1, "POST /items": 1},
        "statuses": {"200": 2, "201": 1, "404": 1, "429": 1},
        "retries": {"HTTP 429": 1},
        "slept_seconds": {"rate_limit": 1.0},
        "bytes_downloaded": 0,
        "connections_opened": 1,
    }


def test_keep_alive_pool_is_reused_across_threads(server, app, sleeper):
    with make_client(server, sleeper, pool_size=4) as client:
        for _ in range(10):
            client.request("GET", "/items")
        assert client.connections_opened == 1

        def work() -> None:
            for _ in range(5):
                client.request("GET", "/items")

        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert client.stats.total_requests == 30
        assert client.connections_opened <= 4  # one per worker at most, then reused
    assert app.calls["list"] == 30


# -- downloads -------------------------------------------------------------------------------------


def test_download_streams_the_body_to_a_file(server, app, sleeper, tmp_path):
    size = 3 * 1024 * 1024 + 17
    expected = hashlib.sha256(b"".join(blob_bytes(size))).hexdigest()
    with make_client(server, sleeper) as client, open(tmp_path / "blob", "wb") as dest:
        written, headers = client.download("GET", f"/blob/{size}", dest, chunk_size=65536)
    assert written == size
    assert headers["Content-Length"] == str(size)
    assert hashlib.sha256((tmp_path / "blob").read_bytes()).hexdigest() == expected
    assert client.stats.bytes_downloaded == size


def test_download_cut_short_raises_retriable_then_succeeds(server, app, sleeper):
    app.faults.inject("drop", path="^/blob/")
    with make_client(server, sleeper) as client:
        dest = io.BytesIO()
        with pytest.raises(IncompleteBody) as caught:
            client.download("GET", "/blob/100000", dest, params={"ticket": TICKET})
        error = caught.value
        assert isinstance(error, TransportError) and error.exit_code == 1
        # The simulator promises 4096 bytes and hangs up after 8; what was written is counted.
        assert error.expected == 4096 and error.received == len(dest.getvalue()) < 4096
        assert TICKET not in str(error)
        # What the blob store does: discard the partial file and ask again.
        dest = io.BytesIO()
        written, _ = client.download("GET", "/blob/100000", dest)
    assert written == 100000 == len(dest.getvalue())
    assert app.calls["blob"] == 2


def test_download_of_a_missing_object_raises_api_error_with_status(server, app, sleeper):
    with make_client(server, sleeper) as client, pytest.raises(ApiError) as caught:
        client.download("GET", "/status/404", io.BytesIO())
    assert caught.value.status == 404
    assert app.calls["status"] == 1


# -- URLs and redaction --------------------------------------------------------------------------


def test_plain_http_is_refused_except_to_loopback(sleeper):
    with pytest.raises(ConfigError) as caught:
        HttpClient("http://api.procore.com")
    assert str(caught.value) == (
        "The HTTP client's base URL: plain http is only allowed to loopback "
        "(got http://api.procore.com). Use https://api.procore.com."
    )
    for url in ("http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:9", "https://x.io"):
        HttpClient(url).close()
    with HttpClient("https://api.procore.com") as client, pytest.raises(ConfigError) as caught:
        client.request("GET", f"http://storage.example.com/upload?ticket={TICKET}")
    assert "plain http is only allowed to loopback" in str(caught.value)
    assert TICKET not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"/api/issues?ticket={TICKET}&limit=5", "/api/issues?ticket=***&limit=5"),
        (
            "grant_type=client_credentials&client_id=demo&client_secret=s3cr3t",
            "grant_type=client_credentials&client_id=demo&client_secret=***",
        ),
        ("username=a%40b.com&password=p%40ss+word", "username=a%40b.com&password=***"),
        (
            '{"access_token":"eyJhbGciOi.abc-123","token_type":"bearer"}',
            '{"access_token":"***","token_type":"bearer"}',
        ),
        ("{'ticket': 'abc'}", "{'ticket': '***'}"),
        ("Authorization: Bearer eyJhbGciOi.abc-123_x==", "Authorization: Bearer ***"),
        (f"login failed for {PASSWORD}", "login failed for ***"),
        ("pw=correct+horse+battery+staple", "pw=***"),  # the form-encoded secret too
        ("no secrets here", "no secrets here"),
    ],
)
def test_redact(text, expected):
    assert redact(text, [PASSWORD, ""]) == expected


def test_strip_query_param_keeps_everything_else():
    url = f"https://field.example.com/fieldapi/attachments/9?a=1&ticket={TICKET}&b=%20x&Ticket=2"
    assert strip_query_param(url, "ticket") == (
        "https://field.example.com/fieldapi/attachments/9?a=1&b=%20x"
    )
    assert strip_query_param("https://h/p", "ticket") == "https://h/p"
    assert strip_query_param(f"https://h/p?ticket={TICKET}", "ticket") == "https://h/p"
