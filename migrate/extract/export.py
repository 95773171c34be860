"""The safety net: BIM 360 Field's own project export, kept beside the migration (issue 15).

Field builds exports on its side; the API only reports their status
(``project_export_status``) and hands out pre-signed storage URLs to the latest one
(``latest_project_export``: a ``database`` and a ``files`` archive). Extract waits while an
export is running, for ``ExtractOptions.export_wait_seconds`` at most, polling every
``export_poll_seconds`` with a progress line, then streams both archives into the blob store
(content-addressed, like attachments) and records them in ``project_exports``. An export that
does not finish within the bound, a project not selected for exports, or an archive that will
not download is recorded as not available (or failed) with the reason, and extract goes on:
the archives are a safety net, not part of what is migrated.

The storage URLs are credentials for 24 hours ("do not store"): they are registered as
secrets with the HTTP layer, so no message, log line or DB row carries one.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

from migrate import stopping
from migrate.errors import ApiError, IncompleteBody, ServiceUnavailable, TransportError
from migrate.extract.attachments import HashingWriter
from migrate.extract.state import Context
from migrate.store import utc_now
from migrate.store.leftbehind import (
    export_archives,
    save_export_archive,
    save_export_unavailable,
)

STATUS_PATH = "/api/project_export_status/{project_id}"
LATEST_PATH = "/api/latest_project_export/{project_id}"
#: Tries per archive when its body arrives cut short.
ARCHIVE_ATTEMPTS = 3


class _Unavailable(Exception):
    """No export to download this time; the message says why (for the report)."""


def extract_project_export(ctx: Context) -> None:
    """Wait for Field's project export (bounded) and store its archives; never raises for an
    export that is missing or late, only for the service being down (TransportError)."""
    if not ctx.options.project_export:
        ctx.note("export_skipped", message="--no-export: the project export is not fetched")
        return
    requested_at = utc_now()
    try:
        finished_at = _wait_for_export(ctx)
        links = _latest_links(ctx)
    except _Unavailable as exc:
        save_export_unavailable(
            ctx.store, requested_at=requested_at, run_id=ctx.run_id, reason=str(exc)
        )
        ctx.note("export_not_available", level="warning", message=str(exc))
        return
    for kind, url in links:
        _store_archive(ctx, kind, url, requested_at=requested_at, finished_at=finished_at)


def _wait_for_export(ctx: Context) -> str | None:
    """last_export_at once no export is running; _Unavailable past the bound."""
    path = STATUS_PATH.format(project_id=ctx.project_id)
    bound = max(0.0, ctx.options.export_wait_seconds)
    deadline = time.monotonic() + bound
    polls = 0
    ctx.progress.start("project export (status checks)", None)
    try:
        while True:
            status = _call(ctx, path)
            polls += 1
            ctx.progress.advance("project export (status checks)")
            if not isinstance(status, dict):
                raise _Unavailable(
                    f"BIM 360 Field's project_export_status answered {type(status).__name__}, "
                    "not an object"
                )
            if not status.get("export_running"):
                if status.get("last_export_succeeded") is False:
                    raise _Unavailable(
                        "BIM 360 Field reports that its last project export failed "
                        f"(last_export_at {status.get('last_export_at')})"
                    )
                finished = status.get("last_export_at")
                return str(finished) if finished is not None else None
            if time.monotonic() + ctx.options.export_poll_seconds > deadline:
                raise _Unavailable(
                    f"the project export was still running after {bound:g} s ({polls} status "
                    "checks); run `migrate extract` again later to fetch it"
                )
            ctx.note("export_running", counts={"status_checks": polls})
            stopping.sleep(ctx.options.export_poll_seconds)
    finally:
        ctx.progress.finish("project export (status checks)")


def _latest_links(ctx: Context) -> list[tuple[str, str]]:
    answer = _call(ctx, LATEST_PATH.format(project_id=ctx.project_id))
    links = []
    for entry in answer if isinstance(answer, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("url"), str):
            url = entry["url"]
            # Pre-signed and time limited: a credential. Never shown, logged or stored.
            ctx.session.http.add_secret(url)
            query = urlsplit(url).query
            if query:
                ctx.session.http.add_secret(query)
            links.append((str(entry.get("type") or "unknown"), url))
    if not links:
        raise _Unavailable("BIM 360 Field has no project export files for this project yet")
    return links


def _call(ctx: Context, path: str) -> Any:
    try:
        return ctx.session.json("GET", path)
    except ApiError as exc:
        if exc.status == 404:
            raise _Unavailable(
                "BIM 360 Field answered 404: the project is not selected for exports "
                "(an account administrator can select it)"
            ) from None
        if exc.status is not None and 400 <= exc.status < 500:
            raise _Unavailable(f"BIM 360 Field refused the export call: {exc}") from None
        raise


def _store_archive(
    ctx: Context, kind: str, url: str, *, requested_at: str, finished_at: str | None
) -> None:
    """Stream one archive into the blob store, unless this very export is stored already."""
    known = {archive.kind: archive for archive in export_archives(ctx.store)}
    previous = known.get(kind)
    if (
        previous is not None
        and previous.state == "stored"
        and previous.finished_at == finished_at
        and previous.sha256
        and ctx.blobs.has(previous.sha256)
    ):
        ctx.note("export_kept", archive=kind, message="this export is stored already")
        return
    last_error = ""
    for attempt in range(1, ARCHIVE_ATTEMPTS + 1):
        try:
            with ctx.blobs.temp() as temp:
                writer = HashingWriter(temp.file)
                ctx.session.http.download("GET", url, writer)
                temp.file.flush()
                info = ctx.blobs.adopt(temp, writer.hexdigest(), writer.size)
        except IncompleteBody as exc:
            last_error = str(exc)
            continue
        except ServiceUnavailable:
            raise
        except (TransportError, ApiError) as exc:
            last_error = str(exc)
            break
        save_export_archive(
            ctx.store,
            kind=kind,
            state="stored",
            requested_at=requested_at,
            run_id=ctx.run_id,
            sha256=info.sha256,
            size=info.size,
            finished_at=finished_at,
        )
        ctx.note("export_stored", archive=kind, counts={"bytes": info.size, "tries": attempt})
        return
    reason = f"the {kind} archive did not download: {ctx.session.http.redact(last_error)}"
    older = previous.sha256 if previous is not None and previous.state == "stored" else None
    if older and ctx.blobs.has(older):
        # An older export is still a safety net: keep it recorded rather than lose it.
        ctx.note("export_failed", level="warning", archive=kind, message=reason)
        return
    save_export_archive(
        ctx.store,
        kind=kind,
        state="failed",
        requested_at=requested_at,
        run_id=ctx.run_id,
        finished_at=finished_at,
        reason=reason,
    )
    ctx.note("export_failed", level="warning", archive=kind, message=reason)


__all__ = ["extract_project_export"]
