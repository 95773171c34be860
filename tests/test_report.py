"""`migrate report`: reconciliation against the simulated Procore, HTML and CSV files.

A small project goes through the real chain (extract → transform → load over loopback); then
discrepancies are planted in the simulated Procore through its Python API (a title changed, an
issue deleted, an issue created with one of our uuids) and the report must list each one.
"""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from migrate.demo import write_demo_config
from migrate.ids import issue_uuid
from migrate.mappings import write_default_mappings
from migrate.report import CSV_NAMES, ReportResult, report_from_settings
from migrate.report.reconcile import (
    MISMATCH_COLUMNS,
    MISSING_COLUMNS,
    ORPHAN_COLUMNS,
    QUARANTINE_COLUMNS,
    link_free_record,
    strip_links,
)
from migrate.sandbox.runner import Sandbox, SandboxOptions
from migrate.settings import Settings, load_settings

ISSUES = 100


@dataclass
class Migrated:
    box: Sandbox
    settings: Settings
    env: dict[str, str]
    workdir: Path

    def db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.settings.staging.path)
        conn.row_factory = sqlite3.Row
        return conn

    def report(self, name: str, **kwargs: Any) -> ReportResult:
        return report_from_settings(self.settings, self.env, out_dir=self.workdir / name, **kwargs)

    @property
    def project_id(self) -> int:
        return self.box.procore_project_id


def _migrate(workdir: Path, box: Sandbox) -> Migrated:
    from migrate.extract import extract_from_settings
    from migrate.load import load_from_settings
    from migrate.transform import transform_from_settings

    write_default_mappings(workdir / "mappings")
    settings = load_settings(write_demo_config(workdir, box))
    env = box.environment()
    extract_from_settings(settings, env)
    transform_from_settings(settings, env)
    load_from_settings(settings, env)
    return Migrated(box, settings, env, workdir)


@pytest.fixture
def migrated(tmp_path: Path) -> Iterator[Migrated]:
    # A roomy spike window keeps the load quick; quota pacing is tested elsewhere.
    with Sandbox(
        SandboxOptions(issues=ISSUES, seed=7, procore_options={"spike_limit": 2000})
    ) as box:
        yield _migrate(tmp_path, box)


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _header(path: Path) -> list[str]:
    with path.open(encoding="utf-8", newline="") as handle:
        return next(csv.reader(handle))


# -- a clean migration ---------------------------------------------------------------------


def test_clean_run_every_migrated_issue_matches(migrated: Migrated) -> None:
    app = migrated.box.procore_app
    reads = (".list", ".show", ".token", ".list.v1.1", "storage.download")
    writes_before = {k: v for k, v in app.calls.items() if not k.endswith(reads)}

    result = migrated.report("clean")

    with migrated.db() as conn:
        loaded = conn.execute(
            "SELECT COUNT(*) FROM id_map WHERE entity = 'coordination_issue' AND state = 'loaded'"
        ).fetchone()[0]
        planned = conn.execute("SELECT COUNT(*) FROM planned_issues").fetchone()[0]
        open_rows = conn.execute(
            "SELECT entity, source_id, reason, hint FROM quarantine WHERE released_at IS NULL "
            "ORDER BY source_id"
        ).fetchall()
        report_run = conn.execute(
            "SELECT status, requests FROM runs WHERE id = ?", (result.run_id,)
        ).fetchone()
    assert result.online
    assert result.mismatches == [] and result.missing == [] and result.orphans == []
    assert result.matched == loaded == planned > 80
    assert result.quarantined == len(open_rows)
    assert result.exit_code == (3 if open_rows else 0)
    assert result.checks_not_run == []  # the attachment check runs on the sha256 sent

    # The report only read Procore: no write call, every page read. Issue files are proven by
    # the sha256 sent, never downloaded; inspection files are downloaded once each and hashed
    # (tests/test_report_inspections.py checks what that proves).
    writes_after = {k: v for k, v in app.calls.items() if not k.endswith(reads)}
    assert writes_after == writes_before
    inspection_files = sum(
        len(i["files"]) + sum(len(it["files"]) for s in i["sections"] for it in s["items"])
        for i in app.inspections_of(migrated.project_id)
    )
    assert app.calls.get("storage.download", 0) == inspection_files
    assert report_run["status"] == "succeeded"
    requests = json.loads(report_run["requests"])
    assert requests and all(k.startswith("GET ") or "/oauth/token" in k for k in requests)
    issue_pages = sum(n for k, n in requests.items() if k.endswith("/coordination_issues"))
    assert issue_pages == -(-len(app.issues(migrated.project_id)) // 100)  # all pages

    # CSV files: fixed headers, empty discrepancy lists, every issue's journey.
    paths = result.csv_paths
    assert {p.name for p in paths.values()} == set(CSV_NAMES.values())
    assert _header(paths["mismatches"]) == list(MISMATCH_COLUMNS)
    assert _header(paths["missing"]) == list(MISSING_COLUMNS)
    assert _header(paths["orphans"]) == list(ORPHAN_COLUMNS)
    assert _header(paths["quarantine"]) == list(QUARANTINE_COLUMNS)
    assert _csv(paths["mismatches"]) == _csv(paths["missing"]) == _csv(paths["orphans"]) == []
    issues = _csv(paths["issues"])
    assert len(issues) >= ISSUES
    loaded_rows = [r for r in issues if r["state"] == "loaded"]
    assert len(loaded_rows) == loaded
    assert {r["reconciliation"] for r in loaded_rows} == {"matches"}
    with migrated.db() as conn:
        with_files = {
            row[0]
            for row in conn.execute(
                "SELECT source_id FROM id_map WHERE entity = 'coordination_issue' AND "
                "state = 'loaded' AND json_array_length(COALESCE(attachment_ids, '[]')) > 0"
            )
        }
    assert with_files
    assert {r["source_id"]: r["attachments"] for r in loaded_rows} == {
        r["source_id"]: "matched" if r["source_id"] in with_files else "none" for r in loaded_rows
    }
    assert all(r["procore_id"] and r["uuid"] for r in loaded_rows)

    # Quarantined records are listed with their reasons and hints, link-free.
    quarantined = _csv(paths["quarantine"])
    assert sorted((r["source_id"], r["reason"], r["hint"]) for r in quarantined) == sorted(
        (row["source_id"], row["reason"], row["hint"] or "") for row in open_rows
    )
    for row in quarantined:
        assert "http://" not in row["record"] and "https://" not in row["record"]
    html = result.path_html.read_text(encoding="utf-8")
    assert f"All {loaded} migrated issue(s) match Procore" in html
    for row in open_rows:
        assert (
            row["reason"]
            .replace("&", "&amp;")
            .replace('"', "&quot;")
            .replace("<", "&lt;")
            .replace(">", "&gt;")
            .replace("'", "&#x27;")
            in html
        )
    assert "http://" not in html and "https://" not in html


# -- planted discrepancies -----------------------------------------------------------------


def test_a_file_whose_sent_bytes_differ_from_the_staged_file_is_a_mismatch(
    migrated: Migrated,
) -> None:
    with migrated.db() as conn:
        planted = conn.execute(
            "SELECT m.source_id, u.attachment_id, a.filename, a.sha256 FROM id_map m "
            "JOIN json_each(m.attachment_ids) j JOIN uploads u ON u.attachment_id = j.value "
            "AND u.target_project_id = m.target_project_id JOIN attachments a ON a.id = j.value "
            "WHERE m.entity = 'coordination_issue' AND m.state = 'loaded' "
            "ORDER BY m.source_id LIMIT 1"
        ).fetchone()
        unrecorded = conn.execute(
            "SELECT m.source_id, u.attachment_id, a.filename, a.sha256 FROM id_map m "
            "JOIN json_each(m.attachment_ids) j JOIN uploads u ON u.attachment_id = j.value "
            "AND u.target_project_id = m.target_project_id JOIN attachments a ON a.id = j.value "
            "WHERE m.entity = 'coordination_issue' AND m.state = 'loaded' AND m.source_id <> ? "
            "ORDER BY m.source_id LIMIT 1",
            (planted["source_id"],),
        ).fetchone()
        # Storage got other bytes for one file; another was sent by a migrate that did not
        # record what it sent. Procore still lists both names: only the digest can tell.
        conn.execute(
            "UPDATE uploads SET sent_sha256 = ? WHERE attachment_id = ?",
            ("e" * 64, planted["attachment_id"]),
        )
        conn.execute(
            "UPDATE uploads SET sent_sha256 = NULL WHERE attachment_id = ?",
            (unrecorded["attachment_id"],),
        )

    result = migrated.report("sent-bytes")

    rows = [m for m in result.mismatches if m["field"] == "attachment_sha256"]
    assert [(m["source_id"], m["expected"], m["actual"]) for m in rows] == sorted(
        [
            (
                planted["source_id"],
                f"{planted['filename']}: {planted['sha256']}",
                f"{planted['filename']}: {'e' * 64}",
            ),
            (
                unrecorded["source_id"],
                f"{unrecorded['filename']}: {unrecorded['sha256']}",
                f"{unrecorded['filename']}: not recorded",
            ),
        ]
    )
    assert {m["source_id"] for m in result.mismatches} == {
        planted["source_id"],
        unrecorded["source_id"],
    }
    journey = {r["source_id"]: r for r in _csv(result.csv_paths["issues"])}
    assert journey[planted["source_id"]]["attachments"].startswith("mismatched: ")
    assert planted["filename"] in journey[planted["source_id"]]["attachments"]
    assert journey[unrecorded["source_id"]]["attachments"].startswith("mismatched: ")
    assert journey[planted["source_id"]]["reconciliation"] == "mismatch: attachment_sha256"
    others = {
        r["attachments"]
        for source_id, r in journey.items()
        if r["state"] == "loaded"
        and source_id not in (planted["source_id"], unrecorded["source_id"])
    }
    assert others == {"matched", "none"}
    assert result.exit_code == 1


def test_planted_discrepancies_are_each_listed(migrated: Migrated) -> None:
    app = migrated.box.procore_app
    with migrated.db() as conn:
        loaded = conn.execute(
            "SELECT m.source_id, m.target_id, p.title, p.identifier FROM id_map m "
            "JOIN planned_issues p ON p.source_id = m.source_id "
            "WHERE m.entity = 'coordination_issue' AND m.state = 'loaded' "
            "ORDER BY m.source_id"
        ).fetchall()
        skipped = conn.execute(
            "SELECT source_id FROM skipped_records WHERE entity = 'issue' ORDER BY source_id"
        ).fetchone()
        location_names = [
            row[0]
            for row in conn.execute(
                "SELECT path FROM planned_locations WHERE is_leaf = 1 ORDER BY source_id"
            )
        ]
    assert len(loaded) > 3 and skipped is not None
    retitled, deleted, moved = loaded[0], loaded[1], loaded[2]

    app.tamper_issue(retitled["target_id"], title="Changed by hand in Procore")
    app.delete_issue(deleted["target_id"])
    # A location no planned issue uses: the moved issue's path cannot match it by accident.
    elsewhere = app.find_or_create_location(migrated.project_id, ["Annex", "Roof"])
    app.tamper_issue(moved["target_id"], location_id=elsewhere["id"])
    orphan_uuid = issue_uuid(migrated.project_id, skipped["source_id"])
    orphan = app.add_issue(
        migrated.project_id, title="Created outside the id map", uuid=orphan_uuid, status="open"
    )
    stranger = app.add_issue(migrated.project_id, title="Someone else's issue", status="open")

    result = migrated.report("planted")

    assert [
        (m["source_id"], m["field"], m["expected"], m["actual"])
        for m in result.mismatches
        if m["field"] == "title"
    ] == [(retitled["source_id"], "title", retitled["title"], "Changed by hand in Procore")]
    location_rows = [m for m in result.mismatches if m["field"] == "location"]
    assert [(m["source_id"], m["actual"]) for m in location_rows] == [
        (moved["source_id"], "Annex > Roof")
    ]
    assert location_rows[0]["expected"] != "Annex > Roof"
    assert {m["source_id"] for m in result.mismatches} == {
        retitled["source_id"],
        moved["source_id"],
    }
    assert [(m["source_id"], m["procore_id"]) for m in result.missing] == [
        (deleted["source_id"], deleted["target_id"])
    ]
    assert [
        (o["procore_id"], o["uuid"], o["source_id"], o["staging_state"]) for o in result.orphans
    ] == [(orphan["id"], orphan_uuid, skipped["source_id"], "skipped")]
    assert stranger["id"] not in {o["procore_id"] for o in result.orphans}
    assert result.matched == len(loaded) - 3
    assert result.exit_code == 1

    # The same rows in the CSV files.
    mismatches = _csv(result.csv_paths["mismatches"])
    assert [
        (r["source_id"], r["field"], r["expected"], r["actual"])
        for r in mismatches
        if r["field"] == "title"
    ] == [(retitled["source_id"], "title", retitled["title"], "Changed by hand in Procore")]
    assert {(r["source_id"], r["field"]) for r in mismatches} == {
        (retitled["source_id"], "title"),
        (moved["source_id"], "location"),
    }
    assert [
        (r["source_id"], r["procore_id"], r["identifier"])
        for r in _csv(result.csv_paths["missing"])
    ] == [(deleted["source_id"], str(deleted["target_id"]), deleted["identifier"] or "")]
    assert [
        (r["procore_id"], r["uuid"], r["source_id"]) for r in _csv(result.csv_paths["orphans"])
    ] == [(str(orphan["id"]), orphan_uuid, skipped["source_id"])]
    journey = {r["source_id"]: r for r in _csv(result.csv_paths["issues"])}
    assert journey[retitled["source_id"]]["reconciliation"] == "mismatch: title"
    assert journey[deleted["source_id"]]["reconciliation"] == "missing in Procore"
    assert journey[loaded[3]["source_id"]]["reconciliation"] == "matches"

    html = result.path_html.read_text(encoding="utf-8")
    assert "1 record(s) missing in Procore, 1 orphan(s)" in html
    assert "Changed by hand in Procore" in html and "Created outside the id map" in html
    assert location_names  # the planned tree exists, so the location check had work to do


# -- a killed load -------------------------------------------------------------------------


def test_issues_a_killed_load_created_are_orphans_until_load_resumes(tmp_path: Path) -> None:
    from migrate.load import load_from_settings
    from migrate.transform import transform_from_settings
    from tests.test_status import kill_load_mid_batch

    with Sandbox(SandboxOptions(issues=30, seed=3, procore_options={"spike_limit": 2000})) as box:
        from migrate.extract import extract_from_settings

        write_default_mappings(tmp_path / "mappings")
        settings = load_settings(write_demo_config(tmp_path, box))
        env = box.environment()
        extract_from_settings(settings, env)
        transform_from_settings(settings, env)
        migrated = Migrated(box, settings, env, tmp_path)
        with migrated.db() as conn:
            planned = {
                r[0]: r[1] for r in conn.execute("SELECT uuid, source_id FROM planned_issues")
            }
        kill_load_mid_batch(settings, box)  # returns once Procore applied the held sync call
        created = _ours(box, planned)
        assert created

        before = migrated.report("after-kill")

        assert {(o["uuid"], o["source_id"], o["staging_state"]) for o in before.orphans} == {
            (uuid, planned[uuid], "sent") for uuid in created
        }
        assert all("stopped before recording it" in o["why"] for o in before.orphans)
        assert before.missing == [] and before.mismatches == []

        load_from_settings(settings, env)
        after = migrated.report("after-resume")

        assert after.orphans == [] and after.missing == [] and after.mismatches == []
        assert after.matched == len(planned)


def _ours(box: Sandbox, planned: dict[str, str]) -> set[str]:
    return {i["uuid"] for i in box.procore_app.issues(box.procore_project_id)} & set(planned)


# -- changes at the source after load --------------------------------------------------------


def test_source_changes_after_load_are_reported_for_a_decision(tmp_path: Path) -> None:
    from migrate.extract import extract_from_settings
    from migrate.load import load_from_settings
    from migrate.report.status import status_from_settings
    from migrate.transform import transform_from_settings

    with Sandbox(SandboxOptions(issues=30, seed=4, procore_options={"spike_limit": 2000})) as box:
        migrated = _migrate(tmp_path, box)
        with migrated.db() as conn:
            loaded = [
                r[0]
                for r in conn.execute(
                    "SELECT source_id FROM id_map WHERE entity = 'coordination_issue' "
                    "AND state = 'loaded' ORDER BY source_id"
                )
            ]
        late_file_issue, voided_issue = loaded[0], loaded[1]
        late_file = box.field_app.add_attachment(
            late_file_issue, "late photo.jpg", 2048, "image/jpeg"
        )
        box.field_app.void_issue(voided_issue)
        extract_from_settings(migrated.settings, migrated.env)
        transform_from_settings(migrated.settings, migrated.env)
        load_from_settings(migrated.settings, migrated.env)

        status = status_from_settings(migrated.settings)
        result = migrated.report("delta")

    assert status.attachments["after_load_needing_decision"] == 1
    assert status.deleted_after_load == [voided_issue]
    assert status.to_json()["deleted_after_load"] == {"count": 1, "source_ids": [voided_issue]}
    html = result.path_html.read_text(encoding="utf-8")
    assert "Files added after their issue was loaded (1)" in html
    assert "late photo.jpg" in html and late_file in html
    assert "Deleted or voided at the source after load (1)" in html
    # Procore still has what was sent: the late file is not a mismatch, the voided issue is
    # still open there until `migrate load --apply-deletions` closes it.
    assert result.mismatches == [] and result.missing == [] and result.orphans == []
    journey = {r["source_id"]: r for r in _csv(result.csv_paths["issues"])}
    assert journey[voided_issue]["state"] == "loaded_then_deleted_at_source"


# -- offline, and link-free records ---------------------------------------------------------


def test_offline_report_reads_nothing_from_procore(migrated: Migrated) -> None:
    app = migrated.box.procore_app
    before = dict(app.calls)

    result = migrated.report("offline", offline=True)

    assert dict(app.calls) == before
    assert not result.online
    assert result.mismatches == result.missing == result.orphans == []
    assert result.checks_not_run == ["Procore read-back"]
    html = result.path_html.read_text(encoding="utf-8")
    assert "Offline report" in html
    assert all(p.exists() for p in result.csv_paths.values())


def test_quarantine_records_are_made_link_free() -> None:
    record = {
        "description": "see https://bim360field.autodesk.com/x?ticket=abc and www.example.com/y",
        "attachments": [{"url": "http://127.0.0.1:8080/api/binary_data?object_id=1"}],
        "count": 3,
    }
    cleaned = strip_links(record)
    assert cleaned == {
        "description": "see [link removed] and [link removed]",
        "attachments": [{"url": "[link removed]"}],
        "count": 3,
    }
    text = link_free_record(json.dumps(record))
    assert "http" not in text and "ticket" not in text and "www." not in text
    assert link_free_record("not json https://x.example/y") == "not json [link removed]"
