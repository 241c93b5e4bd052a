"""Single sign-on against a real (tiny) OpenID Connect provider on loopback, on both
ledgers: the code flow with PKCE, the ID token checked, the email naming the account."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests
from pydantic import SecretStr
from sqlalchemy import select
from starlette.testclient import TestClient

from firmgrant import accounts
from firmgrant.accounts import Role
from firmgrant.ledger import Ledger
from firmgrant.ledger.models import EventRow
from firmgrant.settings import Settings
from firmgrant.timeutil import utcnow
from firmgrant.web import create_app
from tests.oidc_provider import CLIENT_ID, CLIENT_SECRET, LoopbackProvider


@pytest.fixture
def idp() -> Iterator[LoopbackProvider]:
    provider = LoopbackProvider()
    yield provider
    provider.close()


@pytest.fixture
def client(ledger: Ledger, idp: LoopbackProvider) -> Iterator[TestClient]:
    settings = Settings.model_validate(
        {
            "web": {
                "session_secret": "s" * 32,
                "oidc_issuer": idp.url,
                "oidc_client_id": CLIENT_ID,
                "oidc_client_secret": SecretStr(CLIENT_SECRET),
            }
        }
    )
    accounts.add_user(
        ledger, "ada", Role.ADMIN, password=None, email="ada@firmworks.example",
        actor="test", now=utcnow(),
    )  # fmt: skip
    with TestClient(create_app(settings, ledger), base_url="http://127.0.0.1:8000") as test:
        yield test


def _through_the_provider(client: TestClient, next_page: str = "/") -> str:
    """Start SSO, let the provider answer; the callback path it sends the browser to."""
    started = client.get(f"/sign-in/sso?next={next_page}", follow_redirects=False)
    assert started.status_code == 303
    answered = requests.get(started.headers["location"], allow_redirects=False, timeout=10)
    assert answered.status_code == 302
    back = urlsplit(answered.headers["Location"])
    return f"{back.path}?{back.query}"


def test_a_person_the_provider_vouches_for_is_signed_in_as_their_account(
    client: TestClient, ledger: Ledger
) -> None:
    page = client.get("/sign-in")
    assert 'href="/sign-in/sso?next=/"' in page.text
    assert "Sign in with single sign-on" in page.text

    done = client.get(_through_the_provider(client, "/rule-breaks"), follow_redirects=False)
    assert done.status_code == 303
    assert done.headers["location"] == "/rule-breaks"
    assert client.get("/rule-breaks").status_code == 200
    with ledger.sessions() as session:
        [event] = session.execute(
            select(EventRow.actor, EventRow.payload).where(EventRow.kind == "signed_in")
        ).all()
    assert event.actor == "web:ada"
    assert '"oidc"' in event.payload


def test_a_callback_used_twice_or_with_another_state_is_refused(client: TestClient) -> None:
    callback = _through_the_provider(client)
    forged = callback.replace("state=", "state=x")
    assert client.get(forged).status_code == 400
    assert client.get("/", follow_redirects=False).status_code in (302, 303)  # still anonymous
    assert client.get(_through_the_provider(client), follow_redirects=False).status_code == 303
    replay = client.get(callback)  # its state was used up
    assert replay.status_code == 400
    assert "expired" in replay.text


def test_an_email_without_an_account_is_refused_with_the_fix(
    client: TestClient, idp: LoopbackProvider
) -> None:
    idp.next_email = "mallory@elsewhere.example"
    refused = client.get(_through_the_provider(client))
    assert refused.status_code == 403
    assert "mallory@elsewhere.example has no enabled dashboard account" in refused.text
    assert "firmgrant users add" in refused.text


@pytest.mark.parametrize(
    "tamper",
    [{"aud": "another-app"}, {"nonce": "not-the-one"}, {"iss": "https://evil.example"},
     {"exp": 1_000_000_000}, {"email_verified": False}],
)  # fmt: skip
def test_an_id_token_that_does_not_check_out_signs_no_one_in(
    client: TestClient, idp: LoopbackProvider, tamper: dict[str, object]
) -> None:
    idp.tamper = tamper
    refused = client.get(_through_the_provider(client))
    assert refused.status_code == 403
    assert "Not signed in" in refused.text
    assert client.get("/", follow_redirects=False).status_code in (302, 303)
    assert CLIENT_SECRET not in refused.text
