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

from sqlalchemy.orm import Session

from firmgrant.jobs.history import facts, grant_event
from firmgrant.jobs.outbox import enqueue
from firmgrant.jobs.revoke import complete, revocation_event
from firmgrant.ledger import Ledger, NewEvent, append_events, revocations
from firmgrant.ledger.chain import SYSTEM_ACTOR
from firmgrant.ledger.models import GrantRow, RevocationRow
from firmgrant.lifecycle import (
    ENDED_CAUSES,
    OPENING_EVENT,
    EmailKind,
    EndCause,
    EventKind,
    RevocationOutcome,
    SalesforceStatus,
    WorkState,
)
from firmgrant.policy import effective_expiry, revocation_landed, revocation_needed
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
        # Every revocation opened, then why: a Login-As grant still live, or access that ended.
        return (
            f"enforce: to_revoke={self.to_revoke} (login_as={self.rejected} "
            f"ended={self.to_revoke - self.rejected}) settled={self.settled} "
            f"cancelled={self.cancelled}"
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
    for grant, earlier in revocations.candidates(session, now, cap):
        verdict = revocation_needed(facts(grant), now, cap)
        if verdict is None:
            continue
        revocations.open_for(
            session,
            grant,
            earlier,
            cause=verdict.cause,
            reason=verdict.reason,
            actor=SYSTEM_ACTOR,
            now=now,
        )
        result.to_revoke += 1
        events.append(
            grant_event(
                OPENING_EVENT[verdict.cause], grant, now, verdict.reason, cause=verdict.cause
            )
        )
        if verdict.cause == EndCause.LOGIN_AS:
            result.rejected += 1
            enqueue(session, settings, grant, EmailKind.REJECTED, grant.granted_at, now)


def _settle_revocations(
    session: Session,
    settings: Settings,
    now: datetime,
    result: EnforceResult,
    events: list[NewEvent],
) -> None:
    """Open revocations that Salesforce or the customer made moot, and landed ones told."""
    cap = settings.policy.max_duration
    for revocation, grant in revocations.unsettled(session, now):
        grant_facts = facts(grant)
        if revocation.state == WorkState.LANDED:  # a sync found our attempt done: tell them
            complete(session, settings, grant, revocation, now)
        elif not grant_facts.live_in_salesforce:
            if _landed(revocation, grant):  # our attempt's outcome was lost, not its effect
                events.append(
                    revocation_event(EventKind.REVOKED, grant, revocation, now, revocation.reason)
                )
                complete(session, settings, grant, revocation, now)
                result.settled += 1
                continue
            # Ended in Salesforce meanwhile: by the customer, by Salesforce, or deleted.
            why = "already revoked in Salesforce (not by firmgrant)" + (
                " and deleted" if grant.deleted else ""
            )
            revocation.state, revocation.done_at = WorkState.REVOKED, now
            revocation.outcome, revocation.note = RevocationOutcome.SETTLED, why
            events.append(grant_event(EventKind.REVOCATION_SETTLED, grant, now, why))
            result.settled += 1
        elif revocation.cause in ENDED_CAUSES and effective_expiry(grant_facts, cap) > now:
            revocation.state, revocation.done_at = WorkState.CANCELLED, now
            why = f"the grant was extended to {iso_z(grant.expires_at)}"
            events.append(grant_event(EventKind.REVOCATION_CANCELLED, grant, now, why))
            result.cancelled += 1


def _landed(revocation: RevocationRow, grant: GrantRow) -> bool:
    """An attempt of ours went out (its outcome never recorded) and the record shows it."""
    return (
        revocation.lease_owner is not None
        and grant.sf_status == SalesforceStatus.REVOKED
        and revocation_landed(
            revocation.reason, revocation.attempted_at, grant.revoke_reason, grant.revoked_at
        )
    )
