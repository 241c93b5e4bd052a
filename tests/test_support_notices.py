"""Support hears of grants as they happen: a real local webhook receiver (Slack format and
signed JSON) and the real SMTP server, on SQLite and PostgreSQL, through the worker's cycle."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select

from firmgrant.errors import ConfigError
from firmgrant.ledger import Ledger
from firmgrant.ledger.models import OutboxRow
from firmgrant.sandbox import SandboxOrg
from firmgrant.settings import Settings, load_settings
from firmgrant.timeutil import utcnow
from tests.lifecycling import FakeClock, Harness, SmtpServer, worker_settings

QUEUE = "queue@firmworks.example"
SECRET = "whsec-test-7f3a9c"


class Sink:
    """A webhook receiver on loopback: keeps each request; answers with the next scripted
    status (200 once the script is used up), 503 to any body holding ``busy_for``."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.script: list[int] = []
        self.busy_for: bytes | None = None
        self.answered: list[int] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                sink.received.append((dict(self.headers.items()), body))
                status = sink.script.pop(0) if sink.script else 200
                if sink.busy_for is not None and sink.busy_for in body:
                    status = 503
                sink.answered.append(status)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/B000/xoxsecret"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.received]

    def delivered(self) -> list[str]:
        """The texts of the notices the receiver took (answered 2xx)."""
        return [
            b["text"]
            for b, status in zip(self.bodies(), self.answered, strict=True)
            if status < 300
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sink() -> Iterator[Sink]:
    receiver = Sink()
    yield receiver
    receiver.close()


def _harness(
    org: SandboxOrg, ledger: Ledger, smtp: SmtpServer, sink: Sink, **support: object
) -> Harness:
    settings = worker_settings(org, smtp.port, support={"webhook_url": sink.url, **support})
    return Harness(org, ledger, settings, FakeClock(), smtp)


def _support_mail(harness: Harness) -> list[str]:
    mail = harness.mail.messages
    return [str(m["Subject"]).strip() for m in mail if QUEUE in str(m["X-Envelope-To"])]


def _notice_states(harness: Harness) -> list[tuple[str, str, str]]:
    with harness.ledger.sessions() as session:
        rows = session.execute(
            select(OutboxRow.kind, OutboxRow.channel, OutboxRow.state)
            .where(OutboxRow.kind.like("support_%"))
            .order_by(OutboxRow.id)
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


def test_a_new_grant_is_told_once_by_slack_webhook_and_by_email(
    sandbox: SandboxOrg, ledger: Ledger, smtp: SmtpServer, sink: Sink,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    harness = _harness(sandbox, ledger, smtp, sink, email=[QUEUE])
    customers = sandbox.customers
    new = customers.grant(duration="1 Week", org_name="Acme <b>Corp</b>")
    customers.grant(duration="1 Month", at=utcnow() - timedelta(days=3))  # old news: not told
    caplog.set_level(logging.DEBUG)

    harness.cycle()
    [slack] = sink.bodies()
    assert set(slack) == {"text"}
    assert slack["text"].startswith("Access granted: Acme <b>Corp</b>, until ")
    [subject] = _support_mail(harness)
    assert subject.startswith("Access granted: Acme <b>Corp</b>")
    [email] = [m for m in harness.mail.messages if QUEUE in str(m["X-Envelope-To"])]
    html = email.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "Acme &lt;b&gt;Corp&lt;/b&gt;" in html
    assert f"/grants/{harness.grant_id(new['Id'])}" in html
    assert ("support_notified", "system:firmgrant") in harness.events(new["Id"])

    harness.clock.advance(timedelta(minutes=5))
    harness.cycle()
    harness.cycle()
    assert len(sink.received) == 1
    assert len(_support_mail(harness)) == 1
    assert "xoxsecret" not in caplog.text  # the webhook's URL carries its token


def test_signed_json_is_verifiable_and_a_busy_webhook_gets_the_same_notice_again(
    sandbox: SandboxOrg, ledger: Ledger, smtp: SmtpServer, sink: Sink
) -> None:
    harness = _harness(sandbox, ledger, smtp, sink, webhook_format="json", webhook_secret=SECRET)
    grant = sandbox.customers.grant(duration="1 Day", org_id="00D5e0000012345")
    sink.script = [503]

    first = harness.cycle()
    assert first.dispatch is not None
    assert first.dispatch.failed == 1
    harness.cycle()  # within the backoff: not tried again
    assert len(sink.received) == 1
    harness.clock.advance(timedelta(minutes=2))
    harness.cycle()
    harness.cycle()

    assert len(sink.received) == 2
    (busy, _), (headers, body) = sink.received
    assert headers["X-Firmgrant-Notice-Id"] == busy["X-Firmgrant-Notice-Id"]
    expected = hmac.new(
        SECRET.encode(), headers["X-Firmgrant-Timestamp"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    assert headers["X-Firmgrant-Signature"] == f"sha256={expected}"
    notice = json.loads(body)
    assert notice["id"] == headers["X-Firmgrant-Notice-Id"]
    assert notice["kind"] == "granted"
    assert notice["grant"]["org_id"] == "00D5e0000012345"
    assert notice["grant"]["id"] == harness.grant_id(grant["Id"])
    assert _notice_states(harness) == [("support_granted", "webhook", "sent")]


def test_ending_extended_and_rejected_grants_are_told_and_a_moot_notice_is_dropped(
    sandbox: SandboxOrg, ledger: Ledger, smtp: SmtpServer, sink: Sink
) -> None:
    harness = _harness(sandbox, ledger, smtp, sink)
    customers = sandbox.customers
    harness.clock.now = utcnow().replace(microsecond=0)
    ending = customers.grant(
        duration="1 Week", at=harness.clock.now - timedelta(days=6, hours=23, minutes=30)
    )
    customers.grant(duration="1 Week", grantor="ana@acme.example", login_as_user="bob@acme.example")
    sink.busy_for = b"Access ending"  # the ending notice finds the webhook busy

    harness.cycle()
    [busy] = [b["text"] for b in sink.bodies() if b["text"].startswith("Access ending")]
    assert busy.startswith("Access ending in 30 minutes: ")

    sink.busy_for = None
    customers.extend(ending["Id"], "1 Month")
    harness.clock.advance(timedelta(minutes=2))
    harness.cycle()
    harness.cycle()
    # The rejection and the extension reach support once each; the busy ending notice no
    # longer applies (the grant was extended) and is never sent.
    assert sorted(t.split(":")[0] for t in sink.delivered()) == [
        "Access extended", "Grant rejected",
    ]  # fmt: skip
    kinds = {kind: state for kind, _, state in _notice_states(harness)}
    assert kinds == {
        "support_rejected": "sent", "support_ending": "cancelled", "support_extended": "sent",
    }  # fmt: skip


def test_a_notice_the_webhook_refuses_is_not_retried(
    sandbox: SandboxOrg, ledger: Ledger, smtp: SmtpServer, sink: Sink
) -> None:
    harness = _harness(sandbox, ledger, smtp, sink, notices="granted")
    sandbox.customers.grant(duration="1 Day")
    sink.script = [404]
    first = harness.cycle()
    assert first.dispatch is not None
    assert first.dispatch.undeliverable == 1
    harness.clock.advance(timedelta(hours=2))
    harness.cycle()
    assert len(sink.received) == 1
    assert _notice_states(harness) == [("support_granted", "webhook", "undeliverable")]


def test_support_settings_are_checked_and_the_secrets_never_shown(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(
        "FIRMGRANT_SUPPORT__WEBHOOK_URL", "https://hooks.slack.com/services/T/B/xoxsecret"
    )
    monkeypatch.setenv("FIRMGRANT_SUPPORT__WEBHOOK_FORMAT", "json")
    with pytest.raises(ConfigError, match="FIRMGRANT_SUPPORT__WEBHOOK_SECRET"):
        load_settings()
    monkeypatch.setenv("FIRMGRANT_SUPPORT__WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("FIRMGRANT_SUPPORT__NOTICES", "granted,revoked")
    with pytest.raises(ConfigError, match="unknown notice revoked") as refused:
        load_settings()
    assert "xoxsecret" not in str(refused.value)
    monkeypatch.setenv("FIRMGRANT_SUPPORT__NOTICES", "granted,ending")
    settings = load_settings()
    assert [k.word for k in settings.support.notices] == ["granted", "ending"]
    assert "xoxsecret" not in repr(settings)
    assert SECRET not in repr(settings)
    monkeypatch.setenv("FIRMGRANT_SUPPORT__WEBHOOK_URL", "http://hooks.example/plain")
    with pytest.raises(ConfigError, match="FIRMGRANT_SUPPORT__WEBHOOK_URL"):
        load_settings()
    monkeypatch.delenv("FIRMGRANT_SUPPORT__WEBHOOK_URL")
    assert Settings().support.channels() == []
