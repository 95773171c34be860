"""The sandbox left running for the README's walk: its config file, its stop, its day of work.

`serve --detach` and `stop` run for real in tests/test_readme_walk.py; here the pieces that
have outcomes of their own, against an in-process sandbox over real HTTP.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from migrate.errors import EXIT_USAGE, ConfigError
from migrate.sandbox import background
from migrate.sandbox.runner import Sandbox, SandboxOptions
from migrate.settings import load_settings


def test_the_written_config_points_at_the_sandbox_and_a_foreign_file_is_kept(
    tmp_path: Path,
) -> None:
    config = tmp_path / "migration.toml"
    with Sandbox(SandboxOptions(issues=3)) as box:
        background.write_config(config, box.config_text())
        settings = load_settings(config, env={})
        assert settings.source.base_url == box.field_url
        assert settings.target.base_url == settings.target.auth_url == box.procore_url
        assert settings.target_ids() == (box.procore_company_id, box.procore_project_id)
        background.write_config(config, box.config_text())  # its own file: rewritten
    foreign = tmp_path / "mine.toml"
    foreign.write_text("[source]\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        background.write_config(foreign, "[target]\n")
    assert caught.value.exit_code == EXIT_USAGE
    assert foreign.read_text(encoding="utf-8") == "[source]\n"


def test_stop_says_when_no_sandbox_was_started(tmp_path: Path) -> None:
    assert background.stop(tmp_path) == (
        f"No sandbox was started for {tmp_path} (no .migrate-sandbox.json there)."
    )
    with pytest.raises(ConfigError, match="No sandbox is running"):
        background.work_a_day(tmp_path)


def _serving(folder: Path, box: Sandbox) -> None:
    """Record `box` as the sandbox started for `folder` (this process serves it)."""
    background.write_state(
        folder / background.STATE_FILE,
        pid=os.getpid(),
        field_url=box.field_url,
        procore_url=box.procore_url,
    )


def test_a_day_of_work_changes_the_source_as_it_says(tmp_path: Path) -> None:
    with Sandbox(SandboxOptions(issues=40)) as box:
        _serving(tmp_path, box)
        before = {issue["id"]: issue for issue in box.field_app.current_issues()}
        said = background.work_a_day(tmp_path)
        after = {issue["id"]: issue for issue in box.field_app.current_issues()}
    assert [line.split(" issue ")[0] for line in said] == [
        "closed",
        "edited the description of",
        "voided",
        "added a photo to",
        "added",
    ]
    by_identifier = {issue["fields"]["f--identifier"]: issue for issue in after.values()}
    closed, edited, voided, photographed, added = (line.split()[-1] for line in said)
    assert by_identifier[closed]["fields"]["f--status"] == "Closed"
    assert by_identifier[edited]["fields"]["f--description"].startswith("Re-inspected")
    assert by_identifier[voided]["fields"]["f--status"] == "Void"
    photo = by_identifier[photographed]
    assert len(photo["attachments"]) == len(before[photo["id"]]["attachments"]) + 1
    assert by_identifier[added]["id"] not in before


def test_a_project_too_small_for_a_day_of_work_is_one_line(tmp_path: Path) -> None:
    with Sandbox(SandboxOptions(issues=2)) as box:
        _serving(tmp_path, box)
        with pytest.raises(ConfigError) as caught:
            background.work_a_day(tmp_path)
    assert str(caught.value) == (
        "The sandbox could not change its project: the project has fewer than 4 Open issues "
        "to change."
    )
