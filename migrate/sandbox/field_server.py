"""BIM 360 Field simulator: the calls `migrate` uses, as strict as the real service plausibly is.

Serves a :class:`~migrate.sandbox.generator.GeneratedProject` (or a loaded dump). Parameters
are read from the form body or the query string, as the real API accepts both; the ticket is
a parameter like any other.

Strictness, where the documentation is silent:

- Every call except ``/api/login`` needs a live ticket, else 401 with a JSON body. A ticket
  dies at logout, after ``ticket_max_calls`` calls or ``ticket_max_seconds`` seconds.
- Project-scoped calls need a ``project_id`` the user can see: missing or unknown -> 404.
- Paged calls default to 25 records and silently cap ``limit`` at 100. A client asking for
  more than 100 gets 100 and must not read "a short page" as "the last page": page with
  ``limit <= 100`` or use the count. ``limit`` < 1, ``offset`` < 0 or non-numbers -> 400.
- ``retrieve`` takes at most 100 ids (400 above); any unknown id -> 404 for the whole call.
  Its records carry exactly the seed's keys: attachments have no ``size`` (read it from
  ``/api/get_issues`` or the download's Content-Length).
- The mobile ``/api/get_issues`` leaves voided issues out (mobile clients learn about them
  from ``/api/get_voided_issues``); the ``fieldapi`` list, search and retrieve include them.
- Deleted issues vanish from every call; their attachments answer 404.
- ``get_issues`` without ``issue_filter_id`` lists all issues whether or not
  ``default_to_all_issues`` is given; switch ``listing_default="default_filter"`` models the
  other reading (a login's saved filter hides issues unless the client asks for all), and
  ``listing_default="filter_always"`` a service whose saved filter hides them even then.
- ``refused_tools`` answers every request to a tool (by :data:`TOOL_PATHS`) with an error
  status. With ``filter_always`` it replays what a preflight saw (`migrate sandbox serve
  --contract`).
- ``search`` with a truthy ``count`` and ``get_issues`` with ``count_only`` answer
  ``{"count": n}``; ``logout`` answers 200 with an empty body; ``ping`` answers the text
  ``I;200;Successful``.
- ``binary_data`` (POST, or GET on the URLs retrieve hands out) streams with Content-Length;
  ``thumb``/``composite``/``vv`` renditions are smaller JPEGs derived from the same seed.
- Markups (issue 15): about one issue photo or document in six is marked up on some pages.
  ``composites`` lists only those pages by default; switch ``composites="every_page"`` lists
  every page of every file and adds ``markup`` (the file's SVG strings, ``[]`` when none: it
  does not say which page, so a client stages every page of a marked-up file).
- Issue signature fields (display type ``signature``): the value is the id of the signature
  it holds, and retrieve lists the issue's ``signatures`` as ``{type, id,
  custom_field_definition_id, filename, original_url, created_by, created_at}`` (who signed
  when), the shape of the seed's signature upload record plus the attachments' who/when;
  switch ``issue_signatures="field_only"`` keeps the seed's retrieve keys exactly.

Checklists (issue 14 point 5; readings where seed 003 shows no example):

- ``/api/templates`` serves the checklist templates with their sections and typed items; it and
  ``/api/get_checklist_headers`` leave out templates (and checklists of templates) with single-
  or multi-select items unless ``application_version`` is above 1.10, as seed 003 says. Headers
  carry the explicit ``deleted`` flag and ``tags``; ``/fieldapi/checklists/v1`` (which never
  lists deleted checklists) is unaffected by the version.
- A checklist's ``source`` is ``{}`` or ``{"id", "type": "Task"|"Equipment", "name"}``;
  ``/fieldapi/checklists/v1?source_id=`` lists the checklists of that task or equipment.
- Signatures keep the seed's ``{type, original_url, id}``. A signature item's ``response`` is
  the id of the signature it holds; a signature custom field's value is the id of its signature.
  Custom field values keep the seed's ``{value, display_type, id}`` (``id`` is the value's own
  id): they join to their definitions (``/api/custom_fields``, container ``Checklist`` and the
  checklist's template) in definition ``position`` order, one value per definition.

Records are generated on demand; the mutation helpers (:meth:`FieldApp.update_issue` and
friends) keep a small copy-on-write overlay of changed issues, so a 100 000-issue project
stays small in memory and every endpoint sees the same, current state.
"""

from __future__ import annotations

import copy
import io
import json
import re
import time
import uuid
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from migrate.sandbox.faults import Faults
from migrate.sandbox.generator import (
    CHECKLIST_OBJECT_KINDS,
    DOCUMENT_KINDS,
    ISSUE_OBJECT_KINDS,
    KIND_ATTACHMENT,
    KIND_COMMENT,
    PRIORITIES,
    STANDARD_FIELD_IDS,
    STATUSES,
    FieldProjectData,
    derived_size,
    field_time,
    iso_time,
    parse_field_time,
)
from migrate.sandbox.httpbase import App, HTTPError, Request, Response, Route, json_response

PAGE_DEFAULT = 25
#: What ``/api/get_issues`` lists when asked with neither ``issue_filter_id`` nor a truthy
#: ``default_to_all_issues`` (seed 003 does not say): "all" issues, or what a login's saved
#: "default_filter" shows, modelled as every issue but one in three (by id).
#: "filter_always": the saved filter hides them even when the client asks for all (how a
#: preflight that saw the listing count fewer than the search is replayed).
LISTING_DEFAULTS = ("all", "default_filter", "filter_always")
#: The paths of each tool a preflight checks (its names), for ``refused_tools``.
TOOL_PATHS = {
    "issues": r"/api/get_issues(\.json)?$",
    "checklists": r"/fieldapi/checklists/v1",
    "locations": r"/api/areas(\.json)?$",
    "custom_fields": r"/api/custom_fields(\.json)?$",
    "issue_fields": r"/fieldapi/issues/v1/fields(\.json)?$",
}
#: Which pages ``composites`` lists (seed 003 shows the key, not when it is there):
#: "marked_up", only the pages with a markup (no ``markup`` key, the seed's shape); or
#: "every_page", every page of every file, with ``markup`` (the SVG strings, [] when none)
#: telling which ones are marked up.
COMPOSITE_READINGS = ("marked_up", "every_page")
#: How the project export behaves: "ready" (finished before extract asks), "slow" (running
#: for the first few status polls, then finished), "never" (running for ever, no files),
#: "not_selected" (404: the project is not selected for exports).
EXPORT_BEHAVIOURS = ("ready", "slow", "never", "not_selected")
#: Whether retrieve lists an issue's ``signatures`` (get_object_issues says issues carry
#: them; the retrieve example shows none): "listed", or "field_only" (the seed's keys exactly:
#: only the signature field's value names the signature).
ISSUE_SIGNATURE_READINGS = ("listed", "field_only")
PAGE_MAX = 100
RETRIEVE_MAX = 100
STREAM_THRESHOLD = 4 * 1024 * 1024  # bodies above this are encoded twice rather than held
_OVERLAY_SLOT = 0x8000  # slots of comments/attachments added at run time start here
_TRUTHY = {"1", "true", "t", "yes", "y", "on"}
_BINARY_TYPES = ("Attachment", "Signature", "DocumentReference", "Document")
_IMAGE_TYPES = ("original", "thumb", "composite", "vv")
_CONDITION_OPS = (
    "eq",
    "neq",
    "like",
    "nlike",
    "startswith",
    "nstartswith",
    "endswith",
    "nendswith",
    "in",
    "nin",
    "geq",
    "leq",
)


class _Ticket:
    __slots__ = ("calls", "created")

    def __init__(self, created: float) -> None:
        self.created = created
        self.calls = 0


class _View:
    """An immutable snapshot of one project's issues: generated base + overlay."""

    def __init__(
        self, data: FieldProjectData, overlay: dict[int, dict[str, Any] | None], total: int
    ) -> None:
        self.data = data
        self.overlay = overlay
        self.total = total

    def record(self, index: int) -> dict[str, Any] | None:
        if index in self.overlay:
            return self.overlay[index]
        if 0 <= index < self.data.issue_count:
            return self.data.issue(index)
        return None

    def find(self, issue_id: str) -> dict[str, Any] | None:
        index = self.data.issue_index(issue_id)
        return None if index is None else self.record(index)

    def _excluded(self, include_void: bool) -> list[int]:
        excluded = {i for i, record in self.overlay.items() if record is None}
        if not include_void:
            excluded.update(i for i in self.data.voided_indexes() if i not in self.overlay)
            excluded.update(
                i
                for i, record in self.overlay.items()
                if record is not None and record["fields"]["f--status"] == "Void"
            )
        return sorted(excluded)

    def count(self, include_void: bool = True) -> int:
        return self.total - len(self._excluded(include_void))

    def page(self, offset: int, limit: int, include_void: bool = True) -> list[dict[str, Any]]:
        """Records ``offset`` .. ``offset+limit`` of the visible sequence, without a scan."""
        excluded = self._excluded(include_void)
        index = offset
        for skipped in excluded:  # the offset-th index not excluded
            if skipped <= index:
                index += 1
            else:
                break
        skip = set(excluded)
        found: list[dict[str, Any]] = []
        while index < self.total and len(found) < limit:
            if index not in skip:
                record = self.record(index)
                if record is not None:
                    found.append(record)
            index += 1
        return found

    def scan(self, include_void: bool = True) -> Iterator[dict[str, Any]]:
        skip = set(self._excluded(include_void))
        for index in range(self.total):
            if index not in skip:
                record = self.record(index)
                if record is not None:
                    yield record

    def voided_ids(self) -> list[str]:
        voided = {i for i in self.data.voided_indexes() if i not in self.overlay}
        voided.update(
            i
            for i, record in self.overlay.items()
            if record is not None and record["fields"]["f--status"] == "Void"
        )
        return [self.data.issue_id(i) for i in sorted(voided)]


class _ProjectState:
    """Per-project overlay of changed, added and deleted issues."""

    def __init__(self, data: FieldProjectData) -> None:
        self.data = data
        self.overlay: dict[int, dict[str, Any] | None] = {}
        self.added = 0
        self.next_slot = _OVERLAY_SLOT
        self._base_issue_counts: Counter[str] | None = None
        self._checklist_counts: Counter[str] | None = None

    def view(self) -> _View:
        return _View(self.data, dict(self.overlay), self.data.issue_count + self.added)

    def base_issue_counts(self) -> Counter[str]:
        if self._base_issue_counts is None:
            total: Counter[str] = Counter()
            for record in self.data.iter_issues():
                total.update(_issue_counts(record))
            self._base_issue_counts = total
        return self._base_issue_counts

    def checklist_counts(self) -> Counter[str]:
        if self._checklist_counts is None:
            total: Counter[str] = Counter()
            for record in self.data.iter_checklists():
                total.update(_checklist_counts(record))
            self._checklist_counts = total
        return self._checklist_counts


def _issue_counts(record: dict[str, Any]) -> Counter[str]:
    counts: Counter[str] = Counter(
        issues=1, comments=len(record["comments"]), issue_changes=len(record["history"])
    )
    if record["fields"]["f--status"] == "Void":
        counts["voided_issues"] += 1
    for item in record["attachments"]:
        counts[
            {
                "Attachment": "issue_attachments",
                "DocumentReference": "issue_document_references",
                "UriReference": "issue_uri_references",
            }[item["type"]]
        ] += 1
        if item["type"] == "Attachment":
            counts["attachments"] += 1
            counts["attachment_bytes"] += item["size"]
        counts["composites"] += len(item.get("markup_pages") or ())
    counts["issue_signatures"] += len(record.get("signatures") or ())
    return counts


def _checklist_counts(record: dict[str, Any]) -> Counter[str]:
    if record["deleted"]:
        return Counter(deleted_checklists=1)
    counts: Counter[str] = Counter(
        checklists=1,
        checklist_comments=len(record["comments"]),
        signatures=len(record["signatures"]),
        checklist_custom_field_values=len(record["custom_field_values"]),
    )
    owned = [("checklist", record["attachments"])]
    for section in record["sections"]:
        counts["checklist_sections"] += 1
        for item in section["items"]:
            counts["checklist_items"] += 1
            counts["checklist_item_issue_links"] += len(item["issues"])
            owned.append(("checklist_item", item["attachments"]))
    for owner, items in owned:
        for item in items:
            kind = {
                "Attachment": "attachments",
                "DocumentReference": "document_references",
                "UriReference": "uri_references",
            }[item["type"]]
            counts[f"{owner}_{kind}"] += 1
            if item["type"] == "Attachment":
                counts["attachments"] += 1
                counts["attachment_bytes"] += item["size"]
    return counts


class FieldApp(App):
    """The BIM 360 Field API over a generated (or loaded) account.

    ``project`` is a :class:`~migrate.sandbox.generator.GeneratedProject` or
    :class:`~migrate.sandbox.generator.LoadedProject`; the login user sees all its projects.
    """

    name = "bim360field"
    strip_json_suffix = True

    def __init__(
        self,
        project: Any,
        *,
        username: str = "demo@example.com",
        password: str = "demo",
        ticket_max_calls: int | None = None,
        ticket_max_seconds: float | None = None,
        faults: Faults | None = None,
        listing_default: str = "all",
        composites: str = "marked_up",
        export: str = "ready",
        issue_signatures: str = "listed",
        refused_tools: Mapping[str, int] | None = None,
        ticket_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(faults)
        unknown_tools = sorted(set(refused_tools or {}) - set(TOOL_PATHS))
        if unknown_tools:
            raise ValueError(f"unknown tools {unknown_tools}; known: {sorted(TOOL_PATHS)}")
        #: Tool -> the HTTP status every request to it gets (a preflight saw it refused).
        self.refused_tools = dict(refused_tools or {})
        #: What ticket ages are measured by (a test moves its own clock instead of sleeping).
        self.ticket_clock = ticket_clock
        self.listing_default = _one_of("listing_default", listing_default, LISTING_DEFAULTS)
        self.composites = _one_of("composites", composites, COMPOSITE_READINGS)
        self.export = _one_of("export", export, EXPORT_BEHAVIOURS)
        self.issue_signatures = _one_of(
            "issue_signatures", issue_signatures, ISSUE_SIGNATURE_READINGS
        )
        self.export_polls = 0
        self._export_cache: dict[tuple[str, str], bytes] = {}
        self.project = project
        self.username = username
        self._password = password
        self.ticket_max_calls = ticket_max_calls
        self.ticket_max_seconds = ticket_max_seconds
        self._tickets: dict[str, _Ticket] = {}
        self._states = {data.id: _ProjectState(data) for data in project.projects}
        self._clock = parse_field_time(project.main.as_of) + timedelta(days=1)
        self.tickets_issued = 0
        #: Every ticket ever handed out, so security tests can scan outputs for them.
        self.issued_tickets: list[str] = []
        self._live_checklist_cache: dict[int, list[int]] = {}
        self.stream_threshold = STREAM_THRESHOLD  # JSON bodies above this are streamed
        self._routes()

    def _routes(self) -> None:
        add = self.add_route
        add("POST", "/api/login", self._login, "login")
        add("POST", "/api/logout", self._logout, "logout")
        add("POST", "/api/projects", self._projects, "projects")
        add("POST", "/api/project", self._project_info, "project")
        add("POST", "/fieldapi/admin/v1/project_names", self._project_names, "project_names")
        add("POST", "/fieldapi/admin/v1/ping", self._ping, "ping")
        add("POST", "/fieldapi/admin/v1/locations", self._locations, "locations")
        add("POST", "/api/areas", self._areas, "areas")
        add("POST", "/fieldapi/admin/v1/companies", self._companies, "companies")
        add("POST", "/fieldapi/admin/v1/users", self._users, "users")
        add("POST", "/fieldapi/issues/v1/types", self._types, "issue_types")
        add("POST", "/fieldapi/issues/v1/fields", self._fields, "issue_fields")
        add("POST", "/fieldapi/issues/v1/root_causes", self._root_causes, "root_causes")
        add("POST", "/api/custom_fields", self._custom_fields, "custom_fields")
        add("GET", "/fieldapi/issues/v1/list", self._list, "issues_list")
        add("POST", "/fieldapi/issues/v1/search", self._search, "issues_search")
        add("POST", "/fieldapi/issues/v1/retrieve", self._retrieve, "issues_retrieve")
        add("POST", "/api/get_issues", self._get_issues, "get_issues")
        add("POST", "/api/get_voided_issues", self._voided, "get_voided_issues")
        add("GET", "/api/v1/projects/{project_id}/issue_changes", self._changes, "issue_changes")
        add(
            "GET",
            "/api/v1/projects/{project_id}/issue_changes/{issue_id}",
            self._issue_changes,
            "issue_changes_one",
        )
        add("POST", "/api/templates", self._templates, "templates")
        add("GET", "/fieldapi/checklists/v1", self._checklists, "checklists")
        add("GET", "/fieldapi/checklists/v1/{checklist_id}", self._checklist, "checklist")
        add("POST", "/api/get_checklist_headers", self._checklist_headers, "checklist_headers")
        # Families the pipeline does not migrate, and the project export (issue 15).
        add("POST", "/api/get_photos", self._photos, "photos")
        add("POST", "/api/library/all_files", self._library_files, "library_files")
        add("POST", "/api/library/all_folders", self._library_folders, "library_folders")
        add("POST", "/api/get_equipment", self._equipment, "equipment")
        add("POST", "/api/get_tasks", self._tasks, "tasks")
        add(
            "GET",
            "/api/v1/projects/{project_id}/daily_updates",
            self._daily_updates,
            "daily_updates",
        )
        add(
            "GET",
            "/api/project_export_status/{project_id}",
            self._export_status,
            "project_export_status",
        )
        add(
            "GET",
            "/api/latest_project_export/{project_id}",
            self._latest_export,
            "latest_project_export",
        )
        add("GET", "/exports/{project_id}/{name}", self._export_file, "export_file")
        add("POST", "/api/binary_data", self._binary_data, "binary_data")
        # The URLs retrieve hands out carry every parameter, so clients simply GET them.
        add("GET", "/api/binary_data", self._binary_data, "binary_data")
        # The sandbox's own: a day of source changes for catch-up rehearsals.
        add("POST", "/sandbox/v1/work_a_day", self._work_a_day, "work_a_day")

    # -- auth ----------------------------------------------------------------------------
    def before(self, request: Request, route: Route) -> Response | None:
        if route.name in ("login", "work_a_day"):  # work_a_day: the sandbox's own, no ticket
            return None
        if route.name == "export_file":
            return None  # a pre-signed storage URL: its signature is the credential
        ticket = request.param("ticket")
        with self.lock:
            state = self._tickets.get(ticket or "")
            if state is None:
                return _unauthorized("missing, unknown or expired ticket")
            state.calls += 1
            too_many = self.ticket_max_calls is not None and state.calls > self.ticket_max_calls
            too_old = (
                self.ticket_max_seconds is not None
                and self.ticket_clock() - state.created > self.ticket_max_seconds
            )
            if too_many or too_old:
                del self._tickets[ticket or ""]
                return _unauthorized("ticket expired; log in again")
        for tool, status in self.refused_tools.items():
            if re.search(TOOL_PATHS[tool], request.path):
                return json_response({"error": "Refused", "message": f"{tool}: refused"}, status)
        return None

    def _login(self, request: Request) -> Response:
        if (
            request.param("username") != self.username
            or request.param("password") != self._password
        ):
            return _unauthorized("The user's credentials have been rejected.")
        ticket = str(uuid.uuid4())
        with self.lock:
            self._tickets[ticket] = _Ticket(self.ticket_clock())
            self.tickets_issued += 1
            self.issued_tickets.append(ticket)
        return json_response({"ticket": ticket})

    def _logout(self, request: Request) -> Response:
        with self.lock:
            self._tickets.pop(request.param("ticket") or "", None)
        return Response(200, b"", {"Content-Type": "text/plain; charset=utf-8"})

    def expire_tickets(self) -> None:
        """Forget every ticket (as a server restart would); clients must log in again."""
        with self.lock:
            self._tickets.clear()

    # -- helpers -------------------------------------------------------------------------
    def _state(self, request: Request, project_id: str | None = None) -> _ProjectState:
        wanted = project_id or request.param("project_id")
        if not wanted and request.param("a360_project_id"):
            wanted = next(
                (
                    d.id
                    for d in self.project.projects
                    if d.meta.get("a360_project_id") == request.param("a360_project_id")
                ),
                None,
            )
        state = self._states.get(wanted or "")
        if state is None:
            raise HTTPError(
                404,
                {"error": "Not Found", "message": "project not found or not visible to this user"},
            )
        return state

    def _view(self, request: Request, project_id: str | None = None) -> _View:
        state = self._state(request, project_id)
        with self.lock:
            return state.view()

    def _url(
        self,
        request: Request,
        data: FieldProjectData,
        object_id: str,
        object_type: str,
        image_type: str,
        page: int = 0,
    ) -> str:
        host = request.headers.get("Host") or "127.0.0.1"
        query = urlencode(
            {
                "ticket": request.param("ticket") or "",
                "project_id": data.id,
                "object_id": object_id,
                "object_type": object_type,
                "image_type": image_type,
                "page": page,
            }
        )
        return f"http://{host}/api/binary_data?{query}"

    def _now(self) -> datetime:
        # A deterministic clock: each mutation is one minute after the previous one.
        self._clock += timedelta(minutes=1)
        return self._clock

    # -- account and reference data ------------------------------------------------------
    def _project_hash(self, data: FieldProjectData) -> dict[str, Any]:
        meta = data.meta
        return {
            "id": data.id,
            "name": data.name,
            "a360_project_id": meta["a360_project_id"],
            "created_at": meta["created_at"],
            "updated_at": meta["updated_at"],
            "filters": meta["filters"],
        }

    def _projects(self, request: Request) -> Response:
        return json_response([self._project_hash(d) for d in self.project.projects])

    def _project_info(self, request: Request) -> Response:
        return json_response(self._project_hash(self._state(request).data))

    def _project_names(self, request: Request) -> Response:
        rows = [
            {
                "id": d.id,
                "name": d.name,
                "a360_project_id": d.meta["a360_project_id"],
                "updated_at": parse_field_time(d.meta["updated_at"])
                .astimezone(UTC)
                .strftime("%Y-%m-%dT%H:%M:%SZ"),
                "include_in_reports": True,
            }
            for d in self.project.projects
        ]
        order = request.param("sort_order")
        direction = request.param("sort_direction") or "asc"
        if order not in (None, "", "name", "updated_at") or direction not in ("asc", "desc"):
            raise HTTPError(
                400,
                {
                    "error": "Bad Request",
                    "message": "sort_order must be name or updated_at, sort_direction asc or desc",
                },
            )
        if order:
            rows.sort(key=lambda row: row[order], reverse=direction == "desc")
        return json_response(rows)

    def _ping(self, request: Request) -> Response:
        return Response(200, b"I;200;Successful", {"Content-Type": "text/plain; charset=utf-8"})

    def _locations(self, request: Request) -> Response:
        return json_response(self._state(request).data.areas)

    def _areas(self, request: Request) -> Response:
        """Mobile areas: ``{id, parent_id, name, identifier, deleted (bool), created_at,
        updated_at}``, paged like every mobile list."""
        data = self._state(request).data
        offset, limit = _page(request)
        rows = [
            {
                "id": a["id"],
                "parent_id": a["parent_id"],
                "name": a["name"],
                "identifier": a["identifier"],
                "deleted": bool(a["deleted"]),
                "created_at": data.meta["created_at"],
                "updated_at": data.meta["created_at"],
            }
            for a in data.areas[offset : offset + limit]
        ]
        return json_response(rows)

    def _companies(self, request: Request) -> Response:
        data = self._state(request).data
        wanted = set(data.company_ids)
        return json_response([c for c in self.project.companies if c["id"] in wanted])

    def _users(self, request: Request) -> Response:
        data = self._state(request).data
        wanted = set(data.user_ids)
        return json_response([u for u in self.project.users if u["id"] in wanted])

    def _types(self, request: Request) -> Response:
        return json_response(self._state(request).data.issue_types)

    def _fields(self, request: Request) -> Response:
        return json_response(self._state(request).data.issue_fields)

    def _root_causes(self, request: Request) -> Response:
        return json_response(self._state(request).data.root_causes)

    def _custom_fields(self, request: Request) -> Response:
        data = self._state(request).data
        return json_response(
            [{k: v for k, v in d.items() if not k.startswith("_")} for d in data.custom_fields]
        )

    # -- issues --------------------------------------------------------------------------
    def _search_row(self, data: FieldProjectData, record: dict[str, Any]) -> dict[str, Any]:
        # The search example reports standard fields with display_type "text".
        fields = []
        for field_id, value in record["fields"].items():
            name, shown = data.field_catalog.get(field_id, (field_id, "text"))
            fields.append(
                {
                    "value": value,
                    "name": name,
                    "display_type": shown if field_id.startswith("cf--") else "text",
                    "id": field_id,
                }
            )
        return {"id": record["id"], "closed_at": record["closed_at"], "fields": fields}

    def _filtered(
        self,
        request: Request,
        view: _View,
        *,
        include_void: bool,
        conditions: list[tuple[str, str, Any]] | None = None,
    ) -> tuple[Iterable[dict[str, Any]] | None, Callable[[], int]]:
        """Records matching area_ids/conditions, or None when nothing filters (fast path)."""
        area_ids = [a.strip() for a in (request.param("area_ids") or "").split(",") if a.strip()]
        if not area_ids and not conditions:
            return None, lambda: view.count(include_void)
        wanted = set(area_ids)

        def matches(record: dict[str, Any]) -> bool:
            area = record["fields"]["f--area_id"]
            if wanted and not (area in wanted or (area is None and "No Area" in wanted)):
                return False
            return all(_condition_holds(record, c) for c in conditions or ())

        def records() -> Iterator[dict[str, Any]]:
            return (r for r in view.scan(include_void) if matches(r))

        return records(), lambda: sum(1 for _ in records())

    def _paged(
        self,
        request: Request,
        view: _View,
        *,
        include_void: bool,
        conditions: list[tuple[str, str, Any]] | None = None,
    ) -> list[dict[str, Any]]:
        offset, limit = _page(request)
        matching, _ = self._filtered(
            request, view, include_void=include_void, conditions=conditions
        )
        if matching is None:
            return view.page(offset, limit, include_void)
        found = []
        for position, record in enumerate(matching):
            if position >= offset + limit:
                break
            if position >= offset:
                found.append(record)
        return found

    def _list(self, request: Request) -> Response:
        view = self._view(request)
        records = self._paged(request, view, include_void=True)
        return json_response([self._search_row(view.data, r) for r in records])

    def _search(self, request: Request) -> Response:
        view = self._view(request)
        filter_id = request.param("filter_id")
        if filter_id and filter_id not in {
            f["id"] for f in view.data.meta["filters"] if f["container"] == "Issue"
        }:
            raise HTTPError(404, {"error": "Not Found", "message": "filter not found"})
        conditions = _parse_conditions(request, view.data)
        if (request.param("count") or "").strip().lower() in _TRUTHY:
            _, count = self._filtered(request, view, include_void=True, conditions=conditions)
            return json_response({"count": count()})
        records = self._paged(request, view, include_void=True, conditions=conditions)
        return json_response([self._search_row(view.data, r) for r in records])

    def _retrieve(self, request: Request) -> Response:
        view = self._view(request)
        ids = list(
            dict.fromkeys(i.strip() for i in (request.param("ids") or "").split(",") if i.strip())
        )
        if not ids:
            raise HTTPError(400, {"error": "Bad Request", "message": "ids is required"})
        if len(ids) > RETRIEVE_MAX:
            raise HTTPError(
                400, {"error": "Bad Request", "message": f"at most {RETRIEVE_MAX} ids per call"}
            )
        records = [view.find(issue_id) for issue_id in ids]
        if any(record is None for record in records):
            raise HTTPError(404, {"error": "Not Found", "message": "One or more issues not found"})
        return json_response(
            [self._retrieve_record(request, view.data, r) for r in records if r is not None]
        )

    def _retrieve_record(
        self, request: Request, data: FieldProjectData, record: dict[str, Any]
    ) -> dict[str, Any]:
        fields = []
        for field_id, value in record["fields"].items():
            name, shown = data.field_catalog.get(field_id, (field_id, "text"))
            fields.append({"id": field_id, "name": name, "display_type": shown, "value": value})
        return {
            "id": record["id"],
            "created_by": record["created_by"],
            "fields": fields,
            "comments": [dict(c) for c in record["comments"]],
            "attachments": [
                self._render_attachment(request, data, item) for item in record["attachments"]
            ],
            **self._signature_list(request, data, record),
        }

    def _signature_list(
        self, request: Request, data: FieldProjectData, record: dict[str, Any]
    ) -> dict[str, Any]:
        """An issue's ``signatures`` as retrieve lists them (see ISSUE_SIGNATURE_READINGS)."""
        if self.issue_signatures == "field_only":
            return {}
        return {
            "signatures": [
                {
                    "type": "Signature",
                    "id": signature["id"],
                    "custom_field_definition_id": signature["custom_field_definition_id"],
                    "filename": signature["filename"],
                    "original_url": self._url(
                        request, data, signature["id"], "Signature", "original"
                    ),
                    "created_by": signature["created_by"],
                    "created_at": signature["created_at"],
                }
                for signature in record.get("signatures", ())
            ]
        }

    def _composites(
        self, request: Request, data: FieldProjectData, item: dict[str, Any]
    ) -> dict[str, Any]:
        """The ``composites`` of a file (and ``markup`` where the reading gives it)."""
        kind = item["type"]
        marked = item.get("markup_pages") or []
        if self.composites == "every_page":
            pages: Iterable[int] = range(item.get("num_pages") or 1)
        else:
            pages = marked
        shown: dict[str, Any] = {
            "composites": [
                {"page": p, "url": self._url(request, data, item["id"], kind, "composite", p)}
                for p in pages
            ]
        }
        if self.composites == "every_page":
            shown["markup"] = list(item.get("markup") or [])
        return shown

    def _render_attachment(
        self, request: Request, data: FieldProjectData, item: dict[str, Any]
    ) -> dict[str, Any]:
        """One attachment-list entry in the seed shape of its type, URLs with the ticket."""
        kind = item["type"]
        if kind == "UriReference":
            return {"type": kind, "path": item["path"], "name": item["name"], "id": item["id"]}
        if kind == "DocumentReference":
            return {
                "type": kind,
                "num_pages": item["num_pages"],
                "content_type": item["content_type"],
                "thumb_url": self._url(request, data, item["id"], kind, "thumb"),
                **self._composites(request, data, item),
                "original_url": self._url(request, data, item["id"], kind, "original"),
                "id": item["id"],
            }
        return {
            "id": item["id"],
            "type": kind,
            "name": item["name"],
            "caption": item["caption"],
            "tags": item["tags"],
            "content_type": item["content_type"],
            "original_url": self._url(request, data, item["id"], kind, "original"),
            "thumb_url": self._url(request, data, item["id"], kind, "thumb"),
            "num_pages": item["num_pages"],
            **self._composites(request, data, item),
            "created_at": item["created_at"],
            "updated_at": item["updated_at"],
            "created_by": item["created_by"],
        }

    def _get_issues(self, request: Request) -> Response:
        """Mobile issues, one flat record each (voided issues left out)::

            {"id", "project_id", "identifier", "issue_type_id", "description",
             "responsible_company_id", "priority", "status", "area_id", "location_detail",
             "root_cause_id", "due_date", "assigned_to", "labor_hours", "cost",
             "created_by", "created_at", "updated_at", "closed_at", "deleted": false,
             "custom_field_values": [{"id", "custom_field_definition_id", "container_id",
                                      "container_type": "Issue", "value"}],
             "comments": [{"id", "object_id", "comment_text", "created_by", "created_at"}],
             "attachments": [{"id", "filename", "content_type", "size", "num_pages", "caption",
                              "tags", "container_id", "container_type": "Issue",
                              "created_at", "updated_at", "created_by"}],
             "document_references": [{"id", "document_id", "num_pages", "content_type",
                                      "container_id", "container_type": "Issue", "caption",
                                      "tags"}],
             "uri_references": [{"id", "name", "path", "caption", "tags"}]}

        ``updated_at`` moves on every change (fields, comments, attachments), so a client can
        hash this record to spot changed issues without calling retrieve.
        """
        view = self._view(request)
        filter_id = request.param("issue_filter_id")
        if filter_id and filter_id not in {
            f["id"] for f in view.data.meta["filters"] if f["container"] == "Issue"
        }:
            raise HTTPError(404, {"error": "Not Found", "message": "issue filter not found"})
        all_issues = (request.param("default_to_all_issues") or "").strip().lower() in _TRUTHY
        hidden = self.listing_default == "filter_always" or (
            self.listing_default == "default_filter" and not all_issues
        )
        if hidden and not filter_id:
            # Slow (a scan per page) and only for tests of clients that forget to ask for all.
            shown = [r for r in view.scan(include_void=False) if zlib.crc32(r["id"].encode()) % 3]
            if request.param("count_only"):
                return json_response({"count": len(shown)})
            offset, limit = _page(request)
            return json_response([_mobile_issue(r) for r in shown[offset : offset + limit]])
        if request.param("count_only"):
            _, count = self._filtered(request, view, include_void=False)
            return json_response({"count": count()})
        records = self._paged(request, view, include_void=False)
        return json_response([_mobile_issue(r) for r in records])

    def _voided(self, request: Request) -> Response:
        return json_response(self._view(request).voided_ids())

    def _changes(self, request: Request) -> Response:
        view = self._view(request, request.path_params["project_id"])
        statuses = {s.strip() for s in (request.param("status") or "").split(",") if s.strip()}
        start = _date_param(request, "start_dt", end_of_day=False)
        end = _date_param(request, "end_dt", end_of_day=True)

        def rows() -> Iterator[dict[str, Any]]:
            for record in view.scan(include_void=True):
                for change in record["history"]:
                    if statuses and change["status"] not in statuses:
                        continue
                    if start or end:
                        moment = parse_field_time(change["start_dt"])
                        if (start and moment < start) or (end and moment > end):
                            continue
                    yield {
                        "id": record["id"],
                        "status": change["status"],
                        "previous_status": change["previous_status"],
                        "user": change["user"],
                        "start_dt": change["start_dt"],
                        "end_dt": change["end_dt"],
                    }

        return _json_array_response(rows, self.stream_threshold)

    def _issue_changes(self, request: Request) -> Response:
        view = self._view(request, request.path_params["project_id"])
        record = view.find(request.path_params["issue_id"])
        if record is None:
            raise HTTPError(404, {"error": "Not Found", "message": "issue not found"})
        return json_response(
            [
                {
                    "id": record["id"],
                    "status": c["status"],
                    "user": c["user"],
                    "start_dt": c["start_dt"],
                    "end_dt": c["end_dt"],
                }
                for c in record["history"]
            ]
        )

    # -- checklists ----------------------------------------------------------------------
    def _live_checklist_indexes(self, data: FieldProjectData) -> list[int]:
        # Checklists never change after generation, so which are live is worked out once per
        # project; a page then generates only its own rows instead of every row before it.
        key = id(data)
        with self.lock:
            cached = self._live_checklist_cache.get(key)
        if cached is None:
            cached = [
                index
                for index in range(data.checklist_count)
                if not data.checklist(index)["deleted"]
            ]
            with self.lock:
                self._live_checklist_cache[key] = cached
        return cached

    def _templates(self, request: Request) -> Response:
        """Checklist templates (seed 003 documents no example; this shape is our reading):
        ``{id, name, checklist_type, created_at, updated_at, sections: [{section_name, items:
        [{id, question_text, display_type, possible_values, position, display_number}]}]}``.
        ``ids`` (repeated or comma-separated) narrows the list; templates with single- or
        multi-select items are left out unless ``application_version`` is above 1.10."""
        data = self._state(request).data
        wanted = {i for raw in request.param_list("ids") for i in raw.split(",") if i}
        rich = _rich_content(request)
        rows = []
        for template in data.templates:
            if (wanted and template["id"] not in wanted) or (template["rich"] and not rich):
                continue
            position = 0
            sections = []
            for section in template["sections"]:
                items = []
                for item in section["items"]:
                    position += 1
                    items.append(
                        {
                            "id": item["id"],
                            "question_text": item["question_text"],
                            "display_type": item["display_type"],
                            "possible_values": list(item["possible_values"]),
                            "position": position + 1,
                            "display_number": f"{position}.",
                        }
                    )
                sections.append({"section_name": section["name"], "items": items})
            rows.append(
                {
                    "id": template["id"],
                    "name": template["name"],
                    "checklist_type": template["checklist_type"],
                    "created_at": data.meta["created_at"],
                    "updated_at": data.meta["created_at"],
                    "sections": sections,
                }
            )
        return json_response(rows)

    def _plain_checklist_indexes(self, data: FieldProjectData) -> list[int]:
        key = -id(data)
        with self.lock:
            cached = self._live_checklist_cache.get(key)
        if cached is None:
            rich = {t["id"] for t in data.templates if t["rich"]}
            cached = [
                index
                for index in range(data.checklist_count)
                if data.checklist(index)["template"]["id"] not in rich
            ]
            with self.lock:
                self._live_checklist_cache[key] = cached
        return cached

    def _checklists(self, request: Request) -> Response:
        data = self._state(request).data
        offset, limit = _page(request)
        indexes = self._live_checklist_indexes(data)
        source_id = request.param("source_id")
        if source_id:
            indexes = [i for i in indexes if data.checklist(i)["source"].get("id") == source_id]
        rows = []
        for index in indexes[offset : offset + limit]:
            record = data.checklist(index)
            rows.append(
                {
                    key: record[key]
                    for key in (
                        "status",
                        "created_at",
                        "checklist_type",
                        "identifier",
                        "name",
                        "id",
                        "updated_at",
                        "created_by",
                    )
                }
            )
        return json_response(rows)

    def _checklist(self, request: Request) -> Response:
        state = self._state(request)
        data = state.data
        index = data.checklist_index(request.path_params["checklist_id"])
        record = data.checklist(index) if index is not None else None
        if record is None or record["deleted"]:
            raise HTTPError(404, {"error": "Not Found", "message": "checklist not found"})
        with self.lock:
            view = state.view()
        return json_response(self._checklist_detail(request, view, record))

    def _checklist_detail(
        self, request: Request, view: _View, record: dict[str, Any]
    ) -> dict[str, Any]:
        data = view.data
        sections = []
        for section in record["sections"]:
            items = []
            for item in section["items"]:
                linked = []
                for link in item["issues"]:
                    current = view.find(link["id"])
                    if current is not None:  # a deleted issue drops out of the link list
                        linked.append(
                            {
                                "description": current["fields"]["f--description"],
                                "identifier": current["fields"]["f--identifier"],
                                "id": current["id"],
                            }
                        )
                rendered = dict(
                    item,
                    issues=linked,
                    attachments=[
                        self._render_attachment(request, data, a) for a in item["attachments"]
                    ],
                )
                items.append(rendered)
            sections.append({"items": items, "section_name": section["section_name"]})
        return {
            "comments": [dict(c) for c in record["comments"]],
            "status": record["status"],
            "created_at": record["created_at"],
            "created_by": record["created_by"],
            "checklist_type": record["checklist_type"],
            "project_id": record["project_id"],
            "company": dict(record["company"]),
            "custom_field_values": [dict(v) for v in record["custom_field_values"]],
            "description": record["description"],
            "source": dict(record["source"]),
            "phase": record["phase"],
            "identifier": record["identifier"],
            "signatures": [
                {
                    "type": "Signature",
                    "original_url": self._url(request, data, s["id"], "Signature", "original"),
                    "id": s["id"],
                }
                for s in record["signatures"]
            ],
            "name": record["name"],
            "template": dict(record["template"]),
            "attachments": [
                self._render_attachment(request, data, a) for a in record["attachments"]
            ],
            "id": record["id"],
            "sections": sections,
            "priority": record["priority"],
            "updated_at": record["updated_at"],
        }

    def _checklist_headers(self, request: Request) -> Response:
        """Every checklist header, deleted ones included (``deleted``); checklists from a
        rich-content template only when ``application_version`` is above 1.10 (seed 003)."""
        data = self._state(request).data
        offset, limit = _page(request)
        if _rich_content(request):
            indexes: list[int] | range = range(data.checklist_count)
        else:
            indexes = self._plain_checklist_indexes(data)
        rows = []
        for index in indexes[offset : offset + limit]:
            record = data.checklist(index)
            rows.append(
                {
                    "completed_checklist_id": record["id"],
                    "checklist_template_id": record["template"]["id"],
                    "checklist_type": record["checklist_type"],
                    "identifier": record["identifier"],
                    "name": record["name"],
                    "description": record["description"],
                    "created_by": record["created_by"],
                    "phase": record["phase"],
                    "priority": record["priority"],
                    "status": record["status"],
                    "tags": record["tags"],
                    "created_at": record["created_at"],
                    "updated_at": record["updated_at"],
                    "deleted": record["deleted"],
                    "deleted_at": record["deleted_at"],
                }
            )
        return json_response(rows)

    # -- families outside the pipeline (issue 15 point 5) ---------------------------------
    def _photos(self, request: Request) -> Response:
        """``/api/get_photos``: photo metadata, paged; seed 003 says limit and offset are
        both required, so a call without either is refused (400)."""
        data = self._state(request).data
        if request.param("limit") is None or request.param("offset") is None:
            raise HTTPError(
                400, {"error": "Bad Request", "message": "limit and offset are required"}
            )
        offset, limit = _page(request)
        return json_response(data.photos()[offset : offset + limit])

    def _library_files(self, request: Request) -> Response:
        data = self._state(request).data
        directory = request.param("directory")
        files = data.library_files()
        if directory is not None:
            files = [f for f in files if f["directory"] == directory]
        return json_response(files)

    def _library_folders(self, request: Request) -> Response:
        return json_response(self._state(request).data.library_folders())

    def _equipment(self, request: Request) -> Response:
        """``/api/get_equipment``: ``step`` is required (headers, softdeletes,
        updatedownloaded or filter); ``headers`` without ``max_date`` lists every piece."""
        data = self._state(request).data
        step = request.param("step")
        if step not in ("headers", "softdeletes", "updatedownloaded", "filter"):
            raise HTTPError(400, {"error": "Bad Request", "message": "step is required"})
        offset, limit = _page(request)
        pieces = [
            {"id": e["id"], "name": e["name"], "description": "", "serial_number": None}
            for e in data.equipment
        ]
        return json_response(pieces[offset : offset + limit])

    def _tasks(self, request: Request) -> Response:
        data = self._state(request).data
        offset, limit = _page(request)
        tasks = [
            {"id": t["id"], "name": t["name"], "identifier": f"T-{n + 1:03d}", "status": "Open"}
            for n, t in enumerate(data.tasks)
        ]
        return json_response(tasks[offset : offset + limit])

    def _daily_updates(self, request: Request) -> Response:
        """Daily updates; without ``filter`` only the login's own (seed 003 names the scopes
        my_own, my_company and all, not the default), modelled as every third one."""
        data = self._state(request, request.path_params["project_id"]).data
        updates = data.daily_updates()
        if (request.param("filter") or "my_own") != "all":
            updates = updates[::3]
        return json_response(updates)

    # -- the project export (issue 15 point 4) ---------------------------------------------
    #: Status polls a "slow" export answers export_running to before it finishes.
    SLOW_EXPORT_POLLS = 3

    def _export_check(self, request: Request) -> FieldProjectData:
        data = self._state(request, request.path_params["project_id"]).data
        if self.export == "not_selected":
            raise HTTPError(
                404,
                {"error": "Not Found", "message": "project has not been selected for exports"},
            )
        return data

    def _export_finished(self) -> bool:
        if self.export == "ready":
            return True
        if self.export == "never":
            return False
        return self.export_polls > self.SLOW_EXPORT_POLLS

    def _export_status(self, request: Request) -> Response:
        data = self._export_check(request)
        with self.lock:
            self.export_polls += 1
            finished = self._export_finished()
        return json_response(
            {
                "export_running": not finished,
                "last_export_at": iso_time(parse_field_time(data.as_of)) if finished else None,
                "last_export_succeeded": finished,
            }
        )

    def _latest_export(self, request: Request) -> Response:
        data = self._export_check(request)
        with self.lock:
            finished = self._export_finished()
        if not finished:
            return json_response([])
        host = request.headers.get("Host") or "127.0.0.1"
        stamp = parse_field_time(data.as_of).strftime("%Y%m%d")
        answer = []
        for kind, name in (
            ("database", f"{data.id}_{stamp}.zip"),
            ("files", f"{data.id}_files_{stamp}.zip"),
        ):
            query = urlencode(
                {
                    "AWSAccessKeyId": "AKIASIMULATOR",
                    "Expires": "1358181932",
                    "Signature": self._export_signature(data, name),
                    "response-content-type": "application/zip",
                }
            )
            answer.append({"type": kind, "url": f"http://{host}/exports/{data.id}/{name}?{query}"})
        return json_response(answer)

    def _export_signature(self, data: FieldProjectData, name: str) -> str:
        return f"sig-{zlib.crc32(f'{self.project.seed}:{data.id}:{name}'.encode()):08x}"

    def _export_file(self, request: Request) -> Response:
        data = self._states.get(request.path_params["project_id"])
        name = request.path_params["name"]
        if data is None or request.param("Signature") != self._export_signature(data.data, name):
            raise HTTPError(403, {"error": "Forbidden", "message": "signature does not match"})
        kind = "files" if "_files_" in name else "database"
        body = self.export_archive(data.data, kind)
        return Response(200, body, {"Content-Type": "application/zip"}, length=len(body))

    def export_archive(self, data: FieldProjectData, kind: str) -> bytes:
        """The export's ``database`` or ``files`` zip for a project (deterministic bytes)."""
        with self.lock:
            cached = self._export_cache.get((data.id, kind))
        if cached is None:
            cached = build_export_archive(data, kind)
            with self.lock:
                self._export_cache[(data.id, kind)] = cached
        return cached

    # -- binary data ---------------------------------------------------------------------
    def _binary_data(self, request: Request) -> Response:
        state = self._state(request)
        object_type = request.param("object_type")
        object_id = request.param("object_id")
        image_type = request.param("image_type") or "original"
        if not object_type or not object_id:
            raise HTTPError(
                400, {"error": "Bad Request", "message": "object_type and object_id are required"}
            )
        if object_type not in _BINARY_TYPES or image_type not in _IMAGE_TYPES:
            raise HTTPError(
                400,
                {
                    "error": "Bad Request",
                    "message": f"object_type must be one of {_BINARY_TYPES}, "
                    f"image_type one of {_IMAGE_TYPES}",
                },
            )
        try:
            page = int(request.param("page") or 0)
        except ValueError:
            raise HTTPError(
                400, {"error": "Bad Request", "message": "page must be a number"}
            ) from None
        with self.lock:
            view = state.view()
        found = _find_object(view, object_type, object_id)
        if found is None or not 0 <= page < (found.get("num_pages") or 1):
            raise HTTPError(
                404, {"error": "Not Found", "message": "The requested file does not exist"}
            )
        blob_id = found.get("document_id") or found["id"]
        content_type = found["content_type"]
        size = found["size"]
        variant = "original"
        if image_type != "original":
            variant = "thumb" if image_type == "thumb" else f"composite:{page}"
            size = derived_size(size, variant)
            content_type = "image/jpeg"
        headers = {"Content-Type": content_type}
        if object_type == "Attachment" and image_type == "original":
            headers["Content-Disposition"] = _content_disposition(found["name"])
        chunks = self.project.attachment_chunks(blob_id, size, content_type, variant)
        return Response(200, chunks, headers, length=size)

    # -- Python API for tests and benchmarks ---------------------------------------------
    def counts(self, project_id: str | None = None) -> dict[str, int]:
        """The simulator's own counts for one project (the main one by default)."""
        state = self._states[project_id or self.project.main.id]
        data = state.data
        with self.lock:
            overlay = dict(state.overlay)
        issue_counts = Counter(state.base_issue_counts())
        for index, record in overlay.items():
            if index < data.issue_count:
                issue_counts.subtract(_issue_counts(data.issue(index)))
            if record is not None:
                issue_counts.update(_issue_counts(record))
        counts: Counter[str] = Counter(
            {
                "projects": len(self.project.projects),
                "areas": len(data.areas),
                "deleted_areas": sum(1 for a in data.areas if a["deleted"]),
                "companies": len(data.company_ids),
                "users": len(data.user_ids),
                "issue_types": len(data.issue_types),
                "root_causes": len(data.root_causes),
                "custom_fields": len(data.custom_fields),
            }
        )
        counts.update(issue_counts)
        counts.update(state.checklist_counts())
        keys = (
            "issues",
            "voided_issues",
            "comments",
            "issue_changes",
            "issue_attachments",
            "issue_document_references",
            "issue_uri_references",
            "checklists",
            "deleted_checklists",
            "checklist_items",
            "checklist_sections",
            "checklist_comments",
            "signatures",
            "checklist_attachments",
            "checklist_document_references",
            "checklist_uri_references",
            "checklist_item_attachments",
            "checklist_item_document_references",
            "checklist_item_uri_references",
            "checklist_item_issue_links",
            "checklist_custom_field_values",
            "attachments",
            "attachment_bytes",
            "issue_signatures",
            "composites",
        )
        return {**{key: 0 for key in keys}, **{k: int(v) for k, v in counts.items()}}

    def inventory_counts(self, project_id: str | None = None) -> dict[str, int]:
        """Records of the families outside the pipeline (issue 15), as this simulator serves
        them: what extract's inventory must count."""
        data = self._states[project_id or self.project.main.id].data
        return {
            "photos": len(data.photos()),
            "library_files": len(data.library_files()),
            "library_folders": len(data.library_folders()),
            "equipment": len(data.equipment),
            "tasks": len(data.tasks),
            "daily_updates": len(data.daily_updates()),
        }

    def _locate(self, issue_id: str) -> tuple[_ProjectState, int, dict[str, Any]]:
        """(state, index, a private copy of the current record). Call with the lock held."""
        for state in self._states.values():
            index = state.data.issue_index(issue_id)
            if index is None:
                continue
            record = state.view().record(index)
            if record is not None:
                return state, index, copy.deepcopy(record)
        raise KeyError(f"no issue {issue_id!r}")

    def update_issue(self, issue_id: str, **field_values: Any) -> None:
        """Change fields: ``status="Closed"`` or ``**{"cf--<id>": "x"}`` (f-- prefix optional)."""
        with self.lock:
            state, index, record = self._locate(issue_id)
            moment = self._now()
            for name, value in field_values.items():
                field_id = name if name.startswith(("f--", "cf--")) else f"f--{name}"
                if field_id not in record["fields"] and field_id not in STANDARD_FIELD_IDS:
                    raise KeyError(f"issue {issue_id} has no field {name!r}")
                if field_id == "f--status":
                    _change_status(record, value, moment, self.username)
                elif field_id == "f--priority" and value not in PRIORITIES:
                    raise ValueError(f"priority {value!r} is not one of {PRIORITIES}")
                record["fields"][field_id] = value
            record["updated_at"] = field_time(moment)
            state.overlay[index] = record

    def rename_area(self, area_id: str, name: str, project_id: str | None = None) -> None:
        """Give an area a new name (any text: tests plant hostile ones); paths follow."""
        with self.lock:
            areas = self._states[project_id or self.project.main.id].data.areas
            by_id = {a["id"]: a for a in areas}
            by_id[area_id]["name"] = name
            for area in areas:  # parents come before children in full_path order
                parent = by_id.get(area["parent_id"]) if area["parent_id"] else None
                if parent is None:
                    area["full_path"] = area["name"]
                else:
                    area["path"] = parent["full_path"]
                    area["full_path"] = f"{parent['full_path']}>{area['name']}"

    def void_issue(self, issue_id: str) -> None:
        """Set an issue's status to Void (it then shows in get_voided_issues)."""
        self.update_issue(issue_id, status="Void")

    def delete_issue(self, issue_id: str) -> None:
        """Remove an issue from every endpoint (as ``issues/v1/destroy`` would)."""
        with self.lock:
            state, index, _ = self._locate(issue_id)
            state.overlay[index] = None

    def add_comment(self, issue_id: str, text: str, author: str = "demo@example.com") -> str:
        with self.lock:
            state, index, record = self._locate(issue_id)
            moment = self._now()
            comment_id = state.data.make_id(KIND_COMMENT, state.next_slot, index)
            state.next_slot += 1
            record["comments"].append(
                {
                    "created_at": iso_time(moment),
                    "created_by": author,
                    "comment_text": text,
                    "id": comment_id,
                }
            )
            record["updated_at"] = field_time(moment)
            state.overlay[index] = record
            return comment_id

    def add_attachment(
        self,
        issue_id: str,
        filename: str,
        size: int,
        content_type: str = "application/octet-stream",
    ) -> str:
        """Attach a file of ``size`` generated bytes to an issue; returns its id."""
        with self.lock:
            state, index, record = self._locate(issue_id)
            moment = self._now()
            attachment_id = state.data.make_id(KIND_ATTACHMENT, state.next_slot, index)
            state.next_slot += 1
            record["attachments"].append(
                {
                    "id": attachment_id,
                    "type": "Attachment",
                    "name": filename,
                    "caption": "",
                    "tags": "",
                    "content_type": content_type,
                    "size": size,
                    "num_pages": 1,
                    "created_at": field_time(moment),
                    "updated_at": field_time(moment),
                    "created_by": self.username,
                }
            )
            record["updated_at"] = field_time(moment)
            state.overlay[index] = record
            return attachment_id

    def add_issue(
        self,
        *,
        project_id: str | None = None,
        description: str = "",
        status: str = "Open",
        issue_type_id: str | None = None,
        created_by: str | None = None,
        **field_values: Any,
    ) -> str:
        """Create an issue at the end of the project's list; returns its id."""
        if status not in STATUSES:
            raise ValueError(f"status {status!r} is not one of {STATUSES}")
        with self.lock:
            state = self._states[project_id or self.project.main.id]
            data = state.data
            index = data.issue_count + state.added
            state.added += 1
            moment = self._now()
            type_id = issue_type_id or data.issue_types[0]["id"]
            fields: dict[str, Any] = dict.fromkeys(STANDARD_FIELD_IDS)
            fields.update(
                {
                    "f--identifier": f"{index + 1:06d}",
                    "f--issue_type_id": type_id,
                    "f--description": description,
                    "f--priority": "",
                    "f--status": status,
                    "f--location_detail": "",
                }
            )
            fields.update(dict.fromkeys(data.issue_custom_field_ids(type_id)))
            for name, value in field_values.items():
                fields[name if name.startswith(("f--", "cf--")) else f"f--{name}"] = value
            stamp = field_time(moment)
            issue_id = data.issue_id(index)
            state.overlay[index] = {
                "id": issue_id,
                "project_id": data.id,
                "index": index,
                "fields": fields,
                "created_by": created_by or self.username,
                "created_at": stamp,
                "updated_at": stamp,
                "closed_at": stamp if status == "Closed" else None,
                "comments": [],
                "attachments": [],
                "history": [
                    {
                        "status": status,
                        "previous_status": None,
                        "user": created_by or self.username,
                        "start_dt": stamp,
                        "end_dt": None,
                    }
                ],
            }
            return issue_id

    # -- a working day at the source, for catch-up rehearsals --------------------------------
    def current_issues(self, project_id: str | None = None) -> list[dict[str, Any]]:
        """Copies of the project's issues as now served, voided ones included."""
        with self.lock:
            view = self._states[project_id or self.project.main.id].view()
            return [copy.deepcopy(record) for record in view.scan(include_void=True)]

    def work_a_day(self) -> list[str]:
        """Change the main project as a day on site would; one line per change.

        What `migrate sandbox change` asks for (POST /sandbox/v1/work_a_day), so runbook 02's
        catch-up can be rehearsed: of the first four Open issues, one is closed, one edited,
        one voided and one gets a new photo; and one issue is added.
        """
        with self.lock:
            view = self._states[self.project.main.id].view()
            open_issues = [
                (record["id"], record["fields"]["f--identifier"])
                for record in view.scan(include_void=False)
                if record["fields"]["f--status"] == "Open"
            ][:4]
        if len(open_issues) < 4:
            raise ValueError("the project has fewer than 4 Open issues to change")
        (closed, closed_name), (edited, edited_name) = open_issues[:2]
        (voided, voided_name), (photographed, photographed_name) = open_issues[2:]
        self.update_issue(closed, status="Closed")
        self.update_issue(edited, description="Re-inspected: the crack has widened to 3 mm.")
        self.void_issue(voided)
        self.add_attachment(photographed, "after-load.jpg", 4096, "image/jpeg")
        added = self.add_issue(description="Water ingress at the loading dock door")
        added_name = self._states[self.project.main.id].view().find(added)
        assert added_name is not None
        return [
            f"closed issue {closed_name}",
            f"edited the description of issue {edited_name}",
            f"voided issue {voided_name}",
            f"added a photo to issue {photographed_name}",
            f"added issue {added_name['fields']['f--identifier']}",
        ]

    def _work_a_day(self, request: Request) -> Response:
        try:
            return json_response({"changes": self.work_a_day()})
        except ValueError as exc:
            return json_response({"error": str(exc)}, 409)


# -- module helpers ---------------------------------------------------------------------------


def _one_of(switch: str, value: str, readings: tuple[str, ...]) -> str:
    """A simulator switch's value, checked against the readings it models."""
    if value not in readings:
        raise ValueError(f"{switch} must be one of {', '.join(readings)}, not {value!r}")
    return value


def _rich_content(request: Request) -> bool:
    """Whether ``application_version`` is above 1.10, which seed 003 says rich content needs."""
    raw = request.param("application_version") or ""
    parts = []
    for piece in raw.strip().split("."):
        if not piece.isdigit():
            return False
        parts.append(int(piece))
    return bool(parts) and tuple(parts) > (1, 10)


def _unauthorized(message: str) -> Response:
    return json_response({"error": "Unauthorized", "message": message}, 401)


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.param(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise HTTPError(
            400, {"error": "Bad Request", "message": f"{name} must be a whole number"}
        ) from None


def _page(request: Request) -> tuple[int, int]:
    """(offset, limit): limit defaults to 25 and is silently capped at 100."""
    offset = _int_param(request, "offset", 0)
    limit = _int_param(request, "limit", PAGE_DEFAULT)
    if offset < 0 or limit < 1:
        raise HTTPError(
            400, {"error": "Bad Request", "message": "offset must be >= 0 and limit >= 1"}
        )
    return offset, min(limit, PAGE_MAX)


def _date_param(request: Request, name: str, *, end_of_day: bool) -> datetime | None:
    raw = (request.param(name) or "").strip()
    if not raw:
        return None
    try:
        moment = parse_field_time(raw)
    except ValueError:
        raise HTTPError(400, {"error": "Bad Request", "message": f"{name} is not a date"}) from None
    if end_of_day and len(raw) == 10:
        moment += timedelta(days=1, microseconds=-1)
    return moment


def _parse_conditions(request: Request, data: FieldProjectData) -> list[tuple[str, str, Any]]:
    raw_list = request.param_list("conditions")
    if not raw_list:
        return []
    if len(raw_list) == 1 and raw_list[0].lstrip().startswith("["):
        try:
            items = json.loads(raw_list[0])
        except ValueError:
            raise HTTPError(
                400, {"error": "Bad Request", "message": "conditions is not a JSON array"}
            ) from None
    else:
        items = raw_list
    conditions = []
    for item in items:
        parts = item.split(",", 2) if isinstance(item, str) else []
        if len(parts) != 3 or parts[1] not in _CONDITION_OPS:
            raise HTTPError(400, {"error": "Bad Request", "message": f"bad condition {item!r}"})
        field_id, op, raw_value = parts
        if field_id not in data.field_catalog:
            raise HTTPError(400, {"error": "Bad Request", "message": f"unknown field {field_id!r}"})
        try:
            value = json.loads(raw_value)
        except ValueError:
            raise HTTPError(
                400, {"error": "Bad Request", "message": f"condition value is not JSON: {item!r}"}
            ) from None
        if op in ("in", "nin") and not isinstance(value, list):
            raise HTTPError(
                400, {"error": "Bad Request", "message": f"{op} needs a JSON array: {item!r}"}
            )
        conditions.append((field_id, op, value))
    return conditions


def _condition_holds(record: dict[str, Any], condition: tuple[str, str, Any]) -> bool:
    field_id, op, wanted = condition
    actual = record["fields"].get(field_id)
    text = "" if actual is None else str(actual)
    negate = op.startswith("n")  # neq, nlike, nstartswith, nendswith, nin
    base = {
        "neq": "eq",
        "nlike": "like",
        "nstartswith": "startswith",
        "nendswith": "endswith",
        "nin": "in",
    }.get(op, op)
    if base in ("geq", "leq"):
        try:
            number, limit = float(text), float(wanted)
        except (TypeError, ValueError):
            return False
        return number >= limit if base == "geq" else number <= limit
    if base == "eq":
        result = text == ("" if wanted is None else str(wanted))
    elif base == "like":
        result = str(wanted).lower() in text.lower()
    elif base == "startswith":
        result = text.lower().startswith(str(wanted).lower())
    elif base == "endswith":
        result = text.lower().endswith(str(wanted).lower())
    else:
        result = text in {"" if w is None else str(w) for w in wanted}
    return not result if negate else result


def _change_status(record: dict[str, Any], status: str, moment: datetime, user: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {STATUSES}")
    previous = record["fields"]["f--status"]
    if status == previous:
        return
    stamp = field_time(moment)
    history = record["history"]
    if history:
        history[-1]["end_dt"] = stamp
    history.append(
        {
            "status": status,
            "previous_status": previous,
            "user": user,
            "start_dt": stamp,
            "end_dt": None,
        }
    )
    record["closed_at"] = stamp if status == "Closed" else None


def _mobile_issue(record: dict[str, Any]) -> dict[str, Any]:
    fields = record["fields"]
    flat: dict[str, Any] = {"id": record["id"], "project_id": record["project_id"]}
    for field_id in STANDARD_FIELD_IDS:
        flat[field_id[3:]] = fields.get(field_id)
    issue_id = record["id"]
    flat.update(
        {
            "created_by": record["created_by"],
            "created_at": record["created_at"],
            "updated_at": record["updated_at"],
            "closed_at": record["closed_at"],
            "deleted": False,
            "custom_field_values": [
                {
                    "id": f"{issue_id}:{field_id[4:]}",
                    "custom_field_definition_id": field_id[4:],
                    "container_id": issue_id,
                    "container_type": "Issue",
                    "value": value,
                }
                for field_id, value in fields.items()
                if field_id.startswith("cf--")
            ],
            "comments": [
                {
                    "id": c["id"],
                    "object_id": issue_id,
                    "comment_text": c["comment_text"],
                    "created_by": c["created_by"],
                    "created_at": c["created_at"],
                }
                for c in record["comments"]
            ],
            "attachments": [
                {
                    "id": a["id"],
                    "filename": a["name"],
                    "content_type": a["content_type"],
                    "size": a["size"],
                    "num_pages": a["num_pages"],
                    "caption": a["caption"],
                    "tags": a["tags"],
                    "container_id": issue_id,
                    "container_type": "Issue",
                    "created_at": a["created_at"],
                    "updated_at": a["updated_at"],
                    "created_by": a["created_by"],
                }
                for a in record["attachments"]
                if a["type"] == "Attachment"
            ],
            "document_references": [
                {
                    "id": a["id"],
                    "document_id": a["document_id"],
                    "num_pages": a["num_pages"],
                    "content_type": a["content_type"],
                    "container_id": issue_id,
                    "container_type": "Issue",
                    "caption": a["caption"],
                    "tags": a["tags"],
                }
                for a in record["attachments"]
                if a["type"] == "DocumentReference"
            ],
            "uri_references": [
                {
                    "id": a["id"],
                    "name": a["name"],
                    "path": a["path"],
                    "caption": a["caption"],
                    "tags": a["tags"],
                }
                for a in record["attachments"]
                if a["type"] == "UriReference"
            ],
        }
    )
    return flat


def _find_object(view: _View, object_type: str, object_id: str) -> dict[str, Any] | None:
    """The attachment/signature/document-reference record behind ``object_id``, if visible."""
    parts = view.data.id_parts(object_id)
    if parts is None:
        return None
    kind, slot, index = parts
    wanted_type = object_type
    reference_id = object_id
    if object_type == "Document":
        if kind not in DOCUMENT_KINDS:
            return None
        kind = DOCUMENT_KINDS[kind]
        reference_id = view.data.make_id(kind, slot, index)
        wanted_type = "DocumentReference"
    if kind in ISSUE_OBJECT_KINDS:
        record = view.record(index)
        candidates = record["attachments"] + record.get("signatures", []) if record else []
    elif kind in CHECKLIST_OBJECT_KINDS:
        if index >= view.data.checklist_count:
            return None
        checklist = view.data.checklist(index)
        if checklist["deleted"]:
            return None
        candidates = (
            checklist["attachments"]
            + checklist["signatures"]
            + [
                a
                for section in checklist["sections"]
                for item in section["items"]
                for a in item["attachments"]
            ]
        )
    else:
        return None
    for candidate in candidates:
        if candidate["id"] == reference_id and candidate["type"] == wanted_type:
            return candidate
    return None


def _content_disposition(filename: str) -> str:
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _json_array_response(make_rows: Callable[[], Iterator[Any]], threshold: int) -> Response:
    """A JSON array body; above ``threshold`` bytes it is encoded twice instead of held."""
    headers = {"Content-Type": "application/json; charset=utf-8"}
    length = 0
    held: list[bytes] | None = []
    for chunk in _encode_array(make_rows()):
        length += len(chunk)
        if held is not None:
            held.append(chunk)
            if length > threshold:
                held = None
    if held is not None:
        return Response(200, b"".join(held), headers)
    return Response(200, _encode_array(make_rows()), headers, length=length)


def _encode_array(rows: Iterator[Any], batch: int = 64 * 1024) -> Iterator[bytes]:
    pending: list[bytes] = [b"["]
    size = 1
    first = True
    for row in rows:
        piece = json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        if not first:
            pending.append(b",")
            size += 1
        first = False
        pending.append(piece)
        size += len(piece)
        if size >= batch:
            yield b"".join(pending)
            pending, size = [], 0
    pending.append(b"]")
    yield b"".join(pending)


__all__ = ["FieldApp", "PAGE_DEFAULT", "PAGE_MAX", "RETRIEVE_MAX"]


def build_export_archive(data: FieldProjectData, kind: str) -> bytes:
    """A small, deterministic zip standing in for Field's export archive of ``kind``.

    ``database``: the project's record and every issue id; ``files``: a manifest of the photos
    and library documents (the bytes themselves would be gigabytes). Fixed timestamps, so the
    same project always gives the same bytes.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:

        def add(name: str, text: str) -> None:
            archive.writestr(zipfile.ZipInfo(name, date_time=(2015, 1, 1, 0, 0, 0)), text)

        if kind == "database":
            add(
                "project.json",
                json.dumps({"id": data.id, "name": data.name, "issues": data.issue_count}),
            )
            add(
                "issues.csv",
                "id\n" + "".join(data.issue_id(i) + "\n" for i in range(data.issue_count)),
            )
        else:
            rows = ["family,id,path,size"]
            rows += [f"photo,{p['id']},photos/{p['filename']},{p['size']}" for p in data.photos()]
            rows += [
                f"library,{f['id']},{f['directory']}/{f['filename']},{f['size']}"
                for f in data.library_files()
            ]
            add("manifest.csv", "\n".join(rows) + "\n")
    return buffer.getvalue()
