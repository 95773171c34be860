"""What every store module needs and that needs nothing of the store: its error and its clock.

Kept apart from db.py so that the migrations runner, which db.open_store calls, can import
them without importing db.py back.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from migrate.errors import MigrateError


class StoreError(MigrateError):
    """The staging DB cannot be used as asked (schema, transaction or integrity problem)."""


def utc_now() -> str:
    """Current UTC time as ISO-8601 with milliseconds and a Z, the one format the DB stores."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# Identifies this process in runs.process_token and writer_lock: after a container restart the
# new process can get the same pid as the dead one, and must not mistake the dead one's run or
# lock for its own.
PROCESS_TOKEN = secrets.token_hex(8)
