"""Report files: a private folder the report owns, private files in it, inert CSV cells.

The report quotes source records (titles, names, quarantined records): it is project data and
is created readable by its owner only, files 0600 in a folder 0700, with those modes given at
creation (never a chmod afterwards, which would follow a symlink planted in between).

The folder is ours when a ``migrate report`` made it: it then holds :data:`MARKER`. An
existing folder without the marker, or a symlink, is refused (one line, exit 2) rather than
written into: the tool never changes the mode of, or replaces files in, a folder it did not
create. Each file is written under a new name opened with ``O_EXCL`` (a symlink in the way
is never followed) and renamed over the old one, so a reader never sees half a file.

Every CSV cell goes through :func:`migrate.text.csv_cell`: a value starting with
``= + - @``, TAB or CR gets a leading ``'``, so a spreadsheet shows it instead of running it;
:func:`migrate.text.csv_original` (drop that one quote) gives the value back.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from migrate.errors import ConfigError
from migrate.text import csv_cell

#: Written into every report folder `migrate report` creates; only such a folder is reused.
MARKER = ".migrate-report"
FOLDER_MODE = 0o700
FILE_MODE = 0o600
_PARTIAL = ".partial"


def prepare_report_dir(folder: Path, report_files: Collection[str] = ()) -> Path:
    """Create ``folder`` 0700 with its marker, or check an existing one is ours.

    A folder an earlier version of `migrate report` made (no marker, nothing in it but
    ``report_files``, all plain files) is adopted: it gets the marker and mode 0700.
    """
    try:
        info = folder.lstat()
    except FileNotFoundError:
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.mkdir(mode=FOLDER_MODE)
        with _private_file(folder / MARKER) as handle:
            handle.write("made by `migrate report`; its files are replaced by the next report\n")
        return folder
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        what = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a folder"
        raise ConfigError(
            f"{folder} is {what}; the report is written only into a folder it creates. "
            "Choose another --out."
        )
    if not (folder / MARKER).is_file() and not _adopt_earlier_report(folder, info, report_files):
        raise ConfigError(
            f"{folder} exists and was not made by `migrate report`; choose another --out "
            "(a folder that does not exist yet) or remove this one."
        )
    return folder


def _adopt_earlier_report(
    folder: Path, info: os.stat_result, report_files: Collection[str]
) -> bool:
    """Mark ``folder`` as ours if an earlier `migrate report` made it; True if it did.

    An earlier report wrote every one of ``report_files`` each time: the folder must hold all
    of them (and leftovers of a killed write), plain files, and nothing else.
    """
    known = {*report_files, *(name + _PARTIAL for name in report_files)}
    entries = list(os.scandir(folder))
    if not report_files or {entry.name for entry in entries} & set(report_files) != set(
        report_files
    ):
        return False
    for entry in entries:
        if entry.name not in known or not entry.is_file(follow_symlinks=False):
            return False
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        return False  # someone else's folder: never chmodded
    # lstat above showed a folder, not a symlink; the earlier version made it with the umask.
    folder.chmod(FOLDER_MODE)
    with _private_file(folder / MARKER) as handle:
        handle.write("made by `migrate report`; its files are replaced by the next report\n")
    return True


@contextlib.contextmanager
def _private_file(path: Path) -> Iterator[IO[str]]:
    """A new file 0600 at ``path``, written then renamed into place."""
    partial = path.with_name(path.name + _PARTIAL)
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()  # left by a killed report; unlink removes a symlink, not its target
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    descriptor = os.open(partial, flags, FILE_MODE)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as handle:
            yield handle
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    os.replace(partial, path)


def write_text(path: Path, text: str) -> None:
    """Write a report file (0600, atomically)."""
    with _private_file(path) as handle:
        handle.write(text)


def write_csv(path: Path, frame: Any) -> None:
    """Write a pandas DataFrame as a report CSV (0600, atomically), every cell inert."""
    with _private_file(path) as handle:
        inert_frame(frame).to_csv(handle, index=False)


def inert_frame(frame: Any) -> Any:
    """A copy of ``frame`` whose text cells went through :func:`migrate.text.csv_cell`."""
    from pandas.api.types import is_object_dtype, is_string_dtype

    frame = frame.copy()
    for column in frame.columns:
        values = frame[column]
        if is_object_dtype(values) or is_string_dtype(values):
            frame[column] = values.map(csv_cell, na_action="ignore")
    return frame


def frame(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Any:
    """Rows as a DataFrame with exactly ``columns`` (an empty list still has its header)."""
    import pandas as pd

    return pd.DataFrame(list(rows), columns=list(columns))
