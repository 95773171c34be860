"""Transform throughput for checklists → planned inspections (issue 14), 10 000 checklists.

A small sandbox project is extracted over HTTP (every Field item type, signatures, photos,
comments, linked issues, deleted checklists), then its checklists are copied in SQLite, with
every id suffixed, until the staging DB holds `--checklists` of them. The transform then runs
offline on it; its wall and CPU time are printed (CPU time is what a busy machine does not
change much).

    python -m bench.transform_inspections_bench                 # 10 000 checklists
    python -m bench.transform_inspections_bench --checklists 2000
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

from migrate.extract import extract_from_settings
from migrate.mappings import write_default_mappings
from migrate.sandbox.runner import Sandbox
from migrate.settings import (
    MappingsSettings,
    Settings,
    SourceSettings,
    StagingSettings,
    TargetSettings,
)
from migrate.store import open_store
from migrate.store.planned import planned_inspection_counts
from migrate.transform import transform_from_settings

#: (table, columns whose value gets the copy's suffix).
SUFFIXED = (
    ("checklists", ("id",)),
    ("checklist_sections", ("id", "checklist_id")),
    ("checklist_items", ("id", "checklist_id", "section_id")),
    ("checklist_custom_field_values", ("checklist_id",)),
)


def replicate(path: Path, wanted: int) -> int:
    """Copy the staged checklists (ids suffixed) until there are `wanted`; return the count."""
    db = sqlite3.connect(path)
    try:
        base = db.execute("SELECT COUNT(*) FROM checklists").fetchone()[0]
        copies = max(0, -(-wanted // base) - 1)
        for copy in range(1, copies + 1):
            suffix = f"-{copy:05d}"
            for table, columns in SUFFIXED:
                names = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
                values = [f"{name} || '{suffix}'" if name in columns else name for name in names]
                if table == "checklist_items":  # a signature item names its signature file
                    values[names.index("response")] = (
                        f"CASE WHEN display_type = 'signature' AND response <> '' "
                        f"THEN response || '{suffix}' ELSE response END"
                    )
                if table == "checklist_custom_field_values":
                    values[names.index("value")] = (
                        f"CASE WHEN display_type = 'signature' AND value <> '' "
                        f"THEN value || '{suffix}' ELSE value END"
                    )
                db.execute(
                    f"INSERT INTO {table} ({', '.join(names)}) SELECT {', '.join(values)} "
                    f"FROM {table} WHERE {columns[0]} NOT LIKE '%-_____'"
                )
            names = [row[1] for row in db.execute("PRAGMA table_info(attachments)")]
            values = [
                f"{name} || '{suffix}'" if name in ("id", "container_id") else name
                for name in names
            ]
            db.execute(
                f"INSERT INTO attachments ({', '.join(names)}) SELECT {', '.join(values)} "
                "FROM attachments WHERE container_type IN ('Checklist', 'ChecklistItem') "
                "AND id NOT LIKE '%-_____'"
            )
            names = [row[1] for row in db.execute("PRAGMA table_info(comments)")]
            values = [
                f"{name} || '{suffix}'" if name in ("id", "container_id") else name
                for name in names
            ]
            db.execute(
                f"INSERT INTO comments ({', '.join(names)}) SELECT {', '.join(values)} "
                "FROM comments WHERE container_type = 'Checklist' AND id NOT LIKE '%-_____'"
            )
        db.commit()
        return int(db.execute("SELECT COUNT(*) FROM checklists").fetchone()[0])
    finally:
        db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checklists", type=int, default=10_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        write_default_mappings(work / "mappings")
        with Sandbox() as sandbox:
            settings = Settings(
                source=SourceSettings(
                    base_url=sandbox.field_url, project_id=sandbox.field_project_id
                ),
                target=TargetSettings(
                    base_url=sandbox.procore_url,
                    auth_url=sandbox.procore_url,
                    company_id=sandbox.procore_company_id,
                    project_id=sandbox.procore_project_id,
                ),
                staging=StagingSettings(
                    path=work / "staging.db", blobs=work / "blobs", logs=work / "logs"
                ),
                mappings=MappingsSettings(dir=work / "mappings"),
            )
            extract_from_settings(settings, sandbox.environment())
            transform_from_settings(settings, sandbox.environment())  # the Procore snapshot
        count = replicate(settings.staging.path, args.checklists)
        started, cpu = time.perf_counter(), time.process_time()
        result = transform_from_settings(settings, {}, offline=True)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        with open_store(settings.staging.path) as store:
            planned = planned_inspection_counts(store)
        print(
            f"{count} checklists ({planned['inspections']} inspections, {planned['items']} "
            f"items, {planned['templates']} templates): transform {elapsed:.1f} s wall, "
            f"{cpu:.1f} s CPU; counts {result.counts['checklists']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
