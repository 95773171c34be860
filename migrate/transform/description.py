"""Procore coordination-issue descriptions: the Field text plus a "From BIM 360 Field" footer.

Procore has no place for most of what a Field issue carries (identifier, source status,
responsible company, custom fields, comments, status history…). The footer lists all of it in
plain text so nothing is silently dropped; only fields that fields.csv maps elsewhere or marks
``drop`` stay out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from migrate.mappings import Mappings, custom_field_entries, field_value, split_path

FOOTER_HEADING = "From BIM 360 Field"
SEPARATOR = "---"
INDENT = "  "

# C0/C1 controls except tab and newline, and lone surrogates: Procore stores text, not bytes.
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff]")
_TIMESTAMP = re.compile(
    r"^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?))?\s*(Z|[+-]\d{2}:?\d{2})?$"
)


def build_description(
    record: Mapping[str, Any],
    mappings: Mappings,
    extras: Mapping[str, Any] | None = None,
) -> str:
    """The description body (full text of the field mapped to description) and the footer.

    `extras` may hold ``assignee_note`` (why the Field assignee was not carried over),
    ``attachments_not_migrated`` ([{"name", "reason"}]) and ``custom_field_definitions``
    ([{"id", "name", "position"}] or `index_definitions` of it, for cf-- ids and ordering).
    Same input → same bytes.
    """
    extras = extras or {}
    definitions = extras.get("custom_field_definitions")
    body = clean_text(field_value(record, mappings.fields.description, definitions)).strip()
    footer = "\n".join([FOOTER_HEADING, *footer_lines(record, mappings, extras)])
    if not body:
        return footer
    return f"{body}\n\n{SEPARATOR}\n{footer}"


def footer_lines(
    record: Mapping[str, Any], mappings: Mappings, extras: Mapping[str, Any] | None = None
) -> list[str]:
    """The footer below its heading, one item per line (multi-line values indented)."""
    extras = extras or {}
    fields = mappings.fields
    lines: list[str] = []
    for field_id, label, value_of in _STANDARD_ITEMS:
        target = fields.target_for(field_id)
        if target == "priority":
            # Shown only when priority.csv sends no priority for a value Field had.
            source = _text(record.get("priority"))
            if source and mappings.priority_for(source).value is None:
                target = "footer"
        if target == "footer":
            lines += _item(label, value_of(record))
    created_by = _text(record.get("created_by"))
    created = _text(record.get("created_at")) + (f" by {created_by}" if created_by else "")
    lines += _item("Created", created)
    lines += _item("Closed", _text(record.get("closed_at")))
    if record.get("voided"):
        lines += _item("Voided in BIM 360 Field", "yes")
    lines += _item("Assignee not carried over", _text(extras.get("assignee_note")))

    custom = []
    for entry in custom_field_entries(record, extras.get("custom_field_definitions")):
        if fields.target_for(entry.id, entry.name) == "footer":
            custom += _item(entry.name, _text(entry.value), INDENT)
    lines += _section("Custom fields", custom)
    lines += _section("Comments", _comment_lines(record.get("comments")))
    lines += _section("Status history", _history_lines(record.get("status_history")))
    lines += _section(
        "Attachments not migrated", _attachment_lines(extras.get("attachments_not_migrated"))
    )
    return lines


def clean_text(value: Any) -> str:
    """Text with newlines normalised to ``\\n`` and control characters removed."""
    text = _text(value)
    if text.isprintable():
        return text
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROLS.sub("", text)


# -- footer pieces -------------------------------------------------------------------------


def _issue_type(record: Mapping[str, Any]) -> str:
    names = (_text(record.get("category_name")), _text(record.get("issue_type_name")))
    return " > ".join(name for name in names if name)


def _area(record: Mapping[str, Any]) -> str:
    return " > ".join(split_path(_text(record.get("area_path"))))


def _field(key: str) -> Callable[[Mapping[str, Any]], str]:
    return lambda record: _text(record.get(key))


# In footer order; shown when fields.csv leaves the field in the footer (the default).
_STANDARD_ITEMS: tuple[tuple[str, str, Callable[[Mapping[str, Any]], str]], ...] = (
    ("f--identifier", "Identifier", _field("identifier")),
    ("f--issue_type_id", "Issue type", _issue_type),
    ("f--status", "Status", _field("status")),
    ("f--priority", "Priority", _field("priority")),
    ("f--responsible_company_id", "Responsible company", _field("responsible_company_name")),
    ("f--root_cause_id", "Root cause", _field("root_cause_name")),
    ("f--area_id", "Area", _area),
    ("f--location_detail", "Location detail", _field("location_detail")),
    ("f--description", "Description", _field("description")),
    ("f--due_date", "Due date", _field("due_date")),
    ("f--assigned_to", "Assigned to", _field("assigned_to_email")),
)


def _comment_lines(comments: Iterable[Mapping[str, Any]] | None) -> list[str]:
    lines: list[str] = []
    for comment in _oldest_first(comments, "created_at"):
        heading = " ".join(
            value for value in (_text(comment.get("created_at")), _text(comment.get("created_by")))
            if value
        )
        text = comment.get("text")
        if text is None:
            text = comment.get("comment_text")  # the Field API's own key
        lines.append(f"{INDENT}{heading or '(no date)'}:")
        lines += _indented(clean_text(text).strip() or "(no text)", INDENT * 2)
    return lines


def _history_lines(history: Iterable[Mapping[str, Any]] | None) -> list[str]:
    lines = []
    for change in _oldest_first(history, "start_dt"):
        when = _text(change.get("start_dt")) or "(no date)"
        previous, status = _text(change.get("previous_status")), _text(change.get("status"))
        step = f"{previous} → {status}" if previous else status or "(no status)"
        user = _text(change.get("user"))
        lines.append(f"{INDENT}{when}: {step}" + (f" by {user}" if user else ""))
    return lines


def _attachment_lines(attachments: Iterable[Mapping[str, Any]] | None) -> list[str]:
    lines = []
    for attachment in attachments or ():
        name = _text(attachment.get("name")) or "(unnamed)"
        reason = _text(attachment.get("reason"))
        lines += _item(name, reason or "not migrated", INDENT)
    return lines


# -- formatting ----------------------------------------------------------------------------


def _text(value: Any) -> str:
    if type(value) is str:
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple):
        return ", ".join(_text(item) for item in value)
    return value if isinstance(value, str) else str(value)


def _indented(text: str, indent: str) -> list[str]:
    return [f"{indent}{line}".rstrip() for line in text.split("\n")]


def _item(label: str, value: str, indent: str = "") -> list[str]:
    """``Label: value``; continuation lines of a multi-line value are indented under it."""
    if not value:
        return []
    value = clean_text(value).strip()
    if not value:
        return []
    first, *rest = value.split("\n")
    # Labels can be source data too (custom field names, file names): one clean line.
    label = clean_text(label).replace("\n", " ")
    return [
        f"{indent}{label}: {first}".rstrip(),
        *(f"{indent}{INDENT}{line}".rstrip() for line in rest),
    ]


def _section(title: str, lines: Sequence[str]) -> list[str]:
    return [f"{title}:", *lines] if lines else []


def _oldest_first(
    items: Iterable[Mapping[str, Any]] | None, date_key: str
) -> list[Mapping[str, Any]]:
    """Sorted by date (any offset), ties and undated items keeping their given order."""
    items = list(items or ())
    if len(items) < 2:
        return items
    keyed = []
    for index, item in enumerate(items):
        moment = parse_timestamp(item.get(date_key))
        keyed.append(((0, moment, index) if moment is not None else (1, 0.0, index), item))
    keyed.sort(key=lambda pair: pair[0])
    return [item for _key, item in keyed]


def parse_timestamp(value: Any) -> float | None:
    """Seconds since the epoch for ``2013-06-04 13:01:18 -0400`` / ISO-8601; None if unreadable.

    A time without an offset is taken as UTC so that mixed inputs still compare.
    """
    match = _TIMESTAMP.match(_text(value).strip())
    if not match:
        return None
    day, time, offset = match.groups()
    text = f"{day}T{time or '00:00'}"
    if offset and offset != "Z":
        text += offset if ":" in offset else f"{offset[:3]}:{offset[3:]}"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
