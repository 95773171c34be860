"""Attachments: Procore direct uploads from the blob store, several at a time.

Per (attachment, Procore project) the ``uploads`` table goes ``pending → created (uuid,
created_at) → stored → referenced``. A stored upload is reused by the next attempt to create
its issue (a re-sent batch, a rejected item retried); a ``created`` upload whose storage
instructions are not in this process's memory, or that is close to the hour Procore gives to
start the storage POST, is replaced by a new upload, and so is one that storage refuses with
403. Workers only do HTTP; every state change is committed by the calling thread as the
worker reports it (the SQLite connection belongs to that thread).
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from migrate.clients.procore import ProcoreClient
from migrate.errors import ApiError, MigrateError
from migrate.store.blobs import BlobStore
from migrate.store.db import Store, utc_now

#: Procore gives an hour to start the storage POST; keep a margin for a slow queue.
CREATED_MAX_AGE = 50 * 60.0
#: Unreferenced uploads are deleted after a week; do not reference one older than this.
STORED_MAX_AGE = 6 * 24 * 3600.0


@dataclass(frozen=True)
class AttachmentFile:
    """What an upload needs from an ``attachments`` row."""

    attachment_id: str
    sha256: str | None
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
        for start in range(0, len(attachment_ids), 500):
            chunk = attachment_ids[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            for row in self.store.conn.execute(
                f"SELECT id, sha256, filename, content_type, state FROM attachments "
                f"WHERE id IN ({marks})",
                chunk,
            ):
                found[row[0]] = AttachmentFile(
                    attachment_id=row[0],
                    sha256=row[1],
                    filename=row[2] or f"attachment-{row[0]}",
                    content_type=row[3] or "application/octet-stream",
                    state=row[4],
                )
        return found

    def _rows(self, attachment_ids: list[str]) -> dict[str, tuple[str, str | None, str, str]]:
        found: dict[str, tuple[str, str | None, str, str]] = {}
        for start in range(0, len(attachment_ids), 500):
            chunk = attachment_ids[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            for attachment_id, sha256, upload_uuid, state, created_at in self.store.conn.execute(
                f"SELECT attachment_id, sha256, upload_uuid, state, created_at FROM uploads "
                f"WHERE target_project_id = ? AND attachment_id IN ({marks})",
                (self.project_id, *chunk),
            ):
                found[attachment_id] = (sha256, upload_uuid, state, created_at)
        return found

    # -- writing -------------------------------------------------------------------------------
    def _save(self, attachment_id: str, sha256: str, **values: Any) -> None:
        values["updated_at"] = utc_now()
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        updates = ", ".join(f"{c} = excluded.{c}" for c in values)
        with self.store.transaction():
            self.store.conn.execute(
                f"INSERT INTO uploads (attachment_id, target_project_id, sha256, {columns}) "
                f"VALUES (?, ?, ?, {marks}) ON CONFLICT (attachment_id, target_project_id) "
                f"DO UPDATE SET sha256 = excluded.sha256, {updates}",
                (attachment_id, self.project_id, sha256, *values.values()),
            )

    def mark_referenced(self, upload_uuids: Iterable[str]) -> None:
        """Uploads an issue create has consumed (call inside the batch's transaction)."""
        now = utc_now()
        for upload_uuid in upload_uuids:
            self.store.conn.execute(
                "UPDATE uploads SET state = 'referenced', updated_at = ? "
                "WHERE target_project_id = ? AND upload_uuid = ?",
                (now, self.project_id, upload_uuid),
            )

    def forget(self, attachment_ids: Iterable[str], reason: str) -> None:
        """Procore refused these uploads at create (expired, missing): make new ones next."""
        for attachment_id in attachment_ids:
            self.store.conn.execute(
                "UPDATE uploads SET state = 'failed', error = ?, updated_at = ? "
                "WHERE target_project_id = ? AND attachment_id = ?",
                (reason, utc_now(), self.project_id, attachment_id),
            )

    # -- the work --------------------------------------------------------------------------
    def prepare(self, attachment_ids: Iterable[str]) -> UploadOutcome:
        """Make every attachment ready to reference: reuse stored uploads, upload the rest."""
        wanted = sorted(set(attachment_ids))
        outcome = UploadOutcome()
        if not wanted:
            return outcome
        files = self._files(wanted)
        rows = self._rows(wanted)
        jobs: list[tuple[AttachmentFile, _Instructions | None]] = []
        for attachment_id in wanted:
            file = files.get(attachment_id)
            if file is None:
                outcome.failed[attachment_id] = (
                    f"attachment {attachment_id} is not in the staging DB"
                )
                continue
            if file.state != "stored" or not file.sha256 or not self.blobs.has(file.sha256):
                outcome.failed[attachment_id] = (
                    f"attachment {attachment_id} ({file.filename}) is not in the blob store "
                    f"(download state {file.state})"
                )
                continue
            row = rows.get(attachment_id)
            if row is not None:
                sha256, upload_uuid, state, created_at = row
                same_bytes = sha256 == file.sha256 and upload_uuid
                if same_bytes and state == "stored" and _age_seconds(created_at) < STORED_MAX_AGE:
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
        events: queue.Queue[tuple[str, AttachmentFile, Any]] = queue.Queue()
        with ThreadPoolExecutor(
            max_workers=min(self.workers, len(jobs)), thread_name_prefix="upload"
        ) as pool:
            for file, known in jobs:
                pool.submit(self._work, file, known, events)
            finished = 0
            failure: BaseException | None = None
            while finished < len(jobs):
                kind, file, detail = events.get()
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
                    )
                    continue
                finished += 1
                if kind == "stored":
                    self._instructions.pop(detail, None)
                    self._save(
                        file.attachment_id,
                        file.sha256,
                        upload_uuid=detail,
                        state="stored",
                        error=None,
                    )
                    outcome.ready[file.attachment_id] = detail
                    outcome.done += 1
                    if self.on_upload:
                        self.on_upload(1)
                elif kind == "refused":
                    self._save(file.attachment_id, file.sha256, state="failed", error=detail)
                    outcome.failed[file.attachment_id] = detail
                else:  # "error": transport or auth failure; stop after the others finish
                    failure = failure or detail
        if failure is not None:
            raise failure

    def _work(
        self,
        file: AttachmentFile,
        known: _Instructions | None,
        events: queue.Queue[tuple[str, AttachmentFile, Any]],
    ) -> None:
        """One attachment: create the upload (unless resuming one) and POST the bytes."""
        try:
            assert file.sha256 is not None
            path = self.blobs.path_for(file.sha256)
            for attempt in (1, 2):
                if known is None:
                    known = self._create(file)
                    events.put(("created", file, known))
                try:
                    self.client.put_upload_bytes(known.upload, path)
                except ApiError as exc:
                    # Storage answers 403 once the hour to start is over or the form no longer
                    # matches: a new upload gets fresh instructions. Once only.
                    if exc.status == 403 and attempt == 1:
                        known = None
                        continue
                    events.put(("refused", file, f"storage refused the file: {exc}"))
                    return
                events.put(("stored", file, known.uuid))
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

    def _create(self, file: AttachmentFile) -> _Instructions:
        upload = self.client.create_upload(self.project_id, file.filename, file.content_type)
        return _Instructions(upload=upload, created_monotonic=time.monotonic())
