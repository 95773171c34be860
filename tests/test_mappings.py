"""Mapping files: every lookup rule, every validation message, defaults, description footer."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from migrate.errors import EXIT_USAGE, ConfigError
from migrate.mappings import (
    DEFAULT_FILES,
    AssigneeDirectory,
    FieldUsers,
    MappingError,
    TradeDirectory,
    default_mappings,
    field_value,
    index_definitions,
    load_mappings,
    write_default_mappings,
)
from migrate.transform.description import build_description, parse_timestamp

REPO = Path(__file__).resolve().parent.parent
STATUS_ALLOWED = (
    "(allowed: blocked, open, ready_for_review, moved_to_observation, unblocked, closed, skip)"
)
ISSUE_TYPES_ALLOWED = (
    "(allowed: building_code, existing_condition, clash, other, coordination, constructability,"
    " client_feedback, requirement_change, design_review)"
)
TARGETS_ALLOWED = "(allowed: title_template, description, due_date, assignee, trade, footer, drop)"
PLACEHOLDERS = (
    "(allowed: {identifier}, {description}, {type}, {category}, {area}, {location_detail},"
    " {status})"
)


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``mappings/`` folder with the defaults, named relative to the working directory."""
    monkeypatch.chdir(tmp_path)
    write_default_mappings(tmp_path / "mappings")
    return tmp_path / "mappings"


def write(folder: Path, name: str, text: str) -> None:
    (folder / name).write_text(text, encoding="utf-8")


def problems_for(folder: Path) -> list[str]:
    with pytest.raises(MappingError) as caught:
        load_mappings(folder)
    return caught.value.problems


# -- defaults ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DEFAULT_FILES))
def test_committed_mapping_files_are_the_defaults(name: str) -> None:
    assert (REPO / "mappings" / name).read_bytes() == DEFAULT_FILES[name].encode("utf-8")


def test_defaults_round_trip_through_the_files(folder: Path) -> None:
    assert load_mappings(folder) == default_mappings()
    assert load_mappings(folder).file("status.csv") == "mappings/status.csv"


def test_write_defaults_keeps_edited_files_unless_told(folder: Path) -> None:
    write(folder, "status.csv", "field_status,procore_status\nOpen,open\n")
    assert write_default_mappings(folder) == []
    assert load_mappings(folder).status_for("Draft").unmapped
    written = write_default_mappings(folder, overwrite=True)
    assert sorted(path.name for path in written) == sorted(DEFAULT_FILES)
    assert load_mappings(folder).status_for("Draft").value == "open"


def test_optional_files_may_be_missing(folder: Path) -> None:
    (folder / "users.csv").unlink()
    (folder / "locations.csv").unlink()
    mappings = load_mappings(folder)
    assert mappings.users == {} and mappings.locations == {}


# -- status, priority, issue type ----------------------------------------------------------


@pytest.mark.parametrize(
    ("field_status", "expected"),
    [
        ("Draft", "open"),
        ("Open", "open"),
        ("Work Completed", "ready_for_review"),
        ("Ready to Inspect", "ready_for_review"),
        ("Not Approved", "open"),
        ("In Dispute", "blocked"),
        ("Closed", "closed"),
        ("Void", "skip"),
        ("work  completed ", "ready_for_review"),  # case and spacing do not matter
    ],
)
def test_default_status_mapping(field_status: str, expected: str) -> None:
    assert default_mappings().status_for(field_status) == (expected, "")


@pytest.mark.parametrize(
    ("field_status", "hint"),
    [
        ("Parked", "add a row for status 'Parked' to mappings/status.csv"),
        (None, "the issue has no status in BIM 360 Field"),
        ("", "the issue has no status in BIM 360 Field"),
    ],
)
def test_unmapped_status_gives_a_hint(field_status: str | None, hint: str) -> None:
    lookup = default_mappings().status_for(field_status)
    assert (lookup.value, lookup.hint, lookup.unmapped) == (None, hint, True)


@pytest.mark.parametrize(
    ("field_priority", "expected"),
    [
        ("Low", ("low", "")),
        ("Medium", ("medium", "")),
        ("HIGH", ("high", "")),
        ("critical", ("critical", "")),
        ("", (None, "")),
        (None, (None, "")),
        ("Urgent", (None, "add a row for priority 'Urgent' to mappings/priority.csv")),
    ],
)
def test_default_priority_mapping(field_priority: str | None, expected: tuple) -> None:
    assert default_mappings().priority_for(field_priority) == expected


def test_priority_without_an_empty_row_flags_missing_priority(folder: Path) -> None:
    write(folder, "priority.csv", "field_priority,procore_priority\nLow,low\n")
    assert load_mappings(folder).priority_for(None) == (
        None,
        "the issue has no priority; add a row with an empty field_priority to "
        "mappings/priority.csv",
    )


ISSUE_TYPES = """\
category,type,procore_issue_type
Safety,Fall,clash
Safety,*,other
*,Fall,building_code
"""


@pytest.mark.parametrize(
    ("category", "type_name", "expected"),
    [
        ("Safety", "Fall", "clash"),  # category and type
        ("safety", "FALL", "clash"),
        ("Safety", "Fire", "other"),  # category and *
        ("Quality", "Fall", "building_code"),  # * and type
        ("Quality", "Paint", "design_review"),  # the default row
        (None, None, "design_review"),
    ],
)
def test_issue_type_precedence(
    folder: Path, category: str | None, type_name: str | None, expected: str
) -> None:
    write(folder, "issue_types.csv", ISSUE_TYPES + "*,*,design_review\n")
    assert load_mappings(folder).issue_type_for(category, type_name) == (expected, "")


def test_issue_type_without_default_row_is_unmapped(folder: Path) -> None:
    write(folder, "issue_types.csv", ISSUE_TYPES)
    mappings = load_mappings(folder)
    assert mappings.issue_type_for("Safety", "Fall").value == "clash"
    assert mappings.issue_type_for("Quality", "Paint") == (
        None,
        "add a row for category 'Quality', type 'Paint' (or a default row *,*) to "
        "mappings/issue_types.csv",
    )


def test_default_issue_types() -> None:
    mappings = default_mappings()
    assert mappings.issue_type_for("Coordination", "Anything").value == "coordination"
    assert mappings.issue_type_for("Quality", "Clash").value == "clash"
    assert mappings.issue_type_for("Quality", "Paint").value == "other"


# -- users ---------------------------------------------------------------------------------

ASSIGNEES = [
    {"id": 7001, "name": "Ann", "login": "Ann@Example.com"},
    {"id": 7002, "name": "Bob", "login": "bob@example.com"},
    {"id": 7003, "name": "Cy", "login": "cy@example.com"},
    {"id": 7004, "name": "Cy too", "login": "CY@example.com"},
    {"id": 7005, "name": "No login", "login": None},
]


@pytest.mark.parametrize(
    ("email", "expected"),
    [
        ("ann@example.com", (7001, "")),  # case-insensitive match
        ("  BOB@example.com ", (7002, "")),
        ("cy@example.com", (7003, "")),  # two case variants: the exact one wins
        (
            "Cy@Example.com",
            (
                None,
                "Cy@Example.com matches several Procore assignees (7003, 7004); add a row for "
                "'Cy@Example.com' to mappings/users.csv",
            ),
        ),
        (
            "dan@example.com",
            (
                None,
                "dan@example.com is not among the project's coordination-issue assignees in "
                "Procore; add a row for 'dan@example.com' to mappings/users.csv",
            ),
        ),
        ("old@field.com", (7002, "")),  # users.csv row → Procore email
        ("OLD.ID@field.com", (7003, "")),  # users.csv row → Procore id
        (
            "gone@field.com",
            (
                None,
                "gone@field.com is mapped to Procore user 9999 in mappings/users.csv, who is not "
                "among the project's coordination-issue assignees in Procore",
            ),
        ),
        (
            "left@field.com",
            (
                None,
                "left@field.com is mapped to eve@example.com in mappings/users.csv, which is not "
                "among the project's coordination-issue assignees in Procore",
            ),
        ),
        ("", (None, "")),
        (None, (None, "")),
    ],
)
def test_assignee_resolution(folder: Path, email: str | None, expected: tuple) -> None:
    write(
        folder,
        "users.csv",
        (
            "field_email,procore\n"
            "old@field.com,BOB@example.com\n"
            "old.id@field.com,7003\n"
            "gone@field.com,9999\n"
            "left@field.com,eve@example.com\n"
        ),
    )
    mappings = load_mappings(folder)
    assert mappings.resolve_assignee(email, ASSIGNEES) == expected
    assert mappings.resolve_assignee(email, AssigneeDirectory(ASSIGNEES)) == expected


FIELD_USERS = FieldUsers(
    [
        {"id": "00005e4-a", "email": "ann@example.com", "first_name": "Ann", "last_name": "Lee"},
        {"id": "00005e4-b", "email": "old@field.com", "first_name": "Bob", "last_name": "Old"},
        {"id": "00005e4-c", "email": "x@field.com", "first_name": "Sam", "last_name": "Twin"},
        {"id": "00005e4-d", "email": "y@field.com", "first_name": "sam", "last_name": "twin"},
    ]
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("00005E4-A", (7001, "")),  # a Field user id (display type user_id), any case
        ("ann lee", (7001, "")),  # a display name, any case
        ("Bob Old", (7002, "")),  # the name's email has a users.csv row
        ("ann@example.com", (7001, "")),  # an email stays an email
        (
            "00005e4-zz",
            (
                None,
                "00005e4-zz is not the email, id or name of a staged BIM 360 Field user",
            ),
        ),
        (
            "Sam Twin",
            (None, "Sam Twin names several BIM 360 Field users (x@field.com, y@field.com)"),
        ),
        (
            "00005e4-c",
            (
                None,
                "00005e4-c (x@field.com) is not among the project's coordination-issue "
                "assignees in Procore; add a row for 'x@field.com' to mappings/users.csv",
            ),
        ),
    ],
)
def test_assignee_given_as_field_user_id_or_name(folder: Path, value: str, expected: tuple) -> None:
    """Whatever form the assignee has, it resolves through the Field users; a note keeps it."""
    write(folder, "users.csv", "field_email,procore\nold@field.com,BOB@example.com\n")
    mappings = load_mappings(folder)
    assert mappings.resolve_assignee(value, ASSIGNEES, FIELD_USERS) == expected


TRADES = TradeDirectory(
    [{"id": 3001, "name": "Drywall"}, {"id": 3002, "name": "HVAC"}, {"id": 3003, "name": "hvac"}]
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("DRYWALL ", (3001, "")),  # by name, ignoring case and spaces
        ("Mechanical", (3001, "")),  # trades.csv row, its target matched ignoring case
        ("", (None, "")),
        (
            "Plumbing",
            (
                None,
                "is not among the company's Procore trades; add a row for 'Plumbing' to "
                "mappings/trades.csv",
            ),
        ),
        (
            "HVAC",
            (
                None,
                "matches several Procore trades (3002, 3003); add a row for 'HVAC' to "
                "mappings/trades.csv",
            ),
        ),
        (
            "Glazing",
            (
                None,
                "mapped to 'Glass' in mappings/trades.csv, which is not among the company's "
                "Procore trades",
            ),
        ),
    ],
)
def test_trade_resolution(folder: Path, value: str, expected: tuple) -> None:
    write(folder, "trades.csv", "field_trade,procore_trade\nmechanical,drywall\nGlazing,Glass\n")
    assert load_mappings(folder).resolve_trade(value, TRADES) == expected


def test_trades_csv_problems_are_reported_with_their_line(folder: Path) -> None:
    write(folder, "trades.csv", "field_trade,procore_trade\n,HVAC\nA,\nB,x\nb,y\n")
    with pytest.raises(MappingError) as caught:
        load_mappings(folder)
    assert caught.value.problems == [
        "mappings/trades.csv:2: field_trade is empty.",
        'mappings/trades.csv:3: "A" has no procore_trade (a Procore trade name).',
        'mappings/trades.csv:5: duplicate field_trade "b" (first on line 4).',
    ]


# -- locations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("area", "expected"),
    [
        ("Bldg A", ["North Building"]),
        ("Bldg A>Level 1>Room 101", ["North Building", "Level 1", "Room 101"]),  # prefix
        ("bldg a > level 2", ["North Building", "Second Floor"]),  # longest prefix wins
        ("Bldg A>Level 2>Room 201", ["North Building", "Second Floor", "Room 201"]),
        ("Bldg B>Level 1", ["Bldg B", "Level 1"]),  # no override
        (["Bldg A", "Level 1"], ["North Building", "Level 1"]),  # nodes given as a list
        ("", []),
        (None, []),
    ],
)
def test_location_overrides(folder: Path, area: object, expected: list[str]) -> None:
    write(
        folder,
        "locations.csv",
        (
            "field_path,procore_path\n"
            "Bldg A,North Building\n"
            "Bldg A>Level 2,North Building > Second Floor\n"
        ),
    )
    assert load_mappings(folder).location_path_for(area) == expected


def test_locations_without_overrides_split_the_path() -> None:
    assert default_mappings().location_path_for("A> B >C") == ["A", "B", "C"]


# -- fields --------------------------------------------------------------------------------


def test_field_targets(folder: Path) -> None:
    write(
        folder,
        "fields.csv",
        (
            "field,target\n"
            '"{identifier}: {type}, {description}",title_template\n'
            "Notes,description\n"
            "cf--5bf288e4,drop\n"
            "Trade,trade\n"
            "f--description,footer\n"
            "f--priority,footer\n"
        ),
    )
    fields = load_mappings(folder).fields
    assert fields.title_template == "{identifier}: {type}, {description}"
    assert (fields.description, fields.trade, fields.due_date, fields.assignee) == (
        "Notes",
        "Trade",
        None,
        None,
    )
    assert fields.dropped == ("cf--5bf288e4",)
    assert fields.footer == ("f--description", "f--priority")
    assert fields.target_for("5BF288E4", "Whatever") == "drop"  # id with or without cf--
    assert fields.target_for(None, "notes") == "description"
    assert fields.target_for("f--priority") == "footer"
    assert fields.target_for("f--root_cause_id") == "footer"
    assert default_mappings().fields.target_for("f--priority") == "priority"


def test_field_value_finds_standard_and_custom_fields() -> None:
    record = {
        "description": "text",
        "custom_fields": {"Trade": "Drywall", "Notes": {"value": "n", "id": "cf--abc"}},
    }
    definitions = [{"id": "def-1", "name": "Trade", "position": 20001}]
    assert field_value(record, "f--description") == "text"
    assert field_value(record, "trade") == "Drywall"
    assert field_value(record, "cf--def-1", definitions) == "Drywall"
    assert field_value(record, "cf--ABC") == "n"
    assert field_value(record, "f--due_date") is None
    assert field_value(record, "Missing") is None
    assert field_value({}, None) is None


# -- validation: one exact message per problem ---------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "status.csv",
            "# comment\n\nfield_status,procore_status\nDraft,open\nOpen,open\n"
            "Closed,closed\n# another comment\nVoid,skip\nParked,parked\n",
            f'mappings/status.csv:9: "Parked" → "parked" is not a Procore status {STATUS_ALLOWED}.',
        ),
        (
            "status.csv",
            "field_status,procore_status\nOpen,open\nDraft,open\nopen ,closed\n",
            'mappings/status.csv:4: duplicate field_status "open" (first on line 2).',
        ),
        (
            "status.csv",
            "field_status,procore_status\nDraft,\n",
            f'mappings/status.csv:2: "Draft" has no procore_status {STATUS_ALLOWED}.',
        ),
        (
            "status.csv",
            "field_status,procore_status\n,open\n",
            "mappings/status.csv:2: field_status is empty.",
        ),
        (
            "status.csv",
            "field_stat,procore\nDraft,open\n",
            'mappings/status.csv:1: missing columns "field_status", "procore_status" '
            '(found: "field_stat", "procore"; expected: "field_status", "procore_status").',
        ),
        (
            "status.csv",
            "# only a comment\n",
            "mappings/status.csv: no header row (expected columns: field_status, procore_status).",
        ),
        (
            "priority.csv",
            "field_priority,procore_priority\nUrgent,urgent\n",
            'mappings/priority.csv:2: "Urgent" → "urgent" is not a Procore priority '
            "(allowed: low, medium, high, critical, (none)).",
        ),
        (
            "priority.csv",
            "field_priority,procore_priority\n,(none)\n ,low\n",
            'mappings/priority.csv:3: duplicate field_priority "" (first on line 2).',
        ),
        (
            "issue_types.csv",
            "category,type,procore_issue_type\nSafety,*,safety\n",
            'mappings/issue_types.csv:2: "Safety", "*" → "safety" is not a Procore issue type '
            f"{ISSUE_TYPES_ALLOWED}.",
        ),
        (
            "issue_types.csv",
            "category,type,procore_issue_type\n*,*,other\n*,*,clash\n",
            'mappings/issue_types.csv:3: duplicate category and type "*", "*" (first on line 2).',
        ),
        (
            "issue_types.csv",
            "category,type,procore_issue_type\n,Fall,clash\n",
            "mappings/issue_types.csv:2: category is empty (write * to match any category).",
        ),
        (
            "users.csv",
            "field_email,procore\nbob,7001\n",
            'mappings/users.csv:2: "bob" in field_email is not an email address.',
        ),
        (
            "users.csv",
            "field_email,procore\nbob@x.com,Bob Smith\n",
            'mappings/users.csv:2: "bob@x.com" → "Bob Smith" is not a Procore user email or '
            "numeric id.",
        ),
        (
            "users.csv",
            "field_email,procore\nbob@x.com,\n",
            'mappings/users.csv:2: "bob@x.com" has no procore value (a Procore user email or '
            "numeric id).",
        ),
        (
            "users.csv",
            "field_email,procore\nbob@x.com,1\nBOB@x.com,2\n",
            'mappings/users.csv:3: duplicate field_email "BOB@x.com" (first on line 2).',
        ),
        (
            "locations.csv",
            "field_path,procore_path\nA>B,X>>Y\n",
            'mappings/locations.csv:2: "A>B" → "X>>Y" has an empty node name '
            "(separate node names with a single >).",
        ),
        (
            "locations.csv",
            "field_path,procore_path\nA > B,X\nA>B,Y\n",
            'mappings/locations.csv:3: duplicate field_path "A>B" (first on line 2).',
        ),
        (
            "fields.csv",
            "field,target\nf--description,body\n",
            f'mappings/fields.csv:2: "f--description" → "body" is not a target {TARGETS_ALLOWED}.',
        ),
        (
            "fields.csv",
            "field,target\nf--description,\n",
            f'mappings/fields.csv:2: "f--description" has no target {TARGETS_ALLOWED}.',
        ),
        (
            "fields.csv",
            "field,target\n{identifer} {description},title_template\n",
            'mappings/fields.csv:2: "{identifer} {description}" uses unknown placeholder '
            f"{{identifer}} {PLACEHOLDERS}.",
        ),
        (
            "fields.csv",
            "field,target\n{identifier:>10},title_template\n",
            'mappings/fields.csv:2: "{identifier:>10}" placeholder {identifier} takes no format '
            f"spec or conversion {PLACEHOLDERS}.",
        ),
        (
            "fields.csv",
            "field,target\n{identifier,title_template\n",
            "mappings/fields.csv:2: \"{identifier\" is not a valid template (expected '}' before "
            f"end of string; write {{{{ or }}}} for a literal brace) {PLACEHOLDERS}.",
        ),
        (
            "fields.csv",
            "field,target\nf--descripton,description\n",
            'mappings/fields.csv:2: "f--descripton" is not a BIM 360 Field standard field '
            "(known: f--area_id, f--assigned_to, f--description, f--due_date, f--identifier, "
            "f--issue_type_id, f--location_detail, f--priority, f--responsible_company_id, "
            "f--root_cause_id, f--status).",
        ),
        (
            "fields.csv",
            "field,target\nf--status,description\n",
            'mappings/fields.csv:2: "f--status" → "description" is not allowed: this field is '
            "mapped through status.csv (allowed for it: footer, drop).",
        ),
        (
            "fields.csv",
            "field,target\nf--due_date,due_date\nOccurrence Date,due_date\n",
            'mappings/fields.csv:3: "Occurrence Date" → due_date, but line 2 already sends '
            '"f--due_date" there (only one field can be the due_date).',
        ),
        (
            "fields.csv",
            "field,target\nNotes,footer\nnotes,drop\n",
            'mappings/fields.csv:3: duplicate field "notes" (first on line 2).',
        ),
        (
            "fields.csv",
            "field,target\n{identifier}, {description},title_template\n",
            "mappings/fields.csv:2: 3 values but the header has 2 columns (put a value that "
            "contains a comma in double quotes).",
        ),
    ],
)
def test_each_validation_problem_has_its_message(
    folder: Path, name: str, text: str, expected: str
) -> None:
    write(folder, name, text)
    assert problems_for(folder) == [expected]


def test_missing_required_file_and_folder(folder: Path) -> None:
    (folder / "fields.csv").unlink()
    assert problems_for(folder) == [
        "mappings/fields.csv: not found (required; `migrate init` writes the default files)."
    ]
    assert problems_for(folder.parent / "nowhere") == [
        "nowhere: mapping folder not found; run `migrate init` to write the defaults."
    ]


def test_file_that_is_not_utf8(folder: Path) -> None:
    (folder / "users.csv").write_bytes("field_email,procore\nrené@x.com,1\n".encode("cp1252"))
    assert problems_for(folder) == [
        'mappings/users.csv: not UTF-8 (byte 0xe9 at offset 23); save it as "CSV UTF-8".'
    ]


def test_every_problem_in_every_file_is_reported_at_once(folder: Path) -> None:
    write(folder, "status.csv", "field_status,procore_status\nDraft,drafty\nDraft,open\n")
    write(folder, "priority.csv", "field_priority,procore_priority\nLow,lowest\n")
    write(folder, "fields.csv", "field,target\n{title},title_template\nf--nope,footer\n")
    with pytest.raises(MappingError) as caught:
        load_mappings(folder)
    error = caught.value
    assert [problem.split(":")[0] + ":" + problem.split(":")[1] for problem in error.problems] == [
        "mappings/status.csv:2",
        "mappings/status.csv:3",
        "mappings/priority.csv:2",
        "mappings/fields.csv:2",
        "mappings/fields.csv:3",
    ]
    assert str(error).splitlines()[0] == "5 problems in the mapping files:"
    assert str(error).splitlines()[1] == f"  {error.problems[0]}"
    assert isinstance(error, ConfigError) and error.exit_code == EXIT_USAGE == 2


def test_spreadsheet_quirks_are_accepted(folder: Path) -> None:
    # BOM, CRLF, a quoted comment with commas (as a spreadsheet saves it), padding commas,
    # an extra notes column, upper-case header, spaces around values.
    text = (
        "\ufeff# statuses\r\n"
        '"# a comment, with commas",\r\n'
        "Field_Status , Procore_Status,notes\r\n"
        " Draft , OPEN ,first\r\n"
        ",,\r\n"
        "Parked,skip,\r\n"
    )
    (folder / "status.csv").write_bytes(text.encode("utf-8"))
    mappings = load_mappings(folder)
    assert mappings.status_for("draft").value == "open"
    assert mappings.status_for("Parked").value == "skip"
    assert mappings.status_for("Open").unmapped


def test_line_numbers_count_comments_and_quoted_newlines(folder: Path) -> None:
    write(
        folder,
        "locations.csv",
        ('# one\nfield_path,procore_path\n"A",X\n"B\n#not a comment",Y\nC,\n'),
    )
    # Line 5 starts with # but sits inside a quoted value: it is data, not a comment.
    assert problems_for(folder) == ['mappings/locations.csv:6: "C" has no procore_path.']
    write(folder, "locations.csv", 'field_path,procore_path\n"B\n#not a comment",Y\n')
    assert load_mappings(folder).locations == {("b #not a comment",): ("Y",)}


# -- description footer --------------------------------------------------------------------

RICH_RECORD = {
    "source_id": "00000aac-0001-0000-0000-00000000000b",
    "identifier": "TH-00013",
    "description": "Water leak at stair 2.\r\nSee photo.\x07",
    "status": "Work Completed",
    "priority": "High",
    "issue_type_name": "Leak",
    "category_name": "Quality",
    "area_path": "North Building>Level 1>Stair 2",
    "location_detail": "under the landing",
    "responsible_company_name": "Acme Drywall",
    "root_cause_name": "Workmanship",
    "assigned_to_email": "bob@example.com",
    "due_date": "2024-03-01",
    "created_by": "quentin@example.org",
    "created_at": "2014-10-23 10:08:04 -0400",
    "closed_at": None,
    "voided": False,
    "custom_fields": {
        "Observers": "Ann\nBob",
        "Beverage of Choice": "Wine",
        "Labor hours": 6.0,
        "Empty one": None,
        "Internal code": "X-1",
    },
    "comments": [
        {
            "created_by": "b@example.com",
            "created_at": "2013-06-04T13:01:29-04:00",
            "text": "Second comment",
        },
        {
            "created_by": "a@example.com",
            "created_at": "2013-06-04 13:01:18 -0400",
            "text": "First comment\nwith two lines",
        },
    ],
    "status_history": [
        {
            "status": "Open",
            "previous_status": "Draft",
            "user": "moe@example.com",
            "start_dt": "2013-06-04 13:00:17 -0400",
            "end_dt": None,
        },
        {
            "status": "Draft",
            "previous_status": None,
            "user": "moe@example.com",
            "start_dt": "2013-06-04 12:00:00 -0400",
            "end_dt": "2013-06-04 13:00:17 -0400",
        },
    ],
}
DEFINITIONS = [
    {"id": "cf--1", "name": "Beverage of Choice", "position": 20001},
    {"id": "cf--2", "name": "Observers", "position": 30002},
    {"id": "cf--3", "name": "Labor hours", "position": 40001},
    {"id": "cf--4", "name": "Internal code", "position": 30001},
]
RICH_DESCRIPTION = """\
Water leak at stair 2.
See photo.

---
From BIM 360 Field
Identifier: TH-00013
Issue type: Quality > Leak
Status: Work Completed
Responsible company: Acme Drywall
Root cause: Workmanship
Area: North Building > Level 1 > Stair 2
Location detail: under the landing
Created: 2014-10-23 10:08:04 -0400 by quentin@example.org
Assignee not carried over: bob@example.com is not among the project's assignees
Custom fields:
  Beverage of Choice: Wine
  Observers: Ann
    Bob
  Labor hours: 6
Comments:
  2013-06-04 13:01:18 -0400 a@example.com:
    First comment
    with two lines
  2013-06-04T13:01:29-04:00 b@example.com:
    Second comment
Status history:
  2013-06-04 12:00:00 -0400: Draft by moe@example.com
  2013-06-04 13:00:17 -0400: Draft → Open by moe@example.com
Attachments not migrated:
  site.dwg: larger than 100 MB"""


def test_description_footer_for_a_rich_record(folder: Path) -> None:
    write(folder, "fields.csv", DEFAULT_FILES["fields.csv"] + "cf--4,drop\n")
    extras = {
        "assignee_note": "bob@example.com is not among the project's assignees",
        "attachments_not_migrated": [{"name": "site.dwg", "reason": "larger than 100 MB"}],
        "custom_field_definitions": DEFINITIONS,
    }
    mappings = load_mappings(folder)
    text = build_description(RICH_RECORD, mappings, extras)
    assert text == RICH_DESCRIPTION
    assert build_description(dict(RICH_RECORD), mappings, dict(extras)) == text  # same bytes
    indexed = {**extras, "custom_field_definitions": index_definitions(DEFINITIONS)}
    assert build_description(RICH_RECORD, mappings, indexed) == text


def test_description_footer_for_a_near_empty_record() -> None:
    mappings = default_mappings()
    assert build_description({"identifier": "7", "voided": True}, mappings) == (
        "From BIM 360 Field\nIdentifier: 7\nVoided in BIM 360 Field: yes"
    )
    assert build_description({}, mappings, None) == "From BIM 360 Field"
    assert build_description({"created_by": "a@b.c", "comments": []}, mappings) == (
        "From BIM 360 Field\nCreated: by a@b.c"
    )


def test_footer_shows_what_fields_csv_leaves_unmapped(folder: Path) -> None:
    write(
        folder,
        "fields.csv",
        ("field,target\nNotes,description\nf--status,drop\nf--identifier,drop\n"),
    )
    write(folder, "priority.csv", "field_priority,procore_priority\nHigh,(none)\n")
    record = {
        "identifier": "A-1",
        "status": "Open",
        "description": "Long text",
        "due_date": "2024-01-02",
        "assigned_to_email": "x@y.com",
        "priority": "High",
        "custom_fields": {"Notes": "Body from a custom field", "Extra": "kept"},
    }
    assert build_description(record, load_mappings(folder)) == (
        "Body from a custom field\n\n---\nFrom BIM 360 Field\n"
        "Priority: High\n"  # priority.csv sends none, so the Field value is kept here
        "Description: Long text\nDue date: 2024-01-02\nAssigned to: x@y.com\n"
        "Custom fields:\n  Extra: kept"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2013-06-04 13:01:18 -0400", 1370365278.0),
        ("2013-06-04T13:01:18-04:00", 1370365278.0),
        ("2013-06-04T17:01:18Z", 1370365278.0),
        ("2013-06-04T17:01:18.5", 1370365278.5),
        ("2013-06-04", 1370304000.0),
        ("yesterday", None),
        (None, None),
    ],
)
def test_timestamps_for_ordering(value: str | None, expected: float | None) -> None:
    assert parse_timestamp(value) == expected


def test_hints_name_mapping_files_the_same_from_any_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hints go into Procore descriptions: a path relative to the working directory would make
    # an unchanged source look changed when the next run starts elsewhere.
    folder = tmp_path / "project" / "mappings"
    write_default_mappings(folder)
    hints = []
    for cwd in (tmp_path, tmp_path / "project", folder, Path("/")):
        monkeypatch.chdir(cwd)
        mappings = load_mappings(folder)
        hints.append((mappings.status_for("Parked").hint, mappings.file("users.csv")))
    assert len(set(hints)) == 1
    assert hints[0][1] == "mappings/users.csv"


@pytest.mark.parametrize(
    "dates",
    [
        # Text order is time order: kept as staged.
        ["2013-06-04 13:01:17 -0400", "2013-06-04 13:01:18 -0400", "2013-06-05 09:00:00 -0400"],
        # Text order is not time order: different offsets, or a time written shorter.
        ["2013-06-04T18:00:00+02:00", "2013-06-04T17:30:00Z"],
        ["2013-06-04 13:01 -0400", "2013-06-04 13:00:59 -0400"],
        # Not dates at all, or not real ones (they sort last, in their given order).
        ["2013-02-29 10:00:00 -0400", "2013-02-28 10:00:00 -0400"],
        ["2013-04-31 10:00:00 -0400", "2013-04-30 10:00:00 -0400"],
        ["0000-01-01 10:00:00 -0400", "2013-01-01 10:00:00 -0400"],
        ["2012-02-29 10:00:00 -0400", "2012-03-01 10:00:00 -0400"],
        ["2013-06-04 24:00:00 -0400", "2013-06-04 23:00:00 -0400"],
        ["2013-06-04 13:01:18 +2500", "2013-06-04 13:01:19 +2500"],
        # A value of two lines looks like two dates in order, but is no date.
        ["2013-06-04 13:01:17 -0400\n2013-06-04 13:01:10 -0400", "2013-06-04 13:01:18 -0400"],
        [
            "2013-06-04 13:01:16 -0400",
            "2013-06-04 13:01:17 -0400\n2013-06-04 13:01:10 -0400",
            "2013-06-04 13:01:18 -0400",
        ],
        ["2013-06-04 13:01:18 -0400", None, "2013-06-04 13:01:17 -0400"],
        ["2013-06-04T13:01:18.50Z", "2013-06-04T13:01:18.05Z"],
    ],
)
def test_comments_and_history_oldest_first_undated_last(dates: list[str | None]) -> None:
    history = [{"status": f"S{n}", "start_dt": when} for n, when in enumerate(dates)]
    comments = [{"created_at": when, "text": f"C{n}"} for n, when in enumerate(dates)]
    text = build_description({"status_history": history, "comments": comments}, default_mappings())
    moments = [parse_timestamp(when) for when in dates]
    expected = sorted(range(len(dates)), key=lambda n: (moments[n] is None, moments[n] or 0.0, n))
    assert re.findall(r": S(\d+)$", text, re.M) == [str(n) for n in expected]
    assert re.findall(r"^    C(\d+)$", text, re.M) == [str(n) for n in expected]
