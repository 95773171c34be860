"""The run log: ``logs/<run id>.jsonl``, one JSON object a line, optionally mirrored to a stream.

Each line holds ``time``, ``level``, ``run``, ``stage``, ``event`` and, when given, ``counts``
and a short ``message``. Callers log ids and counts, never request parameters; every line is
also passed through the redactor (tickets, tokens, passwords) and ticket URLs are cut, so a
slip cannot put a secret in the file. Safe to use from several threads.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from migrate.store.db import strip_secret_params

LEVELS = ("debug", "info", "warning", "error")
#: The run log that last recorded an error in this process: where the CLI appends the traceback
#: of a fault it prints as one line (migrate/faults.py).
last_error_log: Path | None = None


def _recorded_error(path: Path | None) -> None:
    global last_error_log
    last_error_log = path


class RunLog:
    """Writes events of one run to ``<folder>/<run id>.jsonl`` (0600), mirrored to ``stream``.

    The file opens at :meth:`start`, when the run has its id (``store.runs.recorded_run`` calls
    it); without a folder the events only go to the stream.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str] | None,
        *,
        stream: IO[str] | None = None,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.path: Path | None = None
        self.run_id: int | None = None
        self.stream = stream
        self._redact = redact
        self._lock = threading.Lock()
        self._file: IO[str] | None = None

    def start(self, run_id: int) -> None:
        """Write this run's events from now on to ``<folder>/<run_id>.jsonl``."""
        with self._lock:
            self.run_id = run_id
            if self.folder is None or self._file is not None:
                return
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.path = self.folder / f"{run_id}.jsonl"
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._file = os.fdopen(fd, "a", encoding="utf-8")

    def event(
        self,
        stage: str,
        event: str,
        *,
        level: str = "info",
        counts: Mapping[str, Any] | None = None,
        message: str | None = None,
        mirror: bool = True,
        **fields: Any,
    ) -> None:
        """Record one event; ``fields`` are extra JSON-able values (ids, offsets, sizes).

        ``mirror=False`` keeps it out of the stream (e.g. a summary the CLI prints anyway).
        """
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, not {level!r}")
        record: dict[str, Any] = {
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "level": level,
            "run": self.run_id,
            "stage": stage,
            "event": event,
        }
        if counts:
            record["counts"] = dict(counts)
        if message:
            record["message"] = message
        record.update(fields)
        line = self._clean(json.dumps(record, ensure_ascii=False, default=str))
        with self._lock:
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()
                if level == "error":
                    _recorded_error(self.path)
            if self.stream is not None and mirror:
                self.stream.write(self._clean(_readable(record)) + "\n")
                self.stream.flush()

    def info(self, stage: str, event: str, **kwargs: Any) -> None:
        self.event(stage, event, level="info", **kwargs)

    def warning(self, stage: str, event: str, **kwargs: Any) -> None:
        self.event(stage, event, level="warning", **kwargs)

    def error(self, stage: str, event: str, **kwargs: Any) -> None:
        self.event(stage, event, level="error", **kwargs)

    def _clean(self, text: str) -> str:
        text = strip_secret_params(text)
        return self._redact(text) if self._redact is not None else text

    @contextlib.contextmanager
    def capture(self, logger_name: str, stage: str) -> Iterator[None]:
        """Copy INFO and above from a stdlib logger (e.g. ``migrate.http`` retries) in here."""
        logger = logging.getLogger(logger_name)
        handler = _ForwardHandler(self, stage)
        previous = logger.level
        logger.addHandler(handler)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.setLevel(previous)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ForwardHandler(logging.Handler):
    def __init__(self, log: RunLog, stage: str) -> None:
        super().__init__(logging.INFO)
        self._log = log
        self._stage = stage

    def emit(self, record: logging.LogRecord) -> None:
        level = "warning" if record.levelno >= logging.WARNING else "info"
        if record.levelno >= logging.ERROR:
            level = "error"
        try:
            # The logger's own redacting filter has already masked known secrets.
            self._log.event(self._stage, "retry", level=level, message=record.getMessage())
        except Exception:  # a log line must never break the run
            self.handleError(record)


def _readable(record: Mapping[str, Any]) -> str:
    """One line for people: time level stage event key=value ..."""
    parts = [
        str(record["time"])[11:23],
        str(record["level"]).upper(),
        str(record["stage"]),
        str(record["event"]),
    ]
    for key, value in record.items():
        if key in ("time", "level", "stage", "event", "run"):
            continue
        if key == "counts" and isinstance(value, Mapping):
            parts.extend(f"{k}={v}" for k, v in value.items())
        elif key == "message":
            parts.append(f"- {value}")
        else:
            parts.append(f"{key}={value}")
    return " ".join(parts)
