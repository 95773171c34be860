"""BIM 360 Field checklists → planned Procore inspections (``checklists_as_inspections``).

Each staged Field checklist template becomes a ``planned_inspection_templates`` row, and each
live checklist a ``planned_inspections`` row (the shapes below; load and the report read them
through ``migrate.store.planned``). Deleted checklists are skipped records; anything that
cannot be mapped (an unknown item display type, an unmapped checklist type or status) is
quarantined with a hint, and the run goes on.

**Item types** (Field display type → Procore item type):

- ``drop-down`` / ``single-select`` whose every possible value has a row in responses.csv,
  with one value per status it uses and both a yes and a no (``+ / - / N/A``, ``Yes / No /
  N/A``) → ``default`` (answer ``{"status": conforming | non_conforming | not_applicable}``);
  any other with possible values → ``multiple_choice`` with a response set (each value's
  ``corresponding_status`` from responses.csv, else from Field's own ``is_conforming`` for that
  answer, the majority over the staged answers, else ``yes``); without possible values → text.
- ``checkbox`` → ``multiple_choice`` with the set "Checked" / "Not checked" ("1" / "0").
- ``multi-select`` → ``text``: Procore takes one option per answer, so the chosen values are
  joined with "; " (Field's own order, nothing dropped).
- ``text`` → ``text``; ``date`` → ``date`` (MM/DD/YYYY or ISO → YYYY-MM-DD).
- ``numeric`` → ``number``. A whole number is sent as ``number_value``. Procore documents
  number answers as integers (simulator switch ``inspection_number_values``), so any other
  value (``3.5``) is not sent as the answer: the answer stays empty and the exact text is an
  item comment (key ``response``). Load then works under both readings, and nothing is rounded.
- ``signature`` → ``signature`` (no answer: a historic signature cannot be re-signed). The
  signature image is a checklist-level file named after the signature item (e.g.
  "Inspector signature.png"), and the item gets a comment (key ``signature``) saying who
  signed and when, as far as Field says.
- ``group_start`` (a heading row inside a section) → a ``text`` item without an answer, so its
  heading, comment and photos keep their place.

An answer the item type cannot carry (a value outside the response set, an unreadable date or
number) leaves the answer empty and keeps the Field text in an item comment (key
``response``). Field's conforming flag, where the planned answer does not already say the same,
is an item comment too (key ``conforming``).

**Templates.** A checklist whose template is staged, with every item joined to a template item,
uses that template (source id = the Field template id). Otherwise (template not staged, or
items that match none of its items) it gets a template of its own built from its items: source
id ``checklist:<checklist id>``, item source ids ``checklist_item:<item id>``.
Response sets are named from their answers and statuses, so equal sets are shared.

**Inspections.** ``list.identifier`` is the Field identifier; ``inspection_date`` is the date
of the checklist's ``created_at`` as Field wrote it (Field checklists have no inspection date of
their own; a custom field such as "Inspection date" stays in the footer with the other custom
fields). The description is the Field description plus a "From BIM 360 Field" footer:
identifier, name, checklist type, status, priority, phase, responsible company (always: load
resolves ``responsible_contractor`` to a Procore vendor by name, which transform cannot see),
task or equipment source, tags, template, author and dates, custom fields by name (a signature
field names its file), checklist comments with author and date (Procore has no inspection
comment), each item's author and dates, the captions and tags of attached files (Procore's files
take neither), and files not migrated with the reason. Checklists have
no area in BIM 360 Field's checklist API, so ``location_source_id`` is always NULL.

Files: checklist files and every signature → the ``attachment_ids`` column (upload_ids at
create); item files → ``items[].attachment_ids``; ``attachment_names`` names every file.

**Linked issues.** An item linked to Field issues gets an item comment per issue (key
``issue:<Field issue id>``) naming the coordination issue by its Field identifier; the issue's
own description footer names the inspection and item (``raised_from_lines``, read by the issue
transform). A linked item never becomes a second issue (see checklists.py).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from migrate.mappings import Mappings
from migrate.quarantine import Held, hold
from migrate.store.db import Store
from migrate.store.planned import (
    InspectionRow,
    TemplateRow,
    inspection_row,
    sync_planned_inspection_templates,
    sync_planned_inspections,
    sync_skipped_records,
    template_row,
)
from migrate.text import procore_name
from migrate.transform.description import (
    FOOTER_HEADING,
    INDENT,
    SEPARATOR,
    attachment_section,
    clean_text,
    comment_section,
    file_section,
    labelled,
)
from migrate.transform.issues import (
    DELETED_AT_SOURCE,
    EntityTally,
    described_files,
    split_attachments,
)
from migrate.transform.validate import normalise_due_date

ENTITY_CHECKLIST = "checklist"
ENTITY_TEMPLATE = "checklist_template"
STAGE = "transform"
BATCH_SIZE = 500

ADHOC_TEMPLATE_PREFIX = "checklist:"
ADHOC_ITEM_PREFIX = "checklist_item:"

# Procore item types (GET /rest/v1.0/checklist/item_types names).
DEFAULT = "default"
MULTIPLE_CHOICE = "multiple_choice"
TEXT = "text"
NUMBER = "number"
DATE = "date"
SIGNATURE = "signature"

#: Every BIM 360 Field item display type (seed 003: custom field display types; the generator's
#: CHECKLIST_ITEM_TYPES) → how it is planned; see the module docstring.
DISPLAY_TYPES = (
    "drop-down",
    "single-select",
    "multi-select",
    "text",
    "numeric",
    "date",
    "checkbox",
    "signature",
    "group_start",
)
CHOICE_TYPES = ("drop-down", "single-select")
CHECKED, NOT_CHECKED = "Checked", "Not checked"
CHECKBOX_ANSWERS = {"1": CHECKED, "0": NOT_CHECKED}
MULTI_SELECT_SEPARATOR = "|"  # how Field joins a multi-select answer
MULTI_SELECT_JOIN = "; "  # how the text answer shows it
#: Response status → the default item's answer.
DEFAULT_ANSWERS = {"yes": "conforming", "no": "non_conforming", "n/a": "not_applicable"}
#: Field's is_conforming → response status.
CONFORMING_STATUS = {"yes": "yes", "no": "no", "other": "n/a"}
_STATUS_ORDER = {"yes": 0, "no": 1, "n/a": 2}
MAX_SET_NAME = 120
#: File name endings for files Field names without one (document references have no name).
EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/gif": ".gif",
    "image/tiff": ".tif",
    "image/svg+xml": ".svg",
    "application/pdf": ".pdf",
}


# -- plans (pure) --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemPlan:
    """How one template item is planned: its Procore type and, for choices, its answers."""

    source_id: str
    display_type: str
    type: str
    name: str
    position: int
    #: Answer key (Field value, casefolded and trimmed) → Procore response name (multiple choice)
    #: or response status (default).
    answers: Mapping[str, str] = field(default_factory=dict)
    #: Response name → corresponding status (multiple choice).
    statuses: Mapping[str, str] = field(default_factory=dict)
    response_set: dict[str, Any] | None = None
    section: str = ""  # the section's name as Procore shows it


@dataclass
class TemplatePlan:
    """A planned template (row and items by source id), or why it cannot be planned."""

    source_id: str
    row: TemplateRow | None = None
    items: dict[str, ItemPlan] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)

    def reject(self, reason: str, hint: str) -> None:
        self.reasons.append(reason)
        if hint not in self.hints:
            self.hints.append(hint)

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    @property
    def hint(self) -> str:
        return " ".join(h if h.endswith(".") else h + "." for h in self.hints)


@dataclass
class InspectionContext:
    """What planning needs besides the records; built once per run."""

    mappings: Mappings
    companies: Mapping[str, str] = field(default_factory=dict)
    #: Field issue id → identifier (for the linked-issue item comments).
    issue_identifiers: Mapping[str, str] = field(default_factory=dict)
    #: custom field definition id → name (signature fields name their files).
    custom_field_names: Mapping[str, str] = field(default_factory=dict)
    #: (template item id, answer key) → status Field's is_conforming gives that answer.
    observed: Mapping[tuple[str, str], str] = field(default_factory=dict)
    items_as_issues: bool = False


def answer_key(value: Any) -> str:
    return " ".join(str(value).split()).casefold() if value is not None else ""


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _values(raw: Any) -> list[str]:
    """A possible_values list (JSON text or list): trimmed, empty and repeated ones left out."""
    values = json.loads(raw) if isinstance(raw, str) else (raw or [])
    seen: set[str] = set()
    result = []
    for value in values if isinstance(values, list) else []:
        text = " ".join(str(value).split())
        if text and answer_key(text) not in seen:
            seen.add(answer_key(text))
            result.append(text)
    return result


def item_name(display_number: Any, question: Any) -> str:
    name = " ".join(
        part for part in (_text(display_number).strip(), clean_text(question).strip()) if part
    )
    return " ".join(name.split()) or "(no question text)"


def section_label(section_name: Any) -> str:
    return " ".join(clean_text(section_name).split()) or "General"


def response_set_name(responses: Sequence[Mapping[str, str]]) -> str:
    """A set's name from its answers and statuses: equal sets share it, different ones don't."""
    names = " / ".join(r["name"] for r in responses)
    statuses = "/".join(r["corresponding_status"] for r in responses)
    name = f"{names} ({statuses})"
    if len(name) <= MAX_SET_NAME:
        return name
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:10]
    return f"{name[: MAX_SET_NAME - 14]}… [{digest}]"


def plan_item(
    source_id: str,
    display_type: str | None,
    display_number: Any,
    question: Any,
    position: int,
    possible_values: Any,
    context: InspectionContext,
    observed_key: str,
) -> ItemPlan | str:
    """The item's plan, or why it has none (an unknown display type)."""
    shown = (display_type or "").strip()
    name = item_name(display_number, question)
    if shown not in DISPLAY_TYPES:
        return shown
    if shown == "checkbox":
        values = [CHECKED, NOT_CHECKED]
    elif shown in CHOICE_TYPES:
        values = _values(possible_values)
    else:
        values = []
    if shown in CHOICE_TYPES and values:
        listed = [context.mappings.response_status_for(value) for value in values]
        if all(listed) and len(set(listed)) == len(listed) and {"yes", "no"} <= set(listed):
            answers = {answer_key(v): s for v, s in zip(values, listed, strict=True) if s}
            return ItemPlan(source_id, shown, DEFAULT, name, position, answers=answers)
    if values:
        responses = []
        for value in values:
            status = (
                context.mappings.response_status_for(value)
                or context.observed.get((observed_key, answer_key(value)))
                or "yes"
            )
            responses.append({"name": value, "corresponding_status": status})
        response_set = {"name": response_set_name(responses), "responses": responses}
        return ItemPlan(
            source_id,
            shown,
            MULTIPLE_CHOICE,
            name,
            position,
            answers={answer_key(r["name"]): r["name"] for r in responses},
            statuses={r["name"]: r["corresponding_status"] for r in responses},
            response_set=response_set,
        )
    kind = {"numeric": NUMBER, "date": DATE, "signature": SIGNATURE}.get(shown, TEXT)
    return ItemPlan(source_id, shown, kind, name, position)


def plan_template(
    source_id: str,
    name: str,
    description: str,
    checklist_type: str | None,
    sections: Sequence[tuple[int, str | None, Sequence[Mapping[str, Any]]]],
    context: InspectionContext,
) -> TemplatePlan:
    """A template from its sections ``(position, name, items)``; each item a mapping with
    ``source_id``, ``display_type``, ``display_number``, ``question_text``, ``position``,
    ``possible_values`` and ``observed_key``."""
    plan = TemplatePlan(source_id)
    inspection_type = context.mappings.inspection_type_for(checklist_type)
    if inspection_type.unmapped:
        plan.reject(
            f"unmapped checklist type '{checklist_type or ''}'"
            if checklist_type
            else "no checklist type",
            inspection_type.hint,
        )
    planned_sections = []
    for position, section_name, items in sections:
        planned_items = []
        for item in items:
            item_plan = plan_item(
                item["source_id"],
                item["display_type"],
                item["display_number"],
                item["question_text"],
                item["position"],
                item["possible_values"],
                context,
                item["observed_key"],
            )
            if isinstance(item_plan, str):
                shown_name = item_name(item["display_number"], item["question_text"])
                plan.reject(
                    f"item {item['source_id']} ({shown_name!r}) has display type "
                    f"{item_plan or '(none)'!r}, which has no Procore item type",
                    "migrate knows the BIM 360 Field display types "
                    + ", ".join(DISPLAY_TYPES)
                    + "; change the item in BIM 360 Field and run extract again, or report the "
                    "new type so it can be mapped",
                )
                continue
            item_plan = replace(item_plan, section=section_label(section_name))
            plan.items[item_plan.source_id] = item_plan
            planned_items.append(
                {
                    "source_id": item_plan.source_id,
                    "name": item_plan.name,
                    "position": item_plan.position,
                    "type": item_plan.type,
                    "response_set": item_plan.response_set,
                }
            )
        if not planned_items:
            continue  # Procore sections hold items; an empty Field section has nothing to carry
        planned_sections.append(
            {
                "key": f"{source_id}:{position}",
                "name": section_label(section_name),
                "position": position,
                "items": planned_items,
            }
        )
    if plan.reasons:
        return plan
    assert inspection_type.value is not None
    payload = {
        "name": name,
        "description": description,
        "inspection_type": inspection_type.value,
        "sections": planned_sections,
    }
    plan.row = template_row(source_id, name, inspection_type.value, payload)
    return plan


def plan_staged_template(
    template: Mapping[str, Any], items: Sequence[Mapping[str, Any]], context: InspectionContext
) -> TemplatePlan:
    """The plan of a staged Field template (checklist_templates row and its items)."""
    source_id = template["id"]
    name = (
        " ".join(clean_text(template.get("name")).split()) or f"BIM 360 Field template {source_id}"
    )
    description = " ".join(
        part
        for part in (
            f"From BIM 360 Field template {source_id}.",
            f"Created {template['created_at']}." if template.get("created_at") else "",
            f"Updated {template['updated_at']}." if template.get("updated_at") else "",
        )
        if part
    )
    by_section: dict[int, tuple[str | None, list[Mapping[str, Any]]]] = {}
    for item in sorted(items, key=lambda i: (i["section_position"], i["position"], i["id"])):
        section = by_section.setdefault(item["section_position"], (item["section_name"], []))
        section[1].append(
            {
                "source_id": item["id"],
                "display_type": item["display_type"],
                "display_number": item["display_number"],
                "question_text": item["question_text"],
                "position": item["position"],
                "possible_values": item["possible_values"],
                "observed_key": item["id"],
            }
        )
    sections = [(pos, name_, rows) for pos, (name_, rows) in sorted(by_section.items())]
    return plan_template(
        source_id, name, description, template.get("checklist_type"), sections, context
    )


def plan_adhoc_template(checklist: Mapping[str, Any], context: InspectionContext) -> TemplatePlan:
    """A template of the checklist's own items (its Field template is not staged, or some of its
    items match none of the template's)."""
    checklist_id = checklist["id"]
    source_id = ADHOC_TEMPLATE_PREFIX + checklist_id
    base = " ".join(clean_text(checklist.get("template_name") or checklist.get("name")).split())
    identifier = _text(checklist.get("identifier")).strip() or checklist_id
    name = f"{base or 'BIM 360 Field checklist'} (checklist {identifier})"
    template_note = (
        f" Its BIM 360 Field template {checklist['template_id']} was not staged or does not "
        "match its items."
        if checklist.get("template_id")
        else ""
    )
    description = f"From the items of BIM 360 Field checklist {checklist_id}.{template_note}"
    by_section: dict[int, tuple[str | None, list[Mapping[str, Any]]]] = {}
    for item in checklist["items"]:
        section = by_section.setdefault(item["section_position"], (item["section_name"], []))
        section[1].append(
            {
                "source_id": ADHOC_ITEM_PREFIX + item["id"],
                "display_type": item["display_type"],
                "display_number": item["display_number"],
                "question_text": item["question_text"],
                "position": item["position"] if item["position"] is not None else 0,
                "possible_values": item["possible_values"],
                "observed_key": ADHOC_ITEM_PREFIX + item["id"],
            }
        )
    sections = [(pos, name_, rows) for pos, (name_, rows) in sorted(by_section.items())]
    own = {
        (ADHOC_ITEM_PREFIX + item["id"], answer_key(item["response"])): status
        for item in checklist["items"]
        if (status := CONFORMING_STATUS.get(answer_key(item["is_conforming"])))
        and item["response"]
        and status != "n/a"
    }
    local = InspectionContext(mappings=context.mappings, observed={**context.observed, **own})
    return plan_template(
        source_id, name, description, checklist.get("checklist_type"), sections, local
    )


# -- one checklist -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """A checklist's plan: a row, a skip reason, or a rejection (reason and hint)."""

    source_id: str
    row: InspectionRow | None = None
    skipped: str | None = None
    reason: str = ""
    hint: str = ""
    template: TemplatePlan | None = None  # the checklist's own template, when it has one


def _answer(
    plan: ItemPlan, item: Mapping[str, Any]
) -> tuple[dict[str, Any] | None, list[dict[str, str]]]:
    """The item's response and the comments that keep what it cannot carry."""
    text = clean_text(item.get("response")).strip()
    response: dict[str, Any] | None = None
    status: str | None = None  # the response status the answer carries, if any
    why = "not one the Procore item takes"
    kind, shown = plan.type, plan.display_type
    if not text or kind == SIGNATURE:
        pass  # unanswered; a signature is a file (see map_checklist)
    elif shown == "group_start":
        why = "a heading row in BIM 360 Field"
    elif kind == DEFAULT:
        status = plan.answers.get(answer_key(text))
        if status is not None:
            response = {"status": DEFAULT_ANSWERS[status]}
    elif kind == MULTIPLE_CHOICE:
        option = plan.answers.get(
            answer_key(CHECKBOX_ANSWERS.get(text, text) if shown == "checkbox" else text)
        )
        if option is not None:
            response = {"response_option": option}
            status = plan.statuses[option]
    elif kind == NUMBER:
        number = _number(text)
        if number is not None and number == number.to_integral_value():
            response = {"number_value": int(number)}
        elif number is not None:
            why = "Procore number answers are whole numbers, so the exact value is kept here"
    elif kind == DATE:
        day, ok = normalise_due_date(text)
        if ok and day:
            response = {"date_value": day}
    elif shown == "multi-select":
        parts = (" ".join(part.split()) for part in text.split(MULTI_SELECT_SEPARATOR))
        response = {"text_value": MULTI_SELECT_JOIN.join(part for part in parts if part)}
    else:
        response = {"text_value": text}
    comments: list[dict[str, str]] = []
    if text and response is None and kind != SIGNATURE:
        comments.append({"key": "response", "body": f"Answer in BIM 360 Field: {text} ({why})"})
    conforming = answer_key(item.get("is_conforming"))
    if conforming in ("yes", "no") and kind != SIGNATURE and status != conforming:
        said = "conforming" if conforming == "yes" else "non-conforming"
        comments.append({"key": "conforming", "body": f"BIM 360 Field marked this answer {said}."})
    return response, comments


_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")


def _number(text: str) -> Decimal | None:
    """A plain decimal number (no thousands separators, no exponent), or None."""
    if not _NUMBER.fullmatch(text):
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def _extension(attachment: Mapping[str, Any]) -> str:
    known = EXTENSIONS.get(_text(attachment.get("content_type")).lower())
    if known:
        return known
    match = re.search(r"\.[A-Za-z0-9]{1,5}$", _text(attachment.get("filename")))
    return match.group(0).lower() if match else ".png"


def _file_name(label: str | None, fallback: str) -> str:
    """The name Procore shows for a file (as load names coordination issue files)."""
    return procore_name(label or "") or fallback


def _attachment_name(attachment: Mapping[str, Any]) -> str:
    """A file's name: Field's, or (a document reference has none) one made from its id."""
    ending = EXTENSIONS.get(_text(attachment.get("content_type")).lower(), "")
    fallback = f"BIM 360 Field file {attachment['id']}{ending}"
    return _file_name(attachment.get("filename"), fallback)


def _unique(name: str, taken: set[str]) -> str:
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    candidate, n = name, 2
    while candidate.casefold() in taken:
        candidate = f"{stem} ({n}).{ext}" if ext else f"{stem} ({n})"
        n += 1
    taken.add(candidate.casefold())
    return candidate


def map_checklist(
    checklist: Mapping[str, Any],
    templates: Mapping[str, TemplatePlan],
    context: InspectionContext,
) -> Outcome:
    """Plan, skip or reject one checklist (pure). See `read_checklists` for the record."""
    checklist_id = checklist["id"]
    if checklist.get("deleted"):
        return Outcome(checklist_id, skipped=DELETED_AT_SOURCE)
    mappings = context.mappings
    status = mappings.inspection_status_for(checklist.get("status"))
    if status.value == "skip":
        return Outcome(
            checklist_id,
            skipped=f"status '{checklist.get('status')}' maps to skip in "
            f"{mappings.file('inspection_statuses.csv')}",
        )
    reasons: list[str] = []
    hints: list[str] = []
    if status.unmapped:
        reasons.append(
            f"unmapped checklist status '{checklist['status']}'"
            if checklist.get("status")
            else "the checklist has no status"
        )
        hints.append(status.hint)

    items = checklist["items"]
    template = templates.get(checklist.get("template_id") or "")
    own: TemplatePlan | None = None
    joined = template is not None and all(
        item["template_item_id"] in template.items for item in items
    )
    if template is not None and template.row is None:
        reasons.append(f"its template {template.source_id} is quarantined ({template.reason})")
        hints.append(template.hint)
    elif not joined:
        own = template = plan_adhoc_template(checklist, context)
        if template.row is None:
            reasons.append(template.reason)
            hints.append(template.hint)
    if reasons or template is None or template.row is None:
        return Outcome(
            checklist_id,
            reason="; ".join(reasons),
            hint=" ".join(h if h.endswith(".") else h + "." for h in dict.fromkeys(hints)),
            template=own,
        )
    assert status.value is not None

    files = _Files(checklist["attachments"])
    signature_notes = {
        item["id"]: files.place_signature(
            str(item["response"]).strip(),
            clean_text(item["question_text"]).strip(),
            _item_stamp(item),
        )
        for item in items
        if (item["display_type"] or "").strip() == "signature" and item["response"]
    }
    custom_lines: list[tuple[str, str]] = []
    for value in checklist["custom_fields"]:
        label = value["name"] or context.custom_field_names.get(
            value["definition_id"] or "", value["custom_field_id"]
        )
        text = _text(value["value"]).strip()
        if text and value["display_type"] == "signature":
            custom_lines.append((label, files.place_signature(text, label)))
        elif text:
            custom_lines.append((label, _text(value["value"])))
    files.place_other_signatures()

    planned_items = []
    stamps: list[str] = []
    for item in items:
        template_item_id = (
            item["template_item_id"] if own is None else ADHOC_ITEM_PREFIX + item["id"]
        )
        plan = template.items[template_item_id]
        response, comments = _answer(plan, item)
        label = _text(item.get("display_number")).strip() or f"position {item['position']}"
        planned_items.append(
            {
                "source_id": item["id"],
                "template_item_source_id": template_item_id,
                "response": response,
                "comments": _item_comments(
                    item, plan, comments, signature_notes.get(item["id"]), context
                ),
                "attachment_ids": files.add_item_files(item["attachments"], label),
            }
        )
        stamp = _item_stamp(item)
        if stamp:
            stamps.append(f"{INDENT}{label} {stamp}")

    company = checklist.get("company_id")
    company_name = context.companies.get(company) if company else None
    description = describe(
        checklist,
        company_name or company,
        custom_lines,
        stamps,
        files.not_migrated,
        own,
        files.described,
    )
    created = _text(checklist.get("created_at")).strip()
    inspection_date, ok = normalise_due_date(created[:10]) if created else (None, True)
    identifier = _text(checklist.get("identifier")).strip() or None
    payload = {
        "list": {
            "identifier": identifier,
            "description": description,
            "inspection_date": inspection_date if ok else None,
        },
        "items": planned_items,
    }
    row = inspection_row(
        checklist_id,
        template.source_id,
        identifier,
        status.value,
        None,  # Field checklists have no area
        " ".join(_text(company_name).split()) or None,
        payload,
        files.checklist_ids,
        files.names,
        [*files.checklist_hashes, *files.item_hashes],
    )
    return Outcome(checklist_id, row=row, template=own)


class _Files:
    """A checklist's files as the inspection holds them: checklist files, then signatures (in
    the order they are placed), on the inspection; item files on their items; every file with
    the name Procore shows, and the files that are not migrated with the reason."""

    def __init__(self, attachments: Sequence[Mapping[str, Any]]) -> None:
        self.names: dict[str, str] = {}
        self._taken: set[str] = set()
        self.not_migrated: list[dict[str, str]] = []
        plain = [a for a in attachments if a["kind"] != "Signature"]
        ids, self.checklist_hashes, missing = split_attachments(plain)
        self.checklist_ids = list(ids)
        self._name(plain, ids)
        self.not_migrated += missing
        # Captions and tags of the files attached: Procore's files take neither.
        self.described: list[dict[str, str]] = described_files(plain, ids)
        self.item_hashes: list[str] = []
        self._signatures = {a["id"]: a for a in attachments if a["kind"] == "Signature"}

    def _name(self, attachments: Sequence[Mapping[str, Any]], ids: Sequence[str]) -> None:
        by_id = {a["id"]: a for a in attachments}
        for attachment_id in ids:
            self.names[attachment_id] = _attachment_name(by_id[attachment_id])
            self._taken.add(self.names[attachment_id].casefold())

    def place_signature(self, signature_id: str, label: str, item_stamp: str = "") -> str:
        """File the signature as "<label>.png"; the sentence saying who signed and where the
        image is (a historic signature cannot be signed again in Procore).

        Field's signature records carry no signer or time (seed 003); when the staged file has
        none, the sentence says so and gives `item_stamp`, who filled the item in and when.
        """
        label = label or "Signature"
        attachment = self._signatures.pop(signature_id, None)
        if attachment is None:
            return f"signed (signature {signature_id} is not among the staged files)"
        ids, hashes, missing = split_attachments([{**attachment, "kind": "Attachment"}])
        signer = _text(attachment.get("created_by")).strip()
        when = _text(attachment.get("created_at")).strip()
        who = (f" by {signer}" if signer else "") + (f" at {when}" if when else "")
        if not who:
            who = " (BIM 360 Field records no signer or time for the signature itself" + (
                f"; the item was filled in {item_stamp})" if item_stamp else ")"
            )
        if not ids:
            reason = missing[0]["reason"] if missing else "not migrated"
            self.not_migrated.append({"name": f"{label} (signature)", "reason": reason})
            return f"signed{who}; the signature image is not migrated: {reason}"
        name = _unique(_file_name(label, "Signature") + _extension(attachment), self._taken)
        self.names[signature_id] = name
        self.checklist_ids.append(signature_id)
        self.checklist_hashes.append(hashes[0])
        return f"signed{who}; the signature image is attached to the inspection as {name!r}"

    def place_other_signatures(self) -> None:
        """Signatures no signature item or field names: files all the same."""
        for signature_id in sorted(self._signatures):
            self.place_signature(signature_id, "Signature")

    def add_item_files(self, attachments: Sequence[Mapping[str, Any]], label: str) -> list[str]:
        """The item's files to attach (their names and hashes kept); the others listed."""
        ids, hashes, missing = split_attachments(attachments)
        self._name(attachments, ids)
        self.item_hashes += hashes
        for entry in missing:
            self.not_migrated.append({**entry, "name": f"item {label} {entry['name']}"})
        for entry in described_files(attachments, ids):
            self.described.append({**entry, "name": f"item {label} {entry['name']}"})
        return ids


def _item_comments(
    item: Mapping[str, Any],
    plan: ItemPlan,
    answer_comments: list[dict[str, str]],
    signature_note: str | None,
    context: InspectionContext,
) -> list[dict[str, str]]:
    """An item's comments: what Field says of it that its answer cannot carry."""
    comments: list[dict[str, str]] = []
    # The template changed after the checklist was filled: keep the words it was filled on.
    reads = item_name(item.get("display_number"), item.get("question_text"))
    section = section_label(item.get("section_name"))
    if reads != plan.name or section != plan.section:
        comments.append(
            {
                "key": "question",
                "body": f"In this BIM 360 Field checklist the item reads: {reads} "
                f"(section {section})",
            }
        )
    comment = clean_text(item.get("comment")).strip()
    if comment:
        comments.append({"key": "comment", "body": comment})
    comments += answer_comments
    if signature_note:
        comments.append({"key": "signature", "body": f"BIM 360 Field signature: {signature_note}."})
    spec = clean_text(item.get("spec_ref")).strip()
    if spec:
        comments.append({"key": "spec_ref", "body": f"Spec reference: {spec}"})
    for issue_id in dict.fromkeys(item["linked_issue_ids"]):
        identifier = context.issue_identifiers.get(issue_id)
        shown = f"BIM 360 Field issue {issue_id}"
        comments.append(
            {
                "key": f"issue:{issue_id}",
                "body": f"Linked coordination issue: {identifier} ({shown})"
                if identifier
                else f"Linked coordination issue: {shown}",
            }
        )
    as_issue = answer_key(item.get("is_conforming")) == "no" and not item["linked_issue_ids"]
    if context.items_as_issues and as_issue:
        comments.append(
            {
                "key": "as_issue",
                "body": "Also migrated as a Procore coordination issue "
                "(checklist_items_as_issues).",
            }
        )
    return comments


def _item_stamp(item: Mapping[str, Any]) -> str:
    """Who filled the item in and when (Procore stamps its own API user and time)."""
    by = _text(item.get("created_by")).strip()
    created = _text(item.get("created_at")).strip()
    updated = _text(item.get("updated_at")).strip()
    return ", ".join(
        part
        for part in (
            f"by {by}" if by else "",
            f"created {created}" if created else "",
            f"updated {updated}" if updated and updated != created else "",
        )
        if part
    )


def describe(
    checklist: Mapping[str, Any],
    company_name: str | None,
    custom_lines: Sequence[tuple[str, str]],
    answers_lines: Sequence[str],
    not_migrated: Sequence[Mapping[str, str]],
    own_template: TemplatePlan | None,
    files: Sequence[Mapping[str, str]] = (),
) -> str:
    """The inspection's description: the Field description, then the footer."""
    get = checklist.get
    source = ""
    if get("source_type") or get("source_id") or get("source_name"):
        source = " ".join(
            part
            for part in (
                _text(get("source_type")),
                _text(get("source_name")),
                f"({get('source_id')})" if get("source_id") else "",
            )
            if part
        )
    raw_tags = get("tags")
    parsed_tags = json.loads(raw_tags) if isinstance(raw_tags, str) and raw_tags else []
    tags = ", ".join(map(_text, parsed_tags)) if isinstance(parsed_tags, list) else _text(raw_tags)
    template = " ".join(
        part
        for part in (
            _text(get("template_name")),
            f"({get('template_id')})" if get("template_id") else "",
        )
        if part
    )
    created = _text(get("created_at")) + (f" by {get('created_by')}" if get("created_by") else "")
    lines = [FOOTER_HEADING]
    for label, value in (
        ("Identifier", get("identifier")),
        ("Name", get("name")),
        ("Checklist type", get("checklist_type")),
        ("Status", get("status")),
        ("Priority", get("priority")),
        ("Phase", get("phase")),
        ("Responsible company", company_name),
        ("Source", source),
        ("Tags", tags),
        ("Template", template),
        ("Inspection template", own_template.row.name if own_template and own_template.row else ""),
        ("Created", created.strip()),
        ("Updated", get("updated_at")),
    ):
        lines += labelled(label, _text(value))
    if custom_lines:
        lines.append("Custom fields:")
        for label, value in custom_lines:
            lines += labelled(label, value, INDENT)
    lines += comment_section(checklist["comments"])
    if answers_lines:
        lines += ["Item authors and dates:", *answers_lines]
    lines += file_section(files)
    lines += attachment_section(not_migrated)
    body = clean_text(get("description")).strip()
    footer = "\n".join(lines)
    return f"{body}\n\n{SEPARATOR}\n{footer}" if body else footer


# -- SQLite: reading staging ---------------------------------------------------------------------

_CHECKLIST_COLUMNS = (
    "id",
    "identifier",
    "name",
    "description",
    "checklist_type",
    "status",
    "priority",
    "phase",
    "created_by",
    "created_at",
    "updated_at",
    "company_id",
    "template_id",
    "template_name",
    "deleted",
    "source_type",
    "source_id",
    "source_name",
    "tags",
)
_ITEM_COLUMNS = (
    "id",
    "checklist_id",
    "section_name",
    "position",
    "display_number",
    "question_text",
    "display_type",
    "possible_values",
    "response",
    "is_conforming",
    "comment",
    "spec_ref",
    "linked_issue_ids",
    "created_by",
    "created_at",
    "updated_at",
    "template_item_id",
)
_ATTACHMENT_COLUMNS = (
    "id",
    "container_id",
    "kind",
    "filename",
    "content_type",
    "created_by",
    "created_at",
    "state",
    "sha256",
    "source_url",
    "error",
    "failure",
    "caption",
    "tags",
)


def _attachments(
    store: Store, container_type: str, ids: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for row in store.conn.execute(
        f"SELECT {', '.join(_ATTACHMENT_COLUMNS)} FROM attachments WHERE container_type = ? "
        "AND container_id IN (SELECT value FROM json_each(?)) ORDER BY container_id, id",
        (container_type, json.dumps(list(ids))),
    ):
        record = dict(zip(_ATTACHMENT_COLUMNS, row, strict=True))
        found.setdefault(record["container_id"], []).append(record)
    return found


def read_checklists(store: Store, batch_size: int = BATCH_SIZE) -> Iterator[list[dict[str, Any]]]:
    """Checklists in id order, a batch at a time, each with ``items`` (section, then position
    order; ``section_position``, ``linked_issue_ids`` parsed, ``attachments``), ``comments``,
    ``attachments`` (checklist files and signatures) and ``custom_fields``."""
    conn = store.conn
    last = ""
    while True:
        rows = conn.execute(
            f"SELECT {', '.join(_CHECKLIST_COLUMNS)} FROM checklists WHERE id > ? "
            "ORDER BY id LIMIT ?",
            (last, batch_size),
        ).fetchall()
        if not rows:
            return
        last = rows[-1][0]
        checklists = [dict(zip(_CHECKLIST_COLUMNS, row, strict=True)) for row in rows]
        by_id = {c["id"]: c for c in checklists}
        for checklist in checklists:
            checklist["items"] = []
            checklist["comments"] = []
            checklist["custom_fields"] = []
        ids = json.dumps(list(by_id))
        items: dict[str, dict[str, Any]] = {}
        for row in conn.execute(
            f"SELECT {', '.join('i.' + c for c in _ITEM_COLUMNS)}, COALESCE(s.position, -1) "
            "FROM checklist_items i LEFT JOIN checklist_sections s ON s.id = i.section_id "
            "WHERE i.checklist_id IN (SELECT value FROM json_each(?)) "
            "ORDER BY i.checklist_id, COALESCE(s.position, -1), i.position, i.id",
            (ids,),
        ):
            item = dict(zip(_ITEM_COLUMNS, row[:-1], strict=True))
            item["section_position"] = row[-1]
            item["linked_issue_ids"] = [
                str(i) for i in json.loads(item["linked_issue_ids"] or "[]")
            ]
            item["attachments"] = []
            items[item["id"]] = item
            by_id[item["checklist_id"]]["items"].append(item)
        for item_id, found in _attachments(store, "ChecklistItem", list(items)).items():
            items[item_id]["attachments"] = found
        for checklist_id, found in _attachments(store, "Checklist", list(by_id)).items():
            by_id[checklist_id]["attachments"] = found
        for checklist in checklists:
            checklist.setdefault("attachments", [])
        for container_id, created_by, created_at, text in conn.execute(
            "SELECT container_id, created_by, created_at, text FROM comments "
            "WHERE container_type = 'Checklist' AND container_id IN "
            "(SELECT value FROM json_each(?)) ORDER BY container_id, created_at, id",
            (ids,),
        ):
            by_id[container_id]["comments"].append(
                {"created_by": created_by, "created_at": created_at, "text": text}
            )
        for checklist_id, custom_field_id, display_type, value, definition_id, name in conn.execute(
            "SELECT v.checklist_id, v.custom_field_id, v.display_type, v.value, v.definition_id, "
            "v.name FROM checklist_custom_field_values v LEFT JOIN custom_fields f "
            "ON f.id = v.definition_id WHERE v.checklist_id IN (SELECT value FROM json_each(?)) "
            "ORDER BY v.checklist_id, f.position IS NULL, f.position, v.custom_field_id",
            (ids,),
        ):
            by_id[checklist_id]["custom_fields"].append(
                {
                    "custom_field_id": custom_field_id,
                    "display_type": display_type,
                    "value": value,
                    "definition_id": definition_id,
                    "name": name,
                }
            )
        yield checklists


def read_templates(store: Store) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Every staged Field template with its items."""
    columns = ("id", "name", "checklist_type", "created_at", "updated_at")
    templates: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {
        row[0]: (dict(zip(columns, row, strict=True)), [])
        for row in store.conn.execute(
            f"SELECT {', '.join(columns)} FROM checklist_templates ORDER BY id"
        )
    }
    item_columns = (
        "id",
        "template_id",
        "section_position",
        "section_name",
        "position",
        "display_number",
        "question_text",
        "display_type",
        "possible_values",
    )
    for row in store.conn.execute(
        f"SELECT {', '.join(item_columns)} FROM checklist_template_items "
        "ORDER BY template_id, section_position, position, id"
    ):
        item = dict(zip(item_columns, row, strict=True))
        if item["template_id"] in templates:
            templates[item["template_id"]][1].append(item)
    return list(templates.values())


def observed_statuses(store: Store) -> dict[tuple[str, str], str]:
    """(template item id, answer key) → the status Field's is_conforming gives that answer most
    often over the staged choice answers (ties: yes, then no); n/a ("Other") is left out."""
    votes: dict[tuple[str, str], Counter[str]] = {}
    for template_item_id, response, conforming, count in store.conn.execute(
        "SELECT template_item_id, response, is_conforming, COUNT(*) FROM checklist_items "
        "WHERE template_item_id IS NOT NULL AND display_type IN ('drop-down', 'single-select') "
        "AND response IS NOT NULL AND response <> '' GROUP BY 1, 2, 3"
    ):
        status = CONFORMING_STATUS.get(answer_key(conforming))
        if status in ("yes", "no"):
            votes.setdefault((template_item_id, answer_key(response)), Counter())[status] += count
    return {
        key: min(counter.items(), key=lambda pair: (-pair[1], _STATUS_ORDER[pair[0]]))[0]
        for key, counter in votes.items()
    }


def build_context(store: Store, mappings: Mappings, *, items_as_issues: bool) -> InspectionContext:
    conn = store.conn
    return InspectionContext(
        mappings=mappings,
        companies=dict(conn.execute("SELECT id, name FROM companies").fetchall()),
        issue_identifiers={
            source_id: identifier
            for source_id, identifier in conn.execute(
                "SELECT source_id, identifier FROM issues WHERE identifier IS NOT NULL "
                "AND source_id IN (SELECT DISTINCT j.value FROM checklist_items i, "
                "json_each(i.linked_issue_ids) j)"
            )
        },
        custom_field_names=dict(
            conn.execute("SELECT id, name FROM custom_fields WHERE container_type = 'Checklist'")
        ),
        observed=observed_statuses(store),
        items_as_issues=items_as_issues,
    )


def raised_from_lines(store: Store) -> dict[str, tuple[str, ...]]:
    """Field issue id → the footer lines naming the inspections and items it was raised from
    (live checklists only)."""
    found: dict[str, list[str]] = {}
    for issue_id, identifier, name, number, question in store.conn.execute(
        "SELECT j.value, c.identifier, c.name, i.display_number, i.question_text "
        "FROM checklist_items i JOIN checklists c ON c.id = i.checklist_id, "
        "json_each(i.linked_issue_ids) j WHERE c.deleted = 0 "
        "ORDER BY j.value, c.identifier, c.id, i.position, i.id"
    ):
        inspection = " ".join(
            part
            for part in (_text(identifier).strip(), f"({_text(name).strip()})" if name else "")
            if part
        )
        found.setdefault(str(issue_id), []).append(
            f"Inspection {inspection}, item {item_name(number, question)}"
        )
    return {issue_id: tuple(lines) for issue_id, lines in found.items()}


# -- the stage -----------------------------------------------------------------------------------


def plan_inspections(
    store: Store,
    context: InspectionContext,
    run_id: int,
    *,
    advance: Callable[[int], None] | None = None,
    batch_size: int = BATCH_SIZE,
) -> dict[str, EntityTally]:
    """Plan every staged template and checklist; replace the plan (inside the caller's
    transaction). Returns the tallies of ``checklist_templates`` and ``checklists``."""
    templates: dict[str, TemplatePlan] = {}
    template_tally = EntityTally()
    staged = read_templates(store)
    for template, items in staged:
        templates[template["id"]] = plan_staged_template(template, items, context)
        template_tally.extracted += 1
    staged_by_id = {template["id"]: (template, items) for template, items in staged}
    template_rows: dict[str, TemplateRow] = {
        plan.source_id: plan.row for plan in templates.values() if plan.row is not None
    }
    template_tally.planned = len(template_rows)
    rejected_templates = [plan for plan in templates.values() if plan.row is None]
    template_tally.quarantined = len(rejected_templates)
    hold(
        store,
        ENTITY_TEMPLATE,
        STAGE,
        [
            Held(
                plan.source_id,
                plan.reason,
                plan.hint,
                {
                    "staged": staged_by_id[plan.source_id][0],
                    "items": staged_by_id[plan.source_id][1],
                },
            )
            for plan in rejected_templates
        ],
        run_id,
    )

    tally = EntityTally()
    inspection_rows: list[InspectionRow] = []
    skipped: list[tuple[str, str, str]] = []
    for batch in read_checklists(store, batch_size):
        held: list[Held] = []
        for checklist in batch:
            outcome = map_checklist(checklist, templates, context)
            tally.extracted += 1
            if outcome.row is not None:
                inspection_rows.append(outcome.row)
                if outcome.template is not None and outcome.template.row is not None:
                    template_rows[outcome.template.source_id] = outcome.template.row
                tally.planned += 1
            elif outcome.skipped is not None:
                skipped.append((ENTITY_CHECKLIST, checklist["id"], outcome.skipped))
                tally.skipped += 1
            else:
                held.append(
                    Held(checklist["id"], outcome.reason, outcome.hint, {"staged": checklist})
                )
                tally.quarantined += 1
        hold(store, ENTITY_CHECKLIST, STAGE, held, run_id)
        if advance is not None:
            advance(len(batch))
    sync_planned_inspection_templates(
        store, [template_rows[key] for key in sorted(template_rows)], run_id
    )
    sync_planned_inspections(store, inspection_rows, run_id)
    sync_skipped_records(store, (ENTITY_CHECKLIST,), skipped, run_id)
    return {"checklist_templates": template_tally, "checklists": tally}


def clear_inspections(store: Store, run_id: int) -> None:
    """Inspections switched off: no template, inspection or skipped checklist stays planned."""
    sync_planned_inspection_templates(store, [], run_id)
    sync_planned_inspections(store, [], run_id)
    sync_skipped_records(store, (ENTITY_CHECKLIST,), [], run_id)


def count_checklists(store: Store) -> int:
    return int(store.conn.execute("SELECT COUNT(*) FROM checklists").fetchone()[0])
