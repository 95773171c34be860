"""The rate budget's readings of a load run (table ``rate_readings``): all its SQL.

Load keeps a :class:`~migrate.ratereading.Reading` of every answer Procore gave it and
stores them when the run ends (failed and stopped runs included); the report draws the quota
charts from them, in the windows Procore counts (``migrate/report/quota.py``).
"""

from __future__ import annotations

from collections.abc import Iterable

from migrate.ratereading import Reading
from migrate.store.db import Store

#: The columns in the order of Reading's fields (``limit`` is a keyword in SQL).
_COLUMNS = "sent_at, answered_at, method, endpoint, status, rate_limit, remaining, reset"


def save_readings(store: Store, run_id: int, readings: Iterable[Reading]) -> int:
    """Store a run's readings; how many were stored."""
    rows = [(run_id, *reading) for reading in readings]
    if rows:
        with store.transaction():
            store.conn.executemany(
                f"INSERT INTO rate_readings (run_id, {_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
    return len(rows)


def run_readings(store: Store, run_id: int) -> list[Reading]:
    """A run's readings, oldest sent first."""
    return [
        Reading(*row)
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
