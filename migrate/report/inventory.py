"""What the migration leaves behind, said plainly (issue 15 points 4 and 5).

Reads what extract recorded (``store.leftbehind``): the Field families the pipeline does not
move, with counts and sizes, and Field's own project export that keeps a copy of them. Gives
the lines ``migrate status`` and ``migrate report`` print, the status JSON block, and the
report's HTML section, e.g.::

    Not migrated: 70 photos (6.3 MB), 21 library files (0.6 GB), 10 library folders,
                 3 equipment, 3 tasks, 77 daily updates
                 kept in BIM 360 Field's project export: database archive (2.1 kB),
                 files archive (3.0 kB), stored in the blob store
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any

from migrate.store.db import Store
from migrate.store.leftbehind import ExportArchive, InventoryRow, export_archives, inventory
from migrate.termtable import size_text

INDENT = " " * 13


@dataclass(frozen=True)
class LeftBehind:
    """The inventory rows and the export archives, as recorded."""

    families: list[InventoryRow]
    archives: list[ExportArchive]

    @property
    def stored(self) -> list[ExportArchive]:
        return [a for a in self.archives if a.state == "stored"]

    @property
    def recorded(self) -> bool:
        return bool(self.families or self.archives)


def left_behind(store: Store) -> LeftBehind:
    """What extract recorded; empty on a DB no extract of this version has written."""
    return LeftBehind(families=inventory(store), archives=export_archives(store))


def family_text(row: InventoryRow) -> str:
    """``70 photos (6.3 MB)``."""
    size = f" ({size_text(row.bytes)})" if row.bytes else ""
    return f"{row.records} {row.family}{size}"


def export_text(found: LeftBehind) -> str:
    """Where the export stands, in one sentence."""
    if not found.archives:
        return (
            "kept only in BIM 360 Field: its project export was not fetched "
            "(--no-export, or [source] project_export = false)"
        )
    if found.stored and len(found.stored) == len(found.archives):
        archives = ", ".join(
            f"{a.kind} archive ({size_text(a.size or 0)}, sha256 {(a.sha256 or '')[:12]})"
            for a in found.stored
        )
        return f"kept in BIM 360 Field's project export: {archives}, stored in the blob store"
    missing = [a for a in found.archives if a.state != "stored"]
    kept = (
        "; stored: " + ", ".join(f"{a.kind} archive" for a in found.stored) if found.stored else ""
    )
    reasons = "; ".join(dict.fromkeys(a.reason or a.state for a in missing))
    kinds = ", ".join(a.kind for a in missing)
    return (
        f"project export not available ({kinds}): {reasons}{kept}; what it would keep is "
        "only in BIM 360 Field"
    )


def status_lines(found: LeftBehind) -> list[str]:
    """The `migrate status` / report summary lines; none before an extract recorded any."""
    if not found.recorded:
        return []
    counted = ", ".join(family_text(row) for row in found.families) or "nothing counted yet"
    return [f"Not migrated: {counted}", f"{INDENT}{export_text(found)}"]


def status_json(found: LeftBehind) -> dict[str, Any]:
    """The ``left_behind`` block of the status JSON."""
    return {
        "not_migrated": [
            {"family": r.family, "records": r.records, "bytes": r.bytes, "kept_in": r.kept_in}
            for r in found.families
        ],
        "project_export": [
            {
                "kind": a.kind,
                "state": a.state,
                "sha256": a.sha256,
                "size": a.size,
                "requested_at": a.requested_at,
                "finished_at": a.finished_at,
                "reason": a.reason,
            }
            for a in found.archives
        ],
    }


def report_section(found: LeftBehind) -> str:
    """The report's "What is not migrated" section body (HTML)."""
    if not found.recorded:
        return "<p>Nothing recorded yet: run <code>migrate extract</code>.</p>"
    rows = "".join(
        f"<tr><td>{escape(r.family)}</td><td class=num>{r.records}</td>"
        f"<td class=num>{escape(size_text(r.bytes)) if r.bytes else ''}</td>"
        f"<td>{escape(r.kept_in or '')}</td><td>{escape(r.endpoint)}</td></tr>"
        for r in found.families
    )
    archives = "".join(
        f"<tr><td>{escape(a.kind)}</td><td>{escape(a.state)}</td>"
        f"<td class=num>{escape(size_text(a.size)) if a.size is not None else ''}</td>"
        f"<td><code>{escape(a.sha256 or '')}</code></td><td>{escape(a.finished_at or '')}</td>"
        f"<td>{escape(a.reason or '')}</td></tr>"
        for a in found.archives
    )
    return (
        "<p>BIM 360 Field families this migration does not move to Procore, counted by "
        "extract, and where a copy is kept.</p>"
        f"<p><strong>{escape(status_lines(found)[0])}</strong><br>{escape(export_text(found))}</p>"
        "<table><thead><tr><th>family</th><th>records</th><th>size</th><th>kept in</th>"
        f"<th>counted by</th></tr></thead><tbody>{rows}</tbody></table>"
        "<table><thead><tr><th>export archive</th><th>state</th><th>size</th><th>sha256</th>"
        f"<th>export finished</th><th>reason</th></tr></thead><tbody>{archives}</tbody></table>"
    )


SECTION_HEADING = "What is not migrated, and the project export"

__all__ = [
    "SECTION_HEADING",
    "LeftBehind",
    "export_text",
    "left_behind",
    "report_section",
    "status_json",
    "status_lines",
]
