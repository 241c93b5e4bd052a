"""Queueing emails and support notices: who gets them, their stable Message-ID, one row per
(grant, kind, due) and, for notices, per channel."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from firmgrant.ledger import emails
from firmgrant.ledger.models import GrantRow
from firmgrant.lifecycle import Channel, EmailKind, NoticeKind
from firmgrant.settings import Settings


def recipients(settings: Settings, grant: GrantRow, *, admins: bool = True) -> list[str]:
    """The grantor, then the org's admin contacts; each address once."""
    wanted = [grant.grantor_email or "", *(settings.admin_contacts(grant.org_id) if admins else [])]
    seen: dict[str, str] = {}
    for address in wanted:
        if address and address.lower() not in seen:
            seen[address.lower()] = address
    return list(seen.values())


def message_id(
    settings: Settings, grant_id: int, kind: EmailKind | NoticeKind, due_at: datetime
) -> str:
    """Stable per outbox key (``grant:kind:due``), so a resent copy is recognisably the same."""
    sender = settings.mail.from_ or ""
    domain = sender.rpartition("@")[2].strip("> ") or "firmgrant.invalid"
    return f"<firmgrant.{grant_id}.{kind}.{int(due_at.timestamp())}@{domain}>"


def enqueue(
    session: Session,
    settings: Settings,
    grant: GrantRow,
    kind: EmailKind,
    due_at: datetime,
    now: datetime,
    *,
    offset_seconds: int | None = None,
    admins: bool = True,
    existing: set[emails.Key] | None = None,
) -> bool:
    """Add one email to the outbox unless that (grant, kind, due) is already there.

    ``existing``: the keys already known to be in the outbox, read in one query by a caller
    that enqueues many (without it, this grant's keys are looked up).
    """
    if existing is None:
        existing = emails.keys(session, kind, [grant.id])
    if (grant.id, kind, due_at) in existing:
        return False
    emails.add(
        session,
        grant_id=grant.id,
        kind=kind,
        due_at=due_at,
        offset_seconds=offset_seconds,
        recipients=recipients(settings, grant, admins=admins),
        message_id=message_id(settings, grant.id, kind, due_at),
        now=now,
    )
    return True


def enqueue_notice(
    session: Session,
    settings: Settings,
    grant: GrantRow,
    kind: NoticeKind,
    due_at: datetime,
    channel: Channel,
    now: datetime,
) -> None:
    """Add one support notice on one channel (the caller checked its key is new)."""
    emails.add(
        session,
        grant_id=grant.id,
        kind=kind,
        due_at=due_at,
        offset_seconds=None,
        recipients=settings.support.email if channel == Channel.EMAIL else [],
        message_id=message_id(settings, grant.id, kind, due_at),
        now=now,
        channel=channel,
    )
