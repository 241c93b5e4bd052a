"""Customers acting in the sandbox org: granting, extending, revoking, deleting Login Access.

Each action writes the grant record and the Setup Audit Trail row Salesforce would write; a
grant made by a Login-As user carries ``DelegateUser``. Seeding makes realistic histories.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from firmgrant.sandbox.schema import AUDIT, AUTH_SESSION, DURATIONS, GRANT, make_id
from firmgrant.sandbox.soql import Record, sf_datetime
from firmgrant.sandbox.store import OrgStore, SalesforceFault

DURATION_LENGTH = {
    "1 Day": timedelta(days=1),
    "3 Days": timedelta(days=3),
    "1 Week": timedelta(weeks=1),
    "1 Month": timedelta(days=30),
    "1 Year": timedelta(days=365),
}
_DURATION_WEIGHTS = (20, 20, 30, 20, 10)
ORG_NAMES = (
    "Acme Corporation",
    "Bäckerei Müller GmbH",
    "Société Générale d'Études",
    "O'Brien & Sons",
    'Zoë\'s "Best" Café',
    "<script>alert('x')</script> Ltd",
    "Ørsted Vind A/S",
    "Łódź Logistics",
    "Nakamura 株式会社",
    "Smith, Jones & Partners",
    "Café <b>Bold</b>",
    "São Paulo Importações",
)
FIRST_NAMES = ("jane", "ana", "jürgen", "siobhan", "li", "zoë", "marc-andré", "o'neil", "ravi")


def login_as_session(user_id: str) -> Record:
    """The ``AuthSession`` of someone logged in as this user (Login-As)."""
    return {
        "UsersId": user_id,
        "SessionType": "SubstituteUser",
        "LoginType": "Application",
        "SourceIp": "127.0.0.1",
        "NumSecondsValid": 7200,
        "UserType": "Standard",
        "SessionSecurityLevel": "STANDARD",
    }


class Customers:
    def __init__(
        self, store: OrgStore, *, vendor: str, publisher_org_id: str, rng: random.Random
    ) -> None:
        self.store = store
        self.vendor = vendor
        self.publisher_org_id = publisher_org_id
        self.rng = rng
        self.orgs = 0

    def restart_orgs(self, orgs: int) -> None:
        self.orgs = max(self.orgs, orgs)

    # -- helpers -----------------------------------------------------------------------------
    def _new_org(self) -> tuple[str, str, str]:
        self.orgs += 1
        number = self.orgs
        name = self.rng.choice(ORG_NAMES)
        domain = f"customer{number}.example"
        return make_id("00D", number, pod="5e0"), f"{name} #{number}", domain

    def _audit(
        self, action: str, display: str, *, at: datetime, by: str, delegate: str | None
    ) -> None:
        self.store.put(
            AUDIT,
            {
                "Action": action,
                "Section": "Manage Users",
                "CreatedById": by,
                "DelegateUser": delegate,
                "Display": display,
            },
            at=at,
        )

    def _publisher(self) -> str:
        return f"package publisher {self.vendor} ({self.publisher_org_id})"

    @staticmethod
    def _through(expires: datetime) -> str:
        return f"{expires.month}/{expires.day}/{expires.year}"

    # -- actions -----------------------------------------------------------------------------
    def grant(
        self,
        *,
        duration: str = "1 Week",
        org_id: str | None = None,
        org_name: str | None = None,
        grantor: str | None = None,
        login_as_user: str | None = None,
        grantee: str | None = None,
        at: datetime | None = None,
        status: str = "Active",
        revoked_at: datetime | None = None,
    ) -> Record:
        if duration not in DURATION_LENGTH:
            raise SalesforceFault(400, "INVALID_VALUE", f"unknown duration {duration!r}")
        new_org_id, new_name, domain = self._new_org()
        org_id, org_name = org_id or new_org_id, org_name or new_name
        grantor = grantor or f"{self.rng.choice(FIRST_NAMES)}@{domain}"
        granted = at or self.store.clock()
        expires = granted + DURATION_LENGTH[duration]
        user_id = make_id("005", self.orgs)
        changed = revoked_at or granted
        with self.store.lock:
            record = self.store.put(
                GRANT,
                {
                    "Org_Id__c": org_id,
                    "Org_Name__c": org_name,
                    "Grantor_Id__c": user_id,
                    "Grantor_Username__c": grantor,
                    "Grantor_Email__c": grantor,
                    "Grantee__c": grantee or self.vendor,
                    "Access_Duration__c": duration,
                    "Granted_At__c": sf_datetime(granted),
                    "Expires_At__c": sf_datetime(expires),
                    "Granted_Via_Login_As__c": login_as_user is not None,
                    "Login_As_User__c": login_as_user,
                    "Status__c": status,
                    "Revoked_At__c": sf_datetime(revoked_at) if revoked_at else None,
                    "Revoke_Reason__c": "Revoked by the customer" if revoked_at else None,
                    "CreatedDate": sf_datetime(granted),
                },
                at=changed if at else None,
            )
            self._audit(
                "loginasgrantedtopartnerbt",
                f"{grantor} has granted user login access through {self._through(expires)} "
                f"to {self._publisher()}",
                at=granted,
                by=user_id,
                delegate=login_as_user,
            )
            if revoked_at:
                self._audit(
                    "loginasrevokedtopartnerbt",
                    f"{grantor} has revoked user login access to {self._publisher()}",
                    at=revoked_at,
                    by=user_id,
                    delegate=None,
                )
        return record

    def extend(self, record_id: str, duration: str) -> Record:
        """The customer picks a new duration, counted from now, as Salesforce's page does."""
        with self.store.lock:
            record = self.store.get(GRANT, record_id)
            expires = self.store.clock() + DURATION_LENGTH[duration]
            self.store.touch(
                GRANT,
                record,
                {
                    "Access_Duration__c": duration,
                    "Expires_At__c": sf_datetime(expires),
                    "Status__c": "Active",
                },
            )
            self._audit(
                "loginasmodifiedtopartnerbt",
                f"{record['Grantor_Username__c']} has changed user login access through "
                f"{self._through(expires)} to {self._publisher()}",
                at=self.store.clock(),
                by=record["Grantor_Id__c"],
                delegate=None,
            )
            return record

    def revoke(self, record_id: str, reason: str = "Revoked by the customer") -> Record:
        with self.store.lock:
            record = self.store.get(GRANT, record_id)
            now = self.store.clock()
            self.store.touch(
                GRANT,
                record,
                {
                    "Status__c": "Revoked",
                    "Revoked_At__c": sf_datetime(now),
                    "Revoke_Reason__c": reason,
                },
            )
            self._audit(
                "loginasrevokedtopartnerbt",
                f"{record['Grantor_Username__c']} has revoked user login access to "
                f"{self._publisher()}",
                at=now,
                by=record["Grantor_Id__c"],
                delegate=None,
            )
            return record

    def delete(self, record_id: str) -> None:
        self.store.delete(GRANT, record_id)

    def support_logs_in(self, record: Record) -> Record:
        """A live Login-As session of the vendor's support in the customer's org."""
        return self.store.put(AUTH_SESSION, login_as_session(record["Grantor_Id__c"]))

    # -- seeding -----------------------------------------------------------------------------
    def seed(self, count: int, *, other_grantees: int = 0, malformed: int = 0) -> dict[str, int]:
        """``count`` valid grants naming the vendor, with a realistic mix of histories."""
        now = self.store.clock()
        rng = self.rng
        made: dict[str, int] = {
            "grants": 0,
            "login_as": 0,
            "expiring_soon": 0,
            "revoked": 0,
            "expired": 0,
            "sessions": 0,
        }
        with self.store.bulk():
            for _ in range(count):
                duration = rng.choices(DURATIONS, _DURATION_WEIGHTS)[0]
                length = DURATION_LENGTH[duration]
                roll = rng.random()
                if roll < 0.03:  # ends within the hour
                    granted = now - length + timedelta(minutes=rng.randint(2, 59))
                    made["expiring_soon"] += 1
                else:
                    granted = now - timedelta(seconds=rng.uniform(60, length.total_seconds() * 1.6))
                expires = granted + length
                status, revoked_at = "Active", None
                if expires <= now and rng.random() < 0.7:
                    status = "Expired"
                    made["expired"] += 1
                elif rng.random() < 0.05:
                    status = "Revoked"
                    revoked_at = granted + (min(expires, now) - granted) * rng.random()
                    made["revoked"] += 1
                login_as = f"admin@customer{self.orgs + 1}.example" if rng.random() < 0.03 else None
                made["login_as"] += login_as is not None
                record = self.grant(
                    duration=duration,
                    at=granted,
                    status=status,
                    revoked_at=revoked_at,
                    login_as_user=login_as,
                )
                made["grants"] += 1
                if status == "Active" and expires > now and rng.random() < 0.05:
                    self.support_logs_in(record)
                    made["sessions"] += 1
            for _ in range(other_grantees):
                self.grant(
                    grantee="Another Vendor Support", at=now - timedelta(hours=rng.randint(1, 48))
                )
            for index in range(malformed):
                self._malformed(index, now)
        made["other_grantees"], made["malformed"] = other_grantees, malformed
        return made

    def _malformed(self, index: int, now: datetime) -> None:
        """Records Salesforce can hold but firmgrant must refuse (loaded before validation)."""
        broken: list[dict[str, Any]] = [
            {"Access_Duration__c": "2 Fortnights"},
            {"Expires_At__c": sf_datetime(now - timedelta(days=30))},
            {"Granted_At__c": None},
        ]
        record = self.grant(at=now - timedelta(hours=1))
        self.store.touch(GRANT, record, broken[index % len(broken)])
