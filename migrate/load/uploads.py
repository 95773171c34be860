"""Attachments: Procore direct uploads from the blob store, several at a time.

Per (attachment, Procore project) the ``uploads`` table goes ``pending → created (uuid,
created_at) → stored → referenced``. A stored upload is reused by the next attempt to create
its issue (a re-sent batch, a rejected item retried); a ``created`` upload whose storage
instructions are not in this process's memory, or that is close to the hour Procore gives to
start the storage POST, is replaced by a new upload, and so is one that storage refuses with
403. Workers only do HTTP and file I/O; every state change is committed by the calling thread
as the worker reports it (the SQLite connection belongs to that thread).

Bytes are proven, never assumed: the blob is opened without following a link, its size must be
the staged one before an upload is even created, and ``put_upload_bytes`` hashes it while it
streams, releasing the last bytes only if the sha256 is the staged one. ``uploads.sent_sha256``
records what storage received; a stored upload is reused only when that equals the staged
sha256. A blob that fails any of this is not sent: it is moved out of its digest name into the
blob store's ``damaged/`` and the attachment's issue is held back (quarantined with the reason).
Extract then finds the file missing and downloads it again (``recheck_stored``), so
``migrate extract`` then ``migrate load`` (or one ``migrate run``) heals it. Load does not
download from BIM 360 Field itself: it holds no Field session or credentials, and attachment
downloads and their bookkeeping belong to extract.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, BinaryIO

from migrate import stopping
from migrate.errors import ApiError, MigrateError, UploadBytesMismatch
from migrate.store.blobs import BlobStore, UnsafeBlob
from migrate.store.db import Store, select_in, utc_now
from migrate.store.uploads import (
    UploadRow,
    mark_attachments_referenced,
    mark_failed,
    mark_referenced,
    save_upload,
    upload_rows,
)
from migrate.text import procore_name

if TYPE_CHECKING:  # the plan imports this package: it must not import requests
    from migrate.clients.procore import ProcoreClient

#: Procore gives an hour to start the storage POST; keep a margin for a slow queue.
CREATED_MAX_AGE = 50 * 60.0
#: Unreferenced uploads are deleted after a week; do not reference one older than this.
STORED_MAX_AGE = 6 * 24 * 3600.0


@dataclass(frozen=True)
class AttachmentFile:
    """What an upload needs from an ``attachments`` row."""

    attachment_id: str
    sha256: str | None
    size: int | None
    filename: str
    content_type: str
    state: str


@dataclass
class UploadOutcome:
    """Upload uuids ready to reference, and attachments that could not be made ready."""

    ready: dict[str, str] = field(default_factory=dict)  # attachment id -> upload uuid
    failed: dict[str, str] = field(default_factory=dict)  # attachment id -> reason
    done: int = 0  # uploads made now (create + storage)
    reused: int = 0  # stored uploads from earlier attempts


@dataclass
class _Instructions:
    upload: Any  # clients.procore.Upload: uuid, url, signed form fields
    created_monotonic: float

    @property
    def uuid(self) -> str:
        return str(self.upload.uuid)


def _cancel_pending(futures: Iterable[Future[None]]) -> int:
    """Cancel the jobs not started yet; how many were cancelled now."""
    return sum(1 for future in futures if not future.cancelled() and future.cancel())


def _age_seconds(stamp: str | None) -> float:
    if not stamp:
        return float("inf")
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return float("inf")
    return (datetime.now(UTC) - moment).total_seconds()


class Uploader:
    """Makes attachments ready to reference at issue create, for one Procore project."""

    def __init__(
        self,
        store: Store,
        client: ProcoreClient,
        blobs: BlobStore,
        project_id: int,
        *,
        workers: int = 4,
        on_upload: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.blobs = blobs
        self.project_id = project_id
        self.workers = max(1, workers)
        self.on_upload = on_upload
        # Storage instructions (url + signed form fields) are a short-lived credential for
        # the bucket: kept in memory only, never in the DB. A 'created' row from another
        # process therefore cannot be finished and gets a new upload.
        self._instructions: dict[str, _Instructions] = {}

    # -- reading -------------------------------------------------------------------------------
    def _files(self, attachment_ids: list[str]) -> dict[str, AttachmentFile]:
        found: dict[str, AttachmentFile] = {}
        for row in select_in(
            self.store.conn,
            "SELECT id, sha256, size, filename, content_type, state FROM attachments "
            "WHERE id IN ({marks})",
            attachment_ids,
        ):
            found[row[0]] = AttachmentFile(
                attachment_id=row[0],
                sha256=row[1],
                size=row[2],
                filename=row[3] or f"attachment-{row[0]}",
                content_type=row[4] or "application/octet-stream",
                state=row[5],
            )
        return found

    def _rows(self, attachment_ids: list[str]) -> dict[str, UploadRow]:
        return upload_rows(self.store, self.project_id, attachment_ids)

    # -- writing -------------------------------------------------------------------------------
    def _save(self, attachment_id: str, sha256: str, **values: Any) -> None:
        save_upload(self.store, self.project_id, attachment_id, sha256, **values)

    def mark_referenced(self, upload_uuids: Iterable[str]) -> None:
        """Uploads an issue create has consumed (call inside the batch's transaction)."""
        mark_referenced(self.store, self.project_id, upload_uuids)

    def upload_uuids(self, attachment_ids: Iterable[str]) -> list[str]:
        """The uploads recorded for these attachments: what a create sent by a run that died
        before its answer referenced, if Procore holds that issue."""
        return [row[2] for row in self._rows(list(attachment_ids)).values() if row[2]]

    def mark_attachments_referenced(self, attachment_ids: Iterable[str]) -> None:
        """Uploads of files Procore shows it holds, whichever write carried them (found
        rather than answered: a dead run's create, a lost answer); inside a transaction."""
        mark_attachments_referenced(self.store, self.project_id, attachment_ids)

    def forget(self, attachment_ids: Iterable[str], reason: str) -> None:
        """Procore refused these uploads at create (expired, missing): make new ones next."""
        mark_failed(self.store, self.project_id, attachment_ids, reason)

    # -- the work --------------------------------------------------------------------------
    def prepare(
        self, attachment_ids: Iterable[str], names: Mapping[str, str] | None = None
    ) -> UploadOutcome:
        """Make every attachment ready to reference: reuse stored uploads, upload the rest.

        ``names``: attachment id -> the file name Procore must show, where it is not the
        downloaded file's own (an inspection's signatures are named after their field).
        """
        wanted = sorted(set(attachment_ids))
        outcome = UploadOutcome()
        if not wanted:
            return outcome
        files = self._files(wanted)
        for attachment_id, name in (names or {}).items():
            if attachment_id in files and name:
                files[attachment_id] = dataclasses.replace(files[attachment_id], filename=name)
        rows = self._rows(wanted)
        jobs: list[tuple[AttachmentFile, _Instructions | None]] = []
        for attachment_id in wanted:
            file = files.get(attachment_id)
            if file is None:
                outcome.failed[attachment_id] = (
                    f"attachment {attachment_id} is not in the staging DB"
                )
                continue
            # Whether the blob is there, and is the file, is for the worker to find out: it
            # opens it without following links and proves its bytes.
            if file.state != "stored" or not file.sha256:
                outcome.failed[attachment_id] = (
                    f"attachment {attachment_id} ({file.filename}) is not in the blob store "
                    f"(download state {file.state})"
                )
                continue
            row = rows.get(attachment_id)
            if row is not None:
                sha256, sent_sha256, upload_uuid, state, created_at = row
                same_bytes = sha256 == file.sha256 and upload_uuid
                # Reused only if storage is known to hold these very bytes (an upload stored by
                # a migrate that did not hash what it sent is made again).
                proven = sent_sha256 == file.sha256
                if (
                    upload_uuid is not None
                    and same_bytes
                    and proven
                    and state == "stored"
                    and _age_seconds(created_at) < STORED_MAX_AGE
                ):
                    outcome.ready[attachment_id] = upload_uuid
                    outcome.reused += 1
                    continue
                known = self._instructions.get(upload_uuid or "")
                if (
                    same_bytes
                    and state == "created"
                    and known is not None
                    and time.monotonic() - known.created_monotonic < CREATED_MAX_AGE
                ):
                    jobs.append((file, known))
                    continue
            jobs.append((file, None))
        if jobs:
            self._run(jobs, outcome)
        return outcome

    def _run(
        self, jobs: list[tuple[AttachmentFile, _Instructions | None]], outcome: UploadOutcome
    ) -> None:
        """Upload ``jobs`` on the pool; record every event on this thread as it comes.

        The first transport or auth failure stops the rest: files not started are not started
        (the service is failing, or given up on, for all of them), those on the wire are
        waited for and recorded, then the failure is raised. Ctrl-C (KeyboardInterrupt here,
        :data:`migrate.stopping.STOP` in the workers) does the same, but waits at most
        ``stopping.GRACE_SECONDS`` for the files on the wire.
        """
        events: queue.Queue[tuple[str, AttachmentFile, Any]] = queue.Queue()
        pool = ThreadPoolExecutor(
            max_workers=min(self.workers, len(jobs)), thread_name_prefix="upload"
        )
        futures = [pool.submit(self._work, file, known, events) for file, known in jobs]
        expected = len(futures)  # each job that starts ends with exactly one final event
        finished = 0
        failure: BaseException | None = None
        try:
            while finished < expected:
                try:
                    # A timeout, so Ctrl-C reaches this thread on every OS.
                    kind, file, detail = events.get(timeout=stopping.POLL_SECONDS)
                except queue.Empty:
                    continue
                finished += self._record(kind, file, detail, outcome)
                if kind == "error" and failure is None:
                    failure = detail
                    expected -= _cancel_pending(futures)
        except BaseException:
            # Interrupted: start nothing more, keep what the files on the wire finish.
            expected -= _cancel_pending(futures)
            deadline = time.monotonic() + stopping.GRACE_SECONDS
            while finished < expected and time.monotonic() < deadline:
                try:
                    kind, file, detail = events.get(timeout=stopping.POLL_SECONDS)
                except queue.Empty:
                    continue
                finished += self._record(kind, file, detail, outcome)
            raise
        finally:
            # Never join here: a worker still on the wire after the grace is abandoned.
            pool.shutdown(wait=False, cancel_futures=True)
            stopping.abandon(futures)
        if failure is not None:
            raise failure

    def _record(self, kind: str, file: AttachmentFile, detail: Any, outcome: UploadOutcome) -> int:
        """Commit one worker event; 1 if it was the job's final event, else 0."""
        assert file.sha256 is not None
        if kind == "created":
            self._instructions[detail.uuid] = detail
            self._save(
                file.attachment_id,
                file.sha256,
                upload_uuid=detail.uuid,
                state="created",
                created_at=utc_now(),
                error=None,
                sent_sha256=None,
            )
            return 0
        if kind == "stored":
            upload_uuid, sent_sha256 = detail
            self._instructions.pop(upload_uuid, None)
            self._save(
                file.attachment_id,
                file.sha256,
                upload_uuid=upload_uuid,
                state="stored",
                error=None,
                sent_sha256=sent_sha256,
            )
            outcome.ready[file.attachment_id] = upload_uuid
            outcome.done += 1
            if self.on_upload:
                self.on_upload(1)
        elif kind == "refused":
            self._save(file.attachment_id, file.sha256, state="failed", error=detail)
            outcome.failed[file.attachment_id] = detail
        # "error": a transport or auth failure (or a stop); the caller decides what follows.
        return 1

    def _work(
        self,
        file: AttachmentFile,
        known: _Instructions | None,
        events: queue.Queue[tuple[str, AttachmentFile, Any]],
    ) -> None:
        """One attachment: prove the blob, create the upload (unless resuming one), post it."""
        try:
            assert file.sha256 is not None
            try:
                blob = self.blobs.open(file.sha256)
            except (FileNotFoundError, UnsafeBlob) as exc:
                why = (
                    "is missing"
                    if isinstance(exc, FileNotFoundError)
                    else f"{exc.what} ({exc.path})"
                )
                events.put(("refused", file, self._damaged(file, why, None)))
                return
            with blob:
                size = os.fstat(blob.fileno()).st_size
                if file.size is not None and size != file.size:
                    why = f"has {size} bytes, not the {file.size} downloaded"
                    events.put(("refused", file, self._damaged(file, why, blob)))
                    return
                for attempt in (1, 2):
                    if known is None:
                        known = self._create(file)
                        events.put(("created", file, known))
                    try:
                        sent = self.client.put_upload_bytes(
                            known.upload, blob, sha256=file.sha256, size=file.size
                        )
                    except UploadBytesMismatch as exc:
                        events.put(("refused", file, self._damaged(file, str(exc), blob)))
                        return
                    except ApiError as exc:
                        # Storage answers 403 once the hour to start is over or the form no
                        # longer matches: a new upload gets fresh instructions. Once only.
                        if exc.status == 403 and attempt == 1:
                            known = None
                            continue
                        events.put(("refused", file, f"storage refused the file: {exc}"))
                        return
                    events.put(("stored", file, (known.uuid, sent.sha256)))
                    return
        except ApiError as exc:
            if exc.status is not None and 400 <= exc.status < 500 and exc.status not in (401,):
                events.put(("refused", file, f"Procore refused the upload: {exc}"))
            else:
                events.put(("error", file, exc))
        except MigrateError as exc:
            events.put(("error", file, exc))
        except BaseException as exc:  # a bug must surface in the main thread, not vanish
            events.put(("error", file, exc))

    def _damaged(self, file: AttachmentFile, why: str, seen: BinaryIO | None) -> str:
        """Move a blob that is not the downloaded file out of the way; the hold-back reason."""
        assert file.sha256 is not None
        moved = self.blobs.set_aside(file.sha256, seen)
        where = f"; moved to {moved}" if moved is not None else ""
        return (
            f"attachment {file.attachment_id} ({file.filename}): the blob store copy {why}, so "
            f"it was not sent to Procore{where}. `migrate extract` downloads it again"
        )

    def _create(self, file: AttachmentFile) -> _Instructions:
        name = procore_name(file.filename) or f"attachment-{file.attachment_id}"
        upload = self.client.create_upload(self.project_id, name, file.content_type)
        return _Instructions(upload=upload, created_monotonic=time.monotonic())
