"""The dry-run plan: what load would do, from planned rows compared with the id map.

Nothing here calls Procore. Per entity (location, coordination_issue) every record lands in
one of these sets:

- ``create``: planned, not in Procore yet (no id map row, or pending / sent — a ``sent`` row
  was in flight when a run stopped and is re-sent with the same uuid — or rejected earlier
  with a payload that has changed since).
- ``update``: loaded, and the planned payload hash differs from the one loaded (load sends
  the fields sync may change).
- ``status_change``: loaded, and the planned status differs from the status Procore has (sync
  cannot change status; load uses a single update). A record can be in ``update`` too.
- ``unchanged``: loaded with the same payload hash and status; for locations also a path that
  already exists in Procore (load links it, creates nothing).
- ``skipped``: left out by a mapping (status → skip) or deleted at source, never loaded.
- ``blocked``: open quarantine (transform: a rule failed; load: Procore refused this very
  payload).
- ``deleted_at_source``: loaded earlier, but the source record is now deleted, voided or no
  longer planned: reported, closed only with ``--apply-deletions``.
- ``attachments_after_load``: loaded, and the planned attachments include files that were not
  sent at create. Procore cannot add attachments to an existing coordination issue, so these
  need a decision; they are never dropped silently. A record here is also in one of the sets
  above.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from migrate.errors import ConfigError
from migrate.ids import ENTITY_ISSUE, ENTITY_LOCATION, PLAN_KINDS
from migrate.settings import Settings
from migrate.store.db import Store, open_store
from migrate.store.identity import Identity, pin_identity

ENTITIES = (ENTITY_LOCATION, ENTITY_ISSUE)
#: Keys of every row `Plan.rows` returns.
ROW_KEYS = ("entity", "source_id", "label", "target_id", "detail", "hint")
#: Entity names in quarantine and skipped_records that belong to each plan entity.
SOURCE_ENTITIES = {
    ENTITY_LOCATION: ("area", "location"),
    ENTITY_ISSUE: ("issue", "checklist_item", "coordination_issue"),
}


@dataclass
class Plan:
    """The plan per entity and kind; rows are kept as tuples in ROW_KEYS order."""

    target_project_id: int
    transform_run_id: int | None = None
    warnings: list[str] = field(default_factory=list)
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

    def to_json(self, kinds: Iterable[str] = ()) -> dict[str, Any]:
        """Counts and warnings as a JSON-able dict, with the rows of `kinds` under "rows"."""
        result: dict[str, Any] = {
            "target_project_id": self.target_project_id,
            "transform_run_id": self.transform_run_id,
            "counts": self.counts(),
            "warnings": list(self.warnings),
        }
        kinds = list(kinds)
        if kinds:
            result["rows"] = {kind: self.rows(kind) for kind in kinds}
        return result

    def summary_lines(self) -> list[str]:
        """The counts table ``migrate plan`` prints."""
        counts = self.counts()
        width = max(len(entity) for entity in ENTITIES)
        shown = list(PLAN_KINDS)
        lines = [
            f"Plan for Procore project {self.target_project_id} "
            f"(transform run {self.transform_run_id}); nothing is written to Procore."
        ]
        lines.append(f"{'entity':<{width}}  " + "  ".join(f"{k:>{len(k)}}" for k in shown))
        for entity in ENTITIES:
            lines.append(
                f"{entity:<{width}}  " + "  ".join(f"{counts[entity][k]:>{len(k)}}" for k in shown)
            )
        lines.extend(f"Warning: {warning}" for warning in self.warnings)
        if counts[ENTITY_ISSUE]["attachments_after_load"]:
            lines.append(
                "Some loaded issues have new attachments Procore cannot add to an "
                "existing issue: see `migrate plan --show attachments_after_load`."
            )
        return lines


def compute_plan(store: Store, target_project_id: int) -> Plan:
    """Compare planned rows, skipped records and quarantine with the id map (reads only)."""
    last = _last_transform(store)
    plan = Plan(target_project_id, transform_run_id=last[0] if last else None)
    if last is not None and last[1] is not None and last[1] != target_project_id:
        raise ConfigError(
            f"The planned rows in {store.path} were made for Procore project {last[1]}, not "
            f"{target_project_id}. Run `migrate transform` for project {target_project_id} first."
        )
    _plan_locations(store, plan)
    _plan_issues(store, plan)
    for kinds in plan._rows.values():
        for rows in kinds.values():
            rows.sort(key=lambda row: row[1])
    _add_warnings(store, plan)
    return plan


def plan_from_settings(settings: Settings) -> Plan:
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
        return compute_plan(store, project_id)
    finally:
        store.close()


# -- per entity ---------------------------------------------------------------------------------


def _id_map(store: Store, entity: str, project_id: int) -> dict[str, tuple[Any, ...]]:
    """source_id → (state, target_id, payload_hash, target_status, attachment_ids list)."""
    result = {}
    for source_id, state, target_id, payload_hash, status, attachments in store.conn.execute(
        "SELECT source_id, state, target_id, payload_hash, target_status, attachment_ids "
        "FROM id_map WHERE entity = ? AND target_project_id = ?",
        (entity, project_id),
    ):
        result[source_id] = (state, target_id, payload_hash, status, _json_list(attachments))
    return result


def _open_quarantine(store: Store, entities: Iterable[str]) -> dict[str, tuple[Any, ...]]:
    """source_id → (id, stage, reason, hint, refused payload hash) of the newest open row."""
    entities = tuple(entities)
    marks = ", ".join("?" for _ in entities)
    result = {}
    for row_id, source_id, stage, reason, hint, record in store.conn.execute(
        "SELECT id, source_id, stage, reason, hint, record FROM quarantine "
        f"WHERE released_at IS NULL AND entity IN ({marks}) ORDER BY id",
        entities,
    ):
        refused = None
        if stage == "load" and record:
            try:
                refused = json.loads(record).get("payload_hash")
            except (ValueError, AttributeError):
                refused = None
        result[str(source_id)] = (row_id, stage, reason, hint, refused)
    return result


def _skipped(store: Store, entities: Iterable[str]) -> dict[str, str]:
    entities = tuple(entities)
    marks = ", ".join("?" for _ in entities)
    return dict(
        store.conn.execute(
            f"SELECT source_id, reason FROM skipped_records WHERE entity IN ({marks}) "
            "ORDER BY source_id",
            entities,
        ).fetchall()
    )


def _plan_locations(store: Store, plan: Plan) -> None:
    entity = ENTITY_LOCATION
    id_map = _id_map(store, entity, plan.target_project_id)
    held = _open_quarantine(store, SOURCE_ENTITIES[entity])
    planned: set[str] = set()
    for source_id, path_text, existing in store.conn.execute(
        "SELECT source_id, path_text, existing_target_id FROM planned_locations ORDER BY source_id"
    ):
        planned.add(source_id)
        mapped = id_map.get(source_id)
        quarantined = held.pop(source_id, None)
        if mapped is not None and mapped[0] == "loaded":
            plan.add(entity, "unchanged", source_id, path_text, mapped[1])
        elif quarantined is not None:
            _blocked(plan, entity, source_id, quarantined, path_text)
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
    for source_id, reason in _skipped(store, SOURCE_ENTITIES[entity]).items():
        plan.add(entity, "skipped", source_id, None, None, reason)
    for source_id, quarantined in sorted(held.items()):
        _blocked(plan, entity, source_id, quarantined)
    for source_id, mapped in sorted(id_map.items()):
        if mapped[0] == "loaded" and source_id not in planned:
            plan.add(
                entity,
                "deleted_at_source",
                source_id,
                _path_label(source_id),
                mapped[1],
                "no live BIM 360 Field area maps to this path any more",
            )


def _plan_issues(store: Store, plan: Plan) -> None:
    entity = ENTITY_ISSUE
    id_map = _id_map(store, entity, plan.target_project_id)
    held = _open_quarantine(store, SOURCE_ENTITIES[entity])
    skipped = _skipped(store, SOURCE_ENTITIES[entity])
    held_ids = set(held)
    planned: set[str] = set()
    for source_id, title, status, payload_hash, attachments in store.conn.execute(
        "SELECT source_id, title, status, payload_hash, attachment_ids "
        "FROM planned_issues ORDER BY source_id"
    ):
        planned.add(source_id)
        label = title
        mapped = id_map.get(source_id)
        quarantined = held.pop(source_id, None)
        if quarantined is not None and (
            quarantined[1] != "load" or quarantined[4] in (None, payload_hash)
        ):
            _blocked(plan, entity, source_id, quarantined, label)
            continue
        if mapped is None or mapped[0] != "loaded":
            detail = None
            if mapped is not None and mapped[0] == "sent":
                detail = "was in flight when a load stopped: re-sent with the same uuid"
            elif mapped is not None and mapped[0] == "rejected":
                detail = "refused before; the planned payload has changed since"
            plan.add(entity, "create", source_id, label, None, detail)
            continue
        _state, target_id, loaded_hash, target_status, loaded_attachments = mapped
        status_differs = target_status is not None and target_status != status
        if loaded_hash != payload_hash:
            plan.add(entity, "update", source_id, label, target_id)
        if status_differs:
            plan.add(
                entity, "status_change", source_id, label, target_id, f"{target_status} → {status}"
            )
        if loaded_hash == payload_hash and not status_differs:
            plan.add(entity, "unchanged", source_id, label, target_id)
        missing = sorted(set(_json_list(attachments)) - set(loaded_attachments))
        if missing:
            plan.add(
                entity,
                "attachments_after_load",
                source_id,
                label,
                target_id,
                missing,
                "Procore cannot add attachments to an existing coordination "
                "issue: decide whether to add them by hand or leave them in the footer",
            )
    for source_id, reason in skipped.items():
        mapped = id_map.get(source_id)
        if mapped is not None and mapped[0] == "loaded":
            plan.add(
                entity,
                "deleted_at_source",
                source_id,
                None,
                mapped[1],
                reason,
                "reported only; `migrate load --apply-deletions` closes it in Procore",
            )
        else:
            plan.add(entity, "skipped", source_id, None, None, reason)
        held.pop(source_id, None)
    for source_id, quarantined in sorted(held.items()):
        _blocked(plan, entity, source_id, quarantined)
    for source_id, mapped in sorted(id_map.items()):
        if (
            mapped[0] == "loaded"
            and source_id not in planned
            and source_id not in skipped
            and source_id not in held_ids
        ):
            plan.add(
                entity,
                "deleted_at_source",
                source_id,
                None,
                mapped[1],
                "no longer planned (gone from staging, or checklist items switched off)",
                "reported only; `migrate load --apply-deletions` closes it in Procore",
            )


def _blocked(
    plan: Plan, entity: str, source_id: str, quarantined: tuple[Any, ...], label: str | None = None
) -> None:
    row_id, stage, reason, hint, _refused = quarantined
    plan.add(
        entity, "blocked", source_id, label, None, f"quarantine {row_id} ({stage}): {reason}", hint
    )


def _add_warnings(store: Store, plan: Plan) -> None:
    if plan.transform_run_id is None:
        plan.warnings.append("no transform has finished yet: the plan is empty")
        return
    newer = store.conn.execute(
        "SELECT id FROM runs WHERE command = 'extract' AND status = 'succeeded' AND id > ? "
        "ORDER BY id DESC LIMIT 1",
        (plan.transform_run_id,),
    ).fetchone()
    if newer is not None:
        plan.warnings.append(
            f"extract run {newer[0]} finished after transform run {plan.transform_run_id}: "
            "run `migrate transform` so the plan includes its changes"
        )


def _last_transform(store: Store) -> tuple[int, int | None] | None:
    """(run id, target project id) of the newest succeeded transform, or None."""
    row = store.conn.execute(
        "SELECT id, args FROM runs WHERE command = 'transform' AND status = 'succeeded' "
        "ORDER BY id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    try:
        args: Mapping[str, Any] = json.loads(row[1]) if row[1] else {}
    except ValueError:
        args = {}
    project = args.get("target_project_id")
    return int(row[0]), int(project) if isinstance(project, int) else None


def _json_list(text: str | None) -> list[str]:
    if not text:
        return []
    try:
        value = json.loads(text)
    except ValueError:
        return []
    return [str(item) for item in value] if isinstance(value, list) else []


def _path_label(source_id: str) -> str:
    try:
        return ">".join(json.loads(source_id.removeprefix("path:")))
    except (ValueError, TypeError):
        return source_id
