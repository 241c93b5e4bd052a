"""The sandbox org as any Salesforce client sees it: simple-salesforce on its own, over HTTPS."""

from __future__ import annotations

import gc
import shutil
import socket
import ssl
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from firmgrant.sandbox import FaultPlan, SandboxOrg
from firmgrant.sandbox.schema import GRANT
from tests.sandboxing import independent_client

NEW_GRANT = {
    "Org_Id__c": "00D5e000009ZZZZ",
    "Org_Name__c": "Zoë & Co",
    "Grantee__c": "FirmWorks Support",
    "Access_Duration__c": "1 Day",
    "Granted_At__c": "2026-11-23T10:00:00.000+0000",
    "Expires_At__c": "2026-11-24T10:00:00Z",
}


def test_tls_is_verified_against_the_sandboxs_own_certificate(sandbox: SandboxOrg) -> None:
    session = requests.Session()
    session.trust_env = False
    with pytest.raises(requests.exceptions.SSLError):
        session.get(f"{sandbox.base_url}/services/data/", timeout=5)  # system CAs only
    answer = session.get(
        f"{sandbox.base_url}/services/data/", verify=str(sandbox.state / "tls.crt"), timeout=5
    )
    assert answer.json()[0]["version"] == "62.0"


def test_query_all_iter_pages_through_next_records_url(sandbox: SandboxOrg) -> None:
    sandbox.customers.seed(450)
    sf = independent_client(sandbox)

    first = sf.query(
        "SELECT Id FROM Login_Access_Grant__c", headers={"Sforce-Query-Options": "batchSize=200"}
    )
    more = sf.query_more(
        first["nextRecordsUrl"],
        identifier_is_url=True,
        headers={"Sforce-Query-Options": "batchSize=200"},
    )
    everything = list(sf.query_all_iter("SELECT Id, SystemModstamp FROM Login_Access_Grant__c"))

    assert (first["totalSize"], first["done"], len(first["records"])) == (450, False, 200)
    assert first["nextRecordsUrl"].startswith("/services/data/v62.0/query/01g")
    assert first["nextRecordsUrl"].endswith("-200")
    assert len(more["records"]) == 200
    assert len(everything) == 450
    assert len({r["Id"] for r in everything}) == 450
    assert everything[0]["attributes"]["type"] == "Login_Access_Grant__c"


def test_crud_and_deleted_records_only_in_query_all(sandbox: SandboxOrg) -> None:
    sf = independent_client(sandbox)
    grants: Any = sf.Login_Access_Grant__c

    created = grants.create(NEW_GRANT)
    record = grants.get(created["id"])
    grants.update(created["id"], {"Status__c": "Revoked", "Revoke_Reason__c": "done"})
    updated = grants.get(created["id"])
    grants.delete(created["id"])

    assert created["success"] is True
    assert len(created["id"]) == 18
    assert created["id"].startswith(GRANT.key_prefix)
    assert record["Org_Name__c"] == "Zoë & Co"
    assert record["Expires_At__c"] == "2026-11-24T10:00:00.000+0000"
    assert record["Status__c"] == "Active", "picklist default"
    assert updated["SystemModstamp"] > record["SystemModstamp"]
    with pytest.raises(SalesforceResourceNotFound):
        grants.get(created["id"])
    soql = f"SELECT Id, IsDeleted FROM Login_Access_Grant__c WHERE Id = '{created['id']}'"
    assert sf.query(soql)["totalSize"] == 0
    assert sf.query_all(soql, include_deleted=True)["records"][0]["IsDeleted"] is True


@pytest.mark.parametrize(
    ("values", "code"),
    [
        ({"Nope__c": 1}, "INVALID_FIELD"),
        ({"Status__c": "Maybe"}, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
        ({"Org_Name__c": "x" * 256}, "STRING_TOO_LONG"),
        ({"SystemModstamp": "2026-01-01T00:00:00Z"}, "INVALID_FIELD_FOR_INSERT_UPDATE"),
        ({"Granted_At__c": "yesterday"}, "JSON_PARSER_ERROR"),
    ],
)
def test_bad_writes_answer_salesforces_error_list(
    sandbox: SandboxOrg, values: dict[str, Any], code: str
) -> None:
    sf = independent_client(sandbox)
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.Login_Access_Grant__c.create({**NEW_GRANT, **values})  # type: ignore[operator]
    body = caught.value.content
    assert isinstance(body, list)
    assert body[0]["errorCode"] == code
    assert set(body[0]) == {"message", "errorCode", "fields"}


def test_required_fields_are_enforced(sandbox: SandboxOrg) -> None:
    sf = independent_client(sandbox)
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.Login_Access_Grant__c.create({"Org_Name__c": "x"})  # type: ignore[operator]
    assert caught.value.content[0]["errorCode"] == "REQUIRED_FIELD_MISSING"  # type: ignore[index]
    assert "Org_Id__c" in caught.value.content[0]["message"]  # type: ignore[index]


def test_sobject_collections_with_per_record_results(sandbox: SandboxOrg) -> None:
    sf = independent_client(sandbox)
    made = sf.restful(
        "composite/sobjects",
        method="POST",
        json={
            "allOrNone": False,
            "records": [
                {"attributes": {"type": "Login_Access_Grant__c"}, **NEW_GRANT},
                {"attributes": {"type": "Login_Access_Grant__c"}, **NEW_GRANT, "Status__c": "Bad"},
            ],
        },
    )
    assert made is not None
    good = made[0]["id"]
    assert [r["success"] for r in made] == [True, False]
    assert made[1]["errors"][0]["statusCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"

    rolled = sf.restful(
        "composite/sobjects",
        method="PATCH",
        json={
            "allOrNone": True,
            "records": [
                {
                    "attributes": {"type": "Login_Access_Grant__c"},
                    "id": good,
                    "Status__c": "Revoked",
                },
                {"attributes": {"type": "Login_Access_Grant__c"}, "id": good, "Status__c": "Bad"},
            ],
        },
    )
    assert rolled is not None
    assert [r["errors"][0]["statusCode"] for r in rolled] == [
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
    ]
    assert sf.Login_Access_Grant__c.get(good)["Status__c"] == "Active"  # type: ignore[operator]

    deleted = sf.restful(
        "composite/sobjects",
        method="DELETE",
        params={"ids": f"{good},a0B5e0000000zzzAAA", "allOrNone": "false"},
    )
    assert deleted is not None
    assert [r["success"] for r in deleted] == [True, False]
    too_many = {
        "allOrNone": False,
        "records": [{"attributes": {"type": "Login_Access_Grant__c"}, **NEW_GRANT}] * 201,
    }
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.restful("composite/sobjects", method="POST", json=too_many)
    assert caught.value.content[0]["errorCode"] == "EXCEEDED_ID_LIMIT"  # type: ignore[index]


def test_named_records_fail_in_a_collection(sandbox: SandboxOrg) -> None:
    sandbox.customers.seed(2)
    first, second = list(sandbox.store.records["login_access_grant__c"])
    sandbox.faults.plan = FaultPlan(fail_records=frozenset({second}))
    sf = independent_client(sandbox)
    result = sf.restful(
        "composite/sobjects",
        method="PATCH",
        json={
            "allOrNone": False,
            "records": [
                {"attributes": {"type": "Login_Access_Grant__c"}, "id": i, "Status__c": "Revoked"}
                for i in (first, second)
            ],
        },
    )
    assert result is not None
    assert [r["success"] for r in result] == [True, False]
    assert result[1]["errors"][0]["statusCode"] == "UNABLE_TO_LOCK_ROW"


def test_describe_global_and_per_object(sandbox: SandboxOrg) -> None:
    sf = independent_client(sandbox)
    names = {o["name"] for o in sf.describe()["sobjects"]}  # type: ignore[index]
    fields = {f["name"]: f for f in sf.Login_Access_Grant__c.describe()["fields"]}  # type: ignore[operator]
    assert {"Login_Access_Grant__c", "SetupAuditTrail", "AuthSession"} <= names
    assert fields["Expires_At__c"]["type"] == "datetime"
    assert fields["Status__c"]["restrictedPicklist"] is True
    assert [v["value"] for v in fields["Status__c"]["picklistValues"]] == [
        "Active",
        "Revoked",
        "Expired",
    ]
    assert fields["SystemModstamp"]["updateable"] is False


def test_every_response_carries_limit_info_and_the_limit_runs_out(sandbox: SandboxOrg) -> None:
    sandbox.faults.plan = FaultPlan(daily_limit=3)
    sf = independent_client(sandbox)
    sf.query("SELECT COUNT() FROM Login_Access_Grant__c")
    assert sf.api_usage["api-usage"].used == 1
    assert sf.api_usage["api-usage"].total == 3
    sf.query("SELECT COUNT() FROM Login_Access_Grant__c")
    sf.query("SELECT COUNT() FROM Login_Access_Grant__c")
    with pytest.raises(SalesforceRefusedRequest) as caught:
        sf.query("SELECT COUNT() FROM Login_Access_Grant__c")
    assert caught.value.content[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"  # type: ignore[index]
    assert caught.value.status == 403


def test_expired_sessions_answer_invalid_session_id(sandbox: SandboxOrg) -> None:
    sf = independent_client(sandbox)
    sandbox.sessions.expire_all()
    with pytest.raises(SalesforceExpiredSession) as caught:
        sf.query("SELECT Id FROM AuthSession")
    assert caught.value.content == [  # type: ignore[comparison-overlap]
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID", "fields": []}
    ]


def _assertion(key_pem: bytes, org: SandboxOrg, **claims: Any) -> str:
    import time

    return jwt.encode(
        {
            "iss": org.app.client_id,
            "sub": org.app.username,
            "aud": org.base_url,
            "exp": int(time.time()) + 120,
            **claims,
        },
        key_pem,
        algorithm="RS256",
    )


def _token(org: SandboxOrg, assertion: str) -> requests.Response:
    return requests.post(
        f"{org.base_url}/services/oauth2/token",
        data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion},
        verify=str(org.state / "tls.crt"),
        timeout=10,
    )


def test_jwt_bearer_checks_the_signature_against_the_certificate(
    sandbox: SandboxOrg, tmp_path: Path
) -> None:
    right = (sandbox.state / "jwt.key").read_bytes()
    wrong = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    good = _token(sandbox, _assertion(right, sandbox))
    assert good.status_code == 200
    assert set(good.json()) >= {
        "access_token",
        "instance_url",
        "token_type",
        "issued_at",
        "signature",
        "id",
    }
    refused = _token(sandbox, _assertion(wrong, sandbox))
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant")
    stranger = _token(sandbox, _assertion(right, sandbox, sub="someone@else.example"))
    assert stranger.json()["error_description"] == "user hasn't approved this consumer"


def test_customer_actions_write_the_audit_trail(sandbox: SandboxOrg) -> None:
    customers = sandbox.customers
    grant = customers.grant(
        duration="1 Week", grantor="jane@acme.example", login_as_user="admin@acme.example"
    )
    customers.extend(grant["Id"], "1 Month")
    customers.revoke(grant["Id"])
    sf = independent_client(sandbox)

    rows = sf.query_all(
        "SELECT Action, Display, DelegateUser FROM SetupAuditTrail ORDER BY CreatedDate ASC"
    )["records"]

    assert [r["Action"] for r in rows] == [
        "loginasgrantedtopartnerbt",
        "loginasmodifiedtopartnerbt",
        "loginasrevokedtopartnerbt",
    ]
    assert rows[0]["Display"].startswith("jane@acme.example has granted user login access through")
    assert f"to package publisher FirmWorks Support ({sandbox.app.org_id})" in rows[0]["Display"]
    assert rows[0]["DelegateUser"] == "admin@acme.example"
    assert rows[1]["DelegateUser"] is None


def test_support_sessions_are_auth_session_rows_that_can_be_deleted(sandbox: SandboxOrg) -> None:
    grant = sandbox.customers.grant()
    session_row = sandbox.customers.support_logs_in(grant)
    sf = independent_client(sandbox)
    found = sf.query("SELECT Id FROM AuthSession WHERE SessionType = 'SubstituteUser'")
    sf.AuthSession.delete(session_row["Id"])  # type: ignore[operator]
    assert [r["Id"] for r in found["records"]] == [session_row["Id"]]
    assert sf.query("SELECT COUNT() FROM AuthSession")["totalSize"] == 0


def test_records_written_once_the_org_was_read_carry_the_time_of_the_write(
    sandbox: SandboxOrg,
) -> None:
    from datetime import timedelta

    from firmgrant.sandbox.soql import sf_datetime
    from firmgrant.timeutil import utcnow

    sf = independent_client(sandbox)
    history = sandbox.customers.grant(duration="1 Month", at=utcnow() - timedelta(days=20))
    assert history["SystemModstamp"] < sf_datetime(utcnow() - timedelta(days=19))  # the past
    sf.query("SELECT Id FROM Login_Access_Grant__c")  # a client now holds a watermark
    before = sf_datetime(utcnow())

    late = sandbox.customers.grant(duration="1 Month", at=utcnow() - timedelta(days=20))

    # As in Salesforce: audit fields may be back-dated by a data load, SystemModstamp not.
    assert late["SystemModstamp"] >= before
    assert late["CreatedDate"] < before
    found = sf.query(
        "SELECT Id FROM Login_Access_Grant__c WHERE SystemModstamp >= "
        + before.replace("+0000", "Z")
    )
    assert [r["Id"] for r in found["records"]] == [late["Id"]]
    audit = sf.query("SELECT CreatedDate FROM SetupAuditTrail ORDER BY CreatedDate DESC LIMIT 1")
    assert audit["records"][0]["CreatedDate"] >= before  # Salesforce writes its trail now


def _answer(tls: ssl.SSLSocket, path: str, token: str) -> bytes:
    """One HTTP/1.1 request on a kept-alive connection; the status line of its answer."""
    tls.sendall(
        f"GET {path} HTTP/1.1\r\nHost: sandbox\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        data += tls.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += tls.recv(65536)
    return head.split(b"\r\n")[0]


def test_an_idle_kept_alive_connection_is_closed_not_left_unserved(
    tmp_path: Path, sandbox_keys: Path
) -> None:
    """A pooled client that reuses a connection the sandbox gave up on must see it closed,
    not wait out its read timeout (an idle cycle of 10,000 orgs lost 30 s that way)."""
    state = tmp_path / "org"
    shutil.copytree(sandbox_keys, state)
    # With the collector off, a request handler caught in a reference cycle lives as long as
    # it may in a sandbox with little to do between cycles.
    gc.disable()
    try:
        with SandboxOrg(state, persist=False, keep_alive_seconds=0.2) as org:
            token = independent_client(org).session_id
            context = ssl.create_default_context(cafile=str(org.state / "tls.crt"))
            host, port = org.base_url.removeprefix("https://").split(":")
            with context.wrap_socket(
                socket.create_connection((host, int(port))), server_hostname=host
            ) as tls:
                ok = _answer(
                    tls, "/services/data/v62.0/query/?q=SELECT+Id+FROM+Login_Access_Grant__c", token
                )
                bad = _answer(
                    tls,
                    "/services/data/v62.0/query/?q=SELECT+Nope+FROM+Login_Access_Grant__c",
                    token,
                )
                tls.settimeout(10)
                closed = tls.recv(1)
    finally:
        gc.enable()
    assert (ok, bad) == (b"HTTP/1.1 200 OK", b"HTTP/1.1 400 Bad Request")
    assert closed == b""  # end of stream: the server closed it after 0.2 s idle
