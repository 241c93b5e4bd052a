"""What a page of any source writes: grants upserted, malformed records reported once, the
watermark moved forward; and the counts a sync reports. Functions over the caller's session
(one transaction a page, :class:`~firmgrant.ledger.store.Ledger`'s)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import ARRAY, ColumnElement, String, any_, bindparam, func, select
from sqlalchemy.orm import Session

from firmgrant.grant import MIRRORED_FIELDS, TIME_FIELDS, GrantRecord, search_text
from firmgrant.ledger._bulk import insert_rows, time_converter
from firmgrant.ledger.chain import NewEvent
from firmgrant.ledger.models import GrantRow, InvalidRecordRow, SyncStateRow
from firmgrant.lifecycle import EventKind, lasts_seconds
from firmgrant.timeutil import iso_z

if TYPE_CHECKING:
    from firmgrant.salesforce.records import InvalidRecord

# A modstamp-only difference (a touch with nothing we mirror changed) is not a change.
_TIME_POSITIONS = tuple(MIRRORED_FIELDS.index(name) for name in TIME_FIELDS)


@dataclass
class PageCounts:
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    invalid: int = 0
    rejected: int = 0  # newly seen grants made through a Login-As session
    used: int = 0  # uses of Login-As access by support under a valid grant (audit source)
    violations: int = 0  # uses with no valid grant at that moment
    new_invalid: list[InvalidRecord] = field(default_factory=list)  # reported for the first time

    def __iadd__(self, other: PageCounts) -> PageCounts:
        self.inserted += other.inserted
        self.updated += other.updated
        self.deleted += other.deleted
        self.invalid += other.invalid
        self.rejected += other.rejected
        self.used += other.used
        self.violations += other.violations
        self.new_invalid += other.new_invalid
        return self


def existing(
    session: Session, connection: str, source_ids: list[str]
) -> dict[str, tuple[int, dict[str, Any]]]:
    if not source_ids:
        return {}
    columns = [getattr(GrantRow, field) for field in MIRRORED_FIELDS]
    rows = session.execute(
        select(GrantRow.id, *columns).where(
            GrantRow.connection == connection, source_id_in(session, source_ids)
        )
    )
    return {
        row.source_id: (row.id, {field: row[i + 1] for i, field in enumerate(MIRRORED_FIELDS)})
        for row in rows
    }


def ids_of(session: Session, connection: str, source_ids: list[str]) -> dict[str, int]:
    if not source_ids:
        return {}
    rows = session.execute(
        select(GrantRow.source_id, GrantRow.id).where(
            GrantRow.connection == connection, source_id_in(session, source_ids)
        )
    )
    return dict(rows.all())  # rows are (source_id, id) tuples


# What the ledger derives from each record, written with it: what search matches, how long
# access lasts (whether the vendor's cap ends it).
_DERIVED = ("search_text", "lasts_seconds")


def upsert(
    session: Session, connection: str, records: list[GrantRecord], now: datetime
) -> dict[str, int] | None:
    """One ``INSERT … ON CONFLICT DO UPDATE``, executed for all the page's new and changed
    grants at once: their ids by source id where the database hands them back (PostgreSQL),
    else ``None``.

    ``first_seen_at`` is written on insert only: the conflict branch leaves it alone.
    On SQLite an executemany returns nothing and one indexed SELECT finds the new ids; on
    PostgreSQL the staging table's one ``INSERT … SELECT`` returns them.
    """
    to_db = time_converter(session.get_bind().dialect.name)
    now_db = to_db(now)
    rows = []
    for record in records:
        lasts = lasts_seconds(record.granted_at, record.expires_at)
        values = [*record, connection, now_db, now_db, search_text(record), lasts]
        for i in _TIME_POSITIONS:
            if values[i] is not None:
                values[i] = to_db(values[i])
        rows.append(tuple(values))
    written = insert_rows(
        session,
        "grants",
        (*MIRRORED_FIELDS, "connection", "updated_at", "first_seen_at", *_DERIVED),
        rows,
        conflict=("connection", "source_id"),
        update=(*MIRRORED_FIELDS, "updated_at", *_DERIVED),
        returning=("source_id", "id"),
    )
    return None if written is None else dict(written)


def report_invalid(
    session: Session,
    connection: str,
    invalid: Sequence[InvalidRecord],
    existing: dict[str, tuple[int, dict[str, Any]]],
    counts: PageCounts,
    now: datetime,
) -> list[NewEvent]:
    """An ``invalid`` event for each malformed record not reported in this shape before."""
    events = []
    for problem in invalid:
        if first_report(session, connection, problem, now):
            counts.invalid += 1
            counts.new_invalid.append(problem)
            grant = existing.get(problem.key)
            events.append(
                NewEvent(
                    kind=EventKind.INVALID,
                    at=now,
                    connection=connection,
                    source_id=problem.key,
                    grant_id=grant[0] if grant else None,
                    reason=problem.reason,
                    payload={"modstamp": iso_z(problem.modstamp)},
                )
            )
    return events


def first_report(session: Session, connection: str, problem: InvalidRecord, now: datetime) -> bool:
    fingerprint = hashlib.sha256(f"{iso_z(problem.modstamp)}|{problem.reason}".encode()).hexdigest()
    key = (connection, problem.key, fingerprint)
    if session.get(InvalidRecordRow, key) is not None:
        return False
    session.add(
        InvalidRecordRow(
            connection=connection,
            record_key=problem.key,
            fingerprint=fingerprint,
            reason=problem.reason,
            first_seen_at=now,
        )
    )
    return True


def state_row(session: Session, connection: str, source: str) -> SyncStateRow:
    row = session.get(SyncStateRow, (connection, source), with_for_update=True)
    if row is None:
        row = SyncStateRow(connection=connection, source=source)
        session.add(row)
    return row


def advance(session: Session, connection: str, source: str, newest: datetime | None) -> None:
    """The watermark moves forward to ``newest``, never back."""
    if newest is None:
        return
    state = state_row(session, connection, source)
    if state.watermark is None or newest > state.watermark:
        state.watermark = newest


def source_id_in(session: Session, source_ids: list[str]) -> ColumnElement[bool]:
    """``grants.source_id IN (…)`` with the page's Ids bound as one value.

    A plain ``in_`` binds 2,000 values that SQLAlchemy expands into the statement and the
    database parses again, every page. One JSON array (SQLite's ``json_each``) or one
    array (PostgreSQL's ``= ANY``) keeps the statement cached; both still use the
    (connection, source_id) index.
    """
    if session.get_bind().dialect.name == "sqlite":
        ids = func.json_each(orjson.dumps(source_ids).decode()).table_valued("value")
        return GrantRow.source_id.in_(select(ids.c.value))
    return GrantRow.source_id == any_(bindparam("source_ids", source_ids, ARRAY(String)))
