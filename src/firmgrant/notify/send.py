"""Messages (``EmailMessage`` + ``policy.default``) and the backends that deliver them.

Backends: ``smtp`` (one connection per dispatch run, STARTTLS, auth, timeouts), ``file``
(one ``.eml`` per message, named after its Message-ID and written atomically: writing it
again replaces it, so a retried send leaves one file) and ``console`` (stdout).
Each send raises :class:`TemporaryMailError` (retry this one later; its subclass
:class:`MailServerUnavailable` means no message can go now) or :class:`PermanentMailError`
(a 5xx, an address the server cannot carry: recorded, not retried).
"""

from __future__ import annotations

import hashlib
import os
import smtplib
import ssl
import sys
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Protocol

from firmgrant.errors import (
    MailError,
    MailServerUnavailable,
    PermanentMailError,
    TemporaryMailError,
)
from firmgrant.notify.render import Rendered
from firmgrant.settings import MailSettings


def parse_address(text: str) -> Address:
    """``Name <a@b>`` or ``a@b`` → Address; line breaks are refused, never folded in.

    Internationalised local parts (``zoë@…``) are kept: such messages go out as SMTPUTF8.
    """
    if "\r" in text or "\n" in text:
        raise PermanentMailError(f"address contains a line break: {text!r}")
    name, address = parseaddr(text)
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or any(c.isspace() for c in address):
        raise PermanentMailError(f"not an email address: {text!r}")
    try:
        return Address(display_name=name, username=local, domain=domain)
    except (ValueError, IndexError) as exc:
        raise PermanentMailError(f"not an email address: {text!r} ({exc})") from None


def build_message(
    rendered: Rendered,
    *,
    sender: str,
    recipients: list[str],
    message_id: str,
    sent_at: object,
    reply_to: str | None = None,
) -> EmailMessage:
    addresses = [parse_address(r) for r in recipients]
    international = any(not a.addr_spec.isascii() for a in addresses)
    message = EmailMessage(policy=policy.SMTPUTF8 if international else policy.default)
    # Header values come from templates fed customer text: no line break may survive.
    message["Subject"] = " ".join(rendered.subject.split())
    message["From"] = parse_address(sender)
    message["To"] = addresses
    if reply_to:
        message["Reply-To"] = parse_address(reply_to)
    message["Message-ID"] = message_id
    message["Date"] = format_datetime(sent_at)  # type: ignore[arg-type]
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message


class Backend(Protocol):
    def send(self, message: EmailMessage) -> str | None:
        """Hand the message over; a note when some recipients were refused."""

    def close(self) -> None: ...


class _NoConnection:
    def close(self) -> None:
        return None


class FileBackend(_NoConnection):
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path_for(self, message_id: str) -> Path:
        safe = hashlib.sha256(message_id.encode()).hexdigest()[:16]
        return self.directory / f"{safe}.eml"

    def send(self, message: EmailMessage) -> str | None:
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.path_for(str(message["Message-ID"]))
        temporary = target.with_suffix(".tmp")
        try:
            temporary.write_bytes(message.as_bytes())
            os.replace(temporary, target)
        except OSError as exc:
            raise TemporaryMailError(f"cannot write {target}: {exc.strerror}") from None
        return None


class ConsoleBackend(_NoConnection):
    def send(self, message: EmailMessage) -> str | None:
        sys.stdout.write(message.as_string() + "\n")
        sys.stdout.flush()
        return None


class SmtpBackend:
    """One SMTP connection for a dispatch run, opened on the first message."""

    def __init__(self, settings: MailSettings) -> None:
        self.settings = settings
        self._smtp: smtplib.SMTP | None = None

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                self._smtp.close()
            self._smtp = None

    def connect(self) -> None:
        """Open (and log in to) the connection now, as `firmgrant check` does."""
        if self._smtp is None:
            self._smtp = self._connect()

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        try:
            smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_seconds)
            if s.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if s.smtp_username and s.smtp_password:
                smtp.login(s.smtp_username, s.smtp_password.get_secret_value())
        except smtplib.SMTPAuthenticationError as exc:
            raise MailServerUnavailable(f"SMTP login refused ({exc.smtp_code})") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise MailServerUnavailable(
                f"SMTP server {s.smtp_host}:{s.smtp_port} unavailable: {_describe(exc)}"
            ) from None
        return smtp

    def send(self, message: EmailMessage) -> str | None:
        if self._smtp is None:
            self._smtp = self._connect()
        try:
            refused = self._smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = {code for code, _ in exc.recipients.values()}
            refusal = PermanentMailError if all(c >= 500 for c in codes) else TemporaryMailError
            raise refusal(f"recipients refused: {_codes(exc.recipients)}") from None
        except smtplib.SMTPNotSupportedError:
            # An address with accents needs SMTPUTF8; this server cannot carry it at all.
            raise PermanentMailError(
                "the mail server does not support SMTPUTF8, needed for "
                f"{', '.join(str(a) for a in message['To'].addresses if not a.addr_spec.isascii())}"
            ) from None
        except smtplib.SMTPResponseException as exc:
            self._drop()
            if exc.smtp_code >= 500:
                error: type[MailError] = PermanentMailError
            elif exc.smtp_code == 421:  # the server is closing the connection
                error = MailServerUnavailable
            else:
                error = TemporaryMailError
            raise error(f"SMTP {exc.smtp_code}: {_text(exc.smtp_error)}") from None
        except (smtplib.SMTPException, OSError) as exc:
            self._drop()
            raise MailServerUnavailable(f"SMTP failed: {_describe(exc)}") from None
        if refused:  # the others accepted it: the message went out; say who did not get it
            return f"some recipients refused: {_codes(refused)}"
        return None

    def _drop(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _codes(recipients: dict[str, tuple[int, bytes]]) -> str:
    return ", ".join(f"{r} ({code})" for r, (code, _) in recipients.items())


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def make_backend(settings: MailSettings) -> Backend:
    if settings.backend == "smtp":
        return SmtpBackend(settings)
    if settings.backend == "console":
        return ConsoleBackend()
    return FileBackend(settings.file_dir)
