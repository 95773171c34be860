"""One exit-code table (migrate.errors.EXIT_CODES), applied everywhere.

Every command is walked through each class of outcome against the sandbox on loopback, as an
engineer runs it (`migrate …` parsed by click, real HTTP): ok, quarantined records, failed,
usage / configuration / credential errors, settings the target refuses, and Ctrl-C. Each case
checks the code, the one line printed, and what Procore and the staging DB kept.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from migrate.cli import main
from migrate.clients.http import HttpClient, RetryPolicy
from migrate.errors import (
    EXIT_CODES,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_QUARANTINED,
    EXIT_USAGE,
    ServiceUnavailable,
    exit_codes_markdown,
)
from migrate.sandbox.faults import FaultConfig
from migrate.sandbox.httpbase import Request, Response, Route, RunningServer, json_response
from migrate.sandbox.procore_server import ProcoreApp
from migrate.sandbox.runner import Sandbox, SandboxOptions

REPO = Path(__file__).resolve().parents[1]
MAPPINGS = REPO / "mappings"
GENEROUS = {"spike_limit": 100_000, "hourly_limit": 1_000_000}
#: The generated project puts issue 17 in a deleted area: from 18 issues on, transform
#: quarantines it; 10 issues plan whole.
CLEAN_ISSUES, QUARANTINING_ISSUES = 10, 20


def _leaf_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found.extend(_leaf_commands(command, (*prefix, name)))
        else:
            found.append((*prefix, name))
    return found


COMMANDS = _leaf_commands(main)
#: Arguments a command needs before its options can be read.
REQUIRED_ARGS = {("quarantine", "show"): ["1"], ("quarantine", "release"): ["1"]}


def _takes_config(path: tuple[str, ...]) -> bool:
    command: Any = main
    for name in path:
        command = command.commands[name]
    return any(param.name == "config_path" for param in command.params)


class Migration:
    """A sandbox, a working folder and a `migrate` to run against them, as an engineer does."""

    def __init__(self, box: Sandbox, work: Path) -> None:
        self.box = box
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.config = self.write_config("migration.toml")

    def write_config(
        self, name: str, *, staging: str = "staging.db", field_url: str = "", **target: Any
    ) -> Path:
        """A config for this sandbox; ``target`` and ``field_url`` replace its settings."""
        box = self.box
        values = {
            "base_url": box.procore_url,
            "auth_url": box.procore_url,
            "company_id": box.procore_company_id,
            "project_id": box.procore_project_id,
            **target,
        }
        lines = [f"{key} = {value!r}".replace("'", '"') for key, value in values.items()]
        path = self.work / name
        path.write_text(
            f'[source]\nbase_url = "{field_url or box.field_url}"\n'
            f'project_id = "{box.field_project_id}"\n'
            "[target]\n" + "\n".join(lines) + "\n"
            f'[staging]\npath = "{staging}"\nblobs = "blobs"\nlogs = "logs"\n'
            f'[mappings]\ndir = "{MAPPINGS.as_posix()}"\n',
            encoding="utf-8",
        )
        return path

    def migrate(self, *args: str, config: Path | None = None, **env: str) -> Result:
        """`migrate ARGS --config …` in this process, with the sandbox's credentials (``env``
        overrides them); a traceback anywhere fails the test."""
        first = main.commands[args[0]]
        path = tuple(args[:2]) if isinstance(first, click.Group) else (args[0],)
        words = [*args, "--config", str(config or self.config)] if _takes_config(path) else [*args]
        result = CliRunner(env={**self.box.environment(), **env}).invoke(main, words)
        assert "Traceback" not in result.output, result.output
        return result

    def procore(self) -> dict[str, Any]:
        """What Procore holds for the project (issues, locations, uploads, inspections)."""
        state = self.box.procore_app.snapshot()
        return state["projects"][str(self.box.procore_project_id)]

    def rows(self, sql: str, staging: str = "staging.db") -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.work / staging) as conn:
            return conn.execute(sql).fetchall()


def _error_line(result: Result) -> str:
    """The one line a refused command prints: ``Error: …`` and nothing else on stderr."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def _sandbox(issues: int, **options: Any) -> Sandbox:
    return Sandbox(SandboxOptions(issues=issues, procore_options={**GENEROUS}, **options))


@pytest.fixture
def clean(tmp_path: Path) -> Iterator[Migration]:
    with _sandbox(CLEAN_ISSUES) as box:
        yield Migration(box, tmp_path / "clean")


@pytest.fixture
def quarantining(tmp_path: Path) -> Iterator[Migration]:
    with _sandbox(QUARANTINING_ISSUES) as box:
        yield Migration(box, tmp_path / "quarantining")


class Refusing:
    """The simulator answers one route with an HTTP error it does not retry (as long as the
    block lasts): the command fails there, and what it did before is kept."""

    def __init__(self, app: Any, route: str, status: int = 400) -> None:
        self.app, self.route, self.status = app, route, status

    def __enter__(self) -> Refusing:
        original = self.app.before

        def before(request: Request, route: Route) -> Response | None:
            if route.name == self.route:
                return json_response({"errors": "refused by the test"}, self.status)
            return original(request, route)

        self.app.before = before
        return self

    def __exit__(self, *exc: object) -> None:
        del self.app.before


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed): connections are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the table ------------------------------------------------------------------------------------


def test_the_table_is_the_one_the_readme_prints() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert exit_codes_markdown() in readme
    assert [row.code for row in EXIT_CODES] == [0, 1, 2, 3, 130]


# -- usage and configuration errors: every command -------------------------------------------------


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_exits_2_on_a_usage_error(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, *REQUIRED_ARGS.get(path, []), "--no-such-option"])
    assert result.exit_code == EXIT_USAGE, result.output
    assert "No such option" in result.output


@pytest.mark.parametrize("path", [p for p in COMMANDS if _takes_config(p)], ids=" ".join)
def test_every_command_exits_2_on_a_missing_config(path: tuple[str, ...], tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "migration.toml"
    result = CliRunner().invoke(
        main, [*path, *REQUIRED_ARGS.get(path, []), "--config", str(missing)]
    )
    assert result.exit_code == EXIT_USAGE, result.output
    line = _error_line(result)
    assert "migrate init" in line and str(missing) in line


# -- ok: a project that plans whole ---------------------------------------------------------------


def test_a_clean_migration_exits_0_at_every_step(clean: Migration, tmp_path: Path) -> None:
    init = CliRunner().invoke(main, ["init", "--dir", str(tmp_path / "new")])
    assert init.exit_code == EXIT_OK, init.output
    assert (
        clean.migrate(
            "preflight",
            "--contract-out",
            str(clean.work / "contract.json"),
            "--fields-out",
            str(clean.work / "fields.csv"),
        ).exit_code
        == EXIT_OK
    )
    for step in (
        ["extract", "-q"],
        ["transform", "-q"],
        ["plan"],
        ["run", "--dry-run", "-q"],
        ["load", "-q"],
        ["report", "--out", str(clean.work / "report")],
        ["status"],
        ["quarantine", "list"],
        ["run", "-q"],
    ):
        result = clean.migrate(*step)
        assert result.exit_code == EXIT_OK, (step, result.output)
    assert clean.rows("SELECT COUNT(*) FROM quarantine") == [(0,)]
    in_procore = {issue["id"] for issue in clean.procore()["issues"]}
    loaded = clean.rows(
        "SELECT target_id FROM id_map WHERE entity = 'coordination_issue' AND state = 'loaded'"
    )
    assert len(loaded) == len(clean.rows("SELECT source_id FROM planned_issues")) > 0
    assert {int(target_id) for (target_id,) in loaded} <= in_procore
    generated = CliRunner().invoke(
        main, ["sandbox", "generate", "--issues", "3", "-o", str(tmp_path / "p.json")]
    )
    assert generated.exit_code == EXIT_OK, generated.output


# -- quarantined: every command that ends a pipeline run exits 3 --------------------------------


def test_quarantined_records_make_every_pipeline_command_exit_3(quarantining: Migration) -> None:
    m = quarantining
    assert m.migrate("extract", "-q").exit_code == EXIT_OK
    assert m.migrate("transform", "-q").exit_code == EXIT_QUARANTINED
    before = m.procore()["issues"]
    assert m.migrate("run", "--dry-run", "-q").exit_code == EXIT_QUARANTINED
    assert m.procore()["issues"] == before  # a dry run sends nothing
    assert m.migrate("load", "-q").exit_code == EXIT_QUARANTINED
    assert m.migrate("report", "--out", str(m.work / "report")).exit_code == EXIT_QUARANTINED
    assert m.migrate("run", "-q").exit_code == EXIT_QUARANTINED
    # A dry run exits 3 for rows any stage left open, not only the ones its transform made.
    (open_rows,) = m.rows("SELECT COUNT(*) FROM quarantine WHERE released_at IS NULL")[0]
    assert open_rows >= 1
    assert m.migrate("run", "--dry-run", "-q").exit_code == EXIT_QUARANTINED
    # Reading commands report the quarantine; they do not end a run, so they exit 0.
    for step in (["plan"], ["status"], ["quarantine", "list"]):
        assert m.migrate(*step).exit_code == EXIT_OK, step
    # Released, the rows no longer hold load back.
    ids = [str(i) for (i,) in m.rows("SELECT id FROM quarantine WHERE released_at IS NULL")]
    assert m.migrate("quarantine", "release", *ids).exit_code == EXIT_OK
    assert m.migrate("load", "-q").exit_code == EXIT_OK


def test_the_demo_exits_3_with_records_in_quarantine(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["demo", "-q", "--issues", str(QUARANTINING_ISSUES), "--workdir", str(tmp_path / "d")]
    )
    assert result.exit_code == EXIT_QUARANTINED, result.output
    with sqlite3.connect(tmp_path / "d" / "staging.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0] >= 1


# -- failed: the command stops, keeps what it did and names the command to run again ---------------


def test_a_failing_service_makes_every_stage_exit_1_and_keeps_its_work(clean: Migration) -> None:
    m = clean
    with Refusing(m.box.field_app, "issues_retrieve"):
        extract = m.migrate("extract", "-q")
    assert extract.exit_code == EXIT_FAILED, extract.output
    assert "resume with `migrate extract " in _error_line(extract)
    assert m.rows("SELECT status FROM runs WHERE command = 'extract'") == [("failed",)]
    assert m.migrate("extract", "-q").exit_code == EXIT_OK

    with Refusing(m.box.procore_app, "coordination_issues.assignees"):
        transform = m.migrate("transform", "-q")
    assert transform.exit_code == EXIT_FAILED, transform.output
    assert "resume with `migrate transform " in _error_line(transform)
    assert m.migrate("transform", "-q").exit_code == EXIT_OK

    before = m.procore()
    with Refusing(m.box.procore_app, "coordination_issues.sync"):
        load = m.migrate("load", "-q")
        run = m.migrate("run", "-q")
    assert load.exit_code == EXIT_FAILED, load.output
    assert "resume with `migrate load " in _error_line(load)
    assert run.exit_code == EXIT_FAILED, run.output
    assert "resume with `migrate run " in _error_line(run)
    assert m.procore()["issues"] == before["issues"]  # the refused sync created nothing
    assert m.migrate("run", "-q").exit_code == EXIT_OK

    # report: Procore no longer holds a loaded issue.
    (target_id,) = m.rows(
        "SELECT target_id FROM id_map WHERE entity = 'coordination_issue' AND state = 'loaded' "
        "LIMIT 1"
    )[0]
    m.box.procore_app.delete_issue(int(target_id))
    report = m.migrate("report", "--out", str(m.work / "report"))
    assert report.exit_code == EXIT_FAILED, report.output


# -- settings the target refuses, credentials: exit 2 naming what to fix ---------------------------


def test_a_wrong_procore_secret_is_found_even_with_nothing_to_send(clean: Migration) -> None:
    m = clean
    assert m.migrate("run", "-q").exit_code == EXIT_OK
    held = m.procore()
    calls_before = m.box.procore_app.call_counts()
    for step in (["load", "-q"], ["transform", "-q"], ["report"], ["run", "-q"]):
        result = m.migrate(*step, PROCORE_CLIENT_SECRET="not-the-secret")
        assert result.exit_code == EXIT_USAGE, (step, result.output)
        line = _error_line(result)
        assert "PROCORE_CLIENT_SECRET" in line and "not-the-secret" not in result.output
    assert m.procore() == held
    calls = m.box.procore_app.call_counts()
    # Only token requests were made (each refused); no REST call went out.
    assert {
        k: v - calls_before.get(k, 0) for k, v in calls.items() if v != calls_before.get(k, 0)
    }.keys() <= {"oauth.token"}
    # With the right secret a load with nothing to send makes one call: the access check.
    m.box.procore_app.reset_counts()
    assert m.migrate("load", "-q").exit_code == EXIT_OK
    assert m.box.procore_app.call_counts() == {"oauth.token": 1, "projects.show": 1}


def test_a_wrong_field_password_exits_2(clean: Migration) -> None:
    for step in (["extract", "-q"], ["run", "-q"]):
        result = clean.migrate(*step, BIM360_FIELD_PASSWORD="not-the-password")
        assert result.exit_code == EXIT_USAGE, (step, result.output)
        assert "not-the-password" not in result.output
        _error_line(result)


@pytest.mark.parametrize(
    ("setting", "value", "expected"),
    [
        ("project_id", 123, "[target] project_id = 123 was not found (404"),
        ("company_id", 999, "[target] company_id = 999 was refused (403"),
    ],
)
def test_a_project_or_company_procore_does_not_know_exits_2_naming_it(
    clean: Migration, setting: str, value: int, expected: str
) -> None:
    m = clean
    held = m.procore()
    assert m.migrate("extract", "-q").exit_code == EXIT_OK
    for step, staging in ((["transform", "-q"], "a.db"), (["run", "-q"], "b.db")):
        shutil.copy(m.work / "staging.db", m.work / staging)
        config = m.write_config(f"{staging}.toml", staging=staging, **{setting: value})
        result = m.migrate(*step, config=config)
        assert result.exit_code == EXIT_USAGE, (step, result.output)
        assert _error_line(result).startswith(f"Error: {expected}"), result.output
        # Nothing was planned against the wrong target.
        assert m.rows("SELECT COUNT(*) FROM planned_issues", staging) == [(0,)]
    assert m.procore() == held


def test_an_unreachable_auth_url_exits_2_naming_it_at_once(clean: Migration) -> None:
    m = clean
    assert m.migrate("extract", "-q").exit_code == EXIT_OK
    assert m.migrate("transform", "-q").exit_code == EXIT_OK
    m.box.procore_app.reset_counts()
    wrong = f"http://127.0.0.1:{_closed_port()}"
    config = m.write_config("wrong-auth.toml", auth_url=wrong)
    for step in (["transform", "-q"], ["load", "-q"], ["report"], ["run", "-q"]):
        result = m.migrate(*step, config=config)
        assert result.exit_code == EXIT_USAGE, (step, result.output)
        line = _error_line(result)
        assert line.startswith(f"Error: [target] auth_url = {wrong} could not be reached"), line
        assert "refused" in line
    # preflight reports it as its no-go row, with the same exit code.
    preflight = m.migrate(
        "preflight",
        "--contract-out",
        str(m.work / "contract.json"),
        "--fields-out",
        str(m.work / "fields.csv"),
        config=config,
    )
    assert preflight.exit_code == EXIT_USAGE, preflight.output
    assert f"[target] auth_url = {wrong} could not be reached" in preflight.stdout
    # One attempt each, not a quarter of an hour of retries: nothing reached Procore either.
    assert m.box.procore_app.call_counts().get("oauth.token", 0) == 0


def test_an_unreachable_base_url_at_first_contact_exits_2_naming_it(clean: Migration) -> None:
    m = clean
    wrong = f"http://127.0.0.1:{_closed_port()}"
    field = m.write_config("wrong-field.toml", field_url=wrong)
    for step in (["extract", "-q"], ["run", "-q"]):
        result = m.migrate(*step, config=field)
        assert result.exit_code == EXIT_USAGE, (step, result.output)
        assert _error_line(result).startswith(f"Error: [source] base_url = {wrong} could not be")
    assert m.migrate("extract", "-q").exit_code == EXIT_OK
    procore = m.write_config("wrong-procore.toml", base_url=wrong)
    result = m.migrate("transform", "-q", config=procore)
    assert result.exit_code == EXIT_USAGE, result.output
    assert _error_line(result).startswith(f"Error: [target] base_url = {wrong} could not be")


def test_a_service_that_answered_once_and_then_refuses_is_an_outage_not_a_setting() -> None:
    app = ProcoreApp(**GENEROUS)
    server = RunningServer(app)
    client = HttpClient(
        server.url,
        setting="[target] base_url",
        sleep=lambda seconds: None,
        policy=RetryPolicy(connect_timeout=1, give_up_after=0, give_up_failures=3),
    )
    with client:
        assert client.request("GET", "/rest/v1.0/companies").status_code == 401  # answered
        server.stop()
        with pytest.raises(ServiceUnavailable) as caught:
            client.request("GET", "/rest/v1.0/companies")
    assert caught.value.exit_code == EXIT_FAILED  # retried, then given up: resumable
    assert client.stats.retries["connection"] >= 2
    app.close()


# -- interrupted ---------------------------------------------------------------------------------


@pytest.mark.skipif(os.name == "nt", reason="sends SIGINT to a child process")
def test_ctrl_c_exits_130_with_the_command_to_resume(tmp_path: Path) -> None:
    slow_files = FaultConfig(slow_rate=1.0, slow_seconds=1.0, paths="binary_data")
    with _sandbox(CLEAN_ISSUES, field_faults=slow_files) as box:
        m = Migration(box, tmp_path / "w")
        env = {**os.environ, **box.environment(), "PYTHONPATH": str(REPO)}
        args = ["run", "--quiet", "--config", str(m.config)]
        child = subprocess.Popen(
            [sys.executable, "-m", "migrate.cli", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        err: list[str] = []
        reader = threading.Thread(target=lambda: err.extend(child.stderr or []), daemon=True)
        reader.start()
        _wait_for(lambda: box.field_app.call_counts().get("binary_data", 0) >= 2, "downloads")
        child.send_signal(signal.SIGINT)
        code = child.wait(timeout=120)
        reader.join(timeout=10)
        assert code == EXIT_INTERRUPTED, "".join(err)
        last = err[-1].rstrip("\n")
        assert last.endswith(f"Resume with: migrate {' '.join(args)}"), err
        assert m.rows("SELECT command, status FROM runs") == [("extract", "interrupted")]
        assert m.migrate("run", "-q").exit_code == EXIT_OK


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen"
        time.sleep(0.01)


def test_every_exit_code_the_commands_name_is_in_the_table() -> None:
    known = {row.code for row in EXIT_CODES}
    for path in COMMANDS:
        command: Any = main
        for name in path:
            command = command.commands[name]
        assert set(command.exits) <= known and re.sub(r"\s", "", command.example)
