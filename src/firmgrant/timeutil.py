"""Timezone-aware UTC time: parsing Salesforce's formats, durations and ISO output."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import overload

Clock = Callable[[], datetime]

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Times are written field by field from lookups: an aware datetime's isoformat() takes
# twice as long (and writes an offset we would cut off again), and format specs such as
# ``:06d`` cost more than the rest together. The sync writes four times per record twice
# over (ledger row, event snapshot); tests hold both spellings to isoformat().
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
    """
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"datetime without a UTC offset: {value!r}")
    return parsed.astimezone(UTC)


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


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``24h``, ``7d``, ``2w`` → timedelta; anything else is a ValueError."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30m, 24h or 7d")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()])


def format_duration(delta: timedelta) -> str:
    """The inverse of :func:`parse_duration` for whole units (``timedelta(days=7)`` → ``7d``)."""
    seconds = int(delta.total_seconds())
    for unit in ("w", "d", "h", "m"):
        size = _UNIT_SECONDS[unit]
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
