"""Procore's Inspections tool (checklists) in the simulator.

What is served and why each rule holds is written up, with sources, in
``/work/notes/procore-inspections-api.md``; the short version:

- Company level: inspection types, item response sets (multiple-choice answers, each with a
  ``corresponding_status`` of ``yes``/``no``/``n/a``), company templates, their sections and their
  items (``/companies/{id}/inspection_templates/{id}/items``: the only documented way to give a
  template typed items). ``GET /checklist/item_types`` lists the item types.
- Project level: project templates (created empty, or copied from a company template with
  ``create_from_company_template``, which keeps them synced), inspections (``checklist/lists``)
  created from a project template (its sections and items are copied into the inspection),
  sections and items listed back, one response per item, item comments, files on the inspection
  (``upload_ids`` or ``attachment.upload_id`` from the uploads flow, or the deprecated multipart
  form) and on items (multipart ``item_attachments`` or ``bulk_create`` of files the project
  already holds), and closing/reopening.

Strict where the reference speaks: unknown attributes are 422 ``{"errors": {field: [...]}}``, a
missing wrapper object or required id is 400, an unknown parent is 404, a reference the project
does not hold (location, vendor, inspection type, upload, response option) is 422, and an item
accepts only the payload of its type. Where it is silent the choice is a switch
(:class:`InspectionOptions`, passed to :class:`~migrate.sandbox.procore_server.ProcoreApp` as
``inspection_*`` keyword arguments, e.g. through ``SandboxOptions.procore_options``):

- ``inspection_item_type_field``: what a template item's ``type`` string names: ``"name"`` (an
  item type's name, e.g. ``"text"``; default) or ``"id"`` (its id as a string).
- ``inspection_number_values``: ``"integer"`` (the documented type; default) or ``"decimal"``
  (the documented example ``7.54``).
- ``inspection_response_repost``: a second response to an item is ``"refuse"``d (422; default)
  or ``"replace"``s the first.
- ``inspection_closed_locked``: a closed inspection refuses responses, comments and files (422;
  default ``True``) or accepts them (``False``).
- ``inspection_type_names``: inspection type names are ``"unique"`` per company (default) or
  ``"repeatable"``.

Ids come from separate ranges per kind so a client that mixes a template item id with an
inspection item id gets a 404, not a lucky hit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from migrate.sandbox.httpbase import HTTPError, Request, Response, json_response

if TYPE_CHECKING:
    from migrate.sandbox.procore_server import ProcoreApp

#: The item type catalogue (id, category, name). Procore documents the shape and one example
#: (category ``multiple_choice``, name ``default``), not the list: clients look types up by name.
ITEM_TYPES: tuple[tuple[int, str, str], ...] = (
    (3101, "multiple_choice", "default"),
    (3102, "multiple_choice", "multiple_choice"),
    (3103, "open_ended", "text"),
    (3104, "open_ended", "number"),
    (3105, "open_ended", "date"),
    (3106, "signature", "signature"),
)
#: The response payload key each item type accepts (signature items accept none).
PAYLOAD_KEY = {
    "default": "status",
    "multiple_choice": "response_option_id",
    "text": "text_value",
    "number": "number_value",
    "date": "date_value",
}
PAYLOAD_KEYS = ("status", "response_option_id", "text_value", "number_value", "date_value")
LIST_STATUSES = ("open", "in_review", "closed")
STATUS_LABELS = {"open": "Open", "in_review": "In Review", "closed": "Closed"}
RESPONSE_STATUSES = ("conforming", "non_conforming", "not_applicable")
CORRESPONDING_STATUSES = ("yes", "no", "n/a")
ITEM_STATUS_OF = {"conforming": "yes", "non_conforming": "no", "not_applicable": "n/a"}
RESPONSE_STATUS_OF = {value: key for key, value in ITEM_STATUS_OF.items()}
ITEM_STATUS_IDS = {"yes": 1, "no": 2, "n/a": 3}
DEFAULT_PHRASING: dict[str, Any] = {
    "conforming_response": "Pass",
    "deficient_response": "Fail",
    "global": True,
}
STANDARD_RESPONSE_SET = ("Yes/No/N/A", (("Yes", "yes"), ("No", "no"), ("N/A", "n/a")))

LIST_FIELDS = frozenset(
    {
        "description",
        "due_at",
        "identifier",
        "inspection_date",
        "inspection_type_id",
        "number",
        "managed_equipment_id",
        "point_of_contact_id",
        "inspector_ids",
        "private",
        "responsible_contractor_id",
        "spec_section_id",
        "status",
        "trade_id",
        "distribution_member_ids",
        "location_id",
        "drawing_revision_ids",
        "file_version_ids",
        "form_ids",
        "image_ids",
        "upload_ids",
        "document_management_document_revision_ids",
    }
)
#: The update body also takes a name; the create body takes it from the template.
LIST_UPDATE_FIELDS = LIST_FIELDS - {"managed_equipment_id"} | {"name"}
TEMPLATE_FIELDS = frozenset(
    {"description", "inspection_type_id", "alternative_response_set_id", "name", "trade_id"}
)
LIST_FILTERS = (
    "filters[id]",
    "filters[id][]",
    "filters[template_id]",
    "filters[template_id][]",
    "filters[inspection_type_id]",
    "filters[inspection_type_id][]",
    "filters[location_id]",
    "filters[location_id][]",
    "filters[query]",
    "filters[created_at]",
    "filters[updated_at]",
)
ITEM_FILTERS = (
    "filters[id]",
    "filters[id][]",
    "filters[list_id]",
    "filters[list_id][]",
    "filters[section_id]",
    "filters[section_id][]",
    "filters[updated_at]",
)
SECTION_FILTERS = ("filters[id]", "filters[id][]", "filters[list_id]", "filters[list_id][]")
CHILD_FILTERS = ("filters[id]", "filters[id][]", "filters[item_id]", "filters[item_id][]")
TEMPLATE_FILTERS = (
    "filters[inspection_type_id]",
    "filters[inspection_type_id][]",
    "filters[query]",
)
ITEM_RESPONSE_FILTER_VALUES = ("conforming", "non_conforming", "neutral", "not_applicable", "null")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class InspectionOptions:
    """The simulator's reading of what Procore's Inspections reference leaves open."""

    item_type_field: str = "name"
    number_values: str = "integer"
    response_repost: str = "refuse"
    closed_locked: bool = True
    type_names: str = "unique"

    def __post_init__(self) -> None:
        for field, allowed in (
            ("item_type_field", ("name", "id")),
            ("number_values", ("integer", "decimal")),
            ("response_repost", ("refuse", "replace")),
            ("type_names", ("unique", "repeatable")),
        ):
            if getattr(self, field) not in allowed:
                raise ValueError(
                    f"inspection_{field} must be one of {', '.join(allowed)}, "
                    f"got {getattr(self, field)!r}"
                )


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_or_none(value: Any) -> int | None:
    if _is_int(value):
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _valid_date(value: Any) -> bool:
    if not isinstance(value, str) or not _DATE_RE.match(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _valid_instant(value: Any) -> bool:
    if not isinstance(value, str) or "T" not in value:
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _range(raw: str, name: str) -> tuple[float, float]:
    """``start...end`` (dates or instants) as epoch seconds; a date end covers its whole day."""
    start, sep, end = raw.partition("...")
    try:
        if not sep:
            raise ValueError(raw)
        bounds = []
        for text, is_end in ((start, False), (end, True)):
            text = text.strip()
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            value = moment.timestamp()
            if is_end and _DATE_RE.match(text):
                value += 86399
            bounds.append(value)
    except ValueError:
        raise HTTPError(400, {"errors": f"{name} must be <ISO-8601>...<ISO-8601>"}) from None
    return bounds[0], bounds[1]


def _unprocessable(errors: dict[str, list[str]]) -> HTTPError:
    return HTTPError(422, {"errors": errors})


def _not_found(kind: str, raw: Any) -> HTTPError:
    return HTTPError(404, {"errors": f"Couldn't find {kind} with 'id'={raw}"})


class Inspections:
    """Inspections state and handlers; every handler runs its work under ``app.lock``."""

    def __init__(self, app: ProcoreApp, options: InspectionOptions) -> None:
        self.app = app
        self.options = options
        self._ids = {
            "inspection_type": 31001,
            "response_set": 32001,
            "response": 33001,
            "company_template": 34001,
            "company_section": 35001,
            "company_item": 36001,
            "project_template": 37001,
            "template_section": 38001,
            "template_item": 39001,
            "list": 40001,
            "list_section": 41001,
            "list_item": 42001,
            "comment": 43001,
            "item_attachment": 44001,
        }
        self.item_types = {
            type_id: {"id": type_id, "category": category, "name": name}
            for type_id, category, name in ITEM_TYPES
        }
        self.inspection_types: dict[int, dict[str, Any]] = {}
        self.response_sets: dict[int, dict[str, Any]] = {}
        self.responses: dict[int, dict[str, Any]] = {}
        self.company_templates: dict[int, dict[str, Any]] = {}
        self.company_sections: dict[int, dict[str, Any]] = {}
        self.company_items: dict[int, dict[str, Any]] = {}
        self.project_templates: dict[int, dict[str, Any]] = {}
        self.template_sections: dict[int, dict[str, Any]] = {}
        self.template_items: dict[int, dict[str, Any]] = {}
        self.lists: dict[int, dict[str, Any]] = {}
        self.list_sections: dict[int, dict[str, Any]] = {}
        self.list_items: dict[int, dict[str, Any]] = {}
        self.comments: dict[int, dict[str, Any]] = {}
        self.item_attachments: dict[int, dict[str, Any]] = {}
        self._project_lists: dict[int, list[int]] = {}
        self._project_comments: dict[int, list[int]] = {}
        self._project_item_attachments: dict[int, list[int]] = {}
        self._numbers: dict[int, int] = {}
        name, responses = STANDARD_RESPONSE_SET
        self._create_response_set(name, list(responses), standard=True)

    # -- registration ---------------------------------------------------------------------
    def register(self) -> None:
        add = self.app.add_route
        company = "/rest/v1.0/companies/{company_id}"
        project = "/rest/v1.0/projects/{project_id}"
        project11 = "/rest/v1.1/projects/{project_id}"
        add("GET", "/rest/v1.0/checklist/item_types", self._item_types_list, "item_types.list")
        add("GET", "/rest/v1.0/checklist/item_types/{id}", self._item_type_show, "item_types.show")
        add("GET", f"{company}/inspection_types", self._types_list, "inspection_types.list")
        add("POST", f"{company}/inspection_types", self._type_create, "inspection_types.create")
        add("GET", f"{company}/inspection_types/{{id}}", self._type_show, "inspection_types.show")
        sets = f"{company}/checklist/item/response_sets"
        add("GET", sets, self._sets_list, "response_sets.list")
        add("POST", sets, self._set_create, "response_sets.create")
        add("GET", f"{sets}/{{id}}", self._set_show, "response_sets.show")
        add("GET", f"{sets}/{{id}}/responses", self._set_responses, "response_sets.responses")
        templates = f"{company}/checklist/list_templates"
        add("GET", templates, self._company_templates_list, "company_templates.list")
        add("POST", templates, self._company_template_create, "company_templates.create")
        add("GET", f"{templates}/{{id}}", self._company_template_show, "company_templates.show")
        sections = f"{templates}/{{template_id}}/sections"
        add("GET", sections, self._company_sections_list, "company_sections.list")
        add("POST", sections, self._company_section_create, "company_sections.create")
        items = f"{company}/inspection_templates/{{template_id}}/items"
        add("GET", items, self._company_items_list, "company_items.list")
        add("POST", items, self._company_item_create, "company_items.create")
        add("GET", f"{items}/{{id}}", self._company_item_show, "company_items.show")
        # create_from_company_template before {id}: the {id} pattern would not match it anyway,
        # but the order keeps the reading obvious.
        add(
            "POST",
            f"{project}/checklist/list_templates/create_from_company_template",
            self._template_from_company,
            "project_templates.create_from_company_template",
        )
        for version, prefix in (("v1.0", project), ("v1.1", project11)):
            add(
                "GET",
                f"{prefix}/checklist/list_templates",
                self._project_templates_list,
                f"project_templates.list.{version}",
            )
            add(
                "GET",
                f"{prefix}/checklist/list_templates/{{id}}",
                self._project_template_show,
                f"project_templates.show.{version}",
            )
        add(
            "POST",
            f"{project}/checklist/list_templates",
            self._project_template_create,
            "project_templates.create",
        )
        for version, prefix in (("v1.0", project), ("v1.1", project11)):
            add("POST", f"{prefix}/checklist/lists", self._list_create, f"lists.create.{version}")
        add("GET", f"{project}/checklist/lists", self._lists_list, "lists.list")
        add("GET", f"{project}/checklist/lists/{{id}}", self._list_show, "lists.show")
        add("PATCH", f"{project11}/checklist/lists/{{id}}", self._list_update, "lists.update")
        add("PATCH", f"{project11}/checklist/lists/{{id}}/close", self._list_close, "lists.close")
        add(
            "PATCH", f"{project11}/checklist/lists/{{id}}/reopen", self._list_reopen, "lists.reopen"
        )
        add("GET", f"{project}/checklist/list_sections", self._sections_list, "list_sections.list")
        add(
            "GET",
            f"{project11}/checklist/list_items",
            self._items_list_v11,
            "list_items.list.v1.1",
        )
        add("GET", f"{project}/checklist/list_items", self._items_list_v10, "list_items.list.v1.0")
        response = f"{project}/checklist/items/{{item_id}}/item_response"
        add("POST", response, self._response_create, "item_response.create")
        add("GET", response, self._response_show, "item_response.show")
        add(
            "POST",
            "/rest/v1.0/checklist/lists/{list_id}/comments",
            self._comment_create,
            "list_comments.create",
        )
        add(
            "GET",
            f"{project}/checklist/list_item_comments",
            self._comments_list,
            "list_item_comments.list",
        )
        add(
            "POST",
            f"{project}/checklist/lists/{{list_id}}/attachments",
            self._list_attachment_create,
            "list_attachments.create",
        )
        add(
            "POST",
            "/rest/v1.0/checklist/lists/{list_id}/items/{item_id}/item_attachments",
            self._item_attachment_create,
            "item_attachments.create",
        )
        add(
            "POST",
            f"{project}/checklist/list_item_attachments/bulk_create",
            self._item_attachments_bulk,
            "item_attachments.bulk_create",
        )
        add(
            "GET",
            f"{project}/checklist/list_item_attachments",
            self._item_attachments_list,
            "item_attachments.list",
        )

    # -- shared helpers -------------------------------------------------------------------
    def _next(self, kind: str) -> int:
        value = self._ids[kind]
        self._ids[kind] += 1
        return value

    def _company(self, request: Request) -> int:
        raw = request.path_params["company_id"]
        company_id = _int_or_none(raw)
        if company_id is None:
            raise HTTPError(404, {"errors": f"Couldn't find Company with 'id'={raw}"})
        if company_id != self.app.company["id"]:
            raise HTTPError(403, {"errors": f"You do not have access to company {company_id}"})
        return company_id

    def _project_id(self, request: Request) -> int:
        return int(self.app._project(request.path_params["project_id"], in_path=True)["id"])

    def _body(self, request: Request, wrapper: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The whole JSON object and its ``wrapper`` object (400 when either is missing)."""
        body = self.app._json_object(request)
        inner = body.get(wrapper)
        if not isinstance(inner, dict):
            raise HTTPError(400, {"errors": {wrapper: ["is missing"]}})
        return body, inner

    @staticmethod
    def _unknown(given: Iterable[str], allowed: Iterable[str]) -> dict[str, list[str]]:
        allowed = set(allowed)
        return {key: ["is not a permitted attribute"] for key in given if key not in allowed}

    @staticmethod
    def _id_filter(request: Request, name: str) -> set[int] | None:
        """``filters[name][]=1&filters[name][]=2`` or ``filters[name]=1,2``; None when absent."""
        keys = (f"filters[{name}]", f"filters[{name}][]")
        if not any(key in request.query for key in keys):
            return None
        wanted: set[int] = set()
        for value in (v for key in keys for v in request.query.get(key, [])):
            for part in value.split(","):
                parsed = _int_or_none(part)
                if parsed is None:
                    raise HTTPError(400, {"errors": f"filters[{name}] must be integers"})
                wanted.add(parsed)
        return wanted

    def _time_filter(self, request: Request, name: str) -> tuple[float, float] | None:
        raw = request.param(f"filters[{name}]")
        return None if raw is None else _range(raw, f"filters[{name}]")

    @staticmethod
    def _in_window(value: float, window: tuple[float, float] | None) -> bool:
        return window is None or window[0] <= math.floor(value) <= window[1]

    def _user(self, company_name: bool = False) -> dict[str, Any]:
        account = self.app.SERVICE_ACCOUNT
        user = {"id": account["id"], "login": account["login"], "name": account["name"]}
        if company_name:
            user["company_name"] = self.app.company["name"]
        return user

    def _project_user_ids(self, project_id: int) -> set[int]:
        return {uid for uid, user in self.app._users.items() if project_id in user["project_ids"]}

    def _item_type(self, type_id: int) -> dict[str, Any]:
        return self.item_types[type_id]

    def _paged(
        self, request: Request, items: list[Any], serialize: Callable[[Any], Any]
    ) -> Response:
        return self.app._paged(request, items, serialize)

    # -- item types ---------------------------------------------------------------------------
    def _scope(self, request: Request) -> None:
        """``project_id`` or ``company_id`` (either is enough, one is needed)."""
        project_raw = request.param("project_id")
        company_raw = request.param("company_id")
        if project_raw:
            self.app._project(project_raw)
        elif company_raw:
            if _int_or_none(company_raw) != self.app.company["id"]:
                raise HTTPError(403, {"errors": f"You do not have access to company {company_raw}"})
        else:
            raise HTTPError(400, {"errors": {"project_id": ["is missing"]}})

    def _item_types_list(self, request: Request) -> Response:
        with self.app.lock:
            self._scope(request)
            return self._paged(request, list(self.item_types.values()), dict)

    def _item_type_show(self, request: Request) -> Response:
        with self.app.lock:
            self._scope(request)
            raw = request.path_params["id"]
            found = self.item_types.get(_int_or_none(raw) or -1)
            if found is None:
                raise _not_found("Checklist::ItemType", raw)
            return json_response(dict(found))

    # -- inspection types -----------------------------------------------------------------------
    def _type_json(self, kind: dict[str, Any], nested: bool = False) -> dict[str, Any]:
        data = {
            "id": kind["id"],
            "name": kind["name"],
            "created_at": _iso(kind["created_at"]),
            "updated_at": _iso(kind["updated_at"]),
        }
        if not nested:
            data.update(
                audit_transaction_timestamp=_iso(kind["updated_at"]),
                source_id=None,
                deleted_at=None,
                company_id=self.app.company["id"],
                is_deletable=not any(
                    t["inspection_type_id"] == kind["id"]
                    for t in (*self.company_templates.values(), *self.project_templates.values())
                ),
            )
        return data

    def _types_list(self, request: Request) -> Response:
        with self.app.lock:
            self._company(request)
            return self._paged(request, list(self.inspection_types.values()), self._type_json)

    def _type_show(self, request: Request) -> Response:
        with self.app.lock:
            self._company(request)
            raw = request.path_params["id"]
            kind = self.inspection_types.get(_int_or_none(raw) or -1)
            if kind is None:
                raise _not_found("InspectionType", raw)
            return json_response(self._type_json(kind))

    def _type_create(self, request: Request) -> Response:
        _, fields = self._body(request, "inspection_type")
        with self.app.lock:
            self._company(request)
            errors = self._unknown(fields, ("name",))
            name = fields.get("name")
            if not isinstance(name, str) or not name.strip():
                errors["name"] = ["can't be blank"]
            elif self.options.type_names == "unique" and any(
                t["name"].lower() == name.strip().lower() for t in self.inspection_types.values()
            ):
                errors["name"] = ["has already been taken"]
            if errors:
                raise _unprocessable(errors)
            now = self.app.now()
            kind = {
                "id": self._next("inspection_type"),
                "name": name.strip(),  # type: ignore[union-attr]
                "created_at": now,
                "updated_at": now,
            }
            self.inspection_types[kind["id"]] = kind
            return json_response(self._type_json(kind), 201)

    # -- response sets ------------------------------------------------------------------------
    def _create_response_set(
        self, name: str, responses: list[tuple[str, str]], *, standard: bool = False
    ) -> dict[str, Any]:
        now = self.app.now()
        response_set: dict[str, Any] = {
            "id": self._next("response_set"),
            "name": name,
            "active": True,
            "standard": standard,
            "created_at": now,
            "updated_at": now,
            "response_ids": [],
        }
        for response_name, status in responses:
            response = {
                "id": self._next("response"),
                "name": response_name,
                "corresponding_status": status,
                "response_set_id": response_set["id"],
            }
            self.responses[response["id"]] = response
            response_set["response_ids"].append(response["id"])
        self.response_sets[response_set["id"]] = response_set
        return response_set

    def _response_json(self, response: dict[str, Any], style: str) -> dict[str, Any]:
        """One response as each endpoint documents it: ``corresponding`` (yes/no/n/a) or
        ``status`` (conforming/non_conforming/not_applicable), with or without its status id."""
        data: dict[str, Any] = {"id": response["id"], "name": response["name"]}
        status = response["corresponding_status"]
        if style.startswith("status"):
            data["status"] = RESPONSE_STATUS_OF[status]
        else:
            data["corresponding_status"] = status
        if style.endswith("+id"):
            data["item_status_id"] = ITEM_STATUS_IDS[status]
        return data

    def _set_in_use(self, response_set: dict[str, Any]) -> bool:
        return any(
            item["response_set_id"] == response_set["id"]
            for item in (*self.company_items.values(), *self.template_items.values())
        )

    def _set_json(self, response_set: dict[str, Any], style: str = "full") -> dict[str, Any]:
        responses = [self.responses[i] for i in response_set["response_ids"]]
        if style == "brief":  # template show: id, name, responses
            return {
                "id": response_set["id"],
                "name": response_set["name"],
                "responses": [self._response_json(r, "corresponding") for r in responses],
            }
        if style == "items_v10":  # v1.0 list items
            return {
                "id": response_set["id"],
                "name": response_set["name"],
                "responses": [self._response_json(r, "corresponding+id") for r in responses],
                "created_at": _iso(response_set["created_at"]),
                "updated_at": _iso(response_set["updated_at"]),
            }
        data = {
            "id": response_set["id"],
            "name": response_set["name"],
            "active": response_set["active"],
            "created_at": _iso(response_set["created_at"]),
            "updated_at": _iso(response_set["updated_at"]),
        }
        if style == "full":  # the response set endpoints
            data["responses"] = [self._response_json(r, "corresponding+id") for r in responses]
            data["in_use"] = self._set_in_use(response_set)
        else:  # "status": template items (company) and v1.1 list items
            data["responses"] = [self._response_json(r, "status+id") for r in responses]
        in_use = self._set_in_use(response_set)
        data["deletable"] = not response_set["standard"] and not in_use
        data["procore_standard"] = response_set["standard"]
        return data

    def _sets_list(self, request: Request) -> Response:
        self.app._check_filters(request, ("filters[id]", "filters[id][]", "filters[active]"))
        with self.app.lock:
            self._company(request)
            wanted = self._id_filter(request, "id")
            sets = [s for s in self.response_sets.values() if wanted is None or s["id"] in wanted]
            active = request.param("filters[active]")
            if active is not None:
                if active not in ("true", "false"):
                    raise HTTPError(400, {"errors": "filters[active] must be true or false"})
                sets = [s for s in sets if s["active"] == (active == "true")]
            return self._paged(request, sets, self._set_json)

    def _find_set(self, request: Request) -> dict[str, Any]:
        raw = request.path_params["id"]
        response_set = self.response_sets.get(_int_or_none(raw) or -1)
        if response_set is None:
            raise _not_found("Checklist::ResponseSet", raw)
        return response_set

    def _set_show(self, request: Request) -> Response:
        with self.app.lock:
            self._company(request)
            return json_response(self._set_json(self._find_set(request)))

    def _set_responses(self, request: Request) -> Response:
        with self.app.lock:
            self._company(request)
            response_set = self._find_set(request)
            return json_response(
                [
                    self._response_json(self.responses[i], "corresponding+id")
                    for i in response_set["response_ids"]
                ]
            )

    def _set_create(self, request: Request) -> Response:
        _, fields = self._body(request, "response_set")
        with self.app.lock:
            self._company(request)
            errors = self._unknown(fields, ("name", "active", "memberships_attributes"))
            name = fields.get("name")
            if not isinstance(name, str) or not name.strip():
                errors["name"] = ["can't be blank"]
            if "active" in fields and not isinstance(fields["active"], bool):
                errors["active"] = ["must be true or false"]
            memberships = fields.get("memberships_attributes", [])
            responses: list[tuple[str, str]] = []
            if not isinstance(memberships, list):
                errors["memberships_attributes"] = ["must be an array"]
                memberships = []
            for position, membership in enumerate(memberships):
                key = f"memberships_attributes[{position}]"
                if not isinstance(membership, dict) or set(membership) != {"response_attributes"}:
                    errors[key] = ["must be an object with response_attributes only"]
                    continue
                response = membership["response_attributes"]
                if not isinstance(response, dict):
                    errors[key] = ["response_attributes must be an object"]
                    continue
                errors.update(
                    {
                        f"{key}.{k}": v
                        for k, v in self._unknown(
                            response, ("name", "corresponding_status")
                        ).items()
                    }
                )
                response_name = response.get("name")
                status = response.get("corresponding_status")
                if not isinstance(response_name, str) or not response_name.strip():
                    errors[f"{key}.name"] = ["can't be blank"]
                elif status not in CORRESPONDING_STATUSES:
                    errors[f"{key}.corresponding_status"] = [
                        f"is not included in the list ({', '.join(CORRESPONDING_STATUSES)})"
                    ]
                elif response_name.strip() in {n for n, _ in responses}:
                    errors[f"{key}.name"] = ["has already been taken in this response set"]
                else:
                    responses.append((response_name.strip(), status))
            if errors:
                raise _unprocessable(errors)
            response_set = self._create_response_set(name.strip(), responses)  # type: ignore[union-attr]
            response_set["active"] = fields.get("active", True)
            return json_response(self._set_json(response_set), 201)

    # -- company templates, sections, items -----------------------------------------------------
    def _check_template_fields(self, fields: dict[str, Any], errors: dict[str, list[str]]) -> None:
        errors.update(self._unknown(fields, TEMPLATE_FIELDS))
        name = fields.get("name")
        if not isinstance(name, str) or not name.strip():
            errors["name"] = ["can't be blank"]
        if "description" in fields and not isinstance(fields["description"], str | None):
            errors["description"] = ["must be a string"]
        type_id = fields.get("inspection_type_id")
        if type_id is not None and (not _is_int(type_id) or type_id not in self.inspection_types):
            errors["inspection_type_id"] = ["does not exist in this company"]
        for field in ("alternative_response_set_id", "trade_id"):
            if fields.get(field) is not None:
                errors[field] = ["does not exist in this company"]

    def _company_template_json(self, template: dict[str, Any], full: bool) -> dict[str, Any]:
        kind = self.inspection_types.get(template["inspection_type_id"] or -1)
        data: dict[str, Any] = {
            "id": template["id"],
            "name": template["name"],
            "description": template["description"],
            "inspection_type": self._type_json(kind, nested=True) if kind else None,
            "trade": None,
            "created_at": _iso(template["created_at"]),
            "updated_at": _iso(template["updated_at"]),
        }
        if not full:
            data["deletable"] = not self._synced_projects(template["id"])
            return data
        data.update(
            alternative_response_set_id=None,
            created_by=self._user(),
            attachments=[],
            response_set=dict(DEFAULT_PHRASING),
            sections=[
                {
                    "id": section["id"],
                    "name": section["name"],
                    "position": section["position"],
                    "items": [
                        self._company_item_json(self.company_items[i]) for i in section["item_ids"]
                    ],
                }
                for section in (self.company_sections[i] for i in template["section_ids"])
            ],
        )
        return data

    def _synced_projects(self, company_template_id: int) -> list[dict[str, Any]]:
        return [t for t in self.project_templates.values() if t["synced_to"] == company_template_id]

    def _company_templates_list(self, request: Request) -> Response:
        self.app._check_filters(request, ("filters[id]", "filters[id][]", *TEMPLATE_FILTERS))
        with self.app.lock:
            self._company(request)
            templates = list(self.company_templates.values())
            wanted = self._id_filter(request, "id")
            if wanted is not None:
                templates = [t for t in templates if t["id"] in wanted]
            templates = self._filter_templates(request, templates)
            return self._paged(
                request, templates, lambda t: self._company_template_json(t, full=False)
            )

    def _filter_templates(
        self, request: Request, templates: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        kinds = self._id_filter(request, "inspection_type_id")
        if kinds is not None:
            templates = [t for t in templates if t["inspection_type_id"] in kinds]
        query = (request.param("filters[query]") or "").strip().lower()
        if query:
            templates = [t for t in templates if query in t["name"].lower()]
        return templates

    def _find_company_template(self, raw: Any) -> dict[str, Any]:
        template = self.company_templates.get(_int_or_none(raw) or -1)
        if template is None:
            raise _not_found("Checklist::ListTemplate", raw)
        return template

    def _company_template_show(self, request: Request) -> Response:
        with self.app.lock:
            self._company(request)
            template = self._find_company_template(request.path_params["id"])
            return json_response(self._company_template_json(template, full=True))

    def _company_template_create(self, request: Request) -> Response:
        body, fields = self._body(request, "list_template")
        with self.app.lock:
            self._company(request)
            errors = self._unknown(body, ("list_template",))
            self._check_template_fields(fields, errors)
            if errors:
                raise _unprocessable(errors)
            now = self.app.now()
            template = {
                "id": self._next("company_template"),
                "name": fields["name"].strip(),
                "description": fields.get("description"),
                "inspection_type_id": fields.get("inspection_type_id"),
                "section_ids": [],
                "created_at": now,
                "updated_at": now,
            }
            self.company_templates[template["id"]] = template
            return json_response(self._company_template_json(template, full=True), 201)

    def _company_section_json(self, section: dict[str, Any]) -> dict[str, Any]:
        return {"id": section["id"], "name": section["name"], "position": section["position"]}

    def _company_sections_list(self, request: Request) -> Response:
        with self.app.lock:
            self._company(request)
            template = self._find_company_template(request.path_params["template_id"])
            return json_response(
                [
                    self._company_section_json(self.company_sections[i])
                    for i in template["section_ids"]
                ]
            )

    def _company_section_create(self, request: Request) -> Response:
        body, fields = self._body(request, "section")
        with self.app.lock:
            self._company(request)
            template = self._find_company_template(request.path_params["template_id"])
            errors = self._unknown(body, ("section",))
            errors.update(self._unknown(fields, ("name", "position")))
            name = fields.get("name", "")
            if not isinstance(name, str):
                errors["name"] = ["must be a string"]
            position = fields.get("position")
            if position is not None and not (_is_int(position) and position >= 0):
                errors["position"] = ["must be a non-negative integer"]
            if errors:
                raise _unprocessable(errors)
            section = {
                "id": self._next("company_section"),
                "template_id": template["id"],
                "name": name,
                "position": position if position is not None else len(template["section_ids"]) + 1,
                "item_ids": [],
            }
            self.company_sections[section["id"]] = section
            template["section_ids"].append(section["id"])
            template["updated_at"] = self.app.now()
            for synced in self._synced_projects(template["id"]):
                self._copy_section(synced, section)
            return json_response(self._company_section_json(section), 201)

    def _type_from_text(self, raw: Any) -> dict[str, Any] | None:
        if raw is None:
            return self.item_types[ITEM_TYPES[0][0]]  # the "default" type
        if not isinstance(raw, str):
            return None
        if self.options.item_type_field == "id":
            return self.item_types.get(_int_or_none(raw) or -1)
        return next((t for t in self.item_types.values() if t["name"] == raw), None)

    def _company_item_json(self, item: dict[str, Any]) -> dict[str, Any]:
        response_set = self.response_sets.get(item["response_set_id"] or -1)
        return {
            "id": item["id"],
            "details": item["details"],
            "name": item["name"],
            "position": item["position"],
            "section_id": item["section_id"],
            "response_set": self._set_json(response_set, "status") if response_set else None,
            "type": dict(self._item_type(item["type_id"])),
            "updated_at": _iso(item["updated_at"]),
        }

    def _company_items_list(self, request: Request) -> Response:
        with self.app.lock:
            self._company(request)
            template = self._find_company_template(request.path_params["template_id"])
            items = [
                self.company_items[i]
                for s in template["section_ids"]
                for i in self.company_sections[s]["item_ids"]
            ]
            return self._paged(request, items, self._company_item_json)

    def _company_item_show(self, request: Request) -> Response:
        with self.app.lock:
            self._company(request)
            template = self._find_company_template(request.path_params["template_id"])
            raw = request.path_params["id"]
            item = self.company_items.get(_int_or_none(raw) or -1)
            if item is None or item["template_id"] != template["id"]:
                raise _not_found("Checklist::Item", raw)
            return json_response(self._company_item_json(item))

    def _company_item_create(self, request: Request) -> Response:
        body, fields = self._body(request, "inspection_template_item")
        with self.app.lock:
            self._company(request)
            template = self._find_company_template(request.path_params["template_id"])
            errors = self._unknown(body, ("inspection_template_item",))
            errors.update(
                self._unknown(fields, ("name", "position", "section_id", "type", "response_set_id"))
            )
            name = fields.get("name")
            if not isinstance(name, str) or not name.strip():
                errors["name"] = ["can't be blank"]
            section_id: Any = fields.get("section_id")
            section = self.company_sections.get(section_id) if _is_int(section_id) else None
            if section is None or section["template_id"] != template["id"]:
                errors["section_id"] = ["must be a section of this template"]
            position = fields.get("position")
            if position is not None and not (_is_int(position) and position >= 0):
                errors["position"] = ["must be a non-negative integer"]
            item_type = self._type_from_text(fields.get("type"))
            if item_type is None:
                names = ", ".join(
                    str(t["id"] if self.options.item_type_field == "id" else t["name"])
                    for t in self.item_types.values()
                )
                errors["type"] = [f"is not an item type ({names})"]
            response_set_id: Any = fields.get("response_set_id")
            if item_type is not None and item_type["name"] == "multiple_choice":
                response_set = (
                    self.response_sets.get(response_set_id) if _is_int(response_set_id) else None
                )
                if response_set is None:
                    errors["response_set_id"] = ["must name a response set of this company"]
                elif not response_set["active"]:
                    errors["response_set_id"] = ["names an inactive response set"]
                elif not response_set["response_ids"]:
                    errors["response_set_id"] = ["names a response set without responses"]
            elif response_set_id is not None and item_type is not None:
                errors["response_set_id"] = [
                    f"is only for multiple_choice items, not {item_type['name']}"
                ]
            if errors:
                raise _unprocessable(errors)
            assert section is not None and item_type is not None
            now = self.app.now()
            item = {
                "id": self._next("company_item"),
                "template_id": template["id"],
                "section_id": section["id"],
                "name": name.strip(),  # type: ignore[union-attr]
                "position": position if position is not None else len(section["item_ids"]) + 1,
                "type_id": item_type["id"],
                "response_set_id": response_set_id
                if item_type["name"] == "multiple_choice"
                else None,
                "details": None,
                "updated_at": now,
            }
            self.company_items[item["id"]] = item
            section["item_ids"].append(item["id"])
            template["updated_at"] = now
            for synced in self._synced_projects(template["id"]):
                copy = next(
                    s
                    for s in (self.template_sections[i] for i in synced["section_ids"])
                    if s["synced_section_id"] == section["id"]
                )
                self._copy_item(copy, item)
            return json_response(self._company_item_json(item), 201)

    # -- project templates ----------------------------------------------------------------------
    def _copy_section(self, template: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
        section = {
            "id": self._next("template_section"),
            "template_id": template["id"],
            "name": source["name"],
            "position": source["position"],
            "synced_section_id": source["id"],
            "item_ids": [],
        }
        self.template_sections[section["id"]] = section
        template["section_ids"].append(section["id"])
        template["updated_at"] = self.app.now()
        return section

    def _copy_item(self, section: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
        item = {
            "id": self._next("template_item"),
            "template_id": section["template_id"],
            "section_id": section["id"],
            "name": source["name"],
            "position": source["position"],
            "type_id": source["type_id"],
            "response_set_id": source["response_set_id"],
            "details": source["details"],
            "synced_item_id": source["id"],
        }
        self.template_items[item["id"]] = item
        section["item_ids"].append(item["id"])
        return item

    def _project_template_json(self, template: dict[str, Any], full: bool) -> dict[str, Any]:
        kind = self.inspection_types.get(template["inspection_type_id"] or -1)
        company = self.app.company["id"]
        data: dict[str, Any] = {
            "id": template["id"],
            "name": template["name"],
            "company_description": template["company_description"],
            "description": template["description"],
            "inspection_type": self._type_json(kind, nested=True) if kind else None,
            "trade": None,
            "synced_to": {"company_id": company, "list_template_id": template["synced_to"]}
            if template["synced_to"]
            else None,
            "created_at": _iso(template["created_at"]),
            "updated_at": _iso(template["updated_at"]),
        }
        if not full:
            return data
        sections = []
        for section in (self.template_sections[i] for i in template["section_ids"]):
            items = []
            for item in (self.template_items[i] for i in section["item_ids"]):
                response_set = self.response_sets.get(item["response_set_id"] or -1)
                items.append(
                    {
                        "id": item["id"],
                        "name": item["name"],
                        "section_id": section["id"],
                        "position": item["position"],
                        "response_set": self._set_json(response_set, "brief")
                        if response_set
                        else None,
                        "details": item["details"],
                        "synced_to": {"company_id": company, "item_id": item["synced_item_id"]}
                        if item["synced_item_id"]
                        else None,
                    }
                )
            sections.append(
                {
                    "id": section["id"],
                    "name": section["name"],
                    "position": section["position"],
                    "items": items,
                    "synced_to": {"company_id": company, "section_id": section["synced_section_id"]}
                    if section["synced_section_id"]
                    else None,
                }
            )
        data.update(
            alternative_response_set_id=None,
            created_by=self._user(),
            attachments=[],
            company_attachments=[],
            response_set=dict(DEFAULT_PHRASING),
            sections=sections,
        )
        return data

    def _project_templates_list(self, request: Request) -> Response:
        self.app._check_filters(request, TEMPLATE_FILTERS)
        with self.app.lock:
            project_id = self._project_id(request)
            templates = [
                t for t in self.project_templates.values() if t["project_id"] == project_id
            ]
            templates = self._filter_templates(request, templates)
            return self._paged(
                request, templates, lambda t: self._project_template_json(t, full=False)
            )

    def _find_project_template(self, project_id: int, raw: Any) -> dict[str, Any]:
        template = self.project_templates.get(_int_or_none(raw) or -1)
        if template is None or template["project_id"] != project_id:
            raise _not_found("Checklist::ListTemplate", raw)
        return template

    def _project_template_show(self, request: Request) -> Response:
        with self.app.lock:
            project_id = self._project_id(request)
            template = self._find_project_template(project_id, request.path_params["id"])
            return json_response(self._project_template_json(template, full=True))

    def _new_project_template(
        self, project_id: int, name: str, description: Any, type_id: Any, synced_to: int | None
    ) -> dict[str, Any]:
        now = self.app.now()
        template = {
            "id": self._next("project_template"),
            "project_id": project_id,
            "name": name,
            "description": description,
            "company_description": None,
            "inspection_type_id": type_id,
            "synced_to": synced_to,
            "section_ids": [],
            "created_at": now,
            "updated_at": now,
        }
        self.project_templates[template["id"]] = template
        return template

    def _project_template_create(self, request: Request) -> Response:
        body, fields = self._body(request, "list_template")
        with self.app.lock:
            project_id = self._project_id(request)
            errors = self._unknown(body, ("list_template",))
            self._check_template_fields(fields, errors)
            if errors:
                raise _unprocessable(errors)
            template = self._new_project_template(
                project_id,
                fields["name"].strip(),
                fields.get("description"),
                fields.get("inspection_type_id"),
                None,
            )
            return json_response(self._project_template_json(template, full=True), 201)

    def _template_from_company(self, request: Request) -> Response:
        body = self.app._json_object(request)
        with self.app.lock:
            project_id = self._project_id(request)
            errors = self._unknown(body, ("source_template_id",))
            if errors:
                raise _unprocessable(errors)
            if "source_template_id" not in body:
                raise HTTPError(400, {"errors": {"source_template_id": ["is missing"]}})
            source = self._find_company_template(body["source_template_id"])
            if any(t["project_id"] == project_id for t in self._synced_projects(source["id"])):
                raise _unprocessable(
                    {"source_template_id": ["already has a project template in this project"]}
                )
            template = self._new_project_template(
                project_id,
                source["name"],
                source["description"],
                source["inspection_type_id"],
                source["id"],
            )
            template["company_description"] = source["description"]
            for section_id in source["section_ids"]:
                company_section = self.company_sections[section_id]
                section = self._copy_section(template, company_section)
                for item_id in company_section["item_ids"]:
                    self._copy_item(section, self.company_items[item_id])
            return json_response({"id": template["id"]}, 201)

    # -- inspections (lists) --------------------------------------------------------------------
    def _check_list_fields(
        self,
        project_id: int,
        fields: dict[str, Any],
        allowed: frozenset[str],
        errors: dict[str, list[str]],
        current: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """Validated changes for a create (``current`` None) or an update (lock held)."""
        errors.update(self._unknown(fields, allowed))
        changes: dict[str, Any] = {}

        def error(field: str, message: str) -> None:
            errors.setdefault(field, []).append(message)

        for field in ("description", "identifier", "name"):
            if field in fields and field in allowed:
                value = fields[field]
                if value is None or isinstance(value, str):
                    changes[field] = value
                else:
                    error(field, "must be a string")
        if "name" in changes and not (changes["name"] or "").strip():
            error("name", "can't be blank")
        if "status" in fields:
            if fields["status"] in LIST_STATUSES:
                changes["status"] = fields["status"]
            else:
                error("status", f"is not included in the list ({', '.join(LIST_STATUSES)})")
        if "inspection_date" in fields:
            value = fields["inspection_date"]
            if value is None or _valid_date(value):
                changes["inspection_date"] = value
            else:
                error("inspection_date", "must be a date formatted YYYY-MM-DD")
        if "due_at" in fields:
            value = fields["due_at"]
            if value is None or _valid_instant(value):
                changes["due_at"] = value
            else:
                error("due_at", "must be an ISO-8601 timestamp")
        if "private" in fields:
            if isinstance(fields["private"], bool):
                changes["private"] = fields["private"]
            else:
                error("private", "must be true or false")
        if "number" in fields:
            number = fields["number"]
            if number is None:
                changes["number"] = None
            elif not (_is_int(number) and number > 0):
                error("number", "must be a positive integer")
            elif any(
                other["number"] == number and other is not current
                for other in (self.lists[i] for i in self._project_lists.get(project_id, []))
            ):
                error("number", "has already been taken")
            else:
                changes["number"] = number
        if "location_id" in fields:
            location_id = fields["location_id"]
            location = self.app._locations.get(location_id) if _is_int(location_id) else None
            if location_id is None:
                changes["location_id"] = None
            elif location is None or location["project_id"] != project_id:
                error("location_id", "must be a location in this project")
            else:
                changes["location_id"] = location_id
        if "inspection_type_id" in fields:
            type_id = fields["inspection_type_id"]
            if type_id is None or (_is_int(type_id) and type_id in self.inspection_types):
                changes["inspection_type_id"] = type_id
            else:
                error("inspection_type_id", "does not exist in this company")
        if "responsible_contractor_id" in fields:
            vendor_id = fields["responsible_contractor_id"]
            vendor = self.app._vendors.get(vendor_id) if _is_int(vendor_id) else None
            if vendor_id is None:
                changes["responsible_contractor_id"] = None
            elif vendor is None or project_id not in vendor["project_ids"]:
                error("responsible_contractor_id", "must be a vendor in this project's directory")
            else:
                changes["responsible_contractor_id"] = vendor_id
        people = self._project_user_ids(project_id)
        if "point_of_contact_id" in fields:
            user_id = fields["point_of_contact_id"]
            if user_id is None or (_is_int(user_id) and user_id in people):
                changes["point_of_contact_id"] = user_id
            else:
                error("point_of_contact_id", "must be a user of this project")
        for field in ("inspector_ids", "distribution_member_ids"):
            if field in fields:
                ids = fields[field]
                if not isinstance(ids, list) or not all(_is_int(i) and i in people for i in ids):
                    error(field, "must be an array of ids of users of this project")
                else:
                    changes[field] = list(dict.fromkeys(ids))
        for field in (
            "trade_id",
            "spec_section_id",
            "managed_equipment_id",
        ):
            if fields.get(field) is not None and field in allowed:
                error(field, "does not exist in this project")
        for field in (
            "drawing_revision_ids",
            "file_version_ids",
            "form_ids",
            "image_ids",
            "document_management_document_revision_ids",
        ):
            if fields.get(field) and field in allowed:
                error(field, "do not exist in this project")
        if "upload_ids" in fields:
            uploads = fields["upload_ids"]
            if not isinstance(uploads, list):
                error("upload_ids", "must be an array of upload ids")
            else:
                accepted: list[str] = []
                for upload_id in uploads:
                    problem = self.app.upload_problem(project_id, upload_id, accepted)
                    if problem:
                        error("upload_ids", problem)
                    else:
                        accepted.append(upload_id)
                changes["upload_ids"] = accepted
        return changes

    def _list_create(self, request: Request) -> Response:
        body, fields = self._body(request, "list")
        with self.app.lock:
            project_id = self._project_id(request)
            errors = self._unknown(body, ("list", "list_template_id"))
            if "list_template_id" not in body:
                raise HTTPError(400, {"errors": {"list_template_id": ["is missing"]}})
            template = self._find_project_template(project_id, body["list_template_id"])
            changes = self._check_list_fields(project_id, fields, LIST_FIELDS, errors, None)
            if errors:
                raise _unprocessable(errors)
            inspection = self._new_list(project_id, template, changes)
            return json_response(self._list_json(inspection, self.app._base_url(request)), 201)

    def _new_list(
        self, project_id: int, template: dict[str, Any], changes: dict[str, Any]
    ) -> dict[str, Any]:
        now = self.app.now()
        numbers = self._numbers.get(project_id, 0)
        number = changes.get("number")
        if number is None:
            taken = {self.lists[i]["number"] for i in self._project_lists.get(project_id, [])}
            number = numbers + 1
            while number in taken:
                number += 1
        self._numbers[project_id] = max(numbers, number)
        status = changes.get("status") or "open"
        inspection = {
            "id": self._next("list"),
            "project_id": project_id,
            "template_id": template["id"],
            "name": template["name"],
            "number": number,
            "identifier": changes.get("identifier"),
            "description": changes.get("description"),
            "status": status,
            "inspection_date": changes.get("inspection_date"),
            "due_at": changes.get("due_at"),
            "location_id": changes.get("location_id"),
            "inspection_type_id": changes.get("inspection_type_id", template["inspection_type_id"]),
            "responsible_contractor_id": changes.get("responsible_contractor_id"),
            "point_of_contact_id": changes.get("point_of_contact_id"),
            "inspector_ids": changes.get("inspector_ids", []),
            "distribution_member_ids": changes.get("distribution_member_ids", []),
            "private": changes.get("private", True),
            "attachment_ids": [],
            "section_ids": [],
            "item_ids": [],
            "created_at": now,
            "updated_at": now,
            "closed_at": now if status == "closed" else None,
        }
        for upload_id in changes.get("upload_ids", []):
            attachment = self.app.attach_upload(project_id, upload_id, list_id=inspection["id"])
            inspection["attachment_ids"].append(attachment["id"])
        for template_section in (self.template_sections[i] for i in template["section_ids"]):
            section = {
                "id": self._next("list_section"),
                "list_id": inspection["id"],
                "template_section_id": template_section["id"],
                "name": template_section["name"],
                "position": template_section["position"],
                "updated_at": now,
            }
            self.list_sections[section["id"]] = section
            inspection["section_ids"].append(section["id"])
            for template_item in (self.template_items[i] for i in template_section["item_ids"]):
                item = {
                    "id": self._next("list_item"),
                    "list_id": inspection["id"],
                    "section_id": section["id"],
                    "template_item_id": template_item["id"],
                    "name": template_item["name"],
                    "position": template_item["position"],
                    "type_id": template_item["type_id"],
                    "response_set_id": template_item["response_set_id"],
                    "details": template_item["details"],
                    "response": None,
                    "attachment_ids": [],
                    "updated_at": now,
                }
                self.list_items[item["id"]] = item
                inspection["item_ids"].append(item["id"])
        self.lists[inspection["id"]] = inspection
        self._project_lists.setdefault(project_id, []).append(inspection["id"])
        return inspection

    def _item_status(self, item: dict[str, Any]) -> str:
        response = item["response"]
        if response is None or response["status"] is None:
            return "none"
        return ITEM_STATUS_OF[response["status"]]

    def _list_json(self, inspection: dict[str, Any], base: str) -> dict[str, Any]:
        kind = self.inspection_types.get(inspection["inspection_type_id"] or -1)
        location = self.app._locations.get(inspection["location_id"] or -1)
        vendor = self.app._vendors.get(inspection["responsible_contractor_id"] or -1)
        template = self.project_templates[inspection["template_id"]]
        items = [self.list_items[i] for i in inspection["item_ids"]]
        statuses = [self._item_status(item) for item in items]
        responded = [item for item in items if item["response"] is not None]
        people = self.app._users

        def person(user_id: int) -> dict[str, Any]:
            user = people[user_id]
            return {"id": user["id"], "login": user["email_address"], "name": user["name"]}

        return {
            "id": inspection["id"],
            "name": inspection["name"],
            "list_template_id": template["id"],
            "list_template_name": template["name"],
            "number": inspection["number"],
            "status": STATUS_LABELS[inspection["status"]],
            "location": None
            if location is None
            else {
                "id": location["id"],
                "name": location["name"],
                "code": location["code"],
                "node_name": location["node_name"],
                "parent_id": location["parent_id"],
                "created_at": _iso(location["created_at"]),
                "updated_at": _iso(location["updated_at"]),
            },
            "created_at": _iso(inspection["created_at"]),
            "updated_at": _iso(inspection["updated_at"]),
            "closed_at": _iso(inspection["closed_at"]),
            "drawing_ids": [],
            "current_drawing_revision_ids": [],
            "default_response_phrasing": dict(DEFAULT_PHRASING),
            "description": inspection["description"],
            "deleted": False,
            "due_at": inspection["due_at"],
            "identifier": inspection["identifier"],
            "inspection_date": inspection["inspection_date"],
            "inspection_type": self._type_json(kind, nested=True) if kind else None,
            "private": inspection["private"],
            "created_by": self._user(),
            "closed_by": self._user() if inspection["status"] == "closed" else None,
            "responsible_contractor": None
            if vendor is None
            else {"id": vendor["id"], "name": vendor["name"]},
            "point_of_contact": person(inspection["point_of_contact_id"])
            if inspection["point_of_contact_id"]
            else None,
            "trade": None,
            "inspectors": [person(i) for i in inspection["inspector_ids"]],
            "distribution_members": [person(i) for i in inspection["distribution_member_ids"]],
            "signature_requests": [],
            "managed_equipment_id": None,
            "specification_section": None,
            "attachments": [
                self._list_attachment_json(self.app._attachments[i], base)
                for i in inspection["attachment_ids"]
            ],
            "conforming_item_count": statuses.count("yes"),
            "deficient_item_count": statuses.count("no"),
            "not_applicable_item_count": statuses.count("n/a"),
            "neutral_item_count": sum(
                1 for item in responded if item["response"]["status"] is None
            ),
            "inspected_item_count": len(responded),
            "observations_count": 0,
            "closed_observations_count": 0,
            "item_count": len(items),
            "respondable_item_count": sum(
                1 for item in items if self._item_type(item["type_id"])["name"] in PAYLOAD_KEY
            ),
            "custom_fields": {},
            "template_id": template["id"],
            "overdue": False,
        }

    def _list_attachment_json(self, attachment: dict[str, Any], base: str) -> dict[str, Any]:
        url = self.app._attachment_url(attachment, base)
        return {
            "id": attachment["id"],
            "url": url,
            "thumbnail_url": url,
            "name": attachment["name"],
            "filename": attachment["name"],
            "content_type": attachment["content_type"],
            "viewable_document_id": None,
        }

    def _find_list(self, project_id: int, raw: Any) -> dict[str, Any]:
        inspection = self.lists.get(_int_or_none(raw) or -1)
        if inspection is None or inspection["project_id"] != project_id:
            raise _not_found("Checklist::List", raw)
        return inspection

    def _lists_list(self, request: Request) -> Response:
        self.app._check_filters(request, LIST_FILTERS)
        with self.app.lock:
            project_id = self._project_id(request)
            lists = [self.lists[i] for i in self._project_lists.get(project_id, [])]
            for name, key in (
                ("id", "id"),
                ("template_id", "template_id"),
                ("inspection_type_id", "inspection_type_id"),
                ("location_id", "location_id"),
            ):
                wanted = self._id_filter(request, name)
                if wanted is not None:
                    lists = [inspection for inspection in lists if inspection[key] in wanted]
            query = (request.param("filters[query]") or "").strip().lower()
            if query:
                lists = [
                    inspection
                    for inspection in lists
                    if query in inspection["name"].lower()
                    or query in (inspection["identifier"] or "").lower()
                    or query in (inspection["description"] or "").lower()
                ]
            for name in ("created_at", "updated_at"):
                window = self._time_filter(request, name)
                lists = [i for i in lists if self._in_window(i[name], window)]
            base = self.app._base_url(request)
            return self._paged(request, lists, lambda i: self._list_json(i, base))

    def _list_show(self, request: Request) -> Response:
        with self.app.lock:
            project_id = self._project_id(request)
            inspection = self._find_list(project_id, request.path_params["id"])
            return json_response(self._list_json(inspection, self.app._base_url(request)))

    def _apply_list_changes(self, inspection: dict[str, Any], changes: dict[str, Any]) -> None:
        now = self.app.now()
        for upload_id in changes.pop("upload_ids", []):
            attachment = self.app.attach_upload(
                inspection["project_id"], upload_id, list_id=inspection["id"]
            )
            inspection["attachment_ids"].append(attachment["id"])
            inspection["updated_at"] = now
        status = changes.get("status")
        if status is not None and status != inspection["status"]:
            inspection["closed_at"] = now if status == "closed" else None
        for key, value in changes.items():
            if inspection[key] != value:
                inspection[key] = value
                inspection["updated_at"] = now

    def _list_update(self, request: Request) -> Response:
        _, fields = self._body(request, "list")
        with self.app.lock:
            project_id = self._project_id(request)
            inspection = self._find_list(project_id, request.path_params["id"])
            errors: dict[str, list[str]] = {}
            changes = self._check_list_fields(
                project_id, fields, LIST_UPDATE_FIELDS, errors, inspection
            )
            if (
                self.options.closed_locked
                and inspection["status"] == "closed"
                and changes.get("status", "closed") == "closed"
                and changes
            ):
                errors.setdefault("base", []).append(
                    "a closed inspection cannot be changed; reopen it first"
                )
            if errors:
                raise _unprocessable(errors)
            self._apply_list_changes(inspection, changes)
            return json_response(self._list_json(inspection, self.app._base_url(request)))

    def _list_close(self, request: Request) -> Response:
        return self._transition(request, "closed")

    def _list_reopen(self, request: Request) -> Response:
        return self._transition(request, "open")

    def _transition(self, request: Request, status: str) -> Response:
        # Documented: "does not accept any additional update parameters"; idempotent.
        if request.body and request.body.strip() not in (b"", b"{}"):
            raise HTTPError(400, {"errors": f"this endpoint takes no body; it only sets {status}"})
        with self.app.lock:
            project_id = self._project_id(request)
            inspection = self._find_list(project_id, request.path_params["id"])
            if inspection["status"] != status:
                self._apply_list_changes(inspection, {"status": status})
            return json_response(self._list_json(inspection, self.app._base_url(request)))

    def _locked(self, inspection: dict[str, Any]) -> None:
        if self.options.closed_locked and inspection["status"] == "closed":
            raise _unprocessable(
                {"base": [f"inspection {inspection['id']} is closed; reopen it first"]}
            )

    # -- sections and items ---------------------------------------------------------------------
    def _section_json(self, section: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": section["id"],
            "name": section["name"],
            "position": section["position"],
            "template_section_id": section["template_section_id"],
            "updated_at": _iso(section["updated_at"]),
        }

    def _lists_of(self, request: Request, project_id: int) -> list[dict[str, Any]]:
        lists = [self.lists[i] for i in self._project_lists.get(project_id, [])]
        wanted = self._id_filter(request, "list_id")
        if wanted is not None:
            lists = [inspection for inspection in lists if inspection["id"] in wanted]
        return lists

    def _sections_list(self, request: Request) -> Response:
        self.app._check_filters(request, (*SECTION_FILTERS, "filters[updated_at]"))
        sort = request.param("sort")
        if sort not in (None, "position", "-position"):
            raise HTTPError(400, {"errors": "sort must be position or -position"})
        with self.app.lock:
            project_id = self._project_id(request)
            sections = [
                self.list_sections[s]
                for inspection in self._lists_of(request, project_id)
                for s in inspection["section_ids"]
            ]
            wanted = self._id_filter(request, "id")
            if wanted is not None:
                sections = [s for s in sections if s["id"] in wanted]
            window = self._time_filter(request, "updated_at")
            sections = [s for s in sections if self._in_window(s["updated_at"], window)]
            if sort:
                sections.sort(key=lambda s: s["position"], reverse=sort.startswith("-"))
            return self._paged(request, sections, self._section_json)

    def _response_payload(self, item: dict[str, Any]) -> dict[str, Any]:
        response = item["response"]
        payload: dict[str, Any] = {
            "text_value": None,
            "number_value": None,
            "date_value": None,
            "response_option": None,
        }
        if response is None:
            return payload
        key = response["key"]
        if key == "response_option_id":
            option = self.responses[response["value"]]
            payload["response_option"] = {"id": option["id"], "name": option["name"]}
        elif key != "status":
            payload[key] = response["value"]
        return payload

    def _item_response_json(self, item: dict[str, Any]) -> dict[str, Any] | None:
        response = item["response"]
        if response is None:
            return None
        return {
            "item_id": item["id"],
            "status": response["status"],
            "responded_at": _iso(response["responded_at"]),
            "responder": self._user(),
            "item_type": dict(self._item_type(item["type_id"])),
            "payload": self._response_payload(item),
        }

    def _responded_with(self, item: dict[str, Any]) -> str | None:
        response = item["response"]
        if response is None:
            return None
        key, value = response["key"], response["value"]
        if key == "status":
            return str(
                {
                    "conforming": DEFAULT_PHRASING["conforming_response"],
                    "non_conforming": DEFAULT_PHRASING["deficient_response"],
                    "not_applicable": "N/A",
                }[value]
            )
        if key == "response_option_id":
            return str(self.responses[value]["name"])
        return str(value)

    def _item_json(self, item: dict[str, Any], version: str) -> dict[str, Any]:
        response_set = self.response_sets.get(item["response_set_id"] or -1)
        option = None
        if item["response"] is not None and item["response"]["key"] == "response_option_id":
            option = self.responses[item["response"]["value"]]
        data: dict[str, Any] = {
            "id": item["id"],
            "details": item["details"],
            "item_response": self._item_response_json(item),
            "list_id": item["list_id"],
            "name": item["name"],
            "position": item["position"],
            "responded_with": self._responded_with(item),
            "response": self._response_json(option, "corresponding") if option else None,
            "section_id": item["section_id"],
            "status": self._item_status(item),
            "template_item_id": item["template_item_id"],
            "type": dict(self._item_type(item["type_id"])),
            "updated_at": _iso(item["updated_at"]),
        }
        if version == "v1.0":
            data["response_set"] = (
                self._set_json(response_set, "items_v10") if response_set else None
            )
            data["response_type_id"] = item["type_id"]
        else:
            data["response_set"] = self._set_json(response_set, "status") if response_set else None
            data["company_template_item_details"] = None
            data["number"] = None
            data["relative_position"] = item["position"]
            data["parent_item_id"] = None
            data["display_conditions"] = []
        return data

    def _items_of(self, request: Request, project_id: int) -> list[dict[str, Any]]:
        items = [
            self.list_items[i]
            for inspection in self._lists_of(request, project_id)
            for i in inspection["item_ids"]
        ]
        for name, key in (("id", "id"), ("section_id", "section_id")):
            wanted = self._id_filter(request, name)
            if wanted is not None:
                items = [item for item in items if item[key] in wanted]
        window = self._time_filter(request, "updated_at")
        return [item for item in items if self._in_window(item["updated_at"], window)]

    def _items_list_v11(self, request: Request) -> Response:
        self.app._check_filters(request, ITEM_FILTERS)
        with self.app.lock:
            project_id = self._project_id(request)
            items = self._items_of(request, project_id)
            return self._paged(request, items, lambda i: self._item_json(i, "v1.1"))

    def _items_list_v10(self, request: Request) -> Response:
        self.app._check_filters(request, (*ITEM_FILTERS, "filters[item_response_status]"))
        sort = request.param("sort")
        if sort not in (None, "position_by_section"):
            raise HTTPError(400, {"errors": "sort must be position_by_section"})
        status = request.param("filters[item_response_status]")
        if status is not None and status not in ITEM_RESPONSE_FILTER_VALUES:
            raise HTTPError(
                400,
                {
                    "errors": "filters[item_response_status] must be one of "
                    + ", ".join(ITEM_RESPONSE_FILTER_VALUES)
                },
            )
        with self.app.lock:
            project_id = self._project_id(request)
            items = self._items_of(request, project_id)
            if status is not None:
                items = [item for item in items if self._response_status_label(item) == status]
            if sort:
                sections = self.list_sections
                items.sort(
                    key=lambda i: (
                        i["list_id"],
                        sections[i["section_id"]]["position"],
                        i["position"],
                    )
                )
            return self._paged(request, items, lambda i: self._item_json(i, "v1.0"))

    @staticmethod
    def _response_status_label(item: dict[str, Any]) -> str:
        response = item["response"]
        if response is None:
            return "null"
        return response["status"] or "neutral"

    # -- item responses -------------------------------------------------------------------------
    def _find_item(self, project_id: int, raw: Any) -> dict[str, Any]:
        item = self.list_items.get(_int_or_none(raw) or -1)
        if item is None or self.lists[item["list_id"]]["project_id"] != project_id:
            raise _not_found("Checklist::Item", raw)
        return item

    def _response_show(self, request: Request) -> Response:
        with self.app.lock:
            project_id = self._project_id(request)
            item = self._find_item(project_id, request.path_params["item_id"])
            shown = self._item_response_json(item)
            if shown is None:
                raise HTTPError(404, {"errors": f"Checklist::Item {item['id']} has no response"})
            return json_response(shown)

    def _response_create(self, request: Request) -> Response:
        body, fields = self._body(request, "item_response")
        with self.app.lock:
            project_id = self._project_id(request)
            item = self._find_item(project_id, request.path_params["item_id"])
            errors = self._unknown(body, ("item_response",))
            errors.update(self._unknown(fields, PAYLOAD_KEYS))
            given = [key for key in PAYLOAD_KEYS if key in fields]
            item_type = self._item_type(item["type_id"])
            expected = PAYLOAD_KEY.get(item_type["name"])
            if errors:
                raise _unprocessable(errors)
            if expected is None:
                raise _unprocessable(
                    {
                        "base": [
                            f"a {item_type['name']} item is answered by a signature request, "
                            "not an item response"
                        ]
                    }
                )
            if len(given) != 1:
                raise _unprocessable(
                    {
                        "base": [
                            f"give exactly one of {', '.join(PAYLOAD_KEYS)}; a "
                            f"{item_type['name']} item takes {expected}"
                        ]
                    }
                )
            key = given[0]
            if key != expected:
                raise _unprocessable(
                    {key: [f"is not accepted by a {item_type['name']} item; it takes {expected}"]}
                )
            status, value = self._check_payload(item, key, fields[key])
            self._locked(self.lists[item["list_id"]])
            if item["response"] is not None and self.options.response_repost == "refuse":
                raise _unprocessable(
                    {"base": [f"Checklist::Item {item['id']} already has a response"]}
                )
            now = self.app.now()
            item["response"] = {"key": key, "value": value, "status": status, "responded_at": now}
            item["updated_at"] = now
            inspection = self.lists[item["list_id"]]
            inspection["updated_at"] = now
            shown = self._item_response_json(item)
            return json_response(shown, 201)

    def _check_payload(self, item: dict[str, Any], key: str, value: Any) -> tuple[str | None, Any]:
        """(item response status, stored value) for a payload of the item's own kind."""
        if key == "status":
            if value not in RESPONSE_STATUSES:
                raise _unprocessable(
                    {"status": [f"is not included in the list ({', '.join(RESPONSE_STATUSES)})"]}
                )
            return value, value
        if key == "response_option_id":
            response_set = self.response_sets[item["response_set_id"]]
            if not _is_int(value) or value not in response_set["response_ids"]:
                names = ", ".join(
                    f"{r} ({self.responses[r]['name']})" for r in response_set["response_ids"]
                )
                raise _unprocessable(
                    {"response_option_id": [f"is not a response of this item's set: {names}"]}
                )
            return RESPONSE_STATUS_OF[self.responses[value]["corresponding_status"]], value
        if key == "text_value":
            if not isinstance(value, str):
                raise _unprocessable({"text_value": ["must be a string"]})
            return None, value
        if key == "number_value":
            integer = _is_int(value)
            decimal = isinstance(value, float) and math.isfinite(value)
            if integer or (decimal and self.options.number_values == "decimal"):
                return None, value
            kind = "an integer" if self.options.number_values == "integer" else "a number"
            raise _unprocessable({"number_value": [f"must be {kind}"]})
        if not _valid_date(value):
            raise _unprocessable({"date_value": ["must be a date formatted YYYY-MM-DD"]})
        return None, value

    # -- comments -------------------------------------------------------------------------------
    def _comment_json(self, comment: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": comment["id"],
            "body": comment["body"],
            "item_id": comment["item_id"],
            "created_at": _iso(comment["created_at"]),
            "updated_at": _iso(comment["created_at"]),
            "created_by": self._user(company_name=True),
        }

    def _comment_create(self, request: Request) -> Response:
        body, fields = self._body(request, "comment")
        with self.app.lock:
            raw_list = request.path_params["list_id"]
            if "project_id" not in body:
                raise HTTPError(400, {"errors": {"project_id": ["is missing"]}})
            if "item_id" not in body:
                raise HTTPError(400, {"errors": {"item_id": ["is missing"]}})
            project_id = int(self.app._project(body["project_id"])["id"])
            inspection = self._find_list(project_id, raw_list)
            errors = self._unknown(body, ("project_id", "item_id", "comment"))
            errors.update(self._unknown(fields, ("body",)))
            text = fields.get("body")
            if not isinstance(text, str) or not text.strip():
                errors["body"] = ["can't be blank"]
            item_id = body["item_id"]
            if not (_is_int(item_id) and item_id in inspection["item_ids"]):
                errors["item_id"] = ["must be an item of this inspection"]
            if errors:
                raise _unprocessable(errors)
            self._locked(inspection)
            comment = {
                "id": self._next("comment"),
                "project_id": project_id,
                "list_id": inspection["id"],
                "item_id": item_id,
                "body": text,
                "created_at": self.app.now(),
            }
            self.comments[comment["id"]] = comment
            self._project_comments.setdefault(project_id, []).append(comment["id"])
            return json_response(self._comment_json(comment), 201)

    def _comments_list(self, request: Request) -> Response:
        self.app._check_filters(request, (*CHILD_FILTERS, "filters[updated_at]"))
        sort = request.param("sort")
        if sort not in (None, "created_at", "-created_at"):
            raise HTTPError(400, {"errors": "sort must be created_at or -created_at"})
        with self.app.lock:
            project_id = self._project_id(request)
            comments = [self.comments[i] for i in self._project_comments.get(project_id, [])]
            comments = self._filter_children(request, comments, "created_at")
            if sort == "-created_at":
                comments.reverse()
            return self._paged(request, comments, self._comment_json)

    def _filter_children(
        self, request: Request, rows: list[dict[str, Any]], stamp: str
    ) -> list[dict[str, Any]]:
        for name in ("id", "item_id"):
            wanted = self._id_filter(request, name)
            if wanted is not None:
                rows = [row for row in rows if row[name] in wanted]
        window = self._time_filter(request, "updated_at")
        return [row for row in rows if self._in_window(row[stamp], window)]

    # -- files ----------------------------------------------------------------------------------
    def _list_attachment_create(self, request: Request) -> Response:
        form = _form_data(request) if request.content_type == "multipart/form-data" else None
        with self.app.lock:
            project_id = self._project_id(request)
            inspection = self._find_list(project_id, request.path_params["list_id"])
            if form is not None:  # the deprecated multipart form: a file part "attachment"
                fields, files = form
                unknown = self._unknown([*fields, *files], ("attachment",))
                if unknown:
                    raise _unprocessable(unknown)
                if "attachment" not in files:
                    raise HTTPError(400, {"errors": {"attachment": ["is missing"]}})
                self._locked(inspection)
                filename, content_type, data = files["attachment"]
                attachment = self.app.store_file(
                    project_id, filename, content_type, data, list_id=inspection["id"]
                )
            else:
                body, fields_json = self._body(request, "attachment")
                errors = self._unknown(body, ("attachment",))
                errors.update(self._unknown(fields_json, ("upload_id",)))
                if errors:
                    raise _unprocessable(errors)
                if "upload_id" not in fields_json:
                    raise HTTPError(400, {"errors": {"upload_id": ["is missing"]}})
                problem = self.app.upload_problem(project_id, fields_json["upload_id"], [])
                if problem:
                    raise _unprocessable({"upload_id": [problem]})
                self._locked(inspection)
                attachment = self.app.attach_upload(
                    project_id, fields_json["upload_id"], list_id=inspection["id"]
                )
            inspection["attachment_ids"].append(attachment["id"])
            inspection["updated_at"] = self.app.now()
            return json_response(
                self._list_attachment_json(attachment, self.app._base_url(request)), 201
            )

    def _item_attachment_json(self, link: dict[str, Any], base: str) -> dict[str, Any]:
        attachment = self.app._attachments[link["attachment_id"]]
        url = self.app._attachment_url(attachment, base)
        return {
            "id": link["id"],
            "created_at": _iso(link["created_at"]),
            "created_by": self._user(company_name=True),
            "attachment": {
                "id": attachment["id"],
                "name": attachment["name"],
                "content_type": attachment["content_type"],
                "thumbnail_url": url,
                "url": url,
                "filename": attachment["name"],
                "viewable_document_id": None,
                "attached_to_item_id": link["item_id"],
                "attached_to_item_type": "Checklist::Item",
                "viewer_url": None,
            },
            "item_id": link["item_id"],
        }

    def _link(self, project_id: int, item: dict[str, Any], attachment_id: int) -> dict[str, Any]:
        now = self.app.now()
        link = {
            "id": self._next("item_attachment"),
            "project_id": project_id,
            "item_id": item["id"],
            "attachment_id": attachment_id,
            "created_at": now,
        }
        self.item_attachments[link["id"]] = link
        self._project_item_attachments.setdefault(project_id, []).append(link["id"])
        item["attachment_ids"].append(link["id"])
        item["updated_at"] = now
        return link

    def _item_attachment_create(self, request: Request) -> Response:
        if request.content_type != "multipart/form-data":
            raise HTTPError(400, {"errors": "item attachments are sent as multipart/form-data"})
        fields, files = _form_data(request)
        with self.app.lock:
            errors = self._unknown(
                [*fields, *files],
                (
                    "project_id",
                    "section_id",
                    "attachment",
                    "document_management_document_revision_id",
                ),
            )
            for field in ("project_id", "section_id"):
                if field not in fields:
                    raise HTTPError(400, {"errors": {field: ["is missing"]}})
            project_id = int(self.app._project(fields["project_id"])["id"])
            inspection = self._find_list(project_id, request.path_params["list_id"])
            item = self._find_item(project_id, request.path_params["item_id"])
            if item["list_id"] != inspection["id"]:
                raise _not_found("Checklist::Item", request.path_params["item_id"])
            if _int_or_none(fields["section_id"]) != item["section_id"]:
                errors["section_id"] = ["is not the section of this item"]
            if fields.get("document_management_document_revision_id"):
                errors["document_management_document_revision_id"] = [
                    "does not exist in this project"
                ]
            if "attachment" not in files and not errors:
                raise HTTPError(400, {"errors": {"attachment": ["is missing"]}})
            if errors:
                raise _unprocessable(errors)
            self._locked(inspection)
            filename, content_type, data = files["attachment"]
            attachment = self.app.store_file(
                project_id, filename, content_type, data, item_id=item["id"]
            )
            link = self._link(project_id, item, attachment["id"])
            base = self.app._base_url(request)
            shown = self._item_attachment_json(link, base)
            # The single create documents the narrower attachment object.
            shown["attachment"] = {
                k: shown["attachment"][k] for k in ("id", "url", "filename", "name")
            }
            return json_response(shown, 200)

    def _item_attachments_bulk(self, request: Request) -> Response:
        body = self.app._json_object(request)
        with self.app.lock:
            project_id = self._project_id(request)
            errors = self._unknown(body, ("item_id", "prostore_file_ids"))
            for field in ("item_id", "prostore_file_ids"):
                if field not in body:
                    raise HTTPError(400, {"errors": {field: ["is missing"]}})
            item = self._find_item(project_id, body["item_id"])
            ids = body["prostore_file_ids"]
            if not isinstance(ids, list) or not ids or not all(_is_int(i) for i in ids):
                errors["prostore_file_ids"] = ["must be a non-empty array of file ids"]
            else:
                for file_id in ids:
                    held = self.app._attachments.get(file_id)
                    if held is None or held.get("project_id") != project_id:
                        errors.setdefault("prostore_file_ids", []).append(
                            f"file {file_id} does not exist in this project"
                        )
            if errors:
                raise _unprocessable(errors)
            attached = {self.item_attachments[i]["attachment_id"] for i in item["attachment_ids"]}
            again = [i for i in ids if i in attached] + [
                i for n, i in enumerate(ids) if i in ids[:n]
            ]
            if again:
                raise HTTPError(
                    409,
                    {"errors": {"prostore_file_ids": [f"file {again[0]} is already on this item"]}},
                )
            self._locked(self.lists[item["list_id"]])
            base = self.app._base_url(request)
            links = [self._link(project_id, item, file_id) for file_id in ids]
            return json_response([self._item_attachment_json(link, base) for link in links], 201)

    def _item_attachments_list(self, request: Request) -> Response:
        self.app._check_filters(request, (*CHILD_FILTERS, "filters[updated_at]"))
        with self.app.lock:
            project_id = self._project_id(request)
            links = [
                self.item_attachments[i] for i in self._project_item_attachments.get(project_id, [])
            ]
            links = self._filter_children(request, links, "created_at")
            base = self.app._base_url(request)
            return self._paged(request, links, lambda link: self._item_attachment_json(link, base))

    # -- Python API -----------------------------------------------------------------------------
    def snapshot(self, project_id: int) -> list[dict[str, Any]]:
        """Every inspection of a project with its sections, items, responses, comments and
        files (name, size, sha256), in creation order (lock held by the caller)."""
        result = []
        comments_by_item: dict[int, list[str]] = {}
        for comment_id in self._project_comments.get(project_id, []):
            comment = self.comments[comment_id]
            comments_by_item.setdefault(comment["item_id"], []).append(comment["body"])
        for inspection in (self.lists[i] for i in self._project_lists.get(project_id, [])):
            sections = []
            for section in (self.list_sections[i] for i in inspection["section_ids"]):
                items = []
                for item in (self.list_items[i] for i in inspection["item_ids"]):
                    if item["section_id"] != section["id"]:
                        continue
                    response = item["response"]
                    items.append(
                        {
                            "id": item["id"],
                            "name": item["name"],
                            "type": self._item_type(item["type_id"])["name"],
                            "status": self._item_status(item),
                            "response": None
                            if response is None
                            else {"key": response["key"], "value": response["value"]},
                            "responded_with": self._responded_with(item),
                            "comments": comments_by_item.get(item["id"], []),
                            "files": [
                                self._file_snapshot(
                                    self.app._attachments[
                                        self.item_attachments[link]["attachment_id"]
                                    ]
                                )
                                for link in item["attachment_ids"]
                            ],
                        }
                    )
                sections.append({"name": section["name"], "items": items})
            kind = self.inspection_types.get(inspection["inspection_type_id"] or -1)
            result.append(
                {
                    "id": inspection["id"],
                    "template": self.project_templates[inspection["template_id"]]["name"],
                    "name": inspection["name"],
                    "number": inspection["number"],
                    "identifier": inspection["identifier"],
                    "description": inspection["description"],
                    "status": inspection["status"],
                    "inspection_date": inspection["inspection_date"],
                    "location_id": inspection["location_id"],
                    "inspection_type": kind["name"] if kind else None,
                    "responsible_contractor_id": inspection["responsible_contractor_id"],
                    "files": [
                        self._file_snapshot(self.app._attachments[i])
                        for i in inspection["attachment_ids"]
                    ],
                    "sections": sections,
                }
            )
        return result

    @staticmethod
    def _file_snapshot(attachment: dict[str, Any]) -> dict[str, Any]:
        return {
            k: attachment[k]
            for k in ("id", "name", "content_type", "size", "sha256", "upload_uuid")
        }


def _form_data(request: Request) -> tuple[dict[str, str], dict[str, tuple[str, str, bytes]]]:
    """A buffered multipart/form-data body: text fields and file parts by name."""
    header = request.headers.get("Content-Type") or ""
    found = re.search(r'boundary="?([^";]+)"?', header)
    if not found:
        raise HTTPError(400, {"errors": "multipart/form-data without a boundary"})
    delimiter = b"--" + found.group(1).encode("latin-1")
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, str, bytes]] = {}
    chunks = request.body.split(delimiter)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        raise HTTPError(400, {"errors": "malformed multipart/form-data body"})
    for chunk in chunks[1:-1]:
        if not chunk.startswith(b"\r\n") or b"\r\n\r\n" not in chunk:
            raise HTTPError(400, {"errors": "malformed multipart/form-data part"})
        head, _, data = chunk[2:].partition(b"\r\n\r\n")
        if data.endswith(b"\r\n"):
            data = data[:-2]
        text = head.decode("utf-8", "replace")
        name = re.search(r'(?i)content-disposition:[^\r\n]*?\bname="([^"]*)"', text)
        if not name:
            raise HTTPError(400, {"errors": "a multipart part has no name"})
        filename = re.search(r'(?i)content-disposition:[^\r\n]*?\bfilename="([^"]*)"', text)
        kind = re.search(r"(?i)content-type:\s*([^\r\n;]+)", text)
        if filename is not None:
            files[name.group(1)] = (
                filename.group(1),
                kind.group(1).strip() if kind else "application/octet-stream",
                data,
            )
        else:
            fields[name.group(1)] = data.decode("utf-8", "replace")
    return fields, files
