"""Planned inspection rows as transform writes them (docs: notes/issue-14-contract.md).

A stand-in for the transform (branch i14t) so load, plan and report can be tested on their
own: two templates (every Procore item type; a response set of its own and Procore's standard
"Yes/No/N/A"), and ``count`` checklists with answers of every kind, item comments (Field's own
and a linked-issue note), item photos, checklist files and signatures (named after their
signature field), statuses open / in_review / closed, locations, and responsible contractors
that are a project vendor, are not, or are not given. Swap it for the real transform once that
lands.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from migrate.store import BlobStore, open_store
from migrate.store.planned import inspection_payload_hash, template_payload_hash
from migrate.transform.locations import location_source_id

PROJECT = 5100
PATHS = (
    ("Tower",),
    ("Tower", "Level 1"),
    ("Tower", "Level 2"),
    ("Annex",),
)
FINISH_SET = {
    "name": "Acceptable/Rework/N/A",
    "responses": [
        {"name": "Acceptable", "corresponding_status": "yes"},
        {"name": "Rework", "corresponding_status": "no"},
        {"name": "N/A", "corresponding_status": "n/a"},
    ],
}
#: Procore ships this one: load must reuse it, not create a second.
STANDARD_SET = {
    "name": "Yes/No/N/A",
    "responses": [
        {"name": "Yes", "corresponding_status": "yes"},
        {"name": "No", "corresponding_status": "no"},
        {"name": "N/A", "corresponding_status": "n/a"},
    ],
}


def _item(source_id: str, name: str, position: int, kind: str, rset: Any = None) -> dict[str, Any]:
    return {
        "source_id": source_id,
        "name": name,
        "position": position,
        "type": kind,
        "response_set": rset,
    }


TEMPLATES: dict[str, dict[str, Any]] = {
    "tpl-prepour": {
        "name": "Pre-pour",
        "description": "From BIM 360 Field template tpl-prepour",
        "inspection_type": "Quality",
        "sections": [
            {
                "key": "tpl-prepour:0",
                "name": "Formwork",
                "position": 0,
                "items": [
                    _item("ti-clean", "1.1 Forms clean?", 1, "default"),
                    _item("ti-finish", "1.2 Finish", 2, "multiple_choice", FINISH_SET),
                    _item("ti-notes", "1.3 Notes", 3, "text"),
                ],
            },
            {
                "key": "tpl-prepour:1",
                "name": "Sign-off",
                "position": 1,
                "items": [
                    _item("ti-slump", "2.1 Slump (mm)", 1, "number"),
                    _item("ti-date", "2.2 Pour date", 2, "date"),
                    _item("ti-sign", "2.3 Inspector signature", 3, "signature"),
                ],
            },
        ],
    },
    "tpl-comm": {
        "name": "Commissioning",
        "description": "From BIM 360 Field template tpl-comm",
        "inspection_type": "Commissioning",
        "sections": [
            {
                "key": "tpl-comm:0",
                "name": "Checks",
                "position": 0,
                "items": [
                    _item("tc-power", "Power on?", 1, "default"),
                    _item("tc-label", "Labelled?", 2, "multiple_choice", STANDARD_SET),
                ],
            }
        ],
    },
}


@dataclass
class PlantedInspection:
    """What was planted for one checklist (for assertions)."""

    source_id: str
    template: str
    status: str
    location: tuple[str, ...] | None
    contractor: str | None
    payload: dict[str, Any]
    files: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (name, sha256)
    list_files: list[str] = field(default_factory=list)


def _write_file(
    store: Any, blobs: BlobStore, attachment_id: str, container: tuple[str, str], name: str
) -> str:
    data = hashlib.sha256(attachment_id.encode()).digest() * 40
    info = blobs.write_stream([data])
    store.conn.execute(
        "INSERT OR REPLACE INTO attachments (id, container_type, container_id, kind, filename, "
        "content_type, state, sha256, size) VALUES (?, ?, ?, ?, ?, 'image/png', 'stored', ?, ?)",
        (
            attachment_id,
            container[0],
            container[1],
            "Signature" if "signature" in name.lower() else "Attachment",
            f"{attachment_id}.png",
            info.sha256,
            info.size,
        ),
    )
    return str(info.sha256)


def inspection_hash(
    template: str,
    payload: dict[str, Any],
    status: str,
    location: str | None,
    contractor: str | None,
    attachment_ids: Sequence[str],
    names: dict[str, str],
    sha256s: Sequence[str],
) -> str:
    """The planned hash: the transform's one formula (store/planned.py)."""
    return inspection_payload_hash(
        payload,
        template_source_id=template,
        status=status,
        responsible_contractor=contractor,
        location_source_id=location,
        attachment_ids=attachment_ids,
        attachment_names=names,
        attachment_sha256s=sha256s,
    )


def checklist(index: int, *, light: bool = False) -> tuple[str, dict[str, Any]]:
    """(template source id, the planned items without files) of checklist ``index``."""
    source_id = f"cl-{index:05d}"
    if index % 4 == 3:
        items = [
            {"tpl": "tc-power", "response": {"status": "conforming"}},
            {"tpl": "tc-label", "response": {"response_option": ["Yes", "No"][index % 2]}},
        ]
        template = "tpl-comm"
    else:
        statuses = ("conforming", "non_conforming", "not_applicable")
        items = [
            {"tpl": "ti-clean", "response": {"status": statuses[index % 3]}},
            {
                "tpl": "ti-finish",
                "response": {"response_option": ["Acceptable", "Rework", "N/A"][index % 3]},
            },
            {
                "tpl": "ti-notes",
                "response": None if index % 5 == 4 else {"text_value": f"Cleaned by crew {index}"},
            },
            {"tpl": "ti-slump", "response": {"number_value": 100 + index % 50}},
            {"tpl": "ti-date", "response": {"date_value": f"2015-03-{1 + index % 28:02d}"}},
            {"tpl": "ti-sign", "response": None},
        ]
        template = "tpl-prepour"
        if light:
            items = items[:2]
    planned = []
    for item in items:
        planned.append(
            {
                "source_id": f"{source_id}-{item['tpl']}",
                "template_item_source_id": item["tpl"],
                "response": item["response"],
                "comments": [],
                "attachment_ids": [],
            }
        )
    planned[0]["comments"].append(
        {"key": "comment", "body": f"Checked by Ann Lee on 2015-03-02 (checklist {index})"}
    )
    if index % 2 == 0 and len(planned) > 1:
        planned[1]["comments"].append(
            {
                "key": f"issue:fi-{index}",
                "body": f"Raised as coordination issue fi-{index} (BIM 360 Field)",
            }
        )
    return template, {"items": planned}


def plant_inspections(
    settings: Any,
    count: int,
    *,
    start: int = 0,
    light: bool = False,
    run_row: bool = True,
) -> list[PlantedInspection]:
    """Planned locations, templates and ``count`` planned inspections in the staging DB."""
    store = open_store(settings.staging.path)
    blobs = BlobStore(settings.staging.blobs)
    planted: list[PlantedInspection] = []
    try:
        with store.transaction():
            for path in PATHS:
                store.conn.execute(
                    "INSERT OR IGNORE INTO planned_locations (source_id, path, path_text, "
                    "parent_source_id, depth, is_leaf) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        location_source_id(path),
                        json.dumps(path),
                        ">".join(path),
                        location_source_id(path[:-1]) if len(path) > 1 else None,
                        len(path),
                        int(not any(q[: len(path)] == path and q != path for q in PATHS)),
                    ),
                )
            if run_row:
                store.conn.execute(
                    "INSERT INTO runs (command, args, started_at, finished_at, status) "
                    "VALUES ('transform', ?, '2026-01-01T00:00:00.000Z', "
                    "'2026-01-01T00:00:01.000Z', 'succeeded')",
                    (json.dumps({"target_project_id": PROJECT}),),
                )
            for source_id, template in TEMPLATES.items():
                store.conn.execute(
                    "INSERT OR REPLACE INTO planned_inspection_templates (source_id, name, "
                    "inspection_type, payload, payload_hash) VALUES (?, ?, ?, ?, ?)",
                    (
                        source_id,
                        template["name"],
                        template["inspection_type"],
                        json.dumps(template),
                        template_payload_hash(template),
                    ),
                )
            for index in range(start, start + count):
                planted.append(_plant_one(store, blobs, index, light))
    finally:
        store.close()
    return planted


def _plant_one(store: Any, blobs: BlobStore, index: int, light: bool) -> PlantedInspection:
    source_id = f"cl-{index:05d}"
    template, body = checklist(index, light=light)
    status = ("open", "in_review", "closed")[index % 3]
    path = None if index % 7 == 6 else PATHS[index % len(PATHS)]
    location = location_source_id(path) if path else None
    contractor = ("Diaz Mechanical", "Unknown Builders Ltd", None, "wei electric")[index % 4]
    names: dict[str, str] = {}
    shas: dict[str, str] = {}
    list_files: list[str] = []
    if template == "tpl-prepour" and not light:
        signature = f"att-{index:05d}-sig"
        names[signature] = "Inspector signature.png"
        list_files.append(signature)
    if index % 3 == 0:
        document = f"att-{index:05d}-doc"
        names[document] = f"Checklist {index} scan.png"
        list_files.append(document)
    for attachment_id in list_files:
        shas[attachment_id] = _write_file(
            store, blobs, attachment_id, ("Checklist", source_id), names[attachment_id]
        )
    item_files: list[str] = []
    if index % 2 == 0 and not light:
        photo = f"att-{index:05d}-photo"
        names[photo] = f"Forms {index}.png"
        item = body["items"][0]
        item["attachment_ids"].append(photo)
        shas[photo] = _write_file(
            store, blobs, photo, ("ChecklistItem", item["source_id"]), names[photo]
        )
        item_files.append(photo)
    description = (
        f"Checklist {index:06d} from BIM 360 Field.\n\nChecklist comments:\n"
        f"- Ann Lee, 2015-03-02: all good ({index})"
        + (
            ""
            if contractor in ("Diaz Mechanical", "wei electric", None)
            else f"\nResponsible contractor: {contractor}"
        )
    )
    payload = {
        "list": {
            "identifier": f"{index:06d}",
            "description": description,
            "inspection_date": f"2015-03-{1 + index % 28:02d}",
        },
        "items": body["items"],
    }
    sha_order = [shas[a] for a in list_files] + [shas[a] for a in item_files]
    hashed = inspection_hash(
        template, payload, status, location, contractor, list_files, names, sha_order
    )
    store.conn.execute(
        "INSERT OR REPLACE INTO planned_inspections (source_id, template_source_id, identifier, "
        "status, location_source_id, responsible_contractor, payload, attachment_ids, "
        "attachment_names, payload_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            source_id,
            template,
            payload["list"]["identifier"],
            status,
            location,
            contractor,
            json.dumps(payload),
            json.dumps(list_files),
            json.dumps(names),
            hashed,
        ),
    )
    return PlantedInspection(
        source_id,
        template,
        status,
        path,
        contractor,
        payload,
        {a: (names[a], shas[a]) for a in names},
        list_files,
    )


def replan(settings: Any, source_id: str, change: Any) -> None:
    """Apply ``change(payload, row)`` to one planned inspection and store its new hash."""
    store = open_store(settings.staging.path)
    try:
        row = store.conn.execute(
            "SELECT payload, status, location_source_id, responsible_contractor, attachment_ids, "
            "attachment_names, template_source_id FROM planned_inspections WHERE source_id = ?",
            (source_id,),
        ).fetchone()
        payload = json.loads(row[0])
        columns = {
            "status": row[1],
            "location_source_id": row[2],
            "responsible_contractor": row[3],
            "attachment_ids": json.loads(row[4]),
            "attachment_names": json.loads(row[5]),
        }
        change(payload, columns)
        ids = list(columns["attachment_ids"]) + [
            a for item in payload["items"] for a in item["attachment_ids"]
        ]
        shas = dict(
            store.conn.execute(
                f"SELECT id, sha256 FROM attachments WHERE id IN ({','.join('?' * len(ids))})",
                ids,
            ).fetchall()
        )
        hashed = inspection_hash(
            row[6],
            payload,
            columns["status"],
            columns["location_source_id"],
            columns["responsible_contractor"],
            columns["attachment_ids"],
            columns["attachment_names"],
            [shas[a] for a in ids],
        )
        with store.transaction():
            store.conn.execute(
                "UPDATE planned_inspections SET payload = ?, status = ?, location_source_id = ?, "
                "responsible_contractor = ?, attachment_ids = ?, attachment_names = ?, "
                "payload_hash = ? WHERE source_id = ?",
                (
                    json.dumps(payload),
                    columns["status"],
                    columns["location_source_id"],
                    columns["responsible_contractor"],
                    json.dumps(columns["attachment_ids"]),
                    json.dumps(columns["attachment_names"]),
                    hashed,
                    source_id,
                ),
            )
    finally:
        store.close()


def add_file(settings: Any, attachment_id: str, container: tuple[str, str], name: str) -> str:
    """A new stored file (for changes after load); returns its sha256."""
    store = open_store(settings.staging.path)
    try:
        with store.transaction():
            return _write_file(
                store, BlobStore(settings.staging.blobs), attachment_id, container, name
            )
    finally:
        store.close()
