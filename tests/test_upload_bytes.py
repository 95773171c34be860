"""Load proves the bytes it uploads, and the blob store owns only what it made (issue 13, 3-4).

Real files and real HTTP against the Procore (and BIM 360 Field) simulators on loopback: blobs
are damaged on disk the way a machine or an operator damages them (a link put in place of the
file, a truncation, a same-size corruption), then load runs, and the test checks what Procore
holds, what the staging DB kept and what is left on disk.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from migrate.errors import EXIT_OK, EXIT_QUARANTINED, EXIT_USAGE
from migrate.extract import extract_from_settings
from migrate.load import load_from_settings
from migrate.sandbox.httpbase import RunningServer
from migrate.sandbox.procore_server import ProcoreApp
from migrate.sandbox.runner import Sandbox, SandboxOptions
from migrate.store import BlobStore
from migrate.store.blobs import MARKER_NAME
from migrate.transform import transform_from_settings
from tests.test_load import GENEROUS, PROCORE_ENV, PROJECT, plant, settings_for

BLOB_SIZE = 1500


@pytest.fixture
def procore() -> Iterator[ProcoreApp]:
    app = ProcoreApp(**GENEROUS)
    server = RunningServer(app)
    app.url = server.url  # type: ignore[attr-defined]
    yield app
    server.stop()
    app.close()


def rows(db: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


def procore_digests(app: ProcoreApp) -> set[str]:
    """The sha256 of every file the simulator holds: stored uploads and issue attachments."""
    project = app.snapshot()["projects"][str(PROJECT)]
    found = {u["sha256"] for u in project["uploads"] if u["sha256"]}
    found |= {a["sha256"] for i in project["issues"] for a in i["attachments"]}
    return found


def by_origin(app: ProcoreApp, project_id: int = PROJECT) -> dict[str, dict[str, object]]:
    """Issues migrate created (the simulator's project also holds one made by hand)."""
    return {i["origin"]["origin_id"]: i for i in app.issues(project_id) if i.get("origin")}


def test_a_blob_that_is_not_the_downloaded_file_is_never_uploaded(
    procore: ProcoreApp, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, procore.url)  # type: ignore[attr-defined]
    ids = plant(settings, 4, attachments=1, blob_size=BLOB_SIZE)  # one file per issue
    staged = dict(
        rows(settings.staging.path, "SELECT container_id, sha256 FROM attachments")  # type: ignore[arg-type]
    )
    blobs = BlobStore(settings.staging.blobs)
    originals = {
        source_id: blobs.path_for(str(staged[source_id])).read_bytes() for source_id in ids
    }

    # 0: a link to someone's file of the very same size; 1: truncated; 2: same size, changed.
    secret = tmp_path / "private.key"
    secret.write_bytes(b"k" * BLOB_SIZE)
    secret.chmod(0o600)
    linked = blobs.path_for(str(staged[ids[0]]))
    linked.unlink()
    linked.symlink_to(secret)
    blobs.path_for(str(staged[ids[1]])).write_bytes(originals[ids[1]][:700])
    changed = bytearray(originals[ids[2]])
    changed[BLOB_SIZE // 2] ^= 0x01
    blobs.path_for(str(staged[ids[2]])).write_bytes(bytes(changed))

    first = load_from_settings(settings, PROCORE_ENV)

    assert first.exit_code == EXIT_QUARANTINED
    # Procore holds no wrong file: not the linked file, not the changed one, nothing partial.
    wrong = {hashlib.sha256(b).hexdigest() for b in (secret.read_bytes(), bytes(changed))}
    held = procore_digests(procore)
    assert not held & wrong
    assert held == {staged[ids[3]]}
    assert set(by_origin(procore)) == {ids[3]}
    # The link and the truncated file were refused before any upload was created; the changed
    # file was cut off before its last bytes, so storage never stored it.
    assert procore.call_counts()["uploads.create"] == 2
    uploads_held = procore.snapshot()["projects"][str(PROJECT)]["uploads"]
    assert sorted((u["state"], u["sha256"]) for u in uploads_held) == [
        ("created", None),
        ("referenced", staged[ids[3]]),
    ]

    reasons = dict(
        rows(
            settings.staging.path,
            "SELECT source_id, reason FROM quarantine WHERE stage = 'load' AND released_at IS NULL",
        )
    )
    assert set(reasons) == set(ids[:3])
    assert "is a symbolic link" in str(reasons[ids[0]])
    assert f"has 700 bytes, not the {BLOB_SIZE} downloaded" in str(reasons[ids[1]])
    assert (
        f"has sha256 {hashlib.sha256(changed).hexdigest()}, not the {staged[ids[2]]} expected"
        in str(reasons[ids[2]])
    )
    for reason in reasons.values():
        assert "was not sent to Procore" in str(reason) and "migrate extract" in str(reason)
    uploads = {
        r[0]: r[1:]
        for r in rows(
            settings.staging.path, "SELECT attachment_id, state, sent_sha256, sha256 FROM uploads"
        )
    }
    assert uploads["att-00002"][:2] == ("failed", None)
    assert uploads["att-00003"] == ("referenced", staged[ids[3]], staged[ids[3]])
    # Damaged copies are moved aside (the link itself), never deleted; the linked file is intact.
    assert secret.read_bytes() == b"k" * BLOB_SIZE and stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert sorted(p.is_symlink() for p in blobs.damaged.iterdir()) == [False, False, True]
    assert not any(blobs.has(str(staged[s])) for s in ids[:3])

    # What extract does for a file gone from the blob store: download it again.
    for source_id in ids[:3]:
        blobs.write_stream([originals[source_id]], expected_size=BLOB_SIZE)
    second = load_from_settings(settings, PROCORE_ENV)

    assert second.exit_code == EXIT_OK
    issues = by_origin(procore)
    assert set(issues) == set(ids)
    for source_id in ids:
        assert [a["sha256"] for a in issues[source_id]["attachments"]] == [staged[source_id]]  # type: ignore[attr-defined]
    sent = rows(settings.staging.path, "SELECT sha256, sent_sha256, state FROM uploads")
    assert all(row[0] == row[1] and row[2] == "referenced" for row in sent)


def test_an_upload_stored_without_a_sent_sha256_is_made_again(
    procore: ProcoreApp, tmp_path: Path
) -> None:
    """A stored upload from a migrate that did not hash what it sent proves nothing."""
    settings = settings_for(tmp_path, procore.url)  # type: ignore[attr-defined]
    plant(settings, 1, attachments=1)
    from migrate.clients.procore import ProcoreClient
    from migrate.settings import target_credentials

    (sha256,) = rows(settings.staging.path, "SELECT sha256 FROM attachments")[0]
    with ProcoreClient(settings.target, target_credentials(PROCORE_ENV)) as client:
        # Storage got other bytes under this upload: nothing in the DB can tell.
        old = client.create_upload(PROJECT, "IMG_0.jpg", "image/jpeg")
        other = tmp_path / "other.jpg"
        other.write_bytes(b"not the photo")
        with other.open("rb") as source:
            client.put_upload_bytes(
                old, source, sha256=hashlib.sha256(b"not the photo").hexdigest()
            )
    with sqlite3.connect(settings.staging.path) as conn:
        conn.execute(
            "INSERT INTO uploads (attachment_id, target_project_id, sha256, upload_uuid, state, "
            "created_at, updated_at) VALUES ('att-00000', ?, ?, ?, 'stored', "
            "strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 'x')",
            (PROJECT, sha256, old.uuid),
        )
    result = load_from_settings(settings, PROCORE_ENV)
    assert result.exit_code == EXIT_OK
    (issue,) = by_origin(procore).values()
    assert [a["sha256"] for a in issue["attachments"]] == [sha256]
    assert issue["attachments"][0]["upload_uuid"] != old.uuid


def test_a_damaged_blob_is_downloaded_again_by_the_next_extract(tmp_path: Path) -> None:
    with Sandbox(SandboxOptions(issues=30, seed=11, procore_options=GENEROUS)) as box:
        settings = settings_for(
            tmp_path, box.procore_url, field_url=box.field_url, field_project=box.field_project_id
        )
        env = box.environment()
        extract_from_settings(settings, env)
        transform_from_settings(settings, env)
        db = settings.staging.path
        attachment_id, source_id, sha256, size = rows(
            db,
            "SELECT a.id, a.container_id, a.sha256, a.size FROM attachments a "
            "JOIN planned_issues p ON p.source_id = a.container_id "
            "WHERE a.state = 'stored' AND a.container_type = 'Issue' "
            "AND EXISTS (SELECT 1 FROM json_each(p.attachment_ids) j WHERE j.value = a.id) "
            "ORDER BY a.id LIMIT 1",
        )[0]
        blobs = BlobStore(settings.staging.blobs)
        path = blobs.path_for(str(sha256))
        elsewhere = tmp_path / "elsewhere.bin"
        elsewhere.write_bytes(b"\0" * int(size))  # type: ignore[call-overload]
        path.unlink()
        path.symlink_to(elsewhere)

        first = load_from_settings(settings, env)
        assert first.exit_code == EXIT_QUARANTINED
        assert source_id not in by_origin(box.procore_app, box.procore_project_id)
        wrong = hashlib.sha256(elsewhere.read_bytes()).hexdigest()
        project = box.procore_app.snapshot()["projects"][str(box.procore_project_id)]
        assert wrong not in {u["sha256"] for u in project["uploads"]}

        extracted = extract_from_settings(settings, env)
        assert rows(
            db,
            "SELECT state, sha256, downloaded_run FROM attachments WHERE id = ?",
            (attachment_id,),
        )[0] == ("stored", sha256, extracted.run_id)
        assert blobs.verify(str(sha256)) and not path.is_symlink()
        transform_from_settings(settings, env)
        second = load_from_settings(settings, env)

        assert second.exit_code in (EXIT_OK, EXIT_QUARANTINED)
        issues = by_origin(box.procore_app, box.procore_project_id)
        files = {a["name"]: a["sha256"] for a in issues[source_id]["attachments"]}
        assert sha256 in files.values()
        assert (
            rows(
                db,
                "SELECT source_id FROM quarantine WHERE stage = 'load' AND released_at IS NULL "
                "AND source_id = ?",
                (source_id,),
            )
            == []
        )
        assert elsewhere.read_bytes() == b"\0" * int(size)  # type: ignore[call-overload]


def test_extract_refuses_a_blobs_folder_it_did_not_create(tmp_path: Path) -> None:
    folder = tmp_path / "Documents"
    folder.mkdir()
    (folder / "contract.pdf").write_bytes(b"%PDF signed")
    (folder / "contract.pdf").chmod(0o644)
    folder.chmod(0o755)
    config = tmp_path / "migration.toml"
    config.write_text(
        '[source]\nbase_url = "http://127.0.0.1:9"\nproject_id = "p"\n'
        f'[staging]\npath = "staging.db"\nblobs = "{folder.as_posix()}"\nlogs = "logs"\n',
        encoding="utf-8",
    )
    env = {
        **os.environ,
        "BIM360_FIELD_USERNAME": "someone@example.com",
        "BIM360_FIELD_PASSWORD": "not-used",
    }
    done = subprocess.run(
        [sys.executable, "-c", "from migrate.cli import main; main()", "extract"]
        + ["--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == EXIT_USAGE, done.stderr
    assert done.stderr.startswith("Error: ") and len(done.stderr.strip().splitlines()) == 1
    assert str(folder) in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["contract.pdf"]
    assert not (folder / MARKER_NAME).exists()
    assert (folder / "contract.pdf").read_bytes() == b"%PDF signed"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert stat.S_IMODE((folder / "contract.pdf").stat().st_mode) == 0o644
