"""Procore requests per load against the lower bound; the naive way for comparison.

For each size a staging DB is planted the way transform leaves it (a 4 × 8 × 6 location tree
of which one building already exists in Procore, issues with 0-3 stored attachments like the
sandbox's), then ``migrate.load`` runs it into a Procore simulator with generous rate limits
(the quota is not what is measured here). The requests Procore received are compared with the
lower bound

    ceil(issues / 1000)  +  location calls  +  2 per attachment  +  required reads

where location calls are one per leaf path Procore lacks (it has no bulk create), required
reads are the locations list pages needed to learn inner-node ids plus the token and the
access check every load starts with (one Show Project). The naive
baseline does the same work with one ``create_issue`` per issue and one find_or_create per
location. A last, small run with a tight spike window (20 per 2 s) shows pacing: 429s and how
much of the quota the run used. Appends a dated section to BENCHMARKS.md.

    python -m bench.load_bench                    # 1 000 and 10 000 issues, naive at 10 000
    python -m bench.load_bench --sizes 2000 --naive-size 0
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    REPO,
    append_section,
    machine,
    naive_load,
    procore_lower_bound,
    timestamp,
)

DEFAULT_SIZES = (1_000, 10_000)
PROJECT = 5100
COMPANY = 4100
ENV = {"PROCORE_CLIENT_ID": "demo-client", "PROCORE_CLIENT_SECRET": "demo-secret"}
GENEROUS = {"spike_limit": 1_000_000, "hourly_limit": 10_000_000}


def _paths() -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = []
    for building in range(4):
        paths.append((f"Building {building}",))
        for level in range(8):
            paths.append((f"Building {building}", f"Level {level}"))
            for room in range(6):
                paths.append((f"Building {building}", f"Level {level}", f"Room {level}{room:02d}"))
    return paths


def plant(
    folder: Path, issues: int, existing: dict[tuple[str, ...], int], seed: int = 7
) -> dict[str, int]:
    """Write planned locations and issues (and stored attachments) as transform would."""
    sys.path.insert(0, str(REPO))
    from migrate.ids import issue_uuid
    from migrate.store import BlobStore, open_store
    from migrate.store.planned import payload_hash
    from migrate.transform.locations import location_source_id

    rng = random.Random(seed)
    store = open_store(folder / "staging.db")
    blobs = BlobStore(folder / "blobs")
    paths = _paths()
    leaves = {p for p in paths if len(p) == 3}
    attachments = 0
    with store.transaction():
        for path in paths:
            store.conn.execute(
                "INSERT INTO planned_locations (source_id, path, path_text, parent_source_id, "
                "depth, is_leaf, existing_target_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    location_source_id(path),
                    json.dumps(path),
                    ">".join(path),
                    location_source_id(path[:-1]) if len(path) > 1 else None,
                    len(path),
                    int(path in leaves),
                    existing.get(path),
                ),
            )
        store.conn.execute(
            "INSERT INTO runs (command, args, started_at, finished_at, status) VALUES "
            "('transform', ?, '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:01.000Z', "
            "'succeeded')",
            (json.dumps({"target_project_id": PROJECT}),),
        )
        for index in range(issues):
            source_id = f"issue-{index:08d}"
            files = []
            for slot in range(rng.choices((0, 1, 2, 3), (40, 35, 15, 10))[0]):
                size = rng.randint(2_000, 20_000)
                seed_bytes = hashlib.sha256(f"{source_id}:{slot}".encode()).digest()
                info = blobs.write_stream([(seed_bytes * (size // 32 + 1))[:size]])
                attachment_id = f"{source_id}-a{slot}"
                store.conn.execute(
                    "INSERT INTO attachments (id, container_type, container_id, kind, filename, "
                    "content_type, state, sha256, size) VALUES (?, 'Issue', ?, 'Attachment', "
                    "?, 'image/jpeg', 'stored', ?, ?)",
                    (attachment_id, source_id, f"IMG_{index}_{slot}.jpg", info.sha256, info.size),
                )
                files.append((attachment_id, info.sha256))
                attachments += 1
            path = rng.choice(paths[1:])  # rooms mostly, some levels (inner nodes)
            location = location_source_id(path)
            payload = {
                "uuid": issue_uuid(PROJECT, source_id),
                "title": f"Bench issue {index}",
                "description": "Generated for the load benchmark.",
                "status": "open",
                "priority": rng.choice(("low", "medium", "high")),
                "origin": {
                    "origin_type": "bim360_field_issue",
                    "origin_id": source_id,
                    "title": f"{index + 1:06d}",
                    "deep_link_url": f"https://bim360field.autodesk.com/{source_id}",
                },
            }
            digest = payload_hash(payload, location, [s for _, s in files])
            store.conn.execute(
                "INSERT INTO planned_issues (source_id, source_kind, identifier, title, status, "
                "priority, location_source_id, uuid, payload, attachment_ids, payload_hash) "
                "VALUES (?, 'issue', ?, ?, 'open', ?, ?, ?, ?, ?, ?)",
                (
                    source_id,
                    payload["origin"]["title"],
                    payload["title"],
                    payload["priority"],
                    location,
                    payload["uuid"],
                    json.dumps(payload),
                    json.dumps([a for a, _ in files]),
                    digest,
                ),
            )
    store.close()
    new_leaves = sum(1 for p in leaves if p not in existing)
    inner_needed = any(p not in existing for p in paths if p not in leaves)
    list_pages = math.ceil((len(paths) + 1) / 100) if inner_needed else 0
    return {
        "attachments": attachments,
        "locations": len(paths),
        "new_leaves": new_leaves,
        "list_pages": list_pages,
    }


def _server(**options: Any) -> tuple[Any, Any]:
    sys.path.insert(0, str(REPO))
    from migrate.sandbox.httpbase import RunningServer
    from migrate.sandbox.procore_server import DEFAULT_STATE, ProcoreApp

    state = json.loads(json.dumps(DEFAULT_STATE))
    state["locations"] = {
        str(PROJECT): [["Building 0", "Level 0", f"Room 0{r:02d}"] for r in range(6)]
    }
    app = ProcoreApp(state, keep_upload_bytes=False, **options)
    return app, RunningServer(app)


def _existing(app: Any) -> dict[tuple[str, ...], int]:
    located = {loc["id"]: loc for loc in app.snapshot()["projects"][str(PROJECT)]["locations"]}

    def path(location_id: int) -> tuple[str, ...]:
        loc = located[location_id]
        return (*(path(loc["parent_id"]) if loc["parent_id"] else ()), loc["node_name"])

    return {path(i): i for i in located}


def _settings(folder: Path, url: str) -> Any:
    from migrate.settings import Settings, StagingSettings, TargetSettings

    return Settings(
        target=TargetSettings(base_url=url, auth_url=url, company_id=COMPANY, project_id=PROJECT),
        staging=StagingSettings(
            path=folder / "staging.db", blobs=folder / "blobs", logs=folder / "logs"
        ),
    )


def bench_load(size: int, folder: Path) -> dict[str, Any]:
    """Plant ``size`` issues, load them, count what Procore received."""
    from migrate.load import load_from_settings

    app, server = _server(**GENEROUS)
    try:
        planted = plant(folder, size, _existing(app))
        started = time.monotonic()
        result = load_from_settings(_settings(folder, server.url), ENV)
        elapsed = time.monotonic() - started
        calls = app.call_counts()
        creates = result.counts["coordination_issue"]["created"]
        lower = procore_lower_bound(
            size, planted["new_leaves"], planted["list_pages"], planted["attachments"]
        )
        made = sum(calls.values())
        second = load_from_settings(_settings(folder, server.url), ENV)
        return {
            "size": size,
            "created": creates,
            **planted,
            "requests": made,
            "by_route": calls,
            "lower_bound": lower,
            "ratio": made / lower,
            "quota_requests": app.rate_stats()["requests"],
            "rate_limited": app.rate_stats()["rate_limited"],
            "elapsed": elapsed,
            "rerun_requests": second.total_requests,
        }
    finally:
        server.stop()
        app.close()


def bench_naive(size: int, folder: Path) -> dict[str, Any]:
    """The same plan, one request per location node and one create per issue."""
    from migrate.clients.procore import ProcoreClient
    from migrate.settings import target_credentials
    from migrate.store import BlobStore, open_store

    app, server = _server(**GENEROUS)
    try:
        plant(folder, size, _existing(app))
        settings = _settings(folder, server.url)
        store = open_store(settings.staging.path)
        blobs = BlobStore(settings.staging.blobs)
        started = time.monotonic()
        with ProcoreClient(settings.target, target_credentials(ENV)) as client:
            naive_load(client, store, blobs, PROJECT)
        elapsed = time.monotonic() - started
        store.close()
        calls = app.call_counts()
        return {
            "size": size,
            "requests": sum(calls.values()),
            "by_route": calls,
            "elapsed": elapsed,
        }
    finally:
        server.stop()
        app.close()


def bench_pacing(folder: Path, issues: int = 125) -> dict[str, Any]:
    """A tight spike window (20 per 2 s): 429s seen and share of the quota used."""
    from migrate.load import load_from_settings

    app, server = _server(spike_limit=20, spike_window=2.0)
    try:
        plant(folder, issues, _existing(app), seed=11)
        started = time.monotonic()
        result = load_from_settings(_settings(folder, server.url), ENV)
        elapsed = time.monotonic() - started
        stats = app.rate_stats()
        return {
            "issues": issues,
            "quota_requests": stats["requests"],
            "rate_limited": stats["rate_limited"],
            "elapsed": elapsed,
            "quota_use": stats["requests"] / (elapsed * 20 / 2.0),
            "max_in_window": stats["max_in_spike_window"],
            "waited": result.quota_wait_seconds,
        }
    finally:
        server.stop()
        app.close()


def append_benchmarks(
    loads: list[dict[str, Any]], naive: dict[str, Any] | None, pacing: dict[str, Any] | None
) -> None:
    """Append a dated section with the figures to BENCHMARKS.md."""
    lines = [
        f"## Load: Procore requests against the lower bound — {timestamp()}",
        "",
        f"`python -m bench.load_bench` on {machine()}. Planted plans (4 × 8 × 6 location "
        "tree, one building level already in Procore; 0-3 stored attachments per issue, "
        "2-20 kB), loaded into the Procore simulator on loopback with generous rate limits, "
        "4 upload workers. Requests = "
        "every request Procore and its storage received (token included). Lower bound = "
        "ceil(issues/1000) + one call per new leaf location + locations list pages needed for "
        "inner-node ids + 2 per attachment + 1 token + 1 access check (Show Project, which "
        "every load makes first, so a re-run with nothing to send makes 2 requests).",
        "",
        "| issues | attachments | locations (new leaves) | requests | lower bound | "
        "ratio | sync calls | 429s | wall s | re-run requests |",
        "|-------:|------------:|-----------------------:|---------:|------------:|------:|"
        "-----------:|-----:|-------:|----------------:|",
    ]
    for f in loads:
        lines.append(
            f"| {f['size']:,} | {f['attachments']:,} | {f['locations']} ({f['new_leaves']}) | "
            f"{f['requests']:,} | {f['lower_bound']:,} | {f['ratio']:.4f} | "
            f"{f['by_route'].get('coordination_issues.sync', 0)} | {f['rate_limited']} | "
            f"{f['elapsed']:.1f} | {f['rerun_requests']} |"
        )
    if naive is not None:
        ours = next((f for f in loads if f["size"] == naive["size"]), None)
        lines += [
            "",
            f"Naive baseline at {naive['size']:,} issues (one find_or_create per "
            "location node, one `create_issue` per issue, same uploads): "
            f"{naive['requests']:,} requests in {naive['elapsed']:.1f} s"
            + (
                f", {naive['requests'] / ours['requests']:.2f} × the batched load "
                f"({naive['by_route'].get('coordination_issues.create', 0):,} issue "
                f"creates where the load made "
                f"{ours['by_route'].get('coordination_issues.sync', 0)} sync calls; "
                "uploads, 2 per attachment, are the same in both): "
                f"{naive['requests'] - ours['requests']:,} more requests against a "
                "3 600-an-hour quota."
                if ours
                else "."
            ),
        ]
    if pacing is not None:
        lines += [
            "",
            f"Pacing: {pacing['issues']} issues (0-3 attachments each) against a "
            f"spike window of 20 requests per 2 s: {pacing['quota_requests']} quota "
            f"requests in {pacing['elapsed']:.1f} s, {pacing['rate_limited']} × 429, at "
            f"most {pacing['max_in_window']} in any window, "
            f"{pacing['quota_use'] * 100:.1f} % of the quota over the run's wall time.",
        ]
    append_section(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the load benchmark and record it in BENCHMARKS.md."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument(
        "--naive-size", type=int, default=10_000, help="Issues for the naive baseline (0: skip it)."
    )
    parser.add_argument("--no-pacing", action="store_true", help="Skip the tight-quota run.")
    parser.add_argument("--no-record", action="store_true", help="Do not touch BENCHMARKS.md.")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    loads = []
    naive = pacing = None
    with tempfile.TemporaryDirectory(prefix="load-bench-") as folder:
        for size in args.sizes:
            figures = bench_load(size, Path(folder) / f"load-{size}")
            loads.append(figures)
            print(
                f"{size:>7} issues: {figures['requests']:,} requests, lower bound "
                f"{figures['lower_bound']:,} (ratio {figures['ratio']:.4f}), "
                f"{figures['rate_limited']} × 429, {figures['elapsed']:.1f} s; re-run "
                f"{figures['rerun_requests']} requests",
                flush=True,
            )
        if args.naive_size:
            naive = bench_naive(args.naive_size, Path(folder) / "naive")
            print(
                f"  naive {args.naive_size:,} issues: {naive['requests']:,} requests, "
                f"{naive['elapsed']:.1f} s",
                flush=True,
            )
        if not args.no_pacing:
            pacing = bench_pacing(Path(folder) / "pacing")
            print(
                f"  pacing: {pacing['quota_requests']} requests in {pacing['elapsed']:.1f} s, "
                f"{pacing['rate_limited']} × 429, quota use {pacing['quota_use']:.1%}",
                flush=True,
            )
    if not args.no_record:
        append_benchmarks(loads, naive, pacing)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
