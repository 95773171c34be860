"""`migrate status`: the staging DB read back as stages, counts and the next command.

Runs the real stages against the sandbox over loopback; the interrupted case kills a real
`migrate load` process with SIGKILL while its sync call is in flight.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrate.demo import write_demo_config
from migrate.mappings import write_default_mappings
from migrate.report.status import (
    ATTACHMENT_KEYS,
    ENTITIES,
    ENTITY_STATES,
    INSPECTION_KEYS,
    PLAN_KEYS,
    SCHEMA_VERSION,
    StatusReport,
    status_from_settings,
)
from migrate.sandbox.runner import Sandbox, SandboxOptions
from migrate.settings import Settings, load_settings
from tests.gates import HeldCalls

ISSUES = 40


# -- fixtures --------------------------------------------------------------------------------


def _settings(workdir: Path, box: Sandbox) -> Settings:
    write_default_mappings(workdir / "mappings")
    return load_settings(write_demo_config(workdir, box))


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    # A roomy spike window keeps the load quick; quota pacing is tested elsewhere.
    with Sandbox(
        SandboxOptions(issues=ISSUES, seed=11, procore_options={"spike_limit": 2000})
    ) as box:
        yield box


def _extract(settings: Settings, box: Sandbox) -> Any:
    from migrate.extract import extract_from_settings

    return extract_from_settings(settings, box.environment())


def _transform(settings: Settings, box: Sandbox) -> Any:
    from migrate.transform import transform_from_settings

    return transform_from_settings(settings, box.environment())


def _load(settings: Settings, box: Sandbox) -> Any:
    from migrate.load import load_from_settings

    return load_from_settings(settings, box.environment())


def _issues_before(box: Sandbox) -> int:
    """Coordination issues the Procore project had before the migration."""
    state = box.project.target_state()
    return len(state["coordination_issues"].get(str(box.procore_project_id), []))


def _db(settings: Settings) -> sqlite3.Connection:
    return sqlite3.connect(settings.staging.path)


def _scalar(settings: Settings, sql: str) -> int:
    with _db(settings) as conn:
        return int(conn.execute(sql).fetchone()[0])


# -- no staging DB yet -----------------------------------------------------------------------


def test_status_without_a_staging_db_says_extract_and_creates_nothing(tmp_path: Path) -> None:
    config = tmp_path / "migration.toml"
    config.write_text("[target]\ncompany_id = 1\nproject_id = 2\n", encoding="utf-8")
    settings = load_settings(config)

    report = status_from_settings(settings)

    assert report.next_command == "migrate extract"
    assert not report.staging_db_exists
    assert not Path(settings.staging.path).exists()  # status never creates the DB
    assert report.target_project_id == 2
    assert all(v == 0 for states in report.entities.values() for v in states.values())
    text = "\n".join(report.lines())
    assert "does not exist yet" in text and "Next         migrate extract" in text


def test_status_on_an_empty_staging_db_says_extract(tmp_path: Path) -> None:
    from migrate.store import open_store

    config = tmp_path / "migration.toml"
    config.write_text("", encoding="utf-8")
    settings = load_settings(config)
    open_store(settings.staging.path).close()

    report = status_from_settings(settings)

    assert report.staging_db_exists
    assert report.stages == []
    assert report.next_command == "migrate extract"
    assert report.target_project_id is None
    _check_schema(report.to_json())


# -- the JSON schema -------------------------------------------------------------------------

_STAGE_TYPES = {
    "command": str,
    "run_id": int,
    "status": str,
    "started_at": str,
    "finished_at": (str, type(None)),
    "duration_seconds": (float, int, type(None)),
    "counts": (dict, type(None)),
    "error": (str, type(None)),
}


def _check_schema(data: dict[str, Any]) -> None:
    """Keys and types exactly as documented in migrate/report/status.py (schema_version 1)."""
    assert json.loads(json.dumps(data)) == data  # plain JSON, nothing lost
    assert set(data) == {
        "schema_version",
        "generated_at",
        "staging_db",
        "staging_db_exists",
        "target_project_id",
        "stages",
        "entities",
        "attachments",
        "deleted_after_load",
        "quota",
        "plan",
        "inspections",
        "quarantine_open",
        "running",
        "next_command",
        "next_reason",
        "left_behind",
    }
    assert set(data["left_behind"]) == {"not_migrated", "project_export"}
    for family in data["left_behind"]["not_migrated"]:
        assert set(family) == {"family", "records", "bytes", "kept_in"}
    for archive in data["left_behind"]["project_export"]:
        assert set(archive) == {
            "kind",
            "state",
            "sha256",
            "size",
            "requested_at",
            "finished_at",
            "reason",
        }
    assert data["schema_version"] == SCHEMA_VERSION == 1
    assert isinstance(data["generated_at"], str) and data["generated_at"].endswith("Z")
    assert isinstance(data["staging_db"], str)
    assert isinstance(data["staging_db_exists"], bool)
    assert data["target_project_id"] is None or isinstance(data["target_project_id"], int)
    assert isinstance(data["stages"], list)
    for stage in data["stages"]:
        assert set(stage) == set(_STAGE_TYPES)
        for key, kind in _STAGE_TYPES.items():
            assert isinstance(stage[key], kind), (key, stage[key])
        assert stage["status"] in ("succeeded", "failed", "interrupted", "running")
    assert set(data["entities"]) == set(ENTITIES) == {"issue", "checklist_item", "location"}
    for states in data["entities"].values():
        assert list(states) == list(ENTITY_STATES)
        assert all(type(v) is int and v >= 0 for v in states.values())
    assert list(data["attachments"]) == list(ATTACHMENT_KEYS)
    assert all(type(v) is int for v in data["attachments"].values())
    assert set(data["deleted_after_load"]) == {"count", "source_ids"}
    assert type(data["deleted_after_load"]["count"]) is int
    assert all(isinstance(s, str) for s in data["deleted_after_load"]["source_ids"])
    assert set(data["quota"]) == {"run_id", "requests", "against_quota", "by_endpoint"}
    assert data["quota"]["run_id"] is None or type(data["quota"]["run_id"]) is int
    assert type(data["quota"]["requests"]) is int
    assert type(data["quota"]["against_quota"]) is int
    assert all(
        isinstance(k, str) and type(v) is int for k, v in data["quota"]["by_endpoint"].items()
    )
    assert list(data["plan"]) == list(PLAN_KEYS)
    assert all(type(v) is int for v in data["plan"].values())
    assert list(data["inspections"]) == list(INSPECTION_KEYS)
    assert all(type(v) is int and v >= 0 for v in data["inspections"].values())
    assert type(data["quarantine_open"]) is int
    for run in data["running"]:
        assert set(run) == {"command", "run_id", "pid"}
    assert isinstance(data["next_command"], str) and data["next_command"].startswith("migrate ")
    assert isinstance(data["next_reason"], str) and data["next_reason"]


# -- after each stage ------------------------------------------------------------------------


def test_status_after_each_stage(tmp_path: Path, sandbox: Sandbox) -> None:
    settings = _settings(tmp_path, sandbox)

    _extract(settings, sandbox)
    after_extract = status_from_settings(settings)
    _check_schema(after_extract.to_json())
    assert [s.command for s in after_extract.stages] == ["extract"]
    assert after_extract.stages[0].status == "succeeded"
    assert after_extract.stages[0].duration_seconds is not None
    issues = after_extract.entities["issue"]
    assert issues["extracted"] == ISSUES == _scalar(settings, "SELECT COUNT(*) FROM issues")
    assert issues["planned"] == issues["loaded"] == 0
    assert after_extract.entities["location"]["extracted"] == _scalar(
        settings, "SELECT COUNT(*) FROM areas"
    )
    stored = _scalar(settings, "SELECT COUNT(*) FROM attachments WHERE state = 'stored'")
    assert after_extract.attachments["stored"] == stored > 0
    assert after_extract.attachments["bytes_stored"] == _scalar(
        settings, "SELECT SUM(size) FROM attachments WHERE state = 'stored'"
    )
    assert after_extract.next_command == "migrate transform"

    _transform(settings, sandbox)
    after_transform = status_from_settings(settings)
    issues = after_transform.entities["issue"]
    assert issues["planned"] > 0
    # the transform contract: every extracted issue is planned, quarantined or skipped
    assert issues["planned"] + issues["quarantined"] + issues["skipped"] == ISSUES
    assert issues["skipped"] >= 1  # the generator puts a Void issue in every project
    assert issues["pending"] == issues["planned"]
    assert after_transform.entities["location"]["planned"] > 0
    # Every planned checklist is one inspection to create (issue 14).
    assert after_transform.inspections["pending"] == after_transform.inspections["planned"] > 0
    assert (
        after_transform.plan["create"]
        == issues["planned"]
        + (
            after_transform.entities["location"]["pending"]
            - _scalar(
                settings,
                "SELECT COUNT(*) FROM planned_locations WHERE existing_target_id IS NOT NULL",
            )
        )
        + after_transform.inspections["planned"]
    )
    assert after_transform.inspections["planned"] == _scalar(
        settings, "SELECT COUNT(*) FROM planned_inspections"
    )
    assert after_transform.attachments["pending_upload"] > 0
    with _db(settings) as conn:  # the Datasette view says the same, file by file
        waiting = conn.execute(
            "SELECT waiting_for, COUNT(*) FROM v_attachments_pending GROUP BY waiting_for"
        ).fetchall()
    assert waiting == [("upload pending", after_transform.attachments["pending_upload"])]
    assert after_transform.next_command == "migrate load"
    assert f"{after_transform.plan['create']} to create" in after_transform.next_reason
    assert [s.command for s in after_transform.stages] == ["extract", "transform"]

    result = _load(settings, sandbox)
    after_load = status_from_settings(settings)
    _check_schema(after_load.to_json())
    issues = after_load.entities["issue"]
    assert (
        issues["loaded"]
        == issues["planned"]
        == len(sandbox.procore_app.issues(sandbox.procore_project_id)) - _issues_before(sandbox)
    )
    assert issues["pending"] == 0 and issues["rejected"] == 0
    assert after_load.entities["location"]["pending"] == 0
    assert after_load.attachments["pending_upload"] == 0
    assert after_load.attachments["uploaded"] == len(
        sandbox.procore_app.uploads(sandbox.procore_project_id)
    )
    assert after_load.plan == dict.fromkeys(PLAN_KEYS, 0)
    # quota: what the load run recorded, which is what the simulator counted for it
    load_run = after_load.stages[-1]
    assert load_run.command == "load" and load_run.status == "succeeded"
    assert after_load.quota_run_id == load_run.run_id == result.run_id
    assert after_load.quota_requests == result.total_requests > 0
    assert after_load.to_json()["quota"]["against_quota"] == result.quota_requests
    open_quarantine = _scalar(settings, "SELECT COUNT(*) FROM quarantine WHERE released_at IS NULL")
    assert after_load.quarantine_open == open_quarantine
    if open_quarantine:
        assert after_load.next_command == "migrate quarantine list"
    else:
        assert after_load.next_command == "migrate report"
    _check_views(settings, after_load)
    text = "\n".join(after_load.lines())
    assert len(after_load.lines()) <= 40  # one screen
    assert f"run {load_run.run_id}" in text and after_load.next_command in text


JOURNEY_COLUMNS = [
    "source_id",
    "source_kind",
    "identifier",
    "title",
    "field_status",
    "procore_status_planned",
    "procore_status_loaded",
    "uuid",
    "procore_project_id",
    "procore_id",
    "state",
    "reason",
    "hint",
    "state_changed_at",
]


def _check_views(settings: Settings, report: StatusReport) -> None:
    """The staging DB's views agree with status and with the tables they summarise."""
    with _db(settings) as conn:
        conn.row_factory = sqlite3.Row
        journey = conn.execute("SELECT * FROM v_issue_journey").fetchall()
        by_reason = conn.execute("SELECT * FROM v_quarantine_by_reason").fetchall()
        pending = conn.execute("SELECT * FROM v_attachments_pending").fetchall()
        loaded = {
            r[0]: r[1]
            for r in conn.execute(
                "SELECT source_id, target_id FROM id_map WHERE entity = 'coordination_issue' "
                "AND state = 'loaded'"
            )
        }
    assert list(journey[0].keys()) == JOURNEY_COLUMNS
    issues = [r for r in journey if r["source_kind"] == "issue"]
    states = {
        state: sum(1 for r in issues if r["state"] == state)
        for state in {r["state"] for r in issues}
    }
    counts = report.entities["issue"]
    assert len(issues) == counts["extracted"]
    assert states.get("loaded", 0) == counts["loaded"]
    assert states.get("skipped", 0) == counts["skipped"]
    assert states.get("quarantined", 0) == counts["quarantined"]
    for row in issues:
        if row["state"] == "loaded":
            assert row["procore_id"] == loaded[row["source_id"]] and row["uuid"]
            assert row["title"] and row["identifier"] is not None
        if row["state"] in ("quarantined", "skipped"):
            assert row["reason"]
    assert sum(r["records"] for r in by_reason) == report.quarantine_open
    assert all(r["reason"] and r["records"] >= 1 for r in by_reason)
    assert pending == []  # everything downloaded and attached


def test_newer_extract_asks_for_transform(tmp_path: Path, sandbox: Sandbox) -> None:
    settings = _settings(tmp_path, sandbox)
    _extract(settings, sandbox)
    _transform(settings, sandbox)
    _extract(settings, sandbox)

    report = status_from_settings(settings)

    assert report.next_command == "migrate transform"
    assert "newer than the last transform" in report.next_reason


# -- an interrupted load ---------------------------------------------------------------------

_LOAD_SCRIPT = textwrap.dedent("""
    import sys
    from migrate.load import load_from_settings
    from migrate.settings import load_settings
    load_from_settings(load_settings(sys.argv[1]))
""")


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def kill_load_mid_batch(settings: Settings, box: Sandbox) -> None:
    """Run `migrate load` in a child process and SIGKILL it while a sync call is in flight.

    The simulator holds every sync call at a gate until the child is dead, then applies it:
    the batch is recorded 'sent' in id_map, the process dies, and Procore creates the issues
    afterwards, which is what a real kill -9 mid-call leaves behind. Nothing here depends on
    how fast the machine is: the kill cannot come too late, whatever the load on the box.
    """
    app = box.procore_app
    env = {**os.environ, **box.environment()}
    with HeldCalls(app, "coordination_issues.sync") as sync:
        process = subprocess.Popen(
            [sys.executable, "-c", _LOAD_SCRIPT, str(settings.config_path)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for(
                lambda: (
                    sync.held > 0
                    and _scalar(settings, "SELECT COUNT(*) FROM id_map WHERE state = 'sent'")
                ),
                120,
                "a sync batch in flight",
            )
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(60)

    # Procore applies the held batch after its client died.
    def applied() -> bool:
        with app.lock:
            return any(name == "coordination_issues.sync" for name, _status in app.statuses)

    _wait_for(applied, 120, "the held sync call to be applied")


def test_killed_load_shows_interrupted_and_next_command_resumes(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    settings = _settings(tmp_path, sandbox)
    _extract(settings, sandbox)
    _transform(settings, sandbox)
    kill_load_mid_batch(settings, sandbox)

    report = status_from_settings(settings)

    load = [s for s in report.stages if s.command == "load"][0]
    assert load.status == "interrupted"  # shown so; status itself writes nothing
    assert load.finished_at is None
    with _db(settings) as conn:
        assert (
            conn.execute("SELECT status FROM runs WHERE id = ?", (load.run_id,)).fetchone()[0]
            == "running"
        )
    assert report.running == []
    assert report.next_command == "migrate load"
    assert f"run {load.run_id}" in report.next_reason and "interrupted" in report.next_reason
    assert report.entities["issue"]["pending"] > 0
    _check_schema(report.to_json())

    _load(settings, sandbox)  # what the next command says to do
    resumed = status_from_settings(settings)

    assert resumed.entities["issue"]["pending"] == 0
    assert resumed.entities["issue"]["loaded"] == resumed.entities["issue"]["planned"]
    assert resumed.next_command in ("migrate report", "migrate quarantine list")
    # Nothing was created twice: one Procore issue per planned issue (+ those there before).
    in_procore = sandbox.procore_app.issues(sandbox.procore_project_id)
    assert len(in_procore) == resumed.entities["issue"]["planned"] + _issues_before(sandbox)
    assert len({i["uuid"] for i in in_procore}) == len(in_procore)


def test_a_running_load_is_reported_as_running(tmp_path: Path) -> None:
    from migrate.store import open_store, start_run

    config = tmp_path / "migration.toml"
    config.write_text("[target]\ncompany_id = 1\nproject_id = 2\n", encoding="utf-8")
    settings = load_settings(config)
    with open_store(settings.staging.path) as store:
        run_id = start_run(store, "load")  # this process is alive: the run is live

        report = status_from_settings(settings)

    assert report.running == [{"command": "load", "run_id": run_id, "pid": os.getpid()}]
    assert report.next_command == "migrate status"
    assert "is running" in report.next_reason
    assert isinstance(report, StatusReport)


def test_status_without_a_procore_project_does_not_import_the_load_package(
    tmp_path: Path,
) -> None:
    """Start-up: `status` spends the load package's import only when there is a plan to count
    (issue 19 point 4; the time itself is measured by `python -m bench startup`)."""
    from migrate.store import open_store

    config = tmp_path / "migration.toml"
    config.write_text("[target]\ncompany_id = 1\n", encoding="utf-8")
    with open_store(load_settings(config).staging.path):
        pass  # an empty staging DB: status reads it
    code = (
        "import sys\n"
        "from migrate.cli import main\n"
        "try:\n    main(['status', '--config', sys.argv[1]])\n"
        "except SystemExit as exc:\n    code = exc.code\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[:2] == ['migrate', 'load'])\n"
        "print(loaded, code, file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(config)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    *_, last = done.stderr.strip().splitlines()
    assert last == "[] 0", done.stderr
