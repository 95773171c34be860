"""One row per command invocation: what ran, with which arguments, how it ended.

Every stage records itself through :func:`recorded_run`, the one place that decides what a run
row says at its start and at its end (succeeded, failed or interrupted), so the stages cannot
disagree about it. All SQL on the ``runs`` table lives in this module.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from migrate.errors import MigrateError, StageFailed
from migrate.redaction import is_credential_key
from migrate.store.base import PROCESS_TOKEN as PROCESS_TOKEN  # re-exported
from migrate.store.db import Store, StoreError, process_alive, strip_secret_params, utc_now

if TYPE_CHECKING:
    from migrate.runlog import RunLog

FINAL_STATUSES = ("succeeded", "failed", "interrupted")
REDACTED = "[redacted]"

#: Exceptions that mean someone stopped the run (Ctrl-C, or a signal handler that exits): the run
#: ends "interrupted". Every other exception ends it "failed".
INTERRUPTIONS: tuple[type[BaseException], ...] = (KeyboardInterrupt, SystemExit)


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
            if is_credential_key(str(key)) and item not in (None, "")
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
    Stages use :func:`recorded_run`, which calls this.
    """
    with store.transaction():
        return _insert_run(store, command, args)


def _insert_run(store: Store, command: str, args: Mapping[str, Any] | None) -> int:
    """The INSERT of start_run; call inside a transaction."""
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


def list_runs(store: Store, command: str | None = None, *, status: str | None = None) -> list[Run]:
    """Every run (of `command`, with `status`, when given), oldest first."""
    sql = f"SELECT {_COLUMNS} FROM runs WHERE 1 = 1"
    params: tuple[Any, ...] = ()
    if command is not None:
        sql += " AND command = ?"
        params += (command,)
    if status is not None:
        sql += " AND status = ?"
        params += (status,)
    return [_row_to_run(row) for row in store.conn.execute(sql + " ORDER BY id", params)]


def run_rows(
    store: Store, command: str | None = None, *, status: str | None = None
) -> list[dict[str, Any]]:
    """Every run as stored, oldest first: JSON columns left as text for reports to read."""
    sql = f"SELECT {_COLUMNS} FROM runs WHERE 1 = 1"
    params: tuple[Any, ...] = ()
    if command is not None:
        sql += " AND command = ?"
        params += (command,)
    if status is not None:
        sql += " AND status = ?"
        params += (status,)
    names = _COLUMNS.split(", ")
    return [
        dict(zip(names, row, strict=True))
        for row in store.conn.execute(sql + " ORDER BY id", params)
    ]


def last_run_row(store: Store, command: str) -> dict[str, Any] | None:
    """The newest run of `command` as stored (JSON columns as text), or None."""
    row = store.conn.execute(
        f"SELECT {_COLUMNS} FROM runs WHERE command = ? ORDER BY id DESC LIMIT 1", (command,)
    ).fetchone()
    return None if row is None else dict(zip(_COLUMNS.split(", "), row, strict=True))


def latest_run_rows(store: Store) -> list[dict[str, Any]]:
    """The newest run of each command as stored (JSON columns as text), in id order."""
    names = _COLUMNS.split(", ")
    prefixed = ", ".join(f"r.{name}" for name in names)
    rows = store.conn.execute(
        f"SELECT {prefixed} "
        "FROM runs r JOIN (SELECT command, MAX(id) AS id FROM runs GROUP BY command) last "
        "ON last.id = r.id ORDER BY r.id"
    )
    return [dict(zip(names, row, strict=True)) for row in rows]


def has_succeeded(store: Store, command: str) -> bool:
    """Whether any run of `command` has succeeded."""
    return (
        store.conn.execute(
            "SELECT 1 FROM runs WHERE command = ? AND status = 'succeeded' LIMIT 1", (command,)
        ).fetchone()
        is not None
    )


def live_runs(store: Store, command: str, *, besides: int | None = None) -> list[Run]:
    """Runs of `command` still 'running' in a process that is alive (another command, now)."""
    return [
        run
        for run in list_runs(store, command, status="running")
        if run.id != besides and run.pid is not None and _other_process_alive(run.pid)
    ]


def _other_process_alive(pid: int) -> bool:
    return pid != os.getpid() and process_alive(pid)


# -- the recorded run: what every stage goes through -------------------------------------------


class RunSummary(Protocol):
    """What a run row keeps of a stage's result (every stage result provides both)."""

    def as_json(self) -> Mapping[str, Any] | None:
        """The ``counts`` column: a JSON-able dict of what the run did."""

    def requests_json(self) -> Mapping[str, int] | None:
        """The ``requests`` column: requests per endpoint, or None when the run made none."""


@dataclass(frozen=True)
class RunFigures:
    """A RunSummary from plain values: for a run that stops before it has a result."""

    counts: Mapping[str, Any] | None = None
    requests: Mapping[str, int] | None = None

    def as_json(self) -> Mapping[str, Any] | None:
        return self.counts

    def requests_json(self) -> Mapping[str, int] | None:
        return self.requests


#: Takes a lock for the run's command: entered inside the transaction that inserts the run row
#: (so the lock and the row commit together, or neither does), left after the run's end is
#: recorded.
Acquire = Callable[[Store, str], contextlib.AbstractContextManager[object]]


def writer_lock(store: Store, command: str) -> contextlib.AbstractContextManager[object]:
    """The staging DB's single-writer lock (store/writer.py), taken before the run row.

    Nested, not taken twice, when the stage's entry point already holds it (it takes the lock
    as it opens the store, before anything it writes ahead of the run).
    """
    from migrate.store.writer import acquire_writer

    return acquire_writer(store, command)


def run_status(error: BaseException | None) -> str:
    """How a run ends: succeeded (no error), interrupted (see INTERRUPTIONS) or failed."""
    if error is None:
        return "succeeded"
    return "interrupted" if isinstance(error, INTERRUPTIONS) else "failed"


class RecordedRun:
    """The run :func:`recorded_run` is recording; the stage tells it what to keep at the end."""

    def __init__(self, store: Store, run_id: int, command: str) -> None:
        self.store = store
        self.id = run_id
        self.command = command
        self._result: RunSummary | None = None
        self._so_far: Callable[[], RunSummary | None] | None = None

    def track(self, so_far: Callable[[], RunSummary | None]) -> None:
        """How to read what the run has done so far: recorded if it fails or is interrupted."""
        self._so_far = so_far

    def succeed(self, result: RunSummary) -> None:
        """The result to record when the block ends without an error."""
        self._result = result

    def summary(self, error: BaseException | None) -> RunSummary | None:
        """What to record: the result, else what the run had done (never raises)."""
        if error is None and self._result is not None:
            return self._result
        if isinstance(error, StageFailed) and _is_summary(error.partial):
            return error.partial  # type: ignore[no-any-return]
        if self._so_far is None:
            return None
        try:
            return self._so_far()
        except Exception:  # the store may be what failed; the error itself still gets recorded
            return None


def _is_summary(value: object) -> bool:
    return callable(getattr(value, "as_json", None)) and callable(
        getattr(value, "requests_json", None)
    )


@contextlib.contextmanager
def recorded_run(
    store: Store,
    command: str,
    args: Mapping[str, Any] | None = None,
    *,
    log: RunLog | None = None,
    acquire: Acquire | None = writer_lock,
) -> Iterator[RecordedRun]:
    """Record one run of `command` around the block: its start, then how it ended.

    In one transaction: runs of dead processes are marked interrupted, ``acquire`` (the writer
    lock: one command writes to a staging DB at a time) is taken, and the run
    row is inserted. ``log`` starts its file ``<run id>.jsonl`` and copies HTTP retries in.

    When the block ends the row gets its status (:func:`run_status`), the counts and requests of
    the result given to :meth:`RecordedRun.succeed` (or, after an error, of the StageFailed's
    partial result or :meth:`RecordedRun.track`'s reading) and the error text; the log gets the
    matching last line. The exception itself always propagates unchanged.
    """
    lock: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    with store.transaction():
        if acquire is not None:
            lock = acquire(store, command)
            lock.__enter__()
        try:
            run_id = _insert_run(store, command, args)
        except BaseException as exc:
            lock.__exit__(type(exc), exc, exc.__traceback__)
            raise
    try:
        run = RecordedRun(store, run_id, command)
        if log is not None:
            log.start(run_id)
        capture = log.capture("migrate.http", command) if log else contextlib.nullcontext()
        try:
            with capture:
                yield run
        except BaseException as exc:
            _roll_back_left_open(store)
            _record_end(run, log, exc)
            raise
        _record_end(run, log, None)
    finally:
        lock.__exit__(None, None, None)


def _roll_back_left_open(store: Store) -> None:
    """Roll back a transaction the block left open when it raised, before the end is recorded.

    The block's own transactions have all ended by now (the run row was committed before it,
    so the run is never inside one), yet a Ctrl-C landing inside a ``with`` statement's
    ``__enter__``, after BEGIN, leaves the transaction open with nobody to end it. The run's
    final status would join it and be lost when the process exits: the run stayed "running".
    What the open transaction holds is a page the interrupted block never finished.
    """
    if store.conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            store.conn.execute("ROLLBACK")


def _record_end(run: RecordedRun, log: RunLog | None, error: BaseException | None) -> None:
    status = run_status(error)
    summary = run.summary(error)
    counts = summary.as_json() if summary is not None else None
    requests = summary.requests_json() if summary is not None else None
    message = None
    if error is not None:
        text = str(error) or type(error).__name__
        message = text if isinstance(error, MigrateError) else f"{type(error).__name__}: {text}"
    try:
        if log is not None and error is None:
            log.info(run.command, "summary", mirror=False, result=counts, requests=requests)
        elif log is not None:
            log.error(run.command, status, message=message)
        finish_run(
            run.store,
            run.id,
            status,
            counts,
            requests,
            error=None if error is None else str(error) or type(error).__name__,
        )
    except Exception:
        if error is None:
            raise
        # Recording must not hide why the run stopped (a full disk fails both); the row stays
        # 'running' and the next command marks it interrupted.
