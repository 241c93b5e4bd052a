"""The outbox table, as the jobs and the demo read and write it.

One row per email, unique per (grant, kind, due time): the key that makes queueing
idempotent. Leases on rows are :mod:`firmgrant.ledger.work`'s.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import not_, or_, select
from sqlalchemy.orm import Session

from firmgrant.ledger.models import GrantRow, OutboxRow, RevocationRow
from firmgrant.ledger.queries import ends_by
from firmgrant.ledger.work import claim, release
from firmgrant.ledger.work import count_due as _count_due
from firmgrant.lifecycle import (
    OPEN_STATES,
    Channel,
    EmailKind,
    NoticeKind,
    SalesforceStatus,
    WorkState,
)

Key = tuple[int, EmailKind, datetime]


def keys(session: Session, kind: EmailKind, grant_ids: Iterable[int]) -> set[Key]:
    """The (grant, kind, due) keys already in the outbox for these grants."""
    return {
        (grant_id, kind, due_at)
        for grant_id, due_at in session.execute(
            select(OutboxRow.grant_id, OutboxRow.due_at).where(
                OutboxRow.kind == kind,
                OutboxRow.channel == Channel.EMAIL,
                OutboxRow.grant_id.in_(list(grant_ids)),
            )
        )
    }


def add(
    session: Session,
    *,
    grant_id: int,
    kind: EmailKind | NoticeKind,
    due_at: datetime,
    offset_seconds: int | None,
    recipients: list[str],
    message_id: str,
    now: datetime,
    channel: Channel = Channel.EMAIL,
) -> None:
    """Queue one email or notice (the caller checked its key is new)."""
    session.add(
        OutboxRow(
            grant_id=grant_id,
            kind=kind,
            due_at=due_at,
            channel=channel,
            offset_seconds=offset_seconds,
            recipients=json.dumps(recipients),
            message_id=message_id,
            state=WorkState.PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )


def ending_within(
    session: Session, now: datetime, horizon: timedelta, cap: timedelta
) -> list[GrantRow]:
    """Live, valid grants whose access ends after ``now`` but within ``horizon``: the ones
    a reminder may be due for (``policy.reminder_due`` decides)."""
    return list(
        session.execute(
            select(GrantRow).where(
                GrantRow.sf_status == SalesforceStatus.ACTIVE,
                GrantRow.deleted.is_(False),
                GrantRow.via_login_as.is_(False),
                not_(ends_by(now, cap)),
                ends_by(now + horizon, cap),
            )
        ).scalars()
    )


def open_of_kind(
    session: Session, kind: EmailKind, now: datetime
) -> list[tuple[OutboxRow, GrantRow]]:
    """Unleased, unsent emails of this kind, with their grants."""
    return [
        (row, grant)
        for row, grant in session.execute(
            select(OutboxRow, GrantRow)
            .join(GrantRow, GrantRow.id == OutboxRow.grant_id)
            .where(
                OutboxRow.kind == kind,
                OutboxRow.state.in_(OPEN_STATES),
                or_(OutboxRow.lease_until.is_(None), OutboxRow.lease_until < now),
            )
        )
    ]


def claim_due(
    session: Session, *, now: datetime, owner: str, lease: timedelta, limit: int
) -> list[tuple[int, bool]]:
    """Lease up to ``limit`` due emails: their ids, each with ``unsure`` (see ``work.claim``)."""
    return [
        (row.id, unsure)
        for row, unsure in claim(session, OutboxRow, now=now, owner=owner, lease=lease, limit=limit)
    ]


def count_due(session: Session, now: datetime) -> int:
    """Emails and notices a dispatch would send now."""
    return _count_due(session, OutboxRow, now)


def give_back(session: Session, row_ids: list[int], owner: str) -> None:
    """Leased emails this worker will not try after all: due again at once, no attempt counted."""
    for row_id in row_ids:
        row = session.get(OutboxRow, row_id)
        if row is not None and row.lease_owner == owner:
            row.attempts -= 1
            release(row)


def with_context(
    session: Session, row_id: int, *, lock: bool = False
) -> tuple[OutboxRow, GrantRow, RevocationRow | None]:
    """An email row (locked if asked), its grant, and the grant's revocation if any."""
    row = session.get(OutboxRow, row_id, with_for_update=lock)
    assert row is not None, f"outbox row {row_id} vanished"  # rows are never deleted
    grant = session.get(GrantRow, row.grant_id)
    assert grant is not None
    return row, grant, session.get(RevocationRow, row.grant_id)


def listing(session: Session) -> list[tuple[str, str, str | None, str | None]]:
    """Every email, oldest first: kind, state, the org's name and the grantor's address."""
    return [
        (kind, state, org_name, email)
        for kind, state, org_name, email in session.execute(
            select(OutboxRow.kind, OutboxRow.state, GrantRow.org_name, GrantRow.grantor_email)
            .join(GrantRow, GrantRow.id == OutboxRow.grant_id)
            .order_by(OutboxRow.id)
        )
    ]
