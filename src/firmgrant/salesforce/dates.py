"""Reading a trail row's "through" date the way its org wrote it, and checking the reading.

Salesforce writes the date of a Login Access grant as a short date in a user's locale
(``11/1/2030``, ``1.11.2030``, ``2030/11/01``) and in nobody's time zone. Which user's
locale renders ``Display`` is not documented, so every locale that may have done it is a
candidate, in this order: the connection's setting (an operator's override), the granting
user's locale, the integration user's, the org's default; then US order.

A reading is **cross-checked**: a grant or a change is made through Setup's *Access Duration*
picklist (1 day, 3 days, 1 week, 1 month, 1 year; a year at most), so its date must fall that
long after the row's ``CreatedDate``, counted in the granting user's time zone (a day either
way for how the picklist rounds). A date that fits none of those under the first candidate's
order but exactly one date under another order is read that way, and the reading says so; a
date that fits nothing is kept as the first candidate reads it, marked ``suspect_expiry``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from firmgrant.salesforce.display import READS, DateOrder, DisplayError, date_readings

# Setup's Access Duration choices, in days; "1 month" is a calendar month (28 to 31 days).
DURATION_DAYS = (1, 3, 7, 28, 29, 30, 31, 365, 366)
DURATION_WORDS = "1 day, 3 days, 1 week, 1 month or 1 year"
# How far a date may stand from the row's day plus a duration: the picklist's rounding.
SLACK_DAYS = 1
SUSPECT = "suspect_expiry"

# Locales whose short date is not day-month-year. Salesforce's locale keys are
# language_COUNTRY (``en_US``, ``de_DE``, ``ja_JP``); the rest write day, month, year.
_MONTH_FIRST = frozenset(
    {"en_US", "es_US", "en_PH", "fil_PH", "tl_PH", "en_AS", "en_GU", "en_MP", "en_PR",
     "en_UM", "en_VI", "en_MH", "en_FM", "en_PW", "en_BZ"}
)  # fmt: skip
_YEAR_FIRST_LANGUAGES = frozenset({"ja", "zh", "ko", "hu", "lt", "mn", "sv", "eu", "ka", "kk"})
_YEAR_FIRST = frozenset({"en_CA", "fr_CA", "en_ZA", "af_ZA", "zu_ZA", "xh_ZA", "lv_LV", "fa_IR"})


def order_of_locale(locale: str | None) -> DateOrder | None:
    """The order of a Salesforce locale's short date, ``None`` for no locale."""
    if not locale:
        return None
    if locale in _MONTH_FIRST:
        return "MDY"
    if locale in _YEAR_FIRST or locale.split("_")[0] in _YEAR_FIRST_LANGUAGES:
        return "YMD"
    return "DMY"


@dataclass(frozen=True, slots=True)
class Locale:
    """How someone (or an org, by default) writes dates and where their day starts:
    Salesforce's ``TimeZoneSidKey``, ``LocaleSidKey`` and ``LanguageLocaleKey``."""

    time_zone: str | None = None
    locale: str | None = None
    language: str | None = None


def known_zone(value: object) -> str | None:
    """A time zone Python knows, else ``None`` (a Salesforce key it does not know)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return value


def user_locale(record: Mapping[str, Any]) -> Locale:
    """A ``User`` record's (or ``CreatedBy``'s) locale, zone and language."""

    def key(name: str) -> str | None:
        value = record.get(name)
        return value[:16] if isinstance(value, str) and value else None

    return Locale(
        known_zone(record.get("TimeZoneSidKey")), key("LocaleSidKey"), key("LanguageLocaleKey")
    )


@dataclass(frozen=True, slots=True)
class OrgProfile:
    """An org as Salesforce describes it (its defaults), and the user firmgrant reads it as."""

    org_id: str | None
    org_name: str | None
    defaults: Locale
    reader_id: str | None = None
    reader: Locale | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    """A date order that may be the one a row was written in, and where it was learned."""

    order: DateOrder
    source: str  # "the connection's setting", "jane@acme.com's locale de_DE", …


def candidates(
    setting: DateOrder | None, locales: Sequence[tuple[str | None, str]]
) -> list[Candidate]:
    """The orders to try, first the setting, then each ``(locale, whose)`` given, then US
    order; each order once, where it was first found."""
    found: list[Candidate] = []
    if setting is not None:
        found.append(Candidate(setting, "the connection's date_order setting"))
    for locale, whose in locales:
        order = order_of_locale(locale)
        if order is not None:
            found.append(Candidate(order, f"{whose} locale {locale}"))
    found.append(Candidate("MDY", "Salesforce's default (en_US)"))
    first: dict[str, Candidate] = {}
    for candidate in found:
        first.setdefault(candidate.order, candidate)
    return list(first.values())


@dataclass(frozen=True, slots=True)
class Reading:
    """A "through" date as read: the date, the order it was read in, and any note."""

    through: date
    order: DateOrder
    note: str | None = None

    @property
    def suspect(self) -> bool:
        return self.note is not None and self.note.startswith(SUSPECT)


def fits_a_duration(made_on: date, through: date) -> bool:
    """Whether ``through`` is one of Setup's durations after ``made_on`` (a day's slack)."""
    days = (through - made_on).days
    return any(abs(days - length) <= SLACK_DAYS for length in DURATION_DAYS)


def read_through(text: str, made_at: datetime, zone: str, tried: Sequence[Candidate]) -> Reading:
    """The date ``text`` means, for a row made at ``made_at`` by a user in ``zone``.

    A :class:`DisplayError` if ``text`` is a real date in no order at all.
    """
    readings = date_readings(text)
    if not readings:
        raise DisplayError(f"the date {text!r} is not a real date in any order")
    made_on = made_at.astimezone(ZoneInfo(zone)).date()
    first = tried[0]
    if first.order in readings and fits_a_duration(made_on, readings[first.order]):
        return Reading(readings[first.order], first.order)
    fitting = {d: o for o, d in readings.items() if fits_a_duration(made_on, d)}
    if len(fitting) == 1:
        ((through, order),) = fitting.items()
        as_first = (
            f"as {READS[first.order]} ({first.source}) it is {readings[first.order].isoformat()}, "
            f"which is no {DURATION_WORDS} after {made_on.isoformat()}"
            if first.order in readings
            else f"it is no date as {READS[first.order]} ({first.source})"
        )
        return Reading(through, order, f"read as {READS[order]}: {as_first}")
    if fitting:  # two orders fit (neither the first): the earlier candidate's, said so
        chosen = next((c for c in tried if readings.get(c.order) in fitting), None)
        order = chosen.order if chosen is not None else next(iter(fitting.values()))
        others = ", ".join(
            f"as {READS[o]} {d.isoformat()}" for d, o in fitting.items() if o != order
        )
        source = chosen.source if chosen is not None else "the first order that fits"
        return Reading(
            readings[order], order, f"read as {READS[order]} ({source}); it fits {others} too"
        )
    # Nothing fits: the first candidate that reads it at all, marked.
    chosen = next((c for c in tried if c.order in readings), None)
    order = chosen.order if chosen is not None else next(iter(readings))
    source = chosen.source if chosen is not None else "the only order it reads in"
    return Reading(
        readings[order],
        order,
        f"{SUSPECT}: {text!r} read as {READS[order]} ({source}); no reading is "
        f"{DURATION_WORDS} after {made_on.isoformat()}",
    )
