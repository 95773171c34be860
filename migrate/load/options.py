"""How to load (its own module so load/state.py can type the run's context with it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LoadOptions:
    """How to load: the target project, parallel uploads, items per sync call, deletions."""

    target_project_id: int
    workers: int = 4
    batch_size: int = 1000
    apply_deletions: bool = False
    #: Re-send creates Procore refused before even though their plan did not change (after
    #: fixing the cause in Procore). Off: an unchanged refused record costs no request.
    retry_rejected: bool = False
