"""What stages return (frozen dataclasses) and the progress callback they report through.

Stages never print: the CLI renders ``summary_lines()``, exits with ``exit_code`` and wires
:class:`Progress` to tqdm. Every stage result is a :class:`StageResult`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from migrate.errors import EXIT_OK, EXIT_QUARANTINED
from migrate.termtable import Column, render, size_text

#: The four ways a source record can have moved since the previous run.
CHANGE_KINDS = ("new", "changed", "unchanged", "deleted")


class Progress(Protocol):
    """Progress per entity; ``total`` is None when the source does not say how many."""

    def start(self, entity: str, total: int | None) -> None:
        """A new bar for ``entity``."""

    def advance(self, entity: str, n: int = 1) -> None:
        """``n`` more records of ``entity`` done."""

    def finish(self, entity: str) -> None:
        """``entity`` is done (or stopped)."""


#: What a progress bar counts, by the name its stage gives it; any other bar counts records.
BAR_UNITS = {
    "attachments": "files",
    "reference": "lists",
    "project export (status checks)": "checks",
    "not migrated (counted)": "families",
    "updates": "issues",
}


def bar_unit(entity: str) -> str:
    """What the bar ``entity`` counts (plural): files, lists, records ..."""
    return BAR_UNITS.get(entity, "records")


def resume_line(command: str) -> str:
    """A stopped stage's last summary line; the CLI puts in the command exactly as typed."""
    return f"Run `{command}` again to finish; it resumes where this one stopped."


class StageResult(Protocol):
    """What every stage's ``run`` returns (extract, transform, load, report).

    The CLI prints ``summary_lines()`` and exits with ``exit_code``; the run row keeps
    ``as_json()`` and ``requests_json()`` (see ``store.runs.recorded_run``).
    """

    @property
    def run_id(self) -> int | None:
        """The runs row of the run that made this result."""

    @property
    def counts(self) -> Mapping[str, Mapping[str, int]]:
        """Per entity, how many records ended each way (the stage's own kinds)."""

    @property
    def exit_code(self) -> int:
        """0 done, 3 done but records wait in quarantine, 1 something is wrong."""

    def summary_lines(self) -> list[str]:
        """The one-screen summary the CLI prints."""

    def as_json(self) -> dict[str, Any]:
        """A plain dict for the runs table and logs."""

    def requests_json(self) -> dict[str, int] | None:
        """Requests per endpoint this run made, or None for a stage that calls no API."""


class NoProgress:
    """A :class:`Progress` that shows nothing."""

    def start(self, entity: str, total: int | None) -> None:
        pass

    def advance(self, entity: str, n: int = 1) -> None:
        pass

    def finish(self, entity: str) -> None:
        pass


@dataclass(frozen=True)
class ExtractResult:
    """What one ``extract`` run did.

    ``counts`` maps an entity (issues, checklists, areas ...) to how many of its records were
    new, changed, unchanged or deleted in the source compared with the staging DB.
    ``requests`` maps "METHOD /path" (ids shown as ``:id``) to the HTTP attempts made, retries
    included. ``completed`` is False when the run stopped partway (see ``StageFailed.partial``)
    or when a listing could not be read whole this time (see ``source_problems``).
    """

    run_id: int
    pass_run_id: int
    counts: Mapping[str, Mapping[str, int]]
    blobs_downloaded: int = 0
    blobs_skipped: int = 0
    blobs_failed: int = 0
    bytes_downloaded: int = 0
    requests: Mapping[str, int] = field(default_factory=dict)
    retries: int = 0  # HTTP retries plus download_retries
    download_retries: int = 0  # downloads started again because the body was cut short
    logins: int = 0
    source_problems: int = 0
    elapsed_seconds: float = 0.0
    full_refresh: bool = False
    #: The first extract into this staging DB: every record retrieved, none compared.
    first_pass: bool = False
    completed: bool = True
    #: What is not migrated and where the project export keeps it (report/inventory.py).
    left_behind: tuple[str, ...] = ()

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    @property
    def exit_code(self) -> int:
        """Always 0: what could not be read is in source_problems and the summary says so."""
        return EXIT_OK

    def requests_json(self) -> dict[str, int]:
        """Requests per endpoint for the runs table."""
        return dict(self.requests)

    @property
    def changed(self) -> int:
        """Records new, changed or deleted across every entity (0 after a no-change re-run)."""
        return sum(
            c.get("new", 0) + c.get("changed", 0) + c.get("deleted", 0)
            for c in self.counts.values()
        )

    def as_json(self) -> dict[str, Any]:
        """A plain dict for the runs table and logs."""
        return {
            "counts": {entity: dict(counts) for entity, counts in self.counts.items()},
            "blobs": {
                "downloaded": self.blobs_downloaded,
                "skipped": self.blobs_skipped,
                "failed": self.blobs_failed,
                "bytes": self.bytes_downloaded,
            },
            "retries": self.retries,
            "download_retries": self.download_retries,
            "logins": self.logins,
            "source_problems": self.source_problems,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "full_refresh": self.full_refresh,
            "first_pass": self.first_pass,
            "completed": self.completed,
            "pass_run_id": self.pass_run_id,
        }

    def summary_lines(self) -> list[str]:
        """The one-screen summary the CLI prints after ``migrate extract``."""
        if self.full_refresh:
            how = "full refresh"
        elif self.first_pass:
            how = "full: the first extract"
        else:
            how = "incremental"
        state = "finished" if self.completed else "stopped before finishing"
        resumed = "" if self.pass_run_id == self.run_id else f", resuming run {self.pass_run_id}"
        lines = [
            f"Extract run {self.run_id} {state} in {self.elapsed_seconds:.1f} s ({how}{resumed})."
        ]
        lines += count_table(self.counts, CHANGE_KINDS, column_width=9)
        lines.append(
            f"Attachments: {self.blobs_downloaded} downloaded "
            f"({size_text(self.bytes_downloaded)}), {self.blobs_skipped} already stored, "
            f"{self.blobs_failed} failed."
        )
        lines.append(
            f"Requests to BIM 360 Field: {self.total_requests} "
            f"({self.retries} retried, {self.logins} logins)."
        )
        lines.extend(self.left_behind)
        if self.source_problems:
            lines.append(
                f"Source problems: {self.source_problems} recorded this run; see the "
                "source_problems table in the staging DB."
            )
        if self.blobs_failed:
            lines.append(
                "Failed attachments keep state = 'failed' in the attachments table with "
                "the reason; transient failures are retried by the next run."
            )
        if not self.completed:
            lines.append(resume_line("migrate extract"))
        return lines


#: What transform counts per source entity (issues, areas, checklist_items).
TRANSFORM_KINDS = ("extracted", "planned", "quarantined", "skipped", "released")


@dataclass(frozen=True)
class TransformResult:
    """What one ``transform`` run did.

    ``counts`` maps a source entity to its extracted / planned / quarantined / skipped records
    (planned + quarantined + skipped = extracted) and how many quarantine rows this run
    released. ``plan_hash`` is a sha256 over the planned rows in source_id order: equal hashes
    mean byte-identical plans.
    """

    run_id: int
    counts: Mapping[str, Mapping[str, int]]
    plan_hash: str
    elapsed_seconds: float = 0.0
    target_project_id: int | None = None
    offline: bool = False
    planned_locations: int = 0
    #: Open quarantine rows of every stage once the run finished (what makes exit code 3).
    quarantine_open: int = 0

    @property
    def elapsed(self) -> float:
        return self.elapsed_seconds

    @property
    def quarantined(self) -> int:
        return sum(c.get("quarantined", 0) for c in self.counts.values())

    @property
    def exit_code(self) -> int:
        """0: the plan is whole; 3: records wait in quarantine (this run's or a load's)."""
        return EXIT_QUARANTINED if self.quarantine_open else EXIT_OK

    def requests_json(self) -> None:
        """Transform's own requests are not recorded (only load's count against the quota)."""
        return None

    def as_json(self) -> dict[str, Any]:
        """A plain dict for the runs table and logs."""
        return {
            "counts": {entity: dict(counts) for entity, counts in self.counts.items()},
            "plan_hash": self.plan_hash,
            "planned_locations": self.planned_locations,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "target_project_id": self.target_project_id,
            "offline": self.offline,
        }

    def summary_lines(self) -> list[str]:
        """The one-screen summary the CLI prints after ``migrate transform``."""
        snapshot = "last Procore snapshot (offline)" if self.offline else "fresh Procore snapshot"
        lines = [
            f"Transform run {self.run_id} finished in {self.elapsed_seconds:.1f} s "
            f"against Procore project {self.target_project_id} ({snapshot})."
        ]
        lines += count_table(self.counts, TRANSFORM_KINDS, column_width=11)
        lines.append(f"Planned locations (with ancestors): {self.planned_locations}.")
        lines.append(f"Plan hash: {self.plan_hash}")
        if self.quarantined:
            lines.append(
                f"{self.quarantined} records are quarantined: see `migrate quarantine "
                "list`, fix the mapping or the source, then run transform again."
            )
        lines.append("Next: `migrate plan` shows what load would do.")
        return lines


#: What load counts per entity (location, coordination_issue).
LOAD_KINDS = ("created", "updated", "status_changed", "unchanged", "rejected", "closed")


@dataclass(frozen=True)
class LoadResult:
    """What one ``load`` run did.

    ``counts`` maps ``location`` and ``coordination_issue`` to how many records were created,
    updated (sync), status_changed (single PATCH), unchanged, rejected (quarantined, or held
    because Procore refused that very payload before) and closed (deleted at the source,
    ``--apply-deletions``). ``requests`` maps "METHOD /path" (ids as ``:id``) to the requests
    made this run, retries included; storage POSTs are listed but do not count against
    Procore's quota. ``attachments_after_load`` and ``deleted_at_source`` list records that
    need a decision: ``{source_id, target_id, …}``. ``quota_wait_seconds`` is the time calls
    spent held back by the rate budget, summed over the threads (uploads wait in parallel).
    """

    COUNT_KINDS = LOAD_KINDS

    run_id: int
    counts: Mapping[str, Mapping[str, int]]
    target_project_id: int | None = None
    uploads_done: int = 0
    uploads_reused: int = 0
    requests: Mapping[str, int] = field(default_factory=dict)
    quota_wait_seconds: float = 0.0
    rate_limited: int = 0
    sync_batch_sizes: tuple[int, ...] = ()
    attachments_after_load: tuple[Mapping[str, Any], ...] = ()
    deleted_at_source: tuple[Mapping[str, Any], ...] = ()
    quarantine_open: int = 0
    apply_deletions: bool = False
    elapsed_seconds: float = 0.0
    completed: bool = True
    #: Company checklist templates this run "created", or "reused" (an identical one another
    #: project of the company built: no copy made).
    company_templates: Mapping[str, int] = field(default_factory=dict)

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    @property
    def quota_requests(self) -> int:
        """Requests Procore counts against the quota (storage and token calls are free)."""
        return sum(n for key, n in self.requests.items() if " /rest/" in key)

    @property
    def write_requests(self) -> int:
        """Requests that may change Procore (everything but GETs and the token)."""
        return sum(
            n
            for key, n in self.requests.items()
            if not key.startswith("GET ") and "/oauth/" not in key
        )

    @property
    def attachments_after_load_count(self) -> int:
        return sum(len(item.get("attachment_ids", ())) for item in self.attachments_after_load)

    @property
    def deleted_at_source_count(self) -> int:
        return len(self.deleted_at_source)

    @property
    def elapsed(self) -> float:
        return self.elapsed_seconds

    @property
    def exit_code(self) -> int:
        """0: everything is in Procore; 3: finished, but records wait in quarantine."""
        return EXIT_QUARANTINED if self.quarantine_open else EXIT_OK

    def as_json(self) -> dict[str, Any]:
        """A plain dict for the runs table and logs."""
        return {
            "counts": {entity: dict(counts) for entity, counts in self.counts.items()},
            "uploads": {"done": self.uploads_done, "reused": self.uploads_reused},
            "sync_batch_sizes": list(self.sync_batch_sizes),
            "quota_wait_seconds": round(self.quota_wait_seconds, 3),
            "rate_limited": self.rate_limited,
            "attachments_after_load": [dict(item) for item in self.attachments_after_load],
            "deleted_at_source": [dict(item) for item in self.deleted_at_source],
            "quarantine_open": self.quarantine_open,
            "apply_deletions": self.apply_deletions,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "target_project_id": self.target_project_id,
            "completed": self.completed,
            "company_templates": dict(self.company_templates),
        }

    def requests_json(self) -> dict[str, int]:
        """Requests per endpoint for the runs table (``migrate status`` sums them)."""
        return dict(self.requests)

    def summary_lines(self) -> list[str]:
        """The one-screen summary the CLI prints after ``migrate load``."""
        state = "finished" if self.completed else "stopped before finishing"
        lines = [
            f"Load run {self.run_id} {state} in {self.elapsed_seconds:.1f} s into Procore "
            f"project {self.target_project_id}."
        ]
        lines += count_table(self.counts, LOAD_KINDS, column_width=14)
        lines.append(
            f"Attachments: {self.uploads_done} uploaded, {self.uploads_reused} reused "
            "from an earlier attempt."
        )
        # Only when one was reused: a project alone creates its own, as always.
        if self.company_templates.get("reused"):
            lines.append(
                f"Company checklist templates: {self.company_templates.get('created', 0)} "
                f"created, {self.company_templates.get('reused', 0)} reused (identical ones "
                "another project of the company built; no copy made)."
            )
        lines.append(
            f"Requests to Procore: {self.total_requests} ({self.quota_requests} against the "
            f"quota, {self.write_requests} writes); {self.quota_wait_seconds:.1f} s waited on "
            f"the quota (summed over threads), {self.rate_limited} answered 429."
        )
        if self.attachments_after_load:
            lines.append(
                f"{self.attachments_after_load_count} attachments appeared at the source after "
                f"their issue was loaded ({len(self.attachments_after_load)} issues). Procore "
                "cannot add attachments to an existing coordination issue: decide what to do "
                "(see `migrate status` and the report)."
            )
        if self.deleted_at_source:
            closed = sum(
                1 for item in self.deleted_at_source if item.get("target_status") == "closed"
            )
            if self.apply_deletions:
                lines.append(
                    f"{self.deleted_at_source_count} loaded issues are deleted or voided "
                    f"at the source; {closed} are closed in Procore."
                )
            else:
                lines.append(
                    f"{self.deleted_at_source_count} loaded issues are deleted or voided "
                    "at the source; `migrate load --apply-deletions` closes them in "
                    "Procore."
                )
        if self.quarantine_open:
            lines.append(
                f"{self.quarantine_open} records are in quarantine: see `migrate quarantine list`."
            )
        if not self.completed:
            lines.append(resume_line("migrate load"))
        return lines


def count_table(
    counts: Mapping[str, Mapping[str, int]], kinds: Sequence[str], *, column_width: int = 0
) -> list[str]:
    """Per-entity counts as a text table: a header row, then one row per entity.

    ``column_width`` is the narrowest a count column gets (so tables printed one after
    another line up); wider headers or counts widen it.
    """
    columns = [Column("entity"), *(Column(k, right=True, min_width=column_width) for k in kinds)]
    return render(
        columns, ([entity, *(c.get(k, 0) for k in kinds)] for entity, c in counts.items())
    )
