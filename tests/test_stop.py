"""Stopping: a dead service ends the command, Ctrl-C stops every worker, progress without a TTY.

`migrate load` and `migrate extract` run as subprocesses (as an engineer runs them) against the
small chaos sandbox served by this test process; the simulators' own counters say what reached
them and when the run stopped sending. Nothing here asserts a duration: waits have generous
limits that only guard against a hang.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from migrate.cli import main
from migrate.extract import extract_from_settings
from migrate.ids import issue_uuid
from migrate.load import load_from_settings
from migrate.sandbox.faults import FaultConfig
from migrate.sandbox.httpbase import Request, Response, Route, RunningServer
from migrate.sandbox.procore_server import ProcoreApp
from migrate.sandbox.runner import Sandbox
from migrate.settings import load_settings
from migrate.transform import transform_from_settings
from tests.chaos.conftest import chaos_sandbox, db_query, prepare_workdir
from tests.test_load import GENEROUS, PROCORE_ENV, PROJECT, plant, project_issues, settings_for

REPO = Path(__file__).resolve().parents[1]
posix_only = pytest.mark.skipif(os.name == "nt", reason="sends SIGINT to a child process")


class GatedProcoreApp(ProcoreApp):
    """The simulator; storage uploads after the first ``allow`` wait for ``gate``."""

    def __init__(self, *args: Any, allow: int = 10**9, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allow = allow
        self.gate = threading.Event()
        self.storage_seen = 0

    def before(self, request: Request, route: Route) -> Response | None:
        if route.name == "storage.upload":
            with self.lock:
                self.storage_seen += 1
                held = self.storage_seen > self.allow
            if held:
                self.gate.wait(120)
        return super().before(request, route)


def sandbox_with(app_factory: Callable[[Sandbox], ProcoreApp] | None = None, **kwargs: Any):
    box = chaos_sandbox(**kwargs)
    if app_factory is not None:
        box.procore_app = app_factory(box)
    return box


@pytest.fixture
def boxes() -> Iterator[list[Sandbox]]:
    started: list[Sandbox] = []
    yield started
    for box in started:
        if isinstance(box.procore_app, GatedProcoreApp):
            box.procore_app.gate.set()
        box.stop()
        box.procore_app.close()


def staged(box: Sandbox, workdir: Path, *, target_lines: str = "", transform: bool = True) -> Path:
    """migration.toml for ``box`` (extra [target] lines), extracted and transformed in-process."""
    config = prepare_workdir(workdir, box)
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("[target]\n", f"[target]\n{target_lines}"), encoding="utf-8")
    if transform:
        settings = load_settings(config)
        extract_from_settings(settings, box.environment())
        transform_from_settings(settings, box.environment())
    return config


class Child:
    """A `migrate` subprocess whose stderr and stdout are read as they come."""

    def __init__(self, args: list[str], config: Path, box: Sandbox) -> None:
        self.args = [*args, "--config", str(config)]
        env = {**os.environ, **box.environment(), "PYTHONPATH": str(REPO)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "migrate.cli", *self.args],
            cwd=config.parent,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, self.err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    @property
    def resume_command(self) -> str:
        """The command as typed, quoted as the CLI quotes it on this OS."""
        words = ["migrate", *self.args]
        return subprocess.list2cmdline(words) if os.name == "nt" else shlex.join(words)

    def wait(self, timeout: float = 180.0) -> int:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"migrate {self.args[0]} hung:\n{self.text()}") from None
        for reader in self._readers:
            reader.join(timeout=10)
        return code

    def text(self) -> str:
        return "\n".join(["-- stdout", *self.out, "-- stderr", *self.err])


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen"
        time.sleep(0.01)


def answered(app: Any, route: str) -> int:
    """Requests to ``route`` the simulator answered with success (storage answers 204)."""
    with app.lock:
        return sum(
            n for (name, status), n in app.statuses.items() if name == route and status < 300
        )


def requests_seen(app: Any) -> int:
    return sum(app.call_counts().values())


def migrated_once(box: Sandbox, config: Path) -> None:
    """Every planned issue is in Procore exactly once, under its uuid."""
    planned = [sid for (sid,) in db_query(config, "SELECT source_id FROM planned_issues")]
    held = {
        sid
        for (sid,) in db_query(
            config,
            "SELECT source_id FROM id_map WHERE entity = 'coordination_issue' "
            "AND state = 'rejected'",
        )
    }
    uuids = Counter(issue["uuid"] for issue in project_issues(box.procore_app))
    assert len(planned) > 40
    project = box.procore_project_id
    assert {sid: uuids[issue_uuid(project, sid)] for sid in planned if sid not in held} == {
        sid: 1 for sid in planned if sid not in held
    }


def run_statuses(config: Path, command: str) -> list[str]:
    return [
        status
        for (status,) in db_query(
            config, f"SELECT status FROM runs WHERE command = '{command}' ORDER BY id"
        )
    ]


# -- a dead service ends the command -------------------------------------------------------------


def test_procore_going_away_mid_load_ends_the_command_and_a_rerun_finishes_once(
    boxes: list[Sandbox], tmp_path: Path
) -> None:
    box = sandbox_with(
        lambda box: GatedProcoreApp(box.project.target_state(), allow=8, **GENEROUS)
    ).start()
    boxes.append(box)
    app = box.procore_app
    assert isinstance(app, GatedProcoreApp)
    config = staged(box, tmp_path / "work", target_lines="workers = 4\ngive_up_after = 1\n")
    # Files that go through uploads: the issues' and the inspections' own (checklist files and
    # signatures; item files are posted with their item).
    planned_files = db_query(
        config,
        "SELECT COUNT(*) FROM (SELECT value FROM planned_issues, json_each(attachment_ids) "
        "UNION SELECT value FROM planned_inspections, json_each(attachment_ids))",
    )[0][0]

    load = Child(["load", "--quiet"], config, box)
    wait_for(lambda: app.storage_seen > 8, "uploads reaching the gate")
    box.stop_procore()  # Procore is gone: listening socket closed, connections cut
    confirmed = answered(app, "storage.upload")  # answers sent before it went
    app.gate.set()
    assert load.wait() == 1, load.text()
    error = [line for line in load.err if line.startswith("Error:")]
    assert len(error) == 1, load.text()
    assert "has not answered for" in error[0] and "no answer" in error[0]
    assert error[0].endswith(f"resume with `{load.resume_command}`."), error[0]
    assert "Traceback" not in load.text()
    # What the staging DB kept: the run failed, every upload storage confirmed is recorded
    # stored, nothing was loaded (the sync call was never reached).
    assert run_statuses(config, "load") == ["failed"]
    rows = db_query(config, "SELECT sha256, upload_uuid FROM uploads WHERE state = 'stored'")
    stored = len(rows)
    # Those on the wire when Procore went were cut off; every one recorded is in Procore.
    assert 1 <= stored <= confirmed <= 8
    in_procore = {u["uuid"]: u for u in app.uploads(box.procore_project_id)}
    assert all(in_procore[uuid]["sha256"] == sha256 for sha256, uuid in rows)
    assert db_query(
        config,
        "SELECT COUNT(*) FROM id_map WHERE entity = 'coordination_issue' AND state = 'loaded'",
    ) == [(0,)]

    box.restart_procore()
    app.reset_counts()
    again = Child(["load"], config, box)  # without --quiet: progress lines, stderr not a TTY
    assert again.wait() in (0, 3), again.text()
    migrated_once(box, config)
    assert run_statuses(config, "load") == ["failed", "succeeded"]
    # The stored uploads were reused, not sent again.
    assert app.call_counts()["storage.upload"] == planned_files - stored

    # Progress without a TTY: plain lines per entity, no control characters.
    progress = [line for line in again.err if line.startswith("load: ")]
    assert any(re.fullmatch(r"load: attachments \d+/\d+ \(\d+%\)", line) for line in progress), (
        again.text()
    )
    assert any(re.fullmatch(r"load: coordination_issues \d+/\d+ \(100%\)", p) for p in progress), (
        progress
    )
    assert len(progress) >= 5  # every tenth of the way, not one line at the end
    assert not any("\r" in line or "\x1b" in line for line in again.err)


# -- Ctrl-C --------------------------------------------------------------------------------------


@posix_only
def test_ctrl_c_stops_every_upload_worker_and_prints_the_resume_command(
    boxes: list[Sandbox], tmp_path: Path
) -> None:
    # Storage uploads after the fourth wait at the gate until Ctrl-C was seen: uploads are on
    # the wire when it comes, whatever the machine's speed.
    box = sandbox_with(
        lambda box: GatedProcoreApp(box.project.target_state(), allow=4, **GENEROUS)
    ).start()
    boxes.append(box)
    app = box.procore_app
    assert isinstance(app, GatedProcoreApp)
    config = staged(box, tmp_path / "work")

    load = Child(["load", "--quiet"], config, box)
    wait_for(lambda: answered(app, "storage.upload") >= 4, "uploads")
    wait_for(lambda: app.storage_seen > 4, "an upload held on the wire")
    load.process.send_signal(signal.SIGINT)
    wait_for(lambda: any(line.startswith("Stopping;") for line in load.err), "the stop")
    at_stop = requests_seen(app)  # the stop event is set before "Stopping;" is written
    app.gate.set()  # the held uploads are answered within the grace
    assert load.wait() == 130, load.text()
    after_exit = requests_seen(app)
    time.sleep(0.5)  # a look for stragglers; its length only bounds what it could notice
    # No worker kept going: once the stop was set, at most the requests already on the wire
    # (4 workers, the main thread) arrived, and none after the process ended.
    assert after_exit - at_stop <= 5
    assert requests_seen(app) == after_exit
    assert load.err[-1] == (
        "Interrupted: what was done so far is kept (this run is recorded as interrupted). "
        f"Resume with: {load.resume_command}"
    ), load.text()
    assert "Aborted!" not in load.text() and "Traceback" not in load.text()
    assert run_statuses(config, "load") == ["interrupted"]
    stored = db_query(config, "SELECT COUNT(*) FROM uploads WHERE state = 'stored'")[0][0]
    assert 4 <= stored <= answered(app, "storage.upload")

    app.faults.configure(FaultConfig())
    again = Child(["load", "--quiet"], config, box)
    assert again.wait() in (0, 3), again.text()
    migrated_once(box, config)
    assert run_statuses(config, "load") == ["interrupted", "succeeded"]


@posix_only
def test_a_second_ctrl_c_exits_at_once(boxes: list[Sandbox], tmp_path: Path) -> None:
    # Storage answers after 60 s: the first Ctrl-C would wait its grace for them.
    held = FaultConfig(slow_rate=1.0, slow_seconds=60.0, paths="^/s3/")
    box = sandbox_with(procore_faults=held).start()
    boxes.append(box)
    app = box.procore_app
    config = staged(box, tmp_path / "work")

    load = Child(["load", "--quiet"], config, box)
    wait_for(lambda: app.call_counts().get("storage.upload", 0) >= 4, "uploads on the wire")
    load.process.send_signal(signal.SIGINT)
    wait_for(lambda: any(line.startswith("Stopping;") for line in load.err), "the first stop")
    load.process.send_signal(signal.SIGINT)
    assert load.wait() == 130, load.text()
    assert load.err[-1] == f"Second Ctrl-C: stopped at once. Resume with: {load.resume_command}"
    assert not any(line.startswith("Interrupted:") for line in load.err)
    assert "Traceback" not in load.text()

    app.faults.configure(FaultConfig())
    again = Child(["load", "--quiet"], config, box)
    assert again.wait() in (0, 3), again.text()
    migrated_once(box, config)
    # The killed run is marked interrupted by the next one.
    assert run_statuses(config, "load") == ["interrupted", "succeeded"]


@posix_only
def test_ctrl_c_stops_every_download_worker_and_extract_resumes(
    boxes: list[Sandbox], tmp_path: Path
) -> None:
    slow_files = FaultConfig(slow_rate=1.0, slow_seconds=1.0, paths="binary_data")
    box = sandbox_with(field_faults=slow_files).start()
    boxes.append(box)
    field = box.field_app
    config = staged(box, tmp_path / "work", transform=False)

    extract = Child(["extract", "--quiet"], config, box)
    wait_for(lambda: answered(field, "binary_data") >= 4, "downloads")
    extract.process.send_signal(signal.SIGINT)
    wait_for(lambda: any(line.startswith("Stopping;") for line in extract.err), "the stop")
    at_stop = requests_seen(field)  # the stop event is set before "Stopping;" is written
    assert extract.wait() == 130, extract.text()
    after_exit = requests_seen(field)
    time.sleep(0.5)  # a look for stragglers; its length only bounds what it could notice
    assert after_exit - at_stop <= 5 and requests_seen(field) == after_exit
    assert extract.err[-1].endswith(f"Resume with: {extract.resume_command}"), extract.text()
    assert "Aborted!" not in extract.text() and "Traceback" not in extract.text()
    assert run_statuses(config, "extract") == ["interrupted"]
    # A stopped download is not a failed one: nothing is recorded failed.
    assert db_query(config, "SELECT COUNT(*) FROM attachments WHERE state = 'failed'") == [(0,)]

    field.faults.configure(FaultConfig())
    again = Child(["extract", "--quiet"], config, box)
    assert again.wait() == 0, again.text()
    assert run_statuses(config, "extract") == ["interrupted", "succeeded"]
    counts = field.counts()
    assert db_query(config, "SELECT COUNT(*) FROM issues WHERE deleted = 0") == [
        (counts["issues"],)
    ]
    assert db_query(config, "SELECT COUNT(DISTINCT source_id) FROM issues")[0][0] == len(
        db_query(config, "SELECT source_id FROM issues")
    )
    # Every file is stored (links, kept as 'skipped', have no bytes to fetch).
    states = dict(db_query(config, "SELECT state, COUNT(*) FROM attachments GROUP BY state"))
    assert set(states) <= {"stored", "skipped"} and states["stored"] > 40


# -- 401s and credentials --------------------------------------------------------------------


class RefusesTheRenewedToken(ProcoreApp):
    """After ``expire_after`` REST calls every token expires; the first call made with the
    token renewed after that is refused once more, as a struggling Procore may do.

    The refusal is aimed at the renewed token itself: a call still carrying the expired one
    that arrives after the renewal (a thread descheduled between reading the token and
    sending, on a busy machine) is refused as expired, and must not use up the refusal.
    """

    def __init__(self, *args: Any, expire_after: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.expire_after = expire_after
        self.rest_calls = 0
        self.state = "waiting"  # -> expired -> refuse -> done
        self.renewed: str | None = None

    def _token(self, request: Request) -> Response:
        response = super()._token(request)
        with self.lock:
            if self.state == "expired":
                self.state = "refuse"
                self.renewed = json.loads(bytes(response.body))["access_token"]  # type: ignore[arg-type]
        return response

    def before(self, request: Request, route: Route) -> Response | None:
        if request.path.startswith("/rest/"):
            bearer = (request.headers.get("Authorization") or "").removeprefix("Bearer ")
            with self.lock:
                self.rest_calls += 1
                if self.state == "waiting" and self.rest_calls > self.expire_after:
                    self._tokens.clear()
                    self.state = "expired"
                refuse = self.state == "refuse" and bearer == self.renewed
                if refuse:
                    self.state = "done"
            if refuse:
                return self._unauthorized("The access token is invalid")
        return super().before(request, route)


def test_a_401_on_the_token_just_renewed_does_not_stop_the_load(tmp_path: Path) -> None:
    app = RefusesTheRenewedToken(expire_after=12, **GENEROUS)
    server = RunningServer(app)
    try:
        settings = settings_for(tmp_path, server.url)
        source_ids = plant(settings, 30, attachments=1)
        result = load_from_settings(settings, PROCORE_ENV)
    finally:
        server.stop()
        app.close()
    assert app.state == "done"  # the token expired, and its successor was refused once
    assert result.exit_code == 0 and result.completed
    uuids = Counter(issue["uuid"] for issue in project_issues(app))
    assert [uuids[issue_uuid(PROJECT, sid)] for sid in source_ids] == [1] * 30
    assert app.call_counts()["oauth.token"] == 3


def test_a_wrong_client_secret_is_exit_2_and_one_line(tmp_path: Path) -> None:
    app = ProcoreApp(**GENEROUS)
    server = RunningServer(app)
    try:
        settings = settings_for(tmp_path, server.url)
        plant(settings, 3)
        config = tmp_path / "migration.toml"
        config.write_text(
            "[target]\n"
            f'base_url = "{server.url}"\nauth_url = "{server.url}"\n'
            f"company_id = {settings.target.company_id}\nproject_id = {PROJECT}\n"
            "[staging]\n"
            f'path = "{settings.staging.path}"\nblobs = "{settings.staging.blobs}"\n'
            f'logs = "{settings.staging.logs}"\n',
            encoding="utf-8",
        )
        result = CliRunner().invoke(
            main,
            ["load", "--quiet", "--config", str(config)],
            env={"PROCORE_CLIENT_ID": "demo-client", "PROCORE_CLIENT_SECRET": "not-the-secret"},
        )
    finally:
        server.stop()
        app.close()
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "Error: Procore refused the client credentials in PROCORE_CLIENT_ID / "
        "PROCORE_CLIENT_SECRET (invalid_client)."
    )
    assert "not-the-secret" not in result.output
    assert app.call_counts().get("oauth.token") == 1  # a refusal is not retried
