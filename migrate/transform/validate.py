"""The rules Procore's coordination-issue sync enforces, checked before anything is sent.

A planned payload that breaks one of them is quarantined by transform instead of being refused
(or, worse, half-created) by Procore. The rules mirror seed 000/001 and the simulator's strict
reading of them: title 1-80 code points, the three enums, a YYYY-MM-DD due date, a canonical
uuid, a complete origin, an assignee from the project's coordination-issue assignees, a trade
of the company, and no attribute Procore does not know.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container, Mapping
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import Any

from migrate.mappings import PROCORE_ISSUE_TYPES, PROCORE_PRIORITIES, PROCORE_STATUSES
from migrate.transform.titles import MAX_TITLE_LENGTH

#: Keys a planned payload may carry (load adds location_id and attachment_upload_uuids).
PAYLOAD_KEYS = frozenset(
    {
        "uuid",
        "title",
        "description",
        "status",
        "priority",
        "issue_type",
        "assignee_id",
        "due_date",
        "origin",
        "trade_id",
    }
)
ORIGIN_KEYS = ("origin_type", "origin_id", "title", "deep_link_url")

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# The shapes BIM 360 Field writes dates and times in (API reference, seed 003): date-only
# values, "2013-06-04 13:00:17 -0400", ISO-8601 with T, fractional seconds and Z/offset
# ("2014-10-14T08:54:16+14:00", "+0000"), "2011-02-07 12:37:21 EST", and the US "06/05/2013"
# that date custom fields and checklist responses use. A value with a time and an offset is an
# instant: its calendar day is the one in the run's time zone ([transform] time_zone). A time
# without an offset is taken as written (a local time has no other day to shift to).
_YMD = re.compile(
    r"^(\d{4})[-/](\d{1,2})[-/](\d{1,2})(?:[T ](\d{1,2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?"
    r"\s*(Z|[+-]\d{2}:?\d{2}|[A-Z]{2,5})?)?$"
)
_MDY = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")
#: The zone abbreviations BIM 360 Field writes (US service); others are not guessed at.
_ABBREVIATIONS = {
    "UTC": 0,
    "GMT": 0,
    "EST": -5,
    "EDT": -4,
    "CST": -6,
    "CDT": -5,
    "MST": -7,
    "MDT": -6,
    "PST": -8,
    "PDT": -7,
}


def normalise_due_date(value: Any, zone: tzinfo = UTC) -> tuple[str | None, bool]:
    """(``YYYY-MM-DD`` or None, ok). None with ok=True means "no due date"; ok=False: unreadable.

    A date-time with an offset becomes its calendar day in `zone`.
    """
    if value is None:
        return None, True
    text = str(value).strip()
    if not text:
        return None, True
    if _ISO_DATE.match(text):
        try:
            date.fromisoformat(text)
        except ValueError:
            return None, False
        return text, True
    match = _YMD.match(text)
    if match:
        year, month, day = (int(part) for part in match.groups()[:3])
        hour, minute, second, offset = match.groups()[3:]
        if offset is not None:
            return _day_in_zone(year, month, day, (hour, minute, second), offset, zone)
    else:
        match = _MDY.match(text)
        if not match:
            return None, False
        month, day, year = (int(part) for part in match.groups())
    try:
        return date(year, month, day).isoformat(), True
    except ValueError:
        return None, False


def _day_in_zone(
    year: int,
    month: int,
    day: int,
    clock: tuple[str, str, str | None],
    offset: str,
    zone: tzinfo,
) -> tuple[str | None, bool]:
    if offset == "Z":
        minutes = 0
    elif offset[0] in "+-":
        digits = offset[1:].replace(":", "")
        minutes = int(digits[:2]) * 60 + int(digits[2:])
        if offset[0] == "-":
            minutes = -minutes
    elif offset in _ABBREVIATIONS:
        minutes = _ABBREVIATIONS[offset] * 60
    else:
        return None, False
    hour, minute, second = clock
    try:
        moment = datetime(
            year,
            month,
            day,
            int(hour),
            int(minute),
            int(second or 0),
            tzinfo=timezone(timedelta(minutes=minutes)),
        )
        return moment.astimezone(zone).date().isoformat(), True
    except (ValueError, OverflowError):
        return None, False


def payload_problems(
    payload: Mapping[str, Any],
    *,
    assignee_ids: Container[int],
    location_resolvable: bool = True,
    trade_ids: Container[int] = frozenset(),
) -> dict[str, list[str]]:
    """Per-field messages shaped like Procore's ``errors`` object; empty: the sync would accept it.

    `location_resolvable` is False when the issue names a planned location that does not exist
    (load turns location_source_id into location_id, so the id itself is not checked here).
    """
    if location_resolvable and _acceptable(payload, assignee_ids, trade_ids):
        return {}
    errors: dict[str, list[str]] = {}

    def error(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    for key in payload:
        if key not in PAYLOAD_KEYS:
            error(key, "is not a permitted attribute")
    title = payload.get("title")
    if not isinstance(title, str) or not title.strip():
        error("title", "can't be blank")
    elif len(title) > MAX_TITLE_LENGTH:  # code points, as Ruby counts them
        error("title", f"is too long (maximum is {MAX_TITLE_LENGTH} characters)")
    description = payload.get("description")
    if description is not None and not isinstance(description, str):
        error("description", "must be a string")
    _check_enum(payload, "status", PROCORE_STATUSES, error, required=True)
    _check_enum(payload, "priority", PROCORE_PRIORITIES, error)
    _check_enum(payload, "issue_type", PROCORE_ISSUE_TYPES, error)
    due = payload.get("due_date")
    if due is not None:
        ok = isinstance(due, str) and bool(_ISO_DATE.match(due))
        if ok:
            try:
                date.fromisoformat(due)
            except ValueError:
                ok = False
        if not ok:
            error("due_date", "must be a date formatted YYYY-MM-DD")
    raw_uuid = payload.get("uuid")
    if not isinstance(raw_uuid, str) or not _UUID.match(raw_uuid):
        error("uuid", "is not a valid UUID")
    origin = payload.get("origin")
    if origin is not None and (
        not isinstance(origin, Mapping)
        or set(origin) != set(ORIGIN_KEYS)
        or any(not isinstance(origin[key], str) or not origin[key] for key in ORIGIN_KEYS)
    ):
        error(
            "origin",
            "must be an object with string origin_type, origin_id, title and deep_link_url",
        )
    if "assignee_id" in payload:
        assignee = payload["assignee_id"]
        if (
            isinstance(assignee, bool)
            or not isinstance(assignee, int)
            or (assignee not in assignee_ids)
        ):
            error("assignee_id", "is not a permitted assignee on this project")
    if "trade_id" in payload:
        trade = payload["trade_id"]
        if isinstance(trade, bool) or not isinstance(trade, int) or trade not in trade_ids:
            error("trade_id", "is not a trade of this company")
    if not location_resolvable:
        error("location_id", "must be a location in this project")
    return errors


_STATUS_SET = frozenset(PROCORE_STATUSES)
_PRIORITY_SET = frozenset(PROCORE_PRIORITIES)
_ISSUE_TYPE_SET = frozenset(PROCORE_ISSUE_TYPES)
_ORIGIN_KEY_SET = frozenset(ORIGIN_KEYS)


def _acceptable(
    payload: Mapping[str, Any], assignee_ids: Container[int], trade_ids: Container[int]
) -> bool:
    """The same rules as payload_problems, answered yes/no (every planned payload is checked,
    almost always passes, and only a failure needs the detailed messages)."""
    get = payload.get
    title, due, origin, assignee = (
        get("title"),
        get("due_date"),
        get("origin"),
        get("assignee_id"),
    )
    if not (
        payload.keys() <= PAYLOAD_KEYS
        and type(title) is str
        and len(title) <= MAX_TITLE_LENGTH
        and title.strip()
        and get("status") in _STATUS_SET
        and ("priority" not in payload or payload["priority"] in _PRIORITY_SET)
        and ("issue_type" not in payload or payload["issue_type"] in _ISSUE_TYPE_SET)
        and (get("description") is None or type(get("description")) is str)
        and type(get("uuid")) is str
        and _UUID.match(payload["uuid"])
    ):
        return False
    if due is not None:
        if type(due) is not str or not _ISO_DATE.match(due):
            return False
        try:
            date.fromisoformat(due)
        except ValueError:
            return False
    if origin is not None and not (
        isinstance(origin, Mapping)
        and origin.keys() == _ORIGIN_KEY_SET
        and all(type(origin[key]) is str and origin[key] for key in ORIGIN_KEYS)
    ):
        return False
    if "trade_id" in payload and not (
        type(payload["trade_id"]) is int and payload["trade_id"] in trade_ids
    ):
        return False
    return "assignee_id" not in payload or (type(assignee) is int and assignee in assignee_ids)


def _check_enum(
    payload: Mapping[str, Any],
    field: str,
    choices: tuple[str, ...],
    error: Callable[[str, str], None],
    *,
    required: bool = False,
) -> None:
    if field not in payload:
        if required:
            error(field, "can't be blank")
        return
    if payload[field] not in choices:
        error(field, "is not included in the list")


def describe_problems(errors: Mapping[str, list[str]]) -> str:
    """``title is too long (…); status is not included in the list`` for a quarantine reason."""
    return "; ".join(
        f"{field} {message}" for field, messages in errors.items() for message in messages
    )
