"""Deterministic ids: the uuid a planned coordination issue carries into Procore.

The uuid is derived from the Procore project and the source record, never random, so a run that
was killed after sending a batch re-sends the same uuids and Procore's "has already been taken"
tells load the issue exists. The namespace is fixed forever: changing it would make every issue
already loaded look new.
"""

from __future__ import annotations

import hashlib
import uuid

#: Procore entities in id_map, quarantine and the plan. Names are stored in staging DBs: never
#: rename one.
ENTITY_ISSUE = "coordination_issue"
ENTITY_LOCATION = "location"
#: What `migrate plan` can say about a record (`--show` takes these). Here rather than in
#: load/plan.py so the CLI can offer them without importing the load package.
PLAN_KINDS = (
    "create",
    "update",
    "status_change",
    "unchanged",
    "skipped",
    "blocked",
    "deleted_at_source",
    "attachments_after_load",
)

#: Namespace of every uuid `migrate` derives:
#: uuid5(NAMESPACE_URL, "migrate:bim360field-procore").
NAMESPACE_MIGRATE = uuid.UUID("133079ef-72a2-528c-8b02-b1ae977b2f89")
_NAMESPACE_BYTES = NAMESPACE_MIGRATE.bytes


def issue_uuid(target_project_id: int, source_id: str) -> str:
    """The coordination-issue uuid for a Field issue (or "checklist_item:<id>") in a project.

    Equal to ``str(uuid.uuid5(NAMESPACE_MIGRATE, f"procore-project:{project}:field-issue:{id}"))``
    computed without building a UUID object (transform derives one per issue).
    """
    name = f"procore-project:{target_project_id}:field-issue:{source_id}"
    raw = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name.encode("utf-8")).digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50  # version 5
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
