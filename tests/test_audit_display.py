"""The Setup Audit Trail's Display text: real-shaped strings, and every awkward name and date."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmgrant.salesforce.display import (
    AuditAction,
    DisplayError,
    access_ends,
    date_readings,
    parse_display,
    same_org,
)

G, C, R = AuditAction.GRANTED, AuditAction.CHANGED, AuditAction.REVOKED
PUB = "00D5e000003BCef"


@pytest.mark.parametrize(
    ("action", "text", "order", "through", "name", "org"),
    [
        (
            G,
            f"jane@acme.com has granted user login access through 11/1/2030 to package "
            f"publisher FirmWorks Support ({PUB})",
            "MDY",
            date(2030, 11, 1),
            "FirmWorks Support",
            PUB,
        ),
        (
            C,
            f"jane@acme.com has changed user login access through 1/12/2027 to package "
            f"publisher FirmWorks Support ({PUB})",
            "MDY",
            date(2027, 1, 12),
            "FirmWorks Support",
            PUB,
        ),
        (
            R,
            f"jane@acme.com has revoked user login access to package publisher FirmWorks "
            f"Support ({PUB})",
            "MDY",
            None,
            "FirmWorks Support",
            PUB,
        ),
        (  # a name with parentheses, an ampersand, quotes and accents; an 18-character id
            G,
            "zoë o'neil@acme.com has granted user login access through 1/12/2027 to package "
            'publisher Ørsted & "Sons" (EU) Support (00D5e000003BCefEAG)',
            "DMY",
            date(2027, 12, 1),
            'Ørsted & "Sons" (EU) Support',
            "00D5e000003BCefEAG",
        ),
        (
            C,
            f"li@acme.jp has changed user login access through 2027-03-04 to package publisher "
            f"FirmWorks Support ({PUB})",
            "YMD",
            date(2027, 3, 4),
            "FirmWorks Support",
            PUB,
        ),
    ],
)
def test_real_shaped_displays(
    action: AuditAction,
    text: str,
    order: str,
    through: date | None,
    name: str,
    org: str,
) -> None:
    shown = parse_display(action, text)
    read = date_readings(shown.through).get(order) if shown.through else None  # type: ignore[call-overload]
    assert (read, shown.publisher_name, shown.publisher_org_id) == (through, name, org)


@pytest.mark.parametrize(
    ("action", "text", "order", "why"),
    [
        (  # another language
            G,
            f"jane@acme.de hat Anmeldezugriff bis 1.11.2030 für Paketherausgeber FirmWorks "
            f"Support ({PUB}) gewährt",
            "DMY",
            "does not end in",
        ),
        (  # no real date in any order
            G,
            f"jane@acme.com has granted user login access through 31/31/2030 to package "
            f"publisher FirmWorks Support ({PUB})",
            "MDY",
            "not a real date in any order",
        ),
        (  # a date in words
            G,
            f"jane@acme.com has granted user login access through Nov 1, 2030 to package "
            f"publisher FirmWorks Support ({PUB})",
            "MDY",
            "a date of day, month and year in numbers",
        ),
        (  # a changed wording
            G,
            f"jane@acme.com granted access until 11/1/2030 to package publisher FirmWorks "
            f"Support ({PUB})",
            "MDY",
            "does not read",
        ),
        (  # the verb of another action
            C,
            f"jane@acme.com has granted user login access through 11/1/2030 to package "
            f"publisher FirmWorks Support ({PUB})",
            "MDY",
            "has changed",
        ),
        (  # no through-date at all
            G,
            f"jane@acme.com has granted user login access to package publisher FirmWorks "
            f"Support ({PUB})",
            "MDY",
            "through <date>",
        ),
        (  # an org id of the wrong shape
            R,
            "jane@acme.com has revoked user login access to package publisher FirmWorks "
            "Support (005000000000001)",
            "MDY",
            "does not end in",
        ),
    ],
)
def test_other_shapes_are_refused_with_the_reason(
    action: AuditAction, text: str, order: str, why: str
) -> None:
    with pytest.raises(DisplayError, match=why.replace("(", r"\(").replace("/", "/")):
        parse_display(action, text)


names = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
    min_size=1,
    max_size=60,
).filter(lambda s: s.strip() == s and s)
id_chars = st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
org_ids = st.builds(
    lambda body, tail: "00D" + body + tail,
    st.text(id_chars, min_size=12, max_size=12),
    st.one_of(st.just(""), st.text(id_chars, min_size=3, max_size=3)),
)
orders = st.sampled_from(["MDY", "DMY", "YMD"])


def written(day: date, order: str) -> str:
    if order == "MDY":
        return f"{day.month}/{day.day}/{day.year}"
    if order == "DMY":
        return f"{day.day}/{day.month}/{day.year}"
    return day.isoformat()


@given(
    user=names,
    publisher=names,
    org=org_ids,
    day=st.dates(date(2000, 1, 1), date(2099, 12, 31)),
    order=orders,
    action=st.sampled_from([G, C]),
)
def test_every_name_id_and_date_reads_back(
    user: str, publisher: str, org: str, day: date, order: str, action: AuditAction
) -> None:
    verb = "granted" if action == G else "changed"
    text = (
        f"{user} has {verb} user login access through {written(day, order)} to package "
        f"publisher {publisher} ({org})"
    )
    shown = parse_display(action, text)
    assert shown.through is not None
    read = date_readings(shown.through)[order]  # type: ignore[index]
    assert (read, shown.publisher_name, shown.publisher_org_id) == (day, publisher, org)


@given(org=org_ids)
def test_the_vendor_is_matched_on_the_first_15_characters_case_sensitively(org: str) -> None:
    assert same_org(org, org[:15])
    assert not same_org(org, org[:14] + ("x" if org[14] != "x" else "y"))
    if org[3:15].lower() != org[3:15]:
        assert not same_org(org, org[:15].lower())


def test_access_through_a_date_ends_at_the_start_of_that_date_in_the_org_zone() -> None:
    assert access_ends(date(2030, 11, 1), "UTC") == datetime(2030, 11, 1, tzinfo=UTC)
    # Berlin is an hour ahead in November: its midnight is 23:00 UTC the day before.
    assert access_ends(date(2030, 11, 1), "Europe/Berlin") == datetime(2030, 10, 31, 23, tzinfo=UTC)
