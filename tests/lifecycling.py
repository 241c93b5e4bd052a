"""A real worker against the sandbox org and a real SMTP server (aiosmtpd), time controlled."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email import message_from_string, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from sqlalchemy import select

from firmgrant.ledger import Ledger, verify_chain
from firmgrant.ledger.models import GrantRow
from firmgrant.ledger.queries import grant_events
from firmgrant.sandbox import SandboxOrg
from firmgrant.settings import Settings
from firmgrant.timeutil import utcnow
from firmgrant.worker import CycleResult, Worker
from tests.sandboxing import sandbox_connection, vendor

SUPPORT = "support@firmworks.example"
ORG_ADMIN = "sf-admin@customer.example"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Mailbox:
    """What the SMTP server accepted: each message once per delivery."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.lock = threading.Lock()
        # Set `held` to hold the next message's "250 OK" back: the server has the message,
        # `arrived` is set, and the answer waits until `release` is set.
        self.held = False
        self.arrived = threading.Event()
        self.release = threading.Event()
        # Answers to RCPT TO, per address, used up one by one ("450 …", "550 …").
        self.refusals: dict[str, list[str]] = {}
        # An answer to every RCPT TO while set (a mail server refusing all, e.g. "451 …").
        self.refuse_all: str | None = None

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        with self.lock:
            answers = self.refusals.get(address)
            refusal = answers.pop(0) if answers else self.refuse_all
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        message = message_from_string(raw.decode("utf-8", errors="replace"), policy=policy.default)
        assert isinstance(message, EmailMessage)
        message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        with self.lock:
            self.messages.append(message)
            hold, self.held = self.held, False
        if hold:
            self.arrived.set()
            self.release.wait(timeout=60)
        return "250 Message accepted for delivery"

    def of_kind(self, words: str) -> list[EmailMessage]:
        return [m for m in self.messages if words in str(m["Subject"])]

    def message_ids(self) -> list[str]:
        return [str(m["Message-ID"]) for m in self.messages]


class SmtpServer:
    def __init__(
        self,
        port: int,
        *,
        smtputf8: bool = True,
        tls: tuple[Path, Path] | None = None,
        login: tuple[str, str] | None = None,
    ) -> None:
        """``tls``: (certificate, key) to require STARTTLS; ``login``: the one account."""
        self.port = port
        self.smtputf8 = smtputf8
        self.mailbox = Mailbox()
        self.tls = tls
        self.login = login
        self.logins: list[str] = []  # usernames that logged in
        self._controller: Controller | None = None

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword) and self.login is not None:
            user, password = data.login.decode(), data.password.decode()
            if (user, password) == self.login:
                self.logins.append(user)
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def _options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*self.tls)
            options.update(tls_context=context, require_starttls=True)
        if self.login is not None:
            options.update(auth_required=True, authenticator=self._authenticate)
        return options

    def start(self) -> None:
        # aiosmtpd narrates every connection from its own thread, even after a test's
        # captured stream is gone; its warnings are enough.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        self._controller = Controller(
            self.mailbox,
            hostname="127.0.0.1",
            port=self.port,
            enable_SMTPUTF8=self.smtputf8,
            **self._options(),
        )
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@dataclass
class FakeClock:
    now: datetime = field(default_factory=utcnow)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


class TickingClock(FakeClock):
    """Each reading a second after the last: a second always turns between two readings."""

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def worker_settings(org: SandboxOrg, smtp_port: int, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "connections": {"sandbox": sandbox_connection(org)},
        "vendor": vendor(org).model_copy(update={"support_email": SUPPORT}),
        "sync": {"api_floor": 0},
        "mail": {
            "backend": "smtp",
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp_port,
            "smtp_starttls": False,
            "smtp_timeout_seconds": 5,
            "from": f"FirmWorks Support <{SUPPORT}>",
        },
        "worker": {"retry_first_seconds": 60, "retry_max_seconds": 600},
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Harness:
    org: SandboxOrg
    ledger: Ledger
    settings: Settings
    clock: FakeClock
    smtp: SmtpServer

    def cycle(self) -> CycleResult:
        """One cycle of a freshly started worker (as after a restart)."""
        return Worker(self.settings, self.ledger, clock=self.clock).cycle()

    @property
    def mail(self) -> Mailbox:
        return self.smtp.mailbox

    def grant_id(self, source_id: str) -> int:
        with self.ledger.sessions() as session:
            return int(
                session.execute(
                    select(GrantRow.id).where(GrantRow.source_id == source_id)
                ).scalar_one()
            )

    def events(self, source_id: str) -> list[tuple[str, str]]:
        with self.ledger.sessions() as session:
            return [(e.kind, e.actor) for e in grant_events(session, self.grant_id(source_id))]

    def sf_status(self, source_id: str) -> str:
        return str(self.org.store.records["login_access_grant__c"][source_id]["Status__c"])

    def chain_ok(self) -> bool:
        with self.ledger.sessions() as session:
            return verify_chain(session).ok
