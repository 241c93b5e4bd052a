"""A trail row's "through" date, read the way its org wrote it and checked against Setup's
Access Duration choices (1 day, 3 days, 1 week, 1 month, 1 year) after the row's time."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmgrant.salesforce.dates import (
    SUSPECT,
    Candidate,
    candidates,
    fits_a_duration,
    order_of_locale,
    read_through,
)
from firmgrant.salesforce.display import DateOrder, DisplayError

MADE = datetime(2026, 11, 30, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("locale", "order"),
    [
        ("en_US", "MDY"),
        ("en_GB", "DMY"),
        ("de_DE", "DMY"),
        ("fr_FR", "DMY"),
        ("ja_JP", "YMD"),
        ("zh_CN", "YMD"),
        ("sv_SE", "YMD"),
        ("en_CA", "YMD"),
        ("es_US", "MDY"),
        (None, None),
    ],
)
def test_a_locale_says_the_order_of_its_short_date(locale: str | None, order: str | None) -> None:
    assert order_of_locale(locale) == order


def test_the_setting_comes_first_then_the_granting_user_then_the_reader_then_the_org() -> None:
    found = candidates(
        None, [("de_DE", "jane's"), ("ja_JP", "the integration user's"), ("en_US", "the org's")]
    )
    assert [(c.order, c.source) for c in found] == [
        ("DMY", "jane's locale de_DE"),
        ("YMD", "the integration user's locale ja_JP"),
        ("MDY", "the org's locale en_US"),
    ]
    assert candidates("YMD", [("de_DE", "jane's")])[0] == Candidate(
        "YMD", "the connection's date_order setting"
    )
    assert [c.order for c in candidates(None, [])] == ["MDY"], "US order when nothing is known"


def test_a_reading_that_fits_a_duration_is_taken_without_a_note() -> None:
    reading = read_through("3/12/2026", MADE, "UTC", candidates(None, [("de_DE", "jane's")]))
    assert (reading.through, reading.order, reading.note) == (date(2026, 12, 3), "DMY", None)


def test_a_wrong_order_is_corrected_when_exactly_one_other_fits_and_says_so() -> None:
    # Configured (or learned) as US order, the org writes day first: 12 March 2026 is no
    # duration after 30 November 2026; 3 December is three days.
    reading = read_through("3/12/2026", MADE, "UTC", candidates("MDY", []))
    assert (reading.through, reading.order) == (date(2026, 12, 3), "DMY")
    assert reading.note is not None
    assert not reading.suspect
    assert reading.note.startswith("read as D/M/YYYY: as M/D/YYYY (the connection's date_order")
    assert "2026-03-12" in reading.note


def test_a_date_that_fits_no_duration_is_kept_as_read_and_marked_suspect() -> None:
    reading = read_through("6/6/2027", MADE, "UTC", candidates("DMY", []))
    assert (reading.through, reading.order) == (date(2027, 6, 6), "DMY")
    assert reading.suspect
    assert reading.note is not None
    assert reading.note.startswith(f"{SUSPECT}: '6/6/2027'")


def test_the_day_a_row_was_made_is_the_granting_users_day() -> None:
    # 23:30 UTC on 30 November is already 1 December in Tokyo: "1 day" reads 2 December.
    late = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)
    japanese = candidates(None, [("ja_JP", "li's")])
    in_tokyo = read_through("2026/12/2", late, "Asia/Tokyo", japanese)
    assert (in_tokyo.through, in_tokyo.note) == (date(2026, 12, 2), None)
    # Five days after the UTC day is past "3 days" and short of "1 week", even with slack.
    assert read_through("2026/12/5", late, "UTC", japanese).suspect


def test_a_text_that_is_no_date_in_any_order_is_refused() -> None:
    with pytest.raises(DisplayError, match="not a real date"):
        read_through("31/31/2026", MADE, "UTC", candidates(None, []))


DURATIONS = [1, 3, 7, 30, 365]


def written(day: date, order: DateOrder) -> str:
    if order == "MDY":
        return f"{day.month}/{day.day}/{day.year}"
    if order == "DMY":
        return f"{day.day}.{day.month}.{day.year}"
    return f"{day.year}/{day.month:02d}/{day.day:02d}"


@given(
    made=st.datetimes(datetime(2020, 1, 1), datetime(2035, 1, 1), timezones=st.just(UTC)),
    days=st.sampled_from(DURATIONS),
    order=st.sampled_from(["MDY", "DMY", "YMD"]),
    learned=st.sampled_from(["MDY", "DMY", "YMD"]),
)
def test_every_grant_made_in_setup_reads_back_whatever_order_was_learned(
    made: datetime, days: int, order: DateOrder, learned: DateOrder
) -> None:
    """Written in its org's order, a Setup grant's date reads as that date whatever order was
    learned first, unless its numbers fit a duration in another order too (then that reading
    is as plausible): never suspect."""
    through = (made + timedelta(days=days)).date()
    text = written(through, order)
    reading = read_through(text, made, "UTC", candidates(learned, []))
    assert not reading.suspect
    if reading.through != through:
        assert reading.order != order
        assert fits_a_duration(made.date(), reading.through), "an equally plausible reading"
