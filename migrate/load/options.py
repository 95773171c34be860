"""How to load (its own module so load/state.py can type the run's context with it)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from migrate.clients.companylock import CompanyLock, NoLock


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
    #: With apply_deletions: close at most this many issues (None: load/decision.py
    #: deletion_limit). Over the limit, load refuses before writing anything (exit 2).
    max_deletions: int | None = None
    #: Called with the issues about to be closed ({source_id, target_id, title,
    #: target_status}) before load writes anything, so the engineer sees them first.
    on_deletions: Callable[[Sequence[Mapping[str, Any]]], None] | None = None
    #: Held while company-level inspection set-up is found or created (another project of
    #: the company may be loading: `migrate portfolio run`); NoLock for a project alone.
    company_lock: CompanyLock = field(default_factory=NoLock)
