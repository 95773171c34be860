"""A portfolio as Prefect flows, for when one machine is not enough (issue 18).

Needs the optional extra: ``pip install 'migrate[portfolio]'``. Nothing else in ``migrate``
imports this module (or Prefect).

- :func:`project_flow` (flow ``migrate-project``): one project's stages, each a Prefect task
  (:func:`run_stage`) with Prefect's retries, calling the same
  :func:`~migrate.portfolio.project.run_project` as ``migrate portfolio run``. Deploy it to a
  work pool and start workers on as many machines as needed; every project is one flow run.
- :func:`portfolio_flow` (flow ``migrate-portfolio``): creates or updates the Prefect rate
  limits that stand for the Procore quota (:mod:`migrate.portfolio.prefect_quota`), then runs
  every project, ``parallel`` at a time: in its own process (threads), or, given a
  ``deployment`` of :func:`project_flow`, as flow runs picked up by that deployment's workers.

Every Procore request of every worker claims slots of the same rate limits on Prefect's
server, so together they never exceed Procore's windows; the per-process rate budget still
reads Procore's headers and honours a 429. Each project's staging DB and blob store are its
own (``portfolio.toml``); with several machines put the portfolio's ``work_dir`` on storage
every worker mounts at the same path. docs/portfolio.md has the recipe.

Command line (``python -m migrate.portfolio.prefect_flow --help``)::

    python -m migrate.portfolio.prefect_flow limits portfolio.toml   # create / show the limits
    python -m migrate.portfolio.prefect_flow run portfolio.toml      # run the portfolio flow
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click
from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner

from migrate.errors import EXIT_FAILED, EXIT_OK, ConfigError, MigrateError
from migrate.portfolio import state
from migrate.portfolio.config import load_portfolio
from migrate.portfolio.local import PortfolioRunResult
from migrate.portfolio.prefect_quota import (
    PrefectQuota,
    PrefectQuotaPlan,
    ensure_limits,
    plan_limits,
)
from migrate.portfolio.project import STAGES, ProjectOutcome, run_project

#: Prefect's retries of a failed stage (transport failures, a service down): each rerun
#: resumes where the failed attempt stopped.
STAGE_RETRIES = 2
STAGE_RETRY_DELAY_SECONDS = 60.0


class StageFailedRetryable(Exception):
    """A stage ended with exit code 1: Prefect retries the task (the stage resumes)."""

    def __init__(self, outcome: ProjectOutcome) -> None:
        self.outcome = outcome
        super().__init__(outcome.error or f"{outcome.failed_stage} failed")


@task(
    name="migrate-stage",
    task_run_name="{project}: {stage}",
    retries=STAGE_RETRIES,
    retry_delay_seconds=STAGE_RETRY_DELAY_SECONDS,
)
def run_stage(portfolio_path: str, project: str, stage: str, quota_spec: str) -> dict[str, Any]:
    """One stage of one project, spending the portfolio's quota through Prefect's limits.

    Returns the project's outcome for this stage (as JSON). A stage that failed with exit
    code 1 raises, so Prefect retries it; a config or credential problem (exit 2) or a stop
    (130) is returned as is: retrying would not help.
    """
    entry = load_portfolio(portfolio_path).project(project)
    outcome = run_project(entry, (stage,), PrefectQuota(quota_spec))
    if outcome.exit_code == EXIT_FAILED:
        raise StageFailedRetryable(outcome)
    return outcome.as_json()


@flow(name="migrate-project", flow_run_name="{project}")
def project_flow(
    portfolio_path: str,
    project: str,
    quota_spec: str,
    stages: list[str] | None = None,
    stage_retries: int | None = None,
    retry_delay_seconds: float | None = None,
) -> Any:
    """One project's stages in order, each a task; stops at the first that does not finish.

    Returns the project's :class:`ProjectOutcome` as JSON; when the project did not finish, in
    a Failed state (red in Prefect's UI) whose message is the failed stage and its error."""
    stage_task = run_stage
    if stage_retries is not None or retry_delay_seconds is not None:
        stage_task = run_stage.with_options(
            retries=STAGE_RETRIES if stage_retries is None else stage_retries,
            retry_delay_seconds=(
                STAGE_RETRY_DELAY_SECONDS if retry_delay_seconds is None else retry_delay_seconds
            ),
        )
    outcome = _run_stages(stage_task, portfolio_path, project, quota_spec, stages or STAGES)
    if outcome.completed:
        return outcome.as_json()
    from prefect.states import Failed

    return Failed(message=_state_message(outcome), data=outcome.as_json())


def _run_stages(
    stage_task: Any, portfolio_path: str, project: str, quota_spec: str, stages: Sequence[str]
) -> ProjectOutcome:
    finished: dict[str, int] = {}
    report_path: str | None = None
    worst = EXIT_OK
    for stage in (s for s in STAGES if s in stages):
        ended = stage_task(portfolio_path, project, stage, quota_spec, return_state=True)
        if ended.is_failed():
            error = _failure_text(ended)
            return ProjectOutcome(project, EXIT_FAILED, finished, stage, error, report_path)
        outcome = ProjectOutcome.from_json(ended.result())
        finished.update(outcome.stages)
        report_path = outcome.report_path or report_path
        if not outcome.completed:
            return ProjectOutcome(
                project,
                outcome.exit_code,
                finished,
                outcome.failed_stage,
                outcome.error,
                report_path,
            )
        worst = max(worst, outcome.exit_code)
    return ProjectOutcome(project, worst, finished, report_path=report_path)


def _state_message(outcome: ProjectOutcome) -> str:
    """A failed project's flow-run message; :func:`_outcome_of` reads it back."""
    return f"exit {outcome.exit_code} in {outcome.failed_stage}: {outcome.error}"


def _outcome_of(project: str, final: Any, run_name: str) -> ProjectOutcome:
    """A project flow run's outcome: its result when it can be read (same process, or results
    persisted where this process can read them), else what its state says."""
    if final is None:
        return ProjectOutcome(project, EXIT_FAILED, {}, "flow run", f"{run_name}: no state")
    try:
        data = final.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - a remote run's result may not be readable here
        data = None
    if isinstance(data, dict):
        return ProjectOutcome.from_json(data)
    if final.is_completed():
        return ProjectOutcome(project, EXIT_OK, {})
    message = str(final.message or final.name)
    parsed = re.match(r"exit (\d+) in (\S+): (.*)", message)
    if parsed:
        code, stage, error = int(parsed[1]), parsed[2], parsed[3]
        return ProjectOutcome(project, code, {}, stage, error)
    return ProjectOutcome(project, EXIT_FAILED, {}, "flow run", f"{run_name}: {message}"[:500])


@task(name="migrate-project-run", task_run_name="{project}")
def _project_here(
    portfolio_path: str,
    project: str,
    quota_spec: str,
    stages: list[str],
    stage_retries: int | None,
    retry_delay_seconds: float | None,
) -> dict[str, Any]:
    """Runs :func:`project_flow` as a subflow in one of this process's threads."""
    with _attempt(portfolio_path, project, stages) as record:
        final = project_flow(
            portfolio_path,
            project,
            quota_spec,
            stages,
            stage_retries,
            retry_delay_seconds,
            return_state=True,
        )
        result = _outcome_of(project, final, project).as_json()
        record(result)
    return result


@task(name="migrate-project-deployment", task_run_name="{project}")
def _project_on_workers(
    deployment: str,
    portfolio_path: str,
    project: str,
    quota_spec: str,
    stages: list[str],
) -> dict[str, Any]:
    """Runs ``deployment`` (of :func:`project_flow`) for one project on its work pool's
    workers and waits for it; the outcome is read from the flow run's result."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    parameters = {
        "portfolio_path": portfolio_path,
        "project": project,
        "quota_spec": quota_spec,
        "stages": list(stages),
    }
    with _attempt(portfolio_path, project, stages) as record:
        # Called from sync code, run_deployment returns the flow run, not a coroutine.
        run: FlowRun = run_deployment(deployment, parameters=parameters, timeout=None)  # type: ignore[assignment]
        result = _outcome_of(project, run.state, str(run.name)).as_json()
        record(result)
    return result


@flow(name="migrate-portfolio")
def portfolio_flow(
    portfolio_path: str,
    projects: list[str] | None = None,
    stages: list[str] | None = None,
    deployment: str | None = None,
    batch: int = 1,
    delay_allowance: float = 2.0,
    limit_prefix: str = "procore",
    stage_retries: int | None = None,
    retry_delay_seconds: float | None = None,
    parallel: int | None = None,
) -> list[dict[str, Any]]:
    """Every project of the portfolio (or those named), on one Procore quota held by
    Prefect's rate limits, ``parallel`` (default ``[portfolio] parallel``) at a time; returns
    each project's outcome as JSON, in the file's order."""
    portfolio = load_portfolio(portfolio_path)
    chosen = [portfolio.project(name) for name in projects] if projects else portfolio.projects
    plan = prepare_limits(portfolio_path, batch, delay_allowance, limit_prefix)
    spec = plan.spec()
    path = str(portfolio.path)
    stages = list(stages or STAGES)
    at_once = max(1, min(parallel or portfolio.parallel, len(chosen)))
    runner: ThreadPoolTaskRunner[Any] = ThreadPoolTaskRunner(max_workers=at_once)
    with runner:
        futures = []
        for entry in chosen:
            parameters: dict[str, Any] = {
                "portfolio_path": path,
                "project": entry.name,
                "quota_spec": spec,
                "stages": list(stages),
            }
            if deployment:
                parameters["deployment"] = deployment
                futures.append(runner.submit(_project_on_workers, parameters))
            else:
                parameters["stage_retries"] = stage_retries
                parameters["retry_delay_seconds"] = retry_delay_seconds
                futures.append(runner.submit(_project_here, parameters))
        return [dict(future.result()) for future in futures]


def prepare_limits(
    portfolio_path: str,
    batch: int = 1,
    delay_allowance: float = 2.0,
    limit_prefix: str = "procore",
) -> PrefectQuotaPlan:
    """The portfolio's quota as Prefect limits, created or updated on Prefect's server."""
    portfolio = load_portfolio(portfolio_path)
    plan = plan_limits(
        portfolio.quota, prefix=limit_prefix, batch=batch, delay_allowance=delay_allowance
    )
    ensure_limits(plan)
    return plan


def run_portfolio(
    portfolio_path: str,
    projects: Sequence[str] | None = None,
    stages: Sequence[str] = STAGES,
    **options: Any,
) -> list[ProjectOutcome]:
    """:func:`portfolio_flow`, called from Python (or ``migrate portfolio run --engine
    prefect``); each project's outcome."""
    results = portfolio_flow(portfolio_path, list(projects or []) or None, list(stages), **options)
    return [ProjectOutcome.from_json(result) for result in results]


def run_from_cli(
    portfolio_path: str | None,
    projects: Sequence[str],
    stages: Sequence[str],
    echo: Callable[[str], None],
    **options: Any,
) -> int:
    """``migrate portfolio run --engine prefect``: run (``options`` as for
    :func:`portfolio_flow`), print a line per project, and return the exit code (1 when any
    project failed, 3 when any has quarantined records)."""
    path = load_portfolio(portfolio_path).path  # a bad file fails here, before any flow run
    started = time.monotonic()
    outcomes = run_portfolio(str(path), projects, stages, **options)
    result = PortfolioRunResult(tuple(outcomes), elapsed_seconds=time.monotonic() - started)
    for line in result.summary_lines():
        echo(line)
    return result.exit_code


@contextmanager
def _attempt(
    portfolio_path: str, project: str, stages: Sequence[str]
) -> Iterator[Callable[[dict[str, Any]], None]]:
    """Record the run in the portfolio's own record (``portfolio.sqlite``), from the portfolio
    flow's process only (SQLite is not for several machines at once), so ``migrate portfolio
    status`` and ``report`` show it like a local run."""
    portfolio = load_portfolio(portfolio_path)
    stage_list = tuple(s for s in STAGES if s in stages)
    attempt_id = state.start_attempt(portfolio.state_path, project, stage_list)
    # A local `migrate portfolio run` leaves a project alone while this process lives.
    state.set_pid(portfolio.state_path, attempt_id, os.getpid())
    outcome: list[ProjectOutcome] = []
    try:
        yield lambda result: outcome.append(ProjectOutcome.from_json(result))
    finally:
        ended = outcome[0] if outcome else None
        if ended is None:
            ended = ProjectOutcome(
                project, EXIT_FAILED, error="its Prefect flow run ended without an outcome"
            )
        state.finish_attempt(portfolio.state_path, attempt_id, ended)


def _failure_text(failed: Any) -> str:
    """One line for a stage task that failed after its retries."""
    try:
        failed.result()
    except StageFailedRetryable as error:
        return error.outcome.error or str(error)
    except Exception as error:  # noqa: BLE001 - any task failure is this project's outcome
        text = str(error) if isinstance(error, MigrateError) else f"{type(error).__name__}: {error}"
        return " ".join(text.split())[:500]
    return str(failed.message or "failed")[:500]


# -- command line ----------------------------------------------------------------------------
@click.group(help=__doc__.split("\n\n")[0] if __doc__ else None)
def main() -> None:
    pass


_portfolio_argument = click.argument("portfolio", type=click.Path(dir_okay=False))
_batch_option = click.option(
    "--batch", default=1, show_default=True, help="Requests' slots claimed per Prefect call."
)
_delay_option = click.option(
    "--delay-allowance",
    default=2.0,
    show_default=True,
    help="Longest seconds from claiming slots to Procore counting the request.",
)
_prefix_option = click.option(
    "--limit-prefix",
    default="procore",
    show_default=True,
    help="Prefix of the limits' names: one per Procore app and company.",
)


@main.command(help="Create or update the Prefect rate limits for the portfolio's quota.")
@_portfolio_argument
@_batch_option
@_delay_option
@_prefix_option
def limits(portfolio: str, batch: int, delay_allowance: float, limit_prefix: str) -> None:
    try:
        plan = prepare_limits(portfolio, batch, delay_allowance, limit_prefix)
    except ConfigError as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(error.exit_code)
    click.echo(json.dumps(plan.as_json(), indent=2))


@main.command(help="Run the portfolio flow (projects in threads, or on a deployment's workers).")
@_portfolio_argument
@click.option("--project", "projects", multiple=True, help="Only this project (repeatable).")
@click.option(
    "--deployment", default=None, help="A deployment of migrate-project to run each project on."
)
@_batch_option
@_delay_option
@_prefix_option
@click.option(
    "--stage-retries",
    type=click.IntRange(0),
    default=STAGE_RETRIES,
    show_default=True,
    help="Prefect's retries of a failed stage (each resumes it).",
)
@click.option(
    "--retry-delay",
    type=click.FloatRange(0),
    default=STAGE_RETRY_DELAY_SECONDS,
    show_default=True,
    help="Seconds before a failed stage is retried.",
)
def run(
    portfolio: str,
    projects: tuple[str, ...],
    deployment: str | None,
    batch: int,
    delay_allowance: float,
    limit_prefix: str,
    stage_retries: int,
    retry_delay: float,
) -> None:
    try:
        code = run_from_cli(
            portfolio,
            projects,
            STAGES,
            click.echo,
            deployment=deployment,
            batch=batch,
            delay_allowance=delay_allowance,
            limit_prefix=limit_prefix,
            stage_retries=stage_retries,
            retry_delay_seconds=retry_delay,
        )
    except ConfigError as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(error.exit_code)
    sys.exit(code)


if __name__ == "__main__":
    main()
