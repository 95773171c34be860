"""The safety net (issue 15 points 4 and 5): Field's project export kept, and what is not
migrated counted and named.

Over loopback against the Field simulator: both export archives end in the blob store with the
simulator's bytes and are recorded; ``--no-export`` (and the setting) skip the export; an
export that never finishes within the bound, or a project not selected for exports, is
recorded as not available with the reason while extract finishes; the inventory's counts and
sizes equal the simulator's; ``migrate status`` and ``migrate report`` say what is left behind.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from migrate.cli import main
from migrate.clients.bim360field import FieldSession
from migrate.clients.http import HttpClient
from migrate.extract import ExtractOptions, ExtractResult, run
from migrate.report import ReportOptions
from migrate.report import run as report_run
from migrate.report.status import build_status
from migrate.sandbox.field_server import FieldApp
from migrate.sandbox.generator import GeneratedProject, iso_time, parse_field_time
from migrate.settings import Secret, load_settings
from migrate.store import BlobStore, open_store
from tests.test_extract import ENV, FAST, PASSWORD, USER, RecordingFieldApp, serve, write_config
from tests.test_extract_renditions import rows


@pytest.fixture(scope="module")
def project() -> GeneratedProject:
    return GeneratedProject(seed=5, issues=120, checklists=3)


def extract(
    app: RecordingFieldApp, workdir: Path, *, page_size: int = 100, **options: Any
) -> ExtractResult:
    """One run with quick export polling (the bound and interval come from ``options``)."""
    store = open_store(workdir / "staging.db")
    http = HttpClient(app.url, policy=FAST, pool_size=2, secrets=[PASSWORD])
    session = FieldSession(http, Secret(USER), Secret(PASSWORD), page_size=page_size)
    settings: dict[str, Any] = {"export_poll_seconds": 0.02, "export_wait_seconds": 30.0}
    settings.update(options)
    try:
        return run(
            store,
            session,
            BlobStore(workdir / "blobs"),
            options=ExtractOptions(project_id=app.project.main.id, workers=2, **settings),
        )
    finally:
        session.logout()
        http.close()
        store.close()


def archives(db: Path) -> dict[str, dict[str, Any]]:
    return {row["kind"]: row for row in rows(db, "SELECT * FROM project_exports")}


# -- the project export ----------------------------------------------------------------------


def test_an_export_that_takes_a_few_polls_is_waited_for_and_both_archives_stored(
    project: GeneratedProject, tmp_path: Path
) -> None:
    with serve(project, export="slow") as app:
        result = extract(app, tmp_path)
        asked = app.asked_for("project_export_status")
        expected = {kind: app.export_archive(project.main, kind) for kind in ("database", "files")}
    assert result.completed
    assert len(asked) == FieldApp.SLOW_EXPORT_POLLS + 1  # waited, then went on at once
    found = archives(tmp_path / "staging.db")
    assert set(found) == {"database", "files"}
    blobs = BlobStore(tmp_path / "blobs")
    finished = iso_time(parse_field_time(project.main.as_of))
    for kind, body in expected.items():
        row = found[kind]
        assert row["state"] == "stored" and row["reason"] is None
        assert (row["sha256"], row["size"]) == (hashlib.sha256(body).hexdigest(), len(body))
        assert row["finished_at"] == finished
        assert row["requested_at"] and row["stored_at"]
        assert blobs.verify(row["sha256"])
        with blobs.open(row["sha256"]) as stored:
            assert stored.read() == body
    # The storage URLs are credentials: their signature is nowhere in the staging DB.
    signature = app._export_signature(project.main, "x")[:4]  # "sig-": every signature's prefix
    assert signature.encode() not in (tmp_path / "staging.db").read_bytes()


def test_a_second_run_keeps_the_stored_export_without_downloading_it_again(
    project: GeneratedProject, tmp_path: Path
) -> None:
    with serve(project) as app:
        extract(app, tmp_path)
        first = archives(tmp_path / "staging.db")
        app.forget()
        extract(app, tmp_path)
        downloads = app.asked_for("export_file")
    assert downloads == []
    again = archives(tmp_path / "staging.db")
    assert {k: v["sha256"] for k, v in again.items()} == {k: v["sha256"] for k, v in first.items()}


def test_no_export_skips_the_export_entirely(project: GeneratedProject, tmp_path: Path) -> None:
    with serve(project) as app:
        result = extract(app, tmp_path, project_export=False)
        asked = app.asked_for("project_export_status") + app.asked_for("latest_project_export")
    assert result.completed
    assert asked == []
    assert archives(tmp_path / "staging.db") == {}
    # What is not migrated is still counted.
    assert rows(tmp_path / "staging.db", "SELECT family FROM source_inventory")


def test_migrate_extract_no_export_and_the_setting_skip_it(
    project: GeneratedProject, tmp_path: Path
) -> None:
    with serve(project) as app:
        line = f'project_id = "{project.main.id}"'
        config = write_config(tmp_path / "flag", app.url, project_line=line, workers=2)
        outcome = CliRunner().invoke(
            main, ["extract", "--no-export", "--config", str(config), "--quiet"], env=ENV
        )
        assert outcome.exit_code == 0, outcome.output
        assert archives(tmp_path / "flag" / "staging.db") == {}

        config = write_config(tmp_path / "setting", app.url, project_line=line, workers=2)
        text = config.read_text(encoding="utf-8")
        config.write_text(
            text.replace("[staging]", "project_export = false\n[staging]"), encoding="utf-8"
        )
        assert load_settings(config, env={}).source.project_export is False
        app.forget()
        outcome = CliRunner().invoke(main, ["extract", "--config", str(config), "--quiet"], env=ENV)
        assert outcome.exit_code == 0, outcome.output
        assert app.asked_for("project_export_status") == []
    assert archives(tmp_path / "setting" / "staging.db") == {}


def test_an_export_that_never_finishes_is_bounded_and_recorded_as_not_available(
    project: GeneratedProject, tmp_path: Path
) -> None:
    with serve(project, export="never") as app:
        result = extract(app, tmp_path, export_wait_seconds=0.3, export_poll_seconds=0.05)
        polls = len(app.asked_for("project_export_status"))
    assert result.completed  # extract went on and finished
    assert 1 <= polls <= 8
    found = archives(tmp_path / "staging.db")
    assert set(found) == {"database", "files"}
    for row in found.values():
        assert row["state"] == "not_available"
        assert row["sha256"] is None
        assert "still running after 0.3 s" in row["reason"]
    assert rows(tmp_path / "staging.db", "SELECT family FROM source_inventory")


def test_a_project_not_selected_for_exports_is_recorded_with_the_reason(
    project: GeneratedProject, tmp_path: Path
) -> None:
    with serve(project, export="not_selected") as app:
        result = extract(app, tmp_path)
    assert result.completed
    found = archives(tmp_path / "staging.db")
    assert {row["state"] for row in found.values()} == {"not_available"}
    assert all("not selected for exports" in row["reason"] for row in found.values())


# -- the inventory -----------------------------------------------------------------------------


def test_the_inventory_counts_what_the_simulator_serves(
    project: GeneratedProject, tmp_path: Path
) -> None:
    data = project.main
    with serve(project) as app:
        extract(app, tmp_path, project_export=False, page_size=25)
        photo_pages = len(app.asked_for("photos"))
    found = {
        row["family"]: row
        for row in rows(tmp_path / "staging.db", "SELECT * FROM source_inventory")
    }
    photos, files = data.photos(), data.library_files()
    expected = {
        "photos": (len(photos), sum(p["size"] for p in photos)),
        "library files": (len(files), sum(f["size"] for f in files)),
        "library folders": (len(data.library_folders()), None),
        "equipment": (len(data.equipment), None),
        "tasks": (len(data.tasks), None),
        "daily updates": (len(data.daily_updates()), None),
    }
    assert {k: (v["records"], v["bytes"]) for k, v in found.items()} == expected
    assert photo_pages == len(photos) // 25 + 1 > 1  # paged to the end
    assert found["photos"]["kept_in"] == "the project export's files archive"
    assert found["daily updates"]["kept_in"] == "the project export's database archive"


# -- status and report -------------------------------------------------------------------------


def test_status_and_report_say_what_is_not_migrated_and_where_the_export_keeps_it(
    project: GeneratedProject, tmp_path: Path
) -> None:
    data = project.main
    with serve(project) as app:
        extracted = extract(app, tmp_path)
    photos, files = data.photos(), data.library_files()
    assert f"Not migrated: {len(photos)} photos (" in "\n".join(extracted.summary_lines())
    with open_store(tmp_path / "staging.db") as store:
        status = build_status(store, None)
        lines = status.lines()
        report = report_run(
            store, None, options=ReportOptions(target_project_id=None, out_dir=tmp_path / "rep")
        )
    text = "\n".join(lines)
    gigabytes = sum(f["size"] for f in files) / 1e9
    assert f"Not migrated: {len(photos)} photos (" in text
    assert f"{len(files)} library files ({gigabytes:.1f} GB)" in text
    assert f"{len(data.daily_updates())} daily updates" in text
    assert "kept in BIM 360 Field's project export: database archive (" in text
    blob = json.loads(json.dumps(status.to_json()))["left_behind"]
    assert {a["kind"]: a["state"] for a in blob["project_export"]} == {
        "database": "stored",
        "files": "stored",
    }
    assert {f["family"]: f["records"] for f in blob["not_migrated"]}["photos"] == len(photos)
    summary = "\n".join(report.summary_lines())
    assert f"Not migrated: {len(photos)} photos" in summary
    html = report.path_html.read_text(encoding="utf-8")
    assert "What is not migrated, and the project export" in html
    assert f"{len(files)} library files" in html


def test_status_names_an_export_that_is_not_available_and_why(
    project: GeneratedProject, tmp_path: Path
) -> None:
    with serve(project, export="never") as app:
        extract(app, tmp_path, export_wait_seconds=0.1, export_poll_seconds=0.05)
    with open_store(tmp_path / "staging.db") as store:
        text = "\n".join(build_status(store, None).lines())
    assert "project export not available (database, files): the project export was still " in text


# -- the simulator's readings ------------------------------------------------------------------


def test_the_simulator_serves_the_seed_shapes_and_its_strict_readings(
    project: GeneratedProject,
) -> None:
    """Export status and latest export in seed 003's shapes; get_photos without limit and
    offset refused; daily updates without ``filter`` only the login's own."""
    from migrate.errors import ApiError

    with serve(project, export="ready") as app:
        http = HttpClient(app.url, policy=FAST, pool_size=1, secrets=[PASSWORD])
        session = FieldSession(http, Secret(USER), Secret(PASSWORD), project_id=project.main.id)
        try:
            pid = project.main.id
            status = session.json("GET", f"/api/project_export_status/{pid}")
            assert set(status) == {"export_running", "last_export_at", "last_export_succeeded"}
            assert status["export_running"] is False and status["last_export_succeeded"] is True
            latest = session.json("GET", f"/api/latest_project_export/{pid}")
            assert [entry["type"] for entry in latest] == ["database", "files"]
            assert all(set(entry) == {"type", "url"} for entry in latest)
            with pytest.raises(ApiError) as refused:
                session.project_call("POST", "/api/get_photos")
            assert refused.value.status == 400
            path = f"/api/v1/projects/{pid}/daily_updates"
            everyone = session.json("GET", path, {"filter": "all"})
            own = session.json("GET", path)
            assert len(everyone) == len(project.main.daily_updates()) > len(own) > 0
        finally:
            session.logout()
            http.close()


def test_status_says_the_export_was_not_fetched_after_no_export(
    project: GeneratedProject, tmp_path: Path
) -> None:
    with serve(project) as app:
        extract(app, tmp_path, project_export=False)
    with open_store(tmp_path / "staging.db") as store:
        text = "\n".join(build_status(store, None).lines())
    assert "Not migrated: " in text
    assert "kept only in BIM 360 Field: its project export was not fetched" in text
