"""Load and validate the mapping files in ``mappings/`` and answer per-record lookups.

The files are CSV so migration engineers can edit them in a spreadsheet: UTF-8 (a BOM is
fine), a header row, ``#`` comment lines and blank lines allowed, extra columns ignored.
`load_mappings` reads every file and reports every problem at once, with ``file:line``.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from migrate.errors import ConfigError
from migrate.title_template import TITLE_PLACEHOLDERS, template_problems

# Seed 000 enum values, in the order the seed lists them (priority in natural order).
PROCORE_STATUSES = (
    "blocked",
    "open",
    "ready_for_review",
    "moved_to_observation",
    "unblocked",
    "closed",
)
PROCORE_PRIORITIES = ("low", "medium", "high", "critical")
PROCORE_ISSUE_TYPES = (
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
SKIP = "skip"
NO_PRIORITY = "(none)"
ANY = "*"
#: Procore inspection statuses (OAS enum of checklist list ``status``).
PROCORE_INSPECTION_STATUSES = ("open", "in_review", "closed")
#: Procore response ``corresponding_status`` values (OAS enum of item response sets).
PROCORE_RESPONSE_STATUSES = ("yes", "no", "n/a")
#: In inspection_types.csv: keep the BIM 360 Field checklist type's own name.
SAME_NAME = "*"

FIELD_TARGETS = ("title_template", "description", "due_date", "assignee", "trade", "footer", "drop")
# Targets that at most one field can fill.
SINGLE_TARGETS = ("title_template", "description", "due_date", "assignee", "trade")


class StandardField(NamedTuple):
    label: str
    record_key: str


#: BIM 360 Field standard issue fields → footer label and key of the normalised record.
STANDARD_FIELDS: dict[str, StandardField] = {
    "f--identifier": StandardField("Identifier", "identifier"),
    "f--issue_type_id": StandardField("Issue type", "issue_type_name"),
    "f--description": StandardField("Description", "description"),
    "f--responsible_company_id": StandardField("Responsible company", "responsible_company_name"),
    "f--priority": StandardField("Priority", "priority"),
    "f--status": StandardField("Status", "status"),
    "f--area_id": StandardField("Area", "area_path"),
    "f--location_detail": StandardField("Location detail", "location_detail"),
    "f--root_cause_id": StandardField("Root cause", "root_cause_name"),
    "f--assigned_to": StandardField("Assigned to", "assigned_to_email"),
    "f--due_date": StandardField("Due date", "due_date"),
}
# Fields whose value reaches Procore through their own mapping file: they may only be shown in
# the footer or dropped, never used as text for another target.
_FIELDS_WITH_OWN_FILE = {
    "f--status": "status.csv",
    "f--priority": "priority.csv",
    "f--issue_type_id": "issue_types.csv",
    "f--area_id": "locations.csv",
}
# Without a row, a field goes to the footer, except priority: priority.csv carries it over.
_IMPLICIT_TARGETS = {"f--priority": "priority"}

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")

REQUIRED_FILES = ("status.csv", "priority.csv", "issue_types.csv", "fields.csv")
#: May be missing: an absent optional file counts as its default (DEFAULT_FILES), so a mapping
#: folder written before a file existed keeps working.
OPTIONAL_FILES = (
    "users.csv",
    "locations.csv",
    "inspection_types.csv",
    "inspection_statuses.csv",
    "responses.csv",
    "trades.csv",
)

DEFAULT_FILES: dict[str, str] = {
    "status.csv": """\
# BIM 360 Field issue status -> Procore coordination issue status.
# procore_status: blocked / open / ready_for_review / moved_to_observation / unblocked / closed
# or skip (the issue is not migrated; the plan counts it as skipped by mapping).
field_status,procore_status
Draft,open
Open,open
Work Completed,ready_for_review
Ready to Inspect,ready_for_review
Not Approved,open
In Dispute,blocked
Closed,closed
Void,skip
""",
    "priority.csv": """\
# BIM 360 Field priority -> Procore priority: low / medium / high / critical
# or (none) to send no priority. Letter case is ignored; the row with an empty
# field_priority is for issues that have no priority.
field_priority,procore_priority
,(none)
Low,low
Medium,medium
High,high
Critical,critical
""",
    "issue_types.csv": """\
# BIM 360 Field issue category and type -> Procore issue type. * matches anything.
# The most specific row wins: category and type / category and * / * and type / * and *.
# procore_issue_type: building_code / existing_condition / clash / other / coordination /
# constructability / client_feedback / requirement_change / design_review
# Field's standard categories: work found incomplete or faulty (Punch List, Work List,
# Commissioning) is constructability; conformance to specification, code and safety rules
# (QA/QC, Safety) is building_code. `migrate plan` warns when most issues end up as other.
category,type,procore_issue_type
Coordination,*,coordination
Design,*,design_review
Clash,*,clash
Punch List,*,constructability
Work List,*,constructability
Commissioning,*,constructability
QA/QC,*,building_code
Safety,*,building_code
*,Clash,clash
*,Code Violation,building_code
*,Existing Condition,existing_condition
*,Constructability,constructability
*,Owner Request,client_feedback
*,Design Change,requirement_change
*,*,other
""",
    "users.csv": """\
# Optional. BIM 360 Field user email -> Procore user (email or numeric id).
# Emails without a row are matched to the project's coordination-issue assignees in
# Procore ignoring letter case.
field_email,procore
""",
    "locations.csv": """\
# Optional. BIM 360 Field area path -> Procore location path (node names joined by >).
# A row also moves what lies below the area: Bldg A -> North Building turns
# Bldg A>Level 1 into North Building>Level 1.
field_path,procore_path
""",
    "trades.csv": """\
# Optional. The BIM 360 Field value of the field fields.csv sends to trade -> Procore trade
# name (one of the company's trades). Values without a row are matched to the trades by
# name ignoring letter case; a value that matches none stays in the description.
field_trade,procore_trade
""",
    "fields.csv": """\
# Where BIM 360 Field fields go in Procore.
# field: a standard field id (f--...) / a custom field id (cf--...) / a custom field name.
# target: description / due_date / assignee / trade / footer / drop (left out on purpose)
# or title_template: then field holds the template; placeholders are {identifier}
# {description} {type} {category} {area} {location_detail} {status}.
# Fields without a row go to the From BIM 360 Field footer of the description.
field,target
{identifier} {description},title_template
f--description,description
f--due_date,due_date
f--assigned_to,assignee
""",
    "inspection_types.csv": """\
# BIM 360 Field checklist type -> Procore inspection type (created in Procore when missing).
# field_checklist_type: a Field checklist type, * for any other type, or empty for checklists
# without a type. procore_inspection_type: the type's name in Procore, or * to keep the Field
# type's own name. Letter case and extra spaces are ignored.
field_checklist_type,procore_inspection_type
,Inspection
*,*
""",
    "inspection_statuses.csv": """\
# BIM 360 Field checklist status -> Procore inspection status: open / in_review / closed
# or skip (the checklist is not migrated; the plan counts it as skipped by mapping).
# Letter case is ignored; a row with an empty field_status is for checklists without one.
field_status,procore_status
Open,open
In Progress,open
Closed,closed
""",
    "responses.csv": """\
# BIM 360 Field checklist answer -> the status it gives a Procore inspection item:
# yes (conforming) / no (deficient) / n/a (not applicable). Letter case is ignored.
# A drop-down or single-select item whose every answer has a row here, with one answer for
# each status it uses and both a yes and a no (+ / - / N/A, Yes / No / N/A), becomes a Procore
# conforming / deficient / not applicable item. Any other such item, and every checkbox,
# becomes a multiple-choice item: its answers take their status from here, else from BIM 360
# Field's own conforming flag for that answer, else yes.
field_response,corresponding_status
+,yes
-,no
N/A,n/a
NA,n/a
Yes,yes
No,no
Pass,yes
Fail,no
OK,yes
Checked,yes
Not checked,no
""",
}


class MappingError(ConfigError):
    """The mapping files have problems; `problems` lists each one as ``file:line: …``."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        if len(self.problems) == 1:
            self._text = self.problems[0]
        else:
            self._text = f"{len(self.problems)} problems in the mapping files:\n" + "\n".join(
                f"  {problem}" for problem in self.problems
            )
        super().__init__(self._text)

    def __str__(self) -> str:
        # One problem per line: a single line would be unreadable with a dozen of them.
        return self._text


class Lookup(NamedTuple):
    """A mapping answer; a non-empty `hint` means the source value is unmapped (quarantine)."""

    value: str | None
    hint: str = ""

    @property
    def unmapped(self) -> bool:
        return bool(self.hint)


class CustomFieldValue(NamedTuple):
    id: str | None
    name: str
    position: float
    value: Any


@dataclass(frozen=True)
class FieldMap:
    """fields.csv: where each Field field goes. Refs are kept as written (f--, cf-- or a name)."""

    title_template: str | None = None
    description: str | None = None
    due_date: str | None = None
    assignee: str | None = None
    trade: str | None = None
    footer: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    _targets: Mapping[str, str] = field(default_factory=dict, repr=False)
    # Answers memoised per (id, name): the transform asks the same questions for every record.
    _memo: dict[tuple[str | None, str | None], str] = field(
        default_factory=dict, repr=False, compare=False
    )

    def target_for(self, field_id: str | None, name: str | None = None) -> str:
        """Target of a field by id and/or custom field name: a FIELD_TARGETS value or default."""
        answer = self._memo.get((field_id, name))
        if answer is None:
            answer = _IMPLICIT_TARGETS.get(field_id or "", "footer")
            for ref in (name, field_id):  # the id wins over the name
                if ref:
                    answer = self._targets.get(_ref_key(ref), answer)
            self._memo[(field_id, name)] = answer
        return answer


class AssigneeDirectory:
    """Procore's coordination-issue assignees for the project, indexed by id and login."""

    def __init__(self, assignees: Iterable[Mapping[str, Any]]) -> None:
        self.ids: set[int] = set()
        self._by_login: dict[str, list[tuple[str, int]]] = {}
        for person in assignees:
            try:
                person_id = int(person["id"])
            except (KeyError, TypeError, ValueError):
                continue
            self.ids.add(person_id)
            login = (person.get("login") or "").strip()
            if login:
                self._by_login.setdefault(login.casefold(), []).append((login, person_id))

    def find(self, email: str) -> tuple[int | None, str]:
        """(id, "") for a unique case-insensitive login match, else (None, why not)."""
        matches = self._by_login.get(email.strip().casefold(), [])
        if len(matches) == 1:
            return matches[0][1], ""
        exact = [person_id for login, person_id in matches if login == email.strip()]
        if len(exact) == 1:
            return exact[0], ""
        if matches:
            ids = ", ".join(str(person_id) for person_id in sorted(i for _l, i in matches))
            return None, f"matches several Procore assignees ({ids})"
        return None, "is not among the project's coordination-issue assignees in Procore"


class TradeDirectory:
    """Procore's trades of the company (the available ones), indexed by name ignoring case."""

    def __init__(self, trades: Iterable[Mapping[str, Any]]) -> None:
        self.ids: set[int] = set()
        self._by_name: dict[str, list[int]] = {}
        for trade in trades:
            try:
                trade_id = int(trade["id"])
            except (KeyError, TypeError, ValueError):
                continue
            self.ids.add(trade_id)
            name = _key(trade.get("name"))
            if name:
                self._by_name.setdefault(name, []).append(trade_id)

    def find(self, name: str) -> tuple[int | None, str]:
        """(id, "") for the one trade of that name, else (None, why not)."""
        matches = sorted(self._by_name.get(_key(name), ()))
        if len(matches) == 1:
            return matches[0], ""
        if matches:
            return None, f"matches several Procore trades ({', '.join(map(str, matches))})"
        return None, "is not among the company's Procore trades"


class FieldUsers:
    """The staged BIM 360 Field users, to read an assignee value written as a user id or a
    display name ("First Last") as that user's email. Ids and names compare ignoring case."""

    def __init__(self, users: Iterable[Mapping[str, Any]]) -> None:
        self._by_id: dict[str, str] = {}
        self._by_name: dict[str, list[str]] = {}
        for user in users:
            email = _clean(user.get("email"))
            if not email:
                continue
            if user.get("id"):
                self._by_id[_key(user["id"])] = email
            name = _key(f"{_clean(user.get('first_name'))} {_clean(user.get('last_name'))}")
            if name:
                self._by_name.setdefault(name, []).append(email)

    def email_for(self, value: str) -> tuple[str | None, str]:
        """(the user's email, "") for a Field user id or unique display name, else (None, why)."""
        key = _key(value)
        email = self._by_id.get(key)
        if email is not None:
            return email, ""
        emails = sorted(set(self._by_name.get(key, ())), key=str.casefold)
        if len(emails) == 1:
            return emails[0], ""
        if emails:
            return None, f"names several BIM 360 Field users ({', '.join(emails)})"
        return None, "is not the email, id or name of a staged BIM 360 Field user"


@dataclass(frozen=True)
class Mappings:
    """Validated mapping files. Keys are compared ignoring letter case and extra spaces."""

    directory: str
    statuses: Mapping[str, str]
    priorities: Mapping[str, str | None]
    issue_types: Mapping[tuple[str, str], str]
    users: Mapping[str, str] = field(default_factory=dict)
    locations: Mapping[tuple[str, ...], tuple[str, ...]] = field(default_factory=dict)
    fields: FieldMap = field(default_factory=FieldMap)
    #: inspection_types.csv: checklist type key ("" = none, * = any other) → name or SAME_NAME.
    inspection_types: Mapping[str, str] = field(default_factory=dict)
    #: inspection_statuses.csv: checklist status key → open / in_review / closed / skip.
    inspection_statuses: Mapping[str, str] = field(default_factory=dict)
    #: responses.csv: answer key → yes / no / n/a.
    responses: Mapping[str, str] = field(default_factory=dict)
    #: trades.csv: Field value (key) -> Procore trade name.
    trades: Mapping[str, str] = field(default_factory=dict)

    def file(self, name: str) -> str:
        """How hints name a mapping file, e.g. ``mappings/status.csv``.

        Only the folder's own name is shown, never a path: hints end up in Procore
        descriptions, which must not change with the directory a command runs from.
        """
        return _join_display(Path(self.directory).resolve().name, name)

    def status_for(self, field_status: str | None) -> Lookup:
        """Procore status, ``skip``, or None with a hint for an unmapped status."""
        key = _key(field_status)
        if key in self.statuses:
            return Lookup(self.statuses[key])
        if not key:
            return Lookup(None, "the issue has no status in BIM 360 Field")
        return Lookup(
            None, f"add a row for status '{_clean(field_status)}' to {self.file('status.csv')}"
        )

    def inspection_status_for(self, field_status: str | None) -> Lookup:
        """Procore inspection status, ``skip``, or None with a hint for an unmapped status."""
        key = _key(field_status)
        if key in self.inspection_statuses:
            return Lookup(self.inspection_statuses[key])
        where = self.file("inspection_statuses.csv")
        if not key:
            return Lookup(
                None,
                f"the checklist has no status; add a row with an empty field_status to {where}",
            )
        return Lookup(None, f"add a row for checklist status '{_clean(field_status)}' to {where}")

    def inspection_type_for(self, checklist_type: str | None) -> Lookup:
        """Procore inspection type name for a Field checklist type (exact row, then *)."""
        key = _key(checklist_type)
        target = self.inspection_types.get(key)
        if target is None and key:
            target = self.inspection_types.get(ANY)
        if target == SAME_NAME:
            return Lookup(_clean(checklist_type))
        if target is not None:
            return Lookup(target)
        where = self.file("inspection_types.csv")
        if not key:
            return Lookup(
                None,
                "the checklist has no checklist type; add a row with an empty "
                f"field_checklist_type to {where}",
            )
        return Lookup(
            None,
            f"add a row for checklist type '{_clean(checklist_type)}' (or a default row *,*) "
            f"to {where}",
        )

    def response_status_for(self, answer: str | None) -> str | None:
        """yes / no / n/a for a checklist answer listed in responses.csv; None when unlisted."""
        return self.responses.get(_key(answer))

    def priority_for(self, field_priority: str | None) -> Lookup:
        """Procore priority, or None: with no hint none is sent, with a hint it is unmapped."""
        key = _key(field_priority)
        if key in self.priorities:
            return Lookup(self.priorities[key])
        if not key:
            return Lookup(
                None,
                "the issue has no priority; add a row with an empty field_priority to "
                f"{self.file('priority.csv')}",
            )
        return Lookup(
            None,
            f"add a row for priority '{_clean(field_priority)}' to {self.file('priority.csv')}",
        )

    def issue_type_for(self, category: str | None, type_name: str | None) -> Lookup:
        """Procore issue type by (category, type), (category, *), (*, type), then (*, *)."""
        category_key, type_key = _key(category), _key(type_name)
        for candidate in (
            (category_key, type_key),
            (category_key, ANY),
            (ANY, type_key),
            (ANY, ANY),
        ):
            value = self.issue_types.get(candidate)
            if value is not None:
                return Lookup(value)
        return Lookup(
            None,
            f"add a row for category '{_clean(category)}', type '{_clean(type_name)}' "
            f"(or a default row *,*) to {self.file('issue_types.csv')}",
        )

    def location_path_for(self, area: str | Sequence[str] | None) -> list[str]:
        """Procore location path (node names, root first) for a Field area path ``A>B>C``.

        The longest overridden prefix in locations.csv wins, so a row for a building also
        moves its floors and rooms. No area gives [].
        """
        nodes = (
            split_path(area)
            if isinstance(area, str) or area is None
            else [" ".join(str(node).split()) for node in area if str(node).strip()]
        )
        if not nodes or not self.locations:
            return nodes
        keys = tuple(_key(node) for node in nodes)
        for length in range(len(keys), 0, -1):
            target = self.locations.get(keys[:length])
            if target is not None:
                return [*target, *nodes[length:]]
        return nodes

    def resolve_assignee(
        self,
        field_value: str | None,
        assignees: AssigneeDirectory | Iterable[Mapping[str, Any]],
        field_users: FieldUsers | None = None,
    ) -> tuple[int | None, str]:
        """(Procore assignee id, "") or (None, note explaining why the value cannot be used).

        The value is what Field's assignee field holds: an email, or (display type
        ``user_id``) a Field user's id, or a display name; the last two are read as that
        user's email through `field_users`. No value gives (None, ""). Every note starts with
        the value as Field gave it, so the footer keeps it. The caller applies the
        unresolved-assignee policy to a note. Pass an `AssigneeDirectory` built once per run:
        building it from a list costs a pass.
        """
        value = _clean(field_value)
        if not value:
            return None, ""
        directory = (
            assignees if isinstance(assignees, AssigneeDirectory) else AssigneeDirectory(assignees)
        )
        users_file = self.file("users.csv")
        email, shown = value, value
        if not _EMAIL.match(value) and field_users is not None:
            found, why = field_users.email_for(value)
            if found is None:
                return None, f"{value} {why}"
            email, shown = found, f"{value} ({found})"
        target = self.users.get(email.casefold())
        if target is None:
            person_id, why = directory.find(email)
            if person_id is not None:
                return person_id, ""
            return None, f"{shown} {why}; add a row for '{email}' to {users_file}"
        if target.isdigit():
            if int(target) in directory.ids:
                return int(target), ""
            return None, (
                f"{shown} is mapped to Procore user {target} in {users_file}, who is not among "
                "the project's coordination-issue assignees in Procore"
            )
        person_id, why = directory.find(target)
        if person_id is not None:
            return person_id, ""
        return None, f"{shown} is mapped to {target} in {users_file}, which {why}"

    def resolve_trade(self, value: str | None, trades: TradeDirectory) -> tuple[int | None, str]:
        """(Procore trade id, "") or (None, why the value names no trade); no value: (None, "").

        A trades.csv row names the Procore trade for a Field value; without one the value
        itself is the name. Names compare ignoring letter case and extra spaces.
        """
        shown = _clean(value)
        if not shown:
            return None, ""
        trades_file = self.file("trades.csv")
        name = self.trades.get(_key(shown))
        if name is None:
            trade_id, why = trades.find(shown)
            if trade_id is not None:
                return trade_id, ""
            return None, f"{why}; add a row for '{shown}' to {trades_file}"
        trade_id, why = trades.find(name)
        if trade_id is not None:
            return trade_id, ""
        return None, f"mapped to '{name}' in {trades_file}, which {why}"


# -- record helpers shared with transform ------------------------------------------------


def split_path(path: str | None) -> list[str]:
    """``"A > B>C"`` → ``["A", "B", "C"]`` (spaces around names trimmed, empty names dropped)."""
    if not path:
        return []
    return [" ".join(node.split()) for node in path.split(">") if node.strip()]


def custom_field_entries(
    record: Mapping[str, Any],
    definitions: Iterable[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]] | None = None,
) -> list[CustomFieldValue]:
    """The record's custom fields in definition order (position, then as given).

    `record["custom_fields"]` maps name → value (or → {"value", "id", "position"});
    `definitions` ([{"id", "name", "position"}] or `index_definitions` of it) supply ids and
    positions when given.
    """
    values = record.get("custom_fields") or {}
    if not values:
        return []
    by_name = index_definitions(definitions)
    entries = []
    for index, (name, raw) in enumerate(values.items()):
        detail: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {"value": raw}
        definition = by_name.get(name, {})
        field_id = detail.get("id") or definition.get("id")
        position = detail.get("position", definition.get("position"))
        try:
            order = float(position) if position is not None else float("inf")
        except (TypeError, ValueError):
            order = float("inf")
        entries.append((order, index, CustomFieldValue(field_id, name, order, detail.get("value"))))
    entries.sort(key=lambda entry: (entry[0], entry[1]))
    return [entry for _order, _index, entry in entries]


def index_definitions(
    definitions: Iterable[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]] | None,
) -> Mapping[str, Mapping[str, Any]]:
    """Custom field definitions by name (the first of equal names).

    Build it once per run and pass it with every record instead of the list.
    """
    if not definitions:
        return {}
    if isinstance(definitions, Mapping):
        return definitions
    by_name: dict[str, Mapping[str, Any]] = {}
    for definition in definitions:
        name = definition.get("name")
        if name and name not in by_name:
            by_name[name] = definition
    return by_name


def field_value(
    record: Mapping[str, Any],
    ref: str | None,
    definitions: Iterable[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]] | None = None,
) -> Any:
    """Value of a fields.csv ref (f--…, cf--… or custom field name) in the record, or None."""
    if not ref:
        return None
    standard = STANDARD_FIELDS.get(ref.strip().lower())
    if standard is not None:
        return record.get(standard.record_key)
    wanted = _ref_key(ref)
    for entry in custom_field_entries(record, definitions):
        if (entry.id and _ref_key(entry.id) == wanted) or _ref_key(entry.name) == wanted:
            return entry.value
    return None


# -- loading -------------------------------------------------------------------------------


def load_mappings(directory: str | os.PathLike[str]) -> Mappings:
    """Read and validate every mapping file in `directory`; raise one MappingError for all."""
    folder = Path(directory)
    shown = _display(folder)
    if not folder.is_dir():
        raise MappingError(
            [f"{shown}: mapping folder not found; run `migrate init` to write the defaults."]
        )
    texts: dict[str, str | None] = {}
    problems: list[str] = []
    for name in (*REQUIRED_FILES, *OPTIONAL_FILES):
        path = folder / name
        where = _join_display(shown, name)
        if not path.is_file():
            if name in REQUIRED_FILES:
                problems.append(
                    f"{where}: not found (required; `migrate init` writes the default files)."
                )
            # An absent optional file counts as its default (see OPTIONAL_FILES).
            texts[name] = DEFAULT_FILES.get(name) if name in OPTIONAL_FILES else None
            continue
        try:
            texts[name] = path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            problems.append(
                f"{where}: not UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                'save it as "CSV UTF-8".'
            )
            texts[name] = None
    return _build(shown, texts, problems)


def default_mappings(directory: str = "mappings") -> Mappings:
    """The mappings `write_default_mappings` writes, parsed in memory."""
    return _build(directory, dict(DEFAULT_FILES), [])


def write_default_mappings(
    directory: str | os.PathLike[str], *, overwrite: bool = False
) -> list[Path]:
    """Write the default mapping files; existing files are kept unless `overwrite`.

    Returns the paths written.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in DEFAULT_FILES.items():
        path = folder / name
        if path.exists() and not overwrite:
            continue
        with open(path, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        written.append(path)
    return written


def _build(shown: str, texts: Mapping[str, str | None], problems: list[str]) -> Mappings:
    def rows(name: str, columns: tuple[str, ...]) -> list[_Row]:
        text = texts.get(name)
        if text is None:
            return []
        return _parse_csv(text, _join_display(shown, name), columns, problems)

    statuses = _load_statuses(rows("status.csv", ("field_status", "procore_status")), problems)
    inspection_statuses = _load_value_map(
        rows("inspection_statuses.csv", ("field_status", "procore_status")),
        ("field_status", "procore_status"),
        (*PROCORE_INSPECTION_STATUSES, SKIP),
        "Procore inspection status",
        problems,
        empty_source=True,
    )
    inspection_types = _load_inspection_types(
        rows("inspection_types.csv", ("field_checklist_type", "procore_inspection_type")),
        problems,
    )
    responses = _load_value_map(
        rows("responses.csv", ("field_response", "corresponding_status")),
        ("field_response", "corresponding_status"),
        PROCORE_RESPONSE_STATUSES,
        "Procore response status",
        problems,
    )
    priorities = _load_priorities(
        rows("priority.csv", ("field_priority", "procore_priority")), problems
    )
    issue_types = _load_issue_types(
        rows("issue_types.csv", ("category", "type", "procore_issue_type")), problems
    )
    users = _load_users(rows("users.csv", ("field_email", "procore")), problems)
    locations = _load_locations(rows("locations.csv", ("field_path", "procore_path")), problems)
    trades = _load_trades(rows("trades.csv", ("field_trade", "procore_trade")), problems)
    field_map = _load_fields(rows("fields.csv", ("field", "target")), problems)
    if problems:
        raise MappingError(problems)
    return Mappings(
        directory=shown,
        statuses=statuses,
        priorities=priorities,
        issue_types=issue_types,
        users=users,
        locations=locations,
        fields=field_map,
        inspection_types=inspection_types,
        inspection_statuses=inspection_statuses,
        responses=responses,
        trades=trades,
    )


@dataclass
class _Row:
    where: str  # "mappings/status.csv:9"
    line: int
    values: dict[str, str]


def _parse_csv(text: str, where: str, columns: tuple[str, ...], problems: list[str]) -> list[_Row]:
    state = {"row_start": True, "row_line": 0}

    def lines() -> Iterator[str]:
        for number, line in enumerate(io.StringIO(text, newline=""), start=1):
            if state["row_start"]:
                # Comments are recognised only where a row starts, never inside a quoted value.
                stripped = line.strip()
                if not stripped or stripped.startswith("#"):
                    continue
                state["row_line"] = number
                state["row_start"] = False
            yield line

    header: list[str] | None = None
    result: list[_Row] = []
    try:
        for cells in csv.reader(lines()):
            state["row_start"] = True
            line = state["row_line"]
            cells = [cell.strip() for cell in cells]
            # A spreadsheet re-saving the file quotes comment cells that contain commas.
            if not any(cells) or cells[0].startswith("#"):
                continue
            if header is None:
                header = [cell.lower() for cell in cells]
                missing = [column for column in columns if column not in header]
                if missing:
                    problems.append(
                        f"{where}:{line}: missing column{'s' if len(missing) > 1 else ''} "
                        + ", ".join(f'"{column}"' for column in missing)
                        + " (found: "
                        + ", ".join(f'"{cell}"' for cell in cells)
                        + "; expected: "
                        + ", ".join(f'"{column}"' for column in columns)
                        + ")."
                    )
                    return []
                continue
            if len(cells) > len(header) and any(cells[len(header) :]):
                problems.append(
                    f"{where}:{line}: {len(cells)} values but the header has {len(header)} "
                    "columns (put a value that contains a comma in double quotes)."
                )
                continue
            values = {
                column: cells[header.index(column)] if header.index(column) < len(cells) else ""
                for column in columns
            }
            result.append(_Row(f"{where}:{line}", line, values))
    except csv.Error as exc:
        problems.append(f"{where}:{state['row_line']}: not valid CSV ({exc}).")
        return []
    if header is None:
        problems.append(f"{where}: no header row (expected columns: " + ", ".join(columns) + ").")
    return result


def _allowed(values: Iterable[str]) -> str:
    return "(allowed: " + ", ".join(values) + ")"


def _check_duplicate(
    seen: dict[Any, _Row], key: Any, row: _Row, label: str, shown: str, problems: list[str]
) -> bool:
    """Record `key` for `row`; report and return True when an earlier row had it."""
    first = seen.get(key)
    if first is not None:
        problems.append(f"{row.where}: duplicate {label} {shown} (first on line {first.line}).")
        return True
    seen[key] = row
    return False


def _load_statuses(rows: list[_Row], problems: list[str]) -> dict[str, str]:
    return _load_value_map(
        rows,
        ("field_status", "procore_status"),
        (*PROCORE_STATUSES, SKIP),
        "Procore status",
        problems,
    )


def _load_value_map(
    rows: list[_Row],
    columns: tuple[str, str],
    allowed: tuple[str, ...],
    what: str,
    problems: list[str],
    *,
    empty_source: bool = False,
) -> dict[str, str]:
    """A two-column file whose target is one of `allowed` (status.csv and its like).

    `empty_source` allows a row with an empty source value (for records without one).
    """
    source_column, target_column = columns
    result: dict[str, str] = {}
    seen: dict[Any, _Row] = {}
    for row in rows:
        source, target = row.values[source_column], row.values[target_column]
        if not source and not empty_source:
            problems.append(f"{row.where}: {source_column} is empty.")
            continue
        if _check_duplicate(seen, _key(source), row, source_column, f'"{source}"', problems):
            continue
        if not target:
            problems.append(f'{row.where}: "{source}" has no {target_column} {_allowed(allowed)}.')
        elif target.lower() not in allowed:
            problems.append(
                f'{row.where}: "{source}" → "{target}" is not a {what} {_allowed(allowed)}.'
            )
        else:
            result[_key(source)] = target.lower()
    return result


def _load_inspection_types(rows: list[_Row], problems: list[str]) -> dict[str, str]:
    result: dict[str, str] = {}
    seen: dict[Any, _Row] = {}
    for row in rows:
        source = row.values["field_checklist_type"]
        target = " ".join(row.values["procore_inspection_type"].split())
        shown = f'"{source}"'
        if _check_duplicate(seen, _key(source), row, "field_checklist_type", shown, problems):
            continue
        if not target:
            problems.append(
                f"{row.where}: {shown} has no procore_inspection_type (a name, or * to keep "
                "the BIM 360 Field type's name)."
            )
        elif target == SAME_NAME and not source:
            problems.append(
                f"{row.where}: checklists without a type have no name to keep; write the "
                "procore_inspection_type to give them."
            )
        else:
            result[_key(source)] = target
    return result


def _load_priorities(rows: list[_Row], problems: list[str]) -> dict[str, str | None]:
    allowed = (*PROCORE_PRIORITIES, NO_PRIORITY)
    result: dict[str, str | None] = {}
    seen: dict[Any, _Row] = {}
    for row in rows:
        source, target = row.values["field_priority"], row.values["procore_priority"]
        if _check_duplicate(seen, _key(source), row, "field_priority", f'"{source}"', problems):
            continue
        if not target:
            problems.append(f'{row.where}: "{source}" has no procore_priority {_allowed(allowed)}.')
        elif target.lower() not in allowed:
            problems.append(
                f'{row.where}: "{source}" → "{target}" is not a Procore priority '
                f"{_allowed(allowed)}."
            )
        else:
            result[_key(source)] = None if target.lower() == NO_PRIORITY else target.lower()
    return result


def _load_issue_types(rows: list[_Row], problems: list[str]) -> dict[tuple[str, str], str]:
    result: dict[tuple[str, str], str] = {}
    seen: dict[Any, _Row] = {}
    for row in rows:
        category, type_name = row.values["category"], row.values["type"]
        target = row.values["procore_issue_type"]
        empty = [
            column for column, value in (("category", category), ("type", type_name)) if not value
        ]
        if empty:
            for column in empty:
                problems.append(f"{row.where}: {column} is empty (write * to match any {column}).")
            continue
        key = (_key(category), _key(type_name))
        shown = f'"{category}", "{type_name}"'
        if _check_duplicate(seen, key, row, "category and type", shown, problems):
            continue
        if not target:
            problems.append(
                f"{row.where}: {shown} has no procore_issue_type {_allowed(PROCORE_ISSUE_TYPES)}."
            )
        elif target.lower() not in PROCORE_ISSUE_TYPES:
            problems.append(
                f'{row.where}: {shown} → "{target}" is not a Procore issue type '
                f"{_allowed(PROCORE_ISSUE_TYPES)}."
            )
        else:
            result[key] = target.lower()
    return result


def _load_users(rows: list[_Row], problems: list[str]) -> dict[str, str]:
    result: dict[str, str] = {}
    seen: dict[Any, _Row] = {}
    for row in rows:
        email, target = row.values["field_email"], row.values["procore"]
        if not email:
            problems.append(f"{row.where}: field_email is empty.")
            continue
        if not _EMAIL.match(email):
            problems.append(f'{row.where}: "{email}" in field_email is not an email address.')
            continue
        if _check_duplicate(seen, email.casefold(), row, "field_email", f'"{email}"', problems):
            continue
        if not target:
            problems.append(
                f'{row.where}: "{email}" has no procore value (a Procore user email or numeric id).'
            )
        elif not (target.isdigit() or _EMAIL.match(target)):
            problems.append(
                f'{row.where}: "{email}" → "{target}" is not a Procore user email or numeric id.'
            )
        else:
            result[email.casefold()] = target
    return result


def _load_locations(
    rows: list[_Row], problems: list[str]
) -> dict[tuple[str, ...], tuple[str, ...]]:
    result: dict[tuple[str, ...], tuple[str, ...]] = {}
    seen: dict[Any, _Row] = {}
    for row in rows:
        source, target = row.values["field_path"], row.values["procore_path"]
        if not split_path(source):
            problems.append(f"{row.where}: field_path is empty.")
            continue
        key = tuple(_key(node) for node in split_path(source))
        if _check_duplicate(seen, key, row, "field_path", f'"{source}"', problems):
            continue
        if not target:
            problems.append(f'{row.where}: "{source}" has no procore_path.')
        elif any(not node.strip() for node in target.split(">")):
            problems.append(
                f'{row.where}: "{source}" → "{target}" has an empty node name '
                "(separate node names with a single >)."
            )
        else:
            result[key] = tuple(split_path(target))
    return result


def _load_trades(rows: list[_Row], problems: list[str]) -> dict[str, str]:
    result: dict[str, str] = {}
    seen: dict[Any, _Row] = {}
    for row in rows:
        source, target = row.values["field_trade"], row.values["procore_trade"]
        if not source:
            problems.append(f"{row.where}: field_trade is empty.")
            continue
        if _check_duplicate(seen, _key(source), row, "field_trade", f'"{source}"', problems):
            continue
        if not target:
            problems.append(f'{row.where}: "{source}" has no procore_trade (a Procore trade name).')
        else:
            result[_key(source)] = _clean(target)
    return result


def _load_fields(rows: list[_Row], problems: list[str]) -> FieldMap:
    singles: dict[str, str] = {}
    lists: dict[str, list[str]] = {"footer": [], "drop": []}
    targets: dict[str, str] = {}
    seen_fields: dict[Any, _Row] = {}
    seen_targets: dict[str, _Row] = {}
    placeholders = ", ".join(f"{{{name}}}" for name in TITLE_PLACEHOLDERS)
    for row in rows:
        ref, target = row.values["field"], row.values["target"].lower()
        if not ref:
            problems.append(f"{row.where}: field is empty.")
            continue
        if not target:
            problems.append(f'{row.where}: "{ref}" has no target {_allowed(FIELD_TARGETS)}.')
            continue
        if target not in FIELD_TARGETS:
            problems.append(
                f'{row.where}: "{ref}" → "{row.values["target"]}" is not a target '
                f"{_allowed(FIELD_TARGETS)}."
            )
            continue
        if target == "title_template":
            template_errors = template_problems(ref)
            for problem in template_errors:
                problems.append(f'{row.where}: "{ref}" {problem} (allowed: {placeholders}).')
            if template_errors:
                continue
        else:
            lowered = ref.lower()
            if lowered.startswith("f--") and lowered not in STANDARD_FIELDS:
                problems.append(
                    f'{row.where}: "{ref}" is not a BIM 360 Field standard field (known: '
                    + ", ".join(sorted(STANDARD_FIELDS))
                    + ")."
                )
                continue
            own_file = _FIELDS_WITH_OWN_FILE.get(lowered)
            if own_file and target not in ("footer", "drop"):
                problems.append(
                    f'{row.where}: "{ref}" → "{target}" is not allowed: this field is mapped '
                    f"through {own_file} (allowed for it: footer, drop)."
                )
                continue
            if _check_duplicate(seen_fields, _ref_key(ref), row, "field", f'"{ref}"', problems):
                continue
        if target in SINGLE_TARGETS:
            first = seen_targets.get(target)
            if first is not None:
                problems.append(
                    f'{row.where}: "{ref}" → {target}, but line {first.line} already sends '
                    f'"{first.values["field"]}" there (only one field can be the {target}).'
                )
                continue
            seen_targets[target] = row
            singles[target] = ref
        else:
            lists[target].append(ref)
        if target != "title_template":
            targets[_ref_key(ref)] = target
    return FieldMap(
        title_template=singles.get("title_template"),
        description=singles.get("description"),
        due_date=singles.get("due_date"),
        assignee=singles.get("assignee"),
        trade=singles.get("trade"),
        footer=tuple(lists["footer"]),
        dropped=tuple(lists["drop"]),
        _targets=targets,
    )


# -- small helpers -------------------------------------------------------------------------


def _clean(value: Any) -> str:
    return " ".join(str(value).split()) if value is not None else ""


def _key(value: Any) -> str:
    return _clean(value).casefold()


def _ref_key(ref: str) -> str:
    """Compare custom field ids with or without their ``cf--`` prefix, names ignoring case."""
    key = _key(ref)
    return key[4:] if key.startswith("cf--") else key


def _display(folder: Path) -> str:
    """The folder as messages show it: relative to the working directory when inside it."""
    try:
        relative = os.path.relpath(folder)
    except ValueError:
        return str(folder)
    return str(folder) if relative.startswith("..") else relative


def _join_display(shown: str, name: str) -> str:
    return name if shown in ("", ".") else f"{shown.rstrip('/')}/{name}"
