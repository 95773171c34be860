"""OS and SQLite faults end in one line, exit 1, and harm nothing.

Each test injects a real fault (a full file system, a folder this process may not write, a
read-only mount, a file where a folder should be, a damaged DB), runs the real CLI in its own
process, and checks the one line printed (path, fix, the command to re-run, where the
traceback went), the exit code, and that the staging DB kept what it had.

We run as root here, and root ignores mode bits: the read-only-folder test drops the
capabilities that let root do so (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER) in the
child before it runs migrate, so the kernel refuses the write as it would for any user.
Full and read-only file systems are small tmpfs mounts where this process may mount; the
full-disk test also runs everywhere with SQLite's own page limit.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from migrate.demo import write_demo_config
from migrate.errors import EXIT_FAILED, EXIT_OK, EXIT_QUARANTINED
from migrate.faults import describe_fault, staging_places
from migrate.mappings import write_default_mappings
from migrate.pipeline import run_pipeline
from migrate.sandbox.runner import Sandbox, SandboxOptions
from migrate.settings import load_settings
from migrate.store import open_store
from migrate.transform import plan_hash

PLAN_TABLES = ("planned_issues", "planned_locations", "skipped_records", "quarantine")
PROGRESS = re.compile(r"^\w+: \w+ \d+(/\d+ \(\d+%\))?$")


# -- running the CLI -------------------------------------------------------------------------


def migrate(*args: str, preexec: Callable[[], None] | None = None, wrapper: str = "") -> Any:
    """Run `migrate <args>` in a child process (optionally with `wrapper` code run first)."""
    code = wrapper + "\nfrom migrate.cli import main\nmain()\n"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=preexec,
    )


def fault_line(done: Any) -> str:
    """The one `Error: …` line of a command that hit a fault (exit 1, no traceback)."""
    assert done.returncode == EXIT_FAILED, done
    # Without a TTY, progress comes as plain lines ("transform: issues 12/12 (100%)") first.
    lines = [line for line in done.stderr.strip().splitlines() if not PROGRESS.match(line)]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("Error: ") and "most recent call last" not in done.stderr
    return lines[0]


def kept_traceback(line: str) -> Path:
    """The file the message names for the traceback; it holds the whole traceback."""
    found = re.search(r"Traceback: (\S+)$", line)
    assert found, line
    path = Path(found.group(1))
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":  # appended to the run log as one JSON line
        records = [json.loads(row) for row in text.splitlines()]
        text = next(r["traceback"] for r in records if r.get("event") == "traceback")
    assert text.startswith("Traceback (most recent call last):"), text[:200]
    return path


def the_plan_hash(staging: Path) -> str:
    """Transform's hash over the planned rows (run ids left out): equal plans, equal hashes."""
    with open_store(staging, read_only=True) as store:
        return plan_hash(store)


def plan_rows(staging: Path) -> dict[str, list[tuple[Any, ...]]]:
    with contextlib.closing(sqlite3.connect(f"file:{staging}?mode=ro", uri=True)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in PLAN_TABLES}


# -- a migrated workdir ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A workdir whose staging DB went through extract and transform (and has a snapshot)."""
    workdir = tmp_path_factory.mktemp("faults")
    with Sandbox(SandboxOptions(issues=12, seed=3)) as box:
        write_default_mappings(workdir / "mappings")
        config = write_demo_config(workdir, box)
        run_pipeline(load_settings(config), box.environment(), dry_run=True)
    yield workdir


def copy_workdir(planned: Path, target: Path) -> Path:
    """Config, mappings and a consistent copy of the staging DB in `target`; its config."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copytree(planned / "mappings", target / "mappings")
    shutil.copy(planned / "migration.toml", target / "migration.toml")
    with (
        contextlib.closing(sqlite3.connect(planned / "staging.db")) as src,
        contextlib.closing(sqlite3.connect(target / "staging.db")) as dst,
    ):
        src.backup(dst)
    (target / "staging.db").chmod(0o600)
    return target / "migration.toml"


def set_staging(config: Path, key: str, value: str) -> None:
    text = config.read_text(encoding="utf-8")
    config.write_text(re.sub(rf"(?m)^{key} = .*$", f"{key} = {json.dumps(value)}", text))


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        path.rmdir()
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "8m") -> Iterator[Path]:
    if sys.platform != "linux" or shutil.which("mount") is None:
        pytest.skip("tmpfs mounts need Linux")
    _mount_tmpfs(path, size)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _no_dac_override() -> None:
    """In the child: drop the capabilities that let root ignore file modes (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop = 24
    for capability in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
        if libc.prctl(pr_capbset_drop, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def as_a_plain_user() -> Callable[[], None] | None:
    """preexec_fn that makes the child subject to file modes like any user (None: it is)."""
    if os.name == "nt":
        pytest.skip("POSIX file modes")
    if os.geteuid() != 0:
        return None
    if sys.platform != "linux":
        pytest.fail("run as a normal user: root ignores file modes and only Linux can drop that")
    return _no_dac_override


# -- disk full -------------------------------------------------------------------------------

# Caps every connection to the staging DB at the pages it has now: a real SQLITE_FULL as soon
# as anything needs one more page.
PAGE_LIMIT = textwrap.dedent(
    """
    import sqlite3
    _connect = sqlite3.connect
    def connect(database, *args, **kwargs):
        conn = _connect(database, *args, **kwargs)
        if str(database).endswith("staging.db"):
            conn.execute("PRAGMA max_page_count = 1")  # SQLite raises it to the current size
        return conn
    sqlite3.connect = connect
    """
)


def test_a_full_disk_under_the_staging_db_is_one_line_and_keeps_the_plan(
    planned: Path, tmp_path: Path
) -> None:
    with tmpfs(tmp_path / "disk", "4m") as disk:
        config = copy_workdir(planned, disk)
        staging = disk / "staging.db"
        before = plan_rows(staging)
        the_plan = the_plan_hash(staging)
        filler = disk / "filler"
        # Room for SQLite's 32 KiB -shm and a few pages of WAL: the plan does not fit.
        filler.write_bytes(b"\0" * (shutil.disk_usage(disk).free - 96 * 1024))

        line = fault_line(migrate("transform", "--offline", "--config", str(config)))

        assert f"staging DB {staging}" in line and "is full" in line, line
        assert "Free space on that disk, or point [staging] path at a disk with room" in line
        assert f"then run `migrate transform --offline --config {config}`." in line
        kept_traceback(line)
        assert plan_rows(staging) == before

        filler.unlink()
        again = migrate("transform", "--offline", "--config", str(config))
        assert again.returncode in (EXIT_OK, EXIT_QUARANTINED), again.stderr
        assert the_plan_hash(staging) == the_plan  # the same plan, nothing lost or doubled


def test_a_db_that_may_not_grow_is_one_line_and_keeps_what_it_had(
    planned: Path, tmp_path: Path
) -> None:
    config = copy_workdir(planned, tmp_path)
    staging = tmp_path / "staging.db"
    full_plan = the_plan_hash(staging)
    with contextlib.closing(sqlite3.connect(staging)) as conn:  # transform must grow the DB now
        conn.executescript("DELETE FROM planned_issues; DELETE FROM planned_locations; VACUUM;")
    before = plan_rows(staging)

    line = fault_line(
        migrate("transform", "--offline", "--config", str(config), wrapper=PAGE_LIMIT)
    )

    assert f"The staging DB {staging} cannot grow: database or disk is full." in line
    assert "point [staging] path at a disk with room" in line
    assert f"then run `migrate transform --offline --config {config}`." in line
    assert kept_traceback(line).parent == tmp_path / "logs"
    assert plan_rows(staging) == before
    assert migrate("transform", "--offline", "--config", str(config)).returncode in (
        EXIT_OK,
        EXIT_QUARANTINED,
    )
    assert the_plan_hash(staging) == full_plan


# -- folders that cannot be written ----------------------------------------------------------


def test_a_logs_folder_this_user_may_not_write_is_one_line(planned: Path, tmp_path: Path) -> None:
    preexec = as_a_plain_user()
    config = copy_workdir(planned, tmp_path)
    staging = tmp_path / "staging.db"
    logs = tmp_path / "logs"
    logs.mkdir(mode=0o500)
    before = plan_rows(staging)
    try:
        line = fault_line(
            migrate("transform", "--offline", "--config", str(config), preexec=preexec)
        )
    finally:
        logs.chmod(0o700)

    assert f"Permission denied for {logs}{os.sep}" in line
    assert "point [staging] logs at a folder this user owns" in line
    assert f"then run `migrate transform --offline --config {config}`." in line
    kept = kept_traceback(line)  # not in the logs folder: that is what failed
    assert kept.parent != logs
    kept.unlink()
    assert list(logs.iterdir()) == []
    assert plan_rows(staging) == before


def test_a_read_only_file_system_is_one_line_and_reading_still_works(
    planned: Path, tmp_path: Path
) -> None:
    with tmpfs(tmp_path / "ro") as mounted:
        config = copy_workdir(planned, mounted)
        staging = mounted / "staging.db"
        before = plan_rows(staging)
        remount = ["mount", "-o", "remount,ro", str(mounted)]
        subprocess.run(remount, check=True, capture_output=True)

        line = fault_line(migrate("transform", "--offline", "--config", str(config)))
        assert f"{staging} is on a read-only file system" in line
        assert "Remount it writable or point [staging] path at a writable disk" in line
        assert f"then run `migrate transform --offline --config {config}`." in line
        kept_traceback(line).unlink()

        for command in (["status"], ["plan"], ["quarantine", "list"]):
            done = migrate(*command, "--config", str(config))
            assert done.returncode == EXIT_OK, (command, done.stderr)
        assert plan_rows(staging) == before


@pytest.mark.parametrize("where", ["logs_is_a_file", "logs_inside_a_file", "report_is_a_file"])
def test_a_file_where_a_folder_should_be_is_one_line(
    planned: Path, tmp_path: Path, where: str
) -> None:
    config = copy_workdir(planned, tmp_path)
    staging = tmp_path / "staging.db"
    in_the_way = tmp_path / "in-the-way"
    in_the_way.write_text("someone's notes\n", encoding="utf-8")
    before = plan_rows(staging)
    if where == "report_is_a_file":
        command = ["report", "--offline", "--out", str(in_the_way / "report")]
        setting = "--out"
    else:
        command = ["transform", "--offline"]
        setting = "[staging] logs"
        logs = in_the_way if where == "logs_is_a_file" else in_the_way / "logs"
        set_staging(config, "logs", str(logs))

    line = fault_line(migrate(*command, "--config", str(config)))

    assert "a file is where migrate needs a folder" in line
    assert f"Move that file away, or point {setting} at a folder" in line
    assert f"then run `migrate {' '.join(command)} --config {config}`" in line
    kept_traceback(line).unlink()
    assert in_the_way.read_text(encoding="utf-8") == "someone's notes\n"
    assert plan_rows(staging) == before


# -- a damaged staging DB --------------------------------------------------------------------


def test_a_damaged_staging_db_is_one_line_and_left_as_it_is(planned: Path, tmp_path: Path) -> None:
    config = copy_workdir(planned, tmp_path)
    staging = tmp_path / "staging.db"
    data = bytearray(staging.read_bytes())
    page = 4096
    for offset in range(2 * page, len(data), 3 * page):  # keep the header: it is still "ours"
        data[offset : offset + 2000] = b"\xff" * 2000
    staging.write_bytes(bytes(data))

    for command in (["status"], ["plan"], ["quarantine", "list"], ["transform", "--offline"]):
        line = fault_line(migrate(*command, "--config", str(config)))
        assert f"The staging DB {staging} is damaged (database disk image is malformed)" in line
        assert "Restore it from a backup, or point [staging] path and blobs at new files" in line
        assert f"then run `migrate {' '.join(command[:2])} --config {config}" in line
        kept_traceback(line)
        assert staging.read_bytes() == bytes(data), command


# -- the classification itself ---------------------------------------------------------------


def test_a_write_to_a_read_only_connection_names_the_file(tmp_path: Path) -> None:
    staging = tmp_path / "staging.db"
    sqlite3.connect(staging).execute("CREATE TABLE t (x)").connection.close()
    conn = sqlite3.connect(f"file:{staging}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as caught:
        conn.execute("INSERT INTO t VALUES (1)")
    conn.close()

    fault = describe_fault(
        caught.value, places=staging_places(staging), rerun="migrate load", details="x.txt"
    )

    assert fault is not None and fault.exit_code == EXIT_FAILED
    assert str(fault) == (
        f"The staging DB {staging} cannot be written: attempt to write a readonly database. "
        "Make the file, its -wal/-shm and its folder writable for this user (or move them to "
        "a writable disk), then run `migrate load`. What was recorded before the fault is "
        "kept. Traceback: x.txt"
    )


def test_a_bug_is_not_dressed_up_as_a_fault(tmp_path: Path) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (x UNIQUE)")
    conn.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.IntegrityError) as caught:
        conn.execute("INSERT INTO t VALUES (1)")
    places = staging_places(tmp_path / "staging.db")
    assert describe_fault(caught.value, places=places, rerun="migrate load") is None
    assert describe_fault(ValueError("x"), places=places, rerun="migrate load") is None
    no_space = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "blobs" / "a"))
    described = describe_fault(
        no_space,
        places=staging_places(tmp_path / "staging.db", tmp_path / "blobs"),
        rerun="migrate extract",
    )
    assert described is not None and "point [staging] blobs at a disk with room" in str(described)
