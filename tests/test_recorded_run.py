"""Every stage records its run one way: succeeded, failed or interrupted (store.runs.recorded_run).

The unit tests pin the rules on an in-memory store; the stage tests drive the real stages (extract,
transform, load, report) against the sandbox on loopback and stop them from inside their own work
(a Progress callback that raises), or make Procore fail for real, and read the runs row back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from migrate.clients.http import RetryPolicy
from migrate.clients.procore import ProcoreClient
from migrate.errors import ConfigError, MigrateError, StageFailed
from migrate.extract import extract_from_settings
from migrate.load import LoadOptions, load_from_settings
from migrate.load import run as load_run
from migrate.report import ReportOptions, report_from_settings
from migrate.report import run as report_run
from migrate.runlog import RunLog
from migrate.sandbox.runner import Sandbox, SandboxOptions
from migrate.settings import Settings, StagingSettings, load_settings, target_credentials
from migrate.store import BlobStore, Run, Store, last_run, open_store
from migrate.store.runs import RunFigures, recorded_run, start_run
from migrate.transform import transform_from_settings

# -- the rules, on an in-memory store ------------------------------------------------------------


@pytest.fixture
def store() -> Iterator[Store]:
    with open_store(":memory:") as opened:
        yield opened


def only_run(store: Store, command: str) -> Run:
    run = last_run(store, command)
    assert run is not None
    return run


def test_a_block_that_ends_records_succeeded_with_the_result(store: Store) -> None:
    with recorded_run(store, "demo", {"password": "hunter2", "workers": 2}) as run:
        assert only_run(store, "demo").status == "running"
        run.succeed(RunFigures({"issue": {"created": 3}}, {"GET /x": 2}))
    row = only_run(store, "demo")
    assert (row.id, row.status, row.error) == (run.id, "succeeded", None)
    assert row.counts == {"issue": {"created": 3}} and row.requests == {"GET /x": 2}
    assert row.args == {"password": "[redacted]", "workers": 2} and row.finished_at


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (KeyboardInterrupt(), "interrupted"),
        (SystemExit(143), "interrupted"),  # a signal handler that exits
        (RuntimeError("disk on fire"), "failed"),
        (MigrateError("Procore said no."), "failed"),
    ],
    ids=["ctrl-c", "signal-exit", "bug", "migrate-error"],
)
def test_one_rule_for_how_a_run_ends(store: Store, error: BaseException, status: str) -> None:
    with pytest.raises(type(error)), recorded_run(store, "demo") as run:
        run.track(lambda: RunFigures({"issue": {"created": 1}}, {"POST /sync": 1}))
        raise error
    row = only_run(store, "demo")
    assert row.status == status and row.finished_at
    assert row.error == (str(error) or type(error).__name__)
    assert row.counts == {"issue": {"created": 1}} and row.requests == {"POST /sync": 1}


def test_a_stage_failure_records_the_partial_result_it_carries(store: Store) -> None:
    partial = RunFigures({"issue": {"created": 7}}, {"POST /sync": 4})
    with pytest.raises(StageFailed), recorded_run(store, "demo") as run:
        run.track(lambda: RunFigures({"stale": {}}, None))
        raise StageFailed("demo", "Procore went away", partial=partial)
    row = only_run(store, "demo")
    assert row.status == "failed" and "Procore went away" in (row.error or "")
    assert row.counts == {"issue": {"created": 7}} and row.requests == {"POST /sync": 4}


def test_a_failing_progress_reader_does_not_hide_the_error(store: Store) -> None:
    def broken() -> RunFigures:
        raise OSError("cannot read")

    with pytest.raises(ValueError, match="the real one"), recorded_run(store, "demo") as run:
        run.track(broken)
        raise ValueError("the real one")
    row = only_run(store, "demo")
    assert (row.status, row.counts, row.error) == ("failed", None, "the real one")


def test_an_interrupt_that_left_a_transaction_open_still_records_interrupted(
    tmp_path: Path,
) -> None:
    # A Ctrl-C inside a `with store.transaction()`'s __enter__, after BEGIN, leaves the
    # transaction open with nobody to end it; the run's end must not join it.
    path = tmp_path / "staging.db"
    with open_store(path) as store:
        with pytest.raises(KeyboardInterrupt), recorded_run(store, "load") as run:
            store.conn.execute("BEGIN IMMEDIATE")
            store.conn.execute("UPDATE runs SET args = '{}' WHERE id = ?", (run.id,))
            raise KeyboardInterrupt
        assert not store.in_transaction
    with open_store(path) as reopened:  # what the next command reads
        assert only_run(reopened, "load").status == "interrupted"


def test_the_lock_is_taken_with_the_run_row_and_released_after_its_end(store: Store) -> None:
    seen: list[tuple[str, Any]] = []

    class Lock:
        def __enter__(self) -> None:
            # Inside the transaction that inserts the row, before the row exists.
            seen.append(("taken", (store.in_transaction, last_run(store, "demo"))))

        def __exit__(self, *exc: object) -> None:
            seen.append(("released", only_run(store, "demo").status))

    def acquire(opened: Store, command: str) -> Lock:
        assert opened is store and command == "demo"
        return Lock()

    with recorded_run(store, "demo", acquire=acquire):
        seen.append(("body", only_run(store, "demo").status))
    assert seen == [("taken", (True, None)), ("body", "running"), ("released", "succeeded")]


def test_a_refused_lock_records_no_run(store: Store) -> None:
    class Refused(MigrateError):
        pass

    def acquire(opened: Store, command: str) -> Any:
        raise Refused("another writer holds this staging DB")

    with pytest.raises(Refused), recorded_run(store, "demo", acquire=acquire):
        pytest.fail("the block must not run")
    assert last_run(store, "demo") is None


def test_the_default_lock_is_the_staging_dbs_writer_lock(store: Store) -> None:
    holder = start_run(store, "load")  # not needed for the lock; a row to compare with
    with recorded_run(store, "transform"):
        (command, pid) = store.conn.execute("SELECT command, pid FROM writer_lock").fetchone()
        assert (command, pid) == ("transform", os.getpid())
    assert store.conn.execute("SELECT COUNT(*) FROM writer_lock").fetchone()[0] == 0
    assert only_run(store, "load").id == holder


def test_the_run_log_gets_the_run_id_and_the_ending(store: Store, tmp_path: Path) -> None:
    with (
        RunLog(tmp_path / "logs") as log,
        pytest.raises(RuntimeError),
        recorded_run(store, "demo", log=log) as run,
    ):
        raise RuntimeError("boom")
    lines = [json.loads(line) for line in (tmp_path / "logs" / f"{run.id}.jsonl").open()]
    assert lines[-1]["event"] == "failed" and lines[-1]["run"] == run.id
    assert lines[-1]["message"] == "RuntimeError: boom" and lines[-1]["level"] == "error"


# -- the real stages against the sandbox ---------------------------------------------------------


class Stop:
    """A Progress that raises `error` the first time a stage starts a bar."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def start(self, entity: str, total: int | None) -> None:
        raise self.error

    def advance(self, entity: str, n: int = 1) -> None:
        pass

    def finish(self, entity: str) -> None:
        pass


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Sandbox]]:
    tmp = tmp_path_factory.mktemp("recorded")
    options = SandboxOptions(
        issues=12, procore_options={"spike_limit": 100_000, "hourly_limit": 1_000_000}
    )
    with Sandbox(options) as box:
        config = tmp / "migration.toml"
        config.write_text(
            f'[source]\nbase_url = "{box.field_url}"\nproject_id = "{box.field_project_id}"\n'
            f'[target]\nbase_url = "{box.procore_url}"\nauth_url = "{box.procore_url}"\n'
            f"company_id = {box.procore_company_id}\nproject_id = {box.procore_project_id}\n"
            f'[mappings]\ndir = "{Path(__file__).parent.parent / "mappings"}"\n'
        )
        yield load_settings(config), box


STAGES = {
    "extract": extract_from_settings,
    "transform": transform_from_settings,
    "load": load_from_settings,
}


def last(settings: Settings, command: str) -> Run:
    with open_store(settings.staging.path) as store:
        return only_run(store, command)


@pytest.mark.parametrize("command", list(STAGES))
def test_every_stage_records_interrupted_failed_and_succeeded_alike(
    sandbox: tuple[Settings, Sandbox], command: str
) -> None:
    settings, box = sandbox
    env = box.environment()
    if command != "extract":
        extract_from_settings(settings, env)
    if command == "load":
        transform_from_settings(settings, env)
    stage = STAGES[command]
    for error, status in (
        (KeyboardInterrupt(), "interrupted"),
        (SystemExit(130), "interrupted"),
        (RuntimeError("a bug in a progress bar"), "failed"),
    ):
        with pytest.raises(type(error)):
            stage(settings, env, progress=Stop(error))
        row = last(settings, command)
        assert (row.status, row.error) == (status, str(error) or type(error).__name__), command
        assert row.finished_at is not None
        log = settings.staging.logs / f"{row.id}.jsonl"
        ending = json.loads(log.read_text(encoding="utf-8").splitlines()[-1])
        assert (ending["event"], ending["run"]) == (status, row.id)
    result = stage(settings, env)
    row = last(settings, command)
    assert (row.id, row.status, row.error) == (result.run_id, "succeeded", None)
    assert row.counts == json.loads(json.dumps(result.as_json()))
    assert row.requests == result.requests_json()


def test_load_against_a_failing_procore_records_failed_with_what_it_did(
    sandbox: tuple[Settings, Sandbox], tmp_path: Path
) -> None:
    shared, box = sandbox
    fresh = StagingSettings(tmp_path / "staging.db", tmp_path / "blobs", tmp_path / "logs")
    settings = replace(shared, staging=fresh)  # its own plan: every issue still to create
    env = box.environment()
    extract_from_settings(settings, env)
    transform_from_settings(settings, env)
    box.procore_app.faults.inject("error", count=1000, path="coordination_issues")
    quick = RetryPolicy(max_attempts=2, base=0.01, cap=0.02)
    try:
        with (
            ProcoreClient(settings.target, target_credentials(env), policy=quick) as client,
            open_store(settings.staging.path) as store,
            pytest.raises(StageFailed) as failed,
        ):
            load_run(
                store,
                client,
                BlobStore(settings.staging.blobs),
                options=LoadOptions(target_project_id=box.procore_project_id),
            )
    finally:
        box.procore_app.faults.clear()
    partial = failed.value.partial
    row = last(settings, "load")
    assert row.status == "failed" and row.id == partial.run_id
    assert row.counts == json.loads(json.dumps(partial.as_json()))
    assert row.requests == partial.requests_json() and row.requests
    assert row.error == str(failed.value)


def test_the_report_records_its_run_alike(
    sandbox: tuple[Settings, Sandbox], tmp_path: Path
) -> None:
    settings, box = sandbox
    extract_from_settings(settings, box.environment())
    result = report_from_settings(settings, out_dir=tmp_path / "report", offline=True)
    row = last(settings, "report")
    assert (row.id, row.status) == (result.run_id, "succeeded")
    assert row.counts == result.as_json() and row.requests is None
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("not a folder")
    with (
        open_store(settings.staging.path) as store,
        pytest.raises(ConfigError, match="not a folder"),
    ):
        report_run(store, None, options=ReportOptions(box.procore_project_id, in_the_way))
    row = last(settings, "report")
    assert row.status == "failed" and row.error and row.finished_at
