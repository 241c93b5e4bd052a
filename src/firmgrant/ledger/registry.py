"""The connection registry's table: customer orgs, their state, and the leases that let
replicas share them.

A worker *claims* due orgs (``FOR UPDATE SKIP LOCKED`` on PostgreSQL: an org another
replica is claiming is skipped, not waited for), stamps them with its name and a lease, syncs
them, and records the outcome with the next time each is due. A replica killed mid-cycle
leaves leases that run out; another replica then takes those orgs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from firmgrant.errors import RegistryError
from firmgrant.ledger.models import OrgRow
from firmgrant.lifecycle import OrgState


def add(session: Session, rows: Sequence[OrgRow]) -> None:
    """Register these orgs; none if any name or org id is taken (the caller's transaction)."""
    names = [row.name for row in rows]
    org_ids = [row.org_id[:15] for row in rows if row.org_id]
    # Org Ids compare on their first 15 characters: the 18 only adds a checksum.
    taken = session.execute(
        select(OrgRow.name, OrgRow.org_id).where(
            or_(OrgRow.name.in_(names), func.substr(OrgRow.org_id, 1, 15).in_(org_ids))
        )
    ).all()
    known = {org_id[:15] for _, org_id in taken if org_id}
    for row in rows:
        if row.name in {name for name, _ in taken}:
            raise RegistryError(f"org {row.name!r} is already registered")
        if row.org_id and row.org_id[:15] in known:
            raise RegistryError(f"org id {row.org_id} is already registered")
    if len(set(org_ids)) != len(org_ids):
        raise RegistryError("the same org id is given twice")
    session.add_all(rows)


def natural(name: str) -> list[int | str]:
    """The order orgs are listed in: ``org2`` before ``org10`` (runs of digits as numbers)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def every(session: Session) -> list[OrgRow]:
    return list(session.execute(select(OrgRow).order_by(OrgRow.name)).scalars())


def find(session: Session, name: str, *, lock: bool = False) -> OrgRow:
    row = session.get(OrgRow, name, with_for_update=lock)
    if row is None:
        raise RegistryError(f"no org {name!r} in the registry (see `firmgrant orgs list`)")
    return row


def remove(session: Session, name: str) -> None:
    session.delete(find(session, name, lock=True))


def _due(now: datetime, due_by: datetime) -> tuple[ColumnElement[bool], ...]:
    return (
        OrgRow.enabled.is_(True),
        OrgRow.next_sync_at <= due_by,
        or_(OrgRow.lease_until.is_(None), OrgRow.lease_until < now),
    )


def count_due(session: Session, now: datetime) -> int:
    """Enabled orgs due for a sync and not leased (a progress display's total)."""
    return int(session.execute(select(func.count()).where(*_due(now, now))).scalar_one())


def claim(
    session: Session,
    *,
    owner: str,
    now: datetime,
    lease: timedelta,
    limit: int,
    due_by: datetime | None = None,
) -> list[OrgRow]:
    """Up to ``limit`` enabled orgs due for a sync by ``due_by`` (default ``now``) and not
    leased; the caller commits."""
    rows = list(
        session.execute(
            select(OrgRow)
            .where(*_due(now, due_by or now))
            .order_by(OrgRow.next_sync_at, OrgRow.name)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    for row in rows:
        row.lease_owner, row.lease_until = owner, now + lease
    return rows


@dataclass(frozen=True)
class OrgOutcome:
    """How one org's sync went, as the registry keeps it."""

    name: str
    state: OrgState
    error: str | None
    # The next due time from the org's failures in a row (its backoff).
    next_sync_at: Callable[[int], datetime]
    api_usage: tuple[int, int] | None
    org_id: str | None


def record(
    session: Session, owner: str | None, now: datetime, outcomes: Sequence[OrgOutcome]
) -> list[str]:
    """Record these orgs' outcomes (rows locked in name order); the names whose lease was lost
    to another worker, left to the new holder (with ``owner`` ``None``: the orgs a worker
    holds, and names not in the registry)."""
    names = sorted(o.name for o in outcomes)
    rows = {
        row.name: row
        for row in session.execute(
            select(OrgRow).where(OrgRow.name.in_(names)).order_by(OrgRow.name).with_for_update()
        ).scalars()
    }
    lost = []
    for outcome in outcomes:
        row = rows.get(outcome.name)
        if row is None or row.lease_owner != owner:
            lost.append(outcome.name)
            continue
        # An org an operator disabled stays so, whatever a sync asked by hand found.
        row.state = outcome.state if row.enabled else OrgState.DISABLED
        row.last_error = outcome.error
        # An unreadable trail is read on schedule (its rows say what to fix): no backoff.
        failing = outcome.state not in (OrgState.OK, OrgState.UNREADABLE)
        row.failures = row.failures + 1 if failing else 0
        row.last_sync_at, row.next_sync_at = now, outcome.next_sync_at(row.failures)
        row.lease_owner = row.lease_until = None
        if outcome.api_usage is not None:
            row.api_used, row.api_limit = outcome.api_usage
        if outcome.org_id and not row.org_id:
            row.org_id = outcome.org_id
    return lost
