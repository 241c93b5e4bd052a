"""A grant row's facts for the rules, and the uses of Login-As access by the vendor's support
(which audit rows are recorded already, and the event of one)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from firmgrant.grant import GrantRecord
from firmgrant.ledger.chain import NewEvent
from firmgrant.ledger.models import AccessUseRow, GrantRow
from firmgrant.lifecycle import EventKind
from firmgrant.policy import GrantFacts
from firmgrant.timeutil import iso_z

if TYPE_CHECKING:
    from firmgrant.salesforce.audit import AccessUse


def facts(grant: GrantRow) -> GrantFacts:
    """What the rules look at of a grant row (``policy.GrantFacts``)."""
    return GrantFacts(
        grant.granted_at, grant.expires_at, grant.via_login_as, grant.sf_status, grant.deleted
    )


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


def use_event(
    connection: str,
    use: AccessUse,
    grant: GrantRecord | None,
    grant_id: int | None,
    valid: bool,
    now: datetime,
) -> NewEvent:
    """A use of access by support, at the time the trail says it happened."""
    who = use.customer_username or use.customer_user_id
    if valid:
        reason = f"{use.support_user} logged in as {who}"
    elif grant is None:
        reason = f"{use.support_user} logged in as {who}, who had granted no access"
    else:
        reason = (
            f"{use.support_user} logged in as {who} with no valid grant then "
            f"(the latest, {f'#{grant_id}' if grant_id else grant.source_id}, was not usable)"
        )
    return NewEvent(
        kind=EventKind.ACCESS_USED if valid else EventKind.VIOLATION,
        at=now,
        occurred_at=use.at,
        connection=connection,
        source_id=use.row_id,
        grant_id=grant_id,
        actor=f"support:{use.support_user}",
        reason=reason,
        payload={
            "customer_user_id": use.customer_user_id,
            "customer_username": use.customer_username,
            "support_user": use.support_user,
            "used_at": iso_z(use.at),
        },
    )
