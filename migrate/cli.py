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
from typing import Any

import click

from migrate import __version__, stopping
from migrate.errors import EXIT_INTERRUPTED, MigrateError
from migrate.ids import PLAN_KINDS
from migrate.text import terminal_json, terminal_line, terminal_safe


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

        runlog.last_error_log = None  # a command's traceback goes to a log of its own run
        try:
            return func(*args, **kwargs)
        except MigrateError as exc:
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


class _Main(click.Group):
    """The ``migrate`` group; it keeps the arguments it was given, for the resume command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[_ARGV] = list(args)
        return super().parse_args(ctx, args)


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


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="migrate")
def main() -> None:
    """Move a construction project from Autodesk BIM 360 Field into Procore.

    The pipeline is extract → transform → load, over a SQLite staging database that every
    stage reads, writes and resumes from. `migrate demo` runs it against the built-in sandbox.
    """


# -- rendering helpers -------------------------------------------------------------------


class TqdmProgress:
    """The stages' progress callback, drawn as one tqdm bar per entity."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bars: dict[str, Any] = {}

    def start(self, entity: str, total: int | None) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        self.finish(entity)
        self._bars[entity] = tqdm(total=total, desc=f"{entity:<19}", unit="rec", leave=True)

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
        return TqdmProgress(enabled=not quiet)
    return LineProgress(stage)


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


@main.command()
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
    if config.exists() and not force:
        _echo(f"{config} exists; keeping it (use --force to overwrite).")
    else:
        config.write_text(default_config_text(), encoding="utf-8")
        _echo(f"Wrote {config}")
    for path in write_default_mappings(folder / "mappings", overwrite=force):
        _echo(f"Wrote {path}")
    _echo(
        "Next: fill in [source] and [target], set the credentials in the environment "
        "(see the comments in migration.toml), then run `migrate extract`."
    )


@main.command()
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
    for line in result.summary_lines():
        _echo(line)


@main.command()
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


@main.command()
@_config_option
@click.option(
    "--show",
    type=click.Choice(PLAN_KINDS),
    multiple=True,
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


@main.command()
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
    for line in result.summary_lines():
        _echo(line)
    sys.exit(result.exit_code)


@main.command()
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
        progress=_progress(quiet, "run"),
        verbose_stream=_verbose_stream(verbose),
    )
    for line in outcome.summary_lines():
        _echo(line)
    sys.exit(outcome.exit_code)


@main.command()
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


@main.command()
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


@main.command()
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


@main.group()
def quarantine() -> None:
    """Records held back by transform or load, with the reason and a hint."""


@quarantine.command("list")
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


@quarantine.command("show")
@_config_option
@click.argument("quarantine_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_fail_cleanly
def quarantine_show(config_path: str | None, quarantine_id: int, as_json: bool) -> None:
    """Everything kept about one quarantined record."""
    from migrate.quarantine import show_quarantine
    from migrate.settings import load_settings
    from migrate.store import open_store

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
            _echo(f"{key}: {terminal_line(value)}")


@quarantine.command("release")
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
    """A plain table; every cell is one line with control characters shown as escapes."""
    if not rows:
        _echo("(none)")
        return
    columns = list(rows[0])
    shown = [
        {c: terminal_line("" if row.get(c) is None else row.get(c)) for c in columns}
        for row in rows[:limit]
    ]
    widths = {c: min(40, max(len(c), *(len(r[c]) for r in shown))) for c in columns}
    _echo("  ".join(c.ljust(widths[c]) for c in columns))
    for row in shown:
        _echo("  ".join(row[c][: widths[c]].ljust(widths[c]) for c in columns))
    if len(rows) > limit:
        _echo(f"… and {len(rows) - limit} more (use --json for all)")


@main.command()
@click.option(
    "--issues",
    type=click.IntRange(1),
    default=300,
    show_default=True,
    help="How many issues the generated project has.",
)
@click.option("--seed", type=int, default=7, show_default=True)
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


# -- sandbox -------------------------------------------------------------------------------


@main.group()
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
        click.option("--slow-seconds", type=click.FloatRange(0), default=0.5, show_default=True),
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
            help="BIM 360 Field tickets expire after this many calls.",
        ),
        click.option(
            "--ticket-max-seconds",
            type=click.FloatRange(0.1),
            default=None,
            help="BIM 360 Field tickets expire after this many seconds.",
        ),
        click.option(
            "--token-ttl",
            type=click.FloatRange(1),
            default=None,
            help="Procore access tokens expire after this many seconds.",
        ),
        click.option(
            "--hourly-limit",
            type=click.IntRange(1),
            default=None,
            help="Procore requests allowed per hourly window.",
        ),
        click.option(
            "--spike-limit",
            type=click.IntRange(1),
            default=None,
            help="Procore requests allowed per spike window.",
        ),
        click.option(
            "--spike-window",
            type=click.FloatRange(0.1),
            default=None,
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


@sandbox.command("serve")
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
@click.option(
    "--seed", type=int, default=7, show_default=True, help="Seed of the generated project."
)
@click.option(
    "--issues",
    type=click.IntRange(0),
    default=300,
    show_default=True,
    help="How many issues the generated project has.",
)
@click.option(
    "--project",
    "project_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Serve a project written by `migrate sandbox generate` instead.",
)
@click.option("--field-username", default="demo@example.com", show_default=True)
@click.option("--field-password", default="demo", show_default=True)
@click.option("--procore-client-id", default="demo-client", show_default=True)
@click.option("--procore-client-secret", default="demo-secret", show_default=True)
@click.option(
    "--contract",
    "contract_path",
    type=click.Path(exists=True, dir_okay=False),
    help="Behave as this contract.json (from `migrate preflight`) saw the real services do.",
)
@_fault_options
@_fail_cleanly
def sandbox_serve(**opts: Any) -> None:
    """Serve both simulators until Ctrl-C; prints their base URLs and credentials."""
    from migrate.sandbox.generator import load_project
    from migrate.sandbox.runner import Sandbox

    options = _sandbox_options(opts)
    project = load_project(opts["project_file"]) if opts["project_file"] else None
    with Sandbox(options, project=project) as box:
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
            _echo(f"Procore behaves as {opts['contract_path']} observed (migrate preflight)")
        _echo("Serving; press Ctrl-C to stop.")
        sys.stdout.flush()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            _echo("Stopped.")


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
        from migrate.contract import read_contract, sandbox_options

        procore_options.update(sandbox_options(read_contract(opts["contract_path"])))
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


@sandbox.command("generate")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--issues", type=click.IntRange(0), default=300, show_default=True)
@click.option(
    "-o",
    "--out",
    type=click.Path(dir_okay=False, writable=True),
    default="sandbox-project.json",
    show_default=True,
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


@main.group()
def portfolio() -> None:
    """Many projects under one Procore quota, on this machine (see docs/portfolio.md)."""


@portfolio.command("run")
@_portfolio_option
@click.option("--project", "projects", multiple=True, help="Only this project (repeatable).")
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


@portfolio.command("status")
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


@portfolio.command("report")
@_portfolio_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Folder for the page.")
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


@portfolio.command("plan")
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
