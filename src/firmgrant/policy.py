"""The rules, as pure functions: what a grant needs (rejection, revocation, a reminder) now.

Nothing here touches the database, Salesforce or the clock: the jobs ask, with the grant's
facts and ``now``, and act on the answer. Every job is level-triggered: asking again after a
crash gives the same answer, and the ledger's unique keys make acting on it idempotent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from firmgrant.grant import FIELD_LIMITS
from firmgrant.lifecycle import (
    USABLE,
    EndCause,
    EventKind,
    NoticeKind,
    SalesforceStatus,
    ends_at,
    grant_status,
)
from firmgrant.timeutil import format_duration, iso_z

REVOKE_REASON_LIMIT = FIELD_LIMITS["revoke_reason"]

# Causes of a revocation, as stored and shown.
LOGIN_AS, EXPIRED, CAPPED, MANUAL = (
    EndCause.LOGIN_AS,
    EndCause.EXPIRED,
    EndCause.CAPPED,
    EndCause.MANUAL,
)

LOGIN_AS_REASON = (
    "granted while logged in as another user (Login-As): Salesforce does not allow login "
    "access to be granted from a Login-As session"
)


@dataclass(frozen=True, slots=True)
class GrantFacts:
    """What the rules look at, whichever source the grant came from."""

    granted_at: datetime
    expires_at: datetime
    via_login_as: bool
    sf_status: str
    deleted: bool

    @property
    def live_in_salesforce(self) -> bool:
        """Salesforce still lets support in: nothing (customer or us) has ended it there."""
        return self.sf_status == SalesforceStatus.ACTIVE and not self.deleted


def effective_expiry(facts: GrantFacts, max_duration: timedelta) -> datetime:
    """When access really ends (:func:`firmgrant.lifecycle.ends_at`)."""
    return ends_at(facts.granted_at, facts.expires_at, max_duration)


def is_capped(facts: GrantFacts, max_duration: timedelta) -> bool:
    return facts.expires_at > facts.granted_at + max_duration


@dataclass(frozen=True, slots=True)
class Revocation:
    cause: EndCause
    reason: str


def revocation_needed(
    facts: GrantFacts, now: datetime, max_duration: timedelta
) -> Revocation | None:
    """Why this grant must be revoked in Salesforce now, or ``None``.

    A grant the customer revoked, that expired in Salesforce or was deleted needs nothing.
    """
    if not facts.live_in_salesforce:
        return None
    if facts.via_login_as:
        return Revocation(LOGIN_AS, LOGIN_AS_REASON)
    ends = effective_expiry(facts, max_duration)
    if ends > now:
        return None
    if is_capped(facts, max_duration):
        return Revocation(
            CAPPED,
            f"longer than the vendor's maximum of {format_duration(max_duration)}: "
            f"honoured until {iso_z(ends)}",
        )
    return Revocation(EXPIRED, f"access expired at {iso_z(ends)}")


def revocation_landed(
    sent_reason: str,
    sent_at: datetime | None,
    record_reason: str | None,
    record_revoked_at: datetime | None,
) -> bool:
    """The record carries what firmgrant's revocation attempt sent, so the attempt landed.

    ``sent_reason`` is the revocation's reason (Salesforce keeps its first
    ``REVOKE_REASON_LIMIT`` characters), ``sent_at`` the ``Revoked_At__c`` the attempt sent,
    in whole seconds (``None`` for an attempt from before firmgrant kept it: the reason
    alone decides). A customer's revocation carries neither.
    """
    if record_reason != sent_reason[:REVOKE_REASON_LIMIT]:
        return False
    return sent_at is None or record_revoked_at == sent_at


def reminder_schedule(
    facts: GrantFacts, offsets: Sequence[timedelta], max_duration: timedelta
) -> list[tuple[timedelta, datetime]]:
    """``(offset, due)`` for each reminder this grant gets, earliest first.

    A reminder due before (or as) the grant was made is skipped: a 1-day grant gets neither
    a 7-day nor a 1-day reminder.
    """
    ends = effective_expiry(facts, max_duration)
    schedule = {ends - offset: offset for offset in offsets if ends - offset > facts.granted_at}
    return sorted(((offset, due) for due, offset in schedule.items()), key=lambda item: item[1])


def reminder_due(
    facts: GrantFacts, offsets: Sequence[timedelta], max_duration: timedelta, now: datetime
) -> tuple[timedelta, datetime] | None:
    """The one reminder to send now: the nearest whose time has come, if access still lasts.

    After downtime several may have passed; only the latest is sent (late rather than
    never, never a burst). A grant that must be revoked or is over gets none.
    """
    if not facts.live_in_salesforce or facts.via_login_as:
        return None
    if effective_expiry(facts, max_duration) <= now:
        return None
    passed = [item for item in reminder_schedule(facts, offsets, max_duration) if item[1] <= now]
    return passed[-1] if passed else None


def retry_delay(attempts: int, first: timedelta, ceiling: timedelta) -> timedelta:
    """Exponential backoff for the ``attempts``-th failure (1, 2, …), capped."""
    delay: timedelta = first * (2 ** max(attempts - 1, 0))
    return min(delay, ceiling)


# A grant made longer ago than this is not news: a first sync of a busy org tells support
# nothing, yet a grant the worker finds late (after downtime) still gets its notice.
NEWS_WINDOW = timedelta(days=1)


def _usable(facts: GrantFacts, now: datetime, max_duration: timedelta) -> bool:
    status = grant_status(
        deleted=facts.deleted, via_login_as=facts.via_login_as, sf_status=facts.sf_status,
        granted_at=facts.granted_at, expires_at=facts.expires_at, now=now, cap=max_duration,
    )  # fmt: skip
    return status in USABLE


def notice_for(
    event: EventKind,
    changes: dict[str, list[Any]],
    facts: GrantFacts,
    now: datetime,
    max_duration: timedelta,
) -> tuple[NoticeKind, datetime] | None:
    """The support notice an event of the log calls for, with its due time (part of its
    key: the same event always asks for the same notice)."""
    fresh = facts.granted_at >= now - NEWS_WINDOW
    if event == EventKind.REJECTED:
        return (NoticeKind.REJECTED, facts.granted_at) if fresh else None
    if not _usable(facts, now, max_duration):
        return None
    if event == EventKind.DISCOVERED:
        return (NoticeKind.GRANTED, facts.granted_at) if fresh else None
    expiry = changes.get("expires_at") if event == EventKind.CHANGED else None
    if expiry and all(expiry):
        before, after = (datetime.fromisoformat(value) for value in expiry)
        if after > before:
            return NoticeKind.EXTENDED, after
    return None


def ending_notice_due(facts: GrantFacts, within: timedelta, max_duration: timedelta) -> datetime:
    """When support is told a grant is ending: ``within`` before its access ends."""
    return effective_expiry(facts, max_duration) - within


def notice_moot(
    kind: NoticeKind,
    due_at: datetime,
    facts: GrantFacts,
    now: datetime,
    within: timedelta,
    max_duration: timedelta,
) -> str | None:
    """Why a queued notice should not go out any more (``None``: send it). A rejection is
    always told; the others only while support may still use the grant."""
    if kind == NoticeKind.REJECTED:
        return None
    if not _usable(facts, now, max_duration):
        return "access already ended"
    if kind == NoticeKind.ENDING and due_at != ending_notice_due(facts, within, max_duration):
        return "the grant was extended"
    return None
