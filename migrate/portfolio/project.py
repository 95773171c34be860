"""One project of a portfolio: run its stages on a shared quota, and say how it ended.

:func:`run_project` is the unit every way of running a portfolio shares: ``migrate portfolio
run`` calls it in one process per project (:mod:`migrate.portfolio.local`), an orchestrator
(Prefect) calls it as a task. It runs the same library stages as ``migrate run`` and ``migrate
report`` (each resumable: a rerun picks up where a failed one stopped), with every Procore call
drawing on the ``quota`` shared by the whole portfolio, and never raises for a failed stage: a
failure is this project's outcome, not the portfolio's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from migrate.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, MigrateError, exit_code_for
from migrate.portfolio.config import ProjectEntry
from migrate.redaction import is_credential_key
from migrate.results import StageResult
from migrate.stopping import Stopped

#: The stages a portfolio runs per project, in order.
STAGES = ("extract", "transform", "load", "report")


class SharedQuota(Protocol):
    """A Procore quota shared by every project of a portfolio.

    ``environment(holder)`` returns the environment entries that make every Procore client
    built in a process (``migrate.clients.factory.procore_client``) spend this quota, as
    ``holder`` (the project's name). The local portfolio's is :class:`LedgerQuota`.
    """

    def environment(self, holder: str) -> dict[str, str]: ...


@dataclass(frozen=True)
class LedgerQuota:
    """The local portfolio's quota: the SQLite ledger at ``path`` (created beforehand with
    :func:`migrate.clients.sharedquota.create_ledger`)."""

    path: Path

    def environment(self, holder: str) -> dict[str, str]:
        from migrate.clients.sharedquota import quota_environment

        return quota_environment(self.path, holder)


@dataclass(frozen=True)
class ProjectOutcome:
    """How one project's run ended. ``exit_code`` follows the README's table (0 done, 3 done
    with quarantined records, 1 a stage failed, 2 a config or credential problem, 130
    stopped); ``failed_stage``/``error`` (one line, secrets redacted) say what stopped it."""

    name: str
    exit_code: int
    #: Stage -> its exit code, for every stage that finished.
    stages: dict[str, int] = field(default_factory=dict)
    failed_stage: str | None = None
    error: str | None = None
    #: The project's HTML report, once its report stage ran.
    report_path: str | None = None

    @property
    def completed(self) -> bool:
        """Every stage asked for finished (records may wait in quarantine)."""
        return self.failed_stage is None and self.exit_code in (0, 3)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "exit_code": self.exit_code,
            "stages": dict(self.stages),
            "failed_stage": self.failed_stage,
            "error": self.error,
            "report_path": self.report_path,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProjectOutcome:
        return cls(
            name=str(data["name"]),
            exit_code=int(data["exit_code"]),
            stages={str(k): int(v) for k, v in dict(data.get("stages") or {}).items()},
            failed_stage=data.get("failed_stage"),
            error=data.get("error"),
            report_path=data.get("report_path"),
        )


def run_project(
    entry: ProjectEntry,
    stages: Sequence[str] = STAGES,
    quota: SharedQuota | None = None,
    env: Mapping[str, str] = os.environ,
    *,
    on_stage: Callable[[str, str], None] | None = None,
) -> ProjectOutcome:
    """Run ``stages`` (in :data:`STAGES` order) for one project, every Procore call spending
    ``quota`` (None: a quota of its own). ``on_stage(stage, "started"|"done"|"failed")`` is
    told as each stage goes. Never raises for a failed stage; Ctrl-C ends it as exit 130."""
    unknown = [stage for stage in stages if stage not in STAGES]
    if unknown:
        raise ValueError(f"unknown stages {unknown}; known: {STAGES}")
    run_env = dict(env)
    if quota is not None:
        run_env.update(quota.environment(entry.name))
    secrets = [value for key, value in run_env.items() if is_credential_key(key) and value]
    finished: dict[str, int] = {}
    report_path: str | None = None
    worst = EXIT_OK
    for stage in (s for s in STAGES if s in stages):
        if on_stage is not None:
            on_stage(stage, "started")
        try:
            result = _run_stage(stage, entry, run_env)
        except (Exception, Stopped) as error:  # a project's failure stays its own
            if on_stage is not None:
                on_stage(stage, "failed")
            code = EXIT_INTERRUPTED if isinstance(error, Stopped) else exit_code_for(error)
            return ProjectOutcome(
                entry.name,
                code if code != EXIT_OK else EXIT_FAILED,
                finished,
                failed_stage=stage,
                error=_one_line_error(error, secrets),
                report_path=report_path,
            )
        finished[stage] = result.exit_code
        worst = max(worst, result.exit_code)
        if stage == "report":
            report_path = str(getattr(result, "path_html", "")) or None
        if on_stage is not None:
            on_stage(stage, "done")
        if result.exit_code not in (0, 3):
            return ProjectOutcome(
                entry.name,
                result.exit_code,
                finished,
                failed_stage=stage,
                error=f"{stage} ended with exit code {result.exit_code}",
                report_path=report_path,
            )
    return ProjectOutcome(entry.name, worst, finished, report_path=report_path)


def _run_stage(stage: str, entry: ProjectEntry, env: Mapping[str, str]) -> StageResult:
    settings = entry.settings
    if stage == "extract":
        from migrate.extract import extract_from_settings

        return extract_from_settings(settings, env)
    if stage == "transform":
        from migrate.transform import transform_from_settings

        return transform_from_settings(settings, env)
    if stage == "load":
        from migrate.load import load_from_settings

        return load_from_settings(settings, env)
    from migrate.report import report_from_settings

    return report_from_settings(settings, env, out_dir=entry.report_dir)


def _one_line_error(error: BaseException, secrets: Sequence[str]) -> str:
    if isinstance(error, Stopped):
        return "stopped (Ctrl-C); rerun resumes it"
    text = str(error) if isinstance(error, MigrateError) else f"{type(error).__name__}: {error}"
    text = " ".join(text.split())
    for secret in secrets:
        text = text.replace(secret, "***")
    return text[:500]
