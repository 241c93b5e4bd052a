"""The compliance export: every event, oldest first, with the grant as it was at the time.

Events are read in ranges of ids, by one process per core
(:mod:`~firmgrant.ledger.ranges`; the rows themselves in :mod:`.rows`), and written in order,
so memory stays flat whatever the log's size. The file's SHA-256 is computed while it is
written and goes, with the chain's head hash, into ``FILE.manifest.json``: keep that head
hash somewhere the database's writers cannot reach.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from sqlalchemy.orm import Session

from firmgrant import __version__
from firmgrant.errors import DurationError
from firmgrant.export.rows import CHUNK, COLUMNS, FORMATS, Filters, read_piece
from firmgrant.ledger.chain import read_chain_head
from firmgrant.ledger.eventlog import id_bounds
from firmgrant.ledger.ranges import map_ranges, spans
from firmgrant.timeutil import format_duration, iso_z, parse_duration


def parse_when(text: str, now: datetime) -> datetime:
    """``2026-11-01`` (midnight UTC), a full ISO time, or ``30d`` / ``12h`` ago.

    Anything else is a :class:`~firmgrant.timeutil.DurationError` (a ValueError).
    """
    if re.fullmatch(r"\d+\s*[smhdw]", text.strip(), re.IGNORECASE):
        return now - parse_duration(text)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # 0001-01-01T00:00+01:00 has no UTC time
        raise DurationError(
            f"{text!r} is not a date (2026-11-01), an ISO time or an age (30d)"
        ) from None


class _HashingWriter:
    """Bytes out, and the SHA-256 of exactly what was written."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out, self.sha256 = out, hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.sha256.update(data)
        self.out.write(data)


@dataclass(frozen=True)
class ExportResult:
    rows: int
    sha256: str
    first: dict[str, Any] | None
    last: dict[str, Any] | None
    chain_head: dict[str, Any]


def write(
    session: Session,
    filters: Filters,
    fmt: str,
    out: IO[bytes],
    progress: Callable[[int, int], None] = lambda done, total: None,
    *,
    cap: timedelta,
    jobs: int = 1,
    chunk: int = CHUNK,
) -> ExportResult:
    """Write the export; ``progress(ids read, ids in all)`` after each range.

    The events are those up to the chain head read first (a worker appending meanwhile
    does not make the file disagree with its manifest), read in ranges of ``chunk`` ids
    by ``jobs`` processes and written in order.
    """
    head_id, head_hash = read_chain_head(session)
    bounds = id_bounds(session, up_to=head_id, since=filters.since, until=filters.until)
    ranges = spans(*bounds, chunk)
    total = sum(hi - lo + 1 for lo, hi in ranges)
    sink = _HashingWriter(out)
    count, first, last = 0, None, None
    if fmt == "csv":
        sink.write((",".join(COLUMNS) + "\r\n").encode())
    elif fmt == "json":
        sink.write(b"[")
    progress(0, total)
    with map_ranges(session, read_piece, ranges, (filters, fmt, cap), jobs=jobs) as pieces:
        for (lo, hi), piece in zip(ranges, pieces, strict=True):
            if piece.rows:
                if fmt == "json" and count:
                    sink.write(b",")
                sink.write(piece.data)
                count += piece.rows
                first, last = first or piece.first, piece.last
            progress(hi - lo + 1, total)
    if fmt == "json":
        sink.write(b"\n]\n" if count else b"]\n")
    head = {"event_id": head_id, "hash": head_hash}
    return ExportResult(count, sink.sha256.hexdigest(), first, last, head)


def manifest(
    filters: Filters, fmt: str, path: Path, result: ExportResult, cap: timedelta
) -> dict[str, Any]:
    return {
        "file": path.name,
        "format": fmt,
        # occurred_at: when each event happened; event_at: when firmgrant recorded it (the
        # filters' times); status_after: the grant's status at occurred_at.
        "columns": list(COLUMNS),
        "filters": filters.as_json(),
        # status_after honours the vendor's cap in force when the file was made
        "max_duration": format_duration(cap),
        "rows": result.rows,
        "first_event": result.first,
        "last_event": result.last,
        "chain_head": result.chain_head,
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


__all__ = [
    "CHUNK",
    "COLUMNS",
    "FORMATS",
    "Filters",
    "check_file",
    "manifest",
    "parse_when",
    "write",
]
