"""What the audit source needs of the ledger: each customer user's latest grant, and the
uses of Login-As access by the vendor's support, judged against the grants of that moment."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from firmgrant.grant import MIRRORED_FIELDS, GrantRecord
from firmgrant.ledger.chain import NewEvent
from firmgrant.ledger.models import AccessUseRow, GrantRow
from firmgrant.lifecycle import EventKind
from firmgrant.policy import GrantFacts, usable_at
from firmgrant.timeutil import iso_z

if TYPE_CHECKING:
    from firmgrant.salesforce.audit import AccessUse


def facts(grant: GrantRow) -> GrantFacts:
    """What the rules look at of a grant row (``policy.GrantFacts``)."""
    return GrantFacts(
        grant.granted_at, grant.expires_at, grant.via_login_as, grant.sf_status, grant.deleted
    )


def latest_by_grantor(
    session: Session, connection: str, grantor_ids: Sequence[str]
) -> dict[str, GrantRecord]:
    """Each of these users' most recent grant in this connection, as the source last saw it."""
    if not grantor_ids:
        return {}
    newest = (
        select(GrantRow.grantor_id, func.max(GrantRow.granted_at).label("granted_at"))
        .where(GrantRow.connection == connection, GrantRow.grantor_id.in_(list(grantor_ids)))
        .group_by(GrantRow.grantor_id)
        .subquery()
    )
    columns = [getattr(GrantRow, name) for name in MIRRORED_FIELDS]
    rows = session.execute(
        select(*columns)
        .join(
            newest,
            (GrantRow.grantor_id == newest.c.grantor_id)
            & (GrantRow.granted_at == newest.c.granted_at),
        )
        .where(GrantRow.connection == connection)
        .order_by(GrantRow.id)
    )
    return {row.grantor_id: GrantRecord(*row) for row in rows}


def known_org_name(session: Session, connection: str) -> str | None:
    """The org name the connection's latest grant carries, if any."""
    return session.execute(
        select(GrantRow.org_name)
        .where(GrantRow.connection == connection, GrantRow.org_name.is_not(None))
        .order_by(GrantRow.id.desc())
        .limit(1)
    ).scalar()


def known_uses(session: Session, connection: str, row_ids: Sequence[str]) -> set[str]:
    """Which of these audit rows' uses of access are recorded already."""
    if not row_ids:
        return set()
    return set(
        session.execute(
            select(AccessUseRow.row_id).where(
                AccessUseRow.connection == connection, AccessUseRow.row_id.in_(list(row_ids))
            )
        ).scalars()
    )


def record_uses(
    session: Session,
    connection: str,
    uses: Sequence[AccessUse],
    cap: timedelta,
    now: datetime,
) -> list[NewEvent]:
    """An ``access_used`` or ``violation`` event for each use not recorded before."""
    if not uses:
        return []
    known = known_uses(session, connection, [use.row_id for use in uses])
    users = {use.customer_user_id for use in uses}
    grants = list(
        session.execute(
            select(GrantRow)
            .where(GrantRow.connection == connection, GrantRow.grantor_id.in_(users))
            .order_by(GrantRow.granted_at.desc(), GrantRow.id.desc())
        ).scalars()
    )
    events = []
    for use in uses:
        if use.row_id in known:
            continue
        known.add(use.row_id)
        earlier = [
            g for g in grants if g.grantor_id == use.customer_user_id and g.granted_at <= use.at
        ]
        valid = next((g for g in earlier if usable_at(facts(g), g.revoked_at, use.at, cap)), None)
        grant = valid or (earlier[0] if earlier else None)
        session.add(
            AccessUseRow(
                connection=connection,
                row_id=use.row_id,
                at=use.at,
                support_user=use.support_user,
                customer_user_id=use.customer_user_id,
                grant_id=grant.id if grant else None,
                valid=valid is not None,
            )
        )
        events.append(_use_event(connection, use, grant, valid is not None, now))
    return events


def _use_event(
    connection: str, use: AccessUse, grant: GrantRow | None, valid: bool, now: datetime
) -> NewEvent:
    who = use.customer_username or use.customer_user_id
    if valid:
        reason = f"{use.support_user} logged in as {who}"
    elif grant is None:
        reason = f"{use.support_user} logged in as {who}, who had granted no access"
    else:
        reason = (
            f"{use.support_user} logged in as {who} with no valid grant at {iso_z(use.at)} "
            f"(the latest, #{grant.id}, was not usable then)"
        )
    return NewEvent(
        kind=EventKind.ACCESS_USED if valid else EventKind.VIOLATION,
        at=now,
        connection=connection,
        source_id=use.row_id,
        grant_id=grant.id if grant else None,
        actor=f"support:{use.support_user}",
        reason=reason,
        payload={
            "customer_user_id": use.customer_user_id,
            "customer_username": use.customer_username,
            "support_user": use.support_user,
            "used_at": iso_z(use.at),
        },
    )
