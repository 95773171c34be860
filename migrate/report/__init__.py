"""Report: `migrate status` (status.py) and `migrate report` (reconciliation, HTML, CSV).

``report_from_settings`` reads Procore back (unless offline), reconciles it with the staging
DB, and writes into ``out_dir`` (default: ``report/`` beside the staging DB):

- ``report.html``: one self-contained page (inline CSS and SVG, no script, nothing fetched);
- ``mismatches.csv``, ``missing.csv``, ``orphans.csv``, ``quarantine.csv`` (records link-free),
  ``issues.csv`` (every issue's journey plus its reconciliation result), ``inspections.csv``
  (every staged checklist: its inspection's outcome and the fields that differ, or why it was
  skipped, quarantined or not loaded yet; see ``migrate.report.inspections``),
  ``field_ledger.csv`` (where every source field went; see ``migrate.report.ledger``).

Files are 0600 in a 0700 folder the report created, CSV cells are inert (see ``files.py``).

The report run is recorded in ``runs`` (command ``report``) with the Procore requests it made.
``run`` is the stage (a Procore client, or None offline); ``report_from_settings`` is what the
CLI calls. Heavy imports (pandas) happen inside the functions so importing ``migrate.report``
is cheap.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migrate.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_QUARANTINED,
    ApiError,
    ConfigError,
    StageFailed,
    TransportError,
)
from migrate.settings import Settings

if TYPE_CHECKING:
    from migrate.clients.procore import ProcoreClient
    from migrate.results import Progress
    from migrate.runlog import RunLog
    from migrate.store.db import Store

REPORT_COMMAND = "report"
HTML_NAME = "report.html"
CSV_NAMES = {
    "mismatches": "mismatches.csv",
    "missing": "missing.csv",
    "orphans": "orphans.csv",
    "quarantine": "quarantine.csv",
    "issues": "issues.csv",
    "inspections": "inspections.csv",
    "field_ledger": "field_ledger.csv",  # = migrate.transform.ledger.CSV_NAME (tests check)
}

__all__ = ["CSV_NAMES", "HTML_NAME", "ReportOptions", "ReportResult", "report_from_settings", "run"]


@dataclass(frozen=True)
class ReportOptions:
    """Which Procore project the staging DB was loaded into, and where the files go."""

    target_project_id: int | None
    out_dir: Path


@dataclass(frozen=True)
class ReportResult:
    """Where the report went and what reconciliation found.

    ``exit_code``: 0 when every loaded record matches and nothing is quarantined; 3 when it all
    matches but records wait in quarantine; 1 when a mismatch, missing record or orphan was found.
    """

    path_html: Path
    csv_paths: dict[str, Path]
    mismatches: list[dict[str, Any]]
    missing: list[dict[str, Any]]
    orphans: list[dict[str, Any]]
    matched: int
    quarantined: int = 0
    online: bool = True
    #: What is not migrated and where the project export keeps it (report/inventory.py).
    left_behind: list[str] = field(default_factory=list)
    run_id: int | None = None
    checks_not_run: list[str] = field(default_factory=list)
    #: Requests to Procore by "METHOD /path" (None offline: Procore was not read).
    requests: Mapping[str, int] | None = None
    #: Staged checklists by inspection outcome (match, differs, missing in Procore, …).
    inspections: Mapping[str, int] = field(default_factory=dict)
    #: Source fields with values and no destination (the field ledger's failing check).
    fields_unaccounted: str = ""

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        """Issues matched, mismatched, missing and orphaned; quarantine rows still open."""
        return {
            "issue": {
                "matched": self.matched,
                "mismatched_fields": len(self.mismatches),
                "missing": len(self.missing),
                "orphans": len(self.orphans),
            },
            "quarantine": {"open": self.quarantined},
            "inspection": {k.replace(" ", "_"): n for k, n in self.inspections.items()},
        }

    def as_json(self) -> dict[str, Any]:
        """The counts, for the runs table."""
        return {entity: dict(kinds) for entity, kinds in self.counts.items()}

    def requests_json(self) -> dict[str, int] | None:
        return None if self.requests is None else dict(self.requests)

    @property
    def clean(self) -> bool:
        return not (self.mismatches or self.missing or self.orphans or self.fields_unaccounted)

    @property
    def exit_code(self) -> int:
        if not self.clean:
            return EXIT_FAILED
        return EXIT_QUARANTINED if self.quarantined else EXIT_OK

    def inspection_line(self) -> str:
        """Checklists → inspections in one line: migrated, matching, and what is not."""
        from migrate.report.inspections import summary_text

        return summary_text(self.inspections)

    def summary_lines(self) -> list[str]:
        """What the CLI prints after ``migrate report``."""
        if self.online:
            lines = [
                f"Reconciliation: {self.matched} issues match, {len(self.mismatches)} "
                f"mismatches, {len(self.missing)} missing in Procore, {len(self.orphans)} "
                f"orphans; {self.quarantined} records quarantined."
            ]
        else:
            lines = [f"Offline report (Procore not read); {self.quarantined} records quarantined."]
        if self.inspections:
            lines.append(self.inspection_line())
        if self.checks_not_run:
            lines.append("Checks not run: " + ", ".join(self.checks_not_run) + ".")
        lines.extend(self.left_behind)
        if self.fields_unaccounted:
            lines.append(f"FAILED: {self.fields_unaccounted}.")
        lines.append(f"Report: {self.path_html}")
        lines.append("CSV: " + ", ".join(str(p) for p in self.csv_paths.values()))
        return lines


def report_from_settings(
    settings: Settings,
    env: Mapping[str, str] = os.environ,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    offline: bool = False,
) -> ReportResult:
    """``migrate report``: Procore client (unless `offline`) and staging DB, then :func:`run`."""
    from migrate.clients.factory import procore_client
    from migrate.store import open_store
    from migrate.store.identity import Identity, pin_identity
    from migrate.store.writer import acquire_writer

    staging = Path(settings.staging.path)
    if not staging.exists():
        raise ConfigError(
            f"No staging DB at {staging}: nothing to report on yet. Run `migrate extract` "
            "first (or check [staging] path in the config)."
        )
    if offline:
        project_id = settings.target.project_id
    else:
        _company_id, project_id = settings.target_ids()
    out = Path(out_dir) if out_dir is not None else staging.parent / "report"
    options = ReportOptions(target_project_id=project_id, out_dir=out)
    with contextlib.ExitStack() as stack:
        client = None if offline else stack.enter_context(procore_client(settings, env))
        store = stack.enter_context(open_store(staging, create=False))
        acquire_writer(store, REPORT_COMMAND)  # it records a run; released when the store closes
        pin_identity(
            store,
            Identity(target_company_id=settings.target.company_id, target_project_id=project_id),
            command=REPORT_COMMAND,
            where=settings.where,
        )
        return run(store, client, options=options)


def run(
    store: Store,
    client: ProcoreClient | None,
    *,
    options: ReportOptions,
    progress: Progress | None = None,
    log: RunLog | None = None,
) -> ReportResult:
    """Read Procore through ``client`` (None: offline), reconcile, write the files; the run is
    recorded (see ``store.runs.recorded_run``) with the requests it made."""
    from migrate.report import inventory as left_behind
    from migrate.report import ledger as field_ledger
    from migrate.report.files import prepare_report_dir
    from migrate.report.html import render_report
    from migrate.report.inspections import fetch_inspections, loaded_inspection_ids
    from migrate.report.reconcile import fetch_target, reconcile
    from migrate.store.db import utc_now
    from migrate.store.runs import RunFigures, recorded_run

    project_id, out_dir = options.target_project_id, options.out_dir
    args = {"target_project_id": project_id, "offline": client is None, "out_dir": str(out_dir)}
    before = client.request_counts() if client is not None else {}

    def requests_since() -> dict[str, int] | None:
        if client is None:
            return None
        now = client.request_counts()
        return {k: n - before.get(k, 0) for k, n in sorted(now.items()) if n - before.get(k, 0) > 0}

    with recorded_run(store, REPORT_COMMAND, args, log=log) as recorded:
        recorded.track(lambda: RunFigures(None, requests_since()))
        target = inspections = None
        if client is not None:
            assert project_id is not None
            try:
                client.check_access(project_id)  # a wrong project or company: exit 2, named
                target = fetch_target(client, project_id)
                inspections = fetch_inspections(
                    client, project_id, loaded_inspection_ids(store, project_id)
                )
            except (TransportError, ApiError) as exc:  # exit 1 naming the command to re-run
                raise StageFailed(REPORT_COMMAND, str(exc)) from exc
        rec = reconcile(store, project_id, target, inspections)
        rec.runs = [run for run in rec.runs if run["run_id"] != recorded.id]
        prepare_report_dir(out_dir, (HTML_NAME, *CSV_NAMES.values()))
        csv_paths = _write_csvs(store, rec, out_dir)
        html_path = out_dir / HTML_NAME
        found = left_behind.left_behind(store)
        html_text = render_report(
            rec,
            title=f"Migration report: BIM 360 Field → Procore project {project_id}",
            generated_at=utc_now(),
            csv_files={key: path.name for key, path in csv_paths.items()},
            extra_sections=[
                (left_behind.SECTION_HEADING, left_behind.report_section(found)),
                (field_ledger.SECTION_HEADING, field_ledger.report_section(rec.field_ledger)),
            ],
        )
        _write_text(html_path, html_text)
        result = ReportResult(
            path_html=html_path,
            csv_paths=csv_paths,
            mismatches=rec.mismatches,
            missing=rec.missing,
            orphans=rec.orphans,
            matched=rec.matched,
            quarantined=rec.quarantined,
            online=rec.online,
            left_behind=left_behind.status_lines(found),
            run_id=recorded.id,
            checks_not_run=[c.name for c in rec.checks if not c.ran],
            requests=requests_since(),
            inspections=rec.inspections.counts if rec.inspections else {},
            fields_unaccounted=field_ledger.failure_text(rec.field_ledger),
        )
        recorded.succeed(result)
    return result


def _write_text(path: Path, text: str) -> None:
    from migrate.report.files import write_text

    write_text(path, text)


def _write_csvs(store: Any, rec: Any, out_dir: Path) -> dict[str, Path]:
    import pandas as pd

    from migrate.report import ledger as field_ledger
    from migrate.report.files import frame, write_csv
    from migrate.report.reconcile import (
        MISMATCH_COLUMNS,
        MISSING_COLUMNS,
        ORPHAN_COLUMNS,
        QUARANTINE_COLUMNS,
    )

    quarantine_rows = [
        {
            "entity": g.entity,
            "stage": g.stage,
            "reason": g.reason,
            "hint": r["hint"],
            "source_id": r["source_id"],
            "created_at": r["created_at"],
            "record": r["record_compact"],
        }
        for g in rec.quarantine
        for r in g.records
    ]
    issues = pd.read_sql_query(
        "SELECT * FROM v_issue_journey ORDER BY source_kind, source_id",
        store.conn,
        dtype={"procore_project_id": "Int64", "procore_id": "Int64"},
    )
    issues["reconciliation"] = [
        rec.issue_results.get(source_id, "" if state in ("loaded", "sent") else state)
        for source_id, state in zip(issues["source_id"], issues["state"], strict=True)
    ]
    issues["attachments"] = [rec.attachment_results.get(s, "") for s in issues["source_id"]]
    from migrate.report.inspections import CSV_COLUMNS as INSPECTION_COLUMNS
    from migrate.report.inspections import INT_COLUMNS as INSPECTION_INT_COLUMNS

    inspection_rows = rec.inspections.rows if rec.inspections else []
    frames = {
        "mismatches": frame(rec.mismatches, MISMATCH_COLUMNS),
        "missing": frame(rec.missing, MISSING_COLUMNS),
        "orphans": frame(rec.orphans, ORPHAN_COLUMNS),
        "quarantine": frame(quarantine_rows, QUARANTINE_COLUMNS),
        "issues": issues,
        "inspections": frame(inspection_rows, INSPECTION_COLUMNS).astype(
            {c: "Int64" for c in INSPECTION_INT_COLUMNS}
        ),
        "field_ledger": frame(field_ledger.csv_rows(rec.field_ledger), field_ledger.CSV_COLUMNS),
    }
    paths: dict[str, Path] = {}
    for key, table in frames.items():
        paths[key] = out_dir / CSV_NAMES[key]
        write_csv(paths[key], table)
    return paths


# Re-exported for callers that only want the status (no pandas import).
def status_from_settings(settings: Settings) -> Any:
    """See :func:`migrate.report.status.status_from_settings`."""
    from migrate.report.status import status_from_settings as _status

    return _status(settings)
