"""The revocations table, as the jobs and the CLI read and write it.

Every query on revocations outside the sync's own page writes lives here; the jobs decide
(with :mod:`firmgrant.policy`) and call these. Rows are locked in grant id order everywhere,
so two transactions touching the same rows never deadlock.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from firmgrant.ledger.models import GrantRow, RevocationRow
from firmgrant.ledger.queries import ends_by
from firmgrant.ledger.work import claim
from firmgrant.lifecycle import OPEN_STATES, EndCause, SalesforceStatus, WorkState


def candidates(
    session: Session, now: datetime, cap: timedelta
) -> list[tuple[GrantRow, RevocationRow | None]]:
    """Live grants that may need a revocation now (Login-As, or access ended), with any
    finished earlier revocation; the rule itself (``policy.revocation_needed``) decides."""
    rows = session.execute(
        select(GrantRow, RevocationRow)
        .outerjoin(RevocationRow, RevocationRow.grant_id == GrantRow.id)
        .where(
            or_(
                RevocationRow.grant_id.is_(None),
                RevocationRow.state == WorkState.CANCELLED,
                # A done revocation shields the grant until the customer changes it again
                # (re-activates or extends it): an audit grant stays live in Salesforce.
                and_(
                    RevocationRow.state == WorkState.REVOKED,
                    RevocationRow.done_at < GrantRow.updated_at,
                ),
            ),
            GrantRow.sf_status == SalesforceStatus.ACTIVE,
            GrantRow.deleted.is_(False),
            or_(GrantRow.via_login_as.is_(True), ends_by(now, cap)),
        )
        .order_by(GrantRow.id)
    )
    return [(first, second) for first, second in rows]


def open_for(
    session: Session,
    grant: GrantRow,
    earlier: RevocationRow | None,
    *,
    cause: EndCause,
    reason: str,
    actor: str,
    now: datetime,
) -> RevocationRow:
    """A pending revocation of ``grant``: a new row, or ``earlier`` reopened from scratch."""
    row = earlier or RevocationRow(grant_id=grant.id)
    row.cause, row.reason, row.actor, row.created_at = cause, reason, actor, now
    row.state, row.attempts, row.next_attempt_at = WorkState.PENDING, 0, now
    row.last_error = row.done_at = row.attempted_at = None
    row.outcome = row.note = None
    row.lease_owner = row.lease_until = None
    if earlier is None:
        session.add(row)
    return row


def unsettled(session: Session, now: datetime) -> list[tuple[RevocationRow, GrantRow]]:
    """Unleased open or landed revocations, with their grants: what enforce may settle."""
    rows = session.execute(
        select(RevocationRow, GrantRow)
        .join(GrantRow, GrantRow.id == RevocationRow.grant_id)
        .where(
            RevocationRow.state.in_((*OPEN_STATES, WorkState.LANDED)),
            or_(RevocationRow.lease_until.is_(None), RevocationRow.lease_until < now),
        )
    )
    return [(first, second) for first, second in rows]


def claim_due(
    session: Session,
    connection: str,
    *,
    now: datetime,
    owner: str,
    lease: timedelta,
    limit: int,
    grant_ids: list[int] | None = None,
) -> list[tuple[RevocationRow, bool, str, str | None]]:
    """Lease up to ``limit`` due revocations of this connection (``grant_ids`` only, if
    given): each with ``unsure`` (an earlier attempt's outcome is unknown), its record Id and
    its grantor's user Id."""
    where = [GrantRow.connection == connection]
    if grant_ids is not None:
        where.append(RevocationRow.grant_id.in_(grant_ids))
    of_connection = (
        select(RevocationRow.grant_id)
        .join(GrantRow, GrantRow.id == RevocationRow.grant_id)
        .where(*where)
    )
    rows = claim(
        session,
        RevocationRow,
        now=now,
        owner=owner,
        lease=lease,
        limit=limit,
        where=[RevocationRow.grant_id.in_(of_connection)],
    )
    found = {
        grant.id: (grant.source_id, grant.grantor_id)
        for grant in session.execute(
            select(GrantRow.id, GrantRow.source_id, GrantRow.grantor_id).where(
                GrantRow.id.in_([row.grant_id for row, _ in rows])
            )
        )
    }
    return [(row, unsure, *found[row.grant_id]) for row, unsure in rows]


def connections_due(session: Session, now: datetime) -> list[str]:
    """The connections that have a revocation to try now (the others need no call)."""
    return list(
        session.execute(
            select(GrantRow.connection)
            .join(RevocationRow, RevocationRow.grant_id == GrantRow.id)
            .where(RevocationRow.state.in_(OPEN_STATES), RevocationRow.next_attempt_at <= now)
            .distinct()
        ).scalars()
    )


def locked_with_grants(
    session: Session, grant_ids: list[int]
) -> tuple[dict[int, RevocationRow], dict[int, GrantRow]]:
    """These revocations locked (``FOR UPDATE``, in grant id order) and their grants."""
    rows = session.execute(
        select(RevocationRow)
        .where(RevocationRow.grant_id.in_(grant_ids))
        .order_by(RevocationRow.grant_id)
        .with_for_update()
    ).scalars()
    grants = session.execute(select(GrantRow).where(GrantRow.id.in_(grant_ids))).scalars()
    return {row.grant_id: row for row in rows}, {grant.id: grant for grant in grants}


def grant_and_revocation(
    session: Session, grant_id: int
) -> tuple[GrantRow | None, RevocationRow | None]:
    """A grant and its revocation row (locked), if any."""
    grant = session.get(GrantRow, grant_id)
    if grant is None:
        return None, None
    return grant, session.get(RevocationRow, grant_id, with_for_update=True)
