"""``save_raw_batch``: ``migrate.store.save_raw`` for a page of records at once.

Same columns, same hashes, same new / changed / unchanged rules (a record that comes back after
being marked deleted counts as changed), but one SELECT and three executemany per page instead
of a transaction per record, and ticket stripping only for records that carry a secret-looking
URL parameter. At 10 000 issues that is the difference between seconds and tens of seconds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, NamedTuple

from migrate.store import Change, Store, canonical_json, strip_secret_params, utc_now

_CHUNK = 500


def strip_ticket_params(obj: Any) -> Any:
    """A JSON value with ticket/token query parameters removed from every string in it."""
    if isinstance(obj, str):
        return strip_secret_params(obj) if "=" in obj else obj
    if isinstance(obj, dict):
        return {key: strip_ticket_params(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [strip_ticket_params(value) for value in obj]
    return obj


def prepare(payload: Any) -> tuple[Any, str]:
    """(payload without tickets, sha256 of its canonical JSON): what save_raw stores."""
    text = canonical_json(payload)
    # Every character the parameter pattern needs survives JSON escaping unchanged, so a
    # payload whose text has no match holds no string with one either.
    if strip_secret_params(text) != text:
        payload = strip_ticket_params(payload)
        text = canonical_json(payload)
    return payload, hashlib.sha256(text.encode("ascii")).hexdigest()


def _readable(payload: Any) -> str:
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates cannot be stored as UTF-8
        text = json.dumps(payload, ensure_ascii=True, separators=(",", ":"))
    return text


class Saved(NamedTuple):
    """What saving one raw record found, and the content hash now stored."""

    change: Change
    digest: str


def save_raw_batch(
    store: Store, table: str, records: Sequence[tuple[str, Any]], run_id: int
) -> dict[str, Saved]:
    """Store ``(source_id, payload)`` records in raw table ``table``; say what each was.

    Call inside ``store.transaction()`` with the rest of the page. ``table`` must be one of the
    schema's raw tables.
    """
    if table not in store.raw_tables:
        raise ValueError(f"{table!r} is not a raw table")
    conn = store.conn
    ids = list(dict.fromkeys(source_id for source_id, _ in records))
    known: dict[str, tuple[str, Any]] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        known.update(
            (source_id, (digest, deleted))
            for source_id, digest, deleted in conn.execute(
                f"SELECT source_id, content_hash, deleted_at_run FROM {table} "
                f"WHERE source_id IN ({', '.join('?' * len(chunk))})",
                chunk,
            )
        )
    now = utc_now()
    inserts: list[tuple[Any, ...]] = []
    updates: list[tuple[Any, ...]] = []
    touches: list[tuple[Any, ...]] = []
    result: dict[str, Saved] = {}
    for source_id, payload in records:
        if not isinstance(source_id, str) or not source_id:
            raise ValueError(f"{table}: source_id must be a non-empty string, got {source_id!r}")
        clean, digest = prepare(payload)
        old = known.get(source_id)
        if old is None:
            inserts.append((source_id, _readable(clean), digest, run_id, run_id, run_id, now))
            change = Change.NEW
        elif old[0] == digest and old[1] is None:
            touches.append((run_id, now, source_id))
            change = Change.UNCHANGED
        else:
            updates.append((_readable(clean), digest, run_id, run_id, now, source_id))
            change = Change.CHANGED
        known[source_id] = (digest, None)
        result.setdefault(source_id, Saved(change, digest))
    conn.executemany(
        f"INSERT INTO {table} (source_id, payload, content_hash, first_seen_run, last_seen_run, "
        "changed_run, fetched_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        inserts,
    )
    conn.executemany(
        f"UPDATE {table} SET payload = ?, content_hash = ?, last_seen_run = ?, changed_run = ?, "
        "deleted_at_run = NULL, fetched_at = ? WHERE source_id = ?",
        updates,
    )
    conn.executemany(
        f"UPDATE {table} SET last_seen_run = ?, fetched_at = ? WHERE source_id = ?", touches
    )
    return result
