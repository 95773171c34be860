"""The report's "Where every BIM 360 Field field went" section, its CSV and plan's lines.

Reads the field ledger transform stored (``migrate.transform.ledger``): every source entity
and field, where its values went (a Procore target field, a footer line, a file, a link
between records, or left out with the reason) and how many records have a value. A field with
values and no destination fails the report's verdict and makes `migrate plan` warn.
"""

from __future__ import annotations

from html import escape

from migrate.store.ledger import CSV_NAME, NO_DESTINATION, LedgerRow, failure_text

SECTION_HEADING = "Where every BIM 360 Field field went"
CSV_COLUMNS = ("entity", "field", "kind", "destination", "with_value", "records")


def csv_rows(rows: list[LedgerRow]) -> list[dict[str, object]]:
    return [
        {
            "entity": r.entity,
            "field": r.field,
            "kind": r.kind,
            "destination": r.destination,
            "with_value": r.with_value,
            "records": r.records,
        }
        for r in rows
    ]


def report_section(rows: list[LedgerRow], csv_file: str = CSV_NAME) -> str:
    """The section body (HTML): the failing fields first, then every field by entity."""
    if not rows:
        return "<p>No field ledger yet: run <code>migrate transform</code>.</p>"
    failure = failure_text(rows)
    head = (
        f'<div class="verdict bad">{escape(failure)}</div>'
        if failure
        else '<div class="verdict ok">Every source field with a value has a destination.</div>'
    )
    body = "".join(
        f"<tr{' class=bad' if r.kind == NO_DESTINATION and r.with_value else ''}>"
        f"<td>{escape(r.entity)}</td><td><code>{escape(r.field)}</code></td>"
        f"<td>{escape(r.kind.replace('_', ' '))}</td><td>{escape(r.destination)}</td>"
        f"<td class=num>{r.with_value}</td><td class=num>{r.records}</td></tr>"
        for r in rows
    )
    return (
        f"{head}<p>For every staged source field: where its values went in Procore (a target "
        "field, a line of the description footer, a file), a link between records, or left "
        f'out with the reason. Full list: <a href="{escape(csv_file)}">{escape(csv_file)}</a>.'
        "</p><table><thead><tr><th>entity</th><th>field</th><th>kind</th><th>destination</th>"
        f"<th>records with a value</th><th>records</th></tr></thead><tbody>{body}</tbody></table>"
    )
