"""The field ledger (issue 15 point 1) on the real pipeline: generated project → extract →
transform against the simulators, then the report and plan read what transform stored."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from migrate.errors import EXIT_FAILED
from migrate.extract import extract_from_settings
from migrate.load.plan import plan_from_settings
from migrate.mappings import write_default_mappings
from migrate.report import CSV_NAMES, report_from_settings
from migrate.sandbox.runner import Sandbox
from migrate.settings import Settings
from migrate.store import Store, open_store
from migrate.store.ledger import CSV_NAME, NO_DESTINATION, LedgerRow, read_ledger, unaccounted
from migrate.transform import transform_from_settings
from migrate.transform.ledger import CATALOGUE, NOT_SOURCE_TABLES
from tests.test_transform_inspections import make_settings


class Pipeline:
    def __init__(self, sandbox: Sandbox, settings: Settings) -> None:
        self.sandbox = sandbox
        self.settings = settings

    def store(self) -> Store:
        return open_store(self.settings.staging.path)

    def transform(self, settings: Settings | None = None) -> list[LedgerRow]:
        transform_from_settings(settings or self.settings, self.sandbox.environment())
        with self.store() as store:
            return read_ledger(store)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    work = tmp_path_factory.mktemp("ledger")
    write_default_mappings(work / "mappings")
    with Sandbox() as sandbox:
        settings = make_settings(sandbox, work)
        extract_from_settings(settings, sandbox.environment())
        yield Pipeline(sandbox, settings)


def by_field(rows: list[LedgerRow]) -> dict[tuple[str, str], LedgerRow]:
    return {(row.entity, row.field): row for row in rows}


def test_every_field_with_values_has_a_destination(pipeline: Pipeline) -> None:
    rows = pipeline.transform()
    assert unaccounted(rows) == []
    fields = by_field(rows)
    # The ledger covers every staged column of every catalogued table, and custom fields.
    with pipeline.store() as store:
        for entity in CATALOGUE:
            for (column,) in store.conn.execute(
                f"SELECT name FROM pragma_table_info('{entity.table}')"
            ):
                assert (entity.name, column) in fields, (entity.name, column)
    assert any(field.startswith("cf:") for _entity, field in fields)
    assert fields[("issue", "description")].kind == "target"
    assert fields[("issue file", "caption")].with_value > 0


def has_value(value: object) -> bool:
    return value is not None and str(value).strip() not in ("", "[]", "{}")


def test_counts_equal_what_the_staging_tables_hold(pipeline: Pipeline) -> None:
    fields = by_field(pipeline.transform())
    with pipeline.store() as store:
        issues = store.conn.execute("SELECT due_date, custom_fields FROM issues").fetchall()
        captions = store.conn.execute(
            "SELECT caption FROM attachments WHERE container_type = 'Issue'"
        ).fetchall()
        items = store.conn.execute("SELECT spec_ref FROM checklist_items").fetchall()
    assert fields[("issue", "due_date")].records == len(issues)
    assert fields[("issue", "due_date")].with_value == sum(has_value(d) for d, _ in issues)
    assert fields[("issue file", "caption")].records == len(captions)
    assert fields[("issue file", "caption")].with_value == sum(has_value(c) for (c,) in captions)
    assert fields[("checklist item", "spec_ref")].with_value == sum(has_value(s) for (s,) in items)
    # Custom fields are counted per definition from the issues' JSON.
    custom: dict[str, int] = {}
    for _due, raw in issues:
        for name, value in (json.loads(raw) if raw else {}).items():
            value = value.get("value") if isinstance(value, dict) else value
            custom[name] = custom.get(name, 0) + has_value(value)
    counted = {
        f[3:]: row.with_value for (e, f), row in fields.items() if e == "issue" and f[:3] == "cf:"
    }
    assert counted == custom


def test_fields_csv_and_settings_decide_the_destinations(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    mappings = tmp_path / "mappings"
    write_default_mappings(mappings)
    with (mappings / "fields.csv").open("a", encoding="utf-8") as out:
        out.write("Notes,drop\nf--location_detail,drop\n")
    settings = replace(
        pipeline.settings,
        mappings=replace(pipeline.settings.mappings, dir=mappings),
        transform=replace(pipeline.settings.transform, checklists_as_inspections=False),
    )
    try:
        fields = by_field(pipeline.transform(settings))
        assert fields[("issue", "cf:Notes")].kind == "left_out"
        assert "fields.csv" in fields[("issue", "cf:Notes")].destination
        assert fields[("issue", "location_detail")].kind == "left_out"
        for (entity, field), row in fields.items():
            if entity == "checklist item" and field == "response":
                assert row.kind == "left_out"
                assert "inspections turned off" in row.destination
        assert unaccounted(list(fields.values())) == []
    finally:
        pipeline.transform()


def test_a_value_without_a_destination_fails_the_report_and_plan_warns(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    with pipeline.store() as store, store.transaction():
        store.conn.execute("ALTER TABLE issues ADD COLUMN inspector_mood TEXT")
        store.conn.execute(
            "UPDATE issues SET inspector_mood = 'grumpy' WHERE source_id IN "
            "(SELECT source_id FROM issues ORDER BY source_id LIMIT 3)"
        )
        # A staged table nobody named: every row of it is unaccounted for.
        store.conn.execute("CREATE TABLE punch_walks (id TEXT PRIMARY KEY, notes TEXT)")
        store.conn.execute("INSERT INTO punch_walks VALUES ('w1', 'level 2'), ('w2', NULL)")
    try:
        rows = pipeline.transform()
        missing = {(r.entity, r.field): r.with_value for r in unaccounted(rows)}
        assert missing == {("issue", "inspector_mood"): 3, ("punch_walks", "(every field)"): 2}

        result = report_from_settings(
            pipeline.settings,
            pipeline.sandbox.environment(),
            out_dir=tmp_path / "report",
            offline=True,
        )
        assert result.exit_code == EXIT_FAILED
        assert "issue.inspector_mood (3 with a value)" in result.fields_unaccounted
        assert any("inspector_mood" in line for line in result.summary_lines())
        html = result.path_html.read_text(encoding="utf-8")
        assert "Where every BIM 360 Field field went" in html
        verdict = html[html.index('class="verdict') :].split("</div>")[0]
        assert "verdict bad" in verdict and "inspector_mood" in verdict
        with (tmp_path / "report" / CSV_NAME).open(encoding="utf-8") as handle:
            csv_rows = {(r["entity"], r["field"]): r for r in csv.DictReader(handle)}
        assert csv_rows[("issue", "inspector_mood")]["kind"] == NO_DESTINATION
        assert csv_rows[("issue", "inspector_mood")]["with_value"] == "3"

        plan = plan_from_settings(pipeline.settings)
        assert any("inspector_mood" in w for w in plan.warnings)
        printed = "\n".join(plan.summary_lines())
        assert "Warning:" in printed and "issue.inspector_mood" in printed
    finally:
        with pipeline.store() as store, store.transaction():
            store.conn.execute("ALTER TABLE issues DROP COLUMN inspector_mood")
            store.conn.execute("DROP TABLE punch_walks")
        assert unaccounted(pipeline.transform()) == []


def test_plan_and_report_show_the_ledger(pipeline: Pipeline, tmp_path: Path) -> None:
    rows = pipeline.transform()
    plan = plan_from_settings(pipeline.settings)
    printed = plan.summary_lines()
    assert any("each with a destination" in line and CSV_NAME in line for line in printed)
    issue_line = next(line for line in printed if line.startswith("  issue:"))
    assert "target" in issue_line and "footer" in issue_line
    assert not any("no destination" in w for w in plan.warnings)
    assert len(plan.to_json()["field_ledger"]) == len(rows)

    result = report_from_settings(
        pipeline.settings,
        pipeline.sandbox.environment(),
        out_dir=tmp_path / "report",
        offline=True,
    )
    assert CSV_NAMES["field_ledger"] == CSV_NAME
    assert result.fields_unaccounted == ""
    html = result.path_html.read_text(encoding="utf-8")
    section = html[html.index("Where every BIM 360 Field field went") :]
    assert "Every source field with a value has a destination." in section
    assert "cf:Backcharge" in section or "cf:" in section
    with (tmp_path / "report" / CSV_NAME).open(encoding="utf-8") as handle:
        assert len(list(csv.DictReader(handle))) == len(rows)


def test_every_staged_column_and_table_is_named_in_the_catalogue(tmp_path: Path) -> None:
    """A column or table added to the schema without a destination fails here, even before a
    project gives it a value (the ledger would then fail the report)."""
    with open_store(tmp_path / "staging.db") as store:
        tables = {
            name
            for (name,) in store.conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'raw_%'"
            )
        }
        assert tables - NOT_SOURCE_TABLES == {entity.table for entity in CATALOGUE}
        unnamed = [
            (entity.table, column)
            for entity in CATALOGUE
            for (column,) in store.conn.execute(
                "SELECT name FROM pragma_table_info(?)", (entity.table,)
            )
            if column not in entity.fields
        ]
    assert unnamed == []


def test_captions_and_tags_of_checklist_files_reach_the_inspection(pipeline: Pipeline) -> None:
    """The ledger found them going nowhere; the inspection's footer now keeps them."""
    with pipeline.store() as store:
        checklist_file, checklist_id = store.conn.execute(
            "SELECT a.id, a.container_id FROM attachments a JOIN checklists c "
            "ON c.id = a.container_id WHERE a.container_type = 'Checklist' AND a.state = 'stored' "
            "AND a.kind = 'Attachment' AND c.deleted = 0 ORDER BY a.id LIMIT 1"
        ).fetchone()
        item_file, item_checklist = store.conn.execute(
            "SELECT a.id, i.checklist_id FROM attachments a JOIN checklist_items i "
            "ON i.id = a.container_id JOIN checklists c ON c.id = i.checklist_id "
            "WHERE a.container_type = 'ChecklistItem' AND a.state = 'stored' AND c.deleted = 0 "
            "ORDER BY a.id LIMIT 1"
        ).fetchone()
        with store.transaction():
            store.conn.execute(
                "UPDATE attachments SET caption = 'north wall', tags = 'rebar, L2' WHERE id = ?",
                (checklist_file,),
            )
            store.conn.execute(
                "UPDATE attachments SET caption = 'crack at joint' WHERE id = ?", (item_file,)
            )
    try:
        fields = by_field(pipeline.transform())
        assert fields[("checklist file or signature", "caption")].kind == "footer"
        assert fields[("checklist file or signature", "caption")].with_value == 2
        with pipeline.store() as store:
            descriptions = dict(
                store.conn.execute(
                    "SELECT source_id, json_extract(payload, '$.list.description') "
                    "FROM planned_inspections WHERE source_id IN (?, ?)",
                    (checklist_id, item_checklist),
                ).fetchall()
            )
        assert 'caption "north wall"; tags rebar, L2' in descriptions[checklist_id]
        assert 'caption "crack at joint"' in descriptions[item_checklist]
    finally:
        with pipeline.store() as store, store.transaction():
            store.conn.execute(
                "UPDATE attachments SET caption = NULL, tags = NULL WHERE id IN (?, ?)",
                (checklist_file, item_file),
            )
        pipeline.transform()
