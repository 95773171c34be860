"""`migrate preflight`: first contact with the real services, in minutes, before anything moves.

Read-only by default. BIM 360 Field: login and logout, the project visible, each family's count
(issues, voided issues, checklists, areas, custom fields), the listing's total against the
search's, and the field definitions, with a suggested ``fields.csv``. Procore: the token, the
company and the project, each tool the migration writes to (coordination issues, locations,
inspections, trades, assignees) answering or refused, the existing locations, and the
rate-limit headers (limit, remaining, reset), with a reading of whether the windows are fixed
or sliding when the window reported resets soon enough to watch.

``probe_writes`` (for a Procore test project only) also writes: one issue sent twice with the
same uuid through sync (refused, accepted or ignored?), a create with each status, each status
change through a single update, an upload; then it deletes the issues it made.

Everything observed becomes a contract (:mod:`migrate.contract`): written to ``contract.json``
(behaviour only: no secret, id, name or count) and kept in the staging DB, where load follows
it. The result is a go / no-go table; exit 2 when a check fails for configuration, credentials
or access, 1 when a service failed, else 0.
"""

from __future__ import annotations

import csv
import io
import os
import time
import uuid as uuidlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migrate.contract import (
    FORMAT,
    STATUSES,
    differences,
    documented,
    record_contract,
    recorded_contract,
    stamped,
    write_contract,
)
from migrate.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    ApiError,
    ConfigError,
    CredentialError,
    MigrateError,
)
from migrate.settings import Settings

if TYPE_CHECKING:
    from migrate.clients.bim360field import FieldSession
    from migrate.clients.procore import ProbeAnswer, ProcoreClient

GO = "go"
NO_GO = "no-go"
NOTE = "note"
#: Why a no-go: fix the input (exit 2), or the service failed (exit 1).
ACCESS = "access"
SERVICE = "service"

#: How long preflight may wait for the reported rate window to reset, to tell fixed from
#: sliding windows; a window further away is left unknown.
RATE_WINDOW_WAIT = 15.0
PROBE_TITLE = "migrate preflight probe (safe to delete)"


@dataclass(frozen=True)
class Check:
    """One row of the go / no-go table."""

    service: str
    name: str
    verdict: str
    detail: str
    #: For a no-go: ACCESS (configuration, credentials, permissions) or SERVICE (it failed).
    cause: str = ACCESS


@dataclass
class PreflightResult:
    """The table, the contract observed, its differences from what was expected."""

    checks: list[Check] = field(default_factory=list)
    contract: dict[str, Any] = field(default_factory=documented)
    differences: list[str] = field(default_factory=list)
    expected_from: str = "the documents"
    suggested_fields: str | None = None
    contract_path: str | None = None
    fields_path: str | None = None

    @property
    def go(self) -> bool:
        return all(check.verdict != NO_GO for check in self.checks)

    @property
    def exit_code(self) -> int:
        causes = {check.cause for check in self.checks if check.verdict == NO_GO}
        if ACCESS in causes:
            return EXIT_USAGE
        return EXIT_FAILED if causes else EXIT_OK

    def add(self, service: str, name: str, verdict: str, detail: str, cause: str = ACCESS) -> None:
        self.checks.append(Check(service, name, verdict, detail, cause))

    def lines(self) -> list[str]:
        """The go / no-go table, the differences, where the files went, the verdict."""
        from migrate.termtable import Column, render

        out = render(
            [Column("check"), Column("result"), Column("detail", wrap=True)],
            ((f"{c.service}: {c.name}", c.verdict, c.detail) for c in self.checks),
        )
        if self.differences:
            out.append(f"Differences from {self.expected_from}:")
            out.extend(f"  {line}" for line in self.differences)
        else:
            out.append(f"No difference from {self.expected_from}.")
        if self.contract_path:
            out.append(f"Contract written to {self.contract_path}")
        if self.fields_path:
            out.append(f"Suggested field mapping written to {self.fields_path}")
        out.append(
            "GO: nothing seen stops the migration."
            if self.go
            else "NO-GO: fix the rows marked no-go, then run `migrate preflight` again."
        )
        return out

    # RunSummary, for the run row: the contract only (behaviour, no project data).
    def as_json(self) -> Mapping[str, Any] | None:
        return {"contract": self.contract}

    def requests_json(self) -> Mapping[str, int] | None:
        return None


# -- BIM 360 Field ---------------------------------------------------------------------------------


def check_field(session: FieldSession, settings: Settings, result: PreflightResult) -> int | None:
    """Login, project, counts, listing against search, field definitions (read-only).

    Returns how many checklists the project has (None: not known), so Procore's Inspections
    tool is required only where there is something to put in it.
    """
    from migrate.extract.issues import SEARCH_PATH
    from migrate.extract.stage import find_project
    from migrate.extract.state import ExtractOptions

    service = "BIM 360 Field"
    tools: dict[str, str] = result.contract["field"]["tools"]
    session.login()
    result.add(service, "login", GO, "the credentials were accepted")
    kind, value = settings.source_project()
    if kind == "project_name":
        project_id = find_project(
            session, ExtractOptions(project_name=value, config=settings.where)
        )
    else:
        answer = session.json("POST", "/fieldapi/admin/v1/project_names")
        visible = (
            {row.get("id") for row in answer if isinstance(row, dict)}
            if isinstance(answer, list)
            else set()
        )
        if value not in visible:
            result.add(
                service,
                "project",
                NO_GO,
                f"project {value} is not visible to this login; check [source] project_id "
                "and the user's project membership",
            )
            return None
        project_id = value
    session.project_id = project_id
    result.add(service, "project", GO, "visible to this login")

    def count(name: str, call: Callable[[], Any], tool: str | None = None) -> int | None:
        try:
            answer = call()
        except ApiError as exc:
            if tool:
                tools[tool] = "forbidden" if exc.status in (401, 403) else "error"
            result.add(service, name, NO_GO, f"refused: HTTP {exc.status}")
            return None
        if tool:
            tools[tool] = "ok"
        if isinstance(answer, int):
            return answer
        if isinstance(answer, dict) and isinstance(answer.get("count"), int | str):
            return int(answer["count"])
        return len(answer) if isinstance(answer, list) else None

    listed = count(
        "issues listed",
        lambda: session.project_call(
            "POST", "/api/get_issues", count_only="true", default_to_all_issues="true"
        ),
        "issues",
    )
    voided = count("voided issues", lambda: session.project_call("POST", "/api/get_voided_issues"))
    searched = count(
        "issues searched", lambda: session.project_call("POST", SEARCH_PATH, count="1")
    )
    if listed is not None and searched is not None:
        whole = listed + (voided or 0) == searched
        result.contract["field"]["listing_matches_search"] = whole
        result.add(
            service,
            "issues",
            GO if whole else NO_GO,
            f"{listed} listed + {voided or 0} voided = {searched} searched"
            if whole
            else f"{listed} listed + {voided or 0} voided, but the search counts {searched}: "
            "the login's default filter may hide issues (see runbook 01)",
        )
    checklists = count(
        "checklists", lambda: _count_pages(session, "GET", "/fieldapi/checklists/v1"), "checklists"
    )
    areas = count("areas", lambda: session.project_call("POST", "/api/areas"), "locations")
    custom = count(
        "custom fields", lambda: session.project_call("POST", "/api/custom_fields"), "custom_fields"
    )
    for name, value_ in (("checklists", checklists), ("areas", areas), ("custom fields", custom)):
        if value_ is not None:
            result.add(service, name, GO, f"{value_}")
    try:
        definitions = session.project_call("POST", "/fieldapi/issues/v1/fields")
    except ApiError as exc:
        tools["issue_fields"] = "forbidden" if exc.status in (401, 403) else "error"
        result.add(service, "field definitions", NO_GO, f"refused: HTTP {exc.status}")
        return checklists
    tools["issue_fields"] = "ok"
    result.suggested_fields, summary = suggest_fields(definitions)
    result.add(service, "field definitions", GO, summary)
    return checklists


def _count_pages(session: FieldSession, method: str, path: str) -> int:
    from migrate.extract.listing import fetch_page

    total, offset = 0, 0
    while True:
        rows = fetch_page(session, method, path, {"project_id": session.project_id}, offset)
        total += len(rows)
        offset += len(rows)
        if len(rows) < session.page_size:
            return total


#: Where a standard Field field goes (mappings/fields.csv targets).
_STANDARD_TARGETS = {
    "f--description": "description",
    "f--due_date": "due_date",
    "f--assigned_to": "assignee",
}


def suggest_fields(definitions: Any) -> tuple[str, str]:
    """A fields.csv to start from, and a one-line summary of what the definitions hold.

    The assignee and the due date are found by id, or else by name and display type; custom
    fields are listed by display type, going to the description footer unless named trade.
    """
    fields: list[Mapping[str, Any]] = []
    if isinstance(definitions, Mapping):
        for part in definitions.values():
            if isinstance(part, Mapping) and isinstance(part.get("fields"), list):
                fields.extend(f for f in part["fields"] if isinstance(f, Mapping))
    targets: dict[str, str] = {}
    for item in fields:
        field_id, name = str(item.get("id") or ""), str(item.get("name") or "").lower()
        shown = str(item.get("display_type") or "")
        if field_id in _STANDARD_TARGETS:
            targets.setdefault(_STANDARD_TARGETS[field_id], field_id)
        elif "assign" in name and "assignee" not in targets:
            targets["assignee"] = field_id
        elif shown == "date" and "due" in name and "due_date" not in targets:
            targets["due_date"] = field_id
    custom: dict[str, list[tuple[str, str]]] = {}
    for item in fields:
        field_id = str(item.get("id") or "")
        if field_id.startswith("cf--"):
            shown = str(item.get("display_type") or "unknown")
            custom.setdefault(shown, []).append((field_id, str(item.get("name") or "")))
    out = io.StringIO()
    out.write(
        "# Suggested by `migrate preflight` from BIM 360 Field's field definitions: review it,\n"
        "# then copy the rows you agree with into mappings/fields.csv.\n"
    )
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["field", "target"])
    writer.writerow(["{identifier} {description}", "title_template"])
    for target in ("description", "due_date", "assignee"):
        if target in targets:
            writer.writerow([targets[target], target])
    for shown in sorted(custom):
        out.write(f"# custom fields shown as {shown}\n")
        for field_id, name in sorted(set(custom[shown])):
            out.write(f"# {' '.join(name.split())}\n")
            writer.writerow([field_id, "trade" if "trade" in name.lower() else "footer"])
    summary = (
        f"{len(fields)} fields; assignee {targets.get('assignee', 'not found')}, due date "
        f"{targets.get('due_date', 'not found')}; custom fields by display type: "
        + (", ".join(f"{k} {len(set(v))}" for k, v in sorted(custom.items())) or "none")
    )
    return out.getvalue(), summary


# -- Procore -------------------------------------------------------------------------------------


def check_procore(
    client: ProcoreClient,
    company_id: int,
    project_id: int,
    result: PreflightResult,
    *,
    needs_inspections: bool,
    probe_writes: bool,
    rate_window_wait: float,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Token, company, project, tools, rate-limit headers; with ``probe_writes`` the writes."""
    from migrate.clients.procore import ASSIGNEES_PATH, COMPANIES_PATH, ISSUES_PATH, PROJECTS_PATH

    service = "Procore"
    procore = result.contract["procore"]
    tools: dict[str, str] = procore["tools"]
    first = client.probe(COMPANIES_PATH, company=False)
    if first.status != 200:
        result.add(service, "token", NO_GO, f"the company list answered HTTP {first.status}")
        return
    result.add(service, "token", GO, "granted")
    if company_id not in {c.get("id") for c in client.companies()}:
        result.add(service, "company", NO_GO, "[target] company_id is not visible to this app")
        return
    result.add(service, "company", GO, "visible")
    project = client.probe(f"{PROJECTS_PATH}/{project_id}/locations")
    if project.status in (403, 404):
        result.add(
            service,
            "project",
            NO_GO,
            f"HTTP {project.status}: [target] project_id is not visible to this app, or the app "
            "is not in the project's directory",
        )
        return
    result.add(service, "project", GO, "visible")
    answers: list[ProbeAnswer] = [first, project]

    def tool(name: str, path: str, params: Mapping[str, Any], needed: bool, **kw: Any) -> None:
        answer = client.probe(path, params, **kw)
        answers.append(answer)
        state = _tool_state(answer.status)
        tools[name] = state
        if state == "ok":
            shown = f"answers ({answer.total} rows)" if answer.total is not None else "answers"
            result.add(service, name, GO, shown)
        else:
            result.add(
                service,
                name,
                NO_GO if needed else NOTE,
                f"HTTP {answer.status} ({state})"
                + ("" if needed else ": not needed for this project"),
            )

    tool("coordination_issues", ISSUES_PATH, {"project_id": project_id, "view": "compact"}, True)
    tool("assignees", ASSIGNEES_PATH, {"project_id": project_id}, True)
    tool("locations", f"{PROJECTS_PATH}/{project_id}/locations", {}, True)
    tool(
        "inspections",
        f"{PROJECTS_PATH}/{project_id}/checklist/lists",
        {},
        needs_inspections,
    )
    tool("trades", f"/rest/v1.0/companies/{company_id}/trades", {}, False, company=company_id)
    tools.pop("assignees", None)  # a list, not a tool of its own: its row is in the table
    if probe_writes:
        _probe_writes(client, project_id, result)
    else:
        tools["uploads"] = "not_checked"
        result.add(service, "uploads", NOTE, "not checked (a write: --probe-writes)")
    _read_rate_limits(client, answers, result, rate_window_wait, sleep)


def _tool_state(status: int) -> str:
    if 200 <= status < 300:
        return "ok"
    return {401: "forbidden", 403: "forbidden", 404: "not_found"}.get(status, "error")


def _read_rate_limits(
    client: ProcoreClient,
    answers: list[ProbeAnswer],
    result: PreflightResult,
    wait_limit: float,
    sleep: Callable[[float], None],
) -> None:
    """Limit, remaining and reset as seen; fixed or sliding when the window resets soon."""
    procore = result.contract["procore"]
    with_headers = [a for a in answers if a.rate_limit is not None and a.rate_reset is not None]
    procore["rate_limit_headers"] = bool(with_headers)
    if not with_headers:
        result.add("Procore", "rate limits", NOTE, "no X-Rate-Limit headers seen")
        return
    last = with_headers[-1]
    detail = f"limit {last.rate_limit}, remaining {last.rate_remaining}, reset in " + (
        f"{max(0, (last.rate_reset or 0) - int(time.time()))} s"
    )
    reading = _window_reading(client, wait_limit, sleep)
    procore["rate_windows"] = reading
    result.add(
        "Procore",
        "rate limits",
        GO,
        detail + (f"; windows {reading}" if reading else "; windows not read (reset too far)"),
    )


def _window_reading(
    client: ProcoreClient, wait_limit: float, sleep: Callable[[float], None]
) -> str | None:
    """``fixed`` or ``sliding``, or None when the reported window resets too late to watch.

    One request just before the reported reset, one just after it: a fixed window has started
    afresh and counts only the last (remaining = limit - 1); a sliding window still counts the
    one made just before.
    """
    from migrate.clients.procore import COMPANIES_PATH

    for _ in range(2):
        start = client.probe(COMPANIES_PATH, company=False)
        if start.rate_reset is None or start.rate_limit is None:
            return None
        left = start.rate_reset - time.time()
        if left > wait_limit:
            return None
        if left < 0.5:  # too close to place a request before it: watch the next one
            sleep(max(0.0, left + 0.1))
            continue
        sleep(left - 0.3)
        client.probe(COMPANIES_PATH, company=False)
        sleep(max(0.0, start.rate_reset + 0.5 - time.time()))
        after = client.probe(COMPANIES_PATH, company=False)
        if after.rate_limit != start.rate_limit or after.rate_remaining is None:
            return None
        return "fixed" if after.rate_remaining >= start.rate_limit - 1 else "sliding"
    return None


def _probe_writes(client: ProcoreClient, project_id: int, result: PreflightResult) -> None:
    """Writes on a test project, then deletes what they made; the readings into the contract."""
    service = "Procore probe"
    procore = result.contract["procore"]
    result.contract["probe_writes"] = True
    made: list[int] = []

    def create(status: str | None, item_uuid: str | None = None) -> tuple[Any, Any]:
        item: dict[str, Any] = {"title": PROBE_TITLE, "uuid": item_uuid or str(uuidlib.uuid4())}
        if status is not None:
            item["status"] = status
        reply = client.sync_issues(project_id, [item], resend=False)
        entity = reply.entities[0] if reply.entities else None
        if isinstance(entity, Mapping) and entity.get("id") is not None:
            made.append(int(entity["id"]))
        return entity, reply.errors[0] if reply.errors else None

    try:
        reused = str(uuidlib.uuid4())
        entity, refusal = create(None, reused)
        if entity is None:
            result.add(service, "create", NO_GO, f"sync refused a plain create: {refusal}")
            return
        kept = str(entity.get("uuid") or "").lower() == reused
        again, refusal = create(None, reused)
        if refusal is not None and "uuid" in (refusal.get("errors") or {}):
            procore["uuid_reuse"] = "refused"
        elif again is not None and again.get("id") != entity.get("id"):
            procore["uuid_reuse"] = "accepted"
        else:
            procore["uuid_reuse"] = "ignored"
        result.add(
            service,
            "uuid reuse",
            GO if kept else NO_GO,
            f"a repeated uuid is {procore['uuid_reuse']}"
            + ("" if kept else "; and Procore did not keep the uuid sent at create"),
        )
        created_with = [s for s in STATUSES if create(s)[0] is not None]
        procore["create_statuses"] = created_with
        result.add(service, "statuses at create", GO, ", ".join(created_with))
        moved: list[str] = []
        for status in STATUSES:
            try:
                answer = client.update_issue(project_id, int(entity["id"]), {"status": status})
            except ApiError as exc:
                if exc.status is None or exc.status >= 500:
                    raise
                continue
            if answer.get("status") == status:
                moved.append(status)
            if status != "open":
                try:
                    client.update_issue(project_id, int(entity["id"]), {"status": "open"})
                except ApiError:
                    break  # cannot go back: the statuses after this one stay untried
        procore["update_statuses"] = moved
        result.add(service, "statuses by update", GO, ", ".join(moved) or "none")
        refused_text = client.sync_status_as_text(project_id) in (400, 415)
        procore["requires_json_content_type"] = refused_text
        result.add(
            service,
            "content type",
            GO,
            "a body not sent as application/json is " + ("refused" if refused_text else "accepted"),
        )
        upload = client.create_upload(project_id, "preflight-probe.txt", "text/plain")
        procore["tools"]["uploads"] = "ok" if upload.uuid else "error"
        result.add(service, "uploads", GO, "an upload can be created (never referenced)")
    finally:
        left = [i for i in made if client.delete_issue(project_id, i) not in (200, 204)]
        result.add(
            service,
            "clean-up",
            GO if not left else NOTE,
            f"deleted the {len(made)} probe issues"
            if not left
            else f"could not delete {len(left)} probe issues titled {PROBE_TITLE!r}: delete them "
            "by hand",
        )


# -- from settings (what the CLI calls) ---------------------------------------------------------


def preflight_from_settings(
    settings: Settings,
    env: Mapping[str, str] = os.environ,
    *,
    probe_writes: bool = False,
    contract_path: str | Path | None = "contract.json",
    fields_path: str | Path | None = "fields.suggested.csv",
    expected: Mapping[str, Any] | None = None,
    expected_from: str = "the documents",
    rate_window_wait: float = RATE_WINDOW_WAIT,
) -> PreflightResult:
    """`migrate preflight`: check both services, write the contract, record it for load."""
    from migrate.clients.factory import field_session, procore_client
    from migrate.store.db import open_store

    result = PreflightResult(expected_from=expected_from)
    result.contract["format"] = FORMAT
    for key in ("uuid_reuse", "create_statuses", "update_statuses", "requires_json_content_type"):
        result.contract["procore"][key] = None  # known only from what is observed
    result.contract["procore"]["rate_limit_headers"] = None
    result.contract["field"]["listing_matches_search"] = None

    checklists: int | None = None
    try:
        with field_session(settings, env) as session:
            checklists = check_field(session, settings, result)
        result.add("BIM 360 Field", "logout", GO, "ticket given back")
    except (ConfigError, CredentialError) as exc:
        result.add("BIM 360 Field", "login", NO_GO, str(exc))
    except MigrateError as exc:
        result.add("BIM 360 Field", "service", NO_GO, str(exc), SERVICE)
    try:
        company_id, project_id = settings.target_ids()
        with procore_client(settings, env) as client:
            check_procore(
                client,
                company_id,
                project_id,
                result,
                needs_inspections=checklists != 0,
                probe_writes=probe_writes,
                rate_window_wait=rate_window_wait,
            )
    except (ConfigError, CredentialError) as exc:
        result.add("Procore", "token", NO_GO, str(exc))
    except MigrateError as exc:
        result.add("Procore", "service", NO_GO, str(exc), SERVICE)

    result.contract = stamped(result.contract)
    try:
        with open_store(settings.staging.path) as store:
            if not probe_writes:
                keep_probed(result, recorded_contract(store))
            record_contract(store, result.contract, {"probe_writes": probe_writes})
    except MigrateError as exc:
        result.add("staging DB", "contract", NOTE, f"not recorded: {exc}")
    result.differences = differences(result.contract, expected or documented())
    if contract_path is not None:
        write_contract(contract_path, result.contract)
        result.contract_path = str(contract_path)
    if fields_path is not None and result.suggested_fields is not None:
        Path(fields_path).write_text(result.suggested_fields, encoding="utf-8")
        result.fields_path = str(fields_path)
    return result


#: What only a write probe sees: a read-only preflight keeps the last probe's readings.
PROBED = ("uuid_reuse", "create_statuses", "update_statuses")


def keep_probed(result: PreflightResult, previous: Mapping[str, Any] | None) -> None:
    """Carry the readings of an earlier ``--probe-writes`` (on a test project of the same
    company, from this folder) into a read-only preflight's contract, so load still follows
    them after ``project_id`` points back at the real project."""
    if not previous or not previous.get("probe_writes"):
        return
    earlier = previous.get("procore") or {}
    procore = result.contract["procore"]
    for key in PROBED:
        if procore.get(key) is None and earlier.get(key) is not None:
            procore[key] = earlier[key]
    result.contract["probe_writes"] = True
    result.add(
        "Procore probe",
        "readings",
        NOTE,
        f"kept from the probe of {previous.get('observed_at')}: uuid reuse "
        f"{procore.get('uuid_reuse')}, statuses at create "
        + ", ".join(procore.get("create_statuses") or []),
    )
