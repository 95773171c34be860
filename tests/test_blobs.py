"""Content-addressed blob store: layout, dedupe, size checks, digest validation, crash cleanup."""

from __future__ import annotations

import hashlib
import itertools
import os
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from migrate.errors import EXIT_USAGE
from migrate.store import BlobSizeMismatch, BlobStore
from migrate.store import blobs as blobs_module
from migrate.store.blobs import FORMAT_LINE, MARKER_NAME, BlobStoreRefused, UnsafeBlob


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def chunked(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def stored_files(store: BlobStore) -> list[Path]:
    return sorted(
        p
        for p in store.root.rglob("*")
        if p.is_file() and store.tmp not in p.parents and p.name != MARKER_NAME
    )


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


def test_root_and_tmp_are_private(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "new" / "blobs")
    assert mode(store.root) == 0o700 and mode(store.tmp) == 0o700
    marker = store.root / MARKER_NAME
    assert marker.read_text(encoding="utf-8").splitlines()[0] == FORMAT_LINE
    assert mode(marker) == 0o600


def test_an_empty_folder_is_adopted_and_its_mode_left_alone(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o755)
    store = BlobStore(loose)
    assert mode(loose) == 0o755  # not made by migrate: never chmodded
    assert (loose / MARKER_NAME).read_text(encoding="utf-8").startswith(FORMAT_LINE + "\n")
    info = store.write_stream([b"photo"])
    assert mode(info.path) == 0o600 and mode(info.path.parent) == 0o700  # what it made
    assert BlobStore(loose).verify(info.sha256)  # marked: opened again as its own


def test_write_stream_stores_by_content(blobs: BlobStore) -> None:
    data = os.urandom(300_000)
    digest = hashlib.sha256(data).hexdigest()

    info = blobs.write_stream(chunked(data), expected_size=len(data))

    assert (info.sha256, info.size) == (digest, len(data))
    assert info.path == blobs.root / digest[:2] / digest[2:4] / digest
    assert info.path.read_bytes() == data
    assert mode(info.path) == 0o600 and mode(info.path.parent) == 0o700
    assert blobs.has(digest) and blobs.verify(digest)
    assert list(blobs.tmp.iterdir()) == []


def test_unknown_size_and_empty_stream(blobs: BlobStore) -> None:
    info = blobs.write_stream(iter([b"abc", bytearray(b"def"), memoryview(b"ghi")]))
    assert (info.size, info.sha256) == (9, hashlib.sha256(b"abcdefghi").hexdigest())
    empty = blobs.write_stream(iter([]), expected_size=0)
    assert (empty.size, empty.sha256) == (0, hashlib.sha256(b"").hexdigest())


def test_same_content_twice_is_stored_once(blobs: BlobStore) -> None:
    data = b"photo bytes" * 1000
    first = blobs.write_stream(chunked(data, 999))
    inode = first.path.stat().st_ino
    second = blobs.write_stream(chunked(data, 4096), expected_size=len(data))

    assert second == first
    assert first.path.stat().st_ino == inode  # the second copy was dropped, not swapped in
    assert stored_files(blobs) == [first.path]
    assert list(blobs.tmp.iterdir()) == []


def test_a_damaged_copy_is_replaced(blobs: BlobStore) -> None:
    data = b"x" * 10_000
    info = blobs.write_stream([data])
    info.path.write_bytes(data[:5000])  # truncated by a disk problem
    assert not blobs.verify(info.sha256)
    blobs.write_stream([data])
    assert blobs.verify(info.sha256) and info.path.read_bytes() == data


def test_verify_spots_changed_content(blobs: BlobStore) -> None:
    info = blobs.write_stream([b"original"])
    info.path.write_bytes(b"origiNal")
    assert not blobs.verify(info.sha256)
    assert not blobs.verify("0" * 64)


def test_short_stream_is_a_size_mismatch_and_stores_nothing(blobs: BlobStore) -> None:
    with pytest.raises(BlobSizeMismatch) as error:
        blobs.write_stream([b"12345"], expected_size=10)
    assert (error.value.expected, error.value.actual) == (10, 5)
    assert str(error.value) == "expected 10 bytes, received 5"
    assert not blobs.has(hashlib.sha256(b"12345").hexdigest())
    assert list(blobs.tmp.iterdir()) == [] and stored_files(blobs) == []


def test_long_stream_is_abandoned_as_soon_as_it_overruns(blobs: BlobStore) -> None:
    endless = itertools.repeat(b"z" * 64)  # reading it to the end would never return
    with pytest.raises(BlobSizeMismatch) as error:
        blobs.write_stream(endless, expected_size=100)
    assert (error.value.expected, error.value.actual, error.value.complete) == (100, 128, False)
    assert str(error.value) == "expected 100 bytes, received more than 100 (stopped at 128)"
    assert list(blobs.tmp.iterdir()) == [] and stored_files(blobs) == []


def test_failing_source_leaves_no_temp_file(blobs: BlobStore) -> None:
    def broken() -> Iterator[bytes]:
        yield b"first half"
        raise ConnectionResetError("peer hung up")

    with pytest.raises(ConnectionResetError, match="peer hung up"):
        blobs.write_stream(broken(), expected_size=1000)
    with pytest.raises(TypeError, match="blob chunks must be bytes, got str"):
        blobs.write_stream(["text"])
    assert list(blobs.tmp.iterdir()) == [] and stored_files(blobs) == []


@pytest.mark.parametrize(
    "digest",
    [
        "",
        "abc",
        "A" * 64,  # upper case: hexdigest() never produces it, so it is not a key
        "g" * 64,
        "a" * 63,
        "a" * 65,
        "a" * 63 + "\n",
        "a" * 32 + "\x00" + "a" * 31,
        "../" * 21 + "a",
        "/etc/passwd",
        "aa/bb/" + "a" * 58,
        "..\\" * 21 + "a",
        "a" * 10_000,
        None,
        b"a" * 64,
        42,
    ],
)
def test_anything_but_a_digest_is_refused(blobs: BlobStore, digest: object) -> None:
    with pytest.raises(ValueError, match=r"not a sha256 hex digest \(64 lowercase hex"):
        blobs.path_for(digest)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        blobs.has(digest)  # type: ignore[arg-type]


def test_error_for_a_huge_bad_digest_is_short(blobs: BlobStore) -> None:
    with pytest.raises(ValueError) as error:
        blobs.path_for("x" * 10_000)
    assert len(str(error.value)) < 200


def test_valid_digest_paths_stay_under_root(blobs: BlobStore) -> None:
    for digest in ("0" * 64, "f" * 64, hashlib.sha256(b"..").hexdigest()):
        path = blobs.path_for(digest)
        assert path.resolve().is_relative_to(blobs.root.resolve())
        assert path.relative_to(blobs.root).parts == (digest[:2], digest[2:4], digest)


# --- crash cleanup -------------------------------------------------------------------------------

SLOW_WRITER = textwrap.dedent(
    """
    import sys, time
    from migrate.store import BlobStore

    def stream():
        yield b"a" * 100_000
        print("half written", flush=True)
        time.sleep(60)
        yield b"b" * 100_000

    BlobStore(sys.argv[1]).write_stream(stream(), expected_size=200_000)
    """
)


@pytest.mark.slow
def test_sweep_removes_temp_files_of_a_killed_writer_only(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    child = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline()
        assert line == "half written\n", child.stderr.read()
        store = BlobStore(root)
        (leftover,) = store.tmp.iterdir()
        assert leftover.name.startswith(f"{child.pid}-")

        assert store.sweep_temp() == 0  # the writer is alive: its file stays
        assert leftover.exists()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        child.stderr.close()

    assert leftover.exists()  # kill -9 leaves the temp file behind
    assert store.sweep_temp() == 1
    assert list(store.tmp.iterdir()) == [] and stored_files(store) == []


def test_sweep_spares_writes_in_progress_here_and_removes_stale_ones(blobs: BlobStore) -> None:
    # A file named with our pid that we are not writing: an earlier process that had our pid.
    stale = blobs.tmp / f"{os.getpid()}-earlier_.part"
    stale.write_bytes(b"left over")
    (blobs.tmp / "not-a-pid.part").write_bytes(b"?")
    swept: list[int] = []

    def stream() -> Iterator[bytes]:
        yield b"first"
        swept.append(BlobStore(blobs.root).sweep_temp())  # another instance, same process
        yield b"second"

    info = blobs.write_stream(stream(), expected_size=11)
    assert swept == [1]
    assert info.path.read_bytes() == b"firstsecond"
    # Not a name the store gives its temp files: not its to delete.
    assert [p.name for p in blobs.tmp.iterdir()] == ["not-a-pid.part"]


# --- the store owns only what it made ---------------------------------------------------------


def snapshot(folder: Path) -> dict[str, tuple[int, bytes | str]]:
    """Every entry under ``folder`` (links not followed): its mode and content or link target."""
    found: dict[str, tuple[int, bytes | str]] = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            found[path.relative_to(folder).as_posix()] = (info.st_mode, os.readlink(path))
        elif path.is_file():
            found[path.relative_to(folder).as_posix()] = (info.st_mode, path.read_bytes())
        else:
            found[path.relative_to(folder).as_posix()] = (info.st_mode, "")
    found["."] = (folder.lstat().st_mode, "")
    return found


def someones_folder(path: Path) -> Path:
    """A folder with somebody's files in it, in assorted modes, some named like ours."""
    path.mkdir()
    (path / "report.docx").write_bytes(b"quarterly report")
    (path / "ab").mkdir()
    (path / "ab" / "notes.txt").write_text("not a blob")
    (path / "tmp").mkdir()
    (path / "tmp" / "1-abcdefgh.part").write_bytes(b"named like a temp file of a dead pid")
    (path / "report.docx").chmod(0o644)
    (path / "ab").chmod(0o755)
    path.chmod(0o750)
    return path


def test_a_non_empty_folder_it_did_not_create_is_refused_untouched(tmp_path: Path) -> None:
    folder = someones_folder(tmp_path / "documents")
    before = snapshot(folder)
    with pytest.raises(BlobStoreRefused) as refused:
        BlobStore(folder)
    message = str(refused.value)
    assert str(folder) in message and "not empty" in message and "\n" not in message
    assert refused.value.exit_code == EXIT_USAGE
    assert snapshot(folder) == before  # content, names and modes: nothing changed or added


def test_the_layout_of_an_earlier_migrate_is_adopted(tmp_path: Path) -> None:
    # What migrate wrote before it marked its root: aa/bb/<sha256> and tmp/, no marker.
    root = tmp_path / "blobs"
    data = b"photo from an earlier run"
    digest = hashlib.sha256(data).hexdigest()
    (root / digest[:2] / digest[2:4]).mkdir(parents=True)
    (root / digest[:2] / digest[2:4] / digest).write_bytes(data)
    (root / "tmp").mkdir()
    store = BlobStore(root)
    assert (root / MARKER_NAME).read_text(encoding="utf-8").startswith(FORMAT_LINE)
    assert store.has(digest) and store.verify(digest)


@pytest.mark.parametrize(
    "extra",
    ["notes.txt", "ABC", "a1/b2c", "a1/notes.txt"],
)
def test_a_lookalike_of_the_earlier_layout_is_refused(tmp_path: Path, extra: str) -> None:
    root = tmp_path / "blobs"
    (root / "a1" / "b2").mkdir(parents=True)
    (root / "tmp").mkdir()
    target = root / extra
    target.parent.mkdir(parents=True, exist_ok=True)
    if "." in extra:
        target.write_text("someone's")
    else:
        target.mkdir()
    before = snapshot(root)
    with pytest.raises(BlobStoreRefused, match="not empty"):
        BlobStore(root)
    assert snapshot(root) == before


def test_a_marker_of_a_newer_format_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    root.mkdir()
    (root / MARKER_NAME).write_text("migrate blob store, format 2\n")
    with pytest.raises(BlobStoreRefused, match="'2' format"):
        BlobStore(root)


def test_a_symlinked_root_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "blobs").symlink_to(real, target_is_directory=True)
    with pytest.raises(BlobStoreRefused, match="is a symbolic link"):
        BlobStore(tmp_path / "blobs")
    assert list(real.iterdir()) == []


def test_a_symlinked_tmp_is_refused_and_nothing_behind_it_is_deleted(tmp_path: Path) -> None:
    elsewhere = someones_folder(tmp_path / "elsewhere")
    (elsewhere / "4194304-zzzzzzzz.part").write_bytes(b"a dead pid's name, not ours")
    before = snapshot(elsewhere)
    # A fresh store whose tmp is then replaced by a link, and an earlier-layout store found so.
    store = BlobStore(tmp_path / "blobs")
    store.tmp.rmdir()
    store.tmp.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(BlobStoreRefused, match="tmp is a symbolic link"):
        store.sweep_temp()
    with pytest.raises(BlobStoreRefused, match="tmp is a symbolic link"):
        BlobStore(store.root)
    with pytest.raises(BlobStoreRefused, match="tmp is a symbolic link"):
        store.write_stream([b"x"])
    old = tmp_path / "old-blobs"
    (old / "ab" / "cd").mkdir(parents=True)
    (old / "tmp").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(BlobStoreRefused):
        BlobStore(old)
    assert not (old / MARKER_NAME).exists()
    assert snapshot(elsewhere) == before


@pytest.fixture(params=["owner checked", "no getuid"])
def owner_check(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run once as this OS does, once as a platform without os.getuid (Windows) does."""
    if request.param == "no getuid":
        monkeypatch.delattr(os, "getuid", raising=False)
    elif not hasattr(os, "getuid"):
        pytest.skip("this OS has no os.getuid")
    return str(request.param)


def test_sweep_deletes_only_its_own_temp_names(
    blobs: BlobStore, tmp_path: Path, owner_check: str
) -> None:
    dead = 4_194_304 + 17  # above the usual pid_max: no such process
    outside = tmp_path / "outside.txt"
    outside.write_text("someone else's file")
    ours = blobs.tmp / f"{dead}-abc_e9gh.part"
    ours.write_bytes(b"left by a killed writer")
    foreign = {
        "notes.txt": b"foreign",
        f"{dead}-abc.part": b"not the name mkstemp gives",
        f"{dead}-abcdefgh.partial": b"other suffix",
        f"x{dead}-abcdefgh.part": b"other prefix",
    }
    for name, data in foreign.items():
        (blobs.tmp / name).write_bytes(data)
    (blobs.tmp / f"{dead}-linklink.part").symlink_to(outside)
    (blobs.tmp / f"{dead}-folderxx.part").mkdir()
    assert blobs.sweep_temp() == 1
    assert not ours.exists()
    for name, data in foreign.items():
        assert (blobs.tmp / name).read_bytes() == data
    assert (blobs.tmp / f"{dead}-linklink.part").is_symlink()
    assert (blobs.tmp / f"{dead}-folderxx.part").is_dir()
    assert outside.read_text() == "someone else's file"


# --- blobs are read, never followed -------------------------------------------------------------


@pytest.fixture(params=["O_NOFOLLOW", "lstat fallback"])
def nofollow(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run once as this OS does, once as a platform without O_NOFOLLOW (Windows) does."""
    if request.param == "lstat fallback":
        monkeypatch.setattr(blobs_module, "_O_NOFOLLOW", 0)
    elif not blobs_module._O_NOFOLLOW:
        pytest.skip("this OS has no O_NOFOLLOW")
    return str(request.param)


def test_a_blob_replaced_by_a_link_is_never_read(
    blobs: BlobStore, tmp_path: Path, nofollow: str
) -> None:
    data = b"the photo" * 100
    info = blobs.write_stream([data])
    secret = tmp_path / "secret.txt"
    secret.write_bytes(data)  # even with the very same content: a link is not our file
    secret.chmod(0o640)
    info.path.unlink()
    info.path.symlink_to(secret)

    assert not blobs.has(info.sha256)
    assert not blobs.verify(info.sha256)
    with pytest.raises(UnsafeBlob, match="is a symbolic link"):
        blobs.open(info.sha256)
    moved = blobs.set_aside(info.sha256)
    assert moved is not None and moved.parent == blobs.damaged and moved.is_symlink()
    assert not info.path.exists() and not info.path.is_symlink()
    assert secret.read_bytes() == data and mode(secret) == 0o640

    again = blobs.write_stream([data])  # the next download puts a real file back
    assert again.path == info.path and not info.path.is_symlink() and blobs.verify(info.sha256)


def test_a_link_on_the_way_to_a_blob_is_never_followed(
    blobs: BlobStore, tmp_path: Path, nofollow: str
) -> None:
    data = b"plan.pdf bytes"
    info = blobs.write_stream([data])
    elsewhere = tmp_path / "elsewhere"
    second = info.path.parent
    second.rename(elsewhere)  # the aa/bb folder now lives outside, reached through a link
    second.symlink_to(elsewhere, target_is_directory=True)

    assert not blobs.has(info.sha256)
    with pytest.raises(UnsafeBlob, match="is a symbolic link"):
        blobs.open(info.sha256)
    again = blobs.write_stream([data])  # the link is moved aside, a real folder made
    assert not second.is_symlink() and again.path.read_bytes() == data
    assert (elsewhere / info.sha256).read_bytes() == data  # what was behind it: untouched
    assert [p.is_symlink() for p in blobs.damaged.iterdir()] == [True]


def test_a_same_size_damaged_copy_is_replaced_not_trusted(blobs: BlobStore) -> None:
    data = b"A" * 4096
    info = blobs.write_stream([data])
    info.path.write_bytes(b"B" * 4096)  # same size, other content
    again = blobs.write_stream([data])
    assert again == info and info.path.read_bytes() == data


def test_without_folder_fsync_the_store_still_writes(
    blobs: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Windows cannot open a folder to fsync it: the store skips that step there.
    monkeypatch.setattr(blobs_module, "_CAN_FSYNC_DIRS", False)
    info = blobs.write_stream([b"windows laptop"])
    assert blobs.verify(info.sha256)
    BlobStore(blobs.root.parent / "fresh")  # creating a root and its marker too
    assert (blobs.root.parent / "fresh" / MARKER_NAME).is_file()
