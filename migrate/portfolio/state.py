"""The portfolio's own record: one row per attempt to run a project (``portfolio.sqlite``).

Each project's staging DB keeps what its stages did; this file keeps only what the portfolio
needs on top: which attempt ran when, in which stage it is or stopped, and its outcome, so
``migrate portfolio status`` can show every project and a rerun knows which ones to resume.
Written by the worker processes (short transactions, WAL, SQLite's own locking, which holds on
Windows too) and read by the parent.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from migrate.clients.sharedquota import connect_shared
from migrate.portfolio.project import ProjectOutcome
from migrate.processes import process_alive

_SCHEMA = """
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    project TEXT NOT NULL,
    stages TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    stage TEXT,
    status TEXT NOT NULL,
    outcome TEXT,
    pid INTEGER
);
CREATE INDEX IF NOT EXISTS attempts_project ON attempts (project, id);
"""
#: An attempt's status: still going, every stage finished, or stopped by a failure / Ctrl-C.
RUNNING, COMPLETED, FAILED = "running", "completed", "failed"


@dataclass(frozen=True)
class Attempt:
    """One attempt to run a project's stages."""

    id: int
    project: str
    stages: tuple[str, ...]
    started_at: str
    finished_at: str | None
    stage: str | None  # the stage running now, or the last one started
    status: str
    outcome: ProjectOutcome | None
    pid: int | None = None  # the worker process

    @property
    def alive(self) -> bool:
        """Still running in a live worker process (a killed portfolio leaves 'running' rows)."""
        return self.status == RUNNING and self.pid is not None and process_alive(self.pid)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = connect_shared(path)
    try:
        conn.executescript(_SCHEMA)
        yield conn
    finally:
        conn.close()


def start_attempt(path: str | os.PathLike[str], project: str, stages: tuple[str, ...]) -> int:
    with _connect(Path(path)) as conn:
        cursor = conn.execute(
            "INSERT INTO attempts (project, stages, started_at, status) VALUES (?, ?, ?, ?)",
            (project, ",".join(stages), _now(), RUNNING),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid


def set_pid(path: str | os.PathLike[str], attempt_id: int, pid: int) -> None:
    with _connect(Path(path)) as conn:
        conn.execute("UPDATE attempts SET pid = ? WHERE id = ?", (pid, attempt_id))


def mark_stage(path: str | os.PathLike[str], attempt_id: int, stage: str) -> None:
    with _connect(Path(path)) as conn:
        conn.execute("UPDATE attempts SET stage = ? WHERE id = ?", (stage, attempt_id))


def finish_attempt(path: str | os.PathLike[str], attempt_id: int, outcome: ProjectOutcome) -> None:
    """Record how the attempt ended (only once: a later call leaves the first outcome)."""
    status = COMPLETED if outcome.completed else FAILED
    with _connect(Path(path)) as conn:
        conn.execute(
            "UPDATE attempts SET finished_at = ?, status = ?, outcome = ? "
            "WHERE id = ? AND status = ?",
            (_now(), status, json.dumps(outcome.as_json()), attempt_id, RUNNING),
        )


def get_attempt(path: str | os.PathLike[str], attempt_id: int) -> Attempt:
    with _connect(Path(path)) as conn:
        row = conn.execute(f"SELECT {_COLUMNS} FROM attempts WHERE id = ?", (attempt_id,))
        return _attempt(row.fetchone())


def latest_attempts(path: str | os.PathLike[str]) -> dict[str, Attempt]:
    """The newest attempt of each project that has one."""
    if not Path(path).exists():
        return {}
    with _connect(Path(path)) as conn:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM attempts WHERE id IN "
            "(SELECT MAX(id) FROM attempts GROUP BY project)"
        ).fetchall()
    return {attempt.project: attempt for attempt in map(_attempt, rows)}


_COLUMNS = "id, project, stages, started_at, finished_at, stage, status, outcome, pid"


def _attempt(row: tuple[Any, ...]) -> Attempt:
    outcome = ProjectOutcome.from_json(json.loads(row[7])) if row[7] else None
    return Attempt(
        id=int(row[0]),
        project=str(row[1]),
        stages=tuple(s for s in str(row[2]).split(",") if s),
        started_at=str(row[3]),
        finished_at=row[4],
        stage=row[5],
        status=str(row[6]),
        outcome=outcome,
        pid=row[8],
    )
