"""The audit history kept as Salesforce wrote it: each trail row its own event at its own
time, re-reads that add nothing, rows read late folded in their place, dates read the way
each org writes them, and what firmgrant did said as it was done.

Against the sandbox's customer orgs over HTTPS, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from rich.console import Console
from sqlalchemy import select

from firmgrant import export as exporting
from firmgrant.display import grant_story
from firmgrant.export.rows import Filters
from firmgrant.jobs.sync import SyncResult, sync_connection
from firmgrant.ledger import Ledger, verify_chain
from firmgrant.ledger.models import EventRow, GrantRow, OrgRow, TrailRow, UserRow
from firmgrant.ledger.queries import find_grant, grant_events, grant_lifecycle
from firmgrant.lifecycle import GrantStatus, RevocationStatus
from firmgrant.sandbox.tenants import CustomerOrg, TenantOptions
from firmgrant.settings import ConnectionSettings, SourceSettings
from firmgrant.timeutil import utcnow
from firmgrant.worker import Worker
from tests.test_audit_source import SUPPORT_USER, YEAR, Audit, ago, audit_connection

TRAIL_KINDS = ("granted", "changed", "customer_revoked", "access_used", "violation")


@pytest.fixture
def audit(sandbox: Any, ledger: Ledger, smtp: Any) -> Audit:
    return Audit(sandbox, ledger, smtp)


def sync(
    audit: Audit,
    tenant: CustomerOrg,
    name: str | None = None,
    *,
    full: bool = False,
    **source: Any,
) -> SyncResult:
    """One sync of the tenant's trail under the connection ``name`` (``org<N>``)."""
    connection = audit_connection(audit.org, tenant)
    if source:
        connection = connection.model_copy(
            update={"source": SourceSettings(kind="audit", **source)}
        )
    settings = audit.settings
    return sync_connection(
        audit.ledger,
        name or f"org{tenant.number}",
        connection,
        settings.vendor,
        settings.sync,
        full=full,
        cap=YEAR,
    )


def trail_events(ledger: Ledger, connection: str) -> list[EventRow]:
    with ledger.sessions() as session:
        return list(
            session.execute(
                select(EventRow)
                .where(EventRow.connection == connection, EventRow.kind.in_(TRAIL_KINDS))
                .order_by(EventRow.id)
            ).scalars()
        )


def grants_of(ledger: Ledger, connection: str) -> dict[str, tuple[Any, ...]]:
    """The connection's grants by Salesforce Id: every mirrored field."""
    from firmgrant.grant import MIRRORED_FIELDS

    with ledger.sessions() as session:
        rows = session.execute(select(GrantRow).where(GrantRow.connection == connection))
        return {
            g.source_id: tuple(getattr(g, name) for name in MIRRORED_FIELDS) for g in rows.scalars()
        }


def when(record: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(record["CreatedDate"])


def exported(ledger: Ledger) -> list[dict[str, Any]]:
    out = io.BytesIO()
    with ledger.sessions() as session:
        exporting.write(session, Filters(), "ndjson", out, cap=YEAR)
    return [json.loads(line) for line in out.getvalue().decode().splitlines()]


def pages(audit: Audit, *paths: str) -> list[str]:
    """These dashboard pages as a support agent sees them (signed in, in process)."""
    from starlette.testclient import TestClient

    from firmgrant import accounts
    from firmgrant.web import create_app
    from tests.webbing import PASSWORD, SESSION_SECRET

    settings = audit.configured(web={"session_secret": SESSION_SECRET})
    with audit.ledger.sessions() as session:
        known = session.get(UserRow, "sam") is not None
    if not known:
        accounts.add_user(audit.ledger, "sam", accounts.Role.SUPPORT, password=PASSWORD,
                          email="sam@firmworks.example", actor="test", now=utcnow())  # fmt: skip
    with TestClient(create_app(settings, audit.ledger), base_url="http://127.0.0.1") as client:
        token = client.get("/sign-in").text.split('name="csrf" value="')[1].split('"')[0]
        client.post("/sign-in", data={"csrf": token, "name": "sam", "password": PASSWORD})
        return [client.get(path).text for path in paths]


def test_grant_change_revoke_and_use_in_one_page_are_four_events_at_their_trail_times(
    audit: Audit,
) -> None:
    acme = audit.add()
    jane = f"jane@{acme.domain}"
    vendor = audit.vendor
    rows = [
        acme.grant(jane, 7, vendor=vendor, at=ago(hours=4)),
        acme.grant(jane, 30, vendor=vendor, at=ago(hours=3), verb="changed"),
        acme.revoke(jane, vendor=vendor, at=ago(hours=2)),
        acme.use(SUPPORT_USER, jane, at=ago(hours=1)),
    ]

    result = sync(audit, acme)

    events = trail_events(audit.ledger, "org1")
    assert [(e.kind, e.occurred_at) for e in events] == [
        ("granted", when(rows[0])),
        ("changed", when(rows[1])),
        ("customer_revoked", when(rows[2])),
        ("violation", when(rows[3])),  # support came in after Jane had revoked it
    ]
    assert {e.at for e in events} == {events[0].at}, "recorded together, by one sync"
    assert (result.inserted, result.violations) == (1, 1)
    by_id = {r["event_id"]: r for r in exported(audit.ledger)}
    rows_out = [by_id[e.id] for e in events]
    assert [r["status_after"] for r in rows_out] == ["active", "active", "revoked", "revoked"]
    assert [r["occurred_at"][:19] for r in rows_out] == [
        e.occurred_at.strftime("%Y-%m-%dT%H:%M:%S") for e in events
    ]
    displays = [json.loads(e.payload)["trail"]["display"] for e in events[:3]]
    assert displays == [r["Display"] for r in rows[:3]], "the trail's words, in the chain"
    with audit.ledger.sessions() as session:
        assert verify_chain(session).ok


# A busy org's half year, (action, user, days, days ago) in the order Salesforce wrote it:
# grants, changes, revocations, a Login-As grant, a grant replacing an open one, uses in
# and out of grants, and a revocation of a grant already revoked.
HALF_YEAR = [
    ("grant", "jane", 30, 179), ("use", "jane", 0, 178.5), ("change", "jane", 365, 170),
    ("grant", "li", 7, 160), ("revoke", "li", 0, 155), ("use", "li", 0, 150),
    ("grant", "zoë", 3, 140), ("grant", "zoë", 7, 139), ("use", "zoë", 0, 138),
    ("grant", "o'neil", 1, 120), ("use", "o'neil", 0, 118), ("change", "o'neil", 7, 117.5),
    ("grant", "ravi", 365, 100), ("revoke", "ravi", 0, 90), ("revoke", "ravi", 0, 80),
    ("loginas", "marc", 30, 60), ("use", "marc", 0, 59),
    ("grant", "li", 30, 30), ("change", "li", 1, 29), ("use", "li", 0, 27),
    ("revoke", "jane", 0, 10), ("grant", "jane", 7, 2), ("use", "jane", 0, 1),
]  # fmt: skip


def play(tenant: CustomerOrg, vendor: tuple[str, str], step: tuple[str, str, int, float]) -> None:
    action, first, days, days_ago = step
    user, at = f"{first}@{tenant.domain}", utcnow() - timedelta(days=days_ago)
    if action == "grant":
        tenant.grant(user, days, vendor=vendor, at=at)
    elif action == "loginas":
        tenant.grant(user, days, vendor=vendor, at=at, login_as=f"admin@{tenant.domain}")
    elif action == "change":
        tenant.grant(user, days, vendor=vendor, at=at, verb="changed")
    elif action == "revoke":
        tenant.revoke(user, vendor=vendor, at=at)
    else:
        tenant.use(SUPPORT_USER, user, at=at)


def comparable(ledger: Ledger, connection: str) -> list[tuple[Any, ...]]:
    return [
        (e.kind, e.occurred_at, e.source_id, e.actor, e.reason, e.payload)
        for e in trail_events(ledger, connection)
    ]


def test_a_half_year_read_in_one_first_sync_is_the_history_read_row_by_row(
    audit: Audit,
) -> None:
    """Two connections to one org: one syncs after every row Salesforce writes, the other
    reads the whole trail once. Same grants, same events, same words, same times."""
    acme = audit.add(locale="de_DE", time_zone="Europe/Berlin")
    for step in HALF_YEAR:
        play(acme, audit.vendor, step)
        sync(audit, acme, "rowwise")

    once = sync(audit, acme, "once")

    assert once.api_calls == 2, "the trail (its users' locales come with it), the org"
    assert grants_of(audit.ledger, "once") == grants_of(audit.ledger, "rowwise")
    assert comparable(audit.ledger, "once") == comparable(audit.ledger, "rowwise")
    events = trail_events(audit.ledger, "once")
    assert len(events) == len(HALF_YEAR) + 1, "one per row, and the grant zoë's replaced"
    assert [e.occurred_at for e in events] == sorted(e.occurred_at for e in events)
    kinds = [e.kind for e in events]
    # li after revoking; o'neil a day late (extended only after); marc's Login-As grant;
    # li again, after shortening her second grant to a day.
    assert kinds.count("violation") == 4
    with audit.ledger.sessions() as session:
        statuses = {
            g.grantor_username: find_grant(session, str(g.id), now=utcnow(), max_duration=YEAR)
            for g in session.execute(select(GrantRow).where(GrantRow.connection == "once"))
            .scalars()
            .all()
            if g.granted_at > utcnow() - timedelta(days=3)
        }
    assert [s.status for s in statuses.values()] == [GrantStatus.ACTIVE], "jane's new week"


def test_rows_read_behind_the_watermark_leave_the_ledger_as_one_read_would(
    audit: Audit,
) -> None:
    """A change and a use Salesforce shows only later, dated days before rows already
    read: an incremental sync cannot see them; a full sync folds them in their place."""
    acme = audit.add()
    jane, vendor = f"jane@{acme.domain}", audit.vendor
    granted = acme.grant(jane, 7, vendor=vendor, at=ago(days=10))
    acme.revoke(jane, vendor=vendor, at=ago(days=2))
    sync(audit, acme)
    late_change = acme.grant(jane, 30, vendor=vendor, at=ago(days=5), verb="changed")
    late_use = acme.use(SUPPORT_USER, jane, at=ago(days=4))

    sync(audit, acme)
    assert len(trail_events(audit.ledger, "org1")) == 2, "behind the watermark: not read yet"
    sync(audit, acme, full=True)
    sync(audit, acme, full=True)  # a full re-read adds nothing
    sync(audit, acme, "once")

    assert grants_of(audit.ledger, "org1") == grants_of(audit.ledger, "once")
    seen = {(e.kind, e.occurred_at, e.source_id) for e in trail_events(audit.ledger, "org1")}
    assert seen == {
        (e.kind, e.occurred_at, e.source_id) for e in trail_events(audit.ledger, "once")
    }
    assert len(trail_events(audit.ledger, "org1")) == 4
    grant = grants_of(audit.ledger, "org1")[granted["Id"]]
    assert grant[9] > when(late_change) + timedelta(days=29), "the late change moved the expiry"
    kinds = {e.occurred_at: e.kind for e in trail_events(audit.ledger, "org1")}
    assert kinds[when(late_use)] == "access_used", "judged by the grant as it stood then"
    by_id = {r["event_id"]: r for r in exported(audit.ledger)}
    late = next(e for e in trail_events(audit.ledger, "org1") if e.occurred_at == when(late_change))
    assert by_id[late.id]["status_after"] == "active", "revoked only two days ago"


def test_a_change_and_revocation_re_read_in_the_next_cycle_change_nothing(audit: Audit) -> None:
    """Rows inside the overlap are read again by the next sync: none is applied twice, and
    no grant springs up from a change read again after its revocation."""
    acme = audit.add()
    jane, vendor = f"jane@{acme.domain}", audit.vendor
    granted = acme.grant(jane, 7, vendor=vendor, at=ago(minutes=4))
    acme.grant(jane, 30, vendor=vendor, at=ago(minutes=3), verb="changed")
    acme.revoke(jane, vendor=vendor, at=ago(minutes=2))
    first = sync(audit, acme)
    before = trail_events(audit.ledger, "org1")

    again = sync(audit, acme)

    assert again.fetched == 3, "the overlap was read again"
    assert (again.inserted, again.updated) == (0, 0)
    assert list(grants_of(audit.ledger, "org1")) == [granted["Id"]], "no phantom grant"
    assert audit.status(granted["Id"]) == GrantStatus.REVOKED
    assert [e.id for e in trail_events(audit.ledger, "org1")] == [e.id for e in before]
    assert first.inserted == 1


def test_a_row_committed_late_inside_the_overlap_is_applied_once(audit: Audit) -> None:
    """Salesforce shows a row only after rows written after it (it committed later): dated
    before the watermark, inside the overlap, the next sync applies it, once."""
    acme = audit.add()
    jane, vendor = f"jane@{acme.domain}", audit.vendor
    granted = acme.grant(jane, 7, vendor=vendor, at=ago(minutes=10))
    acme.use(SUPPORT_USER, jane, at=ago(minutes=1))
    sync(audit, acme)
    late = acme.grant(jane, 30, vendor=vendor, at=ago(minutes=3), verb="changed")

    sync(audit, acme)
    sync(audit, acme)

    changes = [e for e in trail_events(audit.ledger, "org1") if e.kind == "changed"]
    assert [e.occurred_at for e in changes] == [when(late)]
    assert audit.grants()[granted["Id"]].expires_at > utcnow() + timedelta(days=28)


def test_a_replica_writing_a_page_another_wrote_adds_nothing(audit: Audit) -> None:
    """Two replicas that read the same page from the same watermark: the second to write
    finds every row applied."""
    acme = audit.add()
    acme.grant(f"jane@{acme.domain}", 7, vendor=audit.vendor, at=ago(hours=1))
    acme.use(SUPPORT_USER, f"jane@{acme.domain}", at=ago(minutes=30))
    state = audit.ledger.sync_state("org1", "audit")
    settings = audit.settings
    connection = audit_connection(audit.org, acme)

    def replica() -> SyncResult:
        return sync_connection(
            audit.ledger, "org1", connection, settings.vendor, settings.sync,
            state=state, cap=YEAR,
        )  # fmt: skip

    first, second = replica(), replica()

    assert (first.inserted, first.used) == (1, 1)
    assert (second.fetched, second.inserted, second.used) == (2, 0, 0)
    assert len(trail_events(audit.ledger, "org1")) == 2
    with audit.ledger.sessions() as session:
        assert len(session.execute(select(TrailRow)).all()) == 1


def start_of(day: date, zone: str) -> datetime:
    return datetime.combine(day, time.min, ZoneInfo(zone)).astimezone(UTC)


def ambiguous_day() -> datetime:
    """Noon UTC of a recent day whose date three days on reads as another real date with
    day and month swapped (the 3rd of December: "03.12."), months apart."""
    for back in range(5, 60):
        made = (utcnow() - timedelta(days=back)).replace(hour=12, minute=0, second=0)
        through = (made + timedelta(days=3)).date()
        if through.day <= 12 and abs(through.month - through.day) >= 3:
            return made
    raise AssertionError("no such day in two months")


def test_a_wrong_date_order_is_corrected_by_the_durations_and_a_suspect_date_is_marked(
    audit: Audit,
) -> None:
    """A connection set to US order over an org that writes day first: the 3rd of December
    ("03.12.") is three days after the 30th of November; the 12th of March is no duration."""
    berlin = audit.add(locale="de_DE", time_zone="Europe/Berlin")
    jane, li = f"jane@{berlin.domain}", f"li@{berlin.domain}"
    made = ambiguous_day()
    through = (made + timedelta(days=3)).date()
    ours = berlin.grant(jane, 3, vendor=audit.vendor, at=made)
    assert f"through {through:%d.%m.%Y} " in ours["Display"]
    odd_day = through + timedelta(days=200)  # no duration Setup offers
    odd = berlin._row(
        "loginasgrantedtopartnerbt",
        f"{li} has granted user login access through {odd_day:%d.%m.%Y} to package "
        f"publisher FirmWorks Support ({audit.org.app.org_id[:15]})",
        li,
        at=made,
    )

    sync(audit, berlin, date_order="MDY")

    grants = audit.grants()
    assert grants[ours["Id"]].expires_at == start_of(through, "Europe/Berlin")
    reasons = {e.source_id: e.reason or "" for e in audit.events("granted")}
    assert reasons[ours["Id"]].startswith(
        f"read as D/M/YYYY: as M/D/YYYY (the connection's date_order setting) it is "
        f"{through.year}-{through.day:02d}-{through.month:02d}"
    )
    assert grants[odd["Id"]].expires_at == start_of(odd_day, "Europe/Berlin"), "kept as read"
    assert reasons[odd["Id"]].startswith(f"suspect_expiry: '{odd_day:%d.%m.%Y}' read as")


def test_each_user_is_read_in_their_own_locale_and_zone_learned_from_salesforce(
    audit: Audit,
) -> None:
    """Nothing configured: a Tokyo org writes year first; one of its users lives in Los
    Angeles, writes US order, and her day starts eight hours after UTC's."""
    tokyo = audit.add(locale="ja_JP", time_zone="Asia/Tokyo")
    aiko, kim = f"aiko@{tokyo.domain}", f"kim@{tokyo.domain}"
    tokyo.user(kim, locale="en_US", time_zone="America/Los_Angeles")
    # 03:00 UTC: already noon in Tokyo, still the evening before in Los Angeles.
    made = (utcnow() - timedelta(days=6)).replace(hour=3, minute=0, second=0)
    hers = tokyo.grant(aiko, 7, vendor=audit.vendor, at=made)
    his = tokyo.grant(kim, 7, vendor=audit.vendor, at=made)
    in_tokyo, in_la = made.date() + timedelta(days=7), made.date() + timedelta(days=6)
    assert f"through {in_tokyo:%Y/%m/%d} " in hers["Display"]
    assert f"through {in_la.month}/{in_la.day}/{in_la.year} " in his["Display"]

    sync(audit, tokyo)

    grants = audit.grants()
    assert grants[hers["Id"]].expires_at == start_of(in_tokyo, "Asia/Tokyo")
    assert grants[his["Id"]].expires_at == start_of(in_la, "America/Los_Angeles")
    assert all(e.reason is None for e in audit.events("granted")), "read without a doubt"


def test_the_integration_users_locale_is_asked_only_when_a_date_reads_in_doubt(
    audit: Audit,
) -> None:
    """Display may be written in the locale of whoever reads the trail: when a row's date
    fits no reading by its granting user's locale or the org's, the integration user's
    locale is asked, once, and kept."""
    berlin = audit.add(locale="de_DE", time_zone="Europe/Berlin")
    berlin.user(berlin.integration_username, locale="ja_JP")
    jane = f"jane@{berlin.domain}"
    clean = berlin.grant(jane, 7, vendor=audit.vendor, at=ago(days=2))
    first = sync(audit, berlin)
    assert first.api_calls == 2, "every date read cleanly: no one else asked"
    made = ago(days=1)
    through = made.astimezone(ZoneInfo("Europe/Berlin")).date() + timedelta(days=3)
    odd = berlin._row(  # written year first, as the reader's locale would write it
        "loginasgrantedtopartnerbt",
        f"li@{berlin.domain} has granted user login access through {through:%Y/%m/%d} to "
        f"package publisher FirmWorks Support ({audit.org.app.org_id[:15]})",
        f"li@{berlin.domain}",
        at=made,
    )

    second = sync(audit, berlin)
    third = sync(audit, berlin)

    assert second.api_calls == 2, "the trail, and the integration user's locale"
    assert third.api_calls == 1
    grants = audit.grants()
    assert grants[odd["Id"]].expires_at == start_of(through, "Europe/Berlin")
    assert grants[clean["Id"]].expires_at > utcnow()
    reason = {e.source_id: e.reason for e in audit.events("granted")}[odd["Id"]] or ""
    assert reason.startswith("read as YYYY-M-D: it is no date as D/M/YYYY (li@")
    assert audit.ledger.org_profile("org1").reader.locale == "ja_JP"  # type: ignore[union-attr]


def test_an_audit_revocation_says_what_was_done_and_the_grant_stands_until_the_customer(
    audit: Audit,
) -> None:
    """firmgrant cannot revoke an audit grant: it ends support's sessions. `show`, the
    lifecycle and the export say so, and say "revoked in Setup" once the customer did."""
    acme = audit.add()
    jane = f"jane@{acme.domain}"
    made = acme.grant(jane, 1, vendor=audit.vendor, at=ago(days=3))
    acme.use(SUPPORT_USER, jane, at=ago(days=2, hours=12))  # a session still open
    audit.cycle()

    with audit.ledger.sessions() as session:
        grant = find_grant(session, made["Id"], now=utcnow(), max_duration=YEAR)
        lifecycle = grant_lifecycle(session, grant.id)
        events = grant_events(session, grant.id)
    assert grant.status == GrantStatus.EXPIRED, "not revoked: it stands in Setup"
    assert lifecycle.revocation == RevocationStatus.SESSIONS_ENDED
    assert lifecycle.revocation_words() == (
        "sessions_ended (1 Login-As session(s) of support ended): "
        "still granted in Setup until the customer revokes it"
    )
    console = Console(file=io.StringIO(), width=200)
    grant_story(grant, events, console, lifecycle)
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    assert "sessions_ended (1 Login-As session(s) of support ended): still granted" in shown
    rows = [r for r in exported(audit.ledger) if r["grant_id"] == grant.id]
    assert "revoked" not in {r["status_after"] for r in rows}
    assert "sessions_ended" in {r["kind"] for r in rows}
    (page,) = pages(audit, f"/grants/{grant.id}")
    revocation = page.split('id="revocation"')[1].split("</section>")[0]
    assert '<span class="badge sessions_ended">sessions_ended</span>' in revocation
    assert "1 Login-As session(s) of support ended." in revocation
    assert "Still granted in Setup until the customer revokes it" in revocation
    assert 'class="badge revoked"' not in revocation

    acme.revoke(jane, vendor=audit.vendor)
    audit.cycle()

    with audit.ledger.sessions() as session:
        lifecycle = grant_lifecycle(session, grant.id)
        grant = find_grant(session, made["Id"], now=utcnow(), max_duration=YEAR)
    assert lifecycle.revocation == RevocationStatus.REVOKED_IN_SETUP
    assert not lifecycle.still_granted_in_setup
    assert grant.status == GrantStatus.REVOKED
    (page,) = pages(audit, f"/grants/{grant.id}")
    assert "The customer revoked it in Setup on " in page


def test_the_org_id_is_learned_and_replaces_a_connection_name_recorded_before(
    audit: Audit,
) -> None:
    """Grants an earlier firmgrant recorded under the connection's name (no org id known)
    get the org's Id once the org tells it."""
    acme = audit.add()
    acme.grant(f"jane@{acme.domain}", 7, vendor=audit.vendor, at=ago(hours=2))
    sync(audit, acme, "acme")
    with audit.ledger.transaction() as session:
        for grant in session.execute(select(GrantRow)).scalars():
            grant.org_id = "acme"  # as a settings-defined connection once recorded it

    sync(audit, acme, "acme", full=True)

    assert {g.org_id for g in audit.grants().values()} == {acme.org_id}


def test_a_late_row_shows_when_it_happened_and_how_much_later_it_was_noticed(
    audit: Audit,
) -> None:
    acme = audit.add()
    jane = f"jane@{acme.domain}"
    made = acme.grant(jane, 30, vendor=audit.vendor, at=ago(days=20))
    sync(audit, acme)
    with audit.ledger.sessions() as session:
        grant = find_grant(session, made["Id"], now=utcnow(), max_duration=YEAR)
        events = grant_events(session, grant.id)
    console = Console(file=io.StringIO(), width=200)
    grant_story(grant, events, console, poll=timedelta(minutes=1))
    shown = console.file.getvalue()  # type: ignore[attr-defined]

    assert when(made).strftime("%Y-%m-%d %H:%M:%S") in shown
    assert "(noticed 20 days later)" in shown


def test_an_unreadable_trail_is_loud_until_a_full_read_finds_none(audit: Audit) -> None:
    acme = audit.add()
    jane = f"jane@{acme.domain}"
    german = acme._row(
        "loginasgrantedtopartnerbt",
        f"{jane} hat Anmeldezugriff bis 3.12.2026 für FirmWorks Support "
        f"({audit.org.app.org_id[:15]}) gewährt",
        jane,
        at=ago(days=1),
    )
    acme.grant(f"li@{acme.domain}", 7, vendor=audit.vendor, at=ago(hours=5))

    first = sync(audit, acme)

    assert first.unreadable is not None
    assert first.unreadable.startswith(f"row {german['Id']}: Display does not end in")
    assert "hat Anmeldezugriff" in first.unreadable
    assert audit.ledger.sync_state("org1", "audit").unreadable == first.unreadable
    assert sync(audit, acme).unreadable == first.unreadable, "an idle sync keeps it"
    acme.store.records["setupaudittrail"].pop(german["Id"])  # aged out of the trail
    assert sync(audit, acme, full=True).unreadable is None, "a full read found none"


def test_a_connection_setting_naming_no_order_learns_it(audit: Audit) -> None:
    """The settings are overrides: unset, nothing is assumed of the org."""
    connection = ConnectionSettings(source=SourceSettings(kind="audit"))
    assert (connection.source.date_order, connection.source.time_zone) == (None, None)


# -- through the registry -------------------------------------------------------------------
def test_registered_orgs_in_day_first_and_year_first_locales_read_as_they_write(
    sandbox: Any, ledger: Ledger, database_url: str
) -> None:
    """Nothing but the org's URL and user is registered: how each writes dates, and in which
    zone its users' days start, is learned from Salesforce."""
    from tests.test_orgs import register, registry_settings

    vendor = ("FirmWorks Support", sandbox.app.org_id)
    berlin = sandbox.tenants.add(TenantOptions(locale="de_DE", time_zone="Europe/Berlin"))
    tokyo = sandbox.tenants.add(TenantOptions(locale="ja_JP", time_zone="Asia/Tokyo"))
    plain = sandbox.tenants.add()  # en_US, UTC
    ny = f"ann@{plain.domain}"
    plain.user(ny, time_zone="America/New_York")
    made = ambiguous_day()
    grants = {
        "berlin": berlin.grant(f"jane@{berlin.domain}", 3, vendor=vendor, at=made),
        "tokyo": tokyo.grant(f"aiko@{tokyo.domain}", 3, vendor=vendor, at=made),
        "ny": plain.grant(ny, 3, vendor=vendor, at=made.replace(hour=2)),  # 21:00 the day before
    }
    register(ledger, sandbox, [berlin, tokyo, plain])
    with ledger.sessions() as session:
        assert {(o.date_order, o.time_zone) for o in session.execute(select(OrgRow)).scalars()} == {
            (None, None)
        }

    Worker(registry_settings(sandbox, database_url), ledger).cycle()

    with ledger.sessions() as session:
        ends = {g.source_id: g.expires_at for g in session.execute(select(GrantRow)).scalars()}
        noted = [
            e.reason for e in session.execute(select(EventRow)).scalars() if e.kind == "granted"
        ]
    day = (made + timedelta(days=3)).date()
    assert ends[grants["berlin"]["Id"]] == start_of(day, "Europe/Berlin")
    assert ends[grants["tokyo"]["Id"]] == start_of(day, "Asia/Tokyo")
    assert ends[grants["ny"]["Id"]] == start_of(day - timedelta(days=1), "America/New_York")
    assert noted == [None, None, None], "each read in its own order, without a doubt"


def test_an_unreadable_registered_org_says_so_in_every_place_an_operator_looks(
    sandbox: Any,
    ledger: Ledger,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from starlette.testclient import TestClient

    from firmgrant import accounts
    from firmgrant.cli import _check, main
    from firmgrant.web import create_app
    from tests.test_orgs import register, registry_settings
    from tests.webbing import PASSWORD, SESSION_SECRET

    german, fine = sandbox.tenants.add(), sandbox.tenants.add()
    jane = f"jane@{german.domain}"
    row = german._row(
        "loginasgrantedtopartnerbt",
        f"{jane} hat Benutzer-Anmeldezugriff bis 3.12.2026 für Paketherausgeber FirmWorks "
        f"Support ({sandbox.app.org_id[:15]}) gewährt",
        jane,
        at=ago(hours=3),
    )
    fine.grant(f"li@{fine.domain}", 7, vendor=("FirmWorks Support", sandbox.app.org_id))
    register(ledger, sandbox, [german, fine])
    settings = registry_settings(sandbox, database_url, web={"session_secret": SESSION_SECRET})

    with caplog.at_level("INFO", logger="firmgrant"):
        result = Worker(settings, ledger).cycle()

    assert result.org_states == {"unreadable": 1, "ok": 1}
    assert "poll: 2 orgs: ok=1 unreadable=1" in caplog.text
    monkeypatch.setenv("FIRMGRANT_DATABASE_URL", database_url)
    assert main(["orgs", "list", "--json"]) == 0
    listed = {o["name"]: o for o in json.loads(capsys.readouterr().out)}
    assert listed["org1"]["state"] == "unreadable"
    assert f"row {row['Id']}: Display does not end in" in listed["org1"]["last_error"]
    assert "hat Benutzer-Anmeldezugriff" in listed["org1"]["last_error"]
    assert listed["org1"]["next_sync_at"] == listed["org2"]["next_sync_at"], "no backoff"

    accounts.add_user(ledger, "ada", accounts.Role.ADMIN, password=PASSWORD,
                      email="ada@firmworks.example", actor="test", now=utcnow())  # fmt: skip
    with TestClient(create_app(settings, ledger), base_url="http://127.0.0.1") as client:
        metrics = client.get("/metrics").text
        page = client.get("/sign-in").text
        token = page.split('name="csrf" value="')[1].split('"')[0]
        client.post("/sign-in", data={"csrf": token, "name": "ada", "password": PASSWORD})
        orgs_page = client.get("/orgs").text
    assert 'firmgrant_connections{state="unreadable"} 1.0' in metrics
    assert 'class="badge unreadable"' in orgs_page
    assert "hat Benutzer-Anmeldezugriff" in orgs_page

    assert _check(settings, "org1") == 1
    said = capsys.readouterr().out
    assert "FAIL connection org1: unreadable: row " in said
    assert "set the language of the integration user and of the users who grant" in said
    assert "`firmgrant sync --full --connection org1`" in said


def test_the_dashboard_leads_with_when_things_happened(audit: Audit) -> None:
    """History and Rule breaks show the trail's times, the support user in a column of its
    own, and how much later firmgrant noticed where that is more than a poll."""
    acme = audit.add()
    jane = f"jane@{acme.domain}"
    made = acme.grant(jane, 1, vendor=audit.vendor, at=ago(days=12))
    used = acme.use(SUPPORT_USER, jane, at=ago(days=9))  # after the day ran out
    sync(audit, acme)
    grant_id = audit.grants()[made["Id"]].id

    page, breaks = pages(audit, f"/grants/{grant_id}", "/rule-breaks")

    granted_at = when(made).strftime("%Y-%m-%d %H:%M")
    assert (
        f">{granted_at} UTC</time> <small>(noticed 12 days later)</small> <strong>granted" in page
    )
    assert f"{when(used):%Y-%m-%d %H:%M} UTC</time>: VIOLATION" in page
    row = breaks.split("<tbody>")[1].split("</tr>")[0]
    assert f">{when(used):%Y-%m-%d %H:%M}</time>" in row  # compact: the footer says UTC
    assert "noticed 9 days later" in row
    assert f"<td>{SUPPORT_USER}</td>" in row
