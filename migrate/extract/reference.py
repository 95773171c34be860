"""Reference data: projects, companies, users, areas, issue types, root causes, custom fields,
issue fields and checklist templates. One call each; the whole answer is saved in one
transaction with its cursor, so a resumed pass does not ask again. Records gone from an answer
are marked deleted. Only new and changed records (by content hash) are mapped again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from migrate.clients.bim360field import FieldSession, MalformedBody
from migrate.errors import ConfigError
from migrate.extract.normalise import (
    Mapped,
    Problem,
    duplicate_id,
    map_areas,
    map_checklist_template,
    map_company,
    map_custom_field,
    map_issue_fields,
    map_named,
    map_project,
    map_user,
    record_id,
)
from migrate.extract.save import save_rows
from migrate.extract.state import Context
from migrate.store import Change, mark_missing
from migrate.store.db import execute_in
from migrate.store.records import save_raw_batch

#: The BIM 360 Mobile version extract claims: seed 003 serves rich-content checklists (single-
#: and multi-select items) from /api/templates and /api/get_checklist_headers only "more than
#: 1.10", and the newest /api/areas "more than 4.7"; this one value is above both.
MOBILE_APP_VERSION = "4.8"


@dataclass(frozen=True)
class Reference:
    """One reference endpoint: where it lives and how its records map to rows."""

    entity: str  # also the normalised table
    raw_table: str
    path: str
    pk: str | tuple[str, ...]
    id_key: str = "id"
    project_scoped: bool = True
    params: tuple[tuple[str, str], ...] = ()


# Order matters: rows that others reference are written first (users -> companies).
REFERENCES = (
    Reference("projects", "raw_projects", "/api/projects", "id", project_scoped=False),
    Reference("companies", "raw_companies", "/fieldapi/admin/v1/companies", "id"),
    Reference("users", "raw_users", "/fieldapi/admin/v1/users", "id"),
    Reference("areas", "raw_areas", "/fieldapi/admin/v1/locations", "id"),
    Reference("issue_types", "raw_issue_types", "/fieldapi/issues/v1/types", "id"),
    Reference("root_causes", "raw_root_causes", "/fieldapi/issues/v1/root_causes", "id"),
    Reference(
        "custom_fields", "raw_custom_fields", "/api/custom_fields", "id", id_key="custom_field_id"
    ),
    Reference(
        "issue_fields",
        "raw_issue_fields",
        "/fieldapi/issues/v1/fields",
        ("field_id", "issue_type_id"),
    ),
    # Every template, used or not, in one call (there is no cheaper way to learn which ones
    # changed); only new and changed ones are mapped again. After custom_fields: nothing
    # references templates, but checklists join both.
    Reference(
        "checklist_templates",
        "raw_checklist_templates",
        "/api/templates",
        "id",
        params=(("application_version", MOBILE_APP_VERSION),),
    ),
)

_MAPPERS: dict[str, Callable[[Any, str], Mapped]] = {
    "projects": map_project,
    "companies": map_company,
    "users": map_user,
    "issue_types": lambda record, source_id: map_named("issue_types", record, source_id),
    "root_causes": lambda record, source_id: map_named("root_causes", record, source_id),
    "custom_fields": map_custom_field,
    "issue_fields": lambda record, source_id: map_issue_fields(source_id, record),
}


def fetch_reference(session: FieldSession, reference: Reference) -> Any:
    """The endpoint's whole answer (one POST)."""
    if reference.project_scoped:
        return session.project_call("POST", reference.path, **dict(reference.params))
    return session.json("POST", reference.path, dict(reference.params))


def split_records(reference: Reference, answer: Any) -> tuple[dict[str, Any], list[Problem]]:
    """source id -> record, plus problems for records without a usable id."""
    records: dict[str, Any] = {}
    problems: list[Problem] = []
    if reference.entity == "issue_fields":
        # One object: common and ancillary fields, plus one issue type's own fields.
        if not isinstance(answer, dict):
            problems.append(
                Problem(
                    "issue_fields",
                    None,
                    "issue fields answer is not an object; nothing stored",
                    answer,
                )
            )
            return records, problems
        for section in ("common", "ancillary"):
            if isinstance(answer.get(section), dict):
                records[section] = answer[section]
        category = answer.get("category")
        if isinstance(category, dict):
            type_id, problem = record_id(category, "issue_fields")
            if problem is not None or type_id is None:
                problems.extend([problem] if problem is not None else [])
            else:
                records[type_id] = category
        return records, problems
    if not isinstance(answer, list):
        problems.append(
            Problem(
                reference.entity,
                None,
                f"{reference.entity} answer is not a list; nothing stored",
                answer,
            )
        )
        return records, problems
    for record in answer:
        source_id, problem = record_id(record, reference.entity, reference.id_key)
        if problem is not None or source_id is None:
            problems.extend([problem] if problem is not None else [])
        elif source_id in records:
            problems.append(
                duplicate_id(
                    reference.entity,
                    source_id,
                    records[source_id],
                    record,
                    f"one answer of POST {reference.path}",
                )
            )
        else:
            records[source_id] = record
    return records, problems


def check_project(ctx: Context, answer: Any) -> None:
    """The configured project must be one the user can see (ConfigError otherwise)."""
    if not isinstance(answer, list):
        return
    visible = {p.get("id"): p.get("name") for p in answer if isinstance(p, dict)}
    if ctx.project_id not in visible:
        names = ", ".join(f'"{name}" ({pid})' for pid, name in list(visible.items())[:10])
        raise ConfigError(
            f"[source] project_id {ctx.project_id} is not a BIM 360 Field project this user "
            f"can see (visible: {names or 'none'}). Fix project_id in the config, or use "
            "project_name."
        )


def save_reference(
    ctx: Context, reference: Reference, records: dict[str, Any], problems: list[Problem]
) -> None:
    """Raw records, normalised rows of the new and changed ones, deletions, and the cursor."""
    store = ctx.store
    endpoint = f"POST {reference.path}"
    with store.transaction():
        changed: dict[str, Any] = {}
        saved = save_raw_batch(store, reference.raw_table, list(records.items()), ctx.run_id)
        for source_id, record in records.items():
            change = saved[source_id].change
            ctx.tally.change(reference.entity, change)
            if change is not Change.UNCHANGED or ctx.full_refresh:
                changed[source_id] = record
        gone = mark_missing(store, reference.raw_table, list(records), ctx.run_id)
        ctx.tally.change(reference.entity, "deleted", len(gone))
        if reference.entity == "areas":
            # Depth needs every parent, so the tree is mapped whole when any node changed.
            mapped = map_areas(records) if changed or gone else Mapped()
            execute_in(store.conn, "UPDATE areas SET deleted = 1 WHERE id IN ({marks})", gone)
        elif reference.entity == "checklist_templates":
            mapped = Mapped()
            for source_id, record in changed.items():
                mapped.extend(map_checklist_template(record, source_id, saved[source_id].digest))
            # A changed template's items are replaced whole (an item the source dropped must
            # go). A template that is now malformed keeps its last good rows, and one gone from
            # the source keeps its rows too: checklists filled from it still need them.
            staged = [row["id"] for row in mapped.rows.get("checklist_templates", [])]
            execute_in(
                store.conn,
                "DELETE FROM checklist_template_items WHERE template_id IN ({marks})",
                staged,
            )
            save_rows(ctx, mapped, "checklist_template_items", "id", endpoint=endpoint)
        else:
            mapped = Mapped()
            for source_id, record in changed.items():
                mapped.extend(_MAPPERS[reference.entity](record, source_id))
        if reference.entity == "issue_fields":
            # A type's fields are replaced whole: a field the source dropped must go.
            for source_id in changed:
                type_id = "" if source_id in ("common", "ancillary") else source_id
                section = source_id if source_id in ("common", "ancillary") else "type"
                store.conn.execute(
                    "DELETE FROM issue_fields WHERE issue_type_id = ? AND section = ?",
                    (type_id, section),
                )
        save_rows(ctx, mapped, reference.entity, reference.pk, endpoint=endpoint)
        ctx.problems([*problems, *mapped.problems], endpoint=endpoint)
        ctx.mark_done(f"reference:{reference.entity}")


def extract_reference(ctx: Context) -> None:
    """Every reference endpoint not yet done in this pass."""
    ctx.progress.start("reference", len(REFERENCES))
    try:
        for reference in REFERENCES:
            ctx.tally.touch(reference.entity)
            if ctx.is_done(f"reference:{reference.entity}"):
                ctx.progress.advance("reference")
                continue
            try:
                answer = fetch_reference(ctx.session, reference)
            except MalformedBody as exc:
                # Nothing to store: keep the body as a problem, infer no deletions, go on.
                with ctx.store.transaction():
                    ctx.problems(
                        [Problem(reference.entity, None, str(exc), exc.body_text)],
                        endpoint=f"POST {reference.path}",
                    )
                ctx.tally.incomplete.append(reference.entity)
                ctx.progress.advance("reference")
                continue
            expected = dict if reference.entity == "issue_fields" else list
            if not isinstance(answer, expected):
                # A wrong shape says nothing about what exists: store nothing, delete nothing.
                with ctx.store.transaction():
                    ctx.problems(
                        [
                            Problem(
                                reference.entity,
                                None,
                                f"POST {reference.path} answered with a JSON "
                                f"{type(answer).__name__} "
                                f"where a {expected.__name__} was expected; nothing stored",
                                answer,
                            )
                        ],
                        endpoint=f"POST {reference.path}",
                    )
                ctx.tally.incomplete.append(reference.entity)
                ctx.progress.advance("reference")
                continue
            if reference.entity == "projects":
                check_project(ctx, answer)
            records, problems = split_records(reference, answer)
            save_reference(ctx, reference, records, problems)
            ctx.note(
                "reference_saved",
                entity=reference.entity,
                counts=dict(ctx.tally.counts[reference.entity]),
            )
            ctx.progress.advance("reference")
    finally:
        ctx.progress.finish("reference")
