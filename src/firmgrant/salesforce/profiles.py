"""What a customer org tells of itself and of its users: ids, names, locales, time zones.

A vendor with hundreds of customers cannot know how each one writes dates; Salesforce can
say. ``Organization`` gives the org's Id, name and defaults (``TimeZoneSidKey``,
``DefaultLocaleSidKey``, ``LanguageLocaleKey``); ``User`` gives each user's own
(``LocaleSidKey``, ``TimeZoneSidKey``, ``LanguageLocaleKey``): the granting users' and the
integration user's. :class:`TrailReader` turns an audit row into a :class:`TrailRow` with the
expiry read in those terms (:mod:`firmgrant.salesforce.dates`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from simple_salesforce.format import format_soql

from firmgrant.errors import SalesforceApiError
from firmgrant.grant import FIELD_LIMITS
from firmgrant.salesforce.client import SalesforceClient
from firmgrant.salesforce.dates import Candidate, Locale, OrgProfile, candidates, read_through
from firmgrant.salesforce.display import DateOrder, DisplayError, GrantDisplay, access_ends
from firmgrant.salesforce.fold import AuditRow, TrailRow

log = logging.getLogger("firmgrant.salesforce")
# User Ids per query: 200 Ids of 18 characters keep the URL well under Salesforce's limit.
USERS_PER_QUERY = 200


def _zone(value: object) -> str | None:
    """A time zone Python knows, else ``None`` (a Salesforce key it does not know)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("time zone %r is unknown here: ignored", value[:64])
        return None
    return value


def _key(value: object) -> str | None:
    return value[:16] if isinstance(value, str) and value else None


def learn_org(client: SalesforceClient) -> OrgProfile:
    """The org's Id, name and defaults (one API call)."""
    soql = (
        "SELECT Id, Name, TimeZoneSidKey, DefaultLocaleSidKey, LanguageLocaleKey FROM Organization"
    )
    for page in client.query_pages(soql, include_deleted=False):
        for record in page:
            name = record.get("Name")
            org_id = record.get("Id")
            return OrgProfile(
                org_id=org_id if isinstance(org_id, str) and org_id.startswith("00D") else None,
                org_name=name[: FIELD_LIMITS["org_name"]] if isinstance(name, str) else None,
                defaults=Locale(
                    _zone(record.get("TimeZoneSidKey")),
                    _key(record.get("DefaultLocaleSidKey")),
                    _key(record.get("LanguageLocaleKey")),
                ),
            )
    return OrgProfile(client.org_id, None, Locale())


def learn_users(client: SalesforceClient, user_ids: Iterable[str]) -> dict[str, Locale]:
    """Each user's locale and zone (one API call per 200 users). A user Salesforce does not
    return, or a refusal, leaves the user out: their rows are read by the org's defaults."""
    wanted = sorted(set(user_ids))
    found: dict[str, Locale] = {}
    for start in range(0, len(wanted), USERS_PER_QUERY):
        chunk = wanted[start : start + USERS_PER_QUERY]
        soql = format_soql(
            "SELECT Id, LocaleSidKey, TimeZoneSidKey, LanguageLocaleKey FROM User WHERE Id IN {}",
            chunk,
        )
        try:
            for page in client.query_pages(soql, include_deleted=False):
                for record in page:
                    found[str(record.get("Id"))[:18]] = _locale(record)
        except SalesforceApiError as exc:
            log.warning("%s: users' locales unreadable (%s): org defaults used", client.name, exc)
            return found
    # Salesforce may answer with 18-character Ids for 15-character ones asked.
    by_prefix = {user_id[:15]: locale for user_id, locale in found.items()}
    return {user_id: by_prefix[user_id[:15]] for user_id in wanted if user_id[:15] in by_prefix}


def _locale(record: Mapping[str, Any]) -> Locale:
    return Locale(
        _zone(record.get("TimeZoneSidKey")),
        _key(record.get("LocaleSidKey")),
        _key(record.get("LanguageLocaleKey")),
    )


class TrailReader:
    """Reads audit rows' dates as their org wrote them: the connection's settings first
    (overrides), then what the granting user, the integration user and the org told."""

    def __init__(
        self,
        *,
        date_order: DateOrder | None,
        time_zone: str | None,
        profile: OrgProfile | None,
        users: Mapping[str, Locale],
    ) -> None:
        self.date_order, self.time_zone = date_order, time_zone
        self.profile, self.users = profile, users

    def zone(self, user_id: str) -> str:
        """The zone whose midnight starts a user's "through" date."""
        user = self.users.get(user_id)
        defaults = self.profile.defaults if self.profile else Locale()
        return self.time_zone or (user and user.time_zone) or defaults.time_zone or "UTC"

    def read(self, row: AuditRow, shown: GrantDisplay) -> TrailRow:
        """The row with its expiry read (a :class:`DisplayError` if its date reads in no
        order at all)."""
        expires_at, read_as, note = None, None, None
        if shown.through is not None:
            zone = self.zone(row.user_id)
            reading = read_through(shown.through, row.at, zone, self._orders(row))
            expires_at, read_as, note = (
                access_ends(reading.through, zone),
                reading.order,
                reading.note,
            )
        return TrailRow(
            id=row.id,
            action=row.action,
            at=row.at,
            user_id=row.user_id,
            username=row.username,
            email=row.email,
            delegate=row.delegate,
            publisher=shown.publisher_name[: FIELD_LIMITS["grantee"]],
            expires_at=expires_at,
            read_as=read_as,
            note=note,
            display=row.display,
        )

    def _orders(self, row: AuditRow) -> list[Candidate]:
        user = self.users.get(row.user_id)
        reader = self.profile.reader if self.profile else None
        defaults = self.profile.defaults if self.profile else Locale()
        who = row.username or row.user_id
        return candidates(
            self.date_order,
            [
                (user.locale if user else None, f"{who}'s"),
                (reader.locale if reader else None, "the integration user's"),
                (defaults.locale, "the org's default"),
            ],
        )


def read_all(
    reader: TrailReader, rows: Sequence[tuple[AuditRow, GrantDisplay]]
) -> tuple[list[TrailRow], list[tuple[AuditRow, str]]]:
    """Every row read, and the rows whose date reads in no order (with why)."""
    read, unread = [], []
    for row, shown in rows:
        try:
            read.append(reader.read(row, shown))
        except DisplayError as exc:
            unread.append((row, str(exc)))
    return read, unread


__all__ = [
    "Locale",
    "OrgProfile",
    "TrailReader",
    "learn_org",
    "learn_users",
    "read_all",
]
