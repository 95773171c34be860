"""``migrate portfolio run`` on one machine: several projects at once, one quota between them.

Each project runs in a process of its own (``python -m migrate.portfolio.worker``: a fresh
interpreter on every OS, no fork), at most ``[portfolio] parallel`` at a time. Every process
spends the one Procore quota through the SQLite ledger in the portfolio's work folder
(:mod:`migrate.clients.sharedquota`), named in the environment each worker is started with.

A failure is the project's own: its worker records it and exits, the others go on, and the
next ``portfolio run`` resumes it (each stage is resumable) while projects already completed
are left alone (``rerun_completed`` runs them again, e.g. for a delta sync). A worker that dies
without recording an outcome is recorded as failed by the parent.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO

from migrate.clients.sharedquota import create_ledger, ledger_totals
from migrate.errors import EXIT_FAILED, EXIT_OK, EXIT_QUARANTINED
from migrate.portfolio import state
from migrate.portfolio.config import Portfolio, ProjectEntry
from migrate.portfolio.project import STAGES, ProjectOutcome
from migrate.results import NoProgress, Progress

_PROGRESS_ENTITY = "projects"
#: Seconds between two looks at the running workers.
_POLL_SECONDS = 0.2
#: Each worker's own output (stage lines, anything unexpected) goes to this file in its folder.
WORKER_LOG = "portfolio-worker.log"


@dataclass(frozen=True)
class PortfolioRunResult:
    """What one ``portfolio run`` did: each project's outcome, and the projects left alone."""

    outcomes: tuple[ProjectOutcome, ...]
    already_completed: tuple[str, ...] = ()
    #: Projects left alone because a worker of another `portfolio run` still runs them.
    still_running: tuple[str, ...] = ()
    elapsed_seconds: float = 0.0
    #: Procore requests every project of the portfolio has spent so far, and 429s seen, per
    #: the shared ledger (None when there is none).
    quota_spent: tuple[int, int] | None = None

    @property
    def exit_code(self) -> int:
        """1 when any project failed (or another run still runs one), 3 when any waits on
        quarantined records, else 0."""
        if self.still_running or any(not o.completed for o in self.outcomes):
            return EXIT_FAILED
        if any(o.exit_code == EXIT_QUARANTINED for o in self.outcomes):
            return EXIT_QUARANTINED
        return EXIT_OK

    def summary_lines(self) -> list[str]:
        lines = []
        for outcome in self.outcomes:
            if outcome.completed:
                note = "done" if outcome.exit_code == EXIT_OK else "done, records quarantined"
            else:
                note = f"FAILED in {outcome.failed_stage}: {outcome.error}"
            lines.append(f"{outcome.name}: {note}")
        if self.already_completed:
            lines.append(
                "Already completed, not run again: " + ", ".join(self.already_completed) + "."
            )
        if self.still_running:
            lines.append(
                "Still running in another `migrate portfolio run`, left alone: "
                + ", ".join(self.still_running)
                + "."
            )
        failed = [o.name for o in self.outcomes if not o.completed]
        if failed:
            lines.append(
                f"{len(failed)} of {len(self.outcomes)} projects failed; the others are kept. "
                "Fix the cause and run `migrate portfolio run` again: it resumes them."
            )
        if self.quota_spent is not None:
            requests, limited = self.quota_spent
            lines.append(
                f"Procore requests from the shared quota so far: {requests:,} "
                f"({limited} answered 429)."
            )
        lines.append(f"Took {self.elapsed_seconds:.0f} s.")
        return lines


def run_portfolio(
    portfolio: Portfolio,
    env: Mapping[str, str] = os.environ,
    *,
    projects: Sequence[str] | None = None,
    stages: Sequence[str] = STAGES,
    rerun_completed: bool = False,
    parallel: int | None = None,
    on_outcome: Callable[[ProjectOutcome], None] | None = None,
    progress: Progress | None = None,
) -> PortfolioRunResult:
    """Run ``stages`` for the portfolio's projects (``projects``: only those, by name), at most
    ``parallel`` (default ``[portfolio] parallel``) at once, every Procore call drawing on one
    quota. Never raises for a project's failure; ``on_outcome`` is told as each one ends and
    ``progress`` counts "projects" done."""
    started = time.monotonic()
    chosen = [portfolio.project(name) for name in projects] if projects else portfolio.projects
    stage_list = tuple(s for s in STAGES if s in stages)
    latest = state.latest_attempts(portfolio.state_path)
    done_before: list[str] = []
    busy: list[str] = []
    waiting: list[ProjectEntry] = []
    for entry in chosen:
        attempt = latest.get(entry.name)
        if attempt is not None and attempt.alive:
            busy.append(f"{entry.name} (process {attempt.pid})")
            continue
        finished_all = (
            attempt is not None
            and attempt.status == state.COMPLETED
            and set(stage_list) <= set(attempt.stages)
        )
        if finished_all and not rerun_completed:
            done_before.append(entry.name)
        else:
            waiting.append(entry)
    create_ledger(portfolio.ledger_path, portfolio.quota)
    progress = progress or NoProgress()
    progress.start(_PROGRESS_ENTITY, len(waiting))
    limit = max(1, parallel or portfolio.parallel)
    running: dict[str, _Worker] = {}
    outcomes: dict[str, ProjectOutcome] = {}
    try:
        while waiting or running:
            while waiting and len(running) < limit:
                entry = waiting.pop(0)
                running[entry.name] = _start_worker(portfolio, entry, stage_list, env)
            time.sleep(_POLL_SECONDS)
            for name, worker in list(running.items()):
                code = worker.process.poll()
                if code is None:
                    continue
                del running[name]
                outcome = worker.finish(portfolio, code)
                outcomes[name] = outcome
                progress.advance(_PROGRESS_ENTITY)
                if on_outcome is not None:
                    on_outcome(outcome)
    finally:
        for worker in running.values():  # only after Ctrl-C: they were told too
            worker.wait_then_finish(portfolio)
        progress.finish(_PROGRESS_ENTITY)
    ordered = tuple(outcomes[e.name] for e in chosen if e.name in outcomes)
    totals = ledger_totals(portfolio.ledger_path).values()
    return PortfolioRunResult(
        ordered,
        tuple(done_before),
        tuple(busy),
        elapsed_seconds=time.monotonic() - started,
        quota_spent=(sum(t["requests"] for t in totals), sum(t["rate_limited"] for t in totals)),
    )


@dataclass
class _Worker:
    entry: ProjectEntry
    attempt_id: int
    process: subprocess.Popen[bytes]
    log: IO[bytes]

    def finish(self, portfolio: Portfolio, code: int) -> ProjectOutcome:
        self.log.close()
        attempt = state.get_attempt(portfolio.state_path, self.attempt_id)
        if attempt.outcome is not None:
            return attempt.outcome
        # The worker ended without a word (killed, crashed): the project failed, resumably.
        log_path = self.entry.folder / WORKER_LOG
        outcome = ProjectOutcome(
            self.entry.name,
            code if code not in (EXIT_OK, EXIT_QUARANTINED) else EXIT_FAILED,
            failed_stage=attempt.stage,
            error=f"its worker process ended with exit code {code}; see {log_path}",
        )
        state.finish_attempt(portfolio.state_path, self.attempt_id, outcome)
        return outcome

    def wait_then_finish(self, portfolio: Portfolio) -> None:
        try:
            code = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.finish(portfolio, code)


def _start_worker(
    portfolio: Portfolio, entry: ProjectEntry, stages: tuple[str, ...], env: Mapping[str, str]
) -> _Worker:
    attempt_id = state.start_attempt(portfolio.state_path, entry.name, stages)
    entry.folder.mkdir(parents=True, exist_ok=True)
    log = (entry.folder / WORKER_LOG).open("ab")
    command = [
        sys.executable,
        "-m",
        "migrate.portfolio.worker",
        str(portfolio.path),
        entry.name,
        ",".join(stages),
        str(attempt_id),
    ]
    process = subprocess.Popen(
        command,
        # Stage lines and errors may hold any character; the log file is UTF-8 on every OS.
        env={**env, "PYTHONIOENCODING": "utf-8"},
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=str(portfolio.path.parent),
    )
    state.set_pid(portfolio.state_path, attempt_id, process.pid)
    return _Worker(entry, attempt_id, process, log)
