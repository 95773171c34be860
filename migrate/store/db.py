"""Open the staging DB: file permissions, pragmas, migrations and transactions."""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
import sqlite3
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from migrate.errors import StagingNotReady, StagingRefused
from migrate.processes import process_alive as process_alive  # moved; importers keep working
from migrate.redaction import CREDENTIAL_PARAMS
from migrate.store.base import StoreError as StoreError  # re-exported
from migrate.store.base import utc_now as utc_now  # re-exported: most callers import it here

BUSY_TIMEOUT_MS = 10_000
#: Values bound per ``IN (…)`` list: far below SQLite's variable limit on every build.
IN_CHUNK = 500
_SIDE_FILE_SUFFIXES = ("-wal", "-shm")
#: ``PRAGMA application_id`` of every staging DB migrate makes ("MIGR" in ASCII). It sits in the
#: file header, so a file can be recognised from its first 100 bytes without opening it in SQLite.
APPLICATION_ID = 0x4D494752
_SQLITE_MAGIC = b"SQLite format 3\x00"
_HEADER_SIZE = 100
# Where the OS has it, O_NOFOLLOW makes open() fail on a symlink instead of following it; where
# it does not (Windows), _open_no_follow checks with lstat first.
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)
#: What the staging path holds: nothing yet, an empty file or empty SQLite DB, a staging DB this
#: version marked, or one an earlier version made (schema_migrations but no application_id).
FileKind = Literal["missing", "empty", "ours", "legacy"]

if TYPE_CHECKING:
    import sqlite_utils


# Tickets (BIM 360 Field) and tokens (Procore) ride in query strings: in a stored URL they would
# be a live credential in the DB, so every value that reaches the DB passes through this.
_SECRET_PARAM = re.compile(
    rf"(?P<sep>[?&])(?:{'|'.join(CREDENTIAL_PARAMS)})=[^&#\s\"'<>]*(?P<amp>&?)",
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
    """An open staging DB: ``conn`` for plain SQL, ``db`` for sqlite-utils table code.

    Use ``transaction()`` to write.
    """

    path: str
    conn: sqlite3.Connection
    #: Opened with SQLite's mode=ro: any write fails instead of touching the file.
    read_only: bool = False
    _savepoints: Iterator[int] = field(default_factory=itertools.count, repr=False)
    _raw_tables: frozenset[str] | None = field(default=None, repr=False)
    _db: sqlite_utils.Database | None = field(default=None, repr=False)
    _on_close: list[Callable[[], None]] = field(default_factory=list, repr=False)

    @property
    def db(self) -> sqlite_utils.Database:
        """The sqlite_utils.Database over ``conn``, made on first use.

        sqlite-utils imports pandas and numpy whenever they are installed (about 0.3 s and
        60 MB): read-only commands such as ``migrate status`` never pay for it.
        """
        if self._db is None:
            import sqlite_utils

            self._db = sqlite_utils.Database(self.conn, execute_plugins=False)
        return self._db

    @property
    def in_transaction(self) -> bool:
        """True inside `transaction()` (or any transaction left open on the connection)."""
        return self.conn.in_transaction

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Store]:
        """BEGIN IMMEDIATE … COMMIT, or ROLLBACK if the block raises.

        Stages write a page of rows and its cursor inside one of these, so after any crash the
        cursor never points past what was stored. Nested use becomes a SAVEPOINT: the inner
        block can roll back on its own, but nothing is durable until the outermost commits.
        IMMEDIATE takes the write lock up front, so a concurrent writer waits (busy_timeout)
        instead of failing with SQLITE_BUSY halfway through a page.
        """
        conn = self.conn
        if conn.in_transaction:
            name = f"migrate_sp_{next(self._savepoints)}"
            try:
                conn.execute(f"SAVEPOINT {name}")
                yield self
            except BaseException:
                # An error that already ended the whole transaction leaves no savepoint behind,
                # and a Ctrl-C can land before SAVEPOINT ran (see immediate_transaction).
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.OperationalError):
                        conn.execute(f"ROLLBACK TO {name}")
                        conn.execute(f"RELEASE {name}")
                raise
            conn.execute(f"RELEASE {name}")
            return
        try:
            # Inside the try, as in immediate_transaction: a Ctrl-C right after BEGIN rolls back.
            conn.execute("BEGIN IMMEDIATE")
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
            rows = self.conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'raw\\_%' "
                "ESCAPE '\\'"
            )
            self._raw_tables = frozenset(name for (name,) in rows)
        return self._raw_tables

    def call_on_close(self, callback: Callable[[], None]) -> None:
        """Run `callback` just before the connection closes (e.g. to release the writer lock)."""
        self._on_close.append(callback)

    def close(self) -> None:
        """Close the connection (a checkpoint folds the WAL back into the main file)."""
        while self._on_close:
            self._on_close.pop()()
        self.conn.close()

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


def _symlink_refusal(path: Path) -> StagingRefused:
    return StagingRefused(
        f"{path} is a symbolic link. migrate never writes or changes modes through a link: "
        "point [staging] path at the real file (or remove the link), then run the command again."
    )


def _open_no_follow(path: Path, flags: int, mode: int = 0o600) -> int:
    """os.open that refuses a symlink at `path` (StagingRefused) instead of following it."""
    if not _O_NOFOLLOW and os.path.islink(path):
        raise _symlink_refusal(path)
    try:
        return os.open(path, flags | _O_NOFOLLOW | _O_BINARY, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # what O_NOFOLLOW answers for a symlink
            raise _symlink_refusal(path) from exc
        raise


def _tighten(fd: int) -> None:
    """Make an open file 0600 if it is looser (POSIX; Windows guards files with ACLs instead)."""
    if os.name != "nt" and stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
        os.fchmod(fd, 0o600)


def _create_private_file(path: Path) -> None:
    """Create `path` 0600 before SQLite sees it; tighten an existing file that is looser.

    Never through a symlink: the file, and its -wal/-shm, are opened with O_NOFOLLOW.
    """
    fd = _open_no_follow(path, os.O_RDWR | os.O_CREAT)
    try:
        _tighten(fd)
    finally:
        os.close(fd)
    # SQLite gives -wal/-shm the main file's mode when it creates them, but ones left over from
    # an earlier, looser file keep theirs.
    for suffix in _SIDE_FILE_SUFFIXES:
        side = Path(f"{path}{suffix}")
        try:
            fd = _open_no_follow(side, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            _tighten(fd)
        finally:
            os.close(fd)


def _refuse_linked_side_files(path: Path) -> None:
    # SQLite opens <db>-wal, -shm and -journal by name and would write through a link.
    for suffix in (*_SIDE_FILE_SUFFIXES, "-journal"):
        side = Path(f"{path}{suffix}")
        if os.path.islink(side):
            raise StagingRefused(
                f"{side} is a symbolic link; SQLite would write through it. Remove the link "
                f"(it is not part of a staging DB migrate made), then run the command again."
            )


def _not_ours(path: Path, what: str) -> StagingRefused:
    return StagingRefused(
        f"{path} is {what}, not a migrate staging DB; it was left untouched. Point [staging] "
        "path at the staging DB of this migration, or at a new file to start one."
    )


def inspect_staging_file(path: Path) -> FileKind:
    """What `path` holds, found without writing anything; StagingRefused if it is not ours.

    The header is read with plain file I/O. Only a SQLite file without an application_id is
    opened in SQLite, read-only, to look for migrate's schema_migrations table: with
    immutable=1 when no -wal exists (so SQLite creates no side files), and when a -wal does
    exist, a -shm this check made is removed again.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        _refuse_linked_side_files(path)
        return "missing"
    if stat.S_ISLNK(info.st_mode):
        raise _symlink_refusal(path)
    if not stat.S_ISREG(info.st_mode):
        raise _not_ours(path, "not a regular file")
    _refuse_linked_side_files(path)
    if info.st_size == 0:
        return "empty"
    fd = _open_no_follow(path, os.O_RDONLY)
    try:
        header = os.read(fd, _HEADER_SIZE)
    finally:
        os.close(fd)
    if len(header) < _HEADER_SIZE or not header.startswith(_SQLITE_MAGIC):
        raise _not_ours(path, "not a SQLite database")
    application_id = int.from_bytes(header[68:72], "big")
    if application_id == APPLICATION_ID:
        return "ours"
    if application_id != 0:
        raise _not_ours(
            path, f"a SQLite database of another program (application_id {application_id:#x})"
        )
    tables, application_id = _peek_schema(path)
    if application_id == APPLICATION_ID:  # marked in a WAL not yet folded into the file
        return "ours"
    if "schema_migrations" in tables:
        return "legacy"  # made by a migrate from before application_id
    if not tables:
        return "empty"
    shown = ", ".join(sorted(tables)[:3]) + (", …" if len(tables) > 3 else "")
    raise _not_ours(path, f"a SQLite database of another program (tables {shown})")


def _peek_schema(path: Path) -> tuple[set[str], int]:
    """(table names, application_id) of a SQLite file, read without leaving a side file."""
    shm = Path(f"{path}-shm")
    had_shm = os.path.lexists(shm)
    has_wal = os.path.lexists(f"{path}-wal")
    uri = path.absolute().as_uri() + ("?mode=ro" if has_wal else "?mode=ro&immutable=1")
    try:
        conn = sqlite3.connect(uri, uri=True)
        try:
            tables = {
                name
                for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            application_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise _not_ours(path, f"a SQLite file that cannot be read ({exc})") from exc
    finally:
        if not had_shm and has_wal:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(shm)
    return tables, application_id


def _missing(path: Path) -> StagingNotReady:
    return StagingNotReady(
        f"No staging DB at {path} yet, so there is nothing to read. Run `migrate extract` "
        "first (or check [staging] path in the config)."
    )


def open_store(
    path: str | os.PathLike[str],
    *,
    busy_timeout_ms: int = BUSY_TIMEOUT_MS,
    create: bool = True,
    read_only: bool = False,
) -> Store:
    """Open the staging DB at `path`, bring its schema up to date, and mark it as migrate's.

    `create=False` raises StagingNotReady instead of creating a missing DB; `read_only=True`
    (implies no create) opens it with SQLite's mode=ro for commands that only read. Anything
    that is not a staging DB migrate made (another SQLite file, a non-SQLite file, a symlink)
    raises StagingRefused before a single byte or mode bit changes. A DB made by an earlier
    version is upgraded, marked and has its identity inferred (store/identity.py), also when a
    read-only command opens it first. Missing parent directories are created 0700. Raises
    SchemaTooNewError when the file was written by a newer `migrate`. ":memory:" gives a
    private in-memory DB for tests (no file, no WAL). The connection belongs to the opening
    thread: other threads open their own.
    """
    if str(path) == ":memory:":
        return _open_writable(None, "missing", busy_timeout_ms)
    path = Path(path)
    kind = inspect_staging_file(path)
    if kind == "missing" and (read_only or not create):
        raise _missing(path)
    if not read_only:
        return _open_writable(path, kind, busy_timeout_ms)
    if kind == "empty":
        raise StagingNotReady(
            f"The staging DB at {path} is empty. Run `migrate extract` first (or check "
            "[staging] path in the config)."
        )
    if kind == "legacy":
        _open_writable(path, kind, busy_timeout_ms).close()  # upgrade and mark it, once
    store = _open_read_only(path, busy_timeout_ms)
    if _is_current(store):
        return store
    store.close()
    _open_writable(path, "ours", busy_timeout_ms).close()
    return _open_read_only(path, busy_timeout_ms)


def _open_read_only(path: Path, busy_timeout_ms: int) -> Store:
    uri = path.absolute().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout_ms / 1000)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:
        conn.close()
        if os.path.lexists(f"{path}-wal"):
            raise
        # A WAL reader needs a -shm file, which SQLite cannot create on a read-only disk. With
        # no -wal, every commit is in the main file, so it can be read as immutable instead.
        conn = sqlite3.connect(uri + "&immutable=1", uri=True, timeout=busy_timeout_ms / 1000)
    try:
        conn.execute("PRAGMA query_only = ON")
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    except BaseException:
        conn.close()
        raise
    return Store(path=str(path), conn=conn, read_only=True)


def _is_current(store: Store) -> bool:
    """True when every migration is applied, the DB is marked and its identity row exists.

    Raises SchemaTooNewError (or StoreError) for a DB a newer or different migrate wrote.
    """
    from migrate.store.identity import has_identity_row
    from migrate.store.migrations import MIGRATIONS, applied_migrations, check_known

    conn = store.conn
    if not conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone():
        return False
    check_known(store, MIGRATIONS)
    return (
        len(applied_migrations(store)) == len(MIGRATIONS)
        and conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        and has_identity_row(store)
    )


def _open_writable(path: Path | None, kind: FileKind, busy_timeout_ms: int) -> Store:
    from migrate.store.identity import ensure_identity_row
    from migrate.store.migrations import apply_migrations

    if path is not None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _create_private_file(path)
    name = ":memory:" if path is None else str(path)
    conn = sqlite3.connect(name, timeout=busy_timeout_ms / 1000)
    try:
        if kind in ("missing", "empty"):
            # Mark the file before anything else is written to it, so even a DB killed while
            # being created carries migrate's id in its header.
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        if path is not None:
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
        # sqlite-utils turns this on when it wraps a connection; the Store wraps lazily (see
        # Store.db), so set it here and triggers behave the same whether or not it ever does.
        conn.execute("PRAGMA recursive_triggers = ON")
        store = Store(path=name, conn=conn)
        apply_migrations(store)
        if conn.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
            with store.transaction():  # a DB an earlier version made: mark it as ours now
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        ensure_identity_row(store)
    except BaseException:
        conn.close()
        raise
    return store
