"""The worker's lifecycle through real cycles: sandbox over HTTPS, aiosmtpd on loopback.

Time is the worker's injectable clock; grants are backdated in the sandbox where a test
needs access that started in the past.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from firmgrant.jobs.revoke import revoke
from firmgrant.ledger import Ledger
from firmgrant.ledger.queries import grant_lifecycle, list_grants
from firmgrant.salesforce.client import SalesforceClient
from firmgrant.sandbox import FaultPlan, SandboxOrg
from firmgrant.settings import Settings
from firmgrant.timeutil import parse_sf_datetime, utcnow
from firmgrant.worker import Worker
from tests.lifecycling import (
    ORG_ADMIN,
    FakeClock,
    Harness,
    SmtpServer,
    TickingClock,
    worker_settings,
)

DAY = timedelta(days=1)
YEAR = timedelta(days=365)  # policy.max_duration by default


@pytest.fixture
def harness(sandbox: SandboxOrg, ledger: Ledger, smtp: SmtpServer) -> Harness:
    settings = worker_settings(sandbox, smtp.port)
    return Harness(sandbox, ledger, settings, FakeClock(), smtp)


def test_login_as_grant_is_rejected_revoked_once_and_explained(harness: Harness) -> None:
    org = harness.org
    org_id = "00D5e0000077777"
    harness.settings = harness.settings.model_copy(
        update={"orgs": Settings(orgs={org_id: {"admin_emails": [ORG_ADMIN]}}).orgs}
    )
    bad = org.customers.grant(
        duration="1 Month",
        org_id=org_id,
        grantor="ana@acme.example",
        login_as_user="bob@acme.example",
    )
    good = org.customers.grant(duration="1 Month")

    first = harness.cycle()

    assert first.enforce is not None
    assert first.enforce.rejected == 1
    assert harness.sf_status(bad["Id"]) == "Revoked"
    assert harness.sf_status(good["Id"]) == "Active"
    assert org.api.revocations[bad["Id"]] == 1
    [email] = harness.mail.messages
    assert "not accepted" in str(email["Subject"])
    assert set(str(email["X-Envelope-To"]).split(", ")) == {"ana@acme.example", ORG_ADMIN}
    text = email.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "cannot be granted while logged in as another user" in text
    assert "bob@acme.example" in text
    assert "must each grant their own access" in text
    with harness.ledger.sessions() as session:
        usable = {g.source_id for g in list_grants(session, now=utcnow(), max_duration=YEAR)}
    assert usable == {good["Id"]}
    assert ("rejected", "system:firmgrant") in harness.events(bad["Id"])

    second = harness.cycle()
    assert second.api_calls == 1  # the sync; nothing to revoke or send
    assert len(harness.mail.messages) == 1
    assert org.api.revocations[bad["Id"]] == 1
    assert harness.chain_ok()


def test_our_revocation_read_back_is_no_change_though_a_second_turned(harness: Harness) -> None:
    # The ledger must hold the revocation time that was sent, not when the reply came.
    harness.clock = TickingClock()
    bad = harness.org.customers.grant(duration="1 Month", login_as_user="bob@acme.example")

    harness.cycle()
    harness.cycle()

    kinds = [kind for kind, _ in harness.events(bad["Id"])]
    assert kinds.count("revoked") == 1
    assert "changed" not in kinds, "the next sync saw our own revocation as a change"


class _Killed(BaseException):
    """The process died: nothing after this point ran (no handler catches it)."""


class _DiesAfterSalesforceRevokes(SalesforceClient):
    """A worker killed after Salesforce carried out its revocation, before it recorded it."""

    def update_collection(
        self, object_name: str, records: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        super().update_collection(object_name, records)
        raise _Killed


def test_a_lost_revocation_outcome_found_by_another_worker_is_firmgrants(
    harness: Harness,
) -> None:
    # A replica that does not plan (no sync) takes the revocation over once the lease has
    # run out and reads the record back: it must find its own revocation, not the customer's.
    settings = harness.settings
    now = harness.clock.now = utcnow().replace(microsecond=0)
    ended = harness.org.customers.grant(duration="1 Day", at=now - 2 * DAY)
    dying = _DiesAfterSalesforceRevokes("sandbox", settings.connections["sandbox"], settings.sync)
    with pytest.raises(_Killed):
        Worker(settings, harness.ledger, clock=harness.clock, clients={"sandbox": dying}).cycle()
    assert harness.sf_status(ended["Id"]) == "Revoked"
    harness.clock.advance(timedelta(seconds=settings.worker.lease_seconds + 1))

    replica = Worker(settings, harness.ledger, clock=harness.clock)
    outcome = revoke(
        harness.ledger,
        settings,
        "sandbox",
        replica.client("sandbox"),
        clock=harness.clock,
        owner=replica.owner,
    )
    harness.cycle()  # the planner's sync then sees no change, and the notice goes out

    assert (outcome.revoked, outcome.already) == (1, 0)
    assert harness.org.api.revocations[ended["Id"]] == 1
    story = harness.events(ended["Id"])
    assert ("revoked", "system:firmgrant") in story
    kinds = [kind for kind, _ in story]
    assert "customer_revoked" not in kinds
    assert "revocation_settled" not in kinds
    assert "changed" not in kinds
    [notice] = harness.mail.of_kind("has ended")
    assert str(notice["X-Envelope-To"]) == ended["Grantor_Email__c"]
    harness.cycle()
    assert len(harness.mail.of_kind("has ended")) == 1


def test_each_reminder_offset_once_then_revocation_at_expiry(harness: Harness) -> None:
    grant = harness.org.customers.grant(duration="1 Month")
    expires = parse_sf_datetime(grant["Expires_At__c"])
    sent_per_step = []
    for moment in (
        expires - timedelta(days=8),  # nothing due yet
        expires - timedelta(days=7) + timedelta(minutes=1),
        expires - timedelta(days=6),  # the 7-day one is not sent again
        expires - DAY + timedelta(minutes=1),
        expires - timedelta(minutes=59),
        expires - timedelta(minutes=30),
    ):
        harness.clock.now = moment
        harness.cycle()
        sent_per_step.append(len(harness.mail.of_kind("ends in")))
    assert sent_per_step == [0, 1, 1, 2, 3, 3]
    words = [str(m["Subject"]) for m in harness.mail.of_kind("ends in")]
    assert [w.rsplit("ends ", 1)[1] for w in words] == [
        "in 6 days 23 hours",
        "in 23 hours 59 minutes",
        "in 59 minutes",
    ]
    assert harness.sf_status(grant["Id"]) == "Active"

    harness.clock.now = expires + timedelta(minutes=1)
    result = harness.cycle()
    assert result.revokes[0].revoked == 1
    assert harness.sf_status(grant["Id"]) == "Revoked"
    [notice] = harness.mail.of_kind("has ended")
    assert "access expired at" in notice.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    harness.clock.advance(timedelta(hours=1))
    harness.cycle()
    assert harness.org.api.revocations[grant["Id"]] == 1
    assert len(harness.mail.messages) == 4
    kinds = [kind for kind, _ in harness.events(grant["Id"])]
    assert kinds.count("reminded") == 3
    assert kinds[-3:] == ["expired", "revoked", "notified"]


def test_short_grant_and_late_start_get_only_the_nearest_reminder(harness: Harness) -> None:
    customers = harness.org.customers
    now = harness.clock.now = utcnow().replace(microsecond=0)
    one_day = customers.grant(duration="1 Day", at=now)
    # Seen for the first time 30 minutes before it ends: 7 d, 1 d and 1 h have all passed.
    customers.grant(duration="1 Week", at=now - timedelta(days=7) + timedelta(minutes=30))
    harness.cycle()
    [late] = harness.mail.messages
    assert str(late["Subject"]).endswith("ends in 30 minutes")
    # The 1-day grant: no 7-day and no 1-day reminder (both due before it was made) ...
    harness.clock.now = now + DAY - timedelta(hours=2)
    harness.cycle()
    assert len(harness.mail.of_kind("ends in")) == 1
    # ... but the 1-hour one.
    harness.clock.now = now + DAY - timedelta(minutes=45)
    harness.cycle()
    assert str(harness.mail.of_kind("ends in")[-1]["Subject"]).endswith("ends in 45 minutes")
    assert [k for k, _ in harness.events(one_day["Id"])] == [
        "discovered",
        "reminder_due",
        "reminded",
    ]


def test_extension_cancels_the_unsent_reminder_and_reschedules(harness: Harness) -> None:
    customers = harness.org.customers
    grant = customers.grant(duration="1 Week", at=utcnow() - timedelta(days=6, hours=12))
    harness.smtp.stop()  # the mail server is down: the 1-day reminder waits
    harness.cycle()
    [email] = grant_lifecycle_emails(harness, grant["Id"])
    assert email[2] == "failed"
    customers.extend(grant["Id"], "1 Month")
    harness.smtp.start()
    harness.clock.advance(timedelta(hours=1))
    harness.cycle()
    assert harness.mail.messages == []  # the old reminder no longer applies
    assert [e[2] for e in grant_lifecycle_emails(harness, grant["Id"])] == ["cancelled"]
    harness.clock.now = utcnow() + timedelta(days=23, hours=1)
    harness.cycle()
    [reminder] = harness.mail.messages
    assert "ends in 6 days" in str(reminder["Subject"])
    assert harness.sf_status(grant["Id"]) == "Active"
    harness.clock.now = utcnow() + timedelta(days=30, minutes=1)
    harness.cycle()  # the revocation cancelled by the extension does not hide the new end
    assert harness.sf_status(grant["Id"]) == "Revoked"


def test_grant_extended_after_revocation_is_revoked_again_at_its_new_end(
    harness: Harness,
) -> None:
    customers = harness.org.customers
    grant = customers.grant(duration="1 Day", at=utcnow() - timedelta(days=1, minutes=1))
    harness.cycle()
    assert harness.sf_status(grant["Id"]) == "Revoked"
    customers.extend(grant["Id"], "3 Days")  # the customer grants access again
    harness.clock.now = utcnow()
    harness.cycle()
    assert harness.sf_status(grant["Id"]) == "Active"
    with harness.ledger.sessions() as session:
        assert [
            g.source_id for g in list_grants(session, now=harness.clock.now, max_duration=YEAR)
        ] == [grant["Id"]]
    harness.clock.now = utcnow() + timedelta(days=3, minutes=1)
    harness.cycle()
    assert harness.sf_status(grant["Id"]) == "Revoked"
    assert harness.org.api.revocations[grant["Id"]] == 2  # once per end of access
    assert len(harness.mail.of_kind("has ended")) == 2


def test_customer_revocation_is_recorded_and_needs_no_action(harness: Harness) -> None:
    grant = harness.org.customers.grant(duration="1 Week")
    harness.cycle()
    harness.org.customers.revoke(grant["Id"])
    harness.clock.now = utcnow() + timedelta(days=8)
    result = harness.cycle()
    assert sum(r.revoked for r in result.revokes) == 0
    assert harness.org.api.revocations[grant["Id"]] == 0
    assert [str(m["Subject"]) for m in harness.mail.messages] == []
    kind, actor = harness.events(grant["Id"])[-1]
    assert kind == "customer_revoked"
    assert actor == f"customer:{grant['Org_Id__c']}"
    with harness.ledger.sessions() as session:
        [view] = list_grants(session, now=harness.clock.now, status="revoked", max_duration=YEAR)
    assert view.source_id == grant["Id"]


def test_grant_longer_than_the_vendor_cap_is_revoked_at_the_cap(harness: Harness) -> None:
    harness.settings = harness.settings.model_copy(
        update={"policy": Settings(policy={"max_duration": "30d"}).policy}
    )
    grant = harness.org.customers.grant(
        duration="1 Year", at=utcnow() - timedelta(days=30, minutes=5)
    )
    harness.cycle()
    assert harness.sf_status(grant["Id"]) == "Revoked"
    record = harness.org.store.records["login_access_grant__c"][grant["Id"]]
    assert "maximum of 30d" in record["Revoke_Reason__c"]
    assert [k for k, _ in harness.events(grant["Id"])][-3:] == ["capped", "revoked", "notified"]


def test_failing_record_is_retried_with_backoff_until_revoked(harness: Harness) -> None:
    org = harness.org
    stuck = org.customers.grant(duration="1 Day", at=utcnow() - timedelta(days=1, minutes=5))
    fine = org.customers.grant(duration="1 Day", at=utcnow() - timedelta(days=1, minutes=5))
    org.faults.plan = FaultPlan(fail_records=frozenset({stuck["Id"]}))
    first = harness.cycle()
    assert (first.revokes[0].revoked, first.revokes[0].failed) == (1, 1)
    with harness.ledger.sessions() as session:
        state = grant_lifecycle(session, harness.grant_id(stuck["Id"]))
    assert state.revocation == "revoke_failed"
    assert "UNABLE_TO_LOCK_ROW" in (state.revocation_error or "")
    harness.cycle()  # before the backoff: not tried again
    assert org.api.revocations[stuck["Id"]] == 0
    org.faults.plan = FaultPlan()
    harness.clock.advance(timedelta(minutes=2))
    assert harness.cycle().revokes[0].revoked == 1
    assert harness.sf_status(stuck["Id"]) == harness.sf_status(fine["Id"]) == "Revoked"
    assert org.api.revocations[fine["Id"]] == org.api.revocations[stuck["Id"]] == 1


def test_revocation_survives_session_expiry_and_503s(harness: Harness) -> None:
    org = harness.org
    ended = [
        org.customers.grant(duration="1 Day", at=utcnow() - timedelta(days=2)) for _ in range(3)
    ]
    org.faults.plan = FaultPlan(expire_every=2)  # every other call finds the session expired
    org.faults.inject_next("503", 2)
    result = harness.cycle()
    assert result.revokes[0].revoked == 3
    for grant in ended:
        assert harness.sf_status(grant["Id"]) == "Revoked"
        assert org.api.revocations[grant["Id"]] == 1


def test_smtp_down_then_up_sends_each_email_once(harness: Harness) -> None:
    harness.smtp.stop()
    now = harness.clock.now = utcnow().replace(microsecond=0)
    grant = harness.org.customers.grant(duration="1 Day", at=now - timedelta(hours=23, minutes=30))
    first = harness.cycle()
    assert first.dispatch is not None
    assert first.dispatch.failed == 1
    harness.cycle()  # within the backoff: not retried, nothing logged twice
    harness.smtp.start()
    harness.clock.advance(timedelta(minutes=2))
    harness.cycle()
    harness.cycle()
    [email] = harness.mail.messages
    assert str(email["Subject"]).endswith("ends in 28 minutes")
    kinds = [k for k, _ in harness.events(grant["Id"])]
    assert kinds.count("email_failed") == 1
    assert kinds.count("reminded") == 1


def grant_lifecycle_emails(harness: Harness, source_id: str) -> list[tuple[object, ...]]:
    with harness.ledger.sessions() as session:
        return [tuple(e) for e in grant_lifecycle(session, harness.grant_id(source_id)).emails]


def test_file_backend_writes_one_eml_per_email(harness: Harness, tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    harness.settings = harness.settings.model_copy(
        update={"mail": Settings(mail={"backend": "file", "file_dir": str(outbox)}).mail}
    )
    harness.org.customers.grant(duration="1 Day", login_as_user="root@acme.example")
    harness.cycle()
    harness.cycle()
    [eml] = list(outbox.glob("*.eml"))
    assert b"Login-As" in eml.read_bytes()


def test_address_the_server_cannot_carry_is_undeliverable_and_the_rest_go_out(
    harness: Harness,
) -> None:
    harness.smtp.stop()
    harness.smtp = SmtpServer(harness.smtp.port, smtputf8=False)
    harness.smtp.start()
    try:
        ended = utcnow() - timedelta(days=1, minutes=5)
        accented = harness.org.customers.grant(
            duration="1 Day", grantor="zoë@acme.example", at=ended
        )
        plain = harness.org.customers.grant(duration="1 Day", grantor="ana@acme.example", at=ended)
        result = harness.cycle()
        assert result.dispatch is not None
        assert (result.dispatch.sent, result.dispatch.undeliverable) == (1, 1)
        [email] = harness.mail.messages
        assert str(email["X-Envelope-To"]) == "ana@acme.example"
        [(kind, _, state, note)] = grant_lifecycle_emails(harness, accented["Id"])
        assert (kind, state) == ("revoked", "undeliverable")
        assert "SMTPUTF8" in str(note)
        assert harness.sf_status(plain["Id"]) == "Revoked"
    finally:
        harness.smtp.stop()


def _revocation_stuck(harness: Harness) -> dict[str, Any]:
    """A grant whose access ended and whose revocation Salesforce refuses for now."""
    ended = harness.org.customers.grant(duration="1 Day", at=harness.clock.now - 2 * DAY)
    harness.org.faults.plan = FaultPlan(fail_records=frozenset({ended["Id"]}))
    harness.cycle()
    with harness.ledger.sessions() as session:
        assert grant_lifecycle(session, harness.grant_id(ended["Id"])).revocation == (
            "revoke_failed"
        )
    harness.org.faults.plan = FaultPlan()
    return ended


def test_a_queued_revocation_is_cancelled_when_the_customer_extends(harness: Harness) -> None:
    ended = _revocation_stuck(harness)
    harness.org.customers.extend(ended["Id"], "1 Month")
    harness.clock.now = utcnow()

    harness.cycle()
    harness.clock.advance(timedelta(hours=2))  # past any retry's backoff
    harness.cycle()

    assert harness.sf_status(ended["Id"]) == "Active"
    assert harness.org.api.revocations[ended["Id"]] == 0
    assert "revocation_cancelled" in [kind for kind, _ in harness.events(ended["Id"])]
    with harness.ledger.sessions() as session:
        assert grant_lifecycle(session, harness.grant_id(ended["Id"])).revocation == "cancelled"
        assert [
            g.source_id for g in list_grants(session, now=harness.clock.now, max_duration=YEAR)
        ] == [ended["Id"]]
    assert harness.mail.of_kind("has ended") == []


def test_a_queued_revocation_the_customer_made_is_settled_without_a_call(
    harness: Harness,
) -> None:
    ended = _revocation_stuck(harness)
    harness.org.customers.revoke(ended["Id"])

    result = harness.cycle()

    assert result.enforce is not None
    assert result.enforce.settled == 1
    assert harness.org.api.revocations[ended["Id"]] == 0  # the customer's update, not ours
    story = harness.events(ended["Id"])
    assert ("customer_revoked", f"customer:{ended['Org_Id__c']}") in story
    assert "revocation_settled" in [kind for kind, _ in story]
    assert "revoked" not in [kind for kind, _ in story]
    assert harness.mail.of_kind("has ended") == []


def test_revoking_a_record_already_gone_from_salesforce_counts_as_done(harness: Harness) -> None:
    ended = _revocation_stuck(harness)
    # Purged without a trace a sync could see (no IsDeleted row): only the update finds out.
    del harness.org.store.records["login_access_grant__c"][ended["Id"]]
    harness.clock.advance(timedelta(hours=2))

    result = harness.cycle()

    assert (result.revokes[0].revoked, result.revokes[0].already) == (0, 1)
    story = [kind for kind, _ in harness.events(ended["Id"])]
    assert story[-1] == "revocation_settled"
    with harness.ledger.sessions() as session:
        state = grant_lifecycle(session, harness.grant_id(ended["Id"]))
    assert state.revocation == "revoked"
    assert harness.mail.of_kind("has ended") == []


def test_the_daily_full_sync_finds_grants_gone_without_a_trace(harness: Harness) -> None:
    kept = harness.org.customers.grant(duration="1 Month")
    purged = harness.org.customers.grant(duration="1 Month")
    harness.cycle()
    del harness.org.store.records["login_access_grant__c"][purged["Id"]]

    harness.clock.advance(timedelta(hours=23))
    within_a_day = harness.cycle()
    harness.clock.advance(timedelta(hours=1))  # 24 h since the first (full) read
    next_day = harness.cycle()

    assert not within_a_day.syncs[0].full
    assert next_day.syncs[0].full
    assert next_day.syncs[0].deleted == 1
    assert "vanished" in [kind for kind, _ in harness.events(purged["Id"])]
    assert "vanished" not in [kind for kind, _ in harness.events(kept["Id"])]


def test_a_recipient_refused_for_now_is_retried_and_one_refused_for_good_is_not(
    harness: Harness,
) -> None:
    now = harness.clock.now = utcnow().replace(microsecond=0)
    later = harness.org.customers.grant(
        duration="1 Week", grantor="busy@acme.example", at=now - timedelta(days=6, hours=1)
    )
    never = harness.org.customers.grant(
        duration="1 Week", grantor="gone@acme.example", at=now - timedelta(days=6, hours=1)
    )
    harness.mail.refusals = {
        "busy@acme.example": ["450 4.2.1 Mailbox busy, try later"],
        "gone@acme.example": ["550 5.1.1 No such user"] * 5,
    }

    first = harness.cycle()
    harness.clock.advance(timedelta(minutes=2))  # past the first retry's backoff (60 s)
    second = harness.cycle()
    harness.clock.advance(timedelta(hours=2))
    harness.cycle()

    assert first.dispatch is not None
    assert second.dispatch is not None
    assert (first.dispatch.failed, first.dispatch.undeliverable) == (1, 1)
    assert (second.dispatch.sent, second.dispatch.undeliverable) == (1, 0)
    assert [str(m["X-Envelope-To"]) for m in harness.mail.messages] == ["busy@acme.example"]
    assert harness.mail.refusals["gone@acme.example"] == ["550 5.1.1 No such user"] * 4
    with harness.ledger.sessions() as session:
        [(_, _, state, note)] = grant_lifecycle(session, harness.grant_id(never["Id"])).emails
    assert state == "undeliverable"
    assert "550" in (note or "")
    story = [kind for kind, _ in harness.events(later["Id"])]
    assert story.count("email_failed") == 1
    assert story.count("reminded") == 1
    assert "email_undeliverable" in [kind for kind, _ in harness.events(never["Id"])]
