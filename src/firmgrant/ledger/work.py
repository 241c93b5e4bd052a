"""Leases on revocations and outbox rows, so replicas never work on the same row at once.

A worker *claims* due rows in a short transaction (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL: a row another replica is claiming is skipped, not waited for), stamps them with
its name and a lease expiry, and counts the attempt. It then does the slow part (Salesforce,
SMTP) outside any transaction and records the outcome. A worker killed in between leaves a
lease that expires; the next claimer finds the old lease still stamped on the row (an outcome
clears it) and knows that attempt's result is unknown: it checks before acting again.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from firmgrant.ledger.models import OutboxRow, RevocationRow
from firmgrant.lifecycle import OPEN_STATES

Work = TypeVar("Work", RevocationRow, OutboxRow)


def worker_name() -> str:
    """``host:pid:random``: unique per process, readable in the ledger."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _due(model: type[Work], now: datetime) -> tuple[ColumnElement[bool], ...]:
    """Open, due and not leased to a live worker: what a claim takes."""
    return (
        model.state.in_(OPEN_STATES),
        model.next_attempt_at <= now,
        or_(model.lease_until.is_(None), model.lease_until < now),
    )


def count_due(session: Session, model: type[Work], now: datetime) -> int:
    """How many rows a claim could take now (a progress display's total)."""
    return int(session.execute(select(func.count()).where(*_due(model, now))).scalar_one())


def claim(
    session: Session,
    model: type[Work],
    *,
    now: datetime,
    owner: str,
    lease: timedelta,
    limit: int,
    where: Sequence[ColumnElement[bool]] = (),
) -> list[tuple[Work, bool]]:
    """Take up to ``limit`` due, unleased rows; the caller's transaction commits the lease.

    Each row comes with ``unsure``: an earlier attempt started and never recorded an outcome.
    """
    query = (
        select(model)
        .where(*_due(model, now), *where)
        .order_by(model.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    claimed = []
    for row in session.execute(query).scalars():
        claimed.append((row, row.lease_owner is not None))
        row.lease_owner, row.lease_until = owner, now + lease
        row.attempts += 1
    return claimed


def release(row: RevocationRow | OutboxRow, **values: Any) -> None:
    row.lease_owner = row.lease_until = None
    for key, value in values.items():
        setattr(row, key, value)
