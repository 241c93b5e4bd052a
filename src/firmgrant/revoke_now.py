"""A person's revocation, now: the one path of ``firmgrant revoke`` and the dashboard's
*Revoke* button. It opens a revocation with the person's reason (an event naming them),
then runs the revoke job for that grant alone; a failure is left to the worker's retries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from firmgrant.ledger.queries import GrantView, find_grant
from firmgrant.lifecycle import GrantStatus, ends_at, nothing_to_revoke
from firmgrant.timeutil import Clock, utcnow

if TYPE_CHECKING:
    from firmgrant.ledger import Ledger
    from firmgrant.settings import Settings


class HandOutcome(StrEnum):
    """What a revocation by hand came to."""

    NOTHING_TO_DO = "nothing_to_do"  # access was already revoked, or the record is gone
    REVOKED = "revoked"  # ended in Salesforce now (or found ended already)
    FAILED = "failed"  # not ended yet: queued, the worker retries it


@dataclass(frozen=True)
class HandRevocation:
    outcome: HandOutcome
    grant: GrantView
    already_under_way: bool = False  # a revocation was already open: this one joined it


def describe(grant: GrantView, cap_end: datetime) -> str:
    """The grant in one line, as a person confirms it."""
    return (
        f"grant {grant.id} ({grant.source_id}) of {grant.org_name or grant.org_id} "
        f"to {grant.grantee}, until {cap_end:%Y-%m-%d %H:%M} UTC"
    )


def pending(ledger: Ledger, settings: Settings, grant_ref: str, now: datetime) -> GrantView:
    """The grant a person is about to revoke (``GrantNotFound`` if there is none)."""
    with ledger.sessions() as session:
        return find_grant(session, grant_ref, now=now, max_duration=settings.policy.max_duration)


def is_moot(grant: GrantView) -> bool:
    return nothing_to_revoke(GrantStatus(grant.status), grant.revoked_at)


def revoke_now(
    ledger: Ledger,
    settings: Settings,
    grant: GrantView,
    *,
    reason: str,
    actor: str,
    clock: Clock = utcnow,
) -> HandRevocation:
    """Revoke ``grant`` (as :func:`pending` found it) for ``actor`` with ``reason``, at the
    caller's ``clock`` (the dashboard's: the demo runs a day ahead)."""
    if is_moot(grant):
        return HandRevocation(HandOutcome.NOTHING_TO_DO, grant)
    from firmgrant.jobs.revoke import request_revocation, revoke
    from firmgrant.worker import Worker

    opened = request_revocation(ledger, grant.id, reason=reason, actor=actor, now=clock())
    worker = Worker(settings, ledger)
    current = worker.current_settings()  # a registry org's connection, too
    result = revoke(
        ledger,
        current,
        grant.connection,
        worker.client(grant.connection, current),
        clock=clock,
        owner=worker.owner,
        grant_ids=[grant.id],
    )
    done = result.revoked or result.already
    return HandRevocation(
        HandOutcome.REVOKED if done else HandOutcome.FAILED, grant, already_under_way=not opened
    )


def access_ends(grant: GrantView, settings: Settings) -> datetime:
    return ends_at(grant.granted_at, grant.expires_at, settings.policy.max_duration)
