"""The staging DB's views (created by schema migration 4) and small readers over them.

The views answer the questions people ask of a migration in one SELECT each, so the staging DB
is useful as it is in Datasette (``pip install migrate[inspect]; datasette staging.db``) or the
``sqlite3`` shell:

``v_issue_journey``
    One row per Field issue (and per checklist item turned into an issue): ``source_id``,
    ``source_kind``, ``identifier``, ``title``, ``field_status``, ``procore_status_planned``,
    ``procore_status_loaded``, ``uuid``, ``procore_project_id``, ``procore_id``, ``state``
    (extracted, planned, skipped, quarantined, sent, loaded, rejected,
    loaded_then_deleted_at_source), ``reason``, ``hint``, ``state_changed_at``.
``v_quarantine_by_reason``
    Open quarantine grouped by ``entity``, ``stage`` and ``reason``: ``hint``, ``records``,
    first and last time seen, and a few ``example_source_ids``.
``v_inspection_journey``
    One row per Field checklist (and per planned inspection): ``source_id``, ``identifier``,
    ``name``, ``checklist_type``, ``field_status``, ``template_name``, ``procore_template``,
    ``procore_inspection_type``, ``procore_status_planned``, ``procore_project_id``,
    ``procore_id``, ``state`` (extracted, planned, skipped, quarantined, sent, unfinished,
    loaded, rejected, loaded_then_deleted_at_source), ``skipped_reason``, ``quarantine_stage``,
    ``quarantine_reason``, ``hint``, ``state_changed_at``. ``unfinished``: created in Procore,
    answers, comments, files or status still to do (a stopped load).
``v_attachments_pending``
    Files that are not (yet) on their Procore issue and why (``waiting_for``): download pending
    or failed, upload pending or failed, issue rejected, or planned after the issue was created
    (Procore cannot add files to an existing coordination issue: someone must decide).

The SQL lives in ``migrate/store/migrations.py`` (migration 4; ``v_inspection_journey``:
migration 10) so the schema has one history.
"""

from __future__ import annotations

from typing import Any

from migrate.store.db import Store

VIEWS: dict[str, str] = {
    "v_issue_journey": "Field id -> identifier -> title -> Procore id -> state, per issue",
    "v_quarantine_by_reason": "open quarantine grouped by entity, stage and reason",
    "v_attachments_pending": "files not (yet) attached in Procore, and what they wait for",
    "v_inspection_journey": "Field checklist -> planned inspection -> Procore id -> state",
}

#: Issue states in v_issue_journey, in pipeline order.
JOURNEY_STATES = (
    "extracted",
    "planned",
    "skipped",
    "quarantined",
    "sent",
    "loaded",
    "rejected",
    "loaded_then_deleted_at_source",
)


def rows(store: Store, view: str, where: str = "", params: tuple[Any, ...] = ()) -> list[dict]:
    """Rows of one of the views as dicts (``where`` is an optional SQL condition)."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; the views are {', '.join(VIEWS)}")
    sql = f"SELECT * FROM {view}" + (f" WHERE {where}" if where else "")
    cursor = store.conn.execute(sql, params)
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def journey_state_counts(store: Store) -> dict[str, int]:
    """How many issues are in each v_issue_journey state (every state present, maybe 0)."""
    return _state_counts(store, "v_issue_journey", JOURNEY_STATES)


def _state_counts(store: Store, view: str, states: tuple[str, ...]) -> dict[str, int]:
    counts = dict.fromkeys(states, 0)
    for state, number in store.conn.execute(f"SELECT state, COUNT(*) FROM {view} GROUP BY state"):
        counts[state] = int(number)
    return counts


def attachments_waiting(store: Store) -> dict[str, int]:
    """v_attachments_pending counted by ``waiting_for``."""
    return {
        str(reason): int(number)
        for reason, number in store.conn.execute(
            "SELECT waiting_for, COUNT(*) FROM v_attachments_pending GROUP BY waiting_for"
        )
    }


#: Checklist states in v_inspection_journey, in pipeline order.
INSPECTION_STATES = (
    "extracted",
    "planned",
    "skipped",
    "quarantined",
    "sent",
    "unfinished",
    "loaded",
    "rejected",
    "loaded_then_deleted_at_source",
)


def inspection_state_counts(store: Store) -> dict[str, int]:
    """How many checklists are in each v_inspection_journey state (every state, maybe 0)."""
    return _state_counts(store, "v_inspection_journey", INSPECTION_STATES)
