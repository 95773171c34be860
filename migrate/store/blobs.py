"""Content-addressed file store: root/aa/bb/<sha256>. Source filenames never become paths."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from migrate.store.db import process_alive

_DIGEST = re.compile(r"[0-9a-f]{64}")
_TEMP_SUFFIX = ".part"
_READ_CHUNK = 1 << 20

# Temp files being written by this process, across every BlobStore instance, so sweep_temp()
# never removes a write in progress.
_ACTIVE_TEMPS: set[str] = set()  # file names: mkstemp makes them unique
_ACTIVE_LOCK = threading.Lock()


class BlobSizeMismatch(Exception):
    """The stream did not have the size the source declared; nothing was stored."""

    def __init__(self, expected: int, actual: int, *, complete: bool = True) -> None:
        self.expected = expected
        self.actual = actual
        self.complete = complete
        received = f"{actual}" if complete else f"more than {expected} (stopped at {actual})"
        super().__init__(f"expected {expected} bytes, received {received}")


@dataclass(frozen=True)
class BlobInfo:
    """A stored blob: its digest, size in bytes and path."""

    sha256: str
    size: int
    path: Path


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(0o700)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore:
    """Files keyed by their sha256, written atomically via root/tmp."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self.tmp = self.root / "tmp"
        _private_dir(self.root)
        _private_dir(self.tmp)

    def path_for(self, sha256: str) -> Path:
        """Where the blob with this digest lives; ValueError unless it is 64 lowercase hex."""
        if not isinstance(sha256, str) or not _DIGEST.fullmatch(sha256):
            shown = repr(sha256)
            if len(shown) > 80:
                shown = shown[:77] + "..."
            raise ValueError(f"not a sha256 hex digest (64 lowercase hex characters): {shown}")
        path = self.root / sha256[:2] / sha256[2:4] / sha256
        # The regex already rules out separators and dots; this guards the guard.
        if not path.is_relative_to(self.root):
            raise ValueError(f"blob path escapes the store root: {sha256}")
        return path

    def has(self, sha256: str) -> bool:
        """True if the blob is stored."""
        return self.path_for(sha256).is_file()

    def write_stream(self, chunks: Iterable[bytes], expected_size: int | None = None) -> BlobInfo:
        """Store a stream of bytes; hash while writing, check the size, then move into place.

        Raises BlobSizeMismatch (nothing stored) when `expected_size` is given and differs;
        a stream that runs past it is abandoned at once rather than read to the end. The
        temp file is removed on any failure, including an exception from `chunks`.
        """
        fd, temp_name = tempfile.mkstemp(
            dir=self.tmp, prefix=f"{os.getpid()}-", suffix=_TEMP_SUFFIX
        )
        temp_path = Path(temp_name)
        with _ACTIVE_LOCK:
            _ACTIVE_TEMPS.add(temp_path.name)
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    if not isinstance(chunk, bytes | bytearray | memoryview):
                        raise TypeError(f"blob chunks must be bytes, got {type(chunk).__name__}")
                    size += len(chunk)
                    if expected_size is not None and size > expected_size:
                        raise BlobSizeMismatch(expected_size, size, complete=False)
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if expected_size is not None and size != expected_size:
                raise BlobSizeMismatch(expected_size, size)
            sha256 = digest.hexdigest()
            target = self.path_for(sha256)
            _private_dir(target.parent)
            if target.is_file() and target.stat().st_size == size:
                temp_path.unlink()  # same digest, same content: keep the stored one
            else:
                # A wrong-sized file under this name is a damaged copy: replace it.
                os.replace(temp_path, target)
                _fsync_dir(target.parent)
            return BlobInfo(sha256=sha256, size=size, path=target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temp_path.unlink()
            raise
        finally:
            with _ACTIVE_LOCK:
                _ACTIVE_TEMPS.discard(temp_path.name)

    def verify(self, sha256: str) -> bool:
        """Re-hash a stored blob; False if it is missing or its content no longer matches."""
        path = self.path_for(sha256)
        digest = hashlib.sha256()
        try:
            with path.open("rb") as blob:
                while chunk := blob.read(_READ_CHUNK):
                    digest.update(chunk)
        except FileNotFoundError:
            return False
        return digest.hexdigest() == sha256

    def sweep_temp(self) -> int:
        """Delete temp files left by writers that died (kill -9 mid-download); return how many.

        Temp names start with the writer's pid, so files of live processes — another
        concurrent writer, or this one's writes in progress — are left alone.
        """
        removed = 0
        me = os.getpid()
        for entry in self.tmp.iterdir():
            if not entry.is_file() or entry.is_symlink():
                continue
            pid_text, _, _ = entry.name.partition("-")
            owner = int(pid_text) if pid_text.isdigit() else None
            with _ACTIVE_LOCK:
                if entry.name in _ACTIVE_TEMPS:
                    continue
            # Our own pid but not in flight here: a dead earlier process that had the same pid.
            if owner is not None and owner != me and process_alive(owner):
                continue
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed += 1
        return removed
