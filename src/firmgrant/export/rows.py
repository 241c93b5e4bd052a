"""Export rows: each event with the grant as it was then, formatted for one file format.

One call reads one range of event ids (in whichever process :mod:`~firmgrant.ledger.ranges`
gives it). Events that carry no snapshot of the grant (reminders, revocations) take the
grantor, org and dates from the newest snapshot before them.
"""

from __future__ import annotations

import csv
import operator
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import orjson

from firmgrant.display import FORMULA_PREFIXES
from firmgrant.ledger.eventlog import (
    earlier_snapshots,
    grant_orgs,
    iso_from_db,
    range_events,
    time_from_db,
)
from firmgrant.ledger.ranges import Reader
from firmgrant.lifecycle import EventKind, GrantStatus, SalesforceStatus
from firmgrant.timeutil import iso_z

COLUMNS = (
    "event_id",
    "occurred_at",
    "event_at",
    "kind",
    "grant_id",
    "connection",
    "org_id",
    "org_name",
    "grantor_username",
    "grantor_email",
    "grantee",
    "granted_at",
    "expires_at",
    "status_after",
    "actor",
    "reason",
    "source_id",
    "sf_modstamp",
    "prev_hash",
    "hash",
)
FORMATS = ("csv", "json", "ndjson")
# Events a range: small enough that a range's rows and text stay in the CPU's caches, large
# enough that each range's fixed cost (its queries) does not show.
CHUNK = 1000
_FORMULA_STARTS = frozenset(FORMULA_PREFIXES)
# Events without a snapshot that end a grant: replayed on its last snapshot.
_ENDING = (EventKind.REVOKED.value, EventKind.CUSTOMER_REVOKED.value, EventKind.VANISHED.value)


@dataclass(frozen=True)
class Filters:
    since: datetime | None = None
    until: datetime | None = None
    org_id: str | None = None
    connection: str | None = None

    def as_json(self) -> dict[str, str | None]:
        return {
            "since": iso_z(self.since),
            "until": iso_z(self.until),
            "org": self.org_id,
            "connection": self.connection,
        }


# What the export takes from a snapshot, in this order.
_SNAPSHOT_FIELDS = (
    "org_id", "org_name", "grantor_username", "grantor_email", "grantee", "granted_at",
    "expires_at", "modstamp", "sf_status", "deleted", "via_login_as", "revoked_at",
)  # fmt: skip
_SF_STATUS, _DELETED = _SNAPSHOT_FIELDS.index("sf_status"), _SNAPSHOT_FIELDS.index("deleted")
_REVOKED_AT = _SNAPSHOT_FIELDS.index("revoked_at")
_FOR_STATUS = _SNAPSHOT_FIELDS.index("granted_at")  # the fields _status reads start here
assert _SNAPSHOT_FIELDS[_FOR_STATUS:] == (
    "granted_at", "expires_at", "modstamp", "sf_status", "deleted", "via_login_as", "revoked_at",
)  # fmt: skip
_snapshot_fields = operator.itemgetter(*_SNAPSHOT_FIELDS)


Snapshot = list[Any]  # _SNAPSHOT_FIELDS' values


def _snapshot(payload: bytes | str | None) -> Snapshot | None:
    """The grant's fields from an event's payload, or ``None`` if it holds no snapshot."""
    if payload is None:
        return None
    grant = orjson.loads(payload).get("grant")
    if grant.__class__ is not dict or not grant.get("org_id"):  # every snapshot names its org
        return None
    try:
        return list(_snapshot_fields(grant))
    except KeyError:  # a snapshot written before a field existed
        return [grant.get(name) for name in _SNAPSHOT_FIELDS]


def _ended(grant: Snapshot | None, kind: str) -> Snapshot | None:
    """The grant after an event without a snapshot: what revocation or vanishing changed."""
    if grant is None or kind not in _ENDING:
        return grant
    grant = list(grant)
    if kind == EventKind.VANISHED:  # gone from the org without a record
        grant[_DELETED] = True
    else:  # revoked by the time of this event (and of every later one)
        grant[_SF_STATUS], grant[_REVOKED_AT] = SalesforceStatus.REVOKED.value, None
    return grant


# The words as plain text: read once per exported row.
_ACTIVE_, _EXPIRED_, _REVOKED_ = (
    GrantStatus.ACTIVE.value,
    GrantStatus.EXPIRED.value,
    GrantStatus.REVOKED.value,
)
_REJECTED_, _DELETED_ = GrantStatus.REJECTED.value, GrantStatus.DELETED.value
_SF_REVOKED, _SF_EXPIRED = SalesforceStatus.REVOKED.value, SalesforceStatus.EXPIRED.value


def _not_after(first: str, second: str) -> bool:
    """``first <= second`` for two times as ``iso_z`` writes them."""
    if len(first) == len(second) and first[10] == second[10] == "T" and first[-1] == "Z":
        return first <= second  # the same shape: text order is time order
    return datetime.fromisoformat(first) <= datetime.fromisoformat(second)


def _status(grant: Snapshot | None, at_text: str, cap_floor_text: str) -> str:
    """The grant's status just after the event that happened at ``at_text``, by
    :func:`firmgrant.lifecycle.grant_status` (with the snapshot's ``revoked_at``) with
    ``expiring`` told as ``active`` (its text twin: times stay text; ``cap_floor_text`` is
    the event's time less the vendor's cap).
    """
    if grant is None:
        return ""
    granted_at, expires_at, _, sf_status, deleted, via_login_as, revoked_at = grant[_FOR_STATUS:]
    if deleted:
        return _DELETED_
    if via_login_as:
        return _REJECTED_
    # A revocation the snapshot dates after the event (a trail row read late) had not
    # happened yet when the event did.
    if sf_status == _SF_REVOKED and (not revoked_at or _not_after(revoked_at, at_text)):
        return _REVOKED_
    if sf_status == _SF_EXPIRED:
        return _EXPIRED_
    # Times of one shape (as iso_z writes them) compare as text; others are parsed.
    if expires_at:
        if len(expires_at) == len(at_text) and expires_at[10] == "T" and expires_at[-1] == "Z":
            if expires_at <= at_text:
                return _EXPIRED_
        elif _not_after(expires_at, at_text):
            return _EXPIRED_
    if granted_at:  # the vendor's cap
        if (
            len(granted_at) == len(cap_floor_text)
            and granted_at[10] == "T"
            and granted_at[-1] == "Z"
        ):
            if granted_at <= cap_floor_text:
                return _EXPIRED_
        elif _not_after(granted_at, cap_floor_text):
            return _EXPIRED_
    return _ACTIVE_


def _snapshots_before(
    reader: Reader, grant_ids: set[int], before: int
) -> dict[int, Snapshot | None]:
    """Each grant's state as of event ``before``: its newest snapshot, and what ended it since
    (revocations, vanishing: events without a snapshot, replayed on top of it)."""
    found: dict[int, Snapshot | None] = {}
    for grant_id, kind, extracted in earlier_snapshots(reader, list(grant_ids), before, _ENDING):
        found[grant_id] = _snapshot(extracted) or _ended(found.get(grant_id), kind)
    return found


def _cap_floor(at: str | datetime, at_text: str, cap: timedelta, dates: dict[str, str]) -> str:
    """The event time less the vendor's cap, as ``iso_z`` text. Each event of a long log may
    have its own time: a cap of whole days comes off the date alone (``dates`` keeps one
    answer per day)."""
    if cap.seconds or cap.microseconds:
        return iso_z(time_from_db(at) - cap)
    day = at_text[:10]
    earlier = dates.get(day)
    if earlier is None:
        earlier = dates[day] = (date.fromisoformat(day) - cap).isoformat()
    return earlier + at_text[10:]


def rows(
    reader: Reader, lo: int, hi: int, filters: Filters, cap: timedelta, *, text: bool = False
) -> list[tuple[Any, ...]]:
    """Export rows of events ``lo..hi``, values in ``COLUMNS`` order: as stored, or with
    ``text`` ids as text and ``""`` for null (what a CSV cell holds)."""
    events = range_events(
        reader,
        lo,
        hi,
        since=filters.since,
        until=filters.until,
        org_id=filters.org_id,
        connection=filters.connection,
    )
    if not events:
        return []
    snapshots = [_snapshot(event[9]) for event in events]
    # A grant needs its state from before the range only if its first event here has no
    # snapshot; later events of a grant build on the range's own.
    first: dict[int | None, Snapshot | None] = {}
    for event, snapshot in zip(events, snapshots, strict=True):
        first.setdefault(event[4], snapshot)
    missing = {grant for grant, snapshot in first.items() if snapshot is None and grant}
    # Only this range's grants are held: memory stays flat.
    known = _snapshots_before(reader, missing, events[0][0])
    orgs = grant_orgs(reader, [grant for grant in missing if known.get(grant) is None])
    unknown = [None] * 7
    blank = "" if text else None
    out = []
    at_seen, at_text = None, ""
    occurred_seen, occurred_text, floor_text = None, "", ""
    floors: dict[str, str] = {}
    for event, grant in zip(events, snapshots, strict=True):
        id_, at, occurred, kind, grant_id, connection, source_id, actor, reason, _, prev, hash_ = (
            event
        )
        if grant_id is not None:
            if grant is None:
                grant = _ended(known.get(grant_id), kind)
            known[grant_id] = grant
        if at != at_seen:  # a page's events share their time
            at_seen, at_text = at, iso_from_db(at)
        happened = at if occurred is None else occurred  # None: it happened when recorded
        if happened != occurred_seen:  # a page's events mostly share this one too
            occurred_seen = happened
            occurred_text = at_text if occurred is None else iso_from_db(occurred)
            earlier = floors.get(occurred_text[:10])  # filled by _cap_floor for a whole-day cap
            if earlier is not None:
                floor_text = earlier + occurred_text[10:]
            else:
                floor_text = _cap_floor(happened, occurred_text, cap, floors)
        fields = grant[:8] if grant is not None else [orgs.get(grant_id), *unknown]
        org, name, username, email, grantee, granted, expires, modstamp = (
            fields
            if blank is None or None not in fields
            else [blank if value is None else value for value in fields]
        )
        out.append(
            (
                str(id_) if text else id_, occurred_text, at_text, kind,
                blank if grant_id is None else str(grant_id) if text else grant_id,
                blank if connection is None else connection, org, name, username, email,
                grantee, granted, expires, _status(grant, occurred_text, floor_text), actor,
                blank if reason is None else reason, blank if source_id is None else source_id,
                modstamp, prev, hash_,
            )
        )  # fmt: skip
    return out


@dataclass(frozen=True, slots=True)
class Piece:
    """One range of the file, written by whichever process read it."""

    data: bytes
    rows: int
    first: dict[str, Any] | None
    last: dict[str, Any] | None


def _edge(row: tuple[Any, ...]) -> dict[str, Any]:
    return {"event_id": int(row[0]), "occurred_at": row[1], "event_at": row[2]}


_COMMAS = len(COLUMNS) - 1
# A cell that could start a formula: at a line start, or right after a comma. Patterns
# that start with one literal let the regex engine jump between candidates (testing
# every character for a class of starts costs several times as much).
_FORMULA_AFTER_COMMA = re.compile(
    ",[" + "".join(re.escape(prefix) for prefix in FORMULA_PREFIXES) + "]"
)
# In a range's text with no CR, whose only LFs end lines, a cell starts with neither
# (",\n" there is an empty last cell).
_TEXT_STARTS = "[" + "".join(re.escape(p) for p in FORMULA_PREFIXES if p not in "\r\n") + "]"
_TEXT_FORMULA_AFTER_COMMA = re.compile(f",({_TEXT_STARTS})")
_TEXT_FORMULA_AT_LINE_START = re.compile(f"\n({_TEXT_STARTS})")


def _plain(line: str) -> bool:
    """No field needs quoting or neutralising (RFC 4180, OWASP)."""
    return not (
        line.count(",") != _COMMAS
        or line[:1] in _FORMULA_STARTS
        or '"' in line
        or "\r" in line
        or "\n" in line
        or _FORMULA_AFTER_COMMA.search(line)
    )


def _csv_text(found: list[tuple[Any, ...]]) -> str:
    """The rows (as ``rows(text=True)`` gives them) as CSV lines, each ending in CRLF
    (RFC 4180); every cell that could start a formula is neutralised with a ``'`` (OWASP).

    Lines are joined cells, checked and neutralised as one text; csv.writer writes them
    only in a range where some cell needs quoting.
    """
    try:  # joining text cells is cheaper than formatting them
        lines = [",".join(row) for row in found]
    except TypeError:  # a snapshot that holds a number
        lines = [",".join(map(str, row)) for row in found]
    text = "\n".join(lines)
    if (
        text.count("\n") == len(lines) - 1
        and text.count(",") == _COMMAS * len(lines)
        and '"' not in text
        and "\r" not in text
    ):
        # Each comma ends a cell and each "\n" a line, and no cell needs quoting: the
        # formula starts are neutralised in the whole range's text at once.
        text = _TEXT_FORMULA_AFTER_COMMA.sub(",'\\1", text)
        text = _TEXT_FORMULA_AT_LINE_START.sub("\n'\\1", text)
        if text[:1] in _FORMULA_STARTS:
            text = "'" + text
        return text.replace("\n", "\r\n") + "\r\n" if lines else ""
    written: list[str] = []
    careful = csv.writer(_Lines(written), lineterminator="\r\n")
    starts = _FORMULA_STARTS
    for line, row in zip(lines, found, strict=True):
        if _plain(line):
            written.append(line + "\r\n")
        else:  # quoted where needed by csv.writer, neutralised as above
            cells = [str(value) for value in row]
            careful.writerow(["'" + cell if cell[:1] in starts else cell for cell in cells])
    return "".join(written)


class _Lines:
    def __init__(self, lines: list[str]) -> None:
        self.write = lines.append


def read_piece(
    reader: Reader, lo: int, hi: int, filters: Filters, fmt: str, cap: timedelta
) -> Piece:
    if fmt == "csv":
        found = rows(reader, lo, hi, filters, cap, text=True)
        data = _csv_text(found).encode()
    else:
        found = rows(reader, lo, hi, filters, cap)
        lines = [orjson.dumps(dict(zip(COLUMNS, row, strict=True))) for row in found]
        data = (b"," if fmt == "json" else b"").join(
            b"\n" + line if fmt == "json" else line + b"\n" for line in lines
        )
    if not found:
        return Piece(b"", 0, None, None)
    return Piece(data, len(found), _edge(found[0]), _edge(found[-1]))


__all__ = ["CHUNK", "COLUMNS", "FORMATS", "Filters", "read_piece", "rows"]
