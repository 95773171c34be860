"""Start-up time of the CLI: the real commands in fresh subprocesses, best of N runs.

An engineer types `migrate status` and `migrate --help` dozens of times a day; every
heavy import made at start-up (pandas, numpy, requests, sqlite-utils) is paid on each one.
This benchmark prepares a small staging DB once (`migrate demo --issues 20`), then runs each
command ``--runs`` times in a new process and keeps the best wall time (the least disturbed
by other work on a shared machine) and the median. ``python -X importtime`` names the
packages that cost the most to import. Appends a dated section to BENCHMARKS.md.

    python -m bench startup                  # 9 runs per command
    python -m bench startup -- --runs 5 --no-write
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, append_section, machine, timestamp

DEFAULT_RUNS = 9
#: The start-up budget issue 19 sets for `migrate --help` and `migrate status`.
TARGET_SECONDS = 0.3
#: Modules a read-only command has no use for; each is listed when a command imports it.
HEAVY_MODULES = ("pandas", "numpy", "requests", "urllib3", "sqlite_utils", "tqdm")
TOP_OFFENDERS = 8
_IMPORTTIME = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)")


def _without_target_project(config: Path) -> Path:
    """A copy of ``config`` beside it with no ``[target] project_id``: `status` before a
    Procore project is chosen (it then has no plan to count and skips the load package)."""
    lines, section = [], ""
    for line in config.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped
        elif section == "[target]" and stripped.startswith("project_id"):
            continue
        lines.append(line)
    copy = config.with_name("migration-no-project.toml")
    copy.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return copy


def _commands(config: Path) -> dict[str, list[str]]:
    return {
        "migrate --help": ["--help"],
        "migrate --version": ["--version"],
        "migrate status": ["status", "--config", str(config)],
        "migrate status (no project)": ["status", "--config", str(_without_target_project(config))],
        "migrate status --json": ["status", "--json", "--config", str(config)],
        "migrate quarantine list": ["quarantine", "list", "--config", str(config)],
        "migrate plan": ["plan", "--config", str(config)],
    }


def _launcher() -> list[str]:
    """The installed console script beside this interpreter, as engineers run it."""
    script = Path(sys.executable).with_name("migrate.exe" if os.name == "nt" else "migrate")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "migrate.cli"]


def _run_once(argv: list[str], cwd: Path) -> tuple[float, float | None, int]:
    """Wall seconds, peak RSS in MB (POSIX only) and exit code of one run."""
    start = time.perf_counter()
    process = subprocess.Popen(
        argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env()
    )
    if hasattr(os, "wait4"):
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        # ru_maxrss is in kB on Linux, bytes on macOS.
        scale = 1024 * 1024 if sys.platform == "darwin" else 1024
        return elapsed, usage.ru_maxrss / scale, process.returncode
    code = process.wait()
    return time.perf_counter() - start, None, code


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _imports(args: list[str], cwd: Path) -> tuple[list[tuple[str, float]], set[str], float]:
    """Top-level packages by cumulative import time (ms), which heavy ones loaded, total ms."""
    code = (
        "import sys; from migrate.cli import main; sys.argv = ['migrate', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
    )
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=_env(),
        check=False,
    )
    # A package's cost is the sum of its lines not nested inside another line of the same
    # package: importlib.import_module (sqlite-utils imports pandas so) leaves a package
    # without a line of its own, and a submodule imported later (click's help) stands alone.
    # Children are printed before their parent, so the lines are read backwards.
    per_package: dict[str, float] = {}
    loaded: set[str] = set()
    total = 0.0
    enclosing: list[tuple[int, str]] = []
    for line in reversed(done.stderr.splitlines()):
        match = _IMPORTTIME.match(line)
        if not match:
            continue
        cumulative, indent, name = int(match.group(2)) / 1000, len(match.group(3)), match.group(4)
        top = name.split(".")[0]
        if top in HEAVY_MODULES:
            loaded.add(top)
        while enclosing and enclosing[-1][0] >= indent:
            enclosing.pop()
        parent = enclosing[-1][1] if enclosing else None
        enclosing.append((indent, top))
        if parent is None:  # imported by the program itself, not by another module
            total += cumulative
        if parent == top or top in ("migrate", "site") or top.startswith("__editable__"):
            continue  # counted with its package; ours; or the interpreter's own set-up
        per_package[top] = per_package.get(top, 0.0) + cumulative
    ranked = sorted(per_package.items(), key=lambda item: -item[1])[:TOP_OFFENDERS]
    return ranked, loaded, total


def _prepare(folder: Path) -> Path:
    """A demo migration of 20 issues: a real staging DB with runs, id map and quarantine."""
    demo = subprocess.run(
        [*_launcher(), "demo", "--issues", "20", "--quiet", "--workdir", str(folder / "demo")],
        cwd=folder,
        capture_output=True,
        text=True,
        env=_env(),
        check=False,
    )
    config = folder / "demo" / "migration.toml"
    if not config.exists():
        raise SystemExit(f"`migrate demo` did not write {config}:\n{demo.stdout}{demo.stderr}")
    return config


def measure(runs: int) -> list[dict[str, Any]]:
    """Best and median wall time, peak RSS and heavy imports of each command."""
    folder = Path(tempfile.mkdtemp(prefix="migrate-startup-"))
    try:
        config = _prepare(folder)
        rows: list[dict[str, Any]] = []
        for label, args in _commands(config).items():
            argv = [*_launcher(), *args]
            _run_once(argv, folder)  # warm the OS file cache; not counted
            samples = [_run_once(argv, folder) for _ in range(runs)]
            ranked, loaded, import_ms = _imports(args, folder)
            rss = [s[1] for s in samples if s[1] is not None]
            rows.append(
                {
                    "command": label,
                    "best": min(s[0] for s in samples),
                    "median": statistics.median(s[0] for s in samples),
                    "rss": max(rss) if rss else None,
                    "exit": samples[-1][2],
                    "heavy": sorted(loaded),
                    "import_ms": import_ms,
                    "offenders": ranked,
                }
            )
            print(
                f"{label:<26} best {rows[-1]['best']:.3f} s  median {rows[-1]['median']:.3f} s  "
                f"heavy imports: {', '.join(rows[-1]['heavy']) or 'none'}",
                flush=True,
            )
        return rows
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _section(rows: list[dict[str, Any]], runs: int) -> list[str]:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"## Start-up — {timestamp()}",
        "",
        f"`python -m bench startup` on {machine()}. Each command ran {runs} times in a fresh "
        "process (the installed `migrate` script) against a 20-issue demo staging DB, after "
        "one uncounted warm-up run; best and median wall time, peak RSS of the largest run. "
        "Heavy = which of " + ", ".join(HEAVY_MODULES) + " the command imported (`-X importtime`). "
        f"Load average at the start: {load:.1f}. Target for `--help` and `status`: "
        f"under {TARGET_SECONDS} s.",
        "",
        "| command | best s | median s | peak RSS | exit | heavy imports | import ms |",
        "|---------|-------:|---------:|---------:|-----:|---------------|----------:|",
    ]
    for row in rows:
        rss = f"{row['rss']:.0f} MB" if row["rss"] is not None else "–"
        lines.append(
            f"| `{row['command']}` | {row['best']:.3f} | {row['median']:.3f} | {rss} | "
            f"{row['exit']} | {', '.join(row['heavy']) or 'none'} | {row['import_ms']:.0f} |"
        )
    lines.append("")
    lines.append("Top import costs (cumulative ms, `-X importtime`, one run each):")
    lines.append("")
    for row in rows:
        if row["command"] in (
            "migrate --help",
            "migrate status",
            "migrate status (no project)",
            "migrate plan",
        ):
            listed = ", ".join(f"{name} {ms:.0f}" for name, ms in row["offenders"])
            lines.append(f"- `{row['command']}`: {listed}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench startup", description=__doc__)
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="runs per command")
    parser.add_argument(
        "--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md"
    )
    options = parser.parse_args(argv or [])
    sys.path.insert(0, str(REPO))
    rows = measure(max(1, options.runs))
    if not options.no_write:
        append_section(_section(rows, options.runs))
    slow = [
        r["command"]
        for r in rows
        if r["command"].startswith(("migrate --help", "migrate status"))
        and r["best"] >= TARGET_SECONDS
    ]
    if slow:
        print(f"Over the {TARGET_SECONDS} s target: {', '.join(slow)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
