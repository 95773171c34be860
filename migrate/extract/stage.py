"""The extract stage: one pass over a BIM 360 Field project into the staging DB and blob store.

:func:`run` is the stage (tests call it with their own session); :func:`extract_from_settings`
is what ``migrate extract`` calls: it builds the session, store, blob store and log from
``migration.toml`` and the environment, and calls :func:`run`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import IO, Any

from migrate.clients.bim360field import FieldSession
from migrate.clients.factory import field_session
from migrate.errors import ApiError, ConfigError, StageFailed, TransportError
from migrate.extract.attachments import extract_attachments
from migrate.extract.checklists import extract_checklists
from migrate.extract.export import extract_project_export
from migrate.extract.inventory import extract_inventory
from migrate.extract.issues import extract_issues
from migrate.extract.reference import extract_reference
from migrate.extract.state import (
    CURSOR_PREFIX,
    PASS_CURSOR,
    STAGE,
    Context,
    ExtractOptions,
    build_result,
    requests_delta,
)
from migrate.report.inventory import left_behind, status_lines
from migrate.results import ExtractResult, NoProgress, Progress
from migrate.runlog import RunLog
from migrate.settings import DEFAULT_CONFIG_NAME, Settings
from migrate.store import BlobStore, Store, get_cursor, open_store
from migrate.store.cursors import clear_cursors, set_cursor
from migrate.store.identity import Identity, pin_identity
from migrate.store.records import count_source_problems
from migrate.store.runs import has_succeeded, recorded_run
from migrate.store.writer import acquire_writer


def _begin_pass(store: Store, options: ExtractOptions, run_id: int) -> tuple[int, bool, bool]:
    """(pass run id, full refresh, first pass): continue an unfinished pass, or start one.

    A first pass (no extract has finished on this staging DB) retrieves every record, so
    its summary calls it full rather than incremental.
    """
    found = get_cursor(store, PASS_CURSOR)
    if found is not None:
        same_project = found.state.get("project_id") == options.project_id
        wants_more = options.full_refresh and not found.state.get("full_refresh")
        if same_project and not wants_more:
            return (
                found.run_id,
                bool(found.state.get("full_refresh")) or options.full_refresh,
                bool(found.state.get("first_pass")),
            )
    first_pass = not has_succeeded(store, STAGE)
    with store.transaction():
        clear_cursors(store, CURSOR_PREFIX)
        set_cursor(
            store,
            PASS_CURSOR,
            run_id,
            0,
            {
                "project_id": options.project_id,
                "full_refresh": options.full_refresh,
                "first_pass": first_pass,
            },
        )
    return run_id, options.full_refresh, first_pass


def _end_pass(store: Store) -> None:
    clear_cursors(store, CURSOR_PREFIX)


def run(
    store: Store,
    session: FieldSession,
    blobs: BlobStore,
    *,
    options: ExtractOptions,
    progress: Progress | None = None,
    log: RunLog | None = None,
) -> ExtractResult:
    """Extract one project: reference data, issues, checklists, then attachment bytes.

    Logs in, finds the project (by name if only that is given), and continues an unfinished
    pass (a run that was killed or failed) from where it stopped. Raises StageFailed, carrying
    the partial ExtractResult, when the service stays unreachable or answers something
    unexpected; ConfigError and CredentialError pass through. The run is recorded (see
    ``store.runs.recorded_run``); its row, its log and the DB never hold a secret.
    """
    started = time.monotonic()
    stats = session.http.stats
    before = stats.snapshot()["requests"]
    retries_before = stats.total_retries
    logins_before = session.logins
    with recorded_run(store, STAGE, _run_args(session, options), log=log) as recorded:
        try:
            session.login()
            if options.project_id is None:
                options = replace(options, project_id=find_project(session, options))
        except (TransportError, ApiError) as exc:
            raise StageFailed(STAGE, str(exc)) from exc
        session.project_id = options.project_id
        pin_identity(
            store,
            Identity(source_project_id=options.project_id),
            command=STAGE,
            where=options.config or DEFAULT_CONFIG_NAME,
            run_id=recorded.id,
        )
        pass_id, full_refresh, first_pass = _begin_pass(store, options, recorded.id)
        ctx = Context(
            store=store,
            session=session,
            blobs=blobs,
            options=options,
            run_id=recorded.id,
            pass_id=pass_id,
            full_refresh=full_refresh,
            first_pass=first_pass,
            progress=progress or NoProgress(),
            log=log,
        )
        ctx.note(
            "start",
            project_id=options.project_id,
            pass_run=pass_id,
            full_refresh=full_refresh,
            workers=options.workers,
        )

        def result(completed: bool) -> ExtractResult:
            ctx.tally.source_problems = count_source_problems(store, recorded.id)
            return build_result(
                ctx,
                requests=requests_delta(stats.snapshot()["requests"], before),
                retries=stats.total_retries - retries_before,
                logins=session.logins - logins_before,
                elapsed=time.monotonic() - started,
                completed=completed,
            )

        recorded.track(lambda: result(completed=False))
        try:
            extract_reference(ctx)
            extract_issues(ctx)
            extract_checklists(ctx)
            extract_attachments(ctx)
            extract_inventory(ctx)
            extract_project_export(ctx)
            _end_pass(store)
        except (TransportError, ApiError) as exc:
            raise StageFailed(STAGE, str(exc), partial=result(completed=False)) from exc
        final = replace(result(completed=True), left_behind=tuple(status_lines(left_behind(store))))
        ctx.note(
            "finished",
            counts={
                "changed": final.changed,
                "requests": final.total_requests,
                "problems": final.source_problems,
            },
            elapsed_seconds=round(final.elapsed_seconds, 3),
        )
        recorded.succeed(final)
    return final


def _run_args(session: FieldSession, options: ExtractOptions) -> dict[str, Any]:
    """What the run row records of how it was asked to run (no secret: see redact_args)."""
    project = (
        {"project_id": options.project_id}
        if options.project_id is not None
        else {"project_name": options.project_name}
    )
    return {
        "config": options.config,
        "base_url": session.http.base_url,
        **project,
        "workers": options.workers,
        "page_size": session.page_size,
        "full_refresh": options.full_refresh,
        "project_export": options.project_export,
    }


def find_project(session: FieldSession, options: ExtractOptions) -> str:
    """The id of the project named ``options.project_name``, looked up in project_names."""
    value = options.project_name or ""
    where = options.config or DEFAULT_CONFIG_NAME
    answer = session.json("POST", "/fieldapi/admin/v1/project_names")
    rows = [row for row in answer if isinstance(row, dict)] if isinstance(answer, list) else []
    exact = [row for row in rows if row.get("name") == value]
    if not exact:
        exact = [row for row in rows if str(row.get("name", "")).casefold() == value.casefold()]
    if len(exact) == 1 and isinstance(exact[0].get("id"), str):
        return exact[0]["id"]
    names = ", ".join(f'"{row.get("name")}"' for row in rows[:10]) or "none"
    if len(exact) > 1:
        raise ConfigError(
            f'[source] project_name "{value}" in {where} matches {len(exact)} BIM 360 '
            "Field projects. Use project_id instead (ids: "
            + ", ".join(str(row.get("id")) for row in exact)
            + ")."
        )
    raise ConfigError(
        f'[source] project_name "{value}" in {where} is not a BIM 360 Field project '
        f"this user can see (visible: {names}). Fix the name, or set project_id."
    )


def extract_from_settings(
    settings: Settings,
    env: Mapping[str, str] = os.environ,
    *,
    full_refresh: bool = False,
    project_export: bool | None = None,
    progress: Progress | None = None,
    verbose_stream: IO[str] | None = None,
) -> ExtractResult:
    """``migrate extract``: the session, staging DB, blob store and run log, then :func:`run`.

    ``project_export`` False skips Field's project export (``--no-export``); None takes
    ``[source] project_export``. Raises StageFailed (with the partial result) when the run
    stops partway; ConfigError and CredentialError (missing credentials before anything is
    opened) pass through.
    """
    with field_session(settings, env) as session:
        kind, value = settings.source_project()
        options = ExtractOptions(
            workers=settings.source.workers,
            full_refresh=full_refresh,
            project_export=settings.source.project_export
            if project_export is None
            else project_export,
            export_wait_seconds=settings.source.export_wait,
            export_poll_seconds=settings.source.export_poll,
            config=str(settings.config_path) if settings.config_path else None,
            project_id=value if kind == "project_id" else None,
            project_name=value if kind == "project_name" else None,
        )
        with open_store(settings.staging.path) as store:
            acquire_writer(store, STAGE)  # released when the store closes
            blobs = BlobStore(settings.staging.blobs)
            with RunLog(
                settings.staging.logs, stream=verbose_stream, redact=session.http.redact
            ) as log:
                return run(store, session, blobs, options=options, progress=progress, log=log)
