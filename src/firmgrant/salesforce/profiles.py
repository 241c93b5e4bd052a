"""What a customer org tells of itself and of its users: ids, names, locales, time zones.

A vendor with hundreds of customers cannot know how each one writes dates; Salesforce can
say. ``Organization`` gives the org's Id, name and defaults (``TimeZoneSidKey``,
``DefaultLocaleSidKey``, ``LanguageLocaleKey``); each trail row brings its granting user's
own (``CreatedBy.LocaleSidKey``, ``CreatedBy.TimeZoneSidKey``); the integration user's is
asked of ``User`` only when a row's date reads in doubt. :class:`TrailReader` turns an audit
row into a :class:`TrailRow` with the expiry read in those terms
(:mod:`firmgrant.salesforce.dates`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from simple_salesforce.format import format_soql

from firmgrant.errors import SalesforceApiError
from firmgrant.grant import FIELD_LIMITS
from firmgrant.salesforce.client import SalesforceClient
from firmgrant.salesforce.dates import (
    Candidate,
    Locale,
    OrgProfile,
    Reading,
    candidates,
    read_through,
    user_locale,
)
from firmgrant.salesforce.display import DateOrder, DisplayError, GrantDisplay, access_ends
from firmgrant.salesforce.fold import AuditRow, TrailRow

log = logging.getLogger("firmgrant.salesforce")


def learn_org(client: SalesforceClient) -> OrgProfile:
    """The org's Id, name and defaults (one API call)."""
    soql = (
        "SELECT Id, Name, TimeZoneSidKey, DefaultLocaleSidKey, LanguageLocaleKey FROM Organization"
    )
    for page in client.query_pages(soql, include_deleted=False):
        for record in page:
            name = record.get("Name")
            org_id = record.get("Id")
            defaults = user_locale({**record, "LocaleSidKey": record.get("DefaultLocaleSidKey")})
            return OrgProfile(
                org_id=org_id if isinstance(org_id, str) and org_id.startswith("00D") else None,
                org_name=name[: FIELD_LIMITS["org_name"]] if isinstance(name, str) else None,
                defaults=defaults,
            )
    return OrgProfile(client.org_id, None, Locale())


def learn_user(client: SalesforceClient, user_id: str) -> Locale:
    """One user's locale and zone (one API call); a refusal or no such user: nothing known."""
    soql = format_soql(
        "SELECT Id, LocaleSidKey, TimeZoneSidKey, LanguageLocaleKey FROM User WHERE Id = {}",
        user_id,
    )
    try:
        for page in client.query_pages(soql, include_deleted=False):
            for record in page:
                return user_locale(record)
    except SalesforceApiError as exc:
        log.warning("%s: the integration user's locale is unreadable (%s)", client.name, exc)
    return Locale()


class TrailReader:
    """Reads audit rows' dates as their org wrote them: the connection's settings first
    (overrides), then the granting user's locale and zone (each row brings them), the org's
    defaults, and — only when those leave a date in doubt — the integration user's."""

    def __init__(
        self,
        *,
        date_order: DateOrder | None,
        time_zone: str | None,
        profile: OrgProfile | None,
        reader: Callable[[], Locale | None] = lambda: None,
    ) -> None:
        self.date_order, self.time_zone = date_order, time_zone
        self.defaults = profile.defaults if profile else Locale()
        self.reader = reader

    def zone(self, row: AuditRow) -> str:
        """The zone whose midnight starts a user's "through" date."""
        return self.time_zone or row.locale.time_zone or self.defaults.time_zone or "UTC"

    def read(self, row: AuditRow, shown: GrantDisplay) -> TrailRow:
        """The row with its expiry read (a :class:`DisplayError` if its date reads in no
        order at all)."""
        expires_at, read_as, note = None, None, None
        if shown.through is not None:
            zone = self.zone(row)
            reading = self._reading(row, shown.through, zone)
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

    def _reading(self, row: AuditRow, through: str, zone: str) -> Reading:
        reading = read_through(through, row.at, zone, self._orders(row, None))
        if reading.note is None:
            return reading
        reader = self.reader()  # in doubt: Display may be written in the reader's locale
        if reader is None or not reader.locale:
            return reading
        return read_through(through, row.at, zone, self._orders(row, reader))

    def _orders(self, row: AuditRow, reader: Locale | None) -> list[Candidate]:
        who = row.username or row.user_id
        return candidates(
            self.date_order,
            [
                (row.locale.locale, f"{who}'s"),
                (reader.locale if reader else None, "the integration user's"),
                (self.defaults.locale, "the org's default"),
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


__all__ = ["Locale", "OrgProfile", "TrailReader", "learn_org", "learn_user", "read_all"]
