"""OS and SQLite faults as one line: what failed, which path, what to fix, the command to re-run.

A full disk, a read-only folder, a missing permission or a damaged staging DB is not a bug in
migrate, and a 40-line traceback hides the one fact the engineer needs: which path, and what to
do about it. :func:`describe_fault` is the one place that tells these faults apart and words
them (the CLI calls it for every OSError and sqlite3.Error that reaches it); the traceback is
kept by :func:`keep_traceback` in the run log that recorded the failure, or else in a file in
the logs folder, and the message names where.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sqlite3
import tempfile
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from migrate.errors import EnvironmentFault, one_line
from migrate.store.db import strip_secret_params

__all__ = ["describe_fault", "keep_traceback", "staging_places"]

# SQLite's own wording (sqlite3_errstr), which is all a sqlite3.Error carries.
_SQLITE_FULL = "database or disk is full"
_SQLITE_READ_ONLY = "attempt to write a readonly database"
_SQLITE_DAMAGED = ("file is not a database", "database disk image is malformed")
_SQLITE_CANNOT_OPEN = "unable to open database file"
_SQLITE_IO = "disk i/o error"
#: Below this much free space, a disk I/O error is taken for a full disk (SQLite cannot even
#: create its 32 KiB -shm file then, and says "disk I/O error" rather than "full").
_NEARLY_FULL = 1024 * 1024
_SQLITE_LOCKED = ("database is locked", "database table is locked")

_READ_ONLY = {errno.EROFS}
_NO_ACCESS = {errno.EACCES, errno.EPERM}
_NOT_A_FOLDER = {errno.ENOTDIR, errno.EEXIST}
_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}


def staging_places(
    staging_path: Path | None,
    blobs: Path | None = None,
    logs: Path | None = None,
    report: Path | None = None,
) -> dict[str, Path]:
    """The setting that names each place migrate writes, for "point <setting> elsewhere"."""
    places = {
        "[staging] path": staging_path,
        "[staging] blobs": blobs,
        "[staging] logs": logs,
        "--out": report,
    }
    return {setting: Path(path) for setting, path in places.items() if path is not None}


def describe_fault(
    exc: BaseException,
    *,
    places: Mapping[str, Path],
    rerun: str,
    details: str = "",
) -> EnvironmentFault | None:
    """The one-line EnvironmentFault (exit 1) for an OS or SQLite fault; None for anything else.

    `places` maps settings to paths (see staging_places): a sqlite3.Error is about the staging
    DB, an OSError names its own path. `rerun` is the exact command to run after the fix,
    `details` where the traceback was kept. A sqlite3.Error that is not a fault of the disk or
    the file (a constraint, a bad query) is a bug: None, so it keeps its traceback.
    """
    database = places.get("[staging] path")
    if isinstance(exc, sqlite3.Error):
        if database is None:
            return None
        return _sqlite_fault(exc, database, places, rerun, details)
    if isinstance(exc, OSError):
        return _os_fault(exc, places, rerun, details)
    return None


def _sqlite_fault(
    exc: sqlite3.Error,
    database: Path,
    places: Mapping[str, Path],
    rerun: str,
    details: str,
) -> EnvironmentFault | None:
    text = str(exc).lower()
    setting = _setting_for(database, places)
    if _SQLITE_FULL in text:
        fix = _full_fix(setting)
        what = f"The staging DB {database} cannot grow: {exc}"
    elif _SQLITE_READ_ONLY in text:
        what = f"The staging DB {database} cannot be written: {exc}"
        fix = (
            "Make the file, its -wal/-shm and its folder writable for this user (or move them to "
            "a writable disk)"
        )
    elif any(marker in text for marker in _SQLITE_DAMAGED):
        what = f"The staging DB {database} is damaged ({exc}); migrate has not changed it"
        fix = (
            "Restore it from a backup, or point [staging] path and blobs at new files to start "
            "a new staging DB"
        )
        return _fault(what, fix, database, rerun, details, kept=False)
    elif _SQLITE_IO in text and _free_space(database) < _NEARLY_FULL:
        fix = _full_fix(setting)
        what = f"The disk holding the staging DB {database} is full: {exc}"
    elif _SQLITE_IO in text:
        what = f"SQLite could not read or write the staging DB {database}: {exc}"
        fix = "Check that its disk is attached and healthy and has free space"
    elif _SQLITE_CANNOT_OPEN in text:
        what = f"SQLite cannot open or read the staging DB {database}: {exc}"
        fix = (
            "Check that its folder exists and that the file and folder are readable and "
            "writable for this user"
        )
    elif any(marker in text for marker in _SQLITE_LOCKED):
        what = f"The staging DB {database} is locked by another program: {exc}"
        fix = "Wait for it to finish"
    else:
        return None
    return _fault(what, fix, database, rerun, details)


def _os_fault(
    exc: OSError, places: Mapping[str, Path], rerun: str, details: str
) -> EnvironmentFault:
    path = Path(exc.filename) if exc.filename not in (None, "") else None
    where = str(path) if path is not None else _somewhere(places)
    setting = _setting_for(path, places) if path is not None else None
    reason = exc.strerror or type(exc).__name__
    code = exc.errno
    if code in _FULL:
        what = f"No space left to write {where} ({reason})"
        fix = _full_fix(setting)
    elif code in _READ_ONLY:
        what = f"{where} is on a read-only file system ({reason})"
        fix = "Remount it writable" + (f" or point {setting} at a writable disk" if setting else "")
    elif code in _NO_ACCESS:
        what = f"Permission denied for {where} ({reason})"
        fix = "Give this user write access to it and its folder" + (
            f", or point {setting} at a folder this user owns" if setting else ""
        )
    elif code in _NOT_A_FOLDER:
        what = f"{where} is in the way: a file is where migrate needs a folder ({reason})"
        fix = "Move that file away" + (f", or point {setting} at a folder" if setting else "")
    elif code == errno.EISDIR:
        what = f"{where} is a folder where migrate needs a file ({reason})"
        fix = "Move that folder away" + (f", or point {setting} at a file" if setting else "")
    elif code == errno.ENOENT:
        what = f"{where} does not exist ({reason})"
        fix = "Create it, or fix the path in the config"
    else:
        name = errno.errorcode.get(code, "") if code is not None else ""
        what = f"{where}: {reason}" + (f" ({name})" if name else "")
        fix = "Fix the cause"
    return _fault(what, fix, path or where, rerun, details)


def _fault(
    what: str, fix: str, path: Path | str, rerun: str, details: str, *, kept: bool = True
) -> EnvironmentFault:
    message = f"{what.rstrip('.')}. {fix}, then run `{rerun}`."
    if kept:
        message += " What was recorded before the fault is kept."
    if details:
        message += f" Traceback: {details}"
    return EnvironmentFault(message, path=str(path), details=details)


def _free_space(path: Path) -> int:
    try:
        return shutil.disk_usage(_absolute(path).parent).free
    except OSError:
        return _NEARLY_FULL  # unknown: do not claim the disk is full


def _full_fix(setting: str | None) -> str:
    where = f", or point {setting} at a disk with room" if setting else ""
    return f"Free space on that disk{where}"


def _setting_for(path: Path, places: Mapping[str, Path]) -> str | None:
    """The setting whose path is `path`, holds it, or is its -wal/-shm/-journal."""
    target = _absolute(path)
    best: tuple[int, str] | None = None
    for setting, place in places.items():
        root = _absolute(place)
        side_file = target.parent == root.parent and target.name.startswith(root.name + "-")
        if target == root or side_file or root in target.parents:
            depth = len(root.parts)
            if best is None or depth > best[0]:
                best = (depth, setting)
    return best[1] if best else None


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path))


def _somewhere(places: Mapping[str, Path]) -> str:
    if not places:
        return "a file migrate writes"
    return "one of " + ", ".join(f"{setting} {path}" for setting, path in places.items())


# -- the traceback ----------------------------------------------------------------------------


def keep_traceback(exc: BaseException, logs: Path | None) -> str:
    """Write `exc`'s traceback where it can be read later; return that path ("" if nowhere).

    The run log that recorded the failure gets it as one more JSON line; without one (the
    fault came before any run log was open), a new file ``error-<time>-<pid>.txt`` in the logs
    folder, or in the system's temporary folder when the logs folder is itself the fault.
    """
    from migrate import runlog

    text = strip_secret_params("".join(traceback.format_exception(exc)))
    failed_log = runlog.last_error_log
    if failed_log is not None:
        try:
            _append_traceback(failed_log, text)
            return str(failed_log)
        except OSError:
            pass
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"error-{stamp}-{os.getpid()}"
    if logs is not None:
        try:
            logs.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = logs / f"{name}.txt"
            fd = os.open(
                path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600
            )
            _write_or_remove(fd, path, text)
            return str(path)
        except OSError:
            pass
    try:
        fd, temp = tempfile.mkstemp(prefix=f"migrate-{name}-", suffix=".txt")
        _write_or_remove(fd, Path(temp), text)
        return temp
    except OSError:
        return ""


def _write_or_remove(fd: int, path: Path, text: str) -> None:
    """Write `text` to the new file `fd`; on failure (a full disk) remove it again."""
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
    except OSError:
        with contextlib.suppress(OSError):
            path.unlink()
        raise


def _append_traceback(path: Path, text: str) -> None:
    record = {
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "level": "error",
        "stage": "cli",
        "event": "traceback",
        "message": one_line(text.strip().splitlines()[-1]) if text.strip() else "",
        "traceback": text,
    }
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "a", encoding="utf-8") as file:
        file.write(json.dumps(record, ensure_ascii=False) + "\n")
