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
from typing import Any

from sqlalchemy import select

from firmgrant.errors import SalesforceError
from firmgrant.grant import FIELD_LIMITS
from firmgrant.jobs.enforce import enqueue, grant_event
from firmgrant.ledger import Ledger, NewEvent, append_events
from firmgrant.ledger.models import GrantRow, RevocationRow
from firmgrant.ledger.work import claim, release
from firmgrant.policy import LOGIN_AS, MANUAL, retry_delay
from firmgrant.salesforce.client import COLLECTION_LIMIT, SalesforceClient
from firmgrant.settings import Settings
from firmgrant.timeutil import Clock

log = logging.getLogger("firmgrant.jobs")

# Per-record errors that mean there is nothing left to revoke.
GONE = ("ENTITY_IS_DELETED", "NOT_FOUND", "INVALID_CROSS_REFERENCE_KEY")


@dataclass
class RevokeResult:
    revoked: int = 0
    already: int = 0
    failed: int = 0
    api_calls: int = 0
    error: str | None = None

    def summary(self) -> str:
        outcome = f" error={self.error}" if self.error else ""
        return (
            f"revoke: revoked={self.revoked} already={self.already} failed={self.failed} "
            f"api_calls={self.api_calls}{outcome}"
        )


@dataclass(frozen=True)
class _Claimed:
    grant_id: int
    source_id: str
    reason: str
    attempts: int
    unsure: bool


def _sf_time(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.000+0000")


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
        with ledger.transaction() as session:
            where = [GrantRow.connection == connection]
            if grant_ids is not None:
                where.append(RevocationRow.grant_id.in_(grant_ids))
            grant_ids_due = select(RevocationRow.grant_id).join(
                GrantRow, GrantRow.id == RevocationRow.grant_id
            )
            rows = claim(
                session,
                RevocationRow,
                now=now,
                owner=owner,
                lease=lease,
                limit=COLLECTION_LIMIT,
                where=[RevocationRow.grant_id.in_(grant_ids_due.where(*where))],
            )
            source_ids = {
                found.id: found.source_id
                for found in session.execute(
                    select(GrantRow.id, GrantRow.source_id).where(
                        GrantRow.id.in_([row.grant_id for row, _ in rows])
                    )
                )
            }
            batch = [
                _Claimed(row.grant_id, source_ids[row.grant_id], row.reason, row.attempts, unsure)
                for row, unsure in rows
            ]
        if not batch:
            break
        log.debug("%s: revoking a batch of %d", connection, len(batch))
        try:
            outcomes = _call_salesforce(settings, connection, client, batch, now)
        except SalesforceError as exc:
            # The whole call failed after the client's own retries: every row waits its turn.
            outcomes = {item.grant_id: ("failed", str(exc)) for item in batch}
            result.error = type(exc).__name__
        _record(ledger, settings, batch, outcomes, clock(), result, owner, sent_at=now)
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
) -> dict[int, tuple[str, str | None]]:
    source = settings.connections[connection].source
    fields = source.fields
    limit = FIELD_LIMITS["revoke_reason"]
    outcomes: dict[int, tuple[str, str | None]] = {}
    unsure = [item for item in batch if item.unsure]
    if unsure:
        current = client.read_collection(
            source.object_name,
            [item.source_id for item in unsure],
            [fields.id, fields.status, fields.revoke_reason],
        )
        for item in unsure:
            record = current.get(item.source_id)
            if record is None:
                outcomes[item.grant_id] = ("already", "the record is gone from Salesforce")
            elif record.get(fields.status) == "Revoked" and (
                record.get(fields.revoke_reason) == item.reason[:limit]
            ):
                outcomes[item.grant_id] = ("revoked", None)  # our lost attempt did land
            elif record.get(fields.status) != "Active":
                outcomes[item.grant_id] = ("already", f"already {record.get(fields.status)}")
    to_update = [item for item in batch if item.grant_id not in outcomes]
    if not to_update:
        return outcomes
    results = client.update_collection(
        source.object_name,
        [
            {
                "id": item.source_id,
                fields.status: "Revoked",
                fields.revoked_at: _sf_time(now),
                fields.revoke_reason: item.reason[:limit],
            }
            for item in to_update
        ],
    )
    for item, answer in zip(to_update, results, strict=False):
        errors: list[dict[str, Any]] = answer.get("errors") or []
        if answer.get("success"):
            outcomes[item.grant_id] = ("revoked", None)
        elif any(error.get("statusCode") in GONE for error in errors):
            outcomes[item.grant_id] = ("already", "deleted in Salesforce")
        else:
            detail = "; ".join(
                f"{error.get('statusCode')}: {error.get('message')}" for error in errors
            )
            outcomes[item.grant_id] = ("failed", detail or "no result for this record")
    for item in to_update[len(results) :]:
        outcomes[item.grant_id] = ("failed", "Salesforce returned no result for this record")
    return outcomes


def _record(
    ledger: Ledger,
    settings: Settings,
    batch: list[_Claimed],
    outcomes: dict[int, tuple[str, str | None]],
    now: datetime,
    result: RevokeResult,
    owner: str,
    *,
    sent_at: datetime,
) -> None:
    worker = settings.worker
    first, ceiling = (
        timedelta(seconds=worker.retry_first_seconds),
        timedelta(seconds=worker.retry_max_seconds),
    )
    ids = [item.grant_id for item in batch]
    with ledger.transaction() as session:
        events: list[NewEvent] = []
        # Two queries for the batch, not two per row.
        rows = {
            row.grant_id: row
            for row in session.execute(
                select(RevocationRow).where(RevocationRow.grant_id.in_(ids)).with_for_update()
            ).scalars()
        }
        grants = {
            grant.id: grant
            for grant in session.execute(select(GrantRow).where(GrantRow.id.in_(ids))).scalars()
        }
        for item in batch:
            row, grant = rows[item.grant_id], grants[item.grant_id]
            if row.lease_owner != owner:  # our lease ran out and another worker took over
                log.warning(
                    "revoke %s: lease lost, outcome left to %s", grant.source_id, row.lease_owner
                )
                continue
            outcome, detail = outcomes[item.grant_id]
            if outcome == "failed":
                wait = retry_delay(item.attempts, first, ceiling)
                release(row, state="failed", last_error=detail, next_attempt_at=now + wait)
                result.failed += 1
                log.warning("revoke %s (%s) failed: %s", grant.source_id, grant.org_id, detail)
                events.append(_event("revoke_failed", grant, row, now, detail))
                continue
            release(row, state="revoked", done_at=now, last_error=None)
            if outcome == "revoked":
                result.revoked += 1
                # What Salesforce now holds (the time we sent, not the time we got back:
                # a second may have turned since), so the next sync sees no change of ours.
                grant.sf_status, grant.revoked_at = "Revoked", sent_at.replace(microsecond=0)
                grant.revoke_reason = row.reason[: FIELD_LIMITS["revoke_reason"]]
                grant.updated_at = now
                events.append(_event("revoked", grant, row, now, row.reason))
                if row.cause != LOGIN_AS:  # those were told why in the "rejected" email
                    # A revocation completes once: its notice's key is new (no lookup).
                    enqueue(
                        session, settings, grant, "revoked", now, now, admins=False, existing=set()
                    )
            else:
                result.already += 1
                events.append(_event("revocation_settled", grant, row, now, detail))
        append_events(session, events)


def _event(
    kind: str, grant: GrantRow, row: RevocationRow, now: datetime, reason: str | None
) -> NewEvent:
    return grant_event(
        kind, grant, now, reason, actor=row.actor, cause=row.cause, attempt=row.attempts
    )


def request_revocation(
    ledger: Ledger, grant_id: int, *, reason: str, actor: str, now: datetime
) -> bool:
    """A person's revocation (``firmgrant revoke``); ``False`` if one is already under way.

    A finished or cancelled earlier revocation is reopened with the new reason and actor.
    """
    with ledger.transaction() as session:
        grant = session.get(GrantRow, grant_id)
        if grant is None:
            raise ValueError(f"no grant {grant_id}")
        row = session.get(RevocationRow, grant_id, with_for_update=True)
        if row is not None and row.state in ("pending", "failed"):
            return False
        if row is None:
            row = RevocationRow(grant_id=grant_id, created_at=now)
            session.add(row)
        row.cause, row.reason, row.actor = MANUAL, reason[: FIELD_LIMITS["revoke_reason"]], actor
        row.state, row.attempts, row.next_attempt_at = "pending", 0, now
        row.last_error = row.lease_owner = row.lease_until = row.done_at = None
        append_events(
            session,
            [grant_event("revoke_requested", grant, now, reason, actor=actor, cause=MANUAL)],
        )
        return True
