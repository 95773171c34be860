"""Procore coordination-issue descriptions: the Field text plus a "From BIM 360 Field" footer.

Procore has no place for most of what a Field issue carries (identifier, source status,
responsible company, custom fields, comments, status history…). The footer lists all of it in
plain text so nothing is silently dropped; only fields that fields.csv maps elsewhere or marks
``drop`` stay out.

`DescriptionWriter` answers every per-run question (which field goes where, its label, the
order of custom fields) once, so that writing one description is string work only: transform
writes one per issue and it is the largest part of the per-issue cost.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from migrate.mappings import (
    STANDARD_FIELDS,
    Mappings,
    custom_field_entries,
    field_value,
    index_definitions,
    split_path,
)

FOOTER_HEADING = "From BIM 360 Field"
SEPARATOR = "---"
INDENT = "  "

# C0/C1 controls except tab and newline, and lone surrogates: Procore stores text, not bytes.
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff]")
_TIMESTAMP = re.compile(
    r"^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?))?\s*(Z|[+-]\d{2}:?\d{2})?$"
)
# Distinct custom-field layouts remembered per run (a project has a handful; hostile input
# could have one per record, so the memo is bounded).
_MAX_LAYOUTS = 4096
_ABSENT = object()


def build_description(
    record: Mapping[str, Any],
    mappings: Mappings,
    extras: Mapping[str, Any] | None = None,
) -> str:
    """The description body (full text of the field mapped to description) and the footer.

    `extras` may hold ``assignee_note`` (why the Field assignee was not carried over),
    ``attachments_not_migrated`` ([{"name", "reason"}]) and ``custom_field_definitions``
    ([{"id", "name", "position"}] or `index_definitions` of it, for cf-- ids and ordering).
    Same input → same bytes. For many records, build one `DescriptionWriter` and reuse it.
    """
    extras = extras or {}
    writer = DescriptionWriter(mappings, extras.get("custom_field_definitions"))
    return writer.describe(
        record, _text(extras.get("assignee_note")), extras.get("attachments_not_migrated")
    )


def footer_lines(
    record: Mapping[str, Any], mappings: Mappings, extras: Mapping[str, Any] | None = None
) -> list[str]:
    """The footer below its heading, one item per line (multi-line values indented)."""
    extras = extras or {}
    writer = DescriptionWriter(mappings, extras.get("custom_field_definitions"))
    return writer.footer_lines(
        record, _text(extras.get("assignee_note")), extras.get("attachments_not_migrated")
    )


class DescriptionWriter:
    """`build_description` for one run's mappings and custom field definitions."""

    def __init__(
        self,
        mappings: Mappings,
        definitions: Iterable[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self._mappings = mappings
        self._definitions = index_definitions(definitions)
        fields = mappings.fields
        body_ref = fields.description
        standard = STANDARD_FIELDS.get(body_ref.strip().lower()) if body_ref else None
        # The usual case, a standard field, is one dict look-up; a custom field is searched.
        self._body_key = standard.record_key if standard is not None else None
        self._body_ref = body_ref
        # (line prefix, record key or None, value function or None, only if priority unsent)
        self._standard: list[
            tuple[str, str | None, Callable[[Mapping[str, Any]], str] | None, bool]
        ] = []
        for field_id, label, shown in _STANDARD_ITEMS:
            target = fields.target_for(field_id)
            if target in ("footer", "priority"):
                key, value_of = (shown, None) if isinstance(shown, str) else (None, shown)
                self._standard.append((_prefix(label), key, value_of, target == "priority"))
        self._priority_unsent: dict[str, bool] = {}
        self._layouts: dict[tuple[Any, ...], tuple[tuple[str, str | None], ...]] = {}
        self._labels: dict[str, str] = {}

    def describe(
        self,
        record: Mapping[str, Any],
        assignee_note: str = "",
        attachments_not_migrated: Iterable[Mapping[str, Any]] | None = None,
        unsent: Iterable[tuple[str, str]] = (),
        files: Iterable[Mapping[str, Any]] = (),
    ) -> str:
        """The description of `record` (see `build_description`); `unsent`: (label, value)
        footer lines for values Procore did not take; `files`: [{name, caption, tags}] of
        migrated files (Procore attachments have no caption or tags)."""
        if self._body_key is not None:
            raw_body = record.get(self._body_key)
        else:
            raw_body = field_value(record, self._body_ref, self._definitions)
        body = clean_text(raw_body).strip()
        footer = "\n".join(
            [
                FOOTER_HEADING,
                *self.footer_lines(record, assignee_note, attachments_not_migrated, unsent, files),
            ]
        )
        if not body:
            return footer
        return f"{body}\n\n{SEPARATOR}\n{footer}"

    def footer_lines(
        self,
        record: Mapping[str, Any],
        assignee_note: str = "",
        attachments_not_migrated: Iterable[Mapping[str, Any]] | None = None,
        unsent: Iterable[tuple[str, str]] = (),
        files: Iterable[Mapping[str, Any]] = (),
    ) -> list[str]:
        """The footer below its heading, one item per line (multi-line values indented)."""
        lines: list[str] = []
        get = record.get
        for prefix, key, value_of, only_if_unsent in self._standard:
            if key is not None:
                value = get(key)
                if type(value) is not str:
                    value = _text(value)
            else:
                value = value_of(record)  # type: ignore[misc]
            if only_if_unsent and not self._priority_not_sent(value):
                continue
            if not value:
                continue
            if value.isprintable():  # _add's common case, inline: most records take it 11 times
                value = value.strip()
                if value:
                    lines.append(prefix + value)
            else:
                _add(lines, prefix, value)
        created_by = _text(record.get("created_by"))
        created = _text(record.get("created_at")) + (f" by {created_by}" if created_by else "")
        _add(lines, "Created: ", created)
        _add(lines, "Closed: ", _text(record.get("closed_at")))
        if record.get("voided"):
            lines.append("Voided in BIM 360 Field: yes")
        _add(lines, "Assignee not carried over: ", assignee_note)
        for label, value in unsent:
            _add(lines, _prefix(label), value)

        custom = self._custom_lines(record.get("custom_fields"))
        if custom:
            lines.append("Custom fields:")
            lines += custom
        comments = record.get("comments")
        if comments:
            lines += _section("Comments", _comment_lines(comments))
        history = record.get("status_history")
        if history:
            lines += _section("Status history", _history_lines(history))
        raised_from = record.get("raised_from")
        if raised_from:
            lines += raised_from_section(raised_from)
        if files:
            lines += file_section(files)
        if attachments_not_migrated:
            lines += _section(
                "Attachments not migrated", _attachment_lines(attachments_not_migrated)
            )
        return lines

    def _priority_not_sent(self, source: str) -> bool:
        # Shown only when priority.csv sends no priority for a value Field had.
        if not source:
            return False
        answer = self._priority_unsent.get(source)
        if answer is None:
            answer = self._priority_unsent[source] = (
                self._mappings.priority_for(source).value is None
            )
        return answer

    def _custom_lines(self, values: Any) -> list[str]:
        if not values:
            return []
        layout = self._layout(values)
        lines: list[str] = []
        for name, prefix in layout:
            if prefix is None:
                continue
            raw = values[name]
            value = raw.get("value") if type(raw) is dict or isinstance(raw, Mapping) else raw
            if type(value) is not str:
                value = _text(value)
            if value:
                _add(lines, prefix, value, INDENT)
        return lines

    def _layout(self, values: Mapping[str, Any]) -> tuple[tuple[str, str | None], ...]:
        """(name, line prefix or None when not in the footer) in footer order.

        The order and targets depend only on the names, the ids and positions the values
        carry, and the run's definitions, so they are worked out once per distinct layout.
        """
        key = _layout_key(values)
        layout = self._layouts.get(key) if key is not None else None
        if layout is None:
            fields = self._mappings.fields
            layout = tuple(
                (
                    entry.name,
                    self._label_prefix(entry.name)
                    if fields.target_for(entry.id, entry.name) == "footer"
                    else None,
                )
                for entry in custom_field_entries({"custom_fields": values}, self._definitions)
            )
            if key is not None:
                if len(self._layouts) >= _MAX_LAYOUTS:
                    self._layouts.clear()
                self._layouts[key] = layout
        return layout

    def _label_prefix(self, name: str) -> str:
        prefix = self._labels.get(name)
        if prefix is None:
            prefix = self._labels[name] = INDENT + _prefix(name)
        return prefix


def _layout_key(values: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """What a custom-field layout depends on; None for ids or positions of unusual types
    (1, 1.0 and True are equal keys but not equal ids)."""
    parts: list[Any] = []
    for name, raw in values.items():
        if type(raw) is dict or isinstance(raw, Mapping):
            field_id, position = raw.get("id"), raw.get("position", _ABSENT)
            if not (field_id is None or type(field_id) is str) or not (
                position is _ABSENT or position is None or type(position) is int
            ):
                return None
            parts.append((name, field_id, position))
        else:
            parts.append(name)
    return tuple(parts)


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
    return _area_text(_text(record.get("area_path")))


@lru_cache(maxsize=4096)  # a project has a few hundred areas; issues repeat them
def _area_text(path: str) -> str:
    return " > ".join(split_path(path))


# In footer order; shown when fields.csv leaves the field in the footer (the default). A field
# is shown as the text of a record key, or as what a function makes of the record.
_STANDARD_ITEMS: tuple[tuple[str, str, str | Callable[[Mapping[str, Any]], str]], ...] = (
    ("f--identifier", "Identifier", "identifier"),
    ("f--issue_type_id", "Issue type", _issue_type),
    ("f--status", "Status", "status"),
    ("f--priority", "Priority", "priority"),
    ("f--responsible_company_id", "Responsible company", "responsible_company_name"),
    ("f--root_cause_id", "Root cause", "root_cause_name"),
    ("f--area_id", "Area", _area),
    ("f--location_detail", "Location detail", "location_detail"),
    ("f--description", "Description", "description"),
    ("f--due_date", "Due date", "due_date"),
    ("f--assigned_to", "Assigned to", "assigned_to_email"),
)


def _comment_lines(comments: Iterable[Mapping[str, Any]]) -> list[str]:
    lines: list[str] = []
    for comment in _oldest_first(comments, "created_at"):
        heading = " ".join(
            value
            for value in (_text(comment.get("created_at")), _text(comment.get("created_by")))
            if value
        )
        text = comment.get("text")
        if text is None:
            text = comment.get("comment_text")  # the Field API's own key
        lines.append(f"{INDENT}{heading or '(no date)'}:")
        text = clean_text(text).strip() or "(no text)"
        if "\n" in text:
            lines += _indented(text, INDENT * 2)
        else:
            lines.append(f"{INDENT * 2}{text}")
    return lines


def _history_lines(history: Iterable[Mapping[str, Any]]) -> list[str]:
    lines = []
    for change in _oldest_first(history, "start_dt"):
        get = change.get
        when, previous, status, user = (
            get("start_dt"),
            get("previous_status"),
            get("status"),
            get("user"),
        )
        if not (type(when) is type(previous) is type(status) is type(user) is str):
            when, previous, status, user = (
                _text(when),
                _text(previous),
                _text(status),
                _text(user),
            )
        step = f"{previous} → {status}" if previous else status or "(no status)"
        lines.append(
            f"{INDENT}{when or '(no date)'}: {step} by {user}"
            if user
            else f"{INDENT}{when or '(no date)'}: {step}"
        )
    return lines


def _attachment_lines(attachments: Iterable[Mapping[str, Any]]) -> list[str]:
    """``name: reason; caption "…"; tags a, b`` per file (a migrated file has no reason)."""
    lines: list[str] = []
    for attachment in attachments:
        name = _text(attachment.get("name")) or "(unnamed)"
        parts = [_text(attachment.get("reason"))]
        caption, tags = _text(attachment.get("caption")), _text(attachment.get("tags"))
        if caption:
            parts.append(f'caption "{caption}"')
        if tags:
            parts.append(f"tags {tags}")
        text = "; ".join(part for part in parts if part)
        lines += _item(name, text or "not migrated", INDENT)
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


def _prefix(label: str) -> str:
    # Labels can be source data too (custom field names, file names): one clean line.
    return clean_text(label).replace("\n", " ") + ": "


def _add(lines: list[str], prefix: str, value: str, indent: str = "") -> None:
    """Append ``prefix value``; continuation lines of a multi-line value are indented under it.

    `prefix` is `indent`, the clean label and ": ".
    """
    if not value:
        return
    if value.isprintable():  # one line, nothing to clean: the common case
        value = value.strip()
        if value:
            lines.append(prefix + value)
        return
    value = clean_text(value).strip()
    if not value:
        return
    first, *rest = value.split("\n")
    lines.append(f"{prefix}{first}".rstrip())
    lines += [f"{indent}{INDENT}{line}".rstrip() for line in rest]


def _item(label: str, value: str, indent: str = "") -> list[str]:
    """``Label: value``; continuation lines of a multi-line value are indented under it."""
    lines: list[str] = []
    _add(lines, indent + _prefix(label), value, indent)
    return lines


def _section(title: str, lines: Sequence[str]) -> list[str]:
    return [f"{title}:", *lines] if lines else []


def _oldest_first(
    items: Iterable[Mapping[str, Any]] | None, date_key: str
) -> list[Mapping[str, Any]]:
    """Sorted by date (any offset), ties and undated items keeping their given order."""
    items = list(items or ())
    if len(items) < 2 or _already_in_order([item.get(date_key) for item in items]):
        return items
    keyed = []
    for index, item in enumerate(items):
        moment = parse_timestamp(item.get(date_key))
        keyed.append(((0, moment, index) if moment is not None else (1, 0.0, index), item))
    keyed.sort(key=lambda pair: pair[0])
    return [item for _key, item in keyed]


def _already_in_order(values: Sequence[Any]) -> bool:
    """True when sorting `values` by `parse_timestamp` would leave them as they are.

    Staging hands over comments and history ordered by their date text; when every value is
    a valid timestamp written the same way (same separator, time length and offset), text
    order is time order and nothing needs parsing. Anything else: False (sort them).
    """
    first = values[0]
    if type(first) is not str:
        return False
    try:
        joined = "\n".join(values)
    except TypeError:  # not all text
        return False
    if joined.count("\n") != len(values) - 1:  # a value of several lines is no timestamp
        return False
    shape = _TIMESTAMP.match(first)
    if shape is None or not _valid_offset(shape.group(3)):
        return False
    time = shape.group(2) or ""
    if len(time) not in (0, 5, 8):  # fractions of a second: leave them to the parser
        return False
    layout = _layout_pattern(
        first[10:11] if time else "", len(time), first[10 + (1 + len(time) if time else 0) :]
    )
    return layout.fullmatch(joined) is not None and sorted(values) == list(values)


# A calendar day Python accepts, without 02-29 (leap years are left to the parser).
_DAY = (
    r"(?!0000)\d{4}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1\d|2[0-8])"
    r"|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)"
)
_CLOCK = {0: "", 5: r"(?:[01]\d|2[0-3]):[0-5]\d", 8: r"(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d"}


@lru_cache(maxsize=64)
def _layout_pattern(separator: str, time_length: int, tail: str) -> re.Pattern[str]:
    """Lines of valid timestamps that all look like the first one (see _already_in_order)."""
    one = _DAY + re.escape(separator) + _CLOCK[time_length] + re.escape(tail)
    return re.compile(f"{one}(?:\n{one})*")


@lru_cache(maxsize=64)
def _valid_offset(offset: str | None) -> bool:
    return parse_timestamp(f"2000-01-01T00:00{offset or ''}") is not None


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


# -- footer pieces other footers share (inspections, issue 14) -------------------------------


def labelled(label: str, value: str, indent: str = "") -> list[str]:
    """``Label: value`` as footer lines (none for an empty value; continuation lines indented)."""
    return _item(label, value, indent)


def comment_section(comments: Iterable[Mapping[str, Any]]) -> list[str]:
    """The "Comments:" section (oldest first, author and date on each), or nothing."""
    return _section("Comments", _comment_lines(comments))


def attachment_section(attachments: Iterable[Mapping[str, Any]]) -> list[str]:
    """The "Attachments not migrated:" section (``[{"name", "reason"}]``), or nothing."""
    return _section("Attachments not migrated", _attachment_lines(attachments))


def file_section(files: Iterable[Mapping[str, Any]]) -> list[str]:
    """The "Files:" section: migrated files' captions and tags (``[{"name", "caption",
    "tags"}]``), which Procore's files do not take, or nothing."""
    return _section("Files", _attachment_lines(files))


def raised_from_section(lines: Sequence[str]) -> list[str]:
    """The "Raised from inspection items:" section of a coordination issue, or nothing."""
    return _section("Raised from inspection items", [INDENT + line for line in lines])
