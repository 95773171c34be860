"""The README's walk runs as written against the sandbox and prints what the documents show.

See tests/readme_walk.py: `python -m tests.readme_walk --write` rewrites the shown outputs
from a fresh run after a change to what the commands print.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from migrate.demo import DemoResult
from tests.readme_walk import Step, _blocks, matches, problems, read_documents, run_walk

REGENERATE = "Regenerate the shown outputs with `python -m tests.readme_walk --write`."


@pytest.mark.skipif(shutil.which("bash") is None, reason="the walk is written for bash")
def test_the_readme_walk_runs_as_written_and_prints_what_it_shows(tmp_path: Path) -> None:
    steps, outputs = read_documents()
    stderr = run_walk(steps, tmp_path)
    found = problems(steps, outputs, stderr)
    assert not found, "\n\n".join(found) + "\n\n" + REGENERATE
    # The walk left nothing running, and its commands were really run.
    assert not list(tmp_path.rglob(".migrate-sandbox.json"))
    assert all(step.exit_code is not None for step in steps)


def test_volatile_parts_are_normalised_and_a_cut_output_compares_its_first_lines() -> None:
    shown = ["Load run 4 finished in 18.2 s into http://127.0.0.1:36131 (pid 6269).", "…"]
    printed = ["Load run 4 finished in 9.0 s into http://127.0.0.1:4100 (pid 1).", "more"]
    assert matches(shown, printed)
    assert not matches(shown[:1], printed)  # not cut: every line counts
    assert not matches(["Load run 5 finished in 18.2 s"], ["Load run 4 finished in 18.2 s"])
    assert matches(["a  b   2026-12-05 11:32:24"], ["a b 2027-01-01 00:00:00"])
    # A late request answered 429 and retried changes the request counts, nothing else.
    assert matches(
        ["Requests to Procore: 326 (261 against the quota), 0 answered 429."],
        ["Requests to Procore: 327 (262 against the quota), 1 answered 429."],
    )


def test_blocks_are_found_by_their_marker_with_their_indentation(tmp_path: Path) -> None:
    document = tmp_path / "doc.md"
    lines = [
        "<!-- walk -->",
        "```console",
        "$ migrate plan",
        "shown",
        "```",
        "text",
        "   <!-- walk-output: migrate plan -->",
        "   ```",
        "   shown",
        "   ```",
    ]
    walk, output = _blocks(document, lines)
    assert (walk.output_of, walk.lines) == (None, ["$ migrate plan", "shown"])
    assert (output.output_of, output.indent, output.lines) == ("migrate plan", "   ", ["shown"])
    step = Step(command="migrate plan  # dry run", shown=["shown"], printed=["shown"], exit_code=0)
    assert problems([step], [output]) == []
    step.exit_code = 1
    assert "exited 1" in problems([step], [output])[0]


def test_the_demo_names_its_config_in_the_commands_it_suggests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    workdir = tmp_path / "demo-work"
    outcome = SimpleNamespace(
        summary_lines=lambda: [
            "1 records are in quarantine: see `migrate quarantine list`.",
            "Next: `migrate plan` shows what load would do.",
        ]
    )
    report = SimpleNamespace(
        matched=1,
        mismatches=[],
        missing=[],
        orphans=[],
        path_html=workdir / "report.html",
        inspection_line=lambda: "Inspections: 0 migrated.",
    )
    result = DemoResult(workdir, workdir / "migration.toml", outcome, report)
    config = str(Path("demo-work") / "migration.toml")
    lines = result.summary_lines()
    assert f"see `migrate quarantine list --config {config}`." in lines[0]
    assert f"Next: `migrate plan --config {config}` shows" in lines[1]
