"""kill -9 in the middle of ``migrate extract``, then resume: same DB, nothing fetched twice.

The extraction runs in a subprocess (``extract_from_settings`` with a config written here and
credentials in its environment) against a simulator in this process, which holds the calls we
aim at until the child is dead, so each SIGKILL lands while such a call is in flight whatever
the machine's load: mid issue listing, mid retrieve, mid downloads. A last run in this process
finishes the pass; its DB must equal an uninterrupted run's, with no blob downloaded twice but
the ones in flight at a kill.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from migrate.extract import extract_from_settings
from migrate.sandbox.generator import GeneratedProject
from migrate.settings import load_settings
from migrate.store import open_store
from tests.gates import HeldCalls
from tests.test_extract import (
    ENV,
    RecordingFieldApp,
    assert_blobs_match,
    expected_blobs,
    serve,
    snapshot,
    write_config,
)

WORKERS = 4
PAGE_SIZE = 20
_CHILD = (
    "import sys\n"
    "from migrate.extract import extract_from_settings\n"
    "from migrate.settings import load_settings\n"
    "extract_from_settings(load_settings(sys.argv[1]))\n"
)


def _kill_when(
    app: RecordingFieldApp,
    config: Path,
    route: str,
    calls: int,
    *,
    ready: Callable[[], bool] = lambda: True,
) -> None:
    """Start an extract subprocess; SIGKILL it while its ``calls``-th ``route`` call (counted
    from now) is in flight.

    Every ``route`` call after the first ``calls - 1`` is held at a gate until the child is
    dead, so the kill lands mid-call however busy the machine is; ``ready()`` (what the child
    must have committed first) is waited for too. The waits only guard against a hang.
    """
    with HeldCalls(app, route, passes=calls - 1) as held:
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(config)],
            env={**os.environ, **ENV},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 120
        try:
            while not (held.held > 0 and ready()):
                assert child.poll() is None, child.communicate()[1].decode()[-2000:]
                assert time.monotonic() < deadline, f"no held {route} call within 120 s"
                time.sleep(0.005)
            child.send_signal(signal.SIGKILL)
        finally:
            child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL


def _db(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path / "staging.db")


def committed(workdir: Path, sql: str) -> Any:
    """The first value ``sql`` reads from the child's staging DB (read-only; None: no row)."""
    uri = (workdir / "staging.db").resolve().as_uri() + "?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        row = db.execute(sql).fetchone()
    return row[0] if row else None


@pytest.mark.slow
def test_kill_9_mid_listing_retrieve_and_downloads_then_resume(tmp_path: Path) -> None:
    project = GeneratedProject(seed=7, issues=150)
    with serve(project) as app:
        line = f'project_id = "{project.main.id}"'
        reference = write_config(
            tmp_path / "reference", app.url, project_line=line, workers=WORKERS, page_size=PAGE_SIZE
        )
        extract_from_settings(load_settings(reference, env={}), ENV)
        expected = expected_blobs(project, app)
        app.forget()

        workdir = tmp_path / "killed"
        config = write_config(
            workdir, app.url, project_line=line, workers=WORKERS, page_size=PAGE_SIZE
        )
        listed = (
            "SELECT position FROM cursors WHERE endpoint = 'extract:issues:listing' "
            "AND position > 0"
        )
        _kill_when(app, config, "get_issues", 3, ready=lambda: committed(workdir, listed))
        db = _db(workdir)
        listing = db.execute(
            "SELECT position, state FROM cursors WHERE endpoint = 'extract:issues:listing'"
        ).fetchone()
        db.close()
        assert listing is not None and 0 < listing[0] < 140 and '"done": false' in listing[1]

        _kill_when(app, config, "issues_retrieve", 1)
        db = _db(workdir)
        assert db.execute("SELECT count(*) FROM raw_issue_details").fetchone()[0] < 150
        assert (
            db.execute("SELECT count(*) FROM attachments WHERE state = 'stored'").fetchone()[0] == 0
        )
        db.close()

        stored = "SELECT count(*) FROM attachments WHERE state = 'stored'"
        _kill_when(app, config, "binary_data", 30, ready=lambda: committed(workdir, stored))
        db = _db(workdir)
        stored_before = {
            i for (i,) in db.execute("SELECT id FROM attachments WHERE state = 'stored'")
        }
        total = db.execute(
            "SELECT count(*) FROM attachments WHERE kind != 'UriReference'"
        ).fetchone()[0]
        db.close()
        assert 0 < len(stored_before) < total
        assert list((workdir / "blobs" / "tmp").iterdir())  # a download was cut off mid-file

        downloads_before = app.downloads()
        result = extract_from_settings(load_settings(config, env={}), ENV)

    assert result.completed and result.pass_run_id < result.run_id
    assert snapshot(workdir / "staging.db") == snapshot(tmp_path / "reference" / "staging.db")
    assert_blobs_match(workdir, expected)  # also: no temp file left behind

    # No stored blob was downloaded again; only downloads in flight at the kill were repeated.
    final_downloads = app.downloads() - downloads_before
    assert not stored_before & set(final_downloads)
    per_object = app.downloads()
    assert max(per_object.values()) <= 2
    # At the kill, up to WORKERS downloads are running and up to WORKERS more may have finished
    # without the main thread having recorded them yet: both kinds are fetched again.
    assert sum(1 for n in per_object.values() if n == 2) <= 2 * WORKERS
    assert set(per_object) == set(expected)
    # No listing page fetched twice but the one in flight at the first kill.
    offsets = Counter(app.asked_for("get_issues"))
    assert max(offsets.values()) <= 2 and sum(1 for n in offsets.values() if n == 2) <= 1
    batches = Counter(app.asked_for("issues_retrieve"))
    assert max(batches.values()) <= 2 and sum(1 for n in batches.values() if n == 2) <= 1

    store = open_store(workdir / "staging.db")
    statuses = [s for (s,) in store.conn.execute("SELECT status FROM runs ORDER BY id")]
    store.close()
    assert statuses == ["interrupted", "interrupted", "interrupted", "succeeded"]
