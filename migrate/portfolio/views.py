"""What ``migrate portfolio status|report|plan`` show: read from the files alone (no network).

- **status**: per project, the stage it is in or stopped at, its records (extracted, loaded,
  rejected, quarantined), its last error and run, and the requests it spent from the shared
  quota (the ledger's count); from each project's staging DB (``migrate status``'s reading,
  :func:`migrate.report.status.status_from_settings`) and the portfolio's attempts.
- **report**: the same table as one HTML page, linking each project's own report.
- **plan**: how long the portfolio takes at the quota. Each transformed project's remaining
  requests come from its load plan (:func:`migrate.load.plan.compute_plan`, the decisions load
  executes): sync calls of up to ``PAYLOAD_BATCH`` items, one request per status change,
  location, upload and inspection write, plus the reads every project makes
  (:data:`READS_PER_PROJECT`). Projects not yet transformed are estimated from their staged
  counts: one request per stored file, :data:`REQUESTS_PER_CHECKLIST` per checklist. Divided
  by the quota's sustained rate (the tighter of the windows, less the reserve), that is a lower
  bound of the wall time: no schedule can beat it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from migrate.clients.sharedquota import LedgerSettings, ledger_totals
from migrate.errors import MigrateError
from migrate.portfolio import state
from migrate.portfolio.config import Portfolio, ProjectEntry

#: Requests a project makes besides its load writes: transform's reference reads (users,
#: vendors, trades, locations, inspection types...), load's look-ups and report's
#: reconciliation reads, and the inspection templates load sets up (left out of the plan's lower
#: bound). Measured on the sandbox (bench/portfolio_bench.py): 50 to 60 for a
#: small project; the pages of issues and inspections read back grow with its size.
READS_PER_PROJECT = 50
#: Quota requests per checklist before its plan is known: a full one (answers, comments, item
#: files, status) in the inspections benchmark.
REQUESTS_PER_CHECKLIST = 9
#: Records per page when reports read issues and inspections back.
_PAGE = 100


@dataclass(frozen=True)
class ProjectStatus:
    """One row of the portfolio status table."""

    name: str
    target_project_id: int | None
    state: str  # not started, running, completed, failed, interrupted
    stage: str | None
    extracted: int
    loaded: int
    rejected: int
    quarantined: int
    attachments_bytes: int
    requests: int  # spent from the shared quota, per the ledger
    error: str | None
    last_run: str | None
    report_path: str | None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def project_status(
    portfolio: Portfolio, entry: ProjectEntry, attempt: Any, spent: int
) -> ProjectStatus:
    from migrate.report.status import status_from_settings

    report = status_from_settings(entry.settings)
    issues = report.entities.get("issue", {})
    inspections = report.inspections
    if attempt is None:
        where = "not started"
    elif attempt.status == state.RUNNING:
        where = "running" if attempt.alive or report.running else "interrupted"
    else:
        where = attempt.status
    outcome = attempt.outcome if attempt is not None else None
    stage = (outcome.failed_stage if outcome is not None else None) or (
        attempt.stage if attempt is not None else None
    )
    return ProjectStatus(
        name=entry.name,
        target_project_id=entry.settings.target.project_id,
        state=where,
        stage=stage,
        extracted=int(issues.get("extracted", 0)) + int(inspections.get("extracted", 0)),
        loaded=int(issues.get("loaded", 0)) + int(inspections.get("loaded", 0)),
        rejected=int(issues.get("rejected", 0)) + int(inspections.get("rejected", 0)),
        quarantined=report.quarantine_open,
        attachments_bytes=int(report.attachments.get("bytes_stored", 0)),
        requests=spent,
        error=outcome.error if outcome is not None else None,
        last_run=(attempt.finished_at or attempt.started_at) if attempt is not None else None,
        report_path=outcome.report_path if outcome is not None else None,
    )


@dataclass(frozen=True)
class PortfolioStatus:
    portfolio: Portfolio
    projects: tuple[ProjectStatus, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "portfolio": str(self.portfolio.path),
            "projects": [p.to_json() for p in self.projects],
            "requests": sum(p.requests for p in self.projects),
        }

    def lines(self) -> list[str]:
        header = (
            "project",
            "state",
            "stage",
            "extracted",
            "loaded",
            "rejected",
            "quarant.",
            "requests",
            "last run",
        )
        rows = [header] + [
            (
                p.name,
                p.state,
                p.stage or "-",
                str(p.extracted),
                str(p.loaded),
                str(p.rejected),
                str(p.quarantined),
                str(p.requests),
                p.last_run or "-",
            )
            for p in self.projects
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [
            "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
        ]
        for p in self.projects:
            if p.error and p.state != state.COMPLETED:
                lines.append(f"{p.name}: {p.error}")
        counts: dict[str, int] = {}
        for p in self.projects:
            counts[p.state] = counts.get(p.state, 0) + 1
        lines.append(
            f"{len(self.projects)} projects: "
            + ", ".join(f"{n} {what}" for what, n in sorted(counts.items()))
            + "."
        )
        return lines


def portfolio_status(portfolio: Portfolio) -> PortfolioStatus:
    attempts = state.latest_attempts(portfolio.state_path)
    spent = _spent(portfolio)
    return PortfolioStatus(
        portfolio,
        tuple(
            project_status(portfolio, entry, attempts.get(entry.name), spent.get(entry.name, 0))
            for entry in portfolio.projects
        ),
    )


def _spent(portfolio: Portfolio) -> dict[str, int]:
    if not portfolio.ledger_path.exists():
        return {}
    return {name: row["requests"] for name, row in ledger_totals(portfolio.ledger_path).items()}


# -- the HTML report ---------------------------------------------------------------------------


def write_portfolio_report(portfolio: Portfolio, out_dir: Path | None = None) -> Path:
    """One HTML page: the status table, each project linking its own report; returns its path."""
    status = portfolio_status(portfolio)
    out = out_dir if out_dir is not None else portfolio.work_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.html"
    rows = []
    for p in status.projects:
        link = escape(p.name)
        if p.report_path and Path(p.report_path).exists():
            href = Path(_relative(Path(p.report_path), out)).as_posix()
            link = f'<a href="{escape(href, quote=True)}">{escape(p.name)}</a>'
        error = escape(p.error) if p.error and p.state != state.COMPLETED else ""
        rows.append(
            f'<tr class="{escape(p.state.replace(" ", "-"))}"><td>{link}</td>'
            f"<td>{p.target_project_id or ''}</td><td>{escape(p.state)}</td>"
            f"<td>{escape(p.stage or '')}</td><td>{p.extracted}</td><td>{p.loaded}</td>"
            f"<td>{p.rejected}</td><td>{p.quarantined}</td>"
            f"<td>{p.attachments_bytes / 1e6:.1f}</td><td>{p.requests}</td>"
            f"<td>{escape(p.last_run or '')}</td><td>{error}</td></tr>"
        )
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    total = sum(p.requests for p in status.projects)
    windows = ", ".join(f"{w.limit} per {w.seconds:g} s" for w in portfolio.quota.windows)
    path.write_text(
        '<!doctype html>\n<html><head><meta charset="utf-8">'
        f"<title>Portfolio: {escape(portfolio.path.name)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
        "tr.failed td{background:#fdd}tr.completed td:nth-child(3){color:#060}</style>"
        "</head><body>"
        f"<h1>Portfolio {escape(portfolio.path.name)}</h1>"
        f"<p>Generated {generated}. {len(status.projects)} projects; {total} requests spent "
        f"from one Procore quota ({escape(windows)}).</p>"
        "<table><thead><tr><th>Project</th><th>Procore project</th><th>State</th>"
        "<th>Stage</th><th>Extracted</th><th>Loaded</th><th>Rejected</th>"
        "<th>Quarantined</th><th>Files MB</th><th>Requests</th><th>Last run</th>"
        "<th>Error</th></tr></thead><tbody>\n"
        + "\n".join(rows)
        + "\n</tbody></table></body></html>\n",
        encoding="utf-8",
    )
    return path


def _relative(target: Path, start: Path) -> str:
    import os

    try:
        return os.path.relpath(target, start)
    except ValueError:  # another drive on Windows: link it absolutely
        return target.resolve().as_uri()


# -- the plan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectEstimate:
    name: str
    basis: str  # the load plan, the staged counts, or nothing staged
    records: int  # issues and checklists staged
    requests: int  # still to spend (estimate)
    spent: int  # already spent, per the ledger
    attachments_bytes: int

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class PortfolioPlan:
    projects: tuple[ProjectEstimate, ...]
    requests_per_hour: float

    @property
    def requests(self) -> int:
        return sum(p.requests for p in self.projects)

    @property
    def hours(self) -> float:
        """The quota-bound lower bound of the wall time, in hours."""
        return self.requests / self.requests_per_hour if self.requests_per_hour else math.inf

    def to_json(self) -> dict[str, Any]:
        return {
            "projects": [p.to_json() for p in self.projects],
            "requests": self.requests,
            "requests_per_hour": round(self.requests_per_hour, 1),
            "hours_at_quota": round(self.hours, 3),
        }

    def lines(self) -> list[str]:
        lines = [
            f"{p.name}: {p.requests} requests to go ({p.basis}; {p.records} records, "
            f"{p.attachments_bytes / 1e9:.2f} GB of files), {p.spent} spent"
            for p in self.projects
        ]
        lines.append(
            f"Portfolio: {self.requests} requests at {self.requests_per_hour:.0f} an hour "
            f"(the quota less its reserve) = at least {self.hours:.2f} hours."
        )
        return lines


def sustained_rate(quota: LedgerSettings) -> float:
    """Requests an hour the quota allows in the long run: the tightest window's."""
    return min(quota.allowed(w) / w.seconds for w in quota.windows) * 3600.0


def plan_portfolio(portfolio: Portfolio) -> PortfolioPlan:
    spent = _spent(portfolio)
    estimates = []
    for entry in portfolio.projects:
        records, requests, size, basis = _project_requests(entry)
        estimates.append(
            ProjectEstimate(entry.name, basis, records, requests, spent.get(entry.name, 0), size)
        )
    return PortfolioPlan(tuple(estimates), sustained_rate(portfolio.quota))


def _project_requests(entry: ProjectEntry) -> tuple[int, int, int, str]:
    """(records staged, requests still to make, bytes of files, what the estimate rests on).

    From the load plan once transform has run; before that from the staged counts at the
    benchmarks' rates (:data:`REQUESTS_PER_CHECKLIST`, one per stored file); with nothing
    staged, only :data:`READS_PER_PROJECT`.
    """
    from migrate.load.decision import PAYLOAD_BATCH, Request
    from migrate.load.plan import plan_from_settings
    from migrate.report.status import status_from_settings

    status = status_from_settings(entry.settings)
    issues = status.entities.get("issue", {})
    records = int(issues.get("extracted", 0)) + int(status.inspections.get("extracted", 0))
    size = int(status.attachments.get("bytes_stored", 0))
    if not status.staging_db_exists or not records:
        return records, READS_PER_PROJECT, size, "nothing staged yet: run extract first"
    try:
        plan = plan_from_settings(entry.settings)
    except MigrateError:
        staged = (
            math.ceil(int(issues.get("extracted", 0)) / PAYLOAD_BATCH)
            + int(status.inspections.get("extracted", 0)) * REQUESTS_PER_CHECKLIST
            + int(status.attachments.get("stored", 0))
            + READS_PER_PROJECT
        )
        return records, staged, size, "staged counts (transform not run yet)"
    asked = plan.requests
    sync_items = asked.get(Request.SYNC_CREATE.value, 0) + asked.get(Request.SYNC_UPDATE.value, 0)
    writes = math.ceil(sync_items / PAYLOAD_BATCH)
    writes += sum(
        asked.get(kind.value, 0) for kind in (Request.STATUS_PATCH, Request.CLOSE, Request.LOOK_UP)
    )
    counts = plan.counts()
    writes += int(counts.get("location", {}).get("create", 0))
    writes += sum(plan.inspection_requests.values())
    writes += int(status.attachments.get("pending_upload", 0))
    # Reads: reference data, then reading every issue and inspection back for the report.
    loaded_or_planned = int(issues.get("planned", 0)) + int(status.inspections.get("planned", 0))
    reads = READS_PER_PROJECT + 2 * math.ceil(loaded_or_planned / _PAGE)
    if not writes and status.quota_run_id is not None:
        reads = 0  # loaded, nothing left to write: only a report would read again
    return records, writes + reads, size, "load plan"
