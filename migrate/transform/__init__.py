"""Transform: staged BIM 360 Field records → planned Procore payloads, skipped records, quarantine.

`run` reads Procore's assignees and locations once (the target_* snapshot; offline it reuses
the stored one), then works on the database alone: it rewrites planned_locations,
planned_issues and skipped_records in one transaction, so a plan is always whole; quarantine
rows are refreshed, and the ones whose record now plans are released.
`transform_from_settings` is what the CLI calls: mappings, store, Procore client, then `run`.
The mapping itself lives in issues.py, locations.py and checklists.py (record in, payload or
rejection out).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from migrate.clients.factory import procore_client
from migrate.errors import (
    ApiError,
    ConfigError,
    MigrateError,
    StageFailed,
    TransportError,
)
from migrate.mappings import (
    AssigneeDirectory,
    FieldUsers,
    Mappings,
    TradeDirectory,
    index_definitions,
    load_mappings,
)
from migrate.quarantine import Held, hold, open_quarantine_count, release_unconfirmed
from migrate.results import Progress, TransformResult
from migrate.runlog import RunLog
from migrate.settings import Settings, TransformSettings
from migrate.store.db import Store, open_store
from migrate.store.identity import Identity, pin_identity
from migrate.store.ledger import write_ledger
from migrate.store.planned import (
    clear_plan,
    insert_skipped,
    planned_inspection_hash_rows,
    planned_issue_hash_chunks,
    planned_location_count,
    planned_location_hash_rows,
)
from migrate.store.readiness import require_prior_stage
from migrate.store.runs import recorded_run
from migrate.store.writer import acquire_writer
from migrate.title_template import DEFAULT_TITLE_TEMPLATE, template_problems
from migrate.transform import checklists, inspections, issues, ledger, locations
from migrate.transform.issues import IssueContext, plan_hash_lines
from migrate.transform.locations import LocationPlan
from migrate.transform.target import (
    TargetReader,
    read_assignees,
    read_trades,
    require_snapshot,
    snapshot_target,
    snapshot_trades,
)

COMMAND = "transform"
STAGE = "transform"
#: Source entity (as counted in TransformResult) → entity name in quarantine / skipped_records.
ENTITIES = {
    "issues": "issue",
    "areas": "area",
    "checklist_items": "checklist_item",
    "checklist_templates": inspections.ENTITY_TEMPLATE,
    "checklists": inspections.ENTITY_CHECKLIST,
}
#: The entities whose planned rows and skipped records are rewritten from scratch each run
#: (inspections replace theirs idempotently, see store.planned).
REWRITTEN_ENTITIES = ("issue", "area", "checklist_item")
BATCH_SIZE = 500

__all__ = [
    "COMMAND",
    "StagingBusy",
    "TransformOptions",
    "TransformResult",
    "choose_title_template",
    "plan_hash",
    "run",
    "transform_from_settings",
]


@dataclass(frozen=True)
class TransformOptions:
    """How to transform: the Procore project to plan for, the mappings and [transform].

    ``offline`` plans against the stored snapshot of the project and fails when there is none;
    ``workers`` processes map issue batches (default: one per CPU; 1 maps in this process).
    The plan is the same whatever the number of workers or the batch size.
    """

    target_project_id: int
    mappings: Mappings
    settings: TransformSettings = field(default_factory=TransformSettings)
    offline: bool = False
    workers: int | None = None
    batch_size: int = BATCH_SIZE
    #: The Procore company whose trades fields.csv's trade target resolves against (read
    #: with the snapshot when fields.csv has a trade row; offline, the stored ones are used).
    target_company_id: int | None = None


class StagingBusy(MigrateError):
    """Another command held the staging DB's write lock for longer than the busy timeout."""


@contextlib.contextmanager
def busy_as_error(store: Store) -> Iterator[None]:
    """Turn SQLite's "database is locked" into a StagingBusy that says what to do."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc) and "busy" not in str(exc):
            raise
        raise StagingBusy(
            f"{store.path} is locked by another migrate command that is writing to it ({exc}). "
            "Nothing was changed; run `migrate transform` again when it has finished."
        ) from exc


def choose_title_template(mappings: Mappings) -> str:
    """The title template: the title_template row of fields.csv, else the default.

    fields.csv is its only home (settings.py refuses a [transform] title_template).
    """
    chosen = mappings.fields.title_template or DEFAULT_TITLE_TEMPLATE
    problems = template_problems(chosen)
    if problems:
        raise ConfigError(
            f"the title_template row in {mappings.file('fields.csv')} {chosen!r} "
            + "; ".join(problems)
            + ". Use {identifier} {description} {type} {category} {area} {location_detail} "
            "{status}."
        )
    return chosen


def run(
    store: Store,
    target: TargetReader | None,
    *,
    options: TransformOptions,
    progress: Progress | None = None,
    log: RunLog | None = None,
) -> TransformResult:
    """Plan every staged area, issue (and, if switched on, checklist item); return the counts.

    ``target`` (the Procore client) is read for a fresh snapshot of the project's assignees
    and locations; with None the stored snapshot is used (``options.offline`` requires one).
    The run is recorded (see ``store.runs.recorded_run``).
    """
    started = time.monotonic()
    template = choose_title_template(options.mappings)
    project_id = options.target_project_id
    args = {
        "target_project_id": project_id,
        "offline": options.offline,
        "mappings": options.mappings.directory,
    }
    # Outside: the run row's start and end; inside: the work, so the row records the same
    # readable StagingBusy the command prints.
    with (
        busy_as_error(store),
        recorded_run(store, COMMAND, args, log=log) as recorded,
        busy_as_error(store),
    ):
        if target is not None:
            try:
                target.check_access(project_id)  # a wrong project or company: exit 2, named
                counts = snapshot_target(store, target, project_id, recorded.id)
                company_id = options.target_company_id
                if options.mappings.fields.trade and company_id is not None:
                    counts["trades"] = snapshot_trades(store, target, company_id, recorded.id)
            except (TransportError, ApiError) as exc:  # exit 1 naming the command, as others do
                raise StageFailed(STAGE, str(exc)) from exc
            if log is not None:
                log.info(STAGE, "snapshot_taken", counts=counts)
        elif options.offline:
            counts = require_snapshot(store, project_id)
            if log is not None:
                log.info(STAGE, "snapshot_reused", counts=counts)
        result = _run(store, options, template, recorded.id, progress, log, started)
        recorded.succeed(result)
    return result


def _run(
    store: Store,
    options: TransformOptions,
    template: str,
    run_id: int,
    progress: Progress | None,
    log: RunLog | None,
    started: float,
) -> TransformResult:
    mappings, settings = options.mappings, options.settings
    target_project_id = options.target_project_id
    workers = options.workers if options.workers is not None else os.cpu_count() or 1
    tallies: dict[str, issues.EntityTally] = {}
    with store.transaction():
        conn = store.conn
        clear_plan(store, REWRITTEN_ENTITIES)

        areas = locations.read_areas(store)
        with _bar(progress, "areas", len(areas)) as advance:
            location_plan = locations.map_areas(
                areas, mappings, locations.read_target_index(store, target_project_id)
            )
            locations.save_planned_locations(store, location_plan, run_id)
            insert_skipped(
                store,
                [
                    (locations.ENTITY, area_id, reason, run_id)
                    for area_id, reason in location_plan.skipped
                ],
            )
            hold(
                store,
                locations.ENTITY,
                STAGE,
                [
                    Held(r.area_id, r.reason, r.hint, {"staged": r.record})
                    for r in location_plan.rejected
                ],
                run_id,
            )
            advance(len(areas))
        tallies["areas"] = issues.EntityTally(
            extracted=len(areas),
            planned=location_plan.planned_area_count,
            quarantined=len(location_plan.rejected),
            skipped=len(location_plan.skipped),
        )

        # The plan hash is built as the plan is written (see plan_hash for what it covers).
        digest = _locations_digest(store)
        context = _context(store, mappings, settings, template, target_project_id, location_plan)
        if settings.checklists_as_inspections:
            context.raised_from = inspections.raised_from_lines(store)
        total = int(conn.execute("SELECT COUNT(*) FROM issues").fetchone()[0])
        with _bar(progress, "issues", total) as advance:
            tallies["issues"] = issues.plan_issues(
                store,
                context,
                run_id,
                advance=advance,
                batch_size=options.batch_size,
                workers=workers,
                digest=digest,
            )
        if settings.checklist_items_as_issues:
            with _bar(progress, "checklist_items", checklists.count_candidates(store)) as advance:
                tallies["checklist_items"] = checklists.plan_checklist_items(
                    store,
                    context,
                    run_id,
                    advance=advance,
                    batch_size=options.batch_size,
                    digest=digest,
                )
        if settings.checklists_as_inspections:
            with _bar(progress, "checklists", inspections.count_checklists(store)) as advance:
                tallies.update(
                    inspections.plan_inspections(
                        store,
                        inspections.build_context(
                            store, mappings, items_as_issues=settings.checklist_items_as_issues
                        ),
                        run_id,
                        advance=advance,
                        batch_size=options.batch_size,
                    )
                )
        else:
            inspections.clear_inspections(store, run_id)
        _inspections_digest(store, digest)
        write_ledger(
            store,
            ledger.build_ledger(
                store,
                ledger.LedgerContext(
                    mappings,
                    checklists_as_inspections=settings.checklists_as_inspections,
                    checklist_items_as_issues=settings.checklist_items_as_issues,
                ),
            ),
            run_id,
        )
        released = release_unconfirmed(store, STAGE, ENTITIES.values(), run_id)
        for name, entity in ENTITIES.items():
            if name in tallies:
                tallies[name].released = released.get(entity, 0)
            elif released.get(entity):
                tallies[name] = issues.EntityTally(released=released[entity])
        planned_locations = planned_location_count(store)
        plan_digest = digest.hexdigest()

    order = [name for name in ENTITIES if name in tallies]
    result = TransformResult(
        run_id=run_id,
        counts={name: tallies[name].as_dict() for name in order},
        plan_hash=plan_digest,
        elapsed_seconds=time.monotonic() - started,
        target_project_id=target_project_id,
        offline=options.offline,
        planned_locations=planned_locations,
        quarantine_open=open_quarantine_count(store),
    )
    if log is not None:
        for name in order:
            log.info(STAGE, "entity_done", entity=name, counts=result.counts[name])
        log.info(
            STAGE,
            "finished",
            plan_hash=plan_digest,
            elapsed_seconds=round(result.elapsed_seconds, 3),
        )
    return result


def _context(
    store: Store,
    mappings: Mappings,
    settings: TransformSettings,
    template: str,
    target_project_id: int,
    location_plan: LocationPlan,
) -> IssueContext:
    """The small lookups every record needs, preloaded once (never per record)."""
    conn = store.conn
    definitions = [
        {"id": row[0], "name": row[1], "position": row[2]}
        for row in conn.execute(
            "SELECT id, name, position FROM custom_fields WHERE container_type = 'Issue' "
            "ORDER BY position, id"
        )
    ]
    return IssueContext(
        mappings=mappings,
        title_template=template,
        target_project_id=target_project_id,
        unresolved_assignee=settings.unresolved_assignee,
        assignees=AssigneeDirectory(read_assignees(store, target_project_id)),
        field_users=FieldUsers(
            {"id": row[0], "email": row[1], "first_name": row[2], "last_name": row[3]}
            for row in conn.execute("SELECT id, email, first_name, last_name FROM users")
        ),
        area_location=location_plan.area_location,
        area_names=location_plan.area_names,
        deleted_areas=frozenset(location_plan.deleted),
        rejected_areas={r.area_id: r.reason for r in location_plan.rejected},
        companies=dict(conn.execute("SELECT id, name FROM companies").fetchall()),
        root_causes=dict(conn.execute("SELECT id, name FROM root_causes").fetchall()),
        issue_types={
            row[0]: (row[1], row[2])
            for row in conn.execute("SELECT id, name, category_name FROM issue_types")
        },
        custom_field_definitions=index_definitions(definitions),
        field_project_id=field_project_id(store),
        time_zone=settings.zone(),
        trades=TradeDirectory(read_trades(store) if mappings.fields.trade else ()),
    )


def field_project_id(store: Store) -> str | None:
    """The BIM 360 Field project the staged issues belong to (for origin deep links)."""
    projects = store.conn.execute("SELECT id FROM projects LIMIT 2").fetchall()
    if len(projects) == 1:
        return str(projects[0][0])
    row = store.conn.execute(
        "SELECT json_extract(payload, '$.project_id') FROM raw_issues ORDER BY source_id LIMIT 1"
    ).fetchone()
    return str(row[0]) if row and row[0] else None


def plan_hash(store: Store) -> str:
    """sha256 over every planned location, issue, inspection template and inspection row
    (plan_run and payload left out).

    Locations by source_id, then coordination issues (Field issues, then checklist items, each
    by source_id), then inspection templates and inspections by source_id: the order transform
    writes them in, so `run` builds the same hash as it writes. A payload enters through its
    row's payload_hash, which covers it with its location and attachment digests.
    """
    digest = _locations_digest(store)
    for chunk in planned_issue_hash_chunks(store):
        digest.update(plan_hash_lines(chunk))
    _inspections_digest(store, digest)
    return digest.hexdigest()


def _inspections_digest(store: Store, digest: Any) -> None:
    """Feed the planned inspection templates and inspections to the plan hash."""
    table = None
    chunk: list[Sequence[Any]] = []
    for name, row in planned_inspection_hash_rows(store):
        if name != table:
            digest.update(plan_hash_lines(chunk))
            chunk = []
            digest.update(f"{name}\n".encode("ascii"))
            table = name
        chunk.append(row)
        if len(chunk) >= 5000:
            digest.update(plan_hash_lines(chunk))
            chunk = []
    digest.update(plan_hash_lines(chunk))


def _locations_digest(store: Store) -> Any:
    """A sha256 that has taken the planned locations and the planned_issues heading."""
    digest = hashlib.sha256()
    digest.update(b"planned_locations\n")
    digest.update(plan_hash_lines(planned_location_hash_rows(store)))
    digest.update(b"planned_issues\n")
    return digest


@contextlib.contextmanager
def _bar(
    progress: Progress | None, entity: str, total: int | None
) -> Iterator[Callable[[int], None]]:
    if progress is None:
        yield lambda n: None
        return
    progress.start(entity, total)
    try:
        yield lambda n: progress.advance(entity, n)
    finally:
        progress.finish(entity)


# -- from settings (what the CLI calls) ---------------------------------------------------------


def transform_from_settings(
    settings: Settings,
    env: Mapping[str, str] = os.environ,
    *,
    offline: bool = False,
    progress: Progress | None = None,
    verbose_stream: IO[str] | None = None,
) -> TransformResult:
    """``migrate transform``: mappings, staging DB, Procore client (unless `offline`), run log,
    then :func:`run`.

    Mapping problems raise MappingError (exit 2) before the store is touched; `offline` without
    a stored snapshot raises NoSnapshotError (exit 2).
    """
    if offline:
        project_id = settings.target.project_id
        if project_id is None:
            raise ConfigError(
                f"[target] project_id is not set in {settings.where}. Add project_id = <number> "
                "(the Procore project to plan for)."
            )
    else:
        _company_id, project_id = settings.target_ids()
    mappings = load_mappings(settings.mappings.dir)
    options = TransformOptions(
        target_project_id=project_id,
        target_company_id=settings.target.company_id,
        mappings=mappings,
        settings=settings.transform,
        offline=offline,
    )
    choose_title_template(mappings)
    with contextlib.ExitStack() as stack:
        client = None if offline else stack.enter_context(procore_client(settings, env))
        store = stack.enter_context(open_store(settings.staging.path, create=False))
        acquire_writer(store, COMMAND)  # released when the store closes
        require_prior_stage(store, COMMAND)
        pin_identity(
            store,
            Identity(target_company_id=settings.target.company_id, target_project_id=project_id),
            command=COMMAND,
            where=settings.where,
        )
        log = stack.enter_context(RunLog(settings.staging.logs, stream=verbose_stream))
        return run(store, client, options=options, progress=progress, log=log)
