"""What the ledger holds, counted, for checks made from outside (the chaos harness in bench/):
which Salesforce grants it knows, the work it has not finished, and repeated revocations."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from firmgrant.ledger.models import EventRow, GrantRow, OutboxRow, RevocationRow
from firmgrant.lifecycle import OPEN_STATES, EventKind, WorkState


def source_ids(session: Session) -> set[tuple[str, str]]:
    """Every grant as (connection, Salesforce id: the record Id, or the audit row that opened
    the grant). Ids are an org's own: two customer orgs may hold the same one."""
    query = select(GrantRow.connection, GrantRow.source_id)
    return {(connection, source_id) for connection, source_id in session.execute(query)}


def unfinished(session: Session) -> Counter[str]:
    """Revocations and outbox rows still open (``revocations``, ``emails``): a settled
    worker leaves none, whether their next attempt has come or not."""
    counts: Counter[str] = Counter()
    for name, model, states in (
        ("revocations", RevocationRow, (*OPEN_STATES, WorkState.LANDED)),
        ("emails", OutboxRow, OPEN_STATES),
    ):
        query = select(func.count()).select_from(model).where(model.state.in_(states))
        counts[name] = session.scalar(query) or 0
    return counts


def changes_per_grant(session: Session, grant_ids: list[int]) -> Counter[int]:
    """How often Salesforce's record of each grant changed (``changed`` events)."""
    query = (
        select(EventRow.grant_id, func.count())
        .where(EventRow.kind == EventKind.CHANGED, EventRow.grant_id.in_(grant_ids))
        .group_by(EventRow.grant_id)
    )
    return Counter({int(grant): int(n) for grant, n in session.execute(query) if grant})


def revoked_more_than_once(session: Session) -> list[str]:
    """``connection:id`` of grants with more than one ``revoked`` event (revoked twice)."""
    query = (
        select(GrantRow.connection, GrantRow.source_id)
        .join(EventRow, EventRow.grant_id == GrantRow.id)
        .where(EventRow.kind == EventKind.REVOKED)
        .group_by(GrantRow.id, GrantRow.connection, GrantRow.source_id)
        .having(func.count() > 1)
    )
    return sorted(f"{connection}:{source_id}" for connection, source_id in session.execute(query))


def history(session: Session, connection: str, source_ids: list[str]) -> list[str]:
    """These grants' events, one line each (where a repeated revocation came from)."""
    query = (
        select(EventRow)
        .where(EventRow.connection == connection, EventRow.source_id.in_(source_ids))
        .order_by(EventRow.id)
    )
    return [
        f"{e.source_id} {e.at.isoformat()} {e.kind} by {e.actor}: {e.reason or ''}"
        for e in session.execute(query).scalars()
    ]
