"""What every store module needs and that needs nothing of the store: its error and its clock.

Kept apart from db.py so that the migrations runner, which db.open_store calls, can import
them without importing db.py back.
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime

from migrate.errors import MigrateError


class StoreError(MigrateError):
    """The staging DB cannot be used as asked (schema, transaction or integrity problem)."""


def utc_now() -> str:
    """Current UTC time as ISO-8601 with milliseconds and a Z, the one format the DB stores."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@contextlib.contextmanager
def immediate_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE … COMMIT on ``conn``, or ROLLBACK when anything raises, Ctrl-C included.

    BEGIN is sent inside the ``try``: Python runs a signal handler as a call returns, so a
    Ctrl-C can raise KeyboardInterrupt the moment BEGIN is done. Outside the ``try`` that left
    the transaction open: everything written later on the connection (a run's final status)
    joined it and was lost when the process ended, and SQLite's write lock stayed taken.
    Only a transaction that is still open is rolled back, so an interrupt that lands just
    after COMMIT (or a BEGIN that failed) raises as itself, not as "no transaction is active".
    """
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


# Identifies this process in runs.process_token and writer_lock: after a container restart the
# new process can get the same pid as the dead one, and must not mistake the dead one's run or
# lock for its own.
PROCESS_TOKEN = secrets.token_hex(8)
