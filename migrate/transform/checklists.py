"""Non-conforming checklist items → coordination issues (``[transform] checklist_items_as_issues``).

Checklists are staged in full for the report whatever the switch says. With the switch on, an
item answered non-conforming (``is_conforming`` "No") that has no linked Field issue becomes a
planned coordination issue: a linked issue already carries the problem, and planning both would
migrate it twice. The issue type comes from issue_types.csv with the checklist type as category.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from migrate.ids import issue_uuid
from migrate.store.db import Store
from migrate.transform.description import FOOTER_HEADING, INDENT, SEPARATOR, clean_text
from migrate.transform.issues import (
    BATCH_SIZE,
    EntityTally,
    IssueContext,
    Outcome,
    Problems,
    Skipped,
    collect,
    finish_planned,
    split_attachments,
    write_batch,
)
from migrate.transform.titles import make_title

ENTITY = "checklist_item"
SOURCE_KIND = "checklist_item"
SOURCE_PREFIX = "checklist_item:"
ORIGIN_TYPE = "bim360_field_checklist_item"
PLANNED_STATUS = "open"  # a non-conforming answer is an open problem

ITEM_COLUMNS = (
    "id",
    "checklist_id",
    "section_name",
    "position",
    "display_number",
    "question_text",
    "response",
    "is_conforming",
    "comment",
    "spec_ref",
    "created_by",
    "created_at",
    "checklist_identifier",
    "checklist_name",
    "checklist_type",
    "checklist_status",
    "checklist_priority",
    "checklist_deleted",
)
_CANDIDATES = f"""
SELECT {", ".join(f"i.{c}" for c in ITEM_COLUMNS[:12])},
       c.identifier, c.name, c.checklist_type, c.status, c.priority, c.deleted
FROM checklist_items AS i JOIN checklists AS c ON c.id = i.checklist_id
WHERE lower(trim(i.is_conforming)) = 'no'
  AND (i.linked_issue_ids IS NULL OR json_array_length(i.linked_issue_ids) = 0)
  AND i.id > ?
ORDER BY i.id
LIMIT ?
"""


def map_checklist_item(record: Mapping[str, Any], context: IssueContext) -> Outcome:
    """Plan, skip or reject one non-conforming checklist item (pure)."""
    source_id = SOURCE_PREFIX + str(record["id"])
    if record.get("checklist_deleted"):
        return Skipped(source_id, "deleted at source")
    mappings = context.mappings
    problems = Problems()
    priority = context.priority_for(record.get("checklist_priority"))
    if priority.unmapped:
        problems.add(f"unmapped priority '{record.get('checklist_priority') or ''}'", priority.hint)
    checklist_type = record.get("checklist_type")
    issue_type = context.issue_type_for(checklist_type, None)
    if issue_type.unmapped:
        problems.add(
            f"unknown issue type for checklist type '{checklist_type or ''}'", issue_type.hint
        )
    number = str(record.get("display_number") or "").strip().rstrip(".")
    identifier = " ".join(
        part
        for part in (_text(record.get("checklist_identifier")), f"#{number}" if number else "")
        if part
    )
    question = _text(record.get("question_text"))
    name = _text(record.get("checklist_name"))
    title = make_title(
        context.title_template,
        {
            "identifier": identifier,
            "description": f"{name}: {question}" if name and question else name or question,
            "category_name": checklist_type,
            "status": record.get("checklist_status"),
        },
    )
    if not title:
        problems.add(
            "empty title",
            f"the title template '{context.title_template}' gives nothing for this checklist "
            f"item; change the title_template row in {mappings.file('fields.csv')}",
        )
    attachment_ids, hashes, not_migrated = split_attachments(record.get("attachments") or ())
    if problems:
        return problems.rejected(source_id)
    payload: dict[str, Any] = {
        "uuid": issue_uuid(context.target_project_id, source_id),
        "title": title,
        "description": checklist_item_description(record, not_migrated),
        "status": PLANNED_STATUS,
        "origin": {
            "origin_type": ORIGIN_TYPE,
            "origin_id": str(record["id"]),
            "title": f"BIM 360 Field checklist {name or record['checklist_id']}",
            "deep_link_url": context.deep_link("checklists", str(record["checklist_id"])),
        },
    }
    if priority.value is not None:
        payload["priority"] = priority.value
    if issue_type.value is not None:
        payload["issue_type"] = issue_type.value
    return finish_planned(
        source_id, SOURCE_KIND, identifier or None, payload, None, attachment_ids, hashes, context
    )


def checklist_item_description(
    record: Mapping[str, Any], not_migrated: list[dict[str, str]]
) -> str:
    """The question as the body; checklist, section, response, comment … in the footer."""
    checklist = _text(record.get("checklist_name"))
    if record.get("checklist_identifier"):
        checklist += f" ({_text(record['checklist_identifier'])})"
    created = _text(record.get("created_at"))
    if record.get("created_by"):
        created += f" by {_text(record['created_by'])}"
    lines = [FOOTER_HEADING]
    for label, value in (
        ("Checklist", checklist),
        ("Checklist type", record.get("checklist_type")),
        ("Checklist status", record.get("checklist_status")),
        ("Section", record.get("section_name")),
        ("Item", record.get("display_number")),
        ("Question", record.get("question_text")),
        ("Response", record.get("response")),
        ("Conforming", record.get("is_conforming")),
        ("Comment", record.get("comment")),
        ("Spec reference", record.get("spec_ref")),
        ("Created", created.strip()),
    ):
        lines += _item(label, _text(value))
    if not_migrated:
        lines.append("Attachments not migrated:")
        for attachment in not_migrated:
            lines += _item(attachment["name"], attachment["reason"], INDENT)
    body = clean_text(record.get("question_text")).strip()
    footer = "\n".join(lines)
    return f"{body}\n\n{SEPARATOR}\n{footer}" if body else footer


def _item(label: str, value: str, indent: str = "") -> list[str]:
    value = clean_text(value).strip()
    if not value:
        return []
    first, *rest = value.split("\n")
    return [
        f"{indent}{label}: {first}".rstrip(),
        *(f"{indent}{INDENT}{line}".rstrip() for line in rest),
    ]


def _text(value: Any) -> str:
    return "" if value is None else str(value)


# -- SQLite ------------------------------------------------------------------------------------


def iter_item_batches(store: Store, batch_size: int) -> Iterator[list[dict[str, Any]]]:
    """Candidate items (non-conforming, no linked issue) in id order, attachments attached."""
    last = ""
    while True:
        rows = store.conn.execute(_CANDIDATES, (last, batch_size)).fetchall()
        if not rows:
            return
        last = rows[-1][0]
        records = [dict(zip(ITEM_COLUMNS, row, strict=True)) for row in rows]
        by_id = {record["id"]: record for record in records}
        for record in records:
            record["attachments"] = []
        for (
            attachment_id,
            container_id,
            kind,
            filename,
            state,
            sha256,
            url,
            error,
            failure,
        ) in store.conn.execute(
            "SELECT id, container_id, kind, filename, state, sha256, source_url, error, "
            "failure FROM attachments WHERE container_type = 'ChecklistItem' "
            "AND container_id IN (SELECT value FROM json_each(?)) ORDER BY container_id, id",
            (json.dumps(list(by_id)),),
        ):
            by_id[container_id]["attachments"].append(
                {
                    "id": attachment_id,
                    "kind": kind,
                    "filename": filename,
                    "state": state,
                    "sha256": sha256,
                    "source_url": url,
                    "error": error,
                    "failure": failure,
                }
            )
        yield records


def plan_checklist_items(
    store: Store,
    context: IssueContext,
    run_id: int,
    *,
    advance: Callable[[int], None] | None = None,
    batch_size: int = BATCH_SIZE,
    digest: Any | None = None,
) -> EntityTally:
    """Map every candidate item and write the outcomes (inside the caller's transaction).

    `digest` takes the plan hash lines of the planned rows, in source_id order.
    """
    tally = EntityTally()
    for records in iter_item_batches(store, batch_size):
        outcomes = [(record, map_checklist_item(record, context)) for record in records]
        batch = collect(outcomes, run_id, lambda record: {"staged": record})
        write_batch(store, ENTITY, batch, run_id, tally, digest)
        if advance is not None:
            advance(len(records))
    return tally


def count_candidates(store: Store) -> int:
    """How many items plan_checklist_items will look at (for the progress bar)."""
    return int(
        store.conn.execute(
            "SELECT COUNT(*) FROM checklist_items WHERE lower(trim(is_conforming)) = 'no' "
            "AND (linked_issue_ids IS NULL OR json_array_length(linked_issue_ids) = 0)"
        ).fetchone()[0]
    )
