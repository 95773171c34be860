"""`migrate --help` reads like the runbook: commands in pipeline order with whole summaries;
each command names its environment variables, its exit codes (from the one table) and an
example; every option says what it does and what it defaults to."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from migrate.cli import _COMMAND_ORDER, main
from migrate.errors import EXIT_CODES
from migrate.settings import ENVIRONMENT


def _walk(
    group: click.Group, prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], click.Command]]:
    found: list[tuple[tuple[str, ...], click.Command]] = []
    for name, command in group.commands.items():
        found.append(((*prefix, name), command))
        if isinstance(command, click.Group):
            found.extend(_walk(command, (*prefix, name)))
    return found


COMMANDS = [
    (path, command) for path, command in _walk(main) if not isinstance(command, click.Group)
]


def _help(*args: str) -> str:
    result = CliRunner().invoke(main, [*args, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    return result.output


def test_main_help_lists_the_commands_in_pipeline_order_with_whole_summaries() -> None:
    text = _help()
    listed = text.split("Commands:\n", 1)[1].split("\n\n", 1)[0]
    names = [line.split()[0] for line in listed.splitlines() if not line.startswith("    ")]
    assert names == list(_COMMAND_ORDER) and set(names) == set(main.commands)
    # The runbook's order: set up, check, the stages in the order they run, then the rest.
    stages = ["init", "preflight", "extract", "transform", "plan", "load", "report", "run"]
    assert names[: len(stages)] == stages
    flat = " ".join(listed.split())
    for name in names:
        summary = " ".join((main.commands[name].help or "").split("\n\n")[0].split())
        assert summary and summary in flat, f"`{name}`'s summary is cut: {summary!r}"
    assert "..." not in listed
    # The whole exit-code table and every environment variable.
    for row in EXIT_CODES:
        assert f"\n  {row.code} " in text
    for pairs in ENVIRONMENT.values():
        for name, _meaning in pairs:
            assert name in text


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_names_its_environment_exit_codes_and_an_example(
    path: tuple[str, ...], command: click.Command
) -> None:
    text = _help(*path)
    environment = text.split("Environment:\n", 1)[1].split("\n\n", 1)[0]
    exits = text.split("Exit codes:\n", 1)[1].split("\n\n", 1)[0]
    example = text.split("Example:\n", 1)[1]
    assert example.strip().startswith("migrate " + " ".join(path))
    codes = [int(line.split()[0]) for line in exits.splitlines() if not line.startswith("    ")]
    assert codes and 0 in codes and 2 in codes
    meanings = {row.code: " ".join(row.meaning.split()) for row in EXIT_CODES}
    flat = " ".join(exits.split())
    for code in codes:
        assert meanings[code] in flat  # rendered from the table, word for word
    takes_config = any(p.name == "config_path" for p in command.params)
    assert ("MIGRATE_CONFIG" in environment) == takes_config
    if path[0] in ("extract", "run", "preflight"):
        assert "BIM360_FIELD_PASSWORD" in environment
    if path[0] in ("transform", "load", "run", "report", "preflight"):
        assert "PROCORE_CLIENT_SECRET" in environment and "PROCORE_ACCESS_TOKEN" in environment
    if path[0] in ("transform", "load", "run", "report", "demo"):
        assert 3 in codes and 130 in codes


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_option_is_described_with_its_default(
    path: tuple[str, ...], command: click.Command
) -> None:
    with click.Context(main, info_name="migrate", show_default=True) as parent:
        ctx = click.Context(command, info_name=path[-1], parent=parent)
        for param in command.params:
            if not isinstance(param, click.Option) or param.name == "help" or param.hidden:
                continue
            record = param.get_help_record(ctx)
            assert record is not None
            opts, help_text = record
            assert len(help_text.split("[", 1)[0].strip()) > 10, f"{opts} has no help text"
            plain_flag = param.is_flag and not param.secondary_opts
            if not plain_flag:
                assert "default" in help_text, f"`migrate {' '.join(path)} {opts}` shows no default"
