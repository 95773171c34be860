"""What every store module needs and that needs nothing of the store: its error and its clock.

Kept apart from db.py so that the migrations runner, which db.open_store calls, can import
them without importing db.py back.
"""

from __future__ import annotations

from datetime import UTC, datetime

from migrate.errors import MigrateError


class StoreError(MigrateError):
    """The staging DB cannot be used as asked (schema, transaction or integrity problem)."""


def utc_now() -> str:
    """Current UTC time as ISO-8601 with milliseconds and a Z, the one format the DB stores."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
