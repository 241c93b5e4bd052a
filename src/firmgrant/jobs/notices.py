"""notices: queue what the vendor's support team hears of: a grant arrived, was extended,
is about to end, was rejected.

Level-triggered like ``remind``: each run rereads the last ``policy.NEWS_WINDOW`` of the
event log and the grants ending within ``support.ending_within``, asks ``policy`` which
notice each calls for, and writes outbox rows (one per channel) whose key
(grant, kind, due, channel) makes a second run a no-op. ``dispatch`` sends them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from firmgrant.jobs.history import facts
from firmgrant.jobs.outbox import enqueue_notice
from firmgrant.ledger import Ledger, emails, notices
from firmgrant.ledger.models import GrantRow
from firmgrant.lifecycle import NoticeKind
from firmgrant.policy import NEWS_WINDOW, ending_notice_due, notice_for
from firmgrant.settings import Settings


@dataclass
class NoticeResult:
    queued: int = 0

    def summary(self) -> str:
        return f"notices: queued={self.queued}"


def plan_notices(ledger: Ledger, settings: Settings, *, now: datetime) -> NoticeResult:
    """Queue the support notices due now on every configured channel."""
    support, cap = settings.support, settings.policy.max_duration
    result = NoticeResult()
    channels = support.channels()
    if not channels or not support.notices:
        return result
    with ledger.transaction() as session:
        wanted: list[tuple[GrantRow, NoticeKind, datetime]] = []
        for news in notices.news_since(session, now - NEWS_WINDOW):
            found = notice_for(news.kind, news.changes, facts(news.grant), now, cap)
            if found is not None:
                wanted.append((news.grant, *found))
        for grant in emails.ending_within(session, now, support.ending_within, cap):
            due = ending_notice_due(facts(grant), support.ending_within, cap)
            wanted.append((grant, NoticeKind.ENDING, due))
        wanted = [(g, kind, due) for g, kind, due in wanted if kind in support.notices]
        existing = notices.keys(session, {grant.id for grant, _, _ in wanted})
        for grant, kind, due in wanted:
            for channel in channels:
                if (grant.id, kind, due, channel) not in existing:
                    enqueue_notice(session, settings, grant, kind, due, channel, now)
                    existing.add((grant.id, kind, due, channel))
                    result.queued += 1
    return result
