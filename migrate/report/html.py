"""The reconciliation report as one self-contained HTML file (inline CSS and SVG, no script).

It opens from disk with no server and fetches nothing: no external CSS, scripts, fonts or
images. Long lists are cut at ``MAX_ROWS`` with a pointer to the CSV file that has them all.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from html import escape
from typing import Any

from migrate.report import charts
from migrate.report.inspections import CSV_COLUMNS as INSPECTION_COLUMNS
from migrate.report.inspections import OUTCOMES, summary_text
from migrate.report.quota import SPIKE_SECONDS, QuotaFigures
from migrate.report.reconcile import QuarantineGroup, Reconciliation
from migrate.store.ledger import failure_text
from migrate.text import terminal_safe

MAX_ROWS = 500
MAX_RECORDS_PER_REASON = 50
#: Cells with more characters than this get a minimum width (CSS ``td.long``).
LONG_TEXT = 60

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1180px;
color:#222;padding:0 16px;line-height:1.4;overflow-wrap:break-word}
h1{margin-bottom:4px}h2{margin-top:32px;border-bottom:2px solid #eee;padding-bottom:4px}
.meta{color:#666}
.verdict{padding:12px 16px;border-radius:6px;font-size:1.1em;margin:16px 0}
.verdict.ok{background:#e6f4ea;border:1px solid #7cb88a}
.verdict.bad{background:#fdecea;border:1px solid #e08a80}
.verdict.offline{background:#fff6e0;border:1px solid #e0b050}
table{border-collapse:collapse;margin:8px 0;font-size:13px;display:block;max-width:100%;
overflow-x:auto}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
td{max-width:40em}td.when{white-space:nowrap}td.long{min-width:20em}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.bad td{background:#fff4f2}
.charts{display:flex;flex-wrap:wrap;gap:16px}
.charts figure{margin:0;border:1px solid #eee;padding:8px;border-radius:6px;min-width:0;
max-width:100%;box-sizing:border-box}
svg.chart{display:block;max-width:100%;height:auto}
pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:12px;max-height:320px}
details{margin:8px 0}summary{cursor:pointer}
.hint{color:#555;font-style:italic}.muted{color:#888}
"""


def render_report(
    rec: Reconciliation,
    *,
    title: str,
    generated_at: str,
    csv_files: Mapping[str, str],
    extra_sections: Sequence[tuple[str, str]] = (),
) -> str:
    """The whole report page; ``csv_files`` maps a CSV's name to its file name (same folder).

    ``extra_sections`` are (heading, HTML body) pairs placed before the run history.
    """
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">Generated {escape(generated_at)} · Procore project '
        f"{escape(str(rec.target_project_id if rec.target_project_id is not None else '?'))}"
        f" · {'Procore read back' if rec.online else 'offline (Procore not read)'}</p>",
        _verdict(rec),
        _section("Reconciliation per entity", _entity_table(rec)),
        _section("Checks", _checks(rec)),
        _section(
            f"Mismatches ({len(rec.mismatches)})",
            _table(
                rec.mismatches,
                (
                    "entity",
                    "source_id",
                    "identifier",
                    "procore_id",
                    "field",
                    "expected",
                    "actual",
                    "note",
                ),
                empty="No field differs." if rec.online else "Not checked (offline).",
                csv=csv_files.get("mismatches"),
            ),
        ),
        _section(
            f"Missing in Procore ({len(rec.missing)})",
            _table(
                rec.missing,
                ("entity", "source_id", "identifier", "title", "procore_id", "uuid", "loaded_at"),
                empty="Every loaded record is in Procore."
                if rec.online
                else "Not checked (offline).",
                csv=csv_files.get("missing"),
            ),
        ),
        _section(
            f"Orphans in Procore ({len(rec.orphans)})",
            _table(
                rec.orphans,
                ("procore_id", "uuid", "title", "status", "source_id", "staging_state", "why"),
                empty="No Procore issue carries one of our uuids without being in the id map."
                if rec.online
                else "Not checked (offline).",
                csv=csv_files.get("orphans"),
            ),
        ),
        _section(_inspections_heading(rec), _inspections(rec, csv_files)),
        _section(
            f"Files added after their issue was loaded ({len(rec.attachments_after_load)})",
            "<p>Procore cannot add files to an existing coordination issue: each needs a "
            "decision (attach by hand, or accept it as left out).</p>"
            + _table(
                rec.attachments_after_load,
                ("source_id", "attachment_id", "filename", "size", "waiting_for"),
                empty="None.",
            ),
        ),
        _section(
            f"Deleted or voided at the source after load ({len(rec.deleted_after_load)})",
            "<p><code>migrate load --apply-deletions</code> closes them in Procore.</p>"
            + _table(
                rec.deleted_after_load,
                ("source_id", "identifier", "procore_id", "what"),
                empty="None.",
            ),
        ),
        _section(f"Quarantine ({rec.quarantined} open)", _quarantine(rec, csv_files)),
        _section("Charts", _charts(rec)),
        *(_section(heading, body) for heading, body in extra_sections),
        _section(
            "Run history",
            _table(
                rec.runs,
                (
                    "run_id",
                    "command",
                    "status",
                    "started_at",
                    "finished_at",
                    "duration_seconds",
                    "requests",
                    "counts",
                    "error",
                ),
                empty="No run recorded.",
            ),
        ),
        _section("Files", _files(csv_files)),
        "</body></html>",
    ]
    return "\n".join(parts)


def _section(heading: str, body: str) -> str:
    return f"<section><h2>{escape(heading)}</h2>\n{body}\n</section>"


def _verdict(rec: Reconciliation) -> str:
    quarantined = (
        f" {rec.quarantined} record(s) are quarantined (listed below with reasons)."
        if rec.quarantined
        else " Nothing is quarantined."
    )
    if rec.inspections is not None and rec.inspections.rows:
        quarantined += " " + summary_text(rec.inspections.counts)
    if rec.fields_unaccounted:
        return (
            f'<div class="verdict bad">{escape(failure_text(rec.field_ledger))} (see "Where '
            f'every BIM 360 Field field went"); {len(rec.mismatches)} field mismatch(es), '
            f"{len(rec.missing)} missing, {len(rec.orphans)} orphan(s), {rec.matched} issue(s) "
            f"match.{escape(quarantined)}</div>"
        )
    if not rec.online:
        return (
            '<div class="verdict offline">Offline report: Procore was not read, so nothing was '
            f"compared with it. {len(rec.issue_results)} issue(s) are recorded as "
            f"loaded.{escape(quarantined)}</div>"
        )
    if rec.clean:
        return (
            f'<div class="verdict ok">All {rec.matched} migrated issue(s) match Procore field '
            f"by field; no record is missing and no orphan was found.{escape(quarantined)}</div>"
        )
    records = len({(m["entity"], m["source_id"]) for m in rec.mismatches})
    return (
        f'<div class="verdict bad">{len(rec.mismatches)} field mismatch(es) on {records} '
        f"record(s), {len(rec.missing)} record(s) missing in Procore, {len(rec.orphans)} "
        f"orphan(s); {rec.matched} issue(s) match.{escape(quarantined)}</div>"
    )


def _cell(value: Any, column: str = "") -> str:
    if value is None or value == "":
        return '<td class="muted">–</td>'
    if isinstance(value, bool):
        return f"<td>{'yes' if value else 'no'}</td>"
    if isinstance(value, int | float):
        # Ids are names, not quantities: no thousands separators.
        is_id = column == "id" or column.endswith("_id")
        shown = f"{value:,}" if isinstance(value, int) and not is_id else str(value)
        return f'<td class="num">{escape(shown)}</td>'
    if column.endswith("_at"):  # a timestamp reads badly broken over two lines
        return f'<td class="when">{_shown(value)}</td>'
    if len(str(value)) > LONG_TEXT:
        # Wide enough to read: a narrow window scrolls the table instead of squeezing the
        # text into a tall sliver.
        return f'<td class="long">{_shown(value)}</td>'
    return f"<td>{_shown(value)}</td>"


def _shown(value: Any) -> str:
    """Source text for the page: control and bidi characters as visible escapes, then HTML."""
    return escape(terminal_safe(value))


def _table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    *,
    empty: str,
    csv: str | None = None,
    limit: int = MAX_ROWS,
) -> str:
    if not rows:
        return f"<p>{escape(empty)}</p>"
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "\n".join(
        "<tr>" + "".join(_cell(row.get(c), c) for c in columns) + "</tr>" for row in rows[:limit]
    )
    more = ""
    if len(rows) > limit:
        where = f" (all of them are in {escape(csv)})" if csv else ""
        more = f"<p>Showing {limit} of {len(rows)}{where}.</p>"
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>{more}"


def _entity_table(rec: Reconciliation) -> str:
    columns = (
        "entity",
        "source",
        "staging",
        "planned",
        "skipped",
        "quarantined",
        "loaded",
        "in_procore",
        "matching",
        "mismatching",
        "missing",
        "orphans",
    )
    head = "".join(f"<th>{escape(c.replace('_', ' '))}</th>" for c in columns)
    rows = []
    for row in rec.entity_rows:
        bad = any(row.get(k) for k in ("mismatching", "missing", "orphans"))
        cells = "".join(_cell(row.get(c)) for c in columns)
        rows.append(f'<tr class="{"bad" if bad else ""}">{cells}</tr>')
    note = (
        '<p class="muted">source: rows BIM 360 Field listed (not deleted) · staging: '
        "normalised rows (Field areas for locations) · planned: what transform planned "
        "(location paths for locations) · loaded: id map rows Procore confirmed.</p>"
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>" + note


def _inspections_heading(rec: Reconciliation) -> str:
    rows = rec.inspections.rows if rec.inspections is not None else []
    return f"Checklists → Procore inspections ({len(rows)})"


#: Inspection outcomes that fail the report.
_BAD_OUTCOMES = ("differs", "missing in Procore")


def _inspections(rec: Reconciliation, csv_files: Mapping[str, str]) -> str:
    """Every staged checklist: its inspection's outcome, or why it was left out."""
    found = rec.inspections
    if found is None or not found.rows:
        return "<p>No checklist was extracted.</p>"
    counts = found.counts
    summary = [{"outcome": o, "checklists": counts[o]} for o in OUTCOMES if counts[o]]
    out = [
        "<p>Each inspection is compared with its plan field by field: identifier, description, "
        "status, inspection date, location, responsible contractor, inspection type and "
        "template; every item's answer, comments and files; files by name and by the sha256 "
        "of the bytes Procore serves. Field differences are also listed under Mismatches.</p>",
        _table(summary, ("outcome", "checklists"), empty=""),
    ]
    columns = [c for c in INSPECTION_COLUMNS if c != "name"]
    head = "".join(f"<th>{escape(c.replace('_', ' '))}</th>" for c in columns)
    # Problems first, so a long list still shows them above the cut.
    ordered = sorted(found.rows, key=lambda r: (r["outcome"] not in _BAD_OUTCOMES, r["source_id"]))
    body = []
    for row in ordered[:MAX_ROWS]:
        bad = row["outcome"] in _BAD_OUTCOMES
        cells = "".join(_cell(row.get(c), c) for c in columns)
        body.append(f'<tr class="{"bad" if bad else ""}">{cells}</tr>')
    out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
    where = csv_files.get("inspections")
    if len(ordered) > MAX_ROWS:
        shown = escape(where or "inspections.csv")
        out.append(f"<p>Showing {MAX_ROWS} of {len(ordered)} (all of them are in {shown}).</p>")
    elif where:
        out.append(f"<p>Also in {escape(where)}.</p>")
    return "\n".join(out)


def _checks(rec: Reconciliation) -> str:
    rows = [{"check": c.name, "ran": c.ran, "detail": c.detail} for c in rec.checks]
    return _table(rows, ("check", "ran", "detail"), empty="No check ran.")


def _shared_hint(group: QuarantineGroup) -> str | None:
    """The hint every record of the group has, if they all have the same one."""
    hints = group.hints
    if len(hints) == 1 and all(r.get("hint") for r in group.records):
        return hints[0]
    return None


def _quarantine(rec: Reconciliation, csv_files: Mapping[str, str]) -> str:
    if not rec.quarantine:
        return "<p>Nothing is quarantined.</p>"
    out = []
    summary = [
        {
            "entity": g.entity,
            "stage": g.stage,
            "reason": g.reason,
            "hint": _shared_hint(g)
            or (f"{len(g.hints)} different hints: one per record, below" if g.hints else ""),
            "records": len(g.records),
        }
        for g in rec.quarantine
    ]
    out.append(_table(summary, ("entity", "stage", "reason", "hint", "records"), empty=""))
    where = csv_files.get("quarantine")
    if where:
        out.append(f"<p>Every record, link-free, is also in {escape(where)}.</p>")
    # Open the groups when there are few records: the reader sees them without a click.
    opened = " open" if rec.quarantined <= 20 else ""
    for group in rec.quarantine:
        shared = _shared_hint(group)
        out.append(
            f'<details class="quarantine-group"{opened}><summary>'
            f"<strong>{_shown(group.reason)}</strong>"
            f" — {len(group.records)} {escape(group.entity)} record(s), stage "
            f"{escape(group.stage)}</summary>"
        )
        if shared:
            out.append(f'<p class="hint">{_shown(shared)}</p>')
        for record in group.records[:MAX_RECORDS_PER_REASON]:
            # Records of one reason may need different fixes (another area, another field).
            own_hint = (
                f'<p class="hint record-hint">{_shown(record["hint"])}</p>'
                if record.get("hint") and not shared
                else ""
            )
            out.append(
                f'<div class="quarantine-record"><p><code>{_shown(record["source_id"])}</code> '
                f'<span class="muted">{escape(str(record["created_at"] or ""))}</span></p>'
                f"{own_hint}<pre>{_shown(record['record'])}</pre></div>"
            )
        if len(group.records) > MAX_RECORDS_PER_REASON:
            out.append(f"<p>… and {len(group.records) - MAX_RECORDS_PER_REASON} more.</p>")
        out.append("</details>")
    return "\n".join(out)


def _charts(rec: Reconciliation) -> str:
    figures = [
        charts.bar_chart(
            "status-before",
            "Issues by BIM 360 Field status (before)",
            rec.status_before,
            empty_message="No issue extracted",
        ),
        charts.bar_chart(
            "status-after",
            "Migrated issues by Procore status (after)"
            if rec.online
            else "Loaded issues by Procore status (id map)",
            rec.status_after,
            color=charts.AFTER_COLOR,
            empty_message="No issue loaded",
        ),
        charts.bar_chart(
            "by-location",
            f"Migrated issues by location (top {len(rec.by_location)})"
            if rec.by_location
            else "Migrated issues by location",
            rec.by_location,
            empty_message="No issue loaded",
            width=640,
            label_chars=44,
            keep_label_end=True,
        ),
        *quota_charts(rec.quota),
    ]
    return (
        _quota_note(rec.quota)
        + '<div class="charts">'
        + "".join(f"<figure>{figure}</figure>" for figure in figures)
        + "</div>"
    )


#: The charts drawn from a load run's rate readings (empty frames when no run stored any).
QUOTA_CHARTS = ("load-progress", "write-calls", "spike-window", "hourly-window")


def _quota_note(quota: QuotaFigures | None) -> str:
    if quota is None:
        return (
            "<p>No load run stored its rate readings, so the quota charts below are empty "
            "(runs before this version did not keep them).</p>"
        )
    spike = (
        f"{quota.spike_limit:,} per {_seconds_text(int(SPIKE_SECONDS))}"
        if quota.spike_limit is not None
        else "never reported"
    )
    hourly = f"{quota.hourly_limit:,} per hour" + (
        "" if quota.hourly_limit_reported else " (Procore's documented default: never reported)"
    )
    others = (
        f" {quota.other_load_runs} other load run(s) stored readings too; see Run history."
        if quota.other_load_runs
        else ""
    )
    return (
        f'<p class="quota-note">Load run {quota.run_id}, '
        f"{quota.started.strftime('%Y-%m-%d %H:%M:%S')} to "
        f"{quota.finished.strftime('%H:%M:%S')} UTC: {quota.counted:,} requests Procore counted "
        f"against its quota ({quota.writes:,} of them write calls), {quota.refused:,} refused "
        f"with 429. Limits Procore reported: spike window {spike}; hourly window {hourly}. "
        f"Busiest 10 s window: {quota.busiest_spike_window:,} requests; busiest hour: "
        f"{quota.busiest_hour:,}.{others}</p>"
    )


def quota_charts(quota: QuotaFigures | None) -> list[str]:
    if quota is None:
        return [
            charts.empty_chart(chart_id, title, "No load run stored its rate readings")
            for chart_id, title in zip(
                QUOTA_CHARTS,
                (
                    "Load progress",
                    "Write calls to Procore",
                    "Requests per 10 s spike window",
                    "Requests in the trailing hour",
                ),
                strict=True,
            )
        ]
    progress = [
        charts.Series("steps", f"{kind}: {points[-1][1]:,} writes", color, points, unit="writes")
        for (kind, points), color in zip(
            quota.progress.items(), itertools.cycle(charts.SERIES_COLORS), strict=False
        )
    ]
    columns, column_seconds = quota.spike_columns()
    busiest = "" if column_seconds == SPIKE_SECONDS else f" (busiest per {column_seconds:g} s)"
    spike_series = [
        charts.Series(
            "columns",
            "counted" + busiest,
            charts.BAR_COLOR,
            [(w.start, w.counted) for w in columns],
            seconds=column_seconds,
            unit="requests in a 10 s window",
        )
    ]
    if quota.refused:
        spike_series.append(
            charts.Series(
                "columns",
                "refused (429)",
                charts.REFUSED_COLOR,
                [(w.start, w.refused) for w in columns],
                seconds=column_seconds,
                stack_on=spike_series[0].label,
                unit="refused",
            )
        )
    reported = [(w.start + _HALF_SPIKE, w.procore_count) for w in columns]
    if any(n is not None for _, n in reported):
        spike_series.append(
            charts.Series(
                "dots",
                "Procore's count (limit − remaining)",
                charts.PROCORE_COLOR,
                [(m, n) for m, n in reported if n is not None],
                unit="in Procore's spike window",
            )
        )
    hourly_series = [
        charts.Series(
            "steps",
            "this run's requests in the hour before",
            charts.LINE_COLOR,
            quota.hourly_line,
            unit="requests",
        )
    ]
    if quota.hourly_reported:
        hourly_series.append(
            charts.Series(
                "dots",
                "Procore's count (limit − remaining)",
                charts.PROCORE_COLOR,
                quota.hourly_reported,
                unit="in Procore's hourly window",
            )
        )
    # Every quota chart spans the whole load run, so a quiet stretch shows as one.
    over_the_run = functools.partial(charts.time_chart, start=quota.started, end=quota.finished)
    return [
        over_the_run(
            "load-progress",
            f"Load progress: {quota.accepted_writes:,} writes Procore accepted, by kind",
            progress,
            y_label="writes accepted so far",
            data={"accepted-writes": quota.accepted_writes},
            empty_message="No write call was accepted",
        ),
        over_the_run(
            "write-calls",
            f"{quota.writes:,} write calls (POST, PATCH, PUT, DELETE)",
            [
                charts.Series(
                    "columns",
                    f"write calls per {_seconds_text(quota.bucket_seconds)}",
                    charts.BAR_COLOR,
                    quota.write_buckets,
                    seconds=quota.bucket_seconds,
                    unit="write calls",
                )
            ],
            y_label=f"per {_seconds_text(quota.bucket_seconds)}",
            data={"write-calls": quota.writes, "bucket-seconds": quota.bucket_seconds},
            empty_message="No write call",
        ),
        over_the_run(
            "spike-window",
            "Requests per 10 s spike window against the spike limit",
            spike_series,
            limit=quota.spike_limit,
            limit_label=f"spike limit {quota.spike_limit:,} per 10 s" if quota.spike_limit else "",
            y_label="requests per 10 s",
            data={
                "counted": quota.counted,
                "refused": quota.refused,
                "spike-limit": quota.spike_limit or "",
                "busiest-window": quota.busiest_spike_window,
            },
            empty_message="No request counted",
        ),
        over_the_run(
            "hourly-window",
            "Requests in the trailing hour against the hourly limit",
            hourly_series,
            limit=quota.hourly_limit,
            limit_label=f"hourly limit {quota.hourly_limit:,}"
            + ("" if quota.hourly_limit_reported else " (documented default)"),
            y_label="requests per hour",
            data={"hourly-limit": quota.hourly_limit, "busiest-hour": quota.busiest_hour},
            empty_message="No request counted",
        ),
    ]


_HALF_SPIKE = timedelta(seconds=SPIKE_SECONDS / 2)


def _seconds_text(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def _files(csv_files: Mapping[str, str]) -> str:
    items: Iterable[str] = (
        f'<li><a href="{escape(name, quote=True)}">{escape(name)}</a> — {escape(key)}</li>'
        for key, name in csv_files.items()
    )
    return "<ul>" + "".join(items) + "</ul>"
