"""A portfolio of generated projects against one simulated Procore under one quota (issue 18).

``migrate portfolio run`` as a user runs it: a worker process per project, ``parallel`` at a
time, every Procore request claimed from the one SQLite ledger. The simulator's windows are
scaled down (lengths and limits) so that the quota, not the machine, binds: Procore's 3 600 an
hour becomes ``--hourly`` (e.g. 400 per 20 s: 20 requests/s) and its 10-second spike window
``--spike``. First every project is extracted and transformed (few Procore requests), then
``portfolio plan`` estimates the requests still to make, then load and report run for every
project: that phase is measured.

- **Quota used**: requests the server counted during the measured phase against what the
  windows allowed while it ran (per window, its limit times one plus the whole window lengths
  the phase lasted, as a sliding window admits; the smaller of the two windows).
- **Lower bound**: the shortest time in which the windows admit the requests counted (no
  schedule can finish sooner); the wall time is shown against it.
- **429s** and the most requests the simulator ever counted in one spike window.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import append_section, machine, timestamp

GOAL = 0.9


def _window(text: str) -> tuple[int, float]:
    limit, seconds = text.split(":")
    return int(limit), float(seconds)


def allowed(limit: int, seconds: float, elapsed: float) -> int:
    """The most requests a sliding window of ``limit`` per ``seconds`` admits in ``elapsed``."""
    return limit * (math.floor(elapsed / seconds) + 1)


def lower_bound(requests: int, windows: list[tuple[int, float]]) -> float:
    """The shortest time in which every window admits ``requests`` (sliding windows)."""
    return max(
        (math.ceil(requests / limit) - 1) * seconds for limit, seconds in windows if limit > 0
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    from migrate.clients.sharedquota import QuotaWindow, ledger_totals
    from migrate.portfolio.config import load_portfolio
    from migrate.portfolio.local import run_portfolio
    from migrate.portfolio.sandbox import write_sandbox_portfolio
    from migrate.portfolio.views import plan_portfolio
    from migrate.sandbox.generator import GeneratedProject
    from migrate.sandbox.runner import Sandbox, SandboxOptions

    spike, hourly = _window(args.spike), _window(args.hourly)
    account = GeneratedProject(
        seed=args.seed,
        issues=args.issues,
        second_project_issues=args.issues,
        more_projects=[args.issues] * (args.projects - 2),
    )
    options = SandboxOptions(
        procore_options={
            "spike_limit": spike[0],
            "spike_window": spike[1],
            "hourly_limit": hourly[0],
            "hourly_window": hourly[1],
        }
    )
    with (
        tempfile.TemporaryDirectory(prefix="portfolio-bench-") as folder,
        Sandbox(options, project=account) as box,
    ):
        path = write_sandbox_portfolio(
            Path(folder),
            box,
            parallel=args.parallel,
            spike=QuotaWindow(*spike),
            hourly=QuotaWindow(*hourly),
        )
        portfolio = load_portfolio(path)
        env = {**os.environ, **box.environment()}
        started = time.monotonic()
        staged = run_portfolio(portfolio, env, stages=("extract", "transform"))
        staging_seconds = time.monotonic() - started
        plan = plan_portfolio(portfolio)
        before = box.procore_app.rate_stats()["requests"]
        spent_before = sum(r["requests"] for r in ledger_totals(portfolio.ledger_path).values())
        started = time.monotonic()
        loaded = run_portfolio(portfolio, env, stages=("load", "report"))
        elapsed = time.monotonic() - started
        stats = box.procore_app.rate_stats()
        spent = sum(r["requests"] for r in ledger_totals(portfolio.ledger_path).values())
        templates = company_templates(portfolio)
        with box.procore_app.lock:
            templates["in Procore"] = len(box.procore_app.inspections.company_templates)
    counted = stats["requests"] - before
    windows = [spike, hourly]
    admitted = min(allowed(limit, seconds, elapsed) for limit, seconds in windows)
    bound = lower_bound(counted, windows)
    failed = [o.name for o in (*staged.outcomes, *loaded.outcomes) if not o.completed]
    return {
        "projects": args.projects,
        "issues": args.issues,
        "parallel": args.parallel,
        "spike": spike,
        "hourly": hourly,
        "staging_seconds": staging_seconds,
        "planned": plan.requests,
        "counted": counted,
        "ledger": spent - spent_before,
        "admitted": admitted,
        "used": counted / admitted if admitted else 0.0,
        "rate_limited": stats["rate_limited"],
        "max_in_spike_window": stats["max_in_spike_window"],
        "elapsed": elapsed,
        "lower_bound": bound,
        "failed": failed,
        "company_templates": templates,
    }


def company_templates(portfolio: Any) -> dict[str, int]:
    """Company checklist templates the projects' loads created, and reused (an identical one
    another project built: no copy), from each project's recorded load runs."""
    import json

    from migrate.store import open_store

    totals = {"created": 0, "reused": 0}
    for entry in portfolio.projects:
        store = open_store(entry.settings.staging.path, read_only=True)
        try:
            rows = store.conn.execute(
                "SELECT counts FROM runs WHERE command = 'load' AND counts IS NOT NULL"
            ).fetchall()
        finally:
            store.close()
        for (counts,) in rows:
            for kind, n in (json.loads(counts).get("company_templates") or {}).items():
                totals[kind] = totals.get(kind, 0) + int(n)
    return totals


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench portfolio", description=__doc__)
    parser.add_argument("--projects", type=int, default=20)
    parser.add_argument("--issues", type=int, default=8, help="issues per project")
    parser.add_argument("--parallel", type=int, default=8, help="projects at once")
    parser.add_argument("--spike", default="25:1", help="spike window, limit:seconds")
    parser.add_argument("--hourly", default="400:20", help="hourly window, limit:seconds")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--write", action="store_true", help="append to BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.projects < 3:
        parser.error("--projects must be 3 or more")
    result = run(args)
    row = (
        f"| {result['projects']} | {result['parallel']} | {result['spike'][0]} per "
        f"{result['spike'][1]:g} s, {result['hourly'][0]} per {result['hourly'][1]:g} s | "
        f"{result['planned']:,} | {result['counted']:,} | {result['admitted']:,} | "
        f"{result['used']:.1%} | {result['rate_limited']} | {result['max_in_spike_window']} | "
        f"{result['elapsed']:.1f} | {result['lower_bound']:.1f} | "
        f"{result['lower_bound'] / result['elapsed']:.0%} |"
    )
    header = (
        "| projects | at once | windows | planned requests | counted by the server | "
        "windows allowed | quota used | 429s | most in one spike window | wall time (s) | "
        "quota-bound lower bound (s) | bound / wall |\n"
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    print(header)
    print(row)
    print(
        f"extract + transform of every project first: {result['staging_seconds']:.1f} s; "
        f"the ledger recorded {result['ledger']:,} requests in the measured phase; "
        f"failed projects: {result['failed'] or 'none'}."
    )
    made = result["company_templates"]
    print(
        f"company checklist templates: {made['created']} created, {made['reused']} reused "
        f"(identical ones another project built); {made['in Procore']} in Procore."
    )
    if args.write:
        append_section(
            [
                f"## Portfolio: {result['projects']} projects under one quota — {timestamp()}",
                "",
                f"`python -m bench portfolio -- --projects {args.projects} --issues "
                f"{args.issues} --parallel {args.parallel} --spike {args.spike} --hourly "
                f"{args.hourly}` on {machine()}. One worker process per project, "
                f"{args.parallel} at a time, every Procore request claimed from one SQLite "
                "ledger; measured: load and report of every project after extract and "
                "transform (which took "
                f"{result['staging_seconds']:.0f} s and a handful of Procore requests).",
                "",
                header,
                row,
            ]
        )
    ok = result["used"] >= GOAL and result["rate_limited"] == 0 and not result["failed"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
