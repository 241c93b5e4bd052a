"""The ``audit`` source: the grants customers make in Setup, read from the Setup Audit Trail.

Salesforce keeps no record of a Login Access grant, only audit rows in the customer's org.
This source reads them in ``(CreatedDate, Id)`` order, page by page, and folds each
customer user's rows into grants: *granted* opens an episode (its Id is that row's Id),
*changed* moves its expiry, *revoked* ends it, a later *granted* opens the next one. Rows a
previous sync already applied (the overlap, a full re-read) change nothing. A
``suloginaccessused`` row by one of the vendor's support users is an :class:`AccessUse`.

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
from firmgrant.grant import FIELD_LIMITS, GrantRecord
from firmgrant.lifecycle import SalesforceStatus, SourceKind
from firmgrant.salesforce.client import COLLECTION_LIMIT, SalesforceClient
from firmgrant.salesforce.display import (
    AuditAction,
    DisplayError,
    GrantDisplay,
    access_ends,
    parse_display,
    same_org,
)
from firmgrant.salesforce.records import InvalidRecord, record_digest
from firmgrant.salesforce.sources import one_ahead
from firmgrant.settings import SourceSettings, VendorSettings
from firmgrant.timeutil import parse_sf_datetime

FIELDS = (
    "Id, Action, Section, Display, CreatedDate, CreatedById, CreatedBy.Username, "
    "CreatedBy.Email, DelegateUser"
)
ACTIONS = [action.value for action in AuditAction]


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One Setup Audit Trail row, checked."""

    id: str
    action: AuditAction
    at: datetime
    user_id: str  # CreatedById: who acted (for a use: whose access was used)
    username: str | None
    email: str | None
    delegate: str | None  # DelegateUser: the Login-As user who really acted, if any
    display: str


@dataclass(frozen=True, slots=True)
class AccessUse:
    """Someone from the vendor's support logged in as a customer user."""

    row_id: str
    at: datetime
    support_user: str
    customer_user_id: str
    customer_username: str | None


class AuditPage(NamedTuple):
    grants: list[tuple[AuditRow, GrantDisplay]]  # the vendor's grant actions, in order
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

    @staticmethod
    def org_name(client: SalesforceClient) -> str | None:
        """The customer org's name (one API call: asked on a first or full sync only)."""
        for page in client.query_pages("SELECT Name FROM Organization", include_deleted=False):
            for record in page:
                return _limited(record.get("Name"), "org_name")
        return None

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
                shown = parse_display(row.action, row.display, self.settings.date_order)
            except DisplayError as exc:
                page.invalid.append(
                    InvalidRecord(row.id, row.id, row.at, f"Display {exc}: {row.display[:300]!r}")
                )
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
    )


def _limited(value: object, field: str) -> str | None:
    return value[: FIELD_LIMITS[field]] if isinstance(value, str) and value.strip() else None


def _invalid(item: dict[str, Any], reason: str) -> InvalidRecord:
    row_id = item.get("Id") if isinstance(item.get("Id"), str) else None
    created = item.get("CreatedDate")
    try:
        at = parse_sf_datetime(created) if isinstance(created, str) else None
    except ValueError:
        at = None
    key = row_id or record_digest(item)
    return InvalidRecord(key, row_id, at, reason)


def fold(
    rows: Sequence[tuple[AuditRow, GrantDisplay]],
    current: dict[str, GrantRecord],
    *,
    org_id: str,
    org_name: str | None,
    zone: str,
) -> list[GrantRecord]:
    """The grants these rows make or change, given each customer user's latest episode."""
    latest = dict(current)
    changed: dict[str, GrantRecord] = {}
    for row, shown in rows:
        prior = latest.get(row.user_id)
        if prior is not None and (prior.modstamp > row.at or prior.source_id == row.id):
            continue  # applied by an earlier sync (the overlap, a full re-read)
        ended = prior is None or prior.sf_status != SalesforceStatus.ACTIVE
        if row.action == AuditAction.REVOKED:
            if prior is None or ended:
                continue  # nothing open to end (its grant aged out of the trail)
            update = prior._replace(
                sf_status=SalesforceStatus.REVOKED.value,
                revoked_at=row.at,
                revoke_reason=f"revoked in Setup by {row.username or row.user_id}",
                modstamp=row.at,
            )
        elif row.action == AuditAction.CHANGED and prior is not None and not ended:
            assert shown.through is not None
            update = prior._replace(
                expires_at=access_ends(shown.through, zone),
                via_login_as=prior.via_login_as or row.delegate is not None,
                login_as_user=prior.login_as_user or row.delegate,
                modstamp=row.at,
            )
        else:  # granted, or a change whose grant aged out of the trail: a new episode
            if prior is not None and not ended:  # one grant per user: the new one replaces it
                replaced = prior._replace(sf_status=SalesforceStatus.EXPIRED.value, modstamp=row.at)
                changed[replaced.source_id] = replaced
            update = _episode(row, shown, org_id, org_name, zone)
        latest[row.user_id] = changed[update.source_id] = update
    return list(changed.values())


def _episode(
    row: AuditRow, shown: GrantDisplay, org_id: str, org_name: str | None, zone: str
) -> GrantRecord:
    assert shown.through is not None
    return GrantRecord(
        source_id=row.id,
        org_id=org_id,
        org_name=org_name,
        grantor_id=row.user_id,
        grantor_username=row.username,
        grantor_email=row.email,
        grantee=shown.publisher_name[: FIELD_LIMITS["grantee"]],
        duration=None,
        granted_at=row.at,
        expires_at=access_ends(shown.through, zone),
        via_login_as=row.delegate is not None,
        login_as_user=row.delegate,
        sf_status=SalesforceStatus.ACTIVE.value,
        revoked_at=None,
        revoke_reason=None,
        modstamp=row.at,
        deleted=False,
    )


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
