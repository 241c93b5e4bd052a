"""The ledger's face for the sync job: one page of records per transaction, watermark
included (the writes themselves: :mod:`~firmgrant.ledger.pages`, :mod:`~firmgrant.ledger.trail`)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from firmgrant.grant import GrantRecord
from firmgrant.ledger import syncstate
from firmgrant.ledger.chain import NewEvent, append_events, lock_chain_head
from firmgrant.ledger.changes import actor, classify, occurred_at, our_revocation
from firmgrant.ledger.locks import planning_lock, single_worker_lock
from firmgrant.ledger.models import GrantRow, RevocationRow
from firmgrant.ledger.pages import (
    PageCounts,
    advance,
    existing,
    ids_of,
    report_invalid,
    source_id_in,
    upsert,
)
from firmgrant.ledger.syncstate import SyncOutcome, SyncState
from firmgrant.ledger.work import release
from firmgrant.lifecycle import OPEN_STATES, EventKind, RevocationOutcome, WorkState
from firmgrant.policy import revocation_landed

if TYPE_CHECKING:  # the ledger needs no Salesforce client loaded (export, verify, grants)
    from firmgrant.ledger.trail import TrailPage
    from firmgrant.salesforce.dates import OrgProfile
    from firmgrant.salesforce.records import InvalidRecord


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
    ) -> PageCounts:
        """Upsert a page of records, log what really changed, advance the watermark.

        All in one transaction: a crash loses or repeats nothing.
        """
        counts = PageCounts()
        by_id = {record.source_id: record for record in records}  # last one wins
        with self.appending() as session:
            bad_ids = [p.source_id for p in invalid if p.source_id]
            known = existing(session, connection, [*by_id, *bad_ids])
            changed, upserts = classify(by_id, known, counts)
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
            new_ids = upsert(session, connection, upserts, now) if upserts else {}
            if new_ids is None:  # SQLite: the upsert returned nothing
                news = [r.source_id for _, r, grant_id, _ in changed if grant_id is None]
                new_ids = ids_of(session, connection, news)
            events = [
                self._event(
                    kind, connection, record, now, grant_id or new_ids[record.source_id], changes
                )
                if grant_id not in ours
                else our_revocation(connection, record, grant_id, now, ours[grant_id], changes)
                for kind, record, grant_id, changes in changed
            ]
            events += report_invalid(session, connection, invalid, known, counts, now)
            if seen_run is not None and (by_id or bad_ids):
                # A record that turned malformed is still in the org: not vanished.
                session.execute(
                    update(GrantRow)
                    .where(
                        GrantRow.connection == connection,
                        source_id_in(session, [*by_id, *bad_ids]),
                    )
                    .values(seen_run=seen_run)
                )
            append_events(session, events)
            stamps = [r.modstamp for r in records] + [p.modstamp for p in invalid if p.modstamp]
            advance(session, connection, source, max(stamps, default=None))
        return counts

    def apply_trail_page(
        self,
        connection: str,
        source: str,
        page: TrailPage,
        invalid: Sequence[InvalidRecord],
        *,
        now: datetime,
        cap: timedelta,
        newest: datetime | None,
    ) -> PageCounts:
        """Apply a page of an org's audit trail (:mod:`firmgrant.ledger.trail`), report its
        unreadable rows once, and advance the watermark to the ``newest`` row read (rows of
        others move it too). One transaction: a crash loses or repeats nothing."""
        from firmgrant.ledger import trail  # the audit source's: loads its parser

        counts = PageCounts()
        with self.appending() as session:

            def write(records: list[GrantRecord]) -> dict[str, int]:
                ids = upsert(session, connection, records, now)
                if ids is None:  # SQLite: the upsert returned nothing
                    ids = ids_of(session, connection, [r.source_id for r in records])
                return ids

            events = trail.apply(
                session, connection, page, now=now, cap=cap, counts=counts, upsert=write
            )
            bad = [p.source_id for p in invalid if p.source_id]
            known = existing(session, connection, bad)
            events += report_invalid(session, connection, invalid, known, counts, now)
            append_events(session, events)
            advance(session, connection, source, newest)
        return counts

    def trail_news(self, connection: str, row_ids: Sequence[str], use_ids: Sequence[str]) -> bool:
        """Whether a page read holds a trail row or a use not recorded yet (a read-only
        look, so a page re-read in the overlap costs no write)."""
        from firmgrant.ledger import trail

        with self.sessions() as session:
            known = trail.known_row_ids(session, connection, row_ids)
            uses = trail.known_use_ids(session, connection, use_ids)
        return len(known) < len(set(row_ids)) or len(uses) < len(set(use_ids))

    def known_trail_rows(self, connection: str, row_ids: Sequence[str]) -> set[str]:
        """Which of these trail rows are applied already (read-only)."""
        from firmgrant.ledger import trail

        with self.sessions() as session:
            return trail.known_row_ids(session, connection, row_ids)

    # -- what audit orgs told of themselves ---------------------------------------------------
    def org_profile(self, connection: str) -> OrgProfile | None:
        from firmgrant.ledger import profiles

        with self.sessions() as session:
            return profiles.read_profile(session, connection)

    def keep_org_profile(self, connection: str, profile: OrgProfile, now: datetime) -> None:
        from firmgrant.ledger import profiles

        with self.transaction() as session:
            profiles.keep_profile(session, connection, profile, now)

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
            occurred_at=occurred_at(kind, record),
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
                row.outcome = RevocationOutcome.REVOKED
        return ours
