"""revoke: end access in Salesforce for the revocations enforce (or a person) asked for.

The object source's record is updated (``Status__c`` = Revoked, ``Revoked_At__c``,
``Revoke_Reason__c``) in sObject Collections of up to 200 with ``allOrNone=false``; each
record's result is recorded on its own. A record already revoked or deleted counts as done.
A revocation whose earlier attempt never recorded an outcome (the worker died during the
call) is first read back from Salesforce, so a grant is never revoked twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

from sqlalchemy.orm import Session

from firmgrant.errors import GrantNotFound, SalesforceError
from firmgrant.jobs.history import grant_event
from firmgrant.jobs.outbox import enqueue
from firmgrant.ledger import Ledger, NewEvent, append_events, revocations
from firmgrant.ledger.models import GrantRow, RevocationRow
from firmgrant.ledger.work import release
from firmgrant.lifecycle import (
    OPEN_STATES,
    OPENING_EVENT,
    EmailKind,
    EndCause,
    EventKind,
    RevocationOutcome,
    SalesforceStatus,
    SourceKind,
    WorkState,
)
from firmgrant.policy import REVOKE_REASON_LIMIT, retry_delay, revocation_landed
from firmgrant.salesforce.audit import end_sessions
from firmgrant.salesforce.client import COLLECTION_LIMIT, SalesforceClient
from firmgrant.settings import Settings, SourceSettings
from firmgrant.timeutil import Clock, parse_sf_datetime

log = logging.getLogger("firmgrant.jobs")

# Per-record errors that mean there is nothing left to revoke.
GONE = ("ENTITY_IS_DELETED", "NOT_FOUND", "INVALID_CROSS_REFERENCE_KEY")


@dataclass
class RevokeResult:
    revoked: int = 0
    already: int = 0
    failed: int = 0
    sessions: int = 0  # audit source: grants whose support sessions were ended (or tried)
    api_calls: int = 0
    error: str | None = None

    def summary(self) -> str:
        outcome = f" error={self.error}" if self.error else ""
        sessions = f" sessions_ended={self.sessions}" if self.sessions else ""
        return (
            f"revoke: revoked={self.revoked} already={self.already} failed={self.failed}"
            f"{sessions} api_calls={self.api_calls}{outcome}"
        )


@dataclass(frozen=True)
class _Claimed:
    grant_id: int
    source_id: str
    reason: str
    attempts: int
    unsure: bool  # an earlier attempt never recorded its outcome
    earlier_sent_at: datetime | None  # what that attempt sent as Revoked_At__c
    grantor_id: str | None  # the customer user whose Login-As sessions end (audit source)


class _Result(StrEnum):
    """What became of one record's revocation call."""

    REVOKED = "revoked"  # this call (or a lost earlier one of ours) revoked it
    ALREADY = "already"  # it had ended otherwise: revoked by the customer, expired, or gone
    FAILED = "failed"  # not revoked: tried again after a backoff
    SESSIONS_ENDED = "sessions_ended"  # audit source: support's Login-As sessions ended
    SESSIONS_NOT_ENDED = "sessions_not_ended"  # audit source: Salesforce refused to end them


class _Outcome(NamedTuple):
    kind: _Result
    detail: str | None = None
    revoked_at: datetime | None = None  # for REVOKED: what Salesforce now holds


def _sf_time(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def _claim_batch(
    ledger: Ledger,
    connection: str,
    *,
    now: datetime,
    owner: str,
    lease: timedelta,
    grant_ids: list[int] | None,
) -> list[_Claimed]:
    """Lease up to a collection's worth of due revocations, stamping the time they send."""
    sent_at = now.replace(microsecond=0)  # Revoked_At__c has whole seconds
    with ledger.transaction() as session:
        claimed = revocations.claim_due(
            session,
            connection,
            now=now,
            owner=owner,
            lease=lease,
            limit=COLLECTION_LIMIT,
            grant_ids=grant_ids,
        )
        batch = []
        for row, unsure, source_id, grantor_id in claimed:
            batch.append(
                _Claimed(
                    row.grant_id,
                    source_id,
                    row.reason,
                    row.attempts,
                    unsure,
                    row.attempted_at,
                    grantor_id,
                )
            )
            row.attempted_at = sent_at
    return batch


def revoke(
    ledger: Ledger,
    settings: Settings,
    connection: str,
    client: SalesforceClient,
    *,
    clock: Clock,
    owner: str,
    stop: Callable[[], bool] = lambda: False,
    grant_ids: list[int] | None = None,
) -> RevokeResult:
    """Work through this connection's due revocations, 200 at a time, until none are left."""
    result = RevokeResult()
    calls_before = client.api_calls
    lease = timedelta(seconds=settings.worker.lease_seconds)
    while not stop():
        now = clock()
        batch = _claim_batch(
            ledger, connection, now=now, owner=owner, lease=lease, grant_ids=grant_ids
        )
        if not batch:
            break
        log.debug("%s: revoking a batch of %d", connection, len(batch))
        try:
            outcomes = _call_salesforce(settings, connection, client, batch, now)
        except SalesforceError as exc:
            # The whole call failed after the client's own retries: every row waits its turn.
            outcomes = {item.grant_id: _Outcome(_Result.FAILED, str(exc)) for item in batch}
            result.error = type(exc).__name__
        _record(ledger, settings, batch, outcomes, clock(), result, owner)
        if result.error:
            break
    result.api_calls = client.api_calls - calls_before
    return result


def _call_salesforce(
    settings: Settings,
    connection: str,
    client: SalesforceClient,
    batch: list[_Claimed],
    now: datetime,
) -> dict[int, _Outcome]:
    source = settings.connections[connection].source
    if source.kind == SourceKind.AUDIT:
        return _end_sessions(client, batch)
    fields = source.fields
    sent_at = now.replace(microsecond=0)
    outcomes = _read_back(client, source, [item for item in batch if item.unsure])
    to_update = [item for item in batch if item.grant_id not in outcomes]
    if not to_update:
        return outcomes
    results = client.update_collection(
        source.object_name,
        [
            {
                "id": item.source_id,
                fields.status: SalesforceStatus.REVOKED.value,
                fields.revoked_at: _sf_time(sent_at),
                fields.revoke_reason: item.reason[:REVOKE_REASON_LIMIT],
            }
            for item in to_update
        ],
    )
    for item, answer in zip(to_update, results, strict=False):
        errors: list[dict[str, Any]] = answer.get("errors") or []
        if answer.get("success"):
            outcomes[item.grant_id] = _Outcome(_Result.REVOKED, None, sent_at)
        elif any(error.get("statusCode") in GONE for error in errors):
            outcomes[item.grant_id] = _Outcome(_Result.ALREADY, "deleted in Salesforce")
        else:
            detail = "; ".join(
                f"{error.get('statusCode')}: {error.get('message')}" for error in errors
            )
            outcomes[item.grant_id] = _Outcome(
                _Result.FAILED, detail or "no result for this record"
            )
    for item in to_update[len(results) :]:
        outcomes[item.grant_id] = _Outcome(
            _Result.FAILED, "Salesforce returned no result for this record"
        )
    return outcomes


def _end_sessions(client: SalesforceClient, batch: list[_Claimed]) -> dict[int, _Outcome]:
    """The audit source has no revoke API: end the Login-As sessions of each grantor instead
    (ending sessions twice is harmless, so an unsure attempt is simply made again)."""
    users = sorted({item.grantor_id for item in batch if item.grantor_id})
    found = end_sessions(client, users) if users else {}
    outcomes = {}
    for item in batch:
        done = found.get(item.grantor_id or "")
        if done is None:
            outcomes[item.grant_id] = _Outcome(_Result.SESSIONS_ENDED, "no grantor to end")
        elif done.error:
            outcomes[item.grant_id] = _Outcome(_Result.SESSIONS_NOT_ENDED, done.error)
        else:
            outcomes[item.grant_id] = _Outcome(
                _Result.SESSIONS_ENDED, f"{done.ended} Login-As session(s) of support ended"
            )
    return outcomes


def _read_back(
    client: SalesforceClient, source: SourceSettings, unsure: list[_Claimed]
) -> dict[int, _Outcome]:
    """What became of attempts whose worker died during the call: read the records back.

    A record that carries the attempt's reason and time was revoked by that attempt; one
    ended otherwise (by the customer, or gone) needs nothing more; the rest are tried again.
    """
    if not unsure:
        return {}
    fields = source.fields
    current = client.read_collection(
        source.object_name,
        [item.source_id for item in unsure],
        [fields.id, fields.status, fields.revoke_reason, fields.revoked_at],
    )
    outcomes: dict[int, _Outcome] = {}
    for item in unsure:
        record = current.get(item.source_id)
        if record is None:
            outcomes[item.grant_id] = _Outcome(
                _Result.ALREADY, "the record is gone from Salesforce"
            )
            continue
        status = record.get(fields.status)
        revoked_at = _time_or_none(record.get(fields.revoked_at))
        landed = revocation_landed(
            item.reason, item.earlier_sent_at, record.get(fields.revoke_reason), revoked_at
        )
        if status == SalesforceStatus.REVOKED and landed:
            outcomes[item.grant_id] = _Outcome(_Result.REVOKED, None, revoked_at)
        elif status != SalesforceStatus.ACTIVE:
            outcomes[item.grant_id] = _Outcome(_Result.ALREADY, f"already {status}")
    return outcomes


def _time_or_none(value: object) -> datetime | None:
    try:
        return parse_sf_datetime(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _record(
    ledger: Ledger,
    settings: Settings,
    batch: list[_Claimed],
    outcomes: dict[int, _Outcome],
    now: datetime,
    result: RevokeResult,
    owner: str,
) -> None:
    worker = settings.worker
    first, ceiling = (
        timedelta(seconds=worker.retry_first_seconds),
        timedelta(seconds=worker.retry_max_seconds),
    )
    ids = [item.grant_id for item in batch]
    with ledger.appending() as session:
        events: list[NewEvent] = []
        rows, grants = revocations.locked_with_grants(session, ids)
        for item in batch:
            row, grant = rows[item.grant_id], grants[item.grant_id]
            if row.state not in OPEN_STATES:  # a sync saw the record revoked and recorded it
                log.info("revoke %s: already recorded as %s", grant.source_id, row.state)
                continue
            if row.lease_owner != owner:  # our lease ran out and another worker took over
                log.warning(
                    "revoke %s: lease lost, outcome left to %s", grant.source_id, row.lease_owner
                )
                continue
            outcome = outcomes[item.grant_id]
            if outcome.kind == _Result.FAILED:
                wait = retry_delay(item.attempts, first, ceiling)
                release(
                    row,
                    state=WorkState.FAILED,
                    last_error=outcome.detail,
                    next_attempt_at=now + wait,
                )
                result.failed += 1
                log.warning(
                    "revoke %s (%s) failed: %s", grant.source_id, grant.org_id, outcome.detail
                )
                events.append(
                    revocation_event(EventKind.REVOKE_FAILED, grant, row, now, outcome.detail)
                )
            elif outcome.kind == _Result.REVOKED:
                result.revoked += 1
                # What Salesforce now holds, so the next sync sees no change of ours.
                grant.sf_status, grant.revoked_at = SalesforceStatus.REVOKED, outcome.revoked_at
                grant.revoke_reason = row.reason[:REVOKE_REASON_LIMIT]
                grant.updated_at = now
                events.append(revocation_event(EventKind.REVOKED, grant, row, now, row.reason))
                complete(session, settings, grant, row, now)
            elif outcome.kind in _SESSIONS_EVENT:
                result.sessions += 1
                kind = _SESSIONS_EVENT[outcome.kind]
                events.append(revocation_event(kind, grant, row, now, outcome.detail))
                # Nothing is revoked in Salesforce: the row says what was done instead.
                done = RevocationOutcome(kind.value)
                complete(session, settings, grant, row, now, outcome=done, note=outcome.detail)
            else:
                release(row, state=WorkState.REVOKED, done_at=now, last_error=None)
                row.outcome, row.note = RevocationOutcome.SETTLED, outcome.detail
                result.already += 1
                events.append(
                    revocation_event(EventKind.REVOCATION_SETTLED, grant, row, now, outcome.detail)
                )
        append_events(session, events)


_SESSIONS_EVENT = {
    _Result.SESSIONS_ENDED: EventKind.SESSIONS_ENDED,
    _Result.SESSIONS_NOT_ENDED: EventKind.SESSIONS_NOT_ENDED,
}


def complete(
    session: Session,
    settings: Settings,
    grant: GrantRow,
    row: RevocationRow,
    now: datetime,
    *,
    outcome: RevocationOutcome = RevocationOutcome.REVOKED,
    note: str | None = None,
) -> None:
    """Our revocation is done (in Salesforce, or support's sessions ended for an audit
    grant, as ``outcome`` says): the row closes and the grantor is told, once.

    Whoever finds it done first calls this (the attempt itself, or enforce after a sync
    found the record revoked with our marker). A row completes once, and its notice's key
    carries this moment: the key is new, no lookup needed.
    """
    release(row, state=WorkState.REVOKED, done_at=row.done_at or now, last_error=None)
    row.outcome, row.note = outcome, note
    if row.cause != EndCause.LOGIN_AS:  # those were told why in the "rejected" email
        # A grant only the customer can revoke (audit source): their admins hear of it too.
        admins = settings.in_setup_only(grant.connection)
        enqueue(
            session, settings, grant, EmailKind.REVOKED, now, now, admins=admins, existing=set()
        )


def revocation_event(
    kind: EventKind, grant: GrantRow, row: RevocationRow, now: datetime, reason: str | None
) -> NewEvent:
    """An event of a revocation's course, by its actor, with its cause and attempt."""
    return grant_event(
        kind, grant, now, reason, actor=row.actor, cause=row.cause, attempt=row.attempts
    )


def request_revocation(
    ledger: Ledger, grant_id: int, *, reason: str, actor: str, now: datetime
) -> bool:
    """A person's revocation (``firmgrant revoke``); ``False`` if one is already under way.

    A finished or cancelled earlier revocation is reopened with the new reason and actor.
    """
    with ledger.appending() as session:
        grant, row = revocations.grant_and_revocation(session, grant_id)
        if grant is None:
            raise GrantNotFound(f"no grant {grant_id!r} in the ledger")
        if row is not None and row.state in OPEN_STATES:
            return False
        revocations.open_for(
            session,
            grant,
            row,
            cause=EndCause.MANUAL,
            reason=reason[:REVOKE_REASON_LIMIT],
            actor=actor,
            now=now,
        )
        event = grant_event(
            OPENING_EVENT[EndCause.MANUAL], grant, now, reason, actor=actor, cause=EndCause.MANUAL
        )
        append_events(session, [event])
        return True
