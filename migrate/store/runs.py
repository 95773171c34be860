"""One row per command invocation: what ran, with which arguments, how it ended."""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from migrate.store.db import Store, StoreError, process_alive, strip_secret_params, utc_now

FINAL_STATUSES = ("succeeded", "failed", "interrupted")
REDACTED = "[redacted]"

# Identifies this process in runs.process_token: after a container restart the new process can
# get the same pid as the dead one, and must not mistake the dead run for its own.
PROCESS_TOKEN = secrets.token_hex(8)

_SECRET_KEY = re.compile(
    r"pass|secret|token|ticket|api_?key|^sig$|signature_key|authori[sz]ation|cookie|credential",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Run:
    """One row of the runs table, JSON columns parsed."""

    id: int
    command: str
    args: dict[str, Any]
    pid: int | None
    started_at: str
    finished_at: str | None
    status: str
    counts: dict[str, Any] | None
    requests: dict[str, Any] | None
    error: str | None


def redact_args(value: Any) -> Any:
    """Copy of command arguments with secret-looking keys replaced and URL tickets removed."""
    if isinstance(value, Mapping):
        return {
            str(key): REDACTED
            if _SECRET_KEY.search(str(key)) and item not in (None, "")
            else redact_args(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_args(item) for item in value]
    if isinstance(value, str):
        return strip_secret_params(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return strip_secret_params(str(value))  # paths, enums …


def _json(value: Mapping[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


def _row_to_run(row: tuple[Any, ...]) -> Run:
    run_id, command, args, pid, started, finished, status, counts, requests, error = row
    return Run(
        id=run_id,
        command=command,
        args=json.loads(args),
        pid=pid,
        started_at=started,
        finished_at=finished,
        status=status,
        counts=None if counts is None else json.loads(counts),
        requests=None if requests is None else json.loads(requests),
        error=error,
    )


_COLUMNS = "id, command, args, pid, started_at, finished_at, status, counts, requests, error"


def start_run(store: Store, command: str, args: Mapping[str, Any] | None = None) -> int:
    """Record the start of `command` and return the run id.

    First marks as interrupted any earlier run whose process has died without finishing it.
    """
    with store.transaction():
        mark_interrupted_runs(store)
        cursor = store.conn.execute(
            "INSERT INTO runs (command, args, pid, process_token, started_at, status) "
            "VALUES (?, ?, ?, ?, ?, 'running')",
            (command, _json(redact_args(args or {})), os.getpid(), PROCESS_TOKEN, utc_now()),
        )
        return int(cursor.lastrowid or 0)


def finish_run(
    store: Store,
    run_id: int,
    status: str,
    counts: Mapping[str, Any] | None,
    requests: Mapping[str, Any] | None = None,
    error: str | None = None,
) -> None:
    """Record how a running run ended (succeeded, failed or interrupted)."""
    if status not in FINAL_STATUSES:
        raise ValueError(f"run status must be one of {', '.join(FINAL_STATUSES)}, not {status!r}")
    with store.transaction():
        row = store.conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"no run {run_id} in {store.path}")
        if row[0] != "running":
            raise StoreError(f"run {run_id} already ended as {row[0]!r}; cannot mark it {status!r}")
        store.conn.execute(
            "UPDATE runs SET status = ?, finished_at = ?, counts = ?, requests = ?, error = ? "
            "WHERE id = ?",
            (
                status,
                utc_now(),
                _json(counts),
                _json(requests),
                None if error is None else strip_secret_params(error),
                run_id,
            ),
        )


def get_run(store: Store, run_id: int) -> Run:
    """The run with this id (StoreError if there is none)."""
    row = store.conn.execute(f"SELECT {_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise StoreError(f"no run {run_id} in {store.path}")
    return _row_to_run(row)


def last_run(store: Store, command: str, *, status: str | None = None) -> Run | None:
    """The most recent run of `command` (optionally only with this status), or None."""
    sql = f"SELECT {_COLUMNS} FROM runs WHERE command = ?"
    params: tuple[Any, ...] = (command,)
    if status is not None:
        sql += " AND status = ?"
        params += (status,)
    row = store.conn.execute(sql + " ORDER BY id DESC LIMIT 1", params).fetchone()
    return None if row is None else _row_to_run(row)


def mark_interrupted_runs(store: Store) -> list[int]:
    """Mark 'running' runs whose process is gone as interrupted; return their ids.

    A run still 'running' whose process no longer exists was killed (kill -9, OOM, reboot)
    before it could record its end. Runs of live processes (this one, or a concurrent one) are
    left alone.
    """
    me = os.getpid()
    dead: list[tuple[int, int | None]] = []
    with store.transaction():
        for run_id, pid, token in store.conn.execute(
            "SELECT id, pid, process_token FROM runs WHERE status = 'running' ORDER BY id"
        ).fetchall():
            if pid == me:
                if token == PROCESS_TOKEN:
                    continue
            elif pid is not None and process_alive(pid):
                continue
            dead.append((run_id, pid))
        now = utc_now()
        for run_id, pid in dead:
            store.conn.execute(
                "UPDATE runs SET status = 'interrupted', error = ? WHERE id = ?",
                (f"process {pid} ended without finishing this run (noticed at {now})", run_id),
            )
    return [run_id for run_id, _ in dead]
