"""The rules as a support lead would state them, one case each."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from firmgrant.policy import (
    CAPPED,
    EXPIRED,
    LOGIN_AS,
    GrantFacts,
    reminder_due,
    reminder_schedule,
    retry_delay,
    revocation_needed,
)

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
YEAR = timedelta(days=365)
OFFSETS = (timedelta(days=7), timedelta(days=1), timedelta(hours=1))


def grant(days: float, **changes: object) -> GrantFacts:
    values: dict[str, object] = {
        "granted_at": T0,
        "expires_at": T0 + timedelta(days=days),
        "via_login_as": False,
        "sf_status": "Active",
        "deleted": False,
    }
    values.update(changes)
    return GrantFacts(**values)  # type: ignore[arg-type]


def test_login_as_grant_is_revoked_at_once_whatever_its_expiry() -> None:
    verdict = revocation_needed(grant(30, via_login_as=True), T0, YEAR)
    assert verdict is not None
    assert verdict.cause == LOGIN_AS
    assert "logged in as another user" in verdict.reason


def test_grant_is_revoked_at_expiry_not_before() -> None:
    week = grant(7)
    assert revocation_needed(week, T0 + timedelta(days=7) - timedelta(seconds=1), YEAR) is None
    verdict = revocation_needed(week, T0 + timedelta(days=7), YEAR)
    assert verdict is not None
    assert verdict.cause == EXPIRED


def test_grant_longer_than_the_cap_is_revoked_at_the_cap() -> None:
    cap = timedelta(days=30)
    long_grant = grant(365)
    assert revocation_needed(long_grant, T0 + timedelta(days=29), cap) is None
    verdict = revocation_needed(long_grant, T0 + timedelta(days=30), cap)
    assert verdict is not None
    assert verdict.cause == CAPPED
    assert "30d" in verdict.reason


def test_grant_ended_in_salesforce_needs_nothing() -> None:
    late = T0 + timedelta(days=40)
    assert revocation_needed(grant(7, sf_status="Revoked"), late, YEAR) is None
    assert revocation_needed(grant(7, deleted=True), late, YEAR) is None
    assert revocation_needed(grant(7, sf_status="Expired", via_login_as=True), late, YEAR) is None


def test_each_offset_is_due_at_expiry_minus_offset() -> None:
    schedule = reminder_schedule(grant(30), OFFSETS, YEAR)
    ends = T0 + timedelta(days=30)
    assert schedule == [(o, ends - o) for o in OFFSETS]


def test_offset_due_before_the_grant_was_made_is_skipped() -> None:
    schedule = reminder_schedule(grant(1), OFFSETS, YEAR)
    assert [offset for offset, _ in schedule] == [timedelta(hours=1)]


def test_after_downtime_only_the_nearest_passed_reminder_is_sent() -> None:
    ends = T0 + timedelta(days=30)
    due = reminder_due(grant(30), OFFSETS, YEAR, ends - timedelta(minutes=30))
    assert due == (timedelta(hours=1), ends - timedelta(hours=1))


def test_no_reminder_before_the_first_is_due_nor_after_access_ended() -> None:
    ends = T0 + timedelta(days=30)
    assert reminder_due(grant(30), OFFSETS, YEAR, ends - timedelta(days=8)) is None
    assert reminder_due(grant(30), OFFSETS, YEAR, ends) is None
    assert (
        reminder_due(grant(30, via_login_as=True), OFFSETS, YEAR, ends - timedelta(hours=2)) is None
    )


def test_reminders_follow_the_cap() -> None:
    cap = timedelta(days=10)
    due = reminder_due(grant(365), OFFSETS, cap, T0 + timedelta(days=9, hours=1))
    assert due == (timedelta(days=1), T0 + timedelta(days=9))


def test_retry_backoff_doubles_up_to_the_ceiling() -> None:
    first, ceiling = timedelta(minutes=1), timedelta(minutes=10)
    delays = [retry_delay(n, first, ceiling) for n in range(1, 7)]
    assert delays == [timedelta(minutes=m) for m in (1, 2, 4, 8, 10, 10)]
