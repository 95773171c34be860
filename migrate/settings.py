"""Settings from ``migration.toml`` and credentials from the environment.

The file holds everything that is not secret; passwords, client secrets and tokens are read
from environment variables only, so a config file can be shared or committed safely.
"""

from __future__ import annotations

import difflib
import os
import tomllib
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Any

from migrate.clients.companylock import COMPANY_LOCK_ENV
from migrate.clients.credentials import (
    FIELD_PASSWORD_ENV,
    FIELD_USERNAME_ENV,
    PROCORE_ACCESS_TOKEN_ENV,
    PROCORE_CLIENT_ID_ENV,
    PROCORE_CLIENT_SECRET_ENV,
    Secret,
    SourceCredentials,
    TargetCredentials,
    source_credentials,
    target_credentials,
)
from migrate.clients.urls import check_url, is_loopback_host
from migrate.errors import ConfigError
from migrate.redaction import is_credential_key

CONFIG_ENV = "MIGRATE_CONFIG"
PORTFOLIO_ENV = "MIGRATE_PORTFOLIO"
DEFAULT_CONFIG_NAME = "migration.toml"

UNRESOLVED_ASSIGNEE_CHOICES = ("unassign", "quarantine")

#: Every environment variable migrate reads, by what it serves (the config file, BIM 360 Field,
#: Procore): each command's `--help` lists the groups it reads. Credentials come only from here.
ENVIRONMENT: dict[str, tuple[tuple[str, str], ...]] = {
    "config": ((CONFIG_ENV, "the config file when --config is not given (else ./migration.toml)"),),
    "portfolio": (
        (PORTFOLIO_ENV, "the portfolio file when --portfolio is not given (else ./portfolio.toml)"),
    ),
    "source": (
        (FIELD_USERNAME_ENV, "BIM 360 Field login (user name or email)"),
        (FIELD_PASSWORD_ENV, "BIM 360 Field password"),
    ),
    "target": (
        (PROCORE_CLIENT_ID_ENV, "Procore app's client id (client-credentials grant)"),
        (PROCORE_CLIENT_SECRET_ENV, "Procore app's client secret"),
        (PROCORE_ACCESS_TOKEN_ENV, "or a ready Procore access token (wins; never renewed)"),
    ),
    "shared": (
        (
            COMPANY_LOCK_ENV,
            "set by `migrate portfolio run` for each project: the lock its load holds while "
            "creating company checklist set-up (unset: none)",
        ),
    ),
}

# Credentials and URL rules belong to the clients (which must not import this module); they are
# re-exported here so a command reads config and credentials from one place.
__all__ = [
    "COMPANY_LOCK_ENV",
    "CONFIG_ENV",
    "DEFAULT_CONFIG_NAME",
    "ENVIRONMENT",
    "FIELD_PASSWORD_ENV",
    "FIELD_USERNAME_ENV",
    "PORTFOLIO_ENV",
    "PROCORE_ACCESS_TOKEN_ENV",
    "PROCORE_CLIENT_ID_ENV",
    "PROCORE_CLIENT_SECRET_ENV",
    "UNRESOLVED_ASSIGNEE_CHOICES",
    "MappingsSettings",
    "Secret",
    "Settings",
    "SourceCredentials",
    "SourceSettings",
    "StagingSettings",
    "TargetCredentials",
    "TargetSettings",
    "TransformSettings",
    "check_url",
    "config_path_from",
    "default_config_text",
    "is_loopback_host",
    "load_settings",
    "source_credentials",
    "target_credentials",
]


# -- settings dataclasses -----------------------------------------------------------------


@dataclass(frozen=True)
class SourceSettings:
    """BIM 360 Field: where to read from and how hard."""

    base_url: str = "https://bim360field.autodesk.com"
    project_id: str | None = None
    project_name: str | None = None
    workers: int = 4
    page_size: int = 100
    timeout: float = 60.0
    #: Seconds without any answer after which the service counts as down (clients/http.py).
    give_up_after: float = 120.0
    #: Keep Field's own project export beside the migration (extract.export); the CLI's
    #: --no-export turns it off for one run.
    project_export: bool = True
    #: Seconds extract waits for a running export, and between two status checks.
    export_wait: float = 600.0
    export_poll: float = 15.0


@dataclass(frozen=True)
class TargetSettings:
    """Procore: where to write to and how hard."""

    base_url: str = "https://api.procore.com"
    auth_url: str = "https://login.procore.com"
    company_id: int | None = None
    project_id: int | None = None
    workers: int = 4
    timeout: float = 60.0
    #: Seconds without any answer after which the service counts as down (clients/http.py).
    give_up_after: float = 120.0


@dataclass(frozen=True)
class StagingSettings:
    """Staging database, blob store and log folder (relative paths are from the config file)."""

    path: Path = Path("staging.db")
    blobs: Path = Path("blobs")
    logs: Path = Path("logs")


@dataclass(frozen=True)
class MappingsSettings:
    dir: Path = Path("mappings")


@dataclass(frozen=True)
class TransformSettings:
    #: Plan every checklist as a Procore inspection (and its template as an inspection template).
    checklists_as_inspections: bool = True
    checklist_items_as_issues: bool = False
    unresolved_assignee: str = "unassign"
    #: The time zone whose calendar day a due date written as a date-time becomes.
    time_zone: str = "UTC"

    def zone(self) -> tzinfo:
        """`time_zone` as a tzinfo (see `time_zone_named`)."""
        return time_zone_named(self.time_zone)


def time_zone_named(name: str) -> tzinfo:
    """UTC, or an IANA time zone such as "America/New_York"; ValueError for an unknown name.

    UTC needs no time zone database; the others come from the OS's, or on Windows (which has
    none) from the tzdata package.
    """
    if name.strip().upper() == "UTC":
        return UTC
    try:
        return zoneinfo.ZoneInfo(name.strip())
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"{name!r} is not a known time zone") from exc


@dataclass(frozen=True)
class Settings:
    """Everything in ``migration.toml``, validated, with paths made absolute."""

    source: SourceSettings = field(default_factory=SourceSettings)
    target: TargetSettings = field(default_factory=TargetSettings)
    staging: StagingSettings = field(default_factory=StagingSettings)
    mappings: MappingsSettings = field(default_factory=MappingsSettings)
    transform: TransformSettings = field(default_factory=TransformSettings)
    config_path: Path | None = None

    @property
    def where(self) -> str:
        return str(self.config_path) if self.config_path else DEFAULT_CONFIG_NAME

    def source_project(self) -> tuple[str, str]:
        """``("project_id", value)`` or ``("project_name", value)``; extract needs one."""
        if self.source.project_id is not None:
            return "project_id", self.source.project_id
        if self.source.project_name is not None:
            return "project_name", self.source.project_name
        raise ConfigError(
            f'[source] in {self.where} names no project. Add project_id = "…" or '
            'project_name = "…" (the BIM 360 Field project to extract).'
        )

    def target_ids(self) -> tuple[int, int]:
        """``(company_id, project_id)`` of the Procore project; load needs both."""
        for key in ("company_id", "project_id"):
            if getattr(self.target, key) is None:
                raise ConfigError(
                    f"[target] {key} is not set in {self.where}. Add {key} = <number> "
                    "(the Procore company and project to load into)."
                )
        assert self.target.company_id is not None and self.target.project_id is not None
        return self.target.company_id, self.target.project_id


# -- schema ----------------------------------------------------------------------------------

_SECTIONS: dict[str, type] = {
    "source": SourceSettings,
    "target": TargetSettings,
    "staging": StagingSettings,
    "mappings": MappingsSettings,
    "transform": TransformSettings,
}

# Keys that are credentials, and the environment variable to use instead (any other key that
# looks like one, see migrate.redaction, is refused too).
_CREDENTIAL_ENV_HINTS = {
    "source": {
        "username": FIELD_USERNAME_ENV,
        "user": FIELD_USERNAME_ENV,
        "password": FIELD_PASSWORD_ENV,
        "ticket": FIELD_PASSWORD_ENV,
    },
    "target": {
        "client_id": PROCORE_CLIENT_ID_ENV,
        "client_secret": PROCORE_CLIENT_SECRET_ENV,
        "secret": PROCORE_CLIENT_SECRET_ENV,
        "token": PROCORE_ACCESS_TOKEN_ENV,
        "access_token": PROCORE_ACCESS_TOKEN_ENV,
    },
}


def _quote(value: Any) -> str:
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


class _Reader:
    """Validates one parsed file; every message names the file, section and key."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data
        self.base = path.parent

    def fail(self, section: str, key: str, problem: str, fix: str) -> ConfigError:
        return ConfigError(f"[{section}] {key} in {self.path} {problem}. {fix}")

    def read(self) -> Settings:
        for name, value in self.data.items():
            self._check_secret(None, name)
            if name not in _SECTIONS:
                raise ConfigError(
                    f"[{name}] in {self.path} is not a known section.{_suggest(name, _SECTIONS)}"
                    f" Known sections: {', '.join(_SECTIONS)}."
                )
            if not isinstance(value, dict):
                raise ConfigError(
                    f"{name} in {self.path} must be a table, written [{name}] on its own line, "
                    f"got {_quote(value)}."
                )
        parts = {name: self._section(name, cls) for name, cls in _SECTIONS.items()}
        return Settings(**parts, config_path=self.path)

    def _check_secret(self, section: str | None, key: str) -> None:
        lowered = key.lower()
        env_name = _CREDENTIAL_ENV_HINTS.get(section or "", {}).get(lowered)
        if env_name is None and not is_credential_key(lowered):
            return
        where = f"[{section}] {key}" if section else key
        if env_name is None:
            env_name = {"source": FIELD_PASSWORD_ENV, "target": PROCORE_CLIENT_SECRET_ENV}.get(
                section or "",
                f"the matching variable ({FIELD_PASSWORD_ENV}, "
                f"{PROCORE_CLIENT_SECRET_ENV} or {PROCORE_ACCESS_TOKEN_ENV})",
            )
        raise ConfigError(
            f"{where} in {self.path} looks like a credential; credentials are read only from "
            f"the environment. Remove it from the file and set {env_name} in the environment "
            "instead."
        )

    def _section(self, name: str, cls: type) -> Any:
        raw = self.data.get(name, {})
        known = {f.name: f for f in fields(cls)}
        for key in raw:
            self._check_secret(name, key)
            if (name, key) == ("transform", "title_template"):
                raise self._title_template_moved()
            if key not in known:
                raise ConfigError(
                    f"[{name}] {key} in {self.path} is not a known key.{_suggest(key, known)}"
                    f" Known keys in [{name}]: {', '.join(known)}."
                )
        values: dict[str, Any] = {}
        for key, value in raw.items():
            special = getattr(self, f"_{name}_{key}", None)
            if special is not None:
                values[key] = special(name, key, value)
            else:
                values[key] = self._by_default(name, key, value, known[key].default)
        for key, spec in known.items():
            if key not in values and isinstance(spec.default, Path):
                values[key] = self.base / spec.default  # defaults are relative to the file too
        if name == "source" and "project_id" in values and "project_name" in values:
            raise ConfigError(
                f"[source] in {self.path} sets both project_id and project_name. Keep one of them."
            )
        return cls(**values)

    def _title_template_moved(self) -> ConfigError:
        # The title template has one home, fields.csv (the mapping workshop edits it there);
        # a second copy here would silently win or lose, so it is refused, naming both.
        mappings = self.data.get("mappings", {}).get("dir", MappingsSettings.dir)
        fields_csv = self.base / str(mappings) / "fields.csv"
        return ConfigError(
            f"[transform] title_template in {self.path}: the title template lives only in the "
            f"title_template row of {fields_csv}. Move it there and delete this line."
        )

    # -- typed readers ------------------------------------------------------------------------
    def _by_default(self, section: str, key: str, value: Any, default: Any) -> Any:
        # The dataclass default says what type a key takes; special cases have _section_key.
        if isinstance(default, bool):
            return self._bool(section, key, value)
        if isinstance(default, int):
            return self._positive_int(section, key, value, default)
        if isinstance(default, float):
            return self._positive_number(section, key, value, default)
        if isinstance(default, Path):
            return self._path(section, key, value)
        if key == "base_url" or key == "auth_url":
            return self._url(section, key, value)
        return self._string(section, key, value)

    def _bool(self, section: str, key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.fail(
                section,
                key,
                f"must be true or false, got {_quote(value)}",
                f"Write {key} = true or {key} = false.",
            )
        return value

    def _positive_int(self, section: str, key: str, value: Any, default: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(
                section,
                key,
                f"must be a whole number of 1 or more, got {_quote(value)}",
                f"Write e.g. {key} = {default}.",
            )
        return value

    def _positive_number(self, section: str, key: str, value: Any, default: float) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise self.fail(
                section,
                key,
                f"must be a number of seconds above 0, got {_quote(value)}",
                f"Write e.g. {key} = {default:g}.",
            )
        return float(value)

    def _string(self, section: str, key: str, value: Any) -> str:
        if not isinstance(value, str):
            example = value if isinstance(value, int | float) else "…"
            raise self.fail(
                section,
                key,
                f"must be a string, got {_quote(value)}",
                f'Write it in quotes, e.g. {key} = "{example}".',
            )
        if not value.strip():
            raise self.fail(
                section, key, "is empty", "Give it a value, or remove the line to use the default."
            )
        return value

    def _path(self, section: str, key: str, value: Any) -> Path:
        path = Path(self._string(section, key, value)).expanduser()
        return path if path.is_absolute() else self.base / path

    def _url(self, section: str, key: str, value: Any) -> str:
        url = self._string(section, key, value).rstrip("/")
        return check_url(url, f"[{section}] {key} in {self.path}")

    def _target_company_id(self, section: str, key: str, value: Any) -> int:
        return self._positive_int(section, key, value, 123)

    def _target_project_id(self, section: str, key: str, value: Any) -> int:
        return self._positive_int(section, key, value, 456)

    def _transform_unresolved_assignee(self, section: str, key: str, value: Any) -> str:
        if value not in UNRESOLVED_ASSIGNEE_CHOICES:
            choices = " or ".join(f'"{c}"' for c in UNRESOLVED_ASSIGNEE_CHOICES)
            raise self.fail(
                section,
                key,
                f"must be {choices}, got {_quote(value)}",
                f'Write {key} = "unassign" to leave such issues unassigned, or '
                '"quarantine" to hold them back.',
            )
        return str(value)

    def _transform_time_zone(self, section: str, key: str, value: Any) -> str:
        name = self._string(section, key, value)
        try:
            time_zone_named(name)
        except ValueError:
            raise self.fail(
                section,
                key,
                f"is not a time zone, got {_quote(value)}",
                f'Write {key} = "UTC" or an IANA name such as "America/New_York".',
            ) from None
        return name.strip()


def _suggest(word: str, candidates: Any) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f' Did you mean "{close[0]}"?' if close else ""


# -- loading ---------------------------------------------------------------------------------


def config_path_from(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] = os.environ
) -> Path:
    """Which file to read: the argument, else $MIGRATE_CONFIG, else ./migration.toml."""
    if path:
        return Path(path)
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    return Path(DEFAULT_CONFIG_NAME)


def load_settings(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] = os.environ
) -> Settings:
    """Read and validate the config file; any problem is a one-line ConfigError."""
    config_path = config_path_from(path, env).expanduser()
    config_path = config_path if config_path.is_absolute() else Path.cwd() / config_path
    try:
        raw = config_path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"Config file {config_path} not found. Run `migrate init` to create one, or point "
            f"to it with --config or {CONFIG_ENV}."
        ) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"Cannot read config file {config_path}: {reason}. Check the path and its permissions."
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"Config file {config_path} is not UTF-8 text (bad byte at offset {exc.start}). "
            "Save it as UTF-8."
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"Config file {config_path} is not valid TOML: {exc}. Fix that line; "
            "`migrate init` shows a valid example."
        ) from None
    return _Reader(config_path, data).read()


def default_config_text() -> str:
    """A commented ``migration.toml`` for ``migrate init``; it loads as the defaults."""
    credentials = "\n".join(
        f"#   {name:<24} {meaning}"
        for group in ("source", "target")
        for name, meaning in ENVIRONMENT[group]
    )
    return _DEFAULT_CONFIG.replace("{credentials}", credentials)


_DEFAULT_CONFIG = """\
# migration.toml - settings for `migrate` (BIM 360 Field -> Procore).
#
# Credentials are NEVER written here. Set them in the environment:
{credentials}
# Relative paths below are relative to this file's folder.

[source]            # BIM 360 Field
base_url = "https://bim360field.autodesk.com"
# The project to extract: set exactly one of project_id or project_name.
# project_id = "00000000-0000-0000-0000-000000000000"
# project_name = "North Campus"
workers = 4         # attachment downloads in parallel
page_size = 100     # records per page
timeout = 60        # seconds to wait for a response (connecting has its own 10 s)
give_up_after = 120 # seconds without any answer before the service counts as down
project_export = true # keep BIM 360 Field's own project export (both archives) as well
export_wait = 600   # seconds to wait for a running export before going on without it
export_poll = 15    # seconds between two export status checks

[target]            # Procore
base_url = "https://api.procore.com"
auth_url = "https://login.procore.com"
# The company and project to load into (numbers from the Procore URL).
# company_id = 123
# project_id = 456
workers = 4
timeout = 60
give_up_after = 120

[staging]
path = "staging.db" # SQLite staging database
blobs = "blobs"     # attachment files, by sha256
logs = "logs"

[mappings]
dir = "mappings"    # status.csv, users.csv, ... (see the runbook)

[transform]
checklists_as_inspections = true    # every checklist becomes a Procore inspection (Inspections
                                    # tool; mappings: inspection_types.csv,
                                    # inspection_statuses.csv, responses.csv)
checklist_items_as_issues = false   # also turn failed checklist items into issues
unresolved_assignee = "unassign"    # or "quarantine": hold back issues whose assignee is unknown
time_zone = "UTC"                   # due dates written as date-times become this zone's day
# The issue title template is the title_template row of mappings/fields.csv (only there).
"""


# -- issue 18: a portfolio's projects ---------------------------------------------------------


def settings_from_data(data: dict[str, Any], path: Path) -> Settings:
    """Validate already-parsed ``migration.toml`` sections as if read from ``path`` (relative
    paths are from its folder): how ``portfolio.toml`` checks each project's settings."""
    return _Reader(path, data).read()
