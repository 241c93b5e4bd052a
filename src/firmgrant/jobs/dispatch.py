"""dispatch: send the outbox, each row once.

Rows are claimed under a lease, rendered from the ledger as it is *now* (a reminder the
grant no longer needs is cancelled instead of sent), sent, and recorded one by one, each in
its own transaction right after the hand-over, so a crash repeats at most the one message in
flight. With the ``file`` backend not even that: the file is named after the Message-ID.
An SMTP message whose worker died between the server's "250 OK" and the commit is sent
again with the same Message-ID, which mail systems use to drop the copy.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage

from jinja2 import Environment, TemplateError

from firmgrant.errors import (
    MailServerUnavailable,
    PermanentMailError,
    TemporaryMailError,
    WebhookRefused,
    WebhookUnavailable,
)
from firmgrant.jobs.history import facts, grant_event
from firmgrant.ledger import Ledger, append_events, emails
from firmgrant.ledger.models import GrantRow, OutboxRow, RevocationRow
from firmgrant.ledger.work import release
from firmgrant.lifecycle import SENT_EVENT, Channel, EmailKind, EventKind, NoticeKind, WorkState
from firmgrant.notify.render import NOTICE_KINDS, Rendered, context, render
from firmgrant.notify.send import Backend, FileBackend, build_message
from firmgrant.notify.webhook import Notice, WebhookBackend
from firmgrant.policy import effective_expiry, notice_moot, reminder_schedule, retry_delay
from firmgrant.settings import Settings
from firmgrant.timeutil import Clock, iso_z

log = logging.getLogger("firmgrant.jobs")
BATCH = 50


@dataclass
class DispatchResult:
    sent: int = 0
    failed: int = 0
    undeliverable: int = 0
    cancelled: int = 0

    def summary(self) -> str:
        return (
            f"dispatch: sent={self.sent} failed={self.failed} "
            f"undeliverable={self.undeliverable} cancelled={self.cancelled}"
        )


def sender_problem(settings: Settings) -> str | None:
    """Why SMTP could not send: it needs a real sender address."""
    mail = settings.mail
    if mail.backend == "smtp" and not (mail.from_ or settings.vendor.support_email):
        return (
            "FIRMGRANT_MAIL__FROM (mail.from): required with the smtp backend "
            "(or set FIRMGRANT_VENDOR__SUPPORT_EMAIL)"
        )
    return None


def sender(settings: Settings) -> str:
    if settings.mail.from_:
        return settings.mail.from_
    if settings.vendor.support_email:
        return f"{settings.vendor.name} Support <{settings.vendor.support_email}>"
    return "firmgrant@localhost"


def dispatch(
    ledger: Ledger,
    settings: Settings,
    backend: Backend,
    templates: Environment,
    *,
    clock: Clock,
    owner: str,
    stop: Callable[[], bool] = lambda: False,
    webhook: WebhookBackend | None = None,
    advance: Callable[[], None] = lambda: None,
) -> DispatchResult:
    """Send what is due; support notices go by ``webhook`` when their channel says so.
    ``advance`` hears of each email or notice done (a progress display)."""
    result = DispatchResult()
    senders = _Senders(backend, webhook)
    lease = timedelta(seconds=settings.worker.lease_seconds)
    try:
        while not stop():
            with ledger.transaction() as session:
                claimed = emails.claim_due(
                    session, now=clock(), owner=owner, lease=lease, limit=BATCH
                )
            if not claimed:
                break
            for index, (row_id, unsure) in enumerate(claimed):
                if stop():
                    _give_back(ledger, [r for r, _ in claimed[index:]], owner)
                    return result
                if not _send_one(
                    ledger, settings, senders, templates, row_id, unsure, clock, owner, result
                ):
                    # The server or webhook is unreachable: the rest wait for the next run.
                    _give_back(ledger, [r for r, _ in claimed[index + 1 :]], owner)
                    return result
                advance()
    finally:
        backend.close()
        if webhook is not None:
            webhook.close()
    return result


@dataclass(frozen=True)
class _Senders:
    mail: Backend
    webhook: WebhookBackend | None


def _give_back(ledger: Ledger, row_ids: list[int], owner: str) -> None:
    with ledger.transaction() as session:
        emails.give_back(session, row_ids, owner)


def _send_one(
    ledger: Ledger,
    settings: Settings,
    senders: _Senders,
    templates: Environment,
    row_id: int,
    unsure: bool,
    clock: Clock,
    owner: str,
    result: DispatchResult,
) -> bool:
    """Send one claimed row and record it; ``False`` when its server is unreachable."""
    backend = senders.mail
    with ledger.sessions() as session:
        row, grant, revocation = emails.with_context(session, row_id)
        now = clock()
        obsolete = _obsolete(settings, row, grant, now)
        message = None
        notice: Notice | None = None
        problem: Exception | None = None
        if obsolete is None:
            try:
                if row.channel == Channel.WEBHOOK:
                    text = _rendered(settings, templates, row, grant, revocation, now).subject
                    notice = _notice(row, grant, text, settings, now)
                else:
                    message = _message(settings, templates, row, grant, revocation, now)
            except (TemplateError, PermanentMailError) as exc:
                problem = PermanentMailError(f"cannot build the email: {exc}")
    note: str | None = None
    if notice is not None:
        try:
            if senders.webhook is None:
                raise WebhookRefused("no webhook configured (FIRMGRANT_SUPPORT__WEBHOOK_URL)")
            note = senders.webhook.send(notice, now)
        except (WebhookUnavailable, WebhookRefused) as exc:
            problem = exc
    if message is not None:
        already = (
            unsure
            and isinstance(backend, FileBackend)
            and backend.path_for(str(message["Message-ID"])).exists()
        )
        try:
            note = None if already else backend.send(message)
        except (TemporaryMailError, PermanentMailError) as exc:
            problem = exc
    reachable = not isinstance(problem, (MailServerUnavailable, WebhookUnavailable))
    _record(ledger, settings, row_id, owner, obsolete, problem, note, clock(), result)
    return reachable


def _obsolete(settings: Settings, row: OutboxRow, grant: GrantRow, now: datetime) -> str | None:
    """Why a queued reminder or notice should not go out any more (extension, end of access)."""
    grant_facts = facts(grant)
    cap = settings.policy.max_duration
    if row.kind in NOTICE_KINDS:
        within = settings.support.ending_within
        return notice_moot(NoticeKind(row.kind), row.due_at, grant_facts, now, within, cap)
    if row.kind != EmailKind.REMINDER:
        return None
    if not grant_facts.live_in_salesforce or grant_facts.via_login_as:
        return "access already ended"
    if effective_expiry(grant_facts, cap) <= now:
        return "access already ended"
    schedule = {due for _, due in reminder_schedule(grant_facts, settings.reminders, cap)}
    if row.due_at not in schedule:
        return "the grant was extended"
    return None


def _message(
    settings: Settings,
    templates: Environment,
    row: OutboxRow,
    grant: GrantRow,
    revocation: RevocationRow | None,
    now: datetime,
) -> EmailMessage:
    to: list[str] = json.loads(row.recipients)
    support = row.kind in NOTICE_KINDS
    if not to:
        raise PermanentMailError(
            "no recipient: FIRMGRANT_SUPPORT__EMAIL is empty"
            if support
            else "no recipient: no grantor email and no admin contacts"
        )
    return build_message(
        _rendered(settings, templates, row, grant, revocation, now),
        sender=sender(settings),
        recipients=to,
        message_id=row.message_id,
        sent_at=now,
        reply_to=None if support else settings.vendor.support_email,
    )


def _rendered(
    settings: Settings,
    templates: Environment,
    row: OutboxRow,
    grant: GrantRow,
    revocation: RevocationRow | None,
    now: datetime,
) -> Rendered:
    values = context(
        vendor_name=settings.vendor.name,
        support_email=settings.vendor.support_email,
        org_id=grant.org_id,
        org_name=grant.org_name,
        grantor_username=grant.grantor_username,
        grantor_email=grant.grantor_email,
        grantee=grant.grantee,
        granted_at=grant.granted_at,
        ends_at=effective_expiry(facts(grant), settings.policy.max_duration),
        now=now,
        login_as_user=grant.login_as_user,
        reason=revocation.reason if revocation else None,
        event_at=row.due_at,
        offset=timedelta(seconds=row.offset_seconds) if row.offset_seconds else None,
        in_setup_only=settings.in_setup_only(grant.connection),
    )
    if row.kind in NOTICE_KINDS:
        values["dashboard_url"] = settings.web.url(f"/grants/{grant.id}")
    return render(templates, row.kind, values)


def _notice(
    row: OutboxRow, grant: GrantRow, text: str, settings: Settings, now: datetime
) -> Notice:
    """A support notice for the webhook: its one line, and the grant's facts for machines."""
    ends = effective_expiry(facts(grant), settings.policy.max_duration)
    return Notice(
        id=row.message_id.strip("<>"),
        kind=NoticeKind(row.kind).word,
        text=text,
        grant={
            "id": grant.id, "connection": grant.connection, "org_id": grant.org_id,
            "org_name": grant.org_name, "grantor": grant.grantor_username,
            "grantee": grant.grantee, "granted_at": iso_z(grant.granted_at),
            "ends_at": iso_z(ends), "via_login_as": grant.via_login_as,
            "login_as_user": grant.login_as_user,
            "url": settings.web.url(f"/grants/{grant.id}"),
        },
        at=now,
    )  # fmt: skip


def _record(
    ledger: Ledger,
    settings: Settings,
    row_id: int,
    owner: str,
    obsolete: str | None,
    problem: Exception | None,
    note: str | None,
    now: datetime,
    result: DispatchResult,
) -> None:
    worker = settings.worker
    with ledger.appending() as session:
        row, grant, _ = emails.with_context(session, row_id, lock=True)
        if row.lease_owner != owner:
            log.warning("email %s: lease lost to %s", row.message_id, row.lease_owner)
            return
        was_failing = row.state == WorkState.FAILED
        payload: dict[str, object] = {
            "email": row.kind,
            "message_id": row.message_id,
            "due_at": iso_z(row.due_at),
        }
        reason: str | None
        kind: EventKind
        if obsolete is not None:
            release(row, state=WorkState.CANCELLED, done_at=now, last_error=obsolete)
            result.cancelled += 1
            kind, reason = EventKind.REMINDER_CANCELLED, obsolete
        elif isinstance(problem, (TemporaryMailError, WebhookUnavailable)):
            wait = retry_delay(
                row.attempts,
                timedelta(seconds=worker.retry_first_seconds),
                timedelta(seconds=worker.retry_max_seconds),
            )
            release(
                row, state=WorkState.FAILED, last_error=str(problem), next_attempt_at=now + wait
            )
            result.failed += 1
            kind, reason = EventKind.EMAIL_FAILED, f"{problem}; retrying from {iso_z(now + wait)}"
        elif problem is not None:
            release(row, state=WorkState.UNDELIVERABLE, done_at=now, last_error=str(problem))
            result.undeliverable += 1
            kind, reason = EventKind.EMAIL_UNDELIVERABLE, str(problem)
        else:
            release(row, state=WorkState.SENT, done_at=now, last_error=note)
            result.sent += 1
            notice = row.kind in NOTICE_KINDS
            kind = EventKind.SUPPORT_NOTIFIED if notice else SENT_EVENT[EmailKind(row.kind)]
            reason = note
            payload["to"] = (
                [row.channel] if row.channel == Channel.WEBHOOK else json.loads(row.recipients)
            )
            log.debug("%s sent: %s %s", row.channel, row.kind, row.message_id)
        # Customers' emails: every outcome is history. Support notices: only that support was told.
        told = row.kind not in NOTICE_KINDS or kind == EventKind.SUPPORT_NOTIFIED
        if told and (kind != EventKind.EMAIL_FAILED or not was_failing):  # one per outage
            append_events(session, [grant_event(kind, grant, now, reason, payload=payload)])
        if problem is not None:
            log.warning(
                "%s %s %s to grant %s: %s",
                row.channel, row.kind, row.message_id, grant.source_id, problem,
            )  # fmt: skip
