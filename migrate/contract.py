"""What the real services were seen to do: the contract a preflight writes and the rest follows.

``contract.json`` holds observed behaviour only: how Procore treats a reused uuid, which
statuses a create and a single update take, how its rate-limit windows count, which tools
answered. It holds no secret, no URL, no id, no name and no count of the project (see
:data:`CONTRACT_KEYS`, checked on write and read), so it can be attached to a ticket or
committed next to the runbook.

The same contract is kept in the staging DB (the ``preflight`` run's result), where load reads
:class:`LoadReadings` from it; ``migrate sandbox serve --contract`` turns it into simulator
switches (:func:`sandbox_options`) so a rehearsal meets what the real service does.

Where nothing was observed, the documented reading applies (:data:`DOCUMENTED`), except for the
one unknown that can duplicate data: until a probe showed that Procore refuses a reused uuid,
load looks a lost create up before sending it again (``uuid_reuse`` None).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migrate.errors import ConfigError
from migrate.store.db import Store, utc_now

FORMAT = "migrate-contract/1"
#: What `migrate preflight` records a contract under in the staging DB (runs table).
PREFLIGHT_COMMAND = "preflight"

UUID_REUSE_READINGS = ("refused", "accepted", "ignored")
RATE_WINDOW_READINGS = ("fixed", "sliding")
TOOL_STATES = ("ok", "forbidden", "not_found", "error", "not_checked")
#: The statuses Procore's coordination issues know (seed 000).
STATUSES = ("blocked", "open", "ready_for_review", "moved_to_observation", "unblocked", "closed")

#: The readings the documents give (seeds 000/001, procore-notes); None: the docs do not say.
DOCUMENTED: dict[str, Any] = {
    "procore": {
        "uuid_reuse": None,
        "create_statuses": ["open", "closed"],
        "update_statuses": ["open", "ready_for_review", "closed"],
        "requires_json_content_type": True,
        "rate_limit_headers": True,
        "rate_windows": None,
        "tools": {},
    },
    "field": {"listing_matches_search": True, "tools": {}},
}

#: Every key a contract may hold, by section: nothing else is written or read.
CONTRACT_KEYS: dict[str, frozenset[str]] = {
    "": frozenset({"format", "observed_at", "probe_writes", "procore", "field"}),
    "procore": frozenset(DOCUMENTED["procore"]),
    "field": frozenset(DOCUMENTED["field"]),
}


def documented() -> dict[str, Any]:
    """A fresh contract holding the documented readings (nothing observed yet)."""
    return {
        "format": FORMAT,
        "observed_at": None,
        "probe_writes": False,
        "procore": json.loads(json.dumps(DOCUMENTED["procore"])),
        "field": json.loads(json.dumps(DOCUMENTED["field"])),
    }


def check_contract(contract: Mapping[str, Any], where: str = "contract") -> dict[str, Any]:
    """``contract`` if it has the known shape and values; ConfigError naming what is wrong."""
    if not isinstance(contract, Mapping) or contract.get("format") != FORMAT:
        raise ConfigError(f"{where} is not a {FORMAT} file (run `migrate preflight` to make one)")
    for section, keys in CONTRACT_KEYS.items():
        part = contract if not section else contract.get(section)
        if not isinstance(part, Mapping):
            raise ConfigError(f"{where}: section {section!r} is missing or not an object")
        unknown = sorted(set(part) - keys)
        if unknown:
            raise ConfigError(
                f"{where}: unknown key {section + '.' if section else ''}{unknown[0]}"
            )
    procore = contract["procore"]
    if procore.get("uuid_reuse") not in (None, *UUID_REUSE_READINGS):
        raise ConfigError(f"{where}: procore.uuid_reuse must be one of {UUID_REUSE_READINGS}")
    if procore.get("rate_windows") not in (None, *RATE_WINDOW_READINGS):
        raise ConfigError(f"{where}: procore.rate_windows must be one of {RATE_WINDOW_READINGS}")
    for key in ("create_statuses", "update_statuses"):
        value = procore.get(key)
        if value is not None and (
            not isinstance(value, list) or any(status not in STATUSES for status in value)
        ):
            raise ConfigError(f"{where}: procore.{key} must be a list of {', '.join(STATUSES)}")
    for section in ("procore", "field"):
        tools = contract[section].get("tools") or {}
        if not isinstance(tools, Mapping) or any(v not in TOOL_STATES for v in tools.values()):
            raise ConfigError(f"{where}: {section}.tools values must be one of {TOOL_STATES}")
    return dict(contract)


def read_contract(path: str | Path) -> dict[str, Any]:
    """The contract in ``path`` (ConfigError when missing or malformed)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the contract {path}: {exc.strerror or exc}") from None
    try:
        contract = json.loads(text)
    except ValueError:
        raise ConfigError(f"{path} is not JSON; run `migrate preflight` to write it") from None
    return check_contract(contract, str(path))


def write_contract(path: str | Path, contract: Mapping[str, Any]) -> None:
    """Write ``contract`` (checked first: only the known keys) as indented JSON."""
    checked = check_contract(contract)
    Path(path).write_text(json.dumps(checked, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def stamped(contract: Mapping[str, Any]) -> dict[str, Any]:
    """``contract`` with ``observed_at`` set to now."""
    return {**contract, "observed_at": utc_now()}


def differences(observed: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """One line per reading that differs (``section.key: expected … observed …``).

    Readings the observation left unknown (None, or a tool not checked) are not differences.
    """
    lines: list[str] = []
    for section in ("procore", "field"):
        seen, wanted = observed.get(section) or {}, expected.get(section) or {}
        for key in sorted(CONTRACT_KEYS[section] - {"tools"}):
            got, want = seen.get(key), wanted.get(key)
            if got is None or got == want:
                continue
            lines.append(f"{section}.{key}: expected {_shown(want)}, observed {_shown(got)}")
        got_tools, want_tools = seen.get("tools") or {}, wanted.get("tools") or {}
        for tool in sorted(got_tools):
            got, want = got_tools[tool], want_tools.get(tool, "ok")
            if got != "not_checked" and got != want:
                lines.append(f"{section}.tools.{tool}: expected {want}, observed {got}")
    return lines


def _shown(value: Any) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def sandbox_options(contract: Mapping[str, Any]) -> dict[str, Any]:
    """ProcoreApp keyword arguments that make the simulator behave as ``contract`` observed.

    Readings the contract leaves unknown keep the simulator's strict defaults.
    """
    procore = check_contract(contract)["procore"]
    options: dict[str, Any] = {}
    if procore.get("uuid_reuse"):
        options["uuid_reuse"] = procore["uuid_reuse"]
    for key in ("create_statuses", "update_statuses"):
        if procore.get(key) is not None:
            options[key] = tuple(procore[key])
    if procore.get("rate_windows"):
        options["rate_windows"] = procore["rate_windows"]
    if procore.get("requires_json_content_type") is False:
        options["require_json_content_type"] = False
    if procore.get("rate_limit_headers") is False:
        options["rate_limit_headers"] = False
    refused = _refused_tools(procore)
    if refused:
        options["refused_tools"] = refused
    return options


def field_sandbox_options(contract: Mapping[str, Any]) -> dict[str, Any]:
    """FieldApp keyword arguments that make the simulator behave as ``contract`` observed."""
    field = check_contract(contract)["field"]
    options: dict[str, Any] = {}
    if field.get("listing_matches_search") is False:
        options["listing_default"] = "filter_always"
    refused = _refused_tools(field)
    if refused:
        options["refused_tools"] = refused
    return options


#: The HTTP status a simulator answers for a tool a preflight saw in each state ("error": any
#: other refusal; one that is not retried, as a 5xx would be until the service is given up).
_TOOL_STATUS = {"forbidden": 403, "not_found": 404, "error": 400}


def _refused_tools(section: Mapping[str, Any]) -> dict[str, int]:
    tools = section.get("tools") or {}
    return {tool: _TOOL_STATUS[state] for tool, state in tools.items() if state in _TOOL_STATUS}


# -- what load follows ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadReadings:
    """The readings load acts on, from the last preflight recorded in the staging DB."""

    #: None until a probe saw Procore answer a reused uuid.
    uuid_reuse: str | None = None
    create_statuses: tuple[str, ...] = tuple(DOCUMENTED["procore"]["create_statuses"])
    #: None: not probed; load tries the PATCH and quarantines a refusal with Procore's reason.
    update_statuses: tuple[str, ...] | None = None

    @property
    def reuse_refused(self) -> bool:
        """Whether re-sending a create with its uuid is safe (Procore refuses the repeat)."""
        return self.uuid_reuse == "refused"

    def create_status(self, planned: str | None) -> str | None:
        """The status to create an issue with: the planned one when create takes it, else
        closed for closed and open for the rest (moved to the planned one afterwards)."""
        if planned is None or planned in self.create_statuses:
            return planned
        return "open" if "open" in self.create_statuses else self.create_statuses[0]


def recorded_contract(store: Store) -> dict[str, Any] | None:
    """The contract of the last preflight recorded in ``store``, or None."""
    from migrate.store.runs import last_run

    run = last_run(store, PREFLIGHT_COMMAND, status="succeeded")
    contract = (run.counts or {}).get("contract") if run is not None else None
    return contract if isinstance(contract, dict) else None


def load_readings(store: Store) -> LoadReadings:
    """What load follows: observed readings from the staging DB, else the documented ones."""
    contract = recorded_contract(store)
    if contract is None:
        return LoadReadings()
    procore = contract.get("procore") or {}
    create = procore.get("create_statuses") or DOCUMENTED["procore"]["create_statuses"]
    probed = bool(contract.get("probe_writes"))
    return LoadReadings(
        uuid_reuse=procore.get("uuid_reuse"),
        create_statuses=tuple(create),
        update_statuses=tuple(procore["update_statuses"])
        if probed and procore.get("update_statuses") is not None
        else None,
    )


def record_contract(store: Store, contract: Mapping[str, Any], args: Mapping[str, Any]) -> int:
    """Keep ``contract`` in the staging DB as the result of a ``preflight`` run; its id."""
    from migrate.store.runs import RunFigures, recorded_run

    checked = check_contract(contract)
    with recorded_run(store, PREFLIGHT_COMMAND, args) as run:
        run.succeed(RunFigures(counts={"contract": checked}))
    return run.id
