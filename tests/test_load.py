"""Load into the Procore simulator over real HTTP: exactly once, batching, faults, deltas, pacing.

The first group runs the whole chain (extract → transform → load) on a generated 1 000-issue
project and checks the simulator's state record by record. The rest plant planned rows
directly (as transform writes them, see notes/transform_load.md) to aim at one behaviour each
without a BIM 360 Field round trip.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrate.contract import documented, record_contract
from migrate.errors import EXIT_QUARANTINED
from migrate.extract import extract_from_settings
from migrate.ids import issue_uuid
from migrate.load import load_from_settings
from migrate.load.plan import compute_plan
from migrate.sandbox.generator import sha256_of_chunks
from migrate.sandbox.httpbase import Request, Route, RunningServer, json_response
from migrate.sandbox.procore_server import ProcoreApp
from migrate.sandbox.runner import Sandbox, SandboxOptions
from migrate.settings import (
    MappingsSettings,
    Settings,
    SourceSettings,
    StagingSettings,
    TargetSettings,
)
from migrate.store import BlobStore, open_store
from migrate.store.planned import payload_hash
from migrate.transform import transform_from_settings
from migrate.transform.locations import location_source_id

REPO = Path(__file__).resolve().parents[1]
COMPANY = 4100
PROJECT = 5100
PROCORE_ENV = {"PROCORE_CLIENT_ID": "demo-client", "PROCORE_CLIENT_SECRET": "demo-secret"}
#: Routes that change Procore: a no-change re-run must not touch any of them.
WRITE_ROUTES = (
    "coordination_issues.sync",
    "coordination_issues.create",
    "coordination_issues.update",
    "uploads.create",
    "storage.upload",
    "locations.find_or_create_by_path",
    "locations.create",
)
GENEROUS = {"spike_limit": 100_000, "hourly_limit": 1_000_000}
#: What a load with nothing to do still asks Procore: the access check it starts with (Show
#: Project: credentials, company, project) and the token that needs.
ACCESS_CHECK = {"oauth.token": 1, "projects.show": 1}


def calls_since(app: Any, before: dict[str, int]) -> dict[str, int]:
    """Requests the simulator received since ``before`` (its call_counts()), by route."""
    return {k: n - before.get(k, 0) for k, n in app.call_counts().items() if n != before.get(k)}


#: Simulator routes of the Inspections tool (checklists load there, issue 14).
INSPECTION_ROUTES = (
    "inspection_types.",
    "response_sets.",
    "company_templates.",
    "company_sections.",
    "company_items.",
    "project_templates.",
    "lists.",
    "list_sections.",
    "list_items.",
    "item_response.",
    "list_comments.",
    "item_attachments.",
    "list_attachments.",
    "item_types.",
    "project_vendors.",
)


class RecordingProcoreApp(ProcoreApp):
    """The simulator, also noting how many items each sync call carried.

    ``sync_answer_gate``, when set, holds every sync answer after the call was applied until
    the gate opens (``sync_answer_held`` says one is held), so a process can be killed with its
    batch in Procore but not in its id map;
    ``sync_gate``, when set, holds sync calls before anything is applied until the gate opens,
    then refuses them with 503 if ``refuse_held_syncs`` (the call never reached Procore).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sync_sizes: list[int] = []
        self.quota_arrivals: list[float] = []  # when each request counted against the quota
        self.sync_answer_gate: threading.Event | None = None
        self.sync_answer_held = threading.Event()
        self.sync_gate: threading.Event | None = None
        self.refuse_held_syncs = False

    def decorate(self, request: Request, route: Route | None, response: Any) -> None:
        gate = self.sync_answer_gate
        if gate is not None and route is not None and route.name == "coordination_issues.sync":
            self.sync_answer_held.set()
            gate.wait(120)  # a hang guard: the test opens the gate
        super().decorate(request, route, response)

    def before(self, request: Request, route: Route) -> Any:
        gate = self.sync_gate
        if gate is not None and route.name == "coordination_issues.sync":
            gate.wait(120)  # a hang guard: the test opens the gate
            if self.refuse_held_syncs:
                return json_response({"error": "held by the test, never applied"}, 503)
        refusal = super().before(request, route)
        if request.path.startswith("/rest/") and (refusal is None or refusal.status != 429):
            self.quota_arrivals.append(time.monotonic())
        if refusal is None and route.name == "coordination_issues.sync":
            self.sync_sizes.append(len(request.json().get("updates", [])))
        return refusal


class RecordingProgress:
    """A Progress that remembers what each bar was told."""

    def __init__(self) -> None:
        self.done: Counter[str] = Counter()
        self.finished: set[str] = set()

    def start(self, entity: str, total: int | None) -> None:
        self.done[entity] += 0

    def advance(self, entity: str, n: int = 1) -> None:
        self.done[entity] += n

    def finish(self, entity: str) -> None:
        self.finished.add(entity)


def writes(app: ProcoreApp) -> dict[str, int]:
    counts = app.call_counts()
    return {route: counts.get(route, 0) for route in WRITE_ROUTES}


def settings_for(
    tmp: Path,
    procore_url: str,
    *,
    field_url: str | None = None,
    field_project: str | None = None,
    workers: int = 4,
) -> Settings:
    source = (
        SourceSettings(base_url=field_url, project_id=field_project)
        if field_url
        else SourceSettings()
    )
    return Settings(
        source=source,
        target=TargetSettings(
            base_url=procore_url,
            auth_url=procore_url,
            company_id=COMPANY,
            project_id=PROJECT,
            workers=workers,
        ),
        staging=StagingSettings(path=tmp / "staging.db", blobs=tmp / "blobs", logs=tmp / "logs"),
        mappings=MappingsSettings(dir=REPO / "mappings"),
    )


# -- planting planned rows (the transform contract) -------------------------------------------

PATHS = (
    ("Tower",),
    ("Tower", "Level 1"),
    ("Tower", "Level 2"),
    ("Tower", "Level 2", "Room 2A"),
    ("Annex > East",),
    ("Annex > East", "Roof"),
)


def plant(
    settings: Settings, count: int, *, attachments: int = 0, start: int = 0, blob_size: int = 1500
) -> list[str]:
    """Planned locations (PATHS) and ``count`` planned issues; every ``attachments``-th issue
    (1: every one) gets a stored file. Returns the issues' source ids."""
    store = open_store(settings.staging.path)
    blobs = BlobStore(settings.staging.blobs)
    leaves = {p for p in PATHS if not any(q[: len(p)] == p and len(q) > len(p) for q in PATHS)}
    source_ids = []
    try:
        with store.transaction():
            for path in PATHS:
                store.conn.execute(
                    "INSERT OR IGNORE INTO planned_locations (source_id, path, path_text, "
                    "parent_source_id, depth, is_leaf) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        location_source_id(path),
                        json.dumps(path),
                        ">".join(path),
                        location_source_id(path[:-1]) if len(path) > 1 else None,
                        len(path),
                        int(path in leaves),
                    ),
                )
            store.conn.execute(
                "INSERT INTO runs (command, args, started_at, finished_at, status) "
                "VALUES ('transform', ?, '2026-01-01T00:00:00.000Z', "
                "'2026-01-01T00:00:01.000Z', 'succeeded')",
                (json.dumps({"target_project_id": PROJECT}),),
            )
            for index in range(start, start + count):
                source_id = f"field-issue-{index:05d}"
                files = []
                if attachments and index % attachments == 0:
                    data = hashlib.sha256(source_id.encode()).digest() * (blob_size // 32 + 1)
                    info = blobs.write_stream([data[:blob_size]])
                    attachment_id = f"att-{index:05d}"
                    store.conn.execute(
                        "INSERT INTO attachments (id, container_type, container_id, kind, "
                        "filename, content_type, state, sha256, size) "
                        "VALUES (?, 'Issue', ?, 'Attachment', ?, 'image/jpeg', 'stored', ?, ?)",
                        (attachment_id, source_id, f"IMG_{index}.jpg", info.sha256, info.size),
                    )
                    files.append((attachment_id, info.sha256))
                location = location_source_id(PATHS[index % len(PATHS)])
                payload = {
                    "uuid": issue_uuid(PROJECT, source_id),
                    "title": f"Planted issue {index}",
                    "description": f"Body of {index}",
                    "status": "open",
                    "priority": "low",
                    "origin": {
                        "origin_type": "bim360_field_issue",
                        "origin_id": source_id,
                        "title": f"{index:06d}",
                        "deep_link_url": f"https://bim360field.autodesk.com/{source_id}",
                    },
                }
                store.conn.execute(
                    "INSERT INTO planned_issues (source_id, source_kind, identifier, title, "
                    "status, priority, location_source_id, uuid, payload, attachment_ids, "
                    "payload_hash) VALUES (?, 'issue', ?, ?, 'open', 'low', ?, ?, ?, ?, ?)",
                    (
                        source_id,
                        f"{index:06d}",
                        payload["title"],
                        location,
                        payload["uuid"],
                        json.dumps(payload),
                        json.dumps([a for a, _ in files]),
                        payload_hash(payload, location, [s for _, s in files]),
                    ),
                )
                source_ids.append(source_id)
    finally:
        store.close()
    return source_ids


@pytest.fixture
def procore() -> Iterator[RecordingProcoreApp]:
    app = RecordingProcoreApp(**GENEROUS)
    server = RunningServer(app)
    app.url = server.url  # type: ignore[attr-defined]
    yield app
    server.stop()
    app.close()


def db_rows(settings: Settings, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with sqlite3.connect(settings.staging.path) as conn:
        return conn.execute(sql, params).fetchall()


def project_issues(app: ProcoreApp) -> list[dict[str, Any]]:
    return app.snapshot()["projects"][str(PROJECT)]["issues"]


def location_paths(app: ProcoreApp) -> dict[int, tuple[str, ...]]:
    """Procore location id → node path, walking parent ids (never splitting names)."""
    locations = {loc["id"]: loc for loc in app.snapshot()["projects"][str(PROJECT)]["locations"]}

    def path(location_id: int) -> tuple[str, ...]:
        loc = locations[location_id]
        parent = loc["parent_id"]
        return (*(path(parent) if parent else ()), loc["node_name"])

    return {location_id: path(location_id) for location_id in locations}


# -- the whole chain on a 1 000-issue project ---------------------------------------------------


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("chain")
    with Sandbox(SandboxOptions(issues=1000, procore_options=GENEROUS)) as sandbox:
        settings = settings_for(
            tmp,
            sandbox.procore_url,
            field_url=sandbox.field_url,
            field_project=sandbox.field_project_id,
        )
        env = sandbox.environment()
        extract_from_settings(settings, env)
        transform_from_settings(settings, env)
        # Plant refusals: one assignee leaves Procore's assignee list after transform planned
        # issues for them, so Procore refuses those items at load.
        removed = db_rows(
            settings,
            "SELECT assignee_id, COUNT(*) FROM planned_issues WHERE "
            "assignee_id IS NOT NULL GROUP BY 1 ORDER BY 2 LIMIT 1",
        )[0][0]
        app = sandbox.procore_app
        with app.lock:
            app._assignees[PROJECT].remove(removed)
        before = app.call_counts()
        existing = len(project_issues(app))
        started = time.monotonic()
        result = load_from_settings(settings, env)
        yield {
            "sandbox": sandbox,
            "settings": settings,
            "env": env,
            "result": result,
            "removed_assignee": removed,
            "calls_before": before,
            "existing": existing,
            "seconds": time.monotonic() - started,
        }


def test_chain_creates_every_planned_issue_and_location_exactly_once(chain: dict) -> None:
    settings, app = chain["settings"], chain["sandbox"].procore_app
    planned = db_rows(
        settings,
        "SELECT source_id, uuid, payload, location_source_id, "
        "attachment_ids, assignee_id FROM planned_issues",
    )
    assert len(planned) > 900
    issues = project_issues(app)
    by_uuid: dict[str, list[dict[str, Any]]] = {}
    for issue in issues:
        by_uuid.setdefault(issue["uuid"], []).append(issue)
    assert all(len(found) == 1 for found in by_uuid.values()), "a uuid is in Procore twice"
    id_map = dict(
        db_rows(
            settings,
            "SELECT source_id, target_id FROM id_map WHERE "
            "entity = 'coordination_issue' AND state = 'loaded'",
        )
    )
    locations = {
        row[0]: row[1]
        for row in db_rows(
            settings,
            "SELECT source_id, target_id FROM id_map WHERE entity = 'location' "
            "AND state = 'loaded'",
        )
    }
    paths = location_paths(app)
    sha_of = dict(db_rows(settings, "SELECT id, sha256 FROM attachments"))
    removed = chain["removed_assignee"]
    # Create takes open or closed (seed 000), a single update open, ready_for_review or closed
    # (procore-notes): other statuses are created open and quarantined with Procore's reason.
    status_refused = dict(
        db_rows(
            settings,
            "SELECT source_id, reason FROM quarantine WHERE stage = 'load' AND released_at IS NULL "
            "AND reason LIKE '%status%'",
        )
    )
    loaded = 0
    for source_id, uuid, payload_text, location, attachment_ids, assignee_id in planned:
        if assignee_id == removed:
            assert uuid not in by_uuid
            continue
        payload = json.loads(payload_text)
        (issue,) = by_uuid[uuid]
        assert id_map[source_id] == issue["id"]
        if payload["status"] in ("open", "ready_for_review", "closed"):
            assert issue["status"] == payload["status"], source_id
        else:
            assert issue["status"] == "open", source_id
            assert payload["status"] in status_refused[source_id], source_id
        for name in (
            "title",
            "description",
            "priority",
            "issue_type",
            "due_date",
            "assignee_id",
            "origin",
        ):
            assert issue[name] == payload.get(name), (source_id, name)
        assert issue["origin"]["origin_id"] == source_id
        if location is None:
            assert issue["location_id"] is None
        else:
            assert issue["location_id"] == locations[location]
            assert paths[issue["location_id"]] == tuple(json.loads(location[len("path:") :]))
        expected = sorted(sha_of[a] for a in json.loads(attachment_ids))
        assert sorted(a["sha256"] for a in issue["attachments"]) == expected, source_id
        loaded += 1
    assert loaded == chain["result"].counts["coordination_issue"]["created"]
    # Nothing else was created: the project's own starting issues plus the loaded ones.
    assert len(issues) == chain["existing"] + loaded
    # Every planned location exists once, at its path.
    planned_paths = [
        tuple(json.loads(p)) for (p,) in db_rows(settings, "SELECT path FROM planned_locations")
    ]
    counted = Counter(paths.values())
    for path in planned_paths:
        assert counted[path] == 1, path
        assert paths[locations[location_source_id(path)]] == path


def test_chain_attachments_carry_the_source_bytes(chain: dict) -> None:
    sandbox, settings = chain["sandbox"], chain["settings"]
    rows = db_rows(
        settings,
        "SELECT id, sha256, size, content_type, rendition_of, rendition_page, kind "
        "FROM attachments "
        "WHERE state = 'stored' AND id IN (SELECT value FROM planned_issues, "
        "json_each(planned_issues.attachment_ids))",
    )
    attached = {
        a["sha256"]: a
        for issue in project_issues(sandbox.procore_app)
        for a in issue["attachments"]
    }
    checked = 0
    for attachment_id, sha256, size, content_type, rendition_of, page, kind in rows:
        if sha256 not in attached:
            continue  # on an issue Procore refused (planted assignee)
        assert attached[sha256]["size"] == size
        if rendition_of is not None and kind == "Attachment":  # a marked-up photo's page
            variant = f"composite:{page}"
            chunks = sandbox.project.attachment_chunks(rendition_of, size, content_type, variant)
            assert sha256_of_chunks(chunks) == sha256
        elif (
            # Re-derive the bytes BIM 360 Field served for a sample (signature images are
            # checked against their source in test_extract_renditions).
            rendition_of is None and kind != "Signature" and checked < 25
        ):
            assert sandbox.project.attachment_sha256(attachment_id, size, content_type) == sha256
        checked += 1
    assert checked > 500


def test_chain_refused_items_are_quarantined_with_procores_reason(chain: dict) -> None:
    settings, result = chain["settings"], chain["result"]
    refused = {
        sid
        for (sid,) in db_rows(
            settings,
            "SELECT source_id FROM planned_issues WHERE assignee_id = ?",
            (chain["removed_assignee"],),
        )
    }
    assert refused
    rows = db_rows(
        settings,
        "SELECT source_id, reason, hint, record FROM quarantine WHERE "
        "stage = 'load' AND released_at IS NULL AND reason NOT LIKE '%status change%'",
    )
    (status_refused,) = db_rows(
        settings,
        "SELECT COUNT(*) FROM quarantine WHERE stage = 'load' AND released_at IS NULL "
        "AND reason LIKE '%status change%'",
    )[0]
    assert {row[0] for row in rows} == refused
    for source_id, reason, hint, record in rows:
        assert "assignee_id is not a permitted assignee on this project" in reason
        assert "assignee" in hint
        stored = json.loads(record)
        assert stored["payload"]["uuid"] == issue_uuid(PROJECT, source_id)
        assert stored["procore_errors"] == {
            "assignee_id": ["is not a permitted assignee on this project"]
        }
    states = dict(
        db_rows(settings, "SELECT source_id, state FROM id_map WHERE entity = 'coordination_issue'")
    )
    assert {states[sid] for sid in refused} == {"rejected"}
    assert result.counts["coordination_issue"]["rejected"] == len(refused) + status_refused
    assert result.exit_code == EXIT_QUARANTINED


def test_chain_spends_requests_close_to_the_lower_bound(chain: dict) -> None:
    result, app, settings = chain["result"], chain["sandbox"].procore_app, chain["settings"]
    creates = (
        result.counts["coordination_issue"]["created"]
        + result.counts["coordination_issue"]["rejected"]
    )
    attachments = db_rows(settings, "SELECT COUNT(*) FROM uploads")[0][0]
    new_leaves = db_rows(
        settings,
        "SELECT COUNT(*) FROM planned_locations WHERE is_leaf = 1 AND existing_target_id IS NULL",
    )[0][0]
    # Statuses create does not take (seed 000: open or closed) cost one PATCH each afterwards.
    (moved,) = db_rows(
        settings,
        "SELECT COUNT(*) FROM planned_issues p JOIN id_map m USING (source_id) WHERE "
        "m.entity = 'coordination_issue' AND m.state = 'loaded' "
        "AND p.status NOT IN ('open', 'closed')",
    )[0]
    # + 1: the access check every load starts with (credentials, company, project).
    lower_bound = -(-creates // 1000) + new_leaves + 2 * attachments + moved + 1
    calls = app.call_counts()
    before = chain["calls_before"]
    # The generated project's checklists load as inspections in the same run: their requests
    # (their own bound is checked in tests/test_load_inspections.py and bench/inspections_bench)
    # are left out here; their file uploads stay on both sides (2 per upload, like issues').
    inspection_calls = sum(
        calls[route] - before.get(route, 0)
        for route in calls
        if route.startswith(INSPECTION_ROUTES)
    )
    made = (
        sum(calls.values())
        - sum(before.values())
        - calls.get("oauth.token", 0)
        + before.get("oauth.token", 0)
        - inspection_calls
    )
    assert calls["coordination_issues.sync"] - before.get("coordination_issues.sync", 0) == 1
    assert made <= 1.02 * lower_bound, (made, lower_bound, result.requests)
    assert result.rate_limited == 0


def test_no_change_rerun_makes_no_write_call(chain: dict) -> None:
    app, settings = chain["sandbox"].procore_app, chain["settings"]
    before = app.call_counts()
    result = load_from_settings(settings, chain["env"])
    # No write: only the access check every load starts with (and the token it needs), so a
    # wrong secret is found even when there is nothing to send.
    assert calls_since(app, before) == ACCESS_CHECK
    assert result.requests == {"GET /rest/v1.0/projects/:id": 1, "POST /oauth/token": 1}
    assert result.counts["coordination_issue"]["created"] == 0
    # Issues whose status Procore refused stay quarantined (counted rejected), not unchanged.
    counts = result.counts["coordination_issue"]
    assert counts["unchanged"] + counts["rejected"] > 900
    assert result.exit_code == EXIT_QUARANTINED  # the planted refusals are still open


def test_status_change_goes_through_patch_and_new_attachment_is_reported(chain: dict) -> None:
    sandbox, settings, env = chain["sandbox"], chain["settings"], chain["env"]
    app = sandbox.procore_app
    loaded = db_rows(
        settings,
        "SELECT m.source_id, m.target_id FROM id_map m JOIN "
        "planned_issues p USING (source_id) WHERE m.state = 'loaded' AND "
        "p.status = 'open' AND m.entity = 'coordination_issue' "
        "ORDER BY m.source_id LIMIT 2",
    )
    (closed_id, closed_target), (grown_id, grown_target) = loaded
    sandbox.field_app.update_issue(closed_id, status="Closed")
    new_file = sandbox.field_app.add_attachment(grown_id, "late photo.jpg", 4096, "image/jpeg")
    extract_from_settings(settings, env)
    transform_from_settings(settings, env)
    plan = compute_plan(open_store(settings.staging.path), PROJECT)
    assert [r["source_id"] for r in plan.rows("status_change")] == [closed_id]
    assert [(r["source_id"], r["detail"]) for r in plan.rows("attachments_after_load")] == [
        (grown_id, [new_file])
    ]

    before = app.call_counts()
    result = load_from_settings(settings, env)
    after = app.call_counts()
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after if after[k] != before.get(k)}
    # The status goes through one PATCH (the description, which lists the status history,
    # through sync). The new attachment cannot be sent: Procore takes files only at create.
    # Issues created by this run (transform re-planned the refused assignees) with a status
    # create does not take are moved by PATCH too, or refused and quarantined.
    (status_refused,) = db_rows(
        settings,
        "SELECT COUNT(*) FROM quarantine WHERE run_id = ? AND reason LIKE '%status change%'",
        (result.run_id,),
    )[0]
    changed = result.counts["coordination_issue"]["status_changed"]
    assert delta["coordination_issues.update"] == changed + status_refused
    assert "uploads.create" not in delta and "storage.upload" not in delta
    (issue,) = [i for i in project_issues(app) if i["id"] == closed_target]
    assert issue["status"] == "closed"
    assert [
        (a["source_id"], a["target_id"], a["attachment_ids"]) for a in result.attachments_after_load
    ] == [(grown_id, grown_target, [new_file])]
    assert result.attachments_after_load_count == 1
    assert any("appeared at the source after" in line for line in result.summary_lines())
    # Reported again on the next run (never silently dropped), still without writes.
    before = app.call_counts()
    again = load_from_settings(settings, env)
    assert writes(app) == {route: before.get(route, 0) for route in WRITE_ROUTES}
    assert len(again.attachments_after_load) == 1


def test_field_edit_goes_through_sync_update(chain: dict) -> None:
    sandbox, settings, env = chain["sandbox"], chain["settings"], chain["env"]
    app = sandbox.procore_app
    ((source_id, target_id),) = db_rows(
        settings,
        "SELECT m.source_id, m.target_id FROM id_map m JOIN planned_issues p "
        "USING (source_id) WHERE m.state = 'loaded' AND p.status = 'open' AND "
        "m.entity = 'coordination_issue' ORDER BY m.source_id DESC LIMIT 1",
    )
    sandbox.field_app.update_issue(source_id, description="Rewritten at the source")
    extract_from_settings(settings, env)
    transform_from_settings(settings, env)
    before = app.call_counts()
    result = load_from_settings(settings, env)
    after = app.call_counts()
    assert after["coordination_issues.sync"] - before["coordination_issues.sync"] == 1
    assert after.get("coordination_issues.update", 0) == before.get("coordination_issues.update", 0)
    assert result.counts["coordination_issue"]["updated"] == 1
    (issue,) = [i for i in project_issues(app) if i["id"] == target_id]
    (payload,) = db_rows(
        settings, "SELECT payload FROM planned_issues WHERE source_id = ?", (source_id,)
    )
    assert issue["description"] == json.loads(payload[0])["description"]
    assert "Rewritten at the source" in issue["description"]


def test_deleted_at_source_is_reported_then_closed_with_apply_deletions(chain: dict) -> None:
    sandbox, settings, env = chain["sandbox"], chain["settings"], chain["env"]
    app = sandbox.procore_app
    (voided, voided_target), (deleted, deleted_target) = db_rows(
        settings,
        "SELECT m.source_id, m.target_id FROM id_map m JOIN planned_issues p "
        "USING (source_id) WHERE m.state = 'loaded' AND p.status <> 'closed' AND "
        "m.entity = 'coordination_issue' ORDER BY m.source_id LIMIT 2 OFFSET 5",
    )
    sandbox.field_app.void_issue(voided)
    sandbox.field_app.delete_issue(deleted)
    extract_from_settings(settings, env)
    transform_from_settings(settings, env)
    before = writes(app)
    reported = load_from_settings(settings, env)
    assert writes(app) == before
    assert {d["source_id"] for d in reported.deleted_at_source} == {voided, deleted}
    closed = load_from_settings(settings, env, apply_deletions=True)
    assert closed.counts["coordination_issue"]["closed"] == 2
    assert writes(app)["coordination_issues.update"] == before["coordination_issues.update"] + 2
    statuses = {i["id"]: i["status"] for i in project_issues(app)}
    assert statuses[voided_target] == statuses[deleted_target] == "closed"
    # Closed once: applying deletions again writes nothing.
    again = writes(app)
    load_from_settings(settings, env, apply_deletions=True)
    assert writes(app) == again


def test_refused_record_is_resent_only_with_retry_rejected(tmp_path: Path) -> None:
    with Sandbox(SandboxOptions(issues=80, procore_options=GENEROUS)) as sandbox:
        settings = settings_for(
            tmp_path,
            sandbox.procore_url,
            field_url=sandbox.field_url,
            field_project=sandbox.field_project_id,
        )
        env, app = sandbox.environment(), sandbox.procore_app
        extract_from_settings(settings, env)
        transform_from_settings(settings, env)
        removed = db_rows(
            settings,
            "SELECT assignee_id FROM planned_issues WHERE assignee_id "
            "IS NOT NULL GROUP BY 1 ORDER BY COUNT(*) LIMIT 1",
        )[0][0]
        with app.lock:
            app._assignees[PROJECT].remove(removed)
        load_from_settings(settings, env)
        refused = {
            sid
            for (sid,) in db_rows(
                settings,
                "SELECT source_id FROM id_map WHERE entity = 'coordination_issue' AND "
                "state = 'rejected'",
            )
        }
        assert refused
        with app.lock:  # the engineer puts the assignee back on Procore's list
            app._assignees[PROJECT].append(removed)
        before = writes(app)
        load_from_settings(settings, env)
        assert writes(app) == before  # an unchanged refused payload is not re-sent by default
        retried = load_from_settings(settings, env, retry_rejected=True)
        assert retried.counts["coordination_issue"]["created"] == len(refused)
        uuids = Counter(issue["uuid"] for issue in project_issues(app))
        assert all(uuids[issue_uuid(PROJECT, sid)] == 1 for sid in refused)
        states = dict(
            db_rows(
                settings, "SELECT source_id, state FROM id_map WHERE entity = 'coordination_issue'"
            )
        )
        assert {states[sid] for sid in refused} == {"loaded"}
        assert not db_rows(
            settings,
            "SELECT id FROM quarantine WHERE stage = 'load' AND released_at IS NULL "
            "AND source_id IN (SELECT value FROM json_each(?))",
            (json.dumps(sorted(refused)),),
        )


def test_load_and_plan_agree_when_procore_status_differs_from_the_plan(chain: dict) -> None:
    sandbox, settings, env = chain["sandbox"], chain["settings"], chain["env"]
    app = sandbox.procore_app
    ((source_id, target_id, planned_status),) = db_rows(
        settings,
        "SELECT m.source_id, m.target_id, p.status FROM id_map m JOIN planned_issues p "
        "USING (source_id) WHERE m.state = 'loaded' AND p.status = 'open' AND "
        "m.entity = 'coordination_issue' ORDER BY m.source_id LIMIT 1",
    )
    # Closed in Procore and recorded so, as the roll-back runbook's script does.
    app.tamper_issue(target_id, status="closed")
    with sqlite3.connect(settings.staging.path) as conn:
        conn.execute(
            "UPDATE id_map SET target_status = 'closed' WHERE source_id = ? AND "
            "entity = 'coordination_issue'",
            (source_id,),
        )
    with open_store(settings.staging.path) as store:
        planned_changes = {
            row["source_id"] for row in compute_plan(store, PROJECT).rows("status_change")
        }
    assert source_id in planned_changes
    result = load_from_settings(settings, env)
    assert result.counts["coordination_issue"]["status_changed"] == len(planned_changes)
    assert {i["id"]: i["status"] for i in project_issues(app)}[target_id] == planned_status
    with open_store(settings.staging.path) as store:
        assert compute_plan(store, PROJECT).rows("status_change") == []


# -- planted plans: one behaviour each ----------------------------------------------------------


def test_2500_creates_go_out_as_1000_1000_500(procore: RecordingProcoreApp, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, procore.url)  # type: ignore[attr-defined]
    source_ids = plant(settings, 2500, attachments=500)
    progress = RecordingProgress()
    result = load_from_settings(settings, PROCORE_ENV, progress=progress)
    assert progress.done == {"locations": len(PATHS), "attachments": 5, "coordination_issues": 2500}
    assert progress.finished == set(progress.done)
    assert procore.sync_sizes == [1000, 1000, 500]
    assert result.sync_batch_sizes == (1000, 1000, 500)
    uuids = Counter(i["uuid"] for i in project_issues(procore))
    assert all(uuids[issue_uuid(PROJECT, sid)] == 1 for sid in source_ids)
    assert result.counts["coordination_issue"]["created"] == 2500
    assert result.exit_code == 0
    batches = db_rows(settings, "SELECT kind, item_count, state FROM load_batches ORDER BY id")
    assert batches == [
        ("sync_create", 1000, "confirmed"),
        ("sync_create", 1000, "confirmed"),
        ("sync_create", 500, "confirmed"),
    ]


@pytest.mark.parametrize("uuid_reuse", [None, "refused"])
def test_lost_sync_response_is_resolved_and_nothing_is_duplicated(
    procore: RecordingProcoreApp, tmp_path: Path, uuid_reuse: str | None
) -> None:
    settings = settings_for(tmp_path, procore.url)  # type: ignore[attr-defined]
    source_ids = plant(settings, 120, attachments=3)
    if uuid_reuse is not None:  # a preflight probe saw Procore refuse a reused uuid
        contract = documented()
        contract["procore"]["uuid_reuse"] = uuid_reuse
        contract["probe_writes"] = True
        with open_store(settings.staging.path) as store:
            record_contract(store, contract, {})
    procore.faults.inject("lost_response", path="coordination_issues/sync")
    result = load_from_settings(settings, PROCORE_ENV)
    assert procore.faults.fired["lost_response"] == 1
    if uuid_reuse == "refused":
        # The re-sent call was answered "uuid has already been taken" for every item, which
        # were then looked up.
        assert procore.sync_sizes == [120, 120]
    else:
        # Nothing observed: the lost call is looked up by uuid before anything is re-sent,
        # and every item was found.
        assert procore.sync_sizes == [120]
    assert procore.call_counts()["coordination_issues.list"] >= 1
    uuids = Counter(i["uuid"] for i in project_issues(procore))
    assert [uuids[issue_uuid(PROJECT, sid)] for sid in source_ids] == [1] * 120
    assert len(project_issues(procore)) == 1 + 120
    assert result.counts["coordination_issue"]["created"] == 120
    assert result.exit_code == 0
    states = Counter(
        state
        for (state,) in db_rows(
            settings, "SELECT state FROM id_map WHERE entity = 'coordination_issue'"
        )
    )
    assert states == {"loaded": 120}
    with_files = [i for i in project_issues(procore) if i["attachments"]]
    assert len(with_files) == 40


def test_stale_uploads_are_replaced_and_stored_ones_reused(
    procore: RecordingProcoreApp, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, procore.url)  # type: ignore[attr-defined]
    plant(settings, 3, attachments=1)
    # att-00000: a 'created' upload from a dead process (its storage form is gone);
    # att-00001: 'stored' per the DB, but Procore never got its bytes (e.g. restored DB);
    # att-00002: really stored by an earlier attempt: must be reused, not uploaded again.
    client_app = procore
    store = open_store(settings.staging.path)
    blobs = BlobStore(settings.staging.blobs)
    from migrate.clients.procore import ProcoreClient
    from migrate.settings import target_credentials

    with ProcoreClient(settings.target, target_credentials(PROCORE_ENV)) as client:
        ghost = client.create_upload(PROJECT, "ghost.jpg", "image/jpeg")
        real = client.create_upload(PROJECT, "IMG_2.jpg", "image/jpeg")
        (sha2,) = store.conn.execute(
            "SELECT sha256 FROM attachments WHERE id = 'att-00002'"
        ).fetchone()
        with blobs.open(sha2) as blob:
            sent = client.put_upload_bytes(real, blob, sha256=sha2)
    assert sent.sha256 == sha2
    with store.transaction():
        # The DB says att-00001 and att-00002 were sent whole (sent_sha256 recorded).
        for attachment_id, upload_uuid, state, claims_sent in (
            ("att-00000", "01DEADPROCESS", "created", False),
            ("att-00001", ghost.uuid, "stored", True),
            ("att-00002", real.uuid, "stored", True),
        ):
            store.conn.execute(
                "INSERT INTO uploads (attachment_id, target_project_id, sha256, upload_uuid, "
                "state, created_at, updated_at, sent_sha256) SELECT id, ?, sha256, ?, ?, "
                "strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 'x', "
                "CASE WHEN ? THEN sha256 END FROM attachments WHERE id = ?",
                (PROJECT, upload_uuid, state, claims_sent, attachment_id),
            )
    store.close()
    before = client_app.call_counts()["uploads.create"]
    result = load_from_settings(settings, PROCORE_ENV)
    assert result.exit_code == 0
    issues = project_issues(procore)
    sha_of = dict(db_rows(settings, "SELECT container_id, sha256 FROM attachments"))
    for issue in issues[1:]:
        (attachment,) = issue["attachments"]
        assert attachment["sha256"] == sha_of[issue["origin"]["origin_id"]]
    by_origin = {i["origin"]["origin_id"]: i for i in issues[1:]}
    assert by_origin["field-issue-00002"]["attachments"][0]["upload_uuid"] == real.uuid
    # att-00000 and att-00001 got new uploads (the second after Procore said "has no file").
    assert client_app.call_counts()["uploads.create"] - before == 2
    assert procore.sync_sizes == [3, 1]
    states = dict(db_rows(settings, "SELECT attachment_id, state FROM uploads"))
    assert set(states.values()) == {"referenced"}


def replan(
    settings: Settings, source_id: str, *, attachment_ids: list[str] | None = None, **changes: Any
) -> None:
    """Change a planned issue as a new transform would (payload, attachments, hash)."""
    store = open_store(settings.staging.path)
    try:
        payload_text, location, ids_text = store.conn.execute(
            "SELECT payload, location_source_id, attachment_ids FROM planned_issues "
            "WHERE source_id = ?",
            (source_id,),
        ).fetchone()
        payload = {**json.loads(payload_text), **changes}
        ids = sorted(attachment_ids if attachment_ids is not None else json.loads(ids_text))
        sha_of = dict(store.conn.execute("SELECT id, sha256 FROM attachments"))
        with store.transaction():
            store.conn.execute(
                "UPDATE planned_issues SET payload = ?, status = ?, title = ?, "
                "attachment_ids = ?, payload_hash = ? WHERE source_id = ?",
                (
                    json.dumps(payload),
                    payload["status"],
                    payload["title"],
                    json.dumps(ids),
                    payload_hash(payload, location, [sha_of[i] for i in ids]),
                    source_id,
                ),
            )
    finally:
        store.close()


def test_delta_sends_fields_by_sync_and_status_by_patch_only_when_they_changed(
    procore: RecordingProcoreApp, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, procore.url)  # type: ignore[attr-defined]
    ids = plant(settings, 5, attachments=5)
    load_from_settings(settings, PROCORE_ENV)
    target = dict(
        db_rows(
            settings, "SELECT source_id, target_id FROM id_map WHERE entity = 'coordination_issue'"
        )
    )
    replan(settings, ids[0], status="closed")  # status only
    replan(settings, ids[1], title="Renamed at the source")  # a sync field only
    replan(settings, ids[2], title="Renamed and closed", status="closed")  # both
    # ids[3]: only the origin changed, which Procore cannot change after create; staging
    # cannot tell it from a sync field without the old payload, so it rides in the sync batch.
    replan(
        settings,
        ids[3],
        origin={
            **json.loads(
                db_rows(
                    settings, "SELECT payload FROM planned_issues WHERE source_id = ?", (ids[3],)
                )[0][0]
            )["origin"],
            "title": "renumbered",
        },
    )
    # ids[4]: a file appeared at the source after load (and is downloaded)
    blobs = BlobStore(settings.staging.blobs)
    info = blobs.write_stream([b"late photo bytes"])
    store = open_store(settings.staging.path)
    with store.transaction():
        store.conn.execute(
            "INSERT INTO attachments (id, container_type, container_id, kind, filename, "
            "content_type, state, sha256, size) VALUES ('att-late', 'Issue', ?, 'Attachment', "
            "'late.jpg', 'image/jpeg', 'stored', ?, ?)",
            (ids[4], info.sha256, info.size),
        )
    store.close()
    replan(settings, ids[4], attachment_ids=["att-late"])
    before = procore.call_counts()
    sizes_before = len(procore.sync_sizes)
    result = load_from_settings(settings, PROCORE_ENV)
    after = procore.call_counts()
    assert procore.sync_sizes[sizes_before:] == [3]  # ids[1], ids[2], ids[3]
    assert after["coordination_issues.update"] - before.get("coordination_issues.update", 0) == 2
    assert after["uploads.create"] == before["uploads.create"]
    counts = result.counts["coordination_issue"]
    assert (counts["updated"], counts["status_changed"], counts["unchanged"]) == (3, 2, 1)
    by_id = {i["id"]: i for i in project_issues(procore)}
    assert by_id[target[ids[0]]]["status"] == "closed"
    assert by_id[target[ids[1]]]["title"] == "Renamed at the source"
    assert (by_id[target[ids[2]]]["title"], by_id[target[ids[2]]]["status"]) == (
        "Renamed and closed",
        "closed",
    )
    assert [a["attachment_ids"] for a in result.attachments_after_load] == [["att-late"]]
    # Everything is recorded: the next run writes nothing and still reports the late file.
    before = writes(procore)
    again = load_from_settings(settings, PROCORE_ENV)
    assert writes(procore) == before
    assert again.counts["coordination_issue"]["unchanged"] == 5
    assert len(again.attachments_after_load) == 1


def test_refused_update_is_quarantined_and_not_resent_until_the_plan_changes(
    procore: RecordingProcoreApp, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, procore.url)  # type: ignore[attr-defined]
    (source_id,) = plant(settings, 1)
    load_from_settings(settings, PROCORE_ENV)
    replan(settings, source_id, assignee_id=999999)
    first = load_from_settings(settings, PROCORE_ENV)
    assert first.exit_code == EXIT_QUARANTINED
    ((reason, record),) = db_rows(
        settings,
        "SELECT reason, record FROM quarantine WHERE stage = 'load' AND released_at IS NULL",
    )
    assert "assignee_id is not a permitted assignee" in reason
    assert json.loads(record)["action"] == "sync_update"
    before = writes(procore)
    held = load_from_settings(settings, PROCORE_ENV)
    assert writes(procore) == before and held.counts["coordination_issue"]["rejected"] == 1
    replan(settings, source_id, assignee_id=7001)
    fixed = load_from_settings(settings, PROCORE_ENV)
    assert fixed.exit_code == 0 and fixed.counts["coordination_issue"]["updated"] == 1
    assert project_issues(procore)[-1]["assignee_id"] == 7001


def test_procore_failing_stops_the_stage_keeping_what_was_done(
    procore: RecordingProcoreApp, tmp_path: Path
) -> None:
    from migrate.clients.http import RetryPolicy
    from migrate.clients.procore import ProcoreClient
    from migrate.errors import StageFailed
    from migrate.load import LoadOptions, run
    from migrate.settings import target_credentials

    settings = settings_for(tmp_path, procore.url)  # type: ignore[attr-defined]
    source_ids = plant(settings, 40, attachments=2)
    # Each 500 may have been applied: looked up and sent again, max_attempts in all, then the
    # stage stops.
    procore.faults.inject("error", count=2, path="coordination_issues/sync")
    store = open_store(settings.staging.path)
    quick = RetryPolicy(max_attempts=2, base=0.01, cap=0.02)
    with (
        ProcoreClient(settings.target, target_credentials(PROCORE_ENV), policy=quick) as client,
        pytest.raises(StageFailed) as failed,
    ):
        run(
            store,
            client,
            BlobStore(settings.staging.blobs),
            options=LoadOptions(target_project_id=PROJECT),
        )
    store.close()
    assert failed.value.resume_command == "migrate load"
    assert "migrate load" in str(failed.value)
    partial = failed.value.partial
    assert partial.completed is False and partial.uploads_done == 20
    assert db_rows(settings, "SELECT status FROM runs WHERE command = 'load'") == [("failed",)]
    # The failed run's answers are kept for the report's quota charts, the two injected server
    # errors included (the simulator picks 500, 502 or 503 for each).
    assert db_rows(
        settings,
        "SELECT method, COUNT(*) FROM rate_readings "
        "WHERE endpoint = '/rest/v1.0/coordination_issues/sync' AND status IN (500, 502, 503)",
    ) == [("PATCH", 2)]
    assert db_rows(
        settings,
        "SELECT COUNT(*) FROM rate_readings "
        "WHERE endpoint = '/rest/v1.0/coordination_issues/sync' AND status < 500",
    ) == [(0,)]
    assert db_rows(
        settings, "SELECT COUNT(*) FROM rate_readings WHERE endpoint LIKE '%/uploads'"
    ) == [(20,)]
    assert db_rows(
        settings,
        "SELECT state, COUNT(*) FROM id_map WHERE entity = 'coordination_issue' GROUP BY state",
    ) == [("sent", 40)]
    assert db_rows(settings, "SELECT state, COUNT(*) FROM uploads GROUP BY state") == [
        ("stored", 20)
    ]
    uploads_before = procore.call_counts()["uploads.create"]
    result = load_from_settings(settings, PROCORE_ENV)
    assert result.exit_code == 0 and result.uploads_reused == 20
    assert procore.call_counts()["uploads.create"] == uploads_before  # nothing uploaded twice
    uuids = Counter(i["uuid"] for i in project_issues(procore))
    assert [uuids[issue_uuid(PROJECT, sid)] for sid in source_ids] == [1] * 40
    assert db_rows(settings, "SELECT kind, state FROM load_batches ORDER BY rowid") == [
        ("sync_create", "failed"),
        ("sync_create", "confirmed"),
    ]


def test_in_flight_rows_whose_source_was_deleted_since_are_resolved(
    procore: RecordingProcoreApp, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, procore.url)  # type: ignore[attr-defined]
    ids = plant(settings, 4)
    # A dead run had sent issues 0 and 1; Procore got only issue 0. Then both were deleted
    # at the source and transform dropped them from the plan.
    store = open_store(settings.staging.path)
    with store.transaction():
        store.conn.execute(
            "INSERT INTO load_batches (id, kind, item_count, state, sent_at) VALUES "
            "('dead-1', 'sync_create', 2, 'sent', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
        )
        for source_id in ids[:2]:
            store.conn.execute(
                "INSERT INTO id_map (entity, source_id, target_project_id, state, batch_id, "
                "payload_hash, updated_at) SELECT 'coordination_issue', source_id, ?, 'sent', "
                "'dead-1', payload_hash, 'x' FROM planned_issues WHERE source_id = ?",
                (PROJECT, source_id),
            )
            store.conn.execute("DELETE FROM planned_issues WHERE source_id = ?", (source_id,))
            store.conn.execute(
                "INSERT INTO skipped_records (entity, source_id, reason) "
                "VALUES ('issue', ?, 'deleted at source')",
                (source_id,),
            )
    store.close()
    reached = procore.add_issue(PROJECT, title="Planted issue 0", uuid=issue_uuid(PROJECT, ids[0]))
    result = load_from_settings(settings, PROCORE_ENV)
    states = dict(
        db_rows(settings, "SELECT source_id, state FROM id_map WHERE entity = 'coordination_issue'")
    )
    assert states == {ids[0]: "loaded", ids[1]: "pending", ids[2]: "loaded", ids[3]: "loaded"}
    assert [(d["source_id"], d["target_id"]) for d in result.deleted_at_source] == [
        (ids[0], reached["id"])
    ]
    assert Counter(i["uuid"] for i in project_issues(procore))[issue_uuid(PROJECT, ids[0])] == 1
    assert issue_uuid(PROJECT, ids[1]) not in {i["uuid"] for i in project_issues(procore)}


def test_storage_refusing_the_file_holds_the_issue_back_instead_of_losing_it(
    procore: RecordingProcoreApp, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, procore.url)  # type: ignore[attr-defined]
    ids = plant(settings, 4, attachments=2)  # issues 0 and 2 have a file
    procore.upload_start_expiry = 0.0  # every storage POST is "too late": 403
    first = load_from_settings(settings, PROCORE_ENV)
    calls = procore.call_counts()
    # Each file: an upload, storage 403, a new upload, 403 again; then the issue waits.
    assert (calls["uploads.create"], calls["storage.upload"]) == (4, 4)
    assert first.exit_code == EXIT_QUARANTINED
    held = dict(
        db_rows(
            settings,
            "SELECT source_id, reason FROM quarantine WHERE stage = 'load' AND released_at IS NULL",
        )
    )
    assert set(held) == {ids[0], ids[2]}
    assert all("storage refused the file" in reason and "403" in reason for reason in held.values())
    assert {i["origin"]["origin_id"] for i in project_issues(procore)[1:]} == {ids[1], ids[3]}
    procore.upload_start_expiry = 3600.0
    second = load_from_settings(settings, PROCORE_ENV)
    assert second.exit_code == 0 and second.counts["coordination_issue"]["created"] == 2
    assert all(
        len(i["attachments"]) == (1 if i["origin"]["origin_id"] in (ids[0], ids[2]) else 0)
        for i in project_issues(procore)[1:]
    )


def test_issue_deleted_in_procore_keeps_its_uuid_and_is_quarantined(
    procore: RecordingProcoreApp, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, procore.url)  # type: ignore[attr-defined]
    (source_id,) = plant(settings, 1)
    # Someone created it by hand with our uuid and deleted it: Procore keeps the uuid taken.
    made = procore.add_issue(PROJECT, title="x", uuid=issue_uuid(PROJECT, source_id))
    procore.delete_issue(made["id"])
    result = load_from_settings(settings, PROCORE_ENV)
    assert result.exit_code == EXIT_QUARANTINED
    ((reason, hint),) = db_rows(
        settings, "SELECT reason, hint FROM quarantine WHERE stage = 'load'"
    )
    assert "has already been taken" in reason and "recycle bin" in hint
    assert len(project_issues(procore)) == 1


def test_rate_pacing_fills_the_windows_without_a_single_429(tmp_path: Path) -> None:
    app = RecordingProcoreApp(spike_limit=20, spike_window=2.0)
    server = RunningServer(app)
    try:
        settings = settings_for(tmp_path, server.url)
        plant(settings, 125, attachments=1)
        result = load_from_settings(settings, PROCORE_ENV)
        stats = app.rate_stats()
        assert stats["rate_limited"] == 0 and result.rate_limited == 0
        # Windows filled but never overfilled, as the server counted them. How much of the
        # quota a load spends over time is measured in bench/ (BENCHMARKS.md), not timed here.
        assert 18 <= stats["max_in_spike_window"] <= 20
        counted = stats["requests"]
        assert counted == result.quota_requests == len(app.quota_arrivals) >= 125
    finally:
        server.stop()
        app.close()
