"""The hand-written time formats equal what the standard library writes, for every shape."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

from firmgrant.ledger._bulk import sqlite_time
from firmgrant.timeutil import iso_z


def _times() -> list[datetime]:
    edges = [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1000, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        datetime(2026, 5, 20, 20, 49, 32, tzinfo=UTC),
        datetime(2026, 5, 20, 20, 49, 32, 68000, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        # Not UTC: both convert first (a Salesforce offset, a local zone).
        datetime(2026, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(2026, 12, 31, 23, 0, 0, 5, tzinfo=timezone(timedelta(hours=-8))),
        datetime(2026, 6, 1, 0, 0, 0, 999999, tzinfo=timezone(timedelta(microseconds=1))),
    ]
    rng = random.Random(7)
    start = datetime(1970, 1, 1, tzinfo=UTC)
    spread = [start + timedelta(microseconds=rng.randrange(10**17)) for _ in range(2000)]
    whole = [t.replace(microsecond=0) for t in spread[:500]]
    return edges + spread + whole


def test_iso_z_is_isoformat_in_utc_with_z() -> None:
    for value in _times():
        assert iso_z(value) == value.astimezone(UTC).isoformat()[:-6] + "Z", value


def test_sqlite_time_is_fixed_width_utc_text_that_sorts_like_the_time() -> None:
    times = _times()
    for value in times:
        expected = value.astimezone(UTC).isoformat(sep=" ", timespec="microseconds")[:26]
        assert sqlite_time(value) == expected, value
    assert sorted(times, key=sqlite_time) == sorted(times)


def test_a_time_formatted_once_for_both_stores_and_reads_as_each_alone() -> None:
    """The sync writes an event's own time as the ledger stores it and as the chain hashes
    it from one formatting: the two must be what each writer gives on its own."""
    from firmgrant.ledger._bulk import stored_and_iso

    for value in _times():
        assert stored_and_iso(value, "sqlite") == (sqlite_time(value), iso_z(value)), value
        assert stored_and_iso(value, "postgresql")[1] == iso_z(value)


def test_names_fold_to_what_anyone_would_type() -> None:
    from firmgrant.grant import folded

    assert folded("Ørsted Vind A/S") == "orsted vind a/s"
    assert folded("ŁÓDŹ Logistics") == folded("łódź logistics") == "lodz logistics"
    assert folded("Société Générale d'Études") == "societe generale d'etudes"
    assert folded("Bäckerei Müller GmbH, Straße") == "backerei muller gmbh, strasse"
    assert folded("Nakamura 株式会社") == "nakamura 株式会社"
    assert folded("ZOË") == folded("zoe") == "zoe"
