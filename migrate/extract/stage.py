"""The extract stage: one pass over a BIM 360 Field project into the staging DB and blob store.

:func:`run` is the library entry point (tests call it with their own session);
:func:`extract_from_settings` is what ``migrate extract`` calls: it builds the clients from
``migration.toml`` and the environment, records the run, writes the run log and cleans up.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import IO, Any

from migrate.clients.bim360field import FieldSession
from migrate.clients.http import HttpClient, policy_for
from migrate.errors import ApiError, ConfigError, StageFailed, TransportError
from migrate.extract.attachments import extract_attachments
from migrate.extract.checklists import extract_checklists
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
from migrate.results import ExtractResult, NoProgress, Progress
from migrate.runlog import RunLog
from migrate.settings import Settings, source_credentials
from migrate.store import BlobStore, Store, finish_run, get_cursor, open_store, start_run
from migrate.store.cursors import set_cursor
from migrate.store.identity import Identity, pin_identity
from migrate.store.writer import acquire_writer


def _begin_pass(store: Store, options: ExtractOptions, run_id: int) -> tuple[int, bool]:
    """(pass run id, full refresh): continue an unfinished pass, or start a new one."""
    found = get_cursor(store, PASS_CURSOR)
    if found is not None:
        same_project = found.state.get("project_id") == options.project_id
        wants_more = options.full_refresh and not found.state.get("full_refresh")
        if same_project and not wants_more:
            return found.run_id, bool(found.state.get("full_refresh")) or options.full_refresh
    with store.transaction():
        store.conn.execute("DELETE FROM cursors WHERE endpoint LIKE ?", (CURSOR_PREFIX + "%",))
        set_cursor(
            store,
            PASS_CURSOR,
            run_id,
            0,
            {"project_id": options.project_id, "full_refresh": options.full_refresh},
        )
    return run_id, options.full_refresh


def _end_pass(store: Store) -> None:
    with store.transaction():
        store.conn.execute("DELETE FROM cursors WHERE endpoint LIKE ?", (CURSOR_PREFIX + "%",))


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

    Continues an unfinished pass (a run that was killed or failed) from where it stopped.
    Raises StageFailed, carrying the partial ExtractResult, when the service stays unreachable
    or answers something unexpected; ConfigError and CredentialError pass through.
    """
    started = time.monotonic()
    own_run = options.run_id is None
    run_id = (
        options.run_id
        if options.run_id is not None
        else start_run(
            store,
            "extract",
            {
                "project_id": options.project_id,
                "workers": options.workers,
                "full_refresh": options.full_refresh,
            },
        )
    )
    session.project_id = options.project_id
    stats = session.http.stats
    before = stats.snapshot()["requests"]
    retries_before = stats.total_retries
    logins_before = session.logins
    pass_id, full_refresh = _begin_pass(store, options, run_id)
    ctx = Context(
        store=store,
        session=session,
        blobs=blobs,
        options=options,
        run_id=run_id,
        pass_id=pass_id,
        full_refresh=full_refresh,
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
        problems = store.conn.execute(
            "SELECT count(*) FROM source_problems WHERE run_id = ?", (run_id,)
        ).fetchone()[0]
        ctx.tally.source_problems = problems
        return build_result(
            ctx,
            requests=requests_delta(stats.snapshot()["requests"], before),
            retries=stats.total_retries - retries_before,
            logins=session.logins - logins_before,
            elapsed=time.monotonic() - started,
            completed=completed,
        )

    capture = log.capture("migrate.http", "http") if log is not None else contextlib.nullcontext()
    try:
        with capture:
            extract_reference(ctx)
            extract_issues(ctx)
            extract_checklists(ctx)
            extract_attachments(ctx)
            _end_pass(store)
    except (TransportError, ApiError) as exc:
        partial = result(completed=False)
        ctx.note("failed", level="error", message=str(exc), counts=partial.as_json()["blobs"])
        if own_run:
            finish_run(store, run_id, "failed", partial.as_json(), partial.requests, error=str(exc))
        raise StageFailed(STAGE, str(exc), partial=partial) from exc
    except BaseException as exc:
        if own_run:
            with contextlib.suppress(Exception):
                partial = result(completed=False)
                status = "failed" if isinstance(exc, Exception) else "interrupted"
                finish_run(
                    store,
                    run_id,
                    status,
                    partial.as_json(),
                    partial.requests,
                    error=str(exc) or type(exc).__name__,
                )
        raise
    final = result(completed=True)
    ctx.note(
        "finished",
        counts={
            "changed": final.changed,
            "requests": final.total_requests,
            "problems": final.source_problems,
        },
        elapsed_seconds=round(final.elapsed_seconds, 3),
    )
    if own_run:
        finish_run(store, run_id, "succeeded", final.as_json(), final.requests)
    return final


def _whole_session(result: ExtractResult, session: FieldSession) -> ExtractResult:
    """The result with requests, retries and logins of the whole session (login included)."""
    stats = session.http.stats
    return replace(
        result,
        requests=requests_delta(stats.snapshot()["requests"], {}),
        retries=stats.total_retries + result.download_retries,
        logins=session.logins,
    )


def resolve_project(session: FieldSession, settings: Settings) -> str:
    """The project id from [source] project_id, or project_name looked up in project_names."""
    kind, value = settings.source_project()
    if kind == "project_id":
        return value
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
            f'[source] project_name "{value}" in {settings.where} matches {len(exact)} BIM 360 '
            "Field projects. Use project_id instead (ids: "
            + ", ".join(str(row.get("id")) for row in exact)
            + ")."
        )
    raise ConfigError(
        f'[source] project_name "{value}" in {settings.where} is not a BIM 360 Field project '
        f"this user can see (visible: {names}). Fix the name, or set project_id."
    )


def extract_from_settings(
    settings: Settings,
    env: Mapping[str, str] = os.environ,
    *,
    full_refresh: bool = False,
    progress: Progress | None = None,
    verbose_stream: IO[str] | None = None,
) -> ExtractResult:
    """``migrate extract``: open the staging DB and blob store, log in, run, record, clean up.

    Raises StageFailed (with the partial result) when the run stops partway; ConfigError and
    CredentialError pass through. The run row, its log file and the DB never hold a secret.
    """
    credentials = source_credentials(env)
    settings.source_project()  # a missing project is a config error before anything opens
    source = settings.source
    store = open_store(settings.staging.path)
    log: RunLog | None = None
    http: HttpClient | None = None
    session: FieldSession | None = None
    run_id: int | None = None
    try:
        acquire_writer(store, STAGE)  # released when the store closes
        blobs = BlobStore(settings.staging.blobs)
        kind, value = settings.source_project()
        args: dict[str, Any] = {
            "config": str(settings.config_path) if settings.config_path else None,
            "base_url": source.base_url,
            kind: value,
            "workers": source.workers,
            "page_size": source.page_size,
            "full_refresh": full_refresh,
        }
        run_id = start_run(store, "extract", args)
        http = HttpClient(
            source.base_url,
            policy=policy_for(source),
            pool_size=max(4, source.workers),
            secrets=credentials.redaction_values(),
        )
        log = RunLog(
            settings.staging.logs / f"{run_id}.jsonl",
            run_id=run_id,
            stream=verbose_stream,
            redact=http.redact,
        )
        session = FieldSession(
            http, credentials.username, credentials.password, page_size=source.page_size
        )
        try:
            session.login()
            project_id = resolve_project(session, settings)
        except (TransportError, ApiError) as exc:
            raise StageFailed(STAGE, str(exc)) from exc
        pin_identity(
            store,
            Identity(source_project_id=project_id),
            command=STAGE,
            where=settings.where,
            run_id=run_id,
        )
        options = ExtractOptions(
            project_id=project_id, workers=source.workers, full_refresh=full_refresh, run_id=run_id
        )
        try:
            result = _whole_session(
                run(store, session, blobs, options=options, progress=progress, log=log), session
            )
        except StageFailed as exc:
            if isinstance(exc.partial, ExtractResult):
                exc.partial = _whole_session(exc.partial, session)
            raise
    except StageFailed as exc:
        if run_id is not None:
            partial = exc.partial if isinstance(exc.partial, ExtractResult) else None
            finish_run(
                store,
                run_id,
                "failed",
                partial.as_json() if partial else None,
                partial.requests if partial else None,
                error=str(exc),
            )
        if log is not None:
            log.error(STAGE, "stopped", message=str(exc))
        raise
    except BaseException as exc:
        if run_id is not None:
            with contextlib.suppress(Exception):
                status = "failed" if isinstance(exc, Exception) else "interrupted"
                finish_run(store, run_id, status, None, None, error=str(exc) or type(exc).__name__)
        if log is not None:
            with contextlib.suppress(Exception):
                log.error(STAGE, "stopped", message=str(exc) or type(exc).__name__)
        raise
    else:
        assert run_id is not None and log is not None
        finish_run(store, run_id, "succeeded", result.as_json(), result.requests)
        log.info(
            STAGE, "summary", mirror=False, result=result.as_json(), requests=dict(result.requests)
        )
        return result
    finally:
        if session is not None:
            session.logout()
        if http is not None:
            http.close()
        if log is not None:
            log.close()
        store.close()
