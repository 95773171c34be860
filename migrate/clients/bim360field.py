"""BIM 360 Field API client: ticket sessions, paging and binary downloads.

Every call is a POST or GET carrying ``ticket`` as a form field or query parameter. The ticket
lives only in this object's memory; it is registered with the HTTP layer as a secret so no
message can carry it, and URLs the API returns have it stripped before anyone stores them.
Retries of 5xx, 429 and broken connections happen in :mod:`migrate.clients.http`; this module
adds what is specific to Field: log in, log in again when a ticket expires, page, download.
One session may be shared by several download threads.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import IO, Any

from migrate.clients.credentials import Secret
from migrate.clients.http import BytesSink, HttpClient, strip_query_param
from migrate.clients.json_array import NotAJsonArray, iter_json_array
from migrate.errors import ApiError, CredentialError, IncompleteBody
from migrate.stopping import Stopped

#: The simulator (and, we assume, the service) caps pages at 100 rows; asking for more would
#: make a full page look short and end paging early.
MAX_PAGE_SIZE = 100
#: /fieldapi/issues/v1/retrieve takes at most this many ids a call.
MAX_RETRIEVE_IDS = 100
#: A call that keeps answering 401 with a freshly issued ticket is refused for real.
MAX_LOGINS_PER_CALL = 3


class MalformedBody(ApiError):
    """A 2xx answer whose body is not the JSON the endpoint promises (bad source data)."""

    def __init__(self, endpoint: str, body_excerpt: str, reason: str) -> None:
        self.body_text = body_excerpt
        super().__init__(
            f"BIM 360 Field {endpoint} answered with {reason}. The body is kept in "
            "source_problems; run the command again later, or report it to Autodesk.",
            status=200,
            method="",
            endpoint=endpoint,
            body=body_excerpt,
        )


class FieldSession:
    """A logged-in BIM 360 Field session for one project.

    Logs in lazily, logs in again when a call answers 401 (tickets expire after a number of
    calls or minutes) and retries that call; logs out on :meth:`logout` / leaving ``with``.
    """

    def __init__(
        self,
        http: HttpClient,
        username: Secret,
        password: Secret,
        *,
        project_id: str | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> None:
        self.http = http
        self._username = username
        self._password = password
        self._ticket: str | None = None
        self._lock = threading.Lock()
        self.project_id = project_id
        self.page_size = max(1, min(page_size, MAX_PAGE_SIZE))
        self.logins = 0

    # -- session -------------------------------------------------------------------------
    def login(self) -> None:
        """Get a fresh ticket. CredentialError if the service refuses the credentials."""
        with self._lock:
            self._login_locked()

    def _login_locked(self) -> str:
        response = self.http.request(
            "POST",
            "/api/login",
            data={"username": self._username.reveal(), "password": self._password.reveal()},
        )
        if response.status_code == 401:
            raise CredentialError(
                "BIM 360 Field rejected the credentials in BIM360_FIELD_USERNAME / "
                "BIM360_FIELD_PASSWORD. Check them, then run the command again."
            )
        if response.status_code == 426:
            raise CredentialError(
                "BIM 360 Field refused the login: the user is a subcontractor on the active "
                "project. Use an account of the general contractor."
            )
        self._raise_for_status(response, "POST", "/api/login")
        try:
            ticket = response.json().get("ticket")
        except (ValueError, AttributeError):
            ticket = None
        if not isinstance(ticket, str) or not ticket:
            raise ApiError(
                "BIM 360 Field /api/login answered without a ticket. Check [source] base_url "
                "points at BIM 360 Field, then run the command again."
            )
        self.http.add_secret(ticket)
        self._ticket = ticket
        self.logins += 1
        return ticket

    def _current_ticket(self) -> str:
        with self._lock:
            if self._ticket is None:
                return self._login_locked()
            return self._ticket

    def _renew(self, stale: str) -> tuple[str, bool]:
        """A ticket newer than ``stale``: another thread's fresh one, or a new login (True)."""
        with self._lock:
            if self._ticket is not None and self._ticket != stale:
                return self._ticket, False
            return self._login_locked(), True

    def logout(self) -> None:
        """Expire the ticket. Failures are ignored: the ticket expires on its own anyway.

        After a stop request (Ctrl-C) or once the service was given up on, nothing is sent.
        """
        with self._lock:
            ticket, self._ticket = self._ticket, None
        if ticket is None:
            return
        with contextlib.suppress(Exception, Stopped):
            self.http.request("POST", "/api/logout", data={"ticket": ticket}, retry=False)

    def __enter__(self) -> FieldSession:
        self.login()
        return self

    def __exit__(self, *exc: object) -> None:
        self.logout()

    # -- calls ---------------------------------------------------------------------------
    def call(
        self, method: str, path: str, params: dict[str, Any] | None = None, *, stream: bool = False
    ) -> Any:
        """One API call with the ticket, logging in again on 401. Returns the response."""
        ticket = self._current_ticket()
        own_logins = 0
        # Only logins this call made itself count towards the limit: a ticket another thread
        # just fetched may be used up by the other threads before this call gets to it.
        for _attempt in range(MAX_LOGINS_PER_CALL * 10):
            payload = _with_ticket(params or {}, ticket)
            if method == "GET":
                response = self.http.request(method, path, params=payload, stream=stream)
            else:
                response = self.http.request(method, path, data=payload, stream=stream)
            if response.status_code != 401 or own_logins == MAX_LOGINS_PER_CALL:
                return response
            response.close()
            ticket, logged_in = self._renew(ticket)
            own_logins += logged_in
        return response

    def json(self, method: str, path: str, params: dict[str, Any] | None = None) -> Any:
        """Call and parse the JSON body; ApiError (with ``status``) for any 4xx answer."""
        response = self.call(method, path, params)
        self._raise_for_status(response, method, path)
        try:
            return response.json(parse_constant=_not_json)
        except ValueError:
            excerpt = self.http.redact(response.content[:2048].decode("utf-8", "replace"))
            raise MalformedBody(path, excerpt, "a body that is not JSON") from None

    def pages(
        self, method: str, path: str, params: dict[str, Any] | None = None, *, start: int = 0
    ) -> Iterator[tuple[int, list[Any]]]:
        """Yield ``(offset, rows)`` for offset/limit endpoints until a short page.

        The page size never exceeds :data:`MAX_PAGE_SIZE`, so a short page really is the last.
        """
        offset = start
        while True:
            rows = self.json(
                method, path, {**(params or {}), "offset": offset, "limit": self.page_size}
            )
            if not isinstance(rows, list):
                raise MalformedBody(
                    path,
                    self.http.redact(str(rows)[:2048]),
                    f"a JSON {type(rows).__name__} where a list was expected",
                )
            yield offset, rows
            if len(rows) < self.page_size:
                return
            offset += len(rows)

    def project_call(self, method: str, path: str, **params: Any) -> Any:
        """:meth:`json` with this session's ``project_id``."""
        return self.json(method, path, {"project_id": self.project_id, **params})

    def download(
        self,
        dest: BytesSink,
        *,
        object_type: str,
        object_id: str,
        image_type: str = "original",
        page: int | None = None,
    ) -> int:
        """Stream one binary (``page`` of a rendition, if given) to ``dest``; bytes written.

        FileNotFoundError when the source has no such file (404); IncompleteBody when the body
        was cut short (the caller discards ``dest`` and tries again).
        """
        params = {
            "project_id": self.project_id,
            "object_type": object_type,
            "object_id": object_id,
            "image_type": image_type,
            "page": page,
        }
        try:
            return self.download_body("POST", "/api/binary_data", params, dest)
        except ApiError as exc:
            if exc.status == 404:
                raise FileNotFoundError(
                    f"BIM 360 Field has no binary data for {object_type} {object_id}"
                ) from None
            raise

    def download_body(self, method: str, path: str, params: dict[str, Any], dest: BytesSink) -> int:
        """Stream a 2xx answer's body to ``dest`` (logging in again on 401); bytes written.

        For answers too large to hold parsed (binary data, the project's status history).
        ApiError for other 4xx/5xx answers; IncompleteBody when the body was cut short (the
        caller discards ``dest`` and tries again).
        """
        ticket = self._current_ticket()
        own_logins = 0
        for _attempt in range(MAX_LOGINS_PER_CALL * 10):
            payload = _with_ticket(params, ticket)
            try:
                # A 401 raises before any byte is written, so dest is still empty here.
                if method == "GET":
                    written, _headers = self.http.download(method, path, dest, params=payload)
                else:
                    written, _headers = self.http.download(method, path, dest, data=payload)
            except ApiError as exc:
                if exc.status == 401 and own_logins < MAX_LOGINS_PER_CALL:
                    ticket, logged_in = self._renew(ticket)
                    own_logins += logged_in
                    continue
                raise
            return written
        raise ApiError(f"BIM 360 Field kept rejecting fresh tickets for {path}")

    def json_array(
        self, method: str, path: str, params: dict[str, Any], spool: IO[bytes]
    ) -> Iterator[Any]:
        """The elements of a JSON array answer, downloaded to ``spool`` and read one by one.

        Memory holds one element, not the answer. A body cut short is downloaded again (up to
        the retry policy's attempts); MalformedBody when it is not one JSON array.
        """
        attempts = self.http.policy.max_attempts
        for attempt in range(1, attempts + 1):
            spool.seek(0)
            spool.truncate()
            try:
                self.download_body(method, path, params, spool)
                break
            except IncompleteBody:
                if attempt == attempts:
                    raise
        spool.seek(0)
        try:
            yield from iter_json_array(spool, parse_constant=_not_json)
        except NotAJsonArray as exc:
            raise MalformedBody(path, self.http.redact(exc.excerpt), exc.reason) from None

    # -- helpers -------------------------------------------------------------------------
    def _raise_for_status(self, response: Any, method: str, path: str) -> None:
        status = response.status_code
        if status < 400:
            return
        try:
            body = response.content[:2048].decode("utf-8", "replace")
        except Exception:  # a body that cannot even be read adds nothing
            body = ""
        raise ApiError(
            status=status,
            method=method,
            endpoint=f"BIM 360 Field {path}",
            body=self.http.redact(body),
        )


def _with_ticket(params: dict[str, Any], ticket: str) -> dict[str, Any]:
    return {**{k: v for k, v in params.items() if v is not None}, "ticket": ticket}


def _not_json(constant: str) -> Any:
    # Python's parser takes NaN and Infinity; JSON (RFC 8259) has neither, and stored they
    # would fail the raw tables' json_valid check, so such a body is unreadable like any other.
    raise ValueError(f"{constant} is not JSON")


def clean_url(url: str | None) -> str | None:
    """A Field URL safe to store: the ``ticket`` parameter removed."""
    return strip_query_param(url, "ticket") if url else url
