"""What the benchmarks share: the machine line, BENCHMARKS.md sections, peak RSS, the thinned
sandbox project, the lower bounds of requests per API, and the naive per-item loader.

Importing this module has no side effects; ``migrate`` is imported inside the functions, so a
benchmark's ``--help`` stays instant.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = REPO / "BENCHMARKS.md"
#: Field endpoints read once per extract: project, reference data (checklist templates
#: included), voided ids, status history, the search count that checks the issue listing.
FIELD_ONE_CALL_ENDPOINTS = 9 + 3
#: The inventory of what is not migrated (issue 15): library files, library folders and daily
#: updates are one call each; photos, equipment and tasks are paged.
FIELD_INVENTORY_ONE_CALL = 3
#: The project export when it is ready: one status check, the latest-export call, two archives.
FIELD_EXPORT_CALLS = 4
#: Field listing and retrieve page sizes (the API's defaults).
FIELD_PAGE = 100
#: Issues per Procore sync call, and rows per Procore list page.
SYNC_ITEMS = 1000
PROCORE_PAGE = 100


def machine() -> str:
    """``x86_64, 2 CPUs, Python 3.11.7`` for a section's first sentence."""
    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def timestamp() -> str:
    """Now, as the benchmarks date their sections."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def append_section(lines: list[str], path: Path = BENCHMARKS) -> None:
    """Append one dated section to BENCHMARKS.md (created with its title when missing).

    Sections are separated by one blank line, however the file ended before.
    """
    tail = ""
    if path.exists() and path.stat().st_size:
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - 2))
            tail = handle.read().decode("utf-8", "replace")
    prefix = (
        "# Benchmarks\n\n"
        if not tail
        else ("" if tail.endswith("\n\n") else "\n" if tail.endswith("\n") else "\n\n")
    )
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(prefix + "\n".join(lines).strip("\n") + "\n")


def reset_peak_rss() -> bool:
    """Start this process's ``VmHWM`` again from its current RSS (Linux 4.0+); False if not.

    The pipeline runs its stages in one process, as ``migrate run`` does: without a reset each
    stage's figure would be the highest of it and every stage before it.
    """
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> tuple[float, float]:
    """Peak RSS of this process and of its largest reaped child, in MB.

    This process's figure is ``VmHWM`` (the high-water mark of its own address space), not
    ``ru_maxrss``: Linux carries ``ru_maxrss`` across fork and exec, so a subprocess started by
    a 400 MB benchmark would report at least 400 MB whatever it did itself. The children's
    figure is ``ru_maxrss`` and has that flaw: it is an upper bound that includes what each
    child inherited from this process when it started.
    """
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    own = int(line.split()[1]) / 1024  # kB
                    break
    except OSError:
        pass  # no /proc: ru_maxrss, the upper bound
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


# -- the sandbox project, thinned -----------------------------------------------------------
def thinned_project(issues: int, keep_every: int, cap: int, seed: int = 7) -> Any:
    """The generator's project with fewer, smaller files.

    Only every ``keep_every``-th issue keeps its files (1 = all of them; links to documents and
    URLs stay everywhere), and no file is larger than ``cap`` bytes, so a big project measures
    the pipeline rather than the disk.
    """
    sys.path.insert(0, str(REPO))
    from migrate.sandbox.generator import GeneratedFieldProject, GeneratedProject

    class ThinnedFieldProject(GeneratedFieldProject):
        def issue(self, index: int) -> dict[str, Any]:
            record = super().issue(index)
            keep = index % keep_every == 0
            record["attachments"] = [
                _capped(a, cap)
                for a in record["attachments"]
                if keep or a["type"] == "UriReference"
            ]
            return record

        def checklist(self, index: int) -> dict[str, Any]:
            record = super().checklist(index)
            record["attachments"] = [_capped(a, cap) for a in record["attachments"]]
            record["signatures"] = [_capped(s, cap) for s in record["signatures"]]
            for section in record["sections"]:
                for item in section["items"]:
                    item["attachments"] = [_capped(a, cap) for a in item["attachments"]]
            return record

    project = GeneratedProject(seed=seed, issues=issues)
    main = project.projects[0]
    project.projects[0] = ThinnedFieldProject(main.meta, main.seed, project.users)
    return project


def _capped(item: dict[str, Any], cap: int) -> dict[str, Any]:
    if "size" in item:
        item = dict(item, size=min(item["size"], cap))
    return item


# -- lower bounds ---------------------------------------------------------------------------
def field_lower_bound(
    counts: Mapping[str, int], blobs: int, inventory: Mapping[str, int] | None = None
) -> dict[str, int]:
    """The fewest BIM 360 Field requests a full extract can make.

    ``counts`` is ``FieldApp.counts()``, ``blobs`` the files downloaded (signatures and
    marked-up renditions included). Listing pages (issues that are not voided, checklists,
    checklist headers: deleted checklists included, as the headers carry the deleted flag) +
    retrieve batches of 100 ids + 1 per file + the one-call endpoints; ``with_checklists`` adds
    one detail call per checklist, which the checklist API has no batch read for.
    ``inventory`` (``FieldApp.inventory_counts()``) adds the safety net: the inventory's pages
    and calls and a ready project export.
    """
    listed = counts["issues"] - counts["voided_issues"]
    checklists = counts["checklists"]
    headers = checklists + counts.get("deleted_checklists", 0)
    pages = (
        (listed // FIELD_PAGE + 1) + (checklists // FIELD_PAGE + 1) + (headers // FIELD_PAGE + 1)
    )
    retrieves = math.ceil(counts["issues"] / FIELD_PAGE)
    safety_net = 0
    if inventory is not None:
        paged = sum(inventory[name] // FIELD_PAGE + 1 for name in ("photos", "equipment", "tasks"))
        safety_net = paged + FIELD_INVENTORY_ONE_CALL + FIELD_EXPORT_CALLS
    bound = pages + retrieves + blobs + FIELD_ONE_CALL_ENDPOINTS + safety_net
    return {
        "pages": pages,
        "retrieves": retrieves,
        "blobs": blobs,
        "one_call": FIELD_ONE_CALL_ENDPOINTS,
        "safety_net": safety_net,
        "lower_bound": bound,
        "checklists": checklists,
        "with_checklists": bound + checklists,
    }


def procore_lower_bound(
    issues: int,
    location_calls: int,
    location_reads: int,
    attachments: int,
    other_reads: int = 0,
    tokens: int = 1,
    access_checks: int = 1,
) -> int:
    """The fewest Procore requests that create ``issues`` issues with their files.

    ``ceil(issues / 1000)`` sync calls + one call per leaf location Procore lacks (no bulk
    create) + the list pages needed for inner-node ids + 2 per attachment (create the upload,
    POST it to storage) + ``other_reads`` (e.g. a snapshot) + the token + the access check
    every stage that reads Procore starts with (one Show Project: credentials, company and
    project proven even when nothing is to be sent).
    """
    return (
        math.ceil(issues / SYNC_ITEMS)
        + location_calls
        + location_reads
        + 2 * attachments
        + other_reads
        + tokens
        + access_checks
    )


# -- the naive way --------------------------------------------------------------------------
def naive_load(client: Any, store: Any, blobs: Any, project_id: int) -> dict[str, int]:
    """Load a plan the way a per-item connector does: no batching, nothing skipped.

    One ``find_or_create_location`` per planned location node, then per planned issue its
    uploads (create + storage POST each) and one ``create_issue``. ``client`` is a
    ``ProcoreClient``, ``store`` an open staging store, ``blobs`` its ``BlobStore``.
    """
    ids: dict[str, int] = {}
    for source_id, path in store.conn.execute(
        "SELECT source_id, path FROM planned_locations ORDER BY depth, source_id"
    ):
        location, _ = client.find_or_create_location(project_id, json.loads(path))
        ids[source_id] = int(location["id"])
    # Names and types as the real load sends them (migrate/load/uploads.py).
    files = {
        a: (s, n or f"attachment-{a}", c or "application/octet-stream")
        for a, s, n, c in store.conn.execute(
            "SELECT id, sha256, filename, content_type FROM attachments WHERE sha256 IS NOT NULL"
        )
    }
    issues = uploads = 0
    for payload, location, attachment_ids in store.conn.execute(
        "SELECT payload, location_source_id, attachment_ids FROM planned_issues ORDER BY source_id"
    ).fetchall():
        fields = json.loads(payload)
        if location is not None:
            fields["location_id"] = ids[location]
        upload_uuids = []
        for attachment_id in json.loads(attachment_ids or "[]"):
            sha256, name, content_type = files[attachment_id]
            upload = client.create_upload(project_id, name, content_type)
            with blobs.open(sha256) as blob:
                client.put_upload_bytes(upload, blob, sha256=sha256)
            upload_uuids.append(upload.uuid)
            uploads += 1
        if upload_uuids:
            fields["attachment_upload_uuids"] = upload_uuids
        client.create_issue(project_id, fields)
        issues += 1
    return {"locations": len(ids), "issues": issues, "uploads": uploads}
