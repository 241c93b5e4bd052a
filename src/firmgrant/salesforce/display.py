"""The Setup Audit Trail's ``Display`` text of a Login Access action, parsed strictly.

Salesforce writes, in the English form its documentation shows::

    jane@acme.com has granted user login access through 11/1/2030 to package publisher
        FirmWorks Support (00D5e000003BCef)
    jane@acme.com has changed user login access through 11/1/2030 to package publisher …
    jane@acme.com has revoked user login access to package publisher … (00D…)

The parser anchors on the trailing ``(00D…)``, the action's verb and the ``through <date>``
part. Anything else (another language, a changed wording, a date in another order) is a
:class:`DisplayError` that says what did not match: the row is reported, never guessed.
"""

from __future__ import annotations

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
_DATES: dict[str, tuple[re.Pattern[str], tuple[int, int, int], str]] = {
    # order → pattern, positions of (year, month, day) among its groups, how it reads
    "MDY": (re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})"), (3, 1, 2), "M/D/YYYY"),
    "DMY": (re.compile(r"(\d{1,2})[./](\d{1,2})[./](\d{4})"), (3, 2, 1), "D/M/YYYY"),
    "YMD": (re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})"), (1, 2, 3), "YYYY-MM-DD"),
}


class DisplayError(ValueError):
    """A Display text this parser does not recognise; the message says which part failed."""


@dataclass(frozen=True, slots=True)
class GrantDisplay:
    """What a grant action's Display says."""

    action: AuditAction
    through: date | None  # the last date of access (granted, changed); None when revoked
    publisher_name: str
    publisher_org_id: str  # as written: 15 characters, case-sensitive


def parse_display(action: AuditAction, text: str, order: DateOrder = "MDY") -> GrantDisplay:
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
            return _read(action, text[:at], tail, order)
        except DisplayError as exc:
            problem = exc
    raise problem


def _read(action: AuditAction, head: str, tail: re.Match[str], order: DateOrder) -> GrantDisplay:
    verb = _VERBS[action]
    if action == AuditAction.REVOKED:
        match = re.fullmatch(rf"(?P<user>\S.*?) has {verb} user login access", head, re.DOTALL)
        through = None
        if match is None:
            raise DisplayError(f"does not read '<user> has {verb} user login access to …'")
    else:
        match = re.fullmatch(
            rf"(?P<user>\S.*?) has {verb} user login access through (?P<date>\S+)", head, re.DOTALL
        )
        if match is None:
            raise DisplayError(
                f"does not read '<user> has {verb} user login access through <date> to …'"
            )
        through = parse_date(match["date"], order)
    return GrantDisplay(action, through, tail["name"], tail["org"])


def parse_date(text: str, order: DateOrder) -> date:
    """A Display date in the org's order (``11/1/2030`` is November 1st in ``MDY``)."""
    pattern, (y, m, d), reads = _DATES[order]
    match = pattern.fullmatch(text)
    if match is None:
        raise DisplayError(f"the date {text!r} is not {reads} (the connection's date_order)")
    try:
        return date(int(match[y]), int(match[m]), int(match[d]))
    except ValueError:
        raise DisplayError(f"the date {text!r} is not a real {reads} date") from None


def access_ends(through: date, zone: str) -> datetime:
    """When access given "through" this date is treated as ending: the start of that date in
    the org's zone (``source.time_zone``). Salesforce shows a date without a time; the start of
    the day is the earliest it can mean, so firmgrant never counts access that may be over."""
    return datetime.combine(through, time.min, ZoneInfo(zone)).astimezone(UTC)


def same_org(org_id: str, other: str) -> bool:
    """Org Ids compared as Salesforce does: the first 15 characters, case-sensitive."""
    return org_id[:15] == other[:15]
