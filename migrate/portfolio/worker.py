"""One project of ``migrate portfolio run``, in a process of its own.

Started by :mod:`migrate.portfolio.local` as ``python -m migrate.portfolio.worker <portfolio.toml>
<project> <stages> <attempt id>`` (a fresh interpreter on every OS: nothing depends on fork),
with the shared quota named in its environment. Records each stage and the outcome in the
portfolio's state file; its exit code is the project's.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from migrate import stopping
from migrate.errors import MigrateError
from migrate.portfolio import state
from migrate.portfolio.config import load_portfolio
from migrate.portfolio.project import LedgerQuota, ProjectOutcome, run_project


def _on_ctrl_c(signum: int, frame: Any) -> None:
    # As `migrate run` does: every worker thread and wait sees the stop, the stage records its
    # run as interrupted; the Ctrl-C reaches this process with the parent's.
    stopping.STOP.set()
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, _on_ctrl_c)
    portfolio_path, name, stages_text, attempt_text = argv
    attempt_id = int(attempt_text)
    try:
        portfolio = load_portfolio(portfolio_path, os.environ)
        entry = portfolio.project(name)
    except MigrateError as error:  # the parent records it: the state file may be unknown
        print(f"{name}: {error}", file=sys.stderr, flush=True)
        return error.exit_code
    stages = tuple(s for s in stages_text.split(",") if s)

    def on_stage(stage: str, event: str) -> None:
        if event == "started":
            state.mark_stage(portfolio.state_path, attempt_id, stage)
        print(f"{name}: {stage} {event}", flush=True)

    try:
        outcome = run_project(
            entry, stages, LedgerQuota(portfolio.ledger_path), os.environ, on_stage=on_stage
        )
    except KeyboardInterrupt:
        outcome = ProjectOutcome(name, 130, error="stopped (Ctrl-C); rerun resumes it")
    state.finish_attempt(portfolio.state_path, attempt_id, outcome)
    if outcome.error:
        print(f"{name}: {outcome.failed_stage or ''} {outcome.error}", flush=True)
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
