"""A load run's use of Procore's quota, in the windows Procore counts, for the report's charts.

Drawn from the rate budget's readings the load stored (``rate_readings``: every answer, with the
``X-Rate-Limit-*`` headers it carried), never from averages:

- **Spike window**: requests counted in each 10-second window (Unix time cut into 10 s
  stretches, as Procore's fixed windows are; under a sliding window they are consecutive
  stretches of its length) against the spike limit, refusals (429) on top, and Procore's own
  count (limit − remaining) at its busiest moment in that window when it reported the spike
  window. A sliding window can count more than one stretch holds; Procore's dots show that.
- **Hourly window**: requests of the run in the trailing hour at each moment against the hourly
  limit, and Procore's own count whenever it reported the hourly window (it includes requests
  of other runs and other apps, which this run cannot see).
- **Write calls**: POST, PATCH, PUT and DELETE requests Procore counted, per time bucket, with
  their total.
- **Load progress**: write calls Procore accepted (2xx) over the run, by what they wrote.

Which reported limit is which window: a window whose ``X-Rate-Limit-Reset`` was ever more than
the spike window's length (plus the header's rounding) ahead is the hourly one.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from migrate.ratereading import Reading
from migrate.report.status import parse_time
from migrate.store.db import Store
from migrate.store.rate_readings import run_readings, runs_with_readings
from migrate.store.runs import run_rows

#: Procore's spike window, in seconds (procore-notes: "a 10-second spike window").
SPIKE_SECONDS = 10.0
#: Procore's documented hourly limit, shown when the run never saw the hourly window reported.
DEFAULT_HOURLY_LIMIT = 3600
HOUR_SECONDS = 3600.0
#: A reset further ahead than this cannot belong to the spike window (the header rounds up).
_SPIKE_HORIZON = SPIKE_SECONDS + 1.5
WRITE_METHODS = ("POST", "PATCH", "PUT", "DELETE")
#: Time buckets for the write-calls chart: the shortest giving at most ``_MAX_BUCKETS``.
_BUCKET_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)
_MAX_BUCKETS = 60
#: Most spike-window columns drawn; longer runs show the busiest window of each group.
MAX_SPIKE_COLUMNS = 120
#: Most points per line (a line with more points than pixels says nothing more).
_MAX_POINTS = 240

#: What a write call wrote, by a piece of its path (first match wins), for the progress chart.
WRITE_KINDS: tuple[tuple[str, str], ...] = (
    ("/uploads", "files"),
    ("attachments", "files"),
    ("/locations", "locations"),
    ("coordination_issues", "issues"),
    ("checklist", "inspections"),
    ("inspection", "inspections"),
)
OTHER_KIND = "other"


def write_kind(endpoint: str) -> str:
    """``/rest/v1.0/projects/:id/locations/find_or_create_by_path`` → ``locations``."""
    for piece, kind in WRITE_KINDS:
        if piece in endpoint:
            return kind
    return OTHER_KIND


@dataclass(frozen=True)
class SpikeWindow:
    """One spike window: what this run had counted and refused in it, and Procore's count."""

    start: datetime
    counted: int
    refused: int
    #: The highest limit − remaining Procore reported for the spike window in it (None: none).
    procore_count: int | None


@dataclass
class QuotaFigures:
    """What the report's quota charts show for one load run."""

    run_id: int
    started: datetime
    finished: datetime
    #: Answers Procore counted against its quota (they carried X-Rate-Limit-* headers).
    counted: int
    refused: int
    writes: int
    spike_limit: int | None
    hourly_limit: int
    hourly_limit_reported: bool
    spike_windows: list[SpikeWindow] = field(default_factory=list)
    #: (moment, this run's requests in the hour before it)
    hourly_line: list[tuple[datetime, int]] = field(default_factory=list)
    #: (moment, limit − remaining) where Procore reported the hourly window
    hourly_reported: list[tuple[datetime, int]] = field(default_factory=list)
    write_buckets: list[tuple[datetime, int]] = field(default_factory=list)
    bucket_seconds: int = 60
    #: kind -> [(moment, write calls of that kind accepted so far)]
    progress: dict[str, list[tuple[datetime, int]]] = field(default_factory=dict)
    accepted_writes: int = 0
    other_load_runs: int = 0

    def spike_columns(self, most: int = MAX_SPIKE_COLUMNS) -> tuple[list[SpikeWindow], float]:
        """The spike windows as at most ``most`` columns, and each column's seconds: a column
        of several windows shows its busiest window (counted, refused and Procore's count)."""
        windows = self.spike_windows
        per_column = max(1, math.ceil(len(windows) / most))
        if per_column == 1:
            return list(windows), SPIKE_SECONDS
        columns = []
        for index in range(0, len(windows), per_column):
            group = windows[index : index + per_column]
            counts = [w.procore_count for w in group if w.procore_count is not None]
            columns.append(
                SpikeWindow(
                    group[0].start,
                    max(w.counted for w in group),
                    max(w.refused for w in group),
                    max(counts) if counts else None,
                )
            )
        return columns, SPIKE_SECONDS * per_column

    @property
    def busiest_spike_window(self) -> int:
        return max((w.counted for w in self.spike_windows), default=0)

    @property
    def busiest_hour(self) -> int:
        return max((n for _, n in self.hourly_line), default=0)


def _moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def _counted(reading: Reading) -> bool:
    return reading.limit is not None and reading.status != 429


def _is_write(reading: Reading) -> bool:
    return reading.method.upper() in WRITE_METHODS


def _thin(
    points: Sequence[tuple[datetime, int]], most: int = _MAX_POINTS
) -> list[tuple[datetime, int]]:
    """At most ``most`` points, evenly picked, the last always kept."""
    if len(points) <= most:
        return list(points)
    step = len(points) / most
    picked = [points[int(i * step)] for i in range(most)]
    if picked[-1] != points[-1]:
        picked.append(points[-1])
    return picked


def _window_kinds(readings: Sequence[Reading]) -> tuple[int | None, int | None]:
    """(spike limit, hourly limit) as reported, None for a window never reported."""
    horizon: dict[int, float] = {}
    for r in readings:
        if r.limit is not None and r.reset is not None:
            horizon[r.limit] = max(horizon.get(r.limit, 0.0), r.reset - r.answered_at)
    spikes = [limit for limit, ahead in horizon.items() if ahead <= _SPIKE_HORIZON]
    hours = [limit for limit, ahead in horizon.items() if ahead > _SPIKE_HORIZON]
    return (min(spikes) if spikes else None, max(hours) if hours else None)


def _chosen_run(store: Store) -> tuple[int | None, int]:
    """The latest load run that made write calls (else the latest with readings), and how
    many other load runs stored readings."""
    found = runs_with_readings(store)
    if not found:
        return None, 0
    writing = [run_id for run_id, (_, writes) in found.items() if writes]
    chosen = max(writing or found)
    return chosen, len(found) - 1


def quota_figures(store: Store) -> QuotaFigures | None:
    """The quota charts' figures for the latest load run that stored readings (None: none)."""
    run_id, others = _chosen_run(store)
    if run_id is None:
        return None
    readings = run_readings(store, run_id)
    run = next((row for row in run_rows(store, "load") if row["id"] == run_id), None)
    first = min(r.sent_at for r in readings)
    last = max(r.answered_at for r in readings)
    started = parse_time(run["started_at"]) if run else None
    finished = parse_time(run["finished_at"]) if run else None
    start = min(started.timestamp(), first) if started else first
    end = max(finished.timestamp(), last) if finished else last
    spike_limit, hourly_limit = _window_kinds(readings)
    counted = [r for r in readings if _counted(r)]
    figures = QuotaFigures(
        run_id=run_id,
        started=_moment(start),
        finished=_moment(end),
        counted=len(counted),
        refused=sum(1 for r in readings if r.status == 429),
        writes=sum(1 for r in counted if _is_write(r)),
        spike_limit=spike_limit,
        hourly_limit=hourly_limit or DEFAULT_HOURLY_LIMIT,
        hourly_limit_reported=hourly_limit is not None,
        other_load_runs=others,
    )
    figures.spike_windows = _spike_windows(readings, spike_limit)
    figures.hourly_line = _hourly_line(counted, start)
    figures.hourly_reported = _thin(
        [
            (_moment(r.answered_at), r.limit - r.remaining)
            for r in counted
            if hourly_limit is not None and r.limit == hourly_limit and r.remaining is not None
        ]
    )
    figures.bucket_seconds = next(
        (s for s in _BUCKET_STEPS if (end - start) / s <= _MAX_BUCKETS), _BUCKET_STEPS[-1]
    )
    figures.write_buckets = _write_buckets(counted, start, figures.bucket_seconds)
    figures.progress, figures.accepted_writes = _progress(readings, start)
    return figures


def _spike_windows(readings: Sequence[Reading], spike_limit: int | None) -> list[SpikeWindow]:
    counted: Counter[int] = Counter()
    refused: Counter[int] = Counter()
    procore: dict[int, int] = {}
    for r in readings:
        number = math.floor(r.sent_at / SPIKE_SECONDS)
        if r.status == 429:
            refused[number] += 1
        elif r.limit is not None:
            counted[number] += 1
            if r.limit == spike_limit and r.remaining is not None:
                procore[number] = max(procore.get(number, 0), r.limit - r.remaining)
    numbers = set(counted) | set(refused)
    if not numbers:
        return []
    return [
        SpikeWindow(
            _moment(number * SPIKE_SECONDS), counted[number], refused[number], procore.get(number)
        )
        for number in range(min(numbers), max(numbers) + 1)
    ]


def _hourly_line(counted: Sequence[Reading], start: float) -> list[tuple[datetime, int]]:
    """This run's requests in the hour before each of its requests (a sliding hour)."""
    times = sorted(r.sent_at for r in counted)
    points = [(_moment(start), 0)]
    oldest = 0
    for index, moment in enumerate(times):
        while times[oldest] <= moment - HOUR_SECONDS:
            oldest += 1
        points.append((_moment(moment), index - oldest + 1))
    return _thin(points)


def _write_buckets(
    counted: Sequence[Reading], start: float, seconds: int
) -> list[tuple[datetime, int]]:
    first = math.floor(start / seconds)
    buckets: Counter[int] = Counter(
        math.floor(r.sent_at / seconds) for r in counted if _is_write(r)
    )
    if not buckets:
        return []
    return [
        (_moment(number * seconds), buckets[number]) for number in range(first, max(buckets) + 1)
    ]


def _progress(
    readings: Sequence[Reading], start: float
) -> tuple[dict[str, list[tuple[datetime, int]]], int]:
    """Write calls Procore counted and accepted (2xx), cumulative by kind, each line from the
    run's start."""
    lines: dict[str, list[tuple[datetime, int]]] = defaultdict(list)
    totals: Counter[str] = Counter()
    accepted = sorted(
        (r for r in readings if _counted(r) and _is_write(r) and 200 <= r.status < 300),
        key=lambda r: r.answered_at,
    )
    for r in accepted:
        kind = write_kind(r.endpoint)
        if not lines[kind]:
            lines[kind].append((_moment(start), 0))
        totals[kind] += 1
        lines[kind].append((_moment(r.answered_at), totals[kind]))
    order = [kind for _, kind in WRITE_KINDS] + [OTHER_KIND]
    ranked = sorted(lines, key=lambda kind: (-totals[kind], order.index(kind)))
    return {kind: _thin(lines[kind]) for kind in ranked}, sum(totals.values())
