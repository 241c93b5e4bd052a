"""remind: queue the one reminder due for each grant; cancel the ones an extension made moot.

Level-triggered: it reads what the ledger holds now, asks ``policy`` which reminder is due,
and writes outbox rows whose key (grant, kind, due time) makes a second run a no-op, in the
same transaction as the events that explain them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import not_, or_, select

from firmgrant.jobs.history import facts, grant_event
from firmgrant.jobs.outbox import enqueue
from firmgrant.ledger import Ledger, NewEvent, append_events
from firmgrant.ledger.models import GrantRow, OutboxRow
from firmgrant.ledger.queries import ends_by
from firmgrant.lifecycle import OPEN_STATES
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
            soon = session.execute(
                select(GrantRow).where(
                    GrantRow.sf_status == "Active",
                    GrantRow.deleted.is_(False),
                    GrantRow.via_login_as.is_(False),
                    not_(ends_by(now, cap)),
                    ends_by(now + horizon, cap),
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
