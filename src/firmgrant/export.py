"""The compliance export: every event, oldest first, with the grant as it was at the time.

Rows are read in keyset chunks (``id > last ORDER BY id LIMIT n``), so memory stays flat
whatever the log's size. Events that carry no snapshot of the grant (reminders, revocations)
take the grantor, org and dates from the newest snapshot before them. The file's SHA-256 is
computed while it is written and goes, with the chain's head hash, into
``FILE.manifest.json``: keep that head hash somewhere the database's writers cannot reach.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from firmgrant import __version__
from firmgrant.display import FORMULA_PREFIXES, safe_cell
from firmgrant.ledger.models import ChainHead, EventRow, GrantRow
from firmgrant.timeutil import iso_z, parse_duration

COLUMNS = (
    "event_id",
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
CHUNK = 5000
_FORMULA_STARTS = frozenset(FORMULA_PREFIXES)
_REVOKING = ("revoked", "customer_revoked")
# Canonical JSON sorts keys, so a payload holding a snapshot starts with one of these.
_SNAPSHOT_PREFIXES = ('{"changes":', '{"grant":')


def parse_when(text: str, now: datetime) -> datetime:
    """``2026-11-01`` (midnight UTC), a full ISO time, or ``30d`` / ``12h`` ago."""
    if re.fullmatch(r"\d+\s*[smhdw]", text.strip(), re.IGNORECASE):
        return now - parse_duration(text)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a date (2026-11-01), an ISO time or an age (30d)"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


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


def _status(grant: dict[str, Any], at: datetime) -> str:
    """The grant's status after the event, by the rules of ``grants`` (rejected first)."""
    if not grant:
        return ""
    if grant.get("deleted"):
        return "deleted"
    if grant.get("via_login_as"):
        return "rejected"
    if grant.get("sf_status") == "Revoked":
        return "revoked"
    expires = grant.get("expires_at")
    if grant.get("sf_status") == "Expired" or (
        expires and datetime.fromisoformat(expires.replace("Z", "+00:00")) <= at
    ):
        return "expired"
    return "active"


def _advance(grant: dict[str, Any] | None, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The grant after this event: its own snapshot, or the last one with what it changed."""
    if "grant" in payload:
        return dict(payload["grant"])
    if grant is not None and kind in _REVOKING:
        return {**grant, "sf_status": "Revoked"}
    if grant is not None and kind == "vanished":  # gone from the org without a record
        return {**grant, "deleted": True}
    return grant or {}


def _snapshots_before(
    session: Session, grant_ids: set[int], before: int
) -> dict[int, dict[str, Any]]:
    """Each grant's state as of event ``before``: its newest snapshot, and what ended it since.

    Only the newest snapshot of each grant is decoded; events that carry none but end the
    grant (revocations, vanishing) are replayed on top of it.
    """
    if not grant_ids:
        return {}
    e = EventRow
    earlier = (e.grant_id.in_(grant_ids), e.id < before)
    newest = (
        select(func.max(e.id))
        .where(*earlier, or_(*(e.payload.startswith(p) for p in _SNAPSHOT_PREFIXES)))
        .group_by(e.grant_id)
    )
    enders = select(e.id).where(*earlier, e.kind.in_((*_REVOKING, "vanished")))
    found: dict[int, dict[str, Any]] = {}
    replay = select(e.grant_id, e.kind, e.payload).where(e.id.in_(newest.union(enders)))
    for grant_id, kind, payload in session.execute(replay.order_by(e.id)):
        if grant_id is not None:
            found[grant_id] = _advance(found.get(grant_id), kind, json.loads(payload))
    return found


def rows(session: Session, filters: Filters) -> Iterator[dict[str, Any]]:
    """Export rows, oldest first, as raw values (the hashes are over these, not over cells)."""
    e = EventRow
    query = select(
        e.id, e.at, e.kind, e.grant_id, e.connection, e.source_id, e.actor, e.reason,
        e.payload, e.prev_hash, e.hash, GrantRow.org_id,
    ).outerjoin(GrantRow, GrantRow.id == e.grant_id)  # fmt: skip
    if filters.since:
        query = query.where(e.at >= filters.since)
    if filters.until:
        query = query.where(e.at < filters.until)
    if filters.org_id:
        query = query.where(GrantRow.org_id == filters.org_id)
    if filters.connection:
        query = query.where(e.connection == filters.connection)
    last = 0
    while True:
        chunk = session.execute(query.where(e.id > last).order_by(e.id).limit(CHUNK)).all()
        if not chunk:
            return
        # Only snapshots are decoded: the rest of a payload is not exported.
        payloads = [
            json.loads(row.payload) if row.payload.startswith(_SNAPSHOT_PREFIXES) else {}
            for row in chunk
        ]
        missing = {
            row.grant_id
            for row, payload in zip(chunk, payloads, strict=True)
            if row.grant_id is not None and "grant" not in payload
        }
        # Only this chunk's grants are held: memory stays flat.
        known = _snapshots_before(session, missing, chunk[0].id)
        for row, payload in zip(chunk, payloads, strict=True):
            grant: dict[str, Any] = {}
            if row.grant_id is not None:
                grant = known[row.grant_id] = _advance(known.get(row.grant_id), row.kind, payload)
            get = grant.get
            yield {
                "event_id": row.id,
                "event_at": iso_z(row.at),
                "kind": row.kind,
                "grant_id": row.grant_id,
                "connection": row.connection,
                "org_id": get("org_id") or row.org_id,
                "org_name": get("org_name"),
                "grantor_username": get("grantor_username"),
                "grantor_email": get("grantor_email"),
                "grantee": get("grantee"),
                "granted_at": get("granted_at"),
                "expires_at": get("expires_at"),
                "status_after": _status(grant, row.at),
                "actor": row.actor,
                "reason": row.reason,
                "source_id": row.source_id,
                "sf_modstamp": get("modstamp"),
                "prev_hash": row.prev_hash,
                "hash": row.hash,
            }
        last = chunk[-1].id


def _cell(value: Any) -> Any:
    """What a CSV cell holds: text that could start a formula is neutralised (OWASP)."""
    if value.__class__ is str:
        return "'" + value if value[:1] in _FORMULA_STARTS and value else value
    return "" if value is None else safe_cell(value)


class _HashingWriter:
    """Text out, SHA-256 and byte count of exactly what was written."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out, self.sha256, self.bytes = out, hashlib.sha256(), 0

    def write(self, text: str) -> int:
        data = text.encode("utf-8")
        self.sha256.update(data)
        self.bytes += len(data)
        self.out.write(data)
        return len(text)


@dataclass(frozen=True)
class ExportResult:
    rows: int
    sha256: str
    first: dict[str, Any] | None
    last: dict[str, Any] | None


def write(
    session: Session,
    filters: Filters,
    fmt: str,
    out: IO[bytes],
    progress: Callable[[int], None] = lambda n: None,
) -> ExportResult:
    sink = _HashingWriter(out)
    count, first, last = 0, None, None
    writer = csv.writer(sink, lineterminator="\r\n")  # RFC 4180
    if fmt == "csv":
        writer.writerow(COLUMNS)
    elif fmt == "json":
        sink.write("[")
    for row in rows(session, filters):
        if fmt == "csv":
            writer.writerow([_cell(value) for value in row.values()])
        elif fmt == "json":
            sink.write(("," if count else "") + "\n" + json.dumps(row, ensure_ascii=False))
        else:
            sink.write(json.dumps(row, ensure_ascii=False) + "\n")
        count += 1
        first = first or {"event_id": row["event_id"], "event_at": row["event_at"]}
        last = row
        if count % 1000 == 0:
            progress(1000)
    progress(count % 1000)
    if fmt == "json":
        sink.write("\n]\n" if count else "]\n")
    tail = {"event_id": last["event_id"], "event_at": last["event_at"]} if last else None
    return ExportResult(count, sink.sha256.hexdigest(), first, tail)


def manifest(
    session: Session, filters: Filters, fmt: str, path: Path, result: ExportResult
) -> dict[str, Any]:
    head = session.execute(select(ChainHead).where(ChainHead.id == 1)).scalar_one()
    return {
        "file": path.name,
        "format": fmt,
        "filters": filters.as_json(),
        "rows": result.rows,
        "first_event": result.first,
        "last_event": result.last,
        "chain_head": {"event_id": head.last_event_id, "hash": head.hash},
        "sha256": result.sha256,
        "firmgrant_version": __version__,
        "generated_at": iso_z(datetime.now(UTC)),
    }


def manifest_path(path: Path) -> Path:
    return path.with_name(path.name + ".manifest.json")


def check_file(path: Path) -> str | None:
    """``None`` if the file matches its manifest, else what does not."""
    record = manifest_path(path)
    if not record.is_file():
        return f"no manifest {record.name} next to {path.name}"
    expected = json.loads(record.read_text(encoding="utf-8"))
    digest = hashlib.sha256()
    with path.open("rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected.get("sha256"):
        return (
            f"{path.name}: SHA-256 {digest.hexdigest()} differs from the manifest's "
            f"{expected.get('sha256')} (the file was changed after export)"
        )
    return None


__all__ = ["COLUMNS", "FORMATS", "Filters", "check_file", "manifest", "parse_when", "write"]
