"""The quota figures the report draws, from readings as a load stores them (issue 17).

The browser test (test_report_browser.py) checks the figures of a real load against what the
Procore simulator served; these tests plant readings of a long run, whose windows the
simulator would take hours to fill, and check each figure is in the window Procore counts.
"""

from __future__ import annotations

import re
from pathlib import Path

from migrate.ratereading import Reading
from migrate.report import charts
from migrate.report.html import quota_charts
from migrate.report.quota import MAX_SPIKE_COLUMNS, SPIKE_SECONDS, quota_figures, write_kind
from migrate.store import open_store
from migrate.store.db import Store
from migrate.store.rate_readings import save_readings
from migrate.store.runs import finish_run, start_run

T0 = 1_800_000_000.0  # a multiple of 10: window n starts at T0 + 10 n
SPIKE, HOURLY = 150, 3600


def _store(tmp_path: Path) -> Store:
    return open_store(tmp_path / "staging.db")


def _reading(
    at: float,
    *,
    method: str = "POST",
    endpoint: str = "/rest/v1.1/projects/:id/uploads",
    status: int = 201,
    limit: int | None = SPIKE,
    used: int = 1,
    reset_in: float = 9.0,
) -> Reading:
    return Reading(
        at,
        at + 0.05,
        method,
        endpoint,
        status,
        limit,
        None if limit is None else limit - used,
        None if limit is None else at + reset_in,
    )


def _load_run(store: Store, readings: list[Reading]) -> int:
    run_id = start_run(store, "load")
    save_readings(store, run_id, readings)
    finish_run(store, run_id, "succeeded", {})
    return run_id


def test_windows_are_counted_as_procore_counts_them(tmp_path: Path) -> None:
    readings = [
        # Window 0: 12 writes, Procore counting up to 12 in its spike window.
        *(_reading(T0 + 0.5 * i, used=i + 1) for i in range(12)),
        # Window 1: 3 reads and one write refused with 429 (it took no slot).
        *(_reading(T0 + 10 + i, method="GET", endpoint="/rest/v1.0/x", used=13) for i in range(3)),
        _reading(T0 + 14, status=429, used=SPIKE),
        # Window 3 (window 2 empty): the hourly window reported, 3 000 of 3 600 used.
        _reading(T0 + 31, limit=HOURLY, used=3000, reset_in=1800.0),
        # Not counted by Procore (no rate-limit headers): the token request.
        _reading(T0 + 32, endpoint="/oauth/token", status=200, limit=None),
    ]
    with _store(tmp_path) as store:
        run_id = _load_run(store, readings)
        figures = quota_figures(store)
    assert figures is not None and figures.run_id == run_id
    assert (figures.spike_limit, figures.hourly_limit, figures.hourly_limit_reported) == (
        SPIKE,
        HOURLY,
        True,
    )
    assert (figures.counted, figures.refused, figures.writes) == (16, 1, 13)
    assert [(w.counted, w.refused, w.procore_count) for w in figures.spike_windows] == [
        (12, 0, 12),
        (3, 1, 13),
        (0, 0, None),
        (1, 0, None),
    ]
    assert [w.start.timestamp() for w in figures.spike_windows] == [
        T0 + SPIKE_SECONDS * n for n in range(4)
    ]
    assert figures.busiest_spike_window == 12 and figures.busiest_hour == 16
    assert [n for _, n in figures.hourly_reported] == [3000]
    assert sum(n for _, n in figures.write_buckets) == 13
    assert {kind: points[-1][1] for kind, points in figures.progress.items()} == {"files": 13}


def test_the_hourly_limit_never_reported_is_the_documented_one_and_said_so(
    tmp_path: Path,
) -> None:
    with _store(tmp_path) as store:
        _load_run(store, [_reading(T0 + i) for i in range(5)])
        figures = quota_figures(store)
    assert figures is not None
    assert (figures.hourly_limit, figures.hourly_limit_reported) == (3600, False)
    text = "".join(quota_charts(figures))
    assert "hourly limit 3,600 (documented default)" in text


def test_a_long_run_keeps_its_busiest_windows_and_a_sliding_hour(tmp_path: Path) -> None:
    # Two hours at 1 request every 2 s, and one window of 150 half-way: far more windows
    # than columns.
    steady = [_reading(T0 + 2 * i, method="GET", endpoint="/rest/v1.0/x") for i in range(3600)]
    burst = [_reading(T0 + 3600 + 0.05 * i, used=i + 1) for i in range(SPIKE)]
    with _store(tmp_path) as store:
        _load_run(store, steady + burst)
        figures = quota_figures(store)
    assert figures is not None
    columns, seconds = figures.spike_columns()
    assert len(columns) <= MAX_SPIKE_COLUMNS and seconds > SPIKE_SECONDS
    assert max(c.counted for c in columns) == figures.busiest_spike_window == SPIKE + 5
    # The hour before any moment holds at most 1 800 steady requests plus the burst.
    assert figures.busiest_hour == 1800 + SPIKE
    spike = next(c for c in quota_charts(figures) if 'data-chart="spike-window"' in c)
    assert f"busiest per {seconds:g} s" in spike
    assert len(re.findall(r'class="bar"', spike)) <= MAX_SPIKE_COLUMNS


def test_the_latest_load_run_that_wrote_is_charted(tmp_path: Path) -> None:
    with _store(tmp_path) as store:
        wrote = _load_run(store, [_reading(T0 + i) for i in range(4)])
        _load_run(store, [_reading(T0 + 100, method="GET", endpoint="/rest/v1.0/x")])
        figures = quota_figures(store)
    assert figures is not None and figures.run_id == wrote and figures.other_load_runs == 1


def test_no_readings_draws_every_quota_chart_saying_why(tmp_path: Path) -> None:
    with _store(tmp_path) as store:
        assert quota_figures(store) is None
    drawn = "".join(quota_charts(None))
    for chart in ("load-progress", "write-calls", "spike-window", "hourly-window"):
        assert f'data-chart="{chart}"' in drawn
    assert drawn.count("No load run stored its rate readings") == 4
    assert charts.empty_chart("x", "t", "m").startswith("<svg")


def test_write_kinds() -> None:
    assert write_kind("/rest/v1.1/projects/:id/uploads") == "files"
    assert write_kind("/rest/v1.0/projects/:id/locations/find_or_create_by_path") == "locations"
    assert write_kind("/rest/v1.0/coordination_issues/sync") == "issues"
    assert write_kind("/rest/v1.0/checklist/lists/:id/comments") == "inspections"
    assert write_kind("/rest/v1.0/somewhere") == "other"
