"""The dry-run plan: what load will do, as load itself decides it (load/decision.py).

Nothing here calls Procore, and nothing here decides: issues are listed from
``decide_issues``, the function load executes, so each count is the requests load then makes.
Per entity (location, coordination_issue) every record lands in one of these sets:

- ``create``: planned, not in Procore yet (no id map row, or pending / sent — a ``sent`` row
  was in flight when a run stopped and is re-sent with the same uuid — or rejected earlier
  with a payload that has changed since).
- ``update``: loaded, and a field sync may change differs from what was loaded: one sync
  update item.
- ``status_change``: loaded, and the planned status differs from the status Procore has (sync
  cannot change status; load uses a single PATCH). A record can be in ``update`` too.
- ``unchanged``: loaded, nothing Procore can change differs (a changed origin or files added
  later only move the recorded hash); for locations also a path that already exists in Procore
  (load links it, creates nothing).
- ``skipped``: left out by a mapping (status → skip) or deleted at source, never loaded.
- ``blocked``: open quarantine (transform: a rule failed; load: Procore refused this very
  payload), or refused by Procore with this payload and released by hand.
- ``deleted_at_source``: loaded earlier, but the source record is now deleted, voided or no
  longer planned: reported, closed (one PATCH each) only with ``--apply-deletions``, and then
  only up to the limit load/decision.py ``deletion_limit`` sets unless ``--max-deletions``.
- ``attachments_after_load``: loaded, and the planned attachments include files that were not
  sent at create. Procore cannot add attachments to an existing coordination issue, so these
  need a decision; they are never dropped silently. A record here is also in one of the sets
  above.

Inspections (checklists, issue 14) come from ``decide_inspections``: ``create`` (not in Procore
yet, or in flight when a load stopped: looked up first), ``update`` (loaded, but unfinished when
a load stopped, or changed at the source: load sends only what Procore lacks), ``unchanged``,
``blocked``, ``skipped`` and ``deleted_at_source`` (reported only: inspections are never
deleted). ``Plan.inspection_requests`` counts the creates' writes by kind, the lower bound
load/inspections.py ``lower_bound`` defines.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from migrate.errors import ConfigError
from migrate.ids import ENTITY_INSPECTION, ENTITY_ISSUE, ENTITY_LOCATION, PLAN_KINDS
from migrate.load.decision import (
    ATTACHMENTS_HINT,
    INSPECTION_SOURCE_ENTITIES,
    ISSUE_SOURCE_ENTITIES,
    PAYLOAD_BATCH,
    Action,
    IssueDecision,
    Request,
    decide_inspections,
    decide_issues,
    deletion_limit,
)
from migrate.load.inspections import lower_bound
from migrate.load.state import open_quarantine
from migrate.results import count_table
from migrate.settings import Settings
from migrate.store.db import Store, open_store
from migrate.store.identity import Identity, pin_identity
from migrate.store.ledger import LedgerRow, read_ledger
from migrate.store.ledger import failure_text as ledger_failure_text
from migrate.store.ledger import plan_lines as ledger_plan_lines
from migrate.store.planned import (
    UNSENT_DUE_DATE,
    UNSENT_TRADE,
    InspectionEntry,
    id_map_rows,
    loaded_count,
    planned_inspection_rows,
    planned_issue_type_counts,
    planned_issues_with_footer_label,
    planned_locations,
    planned_titles,
    skipped_records,
)
from migrate.store.runs import last_run

ENTITIES = (ENTITY_LOCATION, ENTITY_ISSUE, ENTITY_INSPECTION)
#: Keys of every row `Plan.rows` returns.
ROW_KEYS = ("entity", "source_id", "label", "target_id", "detail", "hint")
#: Entity names in quarantine and skipped_records that belong to each plan entity.
SOURCE_ENTITIES = {
    ENTITY_LOCATION: ("area", "location"),
    ENTITY_ISSUE: ISSUE_SOURCE_ENTITIES,
    ENTITY_INSPECTION: INSPECTION_SOURCE_ENTITIES,
}


@dataclass
class Plan:
    """The plan per entity and kind; rows are kept as tuples in ROW_KEYS order."""

    target_project_id: int
    transform_run_id: int | None = None
    warnings: list[str] = field(default_factory=list)
    #: Issue requests load will make, by kind (load/decision.py Request); ``close`` only with
    #: --apply-deletions.
    requests: Counter[str] = field(default_factory=Counter)
    #: Inspection writes of the creates, by kind (load/inspections.py lower_bound): what load
    #: sends for them, item reads and building blocks aside.
    inspection_requests: Counter[str] = field(default_factory=Counter)
    #: Issues loaded into the project (what the deletion limit is a share of).
    loaded_issues: int = 0
    #: What --apply-deletions closes: {source_id, target_id, title, target_status}.
    closes: list[dict[str, Any]] = field(default_factory=list)
    #: Where every Field field went, as the last transform stored it (transform/ledger.py).
    field_ledger: list[LedgerRow] = field(default_factory=list)
    _rows: dict[str, dict[str, list[tuple[Any, ...]]]] = field(
        default_factory=lambda: {entity: {kind: [] for kind in PLAN_KINDS} for entity in ENTITIES}
    )

    def add(
        self,
        entity: str,
        kind: str,
        source_id: str,
        label: Any = None,
        target_id: int | None = None,
        detail: Any = None,
        hint: str | None = None,
    ) -> None:
        self._rows[entity][kind].append((entity, source_id, label, target_id, detail, hint))

    def counts(self) -> dict[str, dict[str, int]]:
        """{entity: {kind: how many}} for every entity and kind (zeros included)."""
        return {
            entity: {kind: len(rows) for kind, rows in kinds.items()}
            for entity, kinds in self._rows.items()
        }

    def rows(self, kind: str, entity: str | None = None) -> list[dict[str, Any]]:
        """The records of one kind (both entities unless `entity`), as JSON-able dicts."""
        if kind not in PLAN_KINDS:
            raise ValueError(f"kind must be one of {', '.join(PLAN_KINDS)}, not {kind!r}")
        entities = ENTITIES if entity is None else (entity,)
        return [
            dict(zip(ROW_KEYS, row, strict=True))
            for name in entities
            for row in self._rows[name][kind]
        ]

    def source_ids(self, entity: str, kind: str) -> list[str]:
        """Source ids of one entity and kind, in source_id order."""
        return [row[1] for row in self._rows[entity][kind]]

    @property
    def deletion_limit(self) -> int:
        """How many issues `load --apply-deletions` may close without --max-deletions."""
        return deletion_limit(self.loaded_issues)

    def to_json(self, kinds: Iterable[str] = ()) -> dict[str, Any]:
        """Counts and warnings as a JSON-able dict, with the rows of `kinds` under "rows"."""
        result: dict[str, Any] = {
            "target_project_id": self.target_project_id,
            "transform_run_id": self.transform_run_id,
            "counts": self.counts(),
            "requests": {kind.value: self.requests.get(kind.value, 0) for kind in Request},
            "deletions": {
                "closes": [dict(item) for item in self.closes],
                "loaded_issues": self.loaded_issues,
                "limit_without_max_deletions": self.deletion_limit,
            },
            "inspection_requests": dict(sorted(self.inspection_requests.items())),
            "warnings": list(self.warnings),
            "field_ledger": [row._asdict() for row in self.field_ledger],
        }
        kinds = list(kinds)
        if kinds:
            result["rows"] = {kind: self.rows(kind) for kind in kinds}
        return result

    def summary_lines(self) -> list[str]:
        """The counts table ``migrate plan`` prints."""
        counts = self.counts()
        lines = [
            f"Plan for Procore project {self.target_project_id} "
            f"(transform run {self.transform_run_id}); nothing is written to Procore."
        ]
        lines += count_table({entity: counts[entity] for entity in ENTITIES}, PLAN_KINDS)
        requests = self.requests
        lines.append(
            f"Issue requests load will make: {requests[Request.SYNC_CREATE]} sync create items, "
            f"{requests[Request.SYNC_UPDATE]} sync update items, "
            f"{requests[Request.STATUS_PATCH]} status PATCHes"
            + (f", {requests[Request.LOOK_UP]} look-ups" if requests[Request.LOOK_UP] else "")
            + f"; with --apply-deletions also {len(self.closes)} closes."
        )
        inspections = counts[ENTITY_INSPECTION]
        if inspections["create"] or inspections["update"]:
            asked = self.inspection_requests
            lines.append(
                f"Inspection requests load will make: {asked['create']} creates with "
                f"{asked['uploads']} file uploads, {asked['answers']} answers, "
                f"{asked['comments']} item comments, {asked['item_files']} item files, "
                f"{asked['status']} status changes; {inspections['update']} loaded "
                "inspections finished or updated (only what Procore lacks is sent); plus item "
                "reads and templates."
            )
        if self.transform_run_id is not None:
            lines.extend(ledger_plan_lines(self.field_ledger))
        lines.extend(f"Warning: {warning}" for warning in self.warnings)
        if counts[ENTITY_ISSUE]["attachments_after_load"]:
            lines.append(
                "Some loaded issues have new attachments Procore cannot add to an "
                "existing issue: see `migrate plan --show attachments_after_load`."
            )
        if self.closes:
            over = len(self.closes) > self.deletion_limit
            lines.append(
                f"{len(self.closes)} loaded issues are deleted at the source: "
                "`migrate load --apply-deletions` closes them in Procore"
                + (
                    f" only with --max-deletions {len(self.closes)} (more than the "
                    f"{self.deletion_limit} allowed without it)"
                    if over
                    else ""
                )
                + "; see `migrate plan --show deleted_at_source`."
            )
        return lines


def compute_plan(store: Store, target_project_id: int, *, retry_rejected: bool = False) -> Plan:
    """List load's decisions for the planned rows, skipped records and quarantine (reads only).

    ``retry_rejected``: as ``migrate load --retry-rejected`` would decide.
    """
    transform_run_id = check_plan_target(store, target_project_id)
    plan = Plan(target_project_id, transform_run_id=transform_run_id)
    _plan_locations(store, plan)
    _plan_issues(store, plan, retry_rejected=retry_rejected)
    _plan_inspections(store, plan, retry_rejected=retry_rejected)
    for kinds in plan._rows.values():
        for rows in kinds.values():
            rows.sort(key=lambda row: row[1])
    plan.closes.sort(key=lambda item: item["source_id"])
    _add_warnings(store, plan)
    return plan


def check_plan_target(store: Store, target_project_id: int) -> int | None:
    """The newest succeeded transform's run id; ConfigError if it planned another project."""
    last = _last_transform(store)
    if last is not None and last[1] is not None and last[1] != target_project_id:
        raise ConfigError(
            f"The planned rows in {store.path} were made for Procore project {last[1]}, not "
            f"{target_project_id}. Run `migrate transform` for project {target_project_id} first."
        )
    return last[0] if last else None


def plan_from_settings(settings: Settings, *, retry_rejected: bool = False) -> Plan:
    """Open the staging DB named in the settings and compute the plan for [target] project_id."""
    project_id = settings.target.project_id
    if project_id is None:
        raise ConfigError(
            f"[target] project_id is not set in {settings.where}. Add project_id = <number> "
            "(the Procore project to plan for)."
        )
    store = open_store(settings.staging.path, read_only=True)
    try:
        pin_identity(  # read-only: checks, pins nothing
            store,
            Identity(target_company_id=settings.target.company_id, target_project_id=project_id),
            command="plan",
            where=settings.where,
        )
        if _last_transform(store) is None:
            raise ConfigError(
                f"No transform has finished in {store.path} yet, so there is nothing to plan. "
                "Run `migrate transform` first."
            )
        return compute_plan(store, project_id, retry_rejected=retry_rejected)
    finally:
        store.close()


# -- per entity ---------------------------------------------------------------------------------


def _plan_locations(store: Store, plan: Plan) -> None:
    entity = ENTITY_LOCATION
    id_map = id_map_rows(store, entity, plan.target_project_id)
    held = open_quarantine(store, SOURCE_ENTITIES[entity])
    planned: set[str] = set()
    for location in planned_locations(store):
        source_id, path_text, existing = (
            location.source_id,
            location.path_text,
            location.existing_target_id,
        )
        planned.add(source_id)
        mapped = id_map.get(source_id)
        quarantined = held.pop(source_id, None)
        if mapped is not None and mapped.state == "loaded":
            plan.add(entity, "unchanged", source_id, path_text, mapped.target_id)
        elif quarantined is not None:
            plan.add(
                entity, "blocked", source_id, path_text, None, quarantined.detail, quarantined.hint
            )
        elif existing is not None:
            plan.add(
                entity,
                "unchanged",
                source_id,
                path_text,
                existing,
                f"already in Procore (location {existing}); load links it",
            )
        else:
            plan.add(entity, "create", source_id, path_text)
    for source_id, reason in skipped_records(store, SOURCE_ENTITIES[entity]).items():
        plan.add(entity, "skipped", source_id, None, None, reason)
    for source_id, quarantined in sorted(held.items()):
        plan.add(entity, "blocked", source_id, None, None, quarantined.detail, quarantined.hint)
    for source_id, mapped in sorted(id_map.items()):
        if mapped.state == "loaded" and source_id not in planned:
            plan.add(
                entity,
                "deleted_at_source",
                source_id,
                _path_label(source_id),
                mapped.target_id,
                "no live BIM 360 Field area maps to this path any more",
            )


def _plan_issues(store: Store, plan: Plan, *, retry_rejected: bool) -> None:
    titles = planned_titles(store)
    for decision in decide_issues(store, plan.target_project_id, retry_rejected=retry_rejected):
        _add_decision(plan, decision, titles.get(decision.source_id))
    plan.loaded_issues = loaded_count(store, ENTITY_ISSUE, plan.target_project_id)


def _plan_inspections(store: Store, plan: Plan, *, retry_rejected: bool) -> None:
    """Inspections as load decides them (decide_inspections); creates' writes counted."""
    creates: list[InspectionEntry] = []
    for decision in decide_inspections(
        store, plan.target_project_id, retry_rejected=retry_rejected
    ):
        entry = decision.entry
        label = entry.identifier if entry is not None else None
        plan.add(
            ENTITY_INSPECTION,
            decision.action.value,
            decision.source_id,
            label,
            decision.target_id,
            decision.detail,
            decision.hint,
        )
        if decision.action is Action.CREATE and entry is not None:
            creates.append(entry)
    for start in range(0, len(creates), PAYLOAD_BATCH):
        chunk = creates[start : start + PAYLOAD_BATCH]
        payloads = {
            row.source_id: row.payload
            for row in planned_inspection_rows(store, [entry.source_id for entry in chunk])
        }
        for entry in chunk:
            payload = payloads.get(entry.source_id)
            if payload is not None:
                plan.inspection_requests.update(lower_bound(entry, payload))


def _add_decision(plan: Plan, decision: IssueDecision, title: str | None) -> None:
    """A decision as plan rows: its action, plus one row per kind of request it makes."""
    entity, sid, target_id = ENTITY_ISSUE, decision.source_id, decision.target_id
    label = title if decision.entry is not None else decision.title
    plan.requests.update(request.value for request in decision.requests)
    action = decision.action
    if action in (Action.UPDATE, Action.STATUS_CHANGE):
        if Request.SYNC_UPDATE in decision.requests:
            plan.add(entity, "update", sid, label, target_id, decision.detail, decision.hint)
        if Request.STATUS_PATCH in decision.requests:
            row, entry = decision.row, decision.entry
            assert row is not None and entry is not None
            plan.add(
                entity,
                "status_change",
                sid,
                label,
                target_id,
                f"{row.target_status} → {entry.status}",
            )
    else:
        plan.add(entity, action.value, sid, label, target_id, decision.detail, decision.hint)
    if Request.CLOSE in decision.requests:
        plan.closes.append(decision.as_deletion())
    if decision.attachments_added:
        plan.add(
            entity,
            "attachments_after_load",
            sid,
            label,
            target_id,
            list(decision.attachments_added),
            ATTACHMENTS_HINT,
        )


def _add_warnings(store: Store, plan: Plan) -> None:
    if plan.transform_run_id is None:
        plan.warnings.append("no transform has finished yet: the plan is empty")
        return
    newer = last_run(store, "extract", status="succeeded")
    if newer is not None and newer.id > plan.transform_run_id:
        plan.warnings.append(
            f"extract run {newer.id} finished after transform run {plan.transform_run_id}: "
            "run `migrate transform` so the plan includes its changes"
        )
    plan.warnings.extend(transform_warnings(store))
    plan.field_ledger = read_ledger(store)
    failure = ledger_failure_text(plan.field_ledger)
    if failure:
        plan.warnings.append(
            f"{failure}: name a destination in migrate/transform/ledger.py (nothing may be "
            "lost silently)"
        )


#: Issues are listed by identifier in a warning up to this many; past it, "and N more".
LISTED_IN_A_WARNING = 10
#: Share of planned Field issues above which one catch-all issue type earns a warning.
CATCH_ALL_SHARE = 0.5
#: Procore issue types that say nothing about the issue (the default row *,* sends "other").
CATCH_ALL_TYPES = ("other", "")


def transform_warnings(store: Store) -> list[str]:
    """What transform kept out of Procore's fields (issue 15): values that stay in the text
    only, and an issue-type mapping that files most issues under one catch-all type."""
    warnings = []
    unsent_due = planned_issues_with_footer_label(store, UNSENT_DUE_DATE)
    if unsent_due:
        warnings.append(
            f"{len(unsent_due)} issue(s) have a due date that is not a date: they load without "
            f"one and keep it in the description ({_listed(unsent_due)}); fix the date in BIM "
            "360 Field and run extract again"
        )
    unsent_trades = planned_issues_with_footer_label(store, UNSENT_TRADE)
    if unsent_trades:
        warnings.append(
            f"{len(unsent_trades)} issue(s) name a trade Procore does not have: they load "
            f"without a trade and keep it in the description ({_listed(unsent_trades)}); add "
            "rows to mappings/trades.csv"
        )
    types = planned_issue_type_counts(store)
    total = sum(types.values())
    for issue_type in CATCH_ALL_TYPES:
        share = types.get(issue_type, 0) / total if total else 0.0
        if share > CATCH_ALL_SHARE:
            shown = f"issue type '{issue_type}'" if issue_type else "no issue type"
            warnings.append(
                f"{types[issue_type]} of {total} issues ({share:.0%}) get {shown}: add rows "
                "for their BIM 360 Field categories and types to mappings/issue_types.csv"
            )
    return warnings


def _listed(issues: list[tuple[str, str | None]]) -> str:
    shown = [identifier or source_id for source_id, identifier in issues[:LISTED_IN_A_WARNING]]
    more = len(issues) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _last_transform(store: Store) -> tuple[int, int | None] | None:
    """(run id, target project id) of the newest succeeded transform, or None."""
    run = last_run(store, "transform", status="succeeded")
    if run is None:
        return None
    project = run.args.get("target_project_id") if isinstance(run.args, dict) else None
    return run.id, int(project) if isinstance(project, int) else None


def _path_label(source_id: str) -> str:
    try:
        return ">".join(json.loads(source_id.removeprefix("path:")))
    except (ValueError, TypeError):
        return source_id
