"""What the support notices read: recent news from the event log, and the notice keys
already in the outbox (rows are written by ``ledger.emails.add`` with their channel)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from firmgrant.ledger.models import EventRow, GrantRow, OutboxRow
from firmgrant.lifecycle import Channel, EventKind, NoticeKind

NoticeKey = tuple[int, NoticeKind, datetime, Channel]
NEWS = (EventKind.DISCOVERED, EventKind.CHANGED, EventKind.REJECTED)


@dataclass(frozen=True)
class News:
    """An event that may call for a notice, with its grant as it is now."""

    kind: EventKind
    at: datetime
    changes: dict[str, list[Any]]
    grant: GrantRow


def news_since(session: Session, since: datetime) -> list[News]:
    """Grants discovered, changed or rejected at or after ``since``, oldest first.

    Narrowed in SQL to what ``policy.notice_for`` can act on (it decides): grants made since
    then, and changes of an expiry. A first sync of 100,000 old grants leaves a day of events
    that would otherwise be read back, parsed and dropped at every cycle.
    """
    query = (
        select(EventRow.kind, EventRow.at, EventRow.payload, GrantRow)
        .join(GrantRow, GrantRow.id == EventRow.grant_id)
        .where(
            EventRow.at >= since,
            EventRow.kind.in_([k.value for k in NEWS]),
            or_(
                GrantRow.granted_at >= since,
                and_(
                    EventRow.kind == EventKind.CHANGED,
                    EventRow.payload.contains('"expires_at"', autoescape=True),
                ),
            ),
        )
        .order_by(EventRow.id)
    )
    return [
        News(EventKind(kind), at, json.loads(payload).get("changes") or {}, grant)
        for kind, at, payload, grant in session.execute(query)
    ]


def keys(session: Session, grant_ids: Iterable[int]) -> set[NoticeKey]:
    """The (grant, kind, due, channel) keys of notices already queued for these grants."""
    query = select(OutboxRow.grant_id, OutboxRow.kind, OutboxRow.due_at, OutboxRow.channel).where(
        OutboxRow.kind.in_([k.value for k in NoticeKind]),
        OutboxRow.grant_id.in_(list(grant_ids)),
    )
    return {
        (grant_id, NoticeKind(kind), due_at, Channel(channel))
        for grant_id, kind, due_at, channel in session.execute(query)
    }


__all__ = ["NEWS", "News", "NoticeKey", "keys", "news_since"]
