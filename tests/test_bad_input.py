"""Bad input: whatever BIM 360 Field sends, every record is planned, skipped, quarantined or kept
as a source problem with a reason. Never a crash, never a lost record.

Property-based (hypothesis). The first tests feed generated retrieve, get_issues and checklist
JSON through the functions extract itself uses to turn them into rows (``save_page``,
``save_issue_details``, ``save_checklist_details`` on a real staging store), then through
transform, and account for every generated record. The last test goes over HTTP: hostile
issues and attachments are planted in the BIM 360 Field simulator with its mutation helpers
(some names reach the wire as a lone-surrogate escape or as bytes that are not UTF-8), then
extracted and transformed; the same accounting holds and no blob path escapes the blob store.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from migrate.extract import extract_from_settings
from migrate.extract.checklists import save_checklist_details
from migrate.extract.issues import refresh_issue_flags, save_issue_details
from migrate.extract.listing import save_page
from migrate.extract.state import Context, ExtractOptions
from migrate.mappings import default_mappings, write_default_mappings
from migrate.results import NoProgress
from migrate.sandbox.faults import Faults
from migrate.sandbox.field_server import FieldApp
from migrate.sandbox.generator import GeneratedProject
from migrate.sandbox.httpbase import Request, Response, RunningServer
from migrate.sandbox.procore_server import ProcoreApp
from migrate.settings import (
    MappingsSettings,
    Settings,
    SourceSettings,
    StagingSettings,
    TargetSettings,
)
from migrate.settings import TransformSettings as TS
from migrate.store import BlobStore, Store, open_store, start_run
from migrate.store.blobs import MARKER_NAME
from migrate.transform import TransformOptions, plan_hash, transform_from_settings
from migrate.transform import run as transform_run
from migrate.transform.checklists import SOURCE_PREFIX

# Few, varied examples and no deadline: each example builds a store (or two servers).
QUICK = settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
OVER_HTTP = settings(
    max_examples=12,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

PROJECT = 5100
RETRIEVE = "POST /fieldapi/issues/v1/retrieve"
TICKET = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"  # a ticket-shaped value that must never be stored


def transform(store: Store, **options: Any) -> Any:
    """One library run of transform against the stored snapshot (no Procore client)."""
    return transform_run(store, None, options=TransformOptions(**options))


# -- the Procore sync rules, written out again from seed 000 (not imported from transform) --------
STATUSES = {"blocked", "open", "ready_for_review", "moved_to_observation", "unblocked", "closed"}
PRIORITIES = {"low", "medium", "high", "critical"}
ISSUE_TYPES = {
    "building_code",
    "existing_condition",
    "clash",
    "other",
    "coordination",
    "constructability",
    "client_feedback",
    "requirement_change",
    "design_review",
}
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
YMD = re.compile(r"^\d{4}-\d{2}-\d{2}$")
BLOB_PATH = re.compile(r"^([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{64})$")


def payload_faults(payload: Mapping[str, Any]) -> list[str]:
    """What Procore would refuse in a planned payload (empty: it would accept it)."""
    faults = []
    title = payload.get("title")
    if not isinstance(title, str) or not title.strip() or len(title) > 80:
        faults.append(f"title {title!r}")
    if payload.get("status") not in STATUSES:
        faults.append(f"status {payload.get('status')!r}")
    if "priority" in payload and payload["priority"] not in PRIORITIES:
        faults.append(f"priority {payload['priority']!r}")
    if "issue_type" in payload and payload["issue_type"] not in ISSUE_TYPES:
        faults.append(f"issue_type {payload['issue_type']!r}")
    due = payload.get("due_date")
    if due is not None:
        try:
            ok = isinstance(due, str) and bool(YMD.match(due)) and bool(date.fromisoformat(due))
        except ValueError:
            ok = False
        if not ok:
            faults.append(f"due_date {due!r}")
    if not isinstance(payload.get("uuid"), str) or not UUID.match(payload["uuid"]):
        faults.append(f"uuid {payload.get('uuid')!r}")
    if not isinstance(payload.get("description", ""), str):
        faults.append("description is not text")
    # Procore keeps text in PostgreSQL: no lone surrogate anywhere, and no NUL in the title.
    for text in _strings(payload):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            faults.append(f"lone surrogate in {text[:40]!r}")
    if isinstance(title, str) and "\x00" in title:
        faults.append(f"NUL in the title {title!r}")
    return faults


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


# -- strategies -----------------------------------------------------------------------------------
# Records start from a valid shape and get a few things wrong, so that every outcome (planned,
# quarantined, skipped, source problem) is common; hypothesis shrinks a failure to the one
# value that causes it.
LONE_SURROGATE = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
CONTROL = st.characters(min_codepoint=0, max_codepoint=0x1F)
NASTY_TEXT = [
    "a\x00b",
    "\x00",
    "\udc80",
    "x\ud800y",
    "\x01\x02\x03",
    "\x1b[31mred",
    "\u202egpj.exe",
    "\r\n\r\n",
    "\u200b",
    "\ufeff",
    "\U0001f600" * 3,
    "e\u0301" * 50,
    "   ",
    "\t\n",
    "Stair 2 > Landing",
    "100%",
    "'; DROP TABLE issues; --",
    "{identifier}",
    "photo.jpg?ticket=" + TICKET,
]
HUGE_NUMBERS = [2**63, -(2**63) - 1, 2**64 + 7, 10**30, 10**400, -(10**400)]


def _around(middle: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(lambda a, m, b: a + m + b, st.text(max_size=6), middle, st.text(max_size=6))


odd_text = st.one_of(
    st.just(""),
    st.sampled_from(NASTY_TEXT),
    st.text(max_size=30),
    st.text(alphabet=CONTROL, min_size=1, max_size=8),
    _around(LONE_SURROGATE),
)
# 100 KB and more: one character repeated (hypothesis draws no such sizes itself). Only where
# size matters (description, identifier, file name, comment), to keep the test's memory small.
huge_text = st.builds(
    lambda c, n: c * n,
    st.sampled_from(["x", "é", "\U0001f600", "word "]),
    st.integers(100_000, 110_000),
)
long_text = st.one_of(odd_text, huge_text)
big_int = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.sampled_from(HUGE_NUMBERS))
# No NaN or Infinity: they are not JSON (RFC 8259), and the client refuses a body holding them
# before anything is stored (see test_nan_in_a_retrieve_body_is_an_unreadable_answer_not_a_crash).
finite = st.floats(allow_nan=False, allow_infinity=False)
scalar = st.one_of(st.none(), st.booleans(), big_int, finite, odd_text)
wrong = st.one_of(
    scalar, st.lists(scalar, max_size=3), st.dictionaries(st.text(max_size=4), scalar, max_size=3)
)
ODD_DATES = [
    "13/45/2020",
    "2020-02-30",
    "yesterday",
    "2020-01-01T25:00",
    "0000-00-00",
    "2020-13-01",
    "20200101",
    "2020-1-1",
    "06/05/2013",
    "2020-01-01T10:00:00Z",
    "2013-06-04 13:00:17 -0400",
    " 2020-01-01 ",
    "9999-12-31",
    "1e9",
    "",
    "2011-02-07 12:37:21 EST",
    "2020-02-29",
    "2021-02-29",
]
dates = st.one_of(
    st.sampled_from(ODD_DATES),
    st.dates().map(str),
    st.integers(0, 2**40),
    finite,
    st.text(max_size=12),
    st.none(),
)
HOSTILE_NAMES = [
    "../../x",
    "../../../../etc/passwd",
    "/etc/passwd",
    "/tmp/x",
    "a\x00b.jpg",
    "\x00",
    "..\\..\\windows\\win.ini",
    "C:\\x.jpg",
    "n" * 5000,
    ".",
    "..",
    "",
    "a/b/c.jpg",
    "%2e%2e%2fx",
    "\u202egpj.exe",
    "photo.jpg?ticket=" + TICKET,
]
filenames = st.one_of(
    st.sampled_from(HOSTILE_NAMES),
    long_text,
    wrong,
    st.builds(lambda p, s: p + s, st.sampled_from(["../", "/", "\\", "~/"]), st.text(max_size=20)),
)
# A few repeated ids make duplicates likely; one id in five is wrong in some way. (An id with
# a NUL is left out: Field ids are UUIDs the server makes, see the report.)
ID_POOL = ["id-1", "id-2", "id-3", "00000aac-0000-0000-0000-000000000001", "../../x", 17]
good_ids = st.one_of(st.sampled_from(ID_POOL), st.uuids().map(str))
bad_ids = st.one_of(
    big_int,
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.sampled_from(["", "   ", "\udc80", "a\ud800"]),
    _around(LONE_SURROGATE),
)
record_ids = st.integers(0, 4).flatmap(lambda n: bad_ids if n == 0 else good_ids)


@st.composite
def objects(
    draw: st.DrawFn,
    values: dict[str, st.SearchStrategy[Any]],
    whole: st.SearchStrategy[Any] | None = None,
) -> Any:
    """A JSON object with now and then a key left out; one in ten is not an object at all."""
    if whole is not None and draw(st.integers(0, 9)) == 0:
        return draw(whole)
    return {key: draw(strategy) for key, strategy in values.items() if draw(st.integers(0, 7)) > 0}


def either(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Two draws in three from `good`."""
    return st.integers(0, 2).flatmap(lambda n: bad if n == 0 else good)


def ticket_url(object_id: Any) -> str:
    return (
        f"http://127.0.0.1:9/api/binary_data?ticket={TICKET}&project_id=p&object_id="
        f"{object_id}&image_type=original"
    )


attachment_entries = objects(
    {
        "id": record_ids,
        "type": either(
            st.sampled_from(["Attachment", "DocumentReference", "UriReference", "Signature"]),
            st.sampled_from(["Photo", None, 3, ""]),
        ),
        "name": either(st.sampled_from(["photo.jpg", "IMG 0001.JPG"]), filenames),
        "original_url": either(st.builds(ticket_url, st.text(max_size=8)), wrong),
        "path": either(st.just("https://example.com/doc?ticket=" + TICKET), wrong),
        "content_type": either(st.just("image/jpeg"), wrong),
        "caption": odd_text,
        "num_pages": either(st.integers(0, 5), st.one_of(big_int, wrong)),
        "created_at": dates,
    },
    whole=wrong,
)
comment_entries = objects(
    {
        "id": record_ids,
        "comment_text": either(st.just("Checked on site."), long_text),
        "created_by": odd_text,
        "created_at": dates,
    },
    whole=wrong,
)

#: A value the mapping accepts, per field; FIELD_VALUES below has every wrong one.
GOOD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "f--description": st.sampled_from(["Leak at joint", "Missing fire stop at level 2"]),
    "f--identifier": st.sampled_from(["ISS-1", "000042", "A 7"]),
    "f--status": st.sampled_from(["Open", "Closed", "Draft", "Work Completed", "In Dispute"]),
    "f--priority": st.sampled_from(["High", "Medium", "Low", "Critical"]),
    "f--due_date": st.dates().map(str),
    "f--issue_type_id": st.sampled_from(["t-punch", "t-clash"]),
    "f--area_id": st.just("a-n1"),
    "f--assigned_to": st.sampled_from(["alice@example.com", "ALICE@EXAMPLE.COM"]),
    "f--labor_hours": st.floats(0, 1000),
    "f--cost": st.sampled_from(["12.50", 12]),
    "f--location_detail": st.just("Grid B4"),
    "f--responsible_company_id": st.just("c-1"),
    "cf--cf-1": st.just("Coffee"),
}
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "f--description": st.one_of(long_text, wrong),
    "f--identifier": st.one_of(long_text, wrong),
    "f--status": st.one_of(st.sampled_from(["Void", "Parked", "open", "OPEN", ""]), wrong),
    "f--priority": st.one_of(st.sampled_from(["", "Urgent", "high"]), wrong),
    "f--due_date": dates,
    "f--issue_type_id": st.one_of(st.sampled_from(["t-gone", ""]), wrong),
    "f--area_id": st.one_of(st.sampled_from(["a-old", "a-gone", ""]), wrong),
    "f--assigned_to": st.one_of(st.sampled_from(["nobody@example.com", ""]), odd_text),
    "f--labor_hours": st.one_of(st.sampled_from(["3.5", "lots", "NaN", "1e999"]), wrong),
    "f--cost": wrong,
    "f--location_detail": odd_text,
    "f--responsible_company_id": wrong,
    "cf--cf-1": wrong,
    "f--not-a-field": wrong,
}


@st.composite
def field_lists(draw: st.DrawFn) -> Any:
    """The retrieve ``fields`` array: {id, name, value} entries, or something else entirely."""
    if draw(st.integers(0, 14)) == 0:
        return draw(wrong)
    entries: list[Any] = []
    for field_id in sorted(FIELD_VALUES):
        pick = draw(st.integers(0, 19))
        if pick == 0:
            continue  # the field is not there at all
        if field_id in GOOD_VALUES and pick > 2:
            value = draw(GOOD_VALUES[field_id])
        else:
            value = draw(FIELD_VALUES[field_id])
        entries.append(
            {"id": field_id, "name": draw(st.sampled_from(["", "Name", "a\x00"])), "value": value}
        )
    if draw(st.integers(0, 4)) == 0:
        odd_entry = draw(st.one_of(wrong, st.fixed_dictionaries({"id": wrong})))
        entries.insert(draw(st.integers(0, len(entries))), odd_entry)
    return entries


issue_records = objects(
    {
        "id": record_ids,
        "created_by": either(st.just("moe@example.com"), wrong),
        "fields": field_lists(),
        "comments": either(st.lists(comment_entries, max_size=3), wrong),
        "attachments": either(st.lists(attachment_entries, max_size=4), wrong),
    },
    whole=wrong,
)


# -- a real staging store -----------------------------------------------------------------------
def reference_store() -> Store:
    """A staging store holding reference rows and a Procore snapshot, no issues yet."""
    store = open_store(":memory:")
    with store.transaction():
        conn = store.conn
        conn.execute("INSERT INTO projects (id, name) VALUES ('proj-1', 'Harbor Point')")
        for area_id, parent, name, deleted in (
            ("a-north", None, "North", 0),
            ("a-n1", "a-north", "Level 1", 0),
            ("a-old", None, "Old Trailer", 1),
        ):
            conn.execute(
                "INSERT INTO areas (id, parent_id, name, full_path, deleted) "
                "VALUES (?, ?, ?, ?, ?)",
                (area_id, parent, name, name, deleted),
            )
        conn.execute("INSERT INTO companies (id, name) VALUES ('c-1', 'Acme Drywall')")
        for type_id, name, category in (
            ("t-clash", "Clash", "Coordination"),
            ("t-punch", "Punch item", "Quality"),
        ):
            conn.execute(
                "INSERT INTO issue_types (id, name, category_name) VALUES (?, ?, ?)",
                (type_id, name, category),
            )
        conn.execute(
            "INSERT INTO custom_fields (id, name, container_type, position) "
            "VALUES ('cf-1', 'Beverage', 'Issue', 1)"
        )
        run_id = start_run(store, "snapshot-for-test", {})
        conn.execute(
            "INSERT INTO target_assignees (project_id, id, name, login, login_lower, "
            "snapshot_run) VALUES (?, 7001, 'alice', 'alice@example.com', "
            "'alice@example.com', ?)",
            (PROJECT, run_id),
        )
    return store


@pytest.fixture(scope="module")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> BlobStore:
    return BlobStore(tmp_path_factory.mktemp("bad-input") / "blobs")


def extract_context(store: Store, blobs: BlobStore) -> Context:
    """What extract passes its save functions; nothing here makes an HTTP call."""
    run_id = start_run(store, "extract", {"project_id": "proj-1"})
    return Context(
        store=store,
        session=None,
        blobs=blobs,  # type: ignore[arg-type]
        options=ExtractOptions(project_id="proj-1"),
        run_id=run_id,
        pass_id=run_id,
        full_refresh=False,
        progress=NoProgress(),
        log=None,
    )


def usable_id(record: Any) -> str | None:
    """The id a record is stored under, or None when it has no usable one (a source problem)."""
    if not isinstance(record, Mapping):
        return None
    value = record.get("id")
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value)
    if not text.strip():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return None  # not valid Unicode: it cannot be an id in SQLite (nor in Procore)
    return text


def problems(
    store: Store, entity: str | None = None, endpoint: str | None = None
) -> list[tuple[str, str | None, str]]:
    """(entity, source_id, reason) of the source problems, of one entity and endpoint if given."""
    rows = store.conn.execute("SELECT entity, source_id, reason, endpoint FROM source_problems")
    return [
        row[:3]
        for row in rows
        if (entity is None or row[0] == entity) and (endpoint is None or row[3] == endpoint)
    ]


def one_value(store: Store, sql: str, *params: Any) -> Any:
    return store.conn.execute(sql, params).fetchone()[0]


def outcome_of(store: Store, entity: str, source_id: str) -> list[str]:
    """Where a staged record ended: planned, quarantined and/or skipped (exactly one is right)."""
    found = []
    if one_value(
        store,
        "SELECT COUNT(*) FROM planned_issues WHERE source_id = ? AND source_kind = ?",
        source_id,
        entity,
    ):
        found.append("planned")
    if one_value(
        store,
        "SELECT COUNT(*) FROM quarantine WHERE entity = ? AND source_id = ? "
        "AND released_at IS NULL AND reason != ''",
        entity,
        source_id,
    ):
        found.append("quarantined")
    if one_value(
        store,
        "SELECT COUNT(*) FROM skipped_records WHERE entity = ? AND source_id = ? AND reason != ''",
        entity,
        source_id,
    ):
        found.append("skipped")
    return found


def check_planned_payloads(store: Store) -> None:
    for source_id, payload in store.conn.execute("SELECT source_id, payload FROM planned_issues"):
        faults = payload_faults(json.loads(payload))
        assert not faults, f"{source_id!r}: Procore would refuse {faults}"


def check_stored_values(store: Store) -> None:
    """What reached the normalised tables has the declared shape and carries no ticket."""
    # Due dates are staged as Field wrote them (text); transform reads them as dates.
    for (due,) in store.conn.execute("SELECT due_date FROM issues WHERE due_date IS NOT NULL"):
        assert isinstance(due, str), due
    for (hours,) in store.conn.execute(
        "SELECT labor_hours FROM issues WHERE labor_hours IS NOT NULL"
    ):
        assert isinstance(hours, float) and math.isfinite(hours)
    for (url,) in store.conn.execute(
        "SELECT source_url FROM attachments WHERE source_url IS NOT NULL"
    ):
        assert TICKET not in url and "ticket=" not in url.lower(), url
    for table in ("raw_issues", "raw_issue_details", "raw_checklist_details", "source_problems"):
        column = "raw_payload" if table == "source_problems" else "payload"
        for (text,) in store.conn.execute(f"SELECT {column} FROM {table}"):
            assert text is None or TICKET not in text, table


# -- issues: get_issues listing + retrieve details → rows → transform -----------------------------
@QUICK
@given(records=st.lists(issue_records, max_size=6), data=st.data())
def test_every_generated_issue_is_planned_quarantined_skipped_or_a_source_problem(
    blobs: BlobStore, records: list[Any], data: st.DataObject
) -> None:
    store = reference_store()
    ctx = extract_context(store, blobs)
    # Which records extract may store: the first with each usable id, when it was asked for.
    asked: dict[str, bool] = {}
    for record in records:
        source_id = usable_id(record)
        if source_id is not None and source_id not in asked:
            asked[source_id] = data.draw(st.integers(0, 5).map(bool), label=f"ask {source_id}")
    good: dict[str, Any] = {}
    rejected = 0
    for record in records:
        source_id = usable_id(record)
        if source_id is not None and asked[source_id] and source_id not in good:
            good[source_id] = record
        else:
            rejected += 1
    never_returned = data.draw(st.sampled_from([[], ["never-returned"]]), label="missing ids")
    batch = [(source_id, "basis") for source_id, wanted in asked.items() if wanted]
    batch += [(source_id, "basis") for source_id in never_returned]
    # The get_issues listing: the asked ids with odd timestamps and sizes, plus junk rows.
    listing: list[Any] = []
    for source_id in good:
        if data.draw(st.integers(0, 7).map(bool), label=f"listed {source_id}"):
            record = good[source_id]
            attachments = record.get("attachments")
            sizes = [
                {"id": item.get("id"), "size": data.draw(st.one_of(big_int, wrong))}
                for item in (attachments if isinstance(attachments, list) else [])
                if isinstance(item, Mapping)
            ]
            listing.append(
                {
                    "id": good[source_id]["id"],
                    "updated_at": data.draw(dates),
                    "created_at": data.draw(st.one_of(odd_text, wrong)),
                    "attachments": sizes,
                }
            )
    junk_rows = data.draw(
        st.lists(st.one_of(wrong, st.fixed_dictionaries({"id": wrong})), max_size=2),
        label="junk listing rows",
    )

    save_page(
        ctx,
        cursor="issues:listing",
        entity="issues",
        raw_table="raw_issues",
        rows=listing + junk_rows,
        offset=0,
        last=False,
        incomplete=False,
        endpoint="POST /api/get_issues",
    )
    save_issue_details(ctx, batch, records, [], {"cf-1": 1})
    refresh_issue_flags(ctx)

    # Extract: one row per good record, a problem for every other one; children likewise.
    staged = {row[0] for row in store.conn.execute("SELECT source_id FROM issues")}
    assert staged == set(good)
    record_problems = [
        p
        for p in problems(store, "issues", RETRIEVE)
        if re.search(r"^issues record (is|has)|that was not asked for", p[2])
    ]
    assert len(record_problems) == rejected
    junk_problems = problems(store, "issues", "POST /api/get_issues")
    listed_ids = [usable_id(row) for row in listing + junk_rows]
    usable = [source_id for source_id in listed_ids if source_id is not None]
    listed_twice = len(usable) - len(set(usable))  # the first is kept, each other a problem
    assert len(junk_problems) == listed_ids.count(None) + listed_twice
    for source_id in never_returned:
        assert any(f"did not return issue {source_id}" in p[2] for p in problems(store))
    for source_id, record in good.items():
        check_children(store, source_id, record)
    check_stored_values(store)

    # Transform: each staged issue ends in exactly one place; planned payloads pass the rules.
    result = transform(
        store, mappings=default_mappings(), settings=TS(), target_project_id=PROJECT, workers=1
    )
    assert result.plan_hash == plan_hash(store)
    counts = result.counts["issues"]
    assert counts["extracted"] == len(good)
    for source_id in good:
        assert len(outcome_of(store, "issue", source_id)) == 1, source_id
    assert counts["planned"] + counts["quarantined"] + counts["skipped"] == len(good)
    assert len(records) == counts["planned"] + counts["quarantined"] + counts["skipped"] + len(
        record_problems
    )
    check_planned_payloads(store)
    for outcome in ("planned", "quarantined", "skipped"):
        event(f"some issue {outcome}: {counts[outcome] > 0}")
    event(f"some record a source problem: {bool(record_problems)}")
    event(f"a 100 KB value: {any(len(text) >= 100_000 for text in _strings(records))}")
    store.close()


def check_children(store: Store, issue_id: str, record: Mapping[str, Any]) -> None:
    """Each comment and attachment of a stored issue has a row, or a problem saying why not."""
    reasons = [p[2] for p in problems(store)]
    for key, table, kinds in (
        ("comments", "comments", None),
        (
            "attachments",
            "attachments",
            {"Attachment", "DocumentReference", "UriReference", "Signature"},
        ),
    ):
        entries = record.get(key)
        if entries is None:
            continue
        if not isinstance(entries, list):
            assert any(f"issues {issue_id}: {key} should be a list" in r for r in reasons)
            continue
        for entry in entries:
            child_id = usable_id(entry)
            if child_id is None:
                assert any(
                    f"issue {issue_id}: {key} record" in r
                    or f"Issue {issue_id}: attachments record" in r
                    for r in reasons
                ), (issue_id, entry)
            elif kinds is not None and entry.get("type") not in kinds:
                assert any(
                    f"attachments {child_id} on Issue {issue_id}: type" in r for r in reasons
                )
            else:
                assert (
                    one_value(store, f"SELECT COUNT(*) FROM {table} WHERE id = ?", child_id) == 1
                ), (table, child_id)


# -- checklists: details → rows → checklist items as issues ---------------------------------------
item_entries = objects(
    {
        "id": record_ids,
        "position": st.one_of(st.integers(0, 9), big_int, wrong),
        "question_text": st.one_of(odd_text, wrong),
        "display_type": st.one_of(st.just("yes_no_na"), wrong),
        "response": st.one_of(st.sampled_from(["No", "Yes", ""]), wrong),
        "is_conforming": st.one_of(st.sampled_from(["No", "no ", "Yes", ""]), wrong),
        "comment": st.one_of(odd_text, wrong),
        "possible_values": wrong,
        "issues": st.one_of(
            st.lists(st.one_of(st.fixed_dictionaries({"id": record_ids}), wrong), max_size=2), wrong
        ),
        "attachments": st.one_of(st.lists(attachment_entries, max_size=2), wrong),
    },
    whole=wrong,
)
section_entries = objects(
    {
        "section_name": st.one_of(odd_text, wrong),
        "items": st.one_of(st.lists(item_entries, max_size=4), wrong),
    },
    whole=wrong,
)
checklist_records = objects(
    {
        "id": record_ids,
        "name": st.one_of(odd_text, wrong),
        "identifier": st.one_of(odd_text, wrong),
        "status": st.one_of(st.sampled_from(["Open", "Closed"]), wrong),
        "company": st.one_of(st.fixed_dictionaries({"id": record_ids}), wrong),
        "template": st.one_of(st.fixed_dictionaries({"id": record_ids, "name": odd_text}), wrong),
        "sections": st.one_of(st.lists(section_entries, max_size=3), wrong),
        "comments": st.one_of(st.lists(comment_entries, max_size=2), wrong),
        "attachments": st.one_of(st.lists(attachment_entries, max_size=2), wrong),
        "signatures": st.one_of(st.lists(attachment_entries, max_size=2), wrong),
        "custom_field_values": st.one_of(
            st.lists(
                st.one_of(st.fixed_dictionaries({"id": record_ids, "value": wrong}), wrong),
                max_size=3,
            ),
            wrong,
        ),
    },
    whole=wrong,
)


@QUICK
@given(
    fetched=st.lists(
        st.tuples(
            st.sampled_from(["cl-1", "cl-2", "cl-3", "id-1"]),
            st.one_of(checklist_records, st.none()),
        ),
        max_size=4,
        unique_by=lambda pair: pair[0],
    ),
    same_id=st.lists(st.booleans(), min_size=4, max_size=4),
)
def test_every_generated_checklist_and_item_is_stored_or_a_source_problem(
    blobs: BlobStore, fetched: list[tuple[str, Any]], same_id: list[bool]
) -> None:
    store = reference_store()
    ctx = extract_context(store, blobs)
    # Mostly the detail answers with the id asked for; sometimes with another (a problem).
    calls = []
    for (asked, record), same in zip(fetched, same_id, strict=False):
        if same and isinstance(record, dict):
            record = {**record, "id": asked}
        calls.append((asked, "basis", record))
    save_checklist_details(ctx, calls)

    reasons = [p[2] for p in problems(store)]
    stored = {row[0] for row in store.conn.execute("SELECT id FROM checklists")}
    expected_items: set[str] = set()
    for asked, _basis, record in calls:
        if record is None:  # 404: gone since it was listed, marked deleted in raw_checklists
            assert asked not in stored
        elif usable_id(record) == asked:
            assert asked in stored
            expected_items |= items_of(record, reasons)
        else:
            assert asked not in stored
            assert any(
                f"asked for checklist {asked}" in r or "checklists record" in r for r in reasons
            ), record
    for item_id in expected_items:
        assert one_value(store, "SELECT COUNT(*) FROM checklist_items WHERE id = ?", item_id) == 1
    check_stored_values(store)

    result = transform(
        store,
        mappings=default_mappings(),
        settings=TS(checklist_items_as_issues=True),
        target_project_id=PROJECT,
        workers=1,
    )
    assert result.plan_hash == plan_hash(store)
    counts = result.counts["checklist_items"]
    assert counts["planned"] + counts["quarantined"] + counts["skipped"] == counts["extracted"]
    # Every checklist, however odd, is planned as an inspection, quarantined or skipped.
    checklists = result.counts["checklists"]
    assert (
        checklists["planned"] + checklists["quarantined"] + checklists["skipped"]
        == checklists["extracted"]
        == len(stored)
    )
    candidates = [
        row[0]
        for row in store.conn.execute(
            "SELECT id FROM checklist_items WHERE lower(trim(is_conforming)) = 'no' AND "
            "(linked_issue_ids IS NULL OR json_array_length(linked_issue_ids) = 0)"
        )
    ]
    assert counts["extracted"] == len(candidates)
    for item_id in candidates:
        # Transform keys an item's plan, quarantine and skip rows as "checklist_item:<id>".
        keyed = SOURCE_PREFIX + item_id
        found = outcome_of(store, "checklist_item", item_id) + outcome_of(
            store, "checklist_item", keyed
        )
        assert len(found) == 1, (item_id, found)
    check_planned_payloads(store)
    store.close()


def items_of(record: Mapping[str, Any], reasons: list[str]) -> set[str]:
    """Item ids a stored checklist must have rows for; items without one must be problems."""
    ids: set[str] = set()
    sections = record.get("sections")
    for section in sections if isinstance(sections, list) else []:
        items = section.get("items") if isinstance(section, Mapping) else None
        for item in items if isinstance(items, list) else []:
            item_id = usable_id(item)
            if item_id is None:
                assert any("checklist_items record" in r for r in reasons), item
            else:
                ids.add(item_id)
    return ids


# -- end to end: hostile issues planted in the simulator, extracted over HTTP, transformed --------
SURROGATE_MARK = "@LONE-SURROGATE@"
BAD_UTF8_MARK = "@NOT-UTF8@"
NAN_MARK = "@NAN@"  # a text value retrieve sends as the bare NaN Python's json would accept
FIELD_ENV = {"BIM360_FIELD_USERNAME": "demo@example.com", "BIM360_FIELD_PASSWORD": "demo"}


class HostileBytesFieldApp(FieldApp):
    """The simulator, putting on the wire what its own JSON encoder never would: a lone-
    surrogate escape (valid JSON, invalid Unicode), bytes that are not UTF-8, a bare NaN, and
    voided ids of any type."""

    def _hostile(self, response: Response) -> Response:
        if not isinstance(response.body, bytes):
            return response
        body = response.body.replace(SURROGATE_MARK.encode(), b"\\udc80")
        body = body.replace(BAD_UTF8_MARK.encode(), b"\xff\xfe\xc3")
        return Response(response.status, body, response.headers)

    #: Ids added to the get_voided_issues answer (after the marks are replaced).
    extra_voided: list[Any] = []

    def _voided(self, request: Request) -> Response:
        response = super()._voided(request)
        assert isinstance(response.body, bytes)
        ids = json.loads(response.body) + self.extra_voided
        return self._hostile(Response(200, json.dumps(ids).encode(), response.headers))

    def _retrieve(self, request: Request) -> Response:
        response = self._hostile(super()._retrieve(request))
        if isinstance(response.body, bytes):
            body = response.body.replace(json.dumps(NAN_MARK).encode(), b"NaN")
            response = Response(response.status, body, response.headers)
        return response

    def _get_issues(self, request: Request) -> Response:
        return self._hostile(super()._get_issues(request))


planted_names = st.one_of(
    st.sampled_from(HOSTILE_NAMES),
    st.sampled_from([f"{SURROGATE_MARK}.jpg", f"..{BAD_UTF8_MARK}/x", f"a{SURROGATE_MARK}"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40),
)
planted_fields = st.fixed_dictionaries(
    {},
    optional={
        "due_date": st.one_of(
            st.sampled_from(ODD_DATES), st.integers(0, 2**40), st.dates().map(str)
        ),
        "priority": st.one_of(st.sampled_from(["High", "Urgent", ""]), st.integers()),
        "labor_hours": st.one_of(st.sampled_from(["lots", "2.5"]), finite),
        "identifier": st.one_of(st.text(max_size=10), st.integers(), st.just("a\x00b")),
        "f--status": st.sampled_from(["Parked", "", "Closed"]),
        "assigned_to": st.sampled_from(["nobody@example.com", "", f"x{SURROGATE_MARK}"]),
    },
)
planted_issues = st.lists(
    st.fixed_dictionaries(
        {
            "description": st.one_of(
                st.text(max_size=60),
                st.sampled_from(
                    [
                        "",
                        "\x00\x01\x02",
                        f"Leak {SURROGATE_MARK}",
                        f"bad {BAD_UTF8_MARK} bytes",
                        "é" * 100_001,
                    ]
                ),
            ),
            "fields": planted_fields,
            "attachments": st.lists(st.tuples(planted_names, st.integers(0, 3000)), max_size=3),
        }
    ),
    min_size=1,
    max_size=4,
)


@OVER_HTTP
@given(planted=planted_issues)
def test_hostile_issues_over_http_migrate_or_are_accounted_for(
    planted: list[dict[str, Any]],
) -> None:
    work = Path(tempfile.mkdtemp(prefix="bad-input-e2e-"))
    root = work / "run" / "staging"  # two levels below, so "../../x" from blobs/ stays in work
    root.mkdir(parents=True)
    project = GeneratedProject(seed=11, issues=8)
    field = HostileBytesFieldApp(project, faults=Faults())
    procore = ProcoreApp(project.target_state())
    servers = [RunningServer(field), RunningServer(procore)]
    try:
        for spec in planted:
            issue_id = field.add_issue(description=spec["description"], **spec["fields"])
            for name, size in spec["attachments"]:
                field.add_attachment(issue_id, name, size)
        settings_ = Settings(
            source=SourceSettings(base_url=servers[0].url, project_id=project.main.id, workers=2),
            target=TargetSettings(
                base_url=servers[1].url,
                auth_url=servers[1].url,
                company_id=procore.company["id"],
                project_id=project.target_state()["projects"][0]["id"],
            ),
            staging=StagingSettings(
                path=root / "staging.db", blobs=root / "blobs", logs=root / "logs"
            ),
            mappings=MappingsSettings(dir=work / "mappings"),
        )
        write_default_mappings(work / "mappings")
        env = {
            **FIELD_ENV,
            "PROCORE_CLIENT_ID": "demo-client",
            "PROCORE_CLIENT_SECRET": "demo-secret",
        }
        extracted = extract_from_settings(settings_, env)
        result = transform_from_settings(settings_, env)
        live = field.counts()
    finally:
        for server in servers:
            server.stop()
    try:
        with open_store(root / "staging.db") as store:
            counts = result.counts["issues"]
            reached = Counter(
                o
                for (source_id,) in store.conn.execute("SELECT source_id FROM issues")
                for o in outcome_of(store, "issue", source_id)
            )
            without_row = one_value(
                store,
                "SELECT COUNT(*) FROM source_problems WHERE "
                "entity = 'issues' AND source_id IS NULL",
            )
            # Every issue the simulator has went somewhere, once.
            assert live["issues"] == counts["extracted"] + without_row
            assert sum(reached.values()) == counts["extracted"]
            assert reached["planned"] == counts["planned"]
            assert reached["quarantined"] == counts["quarantined"]
            assert reached["skipped"] == counts["skipped"]
            # Every planted attachment has a row; stored ones are content-addressed.
            assert (
                one_value(
                    store,
                    "SELECT COUNT(*) FROM attachments WHERE kind = "
                    "'Attachment' AND container_type = 'Issue' AND rendition_of IS NULL",
                )
                == live["issue_attachments"]
            )
            assert (
                one_value(
                    store,
                    "SELECT COUNT(*) FROM attachments WHERE state = 'failed' "
                    "AND failure = 'transport'",
                )
                == 0
            )
            digests = {
                d
                for (d,) in store.conn.execute(
                    "SELECT sha256 FROM attachments WHERE state = 'stored' UNION "
                    "SELECT sha256 FROM project_exports WHERE state = 'stored'"
                )
            }
            check_stored_values(store)
            check_planned_payloads(store)
        assert extracted.blobs_failed == 0
        assert_blob_store_closed(root / "blobs", digests)
        # Nothing was written anywhere a file name could have pointed to.
        assert sorted(p.name for p in work.iterdir()) == ["mappings", "run"]
        assert sorted(p.name for p in (work / "run").iterdir()) == ["staging"]
        assert {p.name for p in root.iterdir()} <= {
            "blobs",
            "logs",
            "staging.db",
            "staging.db-wal",
            "staging.db-shm",
        }
        assert all(p.suffix == ".jsonl" for p in (root / "logs").iterdir())
    finally:
        shutil.rmtree(work, ignore_errors=True)


def assert_blob_store_closed(blobs_root: Path, digests: set[str]) -> None:
    """Blob files are exactly blobs/aa/bb/<sha256> of stored attachments (and the project
    export's archives); no temp file is left."""
    seen = set()
    for path in blobs_root.rglob("*"):
        relative = path.relative_to(blobs_root).as_posix()
        assert not path.is_symlink(), relative
        if path.is_dir():
            assert re.fullmatch(r"tmp|[0-9a-f]{2}|[0-9a-f]{2}/[0-9a-f]{2}", relative), relative
            continue
        if relative == MARKER_NAME:  # the store's own mark on its root
            continue
        match = BLOB_PATH.match(relative)
        assert match, f"a file outside the aa/bb/<sha256> layout: {relative!r}"
        assert match[3].startswith(match[1] + match[2])
        seen.add(match[3])
    assert seen == digests


def field_only(url: str, project: GeneratedProject, folder: Path) -> Settings:
    return Settings(
        source=SourceSettings(base_url=url, project_id=project.main.id),
        staging=StagingSettings(
            path=folder / "staging.db", blobs=folder / "blobs", logs=folder / "logs"
        ),
    )


def test_voided_ids_that_are_not_text_are_source_problems(tmp_path: Path) -> None:
    """A lone surrogate in the voided list used to fail the extract (sqlite3 cannot encode
    it), on every run."""
    project = GeneratedProject(seed=11, issues=8)
    field = HostileBytesFieldApp(project, faults=Faults())
    field.extra_voided = [SURROGATE_MARK, 12, "", None]
    server = RunningServer(field)
    try:
        result = extract_from_settings(field_only(server.url, project, tmp_path), FIELD_ENV)
        live = field.counts()
    finally:
        server.stop()
    assert result.completed
    with open_store(tmp_path / "staging.db") as store:
        reasons = [
            row[0]
            for row in store.conn.execute(
                "SELECT reason FROM source_problems WHERE entity = 'voided_issues'"
            )
        ]
        assert len(reasons) == 4 and all("is not text" in reason for reason in reasons)
        assert one_value(store, "SELECT COUNT(*) FROM raw_voided_issues") == live["voided_issues"]
        assert one_value(store, "SELECT COUNT(*) FROM issues") == live["issues"]


def test_nan_in_a_retrieve_body_is_an_unreadable_answer_not_a_crash(tmp_path: Path) -> None:
    """NaN is no JSON, but Python's parser takes it; stored, it failed the raw table's
    json_valid CHECK and so the whole extract, on every run."""
    project = GeneratedProject(seed=11, issues=8)
    field = HostileBytesFieldApp(project, faults=Faults())
    server = RunningServer(field)
    try:
        odd = field.add_issue(description=NAN_MARK)
        settings_ = field_only(server.url, project, tmp_path)
        first = extract_from_settings(settings_, FIELD_ENV)
        field.update_issue(odd, description="Readable again")
        second = extract_from_settings(settings_, FIELD_ENV)
        live = field.counts()
    finally:
        server.stop()
    assert not first.completed and second.completed
    with open_store(tmp_path / "staging.db") as store:
        reasons = [
            row[0]
            for row in store.conn.execute(
                "SELECT reason FROM source_problems WHERE run_id = ? AND endpoint = ?",
                (first.run_id, RETRIEVE),
            )
        ]
        assert len(reasons) == 1 and "answered with a body that is not JSON" in reasons[0]
        assert one_value(store, "SELECT COUNT(*) FROM issues") == live["issues"]
        assert (
            one_value(store, "SELECT description FROM issues WHERE source_id = ?", odd)
            == "Readable again"
        )


# -- once known gaps, now guards: control characters and shared attachment ids ------------------
def plan_one(
    fields: dict[str, Any], attachments: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Extract one retrieve record through the real save functions, transform it, return the
    planned payload."""
    store = reference_store()
    ctx = extract_context(store, BlobStore(tempfile.mkdtemp(prefix="bad-input-")))
    record = {
        "id": "id-1",
        "fields": [
            {"id": key, "name": name, "value": value} for key, (name, value) in fields.items()
        ],
        "attachments": attachments or [],
    }
    save_page(
        ctx,
        cursor="issues:listing",
        entity="issues",
        raw_table="raw_issues",
        rows=[{"id": "id-1"}],
        offset=0,
        last=False,
        incomplete=False,
        endpoint="POST /api/get_issues",
    )
    save_issue_details(ctx, [("id-1", "basis")], [record], [], {"cf-1": 1})
    refresh_issue_flags(ctx)
    transform(
        store, mappings=default_mappings(), settings=TS(), target_project_id=PROJECT, workers=1
    )
    row = store.conn.execute("SELECT payload FROM planned_issues").fetchone()
    store.close()
    assert row is not None
    return json.loads(row[0])


PLANNABLE = {"f--status": ("Status", "Open"), "f--description": ("Description", "Leak")}


@pytest.mark.parametrize("where", ["custom field name", "attachment file name"])
def test_description_footer_has_no_nul(where: str) -> None:
    if where == "custom field name":
        payload = plan_one({**PLANNABLE, "cf--cf-9": ("Bev\x00erage", "Tea")})
    else:
        payload = plan_one(PLANNABLE, [{"id": "att-1", "type": "Attachment", "name": "a\x00b.jpg"}])
    assert "\x00" not in payload["description"]


def test_origin_title_has_no_nul() -> None:
    payload = plan_one({**PLANNABLE, "f--identifier": ("Identifier", "ISS\x001")})
    assert "\x00" not in payload["title"]  # the title is cleaned ...
    assert "\x00" not in payload["origin"]["title"]  # ... the origin title is not


def test_an_attachment_id_claimed_by_two_issues_is_a_source_problem() -> None:
    store = reference_store()
    ctx = extract_context(store, BlobStore(tempfile.mkdtemp(prefix="bad-input-")))
    records = [
        {"id": issue, "attachments": [{"id": "att-1", "type": "Attachment"}]}
        for issue in ("id-1", "id-2")
    ]
    save_page(
        ctx,
        cursor="issues:listing",
        entity="issues",
        raw_table="raw_issues",
        rows=records,
        offset=0,
        last=False,
        incomplete=False,
        endpoint="POST /api/get_issues",
    )
    save_issue_details(ctx, [("id-1", "basis"), ("id-2", "basis")], records, [], {})
    owners = [
        row[0]
        for row in store.conn.execute("SELECT container_id FROM attachments WHERE id = 'att-1'")
    ]
    reasons = [p[2] for p in problems(store) if "att-1" in p[2] and "original_url" not in p[2]]
    store.close()
    assert owners == ["id-2"]  # one row: the id is the primary key
    assert reasons, "id-1 lost its attachment without a word"
