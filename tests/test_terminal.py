"""What a migration engineer reads in the terminal (issue 17 points 2 and 3).

`migrate run` shows each stage's summary as the stage ends, so a later stage's failure or a
Ctrl-C hides nothing, and names the exact command to resume. Tables (`quarantine list`,
`plan --show`, `status`, the stage summaries) cut long cells with "…", print nothing for
nothing, align their columns and write every size in one unit system.

Every command runs for real against the sandbox on loopback: in this process through click's
CliRunner, or as a subprocess where a signal or a dead service is involved. A failure or a
Ctrl-C lands mid-load by construction: the load's uploads are held at a gate (tests/gates.py).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from migrate.cli import TqdmProgress, main
from migrate.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_QUARANTINED
from migrate.sandbox.runner import Sandbox
from migrate.termtable import Column, display_width, render, render_records, size_text
from tests.chaos.conftest import chaos_sandbox, prepare_workdir
from tests.gates import HeldCalls
from tests.test_stop import REPO, Child, migrated_once, run_statuses, wait_for

posix_only = pytest.mark.skipif(os.name == "nt", reason="sends SIGINT to a child process")
#: A size as migrate writes it, and any other unit spelling that must not appear.
SIZE = re.compile(r"\b\d+(?:\.\d+)? (B|kB|MB|GB)\b")
OTHER_UNITS = re.compile(r"\b\d+(?:\.\d+)? ?(KB|KiB|MiB|GiB|Mb|mb|kb)\b")


def cli(config: Path, box: Sandbox, *args: str) -> Any:
    result = CliRunner().invoke(main, [*args, "--config", str(config)], env=box.environment())
    assert "Traceback" not in result.output, result.output
    return result


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Sandbox, Any]]:
    """The small project, migrated by `migrate run` (CliRunner: stdout is not a terminal)."""
    box = chaos_sandbox().start()
    try:
        config = prepare_workdir(tmp_path_factory.mktemp("terminal") / "work", box)
        result = cli(config, box, "run", "--quiet")
        assert result.exit_code == EXIT_QUARANTINED, result.output
        yield config, box, result
    finally:
        box.stop()


# -- tables ----------------------------------------------------------------------------------


def column_starts(header: str, names: list[str]) -> list[int]:
    """Where each column starts, from the header line (names in order)."""
    starts, at = [], 0
    for name in names:
        at = header.index(name, at)
        starts.append(at)
        at += len(name)
    return starts


def assert_aligned(
    lines: list[str], names: list[str], *, right: frozenset[str] | set[str] = frozenset()
) -> None:
    """Every row's cells start (left columns) or end (right columns) where the header's do.

    A left cell starts on its header's first character, with a space before it; a right
    (number) cell ends on its header's last character, with a space or the line's end after.
    """
    header, *rows = lines
    starts = column_starts(header, names)
    for row in rows:
        for name, start in zip(names, starts, strict=True):
            if name in right:
                end = start + len(name)
                assert end >= len(row) or row[end] == " ", (name, row)
                assert row[end - 1] != " " or not row[start:end].strip(), (name, row)
            else:
                assert start == 0 or start >= len(row) or row[start - 1] == " ", (name, row)


def test_run_prints_sizes_in_one_unit_and_no_none(migrated: tuple[Path, Sandbox, Any]) -> None:
    config, box, run = migrated
    status = cli(config, box, "status")
    assert status.exit_code == 0, status.output
    for text in (run.output, status.output):
        assert "None" not in text
        assert SIZE.search(text), text
        assert not OTHER_UNITS.search(text), OTHER_UNITS.search(text)
    # The same bytes read the same in both: what extract downloaded is what status holds.
    downloaded = re.search(r"Attachments: \d+ downloaded \(([^)]+)\)", run.output)
    stored = re.search(r"Attachments +stored \d+ \(([^)]+)\)", status.output)
    assert downloaded and stored, (run.output, status.output)
    assert downloaded.group(1) == stored.group(1)


def test_status_tables_are_aligned(migrated: tuple[Path, Sandbox, Any]) -> None:
    config, box, _ = migrated
    lines = cli(config, box, "status").output.splitlines()
    records = lines.index(next(line for line in lines if line.startswith("Records")))
    table = lines[records : records + 4]
    names = table[0].split()
    assert_aligned(table, names, right=set(names[1:]))
    assert {row.split()[0] for row in table[1:]} == {"issue", "checklist_item", "location"}
    stages = lines.index("Stages") + 1
    stage_table = lines[stages : lines.index("", stages)]
    assert [row.split()[0] for row in stage_table] == ["stage", "extract", "transform", "load"]
    assert_aligned(stage_table, stage_table[0].split(), right={"took", "run"})


def test_quarantine_list_shows_each_hint_whole_when_not_a_terminal(
    migrated: tuple[Path, Sandbox, Any],
) -> None:
    config, box, _ = migrated
    rows = json.loads(cli(config, box, "quarantine", "list", "--json").output)
    listed = cli(config, box, "quarantine", "list")
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert len(lines) == 1 + len(rows)  # one line a record: nothing wraps off a terminal
    assert any(len(row["hint"]) > 60 for row in rows)  # the hint once cut at 40
    for row, line in zip(rows, lines[1:], strict=True):
        assert line.endswith(row["hint"]), line
    names = ["id", "entity", "source_id", "stage", "reason", "hint"]
    assert_aligned(lines, names, right={"id"})
    assert "None" not in listed.output
    shown = cli(config, box, "quarantine", "show", str(rows[0]["id"])).output.splitlines()
    assert "released_at:" in shown and "None" not in "\n".join(shown)


@posix_only
def test_quarantine_list_on_a_terminal_keeps_within_its_width(
    migrated: tuple[Path, Sandbox, Any],
) -> None:
    import pty

    config, box, _ = migrated
    hints = [
        row["hint"] for row in json.loads(cli(config, box, "quarantine", "list", "--json").output)
    ]
    for columns in (100, 200):
        master, terminal = pty.openpty()
        env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": str(columns)}
        with subprocess.Popen(
            [sys.executable, "-m", "migrate.cli", "quarantine", "list", "--config", str(config)],
            env=env,
            stdout=terminal,
            stderr=subprocess.PIPE,
        ) as child:
            os.close(terminal)
            chunks = []
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal (EIO on Linux)
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            assert child.wait(timeout=120) == 0, child.stderr.read() if child.stderr else ""
        os.close(master)
        lines = b"".join(chunks).decode().replace("\r\n", "\n").splitlines()
        assert all(display_width(line) <= columns for line in lines), lines
        words = " ".join(" ".join(line.split()) for line in lines)
        for hint in hints:
            assert " ".join(hint.split()) in words.replace("hint: ", ""), (hint, lines)


def test_plan_show_cuts_with_an_ellipsis_and_prints_nothing_for_none(
    migrated: tuple[Path, Sandbox, Any],
) -> None:
    config, box, _ = migrated
    shown = json.loads(cli(config, box, "plan", "--json", "--show", "unchanged").output)
    rows = shown["rows"]["unchanged"]
    assert any(row["detail"] is None for row in rows)
    long = [row for row in rows if len(row["source_id"]) > 40]
    assert long, "location paths make source ids longer than a cell"
    text = cli(config, box, "plan", "--show", "unchanged").output
    assert "None" not in text
    table = text.split("\nunchanged (")[1].splitlines()[1:]
    assert len(table) == 1 + len(rows)
    for row, line in zip(rows, table[1:], strict=True):
        source_id = row["source_id"]
        if len(source_id) > 40:
            assert source_id[:39] + "…  " in line, line
        else:
            assert source_id in line
    assert_aligned(table, table[0].split(), right={"target_id"})


def test_progress_is_labelled_with_its_stage(
    migrated: tuple[Path, Sandbox, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    config, box, _ = migrated
    again = cli(config, box, "run")  # not a terminal: progress as plain lines on stderr
    assert again.exit_code == EXIT_QUARANTINED, again.output
    stages = {line.split(":")[0] for line in again.stderr.splitlines()}
    assert {"extract", "transform"} <= stages <= {"extract", "transform", "load"}, again.stderr
    # On a terminal, a tqdm bar: its stage, its entity and what it counts.
    bars = TqdmProgress(enabled=True, stage="load")
    bars.start("attachments", 3)
    bars.advance("attachments", 3)
    bars.finish("attachments")
    drawn = capsys.readouterr().err
    assert "load: attachments" in drawn and "3/3" in drawn and " files" in drawn, drawn


def test_a_table_on_a_terminal_wraps_hints_within_its_width() -> None:
    hint = (
        "area 'North Building > Level 2 > Room 205' is deleted in BIM 360 Field; move the "
        "issue to a live area (or clear its area) in BIM 360 Field and run extract again."
    )
    rows = [
        {"id": 1, "source_id": "0000a4ea-0007-0000-0002-000000000013", "label": None, "hint": hint},
        {"id": 12, "source_id": "短い" * 30, "label": "x", "hint": "fix it"},
    ]
    for width in (100, 160):
        lines = render_records(rows, width=width)
        assert all(len(line) <= width for line in lines), lines
        assert " ".join(line.split("  ")[-1].strip() for line in lines[1:4]).count("Room 205")
        joined = " ".join(" ".join(line.split()) for line in lines)
        for word in hint.split():
            assert word in joined
        assert "None" not in joined
        # Wide characters cut by the cells they take: 19 of them (38 cells) and "…" in 40.
        assert "短い" * 9 + "短…" in joined
    # Too narrow for a column of its own: the hint goes under its row, still whole.
    narrow = render_records(rows, width=60)
    assert any(line.strip().startswith("hint: area 'North") for line in narrow), narrow
    assert all(display_width(line) <= 60 for line in narrow), narrow


def test_one_size_helper() -> None:
    assert [size_text(n) for n in (812, 14_100, 6_300_000, 700_000_000)] == [
        "812 B",
        "14.1 kB",
        "6.3 MB",
        "0.7 GB",
    ]
    lines = render([Column("n", right=True), Column("size")], [[5, size_text(999)], [10, None]])
    assert lines == [" n  size", " 5  999 B", "10"]


# -- migrate run: stage by stage, failure, Ctrl-C --------------------------------------------


@pytest.fixture
def box() -> Iterator[Sandbox]:
    started = chaos_sandbox().start()
    yield started
    started.stop()


def summaries_before_load(run: Child) -> None:
    """Extract's and transform's summaries are out while load is held at the gate."""
    wait_for(lambda: any(line.startswith("Transform run ") for line in run.out), "transform")
    out = list(run.out)
    assert out.index("== extract") < out.index("== transform"), run.text()
    assert any(line.startswith("Extract run 1 finished") for line in out), run.text()
    assert any(line.startswith("Plan hash: ") for line in out), run.text()


def test_a_failed_load_keeps_the_earlier_summaries_and_names_the_resume(
    box: Sandbox, tmp_path: Path
) -> None:
    config = prepare_workdir(tmp_path / "work", box)
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("[target]\n", "[target]\ngive_up_after = 1\n"), "utf-8")
    with HeldCalls(box.procore_app, "storage.upload", passes=2) as gate:
        run = Child(["run", "--quiet"], config, box)
        wait_for(lambda: gate.held >= 1, "an upload held in Procore")
        summaries_before_load(run)
        box.stop_procore()  # Procore refuses the rest of the load: connections cut
    assert run.wait() == EXIT_FAILED, run.text()
    # The load's own partial summary follows the others, then one error line with the command.
    assert run.out.index("== transform") < run.out.index("== load"), run.text()
    assert any("stopped before finishing" in line for line in run.out), run.text()
    assert (
        run.out[-1]
        == f"Run `{run.resume_command}` again to finish; it resumes where this one stopped."
    )
    errors = [line for line in run.err if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0].startswith("Error: load stopped before finishing")
    assert errors[0].endswith(f"resume with `{run.resume_command}`."), errors[0]
    assert run.args == ["run", "--quiet", "--config", str(config)]
    assert "Traceback" not in run.text() and "None" not in run.text()


@posix_only
def test_ctrl_c_in_run_prints_the_command_that_resumes_it(box: Sandbox, tmp_path: Path) -> None:
    config = prepare_workdir(tmp_path / "work", box)
    with HeldCalls(box.procore_app, "storage.upload", passes=2) as gate:
        run = Child(["run", "--quiet"], config, box)
        wait_for(lambda: gate.held >= 1, "an upload held in Procore")
        summaries_before_load(run)
        run.process.send_signal(signal.SIGINT)
        wait_for(lambda: any(line.startswith("Stopping;") for line in run.err), "the stop")
    assert run.wait() == EXIT_INTERRUPTED, run.text()
    assert "Aborted!" not in run.text() and "Traceback" not in run.text()
    printed = run.err[-1]
    assert printed.startswith("Interrupted: what was done so far is kept"), run.text()
    command = printed.split("Resume with: ", 1)[1]
    assert command == shlex.join(["migrate", "run", "--quiet", "--config", str(config)])
    assert run_statuses(config, "load") == ["interrupted"]

    # The printed command, run as printed, finishes the migration.
    program, *args = shlex.split(command)
    assert program == "migrate"
    env = {**os.environ, **box.environment(), "PYTHONPATH": str(REPO)}
    again = subprocess.run(
        [sys.executable, "-m", "migrate.cli", *args],
        cwd=config.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == EXIT_QUARANTINED, again.stdout + again.stderr
    assert "== load" in again.stdout and "Load run " in again.stdout
    assert run_statuses(config, "load") == ["interrupted", "succeeded"]
    migrated_once(box, config)
