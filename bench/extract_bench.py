"""Extract: requests per record, records/s and peak RSS on a 10 000-issue project.

The BIM 360 Field simulator runs in this process; ``migrate extract`` (``extract_from_settings``)
runs in a fresh subprocess so its peak RSS and speed are its own. A first run pulls everything,
a second one (no source change) shows what an incremental re-run costs. The generated project is
thinned to about 2 000 issue and checklist photos (only every 8th issue keeps its files) and
every file is capped at 256 KiB: the generator's own mix (~9 700 files, 1.2 GB at 10 000
issues) would measure the disk more than the extract. Appends a dated section to BENCHMARKS.md.

    python -m bench extract
    python -m bench.extract_bench --issues 2000 --no-record
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    FIELD_ONE_CALL_ENDPOINTS,
    REPO,
    append_section,
    field_lower_bound,
    machine,
    peak_rss_mb,
    thinned_project,
    timestamp,
)

PASSWORD = "bench-Pa55word"


def _child(config: str) -> int:
    """Run one extract from ``config``; print its figures as JSON."""
    from migrate.extract import extract_from_settings
    from migrate.settings import load_settings

    started = time.perf_counter()
    result = extract_from_settings(load_settings(config))
    elapsed = time.perf_counter() - started
    print(
        json.dumps(
            {
                "elapsed": elapsed,
                "peak_rss_mb": peak_rss_mb()[0],
                "counts": result.counts,
                "blobs": result.blobs_downloaded,
                "bytes": result.bytes_downloaded,
                "requests": result.total_requests,
                "retries": result.retries,
                "changed": result.changed,
            }
        )
    )
    return 0


def _run_child(config: Path) -> dict[str, Any]:
    env = {
        **os.environ,
        "BIM360_FIELD_USERNAME": "demo@example.com",
        "BIM360_FIELD_PASSWORD": PASSWORD,
    }
    output = subprocess.run(
        [sys.executable, "-m", "bench.extract_bench", "--child", str(config)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def bench(issues: int, keep_every: int, cap: int, workers: int) -> dict[str, Any]:
    """Serve the project, extract it twice in subprocesses, return the figures."""
    from migrate.sandbox.field_server import FieldApp
    from migrate.sandbox.httpbase import RunningServer

    load_average = os.getloadavg()[0]
    project = thinned_project(issues, keep_every, cap)
    app = FieldApp(project, password=PASSWORD)
    counts = app.counts()
    inventory = app.inventory_counts()
    server = RunningServer(app)
    try:
        with tempfile.TemporaryDirectory(prefix="extract-bench-") as folder:
            config = Path(folder) / "migration.toml"
            config.write_text(
                f'[source]\nbase_url = "{server.url}"\nproject_id = "{project.main.id}"\n'
                f'workers = {workers}\n[staging]\npath = "staging.db"\nblobs = "blobs"\n',
                encoding="utf-8",
            )
            first = _run_child(config)
            first_calls = dict(app.calls)
            app.reset_counts()
            second = _run_child(config)
            second_calls = dict(app.calls)
            db_size = (Path(folder) / "staging.db").stat().st_size
    finally:
        server.stop()
    checklists = counts["checklists"]
    blobs = first["blobs"]
    bound = field_lower_bound(counts, blobs, inventory)
    lower_bound = bound["lower_bound"]
    records = counts["issues"] + checklists + blobs
    calls = sum(first_calls.values())
    return {
        "issues": counts["issues"],
        "checklists": checklists,
        "blobs": blobs,
        "attachments": counts["attachments"],
        "bytes": first["bytes"],
        "records": records,
        "first": first,
        "second": second,
        "calls": calls,
        "calls_by_route": first_calls,
        "second_calls": sum(second_calls.values()),
        "second_calls_by_route": second_calls,
        "lower_bound": lower_bound,
        "lower_bound_with_checklists": bound["with_checklists"],
        "safety_net": bound["safety_net"],
        "ratio": calls / bound["with_checklists"],
        "requests_per_record": calls / records,
        "bound_per_record": lower_bound / records,
        "records_per_second": records / first["elapsed"],
        "db_mb": db_size / 1e6,
        "workers": workers,
        "cap": cap,
        "keep_every": keep_every,
        "load_average": load_average,
    }


def append_benchmarks(figures: dict[str, Any]) -> None:
    """Append a dated section to BENCHMARKS.md."""
    first, second = figures["first"], figures["second"]
    lines = [
        f"## Extract — {timestamp()}",
        "",
        f"`python -m bench extract` on {machine()}. Generated project (seed 7) of "
        f"{figures['issues']:,} issues and {figures['checklists']:,} checklists served by the "
        f"simulator on loopback (in the benchmark's process); `migrate extract` in a fresh "
        f"subprocess, {figures['workers']} download workers. Files thinned to every "
        f"{figures['keep_every']}th issue plus all checklist files and capped at "
        f"{figures['cap'] // 1024} KiB: {figures['blobs']:,} files "
        f"({figures['attachments']:,} attachments, the rest signatures, marked-up "
        f"renditions and document references), {figures['bytes'] / 1e6:,.0f} MB. "
        "Load average at the start: "
        f"{figures['load_average']:.1f} (the simulator's own work counts in the seconds).",
        "",
        "| run | records | Field calls | calls/record | lower bound/record | seconds "
        "| records/s | peak RSS |",
        "|-----|--------:|------------:|-------------:|-------------------:|--------:"
        "|----------:|---------:|",
        f"| first (full) | {figures['records']:,} | {figures['calls']:,} | "
        f"{figures['requests_per_record']:.3f} | {figures['bound_per_record']:.3f} | "
        f"{first['elapsed']:.1f} | {figures['records_per_second']:,.0f} | "
        f"{first['peak_rss_mb']:.0f} MB |",
        f"| second (no change) | {figures['records']:,} | {figures['second_calls']:,} | "
        f"{figures['second_calls'] / figures['records']:.3f} | – | {second['elapsed']:.1f} | "
        f"{figures['records'] / second['elapsed']:,.0f} | {second['peak_rss_mb']:.0f} MB |",
        "",
        f"Records = issues + checklists + files. Lower bound = listing pages (issues, "
        f"checklists, checklist headers) + retrieve batches (100 ids) + 1 per file + "
        f"{FIELD_ONE_CALL_ENDPOINTS} one-call endpoints (checklist templates among them) + "
        f"{figures['safety_net']} calls of the safety net (the inventory of what is not "
        "migrated and a ready project export: status, latest, two archives) = "
        f"{figures['lower_bound']:,}; the checklist API has no batch read, so 1 call per "
        f"checklist comes on top ({figures['lower_bound_with_checklists']:,}): the first run "
        f"made {figures['ratio']:.3f}× that. The second run "
        f"made {second['changed']} changes and "
        f"{figures['second_calls_by_route'].get('issues_retrieve', 0)} retrieve / "
        f"{figures['second_calls_by_route'].get('binary_data', 0)} binary_data calls. "
        f"Staging DB {figures['db_mb']:.0f} MB.",
    ]
    append_section(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the extract benchmark and record it in BENCHMARKS.md."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return _child(argv[1])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--issues", type=int, default=10_000)
    parser.add_argument(
        "--keep-every",
        type=int,
        default=8,
        help="Only every Nth issue keeps its files (default 8).",
    )
    parser.add_argument("--cap", type=int, default=256 * 1024, help="Largest file, bytes.")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--no-record", action="store_true", help="Do not touch BENCHMARKS.md.")
    args = parser.parse_args(argv)
    figures = bench(args.issues, args.keep_every, args.cap, args.workers)
    first = figures["first"]
    print(
        f"{figures['records']:,} records ({figures['issues']:,} issues, "
        f"{figures['checklists']:,} checklists, {figures['blobs']:,} files, "
        f"{figures['bytes'] / 1e6:,.0f} MB) in {first['elapsed']:.1f} s: "
        f"{figures['records_per_second']:,.0f} records/s, {figures['calls']:,} Field calls = "
        f"{figures['requests_per_record']:.3f}/record (lower bound "
        f"{figures['bound_per_record']:.3f}; with checklist details "
        f"{figures['lower_bound_with_checklists'] / figures['records']:.3f}, ratio "
        f"{figures['ratio']:.3f}×), peak RSS "
        f"{first['peak_rss_mb']:.0f} MB; re-run without change: "
        f"{figures['second_calls']} calls in {figures['second']['elapsed']:.1f} s",
        flush=True,
    )
    print("calls by route:", json.dumps(figures["calls_by_route"], sort_keys=True), flush=True)
    if not args.no_record:
        append_benchmarks(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
