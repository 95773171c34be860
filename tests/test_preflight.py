"""`migrate preflight` against both simulators over real HTTP, and the contract it writes.

Preflight reads both services (and with ``probe_writes`` writes to Procore, then deletes what it
made), prints a go / no-go table, writes contract.json and records the contract in the staging
DB. The simulators replaying another contract (`migrate sandbox serve --contract`) make it
report each difference. The load follows the recorded contract: under every reading of a
reused uuid it stays exactly-once when a sync answer is dropped, before and after a resume.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from migrate.cli import main
from migrate.clients.http import RetryPolicy
from migrate.clients.procore import ProcoreClient
from migrate.contract import (
    CONTRACT_KEYS,
    documented,
    field_sandbox_options,
    load_readings,
    read_contract,
    record_contract,
    sandbox_options,
    write_contract,
)
from migrate.errors import EXIT_OK, EXIT_USAGE, StageFailed
from migrate.ids import issue_uuid
from migrate.load import LoadOptions, load_from_settings, run
from migrate.preflight import PROBE_TITLE, preflight_from_settings
from migrate.sandbox.httpbase import RunningServer
from migrate.sandbox.runner import Sandbox, SandboxOptions
from migrate.settings import Settings, target_credentials
from migrate.store import BlobStore, open_store
from tests.test_load import (
    GENEROUS,
    PROCORE_ENV,
    PROJECT,
    RecordingProcoreApp,
    db_rows,
    plant,
    project_issues,
    settings_for,
)

#: A short spike window, so preflight can watch it reset and tell fixed from sliding quickly.
QUICK_WINDOWS = {"spike_window": 2.0}
WRITE_ROUTES = ("coordination_issues.sync", "coordination_issues.update", "uploads.create")


def sandbox_with(**procore_options: Any) -> Sandbox:
    return Sandbox(SandboxOptions(issues=40, procore_options={**QUICK_WINDOWS, **procore_options}))


def settings_of(box: Sandbox, tmp: Path) -> Settings:
    return settings_for(
        tmp, box.procore_url, field_url=box.field_url, field_project=box.field_project_id
    )


def preflight(box: Sandbox, tmp: Path, **kwargs: Any) -> Any:
    return preflight_from_settings(
        settings_of(box, tmp),
        box.environment(),
        contract_path=tmp / "contract.json",
        fields_path=tmp / "fields.suggested.csv",
        **kwargs,
    )


@pytest.fixture
def box() -> Iterator[Sandbox]:
    with sandbox_with() as sandbox:
        yield sandbox


def verdicts(result: Any) -> dict[str, str]:
    return {f"{c.service}: {c.name}": c.verdict for c in result.checks}


# -- read-only ----------------------------------------------------------------------------------


def test_read_only_preflight_is_go_and_writes_nothing_to_procore(
    box: Sandbox, tmp_path: Path
) -> None:
    app = box.procore_app
    issues_before = len(project_issues(app))
    result = preflight(box, tmp_path)
    seen = verdicts(result)
    assert result.go and result.exit_code == EXIT_OK
    for row in (
        "BIM 360 Field: login",
        "BIM 360 Field: project",
        "BIM 360 Field: issues",
        "BIM 360 Field: field definitions",
        "BIM 360 Field: logout",
        "Procore: token",
        "Procore: company",
        "Procore: project",
        "Procore: coordination_issues",
        "Procore: assignees",
        "Procore: locations",
        "Procore: inspections",
        "Procore: rate limits",
    ):
        assert seen[row] == "go", row
    assert seen["Procore: uploads"] == "note"  # a write: only with --probe-writes
    assert not any(app.call_counts().get(route) for route in WRITE_ROUTES)
    assert len(project_issues(app)) == issues_before
    # The listing and the search agree; the windows were watched resetting (sliding here).
    contract = read_contract(tmp_path / "contract.json")
    assert contract["field"]["listing_matches_search"] is True
    assert contract["procore"]["rate_windows"] == "sliding"
    assert contract["procore"]["uuid_reuse"] is None  # not probed: unknown
    lines = "\n".join(result.lines())
    assert "GO: nothing seen stops the migration." in lines
    assert "procore.rate_windows: expected unknown, observed sliding" in lines
    # The suggested fields.csv names the assignee and due date fields, custom fields by type.
    suggested = (tmp_path / "fields.suggested.csv").read_text(encoding="utf-8")
    assert "f--assigned_to,assignee" in suggested and "f--due_date,due_date" in suggested
    assert "# custom fields shown as date" in suggested
    # Recorded in the staging DB, where load reads it.
    with open_store(settings_of(box, tmp_path).staging.path) as store:
        assert load_readings(store).uuid_reuse is None


def test_fixed_windows_are_read_as_fixed(tmp_path: Path) -> None:
    with sandbox_with(rate_windows="fixed") as sandbox:
        preflight(sandbox, tmp_path)
    assert read_contract(tmp_path / "contract.json")["procore"]["rate_windows"] == "fixed"


def test_contract_holds_no_secret_and_no_project_data(box: Sandbox, tmp_path: Path) -> None:
    preflight(box, tmp_path, probe_writes=True)
    text = (tmp_path / "contract.json").read_text(encoding="utf-8")
    env = box.environment()
    project = box.project.project
    forbidden = [
        *env.values(),  # usernames, passwords, client id and secret
        str(box.procore_company_id),
        str(box.procore_project_id),
        box.field_project_id,
        str(project.get("name")),
        "127.0.0.1",
        "http",
        "@",  # no e-mail address of any user
        PROBE_TITLE,
    ]
    forbidden += [token for token in box.procore_app._tokens]
    for value in forbidden:
        assert value and value not in text, value
    # Only known keys, each a reading: nothing the project holds.
    contract = json.loads(text)
    assert set(contract) == {"format", "observed_at", "probe_writes", "procore", "field"}
    assert all(
        isinstance(v, (str, bool, list, dict, type(None))) for v in contract["procore"].values()
    )


def test_wrong_credentials_or_project_are_no_go_with_exit_2(box: Sandbox, tmp_path: Path) -> None:
    env = {**box.environment(), "PROCORE_CLIENT_SECRET": "wrong"}
    result = preflight_from_settings(
        settings_of(box, tmp_path), env, contract_path=None, fields_path=None
    )
    assert verdicts(result)["Procore: token"] == "no-go"
    assert result.exit_code == EXIT_USAGE
    assert "wrong" not in "\n".join(result.lines())

    env = {**box.environment(), "BIM360_FIELD_PASSWORD": "not-the-password"}
    result = preflight_from_settings(
        settings_of(box, tmp_path), env, contract_path=None, fields_path=None
    )
    assert verdicts(result)["BIM 360 Field: login"] == "no-go"
    assert verdicts(result)["Procore: token"] == "go"  # the other service is still checked
    assert result.exit_code == EXIT_USAGE
    assert "not-the-password" not in "\n".join(result.lines())

    settings = settings_of(box, tmp_path)
    settings = replace(
        settings,
        target=replace(settings.target, project_id=999_999),
        source=replace(settings.source, project_id="not-a-project"),
    )
    result = preflight_from_settings(
        settings, box.environment(), contract_path=None, fields_path=None
    )
    seen = verdicts(result)
    assert seen["Procore: project"] == "no-go" and seen["BIM 360 Field: project"] == "no-go"
    assert result.exit_code == EXIT_USAGE
    assert "NO-GO" in "\n".join(result.lines())


def test_cli_prints_the_table_and_exits_with_the_verdict(box: Sandbox, tmp_path: Path) -> None:
    config = tmp_path / "migration.toml"
    config.write_text(
        f'[source]\nbase_url = "{box.field_url}"\nproject_id = "{box.field_project_id}"\n\n'
        f'[target]\nbase_url = "{box.procore_url}"\nauth_url = "{box.procore_url}"\n'
        f"company_id = {box.procore_company_id}\nproject_id = {box.procore_project_id}\n\n"
        '[staging]\npath = "staging.db"\nblobs = "blobs"\nlogs = "logs"\n',
        encoding="utf-8",
    )
    out = tmp_path / "seen.json"
    result = CliRunner().invoke(
        main,
        [
            "preflight",
            "--config",
            str(config),
            "--contract-out",
            str(out),
            "--fields-out",
            str(tmp_path / "f.csv"),
        ],
        env=box.environment(),
    )
    assert result.exit_code == 0, result.output
    assert "Procore: coordination_issues" in result.output and "GO:" in result.output
    assert read_contract(out)["format"] == "migrate-contract/1"


# -- probe writes and replayed contracts ------------------------------------------------------


def test_probe_writes_read_the_documented_simulator_and_clean_up(
    box: Sandbox, tmp_path: Path
) -> None:
    app = box.procore_app
    issues_before = len(project_issues(app))
    result = preflight(box, tmp_path, probe_writes=True)
    assert result.go
    procore = read_contract(tmp_path / "contract.json")["procore"]
    assert procore["uuid_reuse"] == "refused"
    assert procore["create_statuses"] == ["open", "closed"]
    assert procore["update_statuses"] == ["open", "ready_for_review", "closed"]
    assert procore["tools"]["uploads"] == "ok"
    assert procore["requires_json_content_type"] is True
    assert len(project_issues(app)) == issues_before  # every probe issue deleted
    with open_store(settings_of(box, tmp_path).staging.path) as store:
        readings = load_readings(store)
    assert readings.reuse_refused and readings.update_statuses == (
        "open",
        "ready_for_review",
        "closed",
    )
    # A read-only preflight afterwards (project_id back on the real project) keeps them.
    again = preflight(box, tmp_path)
    assert verdicts(again)["Procore probe: readings"] == "note"
    assert read_contract(tmp_path / "contract.json")["procore"]["uuid_reuse"] == "refused"
    with open_store(settings_of(box, tmp_path).staging.path) as store:
        assert load_readings(store).reuse_refused


def test_simulators_replaying_another_contract_report_each_difference(tmp_path: Path) -> None:
    other = documented()
    other["probe_writes"] = True
    procore = other["procore"]
    procore.update(
        uuid_reuse="accepted",
        create_statuses=["blocked", "open", "ready_for_review", "closed"],
        update_statuses=["blocked", "open", "ready_for_review", "unblocked", "closed"],
        rate_windows="fixed",
        requires_json_content_type=False,
    )
    write_contract(tmp_path / "other.json", other)
    replay = sandbox_options(read_contract(tmp_path / "other.json"))
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    with sandbox_with() as documented_box:
        preflight(documented_box, tmp_path / "first", probe_writes=True)
    seen_before = read_contract(tmp_path / "first" / "contract.json")
    with sandbox_with(**replay) as replaying:
        issues_before = len(project_issues(replaying.procore_app))
        result = preflight(
            replaying,
            tmp_path / "second",
            probe_writes=True,
            expected=seen_before,
            expected_from="first/contract.json",
        )
        assert len(project_issues(replaying.procore_app)) == issues_before
    observed = read_contract(tmp_path / "second" / "contract.json")["procore"]
    for key in (
        "uuid_reuse",
        "create_statuses",
        "update_statuses",
        "rate_windows",
        "requires_json_content_type",
    ):
        assert observed[key] == procore[key], key
    assert sorted(line.split(":")[0] for line in result.differences) == [
        "procore.create_statuses",
        "procore.rate_windows",
        "procore.requires_json_content_type",
        "procore.update_statuses",
        "procore.uuid_reuse",
    ]
    printed = "\n".join(result.lines())
    assert "Differences from first/contract.json:" in printed
    assert "procore.uuid_reuse: expected refused, observed accepted" in printed


def test_replayed_access_headers_and_listing_are_reported_as_differences(tmp_path: Path) -> None:
    # The readings the test above leaves alone: tools refused on either side, answers without
    # rate-limit headers, a Field listing that counts fewer issues than its search.
    other = documented()
    other["procore"].update(
        rate_limit_headers=False, tools={"inspections": "forbidden", "trades": "not_found"}
    )
    other["field"].update(
        listing_matches_search=False, tools={"checklists": "forbidden", "custom_fields": "error"}
    )
    write_contract(tmp_path / "other.json", other)
    contract = read_contract(tmp_path / "other.json")
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    with sandbox_with() as documented_box:
        preflight(documented_box, tmp_path / "first")
    seen_before = read_contract(tmp_path / "first" / "contract.json")
    replay = SandboxOptions(
        issues=40,
        procore_options={**QUICK_WINDOWS, **sandbox_options(contract)},
        field_options=field_sandbox_options(contract),
    )
    with Sandbox(replay) as replaying:
        result = preflight(
            replaying, tmp_path / "second", expected=seen_before, expected_from="first"
        )
    observed = read_contract(tmp_path / "second" / "contract.json")
    assert observed["procore"]["rate_limit_headers"] is False
    assert observed["field"]["listing_matches_search"] is False
    for section in ("procore", "field"):
        for tool, state in other[section]["tools"].items():
            assert observed[section]["tools"][tool] == state, (section, tool)
    assert sorted(line.split(":")[0] for line in result.differences) == [
        "field.listing_matches_search",
        "field.tools.checklists",
        "field.tools.custom_fields",
        "procore.rate_limit_headers",
        "procore.tools.inspections",
        "procore.tools.trades",
    ]


def test_every_reading_a_contract_holds_is_replayed() -> None:
    # Each key (but the format's own) turns into a simulator switch when it differs from the
    # documented reading, so a rehearsal never silently meets the documented service instead.
    other = documented()
    other["procore"].update(
        uuid_reuse="ignored",
        create_statuses=["open"],
        update_statuses=["closed"],
        requires_json_content_type=False,
        rate_limit_headers=False,
        rate_windows="fixed",
        tools={"inspections": "forbidden"},
    )
    other["field"].update(listing_matches_search=False, tools={"issue_fields": "error"})
    for section in ("procore", "field"):
        changed = {
            k for k in CONTRACT_KEYS[section] if other[section][k] != documented()[section][k]
        }
        assert changed == set(CONTRACT_KEYS[section]), section
    procore, field = sandbox_options(other), field_sandbox_options(other)
    assert set(procore) == {
        "uuid_reuse",
        "create_statuses",
        "update_statuses",
        "require_json_content_type",
        "rate_limit_headers",
        "rate_windows",
        "refused_tools",
    }
    assert set(field) == {"listing_default", "refused_tools"}
    assert procore["refused_tools"] == {"inspections": 403}
    assert field["refused_tools"] == {"issue_fields": 400}


@pytest.mark.parametrize("reading", ["refused", "accepted", "ignored"])
def test_probe_reads_every_uuid_reuse_reading(reading: str, tmp_path: Path) -> None:
    with sandbox_with(uuid_reuse=reading) as sandbox:
        preflight(sandbox, tmp_path, probe_writes=True)
    assert read_contract(tmp_path / "contract.json")["procore"]["uuid_reuse"] == reading


# -- load under every uuid reading ----------------------------------------------------------------


def procore_reading(reading: str) -> RecordingProcoreApp:
    return RecordingProcoreApp(uuid_reuse=reading, **GENEROUS)


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[RunningServer] = []

    def start(app: RecordingProcoreApp) -> RecordingProcoreApp:
        server = RunningServer(app)
        app.url = server.url  # type: ignore[attr-defined]
        servers.append(server)
        return app

    yield start
    for server in servers:
        server.stop()
        server.app.close()  # type: ignore[attr-defined]


def record_reading(settings: Settings, reading: str | None) -> None:
    """What a preflight probe would have recorded (None: no probe was run)."""
    if reading is None:
        return
    contract = documented()
    contract["probe_writes"] = True
    contract["procore"]["uuid_reuse"] = reading
    with open_store(settings.staging.path) as store:
        record_contract(store, contract, {})


def held_once(app: RecordingProcoreApp, source_ids: list[str]) -> bool:
    uuids = Counter(i["uuid"] for i in project_issues(app))
    return [uuids[issue_uuid(PROJECT, sid)] for sid in source_ids] == [1] * len(source_ids)


READINGS = [
    (server, recorded)
    for server in ("refused", "accepted", "ignored")
    for recorded in (None, server)  # no probe run, or a probe that saw this reading
]


@pytest.mark.parametrize(("server", "recorded"), READINGS)
def test_dropped_sync_answer_loads_each_issue_once(
    serve: Any, tmp_path: Path, server: str, recorded: str | None
) -> None:
    app = serve(procore_reading(server))
    settings = settings_for(tmp_path, app.url)  # type: ignore[attr-defined]
    source_ids = plant(settings, 60, attachments=4)
    record_reading(settings, recorded)
    app.faults.inject("lost_response", path="coordination_issues/sync")
    result = load_from_settings(settings, PROCORE_ENV)
    assert app.faults.fired["lost_response"] == 1
    assert held_once(app, source_ids)
    assert len(project_issues(app)) == 1 + 60
    assert result.counts["coordination_issue"]["created"] == 60
    assert db_rows(
        settings, "SELECT state, COUNT(*) FROM id_map WHERE entity = 'coordination_issue'"
    ) == [("loaded", 60)]


@pytest.mark.parametrize(("server", "recorded"), READINGS)
def test_dropped_sync_answer_then_a_dead_run_resumes_each_issue_once(
    serve: Any, tmp_path: Path, server: str, recorded: str | None
) -> None:
    """The sync is applied, its answer lost, and the run dies before it learns what Procore
    holds (every look-up fails): the resumed load ends with each issue once."""
    app = serve(procore_reading(server))
    settings = settings_for(tmp_path, app.url)  # type: ignore[attr-defined]
    source_ids = plant(settings, 50, attachments=5)
    record_reading(settings, recorded)
    app.faults.inject("lost_response", path="coordination_issues/sync")
    app.faults.inject("error", count=1000, path=r"coordination_issues$", method="GET")
    quick = RetryPolicy(max_attempts=2, base=0.01, cap=0.02)
    store = open_store(settings.staging.path)
    with (
        ProcoreClient(settings.target, target_credentials(PROCORE_ENV), policy=quick) as client,
        pytest.raises(StageFailed),
    ):
        run(
            store,
            client,
            BlobStore(settings.staging.blobs),
            options=LoadOptions(target_project_id=PROJECT),
        )
    store.close()
    assert held_once(app, source_ids)  # Procore has them; the id map does not know yet
    assert db_rows(
        settings, "SELECT state, COUNT(*) FROM id_map WHERE entity = 'coordination_issue'"
    ) == [("sent", 50)]
    app.faults.clear()
    result = load_from_settings(settings, PROCORE_ENV)
    assert held_once(app, source_ids)
    assert len(project_issues(app)) == 1 + 50
    assert result.exit_code == 0
    assert db_rows(
        settings, "SELECT state, COUNT(*) FROM id_map WHERE entity = 'coordination_issue'"
    ) == [("loaded", 50)]
    # The uploads the dead run's creates consumed are recorded as such, none uploaded twice.
    assert db_rows(settings, "SELECT state, COUNT(*) FROM uploads GROUP BY 1") == [
        ("referenced", 10)
    ]
    assert app.call_counts()["uploads.create"] == 10
    if recorded == "refused":
        # Known to be refused: sent again (by the HTTP layer, then by the resume), answered
        # "has already been taken" and looked up.
        assert app.sync_sizes == [50, 50, 50]
    else:
        # Not known to be refused: never sent again; looked up by uuid and found.
        assert app.sync_sizes == [50]


# -- `migrate sandbox serve --contract` -----------------------------------------------------------


def test_sandbox_serve_takes_its_readings_from_a_contract(tmp_path: Path) -> None:
    from migrate.cli import _sandbox_options

    contract = documented()
    contract["procore"].update(uuid_reuse="ignored", create_statuses=["open"], rate_windows="fixed")
    write_contract(tmp_path / "seen.json", contract)
    parsed = (
        main.commands["sandbox"]
        .commands["serve"]
        .make_context(  # type: ignore[attr-defined]
            "serve", ["--contract", str(tmp_path / "seen.json")]
        )
    )
    options = _sandbox_options(parsed.params)
    assert options.procore_options["uuid_reuse"] == "ignored"
    assert options.procore_options["create_statuses"] == ("open",)
    assert options.procore_options["rate_windows"] == "fixed"

    (tmp_path / "bad.json").write_text('{"format": "something else"}', encoding="utf-8")
    refused = CliRunner().invoke(
        main, ["sandbox", "serve", "--contract", str(tmp_path / "bad.json")]
    )
    assert refused.exit_code == EXIT_USAGE
    assert "is not a migrate-contract/1 file" in refused.output
