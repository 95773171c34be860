"""Credentials of the two services: read from the environment only, held as :class:`Secret`.

The clients take these objects and nothing else from the configuration layer; ``settings.py``
re-exports the names so a command reads its config and its credentials from one module.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from migrate.errors import ConfigError

FIELD_USERNAME_ENV = "BIM360_FIELD_USERNAME"
FIELD_PASSWORD_ENV = "BIM360_FIELD_PASSWORD"
PROCORE_CLIENT_ID_ENV = "PROCORE_CLIENT_ID"
PROCORE_CLIENT_SECRET_ENV = "PROCORE_CLIENT_SECRET"
PROCORE_ACCESS_TOKEN_ENV = "PROCORE_ACCESS_TOKEN"


class Secret:
    """A credential value that prints as ``***``; call :meth:`reveal` where it is really used."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> Any:
        # Pickling would write the value somewhere we do not control (a process pool, a cache).
        raise TypeError("a Secret cannot be pickled")


@dataclass(frozen=True)
class SourceCredentials:
    """BIM 360 Field login, from BIM360_FIELD_USERNAME / BIM360_FIELD_PASSWORD."""

    username: Secret
    password: Secret

    def redaction_values(self) -> tuple[str, ...]:
        """Values the HTTP layer must mask in every message."""
        return (self.password.reveal(),)


@dataclass(frozen=True)
class TargetCredentials:
    """Procore client credentials, or a ready access token (which then wins)."""

    client_id: Secret | None = None
    client_secret: Secret | None = None
    access_token: Secret | None = None

    def redaction_values(self) -> tuple[str, ...]:
        """Values the HTTP layer must mask in every message."""
        return tuple(s.reveal() for s in (self.client_secret, self.access_token) if s is not None)


def _env_value(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    return value if value else None


def source_credentials(env: Mapping[str, str] = os.environ) -> SourceCredentials:
    """BIM 360 Field credentials from the environment; a missing variable is a ConfigError."""
    username = _env_value(env, FIELD_USERNAME_ENV)
    password = _env_value(env, FIELD_PASSWORD_ENV)
    for name, value in ((FIELD_USERNAME_ENV, username), (FIELD_PASSWORD_ENV, password)):
        if value is None:
            raise ConfigError(
                f"{name} is not set. Set {FIELD_USERNAME_ENV} and {FIELD_PASSWORD_ENV} in the "
                "environment to the BIM 360 Field login (credentials are never read from "
                "migration.toml)."
            )
    assert username is not None and password is not None
    return SourceCredentials(Secret(username), Secret(password))


def target_credentials(env: Mapping[str, str] = os.environ) -> TargetCredentials:
    """Procore credentials from the environment; a missing variable is a ConfigError."""
    token = _env_value(env, PROCORE_ACCESS_TOKEN_ENV)
    client_id = _env_value(env, PROCORE_CLIENT_ID_ENV)
    client_secret = _env_value(env, PROCORE_CLIENT_SECRET_ENV)
    if token is not None:
        return TargetCredentials(
            client_id=Secret(client_id) if client_id else None,
            client_secret=Secret(client_secret) if client_secret else None,
            access_token=Secret(token),
        )
    for name, value in (
        (PROCORE_CLIENT_ID_ENV, client_id),
        (PROCORE_CLIENT_SECRET_ENV, client_secret),
    ):
        if value is None:
            raise ConfigError(
                f"{name} is not set. Set {PROCORE_CLIENT_ID_ENV} and "
                f"{PROCORE_CLIENT_SECRET_ENV} in the environment to the Procore app's client "
                f"credentials, or set {PROCORE_ACCESS_TOKEN_ENV}."
            )
    assert client_id is not None and client_secret is not None
    return TargetCredentials(client_id=Secret(client_id), client_secret=Secret(client_secret))
