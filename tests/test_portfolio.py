"""A portfolio (issue 18): several projects at once on one machine, under one Procore quota.

Real processes (one worker per project) against one sandbox: a Field simulator serving every
project and one Procore whose scaled-down quota windows count every request.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from migrate.cli import main
from migrate.clients.sharedquota import QuotaWindow, ledger_totals
from migrate.portfolio import state
from migrate.portfolio.config import load_portfolio
from migrate.portfolio.local import run_portfolio
from migrate.portfolio.sandbox import FIRST_PROCORE_PROJECT, write_sandbox_portfolio
from migrate.portfolio.views import plan_portfolio
from migrate.report.status import status_from_settings
from migrate.sandbox.faults import FaultConfig
from migrate.sandbox.generator import GeneratedProject
from migrate.sandbox.runner import Sandbox, SandboxOptions
from tests.test_load import GENEROUS

SPIKE = QuotaWindow(30, 1.0)
HOURLY = QuotaWindow(240, 10.0)  # binds after the first burst: both windows are exercised
HOURLY_REAL = QuotaWindow(3600, 3600.0)


def _account() -> GeneratedProject:
    return GeneratedProject(seed=5, issues=6, second_project_issues=6, more_projects=[6])


def _procore_options(spike: QuotaWindow, hourly: QuotaWindow) -> dict[str, Any]:
    return {
        "spike_limit": spike.limit,
        "spike_window": spike.seconds,
        "hourly_limit": hourly.limit,
        "hourly_window": hourly.seconds,
    }


def _assert_project_in_procore(box: Sandbox, portfolio_path: Path, number: int) -> None:
    """Procore's project holds what was there before plus exactly what the project loaded."""
    entry = load_portfolio(portfolio_path).project(f"p{number}")
    status = status_from_settings(entry.settings)
    issues = status.entities["issue"]
    project_id = FIRST_PROCORE_PROJECT + number
    before = len(box.project.target_state()["coordination_issues"].get(str(project_id), []))
    assert issues["loaded"] > 0 and issues["pending"] == 0
    assert len(box.procore_app.issues(project_id)) == before + issues["loaded"]
    inspections = status.inspections
    assert inspections["loaded"] == inspections["planned"] > 0
    assert len(box.procore_app.inspections_of(project_id)) == inspections["loaded"]


@pytest.mark.parametrize("rate_windows", ["sliding", "fixed"])
def test_three_projects_load_at_once_without_exceeding_the_shared_quota(
    tmp_path: Path, rate_windows: str
) -> None:
    """Under either reading of Procore's windows (sliding, or reset all at once)."""
    procore = {**_procore_options(SPIKE, HOURLY), "rate_windows": rate_windows}
    options = SandboxOptions(procore_options=procore)
    with Sandbox(options, project=_account()) as box:
        path = write_sandbox_portfolio(tmp_path, box, parallel=3, spike=SPIKE, hourly=HOURLY)
        runner = CliRunner()
        args = ["--portfolio", str(path)]
        result = runner.invoke(main, ["portfolio", "run", *args, "-q"], env=box.environment())
        assert result.exit_code in (0, 3), result.output
        assert "(0 answered 429)" in result.output
        for number in range(3):
            assert f"p{number}: done" in result.output
            _assert_project_in_procore(box, path, number)

        # The simulator's own count: never more than a window's limit, never a 429.
        stats = box.procore_app.rate_stats()
        assert stats["rate_limited"] == 0 and stats["quota_rejections"] == 0
        assert stats["max_in_spike_window"] <= SPIKE.limit
        assert all(counted <= SPIKE.limit for _, counted, _ in box.procore_app.spike_window_tally())
        # Every process spent through the one ledger: it saw each REST call the server counted.
        portfolio = load_portfolio(path)
        spent = ledger_totals(portfolio.ledger_path)
        assert set(spent) == {"p0", "p1", "p2"}
        assert sum(row["requests"] for row in spent.values()) >= stats["requests"]

        status = runner.invoke(main, ["portfolio", "status", *args, "--json"])
        assert status.exit_code == 0, status.output
        rows = {row["name"]: row for row in json.loads(status.output)["projects"]}
        assert {row["state"] for row in rows.values()} == {"completed"}
        assert all(row["loaded"] > 0 and row["requests"] > 0 for row in rows.values())

        report = runner.invoke(main, ["portfolio", "report", *args])
        assert report.exit_code == 0, report.output
        page = (portfolio.work_dir / "report" / "index.html").read_text(encoding="utf-8")
        for number in range(3):
            link = f'href="../projects/p{number}/report/'
            assert link in page
            target = page.split(link, 1)[1].split('"', 1)[0]
            assert (portfolio.work_dir / "projects" / f"p{number}" / "report" / target).exists()

        plan = runner.invoke(main, ["portfolio", "plan", *args, "--json"])
        assert plan.exit_code == 0, plan.output
        assert json.loads(plan.output)["requests"] == 0  # all loaded: nothing left to do


def test_one_project_refused_by_its_target_fails_alone_and_a_rerun_resumes_it(
    tmp_path: Path,
) -> None:
    refused = FaultConfig(error_rate=1.0, paths=rf"/projects/{FIRST_PROCORE_PROJECT + 1}/")
    # Windows far from binding: this proves a failure stays with its project, not pacing (the
    # shared-quota tests above do that); Procore's real windows made it a 37 s test.
    options = SandboxOptions(procore_faults=refused, procore_options=GENEROUS)
    with Sandbox(options, project=_account()) as box:
        path = write_sandbox_portfolio(
            tmp_path,
            box,
            parallel=3,
            spike=QuotaWindow(GENEROUS["spike_limit"], 10.0),
            hourly=QuotaWindow(GENEROUS["hourly_limit"], 3600.0),
            overrides={"p1": {"target": {"give_up_after": 2}}},
        )
        portfolio = load_portfolio(path)
        env = {**os.environ, **box.environment()}
        first = run_portfolio(portfolio, env)
        outcomes = {o.name: o for o in first.outcomes}
        assert outcomes["p0"].completed and outcomes["p2"].completed
        assert not outcomes["p1"].completed and outcomes["p1"].error
        assert first.exit_code == 1
        for number in (0, 2):
            _assert_project_in_procore(box, path, number)
        refused_id = FIRST_PROCORE_PROJECT + 1
        before = box.project.target_state()["coordination_issues"].get(str(refused_id), [])
        assert len(box.procore_app.issues(refused_id)) == len(before)
        kept = state.latest_attempts(portfolio.state_path)
        plan = {p.name: p for p in plan_portfolio(portfolio).projects}
        assert plan["p0"].requests == plan["p2"].requests == 0  # loaded: nothing left
        assert plan["p1"].basis.startswith("staged counts") and plan["p1"].requests > 0

        box.procore_app.faults.configure(FaultConfig())  # the target takes requests again
        second = run_portfolio(portfolio, env)
        assert [o.name for o in second.outcomes] == ["p1"]
        assert second.outcomes[0].completed, second.outcomes[0]
        assert set(second.already_completed) == {"p0", "p2"}
        _assert_project_in_procore(box, path, 1)
        latest = state.latest_attempts(portfolio.state_path)
        assert latest["p0"] == kept["p0"] and latest["p2"] == kept["p2"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[portfolio]\nparallel = 0\n", "[portfolio] parallel"),
        ("[quota]\nspike_limit = 1.5\n", "[quota] spike_limit"),
        ("[portfolio]\n", "names no project"),
        ('[[project]]\nname = "a b"\n', "needs a name"),
        ('[[project]]\nname = "a"\ntarget.project_id = 1\n', 'project "a"'),
        (
            '[[project]]\nname = "a"\nsource.project_id = "x"\ntarget.project_id = 1\n'
            "target.client_secret = 'hunter2'\n",
            "looks like a credential",
        ),
        (
            '[defaults.target]\ncompany_id = 1\n[[project]]\nname = "a"\nsource.project_id = "x"'
            '\ntarget.project_id = 1\n[[project]]\nname = "b"\nsource.project_id = "y"\n'
            "target.project_id = 1\n",
            "share one Procore project",
        ),
    ],
)
def test_a_bad_portfolio_file_is_one_line_and_exit_2(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "portfolio.toml"
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(main, ["portfolio", "status", "--portfolio", str(path)])
    assert result.exit_code == 2
    assert expected in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "hunter2" not in result.output


def test_a_project_another_run_still_runs_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "portfolio.toml"
    path.write_text(
        '[defaults.target]\ncompany_id = 1\n[[project]]\nname = "a"\nsource.project_id = "x"\n'
        "target.project_id = 1\n",
        encoding="utf-8",
    )
    portfolio = load_portfolio(path)
    attempt = state.start_attempt(portfolio.state_path, "a", ("extract",))
    state.set_pid(portfolio.state_path, attempt, os.getpid())  # a live process runs it

    result = run_portfolio(portfolio, {}, stages=("extract",))
    assert result.outcomes == ()
    assert result.still_running == (f"a (process {os.getpid()})",)
    assert result.exit_code == 1
    assert state.latest_attempts(portfolio.state_path)["a"].id == attempt


def test_a_killed_worker_is_recorded_failed_and_a_rerun_finishes_the_project(
    tmp_path: Path,
) -> None:
    """Wherever the kill lands in the load, the project is recorded failed (its worker said
    nothing) and the next run loads it exactly once."""
    with Sandbox(SandboxOptions(), project=_account()) as box:
        path = write_sandbox_portfolio(
            tmp_path, box, parallel=1, spike=QuotaWindow(150, 10.0), hourly=HOURLY_REAL
        )
        portfolio = load_portfolio(path)
        env = {**os.environ, **box.environment()}
        outcome: list[Any] = []
        runner = threading.Thread(
            target=lambda: outcome.append(run_portfolio(portfolio, env, projects=["p0"]))
        )
        runner.start()
        deadline = time.monotonic() + 300
        attempt = None
        while time.monotonic() < deadline:
            attempt = state.latest_attempts(portfolio.state_path).get("p0")
            if attempt is not None and attempt.pid and attempt.stage == "load":
                break
            time.sleep(0.05)
        assert attempt is not None and attempt.pid and attempt.stage == "load"
        os.kill(attempt.pid, signal.SIGTERM)  # TerminateProcess on Windows
        runner.join(300)
        (first,) = outcome[0].outcomes
        if not first.completed:  # the kill landed before the worker recorded its outcome
            assert "worker process ended" in (first.error or "")
            assert first.failed_stage in ("load", "report")
            second = run_portfolio(portfolio, env, projects=["p0"])
            assert second.outcomes[0].completed, second.outcomes[0]
        _assert_project_in_procore(box, path, 0)


def test_each_project_gets_the_defaults_its_overrides_and_a_staging_of_its_own(
    tmp_path: Path,
) -> None:
    path = tmp_path / "portfolio.toml"
    path.write_text(
        '[portfolio]\nwork_dir = "w"\nparallel = 4\n[quota]\nhourly_limit = 1000\n'
        '[defaults.target]\ncompany_id = 7\ntimeout = 30\n[defaults.transform]\ntime_zone = "UTC"\n'
        '[[project]]\nname = "north"\nsource.project_name = "North Campus"\n'
        'target.project_id = 1\ntransform.time_zone = "America/Chicago"\nmappings.dir = "m/n"\n'
        '[[project]]\nname = "south"\nsource.project_id = "s-1"\ntarget.project_id = 2\n'
        'staging.blobs = "bigdisk/south"\n',
        encoding="utf-8",
    )
    portfolio = load_portfolio(path)
    assert portfolio.parallel == 4 and portfolio.work_dir == tmp_path / "w"
    assert {(w.limit, w.seconds) for w in portfolio.quota.windows} == {(1000, 3600.0), (150, 10.0)}
    north, south = (portfolio.project(name).settings for name in ("north", "south"))
    assert north.target.company_id == south.target.company_id == 7
    assert north.target.timeout == south.target.timeout == 30
    assert north.transform.time_zone == "America/Chicago" and south.transform.time_zone == "UTC"
    assert north.mappings.dir == tmp_path / "m" / "n"
    assert north.source_project() == ("project_name", "North Campus")
    assert north.staging.path == tmp_path / "w" / "projects" / "north" / "staging.db"
    assert south.staging.blobs == tmp_path / "bigdisk" / "south"
    assert south.staging.path == tmp_path / "w" / "projects" / "south" / "staging.db"
