"""The command line: every command documented, errors as one line with the right exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from migrate import __version__
from migrate.cli import main
from migrate.errors import EXIT_OK, EXIT_QUARANTINED, EXIT_USAGE
from migrate.pipeline import run_pipeline
from migrate.sandbox.runner import Sandbox, SandboxOptions
from migrate.settings import load_settings


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found.extend(_commands(command, (*prefix, name)))
    return found


ALL_COMMANDS = _commands(main)


def test_the_documented_commands_exist() -> None:
    names = {" ".join(c) for c in ALL_COMMANDS}
    assert {
        "init",
        "extract",
        "transform",
        "plan",
        "load",
        "run",
        "status",
        "report",
        "demo",
        "sandbox serve",
        "sandbox generate",
        "quarantine list",
        "quarantine show",
        "quarantine release",
    } <= names


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=" ".join)
def test_every_command_has_help(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output
    summary = result.output.split("\n\n")[1].strip()
    assert len(summary) > 15, f"`migrate {' '.join(command)}` has no real help text"


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_a_config_error_is_one_line_exit_2_without_traceback(tmp_path: Path) -> None:
    config = tmp_path / "migration.toml"
    config.write_text('[source]\nbase_url = "http://example.com"\nproject_id = "x"\n')
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from migrate.cli import main; main()",
            "extract",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == EXIT_USAGE
    assert done.stderr.startswith("Error: ")
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr
    assert "loopback" in done.stderr


def test_missing_config_names_migrate_init(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["status", "--config", str(tmp_path / "nope.toml")])
    assert result.exit_code == EXIT_USAGE
    assert "migrate init" in result.output


def test_init_writes_a_config_that_loads_and_the_mappings(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["init", "--dir", str(tmp_path)])
    assert result.exit_code == 0
    assert (tmp_path / "migration.toml").exists()
    assert {p.name for p in (tmp_path / "mappings").iterdir()} >= {
        "status.csv",
        "priority.csv",
        "issue_types.csv",
        "users.csv",
        "locations.csv",
        "fields.csv",
    }
    settings = load_settings(tmp_path / "migration.toml")
    assert settings.staging.path == tmp_path / "staging.db"
    again = CliRunner().invoke(main, ["init", "--dir", str(tmp_path)])
    assert "keeping it" in again.output


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory):
    """A small project taken through the pipeline, with its config on disk."""
    tmp = tmp_path_factory.mktemp("cli")
    options = SandboxOptions(
        issues=40, procore_options={"spike_limit": 100_000, "hourly_limit": 1_000_000}
    )
    with Sandbox(options) as box:
        config = tmp / "migration.toml"
        config.write_text(
            f'[source]\nbase_url = "{box.field_url}"\nproject_id = "{box.field_project_id}"\n'
            f'[target]\nbase_url = "{box.procore_url}"\nauth_url = "{box.procore_url}"\n'
            f"company_id = {box.procore_company_id}\nproject_id = {box.procore_project_id}\n"
            f'[mappings]\ndir = "{Path(__file__).parent.parent / "mappings"}"\n'
        )
        outcome = run_pipeline(load_settings(config), box.environment())
        yield config, outcome, box


def test_plan_prints_counts_per_entity(migrated) -> None:
    config, _outcome, _box = migrated
    result = CliRunner().invoke(main, ["plan", "--config", str(config)])
    assert result.exit_code == EXIT_OK
    assert "coordination_issue" in result.output and "unchanged" in result.output


def test_quarantine_release_clears_exit_code_3(migrated) -> None:
    config, outcome, box = migrated
    runner = CliRunner()
    listed = runner.invoke(main, ["quarantine", "list", "--json", "--config", str(config)])

    rows = json.loads(listed.output)
    assert rows, "the generated project always quarantines its issue in a deleted area"
    assert outcome.exit_code == EXIT_QUARANTINED
    ids = [str(row["id"]) for row in rows]
    released = runner.invoke(main, ["quarantine", "release", *ids, "--config", str(config)])
    assert released.exit_code == 0, released.output
    assert f"Released {len(ids)} row(s)" in released.output
    after = runner.invoke(main, ["quarantine", "list", "--json", "--config", str(config)])
    assert json.loads(after.output) == []
    unknown = runner.invoke(main, ["quarantine", "release", "999999", "--config", str(config)])
    assert unknown.exit_code == EXIT_USAGE
    assert unknown.output.startswith("Error: ")
