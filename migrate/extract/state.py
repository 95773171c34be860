"""What every extract step shares: the run context, the tally, pass cursors, source problems.

A *pass* is one complete extract. Its progress lives in ``cursors`` rows named ``extract:…``,
each written in the same transaction as the data it describes, so after a crash (``kill -9``
included) the next run continues the pass instead of starting over: listings resume at the
stored offset, one-call steps that finished are not called again, and detail retrieval and
downloads are derived from what the DB already holds. A finished pass deletes its cursors.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from migrate.clients.bim360field import FieldSession
from migrate.extract.normalise import Problem
from migrate.results import CHANGE_KINDS, ExtractResult, Progress
from migrate.runlog import RunLog
from migrate.store import BlobStore, Change, Store, get_cursor, record_problem, set_cursor

PASS_CURSOR = "extract:pass"
CURSOR_PREFIX = "extract:"
STAGE = "extract"

_ID_SEGMENT = re.compile(r"/[0-9a-fA-F]{8}-[0-9a-fA-F-]{4,}(?=/|$)")


@dataclass(frozen=True)
class ExtractOptions:
    """How to extract: the project (its id, or its name to look up), parallel downloads, and
    whether to retrieve every record again."""

    project_id: str | None = None
    project_name: str | None = None
    workers: int = 4
    full_refresh: bool = False
    #: Tries per attachment when the body arrives cut short (each try is a full download).
    download_attempts: int = 8
    #: The config file the options came from: named in messages and recorded with the run.
    config: str | None = None
    #: Fetch BIM 360 Field's own project export as a safety net (``--no-export`` turns it off).
    project_export: bool = True
    #: How long to wait for a running export, and how often to ask its status meanwhile.
    export_wait_seconds: float = 600.0
    export_poll_seconds: float = 15.0


@dataclass
class Tally:
    """Counters the steps add to; turned into the frozen ExtractResult at the end."""

    counts: dict[str, Counter[str]] = field(default_factory=dict)
    blobs_downloaded: int = 0
    blobs_skipped: int = 0
    blobs_failed: int = 0
    bytes_downloaded: int = 0
    download_retries: int = 0
    source_problems: int = 0
    incomplete: list[str] = field(default_factory=list)

    def change(self, entity: str, change: Change | str, n: int = 1) -> None:
        kind = change.value if isinstance(change, Change) else change
        if kind not in CHANGE_KINDS:
            raise ValueError(f"unknown change kind {kind!r}")
        self.counts.setdefault(entity, Counter({k: 0 for k in CHANGE_KINDS}))[kind] += n

    def touch(self, entity: str) -> None:
        """Make ``entity`` show in the summary even when nothing was counted."""
        self.counts.setdefault(entity, Counter({k: 0 for k in CHANGE_KINDS}))


@dataclass
class Context:
    """One extract run: where to read, where to write, and what was done so far."""

    store: Store
    session: FieldSession
    blobs: BlobStore
    options: ExtractOptions
    run_id: int
    pass_id: int
    full_refresh: bool
    progress: Progress
    log: RunLog | None
    #: No extract had finished on this staging DB when this pass began: every record is new.
    first_pass: bool = False
    tally: Tally = field(default_factory=Tally)

    @property
    def project_id(self) -> str:
        assert self.options.project_id is not None, "run() resolves the project first"
        return self.options.project_id

    def note(self, event: str, *, level: str = "info", **fields: Any) -> None:
        if self.log is not None:
            self.log.event(STAGE, event, level=level, **fields)

    def problems(self, problems: Iterable[Problem], *, endpoint: str | None) -> None:
        """Store source problems (call inside the transaction of the data they concern)."""
        for problem in problems:
            record_problem(
                self.store,
                self.run_id,
                problem.entity,
                problem.reason,
                source_id=problem.source_id,
                endpoint=endpoint,
                payload=problem.payload,
            )
            self.tally.source_problems += 1
            self.note(
                "source_problem",
                level="warning",
                entity=problem.entity,
                source_id=problem.source_id,
                endpoint=endpoint,
                message=problem.reason,
            )

    # -- pass cursors --------------------------------------------------------------------
    def cursor(self, name: str) -> tuple[int, dict[str, Any]]:
        """(position, state) of this pass's cursor ``name``; (0, {}) if it has none yet."""
        found = get_cursor(self.store, CURSOR_PREFIX + name)
        if found is None:
            return 0, {}
        return found.position, found.state

    def is_done(self, name: str) -> bool:
        return bool(self.cursor(name)[1].get("done"))

    def set_cursor(self, name: str, position: int, **state: Any) -> None:
        """Record progress of ``name``; call inside the transaction that wrote the data."""
        set_cursor(self.store, CURSOR_PREFIX + name, self.pass_id, position, state)

    def mark_done(self, name: str, **state: Any) -> None:
        self.set_cursor(name, 1, done=True, **state)


def endpoint_key(method: str, path: str) -> str:
    """ "GET /fieldapi/checklists/v1/:id" for stats: ids in paths folded together."""
    return f"{method} {_ID_SEGMENT.sub('/:id', path)}"


def requests_delta(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    """Attempts per endpoint made between two HttpStats snapshots, ids folded."""
    folded: Counter[str] = Counter()
    for key, count in after.items():
        delta = count - before.get(key, 0)
        if delta:
            method, _, path = key.partition(" ")
            folded[endpoint_key(method, path)] += delta
    return dict(sorted(folded.items()))


def build_result(
    ctx: Context,
    *,
    requests: Mapping[str, int],
    retries: int,
    logins: int,
    elapsed: float,
    completed: bool,
) -> ExtractResult:
    tally = ctx.tally
    return ExtractResult(
        run_id=ctx.run_id,
        pass_run_id=ctx.pass_id,
        counts={
            entity: {k: int(counts[k]) for k in CHANGE_KINDS}
            for entity, counts in tally.counts.items()
        },
        blobs_downloaded=tally.blobs_downloaded,
        blobs_skipped=tally.blobs_skipped,
        blobs_failed=tally.blobs_failed,
        bytes_downloaded=tally.bytes_downloaded,
        requests=dict(requests),
        retries=retries + tally.download_retries,
        download_retries=tally.download_retries,
        logins=logins,
        source_problems=tally.source_problems,
        elapsed_seconds=elapsed,
        full_refresh=ctx.full_refresh,
        first_pass=ctx.first_pass,
        completed=completed and not tally.incomplete,
    )
