"""Transform end to end: the sandbox project extracted over HTTP, transformed, and every planned
payload sent to the Procore simulator's sync endpoint, which must accept all of them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from migrate.clients.procore import ProcoreClient
from migrate.contract import LoadReadings
from migrate.extract import extract_from_settings
from migrate.mappings import write_default_mappings
from migrate.results import TransformResult
from migrate.sandbox.generator import AWKWARD_AREA_NAME, AWKWARD_ISSUES, UNKNOWN_ASSIGNEE
from migrate.sandbox.runner import Sandbox
from migrate.settings import (
    MappingsSettings,
    Settings,
    SourceSettings,
    StagingSettings,
    TargetSettings,
    TransformSettings,
    target_credentials,
)
from migrate.store import Store, open_store
from migrate.transform import transform_from_settings


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


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    work = tmp_path_factory.mktemp("transform-e2e")
    write_default_mappings(work / "mappings")
    with Sandbox() as sandbox:
        settings = Settings(
            source=SourceSettings(base_url=sandbox.field_url, project_id=sandbox.field_project_id),
            target=TargetSettings(
                base_url=sandbox.procore_url,
                auth_url=sandbox.procore_url,
                company_id=sandbox.procore_company_id,
                project_id=sandbox.procore_project_id,
            ),
            staging=StagingSettings(
                path=work / "staging.db", blobs=work / "blobs", logs=work / "logs"
            ),
            mappings=MappingsSettings(dir=work / "mappings"),
            transform=TransformSettings(checklist_items_as_issues=True),
        )
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
        assert "assignee_id" in planned(AWKWARD_ISSUES["assignee_case_mismatch"])
        unknown = planned(AWKWARD_ISSUES["assignee_unknown"])
        assert "assignee_id" not in unknown
        assert f"Assignee not carried over: {UNKNOWN_ASSIGNEE}" in unknown["description"]
        assert len(planned(AWKWARD_ISSUES["long_description"])["title"]) <= 80
        paths = [
            json.loads(row[0]) for row in store.conn.execute("SELECT path FROM planned_locations")
        ]
        assert any(path[-1] == AWKWARD_AREA_NAME for path in paths)  # one node, not split


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


def test_offline_reuses_the_snapshot_and_gives_the_same_plan(pipeline: Pipeline) -> None:
    calls = pipeline.sandbox.procore_app.calls
    before = dict(calls)
    again = transform_from_settings(pipeline.settings, {}, offline=True)  # no credentials needed
    assert dict(calls) == before  # not one request to Procore
    assert again.offline and again.plan_hash == pipeline.result.plan_hash
    assert again.counts["issues"] == {**pipeline.result.counts["issues"], "released": 0}
