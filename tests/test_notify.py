"""The emails a customer admin reads: content, escaping, headers that cannot be injected."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email import message_from_string, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from jinja2 import UndefinedError

from firmgrant.errors import PermanentMailError
from firmgrant.notify.render import context, environment, render
from firmgrant.notify.send import FileBackend, build_message, parse_address

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
EVIL_ORG = "<script>alert('x')</script> Zoë's \"Best\" Café"


def values(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "vendor_name": "FirmWorks",
        "support_email": "support@firmworks.example",
        "org_id": "00D5e0000012345",
        "org_name": EVIL_ORG,
        "grantor_username": "jürgen@acme.example",
        "grantor_email": "jurgen@acme.example",
        "grantee": "FirmWorks Support",
        "granted_at": NOW - timedelta(days=6),
        "ends_at": NOW + timedelta(hours=23, minutes=10),
        "now": NOW,
    }
    base.update(changes)
    return context(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["reminder", "revoked", "rejected"])
def test_html_escapes_customer_text_and_text_keeps_it_readable(kind: str) -> None:
    rendered = render(environment(), kind, values(reason="access expired"))
    assert "<script>" not in rendered.html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in rendered.html
    assert "Zoë&#39;s &#34;Best&#34; Café" in rendered.html
    assert EVIL_ORG in rendered.text
    assert "jürgen@acme.example" in rendered.text
    assert "support@firmworks.example" in rendered.text
    assert "\n" not in rendered.subject


def test_reminder_says_when_in_utc_and_in_words_and_how_to_act() -> None:
    rendered = render(environment(), "reminder", values())
    assert rendered.subject.endswith("ends in 23 hours 10 minutes")  # to the minute, two units
    assert "Tuesday 24 November 2026, 09:10 UTC" in rendered.text
    assert 'Quick Find "Grant" → Grant Account Login' in rendered.text
    assert "00D5e0000012345" in rendered.text


def test_rejected_explains_the_login_as_rule() -> None:
    rendered = render(environment(), "rejected", values(login_as_user="admin@acme.example"))
    assert "cannot be granted while logged in as another user" in rendered.text
    assert "admin@acme.example was logged in as that user" in " ".join(rendered.text.split())
    assert "must each grant their own access" in rendered.text


def test_a_template_missing_a_value_fails_instead_of_mailing_a_blank(tmp_path: Path) -> None:
    (tmp_path / "reminder.subject.j2").write_text("Ends {{ no_such_value }}")
    with pytest.raises(UndefinedError):
        render(environment(tmp_path), "reminder", values())


def test_override_directory_replaces_one_template(tmp_path: Path) -> None:
    (tmp_path / "reminder.subject.j2").write_text("Heads up: {{ org_label }}")
    rendered = render(environment(tmp_path), "reminder", values(org_name="Acme"))
    assert rendered.subject == "Heads up: Acme"
    assert "Grant Account Login" in rendered.text  # the rest stays packaged


def _parsed(message: EmailMessage) -> EmailMessage:
    # An SMTPUTF8 message is UTF-8 text on the wire (RFC 6532).
    parsed = message_from_string(message.as_bytes().decode("utf-8"), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_crlf_in_customer_text_cannot_add_a_header() -> None:
    rendered = render(environment(), "reminder", values(org_name="Acme\r\nBcc: thief@evil.example"))
    message = build_message(
        rendered,
        sender="FirmWorks Support <support@firmworks.example>",
        recipients=["jane@acme.example"],
        message_id="<firmgrant.1.reminder.1@firmworks.example>",
        sent_at=NOW,
    )
    parsed = _parsed(message)
    assert parsed["Bcc"] is None
    assert "thief@evil.example" in str(parsed["Subject"])
    assert str(parsed["Message-ID"]) == "<firmgrant.1.reminder.1@firmworks.example>"
    with pytest.raises(PermanentMailError):
        parse_address("Jane\r\nBcc: thief@evil.example <jane@acme.example>")


def test_accented_names_and_addresses_survive_the_round_trip() -> None:
    rendered = render(environment(), "reminder", values())
    message = build_message(
        rendered,
        sender='"Équipe FirmWorks" <support@firmworks.example>',
        recipients=["zoë@acme.example", "Ana Müller <ana@acme.example>"],
        message_id="<x.1@firmworks.example>",
        sent_at=NOW,
    )
    parsed = _parsed(message)
    assert [a.addr_spec for a in parsed["To"].addresses] == ["zoë@acme.example", "ana@acme.example"]
    assert parsed["From"].addresses[0].display_name == "Équipe FirmWorks"
    html = parsed.get_body(("html",))
    assert html is not None
    assert "Zoë&#39;s" in html.get_content()


def test_file_backend_names_the_file_after_the_message_id(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path)
    rendered = render(environment(), "reminder", values())
    message = build_message(
        rendered,
        sender="support@firmworks.example",
        recipients=["jane@acme.example"],
        message_id="<same@firmworks.example>",
        sent_at=NOW,
    )
    backend.send(message)
    backend.send(message)  # a retried send replaces, never duplicates
    assert len(list(tmp_path.glob("*.eml"))) == 1
