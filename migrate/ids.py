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
#: Procore Inspections (issue 14): source ids are Field ids unless said otherwise.
ENTITY_INSPECTION_TYPE = "inspection_type"  # source id: the type name, lower case
ENTITY_RESPONSE_SET = "inspection_response_set"  # source id: the set's name
ENTITY_INSPECTION_TEMPLATE = "inspection_template"  # company template; Field template id
ENTITY_TEMPLATE_SECTION = "inspection_template_section"  # "<template id>:<section position>"
ENTITY_TEMPLATE_ITEM = "inspection_template_item"  # Field template item id
ENTITY_PROJECT_TEMPLATE = "inspection_project_template"  # Field template id
ENTITY_INSPECTION = "inspection"  # Field checklist id
ENTITY_ITEM_RESPONSE = "inspection_item_response"  # Field checklist item id
ENTITY_ITEM_COMMENT = "inspection_item_comment"  # "<checklist item id>:<comment key>"
ENTITY_INSPECTION_FILE = "inspection_file"  # attachments.id on the inspection (upload_ids)
ENTITY_ITEM_FILE = "inspection_item_file"  # attachments.id on an item (multipart)
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
