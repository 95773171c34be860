"""Whether a staging DB holds what a command works from: extracted records, or a plan.

``transform`` on a DB that holds nothing extracted, or ``load`` before any transform finished,
would succeed with "0 planned" / "created 0" and look like a finished migration; they stop
instead (StagingNotReady, exit 2) and name the command to run first.
"""

from __future__ import annotations

from migrate.errors import StagingNotReady
from migrate.store.db import Store
from migrate.store.runs import has_succeeded

__all__ = ["require_prior_stage"]

# Tables extract fills; any row in one means something was extracted (even by a failed run).
_EXTRACTED = ("issues", "areas", "checklists")


def require_prior_stage(store: Store, command: str) -> None:
    """Raise StagingNotReady when `command` ("transform", "load") has nothing to work from."""
    extracted = _succeeded(store, "extract") or any(
        store.conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() for table in _EXTRACTED
    )
    if command == "transform" and not extracted:
        raise StagingNotReady(
            f"{store.path} holds nothing extracted yet, so there is nothing to transform. "
            "Run `migrate extract` first."
        )
    if command == "load" and not _succeeded(store, "transform"):
        first = "`migrate transform`" if extracted else "`migrate extract`, then `transform`,"
        raise StagingNotReady(
            f"No transform has finished in {store.path} yet, so there is nothing to load. "
            f"Run {first} first."
        )


def _succeeded(store: Store, command: str) -> bool:
    return has_succeeded(store, command)
