"""The dry-run plan: planned rows against a hand-made id map, every kind counted and listed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from migrate.errors import EXIT_USAGE, ConfigError, StagingNotReady
from migrate.load.plan import PLAN_KINDS, ROW_KEYS, compute_plan, plan_from_settings
from migrate.settings import MappingsSettings, Settings, StagingSettings, TargetSettings
from migrate.store import Store, finish_run, open_store, start_run
from migrate.store.db import utc_now
from tests.test_transform import PROJECT, add_issue, make_store, planned, transform

SHA = "ab" * 32


def map_row(
    store: Store,
    entity: str,
    source_id: str,
    state: str = "loaded",
    *,
    target_id: int | None = None,
    payload_hash: str | None = None,
    target_status: str | None = None,
    attachment_ids: list[str] | None = None,
    project: int = PROJECT,
) -> None:
    with store.transaction():
        store.conn.execute(
            "INSERT INTO id_map (entity, source_id, target_project_id, target_id, state, "
            "payload_hash, target_status, attachment_ids, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entity,
                source_id,
                project,
                target_id,
                state,
                payload_hash,
                target_status,
                json.dumps(attachment_ids) if attachment_ids is not None else None,
                utc_now(),
            ),
        )


def load_quarantine(store: Store, source_id: str, payload_hash: str) -> None:
    """What load writes when Procore refuses a payload."""
    with store.transaction():
        store.conn.execute(
            "INSERT INTO quarantine (entity, source_id, stage, reason, hint, record, created_at) "
            "VALUES ('issue', ?, 'load', 'title: is too long', 'shorten it', ?, ?)",
            (source_id, json.dumps({"payload_hash": payload_hash}), utc_now()),
        )


@pytest.fixture
def store(tmp_path: Path):
    with make_store(tmp_path / "staging.db") as opened:
        for name in (
            "new",
            "same",
            "changed",
            "closed",
            "both",
            "sent",
            "attach",
            "refused",
            "retry",
        ):
            status = "Closed" if name in ("closed", "both") else "Open"
            attachments = (
                [
                    {"id": f"{name}-a1", "state": "stored", "sha256": SHA, "size": 1},
                    {"id": f"{name}-a2", "state": "stored", "sha256": SHA, "size": 1},
                ]
                if name == "attach"
                else []
            )
            add_issue(opened, name, status=status, area_id="a-n1-101", attachments=attachments)
        add_issue(opened, "void", status="Void")
        add_issue(opened, "voidloaded", status="Void")
        add_issue(opened, "parked", status="Parked")
        add_issue(opened, "south", area_id="a-s1")
        with opened.transaction():
            opened.conn.execute(
                "INSERT INTO areas (id, parent_id, name) VALUES ('a-blank', NULL, ' ')"
            )
        transform(opened)
        yield opened


def hash_of(store: Store, source_id: str) -> str:
    return planned(store, source_id)["payload_hash"]


def test_every_kind_is_counted_and_listed(store: Store) -> None:
    issue = "coordination_issue"
    map_row(
        store, issue, "same", target_id=1, payload_hash=hash_of(store, "same"), target_status="open"
    )
    map_row(store, issue, "changed", target_id=2, payload_hash="old", target_status="open")
    map_row(
        store,
        issue,
        "closed",
        target_id=3,
        payload_hash=hash_of(store, "closed"),
        target_status="open",
    )
    map_row(store, issue, "both", target_id=4, payload_hash="old", target_status="open")
    map_row(store, issue, "sent", "sent", payload_hash=hash_of(store, "sent"))
    map_row(
        store,
        issue,
        "attach",
        target_id=5,
        payload_hash=hash_of(store, "attach"),
        target_status="open",
        attachment_ids=["attach-a1"],
    )
    map_row(store, issue, "voidloaded", target_id=6, payload_hash="x", target_status="open")
    map_row(store, issue, "vanished", target_id=7, payload_hash="x", target_status="open")
    map_row(store, issue, "refused", "rejected", payload_hash=hash_of(store, "refused"))
    load_quarantine(store, "refused", hash_of(store, "refused"))
    map_row(store, issue, "retry", "rejected", payload_hash="older")
    load_quarantine(store, "retry", "older")
    room = 'path:["North Building", "Level 1", "Room 101"]'
    map_row(store, "location", room, target_id=9003)
    map_row(store, "location", 'path:["Gone"]', target_id=9099)
    map_row(store, issue, "elsewhere", target_id=8, project=5101)  # another project: ignored

    plan = compute_plan(store, PROJECT)
    counts = plan.counts()
    assert counts[issue] == {
        "create": 4,
        "update": 2,
        "status_change": 2,
        "unchanged": 2,
        "skipped": 1,
        "blocked": 2,
        "deleted_at_source": 2,
        "attachments_after_load": 1,
    }
    assert counts["location"] == {
        "create": 3,
        "update": 0,
        "status_change": 0,
        "unchanged": 3,
        "skipped": 2,
        "blocked": 1,
        "deleted_at_source": 1,
        "attachments_after_load": 0,
    }

    def ids(kind: str, entity: str = issue) -> list[str]:
        return plan.source_ids(entity, kind)

    assert ids("create") == ["new", "retry", "sent", "south"]
    assert ids("update") == ["both", "changed"]
    assert ids("status_change") == ["both", "closed"]
    assert ids("unchanged") == ["attach", "same"]
    assert ids("skipped") == ["void"]
    assert ids("blocked") == ["parked", "refused"]
    assert ids("deleted_at_source") == ["vanished", "voidloaded"]
    assert ids("attachments_after_load") == ["attach"]
    assert ids("create", "location") == [
        'path:["North Building", "Stair 2 > Landing"]',
        'path:["South Building", "Level 1"]',
        'path:["South Building"]',
    ]
    assert ids("unchanged", "location") == [
        'path:["North Building", "Level 1", "Room 101"]',
        'path:["North Building", "Level 1"]',
        'path:["North Building"]',
    ]
    assert ids("skipped", "location") == ["a-old", "a-old-desk"]
    assert ids("blocked", "location") == ["a-blank"]
    assert ids("deleted_at_source", "location") == ['path:["Gone"]']

    rows = {row["source_id"]: row for row in plan.rows("status_change")}
    assert rows["closed"]["detail"] == "open → closed" and rows["closed"]["target_id"] == 3
    blocked = {row["source_id"]: row for row in plan.rows("blocked")}
    assert blocked["parked"]["detail"].endswith("(transform): unmapped status 'Parked'")
    assert blocked["refused"]["hint"] == "shorten it"
    assert plan.rows("attachments_after_load")[0]["detail"] == ["attach-a2"]
    assert plan.rows("deleted_at_source", issue)[1]["detail"].startswith("status 'Void'")
    assert plan.rows("create", issue)[2]["detail"].startswith("was in flight")
    linked = {row["source_id"]: row for row in plan.rows("unchanged", "location")}
    assert linked['path:["North Building"]']["target_id"] == 9001  # from the snapshot
    assert all(set(row) == set(ROW_KEYS) for kind in PLAN_KINDS for row in plan.rows(kind))

    as_json = json.loads(json.dumps(plan.to_json(["create"])))  # JSON-able as it is
    assert as_json["counts"] == counts
    assert as_json["transform_run_id"] == plan.transform_run_id
    assert list(as_json["rows"]) == ["create"] and len(as_json["rows"]["create"]) == 7
    assert "rows" not in plan.to_json()
    assert "Plan for Procore project 5100" in plan.summary_lines()[0]


def test_fresh_plan_creates_everything_planned(store: Store) -> None:
    counts = compute_plan(store, PROJECT).counts()["coordination_issue"]
    assert counts["create"] == 10  # every planned row
    assert counts["blocked"] == 1 and counts["skipped"] == 2
    assert counts["update"] == counts["unchanged"] == counts["deleted_at_source"] == 0


def test_plan_for_another_project_is_refused(store: Store) -> None:
    with pytest.raises(ConfigError) as caught:
        compute_plan(store, 5101)
    assert caught.value.exit_code == EXIT_USAGE
    assert "made for Procore project 5100, not 5101" in str(caught.value)


def test_newer_extract_is_a_warning(store: Store) -> None:
    run_id = start_run(store, "extract", {})
    finish_run(store, run_id, "succeeded", {})
    plan = compute_plan(store, PROJECT)
    assert plan.warnings and f"extract run {run_id} finished after" in plan.warnings[0]


def test_plan_from_settings_needs_a_transform(tmp_path: Path) -> None:
    settings = Settings(
        staging=StagingSettings(path=tmp_path / "empty.db"),
        mappings=MappingsSettings(dir=tmp_path),
        target=TargetSettings(project_id=PROJECT),
    )
    with pytest.raises(StagingNotReady, match="Run `migrate extract` first"):
        plan_from_settings(settings)  # no DB at all: plan never creates one
    assert not (tmp_path / "empty.db").exists()
    open_store(tmp_path / "empty.db").close()
    with pytest.raises(ConfigError, match="Run `migrate transform` first"):
        plan_from_settings(settings)


def test_plan_from_settings_reads_the_store(store: Store, tmp_path: Path) -> None:
    settings = Settings(
        staging=StagingSettings(path=Path(store.path)), target=TargetSettings(project_id=PROJECT)
    )
    plan: Any = plan_from_settings(settings)
    assert plan.counts()["coordination_issue"]["create"] == 10
