"""Support notices over an outgoing webhook: Slack's incoming-webhook JSON, or generic JSON
signed with HMAC-SHA256.

The json format's receiver checks ``X-Firmgrant-Signature: sha256=<hex>``, the HMAC of
``"<X-Firmgrant-Timestamp>.<body>"`` under the shared secret, and refuses old timestamps
(replays). Every request carries ``X-Firmgrant-Notice-Id`` (the outbox key, also the
body's ``id``): a notice resent after a crash has the same id, so the receiver can drop it.
The webhook's URL is a secret (Slack's carries its token): it never reaches a log or error,
which is why this posts with ``http.client`` (urllib3 logs each request's path at DEBUG).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ssl
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

from firmgrant.errors import WebhookRefused, WebhookUnavailable
from firmgrant.settings import SupportSettings
from firmgrant.timeutil import iso_z


@dataclass(frozen=True)
class Notice:
    """One notice as the webhook gets it."""

    id: str
    kind: str  # NoticeKind.word
    text: str  # one line for people (Slack's message)
    grant: dict[str, Any]
    at: datetime


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of ``timestamp.body``: what a receiver recomputes to trust a notice."""
    return (
        "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    )


class WebhookBackend:
    def __init__(self, settings: SupportSettings) -> None:
        if settings.webhook_url is None:
            raise ValueError("no webhook configured")
        self._url = urlsplit(settings.webhook_url.get_secret_value())
        self._settings = settings
        self._connection: http.client.HTTPConnection | None = None

    def __repr__(self) -> str:
        return f"WebhookBackend(format={self._settings.webhook_format!r})"

    def body(self, notice: Notice) -> bytes:
        if self._settings.webhook_format == "slack":
            return orjson.dumps({"text": notice.text})
        return orjson.dumps(
            {
                "id": notice.id,
                "kind": notice.kind,
                "text": notice.text,
                "at": iso_z(notice.at),
                "grant": notice.grant,
            }
        )

    def headers(self, notice: Notice, body: bytes, now: datetime) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "X-Firmgrant-Notice-Id": notice.id}
        secret = self._settings.webhook_secret
        if self._settings.webhook_format == "json" and secret is not None:
            timestamp = str(int(now.timestamp()))
            headers["X-Firmgrant-Timestamp"] = timestamp
            headers["X-Firmgrant-Signature"] = signature(
                secret.get_secret_value().encode(), timestamp, body
            )
        return headers

    def send(self, notice: Notice, now: datetime) -> str:
        """Post one notice (no redirects followed); the receiver's status on success."""
        body = self.body(notice)
        target = self._url.path or "/"
        if self._url.query:
            target += "?" + self._url.query
        try:
            connection = self._connect()
            connection.request("POST", target, body=body, headers=self.headers(notice, body, now))
            response = connection.getresponse()
            answer = response.read(300)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise WebhookUnavailable(f"webhook unreachable: {type(exc).__name__}") from None
        status = response.status
        if response.will_close:
            self.close()
        if status >= 500 or status in (408, 429):
            raise WebhookUnavailable(f"webhook answered {status}")
        if status >= 300:
            text = answer.decode("utf-8", "replace")[:200]
            raise WebhookRefused(f"webhook refused the notice: {status} {text!r}")
        return f"webhook answered {status}"

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            host, port = self._url.hostname or "", self._url.port
            timeout = self._settings.webhook_timeout_seconds
            self._connection = (
                http.client.HTTPSConnection(
                    host, port, timeout=timeout, context=ssl.create_default_context()
                )
                if self._url.scheme == "https"
                else http.client.HTTPConnection(host, port, timeout=timeout)
            )
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


__all__ = ["Notice", "WebhookBackend", "signature"]
