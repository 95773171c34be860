"""``portfolio.toml``: the projects a portfolio moves, and the one Procore quota they share.

A portfolio is tens to hundreds of BIM 360 Field projects moved into Procore under one app's
quota. The file names each project (source project -> target project) with its own overrides
of any ``migration.toml`` section, shared defaults for every project, and the quota::

    [portfolio]
    work_dir = "portfolio"     # the quota ledger, status and reports; each project's staging
    parallel = 3               # projects at once (one process each)

    [quota]                    # the app's Procore quota, shared by every project
    hourly_limit = 3600
    hourly_seconds = 3600
    spike_limit = 150
    spike_seconds = 10

    [defaults.source]          # any migration.toml section: applies to every project
    base_url = "https://bim360field.autodesk.com"
    [defaults.target]
    company_id = 4100

    [[project]]
    name = "harbor-point"      # letters, digits, - and _: also the project's folder name
    source.project_name = "Harbor Point Tower"
    target.project_id = 5100
    mappings.dir = "mappings/harbor-point"   # a per-project override

Each project gets its own staging DB, blob store and logs under ``<work_dir>/projects/<name>/``
unless its ``staging`` section says otherwise; two projects may not share one. Any problem is a
one-line :class:`~migrate.errors.ConfigError` (exit 2) naming the file, project and key.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migrate.clients.sharedquota import LedgerSettings, QuotaWindow
from migrate.errors import ConfigError
from migrate.settings import PORTFOLIO_ENV, Settings, settings_from_data

DEFAULT_PORTFOLIO_NAME = "portfolio.toml"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_SECTIONS = ("portfolio", "quota", "defaults", "project")
_PORTFOLIO_KEYS = {"work_dir": "portfolio", "parallel": 2}
#: Procore's documented quota: 3 600 requests an hour; a 10-second spike window (its limit is
#: the sandbox's reading; set it from the X-Rate-Limit-Limit your app is sent).
_QUOTA_DEFAULTS: dict[str, float] = {
    "hourly_limit": 3600,
    "hourly_seconds": 3600.0,
    "spike_limit": 150,
    "spike_seconds": 10.0,
    "reserve_fraction": 0.01,
}


@dataclass(frozen=True)
class ProjectEntry:
    """One project of the portfolio: its name and its complete, validated settings."""

    name: str
    settings: Settings

    @property
    def folder(self) -> Path:
        """Where its staging DB lives (and its report, by default)."""
        return Path(self.settings.staging.path).parent

    @property
    def report_dir(self) -> Path:
        """Where ``migrate report`` writes this project's report (its default)."""
        return self.folder / "report"


@dataclass(frozen=True)
class Portfolio:
    """``portfolio.toml``, validated, with paths made absolute."""

    path: Path
    work_dir: Path
    parallel: int
    quota: LedgerSettings
    projects: tuple[ProjectEntry, ...]

    @property
    def ledger_path(self) -> Path:
        """The shared quota ledger (see :mod:`migrate.clients.sharedquota`)."""
        return self.work_dir / "quota.sqlite"

    @property
    def state_path(self) -> Path:
        """The portfolio's own record of each project's runs (see :mod:`.state`)."""
        return self.work_dir / "portfolio.sqlite"

    def project(self, name: str) -> ProjectEntry:
        for entry in self.projects:
            if entry.name == name:
                return entry
        known = ", ".join(e.name for e in self.projects)
        raise ConfigError(f'No project named "{name}" in {self.path}. Projects: {known}.')


def portfolio_path_from(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] = os.environ
) -> Path:
    """Which file to read: the argument, else $MIGRATE_PORTFOLIO, else ./portfolio.toml."""
    chosen = Path(path) if path else Path(env.get(PORTFOLIO_ENV) or DEFAULT_PORTFOLIO_NAME)
    chosen = chosen.expanduser()
    return chosen if chosen.is_absolute() else Path.cwd() / chosen


def load_portfolio(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] = os.environ
) -> Portfolio:
    """Read and validate ``portfolio.toml``; any problem is a one-line ConfigError."""
    where = portfolio_path_from(path, env)
    try:
        text = where.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"Portfolio file {where} not found. Write one (see docs/portfolio.md), or point to "
            f"it with --portfolio or {PORTFOLIO_ENV}."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read portfolio file {where}: {type(exc).__name__}.") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Portfolio file {where} is not valid TOML: {exc}.") from None
    return _read(where, data)


def _read(where: Path, data: dict[str, Any]) -> Portfolio:
    for key in data:
        if key not in _SECTIONS:
            raise ConfigError(
                f"[{key}] in {where} is not a portfolio section. Known: "
                "[portfolio], [quota], [defaults.<section>], [[project]]."
            )
    base = where.parent
    section = _table(where, data, "portfolio")
    for key in section:
        if key not in _PORTFOLIO_KEYS:
            raise ConfigError(
                f"[portfolio] {key} in {where} is not a known key. Known: work_dir, parallel."
            )
    work_dir = Path(str(section.get("work_dir", _PORTFOLIO_KEYS["work_dir"]))).expanduser()
    work_dir = work_dir if work_dir.is_absolute() else base / work_dir
    parallel = section.get("parallel", _PORTFOLIO_KEYS["parallel"])
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
        raise ConfigError(
            f"[portfolio] parallel in {where} must be a whole number of 1 or more, got "
            f"{parallel!r}. Write e.g. parallel = 3."
        )
    quota = _quota(where, _table(where, data, "quota"))
    defaults = _table(where, data, "defaults")
    raw_projects = data.get("project", [])
    if not isinstance(raw_projects, list) or not raw_projects:
        raise ConfigError(
            f"{where} names no project. Add one [[project]] table per project, with name, "
            "source.project_id (or source.project_name) and target.project_id."
        )
    projects = tuple(
        _project(where, work_dir, defaults, raw, number)
        for number, raw in enumerate(raw_projects, 1)
    )
    _check_distinct(where, projects)
    return Portfolio(where, work_dir, parallel, quota, projects)


def _table(where: Path, data: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{name} in {where} must be a table, written [{name}].")
    return value


def _quota(where: Path, section: Mapping[str, Any]) -> LedgerSettings:
    values = dict(_QUOTA_DEFAULTS)
    for key, value in section.items():
        if key not in _QUOTA_DEFAULTS:
            raise ConfigError(
                f"[quota] {key} in {where} is not a known key. Known: "
                + ", ".join(_QUOTA_DEFAULTS)
                + "."
            )
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"[quota] {key} in {where} must be a number above 0, got {value!r}.")
        if key.endswith("_limit") and not isinstance(value, int):
            raise ConfigError(f"[quota] {key} in {where} must be a whole number, got {value!r}.")
        values[key] = value
    if values["reserve_fraction"] >= 1:
        raise ConfigError(f"[quota] reserve_fraction in {where} must be below 1, e.g. 0.01.")
    windows = (
        QuotaWindow(int(values["spike_limit"]), float(values["spike_seconds"])),
        QuotaWindow(int(values["hourly_limit"]), float(values["hourly_seconds"])),
    )
    return LedgerSettings(windows=windows, reserve_fraction=float(values["reserve_fraction"]))


def _project(
    where: Path, work_dir: Path, defaults: Mapping[str, Any], raw: Any, number: int
) -> ProjectEntry:
    if not isinstance(raw, dict):
        raise ConfigError(f"project {number} in {where} must be a table, written [[project]].")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"project {number} in {where} needs a name of letters, digits, - and _ (it is also "
            f'its folder name), got {name!r}. Write e.g. name = "harbor-point".'
        )
    sections: dict[str, dict[str, Any]] = {}
    for source in (defaults, {k: v for k, v in raw.items() if k != "name"}):
        for section, values in source.items():
            if not isinstance(values, dict):
                raise ConfigError(
                    f'project "{name}" in {where}: {section} must be a table of migration.toml '
                    f"keys, e.g. {section}.key = value."
                )
            sections.setdefault(section, {}).update(values)
    staging = sections.setdefault("staging", {})
    folder = work_dir / "projects" / name
    staging.setdefault("path", str(folder / "staging.db"))
    staging.setdefault("blobs", str(folder / "blobs"))
    staging.setdefault("logs", str(folder / "logs"))
    try:
        settings = settings_from_data(sections, where)
        settings.source_project()  # a ConfigError when it names no Field project
    except ConfigError as exc:
        raise ConfigError(f'project "{name}": {exc}') from None
    if settings.target.project_id is None:
        raise ConfigError(
            f'project "{name}" in {where} names no Procore project. Add target.project_id = '
            "<number>."
        )
    return ProjectEntry(name, settings)


def _check_distinct(where: Path, projects: tuple[ProjectEntry, ...]) -> None:
    """One staging DB, blob store and target project per project, and unique names."""
    seen: dict[tuple[str, object], str] = {}
    for entry in projects:
        staging = entry.settings.staging
        target = entry.settings.target
        for what, value in (
            ("name", entry.name.lower()),
            ("staging DB", Path(staging.path).resolve()),
            ("blob store", Path(staging.blobs).resolve()),
            ("Procore project", (target.company_id, target.project_id)),
        ):
            other = seen.setdefault((what, value), entry.name)
            if other != entry.name:
                raise ConfigError(
                    f'projects "{other}" and "{entry.name}" in {where} share one {what}. '
                    "Give each project its own."
                )
