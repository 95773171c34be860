"""Load: the plan into Procore, resumable, spending as few requests as possible.

Order: locations → for each sync batch of ≤ 1000 creates, the uploads its issues reference
(``workers`` at a time, one rate budget) then the sync call → delta updates (sync batches) →
status changes (single PATCH) → deletions (reported; closed with ``apply_deletions``) →
attachments added at the source after their issue was loaded (reported: Procore cannot add
them). The id map records every step (see state.py), so ``migrate load`` after a crash or a
``kill -9`` finishes the job with every record loaded exactly once, and a run with nothing to
do makes no write call at all.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from migrate.contract import load_readings
from migrate.errors import MigrateError, StageFailed
from migrate.ids import (
    ENTITY_INSPECTION,
    ENTITY_INSPECTION_TEMPLATE,
    ENTITY_ISSUE,
    ENTITY_LOCATION,
)
from migrate.load.decision import (
    CLOSED,
    Action,
    IssueDecision,
    Request,
    check_deletions,
    decide_inspections,
    decide_issues,
)
from migrate.load.followups import FollowUps, FollowUpWork
from migrate.load.inspections import InspectionLoader
from migrate.load.issues import IssueCreator
from migrate.load.locations import push_locations
from migrate.load.options import LoadOptions
from migrate.load.plan import check_plan_target
from migrate.load.state import LoadContext, fail_open_batches, open_quarantine_count
from migrate.load.uploads import Uploader
from migrate.results import LoadResult, Progress
from migrate.runlog import RunLog
from migrate.settings import Settings
from migrate.store.blobs import BlobStore
from migrate.store.db import Store, StoreError, open_store
from migrate.store.identity import Identity, pin_identity
from migrate.store.planned import MapRow, PlanEntry, id_map_rows, loaded_count
from migrate.store.rate_readings import save_readings
from migrate.store.readiness import require_prior_stage
from migrate.store.runs import recorded_run
from migrate.store.writer import acquire_writer

if TYPE_CHECKING:  # the plan imports this package: it must not import requests
    from migrate.clients.procore import ProcoreClient

COMMAND = "load"
STAGE = "load"
RESUME_COMMAND = "migrate load"

__all__ = ["COMMAND", "LoadOptions", "LoadResult", "load_from_settings", "run"]


class _Phase:
    """Progress bars, tolerant of no Progress at all."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress

    @contextlib.contextmanager
    def bar(self, entity: str, total: int | None) -> Iterator[None]:
        if self.progress is None:
            yield
            return
        self.progress.start(entity, total)
        try:
            yield
        finally:
            self.progress.finish(entity)


def _requests_by_endpoint(client: ProcoreClient) -> Counter[str]:
    return Counter(client.request_counts())


def _normalise_endpoint(key: str) -> str:
    """``PATCH /rest/v1.0/coordination_issues/600123`` → ``…/coordination_issues/:id``."""
    parts = key.split("/")
    return "/".join(":id" if part.isdigit() else part for part in parts)


def run(
    store: Store,
    client: ProcoreClient,
    blobs: BlobStore,
    *,
    options: LoadOptions,
    progress: Progress | None = None,
    log: RunLog | None = None,
) -> LoadResult:
    """Load the current plan into Procore; return what was done.

    The run is recorded (see ``store.runs.recorded_run``), refused while another command writes
    to the same staging DB. Transport failures raise StageFailed carrying the partial LoadResult;
    per-item refusals are quarantined and make ``exit_code`` 3.
    """
    args = {
        "target_project_id": options.target_project_id,
        "workers": options.workers,
        "batch_size": options.batch_size,
        "apply_deletions": options.apply_deletions,
    }
    with recorded_run(store, COMMAND, args, log=log) as recorded:
        client.budget.record_readings()
        client.budget.take_readings()  # only this run's answers
        loader = _Loader(store, client, blobs, options, progress, log, recorded.id)
        recorded.track(lambda: loader.result(completed=False))
        try:
            result = loader.load()
        except MigrateError as exc:
            if exc.exit_code == 1 and not isinstance(exc, StageFailed):
                raise StageFailed(
                    STAGE,
                    str(exc),
                    partial=loader.result(completed=False),
                    resume_command=RESUME_COMMAND,
                ) from exc
            raise
        finally:
            # Stopped and failed runs too: the report charts the quota they spent.
            _keep_readings(store, recorded.id, client, log)
        recorded.succeed(result)
    return result


def _keep_readings(store: Store, run_id: int, client: ProcoreClient, log: RunLog | None) -> None:
    """Store the run's rate readings; a failure to store them is logged, never raised, so it
    cannot hide how the run ended (only the report's quota charts miss them)."""
    readings = client.budget.take_readings()
    try:
        save_readings(store, run_id, readings)
    except (sqlite3.Error, StoreError) as exc:
        message = f"{len(readings)} rate readings not stored ({type(exc).__name__}: {exc})"
        logging.getLogger("migrate.load").warning(message)
        if log is not None:
            log.event(STAGE, "rate_readings", level="warning", message=message)


@dataclass
class _Work:
    """The decisions load acts on (kept small: unchanged records are only counted)."""

    creates: list[PlanEntry] = field(default_factory=list)
    #: id map rows of the creates that have one (sent by a dead run, or rejected before).
    previous: dict[str, MapRow] = field(default_factory=dict)
    followups: FollowUpWork = field(default_factory=FollowUpWork)
    #: Rows a dead run left in flight whose source is gone: looked up before deciding again.
    in_flight: list[MapRow] = field(default_factory=list)
    deleted: list[IssueDecision] = field(default_factory=list)
    attachments_after_load: list[dict[str, Any]] = field(default_factory=list)
    unchanged: int = 0
    blocked: int = 0

    @classmethod
    def collect(cls, decisions: Iterable[IssueDecision]) -> _Work:
        work = cls()
        for decision in decisions:
            if decision.attachments_added:
                work.attachments_after_load.append(
                    {
                        "source_id": decision.source_id,
                        "target_id": decision.target_id,
                        "attachment_ids": list(decision.attachments_added),
                    }
                )
            action = decision.action
            if action is Action.CREATE:
                assert decision.entry is not None
                work.creates.append(decision.entry)
                if decision.row is not None:
                    work.previous[decision.source_id] = decision.row
                continue
            work.followups.add(decision)
            if action is Action.UNCHANGED:
                work.unchanged += 1
            elif action is Action.BLOCKED and decision.entry is not None:
                work.blocked += 1
            elif action is Action.DELETED_AT_SOURCE and decision.row is not None:
                if Request.LOOK_UP in decision.requests:
                    work.in_flight.append(decision.row)
                else:
                    work.deleted.append(decision)
        # Rows a dead run left 'sent' go first: their look-ups then cover the shortest window.
        work.creates.sort(
            key=lambda entry: (
                work.previous.get(entry.source_id) is None
                or work.previous[entry.source_id].state != "sent",
                entry.source_id,
            )
        )
        return work


class _Loader:
    """One load run: the decisions (load/decision.py), then the phases in order."""

    def __init__(
        self,
        store: Store,
        client: ProcoreClient,
        blobs: BlobStore,
        options: LoadOptions,
        progress: Progress | None,
        log: RunLog | None,
        run_id: int,
    ) -> None:
        self.started = time.monotonic()
        self.options = options
        self.phase = _Phase(progress)
        self.log = log
        self.requests_before = _requests_by_endpoint(client)
        self.waited_before, self.limited_before = client.budget_figures()
        uploader = Uploader(
            store,
            client,
            blobs,
            options.target_project_id,
            workers=options.workers,
            on_upload=(lambda n: progress.advance("attachments", n)) if progress else None,
        )
        self.ctx = LoadContext(
            store=store,
            client=client,
            project_id=options.target_project_id,
            run_id=run_id,
            options=options,
            uploader=uploader,
            progress=progress,
            log=log,
            readings=load_readings(store),
        )
        self.attachments_after_load: list[dict[str, Any]] = []
        self.deleted: list[dict[str, Any]] = []
        self.inspections_seen = False

    def _event(self, event: str, *, level: str = "info", **fields: Any) -> None:
        if self.log is not None:
            self.log.event(STAGE, event, level=level, **fields)

    # -- the phases ------------------------------------------------------------------------
    def load(self) -> LoadResult:
        ctx = self.ctx
        # Credentials, company and project proven before anything else, even when nothing is
        # to be sent (one request, counted like every other; see ProcoreClient.check_access).
        ctx.client.check_access(ctx.project_id)
        abandoned = fail_open_batches(ctx.store)
        if abandoned:
            self._event(
                "resume",
                message=f"{abandoned} batch(es) of a run that died are re-sent with the same uuids",
            )
        work = self._decide()
        if work.in_flight:  # sent by a dead run, source gone since: does Procore have them?
            IssueCreator(ctx).resolve_orphans(work.in_flight)
            work = self._decide()
        self.attachments_after_load = work.attachments_after_load
        self.deleted = [d.as_deletion() for d in work.deleted]
        closes = work.followups.closes if self.options.apply_deletions else []
        if self.options.apply_deletions:
            # Before any write: a refused run closes nothing and sends nothing.
            check_deletions(
                closes,
                loaded_count(ctx.store, ENTITY_ISSUE, ctx.project_id),
                self.options.max_deletions,
                ctx.project_id,
            )
            if closes and self.options.on_deletions is not None:
                self.options.on_deletions([d.as_deletion() for d in closes])
        if not self.options.apply_deletions:
            work.followups.closes = []
        ctx.count("unchanged", n=work.unchanged)
        ctx.count("rejected", n=work.blocked)

        progress = ctx.progress
        with self.phase.bar("locations", None):
            counts = push_locations(
                ctx.store,
                ctx.client,
                ctx.project_id,
                advance=(lambda n: progress.advance("locations", n)) if progress else None,
            )
        ctx.count("created", ENTITY_LOCATION, counts.created)
        ctx.count("unchanged", ENTITY_LOCATION, counts.unchanged)
        ctx.location_ids = {
            sid: row.target_id
            for sid, row in id_map_rows(ctx.store, ENTITY_LOCATION, ctx.project_id).items()
            if row.state == "loaded" and row.target_id is not None
        }
        self._event("locations", counts={"created": counts.created, "unchanged": counts.unchanged})

        creates = work.creates
        if creates:
            attachment_total = len({a for issue in creates for a in issue.attachment_ids})
            with (
                self.phase.bar("attachments", attachment_total),
                self.phase.bar("coordination_issues", len(creates)),
            ):
                IssueCreator(ctx).push(creates, work.previous)
            self._event("creates", counts=dict(ctx.counts.get(ENTITY_ISSUE, {})))
            if any(ctx.readings.create_status(e.status) != e.status for e in creates):
                self._move_created_statuses(work)

        followups = FollowUps(ctx)
        followups.record_hash_only(work.followups)
        calls = (
            len(work.followups.sync_updates)
            + len(work.followups.status_changes)
            + len(work.followups.closes)
        )
        if calls:
            with self.phase.bar("updates", calls):
                followups.push_updates(work.followups)
                followups.push_status_changes(work.followups)
                closed = set(followups.close_deleted(work.followups))
            for deleted in self.deleted:
                if deleted["source_id"] in closed:
                    deleted["target_status"] = CLOSED
            self._event("updates", counts=dict(ctx.counts.get(ENTITY_ISSUE, {})))
        self._inspections()
        if self.attachments_after_load:
            self._event(
                "attachments_after_load", level="warning", count=len(self.attachments_after_load)
            )
        if self.deleted:
            self._event("deleted_at_source", count=len(self.deleted))
        return self.result(completed=True)

    def _inspections(self) -> None:
        """Checklists into Procore Inspections, after the issues they may link to."""
        ctx = self.ctx
        decisions = list(
            decide_inspections(
                ctx.store, ctx.project_id, retry_rejected=self.options.retry_rejected
            )
        )
        if not decisions:
            return
        self.inspections_seen = True
        kinds = Counter(decision.action for decision in decisions)
        ctx.count("unchanged", ENTITY_INSPECTION, kinds[Action.UNCHANGED])
        ctx.count(
            "rejected",
            ENTITY_INSPECTION,
            sum(1 for d in decisions if d.action is Action.BLOCKED and d.entry is not None),
        )
        work = kinds[Action.CREATE] + kinds[Action.UPDATE]
        if not work:
            return
        progress = ctx.progress
        with self.phase.bar("inspections", work):
            InspectionLoader(ctx).push(
                decisions,
                advance=(lambda n: progress.advance("inspections", n)) if progress else None,
            )
        self._event("inspections", counts=dict(ctx.counts.get(ENTITY_INSPECTION, {})))

    def _move_created_statuses(self, work: _Work) -> None:
        """Issues just created with open for a status create refuses: their status PATCH.

        The id map holds the status Procore has, so these are the decisions the next plan
        would show (status_change); taking them now finishes the job in this run.
        """
        pending = {d.source_id for d in work.followups.status_changes}
        work.followups.status_changes.extend(
            decision
            for decision in self._decide().followups.status_changes
            if decision.source_id in self.ctx.loaded_now and decision.source_id not in pending
        )

    def _decide(self) -> _Work:
        """What to do with every issue: the decisions `migrate plan` lists, read to the end."""
        check_plan_target(self.ctx.store, self.ctx.project_id)
        return _Work.collect(
            decide_issues(
                self.ctx.store, self.ctx.project_id, retry_rejected=self.options.retry_rejected
            )
        )

    # -- the result -------------------------------------------------------------------------
    def result(self, *, completed: bool) -> LoadResult:
        ctx = self.ctx
        requests = _requests_by_endpoint(ctx.client)
        requests.subtract(self.requests_before)
        by_endpoint: Counter[str] = Counter()
        for key, n in requests.items():
            if n > 0:
                by_endpoint[_normalise_endpoint(key)] += n
        waited, limited = ctx.client.budget_figures()
        counts = {
            entity: {
                kind: ctx.counts.get(entity, Counter()).get(kind, 0)
                for kind in LoadResult.COUNT_KINDS
            }
            for entity in (
                (ENTITY_LOCATION, ENTITY_ISSUE, ENTITY_INSPECTION)
                if self.inspections_seen
                else (ENTITY_LOCATION, ENTITY_ISSUE)
            )
        }
        return LoadResult(
            run_id=ctx.run_id,
            target_project_id=ctx.project_id,
            counts=counts,
            uploads_done=ctx.uploads_done,
            uploads_reused=ctx.uploads_reused,
            requests=dict(sorted(by_endpoint.items())),
            quota_wait_seconds=max(0.0, waited - self.waited_before),
            rate_limited=max(0, limited - self.limited_before),
            sync_batch_sizes=tuple(ctx.sync_sizes),
            attachments_after_load=tuple(self.attachments_after_load),
            deleted_at_source=tuple(self.deleted),
            quarantine_open=open_quarantine_count(ctx.store),
            apply_deletions=self.options.apply_deletions,
            elapsed_seconds=time.monotonic() - self.started,
            completed=completed,
            company_templates={
                kind: n
                for kind, n in ctx.counts.get(ENTITY_INSPECTION_TEMPLATE, Counter()).items()
                if n
            },
        )


# -- from settings (what the CLI calls) ---------------------------------------------------------


def load_from_settings(
    settings: Settings,
    env: Mapping[str, str] = os.environ,
    *,
    apply_deletions: bool = False,
    retry_rejected: bool = False,
    max_deletions: int | None = None,
    on_deletions: Callable[[Sequence[Mapping[str, Any]]], None] | None = None,
    progress: Progress | None = None,
    verbose_stream: IO[str] | None = None,
) -> LoadResult:
    """``migrate load``: the Procore client (one rate budget), staging DB, blob store and run
    log, then :func:`run`."""
    from migrate.clients.companylock import company_lock_from_env
    from migrate.clients.factory import procore_client

    company_id, project_id = settings.target_ids()
    company_lock = company_lock_from_env(env)
    options = LoadOptions(
        target_project_id=project_id,
        workers=settings.target.workers,
        apply_deletions=apply_deletions,
        retry_rejected=retry_rejected,
        max_deletions=max_deletions,
        on_deletions=on_deletions,
        company_lock=company_lock,
    )
    with (
        company_lock,
        procore_client(settings, env) as client,
        open_store(settings.staging.path, create=False) as store,
    ):
        # One load at a time: two would send the same records twice. Released at store.close().
        acquire_writer(store, COMMAND)
        require_prior_stage(store, COMMAND)
        pin_identity(
            store,
            Identity(target_company_id=company_id, target_project_id=project_id),
            command=COMMAND,
            where=settings.where,
        )
        blobs = BlobStore(settings.staging.blobs)
        with RunLog(settings.staging.logs, stream=verbose_stream) as log:
            return run(store, client, blobs, options=options, progress=progress, log=log)
