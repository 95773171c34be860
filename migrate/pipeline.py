"""`migrate run`: extract → transform → load, stopping at the first stage that fails."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Protocol

from migrate.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_QUARANTINED,
    ApiError,
    StageFailed,
    TransportError,
)
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
        for stage in self.results:
            lines.extend(self.stage_lines(stage))
        if self.plan is not None:
            lines.extend(self.stage_lines("plan"))
        lines.extend(self.closing_lines())
        return lines

    def stage_lines(self, stage: str) -> list[str]:
        """One stage's summary under its heading (``plan`` for a dry run's plan)."""
        result = self.plan if stage == "plan" else self.results[stage]
        assert result is not None
        return [f"== {stage}", *result.summary_lines()]

    def closing_lines(self) -> list[str]:
        """What follows the stages' summaries."""
        if self.dry_run:
            return ["Dry run: nothing was written to Procore. Run without --dry-run to load."]
        return []


class StageWatcher(Protocol):
    """Who shows a pipeline as it goes (the CLI): each stage's progress, then its summary."""

    def started(self, stage: str) -> Progress | None:
        """The stage begins; the progress it reports through (None: none shown)."""

    def finished(self, stage: str, lines: list[str]) -> None:
        """The stage ended, ``lines`` its summary; also a stopped stage's partial summary."""


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
    watcher: StageWatcher | None = None,
) -> PipelineOutcome:
    """Run the stages in order; a failing stage raises StageFailed resumable by `migrate run`.

    With a ``watcher``, each stage reports progress through what ``watcher.started`` gives
    (else through ``progress``) and its summary goes to ``watcher.finished`` as soon as it
    ends, so that a later stage's failure or Ctrl-C cannot hide what the earlier ones did.
    """
    from migrate.extract import extract_from_settings
    from migrate.load import load_from_settings
    from migrate.load.plan import plan_from_settings
    from migrate.transform import transform_from_settings

    outcome = PipelineOutcome(dry_run=dry_run)

    def begin(stage: str) -> Progress | None:
        return watcher.started(stage) if watcher is not None else progress

    def end(stage: str) -> None:
        if watcher is not None:
            watcher.finished(stage, outcome.stage_lines(stage))

    stage = "extract"
    try:
        outcome.results[stage] = extract_from_settings(
            settings,
            env,
            full_refresh=full_refresh,
            progress=begin(stage),
            verbose_stream=verbose_stream,
        )
        end(stage)
        stage = "transform"
        transformed = transform_from_settings(
            settings, env, progress=begin(stage), verbose_stream=verbose_stream
        )
        outcome.results[stage] = transformed
        end(stage)
        if dry_run:
            stage = "plan"
            outcome.plan = plan_from_settings(settings)
            outcome.quarantined = transformed.quarantined
            end(stage)
            return outcome
        stage = "load"
        outcome.results[stage] = load_from_settings(
            settings,
            env,
            apply_deletions=apply_deletions,
            retry_rejected=retry_rejected,
            max_deletions=max_deletions,
            on_deletions=on_deletions,
            progress=begin(stage),
            verbose_stream=verbose_stream,
        )
        end(stage)
    except (TransportError, ApiError) as exc:
        if exc.exit_code != EXIT_FAILED:
            raise
        # Left unwrapped by its stage: from `run`, it still names the stage and the resume.
        raise StageFailed(stage, str(exc), partial=outcome, resume_command=RESUME_COMMAND) from exc
    except StageFailed as failure:
        partial = failure.partial
        if watcher is not None and hasattr(partial, "summary_lines"):
            watcher.finished(failure.stage, [f"== {failure.stage}", *partial.summary_lines()])
        # The stage named its own command; from `run`, the whole pipeline is what resumes.
        raise StageFailed(
            failure.stage, failure.reason, partial=outcome, resume_command=RESUME_COMMAND
        ) from None
    return outcome


#: What resumes a pipeline that stopped (the CLI prints the command exactly as it was typed).
RESUME_COMMAND = "migrate run"
