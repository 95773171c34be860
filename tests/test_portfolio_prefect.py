"""A portfolio under Prefect (issue 18): Procore's quota held by Prefect's rate limits.

The Prefect tests run against Prefect's ephemeral test server (a subprocess on loopback with a
throwaway SQLite database, no network, analytics off) and skip, saying so, where the optional
extra ``migrate[portfolio]`` is not installed (CI installs it). The plan tests need no Prefect.
"""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from migrate.cli import main
from migrate.clients.companylock import COMPANY_LOCK_ENV
from migrate.clients.ratebudget import RateBudget
from migrate.clients.sharedquota import LedgerSettings, QuotaWindow, spend_store_from_env
from migrate.errors import ConfigError
from migrate.portfolio.prefect_quota import (
    SLOTS_PER_REQUEST,
    PrefectQuota,
    ensure_limits,
    plan_limits,
)
from migrate.portfolio.sandbox import FIRST_PROCORE_PROJECT, write_sandbox_portfolio
from migrate.sandbox.httpbase import RunningServer
from migrate.sandbox.procore_server import ProcoreApp
from migrate.sandbox.runner import Sandbox, SandboxOptions
from tests.test_portfolio import _account, _assert_project_in_procore, _procore_options

PROCORE = LedgerSettings((QuotaWindow(3600, 3600.0), QuotaWindow(150, 10.0)))

#: Keep Prefect off the network and out of the user's ~/.prefect.
QUIET_PREFECT = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_UI_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
}


# -- the plan: no Prefect needed ---------------------------------------------------------------
@pytest.mark.parametrize(
    "quota",
    [
        PROCORE,
        LedgerSettings((QuotaWindow(3600, 3600.0), QuotaWindow(150, 10.0)), reserve_fraction=0),
        LedgerSettings((QuotaWindow(60, 6.0), QuotaWindow(12, 1.0))),
        LedgerSettings((QuotaWindow(100, 5.0), QuotaWindow(30, 1.0))),
    ],
)
@pytest.mark.parametrize("batch", [1, 5])
def test_each_limit_keeps_its_window_within_the_allowance(
    quota: LedgerSettings, batch: int
) -> None:
    plan = plan_limits(quota, batch=batch, delay_allowance=0.5)
    for limit in plan.limits:
        # The most Procore can count in one window: a full bucket, then decay over the window
        # and the time a claimed slot may take to reach Procore.
        assert limit.most_in_window(plan.delay_allowance) <= quota.allowed(limit.window) + 1e-9
        assert limit.burst >= batch
        assert limit.slots == limit.burst * SLOTS_PER_REQUEST


def test_procore_quota_maps_to_a_small_burst_and_most_of_the_hour() -> None:
    plan = plan_limits(PROCORE)  # batch 1, 2 s allowed from claim to count
    hourly, spike = plan.limits
    assert (hourly.name, spike.name) == ("procore-3600s", "procore-10s")
    assert hourly.burst == spike.burst == 15  # a tenth of the spike window's 149 allowed
    # The hourly limit paces a long run at 98.5 % of Procore's 3 600 an hour; a limit of 3 600
    # with a decay of 1 a second would have let 7 200 through in an hour.
    assert plan.sustained_per_second == hourly.per_second
    assert 0.98 < hourly.per_second < 0.99
    assert spike.per_second > 11


def test_a_window_too_small_for_the_batch_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="smaller batch"):
        plan_limits(LedgerSettings((QuotaWindow(4, 1.0),)), batch=4)


def test_a_malformed_quota_spec_is_a_config_error() -> None:
    env = {"MIGRATE_SHARED_QUOTA": "prefect:batch=2"}
    with pytest.raises(ConfigError, match="Prefect limits"):
        spend_store_from_env(env)


def test_migrate_itself_never_imports_prefect() -> None:
    """Prefect is optional: the CLI, the local portfolio and the quota plan load without it."""
    code = (
        "import sys, migrate.cli, migrate.portfolio.local, migrate.portfolio.prefect_quota; "
        "assert not [m for m in sys.modules if m.split('.')[0] == 'prefect'], 'prefect loaded'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.skipif(importlib.util.find_spec("prefect") is None, reason="needs migrate[portfolio]")
def test_migrate_portfolio_run_on_prefect_with_a_bad_file_is_one_line_and_exit_2(
    tmp_path: Path,
) -> None:
    path = tmp_path / "portfolio.toml"
    path.write_text("[portfolio]\nparallel = 0\n", encoding="utf-8")
    args = ["portfolio", "run", "--engine", "prefect", "--portfolio", str(path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "[portfolio] parallel" in result.output
    assert len(result.output.strip().splitlines()) == 1


# -- Prefect's ephemeral server ------------------------------------------------------------------
@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Prefect's test server for this module; its API URL, also set in the environment so
    that worker processes find it."""
    if importlib.util.find_spec("prefect") is None:
        pytest.skip("Prefect is the optional extra: pip install -e '.[test,portfolio]'")
    saved = {key: os.environ.get(key) for key in [*QUIET_PREFECT, "PREFECT_HOME"]}
    os.environ.update(QUIET_PREFECT)
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    saved["PREFECT_API_URL"] = os.environ.get("PREFECT_API_URL")
    try:  # prefect reads its settings (PREFECT_HOME) when first imported: after the above
        with prefect_test_harness(server_startup_timeout=120):
            url = str(PREFECT_API_URL.value())
            os.environ["PREFECT_API_URL"] = url
            yield url
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _spend(procore_url: str, spec: str, holder: str, requests: int) -> dict[str, Any]:
    """A worker process (think: another machine): ``requests`` Procore calls, each paced only
    by Prefect's limits; what its spend store counted."""
    from migrate.clients.procore import ProcoreClient
    from migrate.settings import Secret, TargetCredentials, TargetSettings

    env = PrefectQuota(spec).environment(holder)
    store = spend_store_from_env(env)
    settings = TargetSettings(
        base_url=procore_url, auth_url=procore_url, company_id=4100, project_id=5100
    )
    credentials = TargetCredentials(
        client_id=Secret("demo-client"), client_secret=Secret("demo-secret")
    )
    budget = RateBudget(spend_store=store)
    client = ProcoreClient(settings, credentials, budget=budget)
    answered = 0
    try:
        for _ in range(requests):
            client.assignees(5100)
            answered += 1
    finally:
        client.close()
    return {
        "answered": answered,
        "held_limits": store.held_limits,  # type: ignore[union-attr]
        "holder": holder,
        "requests": budget.requests,
        "rate_limited": budget.rate_limited,
        "api_calls": store.api_calls,  # type: ignore[union-attr]
        "refusals": store.refusals,  # type: ignore[union-attr]
    }


@pytest.mark.slow
def test_worker_processes_together_stay_within_procores_windows(prefect_api: str) -> None:
    batch = 1  # the portfolio test below claims two requests' slots at a time
    # Scaled windows: 30 a second and 100 in 5 s. Three processes asking for 20 each would
    # send all 60 within a second unpaced.
    quota = LedgerSettings((QuotaWindow(100, 5.0), QuotaWindow(30, 1.0)), reserve_fraction=0)
    # A second from claim to count: room for a busy machine to pause a worker in between.
    plan = plan_limits(quota, prefix=f"test-batch{batch}", batch=batch, delay_allowance=1.0)
    ensure_limits(plan)
    app = ProcoreApp(hourly_limit=100, hourly_window=5.0, spike_limit=30, spike_window=1.0)
    server = RunningServer(app)
    try:
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=3, mp_context=spawn) as pool:
            futures = [
                pool.submit(_spend, server.url, plan.spec(), f"worker-{n}", 20) for n in range(3)
            ]
            workers = [future.result(timeout=300) for future in futures]
        stats = app.rate_stats()
    finally:
        server.stop()
        app.close()
    assert [w["requests"] for w in workers] == [20, 20, 20]
    assert stats["requests"] == 60
    # Procore (the simulator) never counted more than a window allows: no 429, no request over
    # either window, and the busiest spike window within its limit.
    assert stats["rate_limited"] == 0 and stats["quota_rejections"] == 0
    assert all(w["rate_limited"] == 0 for w in workers)
    assert stats["max_in_spike_window"] <= 30
    # What it cost in Prefect API calls: one per batch claimed, plus one per refusal.
    calls = sum(w["api_calls"] for w in workers)
    refusals = sum(w["refusals"] for w in workers)
    assert calls - refusals >= 60 // batch
    print(
        f"batch {batch}: 60 Procore requests, {calls} Prefect API calls "
        f"({refusals} refused), busiest spike window {stats['max_in_spike_window']}/30"
    )


def test_a_429_holds_every_worker_through_prefects_limits(prefect_api: str) -> None:
    # Someone outside the portfolio spent the quota: Procore answers one request with a 429.
    quota = LedgerSettings((QuotaWindow(100, 5.0), QuotaWindow(30, 1.0)), reserve_fraction=0)
    plan = plan_limits(quota, prefix="test-hold", delay_allowance=0.5)
    ensure_limits(plan)
    app = ProcoreApp(hourly_limit=100, hourly_window=5.0, spike_limit=30, spike_window=1.0)
    app.faults.inject("rate_limit", count=1, path="/assignees", retry_after=1)
    server = RunningServer(app)
    try:
        result = _spend(server.url, plan.spec(), "worker", 3)
        stats = app.rate_stats()
    finally:
        server.stop()
        app.close()
    assert result["rate_limited"] == 1 and stats["quota_rejections"] == 0
    # The refused request was sent again and answered: three answered in all.
    assert result["answered"] == 3
    # The hold took slots from both limits, so other workers wait too.
    assert result["held_limits"] == 2


def test_two_projects_on_prefects_company_lock_make_the_company_set_up_once(
    prefect_api: str, tmp_path: Path
) -> None:
    """The race of tests/test_company_lock.py with the lock a portfolio's Prefect workers
    take: the one-slot limit ``<prefix>-company-blocks``, named in each project's environment
    by the same PrefectQuota that names the quota's limits."""
    from prefect.client.orchestration import get_client

    from tests.test_company_lock import assert_made_once, race_two_projects

    plan = plan_limits(PROCORE, prefix="test-lock")
    assert plan.company_lock == "test-lock-company-blocks"
    ensure_limits(plan)
    lock = PrefectQuota(plan.spec()).environment("p")[COMPANY_LOCK_ENV]
    assert lock == "prefect:test-lock-company-blocks"
    race = race_two_projects(tmp_path, "company_templates.create", {COMPANY_LOCK_ENV: lock})
    assert_made_once(race)
    with get_client(sync_client=True) as prefect:
        limit = prefect.read_global_concurrency_limit_by_name(plan.company_lock)
    assert (limit.limit, limit.active_slots) == (1, 0)  # given back, not left to the lease


# -- a portfolio as Prefect flows ----------------------------------------------------------------
# Scaled windows that three projects loading at once would overrun unpaced (they make about
# 470 requests), wide enough that the test stays short: the worker-process test above is the
# one where the spike window is tight.
SPIKE = QuotaWindow(60, 2.0)
HOURLY = QuotaWindow(600, 20.0)


@pytest.mark.slow
def test_three_projects_as_prefect_flows_share_the_quota_and_a_failed_stage_is_retried(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        TaskRunFilter,
        TaskRunFilterName,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    from migrate.portfolio import prefect_flow

    refused_id = FIRST_PROCORE_PROJECT + 1
    options = SandboxOptions(procore_options=_procore_options(SPIKE, HOURLY))
    with Sandbox(options, project=_account()) as box:
        path = write_sandbox_portfolio(tmp_path, box, parallel=3, spike=SPIKE, hourly=HOURLY)
        for key, value in box.environment().items():  # a worker's credentials
            monkeypatch.setenv(key, value)
        # p1's target refuses its first 16 requests: a request is given up after 8 attempts,
        # so a stage of p1 fails, and fails again when Prefect retries it once.
        box.procore_app.faults.inject("error", count=16, path=rf"/projects/{refused_id}/")
        # python -m migrate.portfolio.prefect_flow run ...
        args = ["run", str(path), "--batch", "2", "--delay-allowance", "1", "--limit-prefix", "t"]
        args += ["--stage-retries", "1", "--retry-delay", "0"]
        first = CliRunner().invoke(prefect_flow.main, args)
        assert first.exit_code == 1, first.output
        assert "p0: done" in first.output and "p2: done" in first.output
        assert "p1: FAILED in " in first.output
        assert box.procore_app.faults.fired["error"] == 16
        for number in (0, 2):
            _assert_project_in_procore(box, path, number)
        # Prefect ran the failed stage twice: its first run and one retry.
        stage = first.output.split("p1: FAILED in ", 1)[1].split(":", 1)[0]
        with get_client(sync_client=True) as prefect:
            runs = prefect.read_task_runs(
                task_run_filter=TaskRunFilter(
                    name=TaskRunFilterName(any_=[f"p1: {stage}"]),
                    state=TaskRunFilterState(type=TaskRunFilterStateType(any_=[StateType.FAILED])),
                )
            )
        assert [run.run_count for run in runs] == [2]

        # The target takes requests again: running p1 again resumes it.
        second = CliRunner().invoke(prefect_flow.main, [*args, "--project", "p1"])
        assert second.exit_code in (0, 3), second.output
        assert "p1: done" in second.output and "p0" not in second.output
        for number in range(3):
            _assert_project_in_procore(box, path, number)

        # The simulator's own count: never more than a window's limit, never a 429.
        stats = box.procore_app.rate_stats()
        assert stats["rate_limited"] == 0 and stats["quota_rejections"] == 0
        assert stats["max_in_spike_window"] <= SPIKE.limit
        assert all(counted <= SPIKE.limit for _, counted, _ in box.procore_app.spike_window_tally())

        # The portfolio's own record shows the runs, as after a local run.
        status = CliRunner().invoke(
            main, ["portfolio", "status", "--portfolio", str(path), "--json"]
        )
        assert status.exit_code == 0, status.output
        rows = {row["name"]: row for row in json.loads(status.output)["projects"]}
        assert {row["state"] for row in rows.values()} == {"completed"}
        print(
            f"3 projects, {stats['requests']} Procore requests, busiest spike window "
            f"{stats['max_in_spike_window']}/{SPIKE.limit}"
        )


@pytest.mark.slow
def test_a_project_runs_on_another_process_serving_the_project_deployment(
    prefect_api: str, tmp_path: Path
) -> None:
    """The several-machines path: a separate process serves the ``migrate-project`` deployment
    (as a worker on another machine would), and the portfolio flow hands it the project."""
    from migrate.portfolio.prefect_flow import run_portfolio

    options = SandboxOptions(procore_options=_procore_options(SPIKE, HOURLY))
    with Sandbox(options, project=_account()) as box:
        path = write_sandbox_portfolio(tmp_path, box, parallel=3, spike=SPIKE, hourly=HOURLY)
        env = {**os.environ, **box.environment(), "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
        serve = "from migrate.portfolio.prefect_flow import project_flow; project_flow.serve('t')"
        worker = subprocess.Popen(
            [sys.executable, "-c", serve], env=env, cwd=Path(__file__).resolve().parents[1]
        )
        outcomes: list[Any] = []
        try:
            _wait_for_deployment("migrate-project/t", worker)
            run = threading.Thread(
                target=lambda: outcomes.extend(
                    run_portfolio(str(path), ["p0"], deployment="migrate-project/t")
                ),
                daemon=True,
            )
            run.start()
            run.join(timeout=300)  # the deployment's flow run is waited for without a limit
            assert not run.is_alive(), "the deployment's flow run did not finish"
        finally:
            worker.terminate()
            worker.wait(timeout=60)
        assert [(o.name, o.completed) for o in outcomes] == [("p0", True)]
        _assert_project_in_procore(box, path, 0)
        assert box.procore_app.rate_stats()["rate_limited"] == 0


def _wait_for_deployment(name: str, worker: subprocess.Popen[bytes]) -> None:
    """Until the serving process has registered the deployment (it may take a while to start
    on a busy machine)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as prefect:
        for _ in range(600):
            assert worker.poll() is None, "the serving process ended"
            try:
                prefect.read_deployment_by_name(name)
                return
            except ObjectNotFound:
                time.sleep(0.2)
    raise AssertionError(f"{name} was never served")
