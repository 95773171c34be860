"""Numbered schema migrations for the staging DB.

To change the schema, APPEND a Migration(N + 1, "short_name", SQL) to MIGRATIONS. Never edit or
reorder one that has shipped: a DB that already applied it will not apply it again, so an edit
would make two DBs with the same version differ. Each migration runs in its own transaction
together with its row in schema_migrations, so it applies completely or not at all.

Comments inside CREATE TABLE are kept by SQLite and shown by `.schema` and Datasette, so the
column notes below are written for the person inspecting the DB. Avoid ";" inside comments.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from migrate.errors import EXIT_USAGE
from migrate.store.base import StoreError, utc_now

if TYPE_CHECKING:
    from migrate.store.db import Store


class SchemaTooNewError(StoreError):
    """The staging DB was written by a newer `migrate` than this one."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Migration:
    """One schema step: its number (1, 2, …), a short name and the SQL script."""

    number: int
    name: str
    sql: str


# One raw table per source endpoint family. Frozen here (not shared with code that may grow)
# because migration 1 must create the same tables forever.
_RAW_TABLES_V1 = (
    ("raw_projects", "POST /api/projects or /fieldapi/admin/v1/project_names"),
    ("raw_areas", "POST /fieldapi/admin/v1/locations"),
    ("raw_companies", "POST /fieldapi/admin/v1/companies"),
    ("raw_users", "POST /fieldapi/admin/v1/users"),
    ("raw_issue_types", "POST /fieldapi/issues/v1/types"),
    ("raw_root_causes", "POST /fieldapi/issues/v1/root_causes"),
    ("raw_custom_fields", "POST /api/custom_fields"),
    ("raw_issue_fields", "POST /fieldapi/issues/v1/fields (source_id: issue type id)"),
    ("raw_issues", "listing record (get_issues / issues v1 search), used for change detection"),
    ("raw_issue_details", "POST /fieldapi/issues/v1/retrieve"),
    ("raw_issue_changes", "issue_changes (source_id: issue id, payload: that issue's array)"),
    ("raw_checklists", "GET /fieldapi/checklists/v1 (header)"),
    ("raw_checklist_details", "GET /fieldapi/checklists/v1/:id"),
)


def _raw_table_sql(name: str, source: str) -> str:
    return f"""
CREATE TABLE {name} (  -- {source}
    source_id TEXT PRIMARY KEY,          -- id in BIM 360 Field
    payload TEXT NOT NULL CHECK (json_valid(payload)),  -- JSON as received, ticket= removed
    content_hash TEXT NOT NULL,          -- sha256 of the canonical JSON (sorted keys)
    first_seen_run INTEGER NOT NULL REFERENCES runs(id),
    last_seen_run INTEGER NOT NULL REFERENCES runs(id),
    changed_run INTEGER NOT NULL REFERENCES runs(id),   -- run that stored this content
    deleted_at_run INTEGER REFERENCES runs(id),         -- NULL unless gone from the source
    fetched_at TEXT NOT NULL
);
CREATE INDEX {name}_last_seen_run ON {name}(last_seen_run);
CREATE INDEX {name}_changed_run ON {name}(changed_run);
"""


# Foreign keys between normalised tables are DEFERRABLE INITIALLY DEFERRED (checked at COMMIT,
# so rows of one page may arrive in any order) and nullable where the source may point at a
# row it never returned: records.upsert_rows() turns such a reference into NULL plus a
# source_problems row instead of failing the page.
_M1_SQL = f"""
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    command TEXT NOT NULL,               -- extract, transform, load ...
    args TEXT NOT NULL DEFAULT '{{}}' CHECK (json_valid(args)),  -- secrets replaced
    pid INTEGER,
    process_token TEXT,                  -- random per process, tells apart a reused pid
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'succeeded', 'failed', 'interrupted')),
    counts TEXT CHECK (counts IS NULL OR json_valid(counts)),      -- per entity
    requests TEXT CHECK (requests IS NULL OR json_valid(requests)),  -- per endpoint
    error TEXT
);
CREATE INDEX runs_command ON runs(command, id);
CREATE INDEX runs_status ON runs(status);

CREATE TABLE cursors (
    endpoint TEXT PRIMARY KEY,           -- what is being paged, e.g. get_issues
    run_id INTEGER NOT NULL REFERENCES runs(id),
    position INTEGER NOT NULL DEFAULT 0,  -- next offset to fetch
    state TEXT NOT NULL DEFAULT '{{}}' CHECK (json_valid(state)),
    updated_at TEXT NOT NULL
);

{"".join(_raw_table_sql(name, source) for name, source in _RAW_TABLES_V1)}

CREATE TABLE source_problems (           -- what the source got wrong, kept as data
    id INTEGER PRIMARY KEY,
    run_id INTEGER REFERENCES runs(id),
    entity TEXT NOT NULL,                -- table or source entity
    source_id TEXT,
    endpoint TEXT,
    reason TEXT NOT NULL,
    raw_payload TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX source_problems_entity ON source_problems(entity, source_id);
CREATE INDEX source_problems_run ON source_problems(run_id);

CREATE TABLE projects (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    a360_project_id TEXT,
    updated_at TEXT
);

CREATE TABLE areas (                     -- BIM 360 Field locations
    id TEXT PRIMARY KEY,
    parent_id TEXT REFERENCES areas(id) DEFERRABLE INITIALLY DEFERRED,
    name TEXT NOT NULL,
    full_path TEXT,                      -- as the source joins it with ">"
    identifier TEXT,
    deleted INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1)),
    depth INTEGER                        -- 0 for a top-level area
);
CREATE INDEX areas_parent_id ON areas(parent_id);

CREATE TABLE companies (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    company_type TEXT,
    company_category TEXT,
    account_company INTEGER CHECK (account_company IN (0, 1)),
    telephone TEXT,
    address TEXT CHECK (address IS NULL OR json_valid(address))
);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL,
    first_name TEXT,
    last_name TEXT,
    company_id TEXT REFERENCES companies(id) DEFERRABLE INITIALLY DEFERRED,
    roles TEXT CHECK (roles IS NULL OR json_valid(roles))  -- JSON array of role names
);
CREATE INDEX users_email ON users(email COLLATE NOCASE);
CREATE INDEX users_company_id ON users(company_id);

CREATE TABLE issue_types (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    category_name TEXT
);

CREATE TABLE root_causes (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    category_name TEXT
);

CREATE TABLE custom_fields (             -- /api/custom_fields definitions
    id TEXT PRIMARY KEY,                 -- bare id, without the "cf--" the issue API adds
    name TEXT NOT NULL,
    container_type TEXT,                 -- Issue, Checklist, ChecklistItemResponse, Area ...
    container_id TEXT,                   -- checklist template when container_type = Checklist
    display_type TEXT,
    default_value TEXT,
    possible_values TEXT CHECK (possible_values IS NULL OR json_valid(possible_values)),
    required INTEGER CHECK (required IN (0, 1)),
    position INTEGER,
    updated_at TEXT
);

CREATE TABLE issue_fields (              -- /fieldapi/issues/v1/fields, per issue type
    field_id TEXT NOT NULL,              -- "f--priority" or "cf--<custom field id>"
    issue_type_id TEXT NOT NULL DEFAULT '',  -- '' = common to every type
    section TEXT NOT NULL CHECK (section IN ('common', 'type', 'ancillary')),
    name TEXT,
    display_type TEXT,
    required INTEGER CHECK (required IN (0, 1)),
    position INTEGER,
    possible_values TEXT CHECK (possible_values IS NULL OR json_valid(possible_values)),
    PRIMARY KEY (field_id, issue_type_id)
);

CREATE TABLE issues (
    source_id TEXT PRIMARY KEY,
    identifier TEXT,
    description TEXT,
    status TEXT,
    priority TEXT,
    issue_type_id TEXT REFERENCES issue_types(id) DEFERRABLE INITIALLY DEFERRED,
    issue_type_name TEXT,
    category_name TEXT,
    area_id TEXT REFERENCES areas(id) DEFERRABLE INITIALLY DEFERRED,
    area_path TEXT,
    location_detail TEXT,
    responsible_company_id TEXT REFERENCES companies(id) DEFERRABLE INITIALLY DEFERRED,
    root_cause_id TEXT REFERENCES root_causes(id) DEFERRABLE INITIALLY DEFERRED,
    assigned_to_email TEXT,
    due_date TEXT,
    created_by TEXT,
    created_at TEXT,
    updated_at TEXT,
    closed_at TEXT,
    voided INTEGER NOT NULL DEFAULT 0 CHECK (voided IN (0, 1)),
    deleted INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1)),
    custom_fields TEXT CHECK (custom_fields IS NULL OR json_valid(custom_fields)),  -- name: value
    content_hash TEXT                    -- of the raw_issue_details payload this row came from
);
CREATE INDEX issues_identifier ON issues(identifier);
CREATE INDEX issues_status ON issues(status);
CREATE INDEX issues_issue_type_id ON issues(issue_type_id);
CREATE INDEX issues_area_id ON issues(area_id);
CREATE INDEX issues_responsible_company_id ON issues(responsible_company_id);
CREATE INDEX issues_root_cause_id ON issues(root_cause_id);
CREATE INDEX issues_assigned_to_email ON issues(assigned_to_email COLLATE NOCASE);

CREATE TABLE comments (
    id TEXT PRIMARY KEY,
    container_type TEXT NOT NULL CHECK (container_type IN ('Issue', 'Checklist')),
    container_id TEXT NOT NULL,          -- issues.source_id or checklists.id
    created_by TEXT,
    created_at TEXT,
    text TEXT
);
CREATE INDEX comments_container ON comments(container_id, container_type);

-- Signatures are attachments with kind = 'Signature': they are downloaded, hashed and
-- uploaded exactly like photos, and custom_field_id says which signature field they fill.
-- The download step owns state, sha256, size, error and downloaded_run: leave them out of
-- extract upserts so a re-extract does not reset a stored file to pending.
CREATE TABLE attachments (
    id TEXT PRIMARY KEY,
    container_type TEXT NOT NULL CHECK (container_type IN ('Issue', 'Checklist', 'ChecklistItem')),
    container_id TEXT NOT NULL,
    kind TEXT NOT NULL
        CHECK (kind IN ('Attachment', 'Signature', 'DocumentReference', 'UriReference')),
    filename TEXT,                       -- data only, never used as a path
    content_type TEXT,
    caption TEXT,
    custom_field_id TEXT,                -- signature field, for kind = Signature
    created_by TEXT,
    created_at TEXT,
    size_expected INTEGER,               -- size the source declared, if any
    source_url TEXT,                     -- binary_data URL without ticket, or a UriReference's URI
    state TEXT NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'stored', 'failed', 'skipped')),
    sha256 TEXT CHECK (sha256 IS NULL
        OR (length(sha256) = 64 AND NOT sha256 GLOB '*[^0-9a-f]*')),  -- blob store key
    size INTEGER,
    error TEXT,
    downloaded_run INTEGER REFERENCES runs(id),
    CHECK (state <> 'stored' OR (sha256 IS NOT NULL AND size IS NOT NULL))
);
CREATE INDEX attachments_container ON attachments(container_id, container_type);
CREATE INDEX attachments_sha256 ON attachments(sha256);
CREATE INDEX attachments_state ON attachments(state);

CREATE TABLE issue_status_history (      -- issue_changes
    id INTEGER PRIMARY KEY,
    issue_id TEXT NOT NULL REFERENCES issues(source_id) DEFERRABLE INITIALLY DEFERRED,
    status TEXT,
    previous_status TEXT,
    user TEXT,                           -- email, when the source knows it
    start_dt TEXT,
    end_dt TEXT                          -- NULL while the issue is still in this status
);
CREATE INDEX issue_status_history_issue_id ON issue_status_history(issue_id, start_dt);

CREATE TABLE checklists (
    id TEXT PRIMARY KEY,
    identifier TEXT,
    name TEXT,
    description TEXT,
    checklist_type TEXT,
    status TEXT,
    priority TEXT,
    phase TEXT,
    created_by TEXT,
    created_at TEXT,
    updated_at TEXT,
    company_id TEXT REFERENCES companies(id) DEFERRABLE INITIALLY DEFERRED,
    template_id TEXT,
    template_name TEXT,
    deleted INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1))
);
CREATE INDEX checklists_company_id ON checklists(company_id);

CREATE TABLE checklist_sections (
    id TEXT PRIMARY KEY,                 -- the source has none: "<checklist id>:<position>"
    checklist_id TEXT NOT NULL REFERENCES checklists(id) DEFERRABLE INITIALLY DEFERRED,
    position INTEGER NOT NULL,
    section_name TEXT
);
CREATE INDEX checklist_sections_checklist_id ON checklist_sections(checklist_id, position);

CREATE TABLE checklist_items (
    id TEXT PRIMARY KEY,
    checklist_id TEXT NOT NULL REFERENCES checklists(id) DEFERRABLE INITIALLY DEFERRED,
    section_id TEXT REFERENCES checklist_sections(id) DEFERRABLE INITIALLY DEFERRED,
    section_name TEXT,
    position INTEGER,
    display_number TEXT,
    question_text TEXT,
    display_type TEXT,
    possible_values TEXT CHECK (possible_values IS NULL OR json_valid(possible_values)),
    response TEXT,
    is_conforming TEXT,                  -- Yes, No, Other as the source says
    comment TEXT,
    spec_ref TEXT,
    linked_issue_ids TEXT CHECK (linked_issue_ids IS NULL OR json_valid(linked_issue_ids)),
    created_by TEXT,
    created_at TEXT,
    updated_at TEXT
);
CREATE INDEX checklist_items_checklist_id ON checklist_items(checklist_id, position);
CREATE INDEX checklist_items_section_id ON checklist_items(section_id);

CREATE TABLE checklist_custom_field_values (
    checklist_id TEXT NOT NULL REFERENCES checklists(id) DEFERRABLE INITIALLY DEFERRED,
    custom_field_id TEXT NOT NULL,       -- id as given in custom_field_values
    display_type TEXT,
    value TEXT,
    PRIMARY KEY (checklist_id, custom_field_id)
);
CREATE INDEX checklist_custom_field_values_field ON checklist_custom_field_values(custom_field_id);

CREATE TABLE id_map (                    -- written by load: source record -> Procore record
    entity TEXT NOT NULL,                -- coordination_issue, location, upload ...
    source_id TEXT NOT NULL,
    target_project_id INTEGER NOT NULL,
    target_id INTEGER,                   -- NULL until Procore confirms
    state TEXT NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'sent', 'loaded', 'rejected')),
    batch_id TEXT,
    payload_hash TEXT,                   -- hash of the payload sent, to spot changes
    updated_at TEXT NOT NULL,
    PRIMARY KEY (entity, source_id, target_project_id)
);
CREATE INDEX id_map_state ON id_map(state);
CREATE INDEX id_map_target ON id_map(entity, target_id);
"""

_M2_SQL = """
CREATE TABLE target_assignees (          -- Procore issue assignees, snapshot by transform
    project_id INTEGER NOT NULL,         -- Procore project
    id INTEGER NOT NULL,                 -- Procore user id
    name TEXT,
    login TEXT,                          -- email as Procore has it
    login_lower TEXT,                    -- for case-insensitive matching
    company_name TEXT,
    snapshot_run INTEGER REFERENCES runs(id),
    PRIMARY KEY (project_id, id)
);
CREATE INDEX target_assignees_login ON target_assignees(project_id, login_lower);
CREATE TABLE target_locations (          -- Procore locations, snapshot by transform and load
    project_id INTEGER NOT NULL,
    id INTEGER NOT NULL,
    name TEXT,                           -- full path joined by ">" (ambiguous if a node has ">")
    node_name TEXT,
    parent_id INTEGER,
    snapshot_run INTEGER REFERENCES runs(id),
    PRIMARY KEY (project_id, id)
);
CREATE TABLE planned_locations (         -- the location tree transform wants in Procore
    source_id TEXT PRIMARY KEY,          -- "path:" + JSON path list: stable, unambiguous
    path TEXT NOT NULL,                  -- JSON list of node names, root first
    path_text TEXT NOT NULL,             -- the same joined by ">", for people
    parent_source_id TEXT,               -- planned_locations.source_id of the parent
    depth INTEGER NOT NULL,
    is_leaf INTEGER NOT NULL,
    field_area_ids TEXT,                 -- JSON list of Field area ids mapped here
    existing_target_id INTEGER,          -- already in Procore according to the snapshot
    plan_run INTEGER REFERENCES runs(id)
);
CREATE TABLE planned_issues (            -- one row per coordination issue to create or update
    source_id TEXT PRIMARY KEY,          -- Field issue id, or "checklist_item:" + item id
    source_kind TEXT NOT NULL,           -- issue or checklist_item
    identifier TEXT,
    title TEXT NOT NULL,
    status TEXT NOT NULL,
    priority TEXT,
    issue_type TEXT,
    location_source_id TEXT REFERENCES planned_locations(source_id),
    assignee_id INTEGER,
    due_date TEXT,
    uuid TEXT NOT NULL UNIQUE,           -- deterministic from (Procore project, source id)
    payload TEXT NOT NULL,               -- exact sync item; load adds location_id, upload uuids
    attachment_ids TEXT NOT NULL DEFAULT '[]',  -- JSON list of attachments.id to upload at create
    payload_hash TEXT NOT NULL,          -- over payload + location + attachments
    plan_run INTEGER REFERENCES runs(id)
);
CREATE INDEX planned_issues_status ON planned_issues(status);
CREATE TABLE skipped_records (           -- records a mapping deliberately leaves out (e.g. Void)
    entity TEXT NOT NULL,
    source_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    run_id INTEGER REFERENCES runs(id),
    PRIMARY KEY (entity, source_id)
);
CREATE TABLE quarantine (                -- records held back, with why and what to do
    id INTEGER PRIMARY KEY,
    entity TEXT NOT NULL,                -- issue, location, attachment, checklist_item
    source_id TEXT,
    stage TEXT NOT NULL,                 -- transform or load
    reason TEXT NOT NULL,
    hint TEXT,
    record TEXT,                         -- the record or payload, JSON, URLs without tickets
    run_id INTEGER REFERENCES runs(id),
    created_at TEXT NOT NULL,
    released_at TEXT,                    -- set when a later run fixed it
    released_run INTEGER REFERENCES runs(id)
);
CREATE INDEX quarantine_open ON quarantine(entity, source_id) WHERE released_at IS NULL;
CREATE TABLE uploads (                   -- Procore direct uploads, one per attachment per project
    attachment_id TEXT NOT NULL,         -- attachments.id
    target_project_id INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    upload_uuid TEXT,                    -- Procore upload uuid, NULL until created
    state TEXT NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'created', 'stored', 'referenced', 'failed')),
    created_at TEXT,                     -- when Procore created it (uploads expire)
    error TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (attachment_id, target_project_id)
);
CREATE TABLE load_batches (              -- every write call load made, for audit and recovery
    id TEXT PRIMARY KEY,                 -- batch id, also stored on id_map rows
    run_id INTEGER REFERENCES runs(id),
    kind TEXT NOT NULL,                  -- sync_create, sync_update, status_patch, close
    item_count INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('sent', 'confirmed', 'failed')),
    sent_at TEXT NOT NULL,
    confirmed_at TEXT,
    entities INTEGER,
    errors INTEGER
);
ALTER TABLE id_map ADD COLUMN target_status TEXT;   -- status Procore has, to spot status changes
ALTER TABLE id_map ADD COLUMN attachment_ids TEXT;  -- JSON list of attachments sent at create
"""

# Extract's change tracking: the voided-id list as a raw table, the listing hash each detail
# record was retrieved for (so only changed records are retrieved again), download failures by
# kind (so only transient ones are retried), and issue columns the transform reads.
_M3_SQL = f"""
{_raw_table_sql("raw_voided_issues", "POST /api/get_voided_issues (payload: {{id}})")}
ALTER TABLE raw_issue_details ADD COLUMN listing_hash TEXT;  -- raw_issues hash it was retrieved for
ALTER TABLE raw_checklist_details ADD COLUMN listing_hash TEXT;  -- raw_checklists hash likewise
ALTER TABLE issues ADD COLUMN labor_hours REAL;
ALTER TABLE issues ADD COLUMN cost TEXT;
ALTER TABLE issues ADD COLUMN responsible_company_name TEXT;  -- from companies, refreshed
ALTER TABLE issues ADD COLUMN root_cause_name TEXT;           -- from root_causes, refreshed
ALTER TABLE attachments ADD COLUMN failure TEXT               -- why state = failed
    CHECK (failure IS NULL OR failure IN ('transport', 'incomplete', 'size_mismatch',
                                          'not_found'));
ALTER TABLE attachments ADD COLUMN num_pages INTEGER;
ALTER TABLE attachments ADD COLUMN tags TEXT;
"""

# Views for people inspecting the staging DB (Datasette, sqlite3): the common questions as one
# SELECT each. Views hold no data, so a later migration may DROP and re-create them.
_M4_SQL = """
CREATE VIEW v_issue_journey AS           -- Field id, identifier, title, Procore id, state
WITH sources AS (
    SELECT source_id, 'issue' AS source_kind, identifier, description, status AS field_status,
           deleted, voided
    FROM issues
    UNION ALL
    SELECT source_id, source_kind, identifier, NULL, NULL, 0, 0
    FROM planned_issues WHERE source_kind <> 'issue'
),
open_quarantine AS (
    SELECT source_id, MIN(stage) AS stage, MIN(reason) AS reason, MIN(hint) AS hint
    FROM quarantine WHERE released_at IS NULL AND source_id IS NOT NULL
    GROUP BY source_id
),
skipped AS (
    SELECT source_id, MIN(reason) AS reason FROM skipped_records GROUP BY source_id
)
SELECT
    s.source_id,
    s.source_kind,
    s.identifier,
    COALESCE(p.title, substr(s.description, 1, 80)) AS title,
    s.field_status,
    p.status AS procore_status_planned,
    m.target_status AS procore_status_loaded,
    p.uuid,
    m.target_project_id AS procore_project_id,
    m.target_id AS procore_id,
    CASE
        WHEN m.state = 'loaded' AND (s.deleted = 1 OR s.voided = 1)
            THEN 'loaded_then_deleted_at_source'
        WHEN m.state IN ('loaded', 'rejected', 'sent') THEN m.state
        WHEN q.source_id IS NOT NULL THEN 'quarantined'
        WHEN k.source_id IS NOT NULL THEN 'skipped'
        WHEN p.source_id IS NOT NULL THEN 'planned'
        ELSE 'extracted'
    END AS state,
    COALESCE(q.reason, k.reason) AS reason,
    q.hint,
    m.updated_at AS state_changed_at
FROM sources s
LEFT JOIN planned_issues p ON p.source_id = s.source_id
LEFT JOIN id_map m ON m.entity = 'coordination_issue' AND m.source_id = s.source_id
LEFT JOIN open_quarantine q ON q.source_id = s.source_id
LEFT JOIN skipped k ON k.source_id = s.source_id;

CREATE VIEW v_quarantine_by_reason AS    -- open quarantine, one row per entity, stage and reason
SELECT
    entity,
    stage,
    reason,
    MIN(hint) AS hint,
    COUNT(*) AS records,
    MIN(created_at) AS first_quarantined_at,
    MAX(created_at) AS last_quarantined_at,
    substr(group_concat(source_id, ', '), 1, 300) AS example_source_ids
FROM quarantine
WHERE released_at IS NULL
GROUP BY entity, stage, reason
ORDER BY records DESC, entity, reason;

CREATE VIEW v_attachments_pending AS     -- files not (yet) on their Procore issue, and why
SELECT
    a.id AS attachment_id,
    a.container_type,
    a.container_id,
    a.kind,
    a.filename,
    COALESCE(a.size, a.size_expected) AS size,
    a.state AS download_state,
    NULL AS upload_state,
    NULL AS procore_project_id,
    NULL AS issue_state,
    CASE a.state WHEN 'failed' THEN 'download failed' ELSE 'download pending' END AS waiting_for,
    a.error
FROM attachments a
WHERE a.state IN ('pending', 'failed') AND a.kind <> 'UriReference'
UNION ALL
SELECT
    a.id,
    a.container_type,
    a.container_id,
    a.kind,
    a.filename,
    a.size,
    a.state,
    u.state,
    m.target_project_id,
    m.state,
    CASE
        WHEN m.state = 'loaded' THEN 'after load: Procore cannot add files to an existing issue'
        WHEN m.state = 'rejected' THEN 'issue rejected by Procore'
        WHEN u.state = 'failed' THEN 'upload failed'
        ELSE 'upload pending'
    END,
    COALESCE(u.error, a.error)
FROM planned_issues p
JOIN json_each(p.attachment_ids) j
JOIN attachments a ON a.id = j.value
LEFT JOIN id_map m ON m.entity = 'coordination_issue' AND m.source_id = p.source_id
LEFT JOIN uploads u ON u.attachment_id = a.id AND u.target_project_id = m.target_project_id
WHERE a.state = 'stored' AND (
    (m.state = 'loaded' AND NOT EXISTS (
        SELECT 1 FROM json_each(COALESCE(m.attachment_ids, '[]')) sent WHERE sent.value = a.id))
    OR (COALESCE(m.state, 'pending') <> 'loaded'
        AND COALESCE(u.state, 'pending') NOT IN ('stored', 'referenced'))
);
"""

# uploads.sent_sha256: the sha256 of the bytes storage received for this upload, hashed while
# they streamed (clients.procore.put_upload_bytes). NULL until stored, and for uploads a
# migrate made before it recorded this: those bytes were never proven. The report's attachment
# check compares it with attachments.sha256, and load reuses a stored upload only when equal.
_M5_SQL = """
ALTER TABLE uploads ADD COLUMN sent_sha256 TEXT;
"""

# Which migration the DB holds (store/identity.py) and which command is writing to it
# (store/writer.py). A DB an earlier version made gets its identity row inferred from what it
# holds right after this migration, by open_store.
_M6_SQL = """
CREATE TABLE staging_identity (          -- the one migration this DB holds (one row, id = 1)
    id INTEGER PRIMARY KEY CHECK (id = 1),
    source_project_id TEXT,              -- BIM 360 Field project, pinned by the first extract
    source_project_pinned_by TEXT,       -- the run that pinned it, or what it was inferred from
    target_company_id INTEGER,           -- Procore company, pinned by the first run that knows it
    target_company_pinned_by TEXT,
    target_project_id INTEGER,           -- Procore project, pinned by the first transform or load
    target_project_pinned_by TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE writer_lock (               -- the command writing to this DB now (no row: none)
    id INTEGER PRIMARY KEY CHECK (id = 1),
    command TEXT NOT NULL,               -- extract, transform, load, report, quarantine release
    pid INTEGER NOT NULL,
    process_token TEXT NOT NULL,         -- random per process, tells apart a reused pid
    acquired_at TEXT NOT NULL
);
"""

# The title Procore has for each loaded issue, so a list of issues load would close (deleted at
# the source, so no longer planned) can say which ones they are.
_M7_SQL = """
ALTER TABLE id_map ADD COLUMN title TEXT;  -- title sent at create or last update
"""

# Checklist templates (/api/templates, asked for rich content) with their typed items, the
# checklist headers (/api/get_checklist_headers: the explicit deleted flag and tags), each
# checklist's task/equipment source and tags, each checklist item's template item, and each
# custom field value's definition. Templates gone from the source keep their rows: the
# checklists filled from them still need them.
_M8_TEMPLATES = "POST /api/templates (application_version above 1.10)"
_M8_HEADERS = "POST /api/get_checklist_headers (source_id: completed_checklist_id)"
_M8_SQL = f"""
{_raw_table_sql("raw_checklist_templates", _M8_TEMPLATES)}
{_raw_table_sql("raw_checklist_headers", _M8_HEADERS)}
CREATE TABLE checklist_templates (       -- /api/templates, rich content included
    id TEXT PRIMARY KEY,                 -- Field template id
    name TEXT,
    checklist_type TEXT,
    created_at TEXT,
    updated_at TEXT,
    content_hash TEXT                    -- of the raw_checklist_templates payload this came from
);
CREATE TABLE checklist_template_items (
    id TEXT PRIMARY KEY,                 -- Field template item id
    template_id TEXT NOT NULL,           -- checklist_templates.id
    section_position INTEGER NOT NULL,   -- 0-based, order of sections in the template
    section_name TEXT,
    position INTEGER NOT NULL,           -- as Field gives it, the key checklist items join on
    display_number TEXT,
    question_text TEXT,
    display_type TEXT,                   -- drop-down, single-select, text ... as Field gives it
    possible_values TEXT CHECK (possible_values IS NULL OR json_valid(possible_values))
);
CREATE INDEX checklist_template_items_template ON checklist_template_items(template_id, position);
ALTER TABLE checklists ADD COLUMN source_type TEXT;   -- Task or Equipment, NULL without a source
ALTER TABLE checklists ADD COLUMN source_id TEXT;
ALTER TABLE checklists ADD COLUMN source_name TEXT;
ALTER TABLE checklists ADD COLUMN tags TEXT CHECK (tags IS NULL OR json_valid(tags));  -- JSON list
ALTER TABLE checklist_items ADD COLUMN template_item_id TEXT;  -- same template and position
ALTER TABLE checklist_custom_field_values ADD COLUMN definition_id TEXT;  -- custom_fields.id
ALTER TABLE checklist_custom_field_values ADD COLUMN name TEXT;           -- the definition's name
"""

# What transform plans for Procore's Inspections tool (issue 14): one company template per Field
# checklist template (its sections and typed items in the payload), one inspection per Field
# checklist (header, every item's answer, comments and files in the payload). Load resolves the
# Procore ids (inspection type, response sets, template, location, vendor, uploads) by the
# source ids named here and records each write in id_map under the entities of migrate.ids.
_M9_SQL = """
CREATE TABLE planned_inspection_templates (  -- one Procore company template per Field template
    source_id TEXT PRIMARY KEY,          -- checklist_templates.id
    name TEXT NOT NULL,
    inspection_type TEXT NOT NULL,       -- Procore inspection type name (inspection_types.csv)
    payload TEXT NOT NULL CHECK (json_valid(payload)),  -- sections, items, response sets (JSON)
    payload_hash TEXT NOT NULL,
    plan_run INTEGER REFERENCES runs(id)
);
CREATE TABLE planned_inspections (       -- one Procore inspection per Field checklist
    source_id TEXT PRIMARY KEY,          -- checklists.id
    template_source_id TEXT NOT NULL,    -- planned_inspection_templates.source_id
    identifier TEXT,
    status TEXT NOT NULL CHECK (status IN ('open', 'in_review', 'closed')),
    location_source_id TEXT REFERENCES planned_locations(source_id),
    responsible_contractor TEXT,         -- Procore vendor name load looks up; NULL: none
    payload TEXT NOT NULL CHECK (json_valid(payload)),  -- list body, items, comments (JSON)
    attachment_ids TEXT NOT NULL DEFAULT '[]',    -- JSON list: checklist files and signatures
    attachment_names TEXT NOT NULL DEFAULT '{}',  -- JSON {attachment id: name in Procore}
    payload_hash TEXT NOT NULL,          -- over payload, location and every file's sha256
    plan_run INTEGER REFERENCES runs(id)
);
CREATE INDEX planned_inspections_template ON planned_inspections(template_source_id);
"""

_M10_SQL = """
CREATE VIEW v_inspection_journey AS      -- per Field checklist: its Procore inspection and state
WITH sources AS (
    SELECT id AS source_id, identifier, name, checklist_type, status AS field_status,
           template_name, deleted
    FROM checklists
    UNION ALL
    SELECT p.source_id, p.identifier, NULL, NULL, NULL, NULL, 0
    FROM planned_inspections p
    WHERE NOT EXISTS (SELECT 1 FROM checklists c WHERE c.id = p.source_id)
),
open_quarantine AS (
    SELECT source_id, MIN(stage) AS stage, MIN(reason) AS reason, MIN(hint) AS hint
    FROM quarantine
    WHERE released_at IS NULL AND entity IN ('checklist', 'inspection') AND source_id IS NOT NULL
    GROUP BY source_id
),
skipped AS (
    SELECT source_id, MIN(reason) AS reason FROM skipped_records WHERE entity = 'checklist'
    GROUP BY source_id
)
SELECT
    s.source_id,
    s.identifier,
    s.name,
    s.checklist_type,
    s.field_status,
    s.template_name,
    t.name AS procore_template,
    t.inspection_type AS procore_inspection_type,
    p.status AS procore_status_planned,
    m.target_project_id AS procore_project_id,
    m.target_id AS procore_id,
    CASE
        WHEN m.state = 'loaded' AND s.deleted = 1 THEN 'loaded_then_deleted_at_source'
        WHEN m.state = 'loaded' AND m.payload_hash IS NULL THEN 'unfinished'
        WHEN m.state IN ('loaded', 'rejected', 'sent') THEN m.state
        WHEN q.source_id IS NOT NULL THEN 'quarantined'
        WHEN k.source_id IS NOT NULL THEN 'skipped'
        WHEN p.source_id IS NOT NULL THEN 'planned'
        ELSE 'extracted'
    END AS state,
    k.reason AS skipped_reason,
    q.stage AS quarantine_stage,
    q.reason AS quarantine_reason,
    q.hint,
    m.updated_at AS state_changed_at
FROM sources s
LEFT JOIN planned_inspections p ON p.source_id = s.source_id
LEFT JOIN planned_inspection_templates t ON t.source_id = p.template_source_id
LEFT JOIN id_map m ON m.entity = 'inspection' AND m.source_id = s.source_id
LEFT JOIN open_quarantine q ON q.source_id = s.source_id
LEFT JOIN skipped k ON k.source_id = s.source_id;
"""

# Issue 15 (losses inside transform): the company's Procore trades, snapshot by transform
# beside target_assignees, so fields.csv's trade target resolves to a trade_id (offline too).
_TARGET_TRADES_SQL = """
CREATE TABLE target_trades (             -- Procore company trades, snapshot by transform
    company_id INTEGER NOT NULL,         -- Procore company
    id INTEGER NOT NULL,                 -- Procore trade id (a coordination issue's trade_id)
    name TEXT,
    active INTEGER NOT NULL DEFAULT 1,   -- 0: no longer available for new records
    snapshot_run INTEGER REFERENCES runs(id),
    PRIMARY KEY (company_id, id)
);
"""

# What a migration leaves behind, kept beside what it moves (issue 15, source side): marked-up
# renditions are attachments rows of their own pointing at the original (rendition_of), the
# official project export's two archives (stored in the blob store like attachments), and a
# count of each Field family the pipeline does not migrate.
_M12_SQL = """
ALTER TABLE attachments ADD COLUMN rendition_of TEXT;   -- original attachments.id of a composite
ALTER TABLE attachments ADD COLUMN rendition_page INTEGER;  -- its page (0-based), NULL otherwise
CREATE INDEX attachments_rendition_of ON attachments(rendition_of);
CREATE TABLE project_exports (           -- Field's own project export (latest_project_export)
    kind TEXT PRIMARY KEY,               -- database or files, as Field names the archive
    state TEXT NOT NULL CHECK (state IN ('stored', 'not_available', 'failed')),
    sha256 TEXT CHECK (sha256 IS NULL
        OR (length(sha256) = 64 AND NOT sha256 GLOB '*[^0-9a-f]*')),  -- blob store key
    size INTEGER,
    requested_at TEXT NOT NULL,          -- when extract asked for the export status
    finished_at TEXT,                    -- last_export_at as Field reports it
    stored_at TEXT,                      -- when the archive was in the blob store
    reason TEXT,                         -- why not available or failed
    run_id INTEGER REFERENCES runs(id),
    CHECK (state <> 'stored' OR (sha256 IS NOT NULL AND size IS NOT NULL))
);
CREATE TABLE source_inventory (          -- Field families outside the pipeline, counted
    family TEXT PRIMARY KEY,             -- photos, library_files, library_folders, equipment ...
    endpoint TEXT NOT NULL,              -- the call that counted them
    records INTEGER NOT NULL,
    bytes INTEGER,                       -- sizes the source declares, NULL when it has none
    kept_in TEXT,                        -- where the project export keeps them
    run_id INTEGER REFERENCES runs(id),
    counted_at TEXT NOT NULL
);
"""

# Issue 15 point 1: where every BIM 360 Field field went, written by transform at every run
# (migrate/transform/ledger.py decides the destinations).
_FIELD_LEDGER_SQL = """
CREATE TABLE field_ledger (              -- one row per source field: where its values went
    position INTEGER PRIMARY KEY,        -- catalogue order
    entity TEXT NOT NULL,                -- issue, issue comment, checklist item ...
    field TEXT NOT NULL,                 -- staged column, or cf:<name> for a custom field
    kind TEXT NOT NULL CHECK (kind IN ('target', 'footer', 'file', 'link', 'left_out', 'none')),
    destination TEXT NOT NULL,           -- the Procore field, footer line, file or the reason
    records INTEGER NOT NULL,            -- records of the entity
    with_value INTEGER NOT NULL,         -- records whose field has a value (none + value: fails)
    run_id INTEGER REFERENCES runs(id)
);
"""

# Issue 17 point 1: every Procore answer a load run saw, with the X-Rate-Limit-* headers it
# carried, so the report charts the quota as Procore counted it (migrate/store/rate_readings.py).
_RATE_READINGS_SQL = """
CREATE TABLE rate_readings (             -- every answer Procore gave a load run, quota headers too
    run_id INTEGER NOT NULL REFERENCES runs(id),
    sent_at REAL NOT NULL,               -- Unix seconds, when the rate budget let it go
    answered_at REAL NOT NULL,
    method TEXT NOT NULL,
    endpoint TEXT NOT NULL,              -- path, ids folded to :id, no query string
    status INTEGER NOT NULL,             -- 429: refused, took no slot
    rate_limit INTEGER,                  -- X-Rate-Limit-Limit (NULL: not counted by Procore)
    remaining INTEGER,                   -- X-Rate-Limit-Remaining
    reset REAL                           -- X-Rate-Limit-Reset (Unix seconds)
);
CREATE INDEX rate_readings_run ON rate_readings(run_id, sent_at);
"""

# Append new migrations at the end; numbers are contiguous from 1.
MIGRATIONS: list[Migration] = [
    Migration(1, "extract_schema", _M1_SQL),
    Migration(2, "transform_load_schema", _M2_SQL),
    Migration(3, "extract_change_tracking", _M3_SQL),
    Migration(4, "report_views", _M4_SQL),
    Migration(5, "uploads_sent_sha256", _M5_SQL),
    Migration(6, "identity_and_writer_lock", _M6_SQL),
    Migration(7, "id_map_title", _M7_SQL),
    Migration(8, "checklist_templates_and_sources", _M8_SQL),
    Migration(9, "planned_inspections", _M9_SQL),
    Migration(10, "inspection_journey_view", _M10_SQL),
    Migration(11, "target_trades", _TARGET_TRADES_SQL),
    Migration(12, "renditions_export_inventory", _M12_SQL),
    Migration(13, "field_ledger", _FIELD_LEDGER_SQL),
    Migration(14, "rate_readings", _RATE_READINGS_SQL),
]


def split_statements(sql: str) -> list[str]:
    """Split a script into complete statements (trigger bodies and comments survive)."""
    statements: list[str] = []
    buffer = ""
    for line in sql.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    leftover = "\n".join(
        line for line in buffer.splitlines() if line.strip() and not line.strip().startswith("--")
    )
    if leftover:
        raise ValueError(f"incomplete SQL statement at the end of a migration: {leftover[:200]!r}")
    return statements


def _check_sequence(migrations: Sequence[Migration]) -> None:
    numbers = [m.number for m in migrations]
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(f"migration numbers must be 1..N in order, got {numbers}")


def applied_migrations(store: Store) -> dict[int, str]:
    """Migrations recorded in the DB, number -> name."""
    rows = store.conn.execute("SELECT number, name FROM schema_migrations ORDER BY number")
    return dict(rows.fetchall())


def apply_migrations(store: Store, migrations: Sequence[Migration] = MIGRATIONS) -> list[int]:
    """Apply the pending migrations in order; return the numbers applied now.

    Each migration commits with its schema_migrations row. A DB that records a migration this
    code does not know raises SchemaTooNewError and is left untouched.
    """
    _check_sequence(migrations)
    conn = store.conn
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if not exists:
        with store.transaction():
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "number INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
    check_known(store, migrations)
    # Only take the write lock when there is something to do: opening the DB to read (status,
    # Datasette-style inspection) must not wait for a running extract's transaction.
    done = applied_migrations(store)
    migrations = [m for m in migrations if m.number not in done]
    applied_now: list[int] = []
    for migration in migrations:
        with store.transaction():
            # Re-read under the write lock: another process may have applied it meanwhile.
            if conn.execute(
                "SELECT 1 FROM schema_migrations WHERE number = ?", (migration.number,)
            ).fetchone():
                continue
            for statement in split_statements(migration.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (number, name, applied_at) VALUES (?, ?, ?)",
                (migration.number, migration.name, utc_now()),
            )
            # Mirrors the schema version where `sqlite3 x.db 'PRAGMA user_version'` shows it.
            conn.execute(f"PRAGMA user_version = {int(migration.number)}")
            applied_now.append(migration.number)
    if applied_now:
        store._raw_tables = None
    return applied_now


def check_known(store: Store, migrations: Sequence[Migration]) -> None:
    """Raise if the DB records a migration this code does not know (newer, or another branch)."""
    known = {m.number: m.name for m in migrations}
    newest_known = max(known, default=0)
    for number, name in applied_migrations(store).items():
        if number not in known:
            raise SchemaTooNewError(
                f"{store.path} has schema version {number} ({name!r}) but this migrate knows "
                f"only up to version {newest_known}. Upgrade migrate, or start a new staging DB."
            )
        if known[number] != name:
            raise StoreError(
                f"{store.path}: schema migration {number} is {name!r} in the DB but "
                f"{known[number]!r} in this code; the DB was made by a different branch of "
                "migrate. Start a new staging DB."
            )
