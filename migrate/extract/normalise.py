"""Pure mapping of BIM 360 Field JSON to staging rows (``map_*``): record in, rows and problems out.

Nothing here does HTTP or SQL. A value of the wrong type never stops a record: the row gets
NULL (or the value as text) and a :class:`Problem` says which record, which field, what was
found and what was kept, so the run carries on and the engineer can look it up in
``source_problems``. Filenames are kept as data; nothing here builds a path from them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from migrate.clients.bim360field import clean_url

#: Attachment kinds whose bytes are downloaded (UriReferences are links, metadata only).
BINARY_KINDS = ("Attachment", "Signature", "DocumentReference")
ATTACHMENT_KINDS = ("Attachment", "DocumentReference", "UriReference")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
#: SQLite's INTEGER range; JSON numbers have none, and sqlite3 refuses anything beyond it.
_SQLITE_MIN, _SQLITE_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class Problem:
    """Bad data from the source: which record, why, and the raw payload it came in."""

    entity: str
    source_id: str | None
    reason: str
    payload: Any = None


@dataclass
class Mapped:
    """Rows per table plus the problems found while mapping."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def add(self, table: str, row: dict[str, Any]) -> None:
        self.rows.setdefault(table, []).append(row)

    def extend(self, other: Mapped) -> None:
        for table, rows in other.rows.items():
            self.rows.setdefault(table, []).extend(rows)
        self.problems.extend(other.problems)


class _Checker:
    """Type checks for one record; each failure becomes a Problem naming record and field."""

    def __init__(
        self, entity: str, source_id: str | None, payload: Any, problems: list[Problem]
    ) -> None:
        self.entity = entity
        self.source_id = source_id
        self.payload = payload
        self.problems = problems

    def problem(self, reason: str) -> None:
        self.problems.append(Problem(self.entity, self.source_id, reason, self.payload))

    def _what(self, name: str) -> str:
        return f"{self.entity} {self.source_id}: {name}"

    def text(self, value: Any, name: str) -> str | None:
        """A string, or None. Numbers are kept as their text (with a problem)."""
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, bool | int | float):
            shown = json.dumps(value)
            self.problem(
                f"{self._what(name)} should be text, got {_kind(value)} {shown}; "
                f"stored as the text {shown}"
            )
            return shown
        self.problem(f"{self._what(name)} should be text, got {_kind(value)}; stored as NULL")
        return None

    def ident(self, value: Any, name: str) -> str | None:
        """An id: a non-empty string, or None."""
        if value is None or value == "":
            return None
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            self.problem(
                f"{self._what(name)} should be an id (text), got the number {value}; stored as text"
            )
            return str(value)
        self.problem(
            f"{self._what(name)} should be an id (text), got {_kind(value)}; stored as NULL"
        )
        return None

    def number(self, value: Any, name: str) -> float | None:
        """A finite number (numeric text accepted), or None."""
        if value is None or value == "":
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # JSON integers have no limit; floats do
                number = math.nan
            if math.isfinite(number):
                return number
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                number = math.nan
            if math.isfinite(number):
                return number
        self.problem(
            f"{self._what(name)} should be a number, got {_kind(value)} "
            f"{_shown(value)}; stored as NULL"
        )
        return None

    def integer(self, value: Any, name: str, *, minimum: int | None = None) -> int | None:
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and (minimum is None or value >= minimum)
        ):
            if _SQLITE_MIN <= value <= _SQLITE_MAX:
                return value
            self.problem(
                f"{self._what(name)} is {_shown(value)}, too large to store (64 bits); "
                "stored as NULL"
            )
            return None
        floor = "" if minimum is None else f" of {minimum} or more"
        self.problem(
            f"{self._what(name)} should be a whole number{floor}, got {_kind(value)} "
            f"{_shown(value)}; stored as NULL"
        )
        return None

    def flag(self, value: Any, name: str) -> int | None:
        """True/False (or 0/1, "true"/"false") as 1/0."""
        if value is None:
            return None
        if isinstance(value, bool):
            return int(value)
        if value in (0, 1):
            return int(value)
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
            return int(value.strip().lower() in ("true", "1"))
        self.problem(
            f"{self._what(name)} should be true or false, got {_kind(value)} "
            f"{_shown(value)}; stored as NULL"
        )
        return None

    def date(self, value: Any, name: str) -> str | None:
        """A date as Field wrote it (text), or None.

        Only transform reads it as a date (date-times, offsets and the run's time zone; an
        unreadable one is kept in the description and listed by `migrate plan`), so nothing
        is dropped here. Not text: kept as its text, with a problem.
        """
        if value is None or value == "":
            return None
        if isinstance(value, str):
            return value.strip() if _DATE.match(value.strip()) else value
        return self.text(value, name)

    def items(self, value: Any, name: str) -> list[Any]:
        """A JSON array (None counts as empty)."""
        if value is None:
            return []
        if isinstance(value, list):
            return value
        self.problem(f"{self._what(name)} should be a list, got {_kind(value)}; ignored")
        return []

    def mapping(self, value: Any, name: str) -> Mapping[str, Any]:
        if value is None:
            return {}
        if isinstance(value, Mapping):
            return value
        self.problem(f"{self._what(name)} should be an object, got {_kind(value)}; ignored")
        return {}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def record_id(record: Any, entity: str, key: str = "id") -> tuple[str | None, Problem | None]:
    """The record's id, or a Problem when the record is not an object or has no usable id."""
    if not isinstance(record, Mapping):
        return None, Problem(
            entity, None, f"{entity} record is {_kind(record)}, not an object; skipped", record
        )
    value = record.get(key)
    if isinstance(value, str) and value.strip():
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate: no id SQLite (or Procore) can key on
                return None, Problem(
                    entity,
                    None,
                    f"{entity} record has an id that is not "
                    f"valid Unicode ({ascii(value)[:60]}); skipped",
                    record,
                )
        return value, None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value), None
    return None, Problem(
        entity, None, f"{entity} record has no {key} (got {_kind(value)}); skipped", record
    )


def duplicate_id(entity: str, source_id: str, first: Any, again: Any, where: str) -> Problem:
    """A source problem for an id listed twice in one listing: the first record is kept.

    Both raw records go in the payload, so what was left out can be read back.
    """
    return Problem(
        entity,
        source_id,
        f"{entity} {source_id} appears twice in {where}; the first record is kept and the "
        "second ignored (both are in raw_payload)",
        {"kept": first, "ignored": again},
    )


def json_text(value: Any) -> str | None:
    """A value as JSON text for a JSON column, or None."""
    return None if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)


# -- reference data ---------------------------------------------------------------------------


def map_project(record: Mapping[str, Any], source_id: str) -> Mapped:
    out = Mapped()
    check = _Checker("projects", source_id, record, out.problems)
    name = check.text(record.get("name"), "name")
    if name is None:
        check.problem(f"projects {source_id}: name is missing; stored as ''")
        name = ""
    out.add(
        "projects",
        {
            "id": source_id,
            "name": name,
            "a360_project_id": check.text(record.get("a360_project_id"), "a360_project_id"),
            "updated_at": check.text(record.get("updated_at"), "updated_at"),
        },
    )
    return out


def map_areas(records: Mapping[str, Mapping[str, Any]]) -> Mapped:
    """Rows for the whole location tree (depth needs every parent)."""
    out = Mapped()
    parents: dict[str, str | None] = {}
    for source_id, record in records.items():
        check = _Checker("areas", source_id, record, out.problems)
        parents[source_id] = check.ident(record.get("parent_id"), "parent_id")
    for source_id, record in records.items():
        check = _Checker("areas", source_id, record, out.problems)
        name = check.text(record.get("name"), "name")
        if name is None:
            check.problem(f"areas {source_id}: name is missing; stored as ''")
            name = ""
        depth: int | None = 0
        seen = {source_id}
        node = parents[source_id]
        while node is not None:
            if node in seen:
                check.problem(
                    f"areas {source_id}: parent chain loops back to {node}; depth stored as NULL"
                )
                depth = None
                break
            if node not in parents:
                depth = None  # the parent is missing; upsert_rows reports that reference
                break
            seen.add(node)
            depth = (depth or 0) + 1
            node = parents[node]
        deleted = check.flag(record.get("deleted"), "deleted")
        out.add(
            "areas",
            {
                "id": source_id,
                "parent_id": parents[source_id],
                "name": name,
                "full_path": check.text(record.get("full_path"), "full_path"),
                "identifier": check.text(record.get("identifier"), "identifier"),
                "deleted": deleted or 0,
                "depth": depth,
            },
        )
    return out


def map_company(record: Mapping[str, Any], source_id: str) -> Mapped:
    out = Mapped()
    check = _Checker("companies", source_id, record, out.problems)
    name = check.text(record.get("name"), "name")
    if name is None:
        check.problem(f"companies {source_id}: name is missing; stored as ''")
        name = ""
    address = record.get("address")
    if address is not None and not isinstance(address, Mapping):
        check.problem(
            f"companies {source_id}: address should be an object, got "
            f"{_kind(address)}; stored as NULL"
        )
        address = None
    out.add(
        "companies",
        {
            "id": source_id,
            "name": name,
            "company_type": check.text(record.get("company_type"), "company_type"),
            "company_category": check.text(record.get("company_category"), "company_category"),
            "account_company": check.flag(record.get("account_company"), "account_company"),
            "telephone": check.text(record.get("telephone"), "telephone"),
            "address": json_text(address),
        },
    )
    return out


def map_user(record: Mapping[str, Any], source_id: str) -> Mapped:
    out = Mapped()
    check = _Checker("users", source_id, record, out.problems)
    email = check.text(record.get("email"), "email")
    if not email:
        check.problem(
            f"users {source_id}: email is missing; user skipped (users are matched by email)"
        )
        return out
    company = check.mapping(record.get("company"), "company")
    roles_text = check.text(record.get("roles"), "roles")
    roles = [role.strip() for role in (roles_text or "").split(",") if role.strip()]
    out.add(
        "users",
        {
            "id": source_id,
            "email": email,
            "first_name": check.text(record.get("first_name"), "first_name"),
            "last_name": check.text(record.get("last_name"), "last_name"),
            "company_id": check.ident(company.get("id"), "company.id"),
            "roles": json_text(roles),
        },
    )
    return out


def map_named(table: str, record: Mapping[str, Any], source_id: str) -> Mapped:
    """issue_types and root_causes: id, name, category_name."""
    out = Mapped()
    check = _Checker(table, source_id, record, out.problems)
    name = check.text(record.get("name"), "name")
    if name is None:
        check.problem(f"{table} {source_id}: name is missing; stored as ''")
        name = ""
    out.add(
        table,
        {
            "id": source_id,
            "name": name,
            "category_name": check.text(record.get("category_name"), "category_name"),
        },
    )
    return out


def map_custom_field(record: Mapping[str, Any], source_id: str) -> Mapped:
    out = Mapped()
    check = _Checker("custom_fields", source_id, record, out.problems)
    name = check.text(record.get("name"), "name")
    if name is None:
        check.problem(f"custom_fields {source_id}: name is missing; stored as ''")
        name = ""
    raw_values = record.get("possible_values")
    values: Any = None
    if isinstance(raw_values, list):
        values = raw_values
    elif isinstance(raw_values, str):
        values = parse_yaml_list(raw_values)
        if values is None:
            check.problem(
                f"custom_fields {source_id}: possible_values is not a YAML list of "
                "strings; kept as the text"
            )
            values = raw_values
    elif raw_values is not None:
        check.problem(
            f"custom_fields {source_id}: possible_values should be a YAML list, got "
            f"{_kind(raw_values)}; stored as NULL"
        )
    default = record.get("default_value")
    out.add(
        "custom_fields",
        {
            "id": source_id,
            "name": name,
            "container_type": check.text(record.get("container_type"), "container_type"),
            "container_id": check.ident(record.get("container_id"), "container_id"),
            "display_type": check.text(record.get("display_type"), "display_type"),
            "default_value": check.text(default, "default_value"),
            "possible_values": json_text(values),
            "required": check.flag(record.get("required"), "required"),
            "position": check.integer(record.get("position"), "position"),
            "updated_at": check.text(record.get("updated_at"), "updated_at"),
        },
    )
    return out


def parse_yaml_list(text: str) -> list[str] | None:
    """The YAML list of strings Field (Ruby Psych) writes in ``possible_values``, or None.

    Handles exactly the subset it writes: ``--- []``, and ``---`` followed by ``- value`` lines
    with plain or single-quoted ('' for a quote) scalars.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("---"):
        return None
    head = lines[0][3:].strip()
    if head == "[]":
        return [] if len(lines) == 1 else None
    if head:
        return None
    values: list[str] = []
    for line in lines[1:]:
        if not line.startswith("- ") and line != "-":
            return None
        item = line[2:] if line != "-" else ""
        if item.startswith("'"):
            if not item.endswith("'") or len(item) < 2:
                return None
            item = item[1:-1].replace("''", "'")
        elif item.startswith('"'):
            try:
                item = json.loads(item)
            except ValueError:
                return None
        values.append(item)
    return values


def map_issue_fields(section: str, record: Mapping[str, Any]) -> Mapped:
    """One raw_issue_fields record: the "common", "ancillary" or a type's own fields."""
    out = Mapped()
    check = _Checker("issue_fields", section, record, out.problems)
    if section in ("common", "ancillary"):
        kind, type_id = section, ""
    else:
        kind, type_id = "type", section
    for position, item in enumerate(check.items(record.get("fields"), "fields")):
        field_id, problem = record_id(item, "issue_fields")
        if problem is not None:
            out.problems.append(problem)
            continue
        assert field_id is not None  # record_id gives an id or a problem
        item_check = _Checker("issue_fields", field_id, item, out.problems)
        possible = item.get("possible_values")
        out.add(
            "issue_fields",
            {
                "field_id": field_id,
                "issue_type_id": type_id,
                "section": kind,
                "name": item_check.text(item.get("name"), "name"),
                "display_type": item_check.text(item.get("display_type"), "display_type"),
                "required": item_check.flag(item.get("required"), "required"),
                "position": item_check.integer(item.get("position", position), "position"),
                "possible_values": json_text(possible if isinstance(possible, list) else None),
            },
        )
    return out


# -- issues --------------------------------------------------------------------------------------

_TEXT_FIELDS = {
    "f--identifier": "identifier",
    "f--description": "description",
    "f--status": "status",
    "f--priority": "priority",
    "f--location_detail": "location_detail",
    "f--assigned_to": "assigned_to_email",
}
_ID_FIELDS = {
    "f--issue_type_id": "issue_type_id",
    "f--area_id": "area_id",
    "f--responsible_company_id": "responsible_company_id",
    "f--root_cause_id": "root_cause_id",
}


def listing_attachment_sizes(listing: Mapping[str, Any] | None) -> dict[str, Any]:
    """attachment id -> size as the get_issues record declares it (retrieve has no sizes)."""
    sizes: dict[str, Any] = {}
    if not listing:
        return sizes
    items = listing.get("attachments")
    for item in items if isinstance(items, list) else []:
        if isinstance(item, Mapping) and isinstance(item.get("id"), str):
            sizes[item["id"]] = item.get("size")
    return sizes


def map_issue(
    detail: Mapping[str, Any],
    source_id: str,
    listing: Mapping[str, Any] | None,
    *,
    content_hash: str,
    voided: bool,
    custom_field_positions: Mapping[str, int] | None = None,
) -> Mapped:
    """An issue's rows: ``issues``, ``comments`` and ``attachments`` (download columns left out).

    ``detail`` is the retrieve record (complete fields, comments, attachment URLs); ``listing``
    the get_issues record, when the issue is listed, for timestamps and attachment sizes
    (voided issues are not listed, so theirs stay NULL).
    """
    out = Mapped()
    check = _Checker("issues", source_id, detail, out.problems)
    row: dict[str, Any] = {
        "source_id": source_id,
        "identifier": None,
        "description": None,
        "status": None,
        "priority": None,
        "issue_type_id": None,
        "area_id": None,
        "location_detail": None,
        "responsible_company_id": None,
        "root_cause_id": None,
        "assigned_to_email": None,
        "due_date": None,
        "labor_hours": None,
        "cost": None,
        "created_by": check.text(detail.get("created_by"), "created_by"),
        "created_at": None,
        "updated_at": None,
        "closed_at": None,
        "voided": int(voided),
        "deleted": 0,
        "content_hash": content_hash,
    }
    positions = custom_field_positions or {}
    custom: dict[str, Any] = {}
    signature_fields: dict[str, tuple[str, str]] = {}  # signature id -> (field id, field name)
    for item in check.items(detail.get("fields"), "fields"):
        if not isinstance(item, Mapping) or not isinstance(item.get("id"), str):
            check.problem(f"issues {source_id}: a field entry has no id ({_shown(item)}); ignored")
            continue
        field_id, value = item["id"], item.get("value")
        if field_id in _TEXT_FIELDS:
            row[_TEXT_FIELDS[field_id]] = check.text(value, field_id)
        elif field_id in _ID_FIELDS:
            row[_ID_FIELDS[field_id]] = check.ident(value, field_id)
        elif field_id == "f--due_date":
            row["due_date"] = check.date(value, field_id)
        elif field_id == "f--labor_hours":
            row["labor_hours"] = check.number(value, field_id)
        elif field_id == "f--cost":
            row["cost"] = (
                check.text(value, field_id)
                if not isinstance(value, int | float) or isinstance(value, bool)
                else str(value)
            )
        elif field_id.startswith("cf--"):
            bare = field_id[4:]
            given_name = item.get("name")
            name: str = given_name if isinstance(given_name, str) else field_id
            if isinstance(value, list | Mapping):
                check.problem(
                    f"issues {source_id}: custom field {name!r} ({field_id}) should "
                    f"be a single value, got {_kind(value)}; kept as given"
                )
            key = name if name not in custom else f"{name} ({field_id})"
            if item.get("display_type") == "signature" and isinstance(value, str) and value:
                signature_fields[value] = (bare, name)
            entry: dict[str, Any] = {"id": bare, "value": value}
            if bare in positions:
                entry["position"] = positions[bare]
            custom[key] = entry
    row["custom_fields"] = json_text(custom)
    if listing is not None:
        listing_check = _Checker("issues", source_id, listing, out.problems)
        for key in ("created_at", "updated_at", "closed_at"):
            row[key] = listing_check.text(listing.get(key), key)
    out.add("issues", row)

    for comment in check.items(detail.get("comments"), "comments"):
        comment_id, problem = record_id(comment, "comments")
        if problem is not None:
            out.problems.append(
                Problem("comments", source_id, f"issue {source_id}: " + problem.reason, comment)
            )
            continue
        assert comment_id is not None  # record_id gives an id or a problem
        comment_check = _Checker("comments", comment_id, comment, out.problems)
        out.add(
            "comments",
            {
                "id": comment_id,
                "container_type": "Issue",
                "container_id": source_id,
                "created_by": comment_check.text(comment.get("created_by"), "created_by"),
                "created_at": comment_check.text(comment.get("created_at"), "created_at"),
                "text": comment_check.text(comment.get("comment_text"), "comment_text"),
            },
        )

    sizes = listing_attachment_sizes(listing)
    for item in check.items(detail.get("attachments"), "attachments"):
        out.extend(map_attachment(item, "Issue", source_id, sizes))
    out.extend(
        map_issue_signatures(
            source_id, signature_fields, check.items(detail.get("signatures"), "signatures")
        )
    )
    return out


def map_issue_signatures(
    issue_id: str, fields: Mapping[str, tuple[str, str]], listed: Sequence[Any]
) -> Mapped:
    """The signature images of an issue's signature fields, as ``Signature`` attachments.

    ``fields`` maps each signature id a field's value names to (field id, field name); a
    signature the issue lists but no field names is staged too, under its definition id. The
    file is named after its field, the caption says who signed when (``created_by`` and
    ``created_at`` keep both as data), so the description can say it.
    """
    out = Mapped()
    entries: dict[str, Mapping[str, Any]] = {}
    for entry in listed:
        if isinstance(entry, Mapping) and isinstance(entry.get("id"), str) and entry["id"]:
            entries.setdefault(entry["id"], entry)
        else:
            out.problems.append(
                Problem(
                    "attachments",
                    issue_id,
                    f"issue {issue_id}: a signature entry has no id ({_shown(entry)}); skipped",
                    entry,
                )
            )
    for signature_id in dict.fromkeys([*fields, *entries]):
        entry = entries.get(signature_id, {})
        check = _Checker("attachments", signature_id, entry, out.problems)
        field_id, field_name = fields.get(signature_id, (None, None))
        if field_id is None:
            field_id = check.ident(entry.get("custom_field_definition_id"), "definition")
        given = check.text(entry.get("filename"), "filename") or ""
        extension = given.rsplit(".", 1)[1] if "." in given else "png"
        signer = check.text(entry.get("created_by"), "created_by")
        signed_at = check.text(entry.get("created_at"), "created_at")
        caption = (
            "signed"
            + (f" by {signer}" if signer else "")
            + (f" on {signed_at}" if signed_at else "")
        )
        source_url = clean_url(check.text(entry.get("original_url"), "original_url"))
        out.add(
            "attachments",
            {
                "id": signature_id,
                "container_type": "Issue",
                "container_id": issue_id,
                "kind": "Signature",
                "filename": f"{field_name or given or 'Signature'}.{extension}"
                if field_name or not given
                else given,
                "content_type": check.text(entry.get("content_type"), "content_type"),
                "caption": caption if signer or signed_at else None,
                "custom_field_id": field_id,
                "created_by": signer,
                "created_at": signed_at,
                "size_expected": None,
                "source_url": source_url,
                "num_pages": None,
                "tags": None,
                "rendition_of": None,
                "rendition_page": None,
            },
        )
    return out


def map_attachment(
    item: Any,
    container_type: str,
    container_id: str,
    sizes: Mapping[str, Any] | None = None,
    *,
    kind: str | None = None,
) -> Mapped:
    """One attachment-list entry (Attachment, DocumentReference, UriReference, Signature)."""
    out = Mapped()
    attachment_id, problem = record_id(item, "attachments")
    if problem is not None:
        out.problems.append(
            Problem(
                "attachments",
                container_id,
                f"{container_type} {container_id}: " + problem.reason,
                item,
            )
        )
        return out
    assert attachment_id is not None  # record_id gives an id or a problem
    check = _Checker("attachments", attachment_id, item, out.problems)
    kind = kind or item.get("type")
    if kind not in (*ATTACHMENT_KINDS, "Signature"):
        check.problem(
            f"attachments {attachment_id} on {container_type} {container_id}: type "
            f"{_shown(kind)} is not one of {', '.join(ATTACHMENT_KINDS)}; skipped"
        )
        return out
    size = None
    if sizes and attachment_id in sizes:
        size = check.integer(sizes[attachment_id], "size", minimum=0)
    if kind == "UriReference":
        source_url = check.text(item.get("path"), "path")
    else:
        source_url = clean_url(check.text(item.get("original_url"), "original_url"))
        if not source_url:
            check.problem(
                f"attachments {attachment_id} on {container_type} {container_id}: "
                "no original_url; downloaded by id anyway"
            )
    out.add(
        "attachments",
        {
            "id": attachment_id,
            "container_type": container_type,
            "container_id": container_id,
            "kind": kind,
            "filename": check.text(item.get("name"), "name"),
            "content_type": check.text(item.get("content_type"), "content_type"),
            "caption": check.text(item.get("caption"), "caption"),
            "custom_field_id": check.ident(item.get("custom_field_id"), "custom_field_id"),
            "created_by": check.text(item.get("created_by"), "created_by"),
            "created_at": check.text(item.get("created_at"), "created_at"),
            "size_expected": size,
            "source_url": source_url,
            "num_pages": check.integer(item.get("num_pages"), "num_pages", minimum=0),
            "tags": check.text(item.get("tags"), "tags"),
            "rendition_of": None,
            "rendition_page": None,
        },
    )
    if kind in ("Attachment", "DocumentReference"):
        out.extend(map_composites(item, out.rows["attachments"][-1], check))
    return out


def map_composites(item: Mapping[str, Any], original: Mapping[str, Any], check: _Checker) -> Mapped:
    """A row per marked-up page of a file: its ``composite`` rendition, beside the original.

    A page counts as marked up when ``composites`` lists it, unless the entry carries a
    ``markup`` key that is empty (the reading where every page is listed and ``markup`` says
    which are marked up). The id is ``<original id>:composite:<page>``; ``rendition_of`` and
    ``rendition_page`` say what to download.
    """
    out = Mapped()
    if "markup" in item and not item.get("markup"):
        return out
    urls: dict[int, str | None] = {}
    for entry in check.items(item.get("composites"), "composites"):
        page = entry.get("page") if isinstance(entry, Mapping) else None
        if isinstance(page, int) and not isinstance(page, bool) and page >= 0:
            urls.setdefault(page, clean_url(check.text(entry.get("url"), "composites.url")))
        else:
            check.problem(
                f"attachments {original['id']}: a composites entry has no page "
                f"({_shown(entry)}); skipped"
            )
    pages = sorted(urls)
    name = original["filename"] or ""
    stem = name.rsplit(".", 1)[0] if "." in name.strip(".") else name
    stem = stem or f"{original['kind']} {original['id']}"
    for page in pages:
        where = f", page {page + 1}" if len(pages) > 1 or page else ""
        out.add(
            "attachments",
            {
                **original,
                "id": f"{original['id']}:composite:{page}",
                "filename": f"{stem} (marked up{where}).jpg",
                "content_type": "image/jpeg",
                "caption": None,  # the original's line carries it
                "tags": None,
                "size_expected": None,
                "source_url": urls[page],
                "num_pages": 1,
                "rendition_of": original["id"],
                "rendition_page": page,
            },
        )
    return out


def map_status_history(issue_id: str, changes: Iterable[Any]) -> Mapped:
    """issue_status_history rows for one issue, in the order the source gives them."""
    out = Mapped()
    for change in changes:
        check = _Checker("issue_status_history", issue_id, change, out.problems)
        if not isinstance(change, Mapping):
            check.problem(
                f"issue_changes for {issue_id}: entry is {_kind(change)}, not an object; skipped"
            )
            continue
        out.add(
            "issue_status_history",
            {
                "issue_id": issue_id,
                "status": check.text(change.get("status"), "status"),
                "previous_status": check.text(change.get("previous_status"), "previous_status"),
                "user": check.text(change.get("user"), "user"),
                "start_dt": check.text(change.get("start_dt"), "start_dt"),
                "end_dt": check.text(change.get("end_dt"), "end_dt"),
            },
        )
    return out


# -- checklists ----------------------------------------------------------------------------------


def map_checklist(
    detail: Mapping[str, Any], source_id: str, definitions: Sequence[Definition] = ()
) -> Mapped:
    """A checklist's rows: the checklist, sections, items, comments, attachments (checklist,
    item, signatures) and custom field values.

    ``definitions`` are the custom fields of the checklist's template in position order: the
    values join them (:func:`join_custom_field_values`), and a signature a signature field's
    value names gets that field's id as ``custom_field_id``. Tags and the deleted flag come
    from the header (:func:`map_checklist_header`), the template item of each item from the
    template (joined in SQL by ``extract.checklists``).
    """
    out = Mapped()
    check = _Checker("checklists", source_id, detail, out.problems)
    company = check.mapping(detail.get("company"), "company")
    template = check.mapping(detail.get("template"), "template")
    source = check.mapping(detail.get("source"), "source")
    source_type = check.text(source.get("type"), "source.type")
    if source_type not in (None, "Task", "Equipment"):
        check.problem(
            f"checklists {source_id}: source type {_shown(source_type)} is neither Task nor "
            "Equipment; kept as given"
        )
    out.add(
        "checklists",
        {
            "id": source_id,
            "identifier": check.text(detail.get("identifier"), "identifier"),
            "name": check.text(detail.get("name"), "name"),
            "description": check.text(detail.get("description"), "description"),
            "checklist_type": check.text(detail.get("checklist_type"), "checklist_type"),
            "status": check.text(detail.get("status"), "status"),
            "priority": check.text(detail.get("priority"), "priority"),
            "phase": check.text(detail.get("phase"), "phase"),
            "created_by": check.text(detail.get("created_by"), "created_by"),
            "created_at": check.text(detail.get("created_at"), "created_at"),
            "updated_at": check.text(detail.get("updated_at"), "updated_at"),
            "company_id": check.ident(company.get("id"), "company.id"),
            "template_id": check.ident(template.get("id"), "template.id"),
            "template_name": check.text(template.get("name"), "template.name"),
            "source_type": source_type,
            "source_id": check.ident(source.get("id"), "source.id"),
            "source_name": check.text(source.get("name"), "source.name"),
            "deleted": 0,
        },
    )
    for position, section in enumerate(check.items(detail.get("sections"), "sections")):
        section_check = _Checker("checklist_sections", source_id, section, out.problems)
        if not isinstance(section, Mapping):
            section_check.problem(
                f"checklists {source_id}: section {position} is "
                f"{_kind(section)}, not an object; skipped"
            )
            continue
        section_id = f"{source_id}:{position}"
        section_name = section_check.text(section.get("section_name"), "section_name")
        out.add(
            "checklist_sections",
            {
                "id": section_id,
                "checklist_id": source_id,
                "position": position,
                "section_name": section_name,
            },
        )
        for item in section_check.items(section.get("items"), "items"):
            out.extend(_map_item(item, source_id, section_id, section_name))
    for comment in check.items(detail.get("comments"), "comments"):
        comment_id, problem = record_id(comment, "comments")
        if problem is not None:
            out.problems.append(
                Problem("comments", source_id, f"checklist {source_id}: " + problem.reason, comment)
            )
            continue
        assert comment_id is not None  # record_id gives an id or a problem
        comment_check = _Checker("comments", comment_id, comment, out.problems)
        out.add(
            "comments",
            {
                "id": comment_id,
                "container_type": "Checklist",
                "container_id": source_id,
                "created_by": comment_check.text(comment.get("created_by"), "created_by"),
                "created_at": comment_check.text(comment.get("created_at"), "created_at"),
                "text": comment_check.text(comment.get("comment_text"), "comment_text"),
            },
        )
    for item in check.items(detail.get("attachments"), "attachments"):
        out.extend(map_attachment(item, "Checklist", source_id))
    for item in check.items(detail.get("signatures"), "signatures"):
        out.extend(map_attachment(item, "Checklist", source_id, kind="Signature"))
    seen_values: set[str] = set()
    for value in check.items(detail.get("custom_field_values"), "custom_field_values"):
        value_id, problem = record_id(value, "checklist_custom_field_values")
        if problem is not None:
            out.problems.append(
                Problem(
                    "checklist_custom_field_values",
                    source_id,
                    f"checklist {source_id}: " + problem.reason,
                    value,
                )
            )
            continue
        assert value_id is not None  # record_id gives an id or a problem
        if value_id in seen_values:
            check.problem(
                f"checklists {source_id}: custom field value {value_id} appears "
                "twice; the first is kept"
            )
            continue
        seen_values.add(value_id)
        value_check = _Checker("checklist_custom_field_values", value_id, value, out.problems)
        raw = value.get("value")
        out.add(
            "checklist_custom_field_values",
            {
                "checklist_id": source_id,
                "custom_field_id": value_id,
                "display_type": value_check.text(value.get("display_type"), "display_type"),
                "value": value_check.text(raw, "value"),
            },
        )
    values = out.rows.get("checklist_custom_field_values", [])
    out.extend(join_custom_field_values(source_id, values, list(definitions)))
    signature_fields = {
        row["value"]: row["definition_id"]
        for row in values
        if row["display_type"] == "signature" and row["value"] and row["definition_id"]
    }
    for row in out.rows.get("attachments", []):
        if row["kind"] == "Signature" and row["id"] in signature_fields:
            row["custom_field_id"] = signature_fields[row["id"]]
    return out


def _map_item(item: Any, checklist_id: str, section_id: str, section_name: str | None) -> Mapped:
    out = Mapped()
    item_id, problem = record_id(item, "checklist_items")
    if problem is not None:
        out.problems.append(
            Problem(
                "checklist_items",
                checklist_id,
                f"checklist {checklist_id}: " + problem.reason,
                item,
            )
        )
        return out
    assert item_id is not None  # record_id gives an id or a problem
    check = _Checker("checklist_items", item_id, item, out.problems)
    linked: list[str] = []
    for link in check.items(item.get("issues"), "issues"):
        link_id, link_problem = record_id(link, "checklist_items")
        if link_problem is not None:
            check.problem(f"checklist_items {item_id}: a linked issue has no id; ignored")
            continue
        assert link_id is not None  # record_id gives an id or a problem
        linked.append(link_id)
    possible = item.get("possible_values")
    if possible is not None and not isinstance(possible, list):
        check.problem(
            f"checklist_items {item_id}: possible_values should be a list, got "
            f"{_kind(possible)}; stored as NULL"
        )
        possible = None
    out.add(
        "checklist_items",
        {
            "id": item_id,
            "checklist_id": checklist_id,
            "section_id": section_id,
            "section_name": section_name,
            "position": check.integer(item.get("position"), "position"),
            "display_number": check.text(item.get("display_number"), "display_number"),
            "question_text": check.text(item.get("question_text"), "question_text"),
            "display_type": check.text(item.get("display_type"), "display_type"),
            "possible_values": json_text(possible),
            "response": check.text(item.get("response"), "response"),
            "is_conforming": check.text(item.get("is_conforming"), "is_conforming"),
            "comment": check.text(item.get("comment"), "comment"),
            "spec_ref": check.text(item.get("spec_ref"), "spec_ref"),
            "linked_issue_ids": json_text(linked),
            "created_by": check.text(item.get("created_by"), "created_by"),
            "created_at": check.text(item.get("created_at"), "created_at"),
            "updated_at": check.text(item.get("updated_at"), "updated_at"),
        },
    )
    for attachment in check.items(item.get("attachments"), "attachments"):
        out.extend(map_attachment(attachment, "ChecklistItem", item_id))
    return out


# -- checklist templates, headers, sources, custom field definitions --------------------------


def map_checklist_template(record: Mapping[str, Any], source_id: str, digest: str) -> Mapped:
    """A template's row and its items' rows, or no row at all when its structure is broken.

    A template is staged whole or not at all: an inspection template built from half a
    template would put answers under the wrong questions. Broken structure (sections not a
    list, a section or item that is not an object, an item without an id or a whole-number
    position, an item id or position twice) is a Problem and no row; a field of the wrong type
    (a number where text belongs) is a Problem and the usual repair, as everywhere else.
    """
    out = Mapped()
    fatal: list[Problem] = []
    check = _Checker("checklist_templates", source_id, record, out.problems)
    fatal_check = _Checker("checklist_templates", source_id, record, fatal)
    sections = record.get("sections")
    if not isinstance(sections, list):
        fatal_check.problem(
            f"checklist_templates {source_id}: sections should be a list, got "
            f"{_kind(sections)}; template not staged"
        )
        return Mapped(problems=[*out.problems, *fatal])
    items: list[dict[str, Any]] = []
    seen_ids: set[str] = set()
    seen_positions: set[int] = set()
    for section_position, section in enumerate(sections):
        if not isinstance(section, Mapping):
            fatal_check.problem(
                f"checklist_templates {source_id}: section {section_position} is "
                f"{_kind(section)}, not an object; template not staged"
            )
            continue
        section_name = check.text(section.get("section_name"), "section_name")
        raw_items = section.get("items")
        if raw_items is not None and not isinstance(raw_items, list):
            fatal_check.problem(
                f"checklist_templates {source_id}: items of section {section_position} should "
                f"be a list, got {_kind(raw_items)}; template not staged"
            )
            continue
        for raw in raw_items or []:
            item_id, problem = record_id(raw, "checklist_template_items")
            if problem is not None or item_id is None:
                fatal_check.problem(
                    f"checklist_templates {source_id}: an item of section {section_position} "
                    f"{problem.reason if problem else 'has no id'}; template not staged"
                )
                continue
            item_check = _Checker("checklist_template_items", item_id, raw, out.problems)
            position = raw.get("position")
            if isinstance(position, float) and position.is_integer():
                position = int(position)
            if not isinstance(position, int) or isinstance(position, bool):
                fatal_check.problem(
                    f"checklist_templates {source_id}: item {item_id} has no whole-number "
                    f"position (got {_kind(position)} {_shown(position)}), so no checklist item "
                    "can be joined to it; template not staged"
                )
                continue
            if item_id in seen_ids or position in seen_positions:
                fatal_check.problem(
                    f"checklist_templates {source_id}: item {item_id} repeats an item id or "
                    f"position ({position}); template not staged"
                )
                continue
            seen_ids.add(item_id)
            seen_positions.add(position)
            possible = raw.get("possible_values")
            if isinstance(possible, str):
                parsed = parse_yaml_list(possible)
                if parsed is None:
                    item_check.problem(
                        f"checklist_template_items {item_id}: possible_values is neither a "
                        "list nor a YAML list; stored as NULL"
                    )
                possible = parsed
            elif possible is not None and not (
                isinstance(possible, list) and all(isinstance(v, str) for v in possible)
            ):
                item_check.problem(
                    f"checklist_template_items {item_id}: possible_values should be a list "
                    f"of text, got {_kind(possible)} {_shown(possible)}; stored as NULL"
                )
                possible = None
            items.append(
                {
                    "id": item_id,
                    "template_id": source_id,
                    "section_position": section_position,
                    "section_name": section_name,
                    "position": position,
                    "display_number": item_check.text(raw.get("display_number"), "display_number"),
                    "question_text": item_check.text(raw.get("question_text"), "question_text"),
                    "display_type": item_check.text(raw.get("display_type"), "display_type"),
                    "possible_values": json_text(possible),
                }
            )
    if fatal:
        return Mapped(problems=[*out.problems, *fatal])
    out.add(
        "checklist_templates",
        {
            "id": source_id,
            "name": check.text(record.get("name"), "name"),
            "checklist_type": check.text(record.get("checklist_type"), "checklist_type"),
            "created_at": check.text(record.get("created_at"), "created_at"),
            "updated_at": check.text(record.get("updated_at"), "updated_at"),
            "content_hash": digest,
        },
    )
    for item in items:
        out.add("checklist_template_items", item)
    return out


@dataclass(frozen=True)
class HeaderFacts:
    """What a checklist header says: the explicit deleted flag, the tags (None = silent), and
    the checklist row it describes (kept only for a checklist deleted before any extract saw
    its details, so that the deletion is on record)."""

    deleted: int | None
    tags: str | None  # JSON list
    row: dict[str, Any] = field(default_factory=dict, compare=False)


def map_checklist_header(record: Mapping[str, Any], source_id: str) -> tuple[HeaderFacts, Mapped]:
    """The deleted flag and tags of one /api/get_checklist_headers record.

    ``deleted`` true/false (or 1/0, "true"/"false") is the answer; missing or null says
    nothing. Tags arrive as text ("level-2,mep", seed 003 says "any tags added") or a list;
    both become a JSON list, "" an empty one.
    """
    out = Mapped()
    check = _Checker("checklist_headers", source_id, record, out.problems)
    deleted = check.flag(record.get("deleted"), "deleted")
    raw_tags = record.get("tags")
    tags: list[str] | None
    if raw_tags is None:
        tags = None
    elif isinstance(raw_tags, str):
        tags = [tag.strip() for tag in raw_tags.split(",") if tag.strip()]
    elif isinstance(raw_tags, list) and all(isinstance(tag, str) for tag in raw_tags):
        tags = list(raw_tags)
    else:
        check.problem(
            f"checklist_headers {source_id}: tags should be text or a list of text, got "
            f"{_kind(raw_tags)} {_shown(raw_tags)}; stored as NULL"
        )
        tags = None
    tags_text = None if tags is None else json_text(tags)
    row = {
        "id": source_id,
        **{
            column: check.text(record.get(column), column)
            for column in (
                "identifier",
                "name",
                "description",
                "checklist_type",
                "status",
                "priority",
                "phase",
                "created_by",
                "created_at",
                "updated_at",
            )
        },
        "template_id": check.ident(record.get("checklist_template_id"), "checklist_template_id"),
        "deleted": 1 if deleted else 0,
        "tags": tags_text,
    }
    return HeaderFacts(deleted, tags_text, row), out


@dataclass(frozen=True)
class Definition:
    """A custom field definition of a checklist template (a ``custom_fields`` row)."""

    id: str
    name: str
    display_type: str | None


def join_custom_field_values(
    checklist_id: str, values: list[dict[str, Any]], definitions: list[Definition]
) -> Mapped:
    """Set ``definition_id`` and ``name`` on a checklist's custom field value rows.

    Field's values carry only their own id; they join their definitions (custom_fields of
    container Checklist and the checklist's template, by ``position``) one to one, in order.
    When the counts differ the order proves nothing, so no value is joined; a value whose
    display type differs from its definition's is not joined either. Both are problems; the
    values are kept with a NULL definition.
    """
    out = Mapped()
    for row in values:
        row["definition_id"] = None
        row["name"] = None
    if not values:
        return out
    if len(values) != len(definitions):
        out.problems.append(
            Problem(
                "checklist_custom_field_values",
                checklist_id,
                f"checklist {checklist_id} has {len(values)} custom field values but its "
                f"template defines {len(definitions)} custom fields; values are joined to "
                "definitions by position, so none is joined (definition_id NULL)",
                {"values": values, "definitions": [d.id for d in definitions]},
            )
        )
        return out
    for row, definition in zip(values, definitions, strict=True):
        if row["display_type"] != definition.display_type:
            out.problems.append(
                Problem(
                    "checklist_custom_field_values",
                    row["custom_field_id"],
                    f"checklist {checklist_id}: custom field value {row['custom_field_id']} "
                    f"is {_shown(row['display_type'])} but the definition at its position, "
                    f"{definition.id} ({definition.name!r}), is "
                    f"{_shown(definition.display_type)}; not joined (definition_id NULL)",
                    row,
                )
            )
            continue
        row["definition_id"] = definition.id
        row["name"] = definition.name
    return out
