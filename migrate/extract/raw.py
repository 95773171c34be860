"""``save_raw_batch`` moved to :mod:`migrate.store.records` (the raw tables' one writer).

Kept as a name for ``extract/listing.py`` until the branches are merged; import from
``migrate.store.records`` instead.
"""

from __future__ import annotations

from migrate.store.records import Saved, prepare, save_raw_batch

__all__ = ["Saved", "prepare", "save_raw_batch"]
