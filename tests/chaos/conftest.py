"""What the chaos tests share: a small sandbox, `migrate run` as a subprocess, the reference.

The reference is one uninterrupted ``migrate run`` (a subprocess, as a user runs it) against a
fresh sandbox; every chaotic run must leave Procore and the staging DB exactly as it did.
Procore is compared as a person would see it (``procore_state`` from test_load_resume: the
migrated issues by uuid with title, description, status, priority, type, due date, assignee,
origin, location path and attachments by name and sha256, none twice, plus the project's own
issues and every location path once); the staging DB by its plan and its load states.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from migrate.demo import write_demo_config
from migrate.mappings import write_default_mappings
from migrate.sandbox.faults import FaultConfig
from migrate.sandbox.runner import Sandbox, SandboxOptions
from tests.test_load import GENEROUS
from tests.test_load_resume import procore_state

REPO = Path(__file__).resolve().parents[2]
#: 50 issues: 48 live, 2 voided, 65 files (10 MB) in Field; 47 issues, 52 files and 77
#: locations planned for Procore, one issue quarantined. A clean run takes about 1.5 s.
ISSUES = 50
SEED = 7


def chaos_sandbox(
    *,
    field_faults: FaultConfig | None = None,
    procore_faults: FaultConfig | None = None,
    field_options: dict[str, Any] | None = None,
    procore_options: dict[str, Any] | None = None,
) -> Sandbox:
    """The small project on both simulators; Procore's quota is generous unless overridden."""
    return Sandbox(
        SandboxOptions(
            seed=SEED,
            issues=ISSUES,
            field_faults=field_faults or FaultConfig(),
            procore_faults=procore_faults or FaultConfig(),
            field_options=field_options or {},
            procore_options={**GENEROUS, **(procore_options or {})},
        )
    )


def prepare_workdir(workdir: Path, box: Sandbox) -> Path:
    """migration.toml and the default mappings for ``box``, as `migrate demo` writes them."""
    workdir.mkdir(parents=True, exist_ok=True)
    write_default_mappings(workdir / "mappings")
    return write_demo_config(workdir, box)


def migrate_run_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "migrate.cli", "run", "--quiet", "--config", str(config)]


def start_migrate_run(config: Path, box: Sandbox) -> subprocess.Popen[bytes]:
    """`migrate run` in a subprocess; its output is appended to output.log next to the config."""
    env = {**os.environ, **box.environment(), "PYTHONPATH": str(REPO)}
    with open(config.parent / "output.log", "ab") as out:
        out.write(f"\n$ migrate run  (at {time.strftime('%H:%M:%S')})\n".encode())
        out.flush()
        return subprocess.Popen(
            migrate_run_command(config),
            cwd=config.parent,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def output_tail(config: Path, limit: int = 3000) -> str:
    path = config.parent / "output.log"
    return path.read_text(errors="replace")[-limit:] if path.exists() else "(no output)"


def finish(child: subprocess.Popen[bytes], config: Path, timeout: float = 120.0) -> int:
    """Wait for a `migrate run` to end by itself; its exit code."""
    try:
        return child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        raise AssertionError(f"migrate run hung for {timeout} s:\n{output_tail(config)}") from None


def requests_seen(box: Sandbox) -> tuple[int, int]:
    """Requests received so far by (BIM 360 Field, Procore), failed ones included."""
    return (sum(box.field_app.call_counts().values()), sum(box.procore_app.call_counts().values()))


def target_state(box: Sandbox) -> dict[str, Any]:
    """Procore as a person sees it (ids and timestamps left out: they differ per run)."""
    state = procore_state(box.procore_app)  # type: ignore[arg-type]
    state["inspections"] = inspection_state(box)
    return state


def inspection_state(box: Sandbox) -> list[Any]:
    """Every inspection with its items, answers, comments and files, without ids (issue 14)."""

    def file(f: dict[str, Any]) -> tuple[Any, ...]:
        return (f["name"], f["size"], f["sha256"])

    shown = []
    for inspection in box.procore_app.inspections_of(box.procore_project_id):
        header = {
            k: v
            for k, v in inspection.items()
            if k not in ("id", "number", "location_id", "files", "sections")
        }
        header["files"] = sorted(file(f) for f in inspection["files"])
        header["sections"] = [
            (
                section["name"],
                [
                    (
                        item["name"],
                        item["type"],
                        item["responded_with"],
                        item["comments"],
                        sorted(file(f) for f in item["files"]),
                    )
                    for item in section["items"]
                ],
            )
            for section in inspection["sections"]
        ]
        shown.append(header)
    return sorted(shown, key=lambda header: (header["identifier"] or "", header["description"]))


def db_query(config: Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(config.parent / "staging.db")) as conn:
        return conn.execute(sql).fetchall()


def staging_figures(config: Path) -> dict[str, Any]:
    """What the staging DB says was planned and loaded, independent of which run did it."""

    def counted(sql: str) -> dict[str, int]:
        return {" ".join(map(str, key)): n for *key, n in db_query(config, sql)}

    return {
        "plan": db_query(
            config, "SELECT source_id, payload_hash FROM planned_issues ORDER BY source_id"
        ),
        "planned_locations": db_query(
            config, "SELECT source_id, path FROM planned_locations ORDER BY source_id"
        ),
        "id_map": counted("SELECT entity, state, COUNT(*) FROM id_map GROUP BY 1, 2"),
        "uploads": counted("SELECT state, COUNT(*) FROM uploads GROUP BY 1"),
        "attachments": counted("SELECT state, COUNT(*) FROM attachments GROUP BY 1"),
        "open_quarantine": db_query(
            config,
            "SELECT entity, source_id, stage, reason FROM "
            "quarantine WHERE released_at IS NULL ORDER BY 1, 2",
        ),
        "source_problems": db_query(
            config, "SELECT entity, source_id, reason FROM source_problems ORDER BY 1, 2"
        ),
        "skipped": db_query(
            config, "SELECT entity, source_id, reason FROM skipped_records ORDER BY 1, 2"
        ),
    }


def running_stage(config: Path) -> str:
    """The stage a killed `migrate run` was in: its run row is still 'running'."""
    if not (config.parent / "staging.db").exists():
        return "start-up"
    rows = db_query(
        config, "SELECT command FROM runs WHERE status = 'running' ORDER BY id DESC LIMIT 1"
    )
    return rows[0][0] if rows else "between stages"


@dataclass(frozen=True)
class Reference:
    """One uninterrupted `migrate run` on a fresh sandbox, and its shape in requests."""

    state: dict[str, Any]
    figures: dict[str, Any]
    exit_code: int
    field_requests: int
    procore_requests: int
    #: Procore requests made by transform (its snapshot of assignees and locations), which
    #: come before load's.
    transform_procore_requests: int
    transform_seconds: float
    token_requests: int


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    workdir = tmp_path_factory.mktemp("reference")
    with chaos_sandbox() as box:
        config = prepare_workdir(workdir, box)
        exit_code = finish(start_migrate_run(config, box), config)
        assert exit_code in (0, 3), output_tail(config)
        field_requests, procore_requests = requests_seen(box)
        ((load_requests,),) = db_query(
            config, "SELECT requests FROM runs WHERE command = 'load' AND status = 'succeeded'"
        )
        ((transform_counts,),) = db_query(
            config, "SELECT counts FROM runs WHERE command = 'transform' AND status = 'succeeded'"
        )
        state = target_state(box)
        token_requests = box.procore_app.call_counts()["oauth.token"]
    box.procore_app.close()
    assert len(state["issues"]) > 40, "the reference run migrated too little to prove anything"
    return Reference(
        state=state,
        figures=staging_figures(config),
        exit_code=exit_code,
        field_requests=field_requests,
        procore_requests=procore_requests,
        transform_procore_requests=procore_requests - sum(json.loads(load_requests).values()),
        transform_seconds=json.loads(transform_counts)["elapsed_seconds"],
        token_requests=token_requests,
    )


@pytest.fixture
def sandbox_factory() -> Iterator[Callable[..., Sandbox]]:
    """Started chaos sandboxes, stopped (and their upload spools removed) after the test."""
    started: list[Sandbox] = []

    def make(**kwargs: Any) -> Sandbox:
        box = chaos_sandbox(**kwargs).start()
        started.append(box)
        return box

    yield make
    for box in started:
        box.stop()
        box.procore_app.close()


def statuses(box_app: Any, status: int) -> int:
    """Responses with this status the simulator sent, over all routes."""
    with box_app.lock:
        return sum(n for (_, code), n in box_app.statuses.items() if code == status)
