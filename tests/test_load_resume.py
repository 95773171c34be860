"""kill -9 a load at random points, resume it: Procore ends exactly as after one clean run.

A subprocess runs ``load_from_settings`` against a Procore simulator served by this test
process, which watches the requests arrive and kills the subprocess with SIGKILL at seeded
points (mid-upload, between batches, while a sync call is being applied ...). Each kill
leaves the staging DB as a dead process leaves it; the next round resumes from there, and a
last in-process run finishes. The simulator's state is then compared with a clean run of the
same plan on a second simulator: the same issues by uuid with the same fields, locations and
attachment bytes, none twice, none missing.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from migrate.contract import documented, record_contract
from migrate.load import load_from_settings
from migrate.sandbox.httpbase import RunningServer
from migrate.settings import load_settings
from migrate.store import open_store
from tests.test_load import (
    ACCESS_CHECK,
    GENEROUS,
    PROCORE_ENV,
    PROJECT,
    RecordingProcoreApp,
    calls_since,
    db_rows,
    location_paths,
    plant,
    project_issues,
    settings_for,
)

REPO = Path(__file__).resolve().parents[1]
CHILD = (
    "import os, sys\n"
    "from migrate.load import load_from_settings\n"
    "from migrate.settings import load_settings\n"
    "load_from_settings(load_settings(sys.argv[1]), os.environ)\n"
)

pytestmark = pytest.mark.slow


def write_config(tmp: Path, procore_url: str) -> Path:
    config = tmp / "migration.toml"
    config.write_text(
        f'[target]\nbase_url = "{procore_url}"\nauth_url = "{procore_url}"\n'
        f"company_id = 4100\nproject_id = {PROJECT}\nworkers = 4\n\n"
        '[staging]\npath = "staging.db"\nblobs = "blobs"\nlogs = "logs"\n',
        encoding="utf-8",
    )
    return config


def start_child(config: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **PROCORE_ENV, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def kill_when(
    app: RecordingProcoreApp, child: subprocess.Popen[bytes], ready: Any, *, timeout: float = 60.0
) -> bool:
    """SIGKILL the child as soon as ``ready()`` holds; False if it finished first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            return False
        if ready():
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            return True
        time.sleep(0.0005)
    child.kill()
    child.wait()
    raise AssertionError("the load neither finished nor reached the kill point")


def requests_seen(app: RecordingProcoreApp) -> int:
    return sum(app.call_counts().values())


#: Where each round's kill lands: after a random number of requests (mostly uploads), as soon
#: as a sync call arrives (Procore applies it after the process died), right after a sync was
#: answered (applied, the answer maybe not yet recorded), or during the look-up of issues a
#: killed sync had created.
KILL_PLAN = (
    "requests",
    "sync-arrived",
    "look-up",
    "requests",
    "sync-answered",
    "requests",
    "sync-arrived",
    "sync-answered",
)


def kill_point(app: RecordingProcoreApp, kind: str, rng: random.Random) -> Any:
    """A condition on the simulator's counters, relative to now, for one kill."""
    calls = app.call_counts()
    if kind == "requests":
        target = sum(calls.values()) + rng.randint(1, 150)
        return lambda: requests_seen(app) >= target
    if kind == "sync-arrived":
        seen = calls.get("coordination_issues.sync", 0)
        return lambda: app.call_counts().get("coordination_issues.sync", 0) > seen
    if kind == "sync-answered":
        key = ("coordination_issues.sync", 200)
        answered = app.statuses[key]
        return lambda: app.statuses[key] > answered
    seen = calls.get("coordination_issues.list", 0)
    return lambda: app.call_counts().get("coordination_issues.list", 0) > seen


def procore_state(app: RecordingProcoreApp) -> dict[str, Any]:
    """What a person would see in Procore, by uuid and location path (ids differ per run)."""
    paths = location_paths(app)
    issues: dict[str, Any] = {}
    others = []
    for issue in project_issues(app):
        if issue["origin"] is None:  # the project's own issues, with random uuids
            others.append(issue["title"])
            continue
        assert issue["uuid"] not in issues, f"uuid {issue['uuid']} is in Procore twice"
        issues[issue["uuid"]] = {
            **{
                k: issue[k]
                for k in (
                    "title",
                    "description",
                    "status",
                    "priority",
                    "issue_type",
                    "due_date",
                    "assignee_id",
                    "origin",
                )
            },
            "location": paths.get(issue["location_id"]) if issue["location_id"] else None,
            "attachments": sorted(
                (a["sha256"], a["size"], a["name"]) for a in issue["attachments"]
            ),
        }
    locations = sorted(paths.values())
    assert len(locations) == len(set(locations)), "a location path is in Procore twice"
    return {"issues": issues, "others": sorted(others), "locations": locations}


def clean_run(tmp: Path, planted_db: Path) -> dict[str, Any]:
    """The reference: the same plan loaded once, without interruption, on a fresh Procore."""
    app = RecordingProcoreApp(**GENEROUS)
    server = RunningServer(app)
    try:
        settings = settings_for(tmp / "reference", server.url)
        settings.staging.path.parent.mkdir(parents=True)
        shutil.copy(planted_db, settings.staging.path)
        shutil.copytree(planted_db.parent / "blobs", settings.staging.blobs)
        load_from_settings(settings, PROCORE_ENV)
        return procore_state(app)
    finally:
        server.stop()
        app.close()


def assert_finished(settings: Any) -> None:
    states = db_rows(
        settings,
        "SELECT state, COUNT(*) FROM id_map WHERE entity = 'coordination_issue' GROUP BY state",
    )
    (planned,) = db_rows(settings, "SELECT COUNT(*) FROM planned_issues")[0]
    assert dict(states) == {"loaded": planned}
    assert db_rows(settings, "SELECT COUNT(*) FROM quarantine WHERE released_at IS NULL") == [(0,)]


def test_killed_at_random_points_then_resumed_equals_one_clean_run(tmp_path: Path) -> None:
    app = RecordingProcoreApp(**GENEROUS)
    server = RunningServer(app)
    try:
        work = tmp_path / "work"
        work.mkdir()
        config = write_config(work, server.url)
        settings = load_settings(config)
        # 2 100 issues: three sync batches (1000/1000/100), one file every 7th issue.
        plant(settings, 2100, attachments=7, blob_size=3000)
        planted = tmp_path / "planted"
        shutil.copytree(work, planted)
        expected = clean_run(tmp_path, planted / "staging.db")

        rng = random.Random(20240611)
        kills: list[str] = []
        for kind in KILL_PLAN:
            child = start_child(config)
            ready = kill_point(app, kind, rng)
            if not kill_when(app, child, ready):
                assert child.returncode == 0, (
                    child.stderr.read().decode() if child.stderr else child.returncode
                )
                break
            kills.append(kind)
        assert len(kills) >= 6, kills
        assert {"sync-arrived", "sync-answered", "look-up"} <= set(kills), kills
        result = load_from_settings(settings, PROCORE_ENV)
        assert result.exit_code == 0
        assert_finished(settings)
        assert procore_state(app) == expected
        # And a run after that has nothing left to do.
        before = app.call_counts()
        load_from_settings(settings, PROCORE_ENV)
        assert calls_since(app, before) == ACCESS_CHECK
    finally:
        server.stop()
        app.close()


#: What Procore does with a reused uuid (simulator switch), and what a preflight probe recorded
#: in the staging DB beforehand (None: no probe was run).
UUID_READINGS = [
    (server, recorded)
    for server in ("refused", "accepted", "ignored")
    for recorded in (None, server)
]


@pytest.mark.parametrize("applied", [False, True], ids=["before-applied", "after-applied"])
@pytest.mark.parametrize(
    ("reuse", "recorded"), UUID_READINGS, ids=[f"{s}-{r or 'unprobed'}" for s, r in UUID_READINGS]
)
def test_killed_while_a_sync_call_is_in_flight(
    tmp_path: Path, applied: bool, reuse: str, recorded: str | None
) -> None:
    """The process dies with the batch committed 'sent': Procore may or may not have it.

    Under every reading of a reused uuid the resumed load ends with each issue once.
    """
    app = RecordingProcoreApp(uuid_reuse=reuse, **GENEROUS)
    server = RunningServer(app)
    try:
        work = tmp_path / "work"
        work.mkdir()
        config = write_config(work, server.url)
        settings = load_settings(config)
        plant(settings, 300, attachments=5)
        if recorded is not None:
            contract = documented()
            contract["probe_writes"] = True
            contract["procore"]["uuid_reuse"] = recorded
            with open_store(settings.staging.path) as store:
                record_contract(store, contract, {})
        planted = tmp_path / "planted"
        shutil.copytree(work, planted)
        expected = clean_run(tmp_path, planted / "staging.db")

        # The simulator holds the sync call until the process is dead: before applying it
        # (then refuses it: it never reached Procore), or after applying it with the answer
        # not sent yet. The kill lands inside that pause, however busy the machine is.
        gate = threading.Event()
        if applied:
            app.sync_answer_gate = gate
            ready = app.sync_answer_held.is_set
            finished = ("coordination_issues.sync", 200)
        else:
            app.sync_gate = gate
            app.refuse_held_syncs = True
            ready = lambda: app.call_counts().get("coordination_issues.sync", 0) > 0  # noqa: E731
            finished = ("coordination_issues.sync", 503)
        child = start_child(config)

        assert kill_when(app, child, ready)
        gate.set()
        # The simulator finishes the call the dead process started.
        deadline = time.monotonic() + 120  # a hang guard, not a timing
        while not app.statuses[finished] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.statuses[finished] == 1
        app.sync_answer_gate, app.sync_gate = None, None
        (state,) = db_rows(
            settings, "SELECT DISTINCT state FROM id_map WHERE entity = 'coordination_issue'"
        )
        assert state == ("sent",)
        created_before_resume = len(project_issues(app)) - 1
        assert created_before_resume == (300 if applied else 0)
        result = load_from_settings(settings, PROCORE_ENV)
        assert result.exit_code == 0
        assert result.counts["coordination_issue"]["created"] == 300
        assert_finished(settings)
        assert procore_state(app) == expected
        if created_before_resume:  # found by uuid, not created again
            assert app.call_counts()["coordination_issues.list"] >= 1
    finally:
        server.stop()
        app.close()
