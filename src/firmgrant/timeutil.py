"""Timezone-aware UTC time: parsing Salesforce's formats, durations and ISO output."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import overload

from firmgrant.errors import DurationError

Clock = Callable[[], datetime]

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Times are written field by field from lookups: an aware isoformat() writes an offset we
# would cut off again, and format specs cost more than lookups; the sync writes several
# times a record. Tests hold both spellings to isoformat().
_TWO_DIGITS = tuple(f"{i:02d}" for i in range(100))


def utc_seconds_text(value: datetime, separator: str) -> str:
    """``YYYY-MM-DD<separator>HH:MM:SS`` of a datetime already in UTC."""
    year = value.year
    return (
        f"{year if year >= 1000 else f'{year:04d}'}-{_TWO_DIGITS[value.month]}"
        f"-{_TWO_DIGITS[value.day]}{separator}{_TWO_DIGITS[value.hour]}"
        f":{_TWO_DIGITS[value.minute]}:{_TWO_DIGITS[value.second]}"
    )


def microseconds_text(value: datetime) -> str:
    """The six fraction digits (``068000``)."""
    return str(1_000_000 + value.microsecond)[1:]


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_sf_datetime(value: str) -> datetime:
    """Parse a Salesforce datetime such as ``2026-05-20T20:49:32.000+0000``.

    A value without an offset is refused rather than guessed: Salesforce always sends one.
    The ValueError says which of the two is wrong (it completes "<field> is …").
    """
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is not None:
            return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError(f"not a datetime: {value[:40]!r}") from None
    raise ValueError(f"a datetime without a UTC offset: {value[:40]!r}")


@overload
def iso_z(value: datetime) -> str: ...
@overload
def iso_z(value: None) -> None: ...
@overload
def iso_z(value: datetime | None) -> str | None: ...
def iso_z(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z`` (what the JSON outputs promise)."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    if value.microsecond:
        return f"{utc_seconds_text(value, 'T')}.{microseconds_text(value)}Z"
    return f"{utc_seconds_text(value, 'T')}Z"


@dataclass(frozen=True, slots=True)
class DurationRange:
    """The durations one setting or argument accepts, inclusive at both ends."""

    least: timedelta
    most: timedelta

    def describe(self) -> str:
        return f"from {format_duration(self.least)} to {format_duration(self.most)}"

    def check(self, value: timedelta) -> timedelta:
        """``value`` if it lies in the range, else a DurationError saying the range."""
        if not self.least <= value <= self.most:
            raise DurationError(f"{format_duration(value)} is out of range: {self.describe()}")
        return value


# Nothing firmgrant measures needs more: a Login Access grant lasts a year at most, and an
# export's age reaches back a century. Each keeps `now ± duration` inside datetime's range.
ANY_DURATION = DurationRange(timedelta(seconds=1), timedelta(days=36500))


def parse_duration(text: str, allowed: DurationRange = ANY_DURATION) -> timedelta:
    """``90s``, ``15m``, ``24h``, ``7d``, ``2w`` → timedelta within ``allowed``.

    Anything else, or a duration outside the range, is a :class:`DurationError`.
    """
    match = _DURATION.match(text)
    if not match:
        raise DurationError(f"{text!r} is not a duration like 30m, 24h or 7d")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
    if seconds > ANY_DURATION.most.total_seconds():  # before timedelta() overflows on it
        raise DurationError(f"{text.strip()} is out of range: {allowed.describe()}")
    return allowed.check(timedelta(seconds=seconds))


def format_duration(delta: timedelta) -> str:
    """The inverse of :func:`parse_duration` for whole units (``timedelta(days=7)`` → ``7d``)."""
    seconds = int(delta.total_seconds())
    for unit in ("w", "d", "h", "m"):
        size = _UNIT_SECONDS[unit]
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
