"""Procore simulator: OAuth, coordination issues (single and sync), locations, uploads, storage,
vendors, and the Inspections tool (:mod:`migrate.sandbox.procore_inspections`).

Follows /work/shared/seeds/000 and 001 and /work/shared/procore-notes.md. Where Procore's
documentation is silent the simulator picks the strict reading, so a client that works here
does not depend on leniency. The choices a client author should know about:

- Auth: ``POST /oauth/token`` takes form fields only (no JSON, no query string). Unknown,
  missing or expired bearer tokens get 401 with a Doorkeeper-style body and
  ``WWW-Authenticate``. A missing ``Procore-Company-Id`` header is a 400
  ``{"errors": "Missing Procore-Company-Id header!"}`` (malformed request); a company other than
  ours is a 403. Only ``GET /rest/v1.0/companies`` and ``GET /rest/v1.0/me`` skip the header.
- Quota: one hourly window and one spike window for the whole app (a new token does not reset
  them). Every ``/rest/`` request counts, 401/403/404s, unrouted paths and requests that then
  hit an injected fault included (Procore's "Rate Limiting" page: failed requests consume quota
  exactly like successful ones); a request refused with 429 does not take a slot (so
  ``Retry-After`` is honest). ``/oauth/token`` and storage (``/s3/``) are not counted and carry
  no rate-limit headers. The 429 body is Procore's plain-text message. Procore's pages read two
  ways on how the windows count and on what a 429 carries, so each reading is a switch:

  - ``rate_windows="sliding"`` (default): a sliding log, at most ``limit`` requests in any
    ``length`` seconds; ``X-Rate-Limit-Reset`` is when the oldest counted request leaves (the
    current page: Remaining "may increase again after a brief pause as the window rolls
    forward"). ``rate_windows="fixed"``: each window resets all at once at every multiple of
    its length (Unix time), and ``X-Rate-Limit-Reset`` is when the next window begins (the older
    page: "the rate limit resets every hour", Reset is "the Unix timestamp for when the next
    window begins"). Both apply to the hourly and the 10-second spike window alike.
  - ``retry_after=True`` (default) sends ``Retry-After`` (whole seconds to the reset) with a
    429; ``retry_after=False`` leaves it out. The pages promise ``Retry-After`` only for the 503
    of heavy-load throttling and tell a client refused with 429 to wait until
    ``X-Rate-Limit-Reset`` (with backoff and jitter), so a client must cope without it.
  - The headers describe "the limit your app is most likely to exceed first"; in most cases
    the spike window "until you are very close to exhausting the hourly limit". Which one that
    is, the pages do not define: ``rate_report="fewest"`` (default) names the window with
    fewer requests left, ``rate_report="share"`` the one with the smaller share of its limit
    left (a fresh spike window then yields to an hourly window barely begun, which is how a
    stand-in once slowed our budget to the hourly average, issue 16). The spike window wins a
    tie either way. Not modelled: Procore's sample-code page says the hourly window "typically
    shows up only once it's used up"; a client with requests in flight then meets one 429 per
    request in flight when the hour runs out, whatever it does, until it knows the hourly limit.

  :meth:`ProcoreApp.rate_stats` counts requests, 429s and the busiest spike window;
  :meth:`ProcoreApp.spike_window_tally` counts, per spike window, what was counted and what
  was refused, so tests judge a client by what the server saw rather than by wall time.
- Unknown projects are 404; projects of another company are 403 (invisible).
- Strict where the seeds speak: a JSON body needs ``Content-Type: application/json`` (415
  otherwise; seeds 000/001 mark the header required); a create's status is open or closed
  (seed 000: "Should be either open or closed"); a single update may set open,
  ready_for_review or closed (procore-notes); an origin needs all four of its fields, the
  deep link included (seed 000). Where they are silent the reading is a switch
  (``uuid_reuse``, ``create_statuses``, ``update_statuses``, ``rate_windows``,
  ``retry_after``), so `migrate sandbox serve --contract` can replay what a preflight saw
  Procore do; so can ``rate_limit_headers=False`` (answers without the X-Rate-Limit headers)
  and ``refused_tools`` (a tool's requests answered 403, 404 or 400, by :data:`TOOL_PATHS`).
  Descriptions have no length limit: the seeds give none.
- Unknown attributes in a create or update are errors, not silently dropped. ``uuid`` must be a
  canonical UUID (compared case-insensitively) and stays taken after the issue is deleted
  (Procore soft-deletes into a recycle bin). Sync updates may change only the eight fields of
  seed 001; ``id`` and ``viewpoints``/BIM references are refused (the sandbox has no BIM files).
- Lists are ordered by id, ``per_page`` defaults to 100 and is silently capped at 100 (read
  ``Per-Page``), ``view`` defaults to ``normal`` (no attachments) for list and show; ``compact``
  holds only ids. Unknown ``filters[...]`` are a 400 rather than ignored.
- Location names are compared exactly (case and spaces matter); duplicate names under one
  parent are refused.
- Uploads: the storage form is checked like an S3 POST policy. Missing or altered fields, extra
  fields, a bad signature, or a start more than ``upload_start_expiry`` after creation are 403;
  an ``Authorization`` header is 400 (two auth mechanisms); fields after the ``file`` part are
  ignored, as S3 does. Bodies are parsed as a stream: the file is hashed (sha256, md5) and
  spooled to a temporary directory, never held in memory. Attachment objects served over HTTP
  are ``{id, name, content_type, url}`` as in Procore; ``url`` is a presigned storage URL (valid
  ``attachment_url_ttl`` seconds) that streams the stored bytes back. Size and sha256 are
  exposed only through the Python API (``snapshot()``, ``issues()``), not over HTTP. Pass
  ``keep_upload_bytes=False`` for huge benchmarks: hashes are kept, bytes are not, and downloads
  answer 404 NoSuchKey.

Time comes from :meth:`ProcoreApp.now` (wall clock plus ``clock_offset``) so tests can expire
tokens, windows and uploads without sleeping.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import tempfile
import time
import uuid as uuidlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import quote, urlencode
from xml.sax.saxutils import escape

from migrate.sandbox.faults import Faults
from migrate.sandbox.httpbase import App, HTTPError, Request, Response, Route, json_response
from migrate.sandbox.procore_inspections import InspectionOptions, Inspections

STATUSES = ("blocked", "open", "ready_for_review", "moved_to_observation", "unblocked", "closed")
PRIORITIES = ("low", "medium", "high", "critical")
ISSUE_TYPES = (
    "building_code",
    "existing_condition",
    "clash",
    "other",
    "coordination",
    "constructability",
    "client_feedback",
    "requirement_change",
    "design_review",
)
#: Seed 001: the only fields a sync update (an item with ``id``) may change.
SYNC_UPDATABLE = frozenset(
    {
        "title",
        "description",
        "due_date",
        "location_id",
        "assignee_id",
        "issue_type",
        "priority",
        "trade_id",
    }
)
#: Seed 000: every attribute a create accepts.
CREATE_FIELDS = SYNC_UPDATABLE | {
    "uuid",
    "status",
    "origin",
    "attachment_upload_uuids",
    "attachments",
    "creation_source",
    "viewpoints",
    "bim_model_id",
    "drawing_revision_id",
    "coordination_issue_file_id",
}
SINGLE_UPDATABLE = SYNC_UPDATABLE | {"status"}
#: Seed 000: a create's status "Should be either open or closed".
CREATE_STATUSES = ("open", "closed")
#: procore-notes: the statuses a single update may set (sync cannot change a status at all).
UPDATE_STATUSES = ("open", "ready_for_review", "closed")
#: What Procore does with a create whose uuid an issue already has: the docs do not say.
#: ``refused``: a per-item error ``{"uuid": ["has already been taken"]}``; ``accepted``: a
#: second issue with the same uuid; ``ignored``: nothing is created and nothing is said (the
#: item is in neither ``entities`` nor ``errors``; a single create answers the existing issue).
UUID_REUSE_READINGS = ("refused", "accepted", "ignored")
ORIGIN_KEYS = ("origin_type", "origin_id", "title", "deep_link_url")
MAX_SYNC_ITEMS = 1000
MAX_TITLE_LENGTH = 80
DEFAULT_PER_PAGE = 100
MAX_PER_PAGE = 100
VIEWS = ("compact", "normal", "extended")
ISSUE_FILTERS = ("filters[ids][]", "filters[search]", "filters[updated_at]")
LOCATION_FILTERS = ("filters[parent_id]", "filters[search]")
BUCKET = "procore-sandbox-uploads"
MAX_PRE_FILE_FIELDS = 20 * 1024  # S3 refuses larger form data before the file part
CHUNK = 64 * 1024
RATE_LIMIT_MESSAGE = (
    "You have surpassed the max number of requests for an hour. "
    "Please wait until your limit resets."
)
SERVICE_ACCOUNT = {
    "id": 7999,
    "login": "sandbox-service-account@procore.example",
    "name": "Sandbox Service Account",
}
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
#: Marks a create whose reused uuid is ignored (never stored).
_IGNORED = "_uuid_reuse_ignored"

DEFAULT_STATE: dict[str, Any] = {
    "company": {"id": 4100, "name": "Sandbox Builders"},
    "projects": [
        {"id": 5100, "name": "Harbor Point Tower", "company_id": 4100},
        {"id": 5101, "name": "Depot Renovation", "company_id": 4100},
    ],
    "users": [
        {
            "id": 7001,
            "name": "Alice Carter",
            "email_address": "alice.carter@example.com",
            "company_name": "Sandbox Builders",
            "project_ids": [5100, 5101],
        },
        {
            "id": 7002,
            "name": "Bruno Diaz",
            "email_address": "Bruno.Diaz@example.com",
            "company_name": "Diaz Mechanical",
            "project_ids": [5100],
        },
        {
            "id": 7003,
            "name": "Chen Wei",
            "email_address": "chen.wei@example.com",
            "company_name": "Wei Electric",
            "project_ids": [5100],
        },
        {
            "id": 7004,
            "name": "Dana Ito",
            "email_address": "dana.ito@example.com",
            "company_name": "Sandbox Builders",
            "project_ids": [5101],
        },
    ],
    "assignee_user_ids": {"5100": [7001, 7002], "5101": [7001, 7004]},
    "trades": [
        {"id": 3001, "name": "Drywall"},
        {"id": 3002, "name": "ELECTRICAL"},
        {"id": 3003, "name": "Fire Protection", "active": False},
    ],
    "vendors": [
        {"id": 9001, "name": "Diaz Mechanical", "project_ids": [5100]},
        {"id": 9002, "name": "Wei Electric", "project_ids": [5100, 5101]},
    ],
    "locations": {
        "5100": [["North Building", "Level 1"], ["North Building", "Level 2", "Room 201"]],
    },
    "coordination_issues": {
        "5100": [
            {
                "title": "Existing duct clash at grid C4",
                "status": "open",
                "priority": "low",
                "issue_type": "clash",
            }
        ],
    },
}


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _as_int(value: Any) -> int | None:
    """An int from JSON or a query string; None when it is not a plain integer."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_instant(text: str) -> float:
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _ulid(now: float) -> str:
    value = (int(now * 1000) << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def _s3_error(status: int, code: str, message: str, close: bool = False) -> Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{escape(message)}</Message>"
        f"<RequestId>{secrets.token_hex(8).upper()}</RequestId></Error>"
    )
    headers = {"Content-Type": "application/xml"}
    if close:
        headers["Connection"] = "close"
    return Response(status, body.encode("utf-8"), headers)


class SlidingWindow:
    """A sliding log of request times: at most ``limit`` requests in any ``length`` seconds."""

    def __init__(self, limit: int, length: float) -> None:
        self.limit = limit
        self.length = length
        self.hits: deque[float] = deque()

    def _purge(self, now: float) -> None:
        cutoff = now - self.length
        while self.hits and self.hits[0] <= cutoff:
            self.hits.popleft()

    def full(self, now: float) -> bool:
        self._purge(now)
        return len(self.hits) >= self.limit

    def remaining(self, now: float) -> int:
        self._purge(now)
        return max(0, self.limit - len(self.hits))

    def reset_at(self, now: float) -> float:
        """When the oldest counted request leaves the window, i.e. a slot frees."""
        self._purge(now)
        if len(self.hits) >= self.limit > 0:
            return self.hits[len(self.hits) - self.limit] + self.length
        return (self.hits[0] if self.hits else now) + self.length


class FixedWindow:
    """A window that resets all at once at every multiple of ``length`` seconds (Unix time).

    The other reading of ``X-Rate-Limit-Reset``: the time the whole window starts afresh.
    Same interface as :class:`SlidingWindow`.
    """

    def __init__(self, limit: int, length: float) -> None:
        self.limit = limit
        self.length = length
        self.started = -math.inf
        self.count = 0
        self.hits = self  # ``hits.append(now)`` counts a request, as on the sliding log

    def _roll(self, now: float) -> None:
        start = math.floor(now / self.length) * self.length
        if start != self.started:
            self.started, self.count = start, 0

    def append(self, now: float) -> None:
        self._roll(now)
        self.count += 1

    def __len__(self) -> int:
        return self.count

    def full(self, now: float) -> bool:
        return self.remaining(now) <= 0

    def remaining(self, now: float) -> int:
        self._roll(now)
        return max(0, self.limit - self.count)

    def reset_at(self, now: float) -> float:
        """When the current window ends and the count starts again from zero."""
        self._roll(now)
        return self.started + self.length


#: The paths of each tool a preflight checks (its names), for ``refused_tools``.
TOOL_PATHS = {
    "coordination_issues": r"/coordination_issues",
    "locations": r"/projects/\d+/locations",
    "inspections": r"/checklist/",
    "trades": r"/companies/\d+/trades",
    "uploads": r"/uploads",
}

#: How the simulator's quota windows count: Procore's docs do not say (see procore-notes).
RATE_WINDOW_KINDS = ("sliding", "fixed")
#: Which window the X-Rate-Limit-* headers describe: fewer requests left, or smaller share left.
RATE_REPORTS = ("fewest", "share")


class _MultipartError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class _BodyReader:
    """Reads at most Content-Length bytes of a streamed request, accounting for them."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.remaining = request.content_length

    def read(self) -> bytes:
        if self.remaining <= 0:
            return b""
        chunk = self.request.stream.read(min(CHUNK, self.remaining))
        if not chunk:
            self.remaining = 0
            return b""
        self.remaining -= len(chunk)
        self.request.consumed += len(chunk)
        return chunk


class _FileSink:
    """Hashes and counts the file part, spooling it to disk when a path is given."""

    def __init__(self, path: str | None) -> None:
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5()
        self.size = 0
        self.path = path
        # Kept open across many writes and closed in close()/discard().
        self._handle = open(path, "wb") if path else None  # noqa: SIM115

    def write(self, data: bytes) -> None:
        self.sha256.update(data)
        self.md5.update(data)
        self.size += len(data)
        if self._handle:
            self._handle.write(data)

    def close(self) -> None:
        if self._handle:
            self._handle.close()
            self._handle = None

    def discard(self) -> None:
        self.close()
        if self.path and os.path.exists(self.path):
            os.remove(self.path)


class _FieldValue:
    """A form field's value, refused once the fields before the file exceed S3's limit."""

    def __init__(self, budget: int | None) -> None:
        self.data = bytearray()
        self.budget = budget  # None: a field after the file, which S3 ignores

    def write(self, data: bytes) -> None:
        if self.budget is None:
            return
        self.data.extend(data)
        if len(self.data) > self.budget:
            raise _MultipartError(
                400,
                "MaxPostPreDataLengthExceeded",
                "Your POST request fields preceding the upload file were too large.",
            )


def _malformed() -> _MultipartError:
    return _MultipartError(
        400,
        "MalformedPOSTRequest",
        "The body of your POST request is not well-formed multipart/form-data.",
    )


def _part_headers(raw: bytes) -> tuple[str | None, str | None]:
    """The ``name`` and ``filename`` of a part from its Content-Disposition header."""
    name = filename = None
    for line in raw.decode("utf-8", "replace").split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() != "content-disposition":
            continue
        found = re.search(r'(?:^|;)\s*name="([^"]*)"', value)
        name = found.group(1) if found else None
        found = re.search(r'(?:^|;)\s*filename="([^"]*)"', value)
        filename = found.group(1) if found else None
    return name, filename


class _MultipartStream:
    """Streams a multipart/form-data body holding only a rolling buffer of about one chunk."""

    def __init__(self, reader: _BodyReader, boundary: bytes) -> None:
        self.reader = reader
        self.separator = b"\r\n--" + boundary
        self.buffer = bytearray(b"\r\n")  # lets the first delimiter match like the others

    def _fill(self) -> None:
        chunk = self.reader.read()
        if not chunk:
            raise _malformed()
        self.buffer.extend(chunk)

    def skip_preamble(self) -> None:
        separator, buffer = self.separator, self.buffer
        while (index := buffer.find(separator)) < 0:
            if len(buffer) > len(separator):
                del buffer[: len(buffer) - len(separator)]
            self._fill()
        del buffer[: index + len(separator)]

    def next_part(self) -> tuple[str | None, str | None] | None:
        """Headers of the next part (name, filename), or None after the closing delimiter."""
        buffer = self.buffer
        while len(buffer) < 2:
            self._fill()
        if buffer[:2] == b"--":
            return None
        if buffer[:2] != b"\r\n":
            raise _malformed()
        del buffer[:2]
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            if len(buffer) > 16 * 1024:
                raise _MultipartError(400, "MalformedPOSTRequest", "Part headers too large.")
            self._fill()
        headers = _part_headers(bytes(buffer[:end]))
        del buffer[: end + 4]
        return headers

    def copy_body(self, sink: _FileSink | _FieldValue) -> None:
        """Write the current part's body to ``sink``, up to the next delimiter."""
        separator, buffer = self.separator, self.buffer
        keep = len(separator) - 1  # a delimiter may straddle two reads
        while (index := buffer.find(separator)) < 0:
            if len(buffer) > keep:
                sink.write(bytes(buffer[: len(buffer) - keep]))
                del buffer[: len(buffer) - keep]
            self._fill()
        sink.write(bytes(buffer[:index]))
        del buffer[: index + len(separator)]


def _parse_multipart(
    reader: _BodyReader, boundary: bytes, open_sink: Callable[[], _FileSink]
) -> tuple[list[tuple[str, str]], _FileSink | None, str | None]:
    """Form fields before the ``file`` part, the file's sink, and the file part's filename.

    Fields after the file part are read and ignored, as S3 does.
    """
    stream = _MultipartStream(reader, boundary)
    fields: list[tuple[str, str]] = []
    sink: _FileSink | None = None
    filename: str | None = None
    budget = MAX_PRE_FILE_FIELDS
    try:
        stream.skip_preamble()
        while (headers := stream.next_part()) is not None:
            name, part_filename = headers
            if name == "file":
                if sink is not None:
                    raise _MultipartError(
                        400, "InvalidArgument", "POST requires exactly one file upload per request."
                    )
                sink = open_sink()
                filename = part_filename
                stream.copy_body(sink)
                continue
            value = _FieldValue(budget if sink is None else None)
            stream.copy_body(value)
            if sink is None and name is not None:
                budget -= len(value.data)
                fields.append((name, value.data.decode("utf-8", "replace")))
        return fields, sink, filename
    except BaseException:
        if sink is not None:
            sink.discard()
        raise


class ProcoreApp(App):
    """An in-memory Procore: one company, its projects, users, locations, issues and uploads."""

    #: Who Procore says did what the sandbox's app did (inspections name it as the author).
    SERVICE_ACCOUNT = SERVICE_ACCOUNT

    name = "procore"

    def __init__(
        self,
        state: dict[str, Any] | None = None,
        *,
        client_id: str = "demo-client",
        client_secret: str = "demo-secret",
        token_ttl: float = 5400.0,
        hourly_limit: int = 3600,
        hourly_window: float = 3600.0,
        spike_limit: int = 150,
        spike_window: float = 10.0,
        rate_windows: str = "sliding",
        retry_after: bool = True,
        rate_report: str = "fewest",
        upload_start_expiry: float = 3600.0,
        upload_reference_expiry: float = 7 * 24 * 3600.0,
        attachment_url_ttl: float = 3600.0,
        keep_upload_bytes: bool = True,
        inspection_item_type_field: str = "name",
        inspection_number_values: str = "integer",
        inspection_response_repost: str = "refuse",
        inspection_closed_locked: bool = True,
        inspection_type_names: str = "unique",
        uuid_reuse: str = "refused",
        create_statuses: tuple[str, ...] = CREATE_STATUSES,
        update_statuses: tuple[str, ...] = UPDATE_STATUSES,
        require_json_content_type: bool = True,
        rate_limit_headers: bool = True,
        refused_tools: Mapping[str, int] | None = None,
        faults: Faults | None = None,
    ) -> None:
        super().__init__(faults)
        if uuid_reuse not in UUID_REUSE_READINGS:
            raise ValueError(f"uuid_reuse must be one of {UUID_REUSE_READINGS}, not {uuid_reuse!r}")
        for statuses in (create_statuses, update_statuses):
            unknown = sorted(set(statuses) - set(STATUSES))
            if unknown:
                raise ValueError(f"unknown coordination issue statuses {unknown}")
        #: The readings where the documents are silent or loose (see the module docstring);
        #: `migrate sandbox serve --contract` sets them to what a preflight observed.
        self.uuid_reuse = uuid_reuse
        self.create_statuses = tuple(create_statuses)
        self.update_statuses = tuple(update_statuses)
        self.require_json_content_type = require_json_content_type
        #: Whether answers carry X-Rate-Limit-* headers (a preflight may see none).
        self.rate_limit_headers = rate_limit_headers
        unknown_tools = sorted(set(refused_tools or {}) - set(TOOL_PATHS))
        if unknown_tools:
            raise ValueError(f"unknown tools {unknown_tools}; known: {sorted(TOOL_PATHS)}")
        #: Tool -> the HTTP status every request to it gets (a preflight saw it refused).
        self.refused_tools = dict(refused_tools or {})
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl = token_ttl
        self.upload_start_expiry = upload_start_expiry
        self.upload_reference_expiry = upload_reference_expiry
        self.attachment_url_ttl = attachment_url_ttl
        self.keep_upload_bytes = keep_upload_bytes
        #: Seconds added to the wall clock; tests advance it instead of sleeping.
        self.clock_offset = 0.0
        if rate_windows not in RATE_WINDOW_KINDS:
            raise ValueError(
                f"rate_windows must be one of {RATE_WINDOW_KINDS}, not {rate_windows!r}"
            )
        if rate_report not in RATE_REPORTS:
            raise ValueError(f"rate_report must be one of {RATE_REPORTS}, not {rate_report!r}")
        self.rate_report = rate_report
        window_kind = SlidingWindow if rate_windows == "sliding" else FixedWindow
        self.hourly: SlidingWindow | FixedWindow = window_kind(hourly_limit, hourly_window)
        self.spike: SlidingWindow | FixedWindow = window_kind(spike_limit, spike_window)
        #: Whether a 429 carries ``Retry-After`` (the docs disagree); without it a client has
        #: only ``X-Rate-Limit-Reset`` to go by.
        self.retry_after = retry_after
        self._arrivals: deque[float] = deque()
        #: Spike-window number (Unix time // its length) -> [requests counted, refused with 429].
        self._spike_tally: dict[int, list[int]] = {}
        self._stats = {
            "requests": 0,
            "rate_limited": 0,
            "quota_rejections": 0,
            "max_in_spike_window": 0,
        }
        self._signing_key = secrets.token_bytes(32)
        self._tokens: dict[str, float] = {}
        self._spool: tempfile.TemporaryDirectory[str] | None = None
        self._spool_counter = 0

        self.company: dict[str, Any] = {}
        self._projects: dict[int, dict[str, Any]] = {}
        self._users: dict[int, dict[str, Any]] = {}
        self._assignees: dict[int, list[int]] = {}
        self._locations: dict[int, dict[str, Any]] = {}
        self._location_children: dict[tuple[int, int | None], dict[str, int]] = {}
        self._project_locations: dict[int, list[int]] = {}
        self._issues: dict[int, dict[str, Any]] = {}
        self._project_issues: dict[int, list[int]] = {}
        self._taken_uuids: dict[int, set[str]] = {}
        self._issue_numbers: dict[int, int] = {}
        self._uploads: dict[str, dict[str, Any]] = {}
        self._uploads_by_key: dict[str, str] = {}
        self._attachments: dict[int, dict[str, Any]] = {}
        self._vendors: dict[int, dict[str, Any]] = {}
        self._trades: dict[int, dict[str, Any]] = {}
        self._next_ids = {"location": 80001, "issue": 600001, "attachment": 900001}
        self.inspections = Inspections(
            self,
            InspectionOptions(
                item_type_field=inspection_item_type_field,
                number_values=inspection_number_values,
                response_repost=inspection_response_repost,
                closed_locked=inspection_closed_locked,
                type_names=inspection_type_names,
            ),
        )

        self._register_routes()
        self.inspections.register()
        with self.lock:
            self._load_state(state if state is not None else DEFAULT_STATE)

    # -- routes -------------------------------------------------------------------------
    def _register_routes(self) -> None:
        add = self.add_route
        add("POST", "/oauth/token", self._token, "oauth.token")
        add("GET", "/rest/v1.0/companies", self._companies, "companies.list")
        add("GET", "/rest/v1.0/me", self._me, "me.show")
        add("GET", "/rest/v1.0/projects", self._projects_list, "projects.list")
        add("GET", "/rest/v1.0/projects/{project_id}", self._project_show, "projects.show")
        add(
            "GET",
            "/rest/v1.0/companies/{company_id}/trades",
            self._company_trades,
            "company_trades.list",
        )
        add(
            "GET",
            "/rest/v1.0/projects/{project_id}/users",
            self._project_users,
            "project_users.list",
        )
        add(
            "GET",
            "/rest/v1.0/projects/{project_id}/vendors",
            self._project_vendors,
            "project_vendors.list",
        )
        # sync and assignees before {id}: the {id} pattern would swallow them.
        add(
            "PATCH",
            "/rest/v1.0/coordination_issues/sync",
            self._issues_sync,
            "coordination_issues.sync",
        )
        add(
            "GET",
            "/rest/v1.0/coordination_issues/assignees",
            self._issue_assignees,
            "coordination_issues.assignees",
        )
        add("GET", "/rest/v1.0/coordination_issues", self._issues_list, "coordination_issues.list")
        add(
            "POST",
            "/rest/v1.0/coordination_issues",
            self._issue_create,
            "coordination_issues.create",
        )
        add(
            "GET",
            "/rest/v1.0/coordination_issues/{issue_id}",
            self._issue_show,
            "coordination_issues.show",
        )
        add(
            "PATCH",
            "/rest/v1.0/coordination_issues/{issue_id}",
            self._issue_update,
            "coordination_issues.update",
        )
        add(
            "DELETE",
            "/rest/v1.0/coordination_issues/{issue_id}",
            self._issue_delete,
            "coordination_issues.delete",
        )
        add(
            "GET",
            "/rest/v1.0/projects/{project_id}/locations",
            self._locations_list,
            "locations.list",
        )
        add(
            "POST",
            "/rest/v1.0/projects/{project_id}/locations/find_or_create_by_path",
            self._locations_find_or_create,
            "locations.find_or_create_by_path",
        )
        add(
            "POST",
            "/rest/v1.0/projects/{project_id}/locations",
            self._location_create,
            "locations.create",
        )
        add(
            "POST",
            "/rest/v1.1/projects/{project_id}/uploads",
            self._upload_create,
            "uploads.create",
        )
        add("POST", "/s3/{bucket}", self._storage_post, "storage.upload", stream_body=True)
        add(
            "GET",
            "/s3/{bucket}/attachments/{attachment_id}/{filename}",
            self._storage_get,
            "storage.download",
        )

    # -- clock --------------------------------------------------------------------------
    def now(self) -> float:
        """The simulator's clock: wall time plus ``clock_offset``."""
        return time.time() + self.clock_offset

    def advance_clock(self, seconds: float) -> None:
        """Move the simulator's clock forward (token, quota and upload expiry)."""
        with self.lock:
            self.clock_offset += seconds

    # -- hooks: quota, auth, company --------------------------------------------------------
    def before(self, request: Request, route: Route) -> Response | None:
        if not request.path.startswith("/rest/"):
            return None
        with self.lock:
            retry_after = self._count_request(request, enforce=True)
        if retry_after is not None:
            headers = {"Content-Type": "text/plain; charset=utf-8"}
            if self.retry_after:
                headers["Retry-After"] = str(retry_after)
            return Response(429, RATE_LIMIT_MESSAGE.encode("utf-8"), headers)
        refusal = self._authenticate(request)
        if refusal is not None:
            return refusal
        if route.name in ("companies.list", "me.show"):
            return None
        raw = (request.headers.get("Procore-Company-Id") or "").strip()
        if not raw:
            return json_response({"errors": "Missing Procore-Company-Id header!"}, 400)
        if _as_int(raw) is None:
            return json_response({"errors": "Procore-Company-Id header must be an integer"}, 400)
        if int(raw) != self.company["id"]:
            return json_response({"errors": f"You do not have access to company {int(raw)}"}, 403)
        for tool, status in self.refused_tools.items():
            if re.search(TOOL_PATHS[tool], request.path):
                return json_response({"errors": f"{tool}: refused as a preflight saw it"}, status)
        return None

    def decorate(self, request: Request, route: Route | None, response: Response) -> None:
        if not request.path.startswith("/rest/"):
            return
        with self.lock:
            headers = getattr(request, "rate_limit_headers", None)
            if headers is None:  # unrouted /rest/ paths never reach before(); they count too
                self._count_request(request, enforce=False)
                headers = request.rate_limit_headers  # type: ignore[attr-defined]
            if response.status == 429:
                self._stats["rate_limited"] += 1
        if self.rate_limit_headers:
            response.headers.update(headers)

    def _count_request(self, request: Request, *, enforce: bool) -> int | None:
        """Count one request (lock held); the Retry-After seconds when it is over quota."""
        now = self.now()
        self._stats["requests"] += 1
        self._arrivals.append(now)
        while self._arrivals and self._arrivals[0] <= now - self.spike.length:
            self._arrivals.popleft()
        self._stats["max_in_spike_window"] = max(
            self._stats["max_in_spike_window"], len(self._arrivals)
        )
        exceeded = [w for w in (self.spike, self.hourly) if w.full(now)] if enforce else []
        tally = self._spike_tally.setdefault(math.floor(now / self.spike.length), [0, 0])
        tally[1 if exceeded else 0] += 1
        if exceeded:
            self._stats["quota_rejections"] += 1
            window = max(exceeded, key=lambda w: w.reset_at(now))
            request.rate_limit_headers = self._rate_headers(now, window)  # type: ignore[attr-defined]
            return max(1, math.ceil(window.reset_at(now) - now))
        for window in (self.spike, self.hourly):
            window.hits.append(now)
        request.rate_limit_headers = self._rate_headers(now)  # type: ignore[attr-defined]
        return None

    def _rate_headers(
        self, now: float, window: SlidingWindow | FixedWindow | None = None
    ) -> dict[str, str]:
        # Report whichever window is closer to running out (see rate_report); the spike
        # window on a tie.
        if window is None:
            if self.rate_report == "share":
                window = min((self.spike, self.hourly), key=lambda w: w.remaining(now) / w.limit)
            else:
                window = min((self.spike, self.hourly), key=lambda w: w.remaining(now))
        return {
            "X-Rate-Limit-Limit": str(window.limit),
            "X-Rate-Limit-Remaining": str(window.remaining(now)),
            "X-Rate-Limit-Reset": str(math.ceil(window.reset_at(now))),
        }

    def _authenticate(self, request: Request) -> Response | None:
        scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return self._unauthorized("The access token is missing")
        with self.lock:
            expires_at = self._tokens.get(token)
            now = self.now()
        if expires_at is None:
            return self._unauthorized("The access token is invalid")
        if now >= expires_at:
            return self._unauthorized("The access token expired")
        return None

    @staticmethod
    def _unauthorized(description: str) -> Response:
        return json_response(
            {"error": "invalid_token", "error_description": description},
            401,
            {
                "WWW-Authenticate": (
                    'Bearer realm="Procore", error="invalid_token", '
                    f'error_description="{description}"'
                )
            },
        )

    # -- OAuth ----------------------------------------------------------------------------
    def _token(self, request: Request) -> Response:
        form = request.form
        grant = (form.get("grant_type") or [""])[0]
        if not grant:
            raise HTTPError(
                400,
                {
                    "error": "invalid_request",
                    "error_description": "The request is missing a required parameter: grant_type.",
                },
            )
        if grant != "client_credentials":
            raise HTTPError(
                400,
                {
                    "error": "unsupported_grant_type",
                    "error_description": "The authorization grant type is not "
                    "supported by the authorization server.",
                },
            )
        client_id = (form.get("client_id") or [""])[0]
        client_secret = (form.get("client_secret") or [""])[0]
        if not (
            hmac.compare_digest(client_id.encode(), self.client_id.encode())
            and hmac.compare_digest(client_secret.encode(), self.client_secret.encode())
        ):
            raise HTTPError(
                401,
                {
                    "error": "invalid_client",
                    "error_description": "Client authentication failed due to "
                    "unknown client, no client authentication "
                    "included, or unsupported authentication "
                    "method.",
                },
            )
        token = secrets.token_urlsafe(32)
        with self.lock:
            now = self.now()
            self._tokens[token] = now + self.token_ttl
        return json_response(
            {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": int(self.token_ttl),
                "created_at": int(now),
            }
        )

    # -- state loading ----------------------------------------------------------------------
    def _load_state(self, state: dict[str, Any]) -> None:
        company = state["company"]
        self.company = {"id": int(company["id"]), "name": str(company["name"])}
        for project in state.get("projects", []):
            pid = int(project["id"])
            self._projects[pid] = {
                "id": pid,
                "name": project["name"],
                "company_id": int(project.get("company_id", company["id"])),
            }
            self._project_issues[pid] = []
            self._project_locations[pid] = []
            self._taken_uuids[pid] = set()
            self._issue_numbers[pid] = 0
            self._assignees[pid] = []
        for user in state.get("users", []):
            uid = int(user["id"])
            self._users[uid] = {
                "id": uid,
                "name": user["name"],
                "email_address": user["email_address"],
                "company_name": user.get("company_name"),
                "project_ids": [int(p) for p in user.get("project_ids", [])],
            }
        for vendor in state.get("vendors", []):
            vid = int(vendor["id"])
            self._vendors[vid] = {
                "id": vid,
                "name": vendor["name"],
                "project_ids": [int(p) for p in vendor.get("project_ids", [])],
            }
        for trade in state.get("trades", []):
            tid = int(trade["id"])
            self._trades[tid] = {
                "id": tid,
                "name": str(trade["name"]),
                "active": bool(trade.get("active", True)),
            }
        for pid, user_ids in state.get("assignee_user_ids", {}).items():
            self._assignees[int(pid)] = [int(u) for u in user_ids]
        for pid, paths in state.get("locations", {}).items():
            for path in paths:
                self._find_or_create_path(int(pid), list(path))
        for pid, issues in state.get("coordination_issues", {}).items():
            for fields in issues:
                self.add_issue(int(pid), **fields)

    def _next_id(self, kind: str) -> int:
        value = self._next_ids[kind]
        self._next_ids[kind] += 1
        return value

    # -- helpers --------------------------------------------------------------------------
    @staticmethod
    def _base_url(request: Request) -> str:
        return f"http://{request.headers.get('Host') or '127.0.0.1'}"

    def _project(self, raw: Any, *, in_path: bool = False) -> dict[str, Any]:
        if raw is None or raw == "":
            raise HTTPError(400, {"errors": {"project_id": ["is missing"]}})
        pid = _as_int(raw)
        if pid is None:
            if in_path:
                raise HTTPError(404, {"errors": f"Couldn't find Project with 'id'={raw}"})
            raise HTTPError(400, {"errors": {"project_id": ["is invalid"]}})
        project = self._projects.get(pid)
        if project is None:
            raise HTTPError(404, {"errors": f"Couldn't find Project with 'id'={pid}"})
        if project["company_id"] != self.company["id"]:
            raise HTTPError(403, {"errors": "You do not have access to this project"})
        return project

    def _json_object(self, request: Request) -> dict[str, Any]:
        # Seeds 000 and 001: Content-Type is a required header, application/json.
        if self.require_json_content_type and request.content_type != "application/json":
            raise HTTPError(
                415,
                {
                    "errors": "Content-Type must be application/json, not "
                    f"{request.content_type or 'missing'}"
                },
            )
        body = request.json()
        if not isinstance(body, dict):
            raise HTTPError(400, {"errors": "request body must be a JSON object"})
        return body

    @staticmethod
    def _check_filters(request: Request, allowed: tuple[str, ...]) -> None:
        unknown = sorted(k for k in request.query if k.startswith("filters") and k not in allowed)
        if unknown:
            raise HTTPError(
                400,
                {
                    "errors": f"unknown filter {unknown[0]}; this endpoint "
                    f"supports {', '.join(allowed)}"
                },
            )

    def _paged(
        self, request: Request, items: list[Any], serialize: Callable[[Any], Any]
    ) -> Response:
        """One page of ``items`` with Procore's Total / Per-Page / Link headers (lock held)."""
        page = _as_int(request.param("page", "1"))
        per_page = _as_int(request.param("per_page", str(DEFAULT_PER_PAGE)))
        if page is None or page < 1:
            raise HTTPError(400, {"errors": "page must be a positive integer"})
        if per_page is None or per_page < 1:
            raise HTTPError(400, {"errors": "per_page must be a positive integer"})
        per_page = min(per_page, MAX_PER_PAGE)
        total = len(items)
        last = max(1, math.ceil(total / per_page))
        start = (page - 1) * per_page
        body = [serialize(item) for item in items[start : start + per_page]]
        base = self._base_url(request) + request.path
        kept = [
            (k, v)
            for k, values in request.query.items()
            if k not in ("page", "per_page")
            for v in values
        ]

        def link(number: int, rel: str) -> str:
            query = urlencode([*kept, ("page", str(number)), ("per_page", str(per_page))])
            return f'<{base}?{query}>; rel="{rel}"'

        links = [link(1, "first")]
        if page > 1:
            links.append(link(min(page - 1, last), "prev"))
        if page < last:
            links.append(link(page + 1, "next"))
        links.append(link(last, "last"))
        return json_response(
            body, 200, {"Total": str(total), "Per-Page": str(per_page), "Link": ", ".join(links)}
        )

    # -- companies, me, projects, users ---------------------------------------------------------
    def _companies(self, request: Request) -> Response:
        return json_response(
            [
                {
                    "id": self.company["id"],
                    "name": self.company["name"],
                    "is_active": True,
                    "logo_url": None,
                }
            ]
        )

    def _me(self, request: Request) -> Response:
        return json_response(dict(SERVICE_ACCOUNT))

    def _company_param(self, request: Request) -> None:
        """The ``company_id`` query parameter the project endpoints require: ours, or 400/403."""
        raw = request.param("company_id")
        if not raw:
            raise HTTPError(400, {"errors": {"company_id": ["is missing"]}})
        if _as_int(raw) != self.company["id"]:
            raise HTTPError(403, {"errors": f"You do not have access to company {raw}"})

    def _project_json(self, project: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": project["id"],
            "name": project["name"],
            "active": True,
            "company": {"id": self.company["id"], "name": self.company["name"]},
        }

    def _projects_list(self, request: Request) -> Response:
        self._company_param(request)
        with self.lock:
            projects = [p for p in self._projects.values() if p["company_id"] == self.company["id"]]
            return self._paged(request, projects, self._project_json)

    def _project_show(self, request: Request) -> Response:
        """Show Project (seed 002: ``company_id`` and ``id`` required): what `migrate` calls
        first, to prove the credentials, the company and the project in one request."""
        self._company_param(request)
        with self.lock:
            project = self._project(request.path_params["project_id"], in_path=True)
            return json_response(self._project_json(project))

    def _project_users(self, request: Request) -> Response:
        with self.lock:
            project = self._project(request.path_params["project_id"], in_path=True)
            users = [u for u in self._users.values() if project["id"] in u["project_ids"]]
            return self._paged(
                request,
                users,
                lambda u: {
                    "id": u["id"],
                    "name": u["name"],
                    "email_address": u["email_address"],
                    "is_active": True,
                    "vendor": {"id": None, "name": u["company_name"]},
                },
            )

    def _company_trades(self, request: Request) -> Response:
        """The company's trades (a coordination issue's ``trade_id``): ``{id, name, active,
        created_at, updated_at}``; ``filters[active]`` keeps the available ones."""
        self._check_filters(request, ("filters[active]", "filters[query]"))
        raw = request.path_params["company_id"]
        if _as_int(raw) != self.company["id"]:
            raise HTTPError(403, {"errors": f"You do not have access to company {raw}"})
        with self.lock:
            trades = sorted(self._trades.values(), key=lambda t: t["id"])
            active = request.param("filters[active]")
            if active is not None:
                wanted = active.strip().lower() == "true"
                trades = [t for t in trades if t["active"] == wanted]
            query = (request.param("filters[query]") or "").strip().lower()
            if query:
                trades = [t for t in trades if query in t["name"].lower()]
            stamp = _iso(0.0)
            return self._paged(
                request,
                trades,
                lambda t: {**t, "created_at": stamp, "updated_at": stamp},
            )

    def _project_vendors(self, request: Request) -> Response:
        """A project's directory companies: ``{id, name, abbreviated_name, is_active}``."""
        self._check_filters(request, ("filters[id][]", "filters[search]"))
        with self.lock:
            project = self._project(request.path_params["project_id"], in_path=True)
            vendors = [v for v in self._vendors.values() if project["id"] in v["project_ids"]]
            if "filters[id][]" in request.query:
                wanted = {_as_int(v) for v in request.param_list("filters[id][]")}
                if None in wanted:
                    raise HTTPError(400, {"errors": "filters[id][] must be integers"})
                vendors = [v for v in vendors if v["id"] in wanted]
            search = (request.param("filters[search]") or "").strip().lower()
            if search:
                vendors = [v for v in vendors if search in v["name"].lower()]
            return self._paged(
                request,
                vendors,
                lambda v: {
                    "id": v["id"],
                    "name": v["name"],
                    "abbreviated_name": None,
                    "is_active": True,
                },
            )

    def _user_json(self, user_id: int) -> dict[str, Any] | None:
        user = self._users.get(user_id)
        if user is None:
            return None
        return {
            "id": user["id"],
            "name": user["name"],
            "login": user["email_address"],
            "company_name": user["company_name"],
        }

    def _issue_assignees(self, request: Request) -> Response:
        with self.lock:
            project = self._project(request.param("project_id"))
            users = [self._user_json(uid) for uid in self._assignees.get(project["id"], [])]
            return json_response([u for u in users if u is not None])

    # -- locations ------------------------------------------------------------------------
    def _location_json(self, location: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": location["id"],
            "name": location["name"],
            "node_name": location["node_name"],
            "parent_id": location["parent_id"],
            "code": location["code"],
            "created_at": _iso(location["created_at"]),
            "updated_at": _iso(location["updated_at"]),
        }

    def _create_location(
        self, project_id: int, node_name: str, parent_id: int | None
    ) -> dict[str, Any]:
        parent = self._locations[parent_id] if parent_id is not None else None
        now = self.now()
        location: dict[str, Any] = {
            "id": self._next_id("location"),
            "project_id": project_id,
            "node_name": node_name,
            "parent_id": parent_id,
            "code": None,
            "created_at": now,
            "updated_at": now,
            "name": f"{parent['name']}>{node_name}" if parent else node_name,
        }
        self._locations[location["id"]] = location
        self._location_children.setdefault((project_id, parent_id), {})[node_name] = location["id"]
        self._project_locations[project_id].append(location["id"])
        return location

    def _find_or_create_path(self, project_id: int, path: list[Any]) -> tuple[dict[str, Any], bool]:
        """The leaf location for ``path`` and whether anything was created (lock held)."""
        if not path or any(not isinstance(n, str) or not n.strip() for n in path):
            raise ValueError("path must be a non-empty list of non-blank names")
        parent_id: int | None = None
        created = False
        location: dict[str, Any] = {}
        for node_name in path:
            existing = self._location_children.get((project_id, parent_id), {}).get(node_name)
            if existing is None:
                location = self._create_location(project_id, node_name, parent_id)
                created = True
            else:
                location = self._locations[existing]
            parent_id = location["id"]
        return location, created

    def find_or_create_location(self, project_id: int, path: list[str]) -> dict[str, Any]:
        """Python API: the leaf location of ``path`` in a project, created when missing."""
        with self.lock:
            location, _ = self._find_or_create_path(project_id, path)
            return self._location_json(location)

    def _locations_list(self, request: Request) -> Response:
        self._check_filters(request, LOCATION_FILTERS)
        with self.lock:
            project = self._project(request.path_params["project_id"], in_path=True)
            locations = [self._locations[i] for i in self._project_locations[project["id"]]]
            raw_parent = request.param("filters[parent_id]")
            if raw_parent is not None:
                parent_id = _as_int(raw_parent)
                if parent_id is None:
                    raise HTTPError(400, {"errors": "filters[parent_id] must be an integer"})
                locations = [loc for loc in locations if loc["parent_id"] == parent_id]
            search = (request.param("filters[search]") or "").lower()
            if search:
                locations = [loc for loc in locations if search in loc["name"].lower()]
            return self._paged(request, locations, self._location_json)

    def _locations_find_or_create(self, request: Request) -> Response:
        body = self._json_object(request)
        location_body = body.get("location")
        if not isinstance(location_body, dict) or "path" not in location_body:
            raise HTTPError(400, {"errors": {"location": ["path is missing"]}})
        path = location_body["path"]
        with self.lock:
            project = self._project(request.path_params["project_id"], in_path=True)
            if not isinstance(path, list) or not path:
                raise HTTPError(422, {"errors": {"path": ["can't be blank"]}})
            if any(not isinstance(n, str) or not n.strip() for n in path):
                raise HTTPError(422, {"errors": {"path": ["contains a blank node name"]}})
            location, created = self._find_or_create_path(project["id"], path)
            return json_response(self._location_json(location), 201 if created else 200)

    def _location_create(self, request: Request) -> Response:
        body = self._json_object(request)
        fields = body.get("location")
        if not isinstance(fields, dict):
            raise HTTPError(400, {"errors": {"location": ["is missing"]}})
        with self.lock:
            project = self._project(request.path_params["project_id"], in_path=True)
            errors: dict[str, list[str]] = {}
            node_name = fields.get("node_name")
            parent_id = fields.get("parent_id")
            if not isinstance(node_name, str) or not node_name.strip():
                errors["node_name"] = ["can't be blank"]
            if parent_id is not None:
                parent = self._locations.get(parent_id) if _is_int(parent_id) else None
                if parent is None or parent["project_id"] != project["id"]:
                    errors["parent_id"] = ["is invalid"]
            if not errors and node_name in self._location_children.get(
                (project["id"], parent_id), {}
            ):
                errors["node_name"] = ["has already been taken"]
            if errors:
                raise HTTPError(422, {"errors": errors})
            assert isinstance(node_name, str)
            location = self._create_location(project["id"], node_name, parent_id)
            return json_response(self._location_json(location), 201)

    # -- coordination issues: validation ----------------------------------------------------
    def _validate(
        self, project_id: int, item: dict[str, Any], mode: str
    ) -> tuple[dict[str, Any], dict[str, list[str]]]:
        """Normalised changes and per-field errors for a create, sync update or single update.

        ``mode`` is ``create``, ``sync_update`` or ``update``. Runs with the lock held, so the
        uuid and upload checks are atomic with the write that follows.
        """
        allowed = {
            "create": CREATE_FIELDS,
            "sync_update": SYNC_UPDATABLE,
            "update": SINGLE_UPDATABLE,
        }[mode]
        errors: dict[str, list[str]] = {}
        changes: dict[str, Any] = {}

        def error(field: str, message: str) -> None:
            errors.setdefault(field, []).append(message)

        for key in item:
            if key in allowed or (mode == "sync_update" and key == "id"):
                continue
            if mode == "sync_update" and key in CREATE_FIELDS:
                error(
                    key,
                    "cannot be changed through sync; an update may change only "
                    + ", ".join(sorted(SYNC_UPDATABLE)),
                )
            elif key in ("attachment_upload_uuids", "attachments"):
                error(key, "cannot be added to an existing coordination issue")
            elif key in CREATE_FIELDS:
                error(key, "cannot be changed after create")
            else:
                error(key, "is not a permitted attribute")
        present = {k: v for k, v in item.items() if k in allowed}

        if "title" in present or mode == "create":
            title = present.get("title")
            if title is None or (isinstance(title, str) and not title.strip()):
                error("title", "can't be blank")
            elif not isinstance(title, str):
                error("title", "must be a string")
            elif len(title) > MAX_TITLE_LENGTH:  # code points, not bytes or graphemes
                error("title", f"is too long (maximum is {MAX_TITLE_LENGTH} characters)")
            else:
                changes["title"] = title
        if "description" in present:
            if present["description"] is None or isinstance(present["description"], str):
                changes["description"] = present["description"]
            else:
                error("description", "must be a string")
        if "status" in present and present["status"] in STATUSES:
            allowed_statuses = self.create_statuses if mode == "create" else self.update_statuses
            if mode == "sync_update":
                pass  # refused above: sync cannot change a status
            elif present["status"] not in allowed_statuses:
                error(
                    "status",
                    f"cannot be {present['status']} "
                    + ("at create" if mode == "create" else "through an update")
                    + "; it must be one of "
                    + ", ".join(allowed_statuses),
                )
            else:
                changes["status"] = present["status"]
        for field, choices, nullable in (
            ("status", STATUSES, False),
            ("priority", PRIORITIES, True),
            ("issue_type", ISSUE_TYPES, True),
        ):
            if field in present and not (field == "status" and present[field] in STATUSES):
                value = present[field]
                if (value is None and nullable) or value in choices:
                    changes[field] = value
                else:
                    error(field, "is not included in the list")
        if "due_date" in present:
            self._check_due_date(present["due_date"], changes, error)
        if "trade_id" in present:
            trade_id = present["trade_id"]
            if trade_id is None or (_is_int(trade_id) and trade_id in self._trades):
                changes["trade_id"] = trade_id
            elif _is_int(trade_id) and trade_id > 0:
                # Our reading: an id must name one of the company's trades (the seeds are
                # silent; Procore refuses ids of records that do not exist elsewhere).
                error("trade_id", "is not a trade of this company")
            else:
                error("trade_id", "must be a positive integer")
        if "location_id" in present:
            location_id = present["location_id"]
            location = self._locations.get(location_id) if _is_int(location_id) else None
            if location_id is None:
                changes["location_id"] = None
            elif location is None or location["project_id"] != project_id:
                error("location_id", "must be a location in this project")
            else:
                changes["location_id"] = location_id
        if "assignee_id" in present:
            assignee_id = present["assignee_id"]
            if assignee_id is None:
                changes["assignee_id"] = None
            elif _is_int(assignee_id) and assignee_id in self._assignees.get(project_id, []):
                changes["assignee_id"] = assignee_id
            else:
                error("assignee_id", "is not a permitted assignee on this project")
        if mode == "create":
            self._validate_create_only(project_id, present, changes, error)
        return changes, errors

    @staticmethod
    def _check_due_date(
        value: Any, changes: dict[str, Any], error: Callable[[str, str], None]
    ) -> None:
        if value is None:
            changes["due_date"] = None
            return
        if isinstance(value, str) and _DATE_RE.match(value):
            try:
                date.fromisoformat(value)
            except ValueError:
                pass
            else:
                changes["due_date"] = value
                return
        error("due_date", "must be a date formatted YYYY-MM-DD")

    def _validate_create_only(
        self,
        project_id: int,
        present: dict[str, Any],
        changes: dict[str, Any],
        error: Callable[[str, str], None],
    ) -> None:
        raw_uuid = present.get("uuid")
        if raw_uuid is not None:
            if not isinstance(raw_uuid, str) or not _UUID_RE.match(raw_uuid):
                error("uuid", "is not a valid UUID")
            elif raw_uuid.lower() in self._taken_uuids[project_id]:
                if self.uuid_reuse == "refused":
                    error("uuid", "has already been taken")
                elif self.uuid_reuse == "ignored":
                    changes["uuid"] = raw_uuid.lower()
                    changes[_IGNORED] = True
                else:  # accepted: a second issue with the same uuid
                    changes["uuid"] = raw_uuid.lower()
            else:
                changes["uuid"] = raw_uuid.lower()
        origin = present.get("origin")
        if origin is not None:
            if (
                not isinstance(origin, dict)
                or set(origin) != set(ORIGIN_KEYS)
                or any(not isinstance(origin[k], str) or not origin[k] for k in ORIGIN_KEYS)
            ):
                error(
                    "origin",
                    "must be an object with string origin_type, origin_id, title and deep_link_url",
                )
            else:
                changes["origin"] = dict(origin)
        for field in ("bim_model_id", "drawing_revision_id", "coordination_issue_file_id"):
            if present.get(field) is not None:
                error(field, "does not exist in this project")
        if present.get("viewpoints"):
            error("viewpoints", "require coordination_issue_file_id")
        if present.get("attachments"):
            error("attachments", "must be uploaded first and given as attachment_upload_uuids")
        if present.get("creation_source") is not None and not isinstance(
            present["creation_source"], str
        ):
            error("creation_source", "must be a string")
        uploads = present.get("attachment_upload_uuids")
        if uploads is None:
            return
        if not isinstance(uploads, list):
            error("attachment_upload_uuids", "must be an array of upload uuids")
            return
        accepted: list[str] = []
        for upload_uuid in uploads:
            problem = self.upload_problem(project_id, upload_uuid, accepted)
            if problem:
                error("attachment_upload_uuids", problem)
            else:
                accepted.append(upload_uuid)
        changes["attachment_upload_uuids"] = accepted

    def upload_problem(self, project_id: int, upload_uuid: Any, accepted: list[str]) -> str | None:
        """Why an upload cannot be referenced now (lock held), or None when it can.

        ``accepted`` holds the uploads already taken by the same request: one upload becomes
        one attachment, on one record.
        """
        upload = self._uploads.get(upload_uuid) if isinstance(upload_uuid, str) else None
        if upload is None or upload["project_id"] != project_id:
            return f"upload {upload_uuid} does not exist"
        if self.now() - upload["created_at"] > self.upload_reference_expiry:
            return f"upload {upload_uuid} has expired (not referenced within a week)"
        if upload["state"] == "created":
            return f"upload {upload_uuid} has no file: post it to storage first"
        if upload["state"] == "referenced" or upload_uuid in accepted:
            return f"upload {upload_uuid} is already attached to another item"
        return None

    def attach_upload(self, project_id: int, upload_uuid: str, **owner: Any) -> dict[str, Any]:
        """Turn a checked upload into a stored attachment (lock held); ``owner`` says whose."""
        upload = self._uploads[upload_uuid]
        upload["state"] = "referenced"
        attachment = {
            "id": self._next_id("attachment"),
            **owner,
            "project_id": project_id,
            "upload_uuid": upload_uuid,
            "name": upload["name"],
            "content_type": upload["content_type"],
            "size": upload["size"],
            "sha256": upload["sha256"],
            "path": upload["path"],
            "created_at": self.now(),
        }
        self._attachments[attachment["id"]] = attachment
        return attachment

    def store_file(
        self, project_id: int, name: str, content_type: str, data: bytes, **owner: Any
    ) -> dict[str, Any]:
        """An attachment from bytes sent in a multipart request (lock held)."""
        path = self._spool_path()
        if path is not None:
            with open(path, "wb") as handle:
                handle.write(data)
        attachment = {
            "id": self._next_id("attachment"),
            **owner,
            "project_id": project_id,
            "upload_uuid": None,
            "name": name,
            "content_type": content_type,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "path": path,
            "created_at": self.now(),
        }
        self._attachments[attachment["id"]] = attachment
        return attachment

    # -- coordination issues: writes ----------------------------------------------------------
    def _create_issue(self, project_id: int, changes: dict[str, Any]) -> dict[str, Any]:
        now = self.now()
        self._issue_numbers[project_id] += 1
        issue = {
            "id": self._next_id("issue"),
            "project_id": project_id,
            "uuid": changes.get("uuid") or str(uuidlib.uuid4()),
            "issue_number": self._issue_numbers[project_id],
            "title": changes["title"],
            "description": changes.get("description"),
            "status": changes.get("status") or "open",
            "priority": changes.get("priority"),
            "issue_type": changes.get("issue_type"),
            "due_date": changes.get("due_date"),
            "trade_id": changes.get("trade_id"),
            "location_id": changes.get("location_id"),
            "assignee_id": changes.get("assignee_id"),
            "origin": changes.get("origin"),
            "attachment_ids": [],
            "created_at": now,
            "updated_at": now,
        }
        for upload_uuid in changes.get("attachment_upload_uuids", []):
            attachment = self.attach_upload(project_id, upload_uuid, issue_id=issue["id"])
            issue["attachment_ids"].append(attachment["id"])
        self._issues[issue["id"]] = issue
        self._project_issues[project_id].append(issue["id"])
        self._taken_uuids[project_id].add(issue["uuid"])
        return issue

    def _apply_update(self, issue: dict[str, Any], changes: dict[str, Any]) -> None:
        changed = False
        for key, value in changes.items():
            if issue[key] != value:
                issue[key] = value
                changed = True
        if changed:  # like Rails: an update that changes nothing keeps updated_at
            issue["updated_at"] = self.now()

    def _issue_in_path(self, request: Request, project_id: int) -> dict[str, Any]:
        """The issue ``{issue_id}`` names in this project (lock held); 404 otherwise."""
        raw_id = request.path_params["issue_id"]
        issue = self._find_issue(raw_id, project_id)
        if issue is None:
            raise HTTPError(404, {"errors": f"Couldn't find CoordinationIssue with 'id'={raw_id}"})
        return issue

    def _find_issue(self, raw_id: Any, project_id: int) -> dict[str, Any] | None:
        issue_id = _as_int(raw_id)
        issue = self._issues.get(issue_id) if issue_id is not None else None
        if issue is None or issue["project_id"] != project_id:
            return None
        return issue

    # -- coordination issues: serialisation ---------------------------------------------------
    def _attachment_url(self, attachment: dict[str, Any], base: str) -> str:
        issued = int(self.now())
        expires = int(self.attachment_url_ttl)
        signature = self._sign(f"{attachment['id']}:{issued}:{expires}")
        name = quote(attachment["name"], safe="")
        return (
            f"{base}/s3/{BUCKET}/attachments/{attachment['id']}/{name}"
            f"?X-Amz-Date={issued}&X-Amz-Expires={expires}&X-Amz-Signature={signature}"
        )

    def _issue_json(self, issue: dict[str, Any], view: str, base: str) -> dict[str, Any]:
        if view == "compact":
            return {"id": issue["id"]}
        location = self._locations.get(issue["location_id"]) if issue["location_id"] else None
        data = {
            "id": issue["id"],
            "uuid": issue["uuid"],
            "issue_number": issue["issue_number"],
            "title": issue["title"],
            "description": issue["description"],
            "status": issue["status"],
            "priority": issue["priority"],
            "issue_type": issue["issue_type"],
            "due_date": issue["due_date"],
            "trade_id": issue["trade_id"],
            "location": None
            if location is None
            else {
                "id": location["id"],
                "name": location["name"],
                "node_name": location["node_name"],
                "parent_id": location["parent_id"],
            },
            "assignee": self._user_json(issue["assignee_id"]) if issue["assignee_id"] else None,
            "origin": dict(issue["origin"]) if issue["origin"] else None,
            "created_at": _iso(issue["created_at"]),
            "updated_at": _iso(issue["updated_at"]),
        }
        if view == "extended":
            data["attachments"] = [
                {
                    "id": a["id"],
                    "name": a["name"],
                    "content_type": a["content_type"],
                    "url": self._attachment_url(a, base),
                }
                for a in (self._attachments[i] for i in issue["attachment_ids"])
            ]
        return data

    def _issue_snapshot(self, issue: dict[str, Any]) -> dict[str, Any]:
        location = self._locations.get(issue["location_id"]) if issue["location_id"] else None
        assignee = self._users.get(issue["assignee_id"]) if issue["assignee_id"] else None
        return {
            "id": issue["id"],
            "project_id": issue["project_id"],
            "uuid": issue["uuid"],
            "issue_number": issue["issue_number"],
            "title": issue["title"],
            "description": issue["description"],
            "status": issue["status"],
            "priority": issue["priority"],
            "issue_type": issue["issue_type"],
            "due_date": issue["due_date"],
            "trade_id": issue["trade_id"],
            "location_id": issue["location_id"],
            "location_name": location["name"] if location else None,
            "assignee_id": issue["assignee_id"],
            "assignee_login": assignee["email_address"] if assignee else None,
            "origin": dict(issue["origin"]) if issue["origin"] else None,
            "attachments": [
                {
                    k: self._attachments[i][k]
                    for k in ("id", "name", "content_type", "size", "sha256", "upload_uuid")
                }
                for i in issue["attachment_ids"]
            ],
            "created_at": _iso(issue["created_at"]),
            "updated_at": _iso(issue["updated_at"]),
        }

    @staticmethod
    def _view(request: Request) -> str:
        view = request.param("view") or "normal"
        if view not in VIEWS:
            raise HTTPError(400, {"errors": f"view must be one of {', '.join(VIEWS)}"})
        return view

    # -- coordination issues: handlers ------------------------------------------------------
    def _issues_sync(self, request: Request) -> Response:
        body = self._json_object(request)
        updates = body.get("updates")
        with self.lock:
            project = self._project(body.get("project_id", request.param("project_id")))
            if updates is None:
                raise HTTPError(400, {"errors": {"updates": ["is missing"]}})
            if not isinstance(updates, list):
                raise HTTPError(400, {"errors": {"updates": ["must be an array"]}})
            if len(updates) > MAX_SYNC_ITEMS:
                raise HTTPError(
                    400,
                    {
                        "errors": {
                            "updates": [
                                f"must contain at most {MAX_SYNC_ITEMS} items (got {len(updates)})"
                            ]
                        }
                    },
                )
            base = self._base_url(request)
            entities: list[dict[str, Any]] = []
            failures: list[dict[str, Any]] = []
            for item in updates:
                if not isinstance(item, dict):
                    failures.append({"item": item, "errors": {"base": ["must be an object"]}})
                    continue
                if item.get("id") is not None:
                    issue = self._find_issue(item["id"], project["id"])
                    changes, errors = self._validate(project["id"], item, "sync_update")
                    if issue is None:
                        errors = {
                            "id": [f"Couldn't find CoordinationIssue with 'id'={item['id']}"],
                            **errors,
                        }
                    if errors:
                        failures.append({**item, "errors": errors})
                        continue
                    self._apply_update(issue, changes)  # type: ignore[arg-type]
                else:
                    fields = {k: v for k, v in item.items() if k != "id"}
                    changes, errors = self._validate(project["id"], fields, "create")
                    if errors:
                        failures.append({**item, "errors": errors})
                        continue
                    if changes.get(_IGNORED):
                        continue  # uuid_reuse="ignored": no entity, no error
                    issue = self._create_issue(project["id"], changes)
                entities.append(self._issue_json(issue, "extended", base))  # type: ignore[arg-type]
            return json_response({"entities": entities, "errors": failures})

    def _issue_create(self, request: Request) -> Response:
        body = self._json_object(request)
        fields = body.get("coordination_issue")
        with self.lock:
            project = self._project(body.get("project_id", request.param("project_id")))
            if not isinstance(fields, dict):
                raise HTTPError(400, {"errors": {"coordination_issue": ["is missing"]}})
            changes, errors = self._validate(project["id"], fields, "create")
            if errors:
                raise HTTPError(422, {"errors": errors})
            if changes.get(_IGNORED):  # uuid_reuse="ignored": the issue that has the uuid
                existing = next(
                    self._issues[i]
                    for i in self._project_issues[project["id"]]
                    if self._issues[i]["uuid"] == changes["uuid"]
                )
                return json_response(
                    self._issue_json(existing, "extended", self._base_url(request))
                )
            issue = self._create_issue(project["id"], changes)
            return json_response(self._issue_json(issue, "extended", self._base_url(request)), 201)

    def _issue_show(self, request: Request) -> Response:
        view = self._view(request)
        with self.lock:
            project = self._project(request.param("project_id"))
            issue = self._issue_in_path(request, project["id"])
            return json_response(self._issue_json(issue, view, self._base_url(request)))

    def _issue_update(self, request: Request) -> Response:
        body = self._json_object(request)
        fields = body.get("coordination_issue")
        with self.lock:
            project = self._project(body.get("project_id", request.param("project_id")))
            issue = self._issue_in_path(request, project["id"])
            if not isinstance(fields, dict):
                raise HTTPError(400, {"errors": {"coordination_issue": ["is missing"]}})
            changes, errors = self._validate(project["id"], fields, "update")
            if errors:
                raise HTTPError(422, {"errors": errors})
            self._apply_update(issue, changes)
            return json_response(self._issue_json(issue, "extended", self._base_url(request)))

    def _issue_delete(self, request: Request) -> Response:
        """Into the recycle bin: gone from every answer, its uuid stays taken."""
        with self.lock:
            project = self._project(request.param("project_id"))
            issue = self._issue_in_path(request, project["id"])
            self._issues.pop(issue["id"])
            self._project_issues[project["id"]].remove(issue["id"])
        return Response(204, b"", {})

    def _issues_list(self, request: Request) -> Response:
        self._check_filters(request, ISSUE_FILTERS)
        view = self._view(request)
        wanted_ids: set[int] | None = None
        if "filters[ids][]" in request.query:
            parsed = [_as_int(v) for v in request.param_list("filters[ids][]")]
            if any(v is None for v in parsed):
                raise HTTPError(400, {"errors": "filters[ids][] must be integers"})
            wanted_ids = {v for v in parsed if v is not None}
        window: tuple[float, float] | None = None
        raw_range = request.param("filters[updated_at]")
        if raw_range is not None:
            start, sep, end = raw_range.partition("...")
            try:
                if not sep:
                    raise ValueError(raw_range)
                window = (_parse_instant(start), _parse_instant(end))
            except ValueError:
                raise HTTPError(
                    400, {"errors": "filters[updated_at] must be <ISO-8601>...<ISO-8601>"}
                ) from None
        search = (request.param("filters[search]") or "").strip().lower()
        with self.lock:
            project = self._project(request.param("project_id"))
            ids = self._project_issues[project["id"]]  # unfiltered: only a page is touched
            if wanted_ids is not None:
                ids = [i for i in ids if i in wanted_ids]
            if search:
                ids = [
                    i
                    for i in ids
                    if search in self._issues[i]["title"].lower()
                    or search == str(self._issues[i]["issue_number"])
                ]
            if window is not None:
                # updated_at is shown to the second, so filter on the shown value
                ids = [
                    i
                    for i in ids
                    if window[0] <= math.floor(self._issues[i]["updated_at"]) <= window[1]
                ]
            base = self._base_url(request)
            return self._paged(
                request, ids, lambda i: self._issue_json(self._issues[i], view, base)
            )

    # -- uploads and storage ----------------------------------------------------------------
    def _sign(self, message: str) -> str:
        return hmac.new(self._signing_key, message.encode("utf-8"), hashlib.sha256).hexdigest()

    def _upload_create(self, request: Request) -> Response:
        body = self._json_object(request) if request.body else {}
        known = {
            "response_filename",
            "response_content_type",
            "size",
            "attachment_content_disposition",
            "segments",
        }
        unknown = sorted(set(body) - known)
        if unknown:
            raise HTTPError(400, {"errors": f"unknown attribute '{unknown[0]}' for Upload"})
        if body.get("segments"):
            raise HTTPError(
                422,
                {
                    "errors": {
                        "segments": ["segmented uploads are not simulated; post the whole file"]
                    }
                },
            )
        filename = body.get("response_filename")
        content_type = body.get("response_content_type")
        for field, value in (
            ("response_filename", filename),
            ("response_content_type", content_type),
        ):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise HTTPError(422, {"errors": {field: ["must be a non-blank string"]}})
        with self.lock:
            project = self._project(request.path_params["project_id"], in_path=True)
            now = self.now()
            upload_uuid = _ulid(now)
            key = f"uploads/{self.company['id']}/{project['id']}/{upload_uuid}"
            stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
            fields: dict[str, str] = {"key": key}
            if content_type:
                fields["Content-Type"] = content_type
            if filename:
                ascii_name = filename.encode("ascii", "replace").decode().replace('"', "'")
                fields["Content-Disposition"] = (
                    f"inline; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"
                )
            fields["x-amz-credential"] = (
                f"ASIASANDBOX0000000000/{stamp[:8]}/us-east-1/s3/aws4_request"
            )
            fields["x-amz-algorithm"] = "AWS4-HMAC-SHA256"
            fields["x-amz-date"] = stamp
            policy_doc = {
                "expiration": _iso(now + self.upload_start_expiry),
                "conditions": [{"bucket": BUCKET}, *({k: v} for k, v in fields.items())],
            }
            fields["policy"] = base64.b64encode(json.dumps(policy_doc).encode()).decode()
            fields["x-amz-signature"] = self._sign(fields["policy"])
            self._uploads[upload_uuid] = {
                "uuid": upload_uuid,
                "project_id": project["id"],
                "key": key,
                "fields": fields,
                "name": filename,
                "content_type": content_type or "application/octet-stream",
                "state": "created",
                "created_at": now,
                "stored_at": None,
                "size": None,
                "sha256": None,
                "md5": None,
                "path": None,
            }
            self._uploads_by_key[key] = upload_uuid
            return json_response(
                {
                    "uuid": upload_uuid,
                    "url": f"{self._base_url(request)}/s3/{BUCKET}",
                    "fields": dict(fields),
                },
                201,
            )

    def _spool_path(self) -> str | None:
        if not self.keep_upload_bytes:
            return None
        with self.lock:
            if self._spool is None:
                self._spool = tempfile.TemporaryDirectory(prefix="procore-sandbox-")
            self._spool_counter += 1
            return os.path.join(self._spool.name, f"{self._spool_counter}.bin")

    def _storage_post(self, request: Request) -> Response:
        started = self.now()
        if request.headers.get("Authorization"):
            return _s3_error(
                400,
                "InvalidArgument",
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query "
                "parameter, Signature query string parameter or the Authorization "
                "header should be specified",
            )
        if request.path_params["bucket"] != BUCKET:
            return _s3_error(404, "NoSuchBucket", "The specified bucket does not exist")
        if request.content_type != "multipart/form-data":
            return _s3_error(
                412,
                "PreconditionFailed",
                "Bucket POST must be of the enclosure-type multipart/form-data",
            )
        if not request.headers.get("Content-Length"):
            return _s3_error(
                411,
                "MissingContentLength",
                "You must provide the Content-Length HTTP header.",
                close=True,
            )
        found = re.search(r'boundary="?([^";]+)"?', request.headers.get("Content-Type") or "")
        if not found:
            return _s3_error(400, "MalformedPOSTRequest", "The multipart boundary is missing.")
        try:
            fields, sink, part_filename = _parse_multipart(
                _BodyReader(request),
                found.group(1).encode("latin-1"),
                lambda: _FileSink(self._spool_path()),
            )
        except _MultipartError as exc:
            return _s3_error(exc.status, exc.code, exc.message)
        if sink is None:
            return _s3_error(
                400, "InvalidArgument", "POST requires exactly one file upload per request."
            )
        sink.close()
        refusal = self._store(fields, sink, part_filename, started)
        if refusal is not None:
            sink.discard()
            return refusal
        return Response(204, b"", {"ETag": f'"{sink.md5.hexdigest()}"'})

    def _store(
        self,
        fields: list[tuple[str, str]],
        sink: _FileSink,
        part_filename: str | None,
        started: float,
    ) -> Response | None:
        """Check the form against the upload's policy and record the bytes; an error or None."""
        given: dict[str, str] = {}
        for name, value in fields:
            if name in given:
                return _s3_error(400, "InvalidArgument", f"Duplicate form field {name}")
            given[name] = value
        with self.lock:
            upload_uuid = self._uploads_by_key.get(given.get("key", ""))
            upload = self._uploads.get(upload_uuid) if upload_uuid else None
            if upload is None:
                return _s3_error(
                    403,
                    "AccessDenied",
                    'Invalid according to Policy: Policy Condition failed: ["eq", "$key", ...]',
                )
            issued = upload["fields"]
            if given.get("policy") != issued["policy"] or not hmac.compare_digest(
                given.get("x-amz-signature", ""), self._sign(given.get("policy", ""))
            ):
                return _s3_error(
                    403,
                    "SignatureDoesNotMatch",
                    "The request signature we calculated does not match the "
                    "signature you provided.",
                )
            if started - upload["created_at"] > self.upload_start_expiry:
                return _s3_error(
                    403, "AccessDenied", "Invalid according to Policy: Policy expired."
                )
            for name, value in issued.items():
                if given.get(name) != value:
                    return _s3_error(
                        403,
                        "AccessDenied",
                        "Invalid according to Policy: Policy Condition failed: "
                        f'["eq", "${name}", {json.dumps(value)}]',
                    )
            extra = sorted(n for n in given if n not in issued and not n.startswith("x-ignore-"))
            if extra:
                return _s3_error(
                    403,
                    "AccessDenied",
                    f"Invalid according to Policy: Extra input fields: {', '.join(extra)}",
                )
            old_path = upload["path"]
            if old_path and upload["state"] == "stored" and os.path.exists(old_path):
                os.remove(old_path)  # overwritten before any issue referenced it
            upload.update(
                size=sink.size,
                sha256=sink.sha256.hexdigest(),
                md5=sink.md5.hexdigest(),
                path=sink.path,
                stored_at=self.now(),
            )
            if upload["name"] is None:
                upload["name"] = part_filename or upload["uuid"]
            if upload["state"] == "created":
                upload["state"] = "stored"
            # A referenced upload keeps its attachment: the attachment holds its own copy.
        return None

    def _storage_get(self, request: Request) -> Response:
        if request.headers.get("Authorization"):
            return _s3_error(
                400,
                "InvalidArgument",
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query "
                "parameter, Signature query string parameter or the Authorization "
                "header should be specified",
            )
        issued = request.param("X-Amz-Date") or ""
        expires = request.param("X-Amz-Expires") or ""
        signature = request.param("X-Amz-Signature") or ""
        attachment_id = _as_int(request.path_params["attachment_id"])
        expected = self._sign(f"{request.path_params['attachment_id']}:{issued}:{expires}")
        if not hmac.compare_digest(signature, expected) or not (issued + expires).isdigit():
            return _s3_error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )
        if self.now() > int(issued) + int(expires):
            return _s3_error(403, "AccessDenied", "Request has expired")
        with self.lock:
            attachment = self._attachments.get(attachment_id) if attachment_id else None
        if attachment is None or not attachment["path"] or not os.path.exists(attachment["path"]):
            return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
        return Response(
            200,
            self._read_file(attachment["path"]),
            {
                "Content-Type": attachment["content_type"],
                "Content-Disposition": f"attachment; filename*=UTF-8''{quote(attachment['name'])}",
                "ETag": f'"{attachment["sha256"][:32]}"',
            },
            length=attachment["size"],
        )

    @staticmethod
    def _read_file(path: str) -> Iterator[bytes]:
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    def close(self) -> None:
        """Remove spooled upload bytes (also done at interpreter exit)."""
        with self.lock:
            if self._spool is not None:
                self._spool.cleanup()
                self._spool = None

    # -- Python API for tests and benchmarks ------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """A deep, JSON-able copy of every project's issues, locations and uploads."""
        with self.lock:
            projects = {}
            for pid in self._projects:
                projects[str(pid)] = {
                    "issues": [
                        self._issue_snapshot(self._issues[i]) for i in self._project_issues[pid]
                    ],
                    "locations": [
                        self._location_json(self._locations[i])
                        for i in self._project_locations[pid]
                    ],
                    "uploads": [
                        self._upload_snapshot(u)
                        for u in self._uploads.values()
                        if u["project_id"] == pid
                    ],
                }
            return {"company": dict(self.company), "projects": projects}

    @staticmethod
    def _upload_snapshot(upload: dict[str, Any]) -> dict[str, Any]:
        return {
            "uuid": upload["uuid"],
            "name": upload["name"],
            "content_type": upload["content_type"],
            "state": upload["state"],
            "size": upload["size"],
            "sha256": upload["sha256"],
            "created_at": _iso(upload["created_at"]),
            "stored_at": _iso(upload["stored_at"]) if upload["stored_at"] else None,
        }

    def issues(self, project_id: int) -> list[dict[str, Any]]:
        """Every live coordination issue of a project, oldest first (snapshot form)."""
        with self.lock:
            return [
                self._issue_snapshot(self._issues[i]) for i in self._project_issues[int(project_id)]
            ]

    def add_issue(self, project_id: int, **fields: Any) -> dict[str, Any]:
        """Create an issue as if someone made it in Procore; ``location_path`` is accepted too.

        Validated like a create, but any status of seed 000 is allowed (a person in Procore's
        web UI can set what the API create refuses); raises ValueError listing the errors.
        """
        with self.lock:
            path = fields.pop("location_path", None)
            if path is not None:
                location, _ = self._find_or_create_path(int(project_id), list(path))
                fields["location_id"] = location["id"]
            status = fields.pop("status", None)
            changes, errors = self._validate(int(project_id), fields, "create")
            if status is not None and status not in STATUSES:
                errors["status"] = ["is not included in the list"]
            if errors:
                raise ValueError(f"invalid coordination issue {fields!r}: {errors}")
            issue = self._create_issue(int(project_id), changes)
            if status is not None:
                issue["status"] = status
            return self._issue_snapshot(issue)

    def tamper_issue(self, issue_id: int, **fields: Any) -> dict[str, Any]:
        """Change stored fields directly, without validation, as a user editing in Procore."""
        editable = SINGLE_UPDATABLE | {"origin"}
        unknown = set(fields) - editable
        if unknown:
            raise ValueError(f"cannot tamper with {sorted(unknown)}; editable: {sorted(editable)}")
        with self.lock:
            issue = self._issues[issue_id]
            issue.update(fields)
            issue["updated_at"] = self.now()
            return self._issue_snapshot(issue)

    def delete_issue(self, issue_id: int) -> None:
        """Delete an issue; its uuid stays taken, as Procore keeps it in the recycle bin."""
        with self.lock:
            issue = self._issues.pop(issue_id)
            self._project_issues[issue["project_id"]].remove(issue_id)

    def uploads(self, project_id: int) -> list[dict[str, Any]]:
        """Every upload of a project with its state, size and sha256."""
        with self.lock:
            return [
                self._upload_snapshot(u)
                for u in self._uploads.values()
                if u["project_id"] == int(project_id)
            ]

    def inspections_of(self, project_id: int) -> list[dict[str, Any]]:
        """Every inspection of a project: header, sections, items with responses, comments and
        files (name, size, sha256), oldest first."""
        with self.lock:
            return self.inspections.snapshot(int(project_id))

    def spike_window_tally(self) -> list[tuple[int, int, int]]:
        """(window number, requests counted, requests refused) for every spike window from the
        first to the last that saw a ``/rest/`` request, empty ones included, oldest first.

        Window ``n`` covers ``[n * length, (n + 1) * length)`` of the simulator's clock: the
        fixed windows themselves, or consecutive stretches of a sliding window's length.
        """
        with self.lock:
            if not self._spike_tally:
                return []
            first, last = min(self._spike_tally), max(self._spike_tally)
            tallies = [(n, self._spike_tally.get(n, [0, 0])) for n in range(first, last + 1)]
            return [(number, counted, refused) for number, (counted, refused) in tallies]

    def rate_stats(self) -> dict[str, Any]:
        """Requests counted against the quota, 429s served, and the busiest spike window."""
        with self.lock:
            return {
                **self._stats,
                "hourly_limit": self.hourly.limit,
                "hourly_window": self.hourly.length,
                "spike_limit": self.spike.limit,
                "spike_window": self.spike.length,
                "rate_windows": "sliding" if isinstance(self.spike, SlidingWindow) else "fixed",
                "rate_report": self.rate_report,
            }
