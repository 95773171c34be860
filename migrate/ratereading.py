"""One answer from Procore as the rate budget saw it: the record load stores (table
``rate_readings``) and the report's quota charts are drawn from. Plain data, importable by the
clients, the store and the report alike."""

from __future__ import annotations

from typing import NamedTuple


class Reading(NamedTuple):
    """``limit`` / ``remaining`` / ``reset`` are the X-Rate-Limit-* headers (None when the answer
    carried none, which means Procore did not count the request against its quota)."""

    sent_at: float  # Unix seconds, when the rate budget let the request go
    answered_at: float
    method: str
    endpoint: str  # the URL's path, ids folded to ":id", never the query (it may be secret)
    status: int
    limit: int | None
    remaining: int | None
    reset: float | None
