"""The Setup Audit Trail's ``Display`` text of a Login Access action, parsed strictly.

Salesforce writes, in the English form its documentation shows::

    jane@acme.com has granted user login access through 11/1/2030 to package publisher
        FirmWorks Support (00D5e000003BCef)
    jane@acme.com has changed user login access through 11/1/2030 to package publisher …
    jane@acme.com has revoked user login access to package publisher … (00D…)

The parser anchors on the trailing ``(00D…)``, the action's verb and the ``through <date>``
part. Anything else (another language, a changed wording, a date that is not day, month and
year in numbers) is a :class:`DisplayError` that says what did not match: the row is
reported, never guessed. The date is kept as written: in which order its numbers stand is
the org's locale, which :mod:`firmgrant.salesforce.dates` reads.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from enum import StrEnum
from typing import Literal
from zoneinfo import ZoneInfo

DateOrder = Literal["MDY", "DMY", "YMD"]


class AuditAction(StrEnum):
    """The Setup Audit Trail actions the audit source reads."""

    GRANTED = "loginasgrantedtopartnerbt"  # a user granted login access to a publisher
    CHANGED = "loginasmodifiedtopartnerbt"  # a user changed the expiry of that access
    REVOKED = "loginasrevokedtopartnerbt"  # a user revoked it
    USED = "suloginaccessused"  # someone logged in using a user's Login-As access


# Only these are parsed; the "…tosfdc" actions (access for Salesforce's own support) are
# never read, so they can never be mistaken for the vendor's.
GRANT_ACTIONS = (AuditAction.GRANTED, AuditAction.CHANGED, AuditAction.REVOKED)

_VERBS = {
    AuditAction.GRANTED: "granted",
    AuditAction.CHANGED: "changed",
    AuditAction.REVOKED: "revoked",
}
_MARK = " to package publisher "
_TAIL = re.compile(
    r"(?P<name>.+) \((?P<org>00D[A-Za-z0-9]{12}(?:[A-Za-z0-9]{3})?)\)\Z",
    re.DOTALL,
)
# A short date as Salesforce's locales write one: three numbers, the year's four digits first
# or last, separated by / . or - (some locales add a space, or end in a dot: "2030. 11. 1.").
_DATE = r"\d{1,4} ?[./-] ?\d{1,2} ?[./-] ?\d{1,4}\.?"
_NUMBERS = re.compile(r"(\d{1,4}) ?[./-] ?(\d{1,2}) ?[./-] ?(\d{1,4})\.?")
# How each order reads, for messages.
READS: dict[str, str] = {"MDY": "M/D/YYYY", "DMY": "D/M/YYYY", "YMD": "YYYY-M-D"}
ORDERS: tuple[DateOrder, ...] = ("MDY", "DMY", "YMD")


class DisplayError(ValueError):
    """A Display text this parser does not recognise; the message says which part failed."""


@dataclass(frozen=True, slots=True)
class GrantDisplay:
    """What a grant action's Display says."""

    action: AuditAction
    through: str | None  # the last date of access as written (granted, changed); None if revoked
    publisher_name: str
    publisher_org_id: str  # as written: 15 characters, case-sensitive


def parse_display(action: AuditAction, text: str) -> GrantDisplay:
    """The parts of a grant action's ``Display``; :class:`DisplayError` if it has another shape.

    Names may hold anything, even the words around them: each place the text could split into
    user and publisher is tried, first to last, and the first that reads whole wins.
    """
    tails = [
        (found.start(), tail)
        for found in re.finditer(re.escape(_MARK), text)
        if (tail := _TAIL.fullmatch(text, found.end())) is not None
    ]
    if not tails:
        raise DisplayError("does not end in 'to package publisher <name> (<org id 00D…>)'")
    problem = DisplayError("unreadable")
    for at, tail in tails:
        try:
            return _read(action, text[:at], tail)
        except DisplayError as exc:
            problem = exc
    raise problem


def _read(action: AuditAction, head: str, tail: re.Match[str]) -> GrantDisplay:
    verb = _VERBS[action]
    if action == AuditAction.REVOKED:
        match = re.fullmatch(rf"(?P<user>\S.*?) has {verb} user login access", head, re.DOTALL)
        through = None
        if match is None:
            raise DisplayError(f"does not read '<user> has {verb} user login access to …'")
    else:
        match = re.fullmatch(
            rf"(?P<user>\S.*?) has {verb} user login access through (?P<date>{_DATE})",
            head,
            re.DOTALL,
        )
        if match is None:
            raise DisplayError(
                f"does not read '<user> has {verb} user login access through <date> to …' "
                "(a date of day, month and year in numbers)"
            )
        through = match["date"]
        if not date_readings(through):
            raise DisplayError(f"the date {through!r} is not a real date in any order")
    return GrantDisplay(action, through, tail["name"], tail["org"])


def date_readings(text: str) -> dict[DateOrder, date]:
    """Every order in which ``text`` is a real date (``3/12/2026``: 12 March as MDY,
    3 December as DMY); none if its year does not stand first or last in four digits."""
    match = _NUMBERS.fullmatch(text)
    if match is None:
        return {}
    first, second, third = match.groups()
    numbers = int(first), int(second), int(third)
    found: dict[DateOrder, date] = {}
    if len(first) == 4:
        _add(found, "YMD", numbers[0], numbers[1], numbers[2])
    elif len(third) == 4:
        _add(found, "MDY", numbers[2], numbers[0], numbers[1])
        _add(found, "DMY", numbers[2], numbers[1], numbers[0])
    return found


def _add(found: dict[DateOrder, date], order: DateOrder, year: int, month: int, day: int) -> None:
    with contextlib.suppress(ValueError):  # not a real date in this order
        found[order] = date(year, month, day)


def access_ends(through: date, zone: str) -> datetime:
    """When access given "through" this date is treated as ending: the start of that date in
    the granting user's zone. Salesforce shows a date without a time; the start of the day is
    the earliest it can mean, so firmgrant never counts access that may be over."""
    return datetime.combine(through, time.min, ZoneInfo(zone)).astimezone(UTC)


def same_org(org_id: str, other: str) -> bool:
    """Org Ids compared as Salesforce does: the first 15 characters, case-sensitive."""
    return org_id[:15] == other[:15]
