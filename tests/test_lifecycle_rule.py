"""One status rule: lifecycle.grant_status, its SQL twin and the export's text twin agree.

Property-based: random grants, times and caps, with boundaries made likely (an expiry equal
to now, a cap equal to the grant's length, times with and without a fraction of a second).
The SQL twin is checked on every configured ledger (SQLite and PostgreSQL).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from firmgrant.export.rows import _cap_floor, _status
from firmgrant.ledger import Ledger
from firmgrant.ledger.models import GrantRow
from firmgrant.ledger.queries import ends_after, status_expression
from firmgrant.lifecycle import (
    USABLE,
    GrantStatus,
    SalesforceStatus,
    ends_at,
    grant_status,
    lasts_seconds,
    outlasts_cap,
)
from firmgrant.timeutil import iso_z

BASE = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
# Durations that make boundaries meet: a grant's length equal to the cap, an expiry at now.
LENGTHS = [HOUR, DAY, 3 * DAY, 7 * DAY, 30 * DAY, 90 * DAY, 365 * DAY]
CAPS = [HOUR, DAY, 36 * HOUR, 30 * DAY, 90 * DAY, 365 * DAY, 366 * DAY]
WINDOWS = [timedelta(minutes=1), HOUR, DAY, 7 * DAY]

moments = st.builds(
    lambda days, seconds, micro: BASE + timedelta(days=days, seconds=seconds, microseconds=micro),
    st.integers(-400, 400),
    st.sampled_from([0, 1, 59, 3600, 43200]),
    st.sampled_from([0, 0, 1, 500_000]),  # both spellings of a time: with and without fraction
)


@st.composite
def grants(draw: st.DrawFn) -> dict[str, object]:
    granted = draw(moments)
    return {
        "deleted": draw(st.booleans()),
        "via_login_as": draw(st.booleans()),
        "sf_status": draw(st.sampled_from(list(SalesforceStatus))).value,
        "granted_at": granted,
        "expires_at": granted + draw(st.sampled_from(LENGTHS)),
    }


@settings(max_examples=2000, deadline=None)
@given(
    facts=grants(),
    now=moments,
    cap=st.sampled_from(CAPS),
    at_expiry=st.booleans(),
    at_cap=st.booleans(),
    revoked_at=st.one_of(st.none(), moments),
)
def test_the_exports_status_after_is_the_rule_without_expiring(
    facts: dict[str, object],
    now: datetime,
    cap: timedelta,
    at_expiry: bool,
    at_cap: bool,
    revoked_at: datetime | None,
) -> None:
    """The status an event saw when it happened: a revocation dated later had not happened."""
    granted, expires = facts["granted_at"], facts["expires_at"]
    assert isinstance(granted, datetime)
    assert isinstance(expires, datetime)
    if at_expiry:
        now = expires
    elif at_cap:
        now = granted + cap
    expected = grant_status(**facts, now=now, cap=cap, revoked_at=revoked_at)  # type: ignore[arg-type]
    snapshot = [
        "00D", "Org", "u", "e", "g", iso_z(granted), iso_z(expires), "m",
        facts["sf_status"], facts["deleted"], facts["via_login_as"], iso_z(revoked_at),
    ]  # fmt: skip
    told = GrantStatus.ACTIVE if expected == GrantStatus.EXPIRING else expected
    floor = _cap_floor(now, iso_z(now), cap, {})  # now - cap, as the export reckons it
    assert floor == iso_z(now - cap)
    assert _status(snapshot, iso_z(now), floor) == told


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    batch=st.lists(grants(), min_size=1, max_size=25),
    now=moments,
    cap=st.sampled_from(CAPS),
    window=st.sampled_from(WINDOWS),
    boundary=st.sampled_from(["none", "expiry", "cap", "window"]),
)
def test_the_sql_status_is_the_rule_on_every_ledger(
    ledger: Ledger,
    batch: list[dict[str, object]],
    now: datetime,
    cap: timedelta,
    window: timedelta,
    boundary: str,
) -> None:
    first = batch[0]
    granted, expires = first["granted_at"], first["expires_at"]
    assert isinstance(granted, datetime)
    assert isinstance(expires, datetime)
    now = {
        "expiry": expires,
        "cap": granted + cap,
        "window": min(expires, granted + cap) - window,
    }.get(boundary, now)
    with ledger.transaction() as session:
        session.execute(delete(GrantRow))
        for number, facts in enumerate(batch):
            session.add(_row(number, facts))
    with ledger.sessions() as session:
        found = dict(
            session.execute(select(GrantRow.source_id, status_expression(now, window, cap))).all()
        )
        lasting = set(session.scalars(select(GrantRow.source_id).where(ends_after(now, cap))).all())
    # The dashboard's narrowing to grants that last past now: ends_at's twin, never losing
    # a usable grant.
    assert lasting == {
        f"a0B{number:015d}"
        for number, facts in enumerate(batch)
        if ends_at(facts["granted_at"], facts["expires_at"], cap) > now  # type: ignore[arg-type]
    }
    assert lasting >= {key for key, status in found.items() if status in USABLE}
    expected = {
        f"a0B{number:015d}": grant_status(
            **facts,  # type: ignore[arg-type]
            now=now,
            cap=cap,
            expiring_within=window,
        ).value
        for number, facts in enumerate(batch)
    }
    assert found == expected


def _row(number: int, facts: dict[str, object]) -> GrantRow:
    return GrantRow(
        connection="c",
        source_id=f"a0B{number:015d}",
        org_id="00D000000000001",
        grantee="FirmWorks Support",
        sf_status=facts["sf_status"],
        deleted=facts["deleted"],
        via_login_as=facts["via_login_as"],
        granted_at=facts["granted_at"],
        expires_at=facts["expires_at"],
        lasts_seconds=lasts_seconds(facts["granted_at"], facts["expires_at"]),  # type: ignore[arg-type]
        modstamp=BASE,
        first_seen_at=BASE,
        updated_at=BASE,
    )


@pytest.mark.parametrize(
    ("length", "ago", "expected"),
    [
        (90 * DAY, 31 * DAY, GrantStatus.EXPIRED),  # past a 30-day cap, though Salesforce says 90
        (90 * DAY, 29 * DAY + 12 * HOUR, GrantStatus.EXPIRING),  # the cap ends it in 12 h
        (90 * DAY, 10 * DAY, GrantStatus.ACTIVE),
        (30 * DAY, 30 * DAY, GrantStatus.EXPIRED),  # the cap equal to its length, at its end
    ],
)
def test_the_cap_ends_a_grant_early(length: timedelta, ago: timedelta, expected: str) -> None:
    status = grant_status(
        deleted=False,
        via_login_as=False,
        sf_status="Active",
        granted_at=BASE - ago,
        expires_at=BASE - ago + length,
        now=BASE,
        cap=30 * DAY,
    )
    assert status == expected


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    batch=st.lists(grants(), min_size=2, max_size=20),
    now=moments,
    cap=st.sampled_from(CAPS),
)
def test_every_screen_shows_sorts_and_filters_on_one_end(
    ledger: Ledger, batch: list[dict[str, object]], now: datetime, cap: timedelta
) -> None:
    """Capped and uncapped grants: the dashboard's list, `firmgrant grants` and the shown
    end all follow lifecycle.ends_at (the SQL order is its twin)."""
    from firmgrant.ledger.dashboard import GrantFilter, grant_page
    from firmgrant.ledger.queries import list_grants
    from firmgrant.ledger.queries import outlasts_cap as sql_outlasts

    with ledger.transaction() as session:
        session.execute(delete(GrantRow))
        for number, facts in enumerate(batch):
            session.add(_row(number, facts))
    expected = sorted(
        (
            (ends_at(f["granted_at"], f["expires_at"], cap), f"a0B{n:015d}")  # type: ignore[arg-type]
            for n, f in enumerate(batch)
        ),
        key=lambda pair: (pair[0], int(pair[1][3:])),
    )
    with ledger.sessions() as session:
        listed = list(list_grants(session, now=now, status="all", max_duration=cap))
        shown, _ = grant_page(
            session, GrantFilter(status="all"), now=now, window=DAY, max_duration=cap,
            limit=100, offset=0,
        )  # fmt: skip
        second, _ = grant_page(
            session, GrantFilter(status="all"), now=now, window=DAY, max_duration=cap,
            limit=3, offset=2,
        )  # fmt: skip
        latest, _ = grant_page(
            session, GrantFilter(status="all", descending=True), now=now, window=DAY,
            max_duration=cap, limit=100, offset=0,
        )  # fmt: skip
        outlasting = set(
            session.execute(select(GrantRow.source_id).where(sql_outlasts(cap))).scalars()
        )
    by_cli = [(g.ends_at, g.source_id) for g in listed]
    assert by_cli == expected
    # The twins: the cap ends a grant early in SQL exactly when it does in Python.
    assert (
        outlasting
        == {
            f"a0B{n:015d}"
            for n, f in enumerate(batch)
            if outlasts_cap(lasts_seconds(f["granted_at"], f["expires_at"]), cap)  # type: ignore[arg-type]
        }
        == {
            f"a0B{n:015d}"
            for n, f in enumerate(batch)
            if ends_at(f["granted_at"], f["expires_at"], cap) < f["expires_at"]  # type: ignore[arg-type,operator]
        }
    )
    assert [(g.ends_at, g.source_id) for g in shown] == expected
    assert [(g.ends_at, g.source_id) for g in second] == expected[2:5]  # a later page
    assert [(g.ends_at, g.source_id) for g in latest] == sorted(
        expected, key=lambda pair: (pair[0], int(pair[1][3:])), reverse=True
    )
