"""remind: queue the one reminder due for each grant; cancel the ones an extension made moot.

Level-triggered: it reads what the ledger holds now, asks ``policy`` which reminder is due,
and writes outbox rows whose key (grant, kind, due time) makes a second run a no-op, in the
same transaction as the events that explain them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from firmgrant.jobs.history import facts, grant_event
from firmgrant.jobs.outbox import enqueue
from firmgrant.ledger import Ledger, NewEvent, append_events, emails
from firmgrant.ledger.models import GrantRow
from firmgrant.lifecycle import EmailKind, EventKind, WorkState
from firmgrant.policy import reminder_due, reminder_schedule
from firmgrant.settings import Settings
from firmgrant.timeutil import format_duration, iso_z


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
            grants.update((g.id, g) for g in emails.ending_within(session, now, horizon, cap))
        open_rows = emails.open_of_kind(session, EmailKind.REMINDER, now)
        grants.update((grant.id, grant) for _, grant in open_rows)
        existing = emails.keys(session, EmailKind.REMINDER, grants)
        wanted: dict[int, datetime | None] = {}
        for grant_id, grant in grants.items():
            due = reminder_due(facts(grant), offsets, cap, now)
            wanted[grant_id] = due[1] if due else None
            if due and _queue(session, settings, grant, due, now, existing):
                result.queued += 1
                why = f"{format_duration(due[0])} before access ends"
                events.append(
                    grant_event(EventKind.REMINDER_DUE, grant, now, why, due_at=iso_z(due[1]))
                )
        for row, grant in open_rows:
            want = wanted.get(grant.id)
            if want is not None and row.due_at == want:
                continue
            schedule = {d for _, d in reminder_schedule(facts(grant), offsets, cap)}
            why = (
                "superseded by a nearer reminder"
                if row.due_at in schedule and want is not None
                else "no longer due: the grant was extended or has ended"
            )
            row.state, row.done_at, row.last_error = WorkState.CANCELLED, now, why
            events.append(
                grant_event(EventKind.REMINDER_CANCELLED, grant, now, why, due_at=iso_z(row.due_at))
            )
            result.cancelled += 1
        append_events(session, events)
    return result


def _queue(
    session: Session,
    settings: Settings,
    grant: GrantRow,
    due: tuple[timedelta, datetime],
    now: datetime,
    existing: set[emails.Key],
) -> bool:
    offset, due_at = due
    return enqueue(
        session,
        settings,
        grant,
        EmailKind.REMINDER,
        due_at,
        now,
        offset_seconds=int(offset.total_seconds()),
        existing=existing,
    )
