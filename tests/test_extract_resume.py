"""kill -9 in the middle of ``migrate extract``, then resume: same DB, nothing fetched twice.

The extraction runs in a subprocess (``extract_from_settings`` with a config written here and
credentials in its environment) against a simulator in this process, which is slowed down on
the calls we aim at so each SIGKILL lands while such a call is in flight: mid issue listing,
mid retrieve, mid downloads. A last run in this process finishes the pass; its DB must equal
an uninterrupted run's, with no blob downloaded twice but the ones in flight at a kill.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from migrate.extract import extract_from_settings
from migrate.sandbox.faults import FaultConfig
from migrate.sandbox.generator import GeneratedProject
from migrate.settings import load_settings
from migrate.store import open_store
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


def _kill_when(app: RecordingFieldApp, config: Path, route: str, calls: int) -> None:
    """Start an extract subprocess; SIGKILL it once ``calls`` more ``route`` calls arrived."""
    start = app.calls[route]
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(config)],
        env={**os.environ, **ENV},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    try:
        while app.calls[route] < start + calls:
            assert child.poll() is None, child.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, f"no {route} call within 60 s"
            time.sleep(0.001)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL


def _db(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path / "staging.db")


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
        # Every aimed-at call takes 50 ms, so the kill lands while one is in flight.
        app.faults.configure(
            FaultConfig(slow_rate=1.0, slow_seconds=0.05, paths="get_issues|retrieve|binary_data")
        )

        _kill_when(app, config, "get_issues", 3)
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

        _kill_when(app, config, "binary_data", 30)
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

        app.faults.clear()
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
