"""A Salesforce org on `responses`, for pinning exact HTTP behaviour in unit tests.

It answers the token endpoint (checking JWT signatures and secrets), ``queryAll`` with the
shape of query firmgrant sends (grantee IN list, ``SystemModstamp >``), paging through
``nextRecordsUrl``, and lets a test inject the faults Salesforce really sends.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import jwt
import responses
from cryptography.hazmat.primitives import serialization

LOGIN_URL = "https://login.example.test"
INSTANCE_URL = "https://acme.my.example.test"
API = f"{INSTANCE_URL}/services/data/v62.0"
CLIENT_ID = "3MVG9-consumer-key"
CLIENT_SECRET = "client-secret-value"
VENDOR = "FirmWorks Support"

Reply = tuple[int, dict[str, str], str]


def sf_time(value: datetime) -> str:
    """Salesforce's datetime format: ``2026-05-20T20:49:32.000+0000``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


@dataclass
class Fault:
    endpoint: str  # "token", "query" (first page) or "more" (a nextRecordsUrl page)
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class FakeOrg:
    def __init__(self, mock: responses.RequestsMock, private_key_pem: str) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.api_used, self.api_limit = 18, 5000
        self.token_requests = 0
        self.token_forms: list[dict[str, str]] = []
        self.soql: list[str] = []
        self.faults: list[Fault] = []
        # Customers granted over the last day, by the real clock, so grants are current.
        self.clock = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
        self._ids = itertools.count(1)
        self._tokens = itertools.count(1)
        self._valid_tokens: set[str] = set()
        self._locators: dict[str, list[dict[str, Any]]] = {}
        key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
        self.public_key_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        mock.add_callback(responses.POST, f"{LOGIN_URL}/services/oauth2/token", self._token)
        mock.add_callback(responses.GET, re.compile(rf"{re.escape(API)}/queryAll/.*"), self._query)
        mock.add_callback(responses.GET, re.compile(rf"{re.escape(API)}/query/.+"), self._more)
        mock.add_callback(
            responses.GET, re.compile(rf"{re.escape(API)}/sobjects/\w+/describe"), self._describe
        )
        self.fields = [
            "Id",
            "Org_Id__c",
            "Org_Name__c",
            "Grantor_Id__c",
            "Grantor_Username__c",
            "Grantor_Email__c",
            "Grantee__c",
            "Access_Duration__c",
            "Granted_At__c",
            "Expires_At__c",
            "Granted_Via_Login_As__c",
            "Login_As_User__c",
            "Status__c",
            "Revoked_At__c",
            "Revoke_Reason__c",
            "SystemModstamp",
            "IsDeleted",
        ]

    # -- acting as the customer ------------------------------------------------------------
    def tick(self, seconds: int = 1) -> datetime:
        self.clock += timedelta(seconds=seconds)
        return self.clock

    def grant(self, **overrides: Any) -> dict[str, Any]:
        number = next(self._ids)
        granted = self.tick(60)
        record: dict[str, Any] = {
            "attributes": {"type": "Login_Access_Grant__c"},
            "Id": f"a0B5e{number:013d}",
            "Org_Id__c": f"00D5e{number:013d}",
            "Org_Name__c": f"Customer {number}",
            "Grantor_Id__c": f"0055e{number:013d}",
            "Grantor_Username__c": f"admin{number}@customer.example",
            "Grantor_Email__c": f"admin{number}@customer.example",
            "Grantee__c": VENDOR,
            "Access_Duration__c": "1 Week",
            "Granted_At__c": sf_time(granted),
            "Expires_At__c": sf_time(granted + timedelta(days=7)),
            "Granted_Via_Login_As__c": False,
            "Login_As_User__c": None,
            "Status__c": "Active",
            "Revoked_At__c": None,
            "Revoke_Reason__c": None,
            "SystemModstamp": sf_time(granted),
            "IsDeleted": False,
        }
        record.update(overrides)
        self.records[record["Id"]] = record
        return record

    def update(self, record_id: str, **changes: Any) -> dict[str, Any]:
        record = self.records[record_id]
        record.update(changes)
        record["SystemModstamp"] = sf_time(self.tick())
        return record

    def delete(self, record_id: str) -> None:
        self.update(record_id, IsDeleted=True)

    def expire_sessions(self) -> None:
        """Every issued token stops working, as when an admin ends all sessions."""
        self._valid_tokens.clear()

    def fail_next(self, endpoint: str, status: int, body: Any, **headers: str) -> None:
        self.faults.append(Fault(endpoint, status, body, headers))

    # -- HTTP --------------------------------------------------------------------------------
    def _reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> Reply:
        base = {"Content-Type": "application/json;charset=UTF-8"}
        return status, {**base, **(headers or {})}, json.dumps(body)

    def _fault(self, endpoint: str) -> Reply | None:
        for fault in self.faults:
            if fault.endpoint == endpoint:
                self.faults.remove(fault)
                return self._reply(fault.status, fault.body, fault.headers)
        return None

    def _token(self, request: Any) -> Reply:
        self.token_requests += 1
        form = {k: v[0] for k, v in parse_qs(request.body).items()}
        self.token_forms.append(form)
        fault = self._fault("token")
        if fault:
            return fault
        grant_type = form.get("grant_type")
        if grant_type == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            try:
                claims = jwt.decode(
                    form["assertion"], self.public_key_pem, algorithms=["RS256"], audience=LOGIN_URL
                )
            except jwt.PyJWTError:
                return self._reply(
                    400, {"error": "invalid_grant", "error_description": "invalid assertion"}
                )
            if claims.get("iss") != CLIENT_ID:
                return self._reply(
                    400,
                    {
                        "error": "invalid_client_id",
                        "error_description": "client identifier invalid",
                    },
                )
        elif grant_type in ("client_credentials", "password"):
            if form.get("client_secret") != CLIENT_SECRET:
                return self._reply(
                    400,
                    {"error": "invalid_client", "error_description": "invalid client credentials"},
                )
        else:
            return self._reply(400, {"error": "unsupported_grant_type"})
        token = f"00D5e000000TOKEN!{next(self._tokens)}"
        self._valid_tokens.add(token)
        return self._reply(
            200,
            {
                "access_token": token,
                "instance_url": INSTANCE_URL,
                "id": f"{LOGIN_URL}/id/00D5e0000000001/0055e0000000001",
                "token_type": "Bearer",
                "issued_at": "1779310172000",
                "signature": "c2lnbmF0dXJl",
            },
        )

    def _authorized(self, request: Any) -> Reply | None:
        header = request.headers.get("Authorization", "")
        if header.removeprefix("Bearer ") not in self._valid_tokens:
            return self._reply(
                401, [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
            )
        return None

    def _counted(self, status: int, body: Any) -> Reply:
        self.api_used += 1
        return self._reply(
            status, body, {"Sforce-Limit-Info": f"api-usage={self.api_used}/{self.api_limit}"}
        )

    def _query(self, request: Any) -> Reply:
        refused = self._authorized(request) or self._fault("query")
        if refused:
            return refused
        soql = parse_qs(urlparse(request.url).query)["q"][0]
        self.soql.append(soql)
        since_match = re.search(r"SystemModstamp > (\S+)", soql)
        since = datetime.fromisoformat(since_match.group(1)) if since_match else None
        names_match = re.search(r"Grantee__c IN \((.*?)\) ", soql)
        assert names_match, soql
        names = {
            json.loads('"' + part[1:-1].replace("\\'", "'") + '"')
            for part in re.findall(r"'(?:[^'\\]|\\.)*'", names_match.group(1))
        }
        rows = sorted(
            (
                r
                for r in self.records.values()
                if r["Grantee__c"] in names
                and (since is None or datetime.fromisoformat(r["SystemModstamp"]) > since)
            ),
            key=lambda r: (r["SystemModstamp"], r["Id"]),
        )
        size = int(request.headers.get("Sforce-Query-Options", "batchSize=2000").split("=")[1])
        locator = f"01g5e{len(self._locators):013d}"
        self._locators[locator] = rows
        return self._page(locator, 0, size)

    def _more(self, request: Any) -> Reply:
        refused = self._authorized(request) or self._fault("more")
        if refused:
            return refused
        locator, offset = urlparse(request.url).path.rsplit("/", 1)[1].split("-")
        size = int(request.headers.get("Sforce-Query-Options", "batchSize=2000").split("=")[1])
        return self._page(locator, int(offset), size)

    def _describe(self, request: Any) -> Reply:
        refused = self._authorized(request)
        if refused:
            return refused
        name = urlparse(request.url).path.split("/")[-2]
        if name != "Login_Access_Grant__c":
            missing = "The requested resource does not exist"
            return self._counted(404, [{"errorCode": "NOT_FOUND", "message": missing}])
        return self._counted(200, {"name": name, "fields": [{"name": f} for f in self.fields]})

    def _page(self, locator: str, offset: int, size: int) -> Reply:
        rows = self._locators[locator]
        page = rows[offset : offset + size]
        done = offset + size >= len(rows)
        body: dict[str, Any] = {"totalSize": len(rows), "done": done, "records": page}
        if not done:
            body["nextRecordsUrl"] = f"/services/data/v62.0/query/{locator}-{offset + size}"
        return self._counted(200, body)
