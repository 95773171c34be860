"""The HTML report rendered by a real headless Chromium: it opens from disk, charts included,
fits a 500 px and a 1 400 px window without widening the page, and its quota charts carry the
figures the Procore simulator saw.

Skipped (with the reason) when /usr/bin/chromium is absent; `.ci/run` installs Debian's
package so CI always runs it. Screenshots are kept in ``test-artefacts/report-browser/``
(git-ignored; ``MIGRATE_TEST_ARTEFACTS`` moves it) with the page itself, for a person to look
at.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import sqlite3
import subprocess
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from migrate.demo import write_demo_config
from migrate.mappings import write_default_mappings
from migrate.sandbox.runner import Sandbox, SandboxOptions
from migrate.settings import load_settings

CHROMIUM = Path("/usr/bin/chromium")
CHARTS = (
    "status-before",
    "status-after",
    "by-location",
    "load-progress",
    "write-calls",
    "spike-window",
    "hourly-window",
)
WIDTHS = (500, 1400)
ARTEFACTS = (
    Path(os.environ.get("MIGRATE_TEST_ARTEFACTS") or Path(__file__).parents[1] / "test-artefacts")
    / "report-browser"
)
WRITE_METHODS = ("POST", "PATCH", "PUT", "DELETE")
#: Small enough that the rate budget paces the load against it (the spike chart then shows
#: windows near the limit), big enough to keep the load short.
SPIKE_LIMIT = 100

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium is not installed (apt-get install chromium); .ci/run installs it",
)

#: Appended to a copy of the report (the report itself has no script): writes what the page
#: measures into the DOM, where --dump-dom shows it.
MEASURE = """<script>
(() => {
  const doc = document.documentElement;
  const charts = [...document.querySelectorAll("svg.chart")].map((svg) => {
    const box = svg.getBoundingClientRect();
    return {id: svg.dataset.chart, left: box.left, right: box.right, width: box.width,
            height: box.height};
  });
  const out = document.createElement("pre");
  out.id = "measured";
  out.textContent = JSON.stringify({scrollWidth: doc.scrollWidth, innerWidth: window.innerWidth,
                                    scrollHeight: doc.scrollHeight, charts});
  document.body.appendChild(out);
})();
</script>"""


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@dataclass(frozen=True)
class Migrated:
    report: Path
    staging: Path
    #: (method, status) -> API requests (``/rest/``, what Procore's quota counts) the Procore
    #: simulator answered during the load
    load_answers: Counter[tuple[str, int]]


def _answers(box: Sandbox) -> Counter[tuple[str, int]]:
    app = box.procore_app
    api = {
        route.name: route.method for route in app.routes if route.pattern.pattern[1:6] == "/rest"
    }
    with app.lock:
        statuses = dict(app.statuses)
    answers: Counter[tuple[str, int]] = Counter()
    for (name, status), n in statuses.items():
        if name in api:
            answers[(api[name], status)] += n
    return answers


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Migrated:
    from migrate.extract import extract_from_settings
    from migrate.load import load_from_settings
    from migrate.report import report_from_settings
    from migrate.transform import transform_from_settings

    workdir = tmp_path_factory.mktemp("browser")
    # Seed 2: two issues in two different deleted areas, quarantined for one reason.
    options = SandboxOptions(issues=30, seed=2, procore_options={"spike_limit": SPIKE_LIMIT})
    with Sandbox(options) as box:
        write_default_mappings(workdir / "mappings")
        settings = load_settings(write_demo_config(workdir, box))
        env = box.environment()
        extract_from_settings(settings, env)
        transform_from_settings(settings, env)
        before = _answers(box)
        load_from_settings(settings, env)
        during = _answers(box)
        during.subtract(before)
        result = report_from_settings(settings, env, out_dir=workdir / "report")
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(result.path_html, ARTEFACTS / "report.html")
    return Migrated(result.path_html, Path(settings.staging.path), +during)


def _svg(dom: str, chart: str) -> str:
    match = re.search(rf'<svg[^>]*data-chart="{chart}"[^>]*>.*?</svg>', dom, re.DOTALL)
    assert match, f"chart {chart!r} is not in the rendered DOM"
    return match.group(0)


def _data(svg: str, name: str) -> str:
    match = re.search(rf'\bdata-{name}="([^"]*)"', svg)
    assert match, f"no data-{name} on {svg[:120]!r}"
    return html.unescape(match.group(1))


def _alone(report: Path, folder: Path, extra: str = "") -> str:
    """A copy of the report alone in a fresh folder (the page must need nothing beside it)."""
    folder.mkdir()
    page = folder / "report.html"
    text = report.read_text(encoding="utf-8")
    page.write_text(text.replace("</body>", extra + "</body>") if extra else text, "utf-8")
    return page.as_uri()


def test_report_renders_with_its_charts(migrated: Migrated, tmp_path: Path) -> None:
    url = _alone(migrated.report, tmp_path / "alone")
    dumped = _chromium(tmp_path / "profile-dom", "--dump-dom", url)
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = dumped.stdout
    assert "<h1>Migration report" in dom
    assert "Reconciliation per entity" in dom and "Run history" in dom
    for chart in CHARTS:
        svg = _svg(dom, chart)
        assert 'class="no-data"' not in svg, f"chart {chart!r} drew no data"
        marks = len(re.findall(r'class="(?:bar|series|point)"', svg))
        assert marks >= 1, f"chart {chart!r} has no bars, lines or points"
    assert 'class="limit"' in _svg(dom, "spike-window")
    assert 'class="limit"' in _svg(dom, "hourly-window")
    for bad in ("Traceback", "NaN", "undefined", "Infinity", "None</td>", "/min"):
        assert bad not in dom, f"{bad!r} in the rendered report"


@pytest.mark.parametrize("width", WIDTHS)
def test_report_fits_the_window(migrated: Migrated, tmp_path: Path, width: int) -> None:
    """No horizontal overflow of the page; every chart drawn inside the window."""
    url = _alone(migrated.report, tmp_path / "measure", MEASURE)
    dumped = _chromium(tmp_path / "profile-dom", f"--window-size={width},1000", "--dump-dom", url)
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    found = re.search(r'<pre id="measured">(.*?)</pre>', dumped.stdout, re.DOTALL)
    assert found, "the measuring script did not run"
    measured = json.loads(html.unescape(found.group(1)))
    assert measured["innerWidth"] == width
    assert measured["scrollWidth"] <= measured["innerWidth"], measured
    drawn = {chart["id"]: chart for chart in measured["charts"]}
    assert set(CHARTS) <= set(drawn)
    for chart in drawn.values():
        assert chart["width"] > 100 and chart["height"] > 50, chart
        assert chart["left"] >= 0 and chart["right"] <= width, chart

    shot = ARTEFACTS / f"report-{width}px.png"
    shot.unlink(missing_ok=True)
    url = _alone(migrated.report, tmp_path / "shot")
    # The whole page in one picture (capped: a screenshot is kept, not a poster).
    height = min(int(measured["scrollHeight"]), 20_000)
    taken = _chromium(
        tmp_path / "profile-png", f"--screenshot={shot}", f"--window-size={width},{height}", url
    )
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 20_000  # a real page, not a blank image
    shutil.copy(shot, tmp_path / shot.name)


def test_quota_charts_carry_what_procore_served(migrated: Migrated) -> None:
    """The figures the quota charts are drawn from are the simulator's own counts."""
    page = migrated.report.read_text(encoding="utf-8")
    answers = migrated.load_answers
    writes_served = sum(
        n for (method, status), n in answers.items() if method in WRITE_METHODS and status != 429
    )
    writes = _svg(page, "write-calls")
    assert int(_data(writes, "write-calls")) == writes_served > 0
    assert f"{writes_served:,} write calls" in writes  # the title says the number

    accepted = sum(
        n for (method, status), n in answers.items() if method in WRITE_METHODS and status < 300
    )
    assert int(_data(_svg(page, "load-progress"), "accepted-writes")) == accepted

    spike = _svg(page, "spike-window")
    assert int(_data(spike, "spike-limit")) == SPIKE_LIMIT
    refused = sum(n for (_, status), n in answers.items() if status == 429)
    assert int(_data(spike, "refused")) == refused
    # Procore counted every request of a window the budget let through: none beyond the limit.
    assert 0 < int(_data(spike, "busiest-window")) <= SPIKE_LIMIT

    # Every time chart spans the load run as recorded, from its start to its end.
    with sqlite3.connect(migrated.staging) as conn:
        started, finished = conn.execute(
            "SELECT started_at, finished_at FROM runs WHERE command = 'load'"
        ).fetchone()
    for chart in ("load-progress", "write-calls", "spike-window", "hourly-window"):
        svg = _svg(page, chart)
        start = datetime.fromisoformat(_data(svg, "start"))
        end = datetime.fromisoformat(_data(svg, "end"))
        assert start <= datetime.fromisoformat(started.replace("Z", "+00:00"))
        assert end >= datetime.fromisoformat(finished.replace("Z", "+00:00"))


def test_each_quarantined_record_shows_its_own_hint(migrated: Migrated) -> None:
    """Records quarantined for one reason but in different areas each get their own hint."""
    with sqlite3.connect(migrated.staging) as conn:
        rows = conn.execute(
            "SELECT reason, source_id, hint FROM quarantine WHERE released_at IS NULL"
        ).fetchall()
    by_reason: dict[str, set[str]] = {}
    for reason, _, hint in rows:
        by_reason.setdefault(reason, set()).add(hint)
    assert any(len(hints) >= 2 for hints in by_reason.values()), "no reason with two hints"
    page = migrated.report.read_text(encoding="utf-8")
    blocks = re.findall(r'<div class="quarantine-record">(.*?)</div>', page, re.DOTALL)
    shown = {}
    for block in blocks:
        source = re.search(r"<code>(.*?)</code>", block)
        hint = re.search(r'<p class="hint record-hint">(.*?)</p>', block, re.DOTALL)
        assert source
        shown[html.unescape(source.group(1))] = html.unescape(hint.group(1)) if hint else None
    for reason, source_id, hint in rows:
        if len(by_reason[reason]) >= 2:
            assert shown[source_id] == hint, (source_id, shown.get(source_id), hint)


def test_report_is_self_contained(migrated: Migrated) -> None:
    text = migrated.report.read_text(encoding="utf-8")
    assert "<script" not in text
    assert not re.search(r"<link\b", text)
    assert "@import" not in text and "url(" not in text
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?:https?:)?//""", text)
    assert "http://" not in text and "https://" not in text  # no link of any kind leaks out
    assert text.count("<svg") >= len(CHARTS)
