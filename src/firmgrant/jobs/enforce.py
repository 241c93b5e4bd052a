"""enforce: rule breaks and ends of access become revocations; moot ones are settled.

Level-triggered: it reads what the ledger holds now, asks ``policy`` what each grant needs,
and writes revocation (and "rejected" email) rows whose keys (one revocation per grant, one
email per grant, kind and due time) make a second run, or a second replica, a no-op, in the
same transaction as the events that explain them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from firmgrant.jobs.history import facts, grant_event
from firmgrant.jobs.outbox import enqueue
from firmgrant.jobs.revoke import complete, revocation_event
from firmgrant.ledger import Ledger, NewEvent, append_events
from firmgrant.ledger.chain import SYSTEM_ACTOR
from firmgrant.ledger.models import GrantRow, RevocationRow
from firmgrant.ledger.queries import ends_by
from firmgrant.lifecycle import OPEN_STATES
from firmgrant.policy import (
    LOGIN_AS,
    effective_expiry,
    revocation_landed,
    revocation_needed,
)
from firmgrant.settings import Settings
from firmgrant.timeutil import iso_z

log = logging.getLogger("firmgrant.jobs")


@dataclass
class EnforceResult:
    rejected: int = 0
    to_revoke: int = 0
    settled: int = 0
    cancelled: int = 0

    def summary(self) -> str:
        return (
            f"enforce: rejected={self.rejected} to_revoke={self.to_revoke} "
            f"settled={self.settled} cancelled={self.cancelled}"
        )


def enforce(ledger: Ledger, settings: Settings, *, now: datetime) -> EnforceResult:
    """Rule breaks and ends of access become revocations; stale revocations are settled."""
    result = EnforceResult()
    with ledger.appending() as session:
        events: list[NewEvent] = []
        _open_revocations(session, settings, now, result, events)
        _settle_revocations(session, settings, now, result, events)
        append_events(session, events)
    return result


def _open_revocations(
    session: Session,
    settings: Settings,
    now: datetime,
    result: EnforceResult,
    events: list[NewEvent],
) -> None:
    """A revocation for each live grant that breaks the rules or whose access has ended."""
    cap = settings.policy.max_duration
    # A finished revocation does not shield a grant the customer made live again
    # (re-activated after we revoked it, or extended and now ended once more).
    needing = session.execute(
        select(GrantRow, RevocationRow)
        .outerjoin(RevocationRow, RevocationRow.grant_id == GrantRow.id)
        .where(
            or_(
                RevocationRow.grant_id.is_(None),
                RevocationRow.state.in_(("revoked", "cancelled")),
            ),
            GrantRow.sf_status == "Active",
            GrantRow.deleted.is_(False),
            or_(GrantRow.via_login_as.is_(True), ends_by(now, cap)),
        )
        .order_by(GrantRow.id)
    )
    for grant, earlier in needing:
        verdict = revocation_needed(facts(grant), now, cap)
        if verdict is None:
            continue
        revocation = earlier or RevocationRow(grant_id=grant.id)
        revocation.cause, revocation.reason = verdict.cause, verdict.reason
        revocation.actor, revocation.state = SYSTEM_ACTOR, "pending"
        revocation.attempts, revocation.next_attempt_at, revocation.created_at = 0, now, now
        revocation.last_error = revocation.done_at = revocation.attempted_at = None
        revocation.lease_owner = revocation.lease_until = None
        if earlier is None:
            session.add(revocation)
        result.to_revoke += 1
        kind = "rejected" if verdict.cause == LOGIN_AS else verdict.cause
        events.append(grant_event(kind, grant, now, verdict.reason, cause=verdict.cause))
        if verdict.cause == LOGIN_AS:
            result.rejected += 1
            enqueue(session, settings, grant, "rejected", grant.granted_at, now)


def _settle_revocations(
    session: Session,
    settings: Settings,
    now: datetime,
    result: EnforceResult,
    events: list[NewEvent],
) -> None:
    """Open revocations that Salesforce or the customer made moot, and landed ones told."""
    cap = settings.policy.max_duration
    unleased = or_(RevocationRow.lease_until.is_(None), RevocationRow.lease_until < now)
    rows = session.execute(
        select(RevocationRow, GrantRow)
        .join(GrantRow, GrantRow.id == RevocationRow.grant_id)
        .where(RevocationRow.state.in_((*OPEN_STATES, "landed")), unleased)
    )
    for revocation, grant in rows:
        grant_facts = facts(grant)
        if revocation.state == "landed":  # a sync found our attempt done: tell the grantor
            complete(session, settings, grant, revocation, now)
        elif not grant_facts.live_in_salesforce:
            if _landed(revocation, grant):  # our attempt's outcome was lost, not its effect
                events.append(
                    revocation_event("revoked", grant, revocation, now, revocation.reason)
                )
                complete(session, settings, grant, revocation, now)
                result.settled += 1
                continue
            # Ended in Salesforce meanwhile: by the customer, by Salesforce, or deleted.
            why = "already revoked in Salesforce (not by firmgrant)" + (
                " and deleted" if grant.deleted else ""
            )
            revocation.state, revocation.done_at = "revoked", now
            events.append(grant_event("revocation_settled", grant, now, why))
            result.settled += 1
        elif revocation.cause in ("expired", "capped") and effective_expiry(grant_facts, cap) > now:
            revocation.state, revocation.done_at = "cancelled", now
            events.append(
                grant_event(
                    "revocation_cancelled",
                    grant,
                    now,
                    f"the grant was extended to {iso_z(grant.expires_at)}",
                )
            )
            result.cancelled += 1


def _landed(revocation: RevocationRow, grant: GrantRow) -> bool:
    """An attempt of ours went out (its outcome never recorded) and the record shows it."""
    return (
        revocation.lease_owner is not None
        and grant.sf_status == "Revoked"
        and revocation_landed(
            revocation.reason, revocation.attempted_at, grant.revoke_reason, grant.revoked_at
        )
    )
