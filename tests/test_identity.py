"""A staging DB holds one migration, and only files migrate made are staging DBs.

- The source project and the Procore company and project are pinned by the first runs that
  know them; a later command configured for another one stops with one line, exit 2, and
  changes nothing (in the DB or in Procore).
- A DB made by an earlier version has its identity inferred when this version first opens it.
- A file that is not a migrate staging DB (another SQLite file, not SQLite at all, a symlink)
  is refused by every command without a byte, a mode bit or a side file changing.
- Commands that only read never create a DB, and open it with SQLite's mode=ro; `transform`
  and `load` with nothing to work from name the command to run first.

Real stages against the sandbox on loopback, through the real CLI.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from migrate.cli import main
from migrate.demo import write_demo_config
from migrate.errors import EXIT_OK, EXIT_USAGE
from migrate.mappings import write_default_mappings
from migrate.pipeline import run_pipeline
from migrate.sandbox.runner import Sandbox, SandboxOptions
from migrate.settings import load_settings
from migrate.store import finish_run, open_store, start_run
from migrate.store.db import APPLICATION_ID
from migrate.store.identity import infer_identity, read_identity

MAPPINGS = Path(__file__).parent.parent / "mappings"
FAKE_ENV = {
    "BIM360_FIELD_USERNAME": "u@example.com",
    "BIM360_FIELD_PASSWORD": "not-used",
    "PROCORE_CLIENT_ID": "id",
    "PROCORE_CLIENT_SECRET": "not-used",
}


# -- helpers ---------------------------------------------------------------------------------


def cli(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(main, list(args), env=env)


def one_error_line(result: Any, exit_code: int = EXIT_USAGE) -> str:
    """The single `Error: …` line a refused command printed (and nothing else)."""
    assert result.exit_code == exit_code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ") and "Traceback" not in result.output
    return lines[0]


def table_digest(path: Path, *tables: str) -> dict[str, list[tuple[Any, ...]]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in tables}


def db_bytes(path: Path) -> str:
    """sha256 over the DB file and its -wal: any write by any connection changes it."""
    digest = hashlib.sha256(path.read_bytes())
    wal = Path(f"{path}-wal")
    digest.update(wal.read_bytes() if wal.exists() else b"")
    return digest.hexdigest()


def file_state(path: Path) -> tuple[Any, ...]:
    """Bytes, mode and link-ness of `path` (lstat: a symlink is not followed)."""
    info = os.lstat(path)
    data = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
    return (data, stat.S_IMODE(info.st_mode), stat.S_ISLNK(info.st_mode))


def listing(*folders: Path) -> dict[str, list[str]]:
    return {str(f): sorted(p.name for p in f.iterdir()) for f in folders}


def set_config(config: Path, section: str, key: str, value: str) -> None:
    """Rewrite `key = …` inside `[section]` of a migration.toml."""
    lines, current = [], ""
    for line in config.read_text(encoding="utf-8").splitlines():
        if line.startswith("["):
            current = line.strip("[] ")
        elif current == section and line.split("=")[0].strip() == key:
            line = f"{key} = {value}"
        lines.append(line)
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")


def copy_db(source: Path, target: Path) -> None:
    """A consistent copy of a live staging DB (its WAL included), like a backup tool makes."""
    with (
        contextlib.closing(sqlite3.connect(source)) as src,
        contextlib.closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)


# -- a migrated project --------------------------------------------------------------------


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Sandbox]]:
    """A small project taken through extract, transform and load; the sandbox stays up."""
    workdir = tmp_path_factory.mktemp("identity")
    options = SandboxOptions(
        issues=15, seed=5, procore_options={"spike_limit": 100_000, "hourly_limit": 1_000_000}
    )
    with Sandbox(options) as box:
        write_default_mappings(workdir / "mappings")
        config = write_demo_config(workdir, box)
        run_pipeline(load_settings(config), box.environment())
        yield config, box


@pytest.fixture
def workdir(migrated: tuple[Path, Sandbox], tmp_path: Path) -> Path:
    """A private copy of the migrated workdir (config, mappings and staging DB)."""
    config, _box = migrated
    shutil.copytree(config.parent / "mappings", tmp_path / "mappings")
    shutil.copy(config, tmp_path / "migration.toml")
    copy_db(config.parent / "staging.db", tmp_path / "staging.db")
    # The blob store is shared, read only by these tests (a link to it would be refused).
    set_config(tmp_path / "migration.toml", "staging", "blobs", f'"{config.parent / "blobs"}"')
    return tmp_path


# -- pinned identity -------------------------------------------------------------------------


def test_the_first_runs_pin_the_source_and_the_target(migrated: tuple[Path, Sandbox]) -> None:
    config, box = migrated
    with open_store(config.parent / "staging.db", read_only=True) as store:
        pinned = read_identity(store)
    assert pinned.identity.source_project_id == box.field_project_id
    assert pinned.identity.target_company_id == box.procore_company_id
    assert pinned.identity.target_project_id == box.procore_project_id
    assert pinned.pinned_by["source_project_id"].startswith("migrate extract (run 1)")
    assert pinned.pinned_by["target_project_id"].startswith("migrate transform")


def test_a_changed_source_project_stops_before_deleting_or_loading_anything(
    migrated: tuple[Path, Sandbox], workdir: Path
) -> None:
    """The issue's story: project_id edited after a full run, then run --apply-deletions."""
    _config, box = migrated
    config = workdir / "migration.toml"
    staging = workdir / "staging.db"
    tables = ("raw_issues", "issues", "id_map", "planned_issues", "quarantine", "cursors")
    before = table_digest(staging, *tables)
    in_procore = box.procore_app.issues(box.procore_project_id)
    set_config(config, "source", "project_id", '"another-field-project"')

    for command in (["run", "--apply-deletions"], ["extract"]):
        line = one_error_line(cli(*command, "--config", str(config), env=box.environment()))
        assert f'BIM 360 Field project "{box.field_project_id}"' in line
        assert '"another-field-project"' in line
        assert "point [staging] path and blobs at new files" in line
        assert f'set [source] project_id back to "{box.field_project_id}"' in line

    assert table_digest(staging, *tables) == before
    assert box.procore_app.issues(box.procore_project_id) == in_procore  # nothing closed


def test_a_changed_procore_project_or_company_is_refused_by_every_command(
    migrated: tuple[Path, Sandbox], workdir: Path
) -> None:
    _config, box = migrated
    config = workdir / "migration.toml"
    staging = workdir / "staging.db"
    tables = ("id_map", "planned_issues", "planned_locations", "target_assignees", "quarantine")
    before = table_digest(staging, *tables)
    in_procore = box.procore_app.issues(box.procore_project_id)

    set_config(config, "target", "project_id", "999999")
    for command in (
        ["transform"],
        ["transform", "--offline"],
        ["plan"],
        ["load"],
        ["report"],
        ["report", "--offline"],
    ):
        line = one_error_line(cli(*command, "--config", str(config), env=box.environment()))
        assert f"Procore project {box.procore_project_id} (pinned by migrate transform" in line
        assert "names 999999" in line and 'path = "staging-999999.db"' in line, command
        assert f"set [target] project_id back to {box.procore_project_id}" in line

    set_config(config, "target", "project_id", str(box.procore_project_id))
    set_config(config, "target", "company_id", "424242")
    line = one_error_line(cli("load", "--config", str(config), env=box.environment()))
    assert f"Procore company {box.procore_company_id}" in line and "names 424242" in line

    assert table_digest(staging, *tables) == before
    assert box.procore_app.issues(box.procore_project_id) == in_procore
    assert not (workdir / "report").exists()


# -- a DB made by an earlier version ---------------------------------------------------------


def make_legacy(path: Path) -> None:
    """Turn a staging DB into what version 4 of the schema left: no identity, no mark."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript(
            "DROP TABLE staging_identity; DROP TABLE writer_lock; "
            "ALTER TABLE uploads DROP COLUMN sent_sha256; ALTER TABLE id_map DROP COLUMN title; "
            # migration 8
            "DROP TABLE raw_checklist_templates; DROP TABLE raw_checklist_headers; "
            "DROP TABLE checklist_templates; DROP TABLE checklist_template_items; "
            "ALTER TABLE checklists DROP COLUMN source_type; "
            "ALTER TABLE checklists DROP COLUMN source_id; "
            "ALTER TABLE checklists DROP COLUMN source_name; "
            "ALTER TABLE checklists DROP COLUMN tags; "
            "ALTER TABLE checklist_items DROP COLUMN template_item_id; "
            "ALTER TABLE checklist_custom_field_values DROP COLUMN definition_id; "
            "ALTER TABLE checklist_custom_field_values DROP COLUMN name; "
            # migration 9
            "DROP TABLE planned_inspections; DROP TABLE planned_inspection_templates; "
            # migrations 10 and 11
            "DROP VIEW v_inspection_journey; DROP TABLE target_trades; "
            # migration 12
            "DROP INDEX attachments_rendition_of; "
            "ALTER TABLE attachments DROP COLUMN rendition_of; "
            "ALTER TABLE attachments DROP COLUMN rendition_page; "
            "DROP TABLE project_exports; DROP TABLE source_inventory; "
            # migration 13
            "DROP TABLE field_ledger; "
            # migration 14
            "DROP TABLE rate_readings; "
            "DELETE FROM schema_migrations WHERE number > 4; "
            "PRAGMA application_id = 0; PRAGMA user_version = 4;"
        )


def test_an_earlier_versions_db_is_marked_and_its_identity_inferred(
    migrated: tuple[Path, Sandbox], workdir: Path
) -> None:
    _config, box = migrated
    config = workdir / "migration.toml"
    staging = workdir / "staging.db"
    make_legacy(staging)

    assert cli("status", "--config", str(config)).exit_code == EXIT_OK  # a read-only command

    with open_store(staging, read_only=True) as store:
        assert store.conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        pinned = read_identity(store)
    assert pinned.identity.source_project_id == box.field_project_id
    assert pinned.identity.target_project_id == box.procore_project_id
    assert pinned.identity.target_company_id is None  # never recorded before
    assert pinned.pinned_by["source_project_id"] == "inferred from extract run 1"
    assert pinned.pinned_by["target_project_id"].startswith("inferred from transform run ")

    set_config(config, "source", "project_id", '"another-field-project"')
    line = one_error_line(cli("extract", "--config", str(config), env=box.environment()))
    assert f'"{box.field_project_id}" (pinned by inferred from extract run 1)' in line


def test_inference_prefers_the_unfinished_pass_then_runs_then_records(tmp_path: Path) -> None:
    with open_store(tmp_path / "a.db") as store:
        assert infer_identity(store) == {}  # a new DB holds nothing to infer from
        with store.transaction():
            store.conn.execute("INSERT INTO projects (id, name) VALUES ('only', 'Only')")
        assert infer_identity(store)["source_project_id"] == (
            "only",
            "inferred from the staged project",
        )
        run = start_run(store, "extract", {"project_id": "from-args"})
        finish_run(store, run, "succeeded", {})
        transform = start_run(store, "transform", {"target_project_id": 77})
        with store.transaction():
            store.conn.execute(
                "INSERT INTO cursors (endpoint, run_id, state, updated_at) "
                "VALUES ('extract:pass', ?, '{\"project_id\": \"from-pass\"}', 'now')",
                (run,),
            )
        assert infer_identity(store) == {
            "source_project_id": ("from-pass", "inferred from the unfinished extract pass"),
            "target_project_id": (77, f"inferred from transform run {transform}"),
        }


# -- files that are not a migrate staging DB -------------------------------------------------


def _foreign_sqlite(path: Path, *, wal: bool = False, application_id: int = 0) -> None:
    conn = sqlite3.connect(path)
    if application_id:
        conn.execute(f"PRAGMA application_id = {application_id}")
    if wal:
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE contacts (name TEXT, phone TEXT)")
    conn.execute("INSERT INTO contacts VALUES ('Ann', '555')")
    conn.commit()
    if wal:  # leave it like a program killed while writing: the data only in the -wal
        shutil.copy(f"{path}-wal", f"{path}-wal.keep")
        shutil.copy(path, f"{path}.keep")
    conn.close()
    if wal:
        os.replace(f"{path}.keep", path)
        os.replace(f"{path}-wal.keep", f"{path}-wal")
    path.chmod(0o644)


def _make_victim(kind: str, staging: Path, elsewhere: Path) -> list[Path]:
    """Put `kind` at the staging path; return every file whose state must not change."""
    if kind == "text":
        staging.write_text("name,phone\nAnn,555\n", encoding="utf-8")
        staging.chmod(0o644)
        return [staging]
    if kind == "foreign_sqlite":
        _foreign_sqlite(staging)
        return [staging]
    if kind == "foreign_wal":
        _foreign_sqlite(staging, wal=True)
        return [staging, Path(f"{staging}-wal")]
    if kind == "other_application":
        _foreign_sqlite(staging, application_id=0x47504B47)
        return [staging]
    target = elsewhere / "target.db"
    if kind == "symlink_to_foreign":
        _foreign_sqlite(target)
    elif kind == "symlink_to_staging_db":
        open_store(target).close()
        target.chmod(0o644)
    elif kind == "linked_wal":
        open_store(staging).close()
        target.write_text("someone else's file\n", encoding="utf-8")
        Path(f"{staging}-wal").symlink_to(target)
        return [staging, Path(f"{staging}-wal"), target]
    staging.symlink_to(target)
    return [staging, target]


COMMANDS = [
    ["status"],
    ["plan"],
    ["quarantine", "list"],
    ["quarantine", "show", "1"],
    ["quarantine", "release", "1"],
    ["extract"],
    ["transform", "--offline"],
    ["load"],
    ["report", "--offline"],
]


@pytest.mark.parametrize(
    "kind",
    [
        "text",
        "foreign_sqlite",
        "foreign_wal",
        "other_application",
        "symlink_to_foreign",
        "symlink_to_staging_db",
        "linked_wal",
    ],
)
def test_a_file_that_is_not_a_staging_db_is_refused_untouched(tmp_path: Path, kind: str) -> None:
    workdir, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    workdir.mkdir()
    elsewhere.mkdir()
    config = workdir / "migration.toml"
    config.write_text(
        '[source]\nbase_url = "http://127.0.0.1:9"\nproject_id = "p"\n'
        '[target]\nbase_url = "http://127.0.0.1:9"\nauth_url = "http://127.0.0.1:9"\n'
        f'company_id = 1\nproject_id = 2\n[mappings]\ndir = "{MAPPINGS}"\n',
        encoding="utf-8",
    )
    files = _make_victim(kind, workdir / "staging.db", elsewhere)
    before = ({f: file_state(f) for f in files}, listing(workdir, elsewhere))

    for command in COMMANDS:
        line = one_error_line(cli(*command, "--config", str(config), env=FAKE_ENV))
        if kind.startswith("symlink"):
            assert "staging.db is a symbolic link" in line, (command, line)
        elif kind == "linked_wal":
            assert "staging.db-wal is a symbolic link" in line, (command, line)
        else:
            assert "not a migrate staging DB; it was left untouched" in line, (command, line)
        assert ({f: file_state(f) for f in files}, listing(workdir, elsewhere)) == before


# -- commands that only read -----------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["plan"],
        ["quarantine", "list"],
        ["quarantine", "show", "1"],
        ["quarantine", "release", "1"],
        ["transform", "--offline"],
        ["load"],
        ["report", "--offline"],
    ],
)
def test_a_missing_staging_db_is_never_created(tmp_path: Path, command: list[str]) -> None:
    config = tmp_path / "migration.toml"
    config.write_text(
        f'[target]\ncompany_id = 1\nproject_id = 2\n[mappings]\ndir = "{MAPPINGS}"\n',
        encoding="utf-8",
    )
    line = one_error_line(cli(*command, "--config", str(config), env=FAKE_ENV))
    assert "Run `migrate extract` first" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["migration.toml"]


def test_reading_commands_leave_the_staging_db_as_it_was(
    migrated: tuple[Path, Sandbox], workdir: Path
) -> None:
    config = workdir / "migration.toml"
    staging = workdir / "staging.db"
    with contextlib.closing(sqlite3.connect(staging)) as conn, conn:
        quarantined = conn.execute(
            "INSERT INTO quarantine (entity, source_id, stage, reason, created_at) "
            "VALUES ('issue', 'i1', 'transform', 'a reason', 'now')"
        ).lastrowid
    before = db_bytes(staging)
    runs = table_digest(staging, "runs", "writer_lock", "staging_identity")

    for command in (
        ["status"],
        ["status", "--json"],
        ["plan"],
        ["quarantine", "list"],
        ["quarantine", "show", str(quarantined)],
    ):
        result = cli(*command, "--config", str(config))
        assert result.exit_code == EXIT_OK, (command, result.output)

    assert db_bytes(staging) == before
    assert table_digest(staging, "runs", "writer_lock", "staging_identity") == runs


# -- transform and load with nothing to work from (issue 13, 9c) ------------------------------


def test_transform_and_load_on_an_empty_db_name_the_command_to_run_first(
    tmp_path: Path,
) -> None:
    config = tmp_path / "migration.toml"
    config.write_text(
        '[target]\nbase_url = "http://127.0.0.1:9"\nauth_url = "http://127.0.0.1:9"\n'
        f'company_id = 1\nproject_id = 2\n[mappings]\ndir = "{MAPPINGS}"\n',
        encoding="utf-8",
    )
    staging = tmp_path / "staging.db"
    open_store(staging).close()

    line = one_error_line(cli("transform", "--offline", "--config", str(config), env=FAKE_ENV))
    assert "holds nothing extracted yet" in line and "Run `migrate extract` first" in line
    line = one_error_line(cli("load", "--config", str(config), env=FAKE_ENV))
    assert "Run `migrate extract`, then `transform`, first" in line

    with open_store(staging) as store:
        finish_run(store, start_run(store, "extract", {}), "succeeded", {})
    line = one_error_line(cli("load", "--config", str(config), env=FAKE_ENV))
    assert "No transform has finished" in line and "Run `migrate transform` first" in line
    assert table_digest(staging, "runs")["runs"][-1][1] == "extract"  # nothing recorded since
