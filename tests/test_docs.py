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


def _sections() -> dict[str, str]:
    """Heading -> text of each ``## `` section of docs/guarantees.md."""
    parts = re.split(r"(?m)^## (.+)$", GUARANTEES.read_text(encoding="utf-8"))
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_every_guarantee_names_a_test_that_proves_it() -> None:
    unproved = [
        heading
        for heading, text in _sections().items()
        if re.match(r"\d+\.", heading) and not REFERENCE.search(text)
    ]
    assert unproved == [], f"guarantees naming no test: {unproved}"


def _xfails(root: Path = REPO) -> set[str]:
    """``file::test`` of every test under ``root/tests`` marked xfail (a decorator, a param's
    marks or a pytest.xfail call inside it); ``file`` alone for a module-wide mark."""
    found: set[str] = set()
    for path in sorted((root / "tests").rglob("*.py")):
        file = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            functions = [node] if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else []
            if isinstance(node, ast.ClassDef):
                functions = [n for n in node.body if isinstance(n, ast.FunctionDef)]
            for function in functions:
                if any(
                    isinstance(n, ast.Attribute) and n.attr == "xfail" for n in ast.walk(function)
                ):
                    found.add(f"{file}::{function.name}")
            if not functions and any(
                isinstance(n, ast.Attribute) and n.attr == "xfail" for n in ast.walk(node)
            ):
                found.add(file)
    return found


def test_known_gaps_list_exactly_the_tests_marked_xfail() -> None:
    """A known gap is a failing reproduction marked xfail, named in the guarantees' known-gaps
    section; a gap that was closed leaves both (issue 19 point 8)."""
    gaps = "".join(text for heading, text in _sections().items() if "known gap" in heading.lower())
    listed = {f"{file}::{name}" if name else file for file, name in REFERENCE.findall(gaps)}
    assert listed == _xfails()


def test_the_xfail_finder_sees_every_way_to_mark_a_test(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text(
        "@pytest.mark.xfail(strict=True)\ndef test_gap():\n    pass\n\n"
        "@pytest.mark.parametrize('n', [1, pytest.param(2, marks=pytest.mark.xfail)])\n"
        "def test_param(n):\n    pass\n\n"
        "def test_plain():\n    pass\n",
        encoding="utf-8",
    )
    (tmp_path / "tests" / "test_b.py").write_text(
        "pytestmark = pytest.mark.xfail\n", encoding="utf-8"
    )
    assert _xfails(tmp_path) == {
        "tests/test_a.py::test_gap",
        "tests/test_a.py::test_param",
        "tests/test_b.py",
    }


# -- issue 16: every runbook, and the README's real migration, start with preflight -------------
SERVICE_COMMAND = re.compile(r"migrate (?:extract|transform|load|run|report)\b")


def _preflight_comes_first(text: str) -> bool:
    preflight = text.find("migrate preflight")
    first_service_call = SERVICE_COMMAND.search(text)
    return preflight >= 0 and (first_service_call is None or preflight < first_service_call.start())


def test_every_runbook_runs_preflight_before_calling_the_services() -> None:
    # From the prerequisites on: the introduction above them only says when to use it.
    runbooks = {
        path.name: path.read_text(encoding="utf-8").split("## Prerequisites", 1)
        for path in sorted((REPO / "runbooks").glob("0*.md"))
    }
    assert runbooks and all(len(parts) == 2 for parts in runbooks.values())
    late = [name for name, parts in runbooks.items() if not _preflight_comes_first(parts[1])]
    assert late == []


def test_the_readme_real_migration_starts_with_preflight() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("### The same walk against the real services", 1)[1].split("\n### ", 1)[
        0
    ]
    assert _preflight_comes_first(section)
