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

from migrate.store import BlobSizeMismatch, BlobStore


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def chunked(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def stored_files(store: BlobStore) -> list[Path]:
    return sorted(p for p in store.root.rglob("*") if p.is_file() and store.tmp not in p.parents)


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


def test_root_and_tmp_are_private(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "new" / "blobs")
    assert mode(store.root) == 0o700 and mode(store.tmp) == 0o700

    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    BlobStore(loose)
    assert mode(loose) == 0o700


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
    stale = blobs.tmp / f"{os.getpid()}-earlier.part"
    stale.write_bytes(b"left over")
    (blobs.tmp / "not-a-pid.part").write_bytes(b"?")
    swept: list[int] = []

    def stream() -> Iterator[bytes]:
        yield b"first"
        swept.append(BlobStore(blobs.root).sweep_temp())  # another instance, same process
        yield b"second"

    info = blobs.write_stream(stream(), expected_size=11)
    assert swept == [2]
    assert info.path.read_bytes() == b"firstsecond"
    assert list(blobs.tmp.iterdir()) == []
