"""The event log read back by range, for the export: its SQL, for SQLite and PostgreSQL.

A snapshot is the grant as an event saw it (``{"grant": …}`` in the payload, alone or after
``"changes"``: canonical JSON sorts keys, so the payload starts with one of the two). Rows
come back as the driver gives them; the export gives them meaning.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from firmgrant.ledger._bulk import iso_from_db, time_converter, time_from_db
from firmgrant.ledger.models import EventRow
from firmgrant.ledger.ranges import Reader

SNAPSHOT_PREFIXES = ('{"changes":', '{"grant":')
# SQLite before 3.35 (still some LTS systems' own) neither needs nor knows the hint;
# PostgreSQL has it since 12.
_MATERIALIZED = "MATERIALIZED " if sqlite3.sqlite_version_info >= (3, 35) else ""


def _sqlite_time(column: str) -> str:
    """What SQLite stores for a time (`_bulk.sqlite_time`), from PostgreSQL's timestamptz."""
    return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"


def _has_snapshot(alias: str) -> str:
    """SQL: the payload of event ``alias`` holds a snapshot.

    The patterns are literals: bound as parameters, SQLite would prepare the statement anew
    at every execution (a LIKE's pattern can change its plan).
    """
    tests = (f"{alias}.payload LIKE '{prefix}%'" for prefix in SNAPSHOT_PREFIXES)
    return f"({' OR '.join(tests)})"


def _snapshot_sql(reader: Reader) -> str:
    """SQL for the payload of an event that holds a snapshot, NULL for one that does not.

    Both hand it over as bytes that orjson parses without decoding them to str: SQLite as a
    BLOB, PostgreSQL as a ``bytea`` in binary format (``Reader.rows(binary=True)``; 1M-event
    export: 8 % fewer client instructions).
    """
    if reader.dialect == "sqlite":
        return f"CASE WHEN {_has_snapshot('e')} THEN CAST(e.payload AS BLOB) END"
    return f"CASE WHEN {_has_snapshot('e')} THEN convert_to(e.payload, 'UTF8') END"


def range_events(
    reader: Reader,
    lo: int,
    hi: int,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    org_id: str | None = None,
    connection: str | None = None,
) -> list[tuple[Any, ...]]:
    """Events ``lo..hi`` in id order, filtered (on the time they were recorded, ``at``):
    ``(id, at, occurred_at, kind, grant_id, connection, source_id, actor, reason, snapshot
    payload or None, prev_hash, hash)``, times as SQLite's text of a time on both dialects;
    ``occurred_at`` ``None`` where it is ``at`` (most events: nothing to send or format)."""
    # PostgreSQL formats it faster than psycopg parses it and Python formats it back
    # (1M-event export: 13 % of the readers' time).
    occurred = "NULLIF(e.occurred_at, e.at)"
    if reader.dialect == "sqlite":
        times = f"e.at, {occurred}"
    else:
        times = f"{_sqlite_time('e.at')}, {_sqlite_time(occurred)}"
    sql = (
        f"SELECT e.id, {times}, e.kind, e.grant_id, e.connection, e.source_id, e.actor, "
        f"e.reason, {_snapshot_sql(reader)}, e.prev_hash, e.hash FROM events e "
        "WHERE e.id BETWEEN ? AND ?"
    )
    params: list[Any] = [lo, hi]
    to_db = time_converter(reader.dialect)
    if since:
        sql, params = sql + " AND e.at >= ?", [*params, to_db(since)]
    if until:
        sql, params = sql + " AND e.at < ?", [*params, to_db(until)]
    if org_id:
        sql += " AND e.grant_id IN (SELECT g.id FROM grants g WHERE g.org_id = ?)"
        params = [*params, org_id]
    if connection:
        sql, params = sql + " AND e.connection = ?", [*params, connection]
    return reader.rows(sql + " ORDER BY e.id", params, binary=True)


def earlier_snapshots(
    reader: Reader, grant_ids: Sequence[int], before: int, ending: Sequence[str]
) -> list[tuple[Any, ...]]:
    """For each grant, its newest snapshot before event ``before`` and every event of a kind
    in ``ending`` after it: ``(grant_id, kind, snapshot payload or None)`` in id order."""
    if not grant_ids:
        return []
    ids = sorted(grant_ids)
    snapshot, kinds = _snapshot_sql(reader), ", ".join("?" for _ in ending)
    # The grants as one parameter keep the text constant (SQLite prepares it once).
    after = f"e.id >= n.id AND e.id < ? AND (e.id = n.id OR e.kind IN ({kinds}))"
    grants: str | list[int]
    if reader.dialect == "sqlite":
        wanted, grants = "SELECT value FROM json_each(?)", orjson.dumps(ids).decode()
        materialized = _MATERIALIZED
        tail = f"SELECT e.grant_id, e.kind, {snapshot} FROM newest n JOIN events e "
        tail += f"ON e.grant_id = n.grant_id AND {after} ORDER BY e.id"
    else:
        wanted, grants = "SELECT unnest(CAST(? AS bigint[]))", ids
        materialized = "MATERIALIZED "
        # Per grant over its index: as a join, without statistics, it hashed a scan of
        # the whole table (OFFSET 0 keeps the planner from flattening it into that join).
        tail = "SELECT x.grant_id, x.kind, x.snapshot FROM newest n CROSS JOIN LATERAL "
        tail += f"(SELECT e.id, e.grant_id, e.kind, {snapshot} AS snapshot FROM events e "
        tail += f"WHERE e.grant_id = n.grant_id AND {after} OFFSET 0) x ORDER BY x.id"
    # Each grant's events walked back from `before` to its newest snapshot (a row or two,
    # over an index in (grant_id, id) order; `max(id) … GROUP BY` reads all of a grant's
    # earlier events, and PostgreSQL without statistics planned it as a scan of the
    # table), materialised so the walk runs once a grant.
    sql = (
        f"WITH wanted(grant_id) AS ({wanted}), "
        f"newest AS {materialized}(SELECT w.grant_id, (SELECT e.id FROM events e "
        f"WHERE e.grant_id = w.grant_id AND e.id < ? AND {_has_snapshot('e')} "
        f"ORDER BY e.id DESC LIMIT 1) AS id FROM wanted w) {tail}"
    )
    params: tuple[Any, ...] = (grants, before, before, *ending)
    return reader.rows(sql, params, binary=True)


def grant_orgs(reader: Reader, grant_ids: Sequence[int]) -> dict[int, str]:
    """The org of each grant, from the grants table."""
    if not grant_ids:
        return {}
    marks = ", ".join("?" for _ in grant_ids)
    found = reader.rows(f"SELECT id, org_id FROM grants WHERE id IN ({marks})", list(grant_ids))
    return dict(found)


__all__ = [
    "SNAPSHOT_PREFIXES",
    "earlier_snapshots",
    "grant_orgs",
    "iso_from_db",
    "range_events",
    "time_from_db",
]


def id_bounds(
    session: Session, *, up_to: int, since: datetime | None, until: datetime | None
) -> tuple[int | None, int | None]:
    """The first and last event id worth reading: up to ``up_to``, at ``since`` or later and
    before ``until``."""
    e = EventRow
    wanted = [e.id <= up_to]
    if since:
        wanted.append(e.at >= since)
    if until:
        wanted.append(e.at < until)
    # Each on its own: SQLite finds a lone min() or max() with one seek, both in one read all.
    first = session.execute(select(func.min(e.id)).where(*wanted)).scalar()
    last = session.execute(select(func.max(e.id)).where(*wanted)).scalar()
    return first, last
