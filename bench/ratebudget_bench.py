"""Rate budget against sliding and fixed windows: quota used against what the windows allowed.

Procore's two windows (3 600 an hour, 150 per 10 s) in scaled time, as ``bench/scenarios.py``
does: both lengths divided by the time scale, the limits kept. Each load is ``calls`` requests
from 4 threads sharing one :class:`~migrate.clients.ratebudget.RateBudget` (as uploads do),
over loopback against the Procore simulator, under each reading of Procore's pages the
simulator models (issue 16 point 4): sliding or fixed windows, and headers naming the window
with fewer requests left or with the smaller share of its limit left (the reading under which a
stand-in once slowed the budget to the hourly average). Every 429 goes without ``Retry-After``,
the stricter reading, should one slip through.

"What the windows allowed" is, for each window, its limit times the windows the run spanned
(sliding: one, plus one for every whole window length the run lasted; fixed: every fixed window
the run overlapped, as each starts afresh), and the smaller of the two. Against fixed windows
the load starts as the window that binds it starts afresh, so it is not credited with a window
it began too late to spend. A 1 000-call load is bound by
the spike window, a 10 000-call load by the hourly one (three hourly windows, the third used in
part, so 10 000 / 10 800 = 92.6 % is the most any client can reach).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import threading
import time
from typing import Any

from bench.common import append_section, machine, timestamp

HOURLY = (3600, 3600.0)
SPIKE = (150, 10.0)
THREADS = 4
#: calls -> time scale. The spike window of the 1 000-call load must be one a loopback server
#: on a busy laptop can fill (150/s at 10×); the 10 000-call load spans three hourly windows,
#: which at 100× takes about 80 s instead of two hours.
DEFAULT_LOADS = ("1000:10", "10000:100")
GOAL = 0.9


def windows_allowed(limit: int, length: float, fixed: bool, start: float, end: float) -> int:
    """The most requests a window of ``limit`` per ``length`` s admits between start and end."""
    if fixed:
        return limit * (math.floor(end / length) - math.floor(start / length) + 1)
    # A full window at the start, then one more each time the first ones age out.
    return limit * (math.floor((end - start) / length) + 1)


def run_load(calls: int, time_scale: float, rate_windows: str, rate_report: str) -> dict[str, Any]:
    """One load: ``calls`` requests from THREADS threads; what the server and budget counted."""
    from migrate.clients.procore import ProcoreClient
    from migrate.clients.ratebudget import RateBudget
    from migrate.sandbox.httpbase import RunningServer
    from migrate.sandbox.procore_server import ProcoreApp
    from migrate.settings import Secret, TargetCredentials, TargetSettings

    hourly_window = HOURLY[1] / time_scale
    spike_window = SPIKE[1] / time_scale
    app = ProcoreApp(
        hourly_limit=HOURLY[0],
        hourly_window=hourly_window,
        spike_limit=SPIKE[0],
        spike_window=spike_window,
        rate_windows=rate_windows,
        rate_report=rate_report,
        retry_after=False,
    )
    server = RunningServer(app)
    settings = TargetSettings(
        base_url=server.url, auth_url=server.url, company_id=4100, project_id=5100
    )
    credentials = TargetCredentials(
        client_id=Secret("demo-client"), client_secret=Secret("demo-secret")
    )
    budget = RateBudget()
    client = ProcoreClient(settings, credentials, budget=budget)
    try:
        client.companies()  # the token and the first answer, as any run starts
        counter = iter(range(calls))
        lock = threading.Lock()

        def worker() -> None:
            while True:
                with lock:
                    if next(counter, None) is None:
                        return
                client.assignees(5100)

        if rate_windows == "fixed":
            # Start as the binding window starts afresh: a run that began late in one would be
            # credited with a whole window it had no time to spend.
            binding = hourly_window if calls > HOURLY[0] else spike_window
            time.sleep(binding - app.now() % binding)
        load_average = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        before = app.rate_stats()
        start = app.now()
        started = time.monotonic()
        threads = [threading.Thread(target=worker, daemon=True) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        end = app.now()
        stats = app.rate_stats()
    finally:
        client.close()
        server.stop()
        app.close()
    fixed = rate_windows == "fixed"
    allowed = min(
        windows_allowed(HOURLY[0], hourly_window, fixed, start, end),
        windows_allowed(SPIKE[0], spike_window, fixed, start, end),
    )
    # Only what was counted while the load ran (not the first answer, before ``start``).
    counted = (stats["requests"] - stats["quota_rejections"]) - (
        before["requests"] - before["quota_rejections"]
    )
    snapshot = budget.snapshot()
    return {
        "calls": calls,
        "time_scale": time_scale,
        "rate_windows": rate_windows,
        "rate_report": rate_report,
        "counted": counted,
        "allowed": allowed,
        "used": counted / allowed,
        "rate_limited": stats["rate_limited"],
        "budget_rate_limited": snapshot["rate_limited"],
        "waited_seconds": snapshot["waited_seconds"],
        "elapsed": elapsed,
        "per_second": counted / elapsed if elapsed else 0.0,
        "load_average": load_average,
    }


def describe(run: dict[str, Any]) -> str:
    return (
        f"| {run['calls']:,} | {run['rate_windows']} | {run['rate_report']} | "
        f"{run['time_scale']:g}× | "
        f"{run['counted']:,} | {run['allowed']:,} | {run['used']:.1%} | {run['rate_limited']} | "
        f"{run['waited_seconds']:.1f} | {run['elapsed']:.1f} | {run['per_second']:.0f} | "
        f"{run['load_average']:.1f} |"
    )


HEADER = [
    "| calls | windows | headers name | time scale | counted by the server | windows allowed "
    "| quota used | 429s | waited (s, summed over threads) | elapsed (s) | requests/s "
    "| load average |",
    "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]


def main(argv: list[str] | None = None) -> int:
    """Run each load against sliding and fixed windows and record the figures."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--loads",
        nargs="+",
        default=list(DEFAULT_LOADS),
        help="calls:time-scale pairs (default: 1000:10 10000:100).",
    )
    parser.add_argument(
        "--reports",
        nargs="+",
        choices=("fewest", "share"),
        default=["fewest", "share"],
        help="Which window the rate-limit headers name (default: both readings).",
    )
    parser.add_argument("--no-record", action="store_true", help="Do not touch BENCHMARKS.md.")
    args = parser.parse_args(argv)
    runs = []
    print("\n".join(HEADER), flush=True)
    for load in args.loads:
        calls, _, scale = load.partition(":")
        for rate_windows in ("sliding", "fixed"):
            for rate_report in args.reports:
                run = run_load(int(calls), float(scale or 10), rate_windows, rate_report)
                runs.append(run)
                print(describe(run), flush=True)
    if not args.no_record:
        append_section(
            [
                f"## Rate budget: sliding and fixed windows, each header reading ({timestamp()})",
                "",
                f"`python -m bench ratebudget` on {machine()}. Procore's windows (3 600 an hour, "
                f"150 per 10 s) with their lengths divided by the time scale and the limits "
                f"kept; {THREADS} threads share one budget over loopback. Quota used is what "
                "the server counted against what the windows allowed while the load ran (each "
                "window's limit times the windows the run spanned; the smaller of the two). "
                "Headers name the window with fewer requests left, or with the smaller share "
                "of its limit left; a 429 would carry no Retry-After. Counted: the load's "
                "requests, from its start (the client's first answer, the company list, comes "
                "before). Load average: the 1-minute load average as each load started (other "
                "work on the same cores).",
                "",
                *HEADER,
                *(describe(run) for run in runs),
                "",
                "The 10 000-call loads span three hourly windows and use the third in part: "
                "10 000 / 10 800 = 92.6 % is the ceiling there.",
            ]
        )
    problems = [
        f"{run['calls']} calls, {run['rate_windows']} windows, headers by {run['rate_report']}: "
        f"{run['rate_limited']} × 429, "
        f"{run['used']:.1%} of the quota"
        for run in runs
        if run["rate_limited"] or run["used"] < GOAL
    ]
    for problem in problems:
        print(f"Problem: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
