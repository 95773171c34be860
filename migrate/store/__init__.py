"""The staging DB (schema, migrations, runs, cursors, raw and normalised records) and blob store.

Every stage reads and writes here, records its progress here, and resumes from here after a
crash. See migrations.py for the schema.
"""

from __future__ import annotations

from migrate.store.blobs import BlobInfo, BlobSizeMismatch, BlobStore
from migrate.store.cursors import Cursor, clear_cursor, clear_cursors, get_cursor, set_cursor
from migrate.store.db import Store, StoreError, open_store, strip_secret_params, utc_now
from migrate.store.migrations import MIGRATIONS, Migration, SchemaTooNewError, apply_migrations
from migrate.store.records import (
    Change,
    UpsertResult,
    canonical_json,
    content_hash,
    load_raw,
    mark_missing,
    record_problem,
    replace_rows,
    save_raw,
    save_raw_batch,
    upsert,
    upsert_rows,
)
from migrate.store.runs import (
    RecordedRun,
    Run,
    RunFigures,
    finish_run,
    get_run,
    last_run,
    list_runs,
    mark_interrupted_runs,
    recorded_run,
    run_status,
    start_run,
    writer_lock,
)

__all__ = [
    "MIGRATIONS",
    "BlobInfo",
    "BlobSizeMismatch",
    "BlobStore",
    "Change",
    "Cursor",
    "Migration",
    "RecordedRun",
    "Run",
    "RunFigures",
    "SchemaTooNewError",
    "Store",
    "StoreError",
    "UpsertResult",
    "apply_migrations",
    "canonical_json",
    "clear_cursor",
    "clear_cursors",
    "content_hash",
    "finish_run",
    "get_cursor",
    "get_run",
    "last_run",
    "list_runs",
    "load_raw",
    "mark_interrupted_runs",
    "mark_missing",
    "open_store",
    "recorded_run",
    "record_problem",
    "replace_rows",
    "run_status",
    "save_raw",
    "save_raw_batch",
    "set_cursor",
    "start_run",
    "strip_secret_params",
    "upsert",
    "upsert_rows",
    "utc_now",
    "writer_lock",
]
