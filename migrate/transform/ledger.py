"""The field ledger: where every BIM 360 Field field went (issue 15, point 1).

For every staged source table and every column in it, and for every custom field by its
definition, `CATALOGUE` names where the values go: a Procore target field, a line of the
description footer, a file, a link between records, or "left out" with the reason. Fields that
fields.csv or the settings route (issue standard fields, custom fields, every checklist field)
are decided by functions that ask the same `Mappings` and settings the transform asks, so the
ledger cannot say one thing while the mapping does another.

Transform writes the ledger (`write_ledger`) at the end of every run into ``field_ledger``,
counting with one SQL statement per table. A staged column, a staged table or a custom field
that has values and no destination is a row with ``kind = 'none'``: the report's verdict fails
on it and `migrate plan` warns. Adding a column to the schema without naming it here therefore
fails the ledger test on the generated project.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from migrate.mappings import STANDARD_FIELDS, Mappings
from migrate.store.db import Store
from migrate.store.ledger import NO_DESTINATION, LedgerRow
from migrate.transform.issues import FILE_KINDS


@dataclass(frozen=True)
class Destination:
    kind: str  # one of KINDS
    where: str  # the Procore field, footer line, file, or why it is left out


@dataclass(frozen=True)
class LedgerContext:
    """What decides a routed field's destination: the run's mappings and switches."""

    mappings: Mappings
    checklists_as_inspections: bool = True
    checklist_items_as_issues: bool = False


Decision = Destination | Callable[[LedgerContext], Destination]


def target(where: str) -> Destination:
    return Destination("target", where)


def footer(where: str) -> Destination:
    return Destination("footer", where)


def file(where: str) -> Destination:
    return Destination("file", where)


def link(where: str) -> Destination:
    return Destination("link", where)


def left_out(why: str) -> Destination:
    return Destination("left_out", why)


INSPECTIONS_OFF = left_out("inspections turned off ([transform] checklists_as_inspections = false)")
REFERENCE = "reference data: its names are shown where records use it"


def _issue_field(
    field_id: str, own_target: str | None = None
) -> Callable[[LedgerContext], Destination]:
    """An issue standard field: fields.csv decides (target_for is what the footer asks)."""
    label = STANDARD_FIELDS[field_id].label

    def decide(context: LedgerContext) -> Destination:
        routed = context.mappings.fields.target_for(field_id)
        footer_line = f"footer '{label}:'"
        if routed == "description":
            return target("description (body)")
        if routed == "due_date":
            return target("due_date (footer 'Due date not sent:' when not a date)")
        if routed == "assignee":
            return target("assignee_id (footer note when not resolved)")
        if routed == "trade":
            return target("trade_id (footer 'Trade not sent:' when not resolved)")
        if routed == "priority":
            return target("priority (priority.csv; footer when it sends none)")
        if own_target:
            shown = f"; {footer_line}" if routed == "footer" else ""
            return target(own_target + shown)
        if routed == "footer":
            return footer(footer_line)
        return left_out("dropped by fields.csv (target drop)")

    return decide


def _checklist(destination: Destination) -> Callable[[LedgerContext], Destination]:
    """A checklist field: where it goes when checklists become inspections."""

    def decide(context: LedgerContext) -> Destination:
        return destination if context.checklists_as_inspections else INSPECTIONS_OFF

    return decide


def _checklist_item(destination: Destination) -> Callable[[LedgerContext], Destination]:
    """A checklist item field: the inspection item, or a coordination issue when items are."""

    def decide(context: LedgerContext) -> Destination:
        if context.checklists_as_inspections:
            return destination
        if context.checklist_items_as_issues:
            return target("coordination issue (non-conforming items, checklist_items_as_issues)")
        return INSPECTIONS_OFF

    return decide


@dataclass(frozen=True)
class Entity:
    """One source entity: a staged table (or the part of it `where` selects) and its fields."""

    name: str
    table: str
    fields: Mapping[str, Decision]
    where: str = ""
    #: Rows of the table that belong to a source entity although no field is read here.
    custom_fields: str = ""  # "issue" | "checklist": expand custom fields per definition


_CREATED = footer("footer 'Created:'")
# Whether an issue's signature image is uploaded follows the kinds transform uploads.
_ISSUE_SIGNATURE = (
    file("signature image named after its field")
    if "Signature" in FILE_KINDS
    else footer("footer 'Attachments not migrated:' (issues take no signatures in Procore)")
)
#: Attachment columns that say how a file was fetched, the same for issue and checklist files.
_FILE_BOOKKEEPING: dict[str, Decision] = {
    "id": link("source key (uploads, id_map)"),
    "container_type": link("which kind of record it belongs to"),
    "size_expected": link("download check against the declared size"),
    "downloaded_run": left_out("bookkeeping: which extract run downloaded it"),
    "num_pages": left_out("the pages travel inside the file"),
}
_ISSUE_FILE = "Procore attachment (the file itself)"
_INSPECTION_FOOTER = footer("inspection description footer")

CATALOGUE: tuple[Entity, ...] = (
    Entity(
        "issue",
        "issues",
        {
            "source_id": target("origin.origin_id, uuid and deep link"),
            "identifier": _issue_field("f--identifier"),
            "description": _issue_field("f--description"),
            "status": _issue_field("f--status", "status (status.csv)"),
            "priority": _issue_field("f--priority", "priority (priority.csv)"),
            "issue_type_id": _issue_field("f--issue_type_id", "issue_type (issue_types.csv)"),
            "issue_type_name": _issue_field("f--issue_type_id", "issue_type (issue_types.csv)"),
            "category_name": _issue_field("f--issue_type_id", "issue_type (issue_types.csv)"),
            "area_id": _issue_field("f--area_id", "location (locations.csv)"),
            "area_path": _issue_field("f--area_id", "location (locations.csv)"),
            "location_detail": _issue_field("f--location_detail"),
            "responsible_company_id": _issue_field("f--responsible_company_id"),
            "responsible_company_name": _issue_field("f--responsible_company_id"),
            "root_cause_id": _issue_field("f--root_cause_id"),
            "root_cause_name": _issue_field("f--root_cause_id"),
            "assigned_to_email": _issue_field("f--assigned_to"),
            "due_date": _issue_field("f--due_date"),
            "created_by": _CREATED,
            "created_at": _CREATED,
            "updated_at": left_out("change detection only: Procore keeps its own modified date"),
            "closed_at": footer("footer 'Closed:'"),
            "voided": target("status (status.csv 'Void'); footer 'Voided in BIM 360 Field'"),
            "deleted": left_out("deleted at source: a skipped record, not migrated"),
            "custom_fields": link("expanded per custom field definition (rows cf:…)"),
            "labor_hours": footer("footer 'Custom fields: Labor hours'"),
            "cost": footer("footer 'Custom fields: Cost'"),
            "content_hash": left_out("bookkeeping: change detection"),
        },
        custom_fields="issue",
    ),
    Entity(
        "issue comment",
        "comments",
        {
            "id": link("source key"),
            "container_type": link("which record it belongs to"),
            "container_id": link("which issue it belongs to"),
            "created_by": footer("footer 'Comments:' (author)"),
            "created_at": footer("footer 'Comments:' (date)"),
            "text": footer("footer 'Comments:'"),
        },
        where="container_type = 'Issue'",
    ),
    Entity(
        "issue status change",
        "issue_status_history",
        {
            "id": link("source key"),
            "issue_id": link("which issue it belongs to"),
            "status": footer("footer 'Status history:'"),
            "previous_status": footer("footer 'Status history:'"),
            "user": footer("footer 'Status history:' (who)"),
            "start_dt": footer("footer 'Status history:' (when)"),
            "end_dt": left_out("the next change's start says it (footer 'Status history:')"),
        },
    ),
    Entity(
        "issue file",
        "attachments",
        {
            **_FILE_BOOKKEEPING,
            "container_id": link("which issue it belongs to"),
            "kind": file(
                f"{'/'.join(FILE_KINDS)}: Procore attachment; other kinds: footer "
                "'Attachments not migrated:' with the reason"
            ),
            "filename": file("Procore attachment name; footer 'Files:'"),
            "content_type": file("upload content type"),
            "caption": footer("footer 'Files:' (caption)"),
            "tags": footer("footer 'Files:' (tags)"),
            "custom_field_id": _ISSUE_SIGNATURE,
            "created_by": left_out("Procore attachments carry no author of their own"),
            "created_at": left_out("Procore attachments carry no date of their own"),
            "source_url": file(_ISSUE_FILE + " (downloaded from it)"),
            "state": footer("footer 'Attachments not migrated:' when not stored"),
            "sha256": file(_ISSUE_FILE + " (blob store key)"),
            "size": file(_ISSUE_FILE),
            "error": footer("footer 'Attachments not migrated:' (reason)"),
            "failure": footer("footer 'Attachments not migrated:' (reason)"),
            "rendition_of": file("marked-up rendition uploaded beside its original"),
            "rendition_page": file("marked-up rendition's page"),
        },
        where="container_type = 'Issue'",
    ),
    Entity(
        "area",
        "areas",
        {
            "id": link("planned_locations.source_id"),
            "parent_id": target("Procore location tree (parent)"),
            "name": target("Procore location name"),
            "full_path": target("Procore location path (issue footer 'Area:')"),
            "identifier": left_out("Procore locations have a name only, no code"),
            "deleted": left_out("deleted at source: a skipped record, not migrated"),
            "depth": target("Procore location tree (depth)"),
        },
    ),
    Entity(
        "checklist",
        "checklists",
        {
            "id": link("inspection origin and id_map"),
            "identifier": _checklist(target("inspection list.identifier; footer")),
            "name": _checklist(target("inspection name; footer")),
            "description": _checklist(target("inspection description (body)")),
            "checklist_type": _checklist(target("inspection type (inspection_types.csv)")),
            "status": _checklist(target("inspection status (inspection status mapping)")),
            "priority": _checklist(_INSPECTION_FOOTER),
            "phase": _checklist(_INSPECTION_FOOTER),
            "created_by": _checklist(_INSPECTION_FOOTER),
            "created_at": _checklist(target("inspection_date; footer")),
            "updated_at": _checklist(_INSPECTION_FOOTER),
            "company_id": _checklist(target("responsible_contractor (vendor by name); footer")),
            "template_id": _checklist(target("Procore inspection template")),
            "template_name": _checklist(target("Procore inspection template name; footer")),
            "deleted": left_out("deleted at source: a skipped record, not migrated"),
            "source_type": _checklist(_INSPECTION_FOOTER),
            "source_id": _checklist(_INSPECTION_FOOTER),
            "source_name": _checklist(_INSPECTION_FOOTER),
            "tags": _checklist(_INSPECTION_FOOTER),
        },
        custom_fields="checklist",
    ),
    Entity(
        "checklist section",
        "checklist_sections",
        {
            "id": link("source key"),
            "checklist_id": link("which checklist it belongs to"),
            "position": _checklist(target("inspection template section order")),
            "section_name": _checklist(target("inspection template section name")),
        },
    ),
    Entity(
        "checklist item",
        "checklist_items",
        {
            "id": link("source key"),
            "checklist_id": link("which checklist it belongs to"),
            "section_id": _checklist_item(target("inspection section")),
            "section_name": _checklist_item(target("inspection section name")),
            "position": _checklist_item(target("inspection item order")),
            "display_number": _checklist_item(target("inspection item name (number)")),
            "question_text": _checklist_item(target("inspection item name")),
            "display_type": _checklist_item(target("inspection item type")),
            "possible_values": _checklist_item(target("inspection item response set")),
            "response": _checklist_item(target("inspection item answer (comment when it cannot)")),
            "is_conforming": _checklist_item(target("answer status; item comment 'conforming'")),
            "comment": _checklist_item(target("inspection item comment")),
            "spec_ref": _checklist_item(target("item comment 'Spec reference:'")),
            "linked_issue_ids": _checklist_item(target("item comment per linked issue")),
            "created_by": _checklist_item(_INSPECTION_FOOTER),
            "created_at": _checklist_item(_INSPECTION_FOOTER),
            "updated_at": _checklist_item(_INSPECTION_FOOTER),
            "template_item_id": link("joins the item to its template item"),
        },
    ),
    Entity(
        "checklist comment",
        "comments",
        {
            "id": link("source key"),
            "container_type": link("which record it belongs to"),
            "container_id": link("which checklist it belongs to"),
            "created_by": _checklist(_INSPECTION_FOOTER),
            "created_at": _checklist(_INSPECTION_FOOTER),
            "text": _checklist(footer("inspection footer 'Comments:' (no inspection comment)")),
        },
        where="container_type = 'Checklist'",
    ),
    Entity(
        "checklist file or signature",
        "attachments",
        {
            **_FILE_BOOKKEEPING,
            "container_id": link("which checklist or item it belongs to"),
            "kind": _checklist(file("inspection or item file; signature image")),
            "filename": _checklist(file("Procore file name")),
            "content_type": _checklist(file("upload content type")),
            "caption": _checklist(footer("inspection footer 'Files:' (caption)")),
            "tags": _checklist(footer("inspection footer 'Files:' (tags)")),
            "custom_field_id": _checklist(file("signature image named after its field")),
            "created_by": _checklist(target("signature: item comment 'signed by'; else none")),
            "created_at": _checklist(target("signature: item comment 'signed on'; else none")),
            "source_url": _checklist(file("the file itself (downloaded from it)")),
            "state": _checklist(_INSPECTION_FOOTER),
            "sha256": _checklist(file("the file itself (blob store key)")),
            "size": _checklist(file("the file itself")),
            "error": _checklist(_INSPECTION_FOOTER),
            "failure": _checklist(_INSPECTION_FOOTER),
            "rendition_of": _checklist(file("marked-up rendition beside its original")),
            "rendition_page": _checklist(file("marked-up rendition's page")),
        },
        where="container_type <> 'Issue'",
    ),
    Entity(
        "checklist custom field value",
        "checklist_custom_field_values",
        {
            "checklist_id": link("which checklist it belongs to"),
            "custom_field_id": link("its definition"),
            "definition_id": link("its definition"),
            "name": _checklist(_INSPECTION_FOOTER),
            "display_type": link("decides: a signature is an image file, else a footer line"),
            "value": link("counted per definition (rows cf:…)"),
        },
    ),
    Entity(
        "checklist template",
        "checklist_templates",
        {
            "id": link("planned_inspection_templates.source_id"),
            "name": _checklist(target("Procore inspection template name")),
            "checklist_type": _checklist(target("inspection type (inspection_types.csv)")),
            "created_at": _checklist(target("template description")),
            "updated_at": _checklist(target("template description")),
            "content_hash": left_out("bookkeeping: change detection"),
        },
    ),
    Entity(
        "checklist template item",
        "checklist_template_items",
        {
            "id": link("template item source id"),
            "template_id": link("which template it belongs to"),
            "section_position": _checklist(target("template section order")),
            "section_name": _checklist(target("template section name")),
            "position": _checklist(target("template item order")),
            "display_number": _checklist(target("template item name (number)")),
            "question_text": _checklist(target("template item name")),
            "display_type": _checklist(target("template item type")),
            "possible_values": _checklist(target("template item response set")),
        },
    ),
    Entity(
        "project",
        "projects",
        {
            "id": link("origin deep links"),
            "name": left_out("the Procore project is chosen, not created"),
            "a360_project_id": left_out("the Procore project is chosen, not created"),
            "updated_at": left_out("bookkeeping: change detection"),
        },
    ),
    Entity(
        "company",
        "companies",
        {
            "id": link("records name their company by id"),
            "name": footer("footer 'Responsible company:' and inspection vendor by name"),
            "company_type": left_out(REFERENCE + " (Procore's directory is not migrated)"),
            "company_category": left_out(REFERENCE + " (Procore's directory is not migrated)"),
            "account_company": left_out(REFERENCE + " (Procore's directory is not migrated)"),
            "telephone": left_out(REFERENCE + " (Procore's directory is not migrated)"),
            "address": left_out(REFERENCE + " (Procore's directory is not migrated)"),
        },
    ),
    Entity(
        "user",
        "users",
        {
            "id": link("assignees written as user ids are read through it"),
            "email": target("assignee_id (matched to Procore's assignees)"),
            "first_name": target("assignee_id (display name match)"),
            "last_name": target("assignee_id (display name match)"),
            "company_id": left_out(REFERENCE + " (Procore's directory is not migrated)"),
            "roles": left_out(REFERENCE + " (Procore's directory is not migrated)"),
        },
    ),
    Entity(
        "issue type",
        "issue_types",
        {
            "id": link("issues name their type by id"),
            "name": target("issue_type (issue_types.csv)"),
            "category_name": target("issue_type (issue_types.csv)"),
        },
    ),
    Entity(
        "root cause",
        "root_causes",
        {
            "id": link("issues name their root cause by id"),
            "name": footer("footer 'Root cause:'"),
            "category_name": left_out(REFERENCE + " (the footer shows the name)"),
        },
    ),
    Entity(
        "custom field definition",
        "custom_fields",
        {
            "id": link("cf-- ids in fields.csv"),
            "name": footer("the label of each custom field's footer line"),
            "container_type": link("which records carry it"),
            "container_id": link("which template carries it"),
            "display_type": link("signature fields become files"),
            "default_value": left_out("a definition's default, not a record's value"),
            "possible_values": left_out("a definition's choices, not a record's value"),
            "required": left_out("a definition's rule, not a record's value"),
            "position": target("footer order of custom fields"),
            "updated_at": left_out("bookkeeping: change detection"),
        },
    ),
    Entity(
        "issue field layout",
        "issue_fields",
        {
            "field_id": link("which field"),
            "issue_type_id": link("which issue type"),
            "section": left_out("Field's form layout; Procore's form is its own"),
            "name": left_out("Field's form layout; Procore's form is its own"),
            "display_type": left_out("Field's form layout; Procore's form is its own"),
            "required": left_out("Field's form layout; Procore's form is its own"),
            "position": left_out("Field's form layout; Procore's form is its own"),
            "possible_values": left_out("Field's form layout; Procore's form is its own"),
        },
    ),
    Entity(
        "project export archive",
        "project_exports",
        {
            "kind": file("Field's project export, kept in the blob store"),
            "state": file("Field's project export, kept in the blob store"),
            "sha256": file("Field's project export (blob store key)"),
            "size": file("Field's project export"),
            "requested_at": link("report: safety net"),
            "finished_at": link("report: safety net"),
            "stored_at": link("report: safety net"),
            "reason": link("report: safety net"),
            "run_id": link("report: safety net"),
        },
    ),
    Entity(
        "family not migrated",
        "source_inventory",
        {
            "family": left_out("outside the pipeline: counted, kept by the project export"),
            "endpoint": link("report: not migrated"),
            "records": left_out("outside the pipeline: counted, kept by the project export"),
            "bytes": left_out("outside the pipeline: counted, kept by the project export"),
            "kept_in": link("report: not migrated"),
            "run_id": link("report: not migrated"),
            "counted_at": link("report: not migrated"),
        },
    ),
)

#: Tables that hold no source data (pipeline bookkeeping, target snapshots, plans, the ledger).
NOT_SOURCE_TABLES = frozenset(
    {
        "runs",
        "cursors",
        "source_problems",
        "id_map",
        "target_assignees",
        "target_locations",
        "target_trades",
        "planned_locations",
        "planned_issues",
        "planned_inspection_templates",
        "planned_inspections",
        "skipped_records",
        "quarantine",
        "uploads",
        "load_batches",
        "staging_identity",
        "writer_lock",
        "schema_migrations",
        "field_ledger",
        "rate_readings",
    }
)

# Integer flags that default to 0: a value is a 1.
_FLAGS = frozenset({"deleted", "voided", "account_company", "required"})


def _has_value(column: str) -> str:
    quoted = f'"{column}"'
    if column in _FLAGS:
        return f"({quoted} = 1)"
    return f"({quoted} IS NOT NULL AND trim(CAST({quoted} AS TEXT)) NOT IN ('', '[]', '{{}}'))"


def _columns(store: Store, table: str) -> list[str]:
    return [row[1] for row in store.conn.execute(f'PRAGMA table_info("{table}")')]


def _decide(decision: Decision, context: LedgerContext) -> Destination:
    return decision(context) if callable(decision) else decision


def build_ledger(store: Store, context: LedgerContext) -> list[LedgerRow]:
    """Every source field with its destination and counts (one SQL statement per table)."""
    conn = store.conn
    rows: list[LedgerRow] = []
    catalogued = {entity.table for entity in CATALOGUE}
    for entity in CATALOGUE:
        columns = _columns(store, entity.table)
        if not columns:
            continue
        where = f" WHERE {entity.where}" if entity.where else ""
        counts = conn.execute(
            f"SELECT COUNT(*), {', '.join(f'SUM({_has_value(c)})' for c in columns)} "
            f'FROM "{entity.table}"{where}'
        ).fetchone()
        records = int(counts[0])
        for column, count in zip(columns, counts[1:], strict=True):
            decision = entity.fields.get(column)
            destination = (
                _decide(decision, context)
                if decision is not None
                else Destination(NO_DESTINATION, "no destination: not in the field ledger")
            )
            rows.append(
                LedgerRow(
                    entity.name,
                    column,
                    destination.kind,
                    destination.where,
                    records,
                    int(count or 0),
                )
            )
        if entity.custom_fields == "issue":
            rows += _issue_custom_fields(store, context, records)
        elif entity.custom_fields == "checklist":
            rows += _checklist_custom_fields(store, context, records)
    rows += _uncatalogued_tables(store, catalogued)
    return rows


def _issue_custom_fields(store: Store, context: LedgerContext, records: int) -> list[LedgerRow]:
    """Issue custom fields by name: fields.csv decides, as the description footer asks it."""
    ids = dict(
        store.conn.execute(
            "SELECT name, MIN(id) FROM custom_fields WHERE container_type = 'Issue' GROUP BY name"
        ).fetchall()
    )
    # The atom and no CAST: about twice as fast over 10 000 issues (json_extract, not ->>,
    # which needs SQLite 3.38).
    counted = store.conn.execute(
        "SELECT j.key, SUM(trim(CASE j.type WHEN 'object' THEN json_extract(j.value, '$.value') "
        "ELSE j.atom END) <> '') FROM issues, json_each(issues.custom_fields) AS j "
        "WHERE json_type(issues.custom_fields) = 'object' GROUP BY j.key ORDER BY j.key"
    ).fetchall()
    fields = context.mappings.fields
    rows = []
    for name, count in counted:
        routed = fields.target_for(ids.get(name), name)
        destination = {
            "footer": footer(f"footer 'Custom fields: {name}'"),
            "drop": left_out("dropped by fields.csv (target drop)"),
            "description": target("description (body)"),
            "due_date": target("due_date (footer when not a date)"),
            "assignee": target("assignee_id (footer note when not resolved)"),
            "trade": target("trade_id (footer when not resolved)"),
        }.get(routed, Destination(NO_DESTINATION, f"fields.csv target '{routed}' unknown"))
        rows.append(
            LedgerRow(
                "issue", f"cf:{name}", destination.kind, destination.where, records, int(count or 0)
            )
        )
    return rows


def _checklist_custom_fields(store: Store, context: LedgerContext, records: int) -> list[LedgerRow]:
    """Checklist custom fields per definition: a signature is a file, the rest footer lines."""
    counted = store.conn.execute(
        "SELECT COALESCE(v.name, f.name, v.custom_field_id), MAX(v.display_type = 'signature'), "
        "COUNT(*) FROM checklist_custom_field_values v "
        "LEFT JOIN custom_fields f ON f.id = v.definition_id "
        "WHERE v.value IS NOT NULL AND trim(v.value) <> '' GROUP BY 1 ORDER BY 1"
    ).fetchall()
    rows = []
    for name, signature, count in counted:
        if not context.checklists_as_inspections:
            destination = INSPECTIONS_OFF
        elif signature:
            destination = file(f"signature image '{name}'")
        else:
            destination = footer(f"inspection footer '{name}:'")
        rows.append(
            LedgerRow(
                "checklist", f"cf:{name}", destination.kind, destination.where, records, int(count)
            )
        )
    return rows


def _uncatalogued_tables(store: Store, catalogued: set[str]) -> list[LedgerRow]:
    """A staged table nobody named: every row of it has no destination."""
    rows = []
    for (table,) in store.conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' "
        "AND substr(name, 1, 4) <> 'raw_' AND substr(name, 1, 7) <> 'sqlite_' ORDER BY name"
    ).fetchall():
        if table in catalogued or table in NOT_SOURCE_TABLES:
            continue
        count = int(store.conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0])
        rows.append(
            LedgerRow(
                table,
                "(every field)",
                NO_DESTINATION,
                "no destination: table not in the field ledger",
                count,
                count,
            )
        )
    return rows
