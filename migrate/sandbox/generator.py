"""A deterministic, generated BIM 360 Field account and the matching Procore starting state.

:class:`GeneratedProject` is the data behind :class:`migrate.sandbox.field_server.FieldApp` (and
the starting state of the Procore simulator). Everything is a pure function of the seed:

- Small reference data (projects, areas, companies, users, issue types, root causes, custom
  field definitions, checklist templates) is built once and held.
- Issues and checklists are produced on demand from ``(seed, project, index)`` with a
  per-record RNG, so a 100 000-issue project costs next to no memory. Ids encode the index
  (see :func:`make_id`), so looking a record up by id is O(1).
- Attachment bytes are produced on demand in 64 KiB blocks from ``(seed, object id, size)``.

The data is awkward on purpose, the way a seven-year-old Field project is: unicode, emoji and
combining characters, descriptions over 2 000 characters and empty ones, duplicate issue
identifiers, issues without an area or in a deleted area, assignee emails that differ in case
from the user list or match no user at all, attachment names with spaces, unicode and "../",
areas with the same name under different parents, and ONE area whose name contains ">"
(:data:`AWKWARD_AREA_NAME`), which makes its ``full_path`` ambiguous as text: parent ids are
the source of truth for the tree. Issue indexes carrying a deliberate oddity are listed in
:data:`AWKWARD_ISSUES` so tests can find them.

Internal issue record (what :meth:`FieldProjectData.issue` returns; the server renders it
into each API's shape)::

    {"id", "project_id", "index",
     "fields": {"f--identifier": ..., ..., "cf--<definition id>": ...},   # ordered
     "created_by", "created_at", "updated_at", "closed_at",           # "YYYY-MM-DD HH:MM:SS -0400"
     "comments": [{"created_at" (ISO 8601), "created_by", "comment_text", "id"}],
     "attachments": [{"id", "type": "Attachment"|"DocumentReference"|"UriReference", ...}],
     "history": [{"status", "previous_status", "user", "start_dt", "end_dt"}]}

Checklists come from templates whose items have a Field display type each
(:data:`CHECKLIST_ITEM_TYPES`: +/-/N/A and Yes/No drop-downs, single- and multi-select, text,
numeric, date, checkbox, signature, group_start headers); the first checklists use each template
once, so every type, signatures (item and custom-field ones), photos, comments, linked and
unlinked non-conforming items, a deleted checklist and task/equipment sources appear in any
project of more than four checklists.

:meth:`GeneratedProject.dump` streams the whole account to one JSON file (one record per
line); :func:`load_project` reads it back lazily into a :class:`LoadedProject` that serves
identically.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
from array import array
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

FIELD_TZ = timezone(timedelta(hours=-4))
STATUSES = (
    "Draft",
    "Open",
    "Work Completed",
    "Ready to Inspect",
    "Not Approved",
    "In Dispute",
    "Closed",
    "Void",
)
PRIORITIES = ("", "Low", "Medium", "High", "Critical")
CHECKLIST_STATUSES = ("Open", "In Progress", "Closed")
BLOCK_SIZE = 64 * 1024
DUMP_FORMAT = "migrate.sandbox.field/1"
AWKWARD_AREA_NAME = "Stair 2 > Landing"

#: Issue indexes (in the main project) that carry one deliberate oddity each.
AWKWARD_ISSUES = {
    "big_attachment": 1,  # and every index i with i % 250 == 123: one 5-8 MB attachment
    "attachment_path_traversal": 2,
    "emoji_description": 3,
    "attachment_unicode_name": 4,
    "long_description": 5,
    "attachment_spaces": 6,
    "empty_description": 8,
    "duplicate_identifier": 10,  # same identifier as issue 9
    "missing_area": 11,
    "assignee_case_mismatch": 13,
    "assignee_unknown": 15,
    "assignee_user_id": 12,  # the assignee field holds a Field user id (display type user_id)
    "assignee_display_name": 9,  # ... the user's display name
    "due_date_time": 14,  # DUE_DATE_TIME: a date-time whose UTC day is the day before
    "due_date_unreadable": 16,  # DUE_DATE_UNREADABLE: no date at all
    "deleted_area": 17,
}
UNKNOWN_ASSIGNEE = "j.ortega@formersub-closed.example.com"
DUE_DATE_TIME = "2014-10-14T08:54:16+14:00"
DUE_DATE_UNREADABLE = "after the fire inspection"

# Kind codes: the first group of every generated id says what the id names.
KIND_PROJECT = 0x00000330
KIND_AREA = 0x0000A4EA
KIND_COMPANY = 0x00000C0A
KIND_USER = 0x000005E4
KIND_ISSUE_TYPE = 0x0000F498
KIND_ROOT_CAUSE = 0x000099B4
KIND_CUSTOM_FIELD = 0x00006B0D
KIND_TEMPLATE = 0x00004029
KIND_ISSUE = 0x00000AAC
KIND_COMMENT = 0x0000C033
KIND_ATTACHMENT = 0x00000A77
KIND_DOCUMENT_REFERENCE = 0x00000D0C
KIND_DOCUMENT = 0x0000D0C0  # library documents behind issue document references
KIND_CHECKLIST_DOCUMENT = 0x0000D0C1  # ... behind checklist document references
KIND_ITEM_DOCUMENT = 0x0000D0C2  # ... behind checklist item document references
KIND_URI_REFERENCE = 0x00000071
KIND_CHECKLIST = 0x00003B8F
KIND_CHECKLIST_ITEM = 0x00003B90
KIND_CHECKLIST_COMMENT = 0x0000F3F7
KIND_CHECKLIST_ATTACHMENT = 0x0000565A
KIND_ITEM_ATTACHMENT = 0x0000A4E9
KIND_SIGNATURE = 0x0000429F
KIND_ISSUE_SIGNATURE = 0x0000429E  # signatures filling an issue's signature fields
KIND_CF_VALUE = 0x00003B8E
KIND_FILTER = 0x0000F117
KIND_TEMPLATE_ITEM = 0x0000402A
KIND_TASK = 0x00007A5C
KIND_EQUIPMENT = 0x0000E901
# Families outside the pipeline (issue 15 point 5): counted by extract, kept by the export.
KIND_PHOTO = 0x0000F070
KIND_LIBRARY_FILE = 0x0000D0C3
KIND_DAILY_UPDATE = 0x0000DA11

#: Kinds of ids naming something attached to an issue, and to a checklist (or its items).
ISSUE_OBJECT_KINDS = (
    KIND_ATTACHMENT,
    KIND_DOCUMENT_REFERENCE,
    KIND_URI_REFERENCE,
    KIND_ISSUE_SIGNATURE,
)
CHECKLIST_OBJECT_KINDS = (KIND_CHECKLIST_ATTACHMENT, KIND_ITEM_ATTACHMENT, KIND_SIGNATURE)
#: Library document kind -> the kind of the reference that points at it (same slot and index).
DOCUMENT_KINDS = {
    KIND_DOCUMENT: KIND_DOCUMENT_REFERENCE,
    KIND_CHECKLIST_DOCUMENT: KIND_CHECKLIST_ATTACHMENT,
    KIND_ITEM_DOCUMENT: KIND_ITEM_ATTACHMENT,
}

_ID_RE = re.compile(r"^([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})$")

_FILE_MAGIC = {
    "image/jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    "image/png": b"\x89PNG\r\n\x1a\n",
    "application/pdf": b"%PDF-1.4\n",
    "video/quicktime": b"\x00\x00\x00\x14ftypqt  ",
}

# -- standard issue fields --------------------------------------------------------------------
#: (field id, name in retrieve, display_type in retrieve), in the order retrieve lists them.
STANDARD_FIELDS = (
    ("f--identifier", "Identifier", "text"),
    ("f--issue_type_id", "Issue type", "issue_type_id"),
    ("f--responsible_company_id", "Responsible company", "company_id"),
    ("f--description", "Description", "text"),
    ("f--priority", "Priority", "drop-down"),
    ("f--status", "Status", "drop-down"),
    ("f--area_id", "Location", "location_id"),
    ("f--location_detail", "Location detail", "text"),
    ("f--root_cause_id", "Root cause", "root_cause_id"),
    ("f--due_date", "Due date", "date"),
    ("f--assigned_to", "Assigned to", "email"),
    ("f--labor_hours", "Labor hours", "numeric"),
    ("f--cost", "Cost", "text"),
)
STANDARD_FIELD_IDS = tuple(field_id for field_id, _, _ in STANDARD_FIELDS)

# -- vocabulary -------------------------------------------------------------------------------
_FIRST_NAMES = (
    "Alice",
    "Bruno",
    "Chen",
    "Dana",
    "Emeka",
    "Fatima",
    "Gustavo",
    "Hannah",
    "Ivan",
    "Jamal",
    "Keiko",
    "Liam",
    "Maria",
    "Noah",
    "Olga",
    "Pedro",
    "Quinn",
    "Rosa",
    "Sanjay",
    "Tomasz",
    "Uma",
    "Victor",
    "Wen",
    "Ximena",
    "Yusuf",
    "Zoë",
    "Aoife",
    "Björn",
    "Chloé",
    "Dmitri",
    "Eitan",
    "Farah",
    "Giulia",
    "Hiro",
    "Inés",
    "Jonas",
)
_LAST_NAMES = (
    "Anderson",
    "Baptiste",
    "Castillo",
    "Dubois",
    "Eriksen",
    "Fischer",
    "García",
    "Hughes",
    "Ibrahim",
    "Jensen",
    "Kowalski",
    "Lindqvist",
    "Müller",
    "Nakamura",
    "O'Brien",
    "Patel",
    "Quintero",
    "Rossi",
    "Schmidt",
    "Tanaka",
    "Ueda",
    "Varga",
    "Walsh",
    "Xu",
    "Yilmaz",
    "Zimmermann",
    "Okafor",
    "Novak",
    "Moreau",
    "Larsen",
)
_COMPANIES = (
    ("Harborline Builders", "General Contractor", "Contractor", "Boston", "MA", "02110"),
    (
        "Benson Industries",
        "Doors, Frames, & Hardware Supply",
        "Contractor",
        "Lakewood",
        "WA",
        "98496",
    ),
    ("Acme Drywall", "Drywall and framing", "Subcontractor", "Quincy", "MA", "02169"),
    ("Voltline Electric", "Electrical", "Subcontractor", "Worcester", "MA", "01608"),
    ("Northeast Mechanical", "HVAC and plumbing", "Subcontractor", "Providence", "RI", "02903"),
    ("Granite State Concrete", "Concrete and masonry", "Subcontractor", "Nashua", "NH", "03060"),
    ("Müller Glas GmbH", "Curtain wall and glazing", "Supplier", "Stuttgart", None, "70173"),
    ("Keystone Architects", "Architect of record", "Architect", "Cambridge", "MA", "02139"),
    ("Harbor Health Trust", "Owner", "Owner", "Boston", "MA", "02114"),
    ("SafeSite Inspections", "Third-party inspections", "Inspector", "Lowell", "MA", "01852"),
)
_STREETS = ("Main", "Harbor", "Elm", "Industrial")
_PROJECT_NAMES = (
    "Harbor View Medical Center",
    "Riverside Lofts Phase 2",
    "Eastgate Elementary School",
    "Summit Logistics Hub",
    "Cedar Point Library",
    "Bayfront Parking Structure",
)
_ISSUE_TYPES = (
    ("Punch List", "Punch List"),
    ("Punch List", "Pre-Punch List"),
    ("Punch List", "Issue"),
    ("Work List", "Concealment of Work/Closure"),
    ("Work List", "Work to Complete List"),
    ("QA/QC", "Conforming"),
    ("QA/QC", "Non-conforming"),
    ("Safety", "Safety Infraction"),
    ("Safety", "Safety Incident"),
    ("Safety", "Safety Observation"),
    ("Commissioning", "Commissioning"),
)
_ISSUE_TYPE_WEIGHTS = (30, 8, 12, 4, 6, 3, 8, 5, 2, 6, 3)
_TYPE_WITH_OWN_FIELDS = "Safety Incident"
_ROOT_CAUSES = (
    ("Human", "Workmanship"),
    ("Human", "Communication"),
    ("Human", "Training"),
    ("Design", "Design Error"),
    ("Design", "Coordination Conflict"),
    ("Material", "Defective Material"),
    ("Material", "Wrong Material Delivered"),
    ("Environment", "Weather Damage"),
    ("Other", "Unknown"),
)
_DEFECTS = (
    "Drywall seam visible",
    "Paint touch-up required",
    "Missing outlet cover plate",
    "Ceiling tile stained",
    "Door closer not adjusted",
    "Fire caulking incomplete at penetration",
    "Duct insulation torn",
    "Sprinkler head escutcheon missing",
    "Floor tile cracked",
    "Handrail loose",
    "Window sealant gap",
    "Concrete spall at slab edge",
    "Exposed rebar",
    "Cable tray not bonded",
    "Pipe hanger missing",
    "Guardrail missing at floor opening",
    "Ladder not secured",
    "Debris blocking egress corridor",
    "HVAC diffuser misaligned",
    "Grout missing at tile joint",
    "Damaged door frame",
    "Light fixture not working",
    "Base cove adhesive failing",
    "Firestopping label missing",
)
_LIBRARY_FOLDERS = (
    ("Architectural", ("Plans", "Elevations")),
    ("Structural", ("Foundations",)),
    ("MEP", ("Mechanical", "Electrical", "Plumbing")),
    ("Closeout", ()),
)
_DETAILS = (
    "near column line C-4",
    "at north wall",
    "above door frame",
    "behind access panel",
    "at corridor intersection",
    "by the east stair",
    "under window sill",
    "at grid B/7",
    "in ceiling plenum",
    "next to elevator lobby",
)
_ACTIONS = (
    "Contractor to repair and notify for re-inspection.",
    "Replace and clean area.",
    "Adjust per manufacturer spec.",
    "Provide submittal for review.",
    "Coordinate with MEP trades before closing ceiling.",
    "",
    "",
)
_COMMENTS = (
    "Reviewed on site, still open.",
    "Sub notified by email.",
    "Repaired, ready for inspection.",
    "Rejected: finish does not match sample.",
    "Material on order, ETA two weeks.",
    "Photo attached.",
    "Discussed at OAC meeting.",
    "Not our scope — back to GC.",
    "Closing per walk-through with owner.",
    "See RFI 112.",
)
_EMOJI_DESCRIPTION = (
    "Crack in façade panel — see photo 📷 ✅. Coordinate with Zoë Müller (Müller Glas GmbH). "
    "Combining marks: Cafe\u0301, nai\u0308ve, man\u0303ana; ZWJ family 👩\u200d👩\u200d👧; "
    "RTL: مرحبا بالعالم; CJK: 漢字テスト; fullwidth: ＦＵＬＬ; math: 𝔘𝔫𝔦𝔠𝔬𝔡𝔢; "
    "quotes \"double\" 'single' <b>not html</b> & ampersand; tab\there\nsecond line\r\nthird."
)
_AWKWARD_FILENAMES = {
    "attachment_path_traversal": ("../../etc/passwd.jpg", "..\\..\\windows\\win.ini.jpg"),
    "attachment_unicode_name": ("façade crack — north élévation 📷.jpg", "図面 第3層.pdf"),
    "attachment_spaces": ("IMG 0042 copy (2).JPG", " leading and trailing spaces .png "),
}
#: Field checklist item display types. "+/-/N/A" and yes/no items are drop-downs told apart by
#: their possible values; "group_start" is a header row inside a section (no response).
PLUS_MINUS = ("+", "-", "N/A")
YES_NO = ("Yes", "No", "N/A")
CHECKLIST_ITEM_TYPES = (
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
#: Display types that make a template "rich content": hidden from /api/templates and
#: /api/get_checklist_headers unless application_version is above 1.10 (seed 003).
RICH_ITEM_TYPES = ("single-select", "multi-select")


def _q(
    text: str, shown: str = "drop-down", values: tuple[str, ...] = PLUS_MINUS
) -> tuple[str, str, tuple[str, ...]]:
    return (text, shown, values if shown in ("drop-down", "single-select", "multi-select") else ())


# (name, checklist type, sections): each section (name, items), each item (question, display
# type, possible values). Together they hold every display type; the first checklists use
# each template once so even a tiny project covers them all.
_CHECKLIST_TEMPLATES = (
    (
        "Wall closing checklist",
        "QA/QC",
        (
            (
                "Framing",
                (
                    _q("Studs plumb and aligned"),
                    _q("Blocking installed for fixtures"),
                    _q("Fire-rated assembly per detail", "drop-down", YES_NO),
                ),
            ),
            (
                "MEP rough-in",
                (
                    _q("Electrical rough-in inspected"),
                    _q("Plumbing pressure test passed", "drop-down", YES_NO),
                    _q("Duct penetrations sealed"),
                    _q(
                        "Insulation type",
                        "single-select",
                        ("Conforming choice", "Non-conforming choice"),
                    ),
                    _q("Trades present", "multi-select", ("Choice 1", "Choice 2", "Choice 3")),
                ),
            ),
            ("Sign-off", (_q("Inspector signature", "signature"),)),
        ),
    ),
    (
        "Field Safety Checklist",
        "Safety",
        (
            ("", ()),
            (
                "Site",
                (
                    _q("Perimeter fencing intact", "drop-down", YES_NO),
                    _q("Housekeeping acceptable"),
                    _q("Signage posted", "checkbox"),
                    _q("Crew size", "numeric"),
                ),
            ),
            (
                "Fall protection",
                (
                    _q("Guardrails", "group_start"),
                    _q("Guardrails in place"),
                    _q("Harnesses inspected"),
                    _q("Floor openings covered", "drop-down", YES_NO),
                    _q("Observations", "text"),
                ),
            ),
        ),
    ),
    (
        "Pre-pour concrete inspection",
        "Pre-Installation",
        (
            (
                "Formwork",
                (_q("Forms clean and oiled"), _q("Dimensions verified"), _q("Pour date", "date")),
            ),
            (
                "Reinforcing",
                (
                    _q("Rebar size and spacing per drawings"),
                    _q("Cover chairs installed"),
                    _q("Embeds located", "drop-down", YES_NO),
                    _q("Slump (in)", "numeric"),
                ),
            ),
            ("Approvals", ()),
        ),
    ),
    (
        "Equipment start-up",
        "Commissioning",
        (
            (
                "Pre-functional",
                (
                    _q("Nameplate data recorded", "text"),
                    _q("Rotation verified"),
                    _q("Vibration isolation installed", "checkbox"),
                    _q("Start-up date", "date"),
                    _q("Commissioning agent signature", "signature"),
                ),
            ),
        ),
    ),
)


# -- small helpers ----------------------------------------------------------------------------
def make_id(kind: int, seed_tag: int, project_index: int, slot: int, index: int) -> str:
    """A GUID-shaped id: kind-seed-project-slot-index, all hex (e.g. 00000aac-0007-0000-...)."""
    return f"{kind:08x}-{seed_tag:04x}-{project_index:04x}-{slot:04x}-{index:012x}"


def parse_id(object_id: str) -> tuple[int, int, int, int, int] | None:
    """Split a generated id into (kind, seed_tag, project_index, slot, index); None if foreign."""
    found = _ID_RE.match(object_id or "")
    if not found:
        return None
    return tuple(int(group, 16) for group in found.groups())  # type: ignore[return-value]


def field_time(moment: datetime) -> str:
    """Field's usual timestamp text: ``2014-10-23 10:08:04 -0400``."""
    if moment.tzinfo is not FIELD_TZ:
        moment = moment.astimezone(FIELD_TZ)
    # Hand-formatted: this runs for every timestamp of every generated record.
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d} "
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} -0400"
    )


def iso_time(moment: datetime) -> str:
    """The ISO form comments use: ``2013-06-04T13:01:18-04:00``."""
    if moment.tzinfo is not FIELD_TZ:
        moment = moment.astimezone(FIELD_TZ)
    return moment.replace(microsecond=0).isoformat()


def parse_field_time(text: str) -> datetime:
    """Parse either timestamp form the generator writes (or a bare date)."""
    text = text.strip()
    for pattern in (
        "%Y-%m-%d %H:%M:%S %z",
        "%Y-%m-%dT%H:%M:%S%z",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d",
    ):
        try:
            moment = datetime.strptime(text, pattern)
        except ValueError:
            continue
        if moment.tzinfo is None or moment.utcoffset() == FIELD_TZ.utcoffset(None):
            moment = moment.replace(tzinfo=FIELD_TZ)  # the one shared tz object: fast paths
        return moment
    raise ValueError(f"unrecognised date {text!r}")


def yaml_list(values: list[str]) -> str:
    """Serialise a list of strings the way Ruby's YAML (Psych) writes ``possible_values``."""
    if not values:
        return "--- []\n"
    lines = ["---"]
    for value in values:
        needs_quotes = (
            value == ""
            or value != value.strip()
            or value[0] in "-?:,[]{}#&*!|>'\"%@`+"
            or ": " in value
            or " #" in value
            or value.lower() in ("yes", "no", "true", "false", "null", "~", "on", "off")
        )
        lines.append("- '" + value.replace("'", "''") + "'" if needs_quotes else f"- {value}")
    return "\n".join(lines) + "\n"


def blob_chunks(
    seed: int, object_id: str, size: int, content_type: str = "", variant: str = "original"
) -> Iterator[bytes]:
    """The bytes of one stored file, in 64 KiB blocks, deterministic from (seed, id, size).

    Each block has its own RNG, so nothing but the current block is ever held, whatever the
    size. The first bytes are the usual signature of ``content_type`` so sniffers agree.
    """
    magic = _FILE_MAGIC.get(content_type, b"")
    blocks = (size + BLOCK_SIZE - 1) // BLOCK_SIZE
    for block in range(blocks):
        length = min(BLOCK_SIZE, size - block * BLOCK_SIZE)
        data = random.Random(f"blob:{seed}:{variant}:{object_id}:{size}:{block}").randbytes(length)
        if block == 0 and magic:
            data = (magic + data[len(magic) :])[:length]
        yield data


def derived_size(size: int, variant: str) -> int:
    """Size of a derived rendition (thumb / composite) of a file of ``size`` bytes."""
    if variant == "thumb":
        return min(size, 2048 + size % 6144)
    if variant.startswith("composite"):
        return min(size, 32768 + size % 98304)
    return size


def sha256_of_chunks(chunks: Iterator[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", ".", text.lower().replace("'", "")).strip(".")


def _ascii_fold(text: str) -> str:
    table = str.maketrans("äöüëéèáíóúñçøåÄÖÜËÉÈÁÍÓÚÑÇØÅ", "aoueeeaiouncoaAOUEEEAIOUNCOA")
    return text.translate(table)


# -- the data model -----------------------------------------------------------------------------
class FieldProjectData:
    """One Field project: held reference data plus lazily generated issues and checklists.

    Subclasses provide :meth:`issue` and :meth:`checklist`; this base holds ``meta`` (every
    small, JSON-able piece) and the id arithmetic shared by generated and loaded projects.
    """

    def __init__(self, meta: dict[str, Any], seed: int) -> None:
        self.meta = meta
        self.seed = seed
        self.seed_tag = seed & 0xFFFF
        self.index: int = meta["index"]
        self.id: str = meta["id"]
        self.name: str = meta["name"]
        self.issue_count: int = meta["issue_count"]
        self.checklist_count: int = meta["checklist_count"]
        self.areas: list[dict[str, Any]] = meta["areas"]
        self.company_ids: list[str] = meta["company_ids"]
        self.user_ids: list[str] = meta["user_ids"]
        self.issue_types: list[dict[str, Any]] = meta["issue_types"]
        self.root_causes: list[dict[str, Any]] = meta["root_causes"]
        self.custom_fields: list[dict[str, Any]] = meta["custom_fields"]
        self.issue_fields: dict[str, Any] = meta["issue_fields"]
        self.templates: list[dict[str, Any]] = meta["templates"]
        self.tasks: list[dict[str, Any]] = meta.get("tasks", [])
        self.equipment: list[dict[str, Any]] = meta.get("equipment", [])
        self.as_of: str = meta["as_of"]
        self.field_catalog = self._field_catalog()

    # -- ids -------------------------------------------------------------------------------
    def make_id(self, kind: int, slot: int, index: int) -> str:
        return make_id(kind, self.seed_tag, self.index, slot, index)

    def id_parts(self, object_id: str) -> tuple[int, int, int] | None:
        """(kind, slot, index) of an id belonging to this project, else None."""
        parts = parse_id(object_id)
        if parts is None or parts[1] != self.seed_tag or parts[2] != self.index:
            return None
        return parts[0], parts[3], parts[4]

    def issue_id(self, index: int) -> str:
        return self.make_id(KIND_ISSUE, 0, index)

    def checklist_id(self, index: int) -> str:
        return self.make_id(KIND_CHECKLIST, 0, index)

    def issue_index(self, issue_id: str) -> int | None:
        """Index of an issue id of this project (base or added), without range check."""
        parts = self.id_parts(issue_id)
        if parts is None or parts[0] != KIND_ISSUE or parts[1] != 0:
            return None
        return parts[2]

    def checklist_index(self, checklist_id: str) -> int | None:
        parts = self.id_parts(checklist_id)
        if parts is None or parts[0] != KIND_CHECKLIST or parts[1] != 0:
            return None
        return parts[2] if parts[2] < self.checklist_count else None

    # -- records ---------------------------------------------------------------------------
    def issue(self, index: int) -> dict[str, Any]:
        raise NotImplementedError

    def checklist(self, index: int) -> dict[str, Any]:
        raise NotImplementedError

    def voided_indexes(self) -> list[int]:
        """Base issue indexes whose generated status is Void (sorted)."""
        raise NotImplementedError

    def iter_issues(self) -> Iterator[dict[str, Any]]:
        for index in range(self.issue_count):
            yield self.issue(index)

    def iter_checklists(self) -> Iterator[dict[str, Any]]:
        for index in range(self.checklist_count):
            yield self.checklist(index)

    # -- catalog ---------------------------------------------------------------------------
    def _field_catalog(self) -> dict[str, tuple[str, str]]:
        """field id -> (name, retrieve display_type) for standard and custom issue fields."""
        catalog = {field_id: (name, shown) for field_id, name, shown in STANDARD_FIELDS}
        for definition in self.custom_fields:
            if definition["container_type"] == "Issue":
                catalog["cf--" + definition["custom_field_id"]] = (
                    definition["name"],
                    definition["display_type"],
                )
        return catalog

    def issue_custom_field_ids(self, issue_type_id: str | None) -> list[str]:
        """Custom field ids (``cf--…``) an issue of this type carries, in position order."""
        return [
            "cf--" + d["custom_field_id"]
            for d in self.custom_fields
            if d["container_type"] == "Issue"
            and (d["container_id"] is None or d["container_id"] == issue_type_id)
        ]

    # -- families the pipeline does not migrate (issue 15 point 5) ------------------------
    # Pure functions of (seed, project index, issue count), so a loaded dump serves the same.
    def photos(self) -> list[dict[str, Any]]:
        """Project photos (``/api/get_photos``): one for every four issues, plus thirty."""
        rng = random.Random(f"{self.seed}:{self.index}:photos")
        start = parse_field_time(self.meta["created_at"])
        photos = []
        for n in range(30 + self.issue_count // 4):
            moment = start + timedelta(hours=n * 7 + rng.randint(0, 6))
            photos.append(
                {
                    "id": self.make_id(KIND_PHOTO, 0, n),
                    "filename": f"DSC_{n + 1:05d}.jpg",
                    "content_type": "image/jpeg",
                    "size": _file_size(rng),
                    "width": 4032,
                    "height": 3024,
                    "caption": rng.choice(("", "", "progress", "level 2 east")),
                    "tags": rng.choice(("", "progress", "site,weekly")),
                    "created_at": field_time(moment),
                    "updated_at": field_time(moment),
                }
            )
        return photos

    def library_folders(self) -> list[dict[str, Any]]:
        """The document library's folders (``/api/library/all_folders``, the seed's shape)."""
        paths = []
        for top, subs in _LIBRARY_FOLDERS:
            paths.append(top)
            paths.extend(f"{top}/{sub}" for sub in subs)
        return [{"path": path} for path in paths]

    def library_files(self) -> list[dict[str, Any]]:
        """Library documents (``/api/library/all_files``): latest revision's metadata each."""
        rng = random.Random(f"{self.seed}:{self.index}:library")
        folders = [f["path"] for f in self.library_folders()]
        start = parse_field_time(self.meta["created_at"])
        files = []
        for n in range(20 + self.issue_count // 50):
            folder = folders[n % len(folders)]
            moment = start + timedelta(days=n % 400, minutes=rng.randint(0, 600))
            files.append(
                {
                    "id": self.make_id(KIND_LIBRARY_FILE, 0, n),
                    "filename": f"{folder.rsplit('/', 1)[-1][:3].upper()}-{100 + n} Rev.pdf",
                    "directory": folder,
                    "content_type": "application/pdf",
                    "size": rng.randint(200_000, 60_000_000),
                    "revision": rng.choice((0, 0, 1, 2)),
                    "uploaded_at": field_time(moment),
                }
            )
        return files

    def daily_updates(self) -> list[dict[str, Any]]:
        """Daily updates (``/api/v1/projects/:id/daily_updates``): one a week."""
        rng = random.Random(f"{self.seed}:{self.index}:daily")
        start = parse_field_time(self.meta["created_at"])
        weeks = int((parse_field_time(self.as_of) - start).days // 7)
        return [
            {
                "id": self.make_id(KIND_DAILY_UPDATE, 0, n),
                "status": "Closed" if n < weeks - 1 else "Open",
                "update_date": (start + timedelta(days=7 * n)).date().isoformat(),
                "sections": {
                    "summary": {"notes": rng.choice(("Framing level 2.", "Pour deck 3.", ""))}
                },
            }
            for n in range(weeks)
        ]


class GeneratedFieldProject(FieldProjectData):
    """A Field project whose issues and checklists are generated on demand."""

    def __init__(
        self,
        meta: dict[str, Any],
        seed: int,
        users: list[dict[str, Any]],
        big_attachment_size: int | None = None,
    ) -> None:
        super().__init__(meta, seed)
        self._key = f"{seed}:{self.index}"
        self._main = self.index == 0
        self._start = parse_field_time(meta["created_at"])
        self._as_of = parse_field_time(self.as_of)
        self._span = (self._as_of - self._start).total_seconds() * 0.8
        self._users = [u for u in users if u["id"] in set(self.user_ids)]
        self._emails = [u["email"] for u in self._users]
        live = [a for a in self.areas if not a["deleted"]]
        self._live_area_ids = [a["id"] for a in live]
        self._deleted_area_ids = [a["id"] for a in self.areas if a["deleted"]]
        self._type_ids = [t["id"] for t in self.issue_types]
        self._type_names = {t["id"]: t["name"] for t in self.issue_types}
        self._cf_defs = {
            "cf--" + d["custom_field_id"]: d
            for d in self.custom_fields
            if d["container_type"] == "Issue"
        }
        self._big_attachment_size = big_attachment_size
        self._voided: list[int] | None = None

    # -- status (cheap, own RNG so the voided list needs no full records) ------------------
    def _status(self, index: int) -> str:
        if index < len(STATUSES):
            return STATUSES[index]  # every status appears, even in a tiny project
        roll = random.Random(f"{self._key}:status:{index}").random()
        for status, share in (
            ("Draft", 0.04),
            ("Open", 0.25),
            ("Work Completed", 0.10),
            ("Ready to Inspect", 0.08),
            ("Not Approved", 0.05),
            ("In Dispute", 0.03),
            ("Closed", 0.40),
        ):
            if roll < share:
                return status
            roll -= share
        return "Void"

    def voided_indexes(self) -> list[int]:
        if self._voided is None:
            self._voided = [i for i in range(self.issue_count) if self._status(i) == "Void"]
        return list(self._voided)

    # -- issues ----------------------------------------------------------------------------
    def _awkward(self, name: str, index: int) -> bool:
        return self._main and AWKWARD_ISSUES[name] == index

    def issue(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.issue_count:
            raise IndexError(index)
        rng = random.Random(f"{self._key}:issue:{index}")
        issue_id = self.issue_id(index)
        status = self._status(index)
        created = self._start + timedelta(
            seconds=self._span * index / max(self.issue_count, 1) + rng.uniform(0, 4 * 3600)
        )
        created_by = rng.choice(self._emails)
        type_id = self._type_ids[_weighted_index(rng, _ISSUE_TYPE_WEIGHTS)]

        history, last_change = self._history(rng, status, created)
        comments, last_comment = self._comments(rng, KIND_COMMENT, index, created, last_change)
        updated = max(last_change, last_comment)
        updated += timedelta(seconds=rng.randint(0, 600))

        fields: dict[str, Any] = {
            "f--identifier": f"{index + 1:06d}" if rng.random() > 0.1 else f"PL-{index + 1:05d}",
            "f--issue_type_id": type_id,
            "f--responsible_company_id": (
                rng.choice(self.company_ids) if rng.random() > 0.08 else None
            ),
            "f--description": self._description(rng, index),
            "f--priority": rng.choice(PRIORITIES),
            "f--status": status,
            "f--area_id": self._area(rng, index),
            "f--location_detail": rng.choice(_DETAILS) if rng.random() < 0.4 else "",
            "f--root_cause_id": (
                rng.choice(self.root_causes)["id"] if rng.random() < 0.45 else None
            ),
            "f--due_date": (
                (created + timedelta(days=rng.randint(3, 60))).date().isoformat()
                if rng.random() < 0.7
                else None
            ),
            "f--assigned_to": self._assignee(rng, index),
            "f--labor_hours": rng.choice((0.5, 1.0, 1.5, 2.0, 4.0, 6.0, 8.0, 12.0))
            if rng.random() < 0.3
            else None,
            "f--cost": f"{rng.randint(50, 25000)}.00" if rng.random() < 0.2 else None,
        }
        if self._awkward("due_date_time", index):
            fields["f--due_date"] = DUE_DATE_TIME
        if self._awkward("due_date_unreadable", index):
            fields["f--due_date"] = DUE_DATE_UNREADABLE
        if self._awkward("duplicate_identifier", index):
            fields["f--identifier"] = self.issue(index - 1)["fields"]["f--identifier"]
        signatures: list[dict[str, Any]] = []
        for cf_id in self.issue_custom_field_ids(type_id):
            definition = self._cf_defs[cf_id]
            if definition["display_type"] == "signature":
                # Own RNG: signature fields came later and must not move any other value.
                signature = self._issue_signature(index, definition, created)
                fields[cf_id] = signature["id"] if signature else None
                signatures += [signature] if signature else []
                continue
            fields[cf_id] = self._custom_value(rng, definition, created)

        attachments = self._attachments(rng, index, created, created_by)
        for item in attachments:
            self._mark_up(item)
        return {
            "id": issue_id,
            "project_id": self.id,
            "index": index,
            "fields": fields,
            "created_by": created_by,
            "created_at": field_time(created),
            "updated_at": field_time(updated),
            "closed_at": history[-1]["start_dt"] if status == "Closed" else None,
            "comments": comments,
            "attachments": attachments,
            "signatures": signatures,
            "history": history,
        }

    def _issue_signature(
        self, index: int, definition: dict[str, Any], created: datetime
    ) -> dict[str, Any] | None:
        """The signature filling one issue signature field, or None when it is unsigned.

        The seed's type-scoped "Closing Authority" is signed on most issues of its type, the
        common "Inspector sign-off" on about one issue in eight.
        """
        rng = random.Random(f"{self._key}:signature:{index}:{definition['custom_field_id']}")
        share = 0.7 if definition["container_id"] else 0.12
        if rng.random() >= share:
            return None
        moment = created + timedelta(hours=rng.randint(1, 24 * 20))
        return {
            "type": "Signature",
            "id": self.make_id(KIND_ISSUE_SIGNATURE, definition["position"], index),
            "custom_field_definition_id": definition["custom_field_id"],
            "filename": "signature.png",
            "content_type": "image/png",
            "size": rng.randint(3_000, 12_000),
            "created_by": rng.choice(self._emails),
            "created_at": field_time(moment),
        }

    def _mark_up(self, item: dict[str, Any]) -> None:
        """Give about one photo or document in six a markup on some pages (own RNG).

        ``markup_pages`` lists the pages whose composite rendition shows a markup; the SVG
        strings are what Field's upload call takes as ``markup``.
        """
        if item["type"] not in ("Attachment", "DocumentReference"):
            return
        rng = random.Random(f"{self._key}:markup:{item['id']}")
        if rng.random() >= 0.16:
            return
        pages = item.get("num_pages") or 1
        item["markup_pages"] = sorted(rng.sample(range(pages), rng.randint(1, min(2, pages))))
        item["markup"] = [
            f'<svg xmlns="http://www.w3.org/2000/svg"><line x1="{rng.randint(0, 400)}" '
            f'y1="{rng.randint(0, 400)}" x2="{rng.randint(0, 400)}" y2="{rng.randint(0, 400)}" '
            'stroke="red"/></svg>'
        ]

    def _history(
        self, rng: random.Random, status: str, created: datetime
    ) -> tuple[list[dict[str, Any]], datetime]:
        path = {
            "Draft": ["Draft"],
            "Open": rng.choice(
                (["Open"], ["Draft", "Open"], ["Open", "Work Completed", "Not Approved", "Open"])
            ),
            "Work Completed": ["Open", "Work Completed"],
            "Ready to Inspect": ["Open", "Work Completed", "Ready to Inspect"],
            "Not Approved": ["Open", "Work Completed", "Ready to Inspect", "Not Approved"],
            "In Dispute": rng.choice(
                (["Open", "In Dispute"], ["Open", "Work Completed", "In Dispute"])
            ),
            "Closed": rng.choice(
                (
                    ["Open", "Closed"],
                    ["Open", "Work Completed", "Ready to Inspect", "Closed"],
                    ["Draft", "Open", "Work Completed", "Closed"],
                )
            ),
            "Void": rng.choice((["Open", "Void"], ["Draft", "Void"])),
        }[status]
        moments = [created]
        for _ in path[1:]:
            moments.append(
                min(
                    moments[-1] + timedelta(hours=rng.uniform(1, 20 * 24)),
                    self._as_of - timedelta(minutes=5 * (len(path) - len(moments))),
                )
            )
            if moments[-1] <= moments[-2]:
                moments[-1] = moments[-2] + timedelta(seconds=1)
        history = []
        for position, state in enumerate(path):
            history.append(
                {
                    "status": state,
                    "previous_status": path[position - 1] if position else None,
                    "user": rng.choice(self._emails),
                    "start_dt": field_time(moments[position]),
                    "end_dt": field_time(moments[position + 1])
                    if position + 1 < len(path)
                    else None,
                }
            )
        return history, moments[-1]

    def _comments(
        self, rng: random.Random, kind: int, index: int, start: datetime, end: datetime
    ) -> tuple[list[dict[str, Any]], datetime]:
        """Comments between ``start`` and ``end``, and the time of the last one (or start)."""
        count = rng.choices((0, 1, 2, 3, 4), (45, 25, 15, 10, 5))[0]
        span = max((end - start).total_seconds(), 60)
        moments = sorted(start + timedelta(seconds=rng.uniform(30, span)) for _ in range(count))
        comments = [
            {
                "created_at": iso_time(moment),
                "created_by": rng.choice(self._emails),
                "comment_text": rng.choice(_COMMENTS),
                "id": self.make_id(kind, slot, index),
            }
            for slot, moment in enumerate(moments)
        ]
        return comments, (moments[-1] if moments else start)

    def _description(self, rng: random.Random, index: int) -> str:
        text = f"{rng.choice(_DEFECTS)} {rng.choice(_DETAILS)}. {rng.choice(_ACTIONS)}".strip()
        if self._awkward("emoji_description", index):
            return _EMOJI_DESCRIPTION
        if self._awkward("long_description", index):
            sentences: list[str] = []
            while sum(len(s) + 1 for s in sentences) < 2600:
                sentences.append(
                    f"{rng.choice(_DEFECTS)} {rng.choice(_DETAILS)}; "
                    f"{rng.choice(_ACTIONS) or 'Monitor.'}"
                )
            return " ".join(sentences)
        if self._awkward("empty_description", index):
            return ""
        roll = rng.random()
        if roll < 0.01:
            return ""
        if roll < 0.03:
            return f"  {text} — façade/Zoë ✓ 🚧  "
        if roll < 0.04:
            return text + "\n\nFollow-up:\n- item one\n- item two"
        return text

    def _area(self, rng: random.Random, index: int) -> str | None:
        if self._awkward("missing_area", index):
            return None
        if self._awkward("deleted_area", index) and self._deleted_area_ids:
            return self._deleted_area_ids[0]
        roll = rng.random()
        if roll < 0.03:
            return None
        if roll < 0.04 and self._deleted_area_ids:
            return rng.choice(self._deleted_area_ids)
        return rng.choice(self._live_area_ids)

    def _assignee(self, rng: random.Random, index: int) -> str | None:
        email = rng.choice(self._emails)
        if self._awkward("assignee_case_mismatch", index):
            return _case_variant(self._emails[1 % len(self._emails)])
        if self._awkward("assignee_unknown", index):
            return UNKNOWN_ASSIGNEE
        # The same user as the case mismatch (a Procore assignee), written as Field's id or name.
        same = self._users[1 % len(self._users)]
        if self._awkward("assignee_user_id", index):
            return str(same["id"])
        if self._awkward("assignee_display_name", index):
            return f"{same['first_name']} {same['last_name']}"
        roll = rng.random()
        if roll < 0.2:
            return None
        if roll < 0.22:
            return UNKNOWN_ASSIGNEE
        if roll < 0.24:
            return _case_variant(email)
        return email

    def _custom_value(
        self, rng: random.Random, definition: dict[str, Any], created: datetime
    ) -> str | None:
        if rng.random() < 0.25:
            return None
        shown = definition["display_type"]
        if shown == "drop-down":
            return rng.choice(definition["_values"])
        if shown == "date":
            return (created + timedelta(days=rng.randint(0, 30))).strftime("%m/%d/%Y")
        if shown == "numeric":
            return str(round(rng.uniform(0, 100), rng.choice((0, 2))))
        if shown == "checkbox":
            return rng.choice(("0", "1"))
        return rng.choice(
            (
                "Inspection has been scheduled",
                "See drawing A-201",
                "N/A",
                "Observed by site super",
                "Ünïcödé nöte ✓",
            )
        )

    def _attachments(
        self, rng: random.Random, index: int, created: datetime, created_by: str
    ) -> list[dict[str, Any]]:
        count = rng.choices((0, 1, 2, 3), (40, 35, 15, 10))[0]
        awkward_names: tuple[str, ...] = ()
        for name, names in _AWKWARD_FILENAMES.items():
            if self._awkward(name, index):
                awkward_names = names
                count = max(count, len(names))
        big = self._main and (index % 250 == 123 or index == AWKWARD_ISSUES["big_attachment"])
        if big:
            count = max(count, 1)
        items: list[dict[str, Any]] = []
        for slot in range(count):
            moment = created + timedelta(minutes=rng.randint(0, 600))
            kind_roll = rng.random()
            if kind_roll < 0.05 and not awkward_names and not (big and slot == 0):
                items.append(self._document_reference(rng, slot, index, KIND_DOCUMENT_REFERENCE))
                continue
            if kind_roll < 0.08 and not awkward_names and not (big and slot == 0):
                items.append(
                    {
                        "id": self.make_id(KIND_URI_REFERENCE, slot, index),
                        "type": "UriReference",
                        "name": "Spec section 09 29 00",
                        "path": "https://specs.example.com/09-29-00?rev=3&lang=en",
                        "caption": "",
                        "tags": "",
                    }
                )
                continue
            content_type, extension = rng.choices(
                (
                    ("image/jpeg", "jpg"),
                    ("image/png", "png"),
                    ("application/pdf", "pdf"),
                    ("video/quicktime", "mov"),
                    ("application/octet-stream", "dwg"),
                ),
                (70, 10, 15, 2, 3),
            )[0]
            size = _file_size(rng)
            if big and slot == 0:
                content_type, extension = "video/quicktime", "mov"
                size = rng.randint(5 * 1024 * 1024, 8 * 1024 * 1024)
            name = f"IMG_{rng.randint(1, 9999):04d}.{extension}"
            if slot < len(awkward_names):
                name = awkward_names[slot]
                content_type = (
                    "application/pdf"
                    if name.endswith(".pdf")
                    else ("image/png" if name.strip().endswith(".png") else "image/jpeg")
                )
            items.append(
                {
                    "id": self.make_id(KIND_ATTACHMENT, slot, index),
                    "type": "Attachment",
                    "name": name,
                    "caption": rng.choice(("", "", "before repair", "after repair", "overview")),
                    "tags": rng.choice(("", "", "punch", "punch,level-2", "safety")),
                    "content_type": content_type,
                    "size": size,
                    "num_pages": rng.randint(1, 6) if content_type == "application/pdf" else 1,
                    "created_at": field_time(moment),
                    "updated_at": field_time(moment),
                    "created_by": created_by if rng.random() < 0.7 else rng.choice(self._emails),
                }
            )
        if self._main and index == 0 and self._big_attachment_size:
            moment = created + timedelta(minutes=5)
            items.append(
                {
                    "id": self.make_id(KIND_ATTACHMENT, 0x7FFF, index),
                    "type": "Attachment",
                    "name": "site walkthrough (full).mov",
                    "caption": "",
                    "tags": "",
                    "content_type": "video/quicktime",
                    "size": self._big_attachment_size,
                    "num_pages": 1,
                    "created_at": field_time(moment),
                    "updated_at": field_time(moment),
                    "created_by": created_by,
                }
            )
        return items

    def _document_reference(
        self, rng: random.Random, slot: int, index: int, kind: int
    ) -> dict[str, Any]:
        document_kind = next(doc for doc, ref in DOCUMENT_KINDS.items() if ref == kind)
        return {
            "id": self.make_id(kind, slot, index),
            "type": "DocumentReference",
            "document_id": self.make_id(document_kind, slot, index),
            "name": rng.choice(("A-201 Floor Plan.pdf", "S-301 Sections.pdf", "M-101 HVAC.pdf")),
            "num_pages": rng.randint(1, 4),
            "content_type": "application/pdf",
            "size": rng.randint(40_000, 900_000),
            "caption": "",
            "tags": "",
        }

    # -- checklists ------------------------------------------------------------------------
    def checklist(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.checklist_count:
            raise IndexError(index)
        rng = random.Random(f"{self._key}:checklist:{index}")
        # The first checklists use each template once: every item type appears in any project.
        covering = index < len(self.templates)
        template = self.templates[index] if covering else rng.choice(self.templates)
        created = self._start + timedelta(
            seconds=self._span * index / max(self.checklist_count, 1) + rng.uniform(0, 3600)
        )
        created_by = rng.choice(self._emails)
        moments = [created]
        sections = []
        signatures: list[dict[str, Any]] = []
        item_no = 0
        for section in template["sections"]:
            items = []
            for template_item in section["items"]:
                moments.append(moments[-1] + timedelta(minutes=rng.randint(1, 90)))
                item = self._checklist_item(
                    rng, index, item_no, template_item, moments[-1], created_by, covering
                )
                if template_item["display_type"] == "signature" and item["response"]:
                    signatures.append(self._signature(rng, item["response"], moments[-1]))
                items.append(item)
                item_no += 1
            sections.append({"items": items, "section_name": section["name"]})
        comments, last_comment = self._comments(
            rng, KIND_CHECKLIST_COMMENT, index, created, moments[-1]
        )
        updated = max(moments[-1], last_comment)
        deleted = not covering and (index == len(self.templates) or rng.random() < 0.04)
        status = rng.choices(CHECKLIST_STATUSES, (40, 20, 40))[0]
        company = rng.choice(self.company_ids)
        custom_values = []
        for position, definition in enumerate(self.custom_fields):
            if not (
                definition["container_type"] == "Checklist"
                and definition["container_id"] == template["id"]
            ):
                continue
            value = self._checklist_custom_value(rng, definition)
            if definition["display_type"] == "signature":
                value = ""
                if covering or definition["required"] or rng.random() < 0.7:
                    signature_id = self.make_id(KIND_SIGNATURE, 0x100 + position, index)
                    signatures.append(self._signature(rng, signature_id, updated))
                    value = signature_id  # the value names the signature it holds
            custom_values.append(
                {
                    "value": value,
                    "display_type": definition["display_type"],
                    "id": self.make_id(KIND_CF_VALUE, position, index),
                }
            )
        attachments: list[dict[str, Any]] = []
        for slot in range(1 if index == 0 else rng.choices((0, 1, 2), (60, 30, 10))[0]):
            roll = 0.9 if index == 0 else rng.random()
            if roll < 0.3:
                attachments.append(
                    {
                        "type": "UriReference",
                        "path": "http://www.example.com/qa",
                        "name": "QA manual",
                        "id": self.make_id(KIND_CHECKLIST_ATTACHMENT, slot, index),
                    }
                )
            elif roll < 0.6:
                attachments.append(
                    self._document_reference(rng, slot, index, KIND_CHECKLIST_ATTACHMENT)
                )
            else:
                attachments.append(
                    self._photo(rng, KIND_CHECKLIST_ATTACHMENT, slot, index, created, created_by)
                )
        source: dict[str, Any] = {}
        if index % 6 == 1 and self.tasks:
            task = self.tasks[index % len(self.tasks)]
            source = {"id": task["id"], "type": "Task", "name": task["name"]}
        elif index % 6 == 2 and self.equipment:
            piece = self.equipment[index % len(self.equipment)]
            source = {"id": piece["id"], "type": "Equipment", "name": piece["name"]}
        return {
            "id": self.checklist_id(index),
            "project_id": self.id,
            "index": index,
            "identifier": f"{index + 1:06d}",
            "name": template["name"],
            "description": rng.choice(
                ("", "Weekly inspection.", "Prior to closing walls.", "Per spec section 01 45 00.")
            ),
            "status": status,
            "priority": rng.choice(("Low", "Medium", "High", None)),
            "phase": rng.choice((None, "Construction", "Closeout")),
            "checklist_type": template["checklist_type"],
            "tags": rng.choice(("", "weekly", "level-2,mep")),
            "created_at": field_time(created),
            "updated_at": field_time(updated),
            "created_by": created_by,
            "deleted": deleted,
            "deleted_at": field_time(updated + timedelta(days=1)) if deleted else None,
            "company": {"name": self._company_name(company), "id": company},
            "template": {"name": template["name"], "id": template["id"]},
            "source": source,
            "comments": comments,
            "custom_field_values": custom_values,
            "signatures": signatures,
            "attachments": attachments,
            "sections": sections,
        }

    def _signature(self, rng: random.Random, signature_id: str, moment: datetime) -> dict[str, Any]:
        return {
            "type": "Signature",
            "id": signature_id,
            "content_type": "image/png",
            "size": rng.randint(3_000, 12_000),
        }

    def _company_name(self, company_id: str) -> str:
        return self.meta["company_names"][company_id]

    def _response(
        self, rng: random.Random, shown: str, possible: list[str], moment: datetime
    ) -> tuple[str | None, str]:
        """A response and its is_conforming ("Yes", "No" or "Other") for a display type."""
        if shown == "drop-down":
            response = rng.choices(possible, (75, 15, 10))[0]
            if response in ("+", "Yes"):
                return response, "Yes"
            return response, "No" if response in ("-", "No") else "Other"
        if shown == "single-select":
            response = rng.choices(possible, (80, 20))[0]
            return response, "Yes" if response == possible[0] else "No"
        if shown == "multi-select":
            response = "|".join(rng.sample(possible, rng.randint(1, len(possible))))
            return response, "No" if possible[-1] in response else "Yes"
        if shown == "date":
            return moment.strftime("%m/%d/%Y"), "Other"
        if shown == "numeric":
            return rng.choice(("12", "3.5", "0", "118.25")), "Other"
        if shown == "checkbox":
            return rng.choice(("1", "1", "0")), "Other"
        if shown == "group_start":
            return None, "Other"
        return rng.choice(("OK", "See comment", "")), "Other"

    def _checklist_item(
        self,
        rng: random.Random,
        index: int,
        item_no: int,
        template_item: dict[str, Any],
        moment: datetime,
        created_by: str,
        covering: bool,
    ) -> dict[str, Any]:
        shown = template_item["display_type"]
        possible = list(template_item["possible_values"])
        item_id = self.make_id(KIND_CHECKLIST_ITEM, item_no, index)
        if shown == "signature":
            # The response names the signature record (served with the checklist's signatures).
            signed = covering or rng.random() < 0.8
            response: str | None = self.make_id(KIND_SIGNATURE, item_no, index) if signed else ""
            conforming = "Other"
        else:
            response, conforming = self._response(rng, shown, possible, moment)
        issues = []
        if conforming == "No" and rng.random() < 0.6 and self.issue_count:
            linked = self.issue((index * 13 + item_no * 7) % self.issue_count)
            issues.append(
                {
                    "description": linked["fields"]["f--description"],
                    "identifier": linked["fields"]["f--identifier"],
                    "id": linked["id"],
                }
            )
        attachments = []
        if (index == 0 and item_no == 0) or rng.random() < 0.12:
            attachments.append(
                self._photo(rng, KIND_ITEM_ATTACHMENT, item_no * 16, index, moment, created_by)
            )
        if rng.random() < 0.04:
            attachments.append(
                self._document_reference(rng, item_no * 16 + 1, index, KIND_ITEM_ATTACHMENT)
            )
        return {
            "created_at": field_time(moment),
            "issues": issues,
            "question_text": template_item["question_text"],
            "created_by": created_by,
            "display_type": shown,
            "response": response,
            "display_number": f"{item_no + 1}.",
            "position": item_no + 2,
            "comment": rng.choice((None, None, "Checked with foreman.", "Minor rework needed.")),
            "spec_ref": rng.choice(("", "", "Division 09 Finishes", "Division 10 Specialties")),
            "is_conforming": conforming,
            "attachments": attachments,
            "id": item_id,
            "possible_values": possible,
            "updated_at": field_time(moment + timedelta(minutes=rng.randint(0, 30))),
        }

    def _photo(
        self,
        rng: random.Random,
        kind: int,
        slot: int,
        index: int,
        moment: datetime,
        created_by: str,
    ) -> dict[str, Any]:
        return {
            "id": self.make_id(kind, slot, index),
            "type": "Attachment",
            "name": f"IMG_{rng.randint(1, 9999):04d}.jpg",
            "caption": "",
            "tags": "",
            "content_type": "image/jpeg",
            "size": _file_size(rng),
            "num_pages": 1,
            "created_at": field_time(moment),
            "updated_at": field_time(moment),
            "created_by": created_by,
        }

    def _checklist_custom_value(self, rng: random.Random, definition: dict[str, Any]) -> str:
        shown = definition["display_type"]
        if shown == "checkbox":
            return rng.choice(("0", "1"))
        if shown == "drop-down":
            return rng.choice(definition["_values"] or [""])
        if shown == "numeric":
            return rng.choice(("3.14159265", "12", "0.5"))
        if shown == "date":
            return f"{rng.randint(1, 12):02d}/{rng.randint(1, 28):02d}/2015"
        return rng.choice(("Default Text Value", "Crew B", ""))


def _weighted_index(rng: random.Random, weights: tuple[int, ...]) -> int:
    return rng.choices(range(len(weights)), weights)[0]


def _file_size(rng: random.Random) -> int:
    # Mostly phone photos and small PDFs; the 5-8 MB ones are placed by index (see issue()).
    roll = rng.random()
    if roll < 0.93:
        return int(math.exp(rng.uniform(math.log(2_000), math.log(250_000))))
    if roll < 0.997:
        return rng.randint(250_000, 1_200_000)
    return rng.randint(1_200_000, 3_000_000)


def _case_variant(email: str) -> str:
    local, _, domain = email.partition("@")
    return local[:1].upper() + local[1:] + "@" + domain.upper()


# -- account-level generation ---------------------------------------------------------------------
class _AccountBuilder:
    """Builds the small, held parts of the account from the seed."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.seed_tag = seed & 0xFFFF
        self.rng = random.Random(f"{seed}:account")

    def companies(self) -> list[dict[str, Any]]:
        rng = self.rng
        picked = [_COMPANIES[0]] + rng.sample(_COMPANIES[1:], 7)
        result = []
        for position, (name, description, category, city, state, postal) in enumerate(picked):
            result.append(
                {
                    "account_company": position == 0,
                    "address": {
                        "country": "US" if state else "DE",
                        "address3": None,
                        "postal_code": postal,
                        "county": None,
                        "latitude": None,
                        "city": city,
                        "address2": None,
                        "state": state,
                        "longitude": None,
                        "address1": f"{rng.randint(1, 999)} {rng.choice(_STREETS)} St",
                    },
                    "url": f"www.{_slug(_ascii_fold(name)).replace('.', '')}.com"
                    if position % 3
                    else None,
                    "duns_no": None
                    if position % 2
                    else f"{rng.randint(10, 99)}-345-{rng.randint(1000, 9999)}",
                    "ein_no": None,
                    "telephone": f"617-555-{rng.randint(1000, 9999)}" if position % 4 else None,
                    "company_type": ""
                    if position == 0
                    else rng.choice(("Other", "Subcontractor", "")),
                    "name": name,
                    "fax": None,
                    "description": description if position else None,
                    "company_category": category,
                    "id": make_id(KIND_COMPANY, self.seed_tag, 0, 0, position + 1),
                }
            )
        return result

    def users(self, companies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rng = self.rng
        count = rng.randint(22, 34)
        users = [
            {
                "roles": "project_admin,document_manager,contractor",
                "company": {"id": companies[0]["id"], "name": companies[0]["name"]},
                "junior": False,
                "first_name": "Demo",
                "telephone": None,
                "email": "demo@example.com",
                "last_name": "Admin",
                "id": make_id(KIND_USER, self.seed_tag, 0, 0, 1),
            }
        ]
        seen = {"demo@example.com"}
        while len(users) < count:
            first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
            company = companies[0] if rng.random() < 0.35 else rng.choice(companies[1:])
            domain = _slug(_ascii_fold(company["name"])).replace(".", "") + ".example.com"
            email = f"{_slug(_ascii_fold(first))}.{_slug(_ascii_fold(last))}@{domain}"
            if email in seen:
                continue
            seen.add(email)
            role = {"Architect": "architect", "Owner": "owner", "Inspector": "inspector"}.get(
                company["company_category"], "contractor"
            )
            extra = rng.choice(("", "", "", "project_admin,", "document_manager,"))
            users.append(
                {
                    "roles": extra + role,
                    "company": {"id": company["id"], "name": company["name"]},
                    "junior": rng.random() < 0.1,
                    "first_name": first,
                    "telephone": f"617-555-{rng.randint(1000, 9999)}"
                    if rng.random() < 0.5
                    else None,
                    "email": email,
                    "last_name": last,
                    "id": make_id(KIND_USER, self.seed_tag, 0, 0, len(users) + 1),
                }
            )
        return users


def _project_meta(
    seed: int,
    index: int,
    issues: int,
    checklists: int,
    companies: list[dict[str, Any]],
    users: list[dict[str, Any]],
) -> dict[str, Any]:
    """Everything small about one Field project (areas, types, fields, templates...)."""
    seed_tag = seed & 0xFFFF
    rng = random.Random(f"{seed}:{index}:project")

    def pid(kind: int, slot: int, n: int) -> str:
        return make_id(kind, seed_tag, index, slot, n)

    start = datetime(2014, 3, 3, 7, 30, tzinfo=FIELD_TZ) + timedelta(days=rng.randint(0, 300))
    as_of = start + timedelta(days=540)
    names = list(_PROJECT_NAMES)
    random.Random(f"{seed}:names").shuffle(names)

    if index == 0:
        company_ids = [c["id"] for c in companies]
        user_ids = [u["id"] for u in users]
    else:
        company_ids = [companies[0]["id"]] + [c["id"] for c in rng.sample(companies[1:], 3)]
        members = [u for u in users[1:] if u["company"]["id"] in company_ids]
        user_ids = [users[0]["id"]] + [u["id"] for u in members[:9]]

    issue_types = [
        {"category_name": category, "name": name, "id": pid(KIND_ISSUE_TYPE, 0, n + 1)}
        for n, (category, name) in enumerate(_ISSUE_TYPES)
    ]
    root_causes = [
        {"category_name": category, "name": name, "id": pid(KIND_ROOT_CAUSE, 0, n + 1)}
        for n, (category, name) in enumerate(_ROOT_CAUSES)
    ]
    own_type = next(t for t in issue_types if t["name"] == _TYPE_WITH_OWN_FIELDS)
    templates = []
    for n, (name, kind, sections) in enumerate(_CHECKLIST_TEMPLATES):
        template_items = 0
        built: list[dict[str, Any]] = []
        for section_name, questions in sections:
            items: list[dict[str, Any]] = []
            for question, shown, choices in questions:
                items.append(
                    {
                        "id": pid(KIND_TEMPLATE_ITEM, n, template_items),
                        "question_text": question,
                        "display_type": shown,
                        "possible_values": list(choices),
                    }
                )
                template_items += 1
            built.append({"name": section_name, "items": items})
        templates.append(
            {
                "name": name,
                "checklist_type": kind,
                "id": pid(KIND_TEMPLATE, 0, n + 1),
                "rich": any(
                    i["display_type"] in RICH_ITEM_TYPES for sec in built for i in sec["items"]
                ),
                "sections": built,
            }
        )
    tasks = [
        {"id": pid(KIND_TASK, 0, n + 1), "name": name}
        for n, name in enumerate(("Level 2 drywall", "Roof membrane", "Elevator install"))
    ]
    equipment = [
        {"id": pid(KIND_EQUIPMENT, 0, n + 1), "name": name}
        for n, name in enumerate(("AHU-1", "Chiller CH-2", "Generator G-1"))
    ]
    updated = field_time(start + timedelta(days=2))
    definitions = [
        # (container_type, container_id, display_type, name, possible values, required)
        (
            "Issue",
            None,
            "drop-down",
            "Trade",
            ["", "Drywall", "Electrical", "Mechanical", "Plumbing", "Concrete", "Glazing"],
            False,
        ),
        ("Issue", None, "date", "Inspection Date", [], False),
        ("Issue", None, "checkbox", "Backcharge", [], False),
        ("Issue", None, "text", "Notes", [], False),
        ("Issue", own_type["id"], "date", "Occurrence Date", [], False),
        ("Issue", own_type["id"], "text", "Observers", [], True),
        ("Checklist", templates[0]["id"], "checkbox", "Inspector present", [], False),
        ("Checklist", templates[0]["id"], "date", "Inspection date", [], False),
        (
            "Checklist",
            templates[0]["id"],
            "drop-down",
            "Crew",
            ["Choice 1", "Choice 2", "Yes", "Crew: night"],
            False,
        ),
        ("Checklist", templates[1]["id"], "numeric", "Workers on site", [], False),
        ("Checklist", templates[1]["id"], "text", "Weather", [], False),
        ("Checklist", templates[0]["id"], "signature", "Superintendent signature", [], False),
        ("Checklist", templates[2]["id"], "signature", "Engineer of record signature", [], True),
        ("Checklist", templates[2]["id"], "signature", "Concrete foreman signature", [], False),
        # Issue signature fields (seed 003 issues/fields: "Closing Authority" of a type's own
        # fields); appended so every earlier definition keeps its id and position.
        ("Issue", own_type["id"], "signature", "Closing Authority", [], False),
        ("Issue", None, "signature", "Inspector sign-off", [], False),
    ]
    custom_fields = []
    for n, (container, container_id, shown, name, values, required) in enumerate(definitions):
        custom_fields.append(
            {
                "custom_field_id": pid(KIND_CUSTOM_FIELD, 0, n + 1),
                "container_id": container_id,
                "container_type": container,
                "display_type": shown,
                "default_value": "" if shown == "drop-down" else None,
                "required": required,
                "position": n + 1,
                "updated_at": updated,
                "name": name,
                "possible_values": yaml_list(values) if shown == "drop-down" else None,
                "_values": values,
            }
        )
    areas = _areas(rng, index, pid, start)
    issue_fields = _issue_fields(custom_fields, own_type)
    return {
        "index": index,
        "id": pid(KIND_PROJECT, 0, 1),
        # A portfolio's further projects get a number once the names run out.
        "name": names[index % len(names)]
        + (f" {index // len(names) + 1}" if index >= len(names) else ""),
        "a360_project_id": None if index else f"b.{seed_tag:04x}a360",
        "created_at": field_time(start),
        "updated_at": field_time(as_of - timedelta(days=3)),
        "as_of": field_time(as_of),
        "issue_count": issues,
        "checklist_count": checklists,
        "areas": areas,
        "company_ids": company_ids,
        "company_names": {c["id"]: c["name"] for c in companies if c["id"] in company_ids},
        "user_ids": user_ids,
        "issue_types": issue_types,
        "root_causes": root_causes,
        "custom_fields": custom_fields,
        "issue_fields": issue_fields,
        "templates": templates,
        "tasks": tasks,
        "equipment": equipment,
        "filters": [
            {"id": pid(KIND_FILTER, 0, 1), "name": "All Issues", "container": "Issue"},
            {"id": pid(KIND_FILTER, 0, 2), "name": "All Checklists", "container": "Checklist"},
        ],
    }


def _areas(rng: random.Random, project_index: int, pid: Any, start: datetime) -> list[dict]:
    """Buildings > levels > rooms > zones, with deleted nodes and repeated names."""
    areas: list[dict[str, Any]] = []

    def add(
        name: str,
        parent: dict[str, Any] | None,
        identifier: str = "",
        deleted: bool = False,
        null_path: bool = False,
    ) -> dict[str, Any]:
        depth = 0 if parent is None else parent["_depth"] + 1
        area = {
            "full_path": name if parent is None else f"{parent['full_path']}>{name}",
            "path": (None if null_path else "") if parent is None else parent["full_path"],
            "name": name,
            "identifier": identifier,
            "id": pid(KIND_AREA, depth, len(areas) + 1),
            "parent_id": None if parent is None else parent["id"],
            "deleted": 1 if deleted or (parent is not None and parent["deleted"]) else 0,
            "_depth": depth,
        }
        areas.append(area)
        return area

    if project_index == 0:
        buildings = [
            ("North Building", "N", 4),
            ("South Building", "S", 3),
            ("Parking Garage", "P", 2),
        ]
    else:
        buildings = [("Main Building", "M", 2)]
    for building_name, code, levels in buildings:
        building = add(building_name, None)
        for level in range(1, levels + 1):
            floor = add(f"Level {level}", building, deleted=(code == "S" and level == 3))
            for room in range(1, rng.randint(3, 6) + 1):
                number = f"{level}{room:02d}"
                room_area = add(
                    f"Room {number}",
                    floor,
                    identifier=f"{code}-{number}" if rng.random() < 0.5 else "",
                    deleted=rng.random() < 0.06,
                )
                if rng.random() < 0.3:
                    for zone in ("Zone A", "Zone B"):
                        add(zone, room_area)
            add("Electrical Closet", floor)
    if project_index == 0:
        site = add("Site", None)
        add("Laydown Yard", site)
        add(AWKWARD_AREA_NAME, areas[0])  # under North Building: ">" inside a name
        add("Mezzanine", None, null_path=True)
        add("Old Trailer", None, deleted=True)
    areas.sort(key=lambda a: (a["full_path"], a["id"]))
    for area in areas:
        del area["_depth"]
    return areas


def _issue_fields(custom_fields: list[dict[str, Any]], own_type: dict[str, Any]) -> dict:
    """The ``/fieldapi/issues/v1/fields`` answer for a project."""
    common = [
        ("drop-down", True, "Issue type", [], "f--issue_type_id"),
        ("text", True, "Identifier", [], "f--identifier"),
        ("text", True, "Description", [], "f--description"),
        ("drop-down", False, "Responsible company", [], "f--responsible_company_id"),
        ("drop-down", False, "Priority", list(PRIORITIES), "f--priority"),
        ("drop-down", False, "Status", list(STATUSES), "f--status"),
        ("drop-down", False, "Area", [], "f--area_id"),
        ("text", False, "Location detail", [], "f--location_detail"),
        ("drop-down", False, "Root cause", [], "f--root_cause_id"),
        ("date", False, "Due date", [], "f--due_date"),
        ("drop-down", False, "Assigned to", [], "f--assigned_to"),
    ]
    common_fields = [
        {
            "display_type": shown,
            "required": required,
            "position": 10001 + n,
            "name": name,
            "possible_values": values,
            "id": field_id,
        }
        for n, (shown, required, name, values, field_id) in enumerate(common)
    ]
    issue_cfs = [d for d in custom_fields if d["container_type"] == "Issue"]
    for n, d in enumerate(d for d in issue_cfs if d["container_id"] is None):
        common_fields.append(
            {
                "display_type": d["display_type"],
                "required": d["required"],
                "position": 20001 + n,
                "name": d["name"],
                "possible_values": d["_values"],
                "id": "cf--" + d["custom_field_id"],
            }
        )
    own = [
        {
            "display_type": d["display_type"],
            "required": d["required"],
            "position": 30001 + n,
            "name": d["name"],
            "possible_values": d["_values"],
            "id": "cf--" + d["custom_field_id"],
        }
        for n, d in enumerate(d for d in issue_cfs if d["container_id"] == own_type["id"])
    ]
    return {
        "common": {"fields": common_fields},
        "category": {
            "category": own_type["category_name"],
            "fields": own,
            "name": own_type["name"],
            "id": own_type["id"],
        },
        "ancillary": {
            "fields": [
                {
                    "display_type": "numeric",
                    "required": False,
                    "name": "Labor hours",
                    "possible_values": [],
                    "id": "f--labor_hours",
                },
                {
                    "display_type": "text",
                    "required": False,
                    "name": "Cost",
                    "possible_values": [],
                    "id": "f--cost",
                },
            ]
        },
    }


# -- the account ----------------------------------------------------------------------------------
class _AccountBase:
    """What the Field simulator needs from an account, generated or loaded."""

    seed: int
    companies: list[dict[str, Any]]
    users: list[dict[str, Any]]
    projects: list[FieldProjectData]

    @property
    def main(self) -> FieldProjectData:
        """The project being migrated (the first one)."""
        return self.projects[0]

    @property
    def project(self) -> dict[str, Any]:
        """The main project's summary: ``{"id", "name", "a360_project_id"}``."""
        main = self.main
        return {"id": main.id, "name": main.name, "a360_project_id": main.meta["a360_project_id"]}

    def find_project(self, project_id: str) -> FieldProjectData | None:
        return next((p for p in self.projects if p.id == project_id), None)

    def attachment_chunks(
        self, object_id: str, size: int, content_type: str = "", variant: str = "original"
    ) -> Iterator[bytes]:
        """The bytes of a stored file (attachment, signature, document), streamed."""
        return blob_chunks(self.seed, object_id, size, content_type, variant)

    def attachment_sha256(self, object_id: str, size: int, content_type: str = "") -> str:
        """sha256 hex digest of a stored file, computed by streaming it."""
        return sha256_of_chunks(self.attachment_chunks(object_id, size, content_type))

    def target_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def dump(self, path: str | os.PathLike[str]) -> None:
        """Stream the whole account to ``path`` as one JSON document, one record per line."""
        header = {
            "seed": self.seed,
            "companies": self.companies,
            "users": self.users,
            "target_state": self.target_state(),
        }
        with open(path, "w", encoding="utf-8", newline="\n") as out:
            out.write(f'{{"format":{json.dumps(DUMP_FORMAT)},\n')
            out.write(f'"header":{_line(header)},\n')
            out.write('"projects":[\n')
            for number, project in enumerate(self.projects):
                meta = dict(project.meta, voided_indexes=project.voided_indexes())
                out.write(f'{{"meta":{_line(meta)},\n"issues":[\n')
                _write_records(out, project.iter_issues(), project.issue_count)
                out.write('],\n"checklists":[\n')
                _write_records(out, project.iter_checklists(), project.checklist_count)
                out.write("]}" + ("," if number + 1 < len(self.projects) else "") + "\n")
            out.write("]}\n")


def _line(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _write_records(out: Any, records: Iterator[dict[str, Any]], count: int) -> None:
    for number, record in enumerate(records):
        out.write(_line(record) + ("," if number + 1 < count else "") + "\n")


class GeneratedProject(_AccountBase):
    """A generated BIM 360 Field account: the main project plus a small second one.

    ``issues``/``checklists`` size the main project (checklists default to ``issues // 8``,
    at least 3). ``big_attachment_size`` adds one attachment of that many bytes to the
    main project's first issue (e.g. 50 MB to prove streaming). ``second_project_issues``
    sizes the second project, which exists so project scoping can be tested.
    ``more_projects`` adds further projects (a portfolio, issue 18), one per issue count given,
    each with ``max(3, issues // 8)`` checklists and its own Procore project (5102, 5103, ...).
    """

    def __init__(
        self,
        seed: int = 7,
        issues: int = 300,
        checklists: int | None = None,
        *,
        second_project_issues: int = 12,
        big_attachment_size: int | None = None,
        more_projects: Sequence[int] = (),
    ) -> None:
        if issues < 0:
            raise ValueError("issues must be >= 0")
        self.seed = seed
        self.params: dict[str, Any] = {
            "issues": issues,
            "checklists": checklists,
            "second_project_issues": second_project_issues,
            "big_attachment_size": big_attachment_size,
        }
        if more_projects:
            self.params["more_projects"] = list(more_projects)
        builder = _AccountBuilder(seed)
        self.companies = builder.companies()
        self.users = builder.users(self.companies)
        checklist_count = max(3, issues // 8) if checklists is None else checklists
        sizes = [(issues, checklist_count), (second_project_issues, 3)]
        sizes += [(count, max(3, count // 8)) for count in more_projects]
        self.projects = [
            GeneratedFieldProject(
                _project_meta(seed, n, count, lists, self.companies, self.users),
                seed,
                self.users,
                big_attachment_size if n == 0 else None,
            )
            for n, (count, lists) in enumerate(sizes)
        ]

    def target_state(self) -> dict[str, Any]:
        """The Procore starting state (see the brief): users, assignees, locations, issues."""
        rng = random.Random(f"{self.seed}:procore")
        gc = self.companies[0]
        first, second = self.projects[:2]
        more = {5100 + n: project for n, project in enumerate(self.projects) if n >= 2}
        state: dict[str, Any] = {
            "company": {"id": 4100, "name": gc["name"]},
            "projects": [
                {"id": 5100, "name": first.name, "company_id": 4100},
                {"id": 5101, "name": second.name, "company_id": 4100},
            ]
            + [{"id": pid, "name": p.name, "company_id": 4100} for pid, p in more.items()],
        }
        users: list[dict[str, Any]] = []
        second_members = set(second.user_ids)
        for position, user in enumerate(self.users):
            if position and position % 7 == 3:
                continue  # a Field user nobody created in Procore
            email = user["email"]
            if position % 7 == 5:
                email = _case_variant(email)  # same person, different letter case
            project_ids = [5100] + ([5101] if user["id"] in second_members else [])
            project_ids += [pid for pid, p in more.items() if user["id"] in p.user_ids]
            users.append(
                {
                    "id": 7001 + len(users),
                    "name": f"{user['first_name']} {user['last_name']}",
                    "email_address": email,
                    "company_name": user["company"]["name"],
                    "project_ids": project_ids,
                }
            )
        for name, email, projects in (
            ("Priya Raman", "priya.raman@harborhealth.example.org", [5100]),
            ("Procore Integration", "integration@procore-tenant.example.com", [5100, 5101]),
            ("Tom Becker", "tom.becker@keystonearch.example.com", [5101]),
        ):
            users.append(
                {
                    "id": 7001 + len(users),
                    "name": name,
                    "email_address": email,
                    "company_name": gc["name"],
                    "project_ids": projects,
                }
            )
        state["users"] = users
        # The project directory: most Field companies exist in Procore as vendors (a checklist's
        # company becomes its responsible contractor), every third one does not.
        state["vendors"] = [
            {
                "id": 9001 + position,
                "name": company["name"],
                "project_ids": [5100]
                + ([5101] if company["id"] in second.company_ids else [])
                + [pid for pid, p in more.items() if company["id"] in p.company_ids],
            }
            for position, company in enumerate(self.companies)
            if position % 3 != 2
        ]
        # The company's trades (a coordination issue's trade_id). Against the Field "Trade"
        # values: Drywall and Concrete by name, Electrical ignoring case, Mechanical and
        # Glazing only through mappings/trades.csv (HVAC, Glass & Glazing), Plumbing not at
        # all; Fire Protection is no longer available.
        state["trades"] = [
            {"id": 3001 + n, "name": name, "active": active}
            for n, (name, active) in enumerate(
                (
                    ("Drywall", True),
                    ("ELECTRICAL", True),
                    ("Concrete", True),
                    ("HVAC", True),
                    ("Glass & Glazing", True),
                    ("Fire Protection", False),
                )
            )
        ]
        state["assignee_user_ids"] = {
            str(project_id): [
                u["id"]
                for n, u in enumerate(users)
                if project_id in u["project_ids"] and n % 4 != 2
            ]
            for project_id in (5100, 5101, *more)
        }
        live_paths = [
            a["full_path"].split(">")
            for a in first.areas
            if not a["deleted"]
            and a["name"] != AWKWARD_AREA_NAME
            and AWKWARD_AREA_NAME not in a["full_path"]
        ]
        wanted = [p for p in live_paths if len(p) == 2][:2] + [
            p for p in live_paths if len(p) == 3
        ][:1]
        wanted += rng.sample([p for p in live_paths if len(p) == 3], 1)
        wanted.append(["Site Logistics", "Laydown Yard"])  # exists in Procore only
        unique: list[list[str]] = []
        for path in wanted:
            if path not in unique:
                unique.append(path)
        state["locations"] = {"5100": unique, "5101": []} | {str(pid): [] for pid in more}
        state["coordination_issues"] = {
            "5100": [
                {
                    "title": "Clash: supply duct vs beam at grid B/4",
                    "status": "open",
                    "priority": "high",
                    "issue_type": "clash",
                },
                {
                    "title": "Ceiling height conflict in corridor 2",
                    "status": "closed",
                    "priority": "low",
                    "issue_type": "coordination",
                },
                {
                    "title": "Review stair 2 landing detail",
                    "status": "ready_for_review",
                    "priority": "medium",
                    "issue_type": "design_review",
                },
            ],
            "5101": [],
        } | {str(pid): [] for pid in more}
        return state


# -- loading a dump -------------------------------------------------------------------------
class LoadedFieldProject(FieldProjectData):
    """A project read back from a dump: records are read from the file on demand."""

    def __init__(
        self,
        meta: dict[str, Any],
        seed: int,
        fd: int,
        issue_offsets: array,
        checklist_offsets: array,
    ) -> None:
        super().__init__(meta, seed)
        self._fd = fd
        self._issues = issue_offsets  # start, end pairs
        self._checklists = checklist_offsets
        self._voided = list(meta.get("voided_indexes") or [])

    def _read(self, offsets: array, index: int) -> dict[str, Any]:
        start, end = offsets[2 * index], offsets[2 * index + 1]
        raw = os.pread(self._fd, end - start, start)
        return json.loads(raw.rstrip(b",\r\n"))

    def issue(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.issue_count:
            raise IndexError(index)
        return self._read(self._issues, index)

    def checklist(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.checklist_count:
            raise IndexError(index)
        return self._read(self._checklists, index)

    def voided_indexes(self) -> list[int]:
        return list(self._voided)


class LoadedProject(_AccountBase):
    """An account read from :meth:`GeneratedProject.dump`; serves exactly like the original."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDONLY)
        self.projects = []
        try:
            self._scan()
        except Exception:
            self.close()
            raise

    def _scan(self) -> None:
        section = ""
        meta: dict[str, Any] = {}
        offsets = {"issues": array("q"), "checklists": array("q")}
        with open(self.path, "rb") as source:
            position = 0
            for line in source:
                start, position = position, position + len(line)
                text = line.rstrip(b"\r\n")
                if section in ("issues", "checklists") and text.startswith(b"{"):
                    offsets[section].extend((start, position))
                elif text.startswith(b'{"format":'):
                    found = json.loads(text.rstrip(b",") + b"}")["format"]
                    if found != DUMP_FORMAT:
                        raise ValueError(f"{self.path}: format {found!r}, expected {DUMP_FORMAT}")
                elif text.startswith(b'"header":'):
                    header = json.loads(text[len(b'"header":') :].rstrip(b","))
                    self.seed = header["seed"]
                    self.companies = header["companies"]
                    self.users = header["users"]
                    self._target_state = header["target_state"]
                elif text.startswith(b'{"meta":'):
                    meta = json.loads(text[len(b'{"meta":') :].rstrip(b","))
                elif text == b'"issues":[':
                    section = "issues"
                elif text == b'"checklists":[':
                    section = "checklists"
                elif text.startswith(b"]") and section:
                    if section == "checklists":
                        self._finish_project(meta, offsets)
                        offsets = {"issues": array("q"), "checklists": array("q")}
                    section = ""
        if not hasattr(self, "seed"):
            raise ValueError(f"{self.path}: not a {DUMP_FORMAT} dump (no header line)")

    def _finish_project(self, meta: dict[str, Any], offsets: dict[str, array]) -> None:
        for key in ("issues", "checklists"):
            found, declared = len(offsets[key]) // 2, meta[f"{key[:-1]}_count"]
            if found != declared:
                raise ValueError(
                    f"{self.path}: project {meta['id']} declares {declared} {key} but holds {found}"
                )
        self.projects.append(
            LoadedFieldProject(meta, self.seed, self._fd, offsets["issues"], offsets["checklists"])
        )

    def target_state(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._target_state))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            self.close()

    def __enter__(self) -> LoadedProject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_project(path: str | os.PathLike[str]) -> LoadedProject:
    """Read a project written by :meth:`GeneratedProject.dump` (records stay on disk)."""
    return LoadedProject(path)
