"""Customer orgs in the sandbox: each with its own Setup Audit Trail, users, sessions and limits.

A customer org is reached the way a real one is: the vendor's connected app asks for a token
for the org's integration user (JWT ``sub``, or the password flow's ``username``); the token
starts with the org's Id, and every API call made with it is answered by that org alone.
Customers act in Setup as Salesforce records it: audit rows with ``CreatedBy`` (Username,
Email), ``DelegateUser`` when a Login-As user acted, grants to Salesforce's own support and
to other publishers, and ``suloginaccessused`` (plus a live ``SubstituteUser`` session) when
the vendor's support logs in.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from firmgrant.sandbox.customers import ORG_NAMES, login_as_session
from firmgrant.sandbox.oauth import ConnectedApp
from firmgrant.sandbox.schema import AUDIT, AUTH_SESSION, OBJECTS, ORGANIZATION, USER, make_id
from firmgrant.sandbox.soql import Record, sf_datetime
from firmgrant.sandbox.store import OrgStore
from firmgrant.timeutil import parse_sf_datetime

RETENTION = timedelta(days=180)  # Salesforce deletes audit rows older than this
OTHER_PUBLISHER = ("Another Vendor Support", "00D5e00000OTHER")
SUPPORT_USERS = ("ana.support@firmworks.example", "li.support@firmworks.example")
# The org's default locale when only a date order is given.
LOCALE_OF_ORDER = {"MDY": "en_US", "DMY": "en_GB", "YMD": "sv_SE"}
# How Salesforce's locales write a short date (Java patterns); others write dd/MM/yyyy.
SHORT_DATES = {
    "en_US": "M/d/yyyy", "es_US": "M/d/yyyy", "en_GB": "dd/MM/yyyy", "fr_FR": "dd/MM/yyyy",
    "de_DE": "dd.MM.yyyy", "de_AT": "dd.MM.yyyy", "ru_RU": "dd.MM.yyyy", "nl_NL": "d-M-yyyy",
    "ja_JP": "yyyy/MM/dd", "zh_CN": "yyyy/M/d", "sv_SE": "yyyy-MM-dd", "en_CA": "yyyy-MM-dd",
}  # fmt: skip


def short_date(day: date, locale: str) -> str:
    """A date as the locale writes it in Setup (``11/1/2030``, ``01.11.2030``, ``2030/11/01``)."""
    pattern = SHORT_DATES.get(locale, "dd/MM/yyyy")
    for token, value in (
        ("yyyy", str(day.year)), ("MM", f"{day.month:02d}"), ("dd", f"{day.day:02d}"),
        ("M", str(day.month)), ("d", str(day.day)),
    ):  # fmt: skip
        pattern = pattern.replace(token, value)
    return pattern


@dataclass
class TenantOptions:
    """How a customer org renders dates and what its integration user may do."""

    date_order: str = "MDY"  # MDY, DMY or YMD: the org's default locale, unless ``locale``
    time_zone: str = "UTC"  # the org's default zone (TimeZoneSidKey)
    view_setup: bool = True  # may read SetupAuditTrail
    manage_users: bool = True  # may delete AuthSession rows
    locale: str | None = None  # the org's default locale (DefaultLocaleSidKey)

    @property
    def default_locale(self) -> str:
        return self.locale or LOCALE_OF_ORDER.get(self.date_order, "en_US")


@dataclass
class CustomerOrg:
    number: int
    org_id: str
    name: str
    domain: str
    options: TenantOptions
    store: OrgStore
    users: dict[str, str] = field(default_factory=dict)  # username → user Id
    api: Any = None  # the org's RestApi, set by Tenants

    @property
    def integration_username(self) -> str:
        return f"integration@{self.domain}"

    def user(
        self, username: str, *, locale: str | None = None, time_zone: str | None = None
    ) -> str:
        """The user's Id, created on first mention with the org's default locale and zone
        (or those given); given for a known user, they change."""
        if username not in self.users:
            user_id = make_id("005", self.number * 1000 + len(self.users) + 1)
            self.users[username] = user_id
            self.store.put(
                USER,
                {
                    "Id": user_id,
                    "Username": username,
                    "LocaleSidKey": locale or self.options.default_locale,
                    "TimeZoneSidKey": time_zone or self.options.time_zone,
                    "LanguageLocaleKey": "en_US",
                },
            )
        elif locale or time_zone:
            record = self.store.records[USER.name.lower()][self.users[username]]
            record["LocaleSidKey"] = locale or record["LocaleSidKey"]
            record["TimeZoneSidKey"] = time_zone or record["TimeZoneSidKey"]
        return self.users[username]

    def locale_of(self, username: str) -> tuple[str, str]:
        """The user's locale and zone, as their User record holds them."""
        record = self.store.records[USER.name.lower()].get(self.user(username), {})
        return (
            record.get("LocaleSidKey") or self.options.default_locale,
            record.get("TimeZoneSidKey") or self.options.time_zone,
        )

    # -- what customers do in Setup ----------------------------------------------------------
    def _row(
        self,
        action: str,
        display: str,
        username: str,
        *,
        at: datetime | None,
        delegate: str | None = None,
    ) -> Record:
        return self.store.put(
            AUDIT,
            {
                "Action": action,
                "Section": "Manage Users",
                "CreatedById": self.user(username),
                "CreatedBy.Username": username,
                "CreatedBy.Email": username,
                "DelegateUser": delegate,
                "Display": display,
                # A row written at ``at``: seeded history, or one that became visible late.
                **({"CreatedDate": sf_datetime(at)} if at is not None else {}),
            },
            at=at,
        )

    def through(self, at: datetime, days: int, username: str | None = None) -> str:
        """The date Setup shows: the last day of access, in the acting user's zone, written
        in their locale (the org's defaults for a user not named)."""
        locale, zone = (
            self.locale_of(username)
            if username
            else (self.options.default_locale, self.options.time_zone)
        )
        day = (at + timedelta(days=days)).astimezone(ZoneInfo(zone)).date()
        return short_date(day, locale)

    def grant(
        self,
        username: str,
        days: int,
        *,
        vendor: tuple[str, str],
        at: datetime | None = None,
        login_as: str | None = None,
        verb: str = "granted",
        to_salesforce: bool = False,
    ) -> Record:
        """A grant (or, with ``verb="changed"``, a new expiry) of login access."""
        when = at or self.store.clock()
        action = {"granted": "loginasgranted", "changed": "loginasmodified"}[verb]
        through = self.through(when, days, username)
        if to_salesforce:
            text = f"{username} has {verb} user login access through {through}"
            return self._row(action + "tosfdc", text + " to Salesforce Support", username, at=at)
        name, publisher = vendor
        display = (
            f"{username} has {verb} user login access through {through} "
            f"to package publisher {name} ({publisher[:15]})"
        )
        return self._row(action + "topartnerbt", display, username, at=at, delegate=login_as)

    def revoke(
        self, username: str, *, vendor: tuple[str, str], at: datetime | None = None
    ) -> Record:
        name, publisher = vendor
        display = (
            f"{username} has revoked user login access to package publisher {name} "
            f"({publisher[:15]})"
        )
        return self._row("loginasrevokedtopartnerbt", display, username, at=at)

    def use(self, support_user: str, username: str, *, at: datetime | None = None) -> Record:
        """Support logs in as this user: the audit row and a live Login-As session."""
        self.store.put(AUTH_SESSION, login_as_session(self.user(username)), at=at)
        display = f"Logged in using Login-As access for {username}"
        return self._row("suloginaccessused", display, username, at=at, delegate=support_user)

    def prune(self) -> None:
        """Salesforce keeps about 180 days of audit trail."""
        cutoff = sf_datetime(self.store.clock() - RETENTION)
        with self.store.lock:
            rows = self.store.records[AUDIT.name.lower()]
            for row_id in [i for i, r in rows.items() if r["CreatedDate"] < cutoff]:
                del rows[row_id]

    def live_sessions(self, username: str) -> int:
        user_id = self.users.get(username)
        sessions = self.store.records[AUTH_SESSION.name.lower()].values()
        return sum(
            s["UsersId"] == user_id and s["SessionType"] == "SubstituteUser" for s in sessions
        )


def rng_name(rng: random.Random) -> str:
    return rng.choice(ORG_NAMES)


class Tenants:
    """The customer orgs of one sandbox, found by integration username or by token."""

    def __init__(
        self,
        *,
        app: ConnectedApp,
        vendor: tuple[str, str],
        make_api: Any,
        clock: Any,
        rng: random.Random,
    ) -> None:
        self.app = app
        self.vendor = vendor  # (publisher name, publisher org id)
        self.make_api = make_api
        self.clock = clock
        self.rng = rng
        self.orgs: dict[str, CustomerOrg] = {}  # by 15-character org Id
        self._by_username: dict[str, CustomerOrg] = {}  # by integration username

    def add(self, options: TenantOptions | None = None, *, name: str | None = None) -> CustomerOrg:
        number = len(self.orgs) + 1
        options = options or TenantOptions()
        store = OrgStore(
            clock=self.clock,
            hidden=frozenset() if options.view_setup else frozenset({"setupaudittrail"}),
            undeletable=frozenset() if options.manage_users else frozenset({"authsession"}),
            first_number=number * 10_000_000,  # Ids unique across orgs, as Salesforce's are
        )
        org = CustomerOrg(
            number=number,
            org_id=make_id("00D", 100 + number, pod="7x0"),
            name=name or f"{rng_name(self.rng)} #{number}",
            domain=f"customer{number}.example",
            options=options,
            store=store,
        )
        store.put(
            ORGANIZATION,
            {
                "Id": org.org_id,
                "Name": org.name,
                "TimeZoneSidKey": options.time_zone,
                "DefaultLocaleSidKey": options.default_locale,
                "LanguageLocaleKey": "en_US",
            },
        )
        org.user(org.integration_username)
        org.api = self.make_api(org.store)
        self.orgs[org.org_id[:15]] = org
        self._by_username[org.integration_username] = org
        return org

    def by_token(self, token: str) -> CustomerOrg | None:
        return self.orgs.get(token.partition("!")[0])

    def by_username(self, username: str | None) -> CustomerOrg | None:
        return self._by_username.get(username) if username else None

    def app_for(self, org: CustomerOrg) -> ConnectedApp:
        """The vendor's connected app as installed in this org, for its integration user."""
        return replace(
            self.app,
            username=org.integration_username,
            org_id=org.org_id,
            user_id=org.user(org.integration_username),
        )

    def find(self, org_ref: str) -> CustomerOrg:
        org = self.orgs.get(org_ref[:15]) or next(
            (o for o in self.orgs.values() if str(o.number) == org_ref), None
        )
        if org is None:
            raise KeyError(f"no customer org {org_ref!r}")
        return org

    # -- seeding -----------------------------------------------------------------------------
    def seed(self, count: int, *, grants: int = 3) -> dict[str, int]:
        """``count`` orgs with realistic histories over the last 200 days."""
        made = {"orgs": 0, "grants": 0, "login_as": 0, "revoked": 0, "uses": 0, "violations": 0}
        for _ in range(count):
            org = self.add()
            made["orgs"] += 1
            self.history(org, grants, made)
        return made

    def history(self, org: CustomerOrg, grants: int, made: dict[str, int]) -> None:
        rng, now = self.rng, self.clock()
        for index in range(grants):
            first = rng.choice(("jane", "zoë", "o'neil", "li"))
            user = f"{first}.{index}@{org.domain}"
            at = now - timedelta(days=rng.uniform(0.5, 200))
            days = rng.choice((1, 3, 7, 30, 365))
            login_as = f"admin@{org.domain}" if rng.random() < 0.1 else None
            org.grant(user, days, vendor=self.vendor, at=at, login_as=login_as)
            made["grants"] += 1
            made["login_as"] += login_as is not None
            if rng.random() < 0.3:
                later = at + timedelta(days=days * rng.random())
                if later < now:
                    org.grant(user, days, vendor=self.vendor, at=later, verb="changed")
            if rng.random() < 0.15:
                later = at + timedelta(hours=rng.uniform(1, 24))
                if later < now:
                    org.revoke(user, vendor=self.vendor, at=later)
                    made["revoked"] += 1
            if rng.random() < 0.3:
                used = at + timedelta(hours=rng.uniform(0.1, 48))
                if used < now:
                    org.use(rng.choice(SUPPORT_USERS), user, at=used)
                    made["uses"] += 1
        if rng.random() < 0.3:
            org.grant(f"admin@{org.domain}", 7, vendor=self.vendor, to_salesforce=True,
                      at=now - timedelta(days=2))  # fmt: skip
        if rng.random() < 0.3:
            org.grant(f"admin@{org.domain}", 7, vendor=OTHER_PUBLISHER, at=now - timedelta(days=3))
        org.prune()

    def act(self, method: str, parts: list[str], body: dict[str, Any]) -> Any:
        """``/_sandbox/tenants``: make customer orgs; ``/_sandbox/tenants/<org>/<action>``:
        act in one as its users (and support) would."""
        tenants = self
        if not parts and method == "POST":
            options = TenantOptions(
                date_order=body.get("date_order") or "MDY",
                time_zone=body.get("time_zone") or "UTC",
                view_setup=bool(body.get("view_setup", True)),
                manage_users=bool(body.get("manage_users", True)),
                locale=body.get("locale"),
            )
            made = [tenants.add(options) for _ in range(int(body.get("count", 1)))]
            for org in made:
                if int(body.get("grants", 0)):
                    tenants.history(org, int(body["grants"]), dict.fromkeys(_COUNTS, 0))
            return [_describe_tenant(org) for org in made]
        if not parts and method == "GET":
            return [_describe_tenant(org) for org in tenants.orgs.values()]
        org = tenants.find(parts[0])
        action = parts[1] if len(parts) > 1 else ""
        at = parse_sf_datetime(body["at"]) if body.get("at") else None
        user = body.get("user", f"jane@{org.domain}")
        if body.get("locale") or body.get("time_zone"):  # the user's own settings
            org.user(user, locale=body.get("locale"), time_zone=body.get("time_zone"))
        vendor = tenants.vendor
        if action == "grant" and method == "POST":
            return org.grant(user, int(body.get("days", 7)), vendor=vendor, at=at,
                             login_as=body.get("login_as"))  # fmt: skip
        if action == "change" and method == "POST":
            return org.grant(user, int(body.get("days", 7)), vendor=vendor, at=at, verb="changed")
        if action == "revoke" and method == "POST":
            return org.revoke(user, vendor=vendor, at=at)
        if action == "use" and method == "POST":
            return org.use(body.get("support_user", SUPPORT_USERS[0]), user, at=at)
        if action == "salesforce" and method == "POST":
            return org.grant(user, int(body.get("days", 7)), vendor=vendor, at=at,
                             to_salesforce=True)  # fmt: skip
        if action == "other" and method == "POST":
            return org.grant(user, int(body.get("days", 7)), vendor=OTHER_PUBLISHER, at=at)
        if action == "stats" and method == "GET":
            return {
                **_describe_tenant(org),
                "audit_rows": org.store.count("SetupAuditTrail"),
                "login_as_sessions": {u: org.live_sessions(u) for u in org.users},
            }
        raise ValueError(f"unknown customer org action {method} {action!r}")

    # -- state -------------------------------------------------------------------------------
    def dump(self) -> list[dict[str, Any]]:
        return [
            {
                "name": org.name,
                "options": vars(org.options),
                "users": org.users,
                "records": {n: list(r.values()) for n, r in org.store.records.items()},
                "next_number": org.store.next_number(),
                "api_used": org.api.api_used,
            }
            for org in self.orgs.values()
        ]

    def load(self, saved: list[dict[str, Any]]) -> None:
        for data in saved:
            org = self.add(TenantOptions(**data["options"]), name=data["name"])
            org.users.update(data["users"])
            with org.store.bulk():
                for object_name, records in data["records"].items():
                    obj = OBJECTS[object_name]
                    for record in records:
                        org.store.restore(obj, record)
            org.store.restart_numbers(data["next_number"])
            org.api.api_used = data.get("api_used", 0)


_COUNTS = ("orgs", "grants", "login_as", "revoked", "uses", "violations")


def _describe_tenant(org: CustomerOrg) -> dict[str, Any]:
    return {
        "number": org.number,
        "org_id": org.org_id,
        "name": org.name,
        "username": org.integration_username,
        "connection": f"org{org.number}",
        "options": vars(org.options),
    }
