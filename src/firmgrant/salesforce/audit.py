"""The ``audit`` source: the grants customers make in Setup, read from the Setup Audit Trail.

Salesforce keeps no record of a Login Access grant, only audit rows in the customer's org.
This source reads them in ``(CreatedDate, Id)`` order, page by page: the vendor's grant
actions (their ``Display`` parsed, the date kept as written until the org's locales read it:
:mod:`~firmgrant.salesforce.profiles`), and each ``suloginaccessused`` row by one of the
vendor's support users as an :class:`AccessUse`. How rows make grants is
:mod:`~firmgrant.salesforce.fold`; which rows are new, the ledger's.

There is no API to revoke such a grant: what firmgrant can do is end the vendor's Login-As
sessions in the org (:func:`end_sessions`) and tell the customer how to revoke in Setup.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from simple_salesforce.format import format_soql

from firmgrant.errors import SalesforceApiError
from firmgrant.grant import FIELD_LIMITS
from firmgrant.lifecycle import SourceKind
from firmgrant.salesforce.client import COLLECTION_LIMIT, SalesforceClient
from firmgrant.salesforce.dates import user_locale
from firmgrant.salesforce.display import (
    GRANT_ACTIONS,
    AuditAction,
    DisplayError,
    GrantDisplay,
    parse_display,
    same_org,
)
from firmgrant.salesforce.fold import AuditRow
from firmgrant.salesforce.records import InvalidRecord, record_digest
from firmgrant.salesforce.sources import one_ahead
from firmgrant.settings import SourceSettings, VendorSettings
from firmgrant.timeutil import parse_sf_datetime

# The granting user's locale and zone come with each row (how its date is read), at no
# call of their own.
FIELDS = (
    "Id, Action, Section, Display, CreatedDate, CreatedById, CreatedBy.Username, "
    "CreatedBy.Email, CreatedBy.LocaleSidKey, CreatedBy.TimeZoneSidKey, "
    "CreatedBy.LanguageLocaleKey, DelegateUser"
)
ACTIONS = [action.value for action in AuditAction]


@dataclass(frozen=True, slots=True)
class AccessUse:
    """Someone from the vendor's support logged in as a customer user."""

    row_id: str
    at: datetime
    support_user: str
    customer_user_id: str
    customer_username: str | None


class AuditPage(NamedTuple):
    grants: list[tuple[AuditRow, GrantDisplay]]  # the vendor's grant actions, in trail order
    uses: list[AccessUse]
    invalid: list[InvalidRecord]
    newest: datetime | None  # the newest CreatedDate read, whatever the row was


class AuditSource:
    """One customer org's Setup Audit Trail (the connected user needs "View Setup")."""

    kind = SourceKind.AUDIT

    def __init__(self, settings: SourceSettings, vendor: VendorSettings) -> None:
        assert vendor.publisher_org_id is not None  # load_settings requires it for this source
        self.settings = settings
        self.publisher_org_id = vendor.publisher_org_id
        self.support_usernames = [p.lower() for p in vendor.support_usernames]

    def soql(self, since: datetime | None) -> str:
        query = format_soql(
            "SELECT {:literal} FROM SetupAuditTrail WHERE Action IN {}", FIELDS, ACTIONS
        )
        if since is not None:
            query += format_soql(" AND CreatedDate > {}", since)
        return query + " ORDER BY CreatedDate ASC, Id ASC"

    def pages(self, client: SalesforceClient, since: datetime | None) -> Iterator[AuditPage]:
        raw_pages = client.query_pages(
            self.soql(since), include_deleted=False, batch_size=self.settings.batch_size
        )
        for raw in one_ahead(raw_pages, self.settings.batch_size):
            yield self.parse(raw)

    def parse(self, raw: Sequence[dict[str, Any]]) -> AuditPage:
        page = AuditPage([], [], [], None)
        newest = None
        for item in raw:
            try:
                row = _row(item)
            except DisplayError as exc:
                page.invalid.append(_invalid(item, str(exc)))
                continue
            newest = row.at if newest is None or row.at > newest else newest
            if row.action == AuditAction.USED:
                if row.delegate and self._is_support(row.delegate):
                    page.uses.append(
                        AccessUse(row.id, row.at, row.delegate, row.user_id, row.username)
                    )
                continue
            try:
                shown = parse_display(row.action, row.display)
            except DisplayError as exc:
                page.invalid.append(unreadable(row, str(exc)))
                continue
            if same_org(shown.publisher_org_id, self.publisher_org_id):
                page.grants.append((row, shown))
        return page._replace(newest=newest)

    def _is_support(self, username: str) -> bool:
        name = username.lower()
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.support_usernames)


def _text(item: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = item.get(name)
    if value is None or value == "":
        if required:
            raise DisplayError(f"{name} is missing")
        return None
    if not isinstance(value, str):
        raise DisplayError(f"{name} is not text")
    return value


def _required(item: dict[str, Any], name: str) -> str:
    value = _text(item, name)
    assert value is not None
    return value


def _row(item: dict[str, Any]) -> AuditRow:
    row_id, action = _required(item, "Id"), _required(item, "Action")
    created, user_id = _required(item, "CreatedDate"), _required(item, "CreatedById")
    try:
        kind, at = AuditAction(action), parse_sf_datetime(created)
    except ValueError as exc:
        raise DisplayError(f"Action or CreatedDate unreadable: {exc}") from None
    found = item.get("CreatedBy")
    user: dict[str, Any] = found if isinstance(found, dict) else {}
    return AuditRow(
        id=row_id,
        action=kind,
        at=at,
        user_id=user_id,
        username=_limited(user.get("Username"), "grantor_username"),
        email=_limited(user.get("Email"), "grantor_email"),
        delegate=_limited(item.get("DelegateUser"), "login_as_user"),
        display=_text(item, "Display", required=kind != AuditAction.USED) or "",
        locale=user_locale(user),
    )


def _limited(value: object, field: str) -> str | None:
    return value[: FIELD_LIMITS[field]] if isinstance(value, str) and value.strip() else None


def unreadable(row: AuditRow, why: str) -> InvalidRecord:
    """A row whose ``Display`` cannot be read: its Id, why, and its text."""
    return InvalidRecord(row.id, row.id, row.at, f"Display {why}: {row.display[:300]!r}")


def _invalid(item: dict[str, Any], reason: str) -> InvalidRecord:
    row_id = item.get("Id") if isinstance(item.get("Id"), str) else None
    created = item.get("CreatedDate")
    try:
        at = parse_sf_datetime(created) if isinstance(created, str) else None
    except ValueError:
        at = None
    key = row_id or record_digest(item)
    return InvalidRecord(key, row_id, at, reason)


def permissions(client: SalesforceClient) -> tuple[str | None, bool]:
    """What ``check`` says of an audit connection: why the trail cannot be read (``None``
    if it can), and whether support's sessions can be ended (``AuthSession`` deletable)."""
    try:
        for _ in client.query_pages(
            "SELECT Id FROM SetupAuditTrail ORDER BY CreatedDate DESC LIMIT 1",
            include_deleted=False,
        ):
            break
    except SalesforceApiError as exc:
        return exc.detail, False
    try:
        can_end = bool(client.describe("AuthSession").get("deletable"))
    except SalesforceApiError:
        can_end = False
    return None, can_end


def unreadable_sample(client: SalesforceClient, rows: int = 20) -> tuple[int, str | None]:
    """``check``'s look at the trail's words: of the latest ``rows`` Login Access rows (any
    publisher's), how many read, and the first that does not (its Id, why and its text)."""
    actions = [action.value for action in GRANT_ACTIONS]
    soql = format_soql(
        "SELECT Id, Action, Display FROM SetupAuditTrail WHERE Action IN {} "
        "ORDER BY CreatedDate DESC LIMIT {:literal}",
        actions,
        str(rows),
    )
    read, problem = 0, None
    for page in client.query_pages(soql, include_deleted=False):
        for item in page:
            found = item.get("Display")
            text = found if isinstance(found, str) else ""
            try:
                parse_display(AuditAction(str(item.get("Action"))), text)
            except (DisplayError, ValueError) as exc:
                problem = problem or f"row {item.get('Id')}: Display {exc}: {text[:200]!r}"
                continue
            read += 1  # any publisher's row: the words are what is checked
    return read, problem


class SessionsOutcome(NamedTuple):
    ended: int  # Login-As sessions deleted
    error: str | None  # why they could not be (Salesforce's error), if so


def end_sessions(client: SalesforceClient, user_ids: Sequence[str]) -> dict[str, SessionsOutcome]:
    """Delete the live Login-As (``SubstituteUser``) sessions of these users, per user.

    Needs "Manage Users"; without it Salesforce refuses and each user gets the error.
    """
    try:
        sessions = [
            record
            for page in client.query_pages(
                format_soql(
                    "SELECT Id, UsersId FROM AuthSession WHERE SessionType = 'SubstituteUser' "
                    "AND UsersId IN {}",
                    list(user_ids),
                ),
                include_deleted=False,
            )
            for record in page
        ]
    except SalesforceApiError as exc:
        return {user_id: SessionsOutcome(0, str(exc)) for user_id in user_ids}
    ended = dict.fromkeys(user_ids, 0)
    errors: dict[str, str] = {}
    for start in range(0, len(sessions), COLLECTION_LIMIT):
        chunk = sessions[start : start + COLLECTION_LIMIT]
        results = client.delete_collection([s["Id"] for s in chunk])
        for session, result in zip(chunk, results, strict=False):
            user_id = session["UsersId"]
            if result.get("success"):
                ended[user_id] += 1
            else:
                errors[user_id] = "; ".join(
                    f"{e.get('statusCode')}: {e.get('message')}" for e in result.get("errors") or []
                )
    return {user_id: SessionsOutcome(ended[user_id], errors.get(user_id)) for user_id in user_ids}
