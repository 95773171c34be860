"""Write source records: raw payloads with change detection, normalised rows, source problems.

The extract stage maps JSON to rows; these functions only write SQLite (the `save_*` layer).
Table and upsert work goes through sqlite-utils (``store.db``); the raw tables keep three plain
``executemany`` statements, because a page's records split three ways (new, changed, only
seen again) and each way writes different columns.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from migrate.jsontext import canonical_json as canonical_json  # re-exported: the hash's JSON
from migrate.store.db import Store, select_in, strip_secret_params, utc_now


class Change(enum.StrEnum):
    """What save_raw found compared with the stored copy."""

    NEW = "new"
    CHANGED = "changed"  # content differs, or the record came back after being marked deleted
    UNCHANGED = "unchanged"


def content_hash(obj: Any) -> str:
    """sha256 hex digest of canonical_json(obj)."""
    return hashlib.sha256(canonical_json(obj).encode("ascii")).hexdigest()


def strip_secrets(obj: Any) -> Any:
    """Copy of a JSON value with ticket/token query parameters removed from every string."""
    if isinstance(obj, str):
        return strip_secret_params(obj) if "=" in obj else obj
    if isinstance(obj, Mapping):
        return {key: strip_secrets(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [strip_secrets(value) for value in obj]
    return obj


def prepare(payload: Any) -> tuple[Any, str]:
    """(payload without tickets, sha256 of its canonical JSON): what a raw table stores.

    Tickets change every session, so the hash is taken after stripping them: a new login must
    not make a record look changed.
    """
    text = canonical_json(payload)
    # Every character the parameter pattern needs survives JSON escaping unchanged, so a
    # payload whose text has no match holds no string with one either.
    if strip_secret_params(text) != text:
        payload = strip_secrets(payload)
        text = canonical_json(payload)
    return payload, hashlib.sha256(text.encode("ascii")).hexdigest()


def _readable_json(obj: Any) -> str:
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from the source cannot be stored as UTF-8
        text = json.dumps(obj, ensure_ascii=True, separators=(",", ":"))
    return text


def _check_raw_table(store: Store, table: str) -> None:
    if table not in store.raw_tables:
        raise ValueError(
            f"{table!r} is not a raw table; expected one of: {', '.join(sorted(store.raw_tables))}"
        )


class Saved(NamedTuple):
    """What saving one raw record found, and the content hash now stored."""

    change: Change
    digest: str


def save_raw_batch(
    store: Store, table: str, records: Sequence[tuple[str, Any]], run_id: int
) -> dict[str, Saved]:
    """Store ``(source_id, payload)`` records in raw table ``table``; say what each was.

    New, changed (content differs, or the record came back after being marked deleted) or
    unchanged, against the stored copy. Ticket parameters are stripped from every URL first,
    so a slip upstream never puts a live ticket in the DB. One SELECT and three executemany per
    page instead of a statement per record. Call inside ``store.transaction()`` with the rest
    of the page.
    """
    _check_raw_table(store, table)
    for source_id, _ in records:
        if not isinstance(source_id, str) or not source_id:
            raise ValueError(f"{table}: source_id must be a non-empty string, got {source_id!r}")
    known: dict[str, tuple[str, Any]] = {
        source_id: (digest, deleted)
        for source_id, digest, deleted in select_in(
            store.conn,
            f"SELECT source_id, content_hash, deleted_at_run FROM {table} "
            "WHERE source_id IN ({marks})",
            (source_id for source_id, _ in records),
        )
    }
    now = utc_now()
    inserts: list[tuple[Any, ...]] = []
    updates: list[tuple[Any, ...]] = []
    touches: list[tuple[Any, ...]] = []
    result: dict[str, Saved] = {}
    for source_id, payload in records:
        clean, digest = prepare(payload)
        old = known.get(source_id)
        if old is None:
            inserts.append((source_id, _readable_json(clean), digest, run_id, run_id, run_id, now))
            change = Change.NEW
        elif old[0] == digest and old[1] is None:
            touches.append((run_id, now, source_id))
            change = Change.UNCHANGED
        else:
            updates.append((_readable_json(clean), digest, run_id, run_id, now, source_id))
            change = Change.CHANGED
        known[source_id] = (digest, None)
        result.setdefault(source_id, Saved(change, digest))
    conn = store.conn
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


def save_raw(store: Store, table: str, source_id: str, payload: Any, run_id: int) -> Change:
    """Store one source record as received and say whether it is new, changed or unchanged
    (:func:`save_raw_batch` for one record, in its own transaction)."""
    with store.transaction():
        return save_raw_batch(store, table, [(source_id, payload)], run_id)[source_id].change


def load_raw(store: Store, table: str, source_id: str) -> Any | None:
    """The stored payload of one raw record, parsed, or None."""
    _check_raw_table(store, table)
    row = store.conn.execute(
        f"SELECT payload FROM {table} WHERE source_id = ?", (source_id,)
    ).fetchone()
    return None if row is None else json.loads(row[0])


def mark_missing(
    store: Store, table: str, seen_ids_or_run: Iterable[str] | int, run_id: int
) -> list[str]:
    """Mark records the source no longer returns as deleted (deleted_at_run = run_id).

    `seen_ids_or_run` is either every id the complete listing returned, or the id of the run
    in which that listing pass started: records last seen before it are missing. Pass the
    pass's starting run, not the current one, when the listing was resumed across runs.
    Call only after a listing finished; returns the ids newly marked, sorted.
    """
    _check_raw_table(store, table)
    if isinstance(seen_ids_or_run, str | bytes | bool):
        kind = "a bool" if isinstance(seen_ids_or_run, bool) else "a string"
        raise TypeError(f"seen_ids_or_run must be a collection of ids or a run id, not {kind}")
    conn = store.conn
    with store.transaction():
        if isinstance(seen_ids_or_run, int):
            where = "last_seen_run < ?"
            params: tuple[Any, ...] = (seen_ids_or_run,)
        else:
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS _seen_ids (source_id TEXT PRIMARY KEY)")
            conn.execute("DELETE FROM _seen_ids")
            conn.executemany(
                "INSERT OR IGNORE INTO _seen_ids (source_id) VALUES (?)",
                ((source_id,) for source_id in seen_ids_or_run),
            )
            where = "source_id NOT IN (SELECT source_id FROM _seen_ids)"
            params = ()
        missing = [
            source_id
            for (source_id,) in conn.execute(
                f"SELECT source_id FROM {table} WHERE deleted_at_run IS NULL AND {where} "
                "ORDER BY source_id",
                params,
            )
        ]
        conn.execute(
            f"UPDATE {table} SET deleted_at_run = ? WHERE deleted_at_run IS NULL AND {where}",
            (run_id, *params),
        )
    return missing


def storable_text(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD.

    JSON may escape a lone surrogate ("\\udc80") and the parser hands it over as is, but
    sqlite3 refuses to encode it and the whole transaction would fail on one bad character.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def record_problem(
    store: Store,
    run_id: int | None,
    entity: str,
    reason: str,
    *,
    source_id: str | None = None,
    endpoint: str | None = None,
    payload: Any = None,
) -> int:
    """Add a source_problems row (a dangling reference, an unparsable record …); return its id."""
    if payload is None or isinstance(payload, str):
        raw = payload
    else:
        raw = _readable_json(strip_secrets(payload))
    if isinstance(raw, str):
        raw = storable_text(strip_secret_params(raw))
    if source_id is not None:
        source_id = storable_text(source_id)
    with store.transaction():
        cursor = store.conn.execute(
            "INSERT INTO source_problems (run_id, entity, source_id, endpoint, reason, "
            "raw_payload, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                entity,
                source_id,
                endpoint,
                storable_text(strip_secret_params(reason)),
                raw,
                utc_now(),
            ),
        )
        return int(cursor.lastrowid or 0)


def count_source_problems(store: Store, run_id: int) -> int:
    """source_problems rows recorded by run `run_id`."""
    (count,) = store.conn.execute(
        "SELECT count(*) FROM source_problems WHERE run_id = ?", (run_id,)
    ).fetchone()
    return int(count)


class ForeignKey(NamedTuple):
    """A single-column foreign key of a table, and whether its column is NOT NULL."""

    column: str
    other_table: str
    other_column: str
    not_null: bool


def foreign_keys(store: Store, table: str) -> list[ForeignKey]:
    """Single-column foreign keys declared on `table` (read through sqlite-utils)."""
    found = store.db.table(table)
    if not found.exists():
        raise ValueError(f"no table named {table!r} in {store.path}")
    not_null = {column.name: bool(column.notnull) for column in found.columns}
    return [
        ForeignKey(fk.column, fk.other_table, fk.other_column, not_null[fk.column])
        for fk in found.foreign_keys
        if not fk.is_compound and fk.column is not None and fk.other_column is not None
    ]


def upsert(
    store: Store, table: str, rows: Sequence[Mapping[str, Any]], pk: str | Sequence[str] | None
) -> int:
    """Insert `rows`, or where their `pk` is stored already update the columns they carry.

    Columns the rows leave out keep their stored values (a download's state, say). Every row
    must carry the same columns: sqlite-utils would write NULL into a column one row lacks and
    another has. Dicts and lists become JSON. ``pk=None`` inserts (the table assigns its
    INTEGER PRIMARY KEY). Joins the caller's transaction. Returns the rows written.
    """
    if not rows:
        return 0
    keys = set(rows[0])
    for row in rows:
        if set(row) != keys:
            raise ValueError(
                f"{table}: every row must have the same columns; {sorted(keys)} vs {sorted(row)}"
            )
    as_dicts = [row if isinstance(row, dict) else dict(row) for row in rows]
    target = store.db.table(table)
    if pk is None:
        target.insert_all(as_dicts, alter=False)
    else:
        target.upsert_all(as_dicts, pk=pk if isinstance(pk, str) else list(pk), alter=False)
    return len(as_dicts)


@dataclass(frozen=True)
class UpsertResult:
    """Rows written, and how many dangling references were nulled or made a row be skipped."""

    upserted: int
    nulled: int  # dangling references set to NULL
    skipped: int  # rows dropped because a required reference dangles


def upsert_rows(
    store: Store,
    table: str,
    rows: Sequence[Mapping[str, Any]],
    pk: str | Sequence[str] | None,
    *,
    run_id: int | None,
    endpoint: str | None = None,
) -> UpsertResult:
    """:func:`upsert` already-mapped rows into a normalised table, without failing on a
    dangling reference.

    A reference to a row the source never returned would fail the whole page at COMMIT: here it
    becomes NULL (or, for a NOT NULL column, the row is skipped) plus a source_problems row.
    Referenced tables must be written first; references between rows of the same batch
    (areas.parent_id) are fine.
    """
    if not rows:
        return UpsertResult(0, 0, 0)
    keys = set(rows[0])
    for row in rows:
        if set(row) != keys:
            raise ValueError(
                f"{table}: every row must have the same columns; {sorted(keys)} vs {sorted(row)}"
            )
    pk_columns = [] if pk is None else [pk] if isinstance(pk, str) else list(pk)
    prepared = [dict(row) for row in rows]
    nulled = skipped = 0
    dropped: set[int] = set()
    with store.transaction():
        for fk in foreign_keys(store, table):
            if fk.column not in keys:
                continue
            wanted = {row[fk.column] for row in prepared if row[fk.column] is not None}
            if fk.other_table == table:
                wanted -= {row.get(fk.other_column) for row in prepared}
            missing = wanted - _existing(store, fk.other_table, fk.other_column, wanted)
            if not missing:
                continue
            for index, row in enumerate(prepared):
                value = row[fk.column]
                if value not in missing or index in dropped:
                    continue
                row_id = ":".join(str(row.get(column)) for column in pk_columns) or None
                action = "row skipped" if fk.not_null else f"{fk.column} stored as NULL"
                record_problem(
                    store,
                    run_id,
                    table,
                    f"{table}.{fk.column} = {value!r} refers to {fk.other_table}."
                    f"{fk.other_column} that the source did not return; {action}",
                    source_id=row_id,
                    endpoint=endpoint,
                    payload=rows[index],
                )
                if fk.not_null:
                    dropped.add(index)
                    skipped += 1
                else:
                    row[fk.column] = None
                    nulled += 1
        kept = [row for index, row in enumerate(prepared) if index not in dropped]
        upsert(store, table, kept, pk)
    return UpsertResult(len(kept), nulled, skipped)


def _existing(store: Store, table: str, column: str, values: set[Any]) -> set[Any]:
    sql = f'SELECT "{column}" FROM "{table}" WHERE "{column}" IN ({{marks}})'
    return {value for (value,) in select_in(store.conn, sql, values)}


def replace_rows(
    store: Store,
    table: str,
    where: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    pk: str | Sequence[str] | None,
    *,
    run_id: int | None,
    endpoint: str | None = None,
) -> UpsertResult:
    """Delete the rows matching `where` (e.g. one issue's status history), then upsert `rows`.

    For child records the source returns as a whole list with no ids of their own. Not for
    attachments: deleting would forget what was downloaded.
    """
    if not where:
        raise ValueError("replace_rows needs a non-empty where, or it would empty the table")
    target = store.db.table(table)
    if not target.exists():
        raise ValueError(f"no table named {table!r} in {store.path}")
    unknown = set(where) - set(target.columns_dict)
    if unknown:
        raise ValueError(f"{table} has no column(s) {sorted(unknown)}")
    condition = " AND ".join(f'"{column}" = ?' for column in where)
    with store.transaction():
        target.delete_where(condition, tuple(where.values()))
        return upsert_rows(store, table, rows, pk, run_id=run_id, endpoint=endpoint)
