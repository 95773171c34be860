"""The report and `migrate status` on checklists → Procore inspections (issue 14 point 6).

Planned inspections are written per the issue-14 contract (tests/inspection_rows.py: every
item type, item comments, item photos, checklist files and signatures), the real load puts
them into the simulated Procore over loopback, and the report reads them back over HTTP. Then
Procore's state is tampered with through the simulator (an answer changed, a comment deleted,
a file's bytes altered, an inspection dropped) and the report must name what differs and fail.
The source side has checklists that were not planned (deleted at the source, quarantined, not
transformed) so every staged checklist must be accounted for.
"""

from __future__ import annotations

import contextlib
import csv
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from migrate.cli import main
from migrate.demo import write_demo_config
from migrate.errors import EXIT_FAILED, EXIT_QUARANTINED
from migrate.mappings import write_default_mappings
from migrate.report import CSV_NAMES, ReportResult, report_from_settings
from migrate.report.inspections import CSV_COLUMNS
from migrate.report.status import INSPECTION_KEYS, status_from_settings
from migrate.report.views import inspection_state_counts
from migrate.report.views import rows as view_rows
from migrate.sandbox.runner import Sandbox, SandboxOptions
from migrate.settings import Settings, load_settings
from migrate.store import open_store
from tests.inspection_rows import PlantedInspection, plant_inspections
from tests.test_load_inspections import SWITCHES

#: Checklists planned and loaded (both templates, every status, files on every third).
PLANNED = 8
#: Staged checklists that never became a planned inspection, and why.
DELETED_AT_SOURCE = "cl-deleted"
HELD_BACK = "cl-held"
NOT_TRANSFORMED = "cl-new"
SKIP_REASON = "deleted at the source (BIM 360 Field)"
HOLD_REASON = "item type 'photo grid' has no Procore item type"
#: The responsible contractors tests/inspection_rows.py names that are project vendors.
VENDORS = ("Diaz Mechanical", "Wei Electric")


@dataclass
class Loaded:
    box: Sandbox
    settings: Settings
    env: dict[str, str]
    workdir: Path
    planted: list[PlantedInspection]

    @property
    def app(self) -> Any:
        return self.box.procore_app

    @property
    def project_id(self) -> int:
        return self.box.procore_project_id

    def report(self, name: str, **kwargs: Any) -> ReportResult:
        return report_from_settings(self.settings, self.env, out_dir=self.workdir / name, **kwargs)

    def db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.settings.staging.path)
        conn.row_factory = sqlite3.Row
        return conn

    def list_id(self, source_id: str) -> int:
        with self.db() as conn:
            row = conn.execute(
                "SELECT target_id FROM id_map WHERE entity = 'inspection' AND source_id = ? "
                "AND state = 'loaded'",
                (source_id,),
            ).fetchone()
        assert row is not None, source_id
        return int(row[0])

    def item(self, source_id: str, name: str) -> dict[str, Any]:
        """The simulator's own record of one list item (change it under ``app.lock``)."""
        list_id = self.list_id(source_id)
        found = [
            item
            for item in self.app.inspections.list_items.values()
            if item["list_id"] == list_id and item["name"] == name
        ]
        assert len(found) == 1, (source_id, name)
        return found[0]


def _stage_checklists(settings: Settings, planted: list[PlantedInspection]) -> None:
    """The checklists extract staged: the planned ones and three that were not planned."""
    conn = sqlite3.connect(settings.staging.path)
    with conn:
        for index, inspection in enumerate(planted):
            conn.execute(
                "INSERT INTO checklists (id, identifier, name, template_id, template_name, "
                "status, deleted) VALUES (?, ?, ?, ?, ?, 'Open', 0)",
                (
                    inspection.source_id,
                    f"{index:06d}",
                    f"Checklist {index}",
                    inspection.template,
                    inspection.template,
                ),
            )
        for source_id, deleted in ((DELETED_AT_SOURCE, 1), (HELD_BACK, 0), (NOT_TRANSFORMED, 0)):
            conn.execute(
                "INSERT INTO checklists (id, identifier, name, status, deleted) "
                "VALUES (?, ?, ?, 'Open', ?)",
                (source_id, source_id.upper(), f"Checklist {source_id}", deleted),
            )
        conn.execute(
            "INSERT INTO skipped_records (entity, source_id, reason) VALUES ('checklist', ?, ?)",
            (DELETED_AT_SOURCE, SKIP_REASON),
        )
        conn.execute(
            "INSERT INTO quarantine (entity, source_id, stage, reason, hint, record, created_at) "
            "VALUES ('checklist', ?, 'transform', ?, 'map it in mappings/responses.csv', "
            "'{}', '2026-01-01T00:00:00.000Z')",
            (HELD_BACK, HOLD_REASON),
        )
    conn.close()


def _add_vendors(app: Any, project_id: int) -> None:
    """The project's directory holds the vendors the planted rows name (not "Unknown …")."""
    with app.lock:
        taken = {str(v["name"]).lower() for v in app._vendors.values()}
        for offset, name in enumerate(VENDORS):
            if name.lower() not in taken:
                vendor_id = 9900 + offset
                app._vendors[vendor_id] = {
                    "id": vendor_id,
                    "name": name,
                    "project_ids": [project_id],
                }


@pytest.fixture
def loaded(tmp_path: Path) -> Iterator[Loaded]:
    with _loaded(tmp_path) as found:
        yield found


@contextlib.contextmanager
def _loaded(tmp_path: Path, **switches: Any) -> Iterator[Loaded]:
    """Planned inspections loaded by the real load into a sandbox (simulator ``switches``)."""
    from migrate.load import load_from_settings

    options = {"spike_limit": 2000, **switches}
    with Sandbox(SandboxOptions(issues=5, seed=7, procore_options=options)) as box:
        write_default_mappings(tmp_path / "mappings")
        settings = load_settings(write_demo_config(tmp_path, box))
        env = box.environment()
        open_store(settings.staging.path).close()
        _add_vendors(box.procore_app, box.procore_project_id)
        planted = plant_inspections(settings, PLANNED)
        _stage_checklists(settings, planted)
        load_from_settings(settings, env)
        yield Loaded(box, settings, env, tmp_path, planted)


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _by_source(path: Path) -> dict[str, dict[str, str]]:
    return {row["source_id"]: row for row in _csv(path)}


# -- a clean migration ---------------------------------------------------------------------------


def test_every_loaded_inspection_matches_and_every_checklist_is_accounted_for(
    loaded: Loaded,
) -> None:
    result = loaded.report("clean")

    held = loaded.app.inspections_of(loaded.project_id)
    assert len(held) == PLANNED
    assert result.mismatches == [] and result.missing == []
    assert result.inspections["match"] == PLANNED
    assert result.inspections["skipped"] == result.inspections["quarantined"] == 1
    assert result.inspections["not planned"] == 1
    # Clean, but a checklist waits in quarantine: the quarantine exit code, not a failure.
    assert result.exit_code == EXIT_QUARANTINED

    rows = _by_source(result.csv_paths["inspections"])
    assert result.csv_paths["inspections"].name == CSV_NAMES["inspections"] == "inspections.csv"
    with result.csv_paths["inspections"].open(encoding="utf-8") as handle:
        assert next(csv.reader(handle)) == list(CSV_COLUMNS)
    assert set(rows) == {p.source_id for p in loaded.planted} | {
        DELETED_AT_SOURCE,
        HELD_BACK,
        NOT_TRANSFORMED,
    }
    assert rows[DELETED_AT_SOURCE]["outcome"] == "skipped"
    assert rows[DELETED_AT_SOURCE]["reason"] == SKIP_REASON
    assert rows[HELD_BACK]["outcome"] == "quarantined"
    assert HOLD_REASON in rows[HELD_BACK]["reason"]
    assert rows[NOT_TRANSFORMED]["outcome"] == "not planned"
    # The staging DB's view says the same, one SELECT away (Datasette, sqlite3).
    store = open_store(loaded.settings.staging.path, read_only=True)
    try:
        states = inspection_state_counts(store)
        journey = {r["source_id"]: r for r in view_rows(store, "v_inspection_journey")}
    finally:
        store.close()
    assert {k: n for k, n in states.items() if n} == {
        "extracted": 1,
        "skipped": 1,
        "quarantined": 1,
        "loaded": PLANNED,
    }
    assert journey[DELETED_AT_SOURCE]["skipped_reason"] == SKIP_REASON
    assert journey[HELD_BACK]["quarantine_reason"] == HOLD_REASON
    assert {journey[p.source_id]["procore_id"] for p in loaded.planted} == {
        int(rows[p.source_id]["procore_id"]) for p in loaded.planted
    }
    # What the report counted is what the simulator holds, inspection by inspection.
    by_procore_id = {inspection["id"]: inspection for inspection in held}
    for planted in loaded.planted:
        row = rows[planted.source_id]
        inspection = by_procore_id[int(row["procore_id"])]
        items = [item for section in inspection["sections"] for item in section["items"]]
        assert row["outcome"] == "match" and row["fields"] == ""
        assert int(row["items"]) == len(planted.payload["items"])
        answered = sum(1 for item in planted.payload["items"] if item["response"] is not None)
        assert answered == sum(1 for item in items if item["response"] is not None)
        assert int(row["answers_matching"]) == len(planted.payload["items"])
        assert int(row["comments"]) == sum(len(item["comments"]) for item in items)
        assert int(row["files"]) == len(inspection["files"]) + sum(
            len(item["files"]) for item in items
        )
    # Every file was downloaded (its sha256 is of the bytes Procore serves).
    files = sum(
        len(i["files"]) + sum(len(item["files"]) for s in i["sections"] for item in s["items"])
        for i in held
    )
    downloads = sum(n for key, n in (result.requests or {}).items() if key.startswith("GET /s3/"))
    assert files == downloads > PLANNED / 2

    page = result.path_html.read_text(encoding="utf-8")
    assert "Checklists → Procore inspections (11)" in page
    assert 'class="verdict ok"' in page
    assert "Inspections: 8 migrated, 8 match" in page
    assert "X-Amz-Signature" not in page  # file urls sign; they are never shown
    for path in result.csv_paths.values():
        assert "X-Amz-Signature" not in path.read_text(encoding="utf-8")
    assert "Inspections: 8 migrated, 8 match" in "\n".join(result.summary_lines())


@pytest.mark.parametrize(
    "switches", [v for k, v in SWITCHES.items() if k != "defaults"], ids=list(SWITCHES)[1:]
)
def test_every_simulator_reading_reconciles_as_match(
    switches: dict[str, Any], tmp_path: Path
) -> None:
    """Whatever Procore does where its docs are silent, what load wrote reads back as planned."""
    with _loaded(tmp_path, **switches) as migrated:
        result = migrated.report("switches")
    assert result.mismatches == [] and result.missing == []
    assert result.inspections["match"] == PLANNED


def test_offline_report_accounts_for_checklists_without_reading_procore(loaded: Loaded) -> None:
    result = loaded.report("offline", offline=True)

    assert result.requests is None
    rows = _by_source(result.csv_paths["inspections"])
    assert {rows[p.source_id]["outcome"] for p in loaded.planted} == {
        "loaded (not checked: offline)"
    }
    assert rows[DELETED_AT_SOURCE]["outcome"] == "skipped"
    assert result.exit_code == EXIT_QUARANTINED


# -- Procore tampered with: the report names the field and fails ----------------------------------


def _failed_on(result: ReportResult, source_id: str) -> dict[str, str]:
    assert result.exit_code == EXIT_FAILED
    page = result.path_html.read_text(encoding="utf-8")
    assert 'class="verdict bad"' in page
    row = _by_source(result.csv_paths["inspections"])[source_id]
    return row


def test_a_changed_answer_differs_naming_the_item(loaded: Loaded) -> None:
    source_id = loaded.planted[0].source_id
    item = loaded.item(source_id, "1.3 Notes")
    with loaded.app.lock:
        item["response"]["value"] = "Not cleaned"

    result = loaded.report("answer")

    row = _failed_on(result, source_id)
    assert row["outcome"] == "differs"
    assert row["fields"] == "response: 1.3 Notes"
    [mismatch] = result.mismatches
    assert mismatch["entity"] == "inspection" and mismatch["source_id"] == source_id
    assert mismatch["expected"] == "text Cleaned by crew 0"
    assert mismatch["actual"] == "text Not cleaned"
    assert result.inspections["differs"] == 1 and result.inspections["match"] == PLANNED - 1
    listed = _csv(result.csv_paths["mismatches"])
    assert [(m["source_id"], m["field"]) for m in listed] == [(source_id, "response: 1.3 Notes")]


def test_a_status_answer_changed_in_procore_differs(loaded: Loaded) -> None:
    source_id = loaded.planted[1].source_id  # in review: its answers stay open to change
    item = loaded.item(source_id, "1.1 Forms clean?")
    planned = loaded.planted[1].payload["items"][0]["response"]["status"]
    other = "not_applicable" if planned != "not_applicable" else "conforming"
    with loaded.app.lock:
        item["response"].update(value=other, status=other)

    result = loaded.report("status-answer")

    row = _failed_on(result, source_id)
    assert row["fields"] == "response: 1.1 Forms clean?"
    [mismatch] = result.mismatches
    assert (mismatch["expected"], mismatch["actual"]) == (planned, other)


def test_a_header_edited_in_procore_differs_field_by_field(loaded: Loaded) -> None:
    planted = next(p for p in loaded.planted if p.location and p.contractor == "Diaz Mechanical")
    list_id = loaded.list_id(planted.source_id)
    inspections = loaded.app.inspections
    with loaded.app.lock:
        inspection = inspections.lists[list_id]
        inspection.update(
            description="Edited in Procore",
            location_id=None,
            inspection_date="2020-01-01",
            responsible_contractor_id=None,
            identifier="X-1",
            status="closed" if planted.status != "closed" else "open",
        )

    result = loaded.report("header")

    row = _failed_on(result, planted.source_id)
    assert row["fields"].split("; ") == [
        "identifier",
        "description",
        "status",
        "inspection_date",
        "location",
        "responsible_contractor",
    ]
    found = {m["field"]: (m["expected"], m["actual"]) for m in result.mismatches}
    assert found["location"] == (" > ".join(planted.location or ()), "")
    assert found["responsible_contractor"] == ("Diaz Mechanical", None)
    assert found["description"][1] == "Edited in Procore"
    assert found["status"][0] == planted.status


def test_a_deleted_comment_differs(loaded: Loaded) -> None:
    source_id = loaded.planted[0].source_id
    item = loaded.item(source_id, "1.1 Forms clean?")
    inspections = loaded.app.inspections
    with loaded.app.lock:
        [comment_id] = [
            c for c, body in inspections.comments.items() if body["item_id"] == item["id"]
        ]
        del inspections.comments[comment_id]
        for ids in inspections._project_comments.values():
            if comment_id in ids:
                ids.remove(comment_id)

    result = loaded.report("comment")

    row = _failed_on(result, source_id)
    assert row["fields"] == "comments: 1.1 Forms clean?"
    [mismatch] = result.mismatches
    assert mismatch["expected"] == "Checked by Ann Lee on 2015-03-02 (checklist 0)"
    assert mismatch["actual"] == ""


def _alter_bytes(loaded: Loaded, name: str) -> None:
    with loaded.app.lock:
        [attachment] = [
            a
            for a in loaded.app._attachments.values()
            if a["name"] == name and a["project_id"] == loaded.project_id
        ]
        path = Path(attachment["path"])
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF  # same size, same name: only the content tells
    path.write_bytes(bytes(data))


def test_altered_file_bytes_differ_by_sha256(loaded: Loaded) -> None:
    source_id = loaded.planted[0].source_id
    _alter_bytes(loaded, "Forms 0.png")  # an item photo
    _alter_bytes(loaded, "Checklist 0 scan.png")  # a checklist file on the inspection

    result = loaded.report("bytes")

    row = _failed_on(result, source_id)
    assert row["fields"] == "file sha256: item 1.1 Forms clean?; file sha256: inspection"
    planted = loaded.planted[0].files
    for mismatch in result.mismatches:
        assert mismatch["expected"] != mismatch["actual"]
    item_files = next(m for m in result.mismatches if m["field"].endswith("Forms clean?"))
    photo = next(sha for name, sha in planted.values() if name == "Forms 0.png")
    assert item_files["expected"] == f"Forms 0.png ({photo[:12]})"
    # The simulator's record still says the old sha256: only downloading the bytes shows this.
    held = loaded.app.inspections_of(loaded.project_id)
    recorded = {
        f["sha256"] for i in held for s in i["sections"] for it in s["items"] for f in it["files"]
    }
    assert photo in recorded


def test_a_file_procore_cannot_serve_is_a_difference_not_a_match(loaded: Loaded) -> None:
    source_id = loaded.planted[0].source_id
    with loaded.app.lock:
        [attachment] = [a for a in loaded.app._attachments.values() if a["name"] == "Forms 0.png"]
    Path(attachment["path"]).unlink()  # storage answers 404 NoSuchKey for its url

    result = loaded.report("unserved")

    row = _failed_on(result, source_id)
    assert row["fields"] == "file sha256: item 1.1 Forms clean?"
    [mismatch] = result.mismatches
    assert mismatch["actual"] == "Forms 0.png (download failed: HTTP 404)"
    assert "X-Amz-Signature" not in result.path_html.read_text(encoding="utf-8")


def test_a_dropped_inspection_is_missing(loaded: Loaded) -> None:
    source_id = loaded.planted[2].source_id
    list_id = loaded.list_id(source_id)
    inspections = loaded.app.inspections
    with loaded.app.lock:
        del inspections.lists[list_id]
        inspections._project_lists[loaded.project_id].remove(list_id)

    result = loaded.report("dropped")

    row = _failed_on(result, source_id)
    assert row["outcome"] == "missing in Procore"
    assert [(m["entity"], m["source_id"], m["procore_id"]) for m in result.missing] == [
        ("inspection", source_id, list_id)
    ]
    assert [r["source_id"] for r in _csv(result.csv_paths["missing"])] == [source_id]
    assert result.inspections["missing in Procore"] == 1
    assert "1 missing in Procore" in "\n".join(result.summary_lines())


def test_a_second_copy_of_an_inspection_is_an_orphan(loaded: Loaded) -> None:
    """A create whose answer was lost and never recorded leaves a copy id_map does not name."""
    from migrate.clients.factory import procore_client

    planted = loaded.planted[1]
    with loaded.db() as conn:
        (template_id,) = conn.execute(
            "SELECT target_id FROM id_map WHERE entity = 'inspection_project_template' "
            "AND source_id = ?",
            (planted.template,),
        ).fetchone()
    with procore_client(loaded.settings, loaded.env) as client:
        copy = client.create_inspection(
            loaded.project_id,
            int(template_id),
            {"identifier": planted.payload["list"]["identifier"], "status": "open"},
        )
        # An inspection people made by hand from a migrated template is not one of ours.
        client.create_inspection(
            loaded.project_id, int(template_id), {"identifier": "HAND-1", "status": "open"}
        )

    result = loaded.report("orphan")

    assert result.exit_code == EXIT_FAILED
    assert [(o["procore_id"], o["source_id"]) for o in result.orphans] == [
        (copy["id"], planted.source_id)
    ]
    assert str(loaded.list_id(planted.source_id)) in result.orphans[0]["why"]
    assert result.mismatches == [] and result.missing == []
    assert [r["source_id"] for r in _csv(result.csv_paths["orphans"])] == [planted.source_id]


# -- status -------------------------------------------------------------------------------------


def test_status_counts_checklists_and_inspections(loaded: Loaded) -> None:
    expected = {
        "extracted": PLANNED + 3,
        "templates_planned": 2,
        "planned": PLANNED,
        "loaded": PLANNED,
        "unfinished": 0,
        "rejected": 0,
        "pending": 0,
        "skipped": 1,
        "quarantined": 1,
    }
    assert list(expected) == list(INSPECTION_KEYS)
    status = status_from_settings(loaded.settings)
    assert status.inspections == expected
    assert (
        "Inspections  11 checklists extracted, 8 planned (2 templates), 8 loaded, 0 pending, "
        "0 rejected, 1 skipped, 1 quarantined"
    ) in status.lines()

    config = str(loaded.workdir / "migration.toml")
    shown = CliRunner().invoke(main, ["status", "--config", config, "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["inspections"] == expected
    text = CliRunner().invoke(main, ["status", "--config", config])
    assert "Inspections  11 checklists extracted" in text.output

    # An inspection a stopped load left half done (loaded, no payload hash yet: load records
    # it only when answers, comments, files and status are all done) is named as unfinished.
    with loaded.db() as conn:
        conn.execute(
            "UPDATE id_map SET payload_hash = NULL WHERE entity = 'inspection' AND source_id = ?",
            (loaded.planted[0].source_id,),
        )
    status = status_from_settings(loaded.settings)
    assert status.inspections["unfinished"] == 1
    store = open_store(loaded.settings.staging.path, read_only=True)
    try:
        assert inspection_state_counts(store)["unfinished"] == 1
    finally:
        store.close()
    assert "8 loaded (1 unfinished), 0 pending" in "\n".join(status.lines())

    # Two more checklists planned after the load: pending, and load is the next command.
    plant_inspections(loaded.settings, 2, start=PLANNED, run_row=False)
    status = status_from_settings(loaded.settings)
    assert status.inspections["planned"] == PLANNED + 2
    assert status.inspections["pending"] == 2
    assert status.next_command == "migrate load"
    result = loaded.report("pending")
    rows = _by_source(result.csv_paths["inspections"])
    assert rows[f"cl-{PLANNED:05d}"]["outcome"] == "not loaded yet"
    assert result.inspections["not loaded yet"] == 2


# -- the demo ------------------------------------------------------------------------------------


def test_demo_summary_names_inspections_migrated_and_matching(tmp_path: Path) -> None:
    from migrate.demo import run_demo

    demo = run_demo(tmp_path / "demo", issues=20, seed=3)

    lines = demo.summary_lines()
    [line] = [line for line in lines if line.startswith("Inspections:")]
    counts = demo.report.inspections
    migrated = counts["match"] + counts["differs"] + counts["missing in Procore"]
    assert line.startswith(f"Inspections: {migrated} migrated, {counts['match']} match")
    with sqlite3.connect(demo.workdir / "staging.db") as conn:
        (staged,) = conn.execute("SELECT COUNT(*) FROM checklists").fetchone()
    assert staged > 0 and line.endswith(f"(of {staged} checklists).")
    assert sum(counts.values()) == staged
    assert counts["differs"] == counts["missing in Procore"] == 0


# -- a generated project through the real pipeline ---------------------------------------------


def test_a_generated_project_reconciles_then_a_tampered_inspection_fails(tmp_path: Path) -> None:
    """extract → transform → load of a generated project: every checklist is accounted for and
    every inspection matches; then one answer and one file's bytes change in Procore."""
    from migrate.extract import extract_from_settings
    from migrate.load import load_from_settings
    from migrate.transform import transform_from_settings

    with Sandbox(SandboxOptions(issues=96, seed=11, procore_options={"spike_limit": 2000})) as box:
        write_default_mappings(tmp_path / "mappings")
        settings = load_settings(write_demo_config(tmp_path, box))
        env = box.environment()
        extract_from_settings(settings, env)
        transform_from_settings(settings, env)
        load_from_settings(settings, env)
        migrated = Loaded(box, settings, env, tmp_path, [])

        clean = migrated.report("clean")

        with migrated.db() as conn:
            staged = {row[0]: row[1] for row in conn.execute("SELECT id, deleted FROM checklists")}
            planned = {row[0] for row in conn.execute("SELECT source_id FROM planned_inspections")}
        rows = _by_source(clean.csv_paths["inspections"])
        assert set(rows) == set(staged) and len(planned) > 6
        assert clean.mismatches == [] and clean.missing == [], clean.mismatches[:3]
        assert {rows[s]["outcome"] for s in planned} == {"match"}
        for source_id, deleted in staged.items():
            if source_id not in planned:
                assert rows[source_id]["outcome"] in ("skipped", "quarantined"), rows[source_id]
                assert rows[source_id]["reason"]
            if deleted:
                assert rows[source_id]["outcome"] == "skipped"
        assert clean.inspections["match"] == len(planned)
        held = migrated.app.inspections_of(migrated.project_id)
        assert len(held) == len(planned)
        assert sum(int(rows[s]["files"]) for s in planned) == sum(
            len(i["files"]) + sum(len(it["files"]) for s in i["sections"] for it in s["items"])
            for i in held
        )
        status = status_from_settings(settings)
        assert status.inspections["extracted"] == len(staged)
        assert status.inspections["planned"] == status.inspections["loaded"] == len(planned)
        assert status.inspections["pending"] == 0

        # Tamper: a text or number answer, and the bytes of one file.
        by_list = {int(rows[s]["procore_id"]): s for s in planned}
        answered = [
            (by_list[i["id"]], it)
            for i in held
            for s in i["sections"]
            for it in s["items"]
            if it["response"] and it["response"]["key"] in ("text_value", "number_value")
        ]
        source_id, shown = answered[0]
        with migrated.app.lock:
            item = migrated.app.inspections.list_items[shown["id"]]
            item["response"]["value"] = (
                "changed in Procore" if item["response"]["key"] == "text_value" else 424242
            )
        with_files = [i for i in held if i["files"]]
        _alter_bytes(migrated, with_files[0]["files"][0]["name"])

        tampered = migrated.report("tampered")

        assert tampered.exit_code == EXIT_FAILED
        fields = {(m["source_id"], m["field"]) for m in tampered.mismatches}
        assert (source_id, f"response: {shown['name']}") in fields
        assert (by_list[with_files[0]["id"]], "file sha256: inspection") in fields
