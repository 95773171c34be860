"""Inspections: BIM 360 Field checklists into Procore's Inspections tool, exactly once.

Building blocks first, once per run and only for the templates the work needs: inspection
types and response sets (listed first and reused by name: Procore ships standard ones), the
company template with its sections and typed items, and its project copy
(``create_from_company_template``). Company-level blocks are found or created under the company
lock (clients/companylock.py: other projects of the company may be loading), listed again under
it before a create, and a company template is built whole under it; an identical company
template another project built is reused, not copied. Then, a group of checklists at a time:

1. each inspection is created open from its project template, with ``location_id``,
   ``responsible_contractor_id`` (a project vendor of that name, else omitted: transform put
   the name in the text), ``inspection_type_id`` and ``upload_ids`` for its checklist files;
2. the group's items are read back in one paged list request (``filters[list_id][]``);
3. each answered item is answered, comments posted, item files attached (multipart);
4. the status is set last (close, or ``in_review``): a closed inspection may refuse the rest.

Every write goes through the id map (store/planned.py): ``sent`` committed before the call,
``loaded`` / ``rejected`` right after. A row a dead run left ``sent`` is looked up before it is
sent again: an inspection by identifier (``filters[query]``) and description, a comment by its
body, a file by its name, an answer by the item's ``item_response`` (an item found answered is
never answered again, whatever Procore does with a second answer). The inspection's own row
records the planned payload hash only once all of it is done, so a checklist left half done is
finished by the next run, and a run over an unchanged plan makes no write at all.

What cannot change after load (no documented call, or none the simulator serves): an answer
Procore holds (a changed answer at the source is left as it was), a comment or file already
posted, items of an inspection created before its template gained them, and anything deleted.
"""

from __future__ import annotations

import functools
import hashlib
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from migrate.errors import AnswerLost, ApiError
from migrate.ids import (
    ENTITY_INSPECTION,
    ENTITY_INSPECTION_FILE,
    ENTITY_INSPECTION_TEMPLATE,
    ENTITY_INSPECTION_TYPE,
    ENTITY_ITEM_COMMENT,
    ENTITY_ITEM_FILE,
    ENTITY_ITEM_RESPONSE,
    ENTITY_PROJECT_TEMPLATE,
    ENTITY_RESPONSE_SET,
    ENTITY_TEMPLATE_ITEM,
    ENTITY_TEMPLATE_SECTION,
)
from migrate.jsontext import canonical_json
from migrate.load.decision import Action, InspectionDecision
from migrate.load.issues import error_message
from migrate.load.state import (
    LoadContext,
    batch_sent_at,
    finish_batch,
    quarantine_load,
    release_load_quarantine,
    start_batch,
)
from migrate.store.planned import (
    InspectionEntry,
    MapRow,
    PlannedInspectionTemplate,
    attachment_files,
    id_map_rows,
    map_rows_of,
    mark_loaded,
    mark_rejected,
    mark_sent,
    mark_unsent,
    planned_inspection_rows,
    planned_inspection_templates,
    update_loaded,
)
from migrate.text import procore_name

if TYPE_CHECKING:  # the plan imports this package: it must not import requests
    from migrate.clients.procore import ProcoreClient

#: Inspections created, then read back, per group (one list_items request per group).
GROUP_SIZE = 25
#: How far before a create's sent_at the look-up for it reaches (a Procore clock behind ours).
LOOKUP_SLACK = timedelta(minutes=2)
#: Item statuses Procore accepts on an inspection; closing has its own endpoint.
CLOSED, IN_REVIEW, OPEN = "closed", "in_review", "open"
#: Procore shows statuses as labels.
STATUS_OF_LABEL = {"Open": OPEN, "In Review": IN_REVIEW, "Closed": CLOSED}


def lower_bound(entry: InspectionEntry, payload: Mapping[str, Any]) -> dict[str, int]:
    """The fewest write requests Procore allows for one checklist, by kind.

    1 create (its checklist files go as ``upload_ids``, each one Create Upload request; the
    storage POST is not Procore's quota) + one answer per answered item (no bulk answer
    endpoint) + one request per item comment + one multipart request per item file (no upload
    step; ``bulk_create`` only links files Procore already holds) + 1 status change when the
    checklist is not open. Reading the items back is not in the bound (load reads them a group
    of checklists per request).
    """
    items = payload.get("items") or []
    return {
        "create": 1,
        "uploads": len(entry.attachment_ids),
        "answers": sum(1 for item in items if item.get("response") is not None),
        "comments": sum(len(item.get("comments") or []) for item in items),
        "item_files": sum(len(item.get("attachment_ids") or []) for item in items),
        "status": 0 if entry.status == OPEN else 1,
    }


def response_hash(response: Mapping[str, Any]) -> str:
    """The hash an answer is recorded with (a changed answer at the source shows up)."""
    return hashlib.sha256(canonical_json(dict(response)).encode("utf-8")).hexdigest()


def _refusal_text(exc: ApiError) -> tuple[str, Any]:
    errors = getattr(exc, "errors", None)
    return (error_message(errors) if errors is not None else str(exc)), errors


def _refused(exc: ApiError) -> bool:
    """A 4xx that refuses this record (not our credentials, not a missing project)."""
    return exc.status in (400, 404, 409, 422) and exc.status is not None


def _instant(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_HINTS = {
    "location_id": "The location is not in this Procore project any more: restore it, or map "
    "the area elsewhere in mappings/locations.csv, then `migrate load --retry-rejected`.",
    "responsible_contractor_id": "The vendor is not in the project's directory: add it in "
    "Procore, then `migrate load --retry-rejected`.",
    "number_value": "Procore takes whole numbers only here: the transform keeps decimals as "
    "text; run `migrate transform` then `migrate load`.",
    "upload_ids": "An upload was refused: `migrate load` makes new uploads on the next run.",
}


def _hint(errors: Any, default: str) -> str:
    if isinstance(errors, Mapping):
        for key in errors:
            if key in _HINTS:
                return _HINTS[key]
    return default


#: How often a write whose answer was lost is looked for and sent again before giving up.
LOST_ANSWER_ATTEMPTS = 4


def once(
    call: Callable[[], dict[str, Any]], find: Callable[[], dict[str, Any] | None]
) -> dict[str, Any]:
    """``call()`` (a create Procore has no idempotency key for), applied at most once.

    When its answer is lost (AnswerLost: the HTTP layer does not send it again), ``find()``
    looks for what it made; only if that finds nothing is it sent again.
    """
    for attempt in range(1, LOST_ANSWER_ATTEMPTS + 1):
        try:
            return call()
        except AnswerLost:
            found = find()
            if found is not None:
                return found
            if attempt == LOST_ANSWER_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


# -- building blocks -------------------------------------------------------------------------------


@dataclass
class _Template:
    """A planned template as Procore has it now."""

    project_template_id: int
    inspection_type_id: int | None
    #: project template item id -> template item source id (read from the project template).
    source_of_item: dict[int, str] = field(default_factory=dict)


class TemplateProblem(Exception):
    """A template could not be built in Procore (its inspections are held back)."""


class _Blocks:
    """Inspection types, response sets, company and project templates, built once per run."""

    def __init__(self, ctx: LoadContext) -> None:
        self.ctx = ctx
        self.client: ProcoreClient = ctx.client
        self._types: list[dict[str, Any]] | None = None
        self._sets: list[dict[str, Any]] | None = None
        self._item_type_form: str = "name"  # what a template item's `type` names (see doc §2)
        self._item_type_ids: dict[str, int] | None = None
        self.templates: dict[str, _Template] = {}
        self.problems: dict[str, str] = {}

    # -- the id map, one building block at a time ---------------------------------------------
    def _row(self, entity: str, source_id: str) -> MapRow | None:
        return map_rows_of(self.ctx.store, entity, self.ctx.project_id, [source_id]).get(source_id)

    def _taken(self, entity: str) -> set[int]:
        """Procore ids the id map already gives to another record of ``entity``."""
        return {
            row.target_id
            for row in id_map_rows(self.ctx.store, entity, self.ctx.project_id).values()
            if row.is_loaded and row.target_id is not None
        }

    def _loaded(self, entity: str, source_id: str, target_id: int, hashed: str | None) -> int:
        with self.ctx.store.transaction():
            mark_loaded(
                self.ctx.store,
                entity,
                self.ctx.project_id,
                source_id,
                target_id,
                payload_hash=hashed,
            )
        return target_id

    def _ensure(
        self,
        entity: str,
        source_id: str,
        hashed: str,
        find: Callable[[bool], int | None],
        create: Callable[[], dict[str, Any]],
        *,
        reuse: bool,
    ) -> int:
        """The Procore id of one building block: recorded, found, or created now.

        ``reuse``: Procore's own (or anyone's) block of that name is used (types, response
        sets); otherwise only what a dead run of ours created is looked for (templates).
        ``find(fresh)`` may answer from a list read earlier in the run unless ``fresh``.
        """
        row = self._row(entity, source_id)
        if row is not None and row.is_loaded:
            assert row.target_id is not None
            return row.target_id
        in_flight = row is not None and row.state == "sent"
        if reuse or in_flight:
            found = find(in_flight)
            if found is not None:
                return self._loaded(entity, source_id, found, hashed)
        if not reuse:
            return self._send(entity, source_id, hashed, create, find)
        with self._company_lock():
            # Another project of the company may have made it since that list: look again.
            found = find(True)
            if found is not None:
                return self._loaded(entity, source_id, found, hashed)
            return self._send(entity, source_id, hashed, create, find)

    def _company_lock(self) -> AbstractContextManager[None]:
        """Held while a company-level block is found or created (see companylock.py)."""
        return self.ctx.options.company_lock.held(self._waiting_for_lock)

    def _waiting_for_lock(self) -> None:
        line = (
            "waiting for the company set-up lock (another project of company "
            f"{self.client.settings.company_id} is creating building blocks)"
        )
        print(line, file=sys.stderr, flush=True)
        if self.ctx.log is not None:
            self.ctx.log.info("load", "company_lock_wait", message=line, mirror=False)

    def _send(
        self,
        entity: str,
        source_id: str,
        hashed: str,
        call: Callable[[], dict[str, Any]],
        find: Callable[[bool], int | None],
    ) -> int:
        """sent -> the call -> loaded; a refusal raises TemplateProblem (quarantined)."""
        ctx = self.ctx
        with ctx.store.transaction():
            batch_id, _ = start_batch(ctx.store, ctx.run_id, entity, 1)
            mark_sent(ctx.store, entity, ctx.project_id, batch_id, {source_id: hashed})

        def found() -> dict[str, Any] | None:
            target = find(True)
            return None if target is None else {"id": target}

        try:
            created = once(call, found)
        except ApiError as exc:
            if not _refused(exc):
                raise
            reason, errors = _refusal_text(exc)
            with ctx.store.transaction():
                mark_unsent(ctx.store, entity, ctx.project_id, source_id)
                quarantine_load(
                    ctx.store,
                    entity,
                    source_id,
                    reason=f"Procore refused the {entity.replace('_', ' ')}: {reason}",
                    hint="Fix the template (mappings/inspection_types.csv, responses.csv), run "
                    "`migrate transform` and `migrate load`; the template is tried on every run.",
                    record={"payload_hash": None, "procore_errors": errors, "action": "create"},
                    run_id=ctx.run_id,
                )
                finish_batch(ctx.store, batch_id, entities=0, errors=1)
            raise TemplateProblem(f"{entity} {source_id}: {reason}") from None
        with ctx.store.transaction():
            mark_loaded(
                ctx.store,
                entity,
                ctx.project_id,
                source_id,
                int(created["id"]),
                payload_hash=hashed,
                batch_id=batch_id,
            )
            release_load_quarantine(ctx.store, entity, source_id, ctx.run_id)
            finish_batch(ctx.store, batch_id, entities=1, errors=0)
        return int(created["id"])

    # -- inspection types and response sets --------------------------------------------------
    def inspection_type(self, name: str) -> int:
        key = name.strip().lower()

        def find(fresh: bool) -> int | None:
            if self._types is None or fresh:
                self._types = self.client.inspection_types()
            return self._type_named(key)

        try:
            return self._ensure(
                ENTITY_INSPECTION_TYPE,
                key,
                key,
                find,
                lambda: self.client.create_inspection_type(name.strip()),
                reuse=True,
            )
        except TemplateProblem:
            found = find(True)  # made meanwhile by someone else ("unique" names refuse a second)
            if found is None:
                raise
            with self.ctx.store.transaction():
                release_load_quarantine(
                    self.ctx.store, ENTITY_INSPECTION_TYPE, key, self.ctx.run_id
                )
            return self._loaded(ENTITY_INSPECTION_TYPE, key, found, key)

    def _type_named(self, key: str) -> int | None:
        return next(
            (
                int(t["id"])
                for t in self._types or []
                if str(t.get("name", "")).strip().lower() == key
            ),
            None,
        )

    def response_set(self, spec: Mapping[str, Any]) -> int:
        name = str(spec["name"])
        wanted = [(r["name"], r["corresponding_status"]) for r in spec.get("responses") or []]
        hashed = response_hash({"name": name, "responses": wanted})

        def find(fresh: bool) -> int | None:
            if self._sets is None or fresh:
                self._sets = self.client.response_sets()
            for known in self._sets:
                names = [r.get("name") for r in known.get("responses") or []]
                if known.get("name") == name and names == [n for n, _ in wanted]:
                    return int(known["id"])
            return None

        return self._ensure(
            ENTITY_RESPONSE_SET,
            name,
            hashed,
            find,
            lambda: self.client.create_response_set(
                name, [{"name": n, "corresponding_status": s} for n, s in wanted]
            ),
            reuse=True,
        )

    # -- templates --------------------------------------------------------------------------
    def template(self, planned: PlannedInspectionTemplate) -> _Template:
        """The project template of a planned template, built (or finished) as needed."""
        known = self.templates.get(planned.source_id)
        if known is not None:
            return known
        if planned.source_id in self.problems:
            raise TemplateProblem(self.problems[planned.source_id])
        try:
            built = self._build(planned)
        except TemplateProblem as exc:
            self.problems[planned.source_id] = str(exc)
            raise
        self.templates[planned.source_id] = built
        return built

    def _build(self, planned: PlannedInspectionTemplate) -> _Template:
        ctx, client = self.ctx, self.client
        payload = planned.payload
        type_id = self.inspection_type(planned.inspection_type) if planned.inspection_type else None
        description = payload.get("description")
        fields: dict[str, Any] = {"name": planned.name, "description": description}
        if type_id is not None:
            fields["inspection_type_id"] = type_id

        def find(fresh: bool) -> int | None:
            """The template our create made before its answer was lost: same name and
            description, and still empty (its sections come after the create's answer), so
            never another project's whole one."""
            taken = self._taken(ENTITY_INSPECTION_TEMPLATE)
            for found in client.company_templates(query=planned.name):
                if (
                    found.get("name") == planned.name
                    and found.get("description") == description
                    and int(found["id"]) not in taken
                    and not client.company_template_sections(int(found["id"]))
                ):
                    return int(found["id"])
            return None

        company_id = self._company_template(planned, fields, find)
        project_template_id = self._project_template(planned.source_id, company_id)
        with ctx.store.transaction():
            update_loaded(
                ctx.store,
                ENTITY_INSPECTION_TEMPLATE,
                ctx.project_id,
                planned.source_id,
                payload_hash=planned.payload_hash,
            )
        return _Template(project_template_id, type_id)

    def _company_template(
        self,
        planned: PlannedInspectionTemplate,
        fields: Mapping[str, Any],
        find: Callable[[bool], int | None],
    ) -> int:
        """The company template of ``planned``, whole: recorded, reused, or built now.

        Built under the company lock, so another project sees it whole or not at all; and
        under it an identical one another project built is reused rather than copied.
        """
        ctx, payload = self.ctx, planned.payload
        done = self._recorded_whole(planned)
        if done is not None:
            return done
        with self._company_lock():
            row = self._row(ENTITY_INSPECTION_TEMPLATE, planned.source_id)
            # A create of ours whose answer was lost made an empty template: finish that one.
            ours = row is not None and row.state == "sent" and find(True) is not None
            if (row is None or not row.is_loaded) and not ours:
                same = self._identical_template(planned, fields)
                if same is not None:
                    company_id, parts = same
                    with ctx.store.transaction():
                        for entity, source_id, target_id in parts:
                            mark_loaded(
                                ctx.store,
                                entity,
                                ctx.project_id,
                                source_id,
                                target_id,
                                payload_hash="",
                            )
                    ctx.count("reused", ENTITY_INSPECTION_TEMPLATE)
                    return company_id
            made: list[bool] = []

            def create() -> dict[str, Any]:
                made.append(True)
                return self.client.create_company_template(fields)

            company_id = self._ensure(
                ENTITY_INSPECTION_TEMPLATE, planned.source_id, "", find, create, reuse=False
            )
            if made:
                ctx.count("created", ENTITY_INSPECTION_TEMPLATE)
            self._sections_and_items(company_id, payload)
            return company_id

    def _recorded_whole(self, planned: PlannedInspectionTemplate) -> int | None:
        """The company template's id when the id map has it and every section and item."""
        ctx = self.ctx
        row = self._row(ENTITY_INSPECTION_TEMPLATE, planned.source_id)
        if row is None or not row.is_loaded:
            return None
        sections = planned.payload.get("sections") or []
        keys = [str(section["key"]) for section in sections]
        items = [str(item["source_id"]) for section in sections for item in section["items"]]
        for entity, wanted in ((ENTITY_TEMPLATE_SECTION, keys), (ENTITY_TEMPLATE_ITEM, items)):
            rows = map_rows_of(ctx.store, entity, ctx.project_id, wanted)
            if any(key not in rows or not rows[key].is_loaded for key in wanted):
                return None
        return row.target_id

    def _identical_template(
        self, planned: PlannedInspectionTemplate, fields: Mapping[str, Any]
    ) -> tuple[int, list[tuple[str, str, int]]] | None:
        """A company template (made by another project) exactly as ``planned`` would be built:
        its id and the id map rows (entity, source id, Procore id) of it, its sections and
        items; None when there is none. Lock held."""
        taken = self._taken(ENTITY_INSPECTION_TEMPLATE)
        for found in self.client.company_templates(query=planned.name):
            kind = found.get("inspection_type") or {}
            if (
                found.get("name") != fields["name"]
                or found.get("description") != fields.get("description")
                or kind.get("id") != fields.get("inspection_type_id")
                or int(found["id"]) in taken
            ):
                continue
            parts = self._same_contents(int(found["id"]), planned.payload)
            if parts is not None:
                template = (ENTITY_INSPECTION_TEMPLATE, planned.source_id, int(found["id"]))
                return int(found["id"]), [template, *parts]
        return None

    def _same_contents(
        self, company_id: int, payload: Mapping[str, Any]
    ) -> list[tuple[str, str, int]] | None:
        """The id map rows of template ``company_id``'s sections and items when they are the
        planned ones, in order (names, positions, item types and response sets); else None."""
        client = self.client
        by_place = sorted(
            client.company_template_sections(company_id),
            key=lambda s: (s.get("position") or 0, s["id"]),
        )
        items: dict[int, list[dict[str, Any]]] = {}
        for item in client.company_template_items(company_id):
            items.setdefault(int(item.get("section_id") or 0), []).append(item)
        planned_sections = sorted(payload.get("sections") or [], key=lambda s: s["position"])
        if len(by_place) != len(planned_sections) or sum(map(len, items.values())) != sum(
            len(s.get("items") or []) for s in planned_sections
        ):
            return None
        parts: list[tuple[str, str, int]] = []
        sets: list[tuple[Mapping[str, Any], Any]] = []
        for section, found in zip(planned_sections, by_place, strict=True):
            if (found.get("name"), found.get("position")) != (section["name"], section["position"]):
                return None
            parts.append((ENTITY_TEMPLATE_SECTION, str(section["key"]), int(found["id"])))
            planned_items = sorted(section.get("items") or [], key=lambda i: i["position"])
            found_items = sorted(
                items.get(int(found["id"]), []), key=lambda i: (i.get("position") or 0, i["id"])
            )
            if len(found_items) != len(planned_items):
                return None
            for item, there in zip(planned_items, found_items, strict=True):
                kind = str(item.get("type") or "default")
                shown = there.get("type")
                shown_kind = shown.get("name") if isinstance(shown, Mapping) else shown
                chosen = item.get("response_set") if kind == "multiple_choice" else None
                there_set = (there.get("response_set") or {}).get("id")
                if (
                    there.get("name") != item["name"]
                    or there.get("position") != item["position"]
                    or shown_kind != kind
                    or (chosen is None) != (there_set is None)
                ):
                    return None
                if chosen is not None:
                    sets.append((chosen, there_set))
                parts.append((ENTITY_TEMPLATE_ITEM, str(item["source_id"]), int(there["id"])))
        # Last, as they may cost a look-up (or a create this build would make anyway).
        if any(self.response_set(chosen) != there_set for chosen, there_set in sets):
            return None
        return parts

    def _sections_and_items(self, company_id: int, payload: Mapping[str, Any]) -> None:
        client = self.client
        for section in payload.get("sections") or []:
            name, position = str(section["name"]), int(section["position"])

            def find_section(fresh: bool, name: str = name, position: int = position) -> int | None:
                taken = self._taken(ENTITY_TEMPLATE_SECTION)
                for found in client.company_template_sections(company_id):
                    if (
                        found.get("name") == name
                        and found.get("position") == position
                        and int(found["id"]) not in taken
                    ):
                        return int(found["id"])
                return None

            section_id = self._ensure(
                ENTITY_TEMPLATE_SECTION,
                str(section["key"]),
                "",
                find_section,
                functools.partial(
                    client.create_company_template_section, company_id, name, position
                ),
                reuse=False,
            )
            for item in section.get("items") or []:
                self._item(company_id, section_id, item)

    def _item(self, company_id: int, section_id: int, item: Mapping[str, Any]) -> None:
        def find(fresh: bool) -> int | None:
            taken = self._taken(ENTITY_TEMPLATE_ITEM)
            for found in self.client.company_template_items(company_id):
                if (
                    found.get("section_id") == section_id
                    and found.get("name") == item["name"]
                    and found.get("position") == item["position"]
                    and int(found["id"]) not in taken
                ):
                    return int(found["id"])
            return None

        self._ensure(
            ENTITY_TEMPLATE_ITEM,
            str(item["source_id"]),
            "",
            find,
            functools.partial(self._create_item, company_id, section_id, item),
            reuse=False,
        )

    def _create_item(
        self, company_id: int, section_id: int, item: Mapping[str, Any]
    ) -> dict[str, Any]:
        from migrate.clients.procore import InspectionRefused

        kind = str(item.get("type") or "default")
        fields: dict[str, Any] = {
            "name": item["name"],
            "position": item["position"],
            "section_id": section_id,
        }
        if item.get("response_set") and kind == "multiple_choice":
            fields["response_set_id"] = self.response_set(item["response_set"])
        for attempt in (1, 2):
            fields["type"] = self._type_text(kind)
            try:
                return self.client.create_company_template_item(company_id, fields)
            except InspectionRefused as exc:
                errors = exc.errors if isinstance(exc.errors, Mapping) else {}
                if attempt == 1 and "type" in errors:
                    # Procore's reference does not say whether `type` names the item type or
                    # holds its id: the other reading, once, and then for the rest of the run.
                    self._item_type_form = "id" if self._item_type_form == "name" else "name"
                    continue
                raise
        raise AssertionError("unreachable")

    def _type_text(self, kind: str) -> str:
        if self._item_type_form == "name":
            return kind
        if self._item_type_ids is None:
            self._item_type_ids = {str(t["name"]): int(t["id"]) for t in self.client.item_types()}
        type_id = self._item_type_ids.get(kind)
        if type_id is None:
            raise TemplateProblem(f"Procore has no checklist item type named {kind!r}")
        return str(type_id)

    def _project_template(self, source_id: str, company_id: int) -> int:
        """The project copy; Procore refuses a second one, so a repeat finds the first."""
        from migrate.clients.procore import InspectionRefused

        ctx = self.ctx

        def find(fresh: bool = True) -> int | None:
            for found in self.client.project_templates(ctx.project_id):
                if (found.get("synced_to") or {}).get("list_template_id") == company_id:
                    return int(found["id"])
            return None

        def create() -> dict[str, Any]:
            try:
                return self.client.create_project_template_from_company(ctx.project_id, company_id)
            except InspectionRefused:
                found = find()
                if found is None:
                    raise
                return {"id": found}

        return self._ensure(ENTITY_PROJECT_TEMPLATE, source_id, "", find, create, reuse=False)

    def item_sources(self, source_id: str, built: _Template) -> dict[int, str]:
        """project template item id -> template item source id (one read per template)."""
        if built.source_of_item:
            return built.source_of_item
        ctx = self.ctx
        source_of_company = {
            row.target_id: sid
            for sid, row in id_map_rows(ctx.store, ENTITY_TEMPLATE_ITEM, ctx.project_id).items()
            if row.is_loaded
        }
        shown = self.client.project_template(ctx.project_id, built.project_template_id)
        for section in shown.get("sections") or []:
            for item in section.get("items") or []:
                company_item = (item.get("synced_to") or {}).get("item_id")
                if company_item in source_of_company:
                    built.source_of_item[int(item["id"])] = source_of_company[company_item]
        return built.source_of_item


# -- inspections -----------------------------------------------------------------------------------


@dataclass
class _Job:
    """One checklist in this run."""

    decision: InspectionDecision
    entry: InspectionEntry
    payload: dict[str, Any]
    template: _Template | None = None
    list_id: int | None = None
    status: str | None = None  # Procore's status now
    #: Something on our side held a part back (a file missing): not complete this run.
    held_back: bool = False
    #: Procore refused part of it (quarantined under the inspection): keep that row open.
    refused: bool = False
    #: The load_batches row of this checklist's answers, comments and files (one per run).
    details_batch: str | None = None
    details_done: int = 0
    details_refused: int = 0
    #: A write happened for this checklist in this run.
    wrote: bool = False


class InspectionLoader:
    """Creates, finishes and updates the planned inspections of one load run."""

    def __init__(self, ctx: LoadContext) -> None:
        self.ctx = ctx
        self.client: ProcoreClient = ctx.client
        self.blocks = _Blocks(ctx)
        self._vendors: dict[str, int] | None = None
        self._mapped_lists: set[int] | None = None

    # -- public ------------------------------------------------------------------------------
    def push(
        self, decisions: Sequence[InspectionDecision], advance: Callable[[int], None] | None = None
    ) -> None:
        work = [d for d in decisions if d.action in (Action.CREATE, Action.UPDATE)]
        # Rows a dead run left in flight first: their look-ups then cover the shortest window.
        work.sort(key=lambda d: (not d.in_flight, d.source_id))
        templates = (
            {t.source_id: t for t in planned_inspection_templates(self.ctx.store)} if work else {}
        )
        for start in range(0, len(work), GROUP_SIZE):
            group = work[start : start + GROUP_SIZE]
            payloads = {
                row.source_id: row.payload
                for row in planned_inspection_rows(self.ctx.store, [d.source_id for d in group])
            }
            jobs = []
            for decision in group:
                assert decision.entry is not None
                payload = payloads.get(decision.source_id)
                if payload is None:  # re-planned meanwhile: the next run sees it
                    continue
                job = _Job(decision, decision.entry, payload)
                if self._template_for(job, templates):
                    jobs.append(job)
            self._group(jobs)
            if advance is not None:
                advance(len(group))

    # -- one group ---------------------------------------------------------------------------
    def _template_for(self, job: _Job, templates: Mapping[str, PlannedInspectionTemplate]) -> bool:
        planned = templates.get(job.entry.template_source_id)
        if planned is None:
            self._hold(job, f"its template {job.entry.template_source_id} is not planned")
            return False
        try:
            job.template = self.blocks.template(planned)
        except TemplateProblem as exc:
            self._hold(job, f"its template could not be built in Procore: {exc}")
            return False
        return True

    def _group(self, jobs: list[_Job]) -> None:
        live: list[_Job] = []
        for job in jobs:
            row = job.decision.row
            if job.decision.action is Action.UPDATE and row is not None and row.is_loaded:
                job.list_id = row.target_id
                job.status = row.target_status
                live.append(job)
            elif self._create(job):
                live.append(job)
        if not live:
            return
        items_of: dict[int, list[dict[str, Any]]] = {}
        for item in self.client.inspection_items(
            self.ctx.project_id, [job.list_id for job in live if job.list_id is not None]
        ):
            items_of.setdefault(int(item["list_id"]), []).append(item)
        for job in live:
            assert job.list_id is not None
            self._details(job, items_of.get(job.list_id, []))

    # -- create --------------------------------------------------------------------------------
    def _create(self, job: _Job) -> bool:
        """Create the inspection open (or find the one a dead run created); True if it exists."""
        ctx, entry = self.ctx, job.entry
        assert job.template is not None
        row = job.decision.row
        if row is not None and row.state == "sent":
            found = self._look_up(job, row)
            if found is not None:
                self._created(job, found, None)
                return True
        fields: dict[str, Any] = {
            k: v for k, v in (job.payload.get("list") or {}).items() if k != "status"
        }
        fields["status"] = OPEN
        if entry.location_source_id:
            location_id = ctx.location_ids.get(entry.location_source_id)
            if location_id is None:
                self._hold(job, f"location {entry.location_source_id} has no Procore id")
                return False
            fields["location_id"] = location_id
        vendor = self._vendor(entry.responsible_contractor)
        if vendor is not None:
            fields["responsible_contractor_id"] = vendor
        if job.template.inspection_type_id is not None:
            fields["inspection_type_id"] = job.template.inspection_type_id
        for attempt in (1, 2):
            uploads = ctx.uploader.prepare(entry.attachment_ids, entry.attachment_names)
            ctx.uploads_done += uploads.done
            ctx.uploads_reused += uploads.reused
            failed = [uploads.failed[a] for a in entry.attachment_ids if a in uploads.failed]
            if failed:
                self._hold(job, "; ".join(failed))
                return False
            if entry.attachment_ids:
                fields["upload_ids"] = [uploads.ready[a] for a in entry.attachment_ids]
            with ctx.store.transaction():
                batch_id, _ = start_batch(ctx.store, ctx.run_id, "inspection_create", 1)
                mark_sent(
                    ctx.store,
                    ENTITY_INSPECTION,
                    ctx.project_id,
                    batch_id,
                    {entry.source_id: entry.payload_hash},
                )
            template_id = job.template.project_template_id
            asked_at = datetime.now(UTC)
            try:
                created = once(
                    functools.partial(
                        self.client.create_inspection, ctx.project_id, template_id, fields
                    ),
                    functools.partial(self._search, job, asked_at - LOOKUP_SLACK),
                )
            except ApiError as exc:
                if not _refused(exc):
                    raise
                reason, errors = _refusal_text(exc)
                only_uploads = isinstance(errors, Mapping) and set(errors) == {"upload_ids"}
                with ctx.store.transaction():
                    finish_batch(ctx.store, batch_id, entities=0, errors=1)
                    if only_uploads and attempt == 1:
                        ctx.uploader.forget(entry.attachment_ids, reason)
                        mark_unsent(ctx.store, ENTITY_INSPECTION, ctx.project_id, entry.source_id)
                    else:
                        self._reject(job, reason, errors, fields, batch_id)
                if only_uploads and attempt == 1:
                    continue
                return False
            with ctx.store.transaction():
                finish_batch(ctx.store, batch_id, entities=1, errors=0)
                self._created(job, created, fields.get("upload_ids", []), batch_id)
            return True
        return False

    def _created(
        self,
        job: _Job,
        inspection: Mapping[str, Any],
        upload_uuids: Iterable[str] | None,
        batch_id: str | None = None,
    ) -> None:
        """Record a created (or found) inspection and the checklist files it holds."""
        ctx, entry = self.ctx, job.entry
        job.list_id = int(inspection["id"])
        job.status = STATUS_OF_LABEL.get(str(inspection.get("status")), OPEN)
        job.wrote = True
        with ctx.store.transaction():
            mark_loaded(
                ctx.store,
                ENTITY_INSPECTION,
                ctx.project_id,
                entry.source_id,
                job.list_id,
                payload_hash=None,
                target_status=job.status,
                attachment_ids=entry.attachment_ids,
                batch_id=batch_id,
                title=entry.identifier,
            )
            if upload_uuids:
                ctx.uploader.mark_referenced(upload_uuids)
            self._record_list_files(job, inspection.get("attachments") or [])
        if self._mapped_lists is not None:
            self._mapped_lists.add(job.list_id)
        ctx.count("created", ENTITY_INSPECTION)

    def _record_list_files(self, job: _Job, attachments: Iterable[Mapping[str, Any]]) -> list[str]:
        """Checklist files Procore shows on the inspection, matched by name (in a transaction).

        Their uploads are referenced from then on, whichever write carried them: one found
        rather than answered (a dead run's create, a lost answer) names no upload ids.
        Returns the attachments found."""
        ctx, entry = self.ctx, job.entry
        by_name = {str(a.get("name")): int(a["id"]) for a in attachments}
        shown: list[str] = []
        for attachment_id in entry.attachment_ids:
            name = self._name(entry, attachment_id, None)
            if name in by_name:
                mark_loaded(
                    ctx.store,
                    ENTITY_INSPECTION_FILE,
                    ctx.project_id,
                    attachment_id,
                    by_name[name],
                    payload_hash=entry.source_id,
                )
                shown.append(attachment_id)
        ctx.uploader.mark_attachments_referenced(shown)
        return shown

    def _look_up(self, job: _Job, row: MapRow) -> dict[str, Any] | None:
        """The inspection a dead run created for this checklist, if Procore has it."""
        ctx = self.ctx
        sent_at = batch_sent_at(ctx.store, [row.batch_id or ""]).get(row.batch_id or "")
        found = self._search(job, _instant(sent_at) - LOOKUP_SLACK if sent_at else None)
        if found is None:
            with ctx.store.transaction():
                mark_unsent(ctx.store, ENTITY_INSPECTION, ctx.project_id, job.entry.source_id)
        return found

    def _search(self, job: _Job, since: datetime | None) -> dict[str, Any] | None:
        """An inspection of this checklist's template, identifier and description, created
        since ``since``, that no other checklist claims."""
        ctx, entry = self.ctx, job.entry
        assert job.template is not None
        if self._mapped_lists is None:
            self._mapped_lists = {
                r.target_id
                for r in id_map_rows(ctx.store, ENTITY_INSPECTION, ctx.project_id).values()
                if r.is_loaded and r.target_id is not None
            }
        listed = job.payload.get("list") or {}
        for found in self.client.inspections_matching(
            ctx.project_id,
            query=entry.identifier or None,
            template_id=job.template.project_template_id,
        ):
            if int(found["id"]) in self._mapped_lists:
                continue
            if found.get("identifier") != listed.get("identifier"):
                continue
            if found.get("description") != listed.get("description"):
                continue
            created = found.get("created_at")
            if since is not None and created and _instant(str(created)) < since:
                continue
            return dict(found)
        return None

    def _vendor(self, name: str | None) -> int | None:
        if not name:
            return None
        if self._vendors is None:
            self._vendors = {}
            for vendor in self.client.vendors(self.ctx.project_id):
                key = str(vendor.get("name") or "").strip().lower()
                self._vendors.setdefault(key, int(vendor["id"]))
        return self._vendors.get(name.strip().lower())

    # -- details -------------------------------------------------------------------------------
    def _details(self, job: _Job, items: list[dict[str, Any]]) -> None:
        """Answers, comments, item files, header and checklist files, then the status."""
        ctx, entry = self.ctx, job.entry
        assert job.template is not None and job.list_id is not None
        sources = self.blocks.item_sources(entry.template_source_id, job.template)
        by_template_item: dict[str, dict[str, Any]] = {}
        for item in items:
            source = sources.get(int(item.get("template_item_id") or 0))
            if source is not None:
                by_template_item.setdefault(source, item)
        planned_items = job.payload.get("items") or []
        keys = _child_keys(planned_items)
        responses = map_rows_of(ctx.store, ENTITY_ITEM_RESPONSE, ctx.project_id, keys.responses)
        comments = map_rows_of(ctx.store, ENTITY_ITEM_COMMENT, ctx.project_id, keys.comments)
        files = map_rows_of(ctx.store, ENTITY_ITEM_FILE, ctx.project_id, keys.files)
        list_files = map_rows_of(
            ctx.store, ENTITY_INSPECTION_FILE, ctx.project_id, entry.attachment_ids
        )
        changed = job.decision.row is not None and job.decision.row.payload_hash is not None
        if changed:
            self._header(job, list_files)
        posted: _Posted | None = None
        for planned in planned_items:
            target = by_template_item.get(str(planned.get("template_item_source_id")))
            if target is None:
                self._hold(
                    job,
                    f"checklist item {planned.get('source_id')} has no item in the Procore "
                    "inspection (its template item is missing)",
                    refused=True,
                )
                continue
            self._answer(job, planned, target, responses)
            for comment in planned.get("comments") or []:
                key = f"{planned['source_id']}:{comment['key']}"
                row = comments.get(key)
                hashed = response_hash({"body": comment["body"]})
                if self._settled(row, hashed):
                    continue
                if row is not None and row.state == "sent":
                    posted = posted or self._posted(job, items, comments, files)
                    found = posted.comment(int(target["id"]), str(comment["body"]))
                    if found is not None:
                        self._mark(ENTITY_ITEM_COMMENT, key, found, hashed)
                        continue
                self._write_child(
                    job,
                    ENTITY_ITEM_COMMENT,
                    key,
                    hashed,
                    functools.partial(
                        self.client.comment_item,
                        ctx.project_id,
                        job.list_id or 0,
                        int(target["id"]),
                        str(comment["body"]),
                    ),
                    functools.partial(
                        self._find_comment, int(target["id"]), str(comment["body"]), keys.comments
                    ),
                )
            for attachment_id in planned.get("attachment_ids") or []:
                row = files.get(attachment_id)
                name = self._name(entry, attachment_id, None)
                if self._settled(row, response_hash({"name": name})):
                    continue
                if row is not None and row.state == "sent":
                    posted = posted or self._posted(job, items, comments, files)
                    found = posted.file(int(target["id"]), name)
                    if found is not None:
                        self._mark(
                            ENTITY_ITEM_FILE, attachment_id, found, response_hash({"name": name})
                        )
                        continue
                self._item_file(job, target, attachment_id, keys.files)
        self._finish(job)

    def _answer(
        self,
        job: _Job,
        planned: Mapping[str, Any],
        item: Mapping[str, Any],
        responses: Mapping[str, MapRow],
    ) -> None:
        ctx = self.ctx
        response = planned.get("response")
        if response is None:
            return
        key = str(planned["source_id"])
        hashed = response_hash(response)
        row = responses.get(key)
        if row is not None and row.is_loaded:
            return  # a changed answer is not sent again: Procore keeps the one it has
        if self._settled(row, hashed):
            return
        if item.get("item_response") is not None:
            # Answered already (by a run whose answer never came back): never answer twice.
            self._mark(ENTITY_ITEM_RESPONSE, key, int(item["id"]), hashed)
            return
        body = _answer_body(response, item)
        if body is None:
            self._hold(
                job,
                f"item {key}: {response} is not a response of the Procore item's set",
                refused=True,
            )
            return
        self._write_child(
            job,
            ENTITY_ITEM_RESPONSE,
            key,
            hashed,
            lambda: self.client.answer_item(ctx.project_id, int(item["id"]), body),
            lambda: self.client.item_response(ctx.project_id, int(item["id"])),
            target_id=int(item["id"]),
        )

    def _item_file(
        self, job: _Job, item: Mapping[str, Any], attachment_id: str, keys: Sequence[str]
    ) -> None:
        ctx, entry = self.ctx, job.entry
        stored = attachment_files(ctx.store, [attachment_id]).get(attachment_id)
        if stored is None:
            self._hold(job, f"attachment {attachment_id} is not in the blob store")
            return
        sha256, content_type, filename = stored
        name = self._name(entry, attachment_id, filename)
        try:
            with ctx.uploader.blobs.open(sha256) as handle:
                data = handle.read()
        except OSError as exc:
            self._hold(job, f"attachment {attachment_id} cannot be read: {exc}")
            return
        except Exception as exc:  # UnsafeBlob: the blob store says why
            self._hold(job, f"attachment {attachment_id}: {exc}")
            return
        if hashlib.sha256(data).hexdigest() != sha256:
            self._hold(job, f"attachment {attachment_id}: the blob is not the downloaded file")
            return
        self._write_child(
            job,
            ENTITY_ITEM_FILE,
            attachment_id,
            response_hash({"name": name}),
            lambda: self.client.attach_item_file(
                ctx.project_id,
                job.list_id or 0,
                int(item["id"]),
                int(item["section_id"]),
                name=name,
                content_type=content_type,
                source=_bytes_io(data),
            ),
            lambda: self._find_file(int(item["id"]), name, keys),
        )

    def _header(self, job: _Job, list_files: Mapping[str, MapRow]) -> None:
        """A checklist changed after load: PATCH its header and add new checklist files."""
        ctx, entry = self.ctx, job.entry
        fields: dict[str, Any] = {
            k: v for k, v in (job.payload.get("list") or {}).items() if k != "status"
        }
        if entry.location_source_id is None:
            fields["location_id"] = None
        elif entry.location_source_id in ctx.location_ids:
            fields["location_id"] = ctx.location_ids[entry.location_source_id]
        else:  # not created in Procore: keep what the inspection has, try again next run
            self._hold(job, f"location {entry.location_source_id} has no Procore id")
        fields["responsible_contractor_id"] = self._vendor(entry.responsible_contractor)
        new_files = [
            a for a in entry.attachment_ids if not (a in list_files and list_files[a].is_loaded)
        ]
        if new_files:
            # A dead run's update may have attached them already: Procore refuses an upload
            # referenced twice, and the id map cannot say (the update is not recorded sent).
            listed = self.client.inspections(ctx.project_id, ids=[job.list_id or 0])
            attached = (listed[0].get("attachments") or []) if listed else []
            with ctx.store.transaction():
                on_inspection = self._record_list_files(job, attached)
            new_files = [a for a in new_files if a not in on_inspection]
        uuids: list[str] = []
        if new_files:
            uploads = ctx.uploader.prepare(new_files, entry.attachment_names)
            ctx.uploads_done += uploads.done
            ctx.uploads_reused += uploads.reused
            failed = [uploads.failed[a] for a in new_files if a in uploads.failed]
            if failed:
                self._hold(job, "; ".join(failed))
            else:
                uuids = [uploads.ready[a] for a in new_files]
                fields["upload_ids"] = uuids
        self._reopen_if_closed(job)
        try:
            shown = once(
                functools.partial(
                    self.client.update_inspection, ctx.project_id, job.list_id or 0, fields
                ),
                functools.partial(self._with_files, job, new_files),
            )
        except ApiError as exc:
            if not _refused(exc):
                raise
            reason, errors = _refusal_text(exc)
            with ctx.store.transaction():
                quarantine_load(
                    ctx.store,
                    ENTITY_INSPECTION,
                    job.entry.source_id,
                    reason=f"Procore refused the inspection update: {reason}",
                    hint=_hint(
                        errors, "Fix the checklist, then `migrate transform` and `migrate load`."
                    ),
                    record={
                        "payload": fields,
                        "payload_hash": entry.payload_hash,
                        "procore_errors": errors,
                        "action": "update",
                    },
                    run_id=ctx.run_id,
                )
            return
        job.wrote = True
        with ctx.store.transaction():
            if uuids:
                ctx.uploader.mark_referenced(uuids)
            self._record_list_files(job, shown.get("attachments") or [])
        ctx.count("updated", ENTITY_INSPECTION)

    def _with_files(self, job: _Job, attachment_ids: Sequence[str]) -> dict[str, Any] | None:
        """The inspection, if it shows every one of these checklist files (a lost answer)."""
        shown = self.client.inspections(self.ctx.project_id, ids=[job.list_id or 0])
        if not shown:
            return None
        names = {str(a.get("name")) for a in shown[0].get("attachments") or []}
        wanted = {self._name(job.entry, a, None) for a in attachment_ids}
        return dict(shown[0]) if wanted <= names else None

    def _reopen_if_closed(self, job: _Job) -> None:
        if job.status == CLOSED:
            self.client.reopen_inspection(self.ctx.project_id, job.list_id or 0)
            job.status = OPEN
            self._record_status(job)

    def _finish(self, job: _Job) -> None:
        """The status last, then the planned hash: this checklist is done."""
        ctx, entry = self.ctx, job.entry
        try:
            if entry.status == CLOSED and job.status != CLOSED:
                self.client.close_inspection(ctx.project_id, job.list_id or 0)
                job.status, job.wrote = CLOSED, True
            elif entry.status == IN_REVIEW and job.status != IN_REVIEW:
                self.client.update_inspection(
                    ctx.project_id, job.list_id or 0, {"status": IN_REVIEW}
                )
                job.status, job.wrote = IN_REVIEW, True
            elif entry.status == OPEN and job.status != OPEN:
                self.client.reopen_inspection(ctx.project_id, job.list_id or 0)
                job.status, job.wrote = OPEN, True
        except ApiError as exc:
            if not _refused(exc):
                raise
            reason, _ = _refusal_text(exc)
            self._hold(job, f"Procore refused the status {entry.status}: {reason}", refused=True)
        with ctx.store.transaction():
            update_loaded(
                ctx.store,
                ENTITY_INSPECTION,
                ctx.project_id,
                entry.source_id,
                target_status=job.status,
                payload_hash=None if job.held_back else entry.payload_hash,
            )
            if not job.held_back and not job.refused:
                release_load_quarantine(ctx.store, ENTITY_INSPECTION, entry.source_id, ctx.run_id)
            if job.details_batch is not None:
                finish_batch(
                    ctx.store,
                    job.details_batch,
                    entities=job.details_done,
                    errors=job.details_refused,
                )

    def _record_status(self, job: _Job) -> None:
        with self.ctx.store.transaction():
            update_loaded(
                self.ctx.store,
                ENTITY_INSPECTION,
                self.ctx.project_id,
                job.entry.source_id,
                target_status=job.status,
            )

    # -- one child write -------------------------------------------------------------------------
    def _write_child(
        self,
        job: _Job,
        entity: str,
        key: str,
        hashed: str,
        call: Callable[[], dict[str, Any]],
        find: Callable[[], dict[str, Any] | None],
        *,
        target_id: int | None = None,
    ) -> None:
        """sent -> the call -> loaded, or rejected and quarantined (the checklist goes on).

        ``find`` looks for what the call made when its answer is lost (see :func:`once`)."""
        ctx = self.ctx
        if job.status == CLOSED:
            self._reopen_if_closed(job)
        with ctx.store.transaction():
            if job.details_batch is None:
                job.details_batch, _ = start_batch(ctx.store, ctx.run_id, "inspection_details", 0)
            batch_id = job.details_batch
            mark_sent(ctx.store, entity, ctx.project_id, batch_id, {key: hashed})
        try:
            created = once(call, find)
        except ApiError as exc:
            if not _refused(exc):
                raise
            reason, errors = _refusal_text(exc)
            job.details_refused += 1
            with ctx.store.transaction():
                mark_rejected(
                    ctx.store, entity, ctx.project_id, key, payload_hash=hashed, batch_id=batch_id
                )
                quarantine_load(
                    ctx.store,
                    entity,
                    key,
                    reason=f"Procore refused the {entity.replace('_', ' ')} of checklist "
                    f"{job.entry.source_id}: {reason}",
                    hint=_hint(
                        errors,
                        "Fix it at the source or in the mappings, then "
                        "`migrate transform` and `migrate load`; the rest of the "
                        "inspection is in Procore.",
                    ),
                    record={
                        "payload_hash": hashed,
                        "procore_errors": errors,
                        "inspection": job.entry.source_id,
                        "action": "create",
                    },
                    run_id=ctx.run_id,
                )
            ctx.count("rejected", entity)
            job.wrote = True
            return
        job.wrote = True
        made = target_id if target_id is not None else int(created.get("id") or 0)
        job.details_done += 1
        with ctx.store.transaction():
            mark_loaded(
                ctx.store,
                entity,
                ctx.project_id,
                key,
                made,
                payload_hash=hashed,
                batch_id=batch_id,
            )
            release_load_quarantine(ctx.store, entity, key, ctx.run_id)
        ctx.count("created", entity)

    def _settled(self, row: MapRow | None, hashed: str) -> bool:
        """Nothing to send: in Procore, or refused as it is now (and no --retry-rejected)."""
        if row is None:
            return False
        if row.is_loaded:
            return True
        return (
            row.state == "rejected"
            and row.payload_hash == hashed
            and not self.ctx.options.retry_rejected
        )

    def _claimed(self, entity: str, keys: Sequence[str]) -> set[int]:
        return {
            row.target_id
            for row in map_rows_of(self.ctx.store, entity, self.ctx.project_id, keys).values()
            if row.is_loaded and row.target_id is not None
        }

    def _find_comment(self, item_id: int, body: str, keys: Sequence[str]) -> dict[str, Any] | None:
        """A comment with this body on the item that no id map row claims (a lost answer)."""
        claimed = self._claimed(ENTITY_ITEM_COMMENT, keys)
        for found in self.client.inspection_item_comments(self.ctx.project_id, [item_id]):
            if found.get("body") == body and int(found["id"]) not in claimed:
                return found
        return None

    def _find_file(self, item_id: int, name: str, keys: Sequence[str]) -> dict[str, Any] | None:
        """A file of this name on the item that no id map row claims (a lost answer)."""
        claimed = self._claimed(ENTITY_ITEM_FILE, keys)
        for found in self.client.inspection_item_attachments(self.ctx.project_id, [item_id]):
            shown = found.get("attachment") or {}
            if shown.get("name") == name and int(found["id"]) not in claimed:
                return found
        return None

    def _mark(self, entity: str, key: str, target_id: int, hashed: str) -> None:
        with self.ctx.store.transaction():
            mark_loaded(
                self.ctx.store, entity, self.ctx.project_id, key, target_id, payload_hash=hashed
            )

    def _posted(
        self,
        job: _Job,
        items: Sequence[Mapping[str, Any]],
        comments: Mapping[str, MapRow],
        files: Mapping[str, MapRow],
    ) -> _Posted:
        """The comments and files Procore holds on this inspection's items (read once)."""
        item_ids = [int(item["id"]) for item in items]
        taken_comments = {r.target_id for r in comments.values() if r.is_loaded}
        taken_files = {r.target_id for r in files.values() if r.is_loaded}
        return _Posted(
            [
                c
                for c in self.client.inspection_item_comments(self.ctx.project_id, item_ids)
                if int(c["id"]) not in taken_comments
            ],
            [
                f
                for f in self.client.inspection_item_attachments(self.ctx.project_id, item_ids)
                if int(f["id"]) not in taken_files
            ],
        )

    # -- small helpers ---------------------------------------------------------------------------
    def _name(self, entry: InspectionEntry, attachment_id: str, filename: str | None) -> str:
        """The name Procore must show for a file (transform names every one)."""
        name = entry.attachment_names.get(attachment_id) or filename or attachment_id
        return procore_name(name) or attachment_id

    def _hold(self, job: _Job, problem: str, *, refused: bool = False) -> None:
        """Quarantine a problem with this checklist; unless ``refused``, it is tried again on
        the next run (a missing file, a template that could not be built)."""
        ctx = self.ctx
        if refused:
            job.refused = True
        else:
            job.held_back = True
        with ctx.store.transaction():
            quarantine_load(
                ctx.store,
                ENTITY_INSPECTION,
                job.entry.source_id,
                reason=f"not (all) sent: {problem}",
                hint="Run `migrate extract` for missing files, fix the template or mappings, "
                "then `migrate load`; held-back checklists are tried on every run.",
                record={"payload_hash": None, "action": "create"},
                run_id=ctx.run_id,
            )
        if not refused and job.list_id is None:
            ctx.count("rejected", ENTITY_INSPECTION)

    def _reject(
        self, job: _Job, reason: str, errors: Any, fields: Mapping[str, Any], batch_id: str
    ) -> None:
        ctx, entry = self.ctx, job.entry
        mark_rejected(
            ctx.store,
            ENTITY_INSPECTION,
            ctx.project_id,
            entry.source_id,
            payload_hash=entry.payload_hash,
            batch_id=batch_id,
        )
        quarantine_load(
            ctx.store,
            ENTITY_INSPECTION,
            entry.source_id,
            reason=f"Procore refused the inspection: {reason}",
            hint=_hint(
                errors,
                "Fix the checklist (see reason), run `migrate transform` and "
                "`migrate load`; an unchanged checklist is sent again only with "
                "`migrate load --retry-rejected`.",
            ),
            record={
                "payload": dict(fields),
                "payload_hash": entry.payload_hash,
                "procore_errors": errors,
                "batch_id": batch_id,
                "action": "create",
            },
            run_id=ctx.run_id,
        )
        ctx.count("rejected", ENTITY_INSPECTION)


@dataclass
class _Keys:
    responses: list[str]
    comments: list[str]
    files: list[str]


def _child_keys(items: Sequence[Mapping[str, Any]]) -> _Keys:
    return _Keys(
        [str(i["source_id"]) for i in items if i.get("response") is not None],
        [f"{i['source_id']}:{c['key']}" for i in items for c in i.get("comments") or []],
        [str(a) for i in items for a in i.get("attachment_ids") or []],
    )


@dataclass
class _Posted:
    """Comments and item files an inspection holds that no id map row claims yet."""

    comments: list[dict[str, Any]]
    files: list[dict[str, Any]]

    def comment(self, item_id: int, body: str) -> int | None:
        for n, found in enumerate(self.comments):
            if found.get("item_id") == item_id and found.get("body") == body:
                return int(self.comments.pop(n)["id"])
        return None

    def file(self, item_id: int, name: str) -> int | None:
        for n, found in enumerate(self.files):
            shown = found.get("attachment") or {}
            if found.get("item_id") == item_id and shown.get("name") == name:
                return int(self.files.pop(n)["id"])
        return None


def _answer_body(response: Mapping[str, Any], item: Mapping[str, Any]) -> dict[str, Any] | None:
    """The item_response body for a planned response; None when its option is not offered."""
    if "response_option" in response:
        wanted = response["response_option"]
        options = (item.get("response_set") or {}).get("responses") or []
        for option in options:
            if option.get("name") == wanted:
                return {"response_option_id": int(option["id"])}
        return None
    return dict(response)


def _bytes_io(data: bytes) -> Any:
    import io

    return io.BytesIO(data)


__all__ = ["InspectionLoader", "lower_bound", "response_hash"]
