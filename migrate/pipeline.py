"""`migrate run`: extract → transform → load, stopping at the first stage that fails."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from migrate.errors import EXIT_OK, EXIT_QUARANTINED, StageFailed
from migrate.results import Progress, StageResult
from migrate.settings import Settings

if TYPE_CHECKING:
    from migrate.load.plan import Plan


@dataclass
class PipelineOutcome:
    """What each stage returned, in order; ``exit_code`` follows the README's table.

    A dry run stops after transform and holds the ``plan`` load would carry out.
    """

    results: dict[str, StageResult] = field(default_factory=dict)
    plan: Plan | None = None
    dry_run: bool = False
    quarantined: int = 0

    @property
    def exit_code(self) -> int:
        """The last stage's code (errors.EXIT_CODES): a dry run exits 3 like transform does
        while any quarantine row is open, whichever stage put it there."""
        if "load" in self.results:
            return self.results["load"].exit_code
        if "transform" in self.results:
            return self.results["transform"].exit_code
        return EXIT_QUARANTINED if self.quarantined else EXIT_OK

    def summary_lines(self) -> list[str]:
        lines: list[str] = []
        for stage, result in self.results.items():
            lines.append(f"== {stage}")
            lines.extend(result.summary_lines())
        if self.plan is not None:
            lines.append("== plan")
            lines.extend(self.plan.summary_lines())
        if self.dry_run:
            lines.append("Dry run: nothing was written to Procore. Run without --dry-run to load.")
        return lines


def run_pipeline(
    settings: Settings,
    env: Mapping[str, str] = os.environ,
    *,
    dry_run: bool = False,
    full_refresh: bool = False,
    apply_deletions: bool = False,
    retry_rejected: bool = False,
    max_deletions: int | None = None,
    on_deletions: Callable[[Sequence[Mapping[str, Any]]], None] | None = None,
    progress: Progress | None = None,
    verbose_stream: IO[str] | None = None,
) -> PipelineOutcome:
    """Run the stages in order; a failing stage raises StageFailed resumable by `migrate run`."""
    from migrate.extract import extract_from_settings
    from migrate.load import load_from_settings
    from migrate.load.plan import plan_from_settings
    from migrate.transform import transform_from_settings

    outcome = PipelineOutcome(dry_run=dry_run)
    try:
        outcome.results["extract"] = extract_from_settings(
            settings,
            env,
            full_refresh=full_refresh,
            progress=progress,
            verbose_stream=verbose_stream,
        )
        transformed = transform_from_settings(
            settings, env, progress=progress, verbose_stream=verbose_stream
        )
        outcome.results["transform"] = transformed
        if dry_run:
            outcome.plan = plan_from_settings(settings)
            outcome.quarantined = transformed.quarantined
            return outcome
        outcome.results["load"] = load_from_settings(
            settings,
            env,
            apply_deletions=apply_deletions,
            retry_rejected=retry_rejected,
            max_deletions=max_deletions,
            on_deletions=on_deletions,
            progress=progress,
            verbose_stream=verbose_stream,
        )
    except StageFailed as failure:
        # The stage named its own command; from `run`, the whole pipeline is what resumes.
        raise StageFailed(
            failure.stage, failure.reason, partial=outcome, resume_command="migrate run"
        ) from None
    return outcome
