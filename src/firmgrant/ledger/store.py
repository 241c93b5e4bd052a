"""Writes of the sync job: one page of records per transaction, watermark included."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import ARRAY, ColumnElement, Engine, String, any_, bindparam, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from firmgrant.grant import MIRRORED_FIELDS, TIME_FIELDS, GrantRecord
from firmgrant.ledger import syncstate
from firmgrant.ledger._bulk import insert_rows, time_converter
from firmgrant.ledger.chain import NewEvent, append_events, lock_chain_head
from firmgrant.ledger.changes import actor, classify, our_revocation
from firmgrant.ledger.episodes import record_uses
from firmgrant.ledger.locks import planning_lock, single_worker_lock
from firmgrant.ledger.models import GrantRow, InvalidRecordRow, RevocationRow, SyncStateRow
from firmgrant.ledger.syncstate import SyncOutcome, SyncState
from firmgrant.ledger.work import release
from firmgrant.lifecycle import OPEN_STATES, EventKind, WorkState
from firmgrant.policy import revocation_landed
from firmgrant.timeutil import iso_z

if TYPE_CHECKING:  # the ledger needs no Salesforce client loaded (export, verify, grants)
    from firmgrant.salesforce.audit import AccessUse
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


class Ledger:
    """The ledger on one engine. Each public method is one transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)
        # SQLite has one writer: threads of one worker (several orgs synced at once) take
        # turns here rather than fail to upgrade a read transaction to a write.
        self._writes = threading.RLock() if engine.dialect.name == "sqlite" else nullcontext()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._writes, self.sessions.begin() as session:
            yield session

    def planning_lock(self) -> AbstractContextManager[bool]:
        """``True`` while this process may plan (see :mod:`firmgrant.ledger.locks`)."""
        return planning_lock(self.engine)

    def single_worker_lock(self) -> AbstractContextManager[None]:
        """Held for a worker's life: on SQLite a second worker refuses to start."""
        return single_worker_lock(self.engine)

    @contextmanager
    def appending(self) -> Iterator[Session]:
        """A transaction that will append events: it takes the chain head's lock first.

        Every appending transaction locks in that one order, so none holds a grant row the
        chain head's holder needs: an upsert locks its grant rows for update, and an event
        insert checks its grant's row (the foreign key) with a share lock. Taken last, the
        head's lock let a sync and another replica's revocation wait on each other.
        """
        with self._writes, self.sessions.begin() as session:
            lock_chain_head(session)
            yield session

    # -- sync state --------------------------------------------------------------------------
    def sync_state(self, connection: str, source: str) -> SyncState:
        with self.sessions() as session:
            return syncstate.read(session, [(connection, source)])[(connection, source)]

    def _state_row(self, session: Session, connection: str, source: str) -> SyncStateRow:
        row = session.get(SyncStateRow, (connection, source), with_for_update=True)
        if row is None:
            row = SyncStateRow(connection=connection, source=source)
            session.add(row)
        return row

    def record_sync_outcome(self, outcome: SyncOutcome) -> None:
        with self.transaction() as session:
            syncstate.record(session, [outcome])

    # -- one page ----------------------------------------------------------------------------
    def apply_page(
        self,
        connection: str,
        source: str,
        records: Sequence[GrantRecord],
        invalid: Sequence[InvalidRecord],
        *,
        now: datetime,
        seen_run: int | None = None,
        uses: Sequence[AccessUse] = (),
        cap: timedelta | None = None,
        newest: datetime | None = None,
    ) -> PageCounts:
        """Upsert a page of records, log what really changed, advance the watermark.

        The audit source also brings ``uses`` of Login-As access (judged with the vendor's
        ``cap``) and the ``newest`` row time it read (rows it skipped move the watermark too).
        All in one transaction: a crash loses or repeats nothing.
        """
        counts = PageCounts()
        by_id = {record.source_id: record for record in records}  # last one wins
        with self.appending() as session:
            bad_ids = [p.source_id for p in invalid if p.source_id]
            existing = self._existing(session, connection, [*by_id, *bad_ids])
            changed, upserts = classify(by_id, existing, counts)
            # Revocation rows before grant rows, as the revoke job locks them: no deadlock.
            ours = self._landed_revocations(
                session,
                {
                    grant_id: record
                    for kind, record, grant_id, _ in changed
                    if kind == EventKind.CUSTOMER_REVOKED and grant_id is not None
                },
                now,
            )
            new_ids = self._upsert(session, connection, upserts, now) if upserts else {}
            if new_ids is None:  # SQLite: the upsert returned nothing
                news = [r.source_id for _, r, grant_id, _ in changed if grant_id is None]
                new_ids = self._ids(session, connection, news)
            events = [
                self._event(
                    kind, connection, record, now, grant_id or new_ids[record.source_id], changes
                )
                if grant_id not in ours
                else our_revocation(connection, record, grant_id, now, ours[grant_id], changes)
                for kind, record, grant_id, changes in changed
            ]
            events += self._report_invalid(session, connection, invalid, existing, counts, now)
            if uses:
                assert cap is not None
                used = record_uses(session, connection, uses, cap, now)
                counts.used += sum(e.kind == EventKind.ACCESS_USED for e in used)
                counts.violations += sum(e.kind == EventKind.VIOLATION for e in used)
                events += used
            if seen_run is not None and (by_id or bad_ids):
                # A record that turned malformed is still in the org: not vanished.
                session.execute(
                    update(GrantRow)
                    .where(
                        GrantRow.connection == connection,
                        _source_id_in(session, [*by_id, *bad_ids]),
                    )
                    .values(seen_run=seen_run)
                )
            append_events(session, events)
            stamps = [r.modstamp for r in records] + [p.modstamp for p in invalid if p.modstamp]
            stamps += [newest] if newest is not None else []
            if stamps:
                state = self._state_row(session, connection, source)
                newest = max(stamps)
                if state.watermark is None or newest > state.watermark:
                    state.watermark = newest
        return counts

    def _report_invalid(
        self,
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
            if self._first_report(session, connection, problem, now):
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

    def mark_vanished(self, connection: str, seen_run: int, now: datetime) -> int:
        """After a full sync: grants the org no longer returns at all (purged, re-targeted)."""
        with self.appending() as session:
            gone = (
                session.execute(
                    select(GrantRow).where(
                        GrantRow.connection == connection,
                        GrantRow.deleted.is_(False),
                        (GrantRow.seen_run.is_(None)) | (GrantRow.seen_run != seen_run),
                    )
                )
                .scalars()
                .all()
            )
            for grant in gone:
                grant.deleted, grant.updated_at = True, now
            append_events(
                session,
                [
                    NewEvent(
                        kind=EventKind.VANISHED,
                        at=now,
                        connection=connection,
                        source_id=grant.source_id,
                        grant_id=grant.id,
                        reason="not returned by a full sync (purged or no longer for the vendor)",
                        payload={"deleted": True},
                    )
                    for grant in gone
                ],
            )
            return len(gone)

    # -- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _existing(
        session: Session, connection: str, source_ids: list[str]
    ) -> dict[str, tuple[int, dict[str, Any]]]:
        if not source_ids:
            return {}
        columns = [getattr(GrantRow, field) for field in MIRRORED_FIELDS]
        rows = session.execute(
            select(GrantRow.id, *columns).where(
                GrantRow.connection == connection, _source_id_in(session, source_ids)
            )
        )
        return {
            row.source_id: (row.id, {field: row[i + 1] for i, field in enumerate(MIRRORED_FIELDS)})
            for row in rows
        }

    @staticmethod
    def _ids(session: Session, connection: str, source_ids: list[str]) -> dict[str, int]:
        if not source_ids:
            return {}
        rows = session.execute(
            select(GrantRow.source_id, GrantRow.id).where(
                GrantRow.connection == connection, _source_id_in(session, source_ids)
            )
        )
        return dict(rows.all())  # rows are (source_id, id) tuples

    @staticmethod
    def _upsert(
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
            values = [*record, connection, now_db, now_db]
            for i in _TIME_POSITIONS:
                if values[i] is not None:
                    values[i] = to_db(values[i])
            rows.append(tuple(values))
        written = insert_rows(
            session,
            "grants",
            (*MIRRORED_FIELDS, "connection", "updated_at", "first_seen_at"),
            rows,
            conflict=("connection", "source_id"),
            update=(*MIRRORED_FIELDS, "updated_at"),
            returning=("source_id", "id"),
        )
        return None if written is None else dict(written)

    @staticmethod
    def _event(
        kind: EventKind,
        connection: str,
        record: GrantRecord,
        now: datetime,
        grant_id: int | None = None,
        changes: dict[str, list[Any]] | None = None,
    ) -> NewEvent:
        payload: dict[str, Any] = {"grant": record.snapshot()}
        if changes is not None:
            payload["changes"] = changes
        return NewEvent(
            kind=kind,
            at=now,
            connection=connection,
            source_id=record.source_id,
            grant_id=grant_id,
            actor=actor(kind, record),
            payload=payload,
        )

    @staticmethod
    def _landed_revocations(
        session: Session, revoked: dict[int, GrantRecord], now: datetime
    ) -> dict[int, RevocationRow]:
        """Of grants a sync finds revoked, those whose record carries an attempt of ours.

        A worker killed while its call was with Salesforce recorded no outcome; the record
        shows our reason and time. The revocation is firmgrant's: its row becomes
        ``landed`` (enforce then tells the grantor) and the change is recorded as ours.
        Returns those revocations by grant id.
        """
        if not revoked:
            return {}
        rows = session.execute(
            select(RevocationRow)
            .where(RevocationRow.grant_id.in_(list(revoked)))
            .order_by(RevocationRow.grant_id)  # the order the revoke job locks them in
            .with_for_update()
        ).scalars()
        ours: dict[int, RevocationRow] = {}
        for row in rows:
            record = revoked[row.grant_id]
            if (
                row.state in OPEN_STATES
                and row.lease_owner is not None  # an attempt went out, its outcome unknown
                and revocation_landed(
                    row.reason, row.attempted_at, record.revoke_reason, record.revoked_at
                )
            ):
                ours[row.grant_id] = row
                release(row, state=WorkState.LANDED, done_at=now, last_error=None)
        return ours

    @staticmethod
    def _first_report(
        session: Session, connection: str, problem: InvalidRecord, now: datetime
    ) -> bool:
        fingerprint = hashlib.sha256(
            f"{iso_z(problem.modstamp)}|{problem.reason}".encode()
        ).hexdigest()
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


def _source_id_in(session: Session, source_ids: list[str]) -> ColumnElement[bool]:
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
