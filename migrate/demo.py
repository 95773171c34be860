"""`migrate demo`: the whole pipeline against the built-in sandbox, in one process.

Starts both simulators on free loopback ports, writes a migration.toml and the default
mappings into a working folder, runs extract → transform → load → report and says where the
report is. Needs no network and no credentials: the sandbox's own are passed in memory.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from migrate.errors import ConfigError, worst_exit_code
from migrate.results import Progress

#: Written into a demo folder so a later demo may wipe it, and nothing else.
DEMO_MARKER = ".migrate-demo"


@dataclass(frozen=True)
class DemoResult:
    workdir: Path
    config_path: Path
    outcome: Any  # PipelineOutcome
    report: Any  # ReportResult

    @property
    def exit_code(self) -> int:
        """As `migrate run` then `migrate report` would exit (errors.EXIT_CODES): 3 while
        records are in quarantine, 1 when the report finds Procore differing from staging."""
        return worst_exit_code(self.outcome.exit_code, self.report.exit_code)

    def summary_lines(self) -> list[str]:
        # The stages name follow-up commands (`migrate quarantine list`, ...) as run in the
        # migration folder; the demo's folder is elsewhere, so each names its config.
        config = shown_path(self.config_path)
        lines = [
            _FOLLOW_UP.sub(lambda m: f"`migrate {m.group(1)} --config {config}`", line)
            for line in self.outcome.summary_lines()
        ]
        lines.append("== report")
        lines.append(
            f"reconciliation: {self.report.matched} issues match, "
            f"{len(self.report.mismatches)} mismatches, {len(self.report.missing)} missing, "
            f"{len(self.report.orphans)} orphans"
        )
        # Checklists → inspections: how many were migrated and how many match field by field.
        lines.append(self.report.inspection_line())
        lines.append(f"Report: {self.report.path_html}")
        lines.append(f"Staging DB: {self.workdir / 'staging.db'}  (config {self.config_path})")
        return lines


#: A command a summary line tells the reader to run: `migrate <command> [options]`.
_FOLLOW_UP = re.compile(r"`migrate ([a-z][a-z -]*?)`")


def shown_path(path: Path) -> str:
    """`path` relative to the current folder when it is inside it (shorter to copy)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def prepare_workdir(workdir: Path) -> None:
    """An empty demo folder: a previous demo's folder is wiped, any other is refused."""
    if workdir.exists() and any(workdir.iterdir()):
        if not (workdir / DEMO_MARKER).exists():
            raise ConfigError(
                f"{workdir} exists and was not made by `migrate demo`; choose another --workdir "
                "or empty it."
            )
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / DEMO_MARKER).write_text("made by migrate demo; wiped by the next demo\n")


def write_demo_config(workdir: Path, box: Any) -> Path:
    """A migration.toml pointing at the running sandbox."""
    config = workdir / "migration.toml"
    config.write_text(
        "# Written by `migrate demo` for its sandbox; the ports change every run.\n"
        + box.config_text(),
        encoding="utf-8",
    )
    return config


def run_demo(
    workdir: Path,
    *,
    issues: int = 300,
    seed: int = 7,
    progress: Progress | None = None,
    verbose_stream: IO[str] | None = None,
) -> DemoResult:
    """Run the pipeline end to end against a fresh sandbox; returns what each stage did."""
    from migrate.mappings import write_default_mappings
    from migrate.pipeline import run_pipeline
    from migrate.report import report_from_settings
    from migrate.sandbox.runner import Sandbox, SandboxOptions
    from migrate.settings import load_settings

    workdir = workdir.resolve()
    prepare_workdir(workdir)
    write_default_mappings(workdir / "mappings")
    with Sandbox(SandboxOptions(seed=seed, issues=issues)) as box:
        config = write_demo_config(workdir, box)
        settings = load_settings(config)
        env = box.environment()
        outcome = run_pipeline(settings, env, progress=progress, verbose_stream=verbose_stream)
        report = report_from_settings(settings, env, out_dir=workdir / "report")
    return DemoResult(workdir=workdir, config_path=config, outcome=outcome, report=report)
