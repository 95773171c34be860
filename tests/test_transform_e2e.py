"""Transform end to end: the sandbox project extracted over HTTP, transformed, and every planned
payload sent to the Procore simulator's sync endpoint, which must accept all of them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrate.clients.procore import ProcoreClient
from migrate.contract import LoadReadings
from migrate.extract import extract_from_settings
from migrate.load import load_from_settings
from migrate.load.plan import compute_plan
from migrate.mappings import write_default_mappings
from migrate.results import TransformResult
from migrate.sandbox.generator import (
    AWKWARD_AREA_NAME,
    AWKWARD_ISSUES,
    DUE_DATE_TIME,
    DUE_DATE_UNREADABLE,
    UNKNOWN_ASSIGNEE,
)
from migrate.sandbox.runner import Sandbox, SandboxOptions
from migrate.settings import Settings, target_credentials
from migrate.store import Store, open_store
from migrate.transform import transform_from_settings
from tests.test_load import GENEROUS
from tests.test_transform_inspections import make_settings


class Pipeline:
    """A sandbox, the settings pointing at it, and the first transform's result."""

    def __init__(self, sandbox: Sandbox, settings: Settings, result: TransformResult) -> None:
        self.sandbox = sandbox
        self.settings = settings
        self.result = result

    def store(self) -> Store:
        return open_store(self.settings.staging.path)

    def client(self) -> ProcoreClient:
        return ProcoreClient(self.settings.target, target_credentials(self.sandbox.environment()))


def sandbox_settings(sandbox: Sandbox, work: Path) -> Settings:
    return make_settings(sandbox, work, checklist_items_as_issues=True)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    work = tmp_path_factory.mktemp("transform-e2e")
    write_default_mappings(work / "mappings")
    with Sandbox() as sandbox:
        settings = sandbox_settings(sandbox, work)
        extract_from_settings(settings, sandbox.environment())
        result = transform_from_settings(settings, sandbox.environment())
        yield Pipeline(sandbox, settings, result)


def count(store: Store, sql: str, *params: Any) -> int:
    return int(store.conn.execute(sql, params).fetchone()[0])


def test_every_issue_and_area_is_planned_quarantined_or_skipped(pipeline: Pipeline) -> None:
    counts = pipeline.result.counts
    with pipeline.store() as store:
        staged = {
            "issues": count(store, "SELECT COUNT(*) FROM issues"),
            "areas": count(store, "SELECT COUNT(*) FROM areas"),
        }
        for entity in ("issues", "areas", "checklist_items"):
            c = counts[entity]
            assert c["planned"] + c["quarantined"] + c["skipped"] == c["extracted"], entity
        assert counts["issues"]["extracted"] == staged["issues"] == 300
        assert counts["areas"]["extracted"] == staged["areas"]
        voided = len(pipeline.sandbox.project.main.voided_indexes())
        assert (
            count(store, "SELECT COUNT(*) FROM skipped_records WHERE entity = 'issue'")
            == counts["issues"]["skipped"]
            == voided
        )
        assert (
            count(store, "SELECT COUNT(*) FROM planned_issues WHERE source_kind = 'issue'")
            == counts["issues"]["planned"]
        )
        assert (
            count(
                store,
                "SELECT COUNT(*) FROM quarantine WHERE entity = 'issue' AND released_at IS NULL",
            )
            == counts["issues"]["quarantined"]
        )
        run = store.conn.execute(
            "SELECT command, status, counts FROM runs WHERE id = ?", (pipeline.result.run_id,)
        ).fetchone()
        assert run[:2] == ("transform", "succeeded")
        assert json.loads(run[2])["plan_hash"] == pipeline.result.plan_hash


def test_awkward_sandbox_records(pipeline: Pipeline) -> None:
    project = pipeline.sandbox.project.main
    with pipeline.store() as store:

        def planned(index: int) -> dict[str, Any] | None:
            row = store.conn.execute(
                "SELECT payload, location_source_id FROM planned_issues WHERE source_id = ?",
                (project.issue_id(index),),
            ).fetchone()
            return None if row is None else {**json.loads(row[0]), "location": row[1]}

        deleted_area = store.conn.execute(
            "SELECT reason FROM quarantine WHERE source_id = ?",
            (project.issue_id(AWKWARD_ISSUES["deleted_area"]),),
        ).fetchone()
        assert deleted_area == ("location does not exist",)
        assert planned(AWKWARD_ISSUES["missing_area"])["location"] is None
        resolved = planned(AWKWARD_ISSUES["assignee_case_mismatch"])["assignee_id"]
        # The same person written as a Field user id and as a display name (issue 15).
        assert planned(AWKWARD_ISSUES["assignee_user_id"])["assignee_id"] == resolved
        assert planned(AWKWARD_ISSUES["assignee_display_name"])["assignee_id"] == resolved
        unknown = planned(AWKWARD_ISSUES["assignee_unknown"])
        assert "assignee_id" not in unknown
        assert f"Assignee not carried over: {UNKNOWN_ASSIGNEE}" in unknown["description"]
        assert len(planned(AWKWARD_ISSUES["long_description"])["title"]) <= 80
        # A date-time is the day in [transform] time_zone (UTC); an unreadable one stays in text.
        assert DUE_DATE_TIME.startswith("2014-10-14T")
        assert planned(AWKWARD_ISSUES["due_date_time"])["due_date"] == "2014-10-13"
        unreadable = planned(AWKWARD_ISSUES["due_date_unreadable"])
        assert "due_date" not in unreadable
        kept = f"Due date (not a date, not sent): {DUE_DATE_UNREADABLE}"
        assert kept in unreadable["description"]
        identifier = store.conn.execute(
            "SELECT identifier FROM issues WHERE source_id = ?",
            (project.issue_id(AWKWARD_ISSUES["due_date_unreadable"]),),
        ).fetchone()[0]
        warnings = compute_plan(store, pipeline.settings.target.project_id).warnings
        assert any("not a date" in w and identifier in w for w in warnings), warnings
        paths = [
            json.loads(row[0]) for row in store.conn.execute("SELECT path FROM planned_locations")
        ]
        assert any(path[-1] == AWKWARD_AREA_NAME for path in paths)  # one node, not split


def test_every_staged_caption_and_tag_is_in_its_issue_description(pipeline: Pipeline) -> None:
    with pipeline.store() as store:
        rows = store.conn.execute(
            "SELECT a.filename, a.caption, a.tags, p.payload FROM attachments a "
            "JOIN planned_issues p ON p.source_id = a.container_id AND p.source_kind = 'issue' "
            "WHERE a.container_type = 'Issue' AND (a.caption <> '' OR a.tags <> '')"
        ).fetchall()
    assert len(rows) > 20
    for filename, caption, tags, payload in rows:
        description = json.loads(payload)["description"]
        line = next(line for line in description.splitlines() if line.startswith(f"  {filename}:"))
        if caption:
            assert f'caption "{caption}"' in line
        for tag in filter(None, (tags or "").split(",")):
            assert tag in line


def test_planned_payloads_pass_the_procore_sync(pipeline: Pipeline) -> None:
    """Resolve locations through find_or_create_by_path, then send every payload for real."""
    project_id = pipeline.settings.target.project_id
    with pipeline.store() as store, pipeline.client() as client:
        rows = store.conn.execute(
            "SELECT p.payload, l.path FROM planned_issues AS p "
            "LEFT JOIN planned_locations AS l ON l.source_id = p.location_source_id "
            "ORDER BY p.source_id"
        ).fetchall()
        location_ids: dict[str, int] = {}
        items = []
        for payload_json, path in rows:
            item = json.loads(payload_json)
            # As load sends it: a status create does not take goes out as open (seed 000).
            item["status"] = LoadReadings().create_status(item["status"])
            if path is not None:
                if path not in location_ids:
                    location, _created = client.find_or_create_location(
                        project_id, json.loads(path)
                    )
                    location_ids[path] = int(location["id"])
                item["location_id"] = location_ids[path]
            items.append(item)
        assert len(items) > 250
        result = client.sync_issues(project_id, items)
    assert result.errors == []
    assert len(result.entities) == len(items)
    created = {issue["uuid"]: issue for issue in pipeline.sandbox.procore_app.issues(project_id)}
    for item in items:
        issue = created[item["uuid"]]
        assert issue["title"] == item["title"] and issue["status"] == item["status"]
        assert issue["location_id"] == item.get("location_id")
        assert issue["assignee_id"] == item.get("assignee_id")
        assert issue["due_date"] == item.get("due_date")


def test_offline_reuses_the_snapshot_and_gives_the_same_plan(pipeline: Pipeline) -> None:
    calls = pipeline.sandbox.procore_app.calls
    before = dict(calls)
    again = transform_from_settings(pipeline.settings, {}, offline=True)  # no credentials needed
    assert dict(calls) == before  # not one request to Procore
    assert again.offline and again.plan_hash == pipeline.result.plan_hash
    assert again.counts["issues"] == {**pipeline.result.counts["issues"], "released": 0}


def test_the_trade_target_resolves_to_procore_trades_or_stays_in_the_text(
    tmp_path: Path,
) -> None:
    """fields.csv sends the Field "Trade" custom field to trade: each value reaches Procore as
    the trade_id of the trade of that name (any case, or the trades.csv row), and a value no
    trade has stays in the description and in the plan's warnings."""
    write_default_mappings(tmp_path / "mappings")
    with open(tmp_path / "mappings" / "fields.csv", "a", encoding="utf-8") as fields:
        fields.write("Trade,trade\n")
    (tmp_path / "mappings" / "trades.csv").write_text(
        "field_trade,procore_trade\nMechanical,HVAC\nglazing,glass & glazing\n",
        encoding="utf-8",
    )
    # Generous windows: this proves where trades land, not pacing (real windows: ~20 s).
    with Sandbox(SandboxOptions(issues=60, procore_options=GENEROUS)) as sandbox:
        settings = sandbox_settings(sandbox, tmp_path)
        env = sandbox.environment()
        extract_from_settings(settings, env)
        first = transform_from_settings(settings, env)
        trade_calls = sandbox.procore_app.calls["company_trades.list"]
        assert trade_calls >= 1
        # Offline, the stored trades give the same plan (and Procore is not asked again).
        offline = transform_from_settings(settings, {}, offline=True)
        assert offline.plan_hash == first.plan_hash
        assert sandbox.procore_app.calls["company_trades.list"] == trade_calls
        load_from_settings(settings, env)
        with open_store(settings.staging.path) as store:
            staged = {
                source_id: json.loads(fields)["Trade"]["value"]
                for source_id, fields in store.conn.execute(
                    "SELECT i.source_id, i.custom_fields FROM issues i JOIN planned_issues p "
                    "ON p.source_id = i.source_id WHERE json_extract(i.custom_fields, "
                    "'$.Trade.value') <> ''"
                )
            }
            descriptions = dict(
                store.conn.execute(
                    "SELECT source_id, json_extract(payload, '$.description') FROM planned_issues"
                ).fetchall()
            )
            warnings = compute_plan(store, settings.target.project_id).warnings
        trade_ids = {t["name"]: t["id"] for t in pipeline_trades(settings, env)}
        expected = {
            "Drywall": trade_ids["Drywall"],
            "Electrical": trade_ids["ELECTRICAL"],
            "Concrete": trade_ids["Concrete"],
            "Mechanical": trade_ids["HVAC"],
            "Glazing": trade_ids["Glass & Glazing"],
            "Plumbing": None,
        }
        held = {
            issue["origin"]["origin_id"]: issue
            for issue in sandbox.procore_app.issues(settings.target.project_id)
            if issue.get("origin")
        }
    assert set(staged.values()) == set(expected)
    for source_id, value in staged.items():
        assert held[source_id]["trade_id"] == expected[value], (source_id, value)
        kept = f"Trade (no Procore trade, not sent): {value}"
        assert (kept in descriptions[source_id]) == (expected[value] is None)
    plumbing = sum(1 for value in staged.values() if value == "Plumbing")
    assert any(f"{plumbing} issue(s) name a trade" in w for w in warnings), warnings


def pipeline_trades(settings: Settings, env: dict[str, str]) -> list[dict[str, Any]]:
    """The company's trades as the Procore client reads them."""
    assert settings.target.company_id is not None
    with ProcoreClient(settings.target, target_credentials(env)) as client:
        return client.trades(settings.target.company_id)
