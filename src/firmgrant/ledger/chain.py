"""The event log's hash chain: append under the head row's lock, verify from the first row."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import orjson
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from firmgrant.ledger._bulk import insert_rows, iso_from_db, stored_and_iso, time_converter
from firmgrant.ledger.models import GENESIS_HASH, ChainHead, EventRow
from firmgrant.ledger.ranges import Reader, map_ranges, spans
from firmgrant.lifecycle import EventKind
from firmgrant.timeutil import iso_z

SYSTEM_ACTOR = "system:firmgrant"
# The columns the hash covers (``occurred_at`` where it differs from ``at``, see ``_hash``).
HASHED = ("id", "at", "kind", "grant_id", "connection", "source_id", "actor", "reason", "payload")


# One encoder, built once: json.dumps with options builds a new one per call.
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
_text = json.encoder.encode_basestring  # C, when the accelerator is there (what json uses)
# What the stdlib would refuse, orjson must refuse too (not write its own rendering).
_ORJSON = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, UTF-8 as is: one text for one value.

    For what the ledger stores (text, integers, booleans, null, lists, objects with text
    keys) orjson writes exactly ``json.dumps(value, sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)`` (tests hold it to that), much faster; what it
    refuses (an integer past 64 bits, a datetime) goes to the stdlib, which decides.
    """
    try:
        return orjson.dumps(value, option=_ORJSON).decode()
    except TypeError:  # orjson.JSONEncodeError is one
        return _canonical(value)


def _dump(value: str | int | None) -> str:
    if value is None:
        return "null"
    return _text(value) if isinstance(value, str) else str(value)


def _hash(
    prev_hash: str,
    id_: int,
    at_json: str,
    occurred_json: str | None,
    kind: str,
    grant_id: int | None,
    connection: str | None,
    source_id: str | None,
    actor: str,
    reason: str | None,
    payload: str,
) -> str:
    """``sha256(prev_hash + canonical_json(row))``, the payload inside as a JSON object.

    ``payload`` is the stored text, already ``canonical_json(payload)``, so the canonical
    row is assembled around it instead of re-encoding it (the keys below are in sorted
    order): this equals ``canonical_json({..., "payload": json.loads(payload)})``.
    The row names ``occurred_at`` only where it differs from ``at`` (``occurred_json``
    ``None`` where it does not): events recorded before the column existed happened when
    they were recorded, and their hashes stay as they were; a changed ``occurred_at`` on
    any row changes its hash.
    """
    occurred = "" if occurred_json is None else f',"occurred_at":{occurred_json}'
    canonical = (
        f'{{"actor":{_dump(actor)},"at":{at_json},'
        f'"connection":{_dump(connection)},"grant_id":{_dump(grant_id)},'
        f'"id":{id_},"kind":{_dump(kind)}{occurred},"payload":{payload},'
        f'"reason":{_dump(reason)},"source_id":{_dump(source_id)}}}'
    )
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


class NewEvent(NamedTuple):
    """An event to append. (A named tuple: the sync makes one per record it mirrors.)

    ``at`` is when it is recorded; ``occurred_at`` when it happened, if earlier (an audit
    row's ``CreatedDate``, a record's change time): ``None`` means at ``at``.
    """

    kind: EventKind
    at: datetime
    payload: dict[str, Any]
    connection: str | None = None
    source_id: str | None = None
    grant_id: int | None = None
    actor: str = SYSTEM_ACTOR
    reason: str | None = None
    occurred_at: datetime | None = None


def lock_chain_head(session: Session) -> ChainHead:
    """The head row, locked (``FOR UPDATE``) until the caller's transaction ends."""
    return session.execute(
        select(ChainHead).where(ChainHead.id == 1).with_for_update()
    ).scalar_one()


def read_chain_head(session: Session) -> tuple[int, str]:
    """The last event's id and hash, unlocked: what a reader's snapshot ends at."""
    head = session.execute(select(ChainHead).where(ChainHead.id == 1)).scalar_one()
    return head.last_event_id, head.hash


def append_events(session: Session, events: Sequence[NewEvent]) -> None:
    """Chain and insert events in the caller's transaction.

    The head row is locked (``FOR UPDATE``) until commit, so concurrent writers on
    PostgreSQL append one after the other and ids stay gap-free and in chain order.
    """
    if not events:
        return
    head = lock_chain_head(session)
    prev, last_id = head.hash, head.last_event_id
    dialect = session.get_bind().dialect.name
    to_db = time_converter(dialect)
    rows: list[tuple[Any, ...]] = []
    at: datetime | None = None
    for event in events:
        if event.at != at:  # a page's events share one time: convert it once
            at, at_json, at_db = event.at, _text(iso_z(event.at)), to_db(event.at)
        occurred = event.occurred_at
        if occurred is None or occurred == at:
            occurred_json, occurred_db = None, at_db
        else:  # the record's own time: one each (iso_z text holds no character to escape)
            occurred_db, occurred_text = stored_and_iso(occurred, dialect)
            occurred_json = f'"{occurred_text}"'

        last_id += 1
        values = (
            event.kind,
            event.grant_id,
            event.connection,
            event.source_id,
            event.actor,
            event.reason,
            canonical_json(event.payload),
        )
        hash_ = _hash(prev, last_id, at_json, occurred_json, *values)
        rows.append((last_id, at_db, *values, occurred_db, prev, hash_))
        prev = hash_
    insert_rows(session, "events", (*HASHED, "occurred_at", "prev_hash", "hash"), rows)
    head.last_event_id, head.hash = last_id, prev


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    events: int
    head_hash: str
    first_bad_id: int | None = None
    problem: str | None = None


# occurred_at only where it differs from at (the canonical row names it only then).
_CHECK_RANGE = (
    f"SELECT {', '.join(HASHED)}, NULLIF(occurred_at, at), prev_hash, hash FROM events "
    "WHERE id BETWEEN ? AND ? ORDER BY id"
)


@dataclass(frozen=True, slots=True)
class _RangeCheck:
    """One range of the log checked on its own; the caller joins ranges up."""

    count: int  # rows that fit, up to the first that does not
    first_id: int | None = None
    first_prev: str | None = None
    last_hash: str | None = None
    bad_id: int | None = None
    problem: str | None = None


def _check_range(reader: Reader, lo: int, hi: int) -> _RangeCheck:
    """Recompute the hashes of events ``lo..hi`` and their links to each other."""
    rows = reader.rows(_CHECK_RANGE, (lo, hi))
    if not rows:
        return _RangeCheck(0)
    first_id, first_prev = rows[0][0], rows[0][-2]
    prev, expected, at_seen, at_json = first_prev, first_id, None, ""
    for id_, at, *hashed, occurred, prev_hash, hash_ in rows:
        problem = None
        if id_ != expected:
            problem = f"expected event {expected} next, found {id_} (missing or inserted)"
        elif prev_hash != prev:
            problem = "prev_hash does not match the previous event (deleted or reordered rows)"
        else:
            if at != at_seen:  # events of one page share their time
                at_seen, at_json = at, _text(iso_from_db(at))
            # NULL: it happened when recorded (or a row written past firmgrant says nothing).
            occurred_json = None if occurred is None else _text(iso_from_db(occurred))
            if _hash(prev, id_, at_json, occurred_json, *hashed) != hash_:
                problem = "contents do not match the hash (edited row)"
        if problem:
            return _RangeCheck(expected - first_id, first_id, first_prev, prev, id_, problem)
        prev, expected = hash_, expected + 1
    return _RangeCheck(len(rows), first_id, first_prev, prev)


def verify_chain(session: Session, chunk: int = 5000, *, jobs: int = 1) -> ChainReport:
    """Recompute every hash from the first event; name the first row that does not fit.

    Events up to the chain head read at the start are checked (in ``jobs`` processes,
    in ranges of ``chunk`` ids); events a worker appends meanwhile are left for next time.
    """
    head = session.execute(select(ChainHead).where(ChainHead.id == 1)).scalar_one()
    head_id, head_hash = head.last_event_id, head.hash
    first = session.execute(select(func.min(EventRow.id))).scalar_one()
    prev, expected, count = GENESIS_HASH, 1, 0
    with map_ranges(
        session, _check_range, spans(min(first or 1, 1), head_id, chunk), jobs=jobs
    ) as checks:
        for check in checks:
            if check.first_id is not None and check.first_id != expected:
                problem = (
                    f"expected event {expected} next, found {check.first_id} (missing or inserted)"
                )
                return ChainReport(False, count, prev, check.first_id, problem)
            if check.first_id is not None and check.first_prev != prev:
                problem = "prev_hash does not match the previous event (deleted or reordered rows)"
                return ChainReport(False, count, prev, check.first_id, problem)
            if check.problem:
                assert check.last_hash is not None
                return ChainReport(
                    False, count + check.count, check.last_hash, check.bad_id, check.problem
                )
            if check.count:
                assert check.first_id is not None
                assert check.last_hash is not None
                prev, expected = check.last_hash, check.first_id + check.count
                count += check.count
    if count != head_id:
        problem = (
            f"the chain head says {head_id} events, the log holds {count} "
            "(rows removed from the end)"
        )
        return ChainReport(False, count, prev, head_id, problem)
    if prev != head_hash:
        problem = (
            "the chain head's hash is not the last event's (the head or the event was rewritten)"
        )
        return ChainReport(False, count, prev, head_id, problem)
    beyond = session.execute(select(func.min(EventRow.id)).where(EventRow.id > head_id)).scalar()
    if beyond is not None:
        # A worker may have appended since the start; its head moved with its events. A new
        # connection sees its commits (the session's PostgreSQL snapshot may predate them).
        with session.connection().engine.connect() as fresh:
            head_now = select(ChainHead.last_event_id).where(ChainHead.id == 1)
            now = fresh.execute(head_now).scalar_one()
        if beyond > now:
            problem = f"event {beyond} lies beyond the chain head ({now}): inserted, not chained"
            return ChainReport(False, count, prev, beyond, problem)
    return ChainReport(True, count, prev)
