"""The HTML report rendered by a real headless Chromium: it opens from disk, charts included.

Skipped (with the reason) when /usr/bin/chromium is absent; `.ci/run` installs Debian's
package so CI always runs it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from migrate.demo import write_demo_config
from migrate.mappings import write_default_mappings
from migrate.sandbox.runner import Sandbox, SandboxOptions
from migrate.settings import load_settings

CHROMIUM = Path("/usr/bin/chromium")
CHARTS = ("status-before", "status-after", "by-location", "load-progress", "requests-per-minute")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium is not installed (apt-get install chromium); .ci/run installs it",
)


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
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def report_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from migrate.extract import extract_from_settings
    from migrate.load import load_from_settings
    from migrate.report import report_from_settings
    from migrate.transform import transform_from_settings

    workdir = tmp_path_factory.mktemp("browser")
    with Sandbox(SandboxOptions(issues=30, seed=5, procore_options={"spike_limit": 2000})) as box:
        write_default_mappings(workdir / "mappings")
        settings = load_settings(write_demo_config(workdir, box))
        env = box.environment()
        extract_from_settings(settings, env)
        transform_from_settings(settings, env)
        load_from_settings(settings, env)
        result = report_from_settings(settings, env, out_dir=workdir / "report")
    return result.path_html


def _svg(dom: str, chart: str) -> str:
    match = re.search(rf'<svg[^>]*data-chart="{chart}"[^>]*>.*?</svg>', dom, re.DOTALL)
    assert match, f"chart {chart!r} is not in the rendered DOM"
    return match.group(0)


def test_report_renders_with_its_charts(report_path: Path, tmp_path: Path) -> None:
    # A copy alone in a fresh folder: the page must need nothing beside it.
    alone = tmp_path / "alone"
    alone.mkdir()
    page = alone / "report.html"
    shutil.copy(report_path, page)
    url = page.as_uri()

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
    assert 'class="limit"' in _svg(dom, "requests-per-minute")  # the quota line
    for bad in ("Traceback", "NaN", "undefined", "Infinity", "None</td>"):
        assert bad not in dom, f"{bad!r} in the rendered report"

    shot = tmp_path / "report.png"
    taken = _chromium(
        tmp_path / "profile-png",
        f"--screenshot={shot}",
        "--window-size=1280,2000",
        "--hide-scrollbars",
        url,
    )
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 20_000  # a real page, not a blank image


def test_report_is_self_contained(report_path: Path) -> None:
    html = report_path.read_text(encoding="utf-8")
    assert "<script" not in html
    assert not re.search(r"<link\b", html)
    assert "@import" not in html and "url(" not in html
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?:https?:)?//""", html)
    assert "http://" not in html and "https://" not in html  # no link of any kind leaks out
    assert html.count("<svg") >= len(CHARTS)
