"""Is another process still running? (runs rows, blob temp files and load guards keep a pid).

Each OS answers through its own documented call, chosen once at import: POSIX asks the kernel
with signal 0, Windows opens the process and waits on it for zero milliseconds. The Windows
calls can be passed in (and /proc's place), so both branches run (and are tested) anywhere.

On Windows `os.kill(pid, 0)` is not a probe: it calls TerminateProcess, i.e. it would end the
very run it asks about. Nothing here may fall back to it there.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol

__all__ = ["WindowsProcessApi", "posix_alive", "process_alive", "windows_alive"]


def posix_alive(pid: int, *, proc_root: str = "/proc") -> bool:
    """True if `pid` exists and is not a zombie (POSIX: ``kill(pid, 0)``).

    A killed child its parent has not reaped yet still answers ``kill(pid, 0)``; Linux shows
    it as state Z in ``/proc/<pid>/stat``. Without /proc (macOS, the BSDs) such a zombie reads
    as alive; only a parent can leave one, and `migrate` never records its own children's pids.
    """
    if pid <= 0:
        return False  # kill(0 or -n, 0) asks about process groups, not a process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, belongs to another user
    try:
        with open(f"{proc_root}/{pid}/stat", encoding="ascii", errors="replace") as stat_file:
            return stat_file.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class WindowsProcessApi(Protocol):
    """The three kernel32 calls `windows_alive` needs (an object per call, so tests can pass
    their own)."""

    def open(self, pid: int) -> int | None:
        """OpenProcess(SYNCHRONIZE | PROCESS_QUERY_LIMITED_INFORMATION): a handle, or None."""

    def last_error(self) -> int:
        """GetLastError() after `open` returned None."""

    def running(self, handle: int) -> bool:
        """WaitForSingleObject(handle, 0) == WAIT_TIMEOUT: the process has not ended."""

    def close(self, handle: int) -> None:
        """CloseHandle(handle)."""


#: GetLastError values of OpenProcess: no such process (the pid was never used or is gone).
ERROR_INVALID_PARAMETER = 87
#: ... and a process that exists but is not ours to open (another user's, a protected one).
ERROR_ACCESS_DENIED = 5


def windows_alive(pid: int, api: WindowsProcessApi | None = None) -> bool:
    """True if `pid` names a process that has not ended (Windows: OpenProcess + a zero wait).

    A process object outlives its process while any handle to it is open; the wait tells a
    running process from an ended one whose object is still held (what /proc's state Z tells
    on Linux). A process we may not open exists, so it counts as alive, as on POSIX.
    """
    if pid <= 0:
        return False
    if api is None:
        api = _Kernel32()
    handle = api.open(pid)
    if handle is None:
        return api.last_error() != ERROR_INVALID_PARAMETER
    try:
        return api.running(handle)
    finally:
        api.close(handle)


class _Kernel32:
    """WindowsProcessApi through ctypes (Windows only: ctypes.WinDLL exists nowhere else)."""

    SYNCHRONIZE = 0x0010_0000
    PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
    WAIT_TIMEOUT = 0x102

    def __init__(self) -> None:
        import ctypes
        from ctypes import wintypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined,unused-ignore]
        kernel32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
        kernel32.OpenProcess.restype = wintypes.HANDLE
        kernel32.WaitForSingleObject.argtypes = (wintypes.HANDLE, wintypes.DWORD)
        kernel32.WaitForSingleObject.restype = wintypes.DWORD
        kernel32.CloseHandle.argtypes = (wintypes.HANDLE,)
        kernel32.CloseHandle.restype = wintypes.BOOL
        self._kernel32 = kernel32
        self._get_last_error: Callable[[], int] = ctypes.get_last_error  # type: ignore[attr-defined,unused-ignore]

    def open(self, pid: int) -> int | None:
        handle = self._kernel32.OpenProcess(
            self.SYNCHRONIZE | self.PROCESS_QUERY_LIMITED_INFORMATION, False, pid
        )
        return int(handle) if handle else None

    def last_error(self) -> int:
        return self._get_last_error()

    def running(self, handle: int) -> bool:
        return bool(self._kernel32.WaitForSingleObject(handle, 0) == self.WAIT_TIMEOUT)

    def close(self, handle: int) -> None:
        self._kernel32.CloseHandle(handle)


#: This OS's probe. Windows has no signal 0 (see the module docstring); every other OS
#: Python runs `migrate` on is POSIX.
_PROBE: Callable[[int], bool] = windows_alive if os.name == "nt" else posix_alive


def process_alive(pid: int) -> bool:
    """True if a process with this pid exists and has not ended (any OS)."""
    return _PROBE(pid)
