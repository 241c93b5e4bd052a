"""Timezone-aware UTC time: parsing Salesforce's formats, durations and ISO output."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import overload

Clock = Callable[[], datetime]

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


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
    return value.isoformat()[:-6] + "Z"


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
