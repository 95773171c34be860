"""Procore requests per checklist when loading inspections, against the lower bound.

For each size a staging DB is planted with planned inspections the way transform leaves them
(tests/inspection_rows.py: two templates covering every item type, answers of every kind, item
comments, item photos, checklist files and signatures, statuses open / in_review / closed),
then ``migrate.load`` runs it into a Procore simulator with generous rate limits. The requests
Procore received are compared with the lower bound per checklist (load/inspections.py
``lower_bound``):

    1 create + 1 Create Upload per checklist file (incl. signatures) + 1 per answered item
    + 1 per item comment + 1 per item file + 1 status change when not open

Reading the items back (one paged list request per group of checklists) and the building
blocks (inspection types, response sets, templates: once per project) are on top, listed apart.
A second run over the unchanged plan must make no write at all. Appends a dated section to
BENCHMARKS.md.

    python -m bench.inspections_bench                      # 100, 1 000 full; 10 000 light
    python -m bench.inspections_bench --sizes 100 --light-from 0
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import REPO, append_section, machine, timestamp

DEFAULT_SIZES = (100, 1_000, 10_000)
#: From this size on, checklists are planted light (two items, no item files or signatures),
#: so the 10 000 run finishes in a few minutes on a shared 2-core box.
LIGHT_FROM = 10_000
ENV = {"PROCORE_CLIENT_ID": "demo-client", "PROCORE_CLIENT_SECRET": "demo-secret"}
GENEROUS = {"spike_limit": 10_000_000, "hourly_limit": 100_000_000}

#: Endpoint (as LoadResult.requests names it) -> the bound's kind it spends.
BOUND_KINDS = {
    "POST /rest/v1.1/projects/:id/checklist/lists": "create",
    "POST /rest/v1.1/projects/:id/uploads": "uploads",
    "POST /rest/v1.0/projects/:id/checklist/items/:id/item_response": "answers",
    "POST /rest/v1.0/checklist/lists/:id/comments": "comments",
    "POST /rest/v1.0/checklist/lists/:id/items/:id/item_attachments": "item_files",
    "PATCH /rest/v1.1/projects/:id/checklist/lists/:id/close": "status",
    "PATCH /rest/v1.1/projects/:id/checklist/lists/:id": "status",
}
ITEM_READS = "GET /rest/v1.1/projects/:id/checklist/list_items"


def _category(endpoint: str) -> str:
    if endpoint in BOUND_KINDS:
        return "bound"
    if endpoint == ITEM_READS:
        return "item reads"
    if "/companies/" in endpoint or "list_templates" in endpoint or "item_types" in endpoint:
        return "templates"
    if "/oauth/" in endpoint or "/s3/" in endpoint:
        return "free"  # the token and the storage POST are not Procore's quota
    return "other reads"


def planned_bound(staging: Path, project_id: int) -> Counter[str]:
    """The lower bound, by kind, of the writes loading the staging DB's planned inspections
    into ``project_id`` needs (``migrate.load.inspections.lower_bound`` summed per checklist).

    "uploads" counts Create Upload requests only; each is followed by a storage POST that
    Procore's quota does not count. The whole-pipeline scenarios (bench/scenarios.py) use this
    too, so both benchmarks hold inspections to the same bound.
    """
    sys.path.insert(0, str(REPO))
    from migrate.load.inspections import lower_bound
    from migrate.store import open_store
    from migrate.store.planned import (
        planned_inspection_rows,
        planned_inspections_with_map_rows,
    )

    store = open_store(staging, read_only=True)
    try:
        bound: Counter[str] = Counter()
        entries = [entry for entry, _ in planned_inspections_with_map_rows(store, project_id)]
        payloads = {
            row.source_id: row.payload
            for row in planned_inspection_rows(store, [e.source_id for e in entries])
        }
        for entry in entries:
            bound.update(lower_bound(entry, payloads[entry.source_id]))
    finally:
        store.close()
    return bound


def run_size(count: int, light: bool) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    from migrate.load import load_from_settings
    from migrate.sandbox.httpbase import RunningServer
    from migrate.sandbox.procore_server import ProcoreApp
    from migrate.settings import (
        MappingsSettings,
        Settings,
        SourceSettings,
        StagingSettings,
        TargetSettings,
    )
    from migrate.store import open_store
    from tests.inspection_rows import plant_inspections

    app = ProcoreApp(keep_upload_bytes=False, **GENEROUS)
    server = RunningServer(app)
    try:
        with tempfile.TemporaryDirectory(prefix="inspections-bench-") as folder:
            tmp = Path(folder)
            settings = Settings(
                source=SourceSettings(),
                target=TargetSettings(
                    base_url=server.url,
                    auth_url=server.url,
                    company_id=4100,
                    project_id=5100,
                    workers=4,
                ),
                staging=StagingSettings(
                    path=tmp / "staging.db", blobs=tmp / "blobs", logs=tmp / "logs"
                ),
                mappings=MappingsSettings(dir=REPO / "mappings"),
            )
            open_store(settings.staging.path).close()
            plant_inspections(settings, count, light=light)
            bound = planned_bound(settings.staging.path, 5100)
            started = time.monotonic()
            first = load_from_settings(settings, ENV)
            elapsed = time.monotonic() - started
            second = load_from_settings(settings, ENV)
            made: Counter[str] = Counter()
            by_kind: Counter[str] = Counter()
            for endpoint, n in first.requests.items():
                category = _category(endpoint)
                made[category] += n
                if category == "bound":
                    by_kind[BOUND_KINDS[endpoint]] += n
            snapshot = app.inspections_of(5100)
            return {
                "checklists": count,
                "light": light,
                "landed": len(snapshot),
                "bound": bound,
                "made": made,
                "by_kind": by_kind,
                "quota": first.quota_requests,
                "seconds": elapsed,
                "exit": first.exit_code,
                "rerun_requests": second.total_requests,
                "rerun_writes": second.write_requests,
            }
    finally:
        server.stop()
        app.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inspections_bench")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--light-from", type=int, default=LIGHT_FROM)
    parser.add_argument("--no-write", action="store_true", help="print, do not append")
    args = parser.parse_args(argv)
    rows = []
    for size in args.sizes:
        light = bool(args.light_from) and size >= args.light_from
        result = run_size(size, light)
        rows.append(result)
        total_bound = sum(result["bound"].values())
        print(
            f"{size:>6} checklists{' (light)' if light else ''}: {result['quota']} quota "
            f"requests, bound {total_bound}, ratio {result['quota'] / total_bound:.3f}, "
            f"{result['seconds']:.1f} s, re-run writes {result['rerun_writes']}",
            flush=True,
        )
    lines = [
        f"## Inspections load: requests per checklist against the lower bound — {timestamp()}",
        "",
        f"`python -m bench inspections` on {machine()}. Planned inspections as transform "
        "leaves them (tests/inspection_rows.py: every item type, answers of every kind, item "
        "comments incl. linked-issue notes, item photos, checklist files and signatures; a "
        "third each open, in review, closed) loaded by `migrate.load` into the Procore "
        "simulator (generous rate limits: requests, not pacing, are measured).",
        "",
        "Lower bound per checklist: 1 create (checklist files ride along as `upload_ids`; each "
        "is one Create Upload request, the storage POST is not Procore's quota) + 1 per "
        "answered item (no bulk answer endpoint) + 1 per item comment + 1 per item file "
        "(multipart; `bulk_create` only links files Procore already holds) + 1 status change "
        "(close, or PATCH to in_review) when not open. On top: reading items back (one paged "
        "`list_items` request per group of 25 checklists) and the building blocks, once per "
        "project (inspection types, response sets, company template with sections and items, "
        "project template and one read of it).",
        "",
        "| checklists | shape | landed | bound | bound writes made | ratio (writes) | item "
        "reads | templates | other reads | quota requests | ratio (all) | per checklist | "
        "seconds | re-run requests | re-run writes |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        total_bound = sum(r["bound"].values())
        made = r["made"]
        lines.append(
            f"| {r['checklists']:,} | {'light' if r['light'] else 'full'} | {r['landed']:,} | "
            f"{total_bound:,} | {made['bound']:,} | {made['bound'] / total_bound:.3f} | "
            f"{made['item reads']:,} | {made['templates']:,} | {made['other reads']:,} | "
            f"{r['quota']:,} | {r['quota'] / total_bound:.3f} | "
            f"{r['quota'] / r['checklists']:.2f} | {r['seconds']:.1f} | "
            f"{r['rerun_requests']} | {r['rerun_writes']} |"
        )
    kinds = ("create", "uploads", "answers", "comments", "item_files", "status")
    lines += [
        "",
        "Bound by kind (bound / made): "
        + "; ".join(
            f"{r['checklists']:,}: "
            + ", ".join(f"{k} {r['bound'][k]:,}/{r['by_kind'][k]:,}" for k in kinds)
            for r in rows
        )
        + ".",
    ]
    light_sizes = [f"{r['checklists']:,}" for r in rows if r["light"]]
    if light_sizes:
        lines += [
            "",
            f"**Deviation.** At {', '.join(light_sizes)} checklists the planted checklists are "
            "light (two answered items with comments, checklist files on every third, no item "
            "files or signatures) so the run finishes in minutes on a shared 2-core box; the "
            "bound is computed for the same rows, so the ratio is comparable.",
        ]
    if not args.no_write:
        append_section(lines)
    failed = [r for r in rows if r["rerun_writes"] or r["landed"] != r["checklists"] or r["exit"]]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
