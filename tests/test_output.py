"""Output is inert (issue 13, point 8) and start-up stays light (issue 19, point 4).

Hostile text is planted in the BIM 360 Field simulator before a real run: an area name and an
attachment name full of escape sequences, BEL, CR, NUL, a C1 control and a bidi override, a
status that carries an OSC title sequence, a description that is a spreadsheet formula. Then:
what Procore holds (location node names, upload file names), what the staging DB kept, the
bytes every CLI command printed, the report's CSV cells and its file modes.
"""

from __future__ import annotations

import csv
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from migrate.demo import write_demo_config
from migrate.mappings import write_default_mappings
from migrate.pipeline import run_pipeline
from migrate.report import CSV_NAMES, HTML_NAME, report_from_settings
from migrate.report.files import MARKER
from migrate.sandbox.runner import Sandbox, SandboxOptions
from migrate.settings import Settings, load_settings
from migrate.text import (
    FORMULA_STARTS,
    csv_cell,
    csv_original,
    procore_name,
    terminal_json,
    terminal_line,
    terminal_safe,
)

HOSTILE_AREA = "Lobby \x1b[2J\x1b]0;owned\x07 East\r\n\x00\u202eA\x9b"
HOSTILE_FILE = "photo\x1b[31m\r\x07\u202egpj.exe\x00.jpg"
HOSTILE_DELETED_AREA = "Parked\x1b]0;pwned\x07"
FORMULA = '=HYPERLINK("http://evil.example/x","click me")'
PROCORE_FORMULA = "=cmd|' /C calc'!A0"
IDENTIFIER_FORMULA = "@SUM(1+1)*cmd|' /C calc'!A0"
#: Bytes a terminal acts on: ESC, BEL, CR, NUL, C1 CSI (UTF-8), RLO (UTF-8).
TERMINAL_CONTROLS = (b"\x1b", b"\x07", b"\r", b"\x00", "\x9b".encode(), "\u202e".encode())


def _unsafe(text: str) -> list[str]:
    return [c for c in text if not c.isprintable()]


# -- the rules themselves ------------------------------------------------------------------


def test_terminal_safe_shows_every_control_and_bidi_character() -> None:
    shown = terminal_safe(HOSTILE_AREA)
    assert shown == "Lobby \\x1b[2J\\x1b]0;owned\\x07 East\\x0d\n\\x00\\u202eA\\x9b"
    assert terminal_line("a\nb\tc") == "a\\x0ab\\x09c"
    assert terminal_safe("façade 📷 Zoë, 漢字\n") == "façade 📷 Zoë, 漢字\n"
    assert terminal_json('{"a": "\u202e\x9b"}\n') == '{"a": "\\u202e\\u009b"}\n'


def test_procore_names_lose_controls_and_keep_everything_else() -> None:
    assert procore_name(HOSTILE_AREA) == "Lobby [2J]0;owned East A"
    assert procore_name(HOSTILE_FILE) == "photo[31m gpj.exe.jpg"
    for name in ("Stair 2 > Landing", " leading and trailing spaces .png ", "façade 📷.jpg"):
        assert procore_name(name) == name  # clean names are sent exactly as Field has them


@pytest.mark.parametrize(
    "value", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "'=1", "''@x", "plain", "'quoted", ""]
)
def test_csv_cells_are_inert_and_reversible(value: str) -> None:
    cell = csv_cell(value)
    assert not cell.startswith(FORMULA_STARTS)
    assert csv_original(cell) == value


def test_numbers_stay_numbers_in_csv() -> None:
    assert csv_cell(-3) == -3 and csv_cell(None) is None


# -- a real run with hostile source text ---------------------------------------------------


@dataclass
class Hostile:
    box: Sandbox
    settings: Settings
    config: Path
    env: dict[str, str]
    workdir: Path
    area_id: str
    attachment_id: str
    quarantined_issue: str

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.settings.staging.path)

    def cli(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-c", "from migrate.cli import main; main()", *args],
            capture_output=True,
            cwd=self.workdir,
            env={**os.environ, **self.env},
            timeout=120,
            check=False,
        )


def _leaf(areas: list[dict[str, Any]], *, deleted: bool) -> dict[str, Any]:
    parents = {a["parent_id"] for a in areas}
    return next(
        a
        for a in areas
        if bool(a["deleted"]) == deleted and a["id"] not in parents and ">" not in a["name"]
    )


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    workdir = tmp_path_factory.mktemp("hostile")
    options = SandboxOptions(
        issues=20, seed=5, procore_options={"spike_limit": 100_000, "hourly_limit": 1_000_000}
    )
    with Sandbox(options) as box:
        field = box.field_app
        area = _leaf(field.project.main.areas, deleted=False)
        field.rename_area(area["id"], HOSTILE_AREA)
        gone = _leaf(field.project.main.areas, deleted=True)
        field.rename_area(gone["id"], HOSTILE_DELETED_AREA)
        issue = field.add_issue(
            description=FORMULA, identifier=IDENTIFIER_FORMULA, area_id=area["id"]
        )
        attachment = field.add_attachment(issue, HOSTILE_FILE, 1000, "image/jpeg")
        quarantined = field.add_issue(description="in a deleted area", area_id=gone["id"])
        write_default_mappings(workdir / "mappings")
        config = write_demo_config(workdir, box)
        settings = load_settings(config)
        env = box.environment()
        run_pipeline(settings, env)
        yield Hostile(box, settings, config, env, workdir, area["id"], attachment, quarantined)


def test_procore_location_names_are_clean_and_staging_keeps_the_original(
    hostile: Hostile,
) -> None:
    project = str(hostile.box.procore_project_id)
    names = [
        loc["node_name"]
        for loc in hostile.box.procore_app.snapshot()["projects"][project]["locations"]
    ]
    assert procore_name(HOSTILE_AREA) in names
    assert [n for n in names if _unsafe(n)] == []
    with hostile.db() as conn:
        (kept,) = conn.execute("SELECT name FROM areas WHERE id = ?", (hostile.area_id,)).fetchone()
    assert kept == HOSTILE_AREA


def test_upload_file_names_are_clean_and_staging_keeps_the_original(hostile: Hostile) -> None:
    uploads = hostile.box.procore_app.uploads(hostile.box.procore_project_id)
    assert procore_name(HOSTILE_FILE) in {u["name"] for u in uploads}
    assert [u["name"] for u in uploads if _unsafe(u["name"] or "")] == []
    with hostile.db() as conn:
        (kept,) = conn.execute(
            "SELECT filename FROM attachments WHERE id = ?", (hostile.attachment_id,)
        ).fetchone()
    assert kept == HOSTILE_FILE


def test_nothing_the_cli_prints_reaches_the_terminal_as_a_control(hostile: Hostile) -> None:
    config = str(hostile.config)
    listed = hostile.cli("quarantine", "list", "--config", config)
    with hostile.db() as conn:
        (row_id,) = conn.execute(
            "SELECT id FROM quarantine WHERE source_id = ?", (hostile.quarantined_issue,)
        ).fetchone()
    runs = {
        "quarantine list": listed,
        "quarantine list --json": hostile.cli("quarantine", "list", "--json", "--config", config),
        "quarantine show": hostile.cli("quarantine", "show", str(row_id), "--config", config),
        "quarantine show --json": hostile.cli(
            "quarantine", "show", str(row_id), "--json", "--config", config
        ),
        "status": hostile.cli("status", "--config", config),
        "status --json": hostile.cli("status", "--json", "--config", config),
        "plan --show": hostile.cli(
            "plan", "--show", "blocked", "--show", "unchanged", "--config", config
        ),
        "plan --json": hostile.cli("plan", "--json", "--show", "blocked", "--config", config),
        "report": hostile.cli(
            "report", "--out", str(hostile.workdir / "cli-report"), "--config", config
        ),
        "run": hostile.cli("run", "--quiet", "--verbose", "--config", config),
    }
    for name, done in runs.items():
        printed = done.stdout + done.stderr
        assert done.returncode in (0, 1, 3), (name, printed[-500:])
        found = [c for c in TERMINAL_CONTROLS if c in printed]
        assert found == [], f"`migrate {name}` printed {found}"
    # Not vacuous: the hostile name is in what was printed, shown as visible escapes.
    assert b"Parked\\x1b]0;pwned\\x07" in runs["quarantine show"].stdout
    assert b"Parked\\u001b]0;pwned\\u0007" in runs["quarantine list --json"].stdout


# -- the report's files ----------------------------------------------------------------------


def _cells(folder: Path) -> list[str]:
    cells = []
    for path in sorted(folder.glob("*.csv")):
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.reader(handle):
                cells.extend(row)
    return cells


def test_report_csv_cells_are_inert_and_files_private(hostile: Hostile) -> None:
    app = hostile.box.procore_app
    project = hostile.box.procore_project_id
    with hostile.db() as conn:
        (target_id,) = conn.execute(
            "SELECT target_id FROM id_map WHERE entity = 'coordination_issue' "
            "AND state = 'loaded' ORDER BY source_id LIMIT 1"
        ).fetchone()
    original = next(i["title"] for i in app.issues(project) if i["id"] == target_id)
    app.tamper_issue(target_id, title=PROCORE_FORMULA)
    out = hostile.workdir / "private" / "report"

    result = report_from_settings(hostile.settings, hostile.env, out_dir=out)

    cells = _cells(out)
    assert [c for c in cells if c.startswith(FORMULA_STARTS)] == []
    originals = {csv_original(c) for c in cells}
    assert PROCORE_FORMULA in originals  # Procore's side of the title mismatch
    assert "'" + IDENTIFIER_FORMULA in cells  # the source identifier (and title)
    assert [m["field"] for m in result.mismatches] == ["title"]  # file names matched
    html = result.path_html.read_bytes()
    assert [c for c in TERMINAL_CONTROLS if c in html] == []
    assert b"Parked\\x1b]0;pwned\\x07" in html  # the quarantine hint, shown not run
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    files = list(out.iterdir())
    assert {p.name for p in files} >= {MARKER, "report.html", "issues.csv"}
    assert {p.name: stat.S_IMODE(p.lstat().st_mode) for p in files} == {
        p.name: 0o600 for p in files
    }
    again = report_from_settings(hostile.settings, hostile.env, out_dir=out)  # ours: reused
    assert again.path_html.exists()
    app.tamper_issue(target_id, title=original)


def test_a_report_folder_we_did_not_make_is_refused_untouched(
    hostile: Hostile, tmp_path: Path
) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chmod(theirs, 0o755)
    (theirs / "report.html").write_text("someone else's")
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target, target_is_directory=True)

    for folder in (theirs, link):
        done = hostile.cli(
            "report", "--offline", "--out", str(folder), "--config", str(hostile.config)
        )
        assert done.returncode == 2, done.stderr
        lines = done.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and str(folder) in lines[0]
    assert stat.S_IMODE(theirs.stat().st_mode) == 0o755
    assert [p.name for p in theirs.iterdir()] == ["report.html"]
    assert (theirs / "report.html").read_text() == "someone else's"
    assert list(target.iterdir()) == []


def test_a_report_folder_an_earlier_version_made_is_adopted(
    hostile: Hostile, tmp_path: Path
) -> None:
    earlier = tmp_path / "report"
    earlier.mkdir(mode=0o755)
    os.chmod(earlier, 0o755)
    for name in (HTML_NAME, *CSV_NAMES.values()):
        (earlier / name).write_text("from the earlier version")
        os.chmod(earlier / name, 0o644)
    done = hostile.cli(
        "report", "--offline", "--out", str(earlier), "--config", str(hostile.config)
    )
    assert done.returncode in (0, 3), done.stderr
    assert stat.S_IMODE(earlier.stat().st_mode) == 0o700
    names = {p.name: stat.S_IMODE(p.lstat().st_mode) for p in earlier.iterdir()}
    assert names == {name: 0o600 for name in (MARKER, HTML_NAME, *CSV_NAMES.values())}
    assert "from the earlier version" not in (earlier / HTML_NAME).read_text()


# -- start-up ------------------------------------------------------------------------------

HEAVY = ("pandas", "numpy", "requests", "urllib3", "sqlite_utils", "tqdm")


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("status",),
        ("status", "--json"),
        ("quarantine", "list"),
        ("plan",),
    ],
    ids=" ".join,
)
def test_read_only_commands_import_no_heavy_module(hostile: Hostile, args: tuple[str, ...]) -> None:
    config = () if args == ("--help",) else ("--config", str(hostile.config))
    code = (
        "import sys\n"
        "from migrate.cli import main\n"
        "try:\n    main(sys.argv[1:])\n"
        "except SystemExit as exc:\n    code = exc.code\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules), code, file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *args, *config],
        capture_output=True,
        text=True,
        cwd=hostile.workdir,
        timeout=60,
        check=False,
    )
    *_, last = done.stderr.strip().splitlines()
    assert last in ("[] 0", "[] 3"), done.stderr  # 3: records wait in quarantine
