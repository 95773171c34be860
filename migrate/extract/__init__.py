"""Extract: pull a BIM 360 Field project into the staging DB and blob store (resumable,
incremental). ``run`` is the library entry point; ``extract_from_settings`` is what
``migrate extract`` calls."""

from __future__ import annotations

from migrate.extract.stage import extract_from_settings, find_project, run
from migrate.extract.state import ExtractOptions
from migrate.results import ExtractResult, Progress

__all__ = [
    "ExtractOptions",
    "ExtractResult",
    "Progress",
    "extract_from_settings",
    "find_project",
    "run",
]
