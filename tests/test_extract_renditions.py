"""Issue signature images and marked-up renditions, staged as files of their own (issue 15).

Over loopback against the Field simulator: every signature an issue's signature field holds is
an attachments row named after the field, saying who signed when, with the generator's bytes;
every marked-up page of a photo or document is a row of its own beside the original (its
``composite`` rendition, ``rendition_of`` naming the original), under each reading of when
``composites`` lists a page.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from migrate.sandbox.generator import GeneratedProject, derived_size, sha256_of_chunks
from migrate.store import BlobStore
from tests.test_extract import extract, serve


@pytest.fixture(scope="module")
def project() -> GeneratedProject:
    return GeneratedProject(seed=11, issues=160, checklists=4)


def rows(db: Path, sql: str) -> list[dict[str, Any]]:
    """Rows of ``sql`` as dicts."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute(sql)]
    finally:
        conn.close()


def issue_signature_rows(db: Path) -> dict[str, dict[str, Any]]:
    sql = "SELECT * FROM attachments WHERE kind = 'Signature' AND container_type = 'Issue'"
    return {row["id"]: row for row in rows(db, sql)}


def test_issue_signatures_are_staged_named_after_their_field_with_signer_and_time(
    project: GeneratedProject, tmp_path: Path
) -> None:
    data = project.main
    names = {d["custom_field_id"]: d["name"] for d in data.custom_fields}
    wanted = {
        s["id"]: (record["id"], s) for record in data.iter_issues() for s in record["signatures"]
    }
    assert len(wanted) >= 5  # the generator signs enough issues to matter
    with serve(project) as app:
        extract(app, tmp_path)
    staged = issue_signature_rows(tmp_path / "staging.db")
    assert set(staged) == set(wanted)
    blobs = BlobStore(tmp_path / "blobs")
    for signature_id, (issue_id, signature) in wanted.items():
        row = staged[signature_id]
        field_id = signature["custom_field_definition_id"]
        assert row["container_id"] == issue_id
        assert row["custom_field_id"] == field_id
        assert row["filename"] == f"{names[field_id]}.png"
        assert row["created_by"] == signature["created_by"]
        assert row["created_at"] == signature["created_at"]
        assert row["caption"] == f"signed by {signature['created_by']} on {signature['created_at']}"
        sha256 = project.attachment_sha256(signature_id, signature["size"], "image/png")
        assert (row["state"], row["sha256"], row["size"]) == ("stored", sha256, signature["size"])
        assert blobs.verify(sha256)


def _expected_composites(
    project: GeneratedProject, reading: str = "marked_up"
) -> dict[str, tuple[str, str, int, str]]:
    """composite row id -> (original id, sha256, size, filename) as the generator serves it.

    Under the "every_page" reading ``markup`` is per file, so every page of a marked-up file
    is staged (the client cannot tell the pages apart).
    """
    expected = {}
    for record in project.main.iter_issues():
        for item in record["attachments"]:
            pages = item.get("markup_pages") or []
            if pages and reading == "every_page":
                pages = list(range(item.get("num_pages") or 1))
            for page in pages:
                variant = f"composite:{page}"
                size = derived_size(item["size"], variant)
                blob_id = item.get("document_id") or item["id"]
                sha256 = sha256_of_chunks(
                    project.attachment_chunks(blob_id, size, "image/jpeg", variant)
                )
                name = item["name"] if item["type"] == "Attachment" else None
                stem = name.rsplit(".", 1)[0] if name else f"DocumentReference {item['id']}"
                where = f", page {page + 1}" if len(pages) > 1 or page else ""
                expected[f"{item['id']}:composite:{page}"] = (
                    item["id"],
                    sha256,
                    size,
                    f"{stem} (marked up{where}).jpg",
                )
    return expected


@pytest.mark.parametrize("reading", ["marked_up", "every_page"])
def test_marked_up_pages_are_staged_beside_the_original_with_the_composite_bytes(
    project: GeneratedProject, tmp_path: Path, reading: str
) -> None:
    expected = _expected_composites(project, reading)
    assert len(expected) >= 10
    with serve(project, composites=reading) as app:
        extract(app, tmp_path)
    staged = {
        row["id"]: row
        for row in rows(
            tmp_path / "staging.db", "SELECT * FROM attachments WHERE rendition_of IS NOT NULL"
        )
    }
    assert set(staged) == set(expected)
    originals = {
        row["id"]: row
        for row in rows(
            tmp_path / "staging.db", "SELECT * FROM attachments WHERE rendition_of IS NULL"
        )
    }
    blobs = BlobStore(tmp_path / "blobs")
    for row_id, (original_id, sha256, size, filename) in expected.items():
        row = staged[row_id]
        original = originals[original_id]
        assert row["rendition_of"] == original_id
        assert row["rendition_page"] == int(row_id.rsplit(":", 1)[1])
        assert (row["container_type"], row["container_id"], row["kind"]) == (
            original["container_type"],
            original["container_id"],
            original["kind"],
        )
        assert row["filename"] == filename
        assert row["content_type"] == "image/jpeg"
        assert (row["state"], row["sha256"], row["size"]) == ("stored", sha256, size)
        assert original["state"] == "stored" and original["sha256"] != sha256
        assert blobs.verify(sha256)


def test_a_file_without_a_markup_gets_no_composite_row(
    project: GeneratedProject, tmp_path: Path
) -> None:
    """Under the reading that lists every page, ``markup: []`` means none is marked up."""
    with serve(project, composites="every_page") as app:
        extract(app, tmp_path)
    marked = {original for original, *_ in _expected_composites(project).values()}
    found = rows(
        tmp_path / "staging.db",
        "SELECT DISTINCT rendition_of FROM attachments WHERE rendition_of IS NOT NULL",
    )
    assert {row["rendition_of"] for row in found} == marked


def test_signatures_named_only_by_their_field_are_still_staged(
    project: GeneratedProject, tmp_path: Path
) -> None:
    """The reading where retrieve lists no ``signatures``: the field's value names the image;
    the file is still fetched and named after its field (who signed when is then unknown)."""
    data = project.main
    names = {d["custom_field_id"]: d["name"] for d in data.custom_fields}
    wanted = {s["id"]: s for record in data.iter_issues() for s in record["signatures"]}
    with serve(project, issue_signatures="field_only") as app:
        extract(app, tmp_path)
    staged = issue_signature_rows(tmp_path / "staging.db")
    assert set(staged) == set(wanted)
    for signature_id, signature in wanted.items():
        row = staged[signature_id]
        field_id = signature["custom_field_definition_id"]
        assert (row["custom_field_id"], row["filename"]) == (field_id, f"{names[field_id]}.png")
        assert row["caption"] is None
        sha256 = project.attachment_sha256(signature_id, signature["size"], "image/png")
        assert (row["state"], row["sha256"]) == ("stored", sha256)


def test_marked_up_renditions_reach_the_procore_issue_beside_the_original(
    tmp_path: Path,
) -> None:
    """Through transform and load unchanged: the composite is one more file of the issue."""
    staging, issues = migrate_generated_project(tmp_path)
    staged = rows(
        staging,
        "SELECT c.container_id, c.filename, c.sha256, o.filename AS original, "
        "o.sha256 AS original_sha256 FROM attachments c JOIN attachments o "
        "ON o.id = c.rendition_of WHERE c.state = 'stored' AND c.container_type = 'Issue'",
    )
    loaded = [row for row in staged if row["container_id"] in issues]
    assert loaded  # some marked-up file belongs to an issue Procore now has
    for row in loaded:
        files = {(a["name"], a["sha256"]) for a in issues[row["container_id"]]["attachments"]}
        assert (row["filename"], row["sha256"]) in files
        assert row["original_sha256"] in {sha256 for _, sha256 in files}


def test_issue_signature_images_reach_the_procore_issue_named_after_their_field(
    tmp_path: Path,
) -> None:
    """Transform uploads each staged signature with its issue; the field's footer line names
    the file instead of the signature's id, and the caption keeps who signed when."""
    staging, issues = migrate_generated_project(tmp_path)
    signatures = rows(
        staging,
        "SELECT id, container_id, filename, sha256, caption FROM attachments "
        "WHERE kind = 'Signature' AND container_type = 'Issue' AND state = 'stored'",
    )
    loaded = [row for row in signatures if row["container_id"] in issues]
    assert loaded  # some signed issue is in Procore now
    for row in loaded:
        issue = issues[row["container_id"]]
        assert (row["filename"], row["sha256"]) in {
            (a["name"], a["sha256"]) for a in issue["attachments"]
        }
        description = issue["description"]
        assert f"signed (the image is the file {row['filename']})" in description
        assert row["caption"] in description
        assert row["id"] not in description  # the signature's id is no value for a reader


def migrate_generated_project(workdir: Path) -> tuple[Path, dict[str, dict[str, Any]]]:
    """A 40-issue generated project through extract, transform and load: the staging DB and
    the Procore issues by their Field id."""
    from migrate.demo import write_demo_config
    from migrate.extract import extract_from_settings
    from migrate.load import load_from_settings
    from migrate.mappings import write_default_mappings
    from migrate.sandbox.runner import Sandbox, SandboxOptions
    from migrate.settings import load_settings
    from migrate.transform import transform_from_settings

    with Sandbox(SandboxOptions(issues=40, seed=11, procore_options={"spike_limit": 2000})) as box:
        write_default_mappings(workdir / "mappings")
        settings = load_settings(write_demo_config(workdir, box))
        env = box.environment()
        extract_from_settings(settings, env)
        transform_from_settings(settings, env)
        load_from_settings(settings, env)
        issues = {
            i["origin"]["origin_id"]: i
            for i in box.procore_app.issues(box.procore_project_id)
            if i.get("origin")
        }
    return Path(settings.staging.path), issues
