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
import os
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import IO, Any

from migrate.clients.factory import procore_client
from migrate.clients.procore import ProcoreClient
from migrate.errors import MigrateError, StageFailed
from migrate.ids import ENTITY_ISSUE, ENTITY_LOCATION
from migrate.load.followups import FollowUps, classify
from migrate.load.issues import IssueCreator, PlanEntry, plan_entries
from migrate.load.locations import push_locations
from migrate.load.options import LoadOptions
from migrate.load.plan import compute_plan
from migrate.load.state import (
    LoadContext,
    MapRow,
    fail_open_batches,
    id_map_rows,
    open_quarantine_count,
)
from migrate.load.uploads import Uploader
from migrate.results import LoadResult, Progress
from migrate.runlog import RunLog
from migrate.settings import Settings
from migrate.store.blobs import BlobStore
from migrate.store.db import Store, open_store
from migrate.store.runs import recorded_run

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

    The run is recorded (see ``store.runs.recorded_run``), refused while another load runs on
    the same staging DB. Transport failures raise StageFailed carrying the partial LoadResult;
    per-item refusals are quarantined and make ``exit_code`` 3.
    """
    args = {
        "target_project_id": options.target_project_id,
        "workers": options.workers,
        "batch_size": options.batch_size,
        "apply_deletions": options.apply_deletions,
    }
    with recorded_run(store, COMMAND, args, log=log, exclusive=True) as recorded:
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
        recorded.succeed(result)
    return result


class _Loader:
    """One load run: the phases in order over a shared LoadContext."""

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
        )
        self.attachments_after_load: list[dict[str, Any]] = []
        self.deleted: list[dict[str, Any]] = []

    def _event(self, event: str, *, level: str = "info", **fields: Any) -> None:
        if self.log is not None:
            self.log.event(STAGE, event, level=level, **fields)

    # -- the phases ------------------------------------------------------------------------
    def load(self) -> LoadResult:
        ctx = self.ctx
        abandoned = fail_open_batches(ctx.store)
        if abandoned:
            self._event(
                "resume",
                message=f"{abandoned} batch(es) of a run that died are re-sent with the same uuids",
            )
        # The dry-run plan (no HTTP) checks the rows were planned for this project and names
        # the loaded records whose source is gone; the state machine below decides the rest.
        plan = compute_plan(ctx.store, ctx.project_id)
        deleted_ids = plan.source_ids(ENTITY_ISSUE, "deleted_at_source")
        # Entries without payloads: the payloads are read batch by batch as they are sent.
        planned = plan_entries(ctx.store)
        rows = id_map_rows(ctx.store, ENTITY_ISSUE, ctx.project_id)
        creates = self._creates(planned, rows)

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

        IssueCreator(ctx).resolve_orphans(rows, planned)
        if creates:
            attachment_total = len({a for issue in creates for a in issue.attachment_ids})
            with (
                self.phase.bar("attachments", attachment_total),
                self.phase.bar("coordination_issues", len(creates)),
            ):
                IssueCreator(ctx).push(creates, rows)
            self._event("creates", counts=dict(ctx.counts.get(ENTITY_ISSUE, {})))

        rows = id_map_rows(ctx.store, ENTITY_ISSUE, ctx.project_id)
        if ctx.loaded_now:  # a found orphan is loaded now, and deleted at source
            deleted_ids = compute_plan(ctx.store, ctx.project_id).source_ids(
                ENTITY_ISSUE, "deleted_at_source"
            )
        work = classify(ctx.store, planned, rows, deleted_ids, ctx.loaded_now)
        self.attachments_after_load = work.attachments_after_load
        self.deleted = work.deleted_at_source
        ctx.count("unchanged", n=work.unchanged)
        ctx.count("rejected", n=work.held)
        followups = FollowUps(ctx)
        followups.record_hash_only(work)
        closing = (
            [d for d in work.deleted_at_source if d["target_status"] != "closed"]
            if self.options.apply_deletions
            else []
        )
        calls = len(work.sync_updates) + len(work.status_changes) + len(closing)
        if calls:
            with self.phase.bar("updates", calls):
                followups.push_updates(work)
                followups.push_status_changes(work)
                if self.options.apply_deletions:
                    followups.close_deleted(work)
            self._event("updates", counts=dict(ctx.counts.get(ENTITY_ISSUE, {})))
        if self.attachments_after_load:
            self._event(
                "attachments_after_load", level="warning", count=len(self.attachments_after_load)
            )
        if self.deleted:
            self._event("deleted_at_source", count=len(self.deleted))
        return self.result(completed=True)

    def _creates(
        self, planned: Mapping[str, PlanEntry], rows: Mapping[str, MapRow]
    ) -> list[PlanEntry]:
        """Planned issues not in Procore yet (sent-but-unconfirmed ones first)."""
        creates: list[PlanEntry] = []
        for source_id, issue in planned.items():
            row = rows.get(source_id)
            retry = (
                row is not None
                and row.state == "rejected"
                and (row.payload_hash != issue.payload_hash or self.options.retry_rejected)
            )
            if row is None or row.state in ("pending", "sent") or retry:
                creates.append(issue)
            elif row.state == "rejected":
                self.ctx.count("rejected")
        # Rows a dead run left 'sent' go first: their look-ups then cover the shortest window.
        creates.sort(
            key=lambda i: (
                rows.get(i.source_id) is None or rows[i.source_id].state != "sent",
                i.source_id,
            )
        )
        return creates

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
            for entity in (ENTITY_LOCATION, ENTITY_ISSUE)
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
        )


# -- from settings (what the CLI calls) ---------------------------------------------------------


def load_from_settings(
    settings: Settings,
    env: Mapping[str, str] = os.environ,
    *,
    apply_deletions: bool = False,
    retry_rejected: bool = False,
    progress: Progress | None = None,
    verbose_stream: IO[str] | None = None,
) -> LoadResult:
    """``migrate load``: the Procore client (one rate budget), staging DB, blob store and run
    log, then :func:`run`."""
    _company_id, project_id = settings.target_ids()
    options = LoadOptions(
        target_project_id=project_id,
        workers=settings.target.workers,
        apply_deletions=apply_deletions,
        retry_rejected=retry_rejected,
    )
    with procore_client(settings, env) as client, open_store(settings.staging.path) as store:
        blobs = BlobStore(settings.staging.blobs)
        with RunLog(settings.staging.logs, stream=verbose_stream) as log:
            return run(store, client, blobs, options=options, progress=progress, log=log)
