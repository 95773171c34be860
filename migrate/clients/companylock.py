"""One project at a time creates a company's inspection building blocks (issue 18).

Inspection types, response sets and checklist templates live at company level in Procore, so
projects of one company loading at once (``migrate portfolio run``) could both list, both see
nothing and both create the same block. Load holds this lock around each find-or-create of a
company-level block (and around a whole company template: template, sections, items), and
looks again under it before creating: the second project then finds what the first made.

Which lock, from the environment variable :data:`COMPANY_LOCK_ENV`, which the portfolio sets for
every project it runs (with the shared quota, :func:`lock_environment`):

- unset (a plain ``migrate run``): no lock, nothing shared to guard;
- ``sqlite:<path>``: a small SQLite file next to the quota ledger, locked with ``BEGIN
  IMMEDIATE`` (SQLite's own file lock: the same on Windows, macOS and Linux, and the OS drops
  it when the holder dies, however it dies);
- ``prefect:<limit name>``: a Prefect global concurrency limit of one slot, for projects on
  several machines (:class:`migrate.portfolio.prefect_quota.PrefectCompanyLock`).

The lock is re-entrant within a process: a template's build takes it and the response sets
its items need take it again.
"""

from __future__ import annotations

import importlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from migrate import stopping
from migrate.errors import ConfigError

#: ``sqlite:<path>`` or ``prefect:<limit name>``; unset: no lock (one project at a time).
COMPANY_LOCK_ENV = "MIGRATE_COMPANY_LOCK"
#: The local lock's file, in the folder of the portfolio's quota ledger.
LOCK_FILE = "company-lock.sqlite"
_SQLITE_SCHEME = "sqlite:"
#: Other locks, by scheme: the module whose ``company_lock(spec)`` builds one (imported only
#: when named: Prefect is optional).
_OTHER_SCHEMES = {"prefect:": "migrate.portfolio.prefect_quota"}
#: How long one try at the SQLite lock waits before looking at the stop event again.
_TRY_MS = 250


class CompanyLock:
    """A lock shared by every project of a company; re-entrant within a process.

    :meth:`held` takes it (``on_wait`` is called once if another holder makes this process
    wait) and gives it back when the outermost ``held`` ends. Subclasses take and give back
    the shared lock itself (:meth:`_acquire`, :meth:`_release`).
    """

    def __init__(self) -> None:
        self._mutex = threading.RLock()
        self._depth = 0
        #: Times this process had to wait for another holder.
        self.waits = 0

    @contextmanager
    def held(self, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
        with self._mutex:
            entered = False
            try:
                if self._depth == 0:
                    self._acquire(lambda: self._waiting(on_wait))
                self._depth += 1
                entered = True
                yield
            finally:
                if entered:
                    self._depth -= 1
                # Also after a take interrupted half-way (Ctrl-C just after it succeeded).
                if self._depth == 0:
                    self._release()

    def _waiting(self, on_wait: Callable[[], None] | None) -> None:
        self.waits += 1
        if on_wait is not None:
            on_wait()

    def _acquire(self, on_wait: Callable[[], None]) -> None:
        """Take the shared lock; call ``on_wait`` once before waiting for another holder."""

    def _release(self) -> None:
        """Give the shared lock back, if this process holds it (safe to call when not)."""

    def close(self) -> None:
        """Let go of connections (the lock is not held any more)."""

    def __enter__(self) -> CompanyLock:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class NoLock(CompanyLock):
    """No other project loads at the same time: nothing to wait for."""


class SqliteCompanyLock(CompanyLock):
    """The lock as a SQLite write transaction on ``path`` (``BEGIN IMMEDIATE``), held for as
    long as the lock is; a holder that dies loses it with its file handles."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._conn = sqlite3.connect(
                    self.path, timeout=0, isolation_level=None, check_same_thread=False
                )
            except (OSError, sqlite3.Error) as error:
                raise ConfigError(
                    f"{COMPANY_LOCK_ENV} names {self.path}, which cannot be opened ({error}). "
                    "Run the project through `migrate portfolio run`, or unset it."
                ) from None
        return self._conn

    def _acquire(self, on_wait: Callable[[], None]) -> None:
        conn = self._connect()
        conn.execute("PRAGMA busy_timeout = 0")
        told = False
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) and "busy" not in str(error):
                    raise
            if not told:
                on_wait()
                told = True
                # From now on SQLite's busy handler waits in short steps inside each try.
                conn.execute(f"PRAGMA busy_timeout = {_TRY_MS}")
            stopping.check()

    def _release(self) -> None:
        if self._conn is not None and self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def lock_environment(ledger_path: str | os.PathLike[str]) -> dict[str, str]:
    """The environment entry that makes a project's load take the portfolio's company lock,
    a file next to its quota ledger ``ledger_path``."""
    return {COMPANY_LOCK_ENV: _SQLITE_SCHEME + str(Path(ledger_path).resolve().parent / LOCK_FILE)}


def company_lock_from_env(env: Mapping[str, str]) -> CompanyLock:
    """The lock named by :data:`COMPANY_LOCK_ENV`; :class:`NoLock` when unset. A value naming
    no usable lock is a ConfigError: going on without it could create a company's building
    blocks twice."""
    spec = env.get(COMPANY_LOCK_ENV, "").strip()
    if not spec:
        return NoLock()
    for scheme, module_name in _OTHER_SCHEMES.items():
        if spec.startswith(scheme):
            module = importlib.import_module(module_name)
            lock: CompanyLock = module.company_lock(spec[len(scheme) :])
            return lock
    if not spec.startswith(_SQLITE_SCHEME) or not spec[len(_SQLITE_SCHEME) :].strip():
        raise ConfigError(
            f"{COMPANY_LOCK_ENV} must be sqlite:<path> or prefect:<limit name>, got "
            f"{spec[:60]!r}. Run the project through `migrate portfolio run`, or unset it."
        )
    return SqliteCompanyLock(spec[len(_SQLITE_SCHEME) :].strip())
