"""The extract stage against the BIM 360 Field simulator over loopback (no mocks).

Counts per entity against the simulator's own, every blob's sha256 against the generator's,
incremental re-runs (nothing changed / mutations), injected 5xx/429/drops and ticket expiry
giving the same staging DB as a clean run, bad source data kept as source_problems, and no
secret anywhere in the DB, the logs or the output.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrate.clients.bim360field import FieldSession
from migrate.clients.http import HttpClient, RetryPolicy
from migrate.errors import ConfigError, CredentialError, StageFailed
from migrate.extract import ExtractOptions, ExtractResult, extract_from_settings, run
from migrate.extract import issues as extract_issues
from migrate.extract.listing import ListingNotWhole
from migrate.sandbox.faults import FaultConfig, Faults
from migrate.sandbox.field_server import FieldApp
from migrate.sandbox.generator import GeneratedProject, derived_size, sha256_of_chunks
from migrate.sandbox.httpbase import Request, Response, Route, RunningServer, json_response
from migrate.settings import Secret, Settings, load_settings
from migrate.store import BlobStore, get_run, open_store

USER = "demo@example.com"
PASSWORD = "Extract-Pa55word-4c1d"
ENV = {"BIM360_FIELD_USERNAME": USER, "BIM360_FIELD_PASSWORD": PASSWORD}
#: Fast retries so injected faults cost milliseconds; enough attempts that 30 % faults never
#: exhaust them.
FAST = RetryPolicy(max_attempts=14, base=0.005, cap=0.05, rate_limit_floor=0.005)

NORMALISED = (
    "projects",
    "areas",
    "companies",
    "users",
    "issue_types",
    "root_causes",
    "custom_fields",
    "issue_fields",
    "issues",
    "comments",
    "attachments",
    "issue_status_history",
    "checklists",
    "checklist_sections",
    "checklist_items",
    "checklist_custom_field_values",
    "checklist_templates",
    "checklist_template_items",
)
#: Columns that say which run did something, not what the source holds.
RUN_COLUMNS = {"downloaded_run"}


# -- a recording simulator ---------------------------------------------------------------------
class RecordingFieldApp(FieldApp):
    """The simulator, noting every ticket it issued and what each authorised call asked for."""

    def __init__(self, project: Any, **kwargs: Any) -> None:
        self.issued: list[str] = []
        self.asked: list[tuple[str, str]] = []
        self._asked_lock = threading.Lock()
        self.url = ""
        super().__init__(project, password=PASSWORD, **kwargs)

    def _login(self, request: Request) -> Response:
        response = super()._login(request)
        if response.status == 200:
            assert isinstance(response.body, bytes)
            self.issued.append(json.loads(response.body)["ticket"])
        return response

    def before(self, request: Request, route: Route) -> Response | None:
        early = super().before(request, route)
        if early is None:
            key = {
                "get_issues": request.param("offset"),
                "checklists": request.param("offset"),
                "issues_retrieve": request.param("ids"),
                # A rendition counts as its own file, named like its attachments row.
                "binary_data": request.param("object_id")
                if request.param("image_type") in (None, "original")
                else f"{request.param('object_id')}:{request.param('image_type')}:"
                f"{request.param('page')}",
                "checklist": request.path_params.get("checklist_id"),
            }.get(route.name, "")
            with self._asked_lock:
                self.asked.append((route.name, key or ""))
        return early

    def asked_for(self, route: str) -> list[str]:
        with self._asked_lock:
            return [key for name, key in self.asked if name == route]

    def retrieved_ids(self) -> list[str]:
        return [i for ids in self.asked_for("issues_retrieve") for i in ids.split(",")]

    def downloads(self) -> Counter[str]:
        return Counter(self.asked_for("binary_data"))

    def forget(self) -> None:
        with self._asked_lock:
            self.asked.clear()
        self.reset_counts()


@contextlib.contextmanager
def serve(
    project: GeneratedProject,
    *,
    faults: FaultConfig | None = None,
    app_class: type[RecordingFieldApp] = RecordingFieldApp,
    **options: Any,
) -> Iterator[RecordingFieldApp]:
    app = app_class(project, faults=Faults(faults or FaultConfig()), **options)
    server = RunningServer(app)
    app.url = server.url
    try:
        yield app
    finally:
        server.stop()


def extract(
    app: RecordingFieldApp,
    workdir: Path,
    *,
    policy: RetryPolicy = FAST,
    workers: int = 4,
    full_refresh: bool = False,
) -> ExtractResult:
    """One in-process run of the stage into ``workdir`` (staging.db + blobs/)."""
    store = open_store(workdir / "staging.db")
    http = HttpClient(app.url, policy=policy, pool_size=workers, secrets=[PASSWORD])
    session = FieldSession(http, Secret(USER), Secret(PASSWORD))
    try:
        return run(
            store,
            session,
            BlobStore(workdir / "blobs"),
            options=ExtractOptions(
                project_id=app.project.main.id, workers=workers, full_refresh=full_refresh
            ),
        )
    finally:
        session.logout()
        http.close()
        store.close()


def write_config(
    folder: Path, url: str, *, project_line: str, workers: int = 4, page_size: int = 100
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "migration.toml"
    path.write_text(
        f'[source]\nbase_url = "{url}"\n{project_line}\nworkers = {workers}\n'
        f"page_size = {page_size}\ntimeout = 20\n"
        '[staging]\npath = "staging.db"\nblobs = "blobs"\nlogs = "logs"\n',
        encoding="utf-8",
    )
    return path


def settings_for(folder: Path, app: RecordingFieldApp, **kwargs: Any) -> Settings:
    line = f'project_id = "{app.project.main.id}"'
    return load_settings(write_config(folder, app.url, project_line=line, **kwargs), env={})


class RecordingProgress:
    """A Progress that remembers totals and advances per entity."""

    def __init__(self) -> None:
        self.totals: dict[str, int | None] = {}
        self.done: Counter[str] = Counter()
        self.open: set[str] = set()

    def start(self, entity: str, total: int | None) -> None:
        self.totals[entity] = total
        self.open.add(entity)

    def advance(self, entity: str, n: int = 1) -> None:
        assert entity in self.open
        self.done[entity] += n

    def finish(self, entity: str) -> None:
        self.open.discard(entity)


# -- reading the staging DB ----------------------------------------------------------------------
def _rows(conn: sqlite3.Connection, sql: str) -> list[str]:
    cursor = conn.execute(sql)
    names = [d[0] for d in cursor.description]
    return sorted(json.dumps(dict(zip(names, row, strict=True)), sort_keys=True) for row in cursor)


def snapshot(db_path: Path, *, live_only: bool = False) -> dict[str, list[str]]:
    """Every extract table's rows (run ids and timestamps of our own left out), sorted.

    ``live_only`` drops what only an incremental history has: rows of deleted issues and raw
    rows no longer in the source, so a re-run can be compared with a fresh extraction.
    """
    conn = sqlite3.connect(db_path)
    try:
        gone = (
            "SELECT source_id FROM issues WHERE deleted = 1" if live_only else "SELECT NULL WHERE 0"
        )
        result: dict[str, list[str]] = {}
        for table in NORMALISED:
            columns = [
                row[1]
                for row in conn.execute(f"PRAGMA table_info({table})")
                if row[1] not in RUN_COLUMNS
                and not (table == "issue_status_history" and row[1] == "id")
            ]
            where = {
                "issues": f"source_id NOT IN ({gone})",
                "comments": f"container_id NOT IN ({gone})",
                "attachments": f"container_id NOT IN ({gone})",
                "issue_status_history": f"issue_id NOT IN ({gone})",
            }.get(table, "1")
            result[table] = _rows(conn, f"SELECT {', '.join(columns)} FROM {table} WHERE {where}")
        raw_tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'raw\\_%' "
                "ESCAPE '\\'"
            )
        ]
        for table in raw_tables:
            columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            extra = ", listing_hash" if "listing_hash" in columns else ""
            where = "deleted_at_run IS NULL" if live_only else "1"
            result[table] = _rows(
                conn,
                f"SELECT source_id, content_hash, deleted_at_run IS NULL "
                f"AS live{extra} FROM {table} WHERE {where}",
            )
        result["source_problems"] = _rows(
            conn, "SELECT entity, source_id, endpoint, reason FROM source_problems"
        )
        return result
    finally:
        conn.close()


def staged_counts(db_path: Path) -> dict[str, int]:
    """The staging DB's counts under the names FieldApp.counts() uses."""
    conn = sqlite3.connect(db_path)

    def count(sql: str) -> int:
        return int(conn.execute(sql).fetchone()[0] or 0)

    live_issue = "container_id IN (SELECT source_id FROM issues WHERE deleted = 0)"
    live_list = "container_id IN (SELECT id FROM checklists WHERE deleted = 0)"
    live_item = (
        "container_id IN (SELECT ci.id FROM checklist_items ci JOIN checklists c "
        "ON c.id = ci.checklist_id WHERE c.deleted = 0)"
    )
    try:
        counts = {
            "projects": count("SELECT count(*) FROM projects"),
            "areas": count("SELECT count(*) FROM areas"),
            "deleted_areas": count("SELECT count(*) FROM areas WHERE deleted = 1"),
            "companies": count("SELECT count(*) FROM companies"),
            "users": count("SELECT count(*) FROM users"),
            "issue_types": count("SELECT count(*) FROM issue_types"),
            "root_causes": count("SELECT count(*) FROM root_causes"),
            "custom_fields": count("SELECT count(*) FROM custom_fields"),
            "issues": count("SELECT count(*) FROM issues WHERE deleted = 0"),
            "voided_issues": count("SELECT count(*) FROM issues WHERE deleted = 0 AND voided"),
            "comments": count(
                f"SELECT count(*) FROM comments WHERE container_type = 'Issue' AND {live_issue}"
            ),
            "issue_changes": count(
                "SELECT count(*) FROM issue_status_history WHERE issue_id IN "
                "(SELECT source_id FROM issues WHERE deleted = 0)"
            ),
            "checklists": count("SELECT count(*) FROM checklists WHERE deleted = 0"),
            "checklist_sections": count(
                "SELECT count(*) FROM checklist_sections WHERE checklist_id IN "
                "(SELECT id FROM checklists WHERE deleted = 0)"
            ),
            "checklist_items": count(
                "SELECT count(*) FROM checklist_items WHERE checklist_id IN "
                "(SELECT id FROM checklists WHERE deleted = 0)"
            ),
            "checklist_comments": count(
                f"SELECT count(*) FROM comments WHERE container_type = 'Checklist' AND {live_list}"
            ),
            "signatures": count(
                f"SELECT count(*) FROM attachments WHERE kind = 'Signature' AND {live_list}"
            ),
            "checklist_item_issue_links": count(
                "SELECT sum(json_array_length(linked_issue_ids)) FROM checklist_items WHERE "
                "checklist_id IN (SELECT id FROM checklists WHERE deleted = 0)"
            ),
            "checklist_custom_field_values": count(
                "SELECT count(*) FROM checklist_custom_field_values WHERE checklist_id IN "
                "(SELECT id FROM checklists WHERE deleted = 0)"
            ),
        }
        for owner, container, live in (
            ("issue", "Issue", live_issue),
            ("checklist", "Checklist", live_list),
            ("checklist_item", "ChecklistItem", live_item),
        ):
            for kind, name in (
                ("Attachment", "attachments"),
                ("DocumentReference", "document_references"),
                ("UriReference", "uri_references"),
            ):
                counts[f"{owner}_{name}"] = count(
                    f"SELECT count(*) FROM attachments WHERE container_type = '{container}' "
                    f"AND kind = '{kind}' AND rendition_of IS NULL AND {live}"
                )
        counts["issue_signatures"] = count(
            "SELECT count(*) FROM attachments WHERE kind = 'Signature' "
            f"AND container_type = 'Issue' AND {live_issue}"
        )
        counts["composites"] = count(
            f"SELECT count(*) FROM attachments WHERE rendition_of IS NOT NULL AND {live_issue}"
        )
        attachment = (
            f"kind = 'Attachment' AND rendition_of IS NULL "
            f"AND ({live_issue} OR {live_list} OR {live_item})"
        )
        counts["attachments"] = count(f"SELECT count(*) FROM attachments WHERE {attachment}")
        counts["attachment_bytes"] = count(
            f"SELECT sum(size) FROM attachments WHERE state = 'stored' AND {attachment}"
        )
        return counts
    finally:
        conn.close()


def expected_blobs(project: GeneratedProject, app: FieldApp) -> dict[str, tuple[str, int]]:
    """attachment id -> (sha256, size) the generator serves, for every file the source has."""
    data = project.main
    expected: dict[str, tuple[str, int]] = {}

    def add(item: dict[str, Any], content_type: str | None = None) -> None:
        if item["type"] == "UriReference":
            return
        blob_id = item.get("document_id") or item["id"]
        kind = content_type or item["content_type"]
        expected[item["id"]] = (
            project.attachment_sha256(blob_id, item["size"], kind),
            item["size"],
        )

    def add_composites(item: dict[str, Any]) -> None:
        blob_id = item.get("document_id") or item["id"]
        for page in item.get("markup_pages") or ():
            variant = f"composite:{page}"
            size = derived_size(item["size"], variant)
            chunks = project.attachment_chunks(blob_id, size, "image/jpeg", variant)
            expected[f"{item['id']}:composite:{page}"] = (sha256_of_chunks(chunks), size)

    view = app._states[data.id].view()  # the current records, mutations included
    for record in view.scan(include_void=True):
        for item in record["attachments"]:
            add(item)
            add_composites(item)
        for signature in record.get("signatures", ()):
            add(signature)
    for checklist in data.iter_checklists():
        if checklist["deleted"]:
            continue
        for item in checklist["attachments"]:
            add(item)
        for signature in checklist["signatures"]:
            add(signature, "image/png")
        for section in checklist["sections"]:
            for entry in section["items"]:
                for item in entry["attachments"]:
                    add(item)
    return expected


def assert_blobs_match(workdir: Path, expected: dict[str, tuple[str, int]]) -> None:
    conn = sqlite3.connect(workdir / "staging.db")
    try:
        stored = {
            row[0]: row[1:]
            for row in conn.execute(
                "SELECT id, state, sha256, size FROM attachments WHERE kind != 'UriReference'"
            )
        }
    finally:
        conn.close()
    assert set(stored) == set(expected)
    blobs = BlobStore(workdir / "blobs")
    for attachment_id, (sha256, size) in expected.items():
        assert stored[attachment_id] == ("stored", sha256, size), attachment_id
        assert blobs.verify(sha256), attachment_id
    assert list(blobs.tmp.iterdir()) == []


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def project() -> GeneratedProject:
    return GeneratedProject(seed=7, issues=150)


@pytest.fixture(scope="module")
def field(project: GeneratedProject) -> Iterator[RecordingFieldApp]:
    """One server for the module: attachment URLs name its port, so runs compared with each
    other must talk to the same one."""
    with serve(project) as app:
        yield app


@pytest.fixture
def app(field: RecordingFieldApp) -> Iterator[RecordingFieldApp]:
    """The module's server, with no faults, no ticket limit and empty call records."""
    field.faults.clear()
    field.ticket_max_calls = None
    field.forget()
    yield field
    field.faults.clear()
    field.ticket_max_calls = None


@pytest.fixture(scope="module")
def clean(field: RecordingFieldApp, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A staging dir from one clean run, the reference the other runs are compared with."""
    workdir = tmp_path_factory.mktemp("clean")
    result = extract(field, workdir)
    assert result.completed and result.source_problems == 0
    return workdir


# -- the issue's acceptance test ---------------------------------------------------------------
@pytest.mark.slow
def test_1000_issue_project_matches_the_simulator_entity_by_entity(tmp_path: Path) -> None:
    project = GeneratedProject(seed=7, issues=1000)
    with serve(project) as app:
        result = extract(app, tmp_path)
        counts = app.counts()
        expected = expected_blobs(project, app)
    staged = staged_counts(tmp_path / "staging.db")
    # Deleted checklists never reach /fieldapi/checklists/v1, so extract cannot know them.
    wanted = {key: value for key, value in counts.items() if key != "deleted_checklists"}
    assert staged == wanted
    assert_blobs_match(tmp_path, expected)
    assert result.completed and result.source_problems == 0
    assert result.blobs_downloaded == len(expected) and result.blobs_failed == 0
    assert result.counts["issues"]["new"] == counts["issues"] - counts["voided_issues"]
    assert result.counts["voided_issues"]["new"] == counts["voided_issues"]
    store = open_store(tmp_path / "staging.db")
    run_row = get_run(store, result.run_id)
    store.close()
    assert run_row.status == "succeeded" and run_row.counts is not None
    assert run_row.requests == dict(result.requests)


def test_every_entity_is_stored_and_every_blob_verified(
    project: GeneratedProject, app: RecordingFieldApp, clean: Path
) -> None:
    counts = app.counts()
    expected = expected_blobs(project, app)
    wanted = {key: value for key, value in counts.items() if key != "deleted_checklists"}
    assert staged_counts(clean / "staging.db") == wanted
    assert_blobs_match(clean, expected)
    # Filenames are data: "../../etc/passwd.jpg" is kept as written, the file lives by hash.
    db = sqlite3.connect(clean / "staging.db")
    name, sha256 = db.execute(
        "SELECT filename, sha256 FROM attachments WHERE filename LIKE '../../etc/passwd%'"
    ).fetchone()
    db.close()
    assert name == "../../etc/passwd.jpg"
    assert BlobStore(clean / "blobs").path_for(sha256).is_relative_to(clean / "blobs")
    assert not any("passwd" in str(path) for path in clean.rglob("*"))


# -- incremental ---------------------------------------------------------------------------------
def test_a_rerun_without_source_change_retrieves_and_downloads_nothing(
    app: RecordingFieldApp, tmp_path: Path
) -> None:
    first = extract(app, tmp_path)
    before = snapshot(tmp_path / "staging.db")
    app.forget()
    second = extract(app, tmp_path)
    assert app.calls["issues_retrieve"] == 0
    assert app.calls["binary_data"] == 0
    assert app.calls["checklist"] == 0
    assert app.calls["issue_changes"] == 0
    assert first.changed > 0
    assert second.changed == 0
    assert all(c["changed"] == c["new"] == c["deleted"] == 0 for c in second.counts.values())
    assert second.counts["issues"]["unchanged"] == first.counts["issues"]["new"]
    assert second.blobs_downloaded == 0 and second.blobs_skipped == first.blobs_downloaded
    assert snapshot(tmp_path / "staging.db") == before
    assert "0 downloaded" in "\n".join(second.summary_lines())
    # The first extract retrieved everything: it says so rather than "incremental".
    assert "(full: the first extract)" in first.summary_lines()[0]
    assert "(incremental)" in second.summary_lines()[0]


def _unlinked_issues(project: GeneratedProject) -> list[str]:
    """Issues no checklist item links to (a linked issue's text shows inside checklists)."""
    linked = {
        link["id"]
        for checklist in project.main.iter_checklists()
        for section in checklist["sections"]
        for item in section["items"]
        for link in item["issues"]
    }
    return [
        r["id"]
        for r in project.main.iter_issues()
        if r["id"] not in linked and r["fields"]["f--status"] not in ("Void",)
    ]


def test_changes_are_picked_up_and_only_changed_issues_retrieved(tmp_path: Path) -> None:
    project = GeneratedProject(seed=7, issues=150)
    ids = _unlinked_issues(project)
    updated, commented, voided, deleted, attached = ids[20], ids[30], ids[40], ids[50], ids[60]
    with serve(project) as app:
        extract(app, tmp_path / "incremental")
        app.forget()
        app.update_issue(updated, status="Closed", description="Fixed on site")
        comment_id = app.add_comment(commented, "Checked again — still open")
        added = app.add_issue(description="New crack in the lobby", status="Open")
        app.void_issue(voided)
        app.delete_issue(deleted)
        attachment_id = app.add_attachment(attached, "fresh photo.jpg", 4321, "image/jpeg")
        result = extract(app, tmp_path / "incremental")
        assert sorted(app.retrieved_ids()) == sorted([updated, commented, added, voided, attached])
        assert app.downloads() == Counter({attachment_id: 1})
        expected = expected_blobs(project, app)
        extract(app, tmp_path / "fresh")
    issues = result.counts["issues"]
    assert (issues["new"], issues["changed"], issues["deleted"]) == (1, 3, 1)
    assert result.counts["voided_issues"]["new"] == 1
    assert result.blobs_downloaded == 1

    db = sqlite3.connect(tmp_path / "incremental" / "staging.db")
    row = db.execute(
        "SELECT status, description, closed_at IS NOT NULL FROM issues WHERE source_id = ?",
        (updated,),
    ).fetchone()
    assert row == ("Closed", "Fixed on site", 1)
    assert db.execute("SELECT text FROM comments WHERE id = ?", (comment_id,)).fetchone() == (
        "Checked again — still open",
    )
    assert db.execute(
        "SELECT description, deleted FROM issues WHERE source_id = ?", (added,)
    ).fetchone() == ("New crack in the lobby", 0)
    assert db.execute(
        "SELECT status, voided, deleted FROM issues WHERE source_id = ?", (voided,)
    ).fetchone() == ("Void", 1, 0)
    assert db.execute("SELECT deleted FROM issues WHERE source_id = ?", (deleted,)).fetchone() == (
        1,
    )
    assert db.execute(
        "SELECT filename, size_expected, state FROM attachments WHERE id = ?", (attachment_id,)
    ).fetchone() == ("fresh photo.jpg", 4321, "stored")
    statuses = [
        s
        for (s,) in db.execute(
            "SELECT status FROM issue_status_history WHERE issue_id = ? ORDER BY start_dt, id",
            (updated,),
        )
    ]
    assert statuses[-1] == "Closed"
    db.close()
    # What the re-run holds equals a fresh extraction of the changed source.
    assert snapshot(tmp_path / "incremental" / "staging.db", live_only=True) == snapshot(
        tmp_path / "fresh" / "staging.db", live_only=True
    )
    assert_blobs_match(tmp_path / "fresh", expected)


def test_full_refresh_retrieves_everything_but_downloads_only_what_is_missing(
    app: RecordingFieldApp, clean: Path, tmp_path: Path
) -> None:
    import shutil

    shutil.copytree(clean, tmp_path / "copy")
    workdir = tmp_path / "copy"
    blobs = BlobStore(workdir / "blobs")
    conn = sqlite3.connect(workdir / "staging.db")
    victim_id, victim_sha = conn.execute(
        "SELECT id, sha256 FROM attachments WHERE state = 'stored' ORDER BY id LIMIT 1"
    ).fetchone()
    conn.close()
    blobs.path_for(victim_sha).unlink()
    result = extract(app, workdir, full_refresh=True)
    issues = app.counts()["issues"]
    assert len(set(app.retrieved_ids())) == issues
    assert app.calls["checklist"] == app.counts()["checklists"]
    assert app.downloads() == Counter({victim_id: 1})
    assert result.full_refresh and result.changed == 0, result.counts
    assert result.counts["issue_details"]["unchanged"] == issues
    assert blobs.verify(victim_sha)
    assert snapshot(workdir / "staging.db") == snapshot(clean / "staging.db")


# -- faults --------------------------------------------------------------------------------------
def test_429_5xx_and_drops_at_10_percent_give_the_same_db(
    project: GeneratedProject, app: RecordingFieldApp, clean: Path, tmp_path: Path
) -> None:
    fired_before = dict(app.faults.fired)
    app.faults.configure(
        FaultConfig(error_rate=0.1, rate_limit_rate=0.1, retry_after=(0,), drop_rate=0.1, seed=4)
    )
    result = extract(app, tmp_path)
    fired = {kind: n - fired_before[kind] for kind, n in app.faults.fired.items()}
    app.faults.clear()
    expected = expected_blobs(project, app)
    assert fired["error"] > 10 and fired["rate_limit"] > 10 and fired["drop"] > 10
    assert result.completed and result.retries > 30
    assert snapshot(tmp_path / "staging.db") == snapshot(clean / "staging.db")
    assert_blobs_match(tmp_path, expected)


def test_status_history_stored_slice_by_slice_gives_the_same_db(
    app: RecordingFieldApp, clean: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The project's whole history is one answer, stored a slice of issues at a time (2 000 in
    # production, so the 150 issues here would be one slice): 7 makes 22 slices.
    monkeypatch.setattr(extract_issues, "HISTORY_SLICE", 7)
    result = extract(app, tmp_path)
    assert result.completed
    assert result.counts["issue_changes"]["new"] > 7 * 20  # issues with history: > 20 slices
    assert snapshot(tmp_path / "staging.db") == snapshot(clean / "staging.db")


def test_ticket_expiry_mid_run_logs_in_again_and_completes(
    app: RecordingFieldApp, clean: Path, tmp_path: Path
) -> None:
    app.ticket_max_calls = 40
    issued_before = len(app.issued)
    result = extract(app, tmp_path)
    issued = len(app.issued) - issued_before
    total = sum(app.calls.values())
    assert issued >= total // 41 >= 4
    assert result.logins == issued
    assert snapshot(tmp_path / "staging.db") == snapshot(clean / "staging.db")


def test_a_service_that_stays_down_fails_the_stage_and_the_next_run_resumes(
    app: RecordingFieldApp, clean: Path, tmp_path: Path
) -> None:
    app.faults.configure(FaultConfig(error_rate=1.0, paths="binary_data"))
    policy = RetryPolicy(max_attempts=2, base=0.001, cap=0.002)
    with pytest.raises(StageFailed) as caught:
        extract(app, tmp_path, policy=policy)
    partial = caught.value.partial
    assert isinstance(partial, ExtractResult) and not partial.completed
    assert partial.counts["issue_details"]["new"] == app.counts()["issues"]
    assert "resume with `migrate extract`" in str(caught.value)
    store = open_store(tmp_path / "staging.db")
    assert get_run(store, partial.run_id).status == "failed"
    store.close()
    app.faults.clear()
    app.forget()
    result = extract(app, tmp_path)
    assert app.calls["issues_retrieve"] == 0  # kept from the failed run
    assert result.pass_run_id == partial.run_id and result.completed
    assert "(full: the first extract, resuming run" in result.summary_lines()[0]
    assert snapshot(tmp_path / "staging.db") == snapshot(clean / "staging.db")


# -- bad source data -------------------------------------------------------------------------------
class BadDataApp(RecordingFieldApp):
    """Serves a few things wrong: a declared size that is not the file's, a checklist header
    without id, custom field definitions that are not JSON."""

    lie_about: str = ""

    def _get_issues(self, request: Request) -> Response:
        response = super()._get_issues(request)
        assert isinstance(response.body, bytes)
        rows = json.loads(response.body)
        for row in rows if isinstance(rows, list) else []:
            for item in row.get("attachments", []):
                if item["id"] == self.lie_about:
                    item["size"] += 1000
        return json_response(rows)

    def _checklists(self, request: Request) -> Response:
        response = super()._checklists(request)
        assert isinstance(response.body, bytes)
        rows = json.loads(response.body)
        if rows and request.param("offset") in (None, "0"):
            del rows[0]["id"]
        return json_response(rows)

    def _custom_fields(self, request: Request) -> Response:
        return Response(
            200,
            b'[{"custom_field_id": "x", "name": ',
            {"Content-Type": "application/json; charset=utf-8"},
        )


def test_bad_source_data_is_kept_as_source_problems(tmp_path: Path) -> None:
    project = GeneratedProject(seed=7, issues=60)
    liar = next(
        item
        for record in project.main.iter_issues()
        if record["fields"]["f--status"] != "Void"
        for item in record["attachments"]
        if item["type"] == "Attachment"
    )
    with serve(project, app_class=BadDataApp) as app:
        app.lie_about = liar["id"]
        odd = app.add_issue(description=12345, labor_hours="lots", due_date="soon-ish")
        result = extract(app, tmp_path)
        live = app.counts()
        app.forget()
        again = extract(app, tmp_path)
        assert app.calls["binary_data"] == 0  # a wrong size is not retried without a change
    assert result.completed is False  # custom fields could not be read whole
    db = sqlite3.connect(tmp_path / "staging.db")
    problems = db.execute(
        "SELECT entity, source_id, reason, raw_payload FROM source_problems WHERE run_id = ?",
        (result.run_id,),
    ).fetchall()
    reasons = "\n".join(reason for _, _, reason, _ in problems)
    assert f'issues {odd}: f--labor_hours should be a number, got text "lots"' in reasons
    # A due date is kept as Field wrote it: transform reads it (issue 15), nothing is dropped.
    assert f"issues {odd}: f--due_date" not in reasons
    assert f"issues {odd}: f--description should be text, got a number 12345" in reasons
    assert "checklists record has no id" in reasons
    assert "/api/custom_fields answered with a body that is not JSON" in reasons
    size_problem = next(p for p in problems if p[1] == liar["id"])
    assert f"declared {liar['size'] + 1000} bytes but sent {liar['size']}" in size_problem[2]
    assert json.loads(size_problem[3])["failure"] == "size_mismatch"
    assert any(p[3] == '[{"custom_field_id": "x", "name": ' for p in problems)
    # The run carried on: everything else is there, the odd values as far as they go.
    assert db.execute(
        "SELECT labor_hours, due_date, description FROM issues WHERE source_id = ?", (odd,)
    ).fetchone() == (None, "soon-ish", "12345")
    assert db.execute(
        "SELECT state, failure FROM attachments WHERE id = ?", (liar["id"],)
    ).fetchone() == ("failed", "size_mismatch")
    assert db.execute("SELECT count(*) FROM issues").fetchone()[0] == live["issues"]
    assert (
        db.execute("SELECT count(*) FROM checklists WHERE deleted = 0").fetchone()[0]
        == live["checklists"] - 1
    )
    assert db.execute("SELECT count(*) FROM custom_fields").fetchone()[0] == 0
    assert result.blobs_failed == 1 and result.source_problems == len(problems)
    assert again.counts["issues"]["changed"] == 0
    db.close()


@contextlib.contextmanager
def serving_duplicates(app: RecordingFieldApp) -> Iterator[list[tuple[str, str]]]:
    """The simulator lists some ids twice, the second copy altered; yields (entity, id) of each.

    Issues: on their short last page, the first issue of page one again (a duplicate across
    pages) and that page's own first issue again (within a page); checklists: the first header
    twice on one page; users (reference data): the first user twice in one answer. Appending to
    a short page keeps it short, so paging is unchanged.
    """
    duplicated: list[tuple[str, str]] = []
    first_issue: list[dict[str, Any]] = []

    def altered(record: dict[str, Any]) -> dict[str, Any]:
        return {**record, "listed_again": True}

    def wrap(route: Route, change: Any) -> Any:
        original = route.handler

        def handler(request: Request) -> Response:
            response = original(request)
            assert isinstance(response.body, bytes)
            rows = json.loads(response.body)
            if response.status == 200 and isinstance(rows, list) and rows:
                change(request, rows)
            return json_response(rows, response.status)

        route.handler = handler
        return original

    def issues(request: Request, rows: list[dict[str, Any]]) -> None:
        if request.param("offset") in (None, "0"):
            first_issue[:] = [rows[0]]
        elif len(rows) < 100:
            rows.extend([altered(first_issue[0]), altered(rows[0])])
            duplicated.extend([("issues", first_issue[0]["id"]), ("issues", rows[0]["id"])])

    def checklists(request: Request, rows: list[dict[str, Any]]) -> None:
        rows.append(altered(rows[0]))
        duplicated.append(("checklists", rows[0]["id"]))

    def users(request: Request, rows: list[dict[str, Any]]) -> None:
        rows.append(altered(rows[0]))
        duplicated.append(("users", rows[0]["id"]))

    changes = {"get_issues": issues, "checklists": checklists, "users": users}
    routes = [route for route in app.routes if route.name in changes]
    originals = [wrap(route, changes[route.name]) for route in routes]
    try:
        yield duplicated
    finally:
        for route, original in zip(routes, originals, strict=True):
            route.handler = original


def test_an_id_listed_twice_is_a_source_problem_and_the_first_record_is_kept(
    app: RecordingFieldApp, clean: Path, tmp_path: Path
) -> None:
    with serving_duplicates(app) as duplicated:
        result = extract(app, tmp_path)
    assert sorted({entity for entity, _ in duplicated}) == ["checklists", "issues", "users"]
    assert len(duplicated) == 4
    # The run went on, and everything it stored is what a clean run stores: the first records.
    assert result.completed and result.source_problems == 4
    staged = snapshot(tmp_path / "staging.db")
    reference = snapshot(clean / "staging.db")
    assert staged.pop("source_problems") != reference.pop("source_problems")
    assert staged == reference
    db = sqlite3.connect(tmp_path / "staging.db")
    problems = db.execute(
        "SELECT entity, source_id, endpoint, reason, raw_payload FROM source_problems"
    ).fetchall()
    db.close()
    assert sorted((entity, source_id) for entity, source_id, *_ in problems) == sorted(duplicated)
    for entity, source_id, _endpoint, reason, raw_payload in problems:
        assert f"{entity} {source_id} appears twice in one " in reason
        assert "the first record is kept" in reason
        both = json.loads(raw_payload)
        assert both["kept"]["id"] == both["ignored"]["id"] == source_id
        assert "listed_again" not in both["kept"] and both["ignored"]["listed_again"] is True
    endpoints = {entity: endpoint for entity, _, endpoint, *_ in problems}
    assert endpoints == {
        "issues": "POST /api/get_issues",
        "checklists": "GET /fieldapi/checklists/v1",
        "users": "POST /fieldapi/admin/v1/users",
    }


# -- settings, credentials, secrets ---------------------------------------------------------------
def test_extract_from_settings_resolves_the_project_by_name(
    project: GeneratedProject, app: RecordingFieldApp, clean: Path, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path, app.url, project_line=f'project_name = "{project.main.name.upper()}"'
    )
    progress = RecordingProgress()
    result = extract_from_settings(load_settings(config, env={}), ENV, progress=progress)
    assert app.calls["project_names"] == 1
    assert progress.open == set()  # every bar started was finished
    assert progress.totals["attachments"] == progress.done["attachments"] == result.blobs_downloaded
    assert progress.done["issues"] == result.counts["issues"]["new"]
    assert (
        progress.totals["issue details"] == progress.done["issue details"] == app.counts()["issues"]
    )
    assert result.completed
    log_file = tmp_path / "logs" / f"{result.run_id}.jsonl"
    events = [json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines()]
    assert {"start", "finished", "summary"} <= {e["event"] for e in events}
    assert all({"time", "level", "stage", "event"} <= set(e) for e in events)
    assert snapshot(tmp_path / "staging.db") == snapshot(clean / "staging.db")


def test_unknown_project_and_bad_credentials_are_one_line_errors(
    app: RecordingFieldApp, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "a", app.url, project_line='project_id = "00000330-ffff-0000-0000-000000000001"'
    )
    with pytest.raises(
        ConfigError, match="is not a BIM 360 Field project this user can see"
    ) as caught:
        extract_from_settings(load_settings(config, env={}), ENV)
    assert "\n" not in str(caught.value)
    settings = settings_for(tmp_path / "b", app)
    wrong = {**ENV, "BIM360_FIELD_PASSWORD": "Wr0ng-Pa55word-xyz"}
    with pytest.raises(CredentialError) as denied:
        extract_from_settings(settings, wrong)
    assert "Wr0ng-Pa55word-xyz" not in str(denied.value)
    store = open_store(tmp_path / "b" / "staging.db")
    last = store.conn.execute("SELECT status, error, args FROM runs ORDER BY id DESC").fetchone()
    store.close()
    assert last[0] == "failed" and "rejected the credentials" in last[1]
    assert "Pa55word" not in last[2]


def test_no_password_or_ticket_in_the_db_logs_or_output(
    app: RecordingFieldApp, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    app.faults.configure(FaultConfig(error_rate=0.05, drop_rate=0.03, seed=9))
    app.ticket_max_calls = 25
    settings = settings_for(tmp_path, app, workers=3)
    result = extract_from_settings(settings, ENV, verbose_stream=sys.stderr)
    tickets = list(app.issued)
    out, err = capfd.readouterr()
    assert result.completed and len(tickets) >= 5
    assert "retry" in err  # the HTTP layer's retries reached the (mirrored) run log
    secrets = [PASSWORD, *tickets]
    files = [p for p in tmp_path.rglob("*") if p.is_file() and "blobs" not in p.parts]
    assert any(p.name.startswith("staging.db") for p in files)
    assert any(p.suffix == ".jsonl" for p in files)
    texts = {str(p): p.read_bytes() for p in files}
    texts["stdout"] = out.encode()
    texts["stderr"] = err.encode()
    for where, content in texts.items():
        for secret in secrets:
            assert secret.encode() not in content, f"a secret in {where}"
    db = sqlite3.connect(tmp_path / "staging.db")
    urls = [
        u for (u,) in db.execute("SELECT source_url FROM attachments WHERE kind != 'UriReference'")
    ]
    db.close()
    assert urls and all("ticket" not in url and "object_id=" in url for url in urls)


class DeletesOnRetrieveApp(RecordingFieldApp):
    """Deletes one issue just before the first retrieve: listed, then gone (404 for the call)."""

    victim = ""

    def _retrieve(self, request: Request) -> Response:
        if self.victim:
            self.delete_issue(self.victim)
            self.victim = ""
        return super()._retrieve(request)


def test_an_issue_deleted_between_listing_and_retrieve_is_marked_deleted(tmp_path: Path) -> None:
    project = GeneratedProject(seed=7, issues=60)
    victim = _unlinked_issues(project)[7]
    with serve(project, app_class=DeletesOnRetrieveApp) as app:
        app.victim = victim
        result = extract(app, tmp_path)
        # The first call (60 ids) answered 404; halving found the one that is gone.
        assert 2 <= app.statuses[("issues_retrieve", 404)] <= 7  # 60 → 30 → … → 1 ids
        assert app.calls["issues_retrieve"] <= 14
        live = app.counts()
    assert result.completed and result.counts["issues"]["deleted"] == 0
    db = sqlite3.connect(tmp_path / "staging.db")
    assert db.execute("SELECT count(*) FROM issues WHERE source_id = ?", (victim,)).fetchone() == (
        0,
    )
    assert db.execute(
        "SELECT deleted_at_run IS NOT NULL FROM raw_issues WHERE source_id = ?", (victim,)
    ).fetchone() == (1,)
    assert db.execute("SELECT count(*) FROM issues").fetchone()[0] == live["issues"]
    db.close()


class BrokenPageApp(RecordingFieldApp):
    """The first get_issues page is not JSON while ``broken`` is set."""

    broken = False

    def _get_issues(self, request: Request) -> Response:
        if self.broken and request.param("offset") in (None, "0"):
            return Response(200, b'[{"id": "00000aac', {"Content-Type": "application/json"})
        return super()._get_issues(request)


def test_an_unreadable_listing_page_infers_no_deletions(tmp_path: Path) -> None:
    project = GeneratedProject(seed=7, issues=60)
    with serve(project, app_class=BrokenPageApp) as app:
        first = extract(app, tmp_path)
        app.broken = True
        second = extract(app, tmp_path)
        app.broken = False
        app.forget()
        third = extract(app, tmp_path)
        assert app.calls["issues_retrieve"] == 0
    assert first.completed and not second.completed and third.completed
    assert second.counts["issues"] == {"new": 0, "changed": 0, "unchanged": 0, "deleted": 0}
    assert third.counts["issues"]["deleted"] == 0
    assert "issues" in " ".join(second.summary_lines()) and "again" in second.summary_lines()[-1]
    db = sqlite3.connect(tmp_path / "staging.db")
    assert db.execute("SELECT count(*) FROM issues WHERE deleted = 1").fetchone() == (0,)
    assert db.execute(
        "SELECT count(*) FROM raw_issues WHERE deleted_at_run IS NOT NULL"
    ).fetchone() == (0,)
    reason = db.execute(
        "SELECT reason FROM source_problems WHERE run_id = ?", (second.run_id,)
    ).fetchone()[0]
    db.close()
    assert reason.startswith(
        "page at offset 0: BIM 360 Field /api/get_issues answered with a body that is not JSON"
    )


# -- listing completeness (issue 15 point 3) -------------------------------------------------------
def staged_issue_ids(workdir: Path, *, deleted: bool = False) -> set[str]:
    conn = sqlite3.connect(workdir / "staging.db")
    try:
        query = "SELECT source_id FROM issues WHERE deleted = ?"
        return {row[0] for row in conn.execute(query, (int(deleted),))}
    finally:
        conn.close()


def test_a_login_default_filter_cannot_hide_issues(tmp_path: Path) -> None:
    project = GeneratedProject(seed=11, issues=150)
    with serve(project, listing_default="default_filter") as app:
        # The reading the switch models: asked without default_to_all_issues, a third is hidden.
        session = FieldSession(HttpClient(app.url, policy=FAST), Secret(USER), Secret(PASSWORD))
        session.login()
        session.project_id = project.main.id
        try:
            shown = session.project_call("POST", "/api/get_issues", count_only="1")["count"]
            every = session.project_call(
                "POST", "/api/get_issues", count_only="1", default_to_all_issues="true"
            )["count"]
        finally:
            session.logout()
        assert 0 < shown < every
        result = extract(app, tmp_path)
        live = app.counts()
    assert result.completed
    assert len(staged_issue_ids(tmp_path)) == live["issues"]


class HidingFieldApp(RecordingFieldApp):
    """Lists every issue but those in ``hidden``, whatever the client asks for."""

    hidden: frozenset[str] = frozenset()

    def _get_issues(self, request: Request) -> Response:
        response = super()._get_issues(request)
        assert isinstance(response.body, bytes)
        rows = json.loads(response.body)
        return json_response([row for row in rows if row["id"] not in self.hidden])


def test_a_listing_short_of_the_search_count_stops_and_marks_nothing_deleted(
    tmp_path: Path,
) -> None:
    project = GeneratedProject(seed=12, issues=120)
    with serve(project, app_class=HidingFieldApp) as app:
        first = extract(app, tmp_path)
        assert first.completed
        before = staged_issue_ids(tmp_path)
        listed = [r["id"] for r in project.main.iter_issues() if r["fields"]["f--status"] != "Void"]
        app.hidden = frozenset(listed[:7])
        with pytest.raises(ListingNotWhole) as stopped:
            extract(app, tmp_path)
        # (The hiding shortens a page, which also ends the listing early: fewer still listed.)
        listed_count = int(re.search(r"listed (\d+) issues", str(stopped.value))[1])  # type: ignore[index]
        assert listed_count <= len(before) - 7
        assert f"search counts {len(before)}" in str(stopped.value)
        assert "migrate extract" in str(stopped.value)
        # The hidden issues are still live in staging: nothing was taken for deleted.
        assert staged_issue_ids(tmp_path, deleted=True) == set()
        assert staged_issue_ids(tmp_path) == before
        conn = sqlite3.connect(tmp_path / "staging.db")
        try:
            problems = [row[0] for row in conn.execute("SELECT reason FROM source_problems")]
        finally:
            conn.close()
        assert any("search counts" in reason for reason in problems)
        # Once the login sees everything again, the next run lists from the start and finishes.
        app.hidden = frozenset()
        again = extract(app, tmp_path)
    assert again.completed
    assert staged_issue_ids(tmp_path) == before
