"""Company-level inspection set-up made once across a portfolio (issue 18, company lock).

Two projects of one company load at once: each would list the company's response sets and
templates, see nothing and create its own. The company lock (migrate/clients/companylock.py)
makes the second wait while the first builds, then find what the first made; an identical
company template is reused rather than copied. The race is forced by construction: project
A's create is held in the simulator (tests/gates.py) while A holds the lock, and project B is
seen waiting for the lock instead of reaching the held create.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from migrate.clients.companylock import (
    COMPANY_LOCK_ENV,
    NoLock,
    SqliteCompanyLock,
    company_lock_from_env,
    lock_environment,
)
from migrate.clients.sharedquota import quota_environment
from migrate.errors import ConfigError
from migrate.ids import (
    ENTITY_INSPECTION_TEMPLATE,
    ENTITY_INSPECTION_TYPE,
    ENTITY_RESPONSE_SET,
    ENTITY_TEMPLATE_ITEM,
    ENTITY_TEMPLATE_SECTION,
)
from migrate.load import load_from_settings
from migrate.sandbox.httpbase import RunningServer
from migrate.settings import Settings, load_settings
from migrate.store import open_store
from migrate.store.planned import id_map_rows, template_payload_hash
from tests.gates import HeldCalls
from tests.inspection_rows import TEMPLATES, plant_inspections
from tests.test_load import GENEROUS, PROCORE_ENV, RecordingProcoreApp

REPO = Path(__file__).resolve().parents[1]
PROJECTS = (5100, 5101)  # two projects of company 4100 in the simulator
WAITING = "waiting for the company set-up lock"
#: A project's load in a process of its own; prints what it did with company templates.
CHILD = (
    "import json, os, sys\n"
    "from migrate.load import load_from_settings\n"
    "from migrate.settings import load_settings\n"
    "result = load_from_settings(load_settings(sys.argv[1]), os.environ)\n"
    "print(json.dumps(result.as_json()['company_templates']), flush=True)\n"
)
#: Building blocks whose ids every project of the company shares.
COMPANY_ENTITIES = (
    ENTITY_INSPECTION_TYPE,
    ENTITY_RESPONSE_SET,
    ENTITY_INSPECTION_TEMPLATE,
    ENTITY_TEMPLATE_SECTION,
    ENTITY_TEMPLATE_ITEM,
)
#: Long enough for a busy machine to start a Python process and load to reach the point.
GUARD_SECONDS = 120.0


# -- the lock itself ----------------------------------------------------------------------------
HOLDER = (
    "import sys\n"
    "from migrate.clients.companylock import SqliteCompanyLock\n"
    "lock = SqliteCompanyLock(sys.argv[1])\n"
    "with lock.held():\n"
    "    print('held', flush=True)\n"
    "    sys.stdin.read()  # until killed\n"
)


def test_a_killed_holder_of_the_local_lock_lets_the_next_project_in(tmp_path: Path) -> None:
    path = tmp_path / "company-lock.sqlite"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
        waiting = threading.Event()
        taken = threading.Event()
        lock = SqliteCompanyLock(path)

        def take() -> None:
            with lock.held(on_wait=waiting.set):
                taken.set()

        thread = threading.Thread(target=take, daemon=True)
        thread.start()
        # The holder has it: the other process is told it waits, and does not get it.
        assert waiting.wait(GUARD_SECONDS)
        assert not taken.is_set()
        holder.kill()  # no release: the OS drops the dead process's file lock
        holder.wait(60)
        assert taken.wait(GUARD_SECONDS), "the lock of a killed holder was never freed"
        thread.join(GUARD_SECONDS)
        assert lock.waits == 1
        lock.close()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(60)


def test_the_lock_is_reentrant_and_none_without_the_variable(tmp_path: Path) -> None:
    assert isinstance(company_lock_from_env({}), NoLock)
    env = lock_environment(tmp_path / "quota.sqlite")
    assert env == {COMPANY_LOCK_ENV: f"sqlite:{(tmp_path / 'company-lock.sqlite').resolve()}"}
    # The portfolio sets it with the shared quota, in one place.
    assert (
        quota_environment(tmp_path / "quota.sqlite", "p0")[COMPANY_LOCK_ENV]
        == (env[COMPANY_LOCK_ENV])
    )
    with company_lock_from_env(env) as lock:
        assert isinstance(lock, SqliteCompanyLock)
        other = SqliteCompanyLock(lock.path)  # another process's, on a connection of its own
        waiting, taken = threading.Event(), threading.Event()

        def take() -> None:
            with other.held(on_wait=waiting.set):
                taken.set()

        thread = threading.Thread(target=take, daemon=True)
        with lock.held():  # a template's build...
            with lock.held():  # ...and a response set inside it: no wait for itself
                thread.start()
                assert waiting.wait(GUARD_SECONDS)
            assert not taken.is_set()  # the inner hold's end does not let go of it
        assert taken.wait(GUARD_SECONDS)  # the outer one's does
        thread.join(GUARD_SECONDS)
        assert lock.waits == 0 and other.waits == 1
        other.close()
    with pytest.raises(ConfigError, match=COMPANY_LOCK_ENV):
        company_lock_from_env({COMPANY_LOCK_ENV: "lock-it-please"})


# -- two projects of one company loading at once -------------------------------------------------
def project_folder(tmp: Path, url: str, project_id: int, count: int = 4) -> Path:
    """A project's folder (migration.toml, staging DB) with ``count`` planned checklists of
    both templates, planned for Procore project ``project_id``."""
    folder = tmp / f"p{project_id}"
    folder.mkdir()
    config = folder / "migration.toml"
    config.write_text(
        f'[target]\nbase_url = "{url}"\nauth_url = "{url}"\n'
        f"company_id = 4100\nproject_id = {project_id}\nworkers = 2\n\n"
        '[staging]\npath = "staging.db"\nblobs = "blobs"\nlogs = "logs"\n',
        encoding="utf-8",
    )
    settings = load_settings(config)
    open_store(settings.staging.path).close()
    plant_inspections(settings, count, light=True)
    store = open_store(settings.staging.path)
    try:  # the planted transform run names project 5100
        with store.transaction():
            store.conn.execute(
                "UPDATE runs SET args = ? WHERE command = 'transform'",
                (json.dumps({"target_project_id": project_id}),),
            )
    finally:
        store.close()
    return config


def company_ids(settings: Settings) -> dict[str, dict[str, int | None]]:
    """The id map's Procore ids of the company's building blocks, by entity and source id."""
    store = open_store(settings.staging.path, read_only=True)
    try:
        return {
            entity: {
                source: row.target_id
                for source, row in id_map_rows(store, entity, settings.target.project_id).items()
            }
            for entity in COMPANY_ENTITIES
        }
    finally:
        store.close()


def _wait_until(what: str, done: Any, *alive: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + GUARD_SECONDS
    while not done():
        for process in alive:
            if process.poll() is not None:
                raise AssertionError(f"a load ended before {what}: exit {process.returncode}")
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.01)


def race_two_projects(tmp: Path, gate_route: str, lock_env: Mapping[str, str]) -> dict[str, Any]:
    """Project A's ``gate_route`` create is held while A holds the company lock; project B
    starts and must wait for the lock (not reach the gate); then A is let go. Returns what
    Procore and both staging DBs hold."""
    app = RecordingProcoreApp(**GENEROUS)
    server = RunningServer(app)
    try:
        configs = [project_folder(tmp, server.url, project) for project in PROJECTS]
        env = {**os.environ, **PROCORE_ENV, "PYTHONPATH": str(REPO), **lock_env}
        logs = [tmp / f"load-{n}.err" for n in range(2)]
        started = time.monotonic()
        processes: list[subprocess.Popen[bytes]] = []
        try:
            with HeldCalls(app, gate_route, guard=GUARD_SECONDS) as gate:
                for n, config in enumerate(configs):
                    with logs[n].open("wb") as err:
                        processes.append(
                            subprocess.Popen(
                                [sys.executable, "-c", CHILD, str(config)],
                                env=env,
                                stdout=subprocess.PIPE,
                                stderr=err,
                            )
                        )
                    if n == 0:
                        _wait_until("A reached the gate", lambda: gate.held >= 1, *processes)
                        continue

                    def b_waits() -> bool:
                        # Without the lock B would reach the gate too: fail at once if it does.
                        assert gate.held == 1, "project B reached the held create: no lock"
                        return WAITING in logs[1].read_text(encoding="utf-8", errors="replace")

                    _wait_until("B waited for the company lock", b_waits, *processes)
                    assert gate.held == 1
            outputs = [p.communicate(timeout=GUARD_SECONDS)[0] for p in processes]
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait(60)
        errors = [log.read_text(encoding="utf-8", errors="replace") for log in logs]
        assert [p.returncode for p in processes] == [0, 0], errors
        # B waited while A built (A may wait for B later, for its other template: fine).
        assert WAITING in errors[1]
        settings = [load_settings(config) for config in configs]
        with app.lock:
            inspections = app.inspections
            templates = [dict(t) for t in inspections.company_templates.values()]
            sets = [dict(s) for s in inspections.response_sets.values()]
            synced = {int(t["id"]): t["synced_to"] for t in inspections.project_templates.values()}
            # Each project's inspections, by the project template they were made from.
            made_from = {
                project: [
                    int(inspections.lists[i]["template_id"])
                    for i in inspections._project_lists.get(project, [])
                ]
                for project in PROJECTS
            }
        return {
            "seconds": time.monotonic() - started,
            "made": [json.loads(out.decode().strip().splitlines()[-1]) for out in outputs],
            "templates": templates,
            "sets": sets,
            "synced": synced,
            "made_from": made_from,
            "answers": {project: answers(app.inspections_of(project)) for project in PROJECTS},
            "ids": [company_ids(s) for s in settings],
            "calls": app.call_counts(),
        }
    finally:
        server.stop()
        app.close()


def answers(inspections: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each inspection's answers by item name (the same checklists are planted in both)."""
    return {
        str(inspection["identifier"]): {
            item["name"]: (item["response"], item["responded_with"])
            for section in inspection["sections"]
            for item in section["items"]
        }
        for inspection in inspections
    }


def assert_made_once(race: Mapping[str, Any]) -> None:
    """One response set and one company template of each name; both projects' inspections
    come from them; both id maps name the same Procore ids."""
    template_names = Counter(t["name"] for t in race["templates"])
    assert template_names == Counter(t["name"] for t in TEMPLATES.values()), template_names
    set_names = Counter(s["name"] for s in race["sets"])
    assert set_names and max(set_names.values()) == 1, set_names
    assert race["calls"].get("response_sets.create") == 1  # "Acceptable/Rework/N/A"
    # Each template built once and reused once; B reused at least the one A built while B
    # waited (once A is let go, either may build the other template first).
    made = Counter[str]()
    for counts in race["made"]:
        made.update(counts)
    assert made == {"created": 2, "reused": 2} and race["made"][1].get("reused", 0) >= 1
    company = {int(t["id"]) for t in race["templates"]}
    for project in PROJECTS:
        made = race["made_from"][project]
        assert len(made) == 4
        assert {race["synced"][template] for template in made} == company
    # The project that reused the set-up answered its items as the one that built it did.
    built, reused = (race["answers"][project] for project in PROJECTS)
    assert built == reused
    assert any(answer != (None, None) for items in built.values() for answer in items.values())
    first, second = race["ids"]
    assert first == second
    assert set(first[ENTITY_INSPECTION_TEMPLATE].values()) == company
    assert all(None not in ids.values() and ids for ids in first.values())


@pytest.mark.parametrize("gate_route", ["response_sets.create", "company_templates.create"])
def test_two_projects_loading_at_once_make_the_company_set_up_once(
    tmp_path: Path, gate_route: str
) -> None:
    lock = lock_environment(tmp_path / "quota.sqlite")
    race = race_two_projects(tmp_path, gate_route, lock)
    assert_made_once(race)
    print(f"{gate_route}: {race['made']} in {race['seconds']:.1f} s")


def test_a_company_template_that_differs_in_one_item_is_not_reused(tmp_path: Path) -> None:
    app = RecordingProcoreApp(**GENEROUS)
    server = RunningServer(app)
    try:
        first, second = (
            load_settings(project_folder(tmp_path, server.url, project)) for project in PROJECTS
        )
        # The second project's Pre-pour names one item differently; its other template is
        # the same as the first project's.
        store = open_store(second.staging.path)
        try:
            payload = json.loads(
                store.conn.execute(
                    "SELECT payload FROM planned_inspection_templates WHERE source_id = ?",
                    ("tpl-prepour",),
                ).fetchone()[0]
            )
            payload["sections"][0]["items"][2]["name"] = "1.3 Remarks"
            with store.transaction():
                store.conn.execute(
                    "UPDATE planned_inspection_templates SET payload = ?, payload_hash = ? "
                    "WHERE source_id = 'tpl-prepour'",
                    (json.dumps(payload), template_payload_hash(payload)),
                )
        finally:
            store.close()
        lock = lock_environment(tmp_path / "quota.sqlite")
        made = load_from_settings(first, {**PROCORE_ENV, **lock})
        assert made.company_templates == {"created": 2}
        made = load_from_settings(second, {**PROCORE_ENV, **lock})
        assert made.exit_code == 0
        assert made.company_templates == {"created": 1, "reused": 1}
        assert "Company checklist templates: 1 created, 1 reused" in "\n".join(made.summary_lines())
        with app.lock:
            names = Counter(t["name"] for t in app.inspections.company_templates.values())
        assert names == Counter({"Pre-pour": 2, TEMPLATES["tpl-comm"]["name"]: 1})
        ids = [company_ids(settings) for settings in (first, second)]
        templates = [i[ENTITY_INSPECTION_TEMPLATE] for i in ids]
        assert templates[0]["tpl-comm"] == templates[1]["tpl-comm"]
        assert templates[0]["tpl-prepour"] != templates[1]["tpl-prepour"]
        # A second run finds everything in its own id map: no set-up read, no lock needed.
        again = load_from_settings(second, {**PROCORE_ENV, **lock})
        assert again.company_templates == {}
        assert not any("/companies/" in endpoint for endpoint in again.requests)
    finally:
        server.stop()
        app.close()


def test_a_template_whose_create_lost_its_answer_is_finished_not_replaced(tmp_path: Path) -> None:
    """A project's load died while its company template create was in flight (id map:
    'sent'); another project has built the same template meanwhile. The next run finishes
    its own, still empty template, rather than reuse the other and leave an empty one."""
    from migrate.clients.factory import procore_client
    from migrate.store.planned import mark_sent

    app = RecordingProcoreApp(**GENEROUS)
    server = RunningServer(app)
    try:
        first, second = (
            load_settings(project_folder(tmp_path, server.url, project)) for project in PROJECTS
        )
        lock = {**PROCORE_ENV, **lock_environment(tmp_path / "quota.sqlite")}
        assert load_from_settings(first, lock).company_templates == {"created": 2}
        planned = TEMPLATES["tpl-prepour"]
        with procore_client(second, PROCORE_ENV) as client:  # what the dead create made
            orphan = int(
                client.create_company_template(
                    {"name": planned["name"], "description": planned["description"]}
                )["id"]
            )
        store = open_store(second.staging.path)
        try:
            with store.transaction():
                mark_sent(
                    store, ENTITY_INSPECTION_TEMPLATE, PROJECTS[1], "dead", {"tpl-prepour": ""}
                )
        finally:
            store.close()
        made = load_from_settings(second, lock)
        assert made.exit_code == 0
        assert made.company_templates == {"reused": 1}  # Commissioning; Pre-pour was found
        built, finished = (company_ids(s)[ENTITY_INSPECTION_TEMPLATE] for s in (first, second))
        assert finished["tpl-prepour"] == orphan != built["tpl-prepour"]
        assert finished["tpl-comm"] == built["tpl-comm"]
        with app.lock:
            sections = app.inspections.company_templates[orphan]["section_ids"]
        assert len(sections) == len(planned["sections"])
    finally:
        server.stop()
        app.close()
