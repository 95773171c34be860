"""One writer per staging DB: the command that writes holds the one row of ``writer_lock``.

The row is written inside ``BEGIN IMMEDIATE``, and SQLite lets one connection at a time into
such a transaction, so of two commands started together exactly one takes it and the other
finds it taken: never both, never neither. The row names the holder's pid and its random
process token; a holder that died without releasing (kill -9, OOM killer, reboot) is seen as
dead and its row taken over. This is plain SQLite, so it behaves the same on Linux, macOS and
Windows, and needs no lock file beside the DB. Liveness is judged by pid on this machine: a
staging DB shared over a network drive is not supported (SQLite's own locking is not reliable
there either).
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from migrate.errors import WriterBusy
from migrate.store.base import PROCESS_TOKEN
from migrate.store.db import Store, process_alive, utc_now

__all__ = ["WriterLock", "acquire_writer"]


@dataclass
class WriterLock:
    """The writer lock held by this process; `release()` (or closing the store) gives it up."""

    store: Store
    command: str
    #: Taken again by the process that already held it: releasing is left to the outer holder.
    nested: bool = False
    released: bool = False

    def release(self) -> None:
        """Give the lock up; safe to call twice, and never raises (a dead holder is taken over)."""
        if self.released or self.nested:
            return
        self.released = True
        try:
            with self.store.transaction():
                self.store.conn.execute(
                    "DELETE FROM writer_lock WHERE id = 1 AND pid = ? AND process_token = ?",
                    (os.getpid(), PROCESS_TOKEN),
                )
        except sqlite3.Error:
            pass  # the row stays with this pid; once the process ends, the next writer takes it

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def acquire_writer(store: Store, command: str) -> WriterLock:
    """Take the staging DB's writer lock for `command` (e.g. "load", "quarantine release").

    Raises WriterBusy (one line, exit 2) naming the command and pid that hold it; nothing was
    changed then. Closing the store releases the lock, as does `release()` or leaving a
    ``with acquire_writer(...)`` block. Call before the run is recorded.
    """
    # A plain read first: it never waits, so a command refused while another one is inside a
    # long transaction says who holds the lock at once instead of timing out on BEGIN.
    holder = _holder(store)
    if holder is not None and _alive(holder) and not _mine(holder):
        raise _busy(store, command, holder)
    try:
        with store.transaction():
            holder = _holder(store)
            if holder is not None and _alive(holder):
                if not _mine(holder):
                    raise _busy(store, command, holder)
                lock = WriterLock(store, command, nested=True)
            else:
                store.conn.execute(
                    "INSERT OR REPLACE INTO writer_lock "
                    "(id, command, pid, process_token, acquired_at) VALUES (1, ?, ?, ?, ?)",
                    (command, os.getpid(), PROCESS_TOKEN, utc_now()),
                )
                lock = WriterLock(store, command)
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc) and "busy" not in str(exc):
            raise
        raise _busy(store, command, _holder(store), detail=str(exc)) from exc
    store.call_on_close(lock.release)
    return lock


def _holder(store: Store) -> dict[str, Any] | None:
    row = store.conn.execute(
        "SELECT command, pid, process_token, acquired_at FROM writer_lock WHERE id = 1"
    ).fetchone()
    if row is None:
        return None
    return dict(zip(("command", "pid", "process_token", "acquired_at"), row, strict=True))


def _mine(holder: dict[str, Any]) -> bool:
    return bool(holder["pid"] == os.getpid() and holder["process_token"] == PROCESS_TOKEN)


def _alive(holder: dict[str, Any]) -> bool:
    if holder["pid"] == os.getpid():
        # This pid is ours: the row is alive only if this very process wrote it (a process
        # before a restart may have had the same pid).
        return bool(holder["process_token"] == PROCESS_TOKEN)
    return process_alive(int(holder["pid"]))


def _busy(
    store: Store, command: str, holder: dict[str, Any] | None, *, detail: str = ""
) -> WriterBusy:
    again = f"run `migrate {command}` again"
    if holder is None:
        return WriterBusy(
            f"{store.path} is locked by another program writing to it ({detail or 'busy'}). "
            f"Nothing was changed; {again} when it has finished."
        )
    return WriterBusy(
        f"{store.path} is being written by `migrate {holder['command']}` (pid {holder['pid']}, "
        f"since {holder['acquired_at']}). One command writes to a staging DB at a time: wait "
        f"for it to finish (or stop it), then {again}. Nothing was changed."
    )
