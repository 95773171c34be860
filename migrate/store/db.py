"""Open the staging DB: file permissions, pragmas, migrations and transactions."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import sqlite3
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from migrate.errors import MigrateError
from migrate.processes import process_alive as process_alive  # moved; importers keep working

BUSY_TIMEOUT_MS = 10_000
#: Values bound per ``IN (…)`` list: far below SQLite's variable limit on every build.
IN_CHUNK = 500
_SIDE_FILE_SUFFIXES = ("-wal", "-shm")


class StoreError(MigrateError):
    """The staging DB cannot be used as asked (schema, transaction or integrity problem)."""


def utc_now() -> str:
    """Current UTC time as ISO-8601 with milliseconds and a Z, the one format the DB stores."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# Tickets (BIM 360 Field) and tokens (Procore) ride in query strings: in a stored URL they would
# be a live credential in the DB, so every value that reaches the DB passes through this.
_SECRET_PARAM = re.compile(
    r"(?P<sep>[?&])(?:ticket|access_token|refresh_token|token|password|client_secret)"
    r"=[^&#\s\"'<>]*(?P<amp>&?)",
    re.IGNORECASE,
)


def strip_secret_params(text: str) -> str:
    """Remove ticket/token/password query parameters from every URL inside `text`."""
    if "=" not in text:
        return text

    def _drop(match: re.Match[str]) -> str:
        # Keep the separator only when another parameter follows: "?ticket=x&a=1" -> "?a=1".
        return match.group("sep") if match.group("amp") else ""

    return _SECRET_PARAM.sub(_drop, text)


def _in_chunks(values: Iterable[Any], chunk: int) -> Iterator[tuple[str, list[Any]]]:
    wanted = sorted(set(values))
    for start in range(0, len(wanted), chunk):
        part = wanted[start : start + chunk]
        yield ", ".join(["?"] * len(part)), part


def select_in(
    conn: sqlite3.Connection,
    sql: str,
    values: Iterable[Any],
    params: Sequence[Any] = (),
    *,
    chunk: int = IN_CHUNK,
) -> Iterator[Any]:
    """Rows of ``sql`` for every value, ``{marks}`` in ``sql`` standing for the ``IN`` list.

    The distinct values are bound ``chunk`` at a time, after ``params``:
    ``select_in(conn, "SELECT id FROM t WHERE p = ? AND id IN ({marks})", ids, (p,))``.
    Rows come chunk by chunk; sort them if order matters.
    """
    for marks, part in _in_chunks(values, chunk):
        yield from conn.execute(sql.format(marks=marks), (*params, *part))


def execute_in(
    conn: sqlite3.Connection,
    sql: str,
    values: Iterable[Any],
    params: Sequence[Any] = (),
    *,
    chunk: int = IN_CHUNK,
) -> int:
    """Run an UPDATE or DELETE over ``{marks}`` like :func:`select_in`; rows changed."""
    changed = 0
    for marks, part in _in_chunks(values, chunk):
        changed += conn.execute(sql.format(marks=marks), (*params, *part)).rowcount
    return changed


@dataclass
class Store:
    """An open staging DB. `db` is the sqlite_utils.Database; use `transaction()` to write."""

    path: str
    db: sqlite_utils.Database
    _savepoints: Iterator[int] = field(default_factory=itertools.count, repr=False)
    _raw_tables: frozenset[str] | None = field(default=None, repr=False)

    @property
    def conn(self) -> sqlite3.Connection:
        """The underlying sqlite3 connection (for plain SQL)."""
        return self.db.conn

    @property
    def in_transaction(self) -> bool:
        """True inside `transaction()` (or any transaction left open on the connection)."""
        return self.db.conn.in_transaction

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Store]:
        """BEGIN IMMEDIATE … COMMIT, or ROLLBACK if the block raises.

        Stages write a page of rows and its cursor inside one of these, so after any crash the
        cursor never points past what was stored. Nested use becomes a SAVEPOINT: the inner
        block can roll back on its own, but nothing is durable until the outermost commits.
        IMMEDIATE takes the write lock up front, so a concurrent writer waits (busy_timeout)
        instead of failing with SQLITE_BUSY halfway through a page.
        """
        conn = self.db.conn
        if conn.in_transaction:
            name = f"migrate_sp_{next(self._savepoints)}"
            conn.execute(f"SAVEPOINT {name}")
            try:
                yield self
            except BaseException:
                # An error that already ended the whole transaction leaves no savepoint behind.
                if conn.in_transaction:
                    conn.execute(f"ROLLBACK TO {name}")
                    conn.execute(f"RELEASE {name}")
                raise
            conn.execute(f"RELEASE {name}")
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.IntegrityError as exc:
            # Deferred foreign keys are checked here; a failed COMMIT leaves the transaction
            # open, so name the offending rows before rolling back.
            detail = _foreign_key_report(conn) if conn.in_transaction else ""
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(f"commit rolled back: {exc}{detail}") from exc
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @property
    def raw_tables(self) -> frozenset[str]:
        """Names of the raw_* tables the schema defines (read from the DB, so migrations count)."""
        if self._raw_tables is None:
            rows = self.db.conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'raw\\_%' "
                "ESCAPE '\\'"
            )
            self._raw_tables = frozenset(name for (name,) in rows)
        return self._raw_tables

    def close(self) -> None:
        """Close the connection (a checkpoint folds the WAL back into the main file)."""
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _foreign_key_report(conn: sqlite3.Connection, limit: int = 5) -> str:
    rows = conn.execute("PRAGMA foreign_key_check").fetchmany(limit)
    if not rows:
        return ""
    parts = [f"{table} rowid {rowid} -> {parent}" for table, rowid, parent, _ in rows]
    return " (dangling references: " + "; ".join(parts) + ")"


def _create_private_file(path: Path) -> None:
    """Create `path` 0600 before SQLite sees it; tighten an existing file that is looser."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    # SQLite gives -wal/-shm the main file's mode when it creates them, but ones left over from
    # an earlier, looser file keep theirs.
    for suffix in _SIDE_FILE_SUFFIXES:
        side = Path(f"{path}{suffix}")
        with contextlib.suppress(FileNotFoundError):
            if stat.S_IMODE(side.stat().st_mode) & 0o077:
                side.chmod(0o600)


def open_store(path: str | os.PathLike[str], *, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> Store:
    """Open (creating if needed) the staging DB at `path` and bring its schema up to date.

    Missing parent directories are created 0700. Raises SchemaTooNewError when the file was
    written by a newer `migrate`. ":memory:" gives a private in-memory DB for tests (no file,
    no WAL). The connection belongs to the opening thread: other threads open their own.
    """
    from migrate.store.migrations import apply_migrations

    in_memory = str(path) == ":memory:"
    if not in_memory:
        path = Path(path)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _create_private_file(path)
    conn = sqlite3.connect(str(path), timeout=busy_timeout_ms / 1000)
    try:
        if not in_memory:
            # Durability of synchronous=NORMAL in WAL mode: COMMIT returns once the commit
            # frame has been write()n to the -wal file, i.e. it is in the kernel's page cache.
            # Killing the process (kill -9, OOM killer, Ctrl-C) cannot take that back: the
            # kernel still writes it out and the next open replays the WAL. What NORMAL gives
            # up versus FULL is only an fsync per commit, which matters for power loss or an
            # OS crash — and even then the DB stays consistent, it just ends at an earlier
            # commit, which a resumed run re-fetches.
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"{path}: cannot switch to WAL journal mode (got {mode!r})")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        db = sqlite_utils.Database(conn, execute_plugins=False)
        store = Store(path=str(path), db=db)
        apply_migrations(store)
    except BaseException:
        conn.close()
        raise
    return store
