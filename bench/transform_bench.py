"""Transform throughput and memory: 10 000 and 100 000 synthetic issues, straight into SQLite.

For each size one subprocess writes a staging DB (areas, reference data, a Procore snapshot, and
issues with comments, status history, attachments and custom fields shaped like the sandbox's),
and a second, fresh subprocess runs the transform on it, so the peak RSS measured is the
transform's alone. Each size is transformed `--repeat` times, each time on a fresh copy of the
synthesised DB: the machine is shared and its speed varies from run to run, so every run is
reported, and the slowest one is what the target is judged by. Prints issues/s and peak RSS per
run and appends a dated section to BENCHMARKS.md.

    python -m bench.transform_bench                # 10 000 and 100 000, 3 runs each
    python -m bench.transform_bench --sizes 20000 --repeat 1
    python -m bench.transform_bench --start-method fork --no-record   # compare start methods
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import REPO, append_section, machine, peak_rss_mb, timestamp

DEFAULT_SIZES = (10_000, 100_000)
DEFAULT_REPEAT = 3
#: Custom field ids as Field writes them (uuids), as the sandbox has four on every issue.
CF_IDS = tuple(f"00006b0d-0007-0000-0000-00000000000{n}" for n in range(1, 5))
#: Status changes before the current status (the sandbox has 1-4 per issue, 2.8 on average).
HISTORY_STEPS = ("Draft", "Open", "Work Completed")
TARGET_ISSUES_PER_SECOND = 10_000
TARGET_PROJECT = 5100
STATUSES = (
    "Draft",
    "Open",
    "Work Completed",
    "Ready to Inspect",
    "Not Approved",
    "In Dispute",
    "Closed",
    "Void",
)
STATUS_WEIGHTS = (4, 25, 10, 8, 5, 3, 40, 5)
PRIORITIES = ("", "Low", "Medium", "High", "Critical")
TYPES = (
    ("t-clash", "Clash", "Coordination"),
    ("t-punch", "Punch item", "Quality"),
    ("t-code", "Code Violation", "Safety"),
    ("t-design", "Design Change", "Design"),
)
DEFECTS = (
    "Crack in drywall",
    "Water leak",
    "Missing fire caulk",
    "Door does not latch",
    "Duct clashes with beam",
    "Paint touch-up needed",
    "Light fixture not working",
)
DETAILS = (
    "at north wall",
    "near stair 2",
    "above ceiling grid",
    "by the façade — Zoë ✓",
    "at column C4 🚧",
    "in corridor 2",
)
ACTIONS = ("Provide submittal for review.", "Repair and notify.", "", "Coordinate with MEP.")


def synthesise(path: Path, issues: int, seed: int = 7) -> None:
    """Write a staging DB with `issues` normalised issues and their children."""
    sys.path.insert(0, str(REPO))
    from migrate.store import open_store, start_run

    rng = random.Random(seed)
    store = open_store(path)
    conn = store.conn
    emails = [f"user.number{n}@generalcontractor{n % 7}.example.com" for n in range(40)]
    with store.transaction():
        run_id = start_run(store, "bench-synthesis", {})
        conn.execute("INSERT INTO projects (id, name) VALUES ('proj-bench', 'Bench Tower')")
        areas: list[tuple[str, str | None, str, int]] = []
        for b in range(4):
            areas.append((f"b{b}", None, f"Building {b}", 0))
            for level in range(8):
                areas.append((f"b{b}-l{level}", f"b{b}", f"Level {level}", 0))
                for room in range(6):
                    areas.append(
                        (
                            f"b{b}-l{level}-r{room}",
                            f"b{b}-l{level}",
                            f"Room {level}{room:02d}",
                            int(rng.random() < 0.03),
                        )
                    )
        conn.executemany(
            "INSERT INTO areas (id, parent_id, name, deleted) VALUES (?, ?, ?, ?)", areas
        )
        conn.executemany(
            "INSERT INTO companies (id, name) VALUES (?, ?)",
            [(f"c{n}", f"Company {n}") for n in range(10)],
        )
        conn.executemany(
            "INSERT INTO root_causes (id, name) VALUES (?, ?)",
            [(f"rc{n}", f"Cause {n}") for n in range(8)],
        )
        conn.executemany(
            "INSERT INTO issue_types (id, name, category_name) VALUES (?, ?, ?)", TYPES
        )
        conn.executemany(
            "INSERT INTO custom_fields (id, name, container_type, position) "
            "VALUES (?, ?, 'Issue', ?)",
            [
                (CF_IDS[0], "Trade", 1),
                (CF_IDS[1], "Inspection Date", 2),
                (CF_IDS[2], "Backcharge", 3),
                (CF_IDS[3], "Notes", 4),
            ],
        )
        conn.executemany(
            "INSERT INTO target_assignees (project_id, id, name, login, login_lower, "
            "snapshot_run) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (TARGET_PROJECT, 7000 + n, f"User {n}", email, email, run_id)
                for n, email in enumerate(emails)
                if n % 5
            ],
        )
        conn.executemany(
            "INSERT INTO target_locations (project_id, id, name, node_name, parent_id, "
            "snapshot_run) VALUES (?, ?, ?, ?, ?, ?)",
            [(TARGET_PROJECT, 9000, "Building 0", "Building 0", None, run_id)],
        )
    room_ids = [a[0] for a in areas if a[0].count("-") == 2]
    start = datetime(2014, 1, 1, tzinfo=UTC)
    chunk = 5000
    for first in range(0, issues, chunk):
        rows, comments, history, attachments = [], [], [], []
        for index in range(first, min(first + chunk, issues)):
            source_id = f"issue-{index:08d}"
            created = start + timedelta(minutes=index * 7)
            status = rng.choices(STATUSES, STATUS_WEIGHTS)[0]
            type_id, type_name, category = rng.choice(TYPES)
            text = f"{rng.choice(DEFECTS)} {rng.choice(DETAILS)}. {rng.choice(ACTIONS)}"
            if rng.random() < 0.02:
                text = " ".join([text] * 30)  # a long one
            # The shape extract stages: name → {id, value, position}.
            custom = {
                "Trade": {
                    "id": CF_IDS[0],
                    "position": 1,
                    "value": rng.choice(("Mechanical", "Electrical", None)),
                },
                "Inspection Date": {
                    "id": CF_IDS[1],
                    "position": 2,
                    "value": (created + timedelta(days=3)).strftime("%m/%d/%Y"),
                },
                "Backcharge": {
                    "id": CF_IDS[2],
                    "position": 3,
                    "value": rng.choice(("1", "0", None)),
                },
                "Notes": {
                    "id": CF_IDS[3],
                    "position": 4,
                    "value": rng.choice(("See drawing A-201", None, "Ünïcödé nöte ✓")),
                },
            }
            due = (
                (date(2014, 1, 1) + timedelta(days=index % 400)).isoformat()
                if rng.random() < 0.7
                else None
            )
            rows.append(
                (
                    source_id,
                    f"{index + 1:06d}",
                    text,
                    status if rng.random() > 0.002 else "Parked",
                    rng.choice(PRIORITIES),
                    type_id,
                    type_name,
                    category,
                    rng.choice(room_ids) if rng.random() > 0.03 else None,
                    rng.choice(("", "by the door", "north side")),
                    f"c{rng.randrange(10)}" if rng.random() > 0.1 else None,
                    f"rc{rng.randrange(8)}" if rng.random() < 0.45 else None,
                    rng.choice(emails) if rng.random() > 0.2 else None,
                    due,
                    rng.choice(emails),
                    created.strftime("%Y-%m-%d %H:%M:%S -0400"),
                    int(status == "Void"),
                    json.dumps(custom),
                    rng.choice((0.5, 1.0, 2.0, 4.0)) if rng.random() < 0.3 else None,
                )
            )
            for n in range(rng.choices((0, 1, 2, 3, 4), (45, 25, 15, 10, 5))[0]):
                moment = created + timedelta(hours=n + 1)
                comments.append(
                    (
                        f"{source_id}-c{n}",
                        source_id,
                        rng.choice(emails),
                        moment.strftime("%Y-%m-%dT%H:%M:%S-04:00"),
                        "Checked with foreman.",
                    )
                )
            previous: str | None = None
            steps = rng.choices((1, 2, 3, 4), (12, 39, 9, 40))[0]
            for n, state in enumerate((*HISTORY_STEPS[: steps - 1], status)):
                moment = created + timedelta(days=n)
                history.append(
                    (
                        source_id,
                        state,
                        previous,
                        rng.choice(emails),
                        moment.strftime("%Y-%m-%d %H:%M:%S -0400"),
                    )
                )
                previous = state
            for n in range(rng.choices((0, 1, 2, 3), (40, 35, 15, 10))[0]):
                kind = "UriReference" if rng.random() < 0.05 else "Attachment"
                stored = kind == "Attachment"
                attachments.append(
                    (
                        f"{source_id}-a{n}",
                        source_id,
                        kind,
                        f"IMG_{n:04d}.jpg",
                        "stored" if stored else "skipped",
                        f"{index:056x}{n:08x}" if stored else None,
                        1000 if stored else None,
                        None if stored else "https://specs.example.com/09",
                    )
                )
        with store.transaction():
            conn.executemany(
                "INSERT INTO issues (source_id, identifier, description, status, priority, "
                "issue_type_id, issue_type_name, category_name, area_id, location_detail, "
                "responsible_company_id, root_cause_id, assigned_to_email, due_date, created_by, "
                "created_at, voided, custom_fields, labor_hours) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            conn.executemany(
                "INSERT INTO comments (id, container_type, container_id, created_by, created_at, "
                "text) VALUES (?, 'Issue', ?, ?, ?, ?)",
                comments,
            )
            conn.executemany(
                "INSERT INTO issue_status_history (issue_id, status, previous_status, user, "
                "start_dt) VALUES (?, ?, ?, ?, ?)",
                history,
            )
            conn.executemany(
                "INSERT INTO attachments (id, container_type, container_id, kind, filename, "
                "state, sha256, size, source_url) VALUES (?, 'Issue', ?, ?, ?, ?, ?, ?, ?)",
                attachments,
            )
    store.close()


def measure(path: Path, start_method: str | None = None) -> dict[str, Any]:
    """Run transform on the DB at `path`; elapsed seconds of run() and this process's peak RSS.

    `start_method` replaces the worker processes' start method (transform's own by default).
    """
    sys.path.insert(0, str(REPO))
    from migrate.mappings import default_mappings
    from migrate.settings import TransformSettings
    from migrate.store import open_store
    from migrate.transform import TransformOptions, issues, run

    if start_method:
        issues.START_METHOD = start_method

    # run() imports these on first use (migrate.mappings and migrate.transform import each
    # other); loading code is the process's start-up, not throughput, and costs ~25 ms here,
    # where PYTHONDONTWRITEBYTECODE=1 makes every import compile the source.
    importlib.import_module("migrate.transform.checklists")
    importlib.import_module("migrate.transform.locations")
    store = open_store(path)
    load_before = os.getloadavg()[0]
    calibration = calibrate()
    cpu_before = _cpu_seconds()
    started = time.perf_counter()
    result = run(
        store,
        None,
        options=TransformOptions(
            target_project_id=TARGET_PROJECT,
            mappings=default_mappings(),
            settings=TransformSettings(),
        ),
    )
    elapsed = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu_before  # this process and its (reaped) worker processes
    store.close()
    own, workers = peak_rss_mb()  # RUSAGE_CHILDREN: the largest reaped worker
    return {
        "elapsed": elapsed,
        "cpu_seconds": cpu,
        "peak_rss_mb": own,
        "worker_peak_rss_mb": workers,
        "load_before": load_before,
        "calibration_ms": calibration,
        "counts": result.counts["issues"],
        "plan_hash": result.plan_hash,
        "start_method": issues.START_METHOD,
    }


def calibrate() -> float:
    """Milliseconds of CPU time for a fixed piece of dict and string work, single core.

    The machine is shared: the same transform takes up to ~45 % longer in one hour than in
    another. This figure, taken just before each run, shows how fast the core was then.
    """
    started = time.process_time()
    total = 0  # nothing kept: the run's peak RSS must stay the transform's
    for n in range(300_000):
        record = {"id": n, "text": str(n)}
        total += len(f"{record['text']}: {record['id']}")
    return (time.process_time() - started) * 1000


def _cpu_seconds() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def _child(argv: list[str]) -> int:
    mode, size, path = argv[0], int(argv[1]), Path(argv[2])
    if mode == "synthesise":
        synthesise(path, size)
        return 0
    print(json.dumps(measure(path, argv[3] if len(argv) > 3 else None)))
    return 0


def bench_size(
    size: int, folder: Path, repeat: int = DEFAULT_REPEAT, start_method: str = ""
) -> list[dict[str, Any]]:
    """Synthesise `size` issues once, then transform a fresh copy `repeat` times, each step in
    its own subprocess."""
    path = folder / f"bench-{size}.db"
    child = [sys.executable, "-m", "bench.transform_bench", "--child"]
    started = time.perf_counter()
    subprocess.run([*child, "synthesise", str(size), str(path)], check=True, cwd=REPO)
    synthesis = time.perf_counter() - started
    runs = []
    for attempt in range(1, repeat + 1):
        copy = folder / f"run-{size}.db"
        shutil.copyfile(path, copy)
        output = subprocess.run(
            [*child, "measure", str(size), str(copy), start_method],
            check=True,
            capture_output=True,
            text=True,
            cwd=REPO,
        ).stdout
        copy.unlink()
        for suffix in ("-wal", "-shm"):
            Path(f"{copy}{suffix}").unlink(missing_ok=True)
        figures = json.loads(output.strip().splitlines()[-1])
        figures.update(
            size=size,
            run=attempt,
            issues_per_second=size / figures["elapsed"],
            synthesis_seconds=synthesis,
        )
        runs.append(figures)
    return runs


def append_benchmarks(results: list[dict[str, Any]]) -> None:
    """Append a dated section with the figures to BENCHMARKS.md."""
    lines = [
        f"## Transform throughput — {timestamp()}",
        "",
        f"`python -m bench.transform_bench` on {machine()}, SQLite {_sqlite_version()}. "
        "Synthetic issues shaped like the sandbox generator's (0-4 comments, 1-4 status changes, "
        "0-3 attachments, 4 custom fields as extract stages them, labor hours on 30 %), "
        "default mappings, "
        f"one worker process per CPU started with {results[0]['start_method']}; each size "
        "transformed once per run on a fresh copy of "
        "the same synthesised DB; wall time of `migrate.transform.run` only. CPU s = main + "
        "workers. Peak RSS of the main process (a fresh process that did nothing else) and of "
        "the largest worker. Load = 1-minute load average before the run (other work on the "
        "machine competes for the same cores). Calibration = CPU ms of a fixed piece of dict "
        "and string work just before the run (lower: a faster core at that moment).",
        "",
        "| issues | run | planned | quarantined | skipped | wall s | issues/s | CPU s | "
        "issues per CPU s | peak RSS main | peak RSS worker | load | calibration ms |",
        "|-------:|----:|--------:|------------:|--------:|-------:|---------:|------:|"
        "------:|------:|------:|-----:|-----:|",
    ]
    for figures in results:
        counts = figures["counts"]
        lines.append(
            f"| {figures['size']:,} | {figures['run']} | {counts['planned']:,} | "
            f"{counts['quarantined']:,} | "
            f"{counts['skipped']:,} | {figures['elapsed']:.2f} | "
            f"{figures['issues_per_second']:,.0f} | {figures['cpu_seconds']:.2f} | "
            f"{figures['size'] / figures['cpu_seconds']:,.0f} | "
            f"{figures['peak_rss_mb']:.0f} MB | {figures['worker_peak_rss_mb']:.0f} MB | "
            f"{figures['load_before']:.1f} | {figures['calibration_ms']:.0f} |"
        )
    lines += ["", summary(results)]
    append_section(lines)


def summary(results: list[dict[str, Any]]) -> str:
    """Slowest and median run per size against the target, and the RSS growth between sizes."""
    parts = []
    sizes = sorted({figures["size"] for figures in results})
    for size in sizes:
        rates = sorted(f["issues_per_second"] for f in results if f["size"] == size)
        verdict = "meets" if rates[0] >= TARGET_ISSUES_PER_SECOND else "misses"
        parts.append(
            f"{size:,} issues: slowest run {rates[0]:,.0f} issues/s, median "
            f"{statistics.median(rates):,.0f} ({verdict} the "
            f"{TARGET_ISSUES_PER_SECOND:,} issues/s target)"
        )
    text = "; ".join(parts) + "."
    if len(sizes) > 1:

        def peak(size: int, key: str) -> float:
            return max(f[key] for f in results if f["size"] == size)

        first, last = sizes[0], sizes[-1]
        text += (
            f" Peak RSS from {first:,} to {last:,} issues: main "
            f"{peak(first, 'peak_rss_mb'):.0f} → {peak(last, 'peak_rss_mb'):.0f} MB, worker "
            f"{peak(first, 'worker_peak_rss_mb'):.0f} → "
            f"{peak(last, 'worker_peak_rss_mb'):.0f} MB."
        )
    return text


def _sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark for each size and record it in BENCHMARKS.md."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return _child(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument(
        "--repeat",
        type=int,
        default=DEFAULT_REPEAT,
        help="Transform runs per size, each on a fresh copy (default 3).",
    )
    parser.add_argument("--no-record", action="store_true", help="Do not touch BENCHMARKS.md.")
    parser.add_argument(
        "--start-method",
        default="",
        help="Start transform's worker processes this way (spawn, fork, forkserver).",
    )
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="transform-bench-") as folder:
        for size in args.sizes:
            for figures in bench_size(size, Path(folder), max(1, args.repeat), args.start_method):
                results.append(figures)
                print(
                    f"{size:>7} issues, run {figures['run']}: {figures['elapsed']:.2f} s, "
                    f"{figures['issues_per_second']:,.0f} issues/s, "
                    f"CPU {figures['cpu_seconds']:.2f} s, "
                    f"peak RSS {figures['peak_rss_mb']:.0f} MB main / "
                    f"{figures['worker_peak_rss_mb']:.0f} MB worker, "
                    f"load {figures['load_before']:.1f}, "
                    f"calibration {figures['calibration_ms']:.0f} ms "
                    f"(synthesis {figures['synthesis_seconds']:.1f} s), "
                    f"{figures['start_method']}, plan {figures['plan_hash'][:16]}",
                    flush=True,
                )
    print(summary(results))
    if not args.no_record:
        append_benchmarks(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
