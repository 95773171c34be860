"""Minimal HTTP/1.1 plumbing shared by the two simulators (standard library only).

An :class:`App` holds routes, state and a :class:`~migrate.sandbox.faults.Faults`; :func:`serve`
runs it on a loopback port in a background thread. Keep-alive is on, so a client's connection
pool behaves as it would against the real services.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from migrate.sandbox.faults import Faults

MAX_BUFFERED_BODY = 64 * 1024 * 1024


class HTTPError(Exception):
    """Raise from a handler to answer with ``status`` and a JSON (or text) body."""

    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None):
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body if body is not None else {"error": _REASONS.get(status, "error")}
        self.headers = headers or {}


_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Any  # email.message.Message from http.server: case-insensitive get()
    path_params: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    stream: Any = None  # the socket file, only for routes declared with stream_body=True
    content_length: int = 0
    consumed: int = 0  # bytes a stream_body handler has read from ``stream``
    _form: dict[str, list[str]] | None = None

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    @property
    def form(self) -> dict[str, list[str]]:
        if self._form is None:
            if self.content_type == "application/x-www-form-urlencoded" and self.body:
                self._form = parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)
            else:
                self._form = {}
        return self._form

    def param(self, name: str, default: str | None = None) -> str | None:
        """A parameter from the form body or the query string, as the Field API accepts both."""
        for source in (self.form, self.query):
            if name in source:
                return source[name][0]
        return default

    def param_list(self, name: str) -> list[str]:
        return self.form.get(name) or self.query.get(name) or []

    def json(self) -> Any:
        if not self.body:
            raise HTTPError(400, {"errors": "request body must be JSON"})
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HTTPError(400, {"errors": f"malformed JSON: {exc}"}) from None


@dataclass
class Response:
    status: int = 200
    body: bytes | Iterable[bytes] = b""
    headers: dict[str, str] = field(default_factory=dict)
    length: int | None = None  # required when body is an iterable


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    all_headers = {"Content-Type": "application/json; charset=utf-8"}
    all_headers.update(headers or {})
    return Response(status, body, all_headers)


def text_response(text: str, status: int = 200) -> Response:
    return Response(status, text.encode("utf-8"), {"Content-Type": "text/plain; charset=utf-8"})


Handler = Callable[[Request], Response]


@dataclass
class Route:
    method: str
    pattern: re.Pattern[str]
    name: str
    handler: Handler
    stream_body: bool = False


class App:
    """Routes plus per-server hooks. Subclasses register handlers in ``__init__``."""

    name = "app"
    strip_json_suffix = False

    def __init__(self, faults: Faults | None = None) -> None:
        self.routes: list[Route] = []
        self.faults = faults or Faults()
        self.lock = threading.RLock()
        self.calls: Counter[str] = Counter()  # route name -> requests received
        self.statuses: Counter[tuple[str, int]] = Counter()

    # -- registration -------------------------------------------------------------------
    def add_route(
        self,
        method: str,
        path: str,
        handler: Handler,
        name: str | None = None,
        *,
        stream_body: bool = False,
    ) -> None:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path)
        self.routes.append(
            Route(method, re.compile(f"^{regex}$"), name or path, handler, stream_body)
        )

    # -- hooks for subclasses -----------------------------------------------------------
    def before(self, request: Request, route: Route) -> Response | None:
        """Runs before faults and the handler (auth, quota); a response short-circuits."""
        return None

    def decorate(self, request: Request, route: Route | None, response: Response) -> None:
        """Runs on every response, injected faults included (rate-limit headers)."""

    # -- dispatch -------------------------------------------------------------------------
    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        if self.strip_json_suffix and path.endswith(".json"):
            path = path[: -len(".json")]
        path_known = False
        for route in self.routes:
            found = route.pattern.match(path)
            if found:
                path_known = True
                if route.method == method:
                    return route, found.groupdict(), True
        return None, {}, path_known

    def call_counts(self) -> dict[str, int]:
        with self.lock:
            return dict(self.calls)

    def reset_counts(self) -> None:
        with self.lock:
            self.calls.clear()
            self.statuses.clear()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate sends; without this, Nagle + delayed ACK add ~40 ms
    # to every request.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # The simulators are quiet; tests read app.calls instead.

    def _handle(self) -> None:
        app = self.server.app
        parts = urlsplit(self.path)
        request = Request(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers=self.headers,
            content_length=int(self.headers.get("Content-Length") or 0),
        )
        route, path_params, path_known = app.match(request.method, request.path)
        request.path_params = path_params
        if route and route.stream_body:
            request.stream = self.rfile
        elif request.content_length > MAX_BUFFERED_BODY:
            self.close_connection = True
            self._send(json_response({"error": "request body too large"}, 413))
            return
        else:
            request.body = (
                self.rfile.read(request.content_length) if request.content_length else b""
            )

        with app.lock:
            app.calls[route.name if route else "<unrouted>"] += 1
        response = self._respond(app, route, request, path_known)
        if response is None:
            return  # connection deliberately dropped
        if request.stream is not None:
            self._drain(request)
        app.decorate(request, route, response)
        with app.lock:
            app.statuses[(route.name if route else "<unrouted>", response.status)] += 1
        self._send(response)

    def _respond(
        self, app: App, route: Route | None, request: Request, path_known: bool
    ) -> Response | None:
        if route is None:
            status = 405 if path_known else 404
            return json_response({"error": _REASONS[status]}, status)
        early = app.before(request, route)
        if early is not None:
            return early
        decision = app.faults.decide(request.method, request.path)
        if decision.delay:
            time.sleep(decision.delay)
        if decision.kind == "error":
            return json_response({"error": "simulated server error"}, decision.status)
        if decision.kind == "rate_limit":
            return json_response(
                {"error": "Too Many Requests"}, 429, {"Retry-After": str(decision.retry_after)}
            )
        if decision.kind == "drop":
            self._drop_mid_body()
            return None
        response = self._run_handler(route, request)
        if decision.kind == "lost_response":
            self._drop_mid_body()
            return None
        return response

    def _run_handler(self, route: Route, request: Request) -> Response:
        try:
            return route.handler(request)
        except HTTPError as exc:
            if isinstance(exc.body, str | bytes):
                response = text_response(
                    exc.body if isinstance(exc.body, str) else exc.body.decode()
                )
                response.status = exc.status
            else:
                response = json_response(exc.body, exc.status)
            response.headers.update(exc.headers)
            return response
        except Exception:  # a simulator bug must be visible, not a hung client
            traceback.print_exc()
            return json_response({"error": "simulator crashed; see its stderr"}, 500)

    def _drop_mid_body(self) -> None:
        """Promise a body, send part of it, and hang up: what a reset mid-transfer looks like."""
        try:
            self.send_response_only(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "4096")
            self.end_headers()
            self.wfile.write(b'[{"id":"')
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.close_connection = True

    def _drain(self, request: Request) -> None:
        remaining = request.content_length - request.consumed
        try:
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 65536))
                if not chunk:
                    break
                remaining -= len(chunk)
        except OSError:
            # The client is gone (killed mid-upload): the call is still answered and counted,
            # so a test can wait until every call a dead process made has been dealt with.
            self.close_connection = True

    def _send(self, response: Response) -> None:
        body = response.body
        try:
            self.send_response(response.status)
            headers = dict(response.headers)
            if isinstance(body, bytes | bytearray):
                headers["Content-Length"] = str(len(body))
            else:
                if response.length is None:
                    raise ValueError("a streamed response needs a length")
                headers["Content-Length"] = str(response.length)
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command == "HEAD":
                return
            if isinstance(body, bytes | bytearray):
                self.wfile.write(body)
            else:
                for chunk in body:
                    self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        self.stopping = False
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Cut every open connection, keep-alive ones included: a stopped service answers
        nothing, not even on a connection a client opened before."""
        self.stopping = True
        with self._open_lock:
            connections = list(self._open)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not self.stopping:  # a handler cut off by stop() has nothing to report
            super().handle_error(request, client_address)


class RunningServer:
    """A simulator listening on loopback in a background thread."""

    def __init__(self, app: App, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self._server = _Server((host, port), app)
        bound, self.port = self._server.server_address[:2]
        self.host = bound.decode() if isinstance(bound, bytes | bytearray) else str(bound)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name=f"{app.name}-server", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        """Stop listening and cut every open connection (the service is gone)."""
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        self._thread.join(timeout=5)
