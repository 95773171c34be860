"""`migrate sandbox serve --detach` and `migrate sandbox stop`: a sandbox left running.

The README's walk runs every command in one shell, so the sandbox must keep serving while
the next commands run, on Linux, macOS and Windows alike. ``start`` launches ``migrate
sandbox serve`` as a child process of its own (its output in ``sandbox.log``), waits until
the child says it is serving (the state file below), and returns; ``stop`` ends it.

The state file, ``.migrate-sandbox.json`` in the folder the sandbox was started for, holds
the child's pid and URLs; it is how ``stop`` finds the process, and it is removed when the
sandbox stops.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from migrate.errors import ConfigError, MigrateError

STATE_FILE = ".migrate-sandbox.json"
LOG_FILE = "sandbox.log"
#: How long a detached sandbox may take to start serving (generating a project included).
START_TIMEOUT_SECONDS = 120.0

#: First line of a config written by `--write-config`: such a file may be rewritten.
CONFIG_MARKER = "# Written by `migrate sandbox serve` for its sandbox; the ports change each time."


class SandboxNotStarted(MigrateError):
    """The detached sandbox exited, or did not start serving in time."""


def write_config(path: Path, text: str) -> None:
    """Write a sandbox config; an existing file not written by the sandbox is left alone."""
    if path.exists() and not path.read_text(encoding="utf-8").startswith(CONFIG_MARKER):
        raise ConfigError(
            f"{path} exists and was not written by `migrate sandbox serve`; choose another "
            "--write-config path, or move that file away."
        )
    partial = path.with_name(path.name + ".partial")
    partial.write_text(CONFIG_MARKER + "\n" + text, encoding="utf-8")
    partial.replace(path)


def write_state(path: Path, *, pid: int, field_url: str, procore_url: str) -> None:
    """Say that this process serves (written last, when the sandbox answers)."""
    partial = path.with_name(path.name + ".partial")
    state = {"pid": pid, "field_url": field_url, "procore_url": procore_url}
    partial.write_text(json.dumps(state), encoding="utf-8")
    partial.replace(path)


def _read_state(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def start(serve_args: list[str], folder: Path) -> tuple[int, str]:
    """Start `migrate sandbox serve <serve_args>` in the background for `folder`.

    Returns (pid, what it printed so far: its URLs and credentials). Raises
    SandboxNotStarted, with the end of its log, when it exits or does not serve in time.
    """
    folder.mkdir(parents=True, exist_ok=True)
    state_path = folder / STATE_FILE
    running = _read_state(state_path)
    if running is not None and _alive(int(running.get("pid", 0))):
        raise ConfigError(
            f"A sandbox started for {folder} is still running (pid {running['pid']}); stop it "
            "first with `migrate sandbox stop`."
        )
    state_path.unlink(missing_ok=True)
    log_path = folder / LOG_FILE
    command = [sys.executable, "-m", "migrate.cli", "sandbox", "serve", *serve_args]
    command += ["--state-file", str(state_path.resolve())]
    with open(log_path, "wb") as log:
        child = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=os.getcwd(),
            **_detached(),
        )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        state = _read_state(state_path)
        if state is not None and state.get("pid") == child.pid:
            return child.pid, log_path.read_text(encoding="utf-8", errors="replace")
        if child.poll() is not None:
            raise SandboxNotStarted(
                f"The sandbox exited with code {child.returncode} before serving: "
                + _tail(log_path)
            )
        time.sleep(0.1)
    child.kill()
    raise SandboxNotStarted(
        f"The sandbox did not start serving within {START_TIMEOUT_SECONDS:.0f} s: "
        + _tail(log_path)
    )


def stop(folder: Path) -> str:
    """Stop the sandbox started for `folder`; what happened, in one line."""
    state_path = folder / STATE_FILE
    state = _read_state(state_path)
    if state is None:
        return f"No sandbox was started for {folder} (no {STATE_FILE} there)."
    pid = int(state.get("pid", 0))
    if pid <= 0 or not _alive(pid):
        state_path.unlink(missing_ok=True)
        return f"The sandbox (pid {pid}) had already stopped."
    os.kill(pid, signal.SIGTERM)  # TerminateProcess on Windows
    deadline = time.monotonic() + 10.0
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    state_path.unlink(missing_ok=True)
    return f"Stopped the sandbox (pid {pid})."


def _alive(pid: int) -> bool:
    from migrate.processes import process_alive

    return pid > 0 and process_alive(pid)


def _detached() -> dict[str, Any]:
    """Popen arguments that keep the child alive after this process and its shell end."""
    if sys.platform == "win32":
        flags = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.DETACHED_PROCESS
        return {"creationflags": flags}
    return {"start_new_session": True}


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"see {path}."
    last = [line for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(last) if last else f"nothing in {path}."


def work_a_day(folder: Path) -> list[str]:
    """Ask the sandbox started for `folder` to change its project as a day on site would."""
    import urllib.error
    import urllib.request

    state = _read_state(folder / STATE_FILE)
    if state is None or not _alive(int(state.get("pid", 0))):
        raise ConfigError(
            f"No sandbox is running for {folder}; start one with "
            "`migrate sandbox serve --write-config migration.toml --detach`."
        )
    request = urllib.request.Request(
        f"{state['field_url']}/sandbox/v1/work_a_day", b"", method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            changes = json.loads(answer.read())["changes"]
    except urllib.error.HTTPError as exc:
        reason = json.loads(exc.read() or b"{}").get("error", exc.reason)
        raise ConfigError(f"The sandbox could not change its project: {reason}.") from None
    return [str(change) for change in changes]
