"""Content-addressed file store: root/aa/bb/<sha256>. Source filenames never become paths.

The store owns only what it made:

- Its root carries a marker file (:data:`MARKER_NAME`, first line :data:`FORMAT_LINE`), written
  when the store creates the root, finds it empty, or finds the layout an earlier ``migrate``
  left without a marker (only two-hex-digit folders and ``tmp``). Any other non-empty folder is
  refused, untouched.
- Nothing is followed through a symbolic link (or a Windows junction): the root, ``tmp``,
  ``aa``, ``aa/bb`` and every blob are checked with ``lstat``, and blobs are opened with
  ``O_NOFOLLOW`` where the OS has it, then checked to be the very file that was looked at.
- No mode is ever changed: the folders it creates are made 0700 and its files 0600; a folder it
  adopts keeps the mode it has.
- Only its own temporary files are deleted: ``tmp/<pid>-<8 characters>.part`` (the names
  ``tempfile.mkstemp`` gives its writers) of writers that are gone. A damaged blob is never
  deleted either: :meth:`BlobStore.set_aside` moves it (or the link standing in its place) into
  ``damaged/``, out of its digest name, so that extract downloads the file again.
- A size match proves nothing: an existing blob is kept in place of a new copy only after its
  content has been hashed again.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
import re
import stat
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from migrate.errors import ConfigError
from migrate.store.db import process_alive

#: The file that marks a folder as a migrate blob store; its first line is FORMAT_LINE.
MARKER_NAME = ".migrate-blobs"
FORMAT = 1
FORMAT_LINE = f"migrate blob store, format {FORMAT}"
_FORMAT_PREFIX = "migrate blob store, format "
_MARKER_TEXT = (
    f"{FORMAT_LINE}\n"
    "This folder belongs to `migrate`: files named by their sha256 under aa/bb/, its temporary\n"
    "files in tmp/, damaged copies it moved aside in damaged/. Keep other files elsewhere.\n"
)
TEMP_DIR = "tmp"
DAMAGED_DIR = "damaged"

_DIGEST = re.compile(r"[0-9a-f]{64}")
_HEX_PAIR = re.compile(r"[0-9a-f]{2}")
_TEMP_SUFFIX = ".part"
# tempfile.mkstemp(prefix=f"{pid}-", suffix=".part") names: 8 characters from its alphabet.
_OWN_TEMP = re.compile(r"(\d+)-[a-z0-9_]{8}\.part")
_READ_CHUNK = 1 << 20

# Platform switches, module constants so a test can force the fallback a platform takes.
#: 0 where the OS has no O_NOFOLLOW (Windows): lstat + same-file check after opening instead.
_O_NOFOLLOW: int = getattr(os, "O_NOFOLLOW", 0)
#: Windows opens file descriptors in text mode unless told otherwise.
_O_BINARY: int = getattr(os, "O_BINARY", 0)
#: The reparse tag of a Windows junction (stat names it only on Windows).
_JUNCTION: int = getattr(stat, "IO_REPARSE_TAG_MOUNT_POINT", 0xA0000003)
#: Windows cannot open a folder to fsync it (os.open fails) and NTFS journals renames itself.
_CAN_FSYNC_DIRS: bool = os.name != "nt"

# Temp files being written by this process, across every BlobStore instance, so sweep_temp()
# never removes a write in progress.
_ACTIVE_TEMPS: set[str] = set()  # file names: mkstemp makes them unique
_ACTIVE_LOCK = threading.Lock()
_ASIDE_COUNTER = itertools.count(1)


class BlobSizeMismatch(Exception):
    """The stream did not have the size the source declared; nothing was stored."""

    def __init__(self, expected: int, actual: int, *, complete: bool = True) -> None:
        self.expected = expected
        self.actual = actual
        self.complete = complete
        received = f"{actual}" if complete else f"more than {expected} (stopped at {actual})"
        super().__init__(f"expected {expected} bytes, received {received}")


class BlobStoreRefused(ConfigError):
    """``[staging] blobs`` names a folder the blob store does not own (exit 2, one line)."""


class UnsafeBlob(Exception):
    """A blob's name does not lead to a regular file inside the store (a link, a folder, …)."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        super().__init__(f"{path} {what}")


@dataclass(frozen=True)
class BlobInfo:
    """A stored blob: its digest, size in bytes and path."""

    sha256: str
    size: int
    path: Path


# -- lstat helpers ---------------------------------------------------------------------------


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _is_link(info: os.stat_result) -> bool:
    # A junction is a link too, though S_ISLNK does not say so (st_reparse_tag: Windows only).
    return stat.S_ISLNK(info.st_mode) or (getattr(info, "st_reparse_tag", 0) == _JUNCTION)


def _real_dir(info: os.stat_result | None) -> bool:
    return info is not None and stat.S_ISDIR(info.st_mode) and not _is_link(info)


def _real_file(info: os.stat_result | None) -> bool:
    return info is not None and stat.S_ISREG(info.st_mode) and not _is_link(info)


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _open_regular(path: Path) -> BinaryIO:
    """Open a regular file for reading without following a link at ``path``.

    lstat first (a FIFO or a link is never opened), O_NOFOLLOW where the OS has it, then the
    opened file must be the one lstat saw: a swap in between is refused, not read.
    """
    before = os.lstat(path)  # FileNotFoundError passes through
    if not _real_file(before):
        raise UnsafeBlob(path, _what(before))
    try:
        fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_BINARY)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # replaced by a link after the lstat
            raise UnsafeBlob(path, "is a symbolic link") from None
        raise
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or not _same_file(before, opened):
            raise UnsafeBlob(path, "changed while it was being opened")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _what(info: os.stat_result) -> str:
    if _is_link(info):
        return "is a symbolic link"
    if stat.S_ISDIR(info.st_mode):
        return "is a folder"
    return "is not a regular file"


def _fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` survive a power cut.

    Where folders cannot be opened (Windows) this is skipped: NTFS journals its metadata. A
    filesystem that cannot fsync a folder (some network and FUSE mounts answer EINVAL) is
    accepted as it is: the rename itself is atomic either way.
    """
    if not _CAN_FSYNC_DIRS:
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _O_NOFOLLOW)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _make_private_dir(path: Path) -> bool:
    """Create ``path`` as 0700; False if something already has that name."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return False
    return True


# -- the root and its marker -----------------------------------------------------------------


def _read_marker(root: Path) -> str | None:
    """The marker's first line, or None when there is no marker."""
    marker = root / MARKER_NAME
    try:
        with _open_regular(marker) as handle:
            first = handle.read(200).split(b"\n", 1)[0]
    except FileNotFoundError:
        return None
    except UnsafeBlob as exc:
        raise BlobStoreRefused(
            f"{marker} {exc.what}: migrate does not follow "
            "links in its blob store. Set [staging] blobs to a new or empty folder."
        ) from None
    return first.decode("utf-8", "replace").strip()


def _write_marker(root: Path) -> None:
    marker = root / MARKER_NAME
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_BINARY, 0o600)
    except FileExistsError:
        return  # another process claimed it at the same moment: checked by the caller
    try:
        os.write(fd, _MARKER_TEXT.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_dir(root)


def _earlier_layout(root: Path, names: list[str]) -> bool:
    """The layout migrate wrote before it marked its root: aa/bb/ folders and tmp/ only."""
    for name in names:
        if name != TEMP_DIR and not _HEX_PAIR.fullmatch(name):
            return False
        if not _real_dir(_lstat(root / name)):
            return False
        if name == TEMP_DIR:
            continue
        for inner in os.listdir(root / name):
            if not _HEX_PAIR.fullmatch(inner) or not _real_dir(_lstat(root / name / inner)):
                return False
    return True


def _claim_root(root: Path) -> None:
    """Create, adopt or accept the store's root; BlobStoreRefused if it is not ours to use."""
    info = _lstat(root)
    if info is None:
        root.parent.mkdir(parents=True, exist_ok=True)
        if _make_private_dir(root):
            _write_marker(root)
        _claim_root(root)  # made here, or by another process just now: check it either way
        return
    if _is_link(info):
        raise BlobStoreRefused(
            f"Blob store folder {root} is a symbolic link; migrate does not follow links for "
            "its blob store. Set [staging] blobs to a real folder."
        )
    if not stat.S_ISDIR(info.st_mode):
        raise BlobStoreRefused(
            f"Blob store folder {root} is not a folder. Set [staging] blobs to a new or empty "
            "folder."
        )
    line = _read_marker(root)
    if line is None:
        names = os.listdir(root)
        if names and not _earlier_layout(root, names):
            raise BlobStoreRefused(
                f"Blob store folder {root} is not empty and is not a migrate blob store (it has "
                f"no {MARKER_NAME} file); migrate writes only into a folder it made. Set "
                "[staging] blobs to a new or empty folder."
            )
        _write_marker(root)
        line = _read_marker(root)
    if line == FORMAT_LINE:
        return
    if line is not None and line.startswith(_FORMAT_PREFIX):
        raise BlobStoreRefused(
            f"Blob store folder {root} is in blob store {line.removeprefix(_FORMAT_PREFIX)!r} "
            f"format, which this migrate (format {FORMAT}) does not know. Upgrade migrate, or "
            "set [staging] blobs to a new folder."
        )
    raise BlobStoreRefused(
        f"Blob store folder {root} has a {MARKER_NAME} file migrate did not write. Set "
        "[staging] blobs to a new or empty folder."
    )


def _claim_subdir(path: Path) -> None:
    """A folder of the store (tmp, damaged): made now, or a real folder already."""
    if _make_private_dir(path):
        return
    info = _lstat(path)
    if not _real_dir(info):
        what = _what(info) if info is not None else "vanished"
        raise BlobStoreRefused(
            f"Blob store folder {path} {what}; migrate does not follow links in its blob store "
            "and deletes nothing through one. Remove it (migrate makes a new folder), then run "
            "the same command again."
        )


# -- the store -------------------------------------------------------------------------------


class TempBlob:
    """A temp file in ``tmp/`` being written (``file``); removed on exit unless adopted.

    Made by :meth:`BlobStore.temp`; :meth:`BlobStore.adopt` moves it into place.
    """

    def __init__(self, fd: int, path: Path) -> None:
        self.path = path
        self.file: BinaryIO = os.fdopen(fd, "wb")
        self.adopted = False

    def __enter__(self) -> TempBlob:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self.file.close()
            if not self.adopted:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
        finally:
            with _ACTIVE_LOCK:
                _ACTIVE_TEMPS.discard(self.path.name)


class BlobStore:
    """Files keyed by their sha256, written atomically via root/tmp.

    Raises :class:`BlobStoreRefused` when ``root`` is not a folder this store made, adopted or
    may adopt (see the module docstring).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self.tmp = self.root / TEMP_DIR
        self.damaged = self.root / DAMAGED_DIR
        _claim_root(self.root)
        _claim_subdir(self.tmp)

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

    def _steps(self, sha256: str) -> tuple[Path, Path, Path]:
        path = self.path_for(sha256)
        return path.parent.parent, path.parent, path

    def has(self, sha256: str) -> bool:
        """True if the blob is a regular file reached through real folders (no link)."""
        first, second, blob = self._steps(sha256)
        return _real_dir(_lstat(first)) and _real_dir(_lstat(second)) and _real_file(_lstat(blob))

    def open(self, sha256: str) -> BinaryIO:
        """Open a stored blob for reading, never through a link.

        FileNotFoundError when it is not stored; :class:`UnsafeBlob` when its name, or a folder
        on the way, is a link or not what the layout says. The content is not checked here:
        hash what you read (``put_upload_bytes`` does, :meth:`verify` does).
        """
        first, second, blob = self._steps(sha256)
        for folder in (first, second):
            info = _lstat(folder)
            if info is None:
                raise FileNotFoundError(errno.ENOENT, "blob not stored", str(blob))
            if not _real_dir(info):
                raise UnsafeBlob(folder, _what(info))
        return _open_regular(blob)

    def verify(self, sha256: str) -> bool:
        """Re-hash a stored blob; False if it is missing, unsafe or its content differs."""
        digest = hashlib.sha256()
        try:
            with self.open(sha256) as blob:
                while chunk := blob.read(_READ_CHUNK):
                    digest.update(chunk)
        except (FileNotFoundError, UnsafeBlob):
            return False
        return digest.hexdigest() == sha256

    # -- writing ----------------------------------------------------------------------------
    def temp(self) -> TempBlob:
        """A new private temp file in tmp/, named so that no sweep removes it while it lives."""
        _claim_subdir(self.tmp)  # still a real folder, not a link put there since
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix=f"{os.getpid()}-", suffix=_TEMP_SUFFIX)
        path = Path(name)
        with _ACTIVE_LOCK:
            _ACTIVE_TEMPS.add(path.name)
        try:
            return TempBlob(fd, path)
        except BaseException:
            os.close(fd)
            path.unlink()
            with _ACTIVE_LOCK:
                _ACTIVE_TEMPS.discard(path.name)
            raise

    def adopt(self, temp: TempBlob, sha256: str, size: int) -> BlobInfo:
        """Move a complete, hashed and fsynced temp file to its digest name.

        A blob already stored under that name is kept only if its content hashes to it; a
        damaged copy (truncated, changed, a link) is replaced by the new file.
        """
        target = self.path_for(sha256)
        self._folders_for(target)
        temp.file.close()
        existing = _lstat(target)
        same_size = existing is not None and _real_file(existing) and existing.st_size == size
        if same_size and self.verify(sha256):  # a size match alone proves nothing
            temp.path.unlink()  # same content: keep the stored one
            temp.adopted = True
            return BlobInfo(sha256=sha256, size=size, path=target)
        if existing is not None and stat.S_ISDIR(existing.st_mode) and not _is_link(existing):
            self._move_aside(target)  # os.replace cannot put a file over a folder
        os.replace(temp.path, target)  # a link under this name is replaced, never followed
        temp.adopted = True
        _fsync_dir(target.parent)
        return BlobInfo(sha256=sha256, size=size, path=target)

    def _folders_for(self, target: Path) -> None:
        for folder in (target.parent.parent, target.parent):
            if _make_private_dir(folder):
                continue
            if not _real_dir(_lstat(folder)):
                self._move_aside(folder)  # a link or a file where aa/ or aa/bb/ belongs
                if not _make_private_dir(folder):
                    raise UnsafeBlob(folder, "keeps being replaced")

    def write_stream(self, chunks: Iterable[bytes], expected_size: int | None = None) -> BlobInfo:
        """Store a stream of bytes; hash while writing, check the size, then move into place.

        Raises BlobSizeMismatch (nothing stored) when `expected_size` is given and differs;
        a stream that runs past it is abandoned at once rather than read to the end. The
        temp file is removed on any failure, including an exception from `chunks`.
        """
        digest = hashlib.sha256()
        size = 0
        with self.temp() as temp:
            out = temp.file
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
            return self.adopt(temp, digest.hexdigest(), size)

    # -- damaged copies ---------------------------------------------------------------------
    def set_aside(self, sha256: str, seen: BinaryIO | None = None) -> Path | None:
        """Move a damaged blob out of its digest name into ``damaged/``; return where it went.

        What moves is the first thing on the way that is not as the layout says (a link at
        ``aa``, ``aa/bb`` or the blob itself: the link, never what it points at), else the blob.
        With ``seen`` (a handle from :meth:`open`), the blob moves only if its name still holds
        that file. None when there was nothing to move. Nothing is deleted: the engineer may
        look at the copy, and delete ``damaged/`` when done.
        """
        first, second, blob = self._steps(sha256)
        for folder in (first, second):
            info = _lstat(folder)
            if info is None:
                return None
            if not _real_dir(info):
                return self._move_aside(folder)
        info = _lstat(blob)
        if info is None:
            return None
        if seen is not None and _real_file(info) and not _same_file(info, os.fstat(seen.fileno())):
            return None  # replaced since it was read: the new file gets its own check
        return self._move_aside(blob)

    def _move_aside(self, entry: Path) -> Path:
        _claim_subdir(self.damaged)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        destination = self.damaged / f"{entry.name}.{stamp}-{os.getpid()}-{next(_ASIDE_COUNTER)}"
        os.replace(entry, destination)  # renames the entry itself, a link included
        _fsync_dir(entry.parent)
        return destination

    # -- crash cleanup ----------------------------------------------------------------------
    def sweep_temp(self) -> int:
        """Delete temp files left by writers that died (kill -9 mid-download); return how many.

        Only names this store gives its temp files (``<pid>-XXXXXXXX.part``), only regular
        files (a link is never followed or removed) owned by this user, and only of processes
        that are gone: another concurrent writer's files and this one's writes in progress stay.
        Anything else in tmp/ is left alone.
        """
        _claim_subdir(self.tmp)  # refuses a tmp that became a link since the store opened
        removed = 0
        me = os.getpid()
        uid = os.getuid() if hasattr(os, "getuid") else None
        with os.scandir(self.tmp) as entries:
            for entry in entries:
                match = _OWN_TEMP.fullmatch(entry.name)
                if match is None:
                    continue
                info = entry.stat(follow_symlinks=False)
                if not _real_file(info) or (uid is not None and info.st_uid != uid):
                    continue
                owner = int(match[1])
                with _ACTIVE_LOCK:
                    if entry.name in _ACTIVE_TEMPS:
                        continue
                # Our own pid but not in flight here: a dead earlier process that had our pid.
                if owner != me and process_alive(owner):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
        return removed
