"""The title template language: its placeholders and what makes a template unusable.

Read by the mapping files (a ``title_template`` row in fields.csv), the settings and transform
(which fills templates, see ``transform/titles.py``), so it imports nothing of theirs.
"""

from __future__ import annotations

import string

DEFAULT_TITLE_TEMPLATE = "{identifier} {description}"

#: Template placeholder → key of the normalised issue record.
TITLE_PLACEHOLDERS: dict[str, str] = {
    "identifier": "identifier",
    "description": "description",
    "type": "issue_type_name",
    "category": "category_name",
    "area": "area_path",
    "location_detail": "location_detail",
    "status": "status",
}


def template_problems(template: str) -> list[str]:
    """Why `template` is not a usable title template, one phrase per problem (empty: usable)."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        return [f"is not a valid template ({exc}; write {{{{ or }}}} for a literal brace)"]
    problems = []
    for _literal, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in TITLE_PLACEHOLDERS:
            problems.append(f"uses unknown placeholder {{{name}}}")
        elif spec or conversion:
            problems.append(f"placeholder {{{name}}} takes no format spec or conversion")
    return problems
