"""Authentication and the REST client against pinned Salesforce HTTP behaviour."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
import responses
import stamina
from pydantic import SecretStr

from firmgrant.errors import AuthenticationError, SalesforceApiError, SalesforceUnavailable
from firmgrant.salesforce import Authenticator, SalesforceClient
from firmgrant.salesforce.client import parse_limit_info
from firmgrant.salesforce.records import InvalidRecord, parse_record
from firmgrant.settings import ConnectionSettings, FieldMap, SyncSettings
from tests.fakeorg import API, CLIENT_ID, CLIENT_SECRET, INSTANCE_URL, LOGIN_URL, FakeOrg

POLICY = SyncSettings()


def settings(**values: Any) -> ConnectionSettings:
    return ConnectionSettings.model_validate({"login_url": LOGIN_URL, **values})


def jwt_settings(pem: str, tmp_path: Path) -> ConnectionSettings:
    key = tmp_path / "server.key"
    key.write_text(pem)
    return settings(
        auth="jwt",
        client_id=CLIENT_ID,
        username="integration@firmworks.example",
        private_key_file=key,
    )


def test_jwt_bearer_assertion_is_signed_rs256_with_salesforce_claims(
    fake_org: FakeOrg, rsa_key_pem: str, tmp_path: Path
) -> None:
    authenticator = Authenticator(
        "acme", jwt_settings(rsa_key_pem, tmp_path), requests.Session(), POLICY
    )
    token = authenticator.authenticate()

    form = fake_org.token_forms[-1]
    claims = jwt.decode(
        form["assertion"], fake_org.public_key_pem, algorithms=["RS256"], audience=LOGIN_URL
    )
    assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    assert claims["iss"] == CLIENT_ID
    assert claims["sub"] == "integration@firmworks.example"
    lifetime = claims["exp"] - datetime.now(UTC).timestamp()
    assert 0 < lifetime <= 180, "Salesforce accepts assertions valid for 3 minutes at most"
    assert token.instance_url == INSTANCE_URL
    assert "TOKEN" not in repr(token)


def test_a_wrong_key_is_refused_with_salesforces_reason(fake_org: FakeOrg, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    authenticator = Authenticator(
        "acme", jwt_settings(other.decode(), tmp_path), requests.Session(), POLICY
    )
    with pytest.raises(AuthenticationError, match="invalid_grant: invalid assertion") as caught:
        authenticator.authenticate()
    assert "PRIVATE KEY" not in str(caught.value)


@pytest.mark.parametrize("kind", ["client_credentials", "password"])
def test_secret_based_flows_send_the_form_salesforce_expects(fake_org: FakeOrg, kind: str) -> None:
    values: dict[str, Any] = {"auth": kind, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    if kind == "password":
        values |= {"username": "u@x.example", "password": "pw", "security_token": "tok"}
    Authenticator("acme", settings(**values), requests.Session(), POLICY).authenticate()

    form = fake_org.token_forms[-1]
    assert form["grant_type"] == kind
    assert (form["client_id"], form["client_secret"]) == (CLIENT_ID, CLIENT_SECRET)
    if kind == "password":
        assert form["password"] == "pwtok", "Salesforce wants the security token appended"


def test_a_refused_secret_never_appears_in_the_error(fake_org: FakeOrg) -> None:
    wrong = "wrong-secret-do-not-print"
    authenticator = Authenticator(
        "acme",
        settings(auth="client_credentials", client_id=CLIENT_ID, client_secret=wrong),
        requests.Session(),
        POLICY,
    )
    with pytest.raises(AuthenticationError) as caught:
        authenticator.authenticate()
    assert "invalid_client" in str(caught.value)
    assert wrong not in str(caught.value)
    assert wrong not in repr(authenticator.settings)


def test_token_endpoint_5xx_is_retried(fake_org: FakeOrg) -> None:
    fake_org.fail_next("token", 503, {"error": "unavailable"})
    authenticator = Authenticator(
        "acme",
        settings(auth="client_credentials", client_id=CLIENT_ID, client_secret=CLIENT_SECRET),
        requests.Session(),
        POLICY,
    )
    assert authenticator.authenticate().instance_url == INSTANCE_URL
    assert fake_org.token_requests == 2


def test_a_ready_token_is_used_as_is_and_cannot_be_renewed(fake_org: FakeOrg) -> None:
    conn = settings(auth="token", access_token="00Dexpired!token", instance_url=INSTANCE_URL)
    client = SalesforceClient("acme", conn, POLICY)
    with pytest.raises(AuthenticationError, match="get a new one") as caught:
        list(
            client.query_pages("SELECT Id FROM X WHERE Grantee__c IN ('a') ", include_deleted=True)
        )
    assert fake_org.token_requests == 0
    assert "00Dexpired" not in str(caught.value)


def test_limit_info_header_is_parsed() -> None:
    seen = datetime(2026, 5, 20, tzinfo=UTC)
    usage = parse_limit_info("api-usage=18/5000", seen)
    assert usage is not None
    assert (usage.used, usage.limit, usage.remaining) == (18, 5000, 4982)
    both = parse_limit_info("api-usage=25/5000; per-app-api-usage=17/250(appName=firmgrant)", seen)
    assert both is not None
    assert (both.used, both.limit) == (25, 5000)
    assert parse_limit_info("nothing here", seen) is None


def test_client_counts_rest_calls_not_token_requests_and_tracks_usage(fake_org: FakeOrg) -> None:
    fake_org.grant()
    conn = settings(auth="client_credentials", client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    client = SalesforceClient("acme", conn, POLICY)
    soql = "SELECT Id FROM Login_Access_Grant__c WHERE Grantee__c IN ('FirmWorks Support') "

    pages = list(client.query_pages(soql, include_deleted=True))

    assert [len(page) for page in pages] == [1]
    assert client.api_calls == 1
    assert fake_org.token_requests == 1
    assert client.usage is not None
    assert (client.usage.used, client.usage.limit) == (19, 5000)


def test_timeouts_are_retried_then_reported_as_unavailable() -> None:
    conn = settings(auth="token", access_token="t", instance_url=INSTANCE_URL)
    with responses.RequestsMock() as mock:
        mock.add(responses.GET, f"{API}/queryAll/", body=requests.Timeout("read timed out"))
        client = SalesforceClient("acme", conn, POLICY)
        with pytest.raises(SalesforceUnavailable, match="timed out"):
            list(client.query_pages("SELECT Id FROM X", include_deleted=True))
        assert len(mock.calls) == 3


@pytest.mark.parametrize("attempts", [2, 4])
def test_the_real_retry_policy_makes_exactly_the_configured_attempts(
    attempts: int,
) -> None:
    # stamina's testing mode (the suite's default) is off here: real waits, real counts.
    conn = settings(auth="token", access_token="t", instance_url=INSTANCE_URL)
    policy = SyncSettings(retry_attempts=attempts)
    stamina.set_testing(False)
    try:
        with responses.RequestsMock() as mock:
            unavailable = [{"message": "down", "errorCode": "SERVER_UNAVAILABLE"}]
            mock.add(responses.GET, f"{API}/queryAll/", json=unavailable, status=503)
            client = SalesforceClient("acme", conn, policy)
            with pytest.raises(SalesforceUnavailable, match=f"after {attempts} attempts"):
                list(client.query_pages("SELECT Id FROM X", include_deleted=True))
            sent = [call for call in mock.calls if call.request.url]
        assert len(sent) == attempts
    finally:
        stamina.set_testing(True, attempts=3)


def test_other_error_bodies_become_a_readable_error() -> None:
    conn = settings(auth="token", access_token=SecretStr("t"), instance_url=INSTANCE_URL)
    body = [{"message": "No such column 'Foo__c'", "errorCode": "INVALID_FIELD", "fields": []}]
    with responses.RequestsMock() as mock:
        mock.add(responses.GET, f"{API}/queryAll/", json=body, status=400)
        client = SalesforceClient("acme", conn, POLICY)
        with pytest.raises(SalesforceApiError, match="INVALID_FIELD: No such column") as caught:
            list(client.query_pages("SELECT Foo__c FROM X", include_deleted=True))
    assert caught.value.error_code == "INVALID_FIELD"


def test_records_with_odd_but_valid_values_parse() -> None:
    record = {
        "Id": "a0B5e000000ABCdEAF",
        "Org_Id__c": "00D5e000003BCef",
        "Org_Name__c": 'Bäckerei <Müller> & "Söhne"',
        "Grantee__c": "FirmWorks Support",
        "Access_Duration__c": "  1   YEAR ",
        "Granted_At__c": "2026-05-20T20:49:32.000+0000",
        "Expires_At__c": "2027-05-20T20:49:32.000+0000",
        "Status__c": "Active",
        "SystemModstamp": "2026-05-20T20:49:32.000+0000",
        "IsDeleted": False,
    }
    parsed = parse_record(record, FieldMap())
    assert not isinstance(parsed, InvalidRecord)
    assert parsed.duration == "1 year"
    assert parsed.org_name == 'Bäckerei <Müller> & "Söhne"'
    assert parsed.via_login_as is False
