"""The field ledger (issue 15 point 1) on the real pipeline: generated project → extract →
transform against the simulators, then the report and plan read what transform stored."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from migrate.extract import extract_from_settings
from migrate.mappings import write_default_mappings
from migrate.sandbox.runner import Sandbox
from migrate.settings import Settings
from migrate.store import Store, open_store
from migrate.transform import transform_from_settings
from migrate.transform.ledger import (
    CATALOGUE,
    NO_DESTINATION,
    LedgerRow,
    read_ledger,
    unaccounted,
)
from tests.test_transform_inspections import make_settings


class Pipeline:
    def __init__(self, sandbox: Sandbox, settings: Settings) -> None:
        self.sandbox = sandbox
        self.settings = settings

    def store(self) -> Store:
        return open_store(self.settings.staging.path)

    def transform(self, settings: Settings | None = None) -> list[LedgerRow]:
        transform_from_settings(settings or self.settings, self.sandbox.environment())
        with self.store() as store:
            return read_ledger(store)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    work = tmp_path_factory.mktemp("ledger")
    write_default_mappings(work / "mappings")
    with Sandbox() as sandbox:
        settings = make_settings(sandbox, work)
        extract_from_settings(settings, sandbox.environment())
        yield Pipeline(sandbox, settings)


def by_field(rows: list[LedgerRow]) -> dict[tuple[str, str], LedgerRow]:
    return {(row.entity, row.field): row for row in rows}


def test_every_field_with_values_has_a_destination(pipeline: Pipeline) -> None:
    rows = pipeline.transform()
    assert unaccounted(rows) == []
    fields = by_field(rows)
    # The ledger covers every staged column of every catalogued table, and custom fields.
    with pipeline.store() as store:
        for entity in CATALOGUE:
            for (column,) in store.conn.execute(
                f"SELECT name FROM pragma_table_info('{entity.table}')"
            ):
                assert (entity.name, column) in fields, (entity.name, column)
    assert any(field.startswith("cf:") for _entity, field in fields)
    assert fields[("issue", "description")].kind == "target"
    assert fields[("issue file", "caption")].with_value > 0
