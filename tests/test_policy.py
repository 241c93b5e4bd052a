"""The rules as a support lead would state them, one case each."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from firmgrant.lifecycle import EventKind, NoticeKind
from firmgrant.policy import (
    CAPPED,
    EXPIRED,
    LOGIN_AS,
    NEWS_WINDOW,
    GrantFacts,
    ending_notice_due,
    notice_for,
    notice_moot,
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


def test_support_is_told_of_news_only() -> None:
    fresh, now = grant(7), T0 + timedelta(hours=2)
    assert notice_for(EventKind.DISCOVERED, {}, fresh, now, YEAR) == (NoticeKind.GRANTED, T0)
    late = T0 + NEWS_WINDOW + timedelta(minutes=1)  # found after the window: not news
    assert notice_for(EventKind.DISCOVERED, {}, fresh, late, YEAR) is None
    revoked = grant(7, sf_status="Revoked")
    assert notice_for(EventKind.DISCOVERED, {}, revoked, now, YEAR) is None
    login_as = grant(7, via_login_as=True)
    assert notice_for(EventKind.REJECTED, {}, login_as, now, YEAR) == (NoticeKind.REJECTED, T0)


def test_only_a_later_expiry_is_an_extension() -> None:
    now = T0 + timedelta(days=3)
    longer = {"expires_at": ["2026-11-08T12:00:00Z", "2026-12-01T12:00:00Z"]}
    expected = (NoticeKind.EXTENDED, datetime(2026, 12, 1, 12, tzinfo=UTC))
    assert notice_for(EventKind.CHANGED, longer, grant(30), now, YEAR) == expected
    shorter = {"expires_at": ["2026-12-01T12:00:00Z", "2026-11-08T12:00:00Z"]}
    assert notice_for(EventKind.CHANGED, shorter, grant(7), now, YEAR) is None
    renamed = {"org_name": ["Acme", "Acme Corp"]}
    assert notice_for(EventKind.CHANGED, renamed, grant(7), now, YEAR) is None


def test_an_ending_notice_is_moot_once_the_grant_is_extended_or_over() -> None:
    within = timedelta(hours=1)
    week = grant(7)
    due = ending_notice_due(week, within, YEAR)
    assert due == T0 + timedelta(days=7) - within
    assert notice_moot(NoticeKind.ENDING, due, week, due, within, YEAR) is None
    extended = grant(30)
    assert notice_moot(NoticeKind.ENDING, due, extended, due, within, YEAR) == (
        "the grant was extended"
    )
    after = T0 + timedelta(days=8)
    assert notice_moot(NoticeKind.GRANTED, T0, week, after, within, YEAR) == "access already ended"
    assert (
        notice_moot(NoticeKind.REJECTED, T0, grant(7, via_login_as=True), after, within, YEAR)
        is None
    )
