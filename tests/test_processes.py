"""process_alive on each OS: the POSIX probe on real processes, the Windows probe through the
kernel32 answers it interprets (passed in, so it runs here too)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from migrate import processes
from migrate.processes import (
    ERROR_ACCESS_DENIED,
    ERROR_INVALID_PARAMETER,
    posix_alive,
    process_alive,
    windows_alive,
)
from migrate.store import db

posix_only = pytest.mark.skipif(os.name == "nt", reason="the POSIX probe")


def test_each_os_gets_its_own_probe_and_old_imports_still_work() -> None:
    assert processes._PROBE is (windows_alive if os.name == "nt" else posix_alive)
    assert db.process_alive is process_alive
    assert process_alive(os.getpid())
    assert not process_alive(0) and not process_alive(-1)


@posix_only
def test_posix_probe_on_a_real_process_through_its_life(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        assert posix_alive(child.pid)
    finally:
        child.kill()
    if hasattr(os, "waitid"):
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # ended, left unreaped
        # A zombie still answers kill(pid, 0), but /proc says Z.
        if os.path.isdir("/proc"):
            assert not posix_alive(child.pid)
        # Without /proc (macOS, the BSDs) an unreaped child of ours reads as alive.
        assert posix_alive(child.pid, proc_root=str(tmp_path))
    child.wait()
    assert not posix_alive(child.pid)
    assert not posix_alive(child.pid, proc_root=str(tmp_path))


@dataclass
class FakeKernel32:
    """What OpenProcess / GetLastError / WaitForSingleObject answer for each pid, by table."""

    #: pid -> "running" | "ended" (its object still held open) | an OpenProcess error code
    table: dict[int, str | int]
    opened: list[int] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)
    _error: int = 0

    def open(self, pid: int) -> int | None:
        answer = self.table.get(pid, ERROR_INVALID_PARAMETER)
        if isinstance(answer, int):
            self._error = answer
            return None
        handle = 1000 + pid
        self.opened.append(handle)
        return handle

    def last_error(self) -> int:
        return self._error

    def running(self, handle: int) -> bool:
        return self.table[handle - 1000] == "running"

    def close(self, handle: int) -> None:
        self.closed.append(handle)


@pytest.mark.parametrize(
    ("answer", "alive"),
    [
        ("running", True),
        ("ended", False),  # exited; someone still holds a handle to its process object
        (ERROR_INVALID_PARAMETER, False),  # no such process
        (ERROR_ACCESS_DENIED, True),  # exists, not ours to open (another user's)
        (6, True),  # any other refusal: not proof that it ended, so it is not marked dead
    ],
)
def test_windows_probe_reads_kernel32_answers(answer: str | int, alive: bool) -> None:
    api = FakeKernel32({4242: answer})
    assert windows_alive(4242, api) is alive
    assert api.closed == api.opened  # every handle opened is closed
    assert windows_alive(7, api) is False  # a pid nobody has
    assert windows_alive(0, api) is False and api.opened == api.closed


def test_windows_never_falls_back_to_signal_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    """On Windows os.kill(pid, 0) would terminate the process it asks about."""

    def terminate(pid: int, sig: int) -> None:
        raise AssertionError(f"os.kill({pid}, {sig}) called")

    monkeypatch.setattr(os, "kill", terminate)
    monkeypatch.setattr(processes, "_PROBE", processes.windows_alive)
    api = FakeKernel32({os.getpid(): "running"})
    monkeypatch.setattr(processes, "_Kernel32", lambda: api)
    assert process_alive(os.getpid())
    assert api.opened == [1000 + os.getpid()] == api.closed
