"""One decision for plan and load: what `migrate plan` reports is what `migrate load` then sends.

Each test loads a small generated project into the Procore simulator over real HTTP, changes
the source, runs extract and transform again, takes the plan, runs load and compares the plan
with the requests the simulator received, item by item: sync create items (by uuid), sync
update items, status PATCHes and closes (by Procore id and status).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from migrate.extract import extract_from_settings
from migrate.ids import issue_uuid
from migrate.load import load_from_settings
from migrate.load.plan import Plan, compute_plan
from migrate.results import LoadResult
from migrate.sandbox.httpbase import Request, Response, Route
from migrate.sandbox.procore_server import ProcoreApp
from migrate.sandbox.runner import Sandbox, SandboxOptions
from migrate.settings import MappingsSettings, Settings
from migrate.store import open_store
from migrate.transform import transform_from_settings
from tests.test_load import GENEROUS, PROJECT, REPO, db_rows, settings_for

ISSUE = "coordination_issue"


class RequestLog(ProcoreApp):
    """The Procore simulator, also noting every coordination-issue write it accepted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sync_creates: Counter[str] = Counter()  # uuid -> items
        self.sync_updates: Counter[int] = Counter()  # Procore id -> items
        self.patches: Counter[tuple[int, str]] = Counter()  # (Procore id, status) -> PATCHes

    def before(self, request: Request, route: Route) -> Response | None:
        refusal = super().before(request, route)
        if refusal is not None:
            return refusal
        if route.name == "coordination_issues.sync":
            for item in request.json().get("updates", []):
                if "id" in item:
                    self.sync_updates[int(item["id"])] += 1
                else:
                    self.sync_creates[str(item["uuid"]).lower()] += 1
        elif route.name == "coordination_issues.update":
            fields = request.json().get("coordination_issue") or {}
            issue_id = int(request.path.rstrip("/").rsplit("/", 1)[-1])
            self.patches[(issue_id, str(fields.get("status")))] += 1
        return None

    def clear(self) -> None:
        with self.lock:
            self.sync_creates.clear()
            self.sync_updates.clear()
            self.patches.clear()


@dataclasses.dataclass
class Project:
    """A generated project served by both simulators, with its settings and staging DB."""

    sandbox: Sandbox
    settings: Settings
    env: dict[str, str]

    @property
    def procore(self) -> RequestLog:
        app = self.sandbox.procore_app
        assert isinstance(app, RequestLog)
        return app

    @property
    def field(self) -> Any:
        return self.sandbox.field_app

    def stage(self) -> None:
        """extract and transform, as `migrate run` does before load."""
        extract_from_settings(self.settings, self.env)
        transform_from_settings(self.settings, self.env)

    def plan(self) -> Plan:
        with open_store(self.settings.staging.path) as store:
            return compute_plan(store, PROJECT)

    def load(self, **options: Any) -> LoadResult:
        return load_from_settings(self.settings, self.env, **options)

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return db_rows(self.settings, sql, params)

    def loaded(self) -> dict[str, int]:
        """source id -> Procore id of every loaded issue."""
        return dict(
            self.rows(
                "SELECT source_id, target_id FROM id_map WHERE entity = ? AND state = 'loaded'",
                (ISSUE,),
            )
        )


@pytest.fixture
def project_factory() -> Iterator[Any]:
    """Make projects: ``make(issues, fields_csv_extra=..., status_csv=...)``; all stopped after."""
    stack: list[tuple[Sandbox, tempfile.TemporaryDirectory[str]]] = []

    def make(issues: int = 10, *, extra_fields: str = "", seed: int = 7) -> Project:
        project = start_project(issues, extra_fields=extra_fields, seed=seed)
        stack.append((project.sandbox, project._tmp))  # type: ignore[attr-defined]
        return project

    yield make
    for sandbox, tmp in stack:
        sandbox.stop()
        tmp.cleanup()


def start_project(issues: int, *, extra_fields: str = "", seed: int = 7) -> Project:
    """A started sandbox (its Procore side logging requests) and settings with own mappings."""
    tmp = tempfile.TemporaryDirectory(prefix="decision-")
    folder = Path(tmp.name)
    shutil.copytree(REPO / "mappings", folder / "mappings")
    if extra_fields:
        with open(folder / "mappings" / "fields.csv", "a", encoding="utf-8") as handle:
            handle.write(extra_fields)
    sandbox = Sandbox(SandboxOptions(seed=seed, issues=issues, procore_options=GENEROUS))
    sandbox.procore_app = RequestLog(
        sandbox.project.target_state(),
        client_id=sandbox.options.procore_client_id,
        client_secret=sandbox.options.procore_client_secret,
        **GENEROUS,
    )
    sandbox.start()
    settings = settings_for(
        folder,
        sandbox.procore_url,
        field_url=sandbox.field_url,
        field_project=sandbox.field_project_id,
    )
    settings = dataclasses.replace(settings, mappings=MappingsSettings(dir=folder / "mappings"))
    project = Project(sandbox, settings, sandbox.environment())
    project._tmp = tmp  # type: ignore[attr-defined]
    return project


def predicted(plan: Plan, *, apply_deletions: bool) -> dict[str, Counter[Any]]:
    """The requests the plan says load will make, in the shape RequestLog records them."""
    creates: Counter[str] = Counter(
        issue_uuid(PROJECT, row["source_id"]).lower() for row in plan.rows("create", ISSUE)
    )
    updates: Counter[int] = Counter(row["target_id"] for row in plan.rows("update", ISSUE))
    patches: Counter[tuple[int, str]] = Counter(
        (row["target_id"], row["detail"].rsplit(" → ", 1)[1])
        for row in plan.rows("status_change", ISSUE)
    )
    if apply_deletions:
        patches.update((item["target_id"], "closed") for item in plan.closes)
    return {"creates": creates, "updates": updates, "patches": patches}


def received(app: RequestLog) -> dict[str, Counter[Any]]:
    with app.lock:
        return {
            "creates": Counter(app.sync_creates),
            "updates": Counter(app.sync_updates),
            "patches": Counter(app.patches),
        }


# -- the case issue 19 names ----------------------------------------------------------------------


def test_status_only_change_is_planned_as_the_single_patch_load_sends(
    project_factory: Any,
) -> None:
    # Status not repeated in the footer; the Field status keeps its name, only its mapping to a
    # Procore status changes, so the description (with its status history) stays the same.
    project = project_factory(10, extra_fields="f--status,drop\n")
    project.stage()
    project.load()
    status_csv = project.settings.mappings.dir / "status.csv"
    status_csv.write_text(
        status_csv.read_text(encoding="utf-8").replace("\nOpen,open", "\nOpen,blocked"),
        encoding="utf-8",
    )
    project.stage()
    plan = project.plan()
    counts = plan.counts()[ISSUE]
    assert counts["status_change"] >= 1
    assert counts["update"] == 0  # nothing but the status differs
    project.procore.clear()
    result = project.load()
    assert received(project.procore) == predicted(plan, apply_deletions=False)
    assert result.counts[ISSUE]["status_changed"] == counts["status_change"]
    assert result.counts[ISSUE]["updated"] == 0
    statuses = {i["id"]: i["status"] for i in project.procore.issues(PROJECT)}
    assert {statuses[row["target_id"]] for row in plan.rows("status_change")} == {"blocked"}
    assert json.loads(json.dumps(plan.to_json()))["counts"][ISSUE]["update"] == 0


def test_transform_and_load_hash_a_planned_issue_with_one_formula(project_factory: Any) -> None:
    from migrate.store.planned import payload_hash, payload_hash_of_json

    project = project_factory(12)
    project.stage()
    sha_of = dict(project.rows("SELECT id, sha256 FROM attachments WHERE sha256 IS NOT NULL"))
    planned = project.rows(
        "SELECT payload, location_source_id, attachment_ids, payload_hash FROM planned_issues"
    )
    assert any(json.loads(ids) for _, _, ids, _ in planned)  # files are part of the hash
    for payload, location, ids, stored in planned:
        sha256s = [sha_of[a] for a in json.loads(ids)]
        assert payload_hash(json.loads(payload), location, sha256s) == stored
        assert payload_hash_of_json(payload, location, sha256s) == stored


# -- deletions are deliberate (issue 13 point 2) ------------------------------------------------


def test_closing_most_issues_is_refused_until_max_deletions_allows_that_many(
    project_factory: Any,
) -> None:
    from click.testing import CliRunner

    from migrate.cli import main
    from migrate.demo import write_demo_config
    from migrate.errors import EXIT_USAGE
    from migrate.load.decision import DELETION_FLOOR, TooManyDeletions

    project = project_factory(80)
    project.stage()
    project.load()
    loaded = project.loaded()
    # Most of the project vanishes at the source (what a wrong [source] project_id looks like).
    open_in_procore = {
        sid
        for (sid,) in project.rows(
            "SELECT source_id FROM id_map WHERE state = 'loaded' AND target_status <> 'closed'"
        )
    }
    issues = sorted(
        sid for (sid,) in project.rows("SELECT source_id FROM issues") if sid in open_in_procore
    )
    gone = issues[: DELETION_FLOOR + 5]
    for source_id in gone:
        project.field.delete_issue(source_id)
    project.stage()

    plan = project.plan()
    assert sorted(d["source_id"] for d in plan.closes) == gone
    assert {d["target_id"] for d in plan.closes} == {loaded[sid] for sid in gone}
    assert all(d["title"] for d in plan.closes)  # the Procore title, recorded at create
    assert plan.requests["close"] == len(gone) > plan.deletion_limit
    assert any(f"only with --max-deletions {len(gone)}" in line for line in plan.summary_lines())
    listed = [row["source_id"] for row in plan.rows("deleted_at_source")]
    assert listed == gone

    config = write_demo_config(Path(project.settings.staging.path).parent, project.sandbox)
    cli = CliRunner()
    project.procore.clear()
    refused = cli.invoke(
        main, ["load", "--config", str(config), "--apply-deletions", "-q"], env=project.env
    )
    assert refused.exit_code == EXIT_USAGE
    (line,) = refused.output.strip().splitlines()
    assert line.startswith(f"Error: Refusing to close {len(gone)} issues in Procore project")
    assert f"--max-deletions {len(gone)}" in line
    with pytest.raises(TooManyDeletions):  # a limit below the count refuses too
        project.load(apply_deletions=True, max_deletions=len(gone) - 1)
    assert received(project.procore) == {
        "creates": Counter(),
        "updates": Counter(),
        "patches": Counter(),
    }
    statuses = {i["id"]: i["status"] for i in project.procore.issues(PROJECT)}
    assert all(statuses[loaded[sid]] != "closed" for sid in gone if loaded[sid] in statuses)

    shown: list[list[dict[str, Any]]] = []

    def show(closing: Any) -> None:
        assert not project.procore.patches  # listed before the first close
        shown.append([dict(d) for d in closing])

    result = project.load(apply_deletions=True, max_deletions=len(gone), on_deletions=show)
    assert [d["source_id"] for d in shown[0]] == gone
    assert received(project.procore) == predicted(plan, apply_deletions=True)
    assert set(project.procore.patches) == {(loaded[sid], "closed") for sid in gone}
    assert result.counts[ISSUE]["closed"] == len(gone)
    statuses = {i["id"]: i["status"] for i in project.procore.issues(PROJECT)}
    assert {statuses[loaded[sid]] for sid in gone} == {"closed"}
    # Closed once: the plan has nothing left to close, and the CLI run writes nothing.
    assert project.plan().closes == []
    project.procore.clear()
    again = cli.invoke(
        main, ["load", "--config", str(config), "--apply-deletions", "-q"], env=project.env
    )
    assert again.exit_code in (0, 3), again.output  # 3: a generated record is quarantined
    assert not project.procore.patches


def test_max_deletions_needs_apply_deletions() -> None:
    from click.testing import CliRunner

    from migrate.cli import main

    result = CliRunner().invoke(main, ["load", "--max-deletions", "3"])
    assert result.exit_code == 2
    assert result.output.strip() == "Error: --max-deletions only applies with --apply-deletions."


# -- the property: for any source change, plan == what load sends ----------------------------------

FIELD_STATUSES = (
    "Draft",
    "Open",
    "Work Completed",
    "Ready to Inspect",
    "Not Approved",
    "In Dispute",
    "Closed",
)
#: What can happen to one issue between two loads.
CHANGES = (
    "none",
    "edit",  # a field sync carries (description, hence title)
    "status",  # a Field status: Procore status and the footer's history
    "edit+status",
    "comment",  # footer only
    "origin",  # only the planned origin (what Procore cannot change after create)
    "status_only",  # only the planned Procore status (e.g. a status.csv change)
    "attach",  # a file added at the source after load
    "delete",
    "void",
    "break",  # a due date that is not a date (sent without one, kept in the footer: an edit)
    "fix",  # a valid due date (an edit)
)


def _restage(project: Project, source_id: str, **changes: Any) -> None:
    """Change a planned issue as a transform would (payload, status, hash)."""
    from migrate.store.planned import payload_hash

    found = project.rows(
        "SELECT payload, location_source_id, attachment_ids FROM planned_issues "
        "WHERE source_id = ?",
        (source_id,),
    )
    if not found:
        return
    payload_text, location, ids_text = found[0]
    payload = {**json.loads(payload_text), **changes}
    sha_of = dict(project.rows("SELECT id, sha256 FROM attachments"))
    with open_store(project.settings.staging.path) as store, store.transaction():
        store.conn.execute(
            "UPDATE planned_issues SET payload = ?, status = ?, payload_hash = ? "
            "WHERE source_id = ?",
            (
                json.dumps(payload),
                payload["status"],
                payload_hash(payload, location, [sha_of[a] or "" for a in json.loads(ids_text)]),
                source_id,
            ),
        )


@given(data=st.data())
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    # Each example runs two loads against fresh simulators; shrinking one would take minutes,
    # and the failure report lists every draw (the change per issue) as it is.
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
)
def test_plan_is_what_load_then_sends_for_any_source_changes(data: st.DataObject) -> None:
    project = start_project(10, seed=data.draw(st.integers(1, 5), label="seed"))
    try:
        field = project.field
        project.stage()
        source_ids = sorted(sid for (sid,) in project.rows("SELECT source_id FROM issues"))
        # Before the first load: one issue with a due date that is not a date, one assignee
        # gone from Procore (its issues are refused at create and quarantined by load).
        field.update_issue(source_ids[-1], due_date="soon")
        project.stage()
        assignees = project.rows(
            "SELECT assignee_id FROM planned_issues WHERE assignee_id IS NOT NULL "
            "GROUP BY 1 ORDER BY COUNT(*), 1 LIMIT 1"
        )
        if assignees:
            with project.procore.lock:
                project.procore._assignees[PROJECT].remove(assignees[0][0])
        project.load()

        changes = {sid: data.draw(st.sampled_from(CHANGES), label=sid[-4:]) for sid in source_ids}
        for number, (sid, change) in enumerate(sorted(changes.items())):
            if change in ("edit", "edit+status"):
                field.update_issue(sid, description=f"Rewritten at the source {number}")
            if change in ("status", "edit+status"):
                current = project.rows("SELECT status FROM issues WHERE source_id = ?", (sid,))[0][
                    0
                ]
                others = [s for s in FIELD_STATUSES if s != current]
                field.update_issue(sid, status=data.draw(st.sampled_from(others), label="to"))
            if change == "comment":
                field.add_comment(sid, f"Later remark {number}")
            if change == "attach":
                field.add_attachment(sid, f"late {number}.jpg", 2048, "image/jpeg")
            if change == "delete":
                field.delete_issue(sid)
            if change == "void":
                field.void_issue(sid)
            if change == "break":
                field.update_issue(sid, due_date="soon")
            if change == "fix":
                field.update_issue(sid, due_date="2031-02-03")
        project.stage()
        for sid, change in changes.items():
            if change == "origin":
                origin = json.loads(
                    (
                        project.rows(
                            "SELECT payload FROM planned_issues WHERE source_id = ?", (sid,)
                        )
                        or [("{}",)]
                    )[0][0]
                ).get("origin")
                if origin:
                    _restage(project, sid, origin={**origin, "title": "renumbered"})
            if change == "status_only":
                planned = project.rows(
                    "SELECT status FROM planned_issues WHERE source_id = ?", (sid,)
                )
                if planned:
                    _restage(
                        project, sid, status="blocked" if planned[0][0] != "blocked" else "open"
                    )

        apply_deletions = data.draw(st.booleans(), label="apply_deletions")
        retry_rejected = data.draw(st.booleans(), label="retry_rejected")
        with open_store(project.settings.staging.path) as store:
            plan = compute_plan(store, PROJECT, retry_rejected=retry_rejected)
        project.procore.clear()
        result = project.load(
            apply_deletions=apply_deletions, max_deletions=100, retry_rejected=retry_rejected
        )
        assert received(project.procore) == predicted(plan, apply_deletions=apply_deletions)
        counts = result.counts[ISSUE]
        assert counts["updated"] == plan.requests["sync_update"]
        assert counts["status_changed"] == plan.requests["status_patch"]
        assert counts["closed"] == (len(plan.closes) if apply_deletions else 0)
        # Done is done: the next plan has nothing left to send but what Procore refused.
        after = project.plan()
        assert after.requests["sync_update"] == after.requests["status_patch"] == 0
        assert after.requests["sync_create"] == 0
        if apply_deletions:
            assert after.closes == []
    finally:
        project.sandbox.stop()
        project._tmp.cleanup()  # type: ignore[attr-defined]
