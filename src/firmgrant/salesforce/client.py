"""A Salesforce REST client that survives what Salesforce does in production.

It wraps simple-salesforce (given ``instance_url``, ``session_id`` and our own
``requests.Session``) and adds: re-authentication on ``INVALID_SESSION_ID``, backoff on 5xx,
timeouts and connection errors, ``REQUEST_LIMIT_EXCEEDED`` as :class:`ApiLimitExceeded`,
``Sforce-Limit-Info`` tracking with a floor of remaining calls, and a count of the REST calls
spent (token requests do not count against the org's API limit).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlparse

import orjson
import requests
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceError as SimpleSalesforceError
from simple_salesforce.exceptions import SalesforceExpiredSession

from firmgrant.errors import (
    ApiLimitExceeded,
    AuthenticationError,
    SalesforceApiError,
)
from firmgrant.salesforce._retry import with_backoff
from firmgrant.salesforce.auth import Authenticator, Token
from firmgrant.settings import ConnectionSettings, SyncSettings
from firmgrant.timeutil import utcnow

T = TypeVar("T")
log = logging.getLogger("firmgrant.salesforce")
_LIMIT_INFO = re.compile(r"api-usage=(\d+)/(\d+)")
MAX_REAUTH = 2
COLLECTION_LIMIT = 200  # records per sObject Collections call


@dataclass(frozen=True)
class ApiUsage:
    used: int
    limit: int
    seen_at: datetime

    @property
    def remaining(self) -> int:
        return self.limit - self.used


def parse_limit_info(header: str, seen_at: datetime) -> ApiUsage | None:
    """``api-usage=18/5000`` (possibly followed by per-app usage) → ApiUsage."""
    match = _LIMIT_INFO.search(header)
    return ApiUsage(int(match.group(1)), int(match.group(2)), seen_at) if match else None


class _Session(requests.Session):
    """A session whose own CA bundle beats ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE``.

    Plain requests lets those environment variables override ``Session.verify``
    (psf/requests#3829), which would silently ignore the ``ca_bundle`` setting.
    """

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> Any:
        merged = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if verify is None and isinstance(self.verify, str):
            merged["verify"] = self.verify
        return merged


class _Salesforce(Salesforce):
    """simple-salesforce with responses decoded by orjson.

    A page is 2,000 records: the stdlib decoder (and simple-salesforce's default
    OrderedDict) was a large share of the sync's time, in the thread that fetches ahead.
    """

    def parse_result_to_json(self, result: requests.Response) -> Any:
        return orjson.loads(result.content)


def make_session(settings: ConnectionSettings) -> requests.Session:
    session = _Session()
    if settings.ca_bundle is not None:
        session.verify = str(settings.ca_bundle)
    session.headers["User-Agent"] = "firmgrant"
    return session


def _error_body(exc: SimpleSalesforceError) -> tuple[str | None, str]:
    """Salesforce error bodies are a JSON list of ``{message, errorCode, fields}``."""
    content = exc.content
    if isinstance(content, list) and content and isinstance(content[0], dict):
        return content[0].get("errorCode"), str(content[0].get("message", ""))
    if isinstance(content, dict):
        return content.get("errorCode") or content.get("error"), str(content.get("message", ""))
    return None, str(content)[:200]


class SalesforceClient:
    """REST access to one connection's org. Not thread-safe: one per job run."""

    def __init__(
        self,
        name: str,
        settings: ConnectionSettings,
        policy: SyncSettings,
        *,
        session: requests.Session | None = None,
        authenticator: Authenticator | None = None,
        usage: ApiUsage | None = None,
        token: Token | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.policy = policy
        self.session = session if session is not None else make_session(settings)
        self.session.hooks["response"].append(self._observe)
        self.authenticator = authenticator or Authenticator(name, settings, self.session, policy)
        self.api_calls = 0
        self.usage = usage
        self._sf: Salesforce | None = None
        # A token issued to an earlier client of this org is used until the org refuses it.
        self._token: Token | None = token

    def __repr__(self) -> str:
        return f"SalesforceClient({self.name!r}, api_calls={self.api_calls})"

    # -- transport observation -------------------------------------------------------------
    def _observe(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        if not urlparse(response.url).path.startswith("/services/data"):
            return  # the token endpoint does not count against the API limit
        if response.status_code < 500 and response.status_code not in (401, 403):
            self.api_calls += 1
        header = response.headers.get("Sforce-Limit-Info")
        if header:
            self.usage = parse_limit_info(header, utcnow()) or self.usage

    # -- calls -------------------------------------------------------------------------------
    @property
    def token(self) -> Token | None:
        """The access token in use, if one was issued (kept by :class:`Clients`)."""
        return self._token

    @property
    def org_id(self) -> str | None:
        """The connected org's Id, known once a token was issued."""
        return self._token.org_id if self._token is not None else None

    @property
    def user_id(self) -> str | None:
        """The Id of the user firmgrant acts as (the integration user), once a token was
        issued and named it."""
        return self._token.user_id if self._token is not None else None

    def _salesforce(self) -> Salesforce:
        if self._sf is None:
            token = self._token = self._token or self.authenticator.authenticate()
            self._sf = _Salesforce(
                instance_url=token.instance_url,
                session_id=token.access_token.get_secret_value(),
                session=self.session,
                version=self.settings.api_version,
            )
        return self._sf

    def _check_floor(self) -> None:
        usage = self.usage
        if usage is not None and usage.remaining < self.policy.api_floor:
            raise ApiLimitExceeded(
                f"only {usage.remaining} API calls left today "
                f"(used {usage.used} of {usage.limit}; floor {self.policy.api_floor})",
                connection=self.name,
            )

    def call(self, what: str, fn: Callable[[Salesforce], T]) -> T:
        """Run one REST call with re-authentication, backoff and error mapping."""
        for reauth in range(MAX_REAUTH + 1):
            self._check_floor()
            sf = self._salesforce()
            try:
                return with_backoff(what, self.name, self.policy, partial(fn, sf))
            except SalesforceExpiredSession as exc:
                code, message = _error_body(exc)
                if not self.authenticator.can_refresh:
                    raise AuthenticationError(
                        f"{what}: the access token was refused ({code}); "
                        "get a new one, e.g. with `sf org display --json`",
                        connection=self.name,
                    ) from None
                if reauth == MAX_REAUTH:
                    raise AuthenticationError(
                        f"{what}: session refused again after re-authenticating: {message}",
                        connection=self.name,
                    ) from None
                log.info("%s: session expired during %s; re-authenticating", self.name, what)
                self._sf = self._token = None
            except SimpleSalesforceError as exc:
                raise self._map_error(what, exc) from None
        raise AssertionError("unreachable")

    def _map_error(self, what: str, exc: SimpleSalesforceError) -> Exception:
        code, message = _error_body(exc)
        if code == "REQUEST_LIMIT_EXCEEDED":
            return ApiLimitExceeded(f"{what}: {message or code}", connection=self.name)
        return SalesforceApiError(
            f"{what} failed: HTTP {exc.status} {code or ''}: {message}".replace("  ", " "),
            connection=self.name,
            status=exc.status,
            error_code=code,
        )

    @property
    def _timeout(self) -> float:
        return self.settings.timeout_seconds

    def query_pages(
        self, soql: str, *, include_deleted: bool, batch_size: int = 2000
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield the query's records page by page, following ``nextRecordsUrl``.

        Only one page is held at a time, so memory stays flat whatever the result size.
        """
        headers = {"Sforce-Query-Options": f"batchSize={batch_size}"}
        page: dict[str, Any] = self.call(
            "query",
            lambda sf: sf.query(
                soql, include_deleted=include_deleted, headers=headers, timeout=self._timeout
            ),
        )
        while True:
            yield page["records"]
            next_url = page.get("nextRecordsUrl")
            if page.get("done", True) or not next_url:
                return
            page = self.call(
                "query_more",
                partial(
                    Salesforce.query_more,
                    next_records_identifier=next_url,
                    identifier_is_url=True,
                    headers=headers,
                    timeout=self._timeout,
                ),
            )

    def describe(self, object_name: str) -> dict[str, Any]:
        result: dict[str, Any] | None = self.call(
            f"describe {object_name}",
            lambda sf: sf.restful(f"sobjects/{object_name}/describe", timeout=self._timeout),
        )
        return result or {}

    def update_collection(
        self, object_name: str, records: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """PATCH ``composite/sobjects`` (≤ 200, ``allOrNone=false``): one result per record.

        Each result is ``{"id", "success", "errors": [{"statusCode", "message", "fields"}]}``.
        """
        if len(records) > COLLECTION_LIMIT:
            raise ValueError(f"at most {COLLECTION_LIMIT} records per collection call")
        body = {
            "allOrNone": False,
            "records": [{"attributes": {"type": object_name}, **record} for record in records],
        }
        results: list[dict[str, Any]] | None = self.call(
            f"update {len(records)} {object_name}",
            lambda sf: sf.restful(
                "composite/sobjects", method="PATCH", json=body, timeout=self._timeout
            ),
        )
        return results or []

    def delete_collection(self, ids: list[str]) -> list[dict[str, Any]]:
        """DELETE ``composite/sobjects`` (≤ 200 Ids, ``allOrNone=false``): one result per Id."""
        if len(ids) > COLLECTION_LIMIT:
            raise ValueError(f"at most {COLLECTION_LIMIT} records per collection call")
        results: list[dict[str, Any]] | None = self.call(
            f"delete {len(ids)} records",
            lambda sf: sf.restful(
                "composite/sobjects",
                method="DELETE",
                params={"ids": ",".join(ids), "allOrNone": "false"},
                timeout=self._timeout,
            ),
        )
        return results or []

    def read_collection(
        self, object_name: str, ids: list[str], fields: list[str]
    ) -> dict[str, dict[str, Any]]:
        """GET ``composite/sobjects/<object>`` for up to 200 Ids; missing records are left out."""
        results: list[dict[str, Any] | None] | None = self.call(
            f"read {len(ids)} {object_name}",
            lambda sf: sf.restful(
                f"composite/sobjects/{object_name}",
                params={"ids": ",".join(ids), "fields": ",".join(fields)},
                timeout=self._timeout,
            ),
        )
        return {record["Id"]: record for record in results or [] if record}
