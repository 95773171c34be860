"""The stored field ledger (table ``field_ledger``, migration 13): rows, reading and writing.

Which destination each source field has is decided in ``migrate.transform.ledger`` (the
catalogue); this module only keeps what transform found, so that `migrate plan`, `status` and
the report read it without importing the transform.
"""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple

from migrate.store.db import Store

#: Kinds of destination, in the order the report shows them.
KINDS = ("target", "footer", "file", "link", "left_out", "none")
NO_DESTINATION = "none"
#: The report's CSV of the full ledger (plan points to it).
CSV_NAME = "field_ledger.csv"


class LedgerRow(NamedTuple):
    entity: str
    field: str
    kind: str
    destination: str
    records: int  # records of the entity
    with_value: int  # records whose field has a value


def write_ledger(store: Store, rows: list[LedgerRow], run_id: int) -> None:
    """Replace the stored ledger with this run's (inside the caller's transaction)."""
    store.conn.execute("DELETE FROM field_ledger")
    store.conn.executemany(
        "INSERT INTO field_ledger (position, entity, field, kind, destination, records, "
        "with_value, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (position, r.entity, r.field, r.kind, r.destination, r.records, r.with_value, run_id)
            for position, r in enumerate(rows)
        ],
    )


def read_ledger(store: Store) -> list[LedgerRow]:
    """The ledger the last transform wrote, in catalogue order (empty before one ran)."""
    return [
        LedgerRow(*row)
        for row in store.conn.execute(
            "SELECT entity, field, kind, destination, records, with_value FROM field_ledger "
            "ORDER BY position"
        )
    ]


def unaccounted(rows: list[LedgerRow]) -> list[LedgerRow]:
    """Fields with values and no destination: each one fails the check."""
    return [row for row in rows if row.kind == NO_DESTINATION and row.with_value]


def failure_text(rows: list[LedgerRow]) -> str:
    """One sentence naming every field with values and no destination ('' when none)."""
    missing = unaccounted(rows)
    if not missing:
        return ""
    named = ", ".join(f"{r.entity}.{r.field} ({r.with_value} with a value)" for r in missing)
    return f"{len(missing)} source field(s) with values have no destination: {named}"


def plan_lines(rows: list[LedgerRow]) -> list[str]:
    """`migrate plan`: a line per entity (its fields with values, by kind of destination)."""
    if not rows:
        return ["Field ledger: none yet (run migrate transform)."]
    by_entity: dict[str, Counter[str]] = {}
    for row in rows:
        if row.with_value:
            by_entity.setdefault(row.entity, Counter())[row.kind] += 1
    with_values = sum(sum(kinds.values()) for kinds in by_entity.values())
    lost = len(unaccounted(rows))
    verdict = f"{lost} without a destination" if lost else "each with a destination"
    lines = [
        f"Field ledger: {with_values} source fields with values, {verdict} (by entity below; "
        f"the report's {CSV_NAME} lists every field):"
    ]
    for entity, kinds in by_entity.items():
        shown = ", ".join(
            f"{kinds[kind]} {kind.replace('_', ' ')}" for kind in KINDS if kinds[kind]
        )
        lines.append(f"  {entity}: {shown}")
    return lines
