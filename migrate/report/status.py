"""`migrate status`: where a migration stands, read from the staging DB alone (no network).

``status_from_settings(settings).to_json()`` is a stable schema for scripts. Version 1::

    {
      "schema_version": 1,
      "generated_at": "2025-01-01T12:00:00.000Z",          # UTC
      "staging_db": "/abs/path/staging.db",
      "staging_db_exists": true,
      "target_project_id": 5100,                           # or null when not configured
      "stages": [                                          # last run of each command,
                                                           # in pipeline order
        {"command": "extract", "run_id": 1, "status": "succeeded",
         "started_at": "…", "finished_at": "…",            # finished_at null while running
         "duration_seconds": 12.5,                          # null while running / unknown
         "counts": {…} or null, "error": "…" or null}
      ],
      "entities": {                                        # always these three keys
        "issue":          {"extracted": 0, "planned": 0, "loaded": 0, "rejected": 0,
                           "skipped": 0, "pending": 0, "quarantined": 0},
        "checklist_item": {…same seven keys…},
        "location":       {…same seven keys…}
      },
      "attachments": {"stored": 0, "bytes_stored": 0, "failed": 0, "pending_download": 0,
                      "pending_upload": 0, "uploaded": 0, "after_load_needing_decision": 0},
      "deleted_after_load": {"count": 0, "source_ids": ["…"]},   # at most 20 ids listed
      "quota": {"run_id": 3 or null,                       # the last load run
                "requests": 0,                             # every request it recorded
                "against_quota": 0,                        # REST calls (token, storage free)
                "by_endpoint": {"GET /rest/v1.0/…": 0}},
      "plan": {"create": 0, "update": 0, "status_change": 0,   # what `migrate load` would do
               "deleted_at_source": 0, "attachments_after_load": 0},  # zeros w/o a project
      "inspections": {"extracted": 0, "templates_planned": 0, "planned": 0,  # checklists
                      "loaded": 0, "unfinished": 0, "rejected": 0, "pending": 0,
                      "skipped": 0, "quarantined": 0},
      "quarantine_open": 0,
      "running": [{"command": "load", "run_id": 4, "pid": 123}],  # live processes only
      "next_command": "migrate load",
      "next_reason": "…one sentence…",
      "left_behind": {                                     # recorded by extract (issue 15)
        "not_migrated": [{"family": "photos", "records": 70, "bytes": 6600000 or null,
                          "kept_in": "the project export's files archive"}],
        "project_export": [{"kind": "database", "state": "stored",  # or not_available, failed
                            "sha256": "…" or null, "size": 2100 or null,
                            "requested_at": "…", "finished_at": "…" or null,
                            "reason": "…" or null}]
      }
    }

Entity states: ``extracted`` rows in the staging DB (Field areas for ``location``);
``planned`` rows transform planned; ``loaded`` / ``rejected`` id_map rows for the target
project; ``skipped`` left out on purpose by a mapping or deleted at the source; ``pending``
planned but neither loaded nor rejected yet (``sent`` included: a killed load); ``quarantined``
open quarantine rows. A missing staging DB is reported as empty and is not created.

``inspections`` (issue 14): ``extracted`` checklists staged (deleted ones included),
``templates_planned`` and ``planned`` inspection templates and inspections transform planned,
``loaded`` / ``rejected`` inspection id_map rows for the target project (``unfinished``: loaded
ones a stopped load left with answers, comments, files or status to do), ``pending`` planned but
neither, ``skipped`` checklists left out on purpose (deleted at the source, a status mapped to
skip), ``quarantined`` checklists held back by transform or load (open quarantine).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from migrate.ids import ENTITY_INSPECTION, ENTITY_LOCATION
from migrate.quarantine import open_counts_by_source_kind, open_quarantine, open_quarantine_count
from migrate.report.inventory import LeftBehind, left_behind
from migrate.report.inventory import status_json as inventory_json
from migrate.report.inventory import status_lines as inventory_lines
from migrate.settings import Settings
from migrate.store.db import Store, process_alive, utc_now
from migrate.store.planned import (
    in_flight_count,
    issue_map_state_counts,
    loaded_then_deleted,
    map_state_counts,
    planned_inspection_counts,
    planned_issue_counts,
    planned_location_count,
    skipped_counts,
    skipped_records,
    unfinished_inspection_count,
    unloaded_planned_inspection_count,
    unloaded_planned_issue_counts,
    unloaded_planned_location_count,
)
from migrate.store.runs import last_run_row, latest_run_rows, run_rows
from migrate.store.uploads import uploaded_count
from migrate.termtable import Column, cut, render, size_text

SCHEMA_VERSION = 1
ENTITIES = ("issue", "checklist_item", "location")
ENTITY_STATES = ("extracted", "planned", "loaded", "rejected", "skipped", "pending", "quarantined")
ATTACHMENT_KEYS = (
    "stored",
    "bytes_stored",
    "failed",
    "pending_download",
    "pending_upload",
    "uploaded",
    "after_load_needing_decision",
)
#: The commands shown under "stages", in pipeline order (others follow in the order seen).
PIPELINE_ORDER = ("extract", "transform", "plan", "load", "report")
MAX_LISTED_IDS = 20
INSPECTION_KEYS = (
    "extracted",
    "templates_planned",
    "planned",
    "loaded",
    "unfinished",
    "rejected",
    "pending",
    "skipped",
    "quarantined",
)
PLAN_KEYS = ("create", "update", "status_change", "deleted_at_source", "attachments_after_load")


# Quarantine and skipped rows name their entity per stage (transform says "issue", load says
# "coordination_issue"): fold them onto the three entities status reports.
def _entity_of_row(entity: str, checklist_source: bool) -> str:
    """The entity status counts a quarantine or skipped row under (``checklist_source``: its
    source id starts with ``checklist_item:``)."""
    if entity in ("location", "area"):
        return "location"
    if entity == "checklist_item" or checklist_source:
        return "checklist_item"
    if entity in ("issue", "coordination_issue"):
        return "issue"
    return entity


@dataclass(frozen=True)
class StageRun:
    """The last run of one command."""

    command: str
    run_id: int
    status: str  # succeeded, failed, interrupted, running
    started_at: str
    finished_at: str | None
    duration_seconds: float | None
    counts: dict[str, Any] | None
    error: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "run_id": self.run_id,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_seconds": self.duration_seconds,
            "counts": self.counts,
            "error": self.error,
        }


@dataclass(frozen=True)
class StatusReport:
    """Everything `migrate status` shows; see the module docstring for the JSON schema."""

    staging_db: str
    staging_db_exists: bool
    generated_at: str
    target_project_id: int | None
    stages: list[StageRun]
    entities: dict[str, dict[str, int]]
    attachments: dict[str, int]
    deleted_after_load: list[str]
    deleted_after_load_count: int
    quota_run_id: int | None
    quota_requests: int
    quota_by_endpoint: dict[str, int]
    plan: dict[str, int]
    quarantine_open: int
    running: list[dict[str, Any]]
    inspections: dict[str, int]
    next_command: str
    next_reason: str
    #: What is not migrated and the project export (report/inventory.py), as recorded.
    left_behind: LeftBehind = field(default_factory=lambda: LeftBehind([], []))

    def to_json(self) -> dict[str, Any]:
        """The documented, versioned JSON form (schema_version 1)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "generated_at": self.generated_at,
            "staging_db": self.staging_db,
            "staging_db_exists": self.staging_db_exists,
            "target_project_id": self.target_project_id,
            "stages": [stage.to_json() for stage in self.stages],
            "entities": {name: dict(states) for name, states in self.entities.items()},
            "attachments": dict(self.attachments),
            "deleted_after_load": {
                "count": self.deleted_after_load_count,
                "source_ids": list(self.deleted_after_load),
            },
            "quota": {
                "run_id": self.quota_run_id,
                "requests": self.quota_requests,
                "against_quota": quota_requests(self.quota_by_endpoint),
                "by_endpoint": dict(self.quota_by_endpoint),
            },
            "plan": dict(self.plan),
            "inspections": dict(self.inspections),
            "quarantine_open": self.quarantine_open,
            "running": [dict(run) for run in self.running],
            "next_command": self.next_command,
            "next_reason": self.next_reason,
            "left_behind": inventory_json(self.left_behind),
        }

    def lines(self) -> list[str]:
        """One screen of text."""
        project = (
            f"Procore project {self.target_project_id}"
            if self.target_project_id is not None
            else "no Procore project configured"
        )
        out = [f"Staging DB   {self.staging_db}  ({project})"]
        if not self.staging_db_exists:
            out.append("             (does not exist yet)")
        out.append("")
        out.append("Stages")
        if not self.stages:
            out.append("  (nothing has run yet)")
        stage_rows = render(
            _STAGE_COLUMNS,
            (
                (
                    stage.command,
                    stage.status,
                    (stage.finished_at or stage.started_at or "")[:19].replace("T", " "),
                    _duration_text(stage.duration_seconds),
                    stage.run_id,
                )
                for stage in self.stages
            ),
            indent="  ",
        )
        if self.stages:
            out.append(stage_rows[0])
        for stage, line in zip(self.stages, stage_rows[1:], strict=True):
            out.append(line)
            if stage.error and stage.status != "succeeded":
                out.append(f"    {cut(stage.error, _ERROR_WIDTH)}")
        for run in self.running:
            out.append(
                f"  running now: migrate {run['command']} (run {run['run_id']}, pid {run['pid']})"
            )
        out.append("")
        out.extend(
            render(
                [Column("Records"), *(Column(state, right=True) for state in ENTITY_STATES)],
                [
                    [entity, *(states[s] for s in ENTITY_STATES)]
                    for entity, states in self.entities.items()
                ],
            )
        )
        out.append(_inspection_line(self.inspections))
        a = self.attachments
        out.append("")
        out.append(
            f"Attachments  stored {a['stored']} ({size_text(a['bytes_stored'])}), "
            f"failed {a['failed']}, pending download {a['pending_download']}, "
            f"pending upload {a['pending_upload']}, uploaded {a['uploaded']}"
        )
        if a["after_load_needing_decision"]:
            out.append(
                f"             {a['after_load_needing_decision']} added at the source after "
                "their issue was loaded: Procore cannot attach them, decide what to do "
                "(see `migrate report`)"
            )
        if self.deleted_after_load_count:
            listed = ", ".join(self.deleted_after_load[:5])
            more = "" if self.deleted_after_load_count <= 5 else ", …"
            out.append(
                f"Deleted or voided at the source after load: {self.deleted_after_load_count} "
                f"({listed}{more}); `migrate load --apply-deletions` closes them in Procore"
            )
        if self.quota_run_id is not None:
            out.append(
                f"Quota        {quota_requests(self.quota_by_endpoint)} requests against the "
                f"Procore quota in the last load (run {self.quota_run_id}; "
                f"{self.quota_requests} requests with token and storage calls)"
            )
        todo = {
            k: v for k, v in self.plan.items() if v and k in ("create", "update", "status_change")
        }
        if todo:
            out.append(
                "Load to do   " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in todo.items())
            )
        if self.quarantine_open:
            out.append(f"Quarantine   {self.quarantine_open} open")
        out.extend(inventory_lines(self.left_behind))
        out.append("")
        out.append(f"Next         {self.next_command}")
        out.append(f"             {self.next_reason}")
        return out


def status_from_settings(settings: Settings) -> StatusReport:
    """Status of the migration configured in ``settings`` (reads the staging DB only)."""
    from migrate.store import open_store

    path = Path(settings.staging.path)
    project_id = settings.target.project_id
    if not path.exists():
        return _empty_report(str(path), project_id)
    with open_store(path, read_only=True) as store:
        return build_status(store, project_id)


def build_status(store: Store, target_project_id: int | None) -> StatusReport:
    """Status from an open store; ``target_project_id`` narrows id_map (None: any project)."""
    stages = _last_runs(store)
    running = [
        {"command": s.command, "run_id": s.run_id, "pid": pid}
        for s, pid in _running_runs(store, stages)
    ]
    entities = _entity_counts(store, target_project_id)
    attachments = _attachment_counts(store, target_project_id)
    deleted_ids, deleted_count = _deleted_after_load(store, target_project_id)
    quota_run, quota_requests, by_endpoint = _quota(store)
    quarantine_open = open_quarantine_count(store)
    sent = in_flight_count(store, target_project_id)
    plan, plan_problem = _plan_counts(store, target_project_id)
    inspections = _inspection_counts(store, target_project_id)
    next_command, reason = _next_command(
        stages,
        running,
        entities,
        quarantine_open,
        sent + inspections["pending"],
        attachments,
        plan,
        plan_problem,
        inspections["extracted"],
    )
    return StatusReport(
        staging_db=store.path,
        staging_db_exists=True,
        generated_at=utc_now(),
        target_project_id=target_project_id,
        stages=stages,
        entities=entities,
        attachments=attachments,
        deleted_after_load=deleted_ids,
        deleted_after_load_count=deleted_count,
        quota_run_id=quota_run,
        quota_requests=quota_requests,
        quota_by_endpoint=by_endpoint,
        plan=plan,
        quarantine_open=quarantine_open,
        running=running,
        next_command=next_command,
        next_reason=reason,
        inspections=inspections,
        left_behind=left_behind(store),
    )


# -- pieces ----------------------------------------------------------------------------------


def _empty_report(path: str, project_id: int | None) -> StatusReport:
    return StatusReport(
        staging_db=path,
        staging_db_exists=False,
        generated_at=utc_now(),
        target_project_id=project_id,
        stages=[],
        entities={e: dict.fromkeys(ENTITY_STATES, 0) for e in ENTITIES},
        attachments=dict.fromkeys(ATTACHMENT_KEYS, 0),
        deleted_after_load=[],
        deleted_after_load_count=0,
        quota_run_id=None,
        quota_requests=0,
        quota_by_endpoint={},
        plan=dict.fromkeys(PLAN_KEYS, 0),
        quarantine_open=0,
        running=[],
        next_command="migrate extract",
        next_reason="Nothing has been extracted yet: start by pulling the BIM 360 Field project.",
        inspections=dict.fromkeys(INSPECTION_KEYS, 0),
    )


def _scalar(store: Store, sql: str, params: tuple[Any, ...] = ()) -> int:
    row = store.conn.execute(sql, params).fetchone()
    return int(row[0] or 0) if row else 0


def _project_params(project_id: int | None) -> tuple[Any, ...]:
    return () if project_id is None else (project_id,)


def _last_runs(store: Store) -> list[StageRun]:
    stages: list[StageRun] = []
    for row in latest_run_rows(store):
        status, error, pid = row["status"], row["error"], row["pid"]
        started, finished = row["started_at"], row["finished_at"]
        if status == "running" and not _alive(pid):
            # The process died without recording its end; status must not write, so the row
            # is only shown as interrupted (the next command marks it for real).
            status = "interrupted"
            error = error or f"process {pid} ended without finishing this run"
        stages.append(
            StageRun(
                command=row["command"],
                run_id=int(row["id"]),
                status=status,
                started_at=started,
                finished_at=finished,
                duration_seconds=_seconds_between(started, finished),
                counts=_json_or_none(row["counts"]),
                error=error,
            )
        )
    order = {name: index for index, name in enumerate(PIPELINE_ORDER)}
    stages.sort(key=lambda s: (order.get(s.command, len(order)), s.run_id))
    return stages


def _running_runs(store: Store, stages: list[StageRun]) -> list[tuple[StageRun, int]]:
    by_id = {s.run_id: s for s in stages}
    found: list[tuple[StageRun, int]] = []
    for row in run_rows(store, status="running"):
        run_id, pid = row["id"], row["pid"]
        if _alive(pid):
            stage = by_id.get(run_id) or StageRun(
                row["command"], int(run_id), "running", row["started_at"], None, None, None, None
            )
            found.append((stage, int(pid)))
    return found


def _alive(pid: int | None) -> bool:
    return pid is not None and process_alive(int(pid))


def _json_or_none(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else {"value": value}


def parse_time(text: str | None) -> datetime | None:
    """A timestamp as the DB stores it (ISO-8601, Z), or None."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _seconds_between(start: str | None, end: str | None) -> float | None:
    first, last = parse_time(start), parse_time(end)
    if first is None or last is None:
        return None
    return round((last - first).total_seconds(), 3)


def _entity_counts(store: Store, project_id: int | None) -> dict[str, dict[str, int]]:
    counts = {e: dict.fromkeys(ENTITY_STATES, 0) for e in ENTITIES}
    counts["issue"]["extracted"] = _scalar(store, "SELECT COUNT(*) FROM issues")
    counts["checklist_item"]["extracted"] = _scalar(store, "SELECT COUNT(*) FROM checklist_items")
    counts["location"]["extracted"] = _scalar(store, "SELECT COUNT(*) FROM areas")
    for kind, number in planned_issue_counts(store).items():
        if kind in counts:
            counts[kind]["planned"] = number
    counts["location"]["planned"] = planned_location_count(store)

    for (kind, state), number in issue_map_state_counts(store, project_id).items():
        if state in ("loaded", "rejected"):
            counts[kind][state] += number
    for state, number in map_state_counts(store, ENTITY_LOCATION, project_id).items():
        if state in ("loaded", "rejected"):
            counts["location"][state] += number

    for kind, number in unloaded_planned_issue_counts(store, project_id).items():
        if kind in counts:
            counts[kind]["pending"] = number
    counts["location"]["pending"] = unloaded_planned_location_count(store, project_id)

    for state, by_kind in (
        ("skipped", skipped_counts(store)),
        ("quarantined", open_counts_by_source_kind(store)),
    ):
        for (entity, checklist_source), number in by_kind.items():
            kind = _entity_of_row(entity, checklist_source)
            if kind in counts:
                counts[kind][state] += number
    return counts


def _inspection_counts(store: Store, project_id: int | None) -> dict[str, int]:
    """Checklists → Procore inspections: staged, planned, loaded, left out, held back."""
    from migrate.report.inspections import HOLDING_ENTITIES, SOURCE_ENTITY_CHECKLIST

    counts = dict.fromkeys(INSPECTION_KEYS, 0)
    counts["extracted"] = _scalar(store, "SELECT COUNT(*) FROM checklists")
    planned = planned_inspection_counts(store)
    counts["templates_planned"] = planned["templates"]
    counts["planned"] = planned["inspections"]
    for state, number in map_state_counts(store, ENTITY_INSPECTION, project_id).items():
        if state in ("loaded", "rejected"):
            counts[state] = number
    counts["unfinished"] = unfinished_inspection_count(store, project_id)
    counts["pending"] = unloaded_planned_inspection_count(store, project_id)
    counts["skipped"] = len(skipped_records(store, (SOURCE_ENTITY_CHECKLIST,)))
    counts["quarantined"] = len(open_quarantine(store, HOLDING_ENTITIES))
    return counts


def _inspection_line(counts: dict[str, int]) -> str:
    unfinished = f" ({counts['unfinished']} unfinished)" if counts["unfinished"] else ""
    return (
        f"Inspections  {counts['extracted']} checklists extracted, {counts['planned']} planned "
        f"({counts['templates_planned']} templates), {counts['loaded']} loaded{unfinished}, "
        f"{counts['pending']} pending, {counts['rejected']} rejected, {counts['skipped']} "
        f"skipped, {counts['quarantined']} quarantined"
    )


def _attachment_counts(store: Store, project_id: int | None) -> dict[str, int]:
    counts = dict.fromkeys(ATTACHMENT_KEYS, 0)
    for state, number, size in store.conn.execute(
        "SELECT state, COUNT(*), COALESCE(SUM(size), 0) FROM attachments "
        "WHERE kind <> 'UriReference' GROUP BY state"
    ):
        if state == "stored":
            counts["stored"] = int(number)
            counts["bytes_stored"] = int(size)
        elif state == "failed":
            counts["failed"] = int(number)
        elif state == "pending":
            counts["pending_download"] = int(number)
    counts["uploaded"] = uploaded_count(store, project_id)
    waiting_clause = (
        ""
        if project_id is None
        else (" AND (procore_project_id IS NULL OR procore_project_id = ?)")
    )
    for reason, number in store.conn.execute(
        "SELECT waiting_for, COUNT(*) FROM v_attachments_pending WHERE 1 = 1"
        f"{waiting_clause} GROUP BY waiting_for",
        _project_params(project_id),
    ):
        if reason.startswith("upload"):
            counts["pending_upload"] += int(number)
        elif reason.startswith("after load"):
            counts["after_load_needing_decision"] += int(number)
    return counts


def _deleted_after_load(store: Store, project_id: int | None) -> tuple[list[str], int]:
    ids = loaded_then_deleted(store, project_id)
    return ids[:MAX_LISTED_IDS], len(ids)


def request_total(requests: Any) -> tuple[int, dict[str, int]]:
    """Total and per-endpoint requests from a runs.requests value.

    Stages store ``{"METHOD /path": n}``; an ``HttpStats.snapshot()`` (``{"requests": {…}}``)
    is read too. Other keys are not requests and are ignored.
    """
    if isinstance(requests, dict) and isinstance(requests.get("requests"), dict):
        requests = requests["requests"]
    if not isinstance(requests, dict):
        return 0, {}
    by_endpoint = {
        str(key): int(value)
        for key, value in requests.items()
        if isinstance(value, int)
        and not isinstance(value, bool)
        and str(key).split(" ", 1)[0] in _METHODS
    }
    return sum(by_endpoint.values()), by_endpoint


_METHODS = ("GET", "POST", "PATCH", "PUT", "DELETE", "HEAD")


def quota_requests(by_endpoint: dict[str, int]) -> int:
    """Requests Procore counts against the quota: REST calls (not token, not storage)."""
    return sum(n for key, n in by_endpoint.items() if " /rest/" in key)


def _plan_counts(store: Store, project_id: int | None) -> tuple[dict[str, int], str | None]:
    """What `migrate plan` would show, summed over entities (zeros without a project)."""
    totals = dict.fromkeys(PLAN_KEYS, 0)
    if project_id is None:
        return totals, None
    # Imported here: the load package is start-up time `status` spends only with a project.
    from migrate.errors import MigrateError
    from migrate.load.plan import compute_plan

    try:
        counts = compute_plan(store, project_id).counts()
    except MigrateError as exc:
        return totals, str(exc)
    for by_kind in counts.values():
        for key in PLAN_KEYS:
            totals[key] += int(by_kind.get(key, 0))
    return totals, None


def _quota(store: Store) -> tuple[int | None, int, dict[str, int]]:
    row = last_run_row(store, "load")
    if row is None:
        return None, 0, {}
    total, by_endpoint = request_total(_json_or_none(row["requests"]) or {})
    return int(row["id"]), total, by_endpoint


def _next_command(
    stages: list[StageRun],
    running: list[dict[str, Any]],
    entities: dict[str, dict[str, int]],
    quarantine_open: int,
    sent_or_pending_rows: int,
    attachments: dict[str, int],
    plan: dict[str, int],
    plan_problem: str | None,
    checklists_extracted: int = 0,
) -> tuple[str, str]:
    """The command to run next, and why, in one sentence."""
    if running:
        run = running[0]
        return (
            "migrate status",
            f"`migrate {run['command']}` is running (run {run['run_id']}, pid {run['pid']}); "
            "wait for it to finish, then check again.",
        )
    last = {stage.command: stage for stage in stages}
    extract = last.get("extract")
    extracted = (
        entities["issue"]["extracted"] + entities["location"]["extracted"] + checklists_extracted
    )
    if extract is None and not extracted:
        return (
            "migrate extract",
            "Nothing has been extracted yet: start by pulling the BIM 360 Field project.",
        )
    if extract is not None and extract.status != "succeeded":
        return "migrate extract", (
            f"The last extract (run {extract.run_id}) {_ended(extract)}; running it again "
            "resumes where it stopped."
        )
    transform = last.get("transform")
    if transform is None:
        return (
            "migrate transform",
            "Extracted records are not transformed yet: apply the "
            "mappings to plan the Procore records.",
        )
    if transform.status != "succeeded":
        return "migrate transform", (
            f"The last transform (run {transform.run_id}) {_ended(transform)}; run it again."
        )
    if extract is not None and extract.run_id > transform.run_id:
        return "migrate transform", (
            f"Extract run {extract.run_id} is newer than the last transform "
            f"(run {transform.run_id}): transform again to plan what changed."
        )
    if plan_problem:
        return "migrate transform", plan_problem
    load = last.get("load")
    if load is not None and load.status != "succeeded":
        return "migrate load", (
            f"The last load (run {load.run_id}) {_ended(load)}; running it again resumes "
            "without creating duplicates."
        )
    work = {k: plan[k] for k in ("create", "update", "status_change") if plan.get(k)}
    if work:
        listed = ", ".join(f"{n} to {k.replace('_', ' ')}" for k, n in work.items())
        return "migrate load", f"Procore is behind the plan: {listed}."
    pending = sum(entities[e]["pending"] for e in ENTITIES)
    if pending or sent_or_pending_rows:
        count = max(pending, sent_or_pending_rows)
        return "migrate load", f"{count} planned record(s) are not in Procore yet."
    if attachments.get("pending_upload"):
        return "migrate load", (
            f"{attachments['pending_upload']} attachment(s) still wait for their upload."
        )
    if quarantine_open:
        return "migrate quarantine list", (
            f"{quarantine_open} record(s) are quarantined: fix the mappings or the source "
            "data, then transform and load again (or accept them as left out)."
        )
    return (
        "migrate report",
        "Everything planned is loaded: reconcile with Procore and hand over the report.",
    )


def _ended(stage: StageRun) -> str:
    return {
        "failed": "failed",
        "interrupted": "was interrupted",
        "running": "did not finish",
    }.get(stage.status, f"ended as {stage.status}")


#: The Stages table of ``migrate status`` (a stage's error goes on a line of its own).
_STAGE_COLUMNS = (
    Column("stage"),
    Column("status"),
    Column("finished"),
    Column("took", right=True),
    Column("run", right=True),
)
#: A failed stage's error, cut with "…" past this (the run log has it whole).
_ERROR_WIDTH = 110


def _duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
