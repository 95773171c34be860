"""The rate budget's readings of a load run (table ``rate_readings``): all its SQL.

Load keeps a :class:`~migrate.clients.ratebudget.Reading` of every answer Procore gave it and
stores them when the run ends (failed and stopped runs included); the report draws the quota
charts from them, in the windows Procore counts (``migrate/report/quota.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple, Protocol

from migrate.store.db import Store


class ReadingLike(Protocol):
    """What is stored of one answer (``migrate.clients.ratebudget.Reading`` has it)."""

    @property
    def sent_at(self) -> float: ...
    @property
    def answered_at(self) -> float: ...
    @property
    def method(self) -> str: ...
    @property
    def endpoint(self) -> str: ...
    @property
    def status(self) -> int: ...
    @property
    def limit(self) -> int | None: ...
    @property
    def remaining(self) -> int | None: ...
    @property
    def reset(self) -> float | None: ...


class StoredReading(NamedTuple):
    """One row of ``rate_readings`` (the fields of :class:`ReadingLike`)."""

    sent_at: float
    answered_at: float
    method: str
    endpoint: str
    status: int
    limit: int | None
    remaining: int | None
    reset: float | None


_COLUMNS = "sent_at, answered_at, method, endpoint, status, rate_limit, remaining, reset"


def save_readings(store: Store, run_id: int, readings: Iterable[ReadingLike]) -> int:
    """Store a run's readings; how many were stored."""
    rows = [
        (
            run_id,
            r.sent_at,
            r.answered_at,
            r.method,
            r.endpoint,
            r.status,
            r.limit,
            r.remaining,
            r.reset,
        )
        for r in readings
    ]
    if rows:
        with store.transaction():
            store.conn.executemany(
                f"INSERT INTO rate_readings (run_id, {_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
    return len(rows)


def run_readings(store: Store, run_id: int) -> list[StoredReading]:
    """A run's readings, oldest sent first."""
    return [
        StoredReading(*row)
        for row in store.conn.execute(
            f"SELECT {_COLUMNS} FROM rate_readings WHERE run_id = ? ORDER BY sent_at, rowid",
            (run_id,),
        )
    ]


def runs_with_readings(store: Store) -> dict[int, tuple[int, int]]:
    """Run id -> (answers, write answers) for every run that stored readings."""
    return {
        int(run_id): (int(answers), int(writes or 0))
        for run_id, answers, writes in store.conn.execute(
            "SELECT run_id, COUNT(*), SUM(method != 'GET') FROM rate_readings GROUP BY run_id"
        )
    }
