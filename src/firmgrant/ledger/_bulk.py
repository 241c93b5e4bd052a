"""Bulk inserts through the driver: the sync's hot path, past SQLAlchemy's per-value binding.

SQLAlchemy's executemany runs every value of every row through its type processors and
builds a parameter dict per row; at 2,000 grants and 2,000 events a page that cost more
than the database itself. Here rows are plain tuples in column order and times are
converted once, the way :class:`~firmgrant.ledger.models.UTCDateTime` stores them, so
what the ORM reads back is identical.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy.orm import Session

if TYPE_CHECKING:
    import psycopg

from firmgrant.timeutil import iso_z, microseconds_text, utc_seconds_text

_PLACEHOLDER = {"sqlite": "?", "postgresql": "%s"}


def sqlite_time(value: datetime) -> str:
    """Fixed-width UTC text (``2026-05-20 20:49:32.000000``) that sorts like the time."""
    if value.tzinfo is not UTC:
        value = sqlite_aware(value)
    return f"{utc_seconds_text(value, ' ')}.{microseconds_text(value)}"


def stored_and_iso(value: datetime, dialect: str) -> tuple[Any, str]:
    """A time as this dialect stores it and as :func:`~firmgrant.timeutil.iso_z` writes it,
    its seconds formatted once (the sync writes one for every event of a page)."""
    if dialect != "sqlite":
        return _postgres_time(value), iso_z(value)
    if value.tzinfo is not UTC:
        value = sqlite_aware(value)
    seconds, micro = utc_seconds_text(value, " "), microseconds_text(value)
    fraction = f".{micro}" if value.microsecond else ""
    return f"{seconds}.{micro}", f"{seconds[:10]}T{seconds[11:]}{fraction}Z"


def sqlite_aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the ledger; use aware UTC datetimes")
    return value.astimezone(UTC)


def iso_from_db(value: str | datetime) -> str:
    """A stored time as :func:`~firmgrant.timeutil.iso_z` writes it, without parsing.

    SQLite hands back :func:`sqlite_time` text, PostgreSQL a datetime.
    """
    if isinstance(value, str):
        if len(value) == 26 and value[10] == " ":
            fraction = "" if value.endswith(".000000") else value[19:]
            return f"{value[:10]}T{value[11:19]}{fraction}Z"
        value = datetime.fromisoformat(value).replace(tzinfo=UTC)
    return iso_z(value)


def time_from_db(value: str | datetime) -> datetime:
    """A stored time as an aware UTC datetime (SQLite's text, PostgreSQL's datetime)."""
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _postgres_time(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the ledger; use aware UTC datetimes")
    return value


def time_converter(dialect: str) -> Callable[[datetime], Any]:
    """How a database of this dialect wants a time bound (non-``None`` values only)."""
    return sqlite_time if dialect == "sqlite" else _postgres_time


def insert_rows(
    session: Session,
    table: str,
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
    *,
    conflict: Sequence[str] = (),
    update: Sequence[str] = (),
    returning: Sequence[str] = (),
) -> list[tuple[Any, ...]] | None:
    """``INSERT`` (optionally ``ON CONFLICT … DO UPDATE``) of tuples, one executemany.

    An upsert on PostgreSQL gives back the ``returning`` columns of every row it wrote;
    elsewhere ``None`` (an executemany returns nothing): read them back if needed.
    Table and column names come from this package, never from input.
    """
    if not rows:
        return []
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return _copy_rows(
            session, table, columns, rows, conflict=conflict, update=update, returning=returning
        )
    mark = _PLACEHOLDER[dialect]
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(mark for _ in columns)})"
    if conflict:
        assignments = ", ".join(f"{name} = excluded.{name}" for name in update)
        sql += f" ON CONFLICT ({', '.join(conflict)}) DO UPDATE SET {assignments}"
    session.connection().exec_driver_sql(sql, list(rows))
    return None


def _copy_rows(
    session: Session,
    table: str,
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
    *,
    conflict: Sequence[str],
    update: Sequence[str],
    returning: Sequence[str],
) -> list[tuple[Any, ...]] | None:
    """PostgreSQL: ``COPY`` the rows in (an executemany of 2,000 rows, even pipelined, spent
    a third of an initial sync's time in psycopg); an upsert copies into a temporary staging
    table, then moves the rows with one ``INSERT … SELECT … ON CONFLICT … RETURNING``."""
    names = ", ".join(columns)
    target = table
    if conflict:
        target = f"_stage_{table}"
        session.connection().exec_driver_sql(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {target} ON COMMIT DELETE ROWS AS "
            f"SELECT {names} FROM {table} WITH NO DATA"
        )
    raw = cast("psycopg.Connection[Any]", session.connection().connection.driver_connection)
    with raw.cursor() as cursor:
        with cursor.copy(f"COPY {target} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        if not conflict:
            return None
        assignments = ", ".join(f"{name} = excluded.{name}" for name in update)
        cursor.execute(
            f"INSERT INTO {table} ({names}) SELECT {names} FROM {target} "
            f"ON CONFLICT ({', '.join(conflict)}) DO UPDATE SET {assignments}"
            + (f" RETURNING {', '.join(returning)}" if returning else "")
        )
        written = [tuple(row) for row in cursor.fetchall()] if returning else None
        cursor.execute(f"DELETE FROM {target}")  # a second upsert in this transaction
        return written
