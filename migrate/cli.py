"""The `migrate` command: parses options, calls one library function, renders its result.

No SQL, HTTP or mapping logic lives here; click and tqdm are imported here and nowhere else.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import click

from migrate import __version__, stopping
from migrate.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_QUARANTINED,
    EXIT_USAGE,
    MigrateError,
)
from migrate.ids import PLAN_KINDS
from migrate.text import terminal_json, terminal_safe


def _echo(text: object = "", *, err: bool = False) -> None:
    """Print text that may hold source data: control and bidi characters shown, never run."""
    click.echo(terminal_safe(text), err=err)


def _echo_json(value: Any) -> None:
    import json

    _echo(terminal_json(json.dumps(value, indent=2, ensure_ascii=False, default=str)))


class _TerminalSafeStream:
    """A text stream (the run log mirrored with --verbose) that prints control characters
    as escapes instead of letting the terminal run them."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return int(self._stream.write(terminal_safe(text)) or 0)

    def flush(self) -> None:
        self._stream.flush()


def _verbose_stream(verbose: bool) -> Any:
    return _TerminalSafeStream(sys.stderr) if verbose else None


def _fail_cleanly(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors and OS/SQLite faults into one readable line and the exit code.

    A fault (disk full, read-only folder, damaged DB: see migrate/faults.py) names the path,
    the fix and the command to re-run; its traceback goes to the run log or the logs folder.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from migrate import runlog
        from migrate.errors import StageFailed

        runlog.last_error_log = None  # a command's traceback goes to a log of its own run
        try:
            return func(*args, **kwargs)
        except MigrateError as exc:
            if isinstance(exc, StageFailed):  # resumed by the command exactly as typed
                exc = StageFailed(exc.stage, exc.reason, resume_command=_resume_command())
            _echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except (OSError, sqlite3.Error) as exc:
            fault = _describe_fault(exc, kwargs.get("config_path"), kwargs.get("out_dir"))
            if fault is None:
                raise
            click.echo(f"Error: {fault}", err=True)
            sys.exit(fault.exit_code)

    return wrapper


def _describe_fault(
    exc: OSError | sqlite3.Error, config_path: str | None, out_dir: str | None
) -> MigrateError | None:
    from pathlib import Path

    from migrate.faults import describe_fault, keep_traceback, staging_places

    places = staging_places(None)
    logs = None
    with contextlib.suppress(Exception):  # the config was read once already; a fault is no worse
        from migrate.settings import load_settings

        staging = load_settings(config_path).staging
        report = Path(out_dir) if out_dir else staging.path.parent / "report"
        places = staging_places(staging.path, staging.blobs, staging.logs, report)
        logs = staging.logs
    if describe_fault(exc, places=places, rerun="") is None:
        return None
    return describe_fault(
        exc, places=places, rerun=_resume_command(), details=keep_traceback(exc, logs)
    )


# -- Ctrl-C ---------------------------------------------------------------------------------

_ARGV = "migrate.argv"


# -- help that reads like the runbook ----------------------------------------------------------

#: What every command of a migration can end with (errors.EXIT_CODES holds the meanings).
_STAGE_EXITS = (EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_QUARANTINED, EXIT_INTERRUPTED)
#: What a command that only reads or sets up can end with (1: the disk or staging DB failed).
_READ_EXITS = (EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED)
#: What the environment variables of a command are, by group (settings.ENVIRONMENT).
_CONFIG, _SOURCE, _TARGET, _PORTFOLIO = "config", "source", "target", "portfolio"
#: What `migrate portfolio run` sets for a project's load (settings.ENVIRONMENT "shared").
_SHARED = "shared"
#: `migrate --help` lists the commands in the order a migration uses them.
_COMMAND_ORDER = (
    "init",
    "preflight",
    "extract",
    "transform",
    "plan",
    "load",
    "report",
    "run",
    "portfolio",
    "status",
    "quarantine",
    "demo",
    "sandbox",
)


class _Runbook:
    """Help for a command: its whole summary, then the environment variables it reads
    (settings.ENVIRONMENT), its exit codes (errors.EXIT_CODES) and an example."""

    env: tuple[str, ...] | None
    exits: tuple[int, ...]
    example: str

    def _runbook(self, env: tuple[str, ...] | None, exits: tuple[int, ...], example: str) -> None:
        self.env, self.exits, self.example = env, exits, example

    def get_short_help_str(self, limit: int = 45) -> str:
        # click cuts the summary at ~45 characters; the list wraps it instead, uncut.
        command = cast(click.Command, self)
        text = command.short_help or (command.help or "").split("\n\n")[0]
        return " ".join(text.split())

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from migrate.errors import exit_code_row
        from migrate.settings import ENVIRONMENT

        if self.env is not None:
            variables = [pair for group in self.env for pair in ENVIRONMENT[group]]
            with formatter.section("Environment"):
                formatter.write_dl(variables or [("(none)", "reads no environment variable")])
        if self.exits:
            with formatter.section("Exit codes"):
                formatter.write_dl(
                    [(str(code), exit_code_row(code).meaning) for code in self.exits]
                )
        if self.example:
            with formatter.section("Example"):
                formatter.write_text(self.example)
        super().format_epilog(ctx, formatter)  # type: ignore[misc]


class _RunbookCommand(_Runbook, click.Command):
    def __init__(
        self,
        *args: Any,
        env: tuple[str, ...] = (),
        exits: tuple[int, ...] = _READ_EXITS,
        example: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._runbook(env, exits, example)


class _RunbookGroup(_Runbook, click.Group):
    """A group whose commands get runbook help, listed in pipeline order (_COMMAND_ORDER) and
    otherwise in the order they were added."""

    command_class = _RunbookCommand

    def __init__(
        self,
        *args: Any,
        env: tuple[str, ...] | None = None,
        exits: tuple[int, ...] = (),
        example: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._runbook(env, exits, example)

    def list_commands(self, ctx: click.Context) -> list[str]:
        order = {name: i for i, name in enumerate(_COMMAND_ORDER)}
        return sorted(self.commands, key=lambda name: order.get(name, len(order)))


_RunbookGroup.group_class = _RunbookGroup


class _Main(_RunbookGroup):
    """The ``migrate`` group; it keeps the arguments it was given, for the resume command.

    Ctrl-C in a command without its own handling (plan, status, ...) exits 130 as well.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[_ARGV] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("Interrupted: nothing was left half-done.", err=True)
            sys.exit(EXIT_INTERRUPTED)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from migrate.errors import EXIT_CODES
        from migrate.settings import ENVIRONMENT

        with formatter.section("Environment"):
            formatter.write_dl([pair for group in ENVIRONMENT.values() for pair in group])
        with formatter.section("Exit codes (every command)"):
            formatter.write_dl([(str(row.code), row.meaning) for row in EXIT_CODES])
        with formatter.section("Example"):
            formatter.write_text(self.example)
        formatter.write_paragraph()
        formatter.write_text("`migrate COMMAND --help` gives each command's own.")


def _resume_command() -> str:
    """The command as it was typed (options included), to run again after an interruption."""
    ctx = click.get_current_context(silent=True)
    argv = ctx.meta.get(_ARGV) if ctx is not None else None
    words = ["migrate", *(argv if argv is not None else sys.argv[1:])]
    return subprocess.list2cmdline(words) if os.name == "nt" else shlex.join(words)


def _stop_on_ctrl_c(func: Callable[..., Any]) -> Callable[..., Any]:
    """Ctrl-C stops every worker, keeps what is recorded and prints the command to resume.

    The first Ctrl-C sets :data:`migrate.stopping.STOP`, which every worker thread and every
    wait checks, and raises KeyboardInterrupt in the main thread (the only one any OS tells),
    where the stage records its run as interrupted. Then this prints the resume command, not
    click's "Aborted!", and exits 130. A second Ctrl-C exits at once, also 130: the staging DB
    survives that as it survives ``kill -9``, and the next run marks the run interrupted.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        resume = _resume_command()
        stopping.STOP.clear()
        previous = _handle_ctrl_c(resume)
        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt:
            stopping.STOP.set()
            click.echo(
                "Interrupted: what was done so far is kept (this run is recorded as "
                f"interrupted). Resume with: {resume}",
                err=True,
            )
            sys.stdout.flush()
            sys.stderr.flush()
            if stopping.workers_left_running():
                os._exit(EXIT_INTERRUPTED)  # do not wait for requests still on the wire
            sys.exit(EXIT_INTERRUPTED)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    return wrapper


def _handle_ctrl_c(resume: str) -> Any:
    """Install the Ctrl-C handler (main thread only); return the one it replaced, or None."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def on_ctrl_c(signum: int, frame: Any) -> None:
        # os.write: the main thread may be inside a write to stderr right now.
        if stopping.STOP.is_set():
            os.write(2, f"\nSecond Ctrl-C: stopped at once. Resume with: {resume}\n".encode())
            os._exit(EXIT_INTERRUPTED)
        stopping.STOP.set()
        os.write(2, b"\nStopping; what is done is kept (Ctrl-C again to quit at once)...\n")
        raise KeyboardInterrupt

    return signal.signal(signal.SIGINT, on_ctrl_c)


@click.group(
    cls=_Main,
    context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
    example="migrate demo   (then: migrate init, migrate preflight, migrate run)",
)
@click.version_option(__version__, prog_name="migrate")
def main() -> None:
    """Move a construction project from Autodesk BIM 360 Field into Procore.

    The pipeline is extract → transform → load, over a SQLite staging database that every
    stage reads, writes and resumes from. `migrate demo` runs it against the built-in sandbox.
    """


# -- rendering helpers -------------------------------------------------------------------


class TqdmProgress:
    """The stages' progress callback, drawn as one tqdm bar per entity.

    Each bar is labelled with its stage and entity ("load: attachments") and counts in its
    own unit (files, records ...: ``migrate.results.bar_unit``).
    """

    def __init__(self, enabled: bool, stage: str = "") -> None:
        self.enabled = enabled
        self.stage = stage
        self._bars: dict[str, Any] = {}

    def start(self, entity: str, total: int | None) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        from migrate.results import bar_unit

        self.finish(entity)
        label = f"{self.stage}: {entity}" if self.stage else entity
        self._bars[entity] = tqdm(
            total=total, desc=f"{label:<32}", unit=f" {bar_unit(entity)}", leave=True
        )

    def advance(self, entity: str, n: int = 1) -> None:
        bar = self._bars.get(entity)
        if bar is not None:
            bar.update(n)

    def finish(self, entity: str) -> None:
        bar = self._bars.pop(entity, None)
        if bar is not None:
            bar.close()


class LineProgress:
    """Progress as plain lines on stderr, for logs and pipes where no bar can be drawn.

    One line per entity each time it passes another ``every_percent`` of its total (or, when
    the total is unknown, another ``every_records`` records), and at least every
    ``every_seconds`` while it moves; then one when it finishes:
    ``load: coordination_issues 500/2000 (25%)``.
    """

    def __init__(
        self,
        stage: str,
        *,
        every_percent: int = 10,
        every_records: int = 1000,
        every_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stage = stage
        self.every_percent = every_percent
        self.every_records = every_records
        self.every_seconds = every_seconds
        self._clock = clock
        self._lock = threading.Lock()
        # entity -> [total, done, done when last shown, step last shown, time last shown]
        self._state: dict[str, list[Any]] = {}

    def start(self, entity: str, total: int | None) -> None:
        with self._lock:
            self._state[entity] = [total, 0, 0, 0, self._clock()]

    def advance(self, entity: str, n: int = 1) -> None:
        with self._lock:
            state = self._state.get(entity)
            if state is None:
                return
            total, done, shown, step, when = state
            done += n
            state[1] = done
            now = self._clock()
            if total:
                new_step = done * 100 // (total * self.every_percent)
                due = new_step > step
            else:
                new_step, due = step, done - shown >= self.every_records
            if due or now - when >= self.every_seconds:
                state[2:] = [done, new_step, now]
                self._line(entity, total, done)

    def finish(self, entity: str) -> None:
        with self._lock:
            state = self._state.pop(entity, None)
            if state is not None and (state[1] != state[2] or not state[1]):
                self._line(entity, state[0], state[1])

    def _line(self, entity: str, total: int | None, done: int) -> None:
        if total:
            text = f"{self.stage}: {entity} {done}/{total} ({done * 100 // total}%)"
        else:
            text = f"{self.stage}: {entity} {done}"
        click.echo(text, err=True)


def _progress(quiet: bool, stage: str) -> TqdmProgress | LineProgress:
    """Bars on a terminal, plain lines otherwise, nothing with --quiet."""
    if quiet or sys.stderr.isatty():
        return TqdmProgress(enabled=not quiet, stage=stage)
    return LineProgress(stage)


class _StageEcho:
    """`migrate run` as it goes: each stage's bars under its name, its summary once it ends."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def started(self, stage: str) -> TqdmProgress | LineProgress:
        return _progress(self.quiet, stage)

    def finished(self, stage: str, lines: list[str]) -> None:
        _echo_summary(lines, stage)
        sys.stdout.flush()


def _echo_summary(lines: list[str], stage: str) -> None:
    """A stage's summary; a stopped stage's "run again" line names the command as typed."""
    from migrate.results import resume_line

    generic = resume_line(f"migrate {stage}")
    for line in lines:
        _echo(resume_line(_resume_command()) if line == generic else line)


def _config_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        envvar="MIGRATE_CONFIG",
        help="Config file (default: ./migration.toml, or $MIGRATE_CONFIG).",
    )(func)


def _output_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--quiet", "-q", is_flag=True, help="No progress bars.")(func)
    return click.option("--verbose", "-v", is_flag=True, help="Mirror the run log to stderr.")(func)


def _load_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--retry-rejected",
        is_flag=True,
        help="Send again records Procore refused before, though their payload has not changed.",
    )(func)
    func = click.option(
        "--max-deletions",
        type=click.IntRange(0),
        default=None,
        metavar="N",
        show_default="10 % of the loaded issues, at least 25",
        help="With --apply-deletions: close up to N issues. Without it, load refuses to close "
        "more than 10 % of the loaded issues (at least 25).",
    )(func)
    return click.option(
        "--apply-deletions",
        is_flag=True,
        help="Close in Procore the issues deleted or voided at the source (listed first).",
    )(func)


def _deletion_options(apply_deletions: bool, max_deletions: int | None) -> dict[str, Any]:
    """The deletion keywords of load_from_settings / run_pipeline, checked."""
    if max_deletions is not None and not apply_deletions:
        from migrate.errors import ConfigError

        raise ConfigError("--max-deletions only applies with --apply-deletions.")
    return {
        "apply_deletions": apply_deletions,
        "max_deletions": max_deletions,
        "on_deletions": _show_deletions,
    }


def _show_deletions(closing: Any) -> None:
    """Before load closes anything: which issues, in Procore and at the source."""
    _echo(f"Closing {len(closing)} issues in Procore (deleted or voided at the source):")
    _render_rows(
        [
            {"source_id": d["source_id"], "procore_id": d["target_id"], "title": d["title"]}
            for d in closing
        ]
    )


# -- setup and stages ----------------------------------------------------------------------


@main.command(
    exits=(EXIT_OK, EXIT_FAILED, EXIT_USAGE), env=(), example="migrate init --dir my-migration"
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    default=".",
    show_default=True,
    help="Folder to write migration.toml and mappings/ into.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing migration.toml and mappings.")
@_fail_cleanly
def init(directory: str, force: bool) -> None:
    """Write a commented migration.toml and the default mappings/ to start from."""
    from pathlib import Path

    from migrate.mappings import write_default_mappings
    from migrate.settings import default_config_text

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "migration.toml"
    kept = config.exists() and not force
    if kept:
        _echo(f"{config} exists; keeping it (use --force to overwrite).")
    else:
        config.write_text(default_config_text(), encoding="utf-8")
        _echo(f"Wrote {config}")
    for path in write_default_mappings(folder / "mappings", overwrite=force):
        _echo(f"Wrote {path}")
    # A kept migration.toml (e.g. one `sandbox serve --write-config` wrote) is filled in.
    if kept:
        _echo("Next: set the credentials in the environment, then run `migrate preflight`.")
    else:
        _echo(
            "Next: fill in [source] and [target], set the credentials in the environment "
            "(see the comments in migration.toml), then run `migrate preflight`."
        )


@main.command(
    env=(_CONFIG, _SOURCE),
    exits=(EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED),
    example="migrate extract --config migration.toml   (again later: only what changed)",
)
@_config_option
@click.option(
    "--full-refresh",
    is_flag=True,
    help="Re-retrieve every record instead of only new and changed ones.",
)
@click.option(
    "--no-export",
    "no_export",
    is_flag=True,
    help="Do not fetch BIM 360 Field's own project export this time "
    "([source] project_export = false skips it for good).",
)
@_output_options
@_stop_on_ctrl_c
@_fail_cleanly
def extract(
    config_path: str | None, full_refresh: bool, no_export: bool, quiet: bool, verbose: bool
) -> None:
    """Pull the BIM 360 Field project into the staging database (resumable, incremental).

    Also counts what is not migrated (photos, library, equipment, tasks, daily updates) and
    keeps BIM 360 Field's own project export in the blob store, unless --no-export.
    """
    from migrate.extract import extract_from_settings
    from migrate.settings import load_settings

    settings = load_settings(config_path)
    result = extract_from_settings(
        settings,
        full_refresh=full_refresh,
        project_export=False if no_export else None,
        progress=_progress(quiet, "extract"),
        verbose_stream=_verbose_stream(verbose),
    )
    _echo_summary(result.summary_lines(), "extract")


@main.command(
    env=(_CONFIG, _TARGET), exits=_STAGE_EXITS, example="migrate transform --config migration.toml"
)
@_config_option
@click.option(
    "--offline", is_flag=True, help="Reuse the last snapshot of Procore assignees and locations."
)
@_output_options
@_stop_on_ctrl_c
@_fail_cleanly
def transform(config_path: str | None, offline: bool, quiet: bool, verbose: bool) -> None:
    """Apply mappings/ to the staging data: planned Procore rows, or quarantine with a reason."""
    from migrate.settings import load_settings
    from migrate.transform import transform_from_settings

    settings = load_settings(config_path)
    result = transform_from_settings(
        settings,
        offline=offline,
        progress=_progress(quiet, "transform"),
        verbose_stream=_verbose_stream(verbose),
    )
    for line in result.summary_lines():
        _echo(line)
    sys.exit(result.exit_code)


@main.command(env=(_CONFIG,), example="migrate plan --show create --show update")
@_config_option
@click.option(
    "--show",
    type=click.Choice(PLAN_KINDS),
    multiple=True,
    show_default="counts only",
    help="List the records of this kind (repeatable).",
)
@click.option(
    "--retry-rejected",
    is_flag=True,
    help="Plan as `migrate load --retry-rejected` would load.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_fail_cleanly
def plan(
    config_path: str | None, show: tuple[str, ...], retry_rejected: bool, as_json: bool
) -> None:
    """Dry run: what load will create, update, close or leave, per entity. Writes nothing."""
    from migrate.load.plan import plan_from_settings
    from migrate.settings import load_settings

    settings = load_settings(config_path)
    the_plan = plan_from_settings(settings, retry_rejected=retry_rejected)
    if as_json:
        payload = the_plan.to_json()
        if show:
            payload = {**payload, "rows": {kind: the_plan.rows(kind) for kind in show}}
        _echo_json(payload)
        return
    for line in the_plan.summary_lines():
        _echo(line)
    for kind in show:
        rows = the_plan.rows(kind)
        _echo(f"\n{kind} ({len(rows)})")
        _render_rows(rows)


@main.command(
    env=(_CONFIG, _TARGET, _SHARED),
    exits=_STAGE_EXITS,
    example="migrate load --config migration.toml",
)
@_config_option
@_load_options
@_output_options
@_stop_on_ctrl_c
@_fail_cleanly
def load(
    config_path: str | None,
    apply_deletions: bool,
    max_deletions: int | None,
    retry_rejected: bool,
    quiet: bool,
    verbose: bool,
) -> None:
    """Create and update the planned records in Procore (resumable, idempotent)."""
    from migrate.load import load_from_settings
    from migrate.settings import load_settings

    deletions = _deletion_options(apply_deletions, max_deletions)
    settings = load_settings(config_path)
    result = load_from_settings(
        settings,
        **deletions,
        retry_rejected=retry_rejected,
        progress=_progress(quiet, "load"),
        verbose_stream=_verbose_stream(verbose),
    )
    _echo_summary(result.summary_lines(), "load")
    sys.exit(result.exit_code)


@main.command(
    env=(_CONFIG, _SOURCE, _TARGET, _SHARED),
    exits=_STAGE_EXITS,
    example="migrate run --dry-run   (then, the plan read: migrate run)",
)
@_config_option
@click.option("--dry-run", is_flag=True, help="Stop after the plan; write nothing to Procore.")
@click.option("--full-refresh", is_flag=True, help="Extract every record again.")
@_load_options
@_output_options
@_stop_on_ctrl_c
@_fail_cleanly
def run(
    config_path: str | None,
    dry_run: bool,
    full_refresh: bool,
    apply_deletions: bool,
    max_deletions: int | None,
    retry_rejected: bool,
    quiet: bool,
    verbose: bool,
) -> None:
    """extract → transform → load, stopping at the first stage that fails (resumable)."""
    from migrate.pipeline import run_pipeline
    from migrate.settings import load_settings

    deletions = _deletion_options(apply_deletions, max_deletions)
    settings = load_settings(config_path)
    outcome = run_pipeline(
        settings,
        dry_run=dry_run,
        full_refresh=full_refresh,
        **deletions,
        retry_rejected=retry_rejected,
        verbose_stream=_verbose_stream(verbose),
        watcher=_StageEcho(quiet),
    )
    for line in outcome.closing_lines():
        _echo(line)
    sys.exit(outcome.exit_code)


@main.command(
    env=(_CONFIG, _SOURCE, _TARGET),
    exits=(EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED),
    example="migrate preflight --config migration.toml --contract-out contract.json",
)
@_config_option
@click.option(
    "--probe-writes",
    is_flag=True,
    help="Also write to Procore (a TEST project only): uuid reuse, statuses, uploads; the "
    "probe issues are deleted afterwards.",
)
@click.option(
    "--contract-out",
    type=click.Path(dir_okay=False, writable=True),
    default="contract.json",
    show_default=True,
    help="Where to write what was observed (behaviour only: no secrets, no project data).",
)
@click.option(
    "--fields-out",
    type=click.Path(dir_okay=False, writable=True),
    default="fields.suggested.csv",
    show_default=True,
    help="Where to write the suggested mappings/fields.csv.",
)
@click.option(
    "--expect",
    "expect_path",
    type=click.Path(exists=True, dir_okay=False),
    help="A contract.json seen before: report each difference from it (default: the docs).",
)
@_stop_on_ctrl_c
@_fail_cleanly
def preflight(
    config_path: str | None,
    probe_writes: bool,
    contract_out: str,
    fields_out: str,
    expect_path: str | None,
) -> None:
    """Check both services before a migration: access, counts, limits; go / no-go."""
    from migrate.contract import read_contract
    from migrate.preflight import preflight_from_settings
    from migrate.settings import load_settings

    expected = read_contract(expect_path) if expect_path else None
    result = preflight_from_settings(
        load_settings(config_path),
        probe_writes=probe_writes,
        contract_path=contract_out,
        fields_path=fields_out,
        expected=expected,
        expected_from=expect_path or "the documents",
    )
    for line in result.lines():
        _echo(line)
    sys.exit(result.exit_code)


@main.command(env=(_CONFIG,), example="migrate status --json")
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_fail_cleanly
def status(config_path: str | None, as_json: bool) -> None:
    """One screen: stages run, counts per state, quota used, and the next command."""
    from migrate.report.status import status_from_settings
    from migrate.settings import load_settings

    report = status_from_settings(load_settings(config_path))
    if as_json:
        _echo_json(report.to_json())
        return
    for line in report.lines():
        _echo(line)


@main.command(
    env=(_CONFIG, _TARGET),
    exits=_STAGE_EXITS,
    example="migrate report --out report/   (then open report/report.html)",
)
@_config_option
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Folder for report.html and the CSV files (default: report/ beside staging).",
)
@click.option("--offline", is_flag=True, help="Do not read Procore back; staging only.")
@_stop_on_ctrl_c
@_fail_cleanly
def report(config_path: str | None, out_dir: str | None, offline: bool) -> None:
    """Reconcile Procore with the staging DB; write a self-contained HTML report and CSVs."""
    from migrate.report import report_from_settings
    from migrate.settings import load_settings

    result = report_from_settings(load_settings(config_path), out_dir=out_dir, offline=offline)
    for line in result.summary_lines():
        _echo(line)
    sys.exit(result.exit_code)


@main.group(example="migrate quarantine list")
def quarantine() -> None:
    """Records held back by transform or load, with the reason and a hint."""


@quarantine.command("list", env=(_CONFIG,), example="migrate quarantine list --json")
@_config_option
@click.option("--all", "include_released", is_flag=True, help="Include released rows.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_fail_cleanly
def quarantine_list(config_path: str | None, include_released: bool, as_json: bool) -> None:
    """One line per quarantined record."""
    from migrate.quarantine import list_quarantine
    from migrate.settings import load_settings
    from migrate.store import open_store

    settings = load_settings(config_path)
    with open_store(settings.staging.path, read_only=True) as store:
        rows = list_quarantine(store, include_released=include_released)
    if as_json:
        _echo_json(rows)
        return
    _render_rows(
        [
            {k: row.get(k) for k in ("id", "entity", "source_id", "stage", "reason", "hint")}
            for row in rows
        ]
    )


@quarantine.command("show", env=(_CONFIG,), example="migrate quarantine show 12")
@_config_option
@click.argument("quarantine_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_fail_cleanly
def quarantine_show(config_path: str | None, quarantine_id: int, as_json: bool) -> None:
    """Everything kept about one quarantined record."""
    from migrate.quarantine import show_quarantine
    from migrate.settings import load_settings
    from migrate.store import open_store
    from migrate.termtable import cell_text

    settings = load_settings(config_path)
    with open_store(settings.staging.path, read_only=True) as store:
        row = show_quarantine(store, quarantine_id)
    if as_json:
        _echo_json(row)
        return
    for key, value in row.items():
        if key == "record":
            _echo("record:")
            _echo_json(value)
        else:
            _echo(f"{key}: {cell_text(value)}".rstrip())  # nothing prints as nothing


@quarantine.command("release", env=(_CONFIG,), example="migrate quarantine release 12 13")
@_config_option
@click.argument("quarantine_ids", type=int, nargs=-1, required=True)
@_fail_cleanly
def quarantine_release(config_path: str | None, quarantine_ids: tuple[int, ...]) -> None:
    """Mark rows as dealt with (fixed outside migrate, or accepted as left out)."""
    from migrate.quarantine import release_quarantine
    from migrate.settings import load_settings
    from migrate.store import open_store
    from migrate.store.writer import acquire_writer

    settings = load_settings(config_path)
    with open_store(settings.staging.path, create=False) as store:
        acquire_writer(store, "quarantine release")
        released = release_quarantine(store, quarantine_ids)
    _echo(f"Released {len(released)} row(s): {', '.join(map(str, released)) or 'none'}.")
    _echo("A record that still fails is quarantined again by the next run.")


def _render_rows(rows: list[dict[str, Any]], limit: int = 200) -> None:
    """A table (migrate/termtable.py): cut cells end in "…", hints wrap, None prints empty."""
    from migrate.termtable import render_records, terminal_width

    if not rows:
        _echo("(none)")
        return
    for line in render_records(rows[:limit], width=terminal_width()):
        _echo(line)
    if len(rows) > limit:
        _echo(f"… and {len(rows) - limit} more (use --json for all)")


@main.command(env=(), exits=_STAGE_EXITS, example="migrate demo --issues 300 --workdir demo-work")
@click.option(
    "--issues",
    type=click.IntRange(1),
    default=300,
    show_default=True,
    help="How many issues the generated project has.",
)
@click.option(
    "--seed", type=int, default=7, show_default=True, help="Seed of the generated project."
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    default="demo-work",
    show_default=True,
    help="Folder for the config, staging DB, blobs and report.",
)
@_output_options
@_stop_on_ctrl_c
@_fail_cleanly
def demo(issues: int, seed: int, workdir: str, quiet: bool, verbose: bool) -> None:
    """Run the whole migration against the built-in sandbox: no network, no credentials."""
    from pathlib import Path

    from migrate.demo import run_demo

    _echo(f"Starting the sandbox with a generated project of {issues} issues (seed {seed})…")
    result = run_demo(
        Path(workdir),
        issues=issues,
        seed=seed,
        progress=_progress(quiet, "demo"),
        verbose_stream=_verbose_stream(verbose),
    )
    for line in result.summary_lines():
        _echo(line)
    sys.exit(result.exit_code)


# -- sandbox -------------------------------------------------------------------------------


@main.group(example="migrate sandbox serve")
def sandbox() -> None:
    """Simulators of BIM 360 Field and Procore on loopback, for rehearsals and tests."""


def _fault_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--error-rate",
            type=click.FloatRange(0, 1),
            default=0.0,
            help="Fraction of requests answered 500/502/503.",
        ),
        click.option(
            "--rate-limit-rate",
            type=click.FloatRange(0, 1),
            default=0.0,
            help="Fraction of requests answered 429 with Retry-After 0-3 s.",
        ),
        click.option(
            "--drop-rate",
            type=click.FloatRange(0, 1),
            default=0.0,
            help="Fraction of connections dropped mid-body (nothing applied).",
        ),
        click.option(
            "--lost-response-rate",
            type=click.FloatRange(0, 1),
            default=0.0,
            help="Fraction of requests applied, then the answer is lost.",
        ),
        click.option(
            "--slow-rate",
            type=click.FloatRange(0, 1),
            default=0.0,
            help="Fraction of requests delayed by --slow-seconds.",
        ),
        click.option(
            "--slow-seconds",
            type=click.FloatRange(0),
            default=0.5,
            show_default=True,
            help="How long a request picked by --slow-rate is delayed.",
        ),
        click.option(
            "--faults-on",
            type=click.Choice(["both", "field", "procore"]),
            default="both",
            show_default=True,
            help="Which simulator the faults hit.",
        ),
        click.option(
            "--fault-seed",
            type=int,
            default=0,
            show_default=True,
            help="Seed of the fault dice, so a failing run can be replayed.",
        ),
        click.option(
            "--ticket-max-calls",
            type=click.IntRange(1),
            default=None,
            show_default="never",
            help="BIM 360 Field tickets expire after this many calls.",
        ),
        click.option(
            "--ticket-max-seconds",
            type=click.FloatRange(0.1),
            default=None,
            show_default="never",
            help="BIM 360 Field tickets expire after this many seconds.",
        ),
        click.option(
            "--token-ttl",
            type=click.FloatRange(1),
            default=None,
            show_default="Procore's 5400",
            help="Procore access tokens expire after this many seconds.",
        ),
        click.option(
            "--hourly-limit",
            type=click.IntRange(1),
            default=None,
            show_default="Procore's 3600",
            help="Procore requests allowed per hourly window.",
        ),
        click.option(
            "--spike-limit",
            type=click.IntRange(1),
            default=None,
            show_default="Procore's 150",
            help="Procore requests allowed per spike window.",
        ),
        click.option(
            "--spike-window",
            type=click.FloatRange(0.1),
            default=None,
            show_default="Procore's 10",
            help="Length of the Procore spike window in seconds.",
        ),
        click.option(
            "--rate-windows",
            type=click.Choice(["sliding", "fixed"]),
            default="sliding",
            show_default=True,
            help="How Procore's rate windows count: sliding log, or reset at fixed times.",
        ),
        click.option(
            "--retry-after/--no-retry-after",
            default=True,
            show_default=True,
            help="Whether Procore's 429 carries Retry-After.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _generated_project_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--seed and --issues: the project `sandbox serve` and `sandbox generate` make."""
    func = click.option(
        "--issues",
        type=click.IntRange(0),
        default=300,
        show_default=True,
        help="How many issues the generated project has.",
    )(func)
    return click.option(
        "--seed", type=int, default=7, show_default=True, help="Seed of the generated project."
    )(func)


#: The credentials `migrate sandbox serve` accepts: option, default, what it stands for.
_SANDBOX_CREDENTIALS = (
    ("--field-username", "demo@example.com", "BIM 360 Field login (BIM360_FIELD_USERNAME)"),
    ("--field-password", "demo", "BIM 360 Field password (BIM360_FIELD_PASSWORD)"),
    ("--procore-client-id", "demo-client", "Procore client id (PROCORE_CLIENT_ID)"),
    ("--procore-client-secret", "demo-secret", "Procore client secret (PROCORE_CLIENT_SECRET)"),
)


def _sandbox_credential_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for option, default, meaning in reversed(_SANDBOX_CREDENTIALS):
        func = click.option(
            option, default=default, show_default=True, help=f"The {meaning} it accepts."
        )(func)
    return func


@sandbox.command(
    "serve",
    env=(),
    exits=(EXIT_OK, EXIT_FAILED, EXIT_USAGE),
    example="migrate sandbox serve --issues 3000 --rate-limit-rate 0.05",
)
@click.option(
    "--port-field",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port for the BIM 360 Field simulator (0 = any free port).",
)
@click.option(
    "--port-procore",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port for the Procore simulator (0 = any free port).",
)
@_generated_project_options
@click.option(
    "--project",
    "project_file",
    type=click.Path(exists=True, dir_okay=False),
    show_default="one generated from --seed and --issues",
    help="Serve a project written by `migrate sandbox generate` instead.",
)
@_sandbox_credential_options
@click.option(
    "--contract",
    "contract_path",
    type=click.Path(exists=True, dir_okay=False),
    show_default="the documents' reading",
    help="Behave as this contract.json (from `migrate preflight`) saw the real services do.",
)
@click.option(
    "--write-config",
    "config_out",
    type=click.Path(dir_okay=False),
    help="Write a migration.toml pointing at this sandbox here (its ports change each time; "
    "default: none written).",
)
@click.option(
    "--detach",
    is_flag=True,
    help="Serve in the background (output in sandbox.log beside --write-config) and return "
    "once serving; `migrate sandbox stop` ends it.",
)
@click.option("--state-file", hidden=True, type=click.Path(dir_okay=False))
@_fault_options
@_fail_cleanly
def sandbox_serve(**opts: Any) -> None:
    """Serve both simulators until Ctrl-C; prints their base URLs and credentials."""
    from pathlib import Path

    from migrate.sandbox import background
    from migrate.sandbox.generator import load_project
    from migrate.sandbox.runner import Sandbox

    folder = Path(opts["config_out"]).parent if opts["config_out"] else Path(".")
    if opts["detach"]:
        pid, printed = background.start(_serve_args_without_detach(), folder)
        _echo(printed.replace("Serving; press Ctrl-C to stop.", "").rstrip())
        _echo(f"Serving in the background (pid {pid}); `migrate sandbox stop` stops it.")
        return
    options = _sandbox_options(opts)
    project = load_project(opts["project_file"]) if opts["project_file"] else None
    with Sandbox(options, project=project) as box:
        if opts["config_out"]:
            background.write_config(Path(opts["config_out"]), box.config_text())
            _echo(f"Wrote {opts['config_out']} for this sandbox.")
        _echo(f"BIM 360 Field  {box.field_url}")
        _echo(f"Procore        {box.procore_url}")
        _echo(
            f"Field project  {box.field_project_id}   "
            f"user {options.field_username} / password {options.field_password}"
        )
        _echo(
            f"Procore        company {box.procore_company_id}, project {box.procore_project_id}"
            f"   client id {options.procore_client_id} / secret {options.procore_client_secret}"
        )
        if opts["contract_path"]:
            _echo(f"Both services behave as {opts['contract_path']} observed (migrate preflight)")
        _echo("Serving; press Ctrl-C to stop.")
        sys.stdout.flush()
        if opts["state_file"]:  # the detached parent waits for this file
            background.write_state(
                Path(opts["state_file"]),
                pid=os.getpid(),
                field_url=box.field_url,
                procore_url=box.procore_url,
            )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            _echo("Stopped.")


def _sandbox_folder_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--dir",
        "directory",
        type=click.Path(file_okay=False),
        default=".",
        show_default=True,
        help="The folder the sandbox was started for (where --write-config wrote).",
    )(func)


def _serve_args_without_detach() -> list[str]:
    """This `sandbox serve` command's options, as arguments, less --detach."""
    context = click.get_current_context()
    args: list[str] = []
    for param in context.command.params:
        value = context.params.get(param.name or "")
        if param.name in ("detach", "state_file") or value == param.default or value is None:
            continue
        assert isinstance(param, click.Option)
        if param.is_flag and param.secondary_opts:
            args.append(param.opts[-1] if value else param.secondary_opts[-1])
        elif param.is_flag:
            args.append(param.opts[-1])
        else:
            args += [param.opts[-1], str(value)]
    return args


@sandbox.command("stop", example="migrate sandbox stop --dir my-rehearsal")
@_sandbox_folder_option
@_fail_cleanly
def sandbox_stop(directory: str) -> None:
    """Stop a sandbox started with `migrate sandbox serve --detach`."""
    from pathlib import Path

    from migrate.sandbox import background

    _echo(background.stop(Path(directory)))


@sandbox.command(
    "change", example="migrate sandbox change --dir my-rehearsal   (then: migrate run)"
)
@_sandbox_folder_option
@_fail_cleanly
def sandbox_change(directory: str) -> None:
    """Change the detached sandbox's project as a day on site would (to rehearse a catch-up)."""
    from pathlib import Path

    from migrate.sandbox import background

    for line in background.work_a_day(Path(directory)):
        _echo(f"BIM 360 Field: {line}")


def _sandbox_options(opts: dict[str, Any]) -> Any:
    from migrate.sandbox.faults import FaultConfig
    from migrate.sandbox.runner import SandboxOptions

    faults = FaultConfig(
        error_rate=opts["error_rate"],
        rate_limit_rate=opts["rate_limit_rate"],
        drop_rate=opts["drop_rate"],
        lost_response_rate=opts["lost_response_rate"],
        slow_rate=opts["slow_rate"],
        slow_seconds=opts["slow_seconds"],
        seed=opts["fault_seed"],
    )
    field_options = {
        key: opts[key] for key in ("ticket_max_calls", "ticket_max_seconds") if opts[key]
    }
    procore_options = {
        key: opts[key]
        for key in ("token_ttl", "hourly_limit", "spike_limit", "spike_window")
        if opts[key]
    }
    procore_options.update(rate_windows=opts["rate_windows"], retry_after=opts["retry_after"])
    if opts.get("contract_path"):
        from migrate.contract import field_sandbox_options, read_contract, sandbox_options

        contract = read_contract(opts["contract_path"])
        procore_options.update(sandbox_options(contract))
        field_options.update(field_sandbox_options(contract))
    return SandboxOptions(
        seed=opts["seed"],
        issues=opts["issues"],
        field_port=opts["port_field"],
        procore_port=opts["port_procore"],
        field_username=opts["field_username"],
        field_password=opts["field_password"],
        procore_client_id=opts["procore_client_id"],
        procore_client_secret=opts["procore_client_secret"],
        field_faults=faults if opts["faults_on"] in ("both", "field") else FaultConfig(),
        procore_faults=faults if opts["faults_on"] in ("both", "procore") else FaultConfig(),
        field_options=field_options,
        procore_options=procore_options,
    )


@sandbox.command(
    "generate",
    env=(),
    exits=(EXIT_OK, EXIT_FAILED, EXIT_USAGE),
    example="migrate sandbox generate --issues 3000 -o project.json",
)
@_generated_project_options
@click.option(
    "-o",
    "--out",
    type=click.Path(dir_okay=False, writable=True),
    default="sandbox-project.json",
    show_default=True,
    help="The JSON file to write (`migrate sandbox serve --project` reads it).",
)
@_fail_cleanly
def sandbox_generate(seed: int, issues: int, out: str) -> None:
    """Write a generated project to a JSON file, so a rehearsal can be replayed exactly."""
    from migrate.sandbox.generator import GeneratedProject

    project = GeneratedProject(seed=seed, issues=issues)
    project.dump(out)
    _echo(f"Wrote {issues} issues (seed {seed}) to {out}")


# -- portfolio (issue 18) -------------------------------------------------------------------


def _portfolio_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--portfolio",
        "portfolio_path",
        type=click.Path(dir_okay=False),
        envvar="MIGRATE_PORTFOLIO",
        help="Portfolio file (default: ./portfolio.toml, or $MIGRATE_PORTFOLIO).",
    )(func)


@main.group(example="migrate portfolio run --parallel 4   (then: migrate portfolio status)")
def portfolio() -> None:
    """Many projects under one Procore quota, on this machine (see docs/portfolio.md)."""


@portfolio.command(
    "run",
    env=(_PORTFOLIO, _SOURCE, _TARGET),
    exits=_STAGE_EXITS,
    example="migrate portfolio run --parallel 4 --project tower-a --project tower-b",
)
@_portfolio_option
@click.option(
    "--project",
    "projects",
    multiple=True,
    help="Only this project (repeatable; default: every project).",
)
@click.option(
    "--stages",
    default="extract,transform,load,report",
    show_default=True,
    help="Comma-separated stages to run for each project.",
)
@click.option("--all", "rerun_completed", is_flag=True, help="Run completed projects again too.")
@click.option("--parallel", type=click.IntRange(1), help="Projects at once (default: the file's).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option(
    "--engine",
    type=click.Choice(["local", "prefect"]),
    default="local",
    show_default=True,
    help="prefect: run the projects as Prefect flows, the quota held by Prefect's rate limits "
    "(pip install 'migrate[portfolio]'; see docs/portfolio.md).",
)
@_stop_on_ctrl_c
@_fail_cleanly
def portfolio_run(
    portfolio_path: str | None,
    projects: tuple[str, ...],
    stages: str,
    rerun_completed: bool,
    parallel: int | None,
    quiet: bool,
    engine: str,
) -> None:
    """Run every project not yet completed, one process each, sharing one Procore quota."""
    from migrate.portfolio.config import load_portfolio
    from migrate.portfolio.local import run_portfolio
    from migrate.portfolio.project import STAGES

    chosen = tuple(s.strip() for s in stages.split(",") if s.strip())
    unknown = [s for s in chosen if s not in STAGES]
    if unknown or not chosen:
        raise click.BadParameter(f"choose from {', '.join(STAGES)}", param_hint="--stages")
    if engine == "prefect":  # every chosen project runs; each stage resumes (--all is moot)
        from migrate.portfolio.prefect_quota import require_prefect

        require_prefect()
        from migrate.portfolio.prefect_flow import run_from_cli

        sys.exit(run_from_cli(portfolio_path, projects, chosen, _echo, parallel=parallel))
    result = run_portfolio(
        load_portfolio(portfolio_path),
        projects=projects or None,
        stages=chosen,
        rerun_completed=rerun_completed,
        parallel=parallel,
        progress=_progress(quiet, "portfolio"),
    )
    for line in result.summary_lines():
        _echo(line)
    sys.exit(result.exit_code)


@portfolio.command("status", env=(_PORTFOLIO,), example="migrate portfolio status --json")
@_portfolio_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_fail_cleanly
def portfolio_status(portfolio_path: str | None, as_json: bool) -> None:
    """Per project: state, stage, records, quarantined, errors, requests spent, last run."""
    from migrate.portfolio.config import load_portfolio
    from migrate.portfolio.views import portfolio_status as build

    report = build(load_portfolio(portfolio_path))
    if as_json:
        _echo_json(report.to_json())
        return
    for line in report.lines():
        _echo(line)


@portfolio.command(
    "report", env=(_PORTFOLIO,), example="migrate portfolio report --out portfolio-report/"
)
@_portfolio_option
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Folder for the page (default: <work_dir>/report).",
)
@_fail_cleanly
def portfolio_report(portfolio_path: str | None, out_dir: str | None) -> None:
    """One HTML page: every project's state, linking its own report."""
    from pathlib import Path

    from migrate.portfolio.config import load_portfolio
    from migrate.portfolio.views import write_portfolio_report

    path = write_portfolio_report(
        load_portfolio(portfolio_path), Path(out_dir) if out_dir else None
    )
    _echo(f"Portfolio report: {path}")


@portfolio.command("plan", env=(_PORTFOLIO,), example="migrate portfolio plan --json")
@_portfolio_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_fail_cleanly
def portfolio_plan(portfolio_path: str | None, as_json: bool) -> None:
    """Requests still to make per project, and the hours the quota needs for them."""
    from migrate.portfolio.config import load_portfolio
    from migrate.portfolio.views import plan_portfolio

    plan = plan_portfolio(load_portfolio(portfolio_path))
    if as_json:
        _echo_json(plan.to_json())
        return
    for line in plan.lines():
        _echo(line)


if __name__ == "__main__":  # pragma: no cover
    main()
