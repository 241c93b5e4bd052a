"""Sync from an org into the ledger: paging, increments, faults, bad records (SQLite and PG)."""

from __future__ import annotations

import gc
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from firmgrant.jobs.sync import SyncResult, sync_connection
from firmgrant.ledger import Ledger, verify_chain
from firmgrant.ledger.models import EventRow, GrantRow
from firmgrant.ledger.queries import list_grants
from firmgrant.settings import ConnectionSettings, SourceSettings, SyncSettings, VendorSettings
from tests.fakeorg import CLIENT_ID, CLIENT_SECRET, LOGIN_URL, FakeOrg, sf_time

NOW = datetime.now(UTC).replace(microsecond=0)
YEAR = timedelta(days=365)  # policy.max_duration by default


def connection(batch_size: int = 2000) -> ConnectionSettings:
    return ConnectionSettings(
        login_url=LOGIN_URL,
        auth="client_credentials",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        source=SourceSettings(batch_size=batch_size),
    )


def sync(
    ledger: Ledger,
    *,
    batch_size: int = 2000,
    full: bool = False,
    vendor: VendorSettings | None = None,
    policy: SyncSettings | None = None,
) -> SyncResult:
    return sync_connection(
        ledger,
        "acme",
        connection(batch_size),
        vendor or VendorSettings(),
        policy or SyncSettings(),
        full=full,
        clock=lambda: NOW,
    )


def events(ledger: Ledger, kind: str | None = None) -> list[EventRow]:
    with ledger.sessions() as session:
        query = select(EventRow).order_by(EventRow.id)
        if kind:
            query = query.where(EventRow.kind == kind)
        return list(session.execute(query).scalars())


def grant_row(ledger: Ledger, source_id: str) -> GrantRow:
    with ledger.sessions() as session:
        return session.execute(select(GrantRow).where(GrantRow.source_id == source_id)).scalar_one()


def grant_count(ledger: Ledger) -> int:
    with ledger.sessions() as session:
        return session.execute(select(func.count()).select_from(GrantRow)).scalar_one()


def test_first_sync_pages_through_next_records_url_and_second_is_idle(
    ledger: Ledger, fake_org: FakeOrg
) -> None:
    for _ in range(450):
        fake_org.grant()

    first = sync(ledger, batch_size=200)
    second = sync(ledger, batch_size=200)

    assert (first.fetched, first.inserted, first.updated, first.api_calls) == (450, 450, 0, 3)
    assert grant_count(ledger) == 450
    assert (second.inserted, second.updated, second.deleted, second.api_calls) == (0, 0, 0, 1)
    assert len(events(ledger, "discovered")) == 450
    assert len(events(ledger)) == 450, "an unchanged org must not write events"
    assert fake_org.token_requests == 2, "one token per run; token requests are not API calls"


def test_incremental_sync_asks_only_for_changes_since_the_watermark(
    ledger: Ledger, fake_org: FakeOrg
) -> None:
    record = fake_org.grant()
    watermark = datetime.fromisoformat(record["SystemModstamp"])
    sync(ledger)
    extended = sf_time(fake_org.clock + timedelta(days=30))
    fake_org.update(record["Id"], Expires_At__c=extended, Access_Duration__c="1 Month")

    result = sync(ledger)

    assert "SystemModstamp > " not in fake_org.soql[0]
    assert (watermark - timedelta(seconds=300)).isoformat() in fake_org.soql[1]
    assert "Grantee__c IN ('FirmWorks Support')" in fake_org.soql[1]
    assert (result.fetched, result.updated, result.inserted) == (1, 1, 0)
    changed = events(ledger, "changed")
    assert len(changed) == 1
    changes = json.loads(changed[0].payload)["changes"]
    assert set(changes) == {"expires_at", "duration"}
    assert changes["duration"] == ["1 week", "1 month"]
    assert grant_row(ledger, record["Id"]).expires_at == datetime.fromisoformat(extended)


def test_salesforce_datetimes_are_stored_as_aware_utc(ledger: Ledger, fake_org: FakeOrg) -> None:
    record = fake_org.grant(
        Granted_At__c="2026-05-20T20:49:32.000+0000", Expires_At__c="2026-05-21T22:49:32.000+0200"
    )
    sync(ledger)
    row = grant_row(ledger, record["Id"])
    assert row.granted_at == datetime(2026, 5, 20, 20, 49, 32, tzinfo=UTC)
    assert row.expires_at == datetime(2026, 5, 21, 20, 49, 32, tzinfo=UTC)
    assert row.expires_at.tzinfo is not None


def test_a_deleted_record_from_query_all_marks_the_grant_deleted(
    ledger: Ledger, fake_org: FakeOrg
) -> None:
    keep, gone = fake_org.grant(), fake_org.grant()
    sync(ledger)
    fake_org.delete(gone["Id"])

    result = sync(ledger)

    assert (result.deleted, result.updated) == (1, 0)
    assert grant_row(ledger, gone["Id"]).deleted
    assert not grant_row(ledger, keep["Id"]).deleted
    with ledger.sessions() as session:
        listed = {
            g.source_id: g.status
            for g in list_grants(session, now=NOW, status="all", max_duration=YEAR)
        }
    assert listed == {keep["Id"]: "active", gone["Id"]: "deleted"}


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"Id": None}, "Id is missing"),
        ({"Granted_At__c": "20/05/2026"}, "Granted_At__c is not a datetime"),
        (
            {"Granted_At__c": "2026-05-20T10:00:00.000"},
            "Granted_At__c is a datetime without a UTC offset: '2026-05-20T10:00:00.000'",
        ),
        ({"Expires_At__c": "2026-05-19T00:00:00.000+0000"}, "Expires_At__c is not after"),
        ({"Access_Duration__c": "2 Fortnights"}, "not a Salesforce duration"),
        (
            {"Status__c": "Paused"},
            "Status__c 'Paused' is not one of ('Active', 'Revoked', 'Expired')",
        ),
        ({"Org_Name__c": "x" * 256}, "Org_Name__c is 256 characters long"),
    ],
)
def test_a_malformed_record_is_recorded_and_skipped_while_the_page_goes_on(
    ledger: Ledger, fake_org: FakeOrg, overrides: dict[str, Any], reason: str
) -> None:
    before = fake_org.grant()
    bad = fake_org.grant(**overrides)
    after = fake_org.grant()

    first = sync(ledger)
    again = sync(ledger)  # the overlap re-reads it: reported once only

    assert (first.fetched, first.inserted, first.invalid) == (3, 2, 1)
    assert again.invalid == 0
    assert {grant_row(ledger, r["Id"]).source_id for r in (before, after)} == {
        before["Id"],
        after["Id"],
    }
    invalid = events(ledger, "invalid")
    assert len(invalid) == 1
    assert reason in (invalid[0].reason or "")
    if bad["Id"]:
        assert invalid[0].source_id == bad["Id"]
    state = ledger.sync_state("acme", "object")
    assert state.watermark == datetime.fromisoformat(after["SystemModstamp"])


def test_session_expiring_mid_paging_re_authenticates_and_finishes(
    ledger: Ledger, fake_org: FakeOrg
) -> None:
    for _ in range(500):
        fake_org.grant()
    fake_org.fail_next(
        "more", 401, [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    )

    result = sync(ledger, batch_size=200)

    assert result.error is None
    assert (result.inserted, result.api_calls) == (500, 3)
    assert fake_org.token_requests == 2


def test_503_then_success_is_retried(ledger: Ledger, fake_org: FakeOrg) -> None:
    fake_org.grant()
    fake_org.fail_next(
        "query", 503, [{"message": "Service Unavailable", "errorCode": "SERVER_UNAVAILABLE"}]
    )
    result = sync(ledger)
    assert (result.error, result.inserted, result.api_calls) == (None, 1, 1)


def test_503_that_persists_ends_the_run_with_an_error_and_loses_nothing(
    ledger: Ledger, fake_org: FakeOrg
) -> None:
    for _ in range(300):
        fake_org.grant()
    for _ in range(3):  # every attempt of the retry policy in tests
        fake_org.fail_next("more", 503, [{"message": "down", "errorCode": "SERVER_UNAVAILABLE"}])

    broken = sync(ledger, batch_size=200)
    collector_after_failure = gc.isenabled()  # the sync pauses it while pages are written
    healed = sync(ledger, batch_size=200)

    assert collector_after_failure, "a failed sync must leave the garbage collector on"
    assert gc.isenabled()
    assert broken.error_kind == "SalesforceUnavailable"
    assert broken.inserted == 200, "the first page was committed with its watermark"
    assert (healed.error, healed.inserted) == (None, 100)
    assert grant_count(ledger) == 300
    assert len(events(ledger, "discovered")) == 300, "nothing duplicated by the re-read"


def test_request_limit_exceeded_ends_the_cycle_and_is_recorded(
    ledger: Ledger, fake_org: FakeOrg
) -> None:
    fake_org.grant()
    fake_org.fail_next(
        "query",
        403,
        [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}],
    )

    limited = sync(ledger)
    state = ledger.sync_state("acme", "object")
    later = sync(ledger)

    assert limited.error_kind == "api_limit"
    assert "TotalRequests Limit exceeded" in (state.last_error or "")
    assert (later.error, later.inserted) == (None, 1)
    assert ledger.sync_state("acme", "object").last_error is None


def test_limit_info_is_kept_and_work_stops_below_the_floor(
    ledger: Ledger, fake_org: FakeOrg
) -> None:
    for _ in range(400):
        fake_org.grant()
    fake_org.api_used, fake_org.api_limit = 4600, 5000  # the first call leaves 399 < 400

    first = sync(ledger, batch_size=200, policy=SyncSettings(api_floor=400))
    state = ledger.sync_state("acme", "object")
    skipped = sync(ledger, batch_size=200, policy=SyncSettings(api_floor=400))

    assert first.error_kind == "api_limit"
    assert first.inserted == 200, "the page fetched before the floor was kept"
    assert (state.api_used, state.api_limit) == (4601, 5000)
    assert skipped.error_kind == "api_limit"
    assert (skipped.api_calls, fake_org.api_used) == (0, 4601), "no call spent below the floor"


def test_grantee_names_are_escaped_in_soql(ledger: Ledger, fake_org: FakeOrg) -> None:
    vendor = VendorSettings(grantee_names=["O'Brien Support", "FirmWorks Support"])
    fake_org.grant(Grantee__c="O'Brien Support")
    fake_org.grant(Grantee__c="Someone Else")

    result = sync(ledger, vendor=vendor)

    assert "Grantee__c IN ('O\\'Brien Support','FirmWorks Support')" in fake_org.soql[0]
    assert result.inserted == 1


def test_a_touch_that_changes_nothing_we_mirror_writes_no_event(
    ledger: Ledger, fake_org: FakeOrg
) -> None:
    record = fake_org.grant()
    sync(ledger)
    touched = fake_org.update(record["Id"])["SystemModstamp"]  # nothing else changes

    result = sync(ledger)

    assert (result.fetched, result.updated) == (1, 0)
    assert len(events(ledger)) == 1
    assert grant_row(ledger, record["Id"]).modstamp == datetime.fromisoformat(touched)


def test_full_sync_ignores_the_watermark_and_marks_vanished_grants(
    ledger: Ledger, fake_org: FakeOrg
) -> None:
    keep, purged = fake_org.grant(), fake_org.grant()
    sync(ledger)
    del fake_org.records[purged["Id"]]  # emptied from the recycle bin: queryAll cannot see it

    incremental = sync(ledger)
    full = sync(ledger, full=True)

    assert incremental.deleted == 0
    assert "SystemModstamp >" not in fake_org.soql[-1]
    assert (full.fetched, full.deleted, full.inserted) == (1, 1, 0)
    assert grant_row(ledger, purged["Id"]).deleted
    assert not grant_row(ledger, keep["Id"]).deleted
    assert [e.source_id for e in events(ledger, "vanished")] == [purged["Id"]]
    assert ledger.sync_state("acme", "object").last_full_sync_at == NOW


def test_a_full_sync_that_writes_new_and_changed_grants_counts_them_seen(
    ledger: Ledger, fake_org: FakeOrg
) -> None:
    changed, same = fake_org.grant(), fake_org.grant()
    sync(ledger)
    fake_org.update(changed["Id"], Org_Name__c="Renamed Ltd")
    new = fake_org.grant()

    full = sync(ledger, full=True)
    again = sync(ledger, full=True)

    assert (full.inserted, full.updated, full.deleted) == (1, 1, 0)
    assert again.deleted == 0
    assert events(ledger, "vanished") == []
    assert [grant_row(ledger, r["Id"]).deleted for r in (changed, same, new)] == [False] * 3


def test_login_as_grants_are_counted_rejected_and_never_listed_as_usable(
    ledger: Ledger, fake_org: FakeOrg
) -> None:
    fake_org.grant()
    bad = fake_org.grant(Granted_Via_Login_As__c=True, Login_As_User__c="support@customer.example")

    result = sync(ledger)
    again = sync(ledger)

    assert (result.rejected, again.rejected) == (1, 0)
    with ledger.sessions() as session:
        usable = [g.source_id for g in list_grants(session, now=NOW, max_duration=YEAR)]
        rejected = [
            g.source_id for g in list_grants(session, now=NOW, status="rejected", max_duration=YEAR)
        ]
    assert bad["Id"] not in usable
    assert rejected == [bad["Id"]]


def test_every_sync_event_extends_a_valid_hash_chain(ledger: Ledger, fake_org: FakeOrg) -> None:
    records = [fake_org.grant() for _ in range(5)]
    sync(ledger)
    fake_org.update(records[0]["Id"], Status__c="Revoked", Revoked_At__c=sf_time(NOW))
    fake_org.delete(records[1]["Id"])
    fake_org.grant(Id="bad")
    sync(ledger)

    with ledger.sessions() as session:
        report = verify_chain(session)
    assert report.ok, report.problem
    assert report.events == 8


def test_a_grant_that_turns_malformed_keeps_its_history_and_is_not_vanished(
    ledger: Ledger, fake_org: FakeOrg
) -> None:
    record = fake_org.grant()
    sync(ledger)
    fake_org.update(record["Id"], Access_Duration__c="2 Fortnights")

    incremental = sync(ledger)
    full = sync(ledger, full=True)

    assert (incremental.invalid, full.deleted) == (1, 0)
    grant = grant_row(ledger, record["Id"])
    assert not grant.deleted
    [invalid] = events(ledger, "invalid")
    assert invalid.grant_id == grant.id, "shown in the grant's history"
    assert events(ledger, "vanished") == []


def test_a_sync_that_can_mirror_nothing_it_fetched_is_an_error_not_a_success(
    ledger: Ledger, fake_org: FakeOrg
) -> None:
    # A non-conforming endpoint: every datetime lacks its offset.
    for _ in range(3):
        fake_org.grant(Granted_At__c="2026-05-20T10:00:00.000")

    result = sync(ledger)

    assert (result.fetched, result.inserted, result.invalid) == (3, 0, 3)
    assert result.error_kind == "nothing_mirrored"
    assert result.exit_code == 1
    assert result.error is not None
    assert "could mirror none" in result.error
    assert "without a UTC offset" in result.error
    assert ledger.sync_state("acme", "object").last_error == result.error
    # One good record among them: what could be mirrored was, and that is a success.
    fake_org.grant()
    mixed = sync(ledger)
    assert (mixed.inserted, mixed.error, mixed.exit_code) == (1, None, 0)


def test_each_event_happened_when_the_record_says_and_was_recorded_when_synced(
    ledger: Ledger, fake_org: FakeOrg
) -> None:
    """A grant seen first dates from its last change (SystemModstamp); a customer's
    revocation from Revoked_At__c, whenever the sync found it."""
    made = fake_org.grant()
    sync(ledger)
    revoked_at = NOW - timedelta(hours=5)
    changed = fake_org.update(made["Id"], Status__c="Revoked", Revoked_At__c=sf_time(revoked_at))
    extended = fake_org.grant()
    fake_org.update(extended["Id"], Expires_At__c=sf_time(NOW + timedelta(days=30)))
    sync(ledger)

    found = {(e.kind, e.source_id): e for e in events(ledger)}
    first = found[("discovered", made["Id"])]
    assert first.occurred_at == datetime.fromisoformat(made["Granted_At__c"]) < first.at == NOW
    assert found[("customer_revoked", made["Id"])].occurred_at == revoked_at
    assert changed["SystemModstamp"] != sf_time(revoked_at), "the revocation time, not the touch"
    later = found[("discovered", extended["Id"])]
    assert later.occurred_at == datetime.fromisoformat(
        fake_org.records[extended["Id"]]["SystemModstamp"]
    )
