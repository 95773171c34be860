"""One Procore quota shared by every process of a portfolio: a small SQLite ledger (issue 18).

Procore counts requests per app and company, so projects migrated at once spend one quota.
Each process's :class:`~migrate.clients.ratebudget.RateBudget` gets a :class:`LedgerSpendStore`
(see :class:`~migrate.clients.ratebudget.SpendStore`): before every request it claims a slot in
the ledger, in one short ``BEGIN IMMEDIATE`` transaction, so two processes never both take the
last slot. SQLite's file locking works the same on Windows, macOS and Linux; the ledger uses WAL
so readers (``migrate portfolio status``) never wait for a claim.

How a claim decides, and why it is safe: the ledger keeps, per request, when it was sent and
when its answer arrived. Procore counts a request at some moment between the two, so a request
it still counts in a sliding window of ``seconds`` is one whose answer came less than
``seconds`` ago, or that is still in flight. The ledger counts exactly those (plus ``safety``
seconds) for every window, and lets a request go only while each count is below the window's
limit less its reserve. The same rule keeps a window that resets all at once (the other reading
of Procore's pages) within its limit: every interval that window counts is one of those the
sliding rule bounds. A request that never gets an answer (its process died) stops holding a
slot ``stale_after`` seconds after it was sent. A 429 seen by any process holds every process
until its ``Retry-After``.

The windows are the ledger's own settings (written once by whoever creates it, e.g. from
``portfolio.toml`` ``[quota]``), so every process paces by the same numbers. Processes find the
ledger through the environment variable :data:`QUOTA_ENV` (``ledger:<path>``), which the
portfolio sets for every project it runs; :func:`spend_store_from_env` is what
:func:`migrate.clients.factory.procore_client` calls.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migrate.clients.companylock import lock_environment
from migrate.clients.ratebudget import SpendStore
from migrate.errors import ConfigError
from migrate.store.base import immediate_transaction

#: ``ledger:<path of the SQLite ledger>``; unset: every process has a quota of its own.
QUOTA_ENV = "MIGRATE_SHARED_QUOTA"
#: Who spends (a project's name), for the ledger's totals; the process id when unset.
QUOTA_HOLDER_ENV = "MIGRATE_SHARED_QUOTA_HOLDER"
_LEDGER_SCHEME = "ledger:"
#: Other shared quotas, by scheme: the module whose ``spend_store(spec, holder)`` builds one
#: (imported only when named, e.g. Prefect's rate limits on several machines).
_OTHER_SCHEMES = {"prefect:": "migrate.portfolio.prefect_quota"}
#: How long a process waits for another's claim to finish before SQLite gives up.
_BUSY_TIMEOUT_MS = 30_000
#: While the request that must leave the window first is still in flight, look again after this.
_IN_FLIGHT_POLL = 0.02
_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_settings (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    settings TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS spends (
    id INTEGER PRIMARY KEY,
    holder TEXT NOT NULL,
    sent_at REAL NOT NULL,
    done_at REAL,
    status INTEGER
);
CREATE INDEX IF NOT EXISTS spends_done ON spends (done_at);
CREATE TABLE IF NOT EXISTS holds (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    until REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS totals (
    holder TEXT PRIMARY KEY,
    requests INTEGER NOT NULL DEFAULT 0,
    rate_limited INTEGER NOT NULL DEFAULT 0
);
"""


@dataclass(frozen=True)
class QuotaWindow:
    """At most ``limit`` requests in any ``seconds`` (Procore: 3 600 an hour, and a spike
    window of 10 seconds)."""

    limit: int
    seconds: float


@dataclass(frozen=True)
class LedgerSettings:
    """What every process sharing the ledger paces by."""

    windows: tuple[QuotaWindow, ...]
    #: Share of each window's limit left unused, so a person can still use Procore.
    reserve_fraction: float = 0.01
    #: Seconds added to every window, for clocks and for the time an answer takes to arrive.
    safety: float = 0.02
    #: A request without an answer after this long (its process died) stops holding a slot.
    stale_after: float = 600.0

    def allowed(self, window: QuotaWindow) -> int:
        """Requests the ledger lets into ``window``: its limit less the reserve (at least 1)."""
        return max(1, window.limit - int(window.limit * self.reserve_fraction))

    def as_json(self) -> dict[str, Any]:
        return {
            "windows": [[w.limit, w.seconds] for w in self.windows],
            "reserve_fraction": self.reserve_fraction,
            "safety": self.safety,
            "stale_after": self.stale_after,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LedgerSettings:
        return cls(
            windows=tuple(QuotaWindow(int(limit), float(sec)) for limit, sec in data["windows"]),
            reserve_fraction=float(data["reserve_fraction"]),
            safety=float(data["safety"]),
            stale_after=float(data["stale_after"]),
        )


def connect_shared(path: Path) -> sqlite3.Connection:
    """A connection to a small SQLite file several processes write: WAL (readers never wait),
    a long busy timeout (writers queue), explicit transactions (``isolation_level=None``)."""
    conn = sqlite3.connect(
        path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def create_ledger(path: str | os.PathLike[str], settings: LedgerSettings) -> Path:
    """Create the ledger at ``path`` (or set its windows anew); returns its absolute path."""
    where = Path(path).resolve()
    where.parent.mkdir(parents=True, exist_ok=True)
    conn = connect_shared(where)
    try:
        conn.executescript(_SCHEMA)
        with immediate_transaction(conn):
            conn.execute(
                "INSERT INTO ledger_settings (id, settings) VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET settings = excluded.settings",
                (json.dumps(settings.as_json()),),
            )
    finally:
        conn.close()
    return where


def quota_environment(ledger_path: str | os.PathLike[str], holder: str) -> dict[str, str]:
    """The environment entries that make every Procore client of a process spend the ledger's
    quota (see :func:`spend_store_from_env`), as ``holder``, and its load take the company lock
    next to the ledger (:mod:`migrate.clients.companylock`)."""
    return {
        QUOTA_ENV: _LEDGER_SCHEME + str(Path(ledger_path).resolve()),
        QUOTA_HOLDER_ENV: holder,
        **lock_environment(ledger_path),
    }


def spend_store_from_env(env: Mapping[str, str]) -> SpendStore | None:
    """The shared quota named by :data:`QUOTA_ENV`, or None when it is not set.

    A value that names no usable ledger is a ConfigError: running on a private quota instead
    would overspend the shared one.
    """
    spec = env.get(QUOTA_ENV, "").strip()
    if not spec:
        return None
    holder = env.get(QUOTA_HOLDER_ENV, "").strip() or f"pid-{os.getpid()}"
    for scheme, module_name in _OTHER_SCHEMES.items():
        if spec.startswith(scheme):
            module = importlib.import_module(module_name)
            store: SpendStore = module.spend_store(spec[len(scheme) :], holder)
            return store
    if not spec.startswith(_LEDGER_SCHEME):
        raise ConfigError(
            f"{QUOTA_ENV} must be ledger:<path of the quota ledger>, got {spec[:60]!r}. "
            "Run the project through `migrate portfolio run`, or unset it."
        )
    path = Path(spec[len(_LEDGER_SCHEME) :])
    if not path.is_file():
        raise ConfigError(
            f"{QUOTA_ENV} names the quota ledger {path}, which does not exist. "
            "Run `migrate portfolio run`, which creates it, or unset the variable."
        )
    return LedgerSpendStore(path, holder)


class LedgerSpendStore:
    """A :class:`~migrate.clients.ratebudget.SpendStore` on the SQLite ledger. Thread-safe."""

    def __init__(self, path: str | os.PathLike[str], holder: str) -> None:
        self.path = Path(path)
        self.holder = holder
        self._lock = threading.Lock()
        self._conn = connect_shared(self.path)
        row = self._conn.execute("SELECT settings FROM ledger_settings WHERE id = 1").fetchone()
        if row is None:
            self._conn.close()
            raise ConfigError(f"The quota ledger {self.path} has no windows set. Recreate it.")
        self.settings = LedgerSettings.from_json(json.loads(row[0]))
        # Until then no claim can succeed: spares the ledger a transaction per waiting thread.
        self._not_before = -math.inf
        self._claims = 0

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- SpendStore --------------------------------------------------------------------------
    def claim(self, now: float) -> tuple[float, object]:
        with self._lock:
            if now < self._not_before:
                return self._not_before - now, None
            with immediate_transaction(self._conn) as conn:
                wait = self._wait(conn, now)
                if wait > 0:
                    self._not_before = now + wait
                    return wait, None  # nothing written: the commit is empty
                cursor = conn.execute(
                    "INSERT INTO spends (holder, sent_at) VALUES (?, ?)", (self.holder, now)
                )
                conn.execute(
                    "INSERT INTO totals (holder, requests) VALUES (?, 1) "
                    "ON CONFLICT (holder) DO UPDATE SET requests = requests + 1",
                    (self.holder,),
                )
                self._claims += 1
                if self._claims % 200 == 0:
                    self._forget(conn, now)
            return 0.0, cursor.lastrowid

    def settle(self, token: object, now: float, status: int | None) -> None:
        with self._lock:
            with immediate_transaction(self._conn) as conn:
                if status == 429:
                    # A refused request takes no slot.
                    conn.execute("DELETE FROM spends WHERE id = ?", (token,))
                    conn.execute(
                        "UPDATE totals SET requests = requests - 1, "
                        "rate_limited = rate_limited + 1 WHERE holder = ?",
                        (self.holder,),
                    )
                else:
                    conn.execute(
                        "UPDATE spends SET done_at = ?, status = ? WHERE id = ?",
                        (now, status, token),
                    )
            # A slot may have freed up: let the next claim look at the ledger.
            self._not_before = -math.inf

    def hold_until(self, until: float) -> None:
        with self._lock, immediate_transaction(self._conn) as conn:
            conn.execute(
                "INSERT INTO holds (id, until) VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET until = max(until, excluded.until)",
                (until,),
            )

    # -- deciding (transaction open) ---------------------------------------------------------
    def _wait(self, conn: sqlite3.Connection, now: float) -> float:
        """Seconds until every window has room for one more request; 0 or less: now."""
        settings = self.settings
        row = conn.execute("SELECT until FROM holds WHERE id = 1").fetchone()
        wait = row[0] - now if row is not None else 0.0
        stale = settings.stale_after
        for window in settings.windows:
            allowed = settings.allowed(window)
            since = now - window.seconds - settings.safety
            # In flight counts as answered "at the latest `stale` after it was sent".
            held = conn.execute(
                "SELECT COUNT(*) FROM spends WHERE done_at > ? "
                "OR (done_at IS NULL AND sent_at > ?)",
                (since, since - stale),
            ).fetchone()[0]
            if held < allowed:
                continue
            # The (held - allowed + 1)-th request to leave the window frees the slot we need.
            leaving = conn.execute(
                "SELECT done_at FROM spends WHERE done_at > ? "
                "OR (done_at IS NULL AND sent_at > ?) "
                "ORDER BY done_at IS NULL, done_at LIMIT 1 OFFSET ?",
                (since, since - stale, held - allowed),
            ).fetchone()
            if leaving is None or leaving[0] is None:
                wait = max(wait, _IN_FLIGHT_POLL)  # frees when an answer arrives
            else:
                wait = max(wait, leaving[0] + window.seconds + settings.safety - now, 0.001)
        return wait

    def _forget(self, conn: sqlite3.Connection, now: float) -> None:
        """Drop requests no window can hold any more (totals keep the count)."""
        longest = max((w.seconds for w in self.settings.windows), default=0.0)
        horizon = now - longest - self.settings.safety - 1.0
        conn.execute(
            "DELETE FROM spends WHERE done_at < ? OR (done_at IS NULL AND sent_at < ?)",
            (horizon, horizon - self.settings.stale_after),
        )


def ledger_totals(path: str | os.PathLike[str]) -> dict[str, dict[str, int]]:
    """Per holder: requests spent and 429s seen, as the ledger recorded them."""
    conn = connect_shared(Path(path))
    try:
        rows = conn.execute("SELECT holder, requests, rate_limited FROM totals").fetchall()
    finally:
        conn.close()
    return {holder: {"requests": n, "rate_limited": limited} for holder, n, limited in rows}
