"""The audit source's exact HTTP with Salesforce, pinned with `responses`: the SOQL it sends
and what a connection without "View Setup and Configuration" gets back."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import responses
from sqlalchemy import select

from firmgrant.jobs.sync import sync_connection
from firmgrant.ledger import Ledger
from firmgrant.ledger.models import GrantRow
from firmgrant.settings import ConnectionSettings, SourceSettings, SyncSettings, VendorSettings

LOGIN = "https://acme.my.example.test"
API = f"{LOGIN}/services/data/v62.0"
PUBLISHER = "00D5e000003BCefEAG"
NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)


def connection() -> ConnectionSettings:
    return ConnectionSettings(
        login_url=LOGIN,
        auth="client_credentials",
        client_id="3MVG9-key",
        client_secret="s3cret",
        source=SourceSettings(kind="audit"),
    )


def vendor() -> VendorSettings:
    return VendorSettings(publisher_org_id=PUBLISHER, support_usernames=["*@firmworks.example"])


def token(mock: responses.RequestsMock) -> None:
    mock.add(
        responses.POST,
        f"{LOGIN}/services/oauth2/token",
        json={
            "access_token": "00D5e0000000001!token",
            "instance_url": LOGIN,
            "id": f"{LOGIN}/id/00D5e0000000001AAA/0055e0000000001AAA",
        },
    )


def sync(ledger: Ledger) -> Any:
    return sync_connection(
        ledger,
        "acme",
        connection(),
        vendor(),
        SyncSettings(api_floor=0),
        clock=lambda: NOW,
    )


def soql_of(call: Any) -> str:
    return str(parse_qs(urlparse(call.request.url).query)["q"][0])


def test_the_soql_sent_names_the_fields_actions_order_and_the_watermark(ledger: Ledger) -> None:
    row = {
        "attributes": {"type": "SetupAuditTrail"},
        "Id": "0Ym5e0000000001AAA",
        "Action": "loginasgrantedtopartnerbt",
        "Section": "Manage Users",
        "Display": "jane@acme.com has granted user login access through 12/9/2026 to package "
        f"publisher FirmWorks Support ({PUBLISHER[:15]})",
        "CreatedDate": "2026-12-01T10:00:00.000+0000",
        "CreatedById": "0055e0000000002AAA",
        "CreatedBy": {
            "attributes": {"type": "User"},
            "Username": "jane@acme.com",
            "Email": None,
            "LocaleSidKey": "en_US",  # Jane writes US order, in New York
            "TimeZoneSidKey": "America/New_York",
            "LanguageLocaleKey": "en_US",
        },
        "DelegateUser": None,
    }
    org = {
        "attributes": {"type": "Organization"},
        "Id": "00D5e0000000001AAA",
        "Name": "Acme",
        "TimeZoneSidKey": "Europe/London",
        "DefaultLocaleSidKey": "en_GB",
        "LanguageLocaleKey": "en_US",
    }
    with responses.RequestsMock() as mock:
        token(mock)
        for records in ([row], [org]):
            mock.add(responses.GET, f"{API}/query/", json={"done": True, "records": records})
        first = sync(ledger)
        mock.add(responses.GET, f"{API}/query/", json={"done": True, "records": []})
        second = sync(ledger)
        sent = [soql_of(c) for c in mock.calls if "/query/" in str(c.request.url)]

    assert (first.inserted, second.inserted, second.api_calls) == (1, 0, 1)
    assert first.api_calls == 2, "the trail (its users' locales with it), the org"
    assert sent[0] == (
        "SELECT Id, Action, Section, Display, CreatedDate, CreatedById, CreatedBy.Username, "
        "CreatedBy.Email, CreatedBy.LocaleSidKey, CreatedBy.TimeZoneSidKey, "
        "CreatedBy.LanguageLocaleKey, DelegateUser FROM SetupAuditTrail WHERE Action IN "
        "('loginasgrantedtopartnerbt','loginasmodifiedtopartnerbt','loginasrevokedtopartnerbt',"
        "'suloginaccessused') ORDER BY CreatedDate ASC, Id ASC"
    )
    assert sent[1] == (
        "SELECT Id, Name, TimeZoneSidKey, DefaultLocaleSidKey, LanguageLocaleKey FROM Organization"
    )
    since = datetime(2026, 12, 1, 10, tzinfo=UTC) - timedelta(seconds=300)
    assert sent[2] == sent[0].replace(
        " ORDER BY", f" AND CreatedDate > {since.isoformat()} ORDER BY"
    )
    with ledger.sessions() as session:
        grant = session.execute(select(GrantRow)).scalar_one()
    # "through 12/9/2026", read in Jane's order, ends at the start of that day in New York.
    assert grant.expires_at == datetime(2026, 12, 9, 5, tzinfo=UTC)
    assert (grant.org_id, grant.org_name) == ("00D5e0000000001AAA", "Acme")


def test_a_connection_without_view_setup_gets_salesforces_error_and_it_is_recorded(
    ledger: Ledger,
) -> None:
    refusal = [
        {
            "message": "\nSELECT Id, Action\n       ^\nERROR at Row:1:Column:1\nsObject type "
            "'SetupAuditTrail' is not supported. If you are attempting to use a custom object, "
            "be sure to append the '__c' after the entity name.",
            "errorCode": "INVALID_TYPE",
        }
    ]
    with responses.RequestsMock() as mock:
        token(mock)
        mock.add(responses.GET, f"{API}/query/", status=400, body=json.dumps(refusal))
        result = sync(ledger)

    assert result.exit_code == 3
    assert "INVALID_TYPE" in (result.error or "")
    assert "sObject type 'SetupAuditTrail' is not supported" in (result.error or "")
    assert ledger.sync_state("acme", "audit").last_error == result.error


def test_rows_of_other_publishers_still_move_the_watermark(ledger: Ledger) -> None:
    other = {
        "attributes": {"type": "SetupAuditTrail"},
        "Id": "0Ym5e0000000009AAA",
        "Action": "loginasgrantedtopartnerbt",
        "Section": "Manage Users",
        "Display": "jane@acme.com has granted user login access through 12/9/2026 to package "
        "publisher Another Vendor (00D5e00000OTHER)",
        "CreatedDate": "2026-12-01T11:00:00.000+0000",
        "CreatedById": "0055e0000000002AAA",
        "CreatedBy": {"attributes": {"type": "User"}, "Username": "jane@acme.com", "Email": None},
        "DelegateUser": None,
    }
    with responses.RequestsMock() as mock:
        token(mock)
        mock.add(responses.GET, f"{API}/query/", json={"done": True, "records": [other]})
        sync(ledger)
        mock.add(responses.GET, f"{API}/query/", json={"done": True, "records": []})
        sync(ledger)
        sent = [soql_of(c) for c in mock.calls if "/query/" in str(c.request.url)]

    since = datetime(2026, 12, 1, 11, tzinfo=UTC) - timedelta(seconds=300)
    assert f"CreatedDate > {since.isoformat()}" in sent[-1], "nothing of ours, read all the same"
