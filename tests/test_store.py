"""Staging DB: permissions, pragmas, migrations, change detection, transactions, kill -9."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils

from migrate.errors import StagingNotReady, StagingRefused
from migrate.store import (
    MIGRATIONS,
    Change,
    Migration,
    SchemaTooNewError,
    Store,
    StoreError,
    apply_migrations,
    clear_cursor,
    content_hash,
    finish_run,
    get_cursor,
    get_run,
    last_run,
    load_raw,
    mark_interrupted_runs,
    mark_missing,
    open_store,
    replace_rows,
    save_raw,
    set_cursor,
    start_run,
    upsert_rows,
)
from migrate.store import db as db_module
from migrate.store.base import immediate_transaction
from migrate.store.db import APPLICATION_ID
from migrate.store.runs import PROCESS_TOKEN

LATEST = MIGRATIONS[-1].number


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "work" / "staging.db"


@pytest.fixture
def store(db_path: Path):
    with open_store(db_path) as opened:
        yield opened


@pytest.fixture
def run_id(store: Store) -> int:
    return start_run(store, "extract", {})


def count(store: Store, table: str) -> int:
    return store.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


# --- opening -------------------------------------------------------------------------------


def test_new_db_file_and_its_wal_are_private(db_path: Path) -> None:
    with open_store(db_path) as store:
        start_run(store, "extract", {})  # a write, so the -wal file exists
        assert mode(db_path) == 0o600
        assert mode(Path(f"{db_path}-wal")) == 0o600
        assert mode(Path(f"{db_path}-shm")) == 0o600


def test_existing_loose_files_are_tightened(tmp_path: Path) -> None:
    path = tmp_path / "staging.db"
    path.touch()
    path.chmod(0o644)
    wal = Path(f"{path}-wal")  # an empty leftover WAL is valid and must not stay readable
    wal.touch()
    wal.chmod(0o644)
    with open_store(path) as store:
        assert mode(path) == 0o600
        assert mode(wal) == 0o600
        newest = store.conn.execute("SELECT max(number) FROM schema_migrations").fetchone()[0]
        assert newest == MIGRATIONS[-1].number


def test_a_new_db_is_marked_as_migrates_in_its_header(db_path: Path) -> None:
    open_store(db_path).close()
    header = db_path.read_bytes()[:100]
    assert header.startswith(b"SQLite format 3\x00")
    assert int.from_bytes(header[68:72], "big") == APPLICATION_ID


def test_a_read_only_store_cannot_write_and_opening_one_creates_nothing(db_path: Path) -> None:
    with pytest.raises(StagingNotReady, match="Run `migrate extract` first"):
        open_store(db_path, read_only=True)
    with pytest.raises(StagingNotReady):
        open_store(db_path, create=False)
    assert not db_path.parent.exists()

    open_store(db_path).close()
    with open_store(db_path, read_only=True) as store:
        assert store.read_only
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            store.conn.execute("INSERT INTO projects (id, name) VALUES ('p', 'P')")
        assert store.conn.execute("SELECT count(*) FROM projects").fetchone()[0] == 0


def test_pragmas(store: Store) -> None:
    def pragma(name: str) -> object:
        return store.conn.execute(f"PRAGMA {name}").fetchone()[0]

    assert pragma("journal_mode") == "wal"
    assert pragma("foreign_keys") == 1
    assert pragma("synchronous") == 1  # NORMAL
    assert pragma("busy_timeout") == 10_000
    assert isinstance(store.db, sqlite_utils.Database)


def test_in_memory_store_for_tests() -> None:
    with open_store(":memory:") as store:
        run = start_run(store, "transform", {})
        assert save_raw(store, "raw_areas", "a1", {"name": "A"}, run) is Change.NEW


def test_schema_has_the_documented_tables(store: Store) -> None:
    expected = {
        "schema_migrations",
        "runs",
        "cursors",
        "source_problems",
        "id_map",
        "raw_projects",
        "raw_areas",
        "raw_companies",
        "raw_users",
        "raw_issue_types",
        "raw_root_causes",
        "raw_custom_fields",
        "raw_issue_fields",
        "raw_issues",
        "raw_issue_details",
        "raw_issue_changes",
        "raw_checklists",
        "raw_checklist_details",
        "projects",
        "areas",
        "companies",
        "users",
        "issue_types",
        "root_causes",
        "custom_fields",
        "issue_fields",
        "issues",
        "comments",
        "attachments",
        "issue_status_history",
        "checklists",
        "checklist_sections",
        "checklist_items",
        "checklist_custom_field_values",
        # migration 2: transform and load
        "target_assignees",
        "target_locations",
        "planned_locations",
        "planned_issues",
        "skipped_records",
        "quarantine",
        "uploads",
        "load_batches",
        # migration 3: extract change tracking
        "raw_voided_issues",
        # migration 5: identity and the writer lock
        "staging_identity",
        "writer_lock",
        # migration 8: checklist templates and headers
        "raw_checklist_templates",
        "raw_checklist_headers",
        "checklist_templates",
        "checklist_template_items",
        # migration 9: what transform plans for Procore Inspections
        "planned_inspection_templates",
        "planned_inspections",
        # migration 11: Procore's trades, snapshot by transform (issue 15)
        "target_trades",
        # migration 12: the project export and the inventory of what is not migrated
        "project_exports",
        "source_inventory",
        # migration 13: the field ledger, written by transform (issue 15)
        "field_ledger",
        # migration 14: every Procore answer a load run saw, for the report (issue 17)
        "rate_readings",
    }
    assert set(store.db.table_names()) == expected
    assert store.raw_tables == {name for name in expected if name.startswith("raw_")}
    fks = {(fk.column, fk.other_table) for fk in store.db.table("issues").foreign_keys}
    assert fks == {
        ("issue_type_id", "issue_types"),
        ("area_id", "areas"),
        ("responsible_company_id", "companies"),
        ("root_cause_id", "root_causes"),
    }
    indexed = {tuple(index.columns) for index in store.db.table("attachments").indexes}
    assert ("sha256",) in indexed and ("container_id", "container_type") in indexed


# --- migrations ----------------------------------------------------------------------------


def applied(path: Path) -> list[tuple[int, str, str]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT number, name, applied_at FROM schema_migrations").fetchall()


def test_migrations_apply_once_and_reopen_is_a_no_op(db_path: Path) -> None:
    with open_store(db_path):
        pass
    first = applied(db_path)
    assert [(number, name) for number, name, _ in first] == [(m.number, m.name) for m in MIGRATIONS]
    with open_store(db_path) as store:
        assert apply_migrations(store) == []
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == LATEST
    assert applied(db_path) == first


def test_opening_an_older_db_upgrades_it(db_path: Path) -> None:
    db_path.parent.mkdir()
    older = Store(str(db_path), sqlite3.connect(db_path))
    apply_migrations(older, MIGRATIONS[:-1])
    older.close()
    assert len(applied(db_path)) == len(MIGRATIONS) - 1

    with open_store(db_path) as store:
        assert [number for number, _, _ in applied(db_path)] == [m.number for m in MIGRATIONS]
        assert "raw_issues" in store.raw_tables


def test_appended_migration_applies_then_older_code_refuses_the_db(db_path: Path) -> None:
    later = Migration(
        LATEST + 1,
        "plan_tables",
        "CREATE TABLE planned (id TEXT PRIMARY KEY, payload TEXT);\n"
        "CREATE INDEX planned_payload ON planned(payload);\n",
    )
    with open_store(db_path) as store:
        assert apply_migrations(store, [*MIGRATIONS, later]) == [LATEST + 1]
        assert apply_migrations(store, [*MIGRATIONS, later]) == []
        assert "planned" in store.db.table_names()

    with pytest.raises(SchemaTooNewError) as error:
        open_store(db_path)
    assert str(error.value) == (
        f"{db_path} has schema version {LATEST + 1} ('plan_tables') but this migrate knows only "
        f"up to version {LATEST}. Upgrade migrate, or start a new staging DB."
    )
    assert applied(db_path)[-1][:2] == (LATEST + 1, "plan_tables")  # left untouched


def test_failed_migration_leaves_nothing_behind(store: Store) -> None:
    broken = Migration(
        LATEST + 1, "broken", "CREATE TABLE half_done (x);\nINSERT INTO nowhere VALUES (1);\n"
    )
    with pytest.raises(sqlite3.OperationalError, match="no such table: nowhere"):
        apply_migrations(store, [*MIGRATIONS, broken])
    assert "half_done" not in store.db.table_names()
    assert store.conn.execute("SELECT max(number) FROM schema_migrations").fetchone()[0] == LATEST
    assert not store.in_transaction


def test_migration_from_another_branch_is_refused(store: Store) -> None:
    ours = Migration(LATEST + 1, "ours", "CREATE TABLE ours (x);")
    theirs = Migration(LATEST + 1, "theirs", "CREATE TABLE theirs (x);")
    apply_migrations(store, [*MIGRATIONS, ours])
    with pytest.raises(StoreError) as error:
        apply_migrations(store, [*MIGRATIONS, theirs])
    assert str(error.value) == (
        f"{store.path}: schema migration {LATEST + 1} is 'ours' in the DB but 'theirs' in this "
        "code; the DB was made by a different branch of migrate. Start a new staging DB."
    )


def test_migration_numbers_must_be_contiguous(store: Store) -> None:
    with pytest.raises(ValueError, match="must be 1..N in order"):
        apply_migrations(store, [*MIGRATIONS, Migration(LATEST + 2, "gap", "SELECT 1;")])


# --- raw records -----------------------------------------------------------------------------


def raw_row(store: Store, table: str, source_id: str) -> dict:
    return next(store.db.query(f"SELECT * FROM {table} WHERE source_id = ?", [source_id]))


def test_save_raw_new_unchanged_changed(store: Store) -> None:
    r1, r2, r3 = (start_run(store, "extract", {}) for _ in range(3))
    issue = {"id": "i1", "fields": [{"id": "f--status", "value": "Open"}], "closed_at": None}

    assert save_raw(store, "raw_issues", "i1", issue, r1) is Change.NEW
    reordered = {"closed_at": None, "fields": [{"value": "Open", "id": "f--status"}], "id": "i1"}
    assert save_raw(store, "raw_issues", "i1", reordered, r2) is Change.UNCHANGED
    row = raw_row(store, "raw_issues", "i1")
    assert (row["first_seen_run"], row["last_seen_run"], row["changed_run"]) == (r1, r2, r1)
    assert row["content_hash"] == content_hash(issue)

    closed = {**issue, "closed_at": "2024-05-01"}
    assert save_raw(store, "raw_issues", "i1", closed, r3) is Change.CHANGED
    row = raw_row(store, "raw_issues", "i1")
    assert (row["first_seen_run"], row["last_seen_run"], row["changed_run"]) == (r1, r3, r3)
    assert json.loads(row["payload"]) == closed
    assert load_raw(store, "raw_issues", "i1") == closed
    assert load_raw(store, "raw_issues", "nope") is None


def test_save_raw_never_stores_a_ticket(store: Store, run_id: int) -> None:
    def attachment(ticket: str) -> dict:
        return {
            "id": "a1",
            "original_url": f"https://f.example/api/binary_data?ticket={ticket}&project_id=p1"
            "&object_id=a1&object_type=Attachment",
            "thumb_url": f"https://f.example/api/binary_data?project_id=p1&ticket={ticket}",
        }

    assert save_raw(store, "raw_issue_details", "a1", attachment("secret-1"), run_id) is Change.NEW
    # A new login gives a new ticket; the record must not look changed because of it.
    assert (
        save_raw(store, "raw_issue_details", "a1", attachment("secret-2"), run_id)
        is Change.UNCHANGED
    )
    payload = raw_row(store, "raw_issue_details", "a1")["payload"]
    assert "secret" not in payload and "ticket" not in payload
    assert json.loads(payload) == {
        "id": "a1",
        "original_url": "https://f.example/api/binary_data?project_id=p1&object_id=a1"
        "&object_type=Attachment",
        "thumb_url": "https://f.example/api/binary_data?project_id=p1",
    }


def test_save_raw_keeps_non_ascii_readable(store: Store, run_id: int) -> None:
    save_raw(store, "raw_users", "u1", {"first_name": "Zoë", "last_name": "Ødegård"}, run_id)
    assert "Zoë" in raw_row(store, "raw_users", "u1")["payload"]


def test_save_raw_rejects_unknown_table_and_bad_id(store: Store, run_id: int) -> None:
    with pytest.raises(ValueError, match="'issues' is not a raw table; expected one of: raw_areas"):
        save_raw(store, "issues", "x", {}, run_id)
    with pytest.raises(ValueError, match="source_id must be a non-empty string"):
        save_raw(store, "raw_issues", "", {}, run_id)


def test_mark_missing_by_ids_and_reappearance(store: Store) -> None:
    r1, r2, r3 = (start_run(store, "extract", {}) for _ in range(3))
    for source_id in ("a", "b", "c"):
        save_raw(store, "raw_areas", source_id, {"id": source_id}, r1)

    assert mark_missing(store, "raw_areas", ["a", "c"], r2) == ["b"]
    assert raw_row(store, "raw_areas", "b")["deleted_at_run"] == r2
    assert raw_row(store, "raw_areas", "a")["deleted_at_run"] is None
    assert mark_missing(store, "raw_areas", {"a", "c"}, r3) == []  # already marked
    assert raw_row(store, "raw_areas", "b")["deleted_at_run"] == r2

    # Back at the source with identical content: downstream must still revisit it.
    assert save_raw(store, "raw_areas", "b", {"id": "b"}, r3) is Change.CHANGED
    row = raw_row(store, "raw_areas", "b")
    assert row["deleted_at_run"] is None and row["changed_run"] == r3

    with pytest.raises(TypeError, match="not a string"):
        mark_missing(store, "raw_areas", "abc", r3)


def test_mark_missing_by_run_counts_a_resumed_listing_as_one_pass(store: Store) -> None:
    r1, r2, r3 = (start_run(store, "extract", {}) for _ in range(3))
    for source_id in ("a", "b", "c", "d"):
        save_raw(store, "raw_issues", source_id, {"id": source_id}, r1)
    # The next listing starts in r2, is killed, and is finished by r3: b was not returned.
    save_raw(store, "raw_issues", "a", {"id": "a"}, r2)
    save_raw(store, "raw_issues", "c", {"id": "c"}, r3)
    save_raw(store, "raw_issues", "d", {"id": "d"}, r3)

    assert mark_missing(store, "raw_issues", r2, r3) == ["b"]
    deleted = store.conn.execute(
        "SELECT source_id, deleted_at_run FROM raw_issues WHERE deleted_at_run IS NOT NULL"
    ).fetchall()
    assert deleted == [("b", r3)]


# --- transactions and cursors ----------------------------------------------------------------


def test_rollback_leaves_neither_rows_nor_cursor(store: Store, run_id: int, db_path: Path) -> None:
    with pytest.raises(RuntimeError, match="page mapping failed"), store.transaction():
        for n in range(10):
            save_raw(store, "raw_issues", f"i{n}", {"n": n}, run_id)
        set_cursor(store, "get_issues", run_id, 10, {"filter": "all"})
        raise RuntimeError("page mapping failed")
    assert count(store, "raw_issues") == 0
    assert get_cursor(store, "get_issues") is None
    assert not store.in_transaction

    with store.transaction():
        save_raw(store, "raw_issues", "i0", {"n": 0}, run_id)
        set_cursor(store, "get_issues", run_id, 1, {"filter": "all"})
        with open_store(db_path) as other:  # another connection sees nothing yet
            assert count(other, "raw_issues") == 0
    with open_store(db_path) as other:
        cursor = get_cursor(other, "get_issues")
        assert (cursor.position, cursor.state, cursor.run_id) == (1, {"filter": "all"}, run_id)
        assert count(other, "raw_issues") == 1

    clear_cursor(store, "get_issues")
    assert get_cursor(store, "get_issues") is None


def test_set_cursor_outside_a_transaction_is_refused(store: Store, run_id: int) -> None:
    with pytest.raises(StoreError) as error:
        set_cursor(store, "get_issues", run_id, 25)
    assert str(error.value) == (
        "set_cursor('get_issues') outside a transaction: write the page's rows and the cursor "
        "inside one `with store.transaction():` block"
    )


def test_nested_transaction_rolls_back_only_the_inner_block(store: Store, run_id: int) -> None:
    with store.transaction():
        save_raw(store, "raw_areas", "kept", {}, run_id)
        with pytest.raises(KeyError), store.transaction():
            save_raw(store, "raw_areas", "dropped", {}, run_id)
            raise KeyError("inner")
        assert store.in_transaction
    ids = [row[0] for row in store.conn.execute("SELECT source_id FROM raw_areas")]
    assert ids == ["kept"]


class CtrlCAfter(sqlite3.Connection):
    """A connection on which Ctrl-C lands as a statement returns (as Python runs a signal
    handler when a call returns): the statements starting with ``landing`` run, then raise."""

    landing: str | None = None

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        cursor = super().execute(sql, parameters)
        if self.landing is not None and sql.startswith(self.landing):
            raise KeyboardInterrupt
        return cursor


def interrupted_connection(path: Path, landing: str) -> CtrlCAfter:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, factory=CtrlCAfter, isolation_level=None)
    assert isinstance(conn, CtrlCAfter)
    conn.execute("CREATE TABLE pages (page TEXT)")
    conn.landing = landing
    return conn


def pages(path: Path) -> list[str]:
    with sqlite3.connect(path) as other:
        return [page for (page,) in other.execute("SELECT page FROM pages ORDER BY page")]


def test_ctrl_c_right_after_begin_leaves_no_transaction_open(db_path: Path) -> None:
    conn = interrupted_connection(db_path, "BEGIN")
    store = Store(str(db_path), conn)
    with pytest.raises(KeyboardInterrupt), store.transaction():
        pytest.fail("the block does not run")
    # Left open, the next write joined it and was lost at exit (a run stayed "running").
    assert not store.in_transaction
    conn.execute("INSERT INTO pages VALUES ('written after')")
    assert pages(db_path) == ["written after"]
    conn.close()


def test_ctrl_c_right_after_a_savepoint_rolls_back_only_the_inner_block(db_path: Path) -> None:
    conn = interrupted_connection(db_path, "SAVEPOINT")
    store = Store(str(db_path), conn)
    with store.transaction():
        conn.execute("INSERT INTO pages VALUES ('outer')")
        with pytest.raises(KeyboardInterrupt), store.transaction():
            pytest.fail("the block does not run")
        conn.execute("INSERT INTO pages VALUES ('outer, after')")
    assert not store.in_transaction
    assert pages(db_path) == ["outer", "outer, after"]
    conn.close()


@pytest.mark.parametrize(("landing", "kept"), [("BEGIN", []), ("COMMIT", ["page"])])
def test_immediate_transaction_under_ctrl_c_raises_it_and_leaves_none_open(
    db_path: Path, landing: str, kept: list[str]
) -> None:
    conn = interrupted_connection(db_path, landing)
    with pytest.raises(KeyboardInterrupt), immediate_transaction(conn):
        conn.execute("INSERT INTO pages VALUES ('page')")
    assert not conn.in_transaction
    assert pages(db_path) == kept
    conn.close()


def test_dangling_reference_written_directly_fails_at_commit_with_names(store: Store) -> None:
    with pytest.raises(StoreError) as error, store.transaction():
        store.conn.execute("INSERT INTO issues (source_id, area_id) VALUES ('i1', 'ghost')")
    assert str(error.value) == (
        "commit rolled back: FOREIGN KEY constraint failed "
        "(dangling references: issues rowid 1 -> areas)"
    )
    assert count(store, "issues") == 0 and not store.in_transaction


# --- normalised rows ---------------------------------------------------------------------------


def problems(store: Store) -> list[tuple]:
    return store.conn.execute(
        "SELECT run_id, entity, source_id, endpoint, reason FROM source_problems ORDER BY id"
    ).fetchall()


def test_upsert_rows_turns_dangling_references_into_source_problems(
    store: Store, run_id: int
) -> None:
    areas = [  # a child before its parent, as the source may list them
        {"id": "a2", "parent_id": "a1", "name": "Level 1", "full_path": "B>Level 1", "depth": 1},
        {"id": "a1", "parent_id": None, "name": "B", "full_path": "B", "depth": 0},
        {"id": "a3", "parent_id": "gone", "name": "Roof", "full_path": "?>Roof", "depth": 1},
    ]
    result = upsert_rows(store, "areas", areas, "id", run_id=run_id, endpoint="locations")
    assert (result.upserted, result.nulled, result.skipped) == (3, 1, 0)
    parents = dict(store.conn.execute("SELECT id, parent_id FROM areas"))
    assert parents == {"a1": None, "a2": "a1", "a3": None}

    with store.transaction():  # one page: issues and their histories commit together
        upsert_rows(
            store,
            "issues",
            [{"source_id": "i1", "identifier": "000001", "area_id": "a2", "issue_type_id": "t9"}],
            "source_id",
            run_id=run_id,
        )
        history = upsert_rows(
            store,
            "issue_status_history",
            [
                {"id": 1, "issue_id": "i1", "status": "Open", "start_dt": "2024-01-01"},
                {"id": 2, "issue_id": "i404", "status": "Open", "start_dt": "2024-01-02"},
            ],
            "id",
            run_id=run_id,
            endpoint="issue_changes",
        )
    assert (history.upserted, history.skipped) == (1, 1)
    assert store.conn.execute("SELECT area_id, issue_type_id FROM issues").fetchall() == [
        ("a2", None)
    ]
    assert problems(store) == [
        (
            run_id,
            "areas",
            "a3",
            "locations",
            "areas.parent_id = 'gone' refers to areas.id that the source did not return; "
            "parent_id stored as NULL",
        ),
        (
            run_id,
            "issues",
            "i1",
            None,
            "issues.issue_type_id = 't9' refers to issue_types.id that the source did not return; "
            "issue_type_id stored as NULL",
        ),
        (
            run_id,
            "issue_status_history",
            "2",
            "issue_changes",
            "issue_status_history.issue_id = 'i404' refers to issues.source_id that the source did "
            "not return; row skipped",
        ),
    ]


def test_upsert_rows_keeps_columns_a_row_leaves_out(store: Store, run_id: int) -> None:
    listed = {
        "id": "att1",
        "container_type": "Issue",
        "container_id": "i1",
        "kind": "Attachment",
        "filename": "../../etc/passwd",
        "source_url": "https://f.example/api/binary_data?x=1",
    }
    upsert_rows(store, "attachments", [listed], "id", run_id=run_id)
    store.db.table("attachments").update(
        "att1", {"state": "stored", "sha256": "ab" * 32, "size": 10, "downloaded_run": run_id}
    )
    upsert_rows(store, "attachments", [{**listed, "caption": "north wall"}], "id", run_id=run_id)
    row = store.db.table("attachments").get("att1")
    assert (row["state"], row["sha256"], row["caption"]) == ("stored", "ab" * 32, "north wall")
    assert row["filename"] == "../../etc/passwd"  # data, never a path

    with pytest.raises(ValueError, match="every row must have the same columns"):
        mixed = [{"id": "t1", "name": "A"}, {"id": "t2"}]
        upsert_rows(store, "issue_types", mixed, "id", run_id=run_id)


def test_replace_rows_swaps_one_parents_children(store: Store, run_id: int) -> None:
    issues = [{"source_id": "i1"}, {"source_id": "i2"}]
    upsert_rows(store, "issues", issues, "source_id", run_id=run_id)
    store.db.table("issue_status_history").insert_all(
        [{"issue_id": "i1", "status": "Draft"}, {"issue_id": "i2", "status": "Open"}]
    )
    new_history = [
        {"issue_id": "i1", "status": "Open", "previous_status": "Draft"},
        {"issue_id": "i1", "status": "Closed", "previous_status": "Open"},
    ]
    result = replace_rows(
        store, "issue_status_history", {"issue_id": "i1"}, new_history, None, run_id=run_id
    )
    assert result.upserted == 2
    rows = store.conn.execute(
        "SELECT issue_id, status FROM issue_status_history ORDER BY issue_id, id"
    ).fetchall()
    assert rows == [("i1", "Open"), ("i1", "Closed"), ("i2", "Open")]
    with pytest.raises(ValueError, match="non-empty where"):
        replace_rows(store, "issue_status_history", {}, [], None, run_id=run_id)


# --- runs --------------------------------------------------------------------------------------


def test_run_lifecycle_and_redacted_args(store: Store, tmp_path: Path) -> None:
    args = {
        "username": "demo@example.com",
        "password": "demo",
        "field": {"base_url": "https://f.example/api?ticket=t-123&x=1", "ticket": "t-123"},
        "procore_client_secret": "demo-secret",
        "work_dir": tmp_path,
        "issues": ["i1", "i2"],
    }
    run_id = start_run(store, "extract", args)
    run = get_run(store, run_id)
    assert run.args == {
        "username": "demo@example.com",
        "password": "[redacted]",
        "field": {"base_url": "https://f.example/api?x=1", "ticket": "[redacted]"},
        "procore_client_secret": "[redacted]",
        "work_dir": str(tmp_path),
        "issues": ["i1", "i2"],
    }
    assert (run.status, run.pid, run.finished_at) == ("running", os.getpid(), None)
    assert "demo-secret" not in store.conn.execute("SELECT args FROM runs").fetchone()[0]

    finish_run(
        store,
        run_id,
        "failed",
        {"issues": 3},
        {"POST /fieldapi/issues/v1/retrieve": 4},
        error="GET https://f.example/api/binary_data?ticket=t-123&object_id=a1 → 500",
    )
    run = get_run(store, run_id)
    assert (run.status, run.counts, run.requests) == (
        "failed",
        {"issues": 3},
        {"POST /fieldapi/issues/v1/retrieve": 4},
    )
    assert run.error == "GET https://f.example/api/binary_data?object_id=a1 → 500"
    assert run.finished_at >= run.started_at

    later = start_run(store, "extract", {})
    assert last_run(store, "extract").id == later
    assert last_run(store, "extract", status="failed").id == run_id
    assert last_run(store, "load") is None

    with pytest.raises(StoreError, match=f"run {run_id} already ended as 'failed'"):
        finish_run(store, run_id, "succeeded", {})
    with pytest.raises(ValueError, match="not 'done'"):
        finish_run(store, later, "done", {})
    with pytest.raises(StoreError, match="no run 999"):
        get_run(store, 999)


def test_runs_of_dead_processes_are_marked_interrupted(store: Store) -> None:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        ours = start_run(store, "extract", {})
        dead = start_run(store, "extract", {})
        reused_pid = start_run(store, "load", {})  # our pid, but an earlier process's token
        concurrent = start_run(store, "report", {})
        store.conn.execute("UPDATE runs SET pid = ? WHERE id = ?", (finished.pid, dead))
        store.conn.execute("UPDATE runs SET process_token = 'x' WHERE id = ?", (reused_pid,))
        store.conn.execute("UPDATE runs SET pid = ? WHERE id = ?", (alive.pid, concurrent))
        store.conn.commit()

        assert mark_interrupted_runs(store) == [dead, reused_pid]
        assert get_run(store, dead).status == "interrupted"
        assert get_run(store, dead).error.startswith(
            f"process {finished.pid} ended without finishing this run (noticed at "
        )
        assert get_run(store, ours).status == "running"
        assert get_run(store, concurrent).status == "running"

        alive.kill()
        alive.wait()
        start_run(store, "report", {})  # a new start notices on its own
        assert get_run(store, concurrent).status == "interrupted"
        assert get_run(store, ours).status == "running"
        assert (
            PROCESS_TOKEN
            in store.conn.execute("SELECT process_token FROM runs WHERE id = ?", (ours,)).fetchone()
        )
    finally:
        alive.kill()
        alive.wait()


# --- kill -9 -------------------------------------------------------------------------------------

PAGE_SIZE = 25

WRITER = textwrap.dedent(
    """
    import sys, time
    from migrate.store import open_store, save_raw, set_cursor, start_run

    store = open_store(sys.argv[1])
    # A tiny page cache makes SQLite spill the open transaction into the WAL before COMMIT, so
    # the kill leaves uncommitted frames that recovery must ignore.
    store.conn.execute("PRAGMA cache_size = 5")
    hang_on_page = int(sys.argv[2])
    run_id = start_run(store, "extract", {"password": "never stored"})
    page = 0
    while True:
        with store.transaction():
            for n in range(page * 25, (page + 1) * 25):
                save_raw(store, "raw_issues", f"issue-{n:06d}", {"n": n, "pad": "x" * 300}, run_id)
            set_cursor(store, "get_issues", run_id, (page + 1) * 25, {"page": page + 1})
            if page == hang_on_page:
                print("hanging inside a transaction", flush=True)
                time.sleep(60)
        print(f"committed {page + 1}", flush=True)
        page += 1
    """
)


def run_writer_and_kill(db_path: Path, hang_on_page: int, kill_after_pages: int) -> int:
    """Start the writer, SIGKILL it, return how many pages it had reported committed."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db_path), str(hang_on_page)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    reported = 0
    try:
        while True:
            line = child.stdout.readline()
            assert line, f"writer died early: {child.stderr.read()}"
            if line.startswith("committed"):
                reported = int(line.split()[1])
            if line.startswith("hanging") or reported >= kill_after_pages:
                break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    return reported


def assert_cursor_matches_rows(db_path: Path) -> int:
    with open_store(db_path) as store:
        assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        cursor = get_cursor(store, "get_issues")
        ids = [row[0] for row in store.conn.execute("SELECT source_id FROM raw_issues ORDER BY 1")]
        assert cursor is not None
        assert ids == [f"issue-{n:06d}" for n in range(cursor.position)]
        assert cursor.state == {"page": cursor.position // PAGE_SIZE}

        (run,) = store.conn.execute("SELECT id FROM runs").fetchall()
        assert mark_interrupted_runs(store) == [run[0]]
        assert "never stored" not in store.conn.execute("SELECT args FROM runs").fetchone()[0]
        return cursor.position


@pytest.mark.slow
def test_kill_9_inside_a_transaction_loses_exactly_the_open_page(db_path: Path) -> None:
    reported = run_writer_and_kill(db_path, hang_on_page=4, kill_after_pages=10**9)
    assert reported == 4
    assert assert_cursor_matches_rows(db_path) == 4 * PAGE_SIZE


@pytest.mark.slow
@pytest.mark.parametrize("pages", [1, 3, 6])
def test_kill_9_at_an_arbitrary_moment_keeps_cursor_and_rows_in_step(
    tmp_path: Path, pages: int
) -> None:
    db_path = tmp_path / f"killed-after-{pages}.db"
    reported = run_writer_and_kill(db_path, hang_on_page=-1, kill_after_pages=pages)
    position = assert_cursor_matches_rows(db_path)
    assert position >= reported * PAGE_SIZE  # every page reported committed survived


def test_upsert_rows_inside_a_failed_transaction_leaves_nothing(store: Store, run_id: int) -> None:
    # sqlite-utils before 4.0 wrapped writes in `with conn:`, committing the caller's open
    # transaction halfway through a page. This pins the behaviour we rely on.
    with pytest.raises(RuntimeError), store.transaction():
        upsert_rows(store, "companies", [{"id": "c1", "name": "Acme"}], "id", run_id=run_id)
        set_cursor(store, "companies", run_id, 1)
        raise RuntimeError("later in the page")
    assert count(store, "companies") == 0 and get_cursor(store, "companies") is None


@pytest.mark.parametrize("linked", ["staging.db", "staging.db-wal"])
def test_without_o_nofollow_a_linked_db_file_is_still_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, linked: str
) -> None:
    """Where the OS has no O_NOFOLLOW (Windows), the staging files are checked with lstat
    before they are opened (forced here): nothing is written or chmodded through a link."""
    monkeypatch.setattr(db_module, "_O_NOFOLLOW", 0)
    target = tmp_path / "elsewhere.txt"
    target.write_text("someone else's file\n", encoding="utf-8")
    target.chmod(0o644)
    staging = tmp_path / "staging.db"
    if linked == "staging.db-wal":
        staging.write_bytes(b"")
    (tmp_path / linked).symlink_to(target)
    with pytest.raises(StagingRefused, match=f"{linked} is a symbolic link"):
        db_module._create_private_file(staging)
    assert target.read_text(encoding="utf-8") == "someone else's file\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
