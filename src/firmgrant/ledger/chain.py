"""The event log's hash chain: append under the head row's lock, verify from the first row."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from firmgrant.ledger._bulk import insert_rows, time_converter
from firmgrant.ledger.models import GENESIS_HASH, ChainHead, EventRow
from firmgrant.timeutil import iso_z

SYSTEM_ACTOR = "system:firmgrant"
# The columns the hash covers.
HASHED = ("id", "at", "kind", "grant_id", "connection", "source_id", "actor", "reason", "payload")


# One encoder, built once: json.dumps with options builds a new one per call.
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
_text = json.encoder.encode_basestring  # C, when the accelerator is there (what json uses)


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, UTF-8 as is: one text for one value."""
    return _canonical(value)


def _dump(value: str | int | None) -> str:
    if value is None:
        return "null"
    return _text(value) if isinstance(value, str) else str(value)


def event_hash(prev_hash: str, row: dict[str, Any]) -> str:
    """``sha256(prev_hash + canonical_json(row))``, the payload inside as a JSON object.

    ``row["payload"]`` is the stored text, already ``canonical_json(payload)``, so the
    canonical row is assembled around it instead of re-encoding it (the keys below are in
    sorted order). This equals ``canonical_json({..., "payload": json.loads(payload)})``.
    """
    return _hash(prev_hash, row, _text(iso_z(row["at"])))


def _hash(prev_hash: str, row: dict[str, Any], at_json: str) -> str:
    canonical = (
        f'{{"actor":{_dump(row["actor"])},"at":{at_json},'
        f'"connection":{_dump(row["connection"])},"grant_id":{_dump(row["grant_id"])},'
        f'"id":{row["id"]},"kind":{_dump(row["kind"])},"payload":{row["payload"]},'
        f'"reason":{_dump(row["reason"])},"source_id":{_dump(row["source_id"])}}}'
    )
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class NewEvent:
    kind: str
    at: datetime
    payload: dict[str, Any]
    connection: str | None = None
    source_id: str | None = None
    grant_id: int | None = None
    actor: str = SYSTEM_ACTOR
    reason: str | None = None


def append_events(session: Session, events: Sequence[NewEvent]) -> None:
    """Chain and insert events in the caller's transaction.

    The head row is locked (``FOR UPDATE``) until commit, so concurrent writers on
    PostgreSQL append one after the other and ids stay gap-free and in chain order.
    """
    if not events:
        return
    head = session.execute(
        select(ChainHead).where(ChainHead.id == 1).with_for_update()
    ).scalar_one()
    prev, last_id = head.hash, head.last_event_id
    to_db = time_converter(session)
    rows: list[tuple[Any, ...]] = []
    at: datetime | None = None
    for event in events:
        if event.at != at:  # a page's events share one time: convert it once
            at, at_json, at_db = event.at, _text(iso_z(event.at)), to_db(event.at)
        last_id += 1
        row = {
            "id": last_id,
            "at": event.at,
            "kind": event.kind,
            "grant_id": event.grant_id,
            "connection": event.connection,
            "source_id": event.source_id,
            "actor": event.actor,
            "reason": event.reason,
            "payload": _canonical(event.payload),
        }
        hash_ = _hash(prev, row, at_json)
        row["at"] = at_db
        rows.append((*row.values(), prev, hash_))
        prev = hash_
    insert_rows(session, "events", (*HASHED, "prev_hash", "hash"), rows)
    head.last_event_id, head.hash = last_id, prev


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    events: int
    head_hash: str
    first_bad_id: int | None = None
    problem: str | None = None


def _rows(session: Session, chunk: int) -> Iterator[Any]:
    """Every event as a plain row (no ORM objects: verify reads millions), in id order."""
    columns = [getattr(EventRow, key) for key in (*HASHED, "prev_hash", "hash")]
    last = 0
    while True:
        batch = session.execute(
            select(*columns).where(EventRow.id > last).order_by(EventRow.id).limit(chunk)
        ).all()
        if not batch:
            return
        yield from batch
        last = batch[-1].id


def verify_chain(session: Session, chunk: int = 5000) -> ChainReport:
    """Recompute every hash from the first event; name the first row that does not fit."""
    prev, expected_id, count = GENESIS_HASH, 1, 0
    at_json, at_seen = "", None
    for event in _rows(session, chunk):
        if event.id != expected_id:
            problem = f"expected event {expected_id} next, found {event.id} (missing or inserted)"
            return ChainReport(False, count, prev, event.id, problem)
        if event.prev_hash != prev:
            problem = "prev_hash does not match the previous event (deleted or reordered rows)"
            return ChainReport(False, count, prev, event.id, problem)
        if event.at != at_seen:  # events of one page share their time
            at_seen, at_json = event.at, _text(iso_z(event.at))
        if _hash(prev, event._mapping, at_json) != event.hash:
            problem = "contents do not match the hash (edited row)"
            return ChainReport(False, count, prev, event.id, problem)
        prev, expected_id, count = event.hash, expected_id + 1, count + 1
    head = session.execute(select(ChainHead).where(ChainHead.id == 1)).scalar_one()
    if head.last_event_id != count or head.hash != prev:
        return ChainReport(
            False,
            count,
            prev,
            head.last_event_id,
            f"the chain head says {head.last_event_id} events, the log holds {count} "
            "(rows removed from the end)",
        )
    return ChainReport(True, count, prev)
