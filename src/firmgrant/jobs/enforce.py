"""enforce and remind: turn the ledger's grants into revocations and emails to send.

Both are level-triggered. They read what the ledger holds now, ask ``policy`` what each
grant needs, and write revocation and outbox rows whose keys (one revocation per grant, one
email per grant, kind and due time) make a second run, or a second replica, a no-op. The
rows are written in the same transaction as the events that explain them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from firmgrant.ledger import Ledger, NewEvent, append_events
from firmgrant.ledger.chain import SYSTEM_ACTOR
from firmgrant.ledger.models import GrantRow, OutboxRow, RevocationRow
from firmgrant.ledger.work import release
from firmgrant.lifecycle import OPEN_STATES
from firmgrant.policy import (
    LOGIN_AS,
    GrantFacts,
    effective_expiry,
    reminder_due,
    reminder_schedule,
    revocation_landed,
    revocation_needed,
)
from firmgrant.settings import Settings
from firmgrant.timeutil import format_duration, iso_z

log = logging.getLogger("firmgrant.jobs")


def facts(grant: GrantRow) -> GrantFacts:
    return GrantFacts(
        grant.granted_at, grant.expires_at, grant.via_login_as, grant.sf_status, grant.deleted
    )


def recipients(settings: Settings, grant: GrantRow, *, admins: bool = True) -> list[str]:
    """The grantor, then the org's admin contacts; each address once."""
    wanted = [grant.grantor_email or "", *(settings.admin_contacts(grant.org_id) if admins else [])]
    seen: dict[str, str] = {}
    for address in wanted:
        if address and address.lower() not in seen:
            seen[address.lower()] = address
    return list(seen.values())


def message_id(settings: Settings, grant_id: int, kind: str, due_at: datetime) -> str:
    """Stable per outbox key (``grant:kind:due``), so a resent copy is recognisably the same."""
    sender = settings.mail.from_ or ""
    domain = sender.rpartition("@")[2].strip("> ") or "firmgrant.invalid"
    return f"<firmgrant.{grant_id}.{kind}.{int(due_at.timestamp())}@{domain}>"


def enqueue(
    session: Session,
    settings: Settings,
    grant: GrantRow,
    kind: str,
    due_at: datetime,
    now: datetime,
    *,
    offset_seconds: int | None = None,
    admins: bool = True,
    existing: set[tuple[int, str, datetime]] | None = None,
) -> bool:
    """Add one email to the outbox unless that (grant, kind, due) is already there.

    ``existing``: the keys already known to be in the outbox, read in one query by a caller
    that enqueues many (without it, this one key is looked up).
    """
    if existing is None:
        found = session.execute(
            select(OutboxRow.id).where(
                OutboxRow.grant_id == grant.id, OutboxRow.kind == kind, OutboxRow.due_at == due_at
            )
        ).first()
        existing = {(grant.id, kind, due_at)} if found else set()
    if (grant.id, kind, due_at) in existing:
        return False
    session.add(
        OutboxRow(
            grant_id=grant.id,
            kind=kind,
            due_at=due_at,
            offset_seconds=offset_seconds,
            recipients=json.dumps(recipients(settings, grant, admins=admins)),
            message_id=message_id(settings, grant.id, kind, due_at),
            state="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )
    return True


def complete(
    session: Session, settings: Settings, grant: GrantRow, row: RevocationRow, now: datetime
) -> None:
    """Our revocation is done in Salesforce: the row closes and the grantor is told, once.

    Whoever finds it done first calls this (the attempt itself, or enforce after a sync
    found the record revoked with our marker). A row completes once, and its notice's key
    carries this moment: the key is new, no lookup needed.
    """
    release(row, state="revoked", done_at=row.done_at or now, last_error=None)
    if row.cause != LOGIN_AS:  # those were told why in the "rejected" email
        enqueue(session, settings, grant, "revoked", now, now, admins=False, existing=set())


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


def grant_event(
    kind: str,
    grant: GrantRow,
    now: datetime,
    reason: str | None,
    *,
    actor: str = SYSTEM_ACTOR,
    payload: dict[str, object] | None = None,
    **fields: object,
) -> NewEvent:
    """An event of the lifecycle about one grant (the jobs' and the CLI's)."""
    return NewEvent(
        kind=kind,
        at=now,
        connection=grant.connection,
        source_id=grant.source_id,
        grant_id=grant.id,
        actor=actor,
        reason=reason,
        payload={**(payload or {}), **fields},
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
            or_(
                GrantRow.via_login_as.is_(True),
                GrantRow.expires_at <= now,
                GrantRow.granted_at <= now - cap,
            ),
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
                    grant_event(
                        "revoked",
                        grant,
                        now,
                        revocation.reason,
                        actor=revocation.actor,
                        cause=revocation.cause,
                        attempt=revocation.attempts,
                    )
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


@dataclass
class RemindResult:
    queued: int = 0
    cancelled: int = 0

    def summary(self) -> str:
        return f"remind: queued={self.queued} cancelled={self.cancelled}"


def remind(ledger: Ledger, settings: Settings, *, now: datetime) -> RemindResult:
    """Queue the one reminder due for each grant; cancel the ones an extension made obsolete."""
    cap, offsets = settings.policy.max_duration, settings.reminders
    horizon = max(offsets, default=None)
    result = RemindResult()
    with ledger.appending() as session:
        events: list[NewEvent] = []
        grants: dict[int, GrantRow] = {}
        if horizon is not None:
            soon = session.execute(
                select(GrantRow).where(
                    GrantRow.sf_status == "Active",
                    GrantRow.deleted.is_(False),
                    GrantRow.via_login_as.is_(False),
                    GrantRow.expires_at > now,
                    GrantRow.granted_at > now - cap,
                    or_(
                        GrantRow.expires_at <= now + horizon,
                        GrantRow.granted_at <= now + horizon - cap,
                    ),
                )
            ).scalars()
            grants.update((grant.id, grant) for grant in soon)
        open_rows = list(
            session.execute(
                select(OutboxRow, GrantRow)
                .join(GrantRow, GrantRow.id == OutboxRow.grant_id)
                .where(
                    OutboxRow.kind == "reminder",
                    OutboxRow.state.in_(OPEN_STATES),
                    or_(OutboxRow.lease_until.is_(None), OutboxRow.lease_until < now),
                )
            )
        )
        grants.update((grant.id, grant) for _, grant in open_rows)
        existing = {
            (grant_id, "reminder", due_at)
            for grant_id, due_at in session.execute(
                select(OutboxRow.grant_id, OutboxRow.due_at).where(
                    OutboxRow.kind == "reminder", OutboxRow.grant_id.in_(list(grants))
                )
            )
        }
        wanted: dict[int, tuple[int, datetime] | None] = {}
        for grant_id, grant in grants.items():
            due = reminder_due(facts(grant), offsets, cap, now)
            wanted[grant_id] = (int(due[0].total_seconds()), due[1]) if due else None
            if due and enqueue(
                session,
                settings,
                grant,
                "reminder",
                due[1],
                now,
                offset_seconds=int(due[0].total_seconds()),
                existing=existing,
            ):
                result.queued += 1
                events.append(
                    grant_event(
                        "reminder_due",
                        grant,
                        now,
                        f"{format_duration(due[0])} before access ends",
                        due_at=iso_z(due[1]),
                    )
                )
        for row, grant in open_rows:
            want = wanted.get(grant.id)
            if want is not None and row.due_at == want[1]:
                continue
            schedule = {d for _, d in reminder_schedule(facts(grant), offsets, cap)}
            why = (
                "superseded by a nearer reminder"
                if row.due_at in schedule and want is not None
                else "no longer due: the grant was extended or has ended"
            )
            row.state, row.done_at = "cancelled", now
            row.last_error = why
            events.append(
                grant_event("reminder_cancelled", grant, now, why, due_at=iso_z(row.due_at))
            )
            result.cancelled += 1
        append_events(session, events)
    return result
