"""Which URLs the clients may call: http(s) with a host, plain http only to loopback.

The settings check every configured URL with :func:`check_url` before a client exists, and
:class:`~migrate.clients.http.HttpClient` checks every URL it is asked to call the same way.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from migrate.errors import ConfigError


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1 (by name or literal address, no DNS)."""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, where: str) -> str:
    """Return ``url`` if it is http(s) with a host, and plain http only to loopback.

    ``where`` names the setting for the message, e.g. ``[source] base_url in ./migration.toml``.
    The HTTP client applies the same rule to every URL it is asked to call.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        parts, host = None, ""
    if parts is None or parts.scheme not in ("http", "https") or not host:
        raise ConfigError(
            f"{where} is not a URL: expected http(s)://host, got {_quote(url)}. "
            "Write the full URL, e.g. https://api.procore.com."
        )
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"{where} contains a user name or password. Remove them; "
            "credentials are read from environment variables."
        )
    if parts.scheme == "http" and not is_loopback_host(host):
        raise ConfigError(
            f"{where}: plain http is only allowed to loopback "
            f"(got {parts.scheme}://{parts.netloc}). Use https://{parts.netloc}."
        )
    return url


def _quote(value: Any) -> str:
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    return str(value)
