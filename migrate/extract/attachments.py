"""Attachment bytes: several downloads at a time into the content-addressed blob store.

Which files to fetch is derived from the ``attachments`` table (state pending, or failed for a
transient reason), so a resumed run downloads only what is not stored yet, and a re-run with no
source change downloads nothing. Worker threads only do HTTP and file I/O over the one shared
connection pool; every DB write happens on the calling thread (a Store is not shareable
across threads), one attachment per transaction, so at most the downloads in flight at a crash
are fetched again.

Each download streams into a temp file in the blob store's ``tmp/`` (named ``<pid>-…`` so
``BlobStore.sweep_temp`` removes it after a crash), hashing as it goes; the size is checked
against what the source declared, then the file is moved to ``aa/bb/<sha256>``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import IO

from migrate import stopping
from migrate.clients.bim360field import FieldSession
from migrate.errors import IncompleteBody, ServiceUnavailable, TransportError
from migrate.extract.normalise import BINARY_KINDS, Problem
from migrate.extract.state import Context
from migrate.store import BlobStore, utc_now

#: Transport failures in a row (no success between) after which the service counts as down.
MAX_TRANSPORT_FAILURES_IN_A_ROW = 4


@dataclass(frozen=True)
class PendingBlob:
    """An attachment whose bytes are wanted."""

    id: str
    kind: str
    size_expected: int | None
    filename: str | None
    container_type: str
    container_id: str
    #: What to ask binary_data for: the file itself, or (a marked-up rendition's row) the
    #: original's id, image type ``composite`` and the page.
    object_id: str
    image_type: str = "original"
    page: int | None = None


@dataclass(frozen=True)
class Outcome:
    """What a download attempt sequence ended with."""

    state: str  # stored or failed
    sha256: str | None = None
    size: int | None = None
    failure: str | None = None  # transport, incomplete, size_mismatch, not_found
    error: str | None = None
    retries: int = 0
    downloaded: bool = False


class _SizeExceeded(Exception):
    """The body ran past the declared size: stop reading at once."""

    def __init__(self, received: int) -> None:
        super().__init__(f"more than the declared size (stopped at {received} bytes)")
        self.received = received


class HashingWriter:
    """A write-only file wrapper that hashes and counts, and stops past ``limit`` bytes."""

    def __init__(self, raw: IO[bytes], limit: int | None = None) -> None:
        self._raw = raw
        self._digest = hashlib.sha256()
        self.size = 0
        self.limit = limit

    def write(self, chunk: bytes) -> int:
        self.size += len(chunk)
        if self.limit is not None and self.size > self.limit:
            raise _SizeExceeded(self.size)
        self._digest.update(chunk)
        return self._raw.write(chunk)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def download_blob(
    session: FieldSession,
    blobs: BlobStore,
    item: PendingBlob,
    *,
    attempts: int,
    pause: Callable[[int], float],
) -> Outcome:
    """Fetch one attachment into the blob store (runs on a worker thread: no DB access).

    A body cut short is fetched again up to ``attempts`` times. TransportError (the HTTP
    layer's retries used up) becomes a failed outcome so one file the service cannot stream
    does not stop the rest; the caller decides when too many in a row mean the service is down.
    """
    retries = 0
    last_error = ""
    for attempt in range(1, attempts + 1):
        try:
            with blobs.temp() as temp:
                writer = HashingWriter(temp.file, item.size_expected)
                try:
                    session.download(
                        writer,
                        object_type=item.kind,
                        object_id=item.object_id,
                        image_type=item.image_type,
                        page=item.page,
                    )
                except FileNotFoundError:
                    return Outcome(
                        "failed",
                        failure="not_found",
                        retries=retries,
                        error="the source answered 404: it has no file for this attachment",
                    )
                temp.file.flush()
                os.fsync(temp.file.fileno())
                if item.size_expected is not None and writer.size != item.size_expected:
                    return Outcome(
                        "failed",
                        failure="size_mismatch",
                        size=writer.size,
                        retries=retries,
                        error=f"the source declared {item.size_expected} bytes but sent "
                        f"{writer.size}",
                    )
                info = blobs.adopt(temp, writer.hexdigest(), writer.size)
        except IncompleteBody as exc:
            last_error = str(exc)
            if attempt < attempts:
                retries += 1
                stopping.sleep(pause(attempt))
            continue
        except _SizeExceeded as exc:
            return Outcome(
                "failed",
                failure="size_mismatch",
                retries=retries,
                size=exc.received,
                error=f"the source declared {item.size_expected} bytes but sent {exc}",
            )
        except ServiceUnavailable:
            raise  # the service is down, not this file: the whole stage stops (temp discarded)
        except TransportError as exc:
            return Outcome("failed", failure="transport", retries=retries, error=str(exc))
        return Outcome(
            "stored", sha256=info.sha256, size=info.size, retries=retries, downloaded=True
        )
    return Outcome(
        "failed",
        failure="incomplete",
        retries=retries,
        error=f"cut short {attempts} times; last: {last_error}",
    )


# -- DB side (calling thread) -------------------------------------------------------------------


def recheck_stored(ctx: Context) -> int:
    """Stored attachments whose file is missing from the blob store become pending again.

    Returns how many stored files are present (downloads skipped this run).
    """
    present = 0
    missing: list[str] = []
    for attachment_id, sha256 in ctx.store.conn.execute(
        "SELECT id, sha256 FROM attachments WHERE state = 'stored'"
    ):
        if ctx.blobs.has(sha256):
            present += 1
        else:
            missing.append(attachment_id)
    if missing:
        with ctx.store.transaction():
            ctx.store.conn.executemany(
                "UPDATE attachments SET state = 'pending', sha256 = NULL, size = NULL WHERE id = ?",
                [(attachment_id,) for attachment_id in missing],
            )
        ctx.note(
            "blobs_missing",
            level="warning",
            counts={"missing": len(missing)},
            message="stored attachments whose file is gone from the blob store are "
            "downloaded again",
        )
    return present


def pending_blobs(ctx: Context) -> list[PendingBlob]:
    """Attachments to download, oldest id first; none of deleted issues or checklists."""
    kinds = ", ".join(f"'{kind}'" for kind in BINARY_KINDS)
    rows = ctx.store.conn.execute(
        f"""
        SELECT a.id, a.kind, a.size_expected, a.filename, a.container_type, a.container_id,
               COALESCE(a.rendition_of, a.id),
               CASE WHEN a.rendition_of IS NULL THEN 'original' ELSE 'composite' END,
               a.rendition_page
          FROM attachments a
         WHERE a.kind IN ({kinds})
           AND (a.state = 'pending'
                OR (a.state = 'failed' AND (a.failure IN ('transport', 'incomplete') OR ?)))
           AND NOT EXISTS (SELECT 1 FROM issues i WHERE a.container_type = 'Issue'
                           AND i.source_id = a.container_id AND i.deleted = 1)
           AND NOT EXISTS (SELECT 1 FROM checklists c WHERE a.container_type = 'Checklist'
                           AND c.id = a.container_id AND c.deleted = 1)
           AND NOT EXISTS (SELECT 1 FROM checklist_items ci JOIN checklists c
                             ON c.id = ci.checklist_id
                           WHERE a.container_type = 'ChecklistItem'
                             AND ci.id = a.container_id AND c.deleted = 1)
         ORDER BY a.id
        """,
        (int(ctx.full_refresh),),
    )
    return [PendingBlob(*row) for row in rows]


def save_outcome(ctx: Context, item: PendingBlob, outcome: Outcome) -> None:
    """Record one download's result (and a source problem when it failed)."""
    store = ctx.store
    tally = ctx.tally
    tally.download_retries += outcome.retries
    with store.transaction():
        if outcome.state == "stored":
            store.conn.execute(
                "UPDATE attachments SET state = 'stored', sha256 = ?, size = ?, error = NULL, "
                "failure = NULL, downloaded_run = ? WHERE id = ?",
                (outcome.sha256, outcome.size, ctx.run_id, item.id),
            )
            tally.blobs_downloaded += 1
            tally.bytes_downloaded += outcome.size or 0
            return
        store.conn.execute(
            "UPDATE attachments SET state = 'failed', sha256 = NULL, size = NULL, error = ?, "
            "failure = ?, downloaded_run = ? WHERE id = ?",
            (outcome.error, outcome.failure, ctx.run_id, item.id),
        )
        tally.blobs_failed += 1
        if outcome.failure == "transport":
            # The network's fault, not the source data's: the run log has it, and the next
            # run tries again.
            ctx.note("download_failed", level="warning", attachment=item.id, message=outcome.error)
            return
        name = f" ({item.filename!r})" if item.filename else ""
        ctx.problems(
            [
                Problem(
                    "attachments",
                    item.id,
                    f"{item.kind} {item.id}{name} on {item.container_type} {item.container_id}: "
                    f"{outcome.error}; state failed ({outcome.failure})",
                    {
                        "id": item.id,
                        "kind": item.kind,
                        "filename": item.filename,
                        "container_type": item.container_type,
                        "container_id": item.container_id,
                        "size_expected": item.size_expected,
                        "size_received": outcome.size,
                        "failure": outcome.failure,
                        "at": utc_now(),
                    },
                )
            ],
            endpoint="POST /api/binary_data",
        )


def _pause(policy_backoff: Callable[[int, random.Random], float]) -> Callable[[int], float]:
    rng = random.Random()
    return lambda attempt: policy_backoff(attempt, rng)


def _await(futures: Iterable[Future[Outcome]], limit: float | None) -> None:
    """Wait until ``futures`` are done, or ``limit`` seconds; in slices, for Ctrl-C."""
    deadline = None if limit is None else time.monotonic() + limit
    pending = [future for future in futures if not future.done()]
    while pending and (deadline is None or time.monotonic() < deadline):
        wait(pending, timeout=stopping.POLL_SECONDS)
        pending = [future for future in pending if not future.done()]


def extract_attachments(ctx: Context) -> None:
    """Download every pending attachment, ``options.workers`` at a time."""
    ctx.blobs.sweep_temp()
    ctx.tally.blobs_skipped = recheck_stored(ctx)
    pending = pending_blobs(ctx)
    workers = max(1, ctx.options.workers)
    ctx.progress.start("attachments", len(pending))
    ctx.note(
        "downloads_start",
        counts={"pending": len(pending), "stored": ctx.tally.blobs_skipped, "workers": workers},
    )
    pause = _pause(ctx.session.http.policy.backoff)
    queue: Iterator[PendingBlob] = iter(pending)
    in_flight: dict[Future[Outcome], PendingBlob] = {}
    transport_failures = 0
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="migrate-download")

    def submit_next() -> None:
        item = next(queue, None)
        if item is not None:
            future = pool.submit(
                download_blob,
                ctx.session,
                ctx.blobs,
                item,
                attempts=max(1, ctx.options.download_attempts),
                pause=pause,
            )
            in_flight[future] = item

    try:
        for _ in range(workers * 2):
            submit_next()
        while in_flight:
            # A timeout, so Ctrl-C reaches this thread on every OS.
            done, _ = wait(in_flight, timeout=stopping.POLL_SECONDS, return_when=FIRST_COMPLETED)
            for future in done:
                item = in_flight.pop(future)
                outcome = future.result()
                save_outcome(ctx, item, outcome)
                ctx.progress.advance("attachments")
                if outcome.failure == "transport":
                    transport_failures += 1
                    if transport_failures >= MAX_TRANSPORT_FAILURES_IN_A_ROW:
                        raise TransportError(
                            f"{transport_failures} attachment downloads in a row failed "
                            f"(last: {outcome.error})"
                        )
                elif outcome.state == "stored":
                    transport_failures = 0
                submit_next()
    except BaseException:
        # Start nothing more; keep what the downloads still running manage to store. After a
        # stop request they end at their next chunk, and are waited for GRACE_SECONDS at most.
        for future in in_flight:
            future.cancel()
        _await(in_flight, stopping.GRACE_SECONDS if stopping.requested() else None)
        for future, item in in_flight.items():
            if future.done() and not future.cancelled() and future.exception() is None:
                with contextlib.suppress(Exception):
                    save_outcome(ctx, item, future.result())
        raise
    finally:
        # Never join here: a download still on the wire after the grace is abandoned (its
        # temp file is swept by the next run).
        pool.shutdown(wait=False, cancel_futures=True)
        stopping.abandon(in_flight)
        ctx.progress.finish("attachments")
    ctx.note(
        "downloads_done",
        counts={
            "downloaded": ctx.tally.blobs_downloaded,
            "failed": ctx.tally.blobs_failed,
            "bytes": ctx.tally.bytes_downloaded,
        },
    )


__all__ = [
    "Outcome",
    "PendingBlob",
    "download_blob",
    "extract_attachments",
    "pending_blobs",
    "save_outcome",
]
