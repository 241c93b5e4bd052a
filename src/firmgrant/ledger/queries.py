"""What support and compliance read: grants with their status, one grant's history."""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, select
from sqlalchemy.orm import Session

from firmgrant.errors import GrantNotFound
from firmgrant.ledger.models import EventRow, GrantRow, OutboxRow, RevocationRow
from firmgrant.lifecycle import (
    DEFAULT_EXPIRING_WITHIN,
    USABLE,
    GrantStatus,
    RevocationStatus,
    SalesforceStatus,
    ends_after_sql,
    ends_at,
    ends_by_sql,
    grant_status_sql,
    revocation_status,
)
from firmgrant.timeutil import iso_z

STATUS_CHOICES = ("all", *(status.value for status in GrantStatus))


def ends_by(moment: datetime, cap: timedelta) -> ColumnElement[bool]:
    """SQL: a grant's access ends at or before ``moment`` (see ``lifecycle.ends_by_sql``)."""
    return ends_by_sql(GrantRow.granted_at, GrantRow.expires_at, moment, cap)


def ends_after(moment: datetime, cap: timedelta) -> ColumnElement[bool]:
    """SQL: a grant's access lasts past ``moment`` (see ``lifecycle.ends_after_sql``)."""
    return ends_after_sql(GrantRow.granted_at, GrantRow.expires_at, moment, cap)


def status_expression(
    now: datetime, expiring_within: timedelta, max_duration: timedelta
) -> ColumnElement[str]:
    """A grant's status, evaluated by the database (``lifecycle.grant_status_sql``)."""
    return grant_status_sql(
        deleted=GrantRow.deleted,
        via_login_as=GrantRow.via_login_as,
        sf_status=GrantRow.sf_status,
        granted_at=GrantRow.granted_at,
        expires_at=GrantRow.expires_at,
        now=now,
        cap=max_duration,
        expiring_within=expiring_within,
    )


@dataclass(frozen=True)
class GrantView:
    id: int
    connection: str
    org_id: str
    org_name: str | None
    grantor_username: str | None
    grantor_email: str | None
    grantee: str
    granted_at: datetime
    expires_at: datetime
    status: str
    via_login_as: bool
    login_as_user: str | None
    source_id: str
    revoked_at: datetime | None
    revoke_reason: str | None
    # When access really ends: Salesforce's expiry, or the vendor's cap if sooner. What every
    # screen shows, sorts and filters on (``lifecycle.ends_at``).
    ends_at: datetime

    def as_json(self) -> dict[str, Any]:
        """The keys of ``grants --format json`` (DESIGN), times in ISO 8601 UTC with ``Z``."""
        return {
            key: iso_z(value) if isinstance(value, datetime) else value
            for key, value in self.__dict__.items()
        }


JSON_KEYS = tuple(GrantView.__dataclass_fields__)
# What a query reads of the grants table (the status is computed, the end derived).
STORED_KEYS = tuple(name for name in JSON_KEYS if name not in ("status", "ends_at"))


def grant_view(row: Any, cap: timedelta) -> GrantView:
    """A grant as read (a row of STORED_KEYS and ``status``), with its real end."""
    values = row._asdict()
    return GrantView(**values, ends_at=ends_at(values["granted_at"], values["expires_at"], cap))


def outlasts_cap(cap: timedelta) -> ColumnElement[bool]:
    """SQL twin of ``lifecycle.outlasts_cap``: the cap ends this grant's access (the index
    ix_grants_lasts finds these; tests/test_lifecycle_rule.py holds the twins together)."""
    # Bounded on both sides: before a table's first ANALYZE, PostgreSQL guesses a third of the
    # rows pass a one-sided range (and scans the table), a two-sided one 0.5 % (the index).
    return GrantRow.lasts_seconds.between(_whole_seconds(cap) + 1, _LONGEST)


_LONGEST = 10**12  # seconds: more than any grant lasts (30,000 years)


def _whole_seconds(cap: timedelta) -> int:
    """The cap as an integer (for whole-second lengths, ``> cap`` is ``> floor(cap)``): a float
    would make PostgreSQL cast the column, and its index no longer serve."""
    return math.floor(cap.total_seconds())


def by_end(
    session: Session,
    query: Select[*tuple[Any, ...]],
    cap: timedelta,
    *,
    descending: bool = False,
    limit: int | None = None,
    offset: int = 0,
) -> Iterator[Row[*tuple[Any, ...]]]:
    """The rows of ``query`` (reading GrantRow's id, granted_at and expires_at) in the order
    their access ends (``lifecycle.ends_at``), ties by id.

    Sorting by the capped end itself sorted every matching grant for each page (list p95
    48 -> 160 ms over 100,000). Instead, two queries an index can read in order: the grants
    Salesforce's expiry ends, by ``expires_at`` (ix_grants_ending), and the few the cap ends
    at ``granted_at + cap``, by ``granted_at`` (ix_grants_lasts); then the two merge.
    """
    wanted = None if limit is None else offset + limit
    # "+ 0": the index on lasts_seconds must not serve this side, the one on expires_at does.
    within = query.where((GrantRow.lasts_seconds + 0) <= _whole_seconds(cap))
    capped = query.where(outlasts_cap(cap))

    def ordered(part: Select[*tuple[Any, ...]], column: Any) -> Iterator[Row[*tuple[Any, ...]]]:
        keys = (column, GrantRow.id)
        part = part.order_by(*(k.desc() if descending else k.asc() for k in keys))
        if wanted is not None:
            part = part.limit(wanted)
        return iter(session.execute(part.execution_options(yield_per=1000)))

    merged = heapq.merge(
        ordered(within, GrantRow.expires_at), ordered(capped, GrantRow.granted_at),
        key=lambda row: (ends_at(row.granted_at, row.expires_at, cap), row.id),
        reverse=descending,
    )  # fmt: skip
    return islice(merged, offset, wanted)


def list_grants(
    session: Session,
    *,
    now: datetime,
    status: str = GrantStatus.ACTIVE,
    org_id: str | None = None,
    connection: str | None = None,
    expiring_within: timedelta | None = None,
    max_duration: timedelta,
) -> Iterator[GrantView]:
    """Grants ordered by expiry. ``active`` means usable now, so it includes ``expiring``."""
    window = expiring_within if expiring_within is not None else DEFAULT_EXPIRING_WITHIN
    status_col = status_expression(now, window, max_duration).label("status")
    columns = [getattr(GrantRow, name) for name in STORED_KEYS]
    query = select(*columns, status_col)
    if status == GrantStatus.ACTIVE.value:
        query = query.where(status_col.in_([s.value for s in USABLE]))
    elif status != "all":
        query = query.where(status_col == status)
    if org_id:
        query = query.where(GrantRow.org_id == org_id)
    if connection:
        query = query.where(GrantRow.connection == connection)
    if expiring_within is not None:
        query = query.where(ends_by(now + expiring_within, max_duration))
    for row in by_end(session, query, max_duration):
        yield grant_view(row, max_duration)


@dataclass(frozen=True)
class EventView:
    id: int
    at: datetime  # when firmgrant recorded it
    kind: str
    actor: str
    reason: str | None
    payload: dict[str, Any]
    occurred_at: datetime  # when it happened (what screens lead with)

    def noticed_later(self, poll: timedelta) -> timedelta | None:
        """How long after it happened firmgrant recorded it, where that is more than a poll
        (a trail read late, a first sync over old history); else ``None``."""
        late = self.at - self.occurred_at
        return late if late > poll else None


def find_grant(
    session: Session, grant_ref: str, *, now: datetime, max_duration: timedelta
) -> GrantView:
    """By ledger id (``42``) or Salesforce Id (``a0B…``)."""
    status_col = status_expression(now, DEFAULT_EXPIRING_WITHIN, max_duration).label("status")
    columns = [getattr(GrantRow, name) for name in STORED_KEYS]
    query = select(*columns, status_col)
    if grant_ref.isdigit():
        query = query.where(GrantRow.id == int(grant_ref))
    else:
        query = query.where(GrantRow.source_id == grant_ref)
    rows = session.execute(query.limit(2)).all()
    if not rows:
        raise GrantNotFound(f"no grant {grant_ref!r} in the ledger")
    if len(rows) > 1:
        raise GrantNotFound(f"{grant_ref!r} names grants in several connections: use the ledger id")
    return grant_view(rows[0], max_duration)


def grant_events(session: Session, grant_id: int) -> list[EventView]:
    rows = session.execute(
        select(EventRow).where(EventRow.grant_id == grant_id).order_by(EventRow.id)
    ).scalars()
    return [
        EventView(
            e.id, e.at, e.kind, e.actor, e.reason, json.loads(e.payload), e.occurred_at or e.at
        )
        for e in rows
    ]


def events_after(session: Session, event_id: int) -> list[EventRow]:
    """The log's events after this id, oldest first."""
    return list(
        session.execute(
            select(EventRow).where(EventRow.id > event_id).order_by(EventRow.id)
        ).scalars()
    )


@dataclass(frozen=True)
class Lifecycle:
    """What firmgrant is doing about a grant: its revocation and its emails."""

    revocation: str | None  # a RevocationStatus
    revocation_reason: str | None
    revocation_error: str | None
    emails: list[tuple[str, datetime, str, str | None]]  # kind, due, state, last error
    revocation_note: str | None = None  # what was done: "1 Login-As session(s) … ended"

    @property
    def still_granted_in_setup(self) -> bool:
        """Support's sessions were ended (or could not be), and the grant still stands in
        the customer's Setup: only the customer can revoke it."""
        return self.revocation in (
            RevocationStatus.SESSIONS_ENDED,
            RevocationStatus.SESSIONS_NOT_ENDED,
        )

    def revocation_words(self) -> str | None:
        """The revocation in a line, as ``show`` and the dashboard say it."""
        if self.revocation is None:
            return None
        words = str(self.revocation)
        detail = self.revocation_error or self.revocation_note
        if detail and self.revocation in _SAID_WITH_DETAIL:
            words += f" ({detail})"
        if self.still_granted_in_setup:
            words += ": still granted in Setup until the customer revokes it"
        return words


_SAID_WITH_DETAIL = (
    RevocationStatus.REVOKE_FAILED,
    RevocationStatus.SESSIONS_ENDED,
    RevocationStatus.SESSIONS_NOT_ENDED,
)


def grant_lifecycle(session: Session, grant_id: int) -> Lifecycle:
    revocation = session.get(RevocationRow, grant_id)
    emails = [
        (row.kind, row.due_at, row.state, row.last_error)
        for row in session.execute(
            select(OutboxRow).where(OutboxRow.grant_id == grant_id).order_by(OutboxRow.due_at)
        ).scalars()
    ]
    if revocation is None:
        return Lifecycle(None, None, None, emails)
    grant = session.get(GrantRow, grant_id)
    revoked = grant is not None and grant.sf_status == SalesforceStatus.REVOKED
    return Lifecycle(
        revocation_status(revocation.state, revocation.outcome, revoked),
        revocation.reason,
        revocation.last_error,
        emails,
        revocation.note,
    )
