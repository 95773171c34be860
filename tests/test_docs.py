"""docs/guarantees.md names the tests that prove each promise: every one it names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GUARANTEES = REPO / "docs" / "guarantees.md"
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?")


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def test_every_test_the_guarantees_name_exists() -> None:
    references = REFERENCE.findall(GUARANTEES.read_text(encoding="utf-8"))
    assert len(references) > 100  # the document names its tests; an empty match proves nothing
    missing = []
    for file, name in references:
        path = REPO / file
        if not path.is_file():
            missing.append(file)
        elif name and name not in _test_names(path):
            missing.append(f"{file}::{name}")
    assert missing == [], f"docs/guarantees.md names tests that do not exist: {missing}"


def test_the_guarantees_are_numbered_in_order() -> None:
    numbers = [
        int(n) for n in re.findall(r"(?m)^## (\d+)\.", GUARANTEES.read_text(encoding="utf-8"))
    ]
    assert numbers == list(range(1, len(numbers) + 1))
