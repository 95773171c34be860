"""A portfolio against the built-in sandbox: what the tests and the benchmark run.

The sandbox's generated account holds several BIM 360 Field projects and a Procore project for
each (:class:`~migrate.sandbox.generator.GeneratedProject` ``more_projects``); this writes the
``portfolio.toml`` that moves project ``n`` to Procore project ``5100 + n``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from migrate.clients.sharedquota import QuotaWindow

#: Procore project id of the account's first project; the n-th is this + n.
FIRST_PROCORE_PROJECT = 5100


def write_sandbox_portfolio(
    folder: Path,
    box: Any,
    *,
    parallel: int,
    spike: QuotaWindow,
    hourly: QuotaWindow,
    overrides: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
) -> Path:
    """Write ``folder/portfolio.toml`` (and the default mappings) for every project of the
    running sandbox ``box``; ``overrides`` maps a project name ("p0", "p1", ...) to extra
    ``section -> key -> value`` settings. Returns the file's path."""
    from migrate.mappings import write_default_mappings

    folder.mkdir(parents=True, exist_ok=True)
    write_default_mappings(folder / "mappings")
    lines = [
        "[portfolio]",
        'work_dir = "work"',
        f"parallel = {parallel}",
        "[quota]",
        f"spike_limit = {spike.limit}",
        f"spike_seconds = {spike.seconds}",
        f"hourly_limit = {hourly.limit}",
        f"hourly_seconds = {hourly.seconds}",
        "[defaults.source]",
        f'base_url = "{box.field_url}"',
        "[defaults.target]",
        f'base_url = "{box.procore_url}"',
        f'auth_url = "{box.procore_url}"',
        f"company_id = {box.procore_company_id}",
        "[defaults.mappings]",
        'dir = "mappings"',
    ]
    for number, project in enumerate(box.project.projects):
        name = f"p{number}"
        lines += [
            "",
            "[[project]]",
            f'name = "{name}"',
            f'source.project_id = "{project.id}"',
            f"target.project_id = {FIRST_PROCORE_PROJECT + number}",
        ]
        for section, values in (overrides or {}).get(name, {}).items():
            for key, value in values.items():
                lines.append(f"{section}.{key} = {_toml(value)}")
    path = folder / "portfolio.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
