"""A grant's lifecycle: its words, and the one rule for its status.

The words are the ledger's public vocabulary: statuses are shown and filtered on, event kinds
are hash-chained and exported, work states and causes are stored. The status rule is
:func:`grant_status`; where SQL or the export's text must restate it, the twin names this
function and a property test holds the two to the same answers.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import ColumnElement, SQLColumnExpression, and_, case, or_


class GrantStatus(StrEnum):
    """What support sees; ``active`` and ``expiring`` grants may be used right now."""

    ACTIVE = "active"  # usable, and not ending within the window
    EXPIRING = "expiring"  # usable, ending within the window (24 h unless asked otherwise)
    EXPIRED = "expired"  # its end (Salesforce's expiry or the vendor's cap) has come
    REVOKED = "revoked"  # revoked in Salesforce, by the customer or by firmgrant
    REJECTED = "rejected"  # granted from a Login-As session: never usable
    DELETED = "deleted"  # the record is gone from Salesforce


USABLE = (GrantStatus.ACTIVE, GrantStatus.EXPIRING)
DEFAULT_EXPIRING_WITHIN = timedelta(hours=24)


class SalesforceStatus(StrEnum):
    """``Status__c`` of the grant object, as Salesforce holds it."""

    ACTIVE = "Active"  # Salesforce lets support in
    REVOKED = "Revoked"  # ended early, by the customer or by a revocation of firmgrant's
    EXPIRED = "Expired"  # ended at its expiry


class EndCause(StrEnum):
    """Why firmgrant revokes a grant."""

    LOGIN_AS = "login_as"  # granted from a Login-As session
    EXPIRED = "expired"  # its expiry has passed and Salesforce still lets support in
    CAPPED = "capped"  # it outlasted the vendor's policy.max_duration
    MANUAL = "manual"  # a person asked (`firmgrant revoke`)


# Causes that are the end of access itself: an extension before the revocation makes it moot.
ENDED_CAUSES = (EndCause.EXPIRED, EndCause.CAPPED)


class WorkState(StrEnum):
    """Where a revocation or an email stands (revocations and outbox rows)."""

    PENDING = "pending"  # not tried yet
    FAILED = "failed"  # the last try failed for now: retried after a backoff
    LANDED = "landed"  # a sync found our revocation done in Salesforce; its notice is due
    REVOKED = "revoked"  # the revocation is done (by us, or found ended already)
    CANCELLED = "cancelled"  # no longer needed: the grant was extended, or the reminder moot
    SENT = "sent"  # the mail server accepted the email
    UNDELIVERABLE = "undeliverable"  # refused for good (a 5xx, an address it cannot carry)


OPEN_STATES = (WorkState.PENDING, WorkState.FAILED)


class RevocationStatus(StrEnum):
    """A grant's revocation as `firmgrant show`, the dashboard and the JSON output name it."""

    PENDING_REVOCATION = "pending_revocation"  # queued, not tried yet
    REVOKE_FAILED = "revoke_failed"  # the last try failed; retried after a backoff
    REVOKED = "revoked"  # done in Salesforce (its notice may still be queued)
    CANCELLED = "cancelled"  # the grant was extended before it was revoked
    # The audit source has no revoke API: what firmgrant did, and what the customer did.
    SESSIONS_ENDED = "sessions_ended"  # support's sessions ended; still granted in Setup
    SESSIONS_NOT_ENDED = "sessions_not_ended"  # Salesforce refused to end them; still granted
    REVOKED_IN_SETUP = "revoked_in_setup"  # the customer revoked it in Setup since


class RevocationOutcome(StrEnum):
    """What a finished revocation did (stored with it)."""

    REVOKED = "revoked"  # firmgrant revoked the record in Salesforce
    SETTLED = "settled"  # it had ended otherwise: nothing was done
    SESSIONS_ENDED = "sessions_ended"  # audit source: support's Login-As sessions were ended
    SESSIONS_NOT_ENDED = "sessions_not_ended"  # audit source: Salesforce refused to end them


def revocation_status(
    state: str, outcome: str | None, revoked_in_salesforce: bool
) -> RevocationStatus | str:
    """How a revocation row reads: its work state, and for an audit grant what was done.

    Ending support's sessions revokes nothing: such a grant reads ``sessions_ended`` (or
    ``sessions_not_ended``) until the customer's own revocation arrives from the trail.
    """
    if outcome in (RevocationOutcome.SESSIONS_ENDED, RevocationOutcome.SESSIONS_NOT_ENDED):
        if revoked_in_salesforce:
            return RevocationStatus.REVOKED_IN_SETUP
        return RevocationStatus(outcome)
    return REVOCATION_STATUS.get(state, state)


REVOCATION_STATUS: dict[str, RevocationStatus] = {
    WorkState.PENDING: RevocationStatus.PENDING_REVOCATION,
    WorkState.FAILED: RevocationStatus.REVOKE_FAILED,
    WorkState.LANDED: RevocationStatus.REVOKED,
    WorkState.REVOKED: RevocationStatus.REVOKED,
    WorkState.CANCELLED: RevocationStatus.CANCELLED,
}


class EmailKind(StrEnum):
    """The emails a customer gets; each has its own templates."""

    REMINDER = "reminder"  # access ends soon
    REVOKED = "revoked"  # access was revoked
    REJECTED = "rejected"  # the grant was refused (Login-As)


class NoticeKind(StrEnum):
    """What the vendor's support team is told of (outbox kinds, apart from EmailKind's)."""

    GRANTED = "support_granted"  # a customer granted access: support may log in now
    EXTENDED = "support_extended"  # a customer moved a grant's end later
    ENDING = "support_ending"  # a grant's access ends soon
    REJECTED = "support_rejected"  # a grant was refused (made while logged in as another user)

    @property
    def word(self) -> str:
        """The name in settings and in webhook payloads: ``granted``, ``extended``, …"""
        return self.value.removeprefix("support_")


class Channel(StrEnum):
    """How an outbox row goes out."""

    EMAIL = "email"  # a message through the mail backend
    WEBHOOK = "webhook"  # an HTTPS POST to the support team's webhook (Slack or signed JSON)


class EventKind(StrEnum):
    """What an event of the log records (hash-chained and exported: a public contract)."""

    DISCOVERED = "discovered"  # a grant record seen for the first time (object source)
    GRANTED = "granted"  # a customer granted access in Setup (an audit row, at its time)
    CHANGED = "changed"  # Salesforce's record changed (extension, rename, …)
    CUSTOMER_REVOKED = "customer_revoked"  # the customer revoked it in their org
    DELETED = "deleted"  # the record was deleted in Salesforce
    UNDELETED = "undeleted"  # a deleted record came back
    VANISHED = "vanished"  # a full sync no longer found it at all
    INVALID = "invalid"  # a record that cannot be mirrored (reported once)
    REJECTED = "rejected"  # refused: granted from a Login-As session
    EXPIRED = "expired"  # its expiry passed: queued for revocation
    CAPPED = "capped"  # it reached the vendor's maximum: queued for revocation
    REVOKE_REQUESTED = "revoke_requested"  # a person asked for a revocation
    REVOKED = "revoked"  # firmgrant revoked it in Salesforce
    REVOKE_FAILED = "revoke_failed"  # a revocation attempt failed (retried)
    REVOCATION_SETTLED = "revocation_settled"  # ended in Salesforce otherwise: nothing to do
    REVOCATION_CANCELLED = "revocation_cancelled"  # extended before it was revoked
    REMINDER_DUE = "reminder_due"  # a reminder was queued
    REMINDER_CANCELLED = "reminder_cancelled"  # a queued reminder became moot
    REMINDED = "reminded"  # a reminder was sent
    NOTIFIED = "notified"  # a revoked/rejected notice was sent
    SUPPORT_NOTIFIED = "support_notified"  # the vendor's support team was told (NoticeKind)
    EMAIL_FAILED = "email_failed"  # an email could not go for now (one per outage)
    EMAIL_UNDELIVERABLE = "email_undeliverable"  # an email was refused for good
    ACCESS_USED = "access_used"  # support logged in as a customer user under a valid grant
    VIOLATION = "violation"  # support logged in with no valid grant at that moment
    SESSIONS_ENDED = "sessions_ended"  # the vendor's Login-As sessions in the org were ended
    SESSIONS_NOT_ENDED = "sessions_not_ended"  # they could not be (e.g. no "Manage Users")
    SIGNED_IN = "signed_in"  # a person signed in to the dashboard
    SIGNED_OUT = "signed_out"  # a person signed out of the dashboard
    ACCOUNT_CHANGED = "account_changed"  # a dashboard account was added, changed or disabled


class OrgState(StrEnum):
    """How a registered customer org's last sync went (``firmgrant orgs list``)."""

    NEW = "new"  # registered, not synced yet
    OK = "ok"  # the last sync worked
    AUTH_FAILED = "auth_failed"  # the token request was refused: fix the user or the app
    NO_PERMISSION = "no_permission"  # the integration user cannot read what it must
    OVER_BUDGET = "over_budget"  # the org's API calls are below the floor: waiting
    UNREADABLE = "unreadable"  # rows of its trail cannot be read (a language, a wording)
    UNREACHABLE = "unreachable"  # Salesforce did not answer (5xx, timeouts) after retries
    DISABLED = "disabled"  # switched off by an operator: never synced


class SourceKind(StrEnum):
    """Where a connection's grants are read."""

    OBJECT = "object"  # records of an SObject, revoked by updating them
    AUDIT = "audit"  # the customer org's Setup Audit Trail: read-only, no revoke API


# The event that records why a revocation was opened.
OPENING_EVENT = {
    EndCause.LOGIN_AS: EventKind.REJECTED,
    EndCause.EXPIRED: EventKind.EXPIRED,
    EndCause.CAPPED: EventKind.CAPPED,
    EndCause.MANUAL: EventKind.REVOKE_REQUESTED,
}

# The event that records an email of each kind sent.
SENT_EVENT = {
    EmailKind.REMINDER: EventKind.REMINDED,
    EmailKind.REVOKED: EventKind.NOTIFIED,
    EmailKind.REJECTED: EventKind.NOTIFIED,
}


def ends_at(granted_at: datetime, expires_at: datetime, cap: timedelta) -> datetime:
    """When access really ends: Salesforce's expiry, or the vendor's cap if that is sooner."""
    return min(expires_at, granted_at + cap)


def lasts_seconds(granted_at: datetime, expires_at: datetime) -> int:
    """How long Salesforce says access lasts, in whole seconds rounded up (stored as
    ``grants.lasts_seconds``): above the cap's seconds exactly when the cap ends it sooner."""
    return math.ceil((expires_at - granted_at).total_seconds())


def outlasts_cap(lasts: int, cap: timedelta) -> bool:
    """The cap, not Salesforce's expiry, ends this access (``ends_at`` is granted_at + cap)."""
    return lasts > cap.total_seconds()


def nothing_to_revoke(status: GrantStatus, revoked_at: datetime | None) -> bool:
    """A revocation by hand has nothing to do: access was already revoked or the record is
    gone. (An expired or rejected grant may still be live in Salesforce: revoking it is not moot.)
    """
    return status in (GrantStatus.REVOKED, GrantStatus.DELETED) or revoked_at is not None


def grant_status(
    *,
    deleted: bool,
    via_login_as: bool,
    sf_status: str,
    granted_at: datetime,
    expires_at: datetime,
    now: datetime,
    cap: timedelta,
    expiring_within: timedelta = DEFAULT_EXPIRING_WITHIN,
    revoked_at: datetime | None = None,
) -> GrantStatus:
    """The status of a grant with these facts at ``now``, under the vendor's ``cap``.

    In this order: deleted, rejected (Login-As), revoked, expired (Salesforce says so, or its
    end has come), expiring (it ends within ``expiring_within``), else active.
    ``revoked_at``, if given, is when a revocation took effect: at an earlier ``now`` (the
    status an event saw when it happened) the grant was not revoked yet.
    Twins: :func:`grant_status_sql` below (the status now: ``revoked_at`` never in the future)
    and ``export.rows._status`` (over the export's text).
    """
    if deleted:
        return GrantStatus.DELETED
    if via_login_as:
        return GrantStatus.REJECTED
    if sf_status == SalesforceStatus.REVOKED and (revoked_at is None or revoked_at <= now):
        return GrantStatus.REVOKED
    end = ends_at(granted_at, expires_at, cap)
    if sf_status == SalesforceStatus.EXPIRED or end <= now:
        return GrantStatus.EXPIRED
    if end <= now + expiring_within:
        return GrantStatus.EXPIRING
    return GrantStatus.ACTIVE


def ends_by_sql(
    granted_at: SQLColumnExpression[datetime],
    expires_at: SQLColumnExpression[datetime],
    moment: datetime,
    cap: timedelta,
) -> ColumnElement[bool]:
    """SQL: access ends at or before ``moment`` (``ends_at(...) <= moment``)."""
    return or_(expires_at <= moment, granted_at <= moment - cap)


def ends_after_sql(
    granted_at: SQLColumnExpression[datetime],
    expires_at: SQLColumnExpression[datetime],
    moment: datetime,
    cap: timedelta,
) -> ColumnElement[bool]:
    """SQL: access lasts past ``moment`` (``not ends_by_sql``), written as two ranges so an
    index on ``expires_at`` can serve it: every usable grant passes it."""
    return and_(expires_at > moment, granted_at > moment - cap)


def grant_status_sql(
    *,
    deleted: SQLColumnExpression[bool],
    via_login_as: SQLColumnExpression[bool],
    sf_status: SQLColumnExpression[str],
    granted_at: SQLColumnExpression[datetime],
    expires_at: SQLColumnExpression[datetime],
    now: datetime,
    cap: timedelta,
    expiring_within: timedelta = DEFAULT_EXPIRING_WITHIN,
) -> ColumnElement[str]:
    """:func:`grant_status` over columns, for the database to evaluate (its SQL twin:
    tests/test_lifecycle_rule.py holds the two to the same answers)."""
    return case(
        (deleted.is_(True), GrantStatus.DELETED.value),
        (via_login_as.is_(True), GrantStatus.REJECTED.value),
        (sf_status == SalesforceStatus.REVOKED.value, GrantStatus.REVOKED.value),
        (
            or_(
                sf_status == SalesforceStatus.EXPIRED.value,
                ends_by_sql(granted_at, expires_at, now, cap),
            ),
            GrantStatus.EXPIRED.value,
        ),
        (
            ends_by_sql(granted_at, expires_at, now + expiring_within, cap),
            GrantStatus.EXPIRING.value,
        ),
        else_=GrantStatus.ACTIVE.value,
    )


__all__ = [
    "DEFAULT_EXPIRING_WITHIN",
    "ENDED_CAUSES",
    "OPENING_EVENT",
    "OPEN_STATES",
    "REVOCATION_STATUS",
    "SENT_EVENT",
    "USABLE",
    "Channel",
    "EmailKind",
    "EndCause",
    "EventKind",
    "GrantStatus",
    "NoticeKind",
    "OrgState",
    "RevocationOutcome",
    "RevocationStatus",
    "SalesforceStatus",
    "SourceKind",
    "WorkState",
    "ends_after_sql",
    "ends_at",
    "ends_by_sql",
    "grant_status",
    "grant_status_sql",
    "nothing_to_revoke",
    "revocation_status",
]
