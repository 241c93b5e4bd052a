"""The audit source against the sandbox's customer orgs over HTTPS, with a real SMTP server.

Each customer org has its own Setup Audit Trail, users and sessions; customers act as in
Setup, support logs in, and the worker must mirror exactly the vendor's grants, reject
Login-As grants, end support's sessions where access is over, flag uses outside a grant and
tell each customer once.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from firmgrant.jobs.sync import SyncResult, sync_connection
from firmgrant.ledger import Ledger, verify_chain
from firmgrant.ledger.models import EventRow, GrantRow
from firmgrant.ledger.queries import find_grant
from firmgrant.lifecycle import GrantStatus
from firmgrant.salesforce.display import access_ends
from firmgrant.sandbox import VENDOR, SandboxOrg
from firmgrant.sandbox.tenants import CustomerOrg, TenantOptions
from firmgrant.settings import ConnectionSettings, Settings, SourceSettings
from firmgrant.timeutil import utcnow
from firmgrant.worker import CycleResult, Worker
from tests.lifecycling import SUPPORT, SmtpServer

SUPPORT_USER = "ana.support@firmworks.example"
YEAR = timedelta(days=365)


def audit_connection(org: SandboxOrg, tenant: CustomerOrg) -> ConnectionSettings:
    return ConnectionSettings(
        login_url=org.base_url,
        auth="jwt",
        client_id=org.app.client_id,
        username=tenant.integration_username,
        private_key_file=org.state / "jwt.key",
        ca_bundle=org.state / "tls.crt",
        source=SourceSettings(kind="audit"),  # how it writes dates: learned
    )


class Audit:
    """A vendor with some customer orgs in the sandbox, its worker and its mail server."""

    def __init__(self, org: SandboxOrg, ledger: Ledger, smtp: SmtpServer) -> None:
        self.org, self.ledger, self.smtp = org, ledger, smtp
        self.vendor = (VENDOR, org.app.org_id)

    def add(self, **options: Any) -> CustomerOrg:
        return self.org.tenants.add(TenantOptions(**options))

    @property
    def settings(self) -> Settings:
        return self.configured()

    def configured(self, **extra: Any) -> Settings:
        """The vendor's settings over every customer org, with ``extra`` sections."""
        return Settings(
            connections={
                f"org{t.number}": audit_connection(self.org, t)
                for t in self.org.tenants.orgs.values()
            },
            vendor={
                "grantee_names": [VENDOR],
                "publisher_org_id": self.org.app.org_id,
                "support_usernames": ["*@firmworks.example"],
                "support_email": SUPPORT,
            },
            sync={"api_floor": 0},
            mail={
                "backend": "smtp",
                "smtp_host": "127.0.0.1",
                "smtp_port": self.smtp.port,
                "smtp_starttls": False,
                "from": f"FirmWorks Support <{SUPPORT}>",
            },
            **extra,
        )

    def cycle(self) -> CycleResult:
        return Worker(self.settings, self.ledger).cycle()

    def full_sync(self) -> SyncResult:
        """``sync --full`` of the first customer org."""
        name, connection = next(iter(self.settings.connections.items()))
        settings = self.settings
        return sync_connection(
            self.ledger, name, connection, settings.vendor, settings.sync, full=True
        )

    def grants(self) -> dict[str, GrantRow]:
        with self.ledger.sessions() as session:
            return {g.source_id: g for g in session.execute(select(GrantRow)).scalars()}

    def status(self, source_id: str) -> str:
        with self.ledger.sessions() as session:
            return find_grant(session, source_id, now=utcnow(), max_duration=YEAR).status

    def events(self, kind: str | None = None) -> list[EventRow]:
        with self.ledger.sessions() as session:
            query = select(EventRow).order_by(EventRow.id)
            if kind:
                query = query.where(EventRow.kind == kind)
            return list(session.execute(query).scalars())


@pytest.fixture
def audit(sandbox: SandboxOrg, ledger: Ledger, smtp: SmtpServer) -> Audit:
    return Audit(sandbox, ledger, smtp)


def plain(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def ago(**delta: float) -> datetime:
    return utcnow() - timedelta(**delta)


def test_grants_made_in_setup_become_the_ledgers_grants_with_their_whole_timeline(
    audit: Audit,
) -> None:
    acme = audit.add()
    jane = f"jane@{acme.domain}"
    granted = acme.grant(jane, 7, vendor=audit.vendor, at=ago(hours=2))
    audit.cycle()

    grant = audit.grants()[granted["Id"]]
    through = (datetime.fromisoformat(granted["CreatedDate"]) + timedelta(days=7)).date()
    assert grant.expires_at == access_ends(through, "UTC")
    assert (grant.org_id, grant.org_name) == (acme.org_id, acme.name)
    assert (grant.grantor_username, grant.grantee) == (jane, VENDOR)
    assert audit.status(granted["Id"]) == GrantStatus.ACTIVE

    change = acme.grant(jane, 30, vendor=audit.vendor, at=ago(hours=1), verb="changed")
    changed_at = datetime.fromisoformat(change["CreatedDate"])
    audit.cycle()
    revoked = acme.revoke(jane, vendor=audit.vendor, at=ago(minutes=30))
    again = acme.grant(jane, 7, vendor=audit.vendor, at=ago(minutes=20))
    audit.cycle()

    assert audit.status(granted["Id"]) == GrantStatus.REVOKED
    assert audit.grants()[granted["Id"]].expires_at == access_ends(
        (changed_at + timedelta(days=30)).date(), "UTC"
    ), "the change moved the expiry"
    kinds = [
        (e.kind, e.actor, e.occurred_at) for e in audit.events() if e.source_id == granted["Id"]
    ]
    assert kinds == [
        ("granted", f"salesforce:{jane}", datetime.fromisoformat(granted["CreatedDate"])),
        ("changed", f"salesforce:{jane}", changed_at),
        (
            "customer_revoked",
            f"customer:{acme.org_id}",
            datetime.fromisoformat(revoked["CreatedDate"]),
        ),
    ], "each trail row its own event, at the time the trail gives it"
    assert audit.status(again["Id"]) == GrantStatus.ACTIVE, "a later grant opens a new episode"
    with audit.ledger.sessions() as session:
        assert verify_chain(session).ok


def test_login_as_grants_are_rejected_sessions_ended_and_the_customer_told_once(
    audit: Audit,
) -> None:
    acme = audit.add()
    jane = f"jane@{acme.domain}"
    made = acme.grant(
        jane, 7, vendor=audit.vendor, at=ago(hours=3), login_as=f"admin@{acme.domain}"
    )
    acme.use(SUPPORT_USER, jane, at=ago(hours=2))
    assert acme.live_sessions(jane) == 1

    first = audit.cycle()

    assert audit.status(made["Id"]) == GrantStatus.REJECTED
    assert acme.live_sessions(jane) == 0, "support's Login-As session was ended"
    assert [e.reason for e in audit.events("sessions_ended")] == [
        "1 Login-As session(s) of support ended"
    ]
    rejected = audit.smtp.mailbox.of_kind("not accepted")
    assert [m["To"] for m in rejected] == [jane]
    body = plain(rejected[0])
    assert "No Access" in body
    assert "has revoked it" not in body
    assert [e.kind for e in audit.events("violation")] == ["violation"], (
        "a rejected grant is no grant"
    )

    second = audit.cycle()

    assert len(audit.smtp.mailbox.messages) == 1, "told once, never again"
    assert first.api_calls > second.api_calls == 1, "an idle org costs one API call"


def test_an_expired_grant_ends_supports_sessions_and_a_use_outside_any_grant_is_a_violation(
    audit: Audit,
) -> None:
    acme = audit.add()
    jane, li = f"jane@{acme.domain}", f"li@{acme.domain}"
    old = acme.grant(jane, 1, vendor=audit.vendor, at=ago(days=10))
    acme.use(SUPPORT_USER, jane, at=ago(hours=1))  # long after the grant ended
    fresh = acme.grant(li, 7, vendor=audit.vendor, at=ago(hours=2))
    acme.use(SUPPORT_USER, li, at=ago(hours=1))

    result = audit.cycle()

    assert audit.status(old["Id"]) == GrantStatus.EXPIRED
    assert (acme.live_sessions(jane), acme.live_sessions(li)) == (0, 1)
    violations = audit.events("violation")
    assert [(v.actor, v.grant_id) for v in violations] == [
        (f"support:{SUPPORT_USER}", audit.grants()[old["Id"]].id)
    ]
    used = audit.events("access_used")
    assert [u.grant_id for u in used] == [audit.grants()[fresh["Id"]].id]
    assert (result.syncs[0].used, result.syncs[0].violations) == (1, 1)
    ended = audit.smtp.mailbox.of_kind("ended")
    assert [m["To"] for m in ended] == [jane]
    assert "Setup" in plain(ended[0])

    audit.cycle()
    assert len(audit.events("violation")) == 1, "a re-read records nothing twice"


def test_only_the_vendors_grants_are_mirrored_in_the_orgs_date_order(audit: Audit) -> None:
    berlin = audit.add(date_order="DMY", time_zone="Europe/Berlin")
    jane = f"jane@{berlin.domain}"
    at = datetime(2026, 11, 30, 12, tzinfo=UTC)
    ours = berlin.grant(jane, 3, vendor=audit.vendor, at=at)  # "through 3/12/2026"
    berlin.grant(jane, 7, vendor=audit.vendor, at=at, to_salesforce=True)
    berlin.grant(jane, 7, vendor=("FirmWorks Support", "00D5e00000OTHER"), at=at)
    berlin._row(  # the same action written in German: reported, never guessed
        "loginasgrantedtopartnerbt",
        f"{jane} hat Anmeldezugriff bis 3.12.2026 für FirmWorks Support "
        f"({audit.org.app.org_id[:15]}) gewährt",
        jane,
        at=at,
    )

    result = audit.cycle()

    assert list(audit.grants()) == [ours["Id"]]
    assert audit.grants()[ours["Id"]].expires_at == datetime(2026, 12, 2, 23, tzinfo=UTC)
    assert result.syncs[0].invalid == 1
    assert len(audit.events("invalid")) == 1
    audit.cycle()
    assert len(audit.events("invalid")) == 1, "reported once"


def test_missing_permissions_are_reported_and_the_other_orgs_go_on(audit: Audit) -> None:
    audit.add(view_setup=False)
    limited = audit.add(manage_users=False)
    jane = f"jane@{limited.domain}"
    limited.grant(jane, 1, vendor=audit.vendor, at=ago(days=5))
    limited.use(SUPPORT_USER, jane, at=ago(days=4, hours=12))

    result = audit.cycle()

    by_org = {s.connection: s for s in result.syncs}
    assert "sObject type 'SetupAuditTrail' is not supported" in (by_org["org1"].error or "")
    assert by_org["org2"].error is None
    not_ended = audit.events("sessions_not_ended")
    assert len(not_ended) == 1
    assert "INSUFFICIENT_ACCESS_OR_READONLY" in (not_ended[0].reason or "")
    assert limited.live_sessions(jane) == 1
    assert [m["To"] for m in audit.smtp.mailbox.of_kind("ended")] == [jane]
    audit.cycle()
    assert len(audit.events("sessions_not_ended")) == 1, "recorded once, not retried forever"


def test_late_rows_in_the_overlap_are_applied_once_and_a_full_sync_changes_nothing(
    audit: Audit,
) -> None:
    acme = audit.add()
    jane = f"jane@{acme.domain}"
    made = acme.grant(jane, 7, vendor=audit.vendor, at=ago(minutes=10))
    audit.cycle()
    # A change made a minute ago that Salesforce shows only now: inside the overlap.
    acme.grant(jane, 30, vendor=audit.vendor, at=ago(minutes=1), verb="changed")
    audit.cycle()
    audit.cycle()
    changed = [e for e in audit.events("changed") if e.source_id == made["Id"]]
    assert len(changed) == 1
    before = len(audit.events())

    full = audit.full_sync()
    assert (full.inserted, full.updated, full.deleted) == (0, 0, 0)
    assert len(audit.events()) == before


def test_rows_that_age_out_of_the_trail_never_delete_their_grants(
    tmp_path: Path, sandbox_keys: Path, ledger: Ledger, smtp: SmtpServer
) -> None:
    import shutil

    from tests.lifecycling import FakeClock

    clock = FakeClock(utcnow())
    state = tmp_path / "org"
    shutil.copytree(sandbox_keys, state)
    with SandboxOrg(state, random_seed=5, persist=False, clock=clock) as org:
        audit = Audit(org, ledger, smtp)
        acme = audit.add()
        made = acme.grant(f"jane@{acme.domain}", 365, vendor=audit.vendor, at=ago(days=179))
        audit.cycle()
        clock.advance(timedelta(days=2))  # the grant's row is now 181 days old: gone
        full = audit.full_sync()
        assert acme.store.count("SetupAuditTrail") == 0
        assert full.deleted == 0
        assert audit.status(made["Id"]) == GrantStatus.ACTIVE


def test_check_says_whether_the_trail_can_be_read_and_sessions_ended(
    audit: Audit, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from firmgrant.cli import _check

    audit.add()
    audit.add(view_setup=False)
    audit.add(manage_users=False)

    code = _check(audit.settings)

    out = capsys.readouterr().out
    assert code == 1, "a connection that cannot read the trail fails the check"
    assert "ok   connection org1: reads the Setup Audit Trail" in out
    assert "ok   connection org1: can end support's Login-As sessions" in out
    assert "FAIL connection org2: cannot read the Setup Audit Trail" in out
    assert "View Setup and Configuration" in out
    assert (
        "note connection org3: cannot end support's Login-As sessions (needs Manage Users)" in out
    )


def expected_grants(tenant: CustomerOrg, publisher: str) -> dict[str, dict[str, Any]]:
    """The vendor's grants in one org, read straight from its trail (not with firmgrant's code):
    each grant row opens one, a change moves the open one's date, a revocation ends it."""
    rows = sorted(
        tenant.store.records["setupaudittrail"].values(), key=lambda r: (r["CreatedDate"], r["Id"])
    )
    grants: dict[str, dict[str, Any]] = {}
    open_by_user: dict[str, str] = {}
    for row in rows:
        if not row["Display"].endswith(f"({publisher[:15]})"):
            continue
        user, action = row["CreatedById"], row["Action"]
        through = re.search(r" through (\d+)/(\d+)/(\d+) ", row["Display"])
        end = (
            datetime(int(through[3]), int(through[1]), int(through[2]), tzinfo=UTC)
            if through
            else None
        )
        current = grants.get(open_by_user.get(user, ""), {"revoked": True})
        if action == "loginasrevokedtopartnerbt":
            current["revoked"] = True
            continue
        at = datetime.fromisoformat(row["CreatedDate"])
        if action == "loginasmodifiedtopartnerbt" and not current["revoked"]:
            current.update(
                expires_at=end, login_as=current["login_as"] or bool(row["DelegateUser"])
            )
            current["ends"].append((at, end))
            continue
        grants[row["Id"]] = {
            "expires_at": end,
            "ends": [(at, end)],  # the expiry in force from each moment on
            "revoked": False,
            "login_as": bool(row["DelegateUser"]),
            "user": user,
            "granted_at": at,
        }
        open_by_user[user] = row["Id"]
    return grants


def test_fifty_customer_orgs_twice_mirror_exactly_their_grants_and_the_second_run_is_quiet(
    audit: Audit,
) -> None:
    audit.org.tenants.seed(50, grants=4)

    audit.cycle()
    mails_after_first = len(audit.smtp.mailbox.messages)
    events_after_first = len(audit.events())
    second = audit.cycle()

    mirrored = audit.grants()
    expected: dict[str, dict[str, Any]] = {}
    for tenant in audit.org.tenants.orgs.values():
        expected.update(expected_grants(tenant, audit.org.app.org_id))
    assert set(mirrored) == set(expected)
    for source_id, grant in mirrored.items():
        want = expected[source_id]
        assert grant.expires_at == want["expires_at"], source_id
        assert grant.via_login_as == want["login_as"], source_id
        assert (grant.sf_status == "Revoked") == want["revoked"], source_id
        status = audit.status(source_id)
        if want["login_as"]:
            assert status == GrantStatus.REJECTED
        if status not in (GrantStatus.ACTIVE, GrantStatus.EXPIRING):
            tenant = audit.org.tenants.orgs[grant.org_id[:15]]
            user = next(u for u, i in tenant.users.items() if i == grant.grantor_id)
            live_elsewhere = any(
                g.grantor_id == grant.grantor_id
                and audit.status(g.source_id) in ("active", "expiring")
                for g in mirrored.values()
            )
            if not live_elsewhere and grant.sf_status != "Revoked":
                assert tenant.live_sessions(user) == 0, f"{source_id}: support still logged in"
    uses = [
        (tenant, row)
        for tenant in audit.org.tenants.orgs.values()
        for row in tenant.store.records["setupaudittrail"].values()
        if row["Action"] == "suloginaccessused"
    ]

    def valid(tenant: CustomerOrg, row: dict[str, Any]) -> bool:
        """Judged by the grant as it stood then: a later extension does not excuse a use
        made after the grant had ended."""
        at = datetime.fromisoformat(row["CreatedDate"])
        return any(
            g["user"] == row["CreatedById"]
            and g["granted_at"]
            <= at
            < min([end for since, end in g["ends"] if since <= at][-1], g["granted_at"] + YEAR)
            and not g["login_as"]
            and not (g["revoked"] and (mirrored[i].revoked_at or at) <= at)
            for i, g in expected.items()
        )

    assert len(audit.events("violation")) == sum(not valid(t, r) for t, r in uses)
    assert len(audit.events("access_used")) == sum(valid(t, r) for t, r in uses)
    assert second.api_calls == 50, "an idle cycle is one API call per org"
    assert len(audit.smtp.mailbox.messages) == mails_after_first, "the second run sends nothing"
    assert len(audit.events()) == events_after_first
    with audit.ledger.sessions() as session:
        assert verify_chain(session).ok
