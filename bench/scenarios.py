"""Whole-pipeline scenarios: 1 000, 10 000 and 100 000 issues, extract → transform → load.

For each size both simulators serve a generated project (seed 7: comments, status history,
checklists and files in the generator's proportions) from this process, and the pipeline runs
in a fresh subprocess (the same three stage calls as ``migrate run``), so its peak RSS is its
own. Between stages the subprocess waits for this process to read the simulators' counters,
so requests are attributed to the stage that made them. Figures per size:

- wall time, records/s and peak RSS per stage;
- requests per record for each API against the lower bound (see ``bench/common.py``);
- quota use: Procore's windows at their documented values (3 600 requests an hour, 150 per
  10 s) in scaled time: both window lengths are divided by ``--time-scale`` and the limits
  kept, so the run sees the same windows ``time-scale`` times faster. The share of the
  quota the windows allowed while the load ran that it used, the fullest they got, and 429s;
- a no-change re-run (a second subprocess): requests per API, writes, retrieve/binary_data.

Then the 10 000-issue plan is loaded again into a fresh Procore the naive way (one
``create_issue`` per issue, as a per-item connector does) to compare calls, with the wall time
that would take at Procore's hourly quota and at a per-item connector's 100 calls a minute.

Files are capped at 64 KiB (``--cap``) and, above 10 000 issues, only every
``--keep-every``-th issue keeps its files, so 100 000 issues fit this machine's disk and time;
each section says so. Appends a dated section to BENCHMARKS.md.

    python -m bench scenarios
    python -m bench.scenarios --sizes 1000 --no-naive --no-record
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    REPO,
    append_section,
    field_lower_bound,
    machine,
    naive_load,
    peak_rss_mb,
    procore_lower_bound,
    reset_peak_rss,
    thinned_project,
    timestamp,
)
from bench.inspections_bench import planned_bound

DEFAULT_SIZES = (1_000, 10_000, 100_000)
NAIVE_SIZE = 10_000
STAGES = ("extract", "transform", "load")
#: Procore's documented windows: (limit, seconds).
HOURLY = (3600, 3600.0)
SPIKE = (150, 10.0)
#: Seed 002's per-item connector: 100 calls per 60 s per connection.
CONNECTOR_THROTTLE = (100, 60.0)
#: Lines the pipeline subprocess writes for this process start with this.
MARK = "@@scenario "
GENEROUS = {"hourly_limit": 10_000_000, "spike_limit": 1_000_000}
#: Procore simulator routes that change something.
PROCORE_WRITES = frozenset(
    {
        "coordination_issues.sync",
        "coordination_issues.create",
        "coordination_issues.update",
        "locations.find_or_create_by_path",
        "locations.create",
        "uploads.create",
        "storage.upload",
    }
)


# -- the pipeline subprocess -----------------------------------------------------------------
def _child(mode: str, config: str) -> int:
    """``pipeline``: the three stages, reporting after each; ``naive``: the per-item load."""
    from migrate.settings import load_settings

    settings = load_settings(config)
    if mode == "naive":
        return _child_naive(settings)
    from migrate.extract import extract_from_settings
    from migrate.load import load_from_settings
    from migrate.transform import transform_from_settings

    runners: dict[str, Callable[..., Any]] = {
        "extract": extract_from_settings,
        "transform": transform_from_settings,
        "load": load_from_settings,
    }
    for stage in STAGES:
        reset_peak_rss()  # each stage's own peak (it starts from the RSS the last one left)
        started = time.perf_counter()
        result = runners[stage](settings, os.environ)
        elapsed = time.perf_counter() - started
        own, workers = peak_rss_mb()
        print(
            MARK
            + json.dumps(
                {
                    "stage": stage,
                    "elapsed": elapsed,
                    "peak_rss_mb": own,
                    "worker_peak_rss_mb": workers,
                    **_summary(stage, result),
                }
            ),
            flush=True,
        )
        sys.stdin.readline()  # the parent reads the simulators' counters meanwhile
    return 0


def _summary(stage: str, result: Any) -> dict[str, Any]:
    counts = {entity: dict(c) for entity, c in result.counts.items()}
    if stage == "extract":
        return {
            "counts": counts,
            "blobs": result.blobs_downloaded,
            "bytes": result.bytes_downloaded,
            "changed": result.changed,
            "retries": result.retries,
        }
    if stage == "transform":
        return {"counts": counts, "planned_locations": result.planned_locations}
    return {
        "counts": counts,
        "uploads": result.uploads_done,
        "reused": result.uploads_reused,
        "quota_wait": result.quota_wait_seconds,
        "rate_limited": result.rate_limited,
        "sync_batches": list(result.sync_batch_sizes),
        "writes": result.write_requests,
    }


def _child_naive(settings: Any) -> int:
    from migrate.clients.procore import ProcoreClient
    from migrate.settings import target_credentials
    from migrate.store import BlobStore, open_store

    store = open_store(settings.staging.path)
    started = time.perf_counter()
    with ProcoreClient(settings.target, target_credentials(os.environ)) as client:
        done = naive_load(
            client, store, BlobStore(settings.staging.blobs), int(settings.target.project_id)
        )
    elapsed = time.perf_counter() - started
    store.close()
    print(MARK + json.dumps({"stage": "naive", "elapsed": elapsed, **done}), flush=True)
    return 0


def _run_child(
    mode: str, config: Path, env: Mapping[str, str], on_stage: Callable[[dict[str, Any]], None]
) -> dict[str, dict[str, Any]]:
    """Run the subprocess; ``on_stage`` sees each stage's record before the next one starts."""
    stages: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8") as errors:
        child = subprocess.Popen(
            [sys.executable, "-m", "bench.scenarios", "--child", mode, str(config)],
            cwd=REPO,
            env={**os.environ, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        assert child.stdin is not None and child.stdout is not None
        for line in child.stdout:
            if not line.startswith(MARK):
                continue
            record = json.loads(line[len(MARK) :])
            stages[record["stage"]] = record
            on_stage(record)
            if mode == "pipeline":
                child.stdin.write("\n")
                child.stdin.flush()
        child.stdin.close()
        if child.wait():
            errors.seek(0)
            tail = errors.read()[-3000:]
            raise RuntimeError(f"the {mode} subprocess failed ({child.returncode}):\n{tail}")
    return stages


# -- measuring from the simulators' side -----------------------------------------------------
class WindowSampler:
    """Samples how full Procore's two windows are, every ``interval`` seconds, in a thread."""

    def __init__(self, app: Any, interval: float = 0.05) -> None:
        self.app = app
        self.interval = interval
        self.peak_hourly = 0
        self.peak_spike = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        app = self.app
        while not self._stop.wait(self.interval):
            with app.lock:
                now = app.now()
                hourly = app.hourly.limit - app.hourly.remaining(now)
                spike = app.spike.limit - app.spike.remaining(now)
            self.peak_hourly = max(self.peak_hourly, hourly)
            self.peak_spike = max(self.peak_spike, spike)


@dataclass
class StageMeter:
    """Per-stage requests each simulator received; Procore quota counters around the load."""

    box: Any
    calls: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    quota: dict[str, dict[str, int]] = field(default_factory=dict)
    sampler: WindowSampler | None = None

    def __post_init__(self) -> None:
        self.box.field_app.reset_counts()
        self.box.procore_app.reset_counts()
        self._quota_before = self.box.procore_app.rate_stats()

    def on_stage(self, record: dict[str, Any]) -> None:
        stage = record["stage"]
        field_app, procore_app = self.box.field_app, self.box.procore_app
        self.calls[stage] = {"field": field_app.call_counts(), "procore": procore_app.call_counts()}
        field_app.reset_counts()
        procore_app.reset_counts()
        stats = procore_app.rate_stats()
        self.quota[stage] = {
            key: stats[key] - self._quota_before[key] for key in ("requests", "rate_limited")
        }
        self._quota_before = stats
        if stage == "load" and self.sampler is not None:
            self.sampler.stop()
            self.quota[stage]["peak_hourly"] = self.sampler.peak_hourly
            self.quota[stage]["peak_spike"] = self.sampler.peak_spike
            self.sampler = None
        if stage == "transform":  # the load starts once this returns
            self.sampler = WindowSampler(procore_app)
            self.sampler.start()


# -- one scenario ----------------------------------------------------------------------------
def files_policy(size: int, cap: int, keep_every: int) -> tuple[int, int]:
    """(keep_every, cap) for a size: every issue keeps its files up to 10 000 issues."""
    return (1 if size <= 10_000 else keep_every), cap


def _sandbox(project: Any, procore_options: dict[str, Any]) -> Any:
    from migrate.sandbox.runner import Sandbox, SandboxOptions

    options = SandboxOptions(procore_options={"keep_upload_bytes": False, **procore_options})
    return Sandbox(options, project=project)


def _write_config(folder: Path, box: Any) -> Path:
    from migrate.demo import write_demo_config
    from migrate.mappings import write_default_mappings

    write_default_mappings(folder / "mappings")
    return write_demo_config(folder, box)


def _procore_bound(store_path: Path, box: Any, created: int) -> dict[str, int]:
    """Lower bound of the first run's Procore requests (transform snapshot + load)."""
    import sqlite3

    from migrate.contract import LoadReadings

    project_id = box.procore_project_id
    conn = sqlite3.connect(store_path)
    try:
        rows = conn.execute(
            "SELECT path, is_leaf, existing_target_id FROM planned_locations"
        ).fetchall()
        (attachments,) = conn.execute(
            "SELECT COALESCE(SUM(json_array_length(attachment_ids)), 0) FROM planned_issues"
        ).fetchone()
        statuses = conn.execute("SELECT status, COUNT(*) FROM planned_issues GROUP BY status")
        # Sync creates only the statuses Procore's create takes; the rest need one PATCH each.
        readings = LoadReadings()
        status_patches = sum(
            n for status, n in statuses if readings.create_status(status) != status
        )
        assignees, snapshot_locations = (
            conn.execute(
                f"SELECT COUNT(*) FROM {table} WHERE project_id = ?", (project_id,)
            ).fetchone()[0]
            for table in ("target_assignees", "target_locations")
        )
    finally:
        conn.close()
    pending = [(tuple(json.loads(p)), bool(leaf)) for p, leaf, existing in rows if existing is None]
    new_leaves = [path for path, leaf in pending if leaf]
    parents = {path[:-1] for path in new_leaves}
    # Inner nodes whose id no leaf answer gives: a list of every location, or one call each.
    unknown_inner = [path for path, leaf in pending if not leaf and path not in parents]
    located = len(box.procore_app.snapshot()["projects"][str(project_id)]["locations"])
    reads = min(len(unknown_inner), math.ceil(located / 100)) if unknown_inner else 0
    snapshot_pages = max(1, math.ceil(assignees / 100)) + max(
        1, math.ceil(snapshot_locations / 100)
    )
    # The checklists' writes, held to the inspections bench's bound; each checklist file's
    # Create Upload is followed by its storage POST, which the simulator counts here too.
    inspection_kinds = planned_bound(store_path, project_id)
    inspections = sum(inspection_kinds.values()) + inspection_kinds["uploads"]
    bound = procore_lower_bound(
        created,
        len(new_leaves),
        reads,
        attachments,
        other_reads=snapshot_pages + inspections + status_patches,
        access_checks=2,  # transform's and load's Show Project
    )
    return {
        "lower_bound": bound,
        "inspections": inspections,
        "status_patches": status_patches,
        **{f"inspections_{kind}": n for kind, n in inspection_kinds.items()},
        "attachments": attachments,
        "new_leaves": len(new_leaves),
        "location_reads": reads,
        "snapshot_pages": snapshot_pages,
    }


def bench_size(
    size: int, folder: Path, *, time_scale: float, cap: int, keep_every: int
) -> dict[str, Any]:
    """Serve a ``size``-issue project; run the pipeline, then run it again without changes."""
    keep, cap = files_policy(size, cap, keep_every)
    project = thinned_project(size, keep, cap)
    windows = {
        "hourly_limit": HOURLY[0],
        "hourly_window": HOURLY[1] / time_scale,
        "spike_limit": SPIKE[0],
        "spike_window": SPIKE[1] / time_scale,
    }
    load_average = os.getloadavg()[0]
    folder.mkdir(parents=True, exist_ok=True)
    with _sandbox(project, windows) as box:
        config = _write_config(folder, box)
        env = box.environment()
        issues_before = len(box.procore_app.issues(box.procore_project_id))
        first = StageMeter(box)
        bound: dict[str, int] = {}

        def after_stage(record: dict[str, Any]) -> None:
            first.on_stage(record)
            if record["stage"] == "load":  # the plan as this run saw it; a re-run re-plans
                created = record["counts"]["coordination_issue"]["created"]
                bound.update(_procore_bound(config.parent / "staging.db", box, created))

        stages = _run_child("pipeline", config, env, after_stage)
        rerun = StageMeter(box)
        again = _run_child("pipeline", config, env, rerun.on_stage)
        field_counts = box.field_app.counts()
        field_inventory = box.field_app.inventory_counts()
        arrived = len(box.procore_app.issues(box.procore_project_id)) - issues_before
        box.procore_app.close()
    blobs_mb = sum(p.stat().st_size for p in (folder / "blobs").rglob("*") if p.is_file()) / 1e6
    return {
        "size": size,
        "keep_every": keep,
        "cap": cap,
        "time_scale": time_scale,
        "windows": windows,
        "load_average": load_average,
        "stages": stages,
        "calls": first.calls,
        "quota": first.quota,
        "rerun": again,
        "rerun_calls": rerun.calls,
        "field_counts": field_counts,
        "field_bound": field_lower_bound(field_counts, stages["extract"]["blobs"], field_inventory),
        "procore_bound": bound,
        "arrived": arrived,
        "blobs_mb": blobs_mb,
        "folder": str(folder),
    }


def bench_naive(folder: Path, size: int) -> dict[str, Any]:
    """Load ``folder``'s plan into a fresh Procore (generous quota) one call per item."""
    from migrate.sandbox.generator import GeneratedProject

    project = GeneratedProject(seed=7, issues=size)  # the same Procore starting state
    with _sandbox(project, GENEROUS) as box:
        (folder / "naive").mkdir(exist_ok=True)
        config = _write_config(folder / "naive", box)
        text = config.read_text(encoding="utf-8")
        relative = 'path = "staging.db"\nblobs = "blobs"'
        assert relative in text, "migrate.demo writes its config differently now"
        config.write_text(
            text.replace(
                relative, f'path = "{folder / "staging.db"}"\nblobs = "{folder / "blobs"}"'
            ),
            encoding="utf-8",
        )
        box.procore_app.reset_counts()
        done = _run_child("naive", config, box.environment(), lambda record: None)["naive"]
        calls = box.procore_app.call_counts()
        quota = box.procore_app.rate_stats()["requests"]
        box.procore_app.close()
    return {**done, "calls": calls, "requests": sum(calls.values()), "quota_requests": quota}


# -- figures -----------------------------------------------------------------------------------
def figures(run: dict[str, Any]) -> dict[str, Any]:
    """Derived numbers for one scenario: records, rates, requests against the bounds."""
    stages, calls = run["stages"], run["calls"]
    extract, transform, load = (stages[s] for s in STAGES)
    counts = run["field_counts"]
    load_counts = load["counts"]
    records = {
        "extract": counts["issues"] + counts["checklists"] + extract["blobs"],
        "transform": sum(c.get("extracted", 0) for c in transform["counts"].values()),
        "load": (
            load_counts["coordination_issue"]["created"]
            + load_counts["location"]["created"]
            + load["uploads"]
        ),
    }
    field_requests = sum(sum(calls[s]["field"].values()) for s in STAGES)
    procore_requests = sum(sum(calls[s]["procore"].values()) for s in STAGES)
    quota = run["quota"]["load"]
    windows = run["windows"]
    # What the hourly window allowed while the load ran: one full window, or the sustained
    # rate over a load longer than a window (the spike window allows 15× that rate).
    allowed = windows["hourly_limit"] * max(1.0, load["elapsed"] / windows["hourly_window"])
    rerun_calls = run["rerun_calls"]
    rerun_field = {
        k: sum(rerun_calls[s]["field"].get(k, 0) for s in STAGES)
        for k in ("issues_retrieve", "binary_data")
    }
    rerun_procore = {}
    for stage in STAGES:
        for route, n in rerun_calls[stage]["procore"].items():
            rerun_procore[route] = rerun_procore.get(route, 0) + n
    return {
        "records": records,
        "rates": {s: records[s] / stages[s]["elapsed"] for s in STAGES},
        "field_requests": field_requests,
        "field_bound": run["field_bound"]["with_checklists"],
        "field_records": records["extract"],
        "procore_requests": procore_requests,
        "procore_bound": run["procore_bound"]["lower_bound"],
        "procore_records": records["load"],
        "quota_requests": quota["requests"],
        "quota_allowed": allowed,
        "quota_share": quota["requests"] / allowed,
        "rerun_field": sum(sum(rerun_calls[s]["field"].values()) for s in STAGES),
        "rerun_field_routes": rerun_field,
        "rerun_procore": sum(rerun_procore.values()),
        "rerun_procore_writes": sum(
            n for route, n in rerun_procore.items() if route in PROCORE_WRITES
        ),
        "rerun_procore_routes": rerun_procore,
        "rerun_seconds": sum(run["rerun"][s]["elapsed"] for s in STAGES),
    }


def _workers_rss(stage: dict[str, Any]) -> str:
    peak = stage["worker_peak_rss_mb"]
    return f"{peak:.0f} MB" if peak else "none started"


def problems(run: dict[str, Any]) -> list[str]:
    """What a scenario must not show: 429s, lost issues, work done by a no-change re-run."""
    f = figures(run)
    found = []
    rate_limited = sum(q["rate_limited"] for q in run["quota"].values())
    if rate_limited:
        found.append(f"{rate_limited} requests were answered 429")
    created = run["stages"]["load"]["counts"]["coordination_issue"]["created"]
    if run["arrived"] != created:
        found.append(f"{created} issues created but {run['arrived']} arrived in Procore")
    for route, n in f["rerun_field_routes"].items():
        if n:
            found.append(f"the no-change re-run made {n} {route} calls")
    if f["rerun_procore_writes"]:
        found.append(f"the no-change re-run made {f['rerun_procore_writes']} Procore writes")
    return [f"{run['size']:,} issues: {problem}" for problem in found]


def describe(run: dict[str, Any]) -> list[str]:
    """Console lines for one scenario."""
    f = figures(run)
    stages = run["stages"]
    lines = [f"{run['size']:>7,} issues ({run['blobs_mb']:,.0f} MB of files):"]
    for stage in STAGES:
        s = stages[stage]
        lines.append(
            f"  {stage:<9} {s['elapsed']:7.1f} s  {f['records'][stage]:>8,} records "
            f"{f['rates'][stage]:>8,.0f}/s  peak RSS {s['peak_rss_mb']:.0f} MB"
            + (f" (workers {_workers_rss(s)})" if stage == "transform" else "")
        )
    quota = run["quota"]["load"]
    lines += [
        f"  Field   {f['field_requests']:,} requests, lower bound {f['field_bound']:,} "
        f"({f['field_requests'] / f['field_bound']:.3f}×), "
        f"{f['field_requests'] / f['field_records']:.3f}/record",
        f"  Procore {f['procore_requests']:,} requests, lower bound {f['procore_bound']:,} "
        f"({f['procore_requests'] / f['procore_bound']:.3f}×), "
        f"{f['procore_requests'] / f['procore_records']:.3f}/record",
        f"  quota during load: {quota['requests']:,} requests, {f['quota_share']:.1%} of what the "
        f"windows allowed, hourly window peak {quota.get('peak_hourly', 0):,}/"
        f"{HOURLY[0]:,}, spike window peak {quota.get('peak_spike', 0)}/{SPIKE[0]}, "
        f"{quota['rate_limited']} × 429",
        f"  no-change re-run: {f['rerun_field']:,} Field requests "
        f"({f['rerun_field_routes']['issues_retrieve']} retrieve, "
        f"{f['rerun_field_routes']['binary_data']} binary_data), {f['rerun_procore']} Procore "
        f"requests ({f['rerun_procore_writes']} writes), {f['rerun_seconds']:.1f} s",
    ]
    return lines


def naive_figures(naive: dict[str, Any], ours: dict[str, Any] | None) -> dict[str, Any]:
    """Calls and the time they need at Procore's quota and at a connector's throttle."""
    connector_calls = naive["requests"] - naive["calls"].get("oauth.token", 0)
    result = {
        "requests": naive["requests"],
        "quota_requests": naive["quota_requests"],
        "creates": naive["calls"].get("coordination_issues.create", 0),
        "connector_calls": connector_calls,
        "connector_hours": connector_calls * CONNECTOR_THROTTLE[1] / CONNECTOR_THROTTLE[0] / 3600,
        "quota_hours": naive["quota_requests"] / HOURLY[0] * HOURLY[1] / 3600,
        "elapsed": naive["elapsed"],
    }
    if ours is not None:
        load_calls = ours["calls"]["load"]["procore"]
        our_requests = sum(load_calls.values())
        our_quota = ours["quota"]["load"]["requests"]
        result.update(
            our_requests=our_requests,
            our_quota=our_quota,
            our_syncs=load_calls.get("coordination_issues.sync", 0),
            ratio=naive["requests"] / our_requests,
            quota_ratio=naive["quota_requests"] / our_quota,
            our_quota_hours=our_quota / HOURLY[0] * HOURLY[1] / 3600,
            our_connector_hours=(our_requests - load_calls.get("oauth.token", 0))
            * CONNECTOR_THROTTLE[1]
            / CONNECTOR_THROTTLE[0]
            / 3600,
        )
    return result


def describe_naive(naive: dict[str, Any], ours: dict[str, Any] | None) -> list[str]:
    n = naive_figures(naive, ours)
    line = (
        f"  naive {naive['issues']:,} issues: {n['requests']:,} Procore requests "
        f"({n['creates']:,} single creates, {n['quota_requests']:,} against the quota) in "
        f"{n['elapsed']:.1f} s; at Procore's 3 600/h: {n['quota_hours']:.1f} h; through a "
        f"connector at 100 calls/60 s: {n['connector_hours']:.1f} h"
    )
    if ours is not None:
        line += (
            f"; batched load: {n['our_requests']:,} requests ({n['our_syncs']} sync "
            f"calls), {n['ratio']:.2f}× fewer, {n['quota_ratio']:.2f}× fewer against the "
            f"quota ({n['our_quota_hours']:.1f} h at 3 600/h)"
        )
    return [line]


def append_benchmarks(runs: list[dict[str, Any]], naive: dict[str, Any] | None) -> None:
    """Append the scenarios' dated section to BENCHMARKS.md."""
    scale = runs[0]["time_scale"] if runs else 1.0
    cap = runs[0]["cap"] if runs else 0
    thinned = [r for r in runs if r["keep_every"] > 1]
    lines = [
        "## Scenarios: the whole pipeline at "
        + ", ".join(f"{r['size']:,}" for r in runs)
        + f" issues — {timestamp()}",
        "",
        f"`python -m bench scenarios` on {machine()}. Generated project (seed 7: comments, "
        "status history, checklists at one per 8 issues, files) served by both simulators "
        "in the benchmark's process; the pipeline (extract → transform → load, the calls "
        "`migrate run` makes) in a fresh subprocess, so its peak RSS is its own (transform "
        "workers listed apart). Requests are what the simulators received, attributed to the "
        "stage that made them. Load averages at the start: "
        + ", ".join(f"{r['load_average']:.1f}" for r in runs)
        + ".",
        "",
        f"**Deviations.** Every file is capped at {cap // 1024} KiB (the generator's own mix "
        "averages ~125 kB with some 5-8 MB videos: 1.2 GB at 10 000 issues, ~12 GB at "
        "100 000)"
        + (
            "; at " + ", ".join(f"{r['size']:,}" for r in thinned) + " issues only every "
            f"{thinned[0]['keep_every']}th issue keeps its files (checklist files and links "
            "are all kept), so that size finishes within the time budget of `make bench`; "
            "requests per record are lower there because files are fewer per issue"
            if thinned
            else ""
        )
        + ". Procore's upload bytes are hashed, not kept (`keep_upload_bytes=False`). "
        f"Quota in scaled time: Procore's windows (3 600 an hour, 150 per 10 s) with both "
        f"lengths divided by {scale:g} (hourly {HOURLY[1] / scale:g} s, spike "
        f"{SPIKE[1] / scale:g} s) and the limits kept, i.e. the real windows {scale:g}× "
        "faster; the rate-limit headers still count whole seconds, which costs the budget a "
        "little more of a scaled window than of a real one. In real time the same load needs "
        f"{scale:g}× its scaled load time.",
        "",
        "| issues | files (MB) | stage | wall s | records | records/s | peak RSS |",
        "|-------:|-----------:|-------|-------:|--------:|----------:|---------:|",
    ]
    for run in runs:
        f = figures(run)
        for stage in STAGES:
            s = run["stages"][stage]
            rss = f"{s['peak_rss_mb']:.0f} MB"
            if stage == "transform":
                rss += f" (workers {_workers_rss(s)})"
            lines.append(
                f"| {run['size']:,} | {run['blobs_mb']:,.0f} | {stage} | {s['elapsed']:.1f} | "
                f"{f['records'][stage]:,} | {f['rates'][stage]:,.0f} | {rss} |"
            )
    lines += [
        "",
        "Records: extract = issues + checklists + files downloaded; transform = source records "
        "read (issues and areas); load = issues created + locations created + files uploaded. "
        "Peak RSS is the stage's own high-water mark in the pipeline process (`VmHWM`, reset "
        "through /proc/self/clear_refs as each stage starts, so it includes what the stages "
        "before it left resident); transform's workers are reported apart (largest "
        "`ru_maxrss` of the reaped workers).",
        "",
        "| issues | API | requests | lower bound | ratio | requests/record | bound/record |",
        "|-------:|-----|---------:|------------:|------:|----------------:|-------------:|",
    ]
    for run in runs:
        f = figures(run)
        for api in ("field", "procore"):
            made, bound, records = (f[f"{api}_requests"], f[f"{api}_bound"], f[f"{api}_records"])
            lines.append(
                f"| {run['size']:,} | {'BIM 360 Field' if api == 'field' else 'Procore'}"
                f" | {made:,} | {bound:,} | {made / bound:.3f} | "
                f"{made / records:.3f} | {bound / records:.3f} |"
            )
    lines += [
        "",
        "Field lower bound: listing pages (100 a page, issues and checklists) + retrieve "
        "batches of 100 ids + 1 per file + 10 one-call endpoints (project, reference data, "
        "voided ids, status history) + 1 detail call per checklist (no batch read exists). "
        "Procore lower bound: ceil(issues / 1000) sync calls + 1 per leaf location Procore "
        "lacks + list pages for inner-node ids no leaf answer gives + 2 per attachment "
        "(create the upload: counts against the quota; POST to storage: does not) + 1 "
        "status PATCH per issue whose status create does not take + the checklists' writes "
        "(`planned_bound` of bench/inspections_bench.py: 1 create, 1 per checklist file "
        "(+ its storage POST), 1 per answered item, 1 per item comment, 1 per item file, 1 "
        "status change when not open) + the transform's snapshot pages (assignees, "
        "locations) + 2 access checks (the Show Project call transform and load each start "
        "with) + 1 token (not counted by the quota). Procore requests include the "
        "transform's snapshot and every stage's token; reading checklist items back and the "
        "inspection templates' building blocks are not in the bound.",
        "",
        "| issues | quota requests during load | load s (scaled) | quota allowed meanwhile "
        "| share used | fullest hourly window | fullest spike window | 429s |",
        "|-------:|---------------------------:|----------------:|------------------------:"
        "|-----------:|----------------------:|---------------------:|-----:|",
    ]
    for run in runs:
        f = figures(run)
        quota = run["quota"]["load"]
        lines.append(
            f"| {run['size']:,} | {quota['requests']:,} | {run['stages']['load']['elapsed']:.1f}"
            f" | {f['quota_allowed']:,.0f} | {f['quota_share']:.1%} | "
            f"{quota.get('peak_hourly', 0):,} / {HOURLY[0]:,} | "
            f"{quota.get('peak_spike', 0)} / {SPIKE[0]} | {quota['rate_limited']} |"
        )
    lines += [
        "",
        "Quota allowed meanwhile = 3 600 × max(1, load seconds / scaled hour): one full "
        "hourly window for a load shorter than the window (the quota did not bind), else the "
        "sustained rate over the load's time. The spike window allows 15× the hourly rate, "
        "so it binds only bursts. Storage POSTs and tokens are not counted by Procore. "
        "Fullest windows are sampled every 50 ms; the rate budget keeps 1 % of each window "
        "in reserve. Part of a load's time uses no quota at all (reading the plan, each "
        "batch's sync call after its uploads).",
        "",
        "| issues | re-run s | Field requests | retrieve | binary_data | Procore requests "
        "| Procore writes |",
        "|-------:|---------:|---------------:|---------:|------------:|-----------------:"
        "|---------------:|",
    ]
    for run in runs:
        f = figures(run)
        lines.append(
            f"| {run['size']:,} | {f['rerun_seconds']:.1f} | {f['rerun_field']:,} | "
            f"{f['rerun_field_routes']['issues_retrieve']} | "
            f"{f['rerun_field_routes']['binary_data']} | {f['rerun_procore']} | "
            f"{f['rerun_procore_writes']} |"
        )
    lines += [
        "",
        "No-change re-run: the same pipeline again in a new process; the Field side lists "
        "and compares, the Procore side is the transform's snapshot and each stage's access "
        "check and token.",
    ]
    if naive is not None:
        ours = next((r for r in runs if r["size"] == naive["size"]), None)
        n = naive_figures(naive, ours)
        text = (
            f"Naive load of the {naive['size']:,}-issue plan (the same staging DB, a fresh "
            "Procore with a generous quota): one find_or_create per location node, one "
            "`ProcoreClient.create_issue` per issue, the same uploads: "
            f"{n['requests']:,} requests ({n['creates']:,} single creates), "
            f"{n['quota_requests']:,} against the quota, {n['elapsed']:.1f} s unthrottled."
        )
        if ours is not None:
            text += (
                f" The batched load made {n['our_requests']:,} ({n['our_syncs']} sync calls): "
                f"{n['ratio']:.2f}× fewer requests, {n['quota_ratio']:.2f}× fewer against "
                f"the quota. At Procore's 3 600 an hour the naive load needs "
                f"{n['quota_hours']:.1f} h of quota, the batched one "
                f"{n['our_quota_hours']:.1f} h. Through a per-item connector throttled at "
                f"100 calls per 60 s (seed 002; every request but the token counted, storage "
                f"POSTs included) the naive load takes {n['connector_hours']:.1f} h (the same "
                f"throttle on the batched load's calls: {n['our_connector_hours']:.1f} h)."
            )
        lines += ["", text]
    append_section(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the scenarios and record them in BENCHMARKS.md."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return _child(argv[1], argv[2])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument(
        "--time-scale",
        type=float,
        default=100.0,
        help="Procore's windows run this many times faster (default 100).",
    )
    parser.add_argument("--cap", type=int, default=64 * 1024, help="Largest file, bytes.")
    parser.add_argument(
        "--keep-every",
        type=int,
        default=8,
        help="Above 10 000 issues only every Nth issue keeps its files.",
    )
    parser.add_argument(
        "--no-naive",
        action="store_true",
        help=f"Skip the naive load of the {NAIVE_SIZE:,}-issue plan.",
    )
    parser.add_argument("--no-record", action="store_true", help="Do not touch BENCHMARKS.md.")
    parser.add_argument("--json", type=Path, help="Also write every raw figure to this file.")
    args = parser.parse_args(argv)
    runs: list[dict[str, Any]] = []
    naive = None
    with tempfile.TemporaryDirectory(prefix="scenario-bench-") as tmp:
        for size in args.sizes:
            run = bench_size(
                size,
                Path(tmp) / f"issues-{size}",
                time_scale=args.time_scale,
                cap=args.cap,
                keep_every=args.keep_every,
            )
            runs.append(run)
            print("\n".join(describe(run)), flush=True)
            if size == NAIVE_SIZE and not args.no_naive:
                naive = bench_naive(Path(run["folder"]), size)
                naive["size"] = size
                print("\n".join(describe_naive(naive, run)), flush=True)
            _remove(Path(run["folder"]))  # up to a few GB of blobs and staging DB
    if args.json is not None:
        args.json.write_text(json.dumps({"runs": runs, "naive": naive}, indent=1), encoding="utf-8")
    if not args.no_record and runs:
        append_benchmarks(runs, naive)
    found = [problem for run in runs for problem in problems(run)]
    for problem in found:
        print(f"Problem: {problem}", file=sys.stderr)
    return 1 if found else 0


def _remove(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
