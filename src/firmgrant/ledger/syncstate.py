"""Per-source sync state: the watermark, the last success or error, the org's API usage.

Read and written one connection at a time by a plain sync, and a batch at a time by the
registry's poll (one query and one transaction for a round of orgs instead of two each).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from firmgrant.ledger.models import SyncStateRow


@dataclass(frozen=True)
class SyncState:
    watermark: datetime | None
    last_success_at: datetime | None
    last_full_sync_at: datetime | None
    api_used: int | None
    api_limit: int | None
    api_seen_at: datetime | None
    last_error: str | None = None
    unreadable: str | None = None  # the first trail row that could not be read, while any


NEVER_SYNCED = SyncState(None, None, None, None, None, None)


@dataclass(frozen=True)
class SyncOutcome:
    """How one sync of a connection's source ended, to be recorded."""

    connection: str
    source: str
    at: datetime
    error: str | None
    full: bool  # it read everything: the daily reconcile is done
    api_usage: tuple[int, int, datetime] | None
    unreadable: str | None = None  # what the connection's unreadable rows are now


def _state(row: SyncStateRow) -> SyncState:
    return SyncState(
        row.watermark,
        row.last_success_at,
        row.last_full_sync_at,
        row.api_used,
        row.api_limit,
        row.api_seen_at,
        row.last_error,
        row.unreadable,
    )


def read(session: Session, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], SyncState]:
    """The state of each (connection, source); a key never synced maps to NEVER_SYNCED."""
    found = dict.fromkeys(keys, NEVER_SYNCED)
    if len(keys) == 1:
        row = session.get(SyncStateRow, keys[0])
        rows: Iterable[SyncStateRow] = [row] if row is not None else []
    else:
        rows = session.execute(
            select(SyncStateRow).where(
                tuple_(SyncStateRow.connection, SyncStateRow.source).in_(list(keys))
            )
        ).scalars()
    for row in rows:
        found[(row.connection, row.source)] = _state(row)
    return found


def record(session: Session, outcomes: Sequence[SyncOutcome]) -> None:
    """Write these outcomes (the caller's transaction), rows locked in key order."""
    keys = sorted({(o.connection, o.source) for o in outcomes})
    if not keys:
        return
    rows = {
        (row.connection, row.source): row
        for row in session.execute(
            select(SyncStateRow)
            .where(tuple_(SyncStateRow.connection, SyncStateRow.source).in_(keys))
            .order_by(SyncStateRow.connection, SyncStateRow.source)
            .with_for_update()
        ).scalars()
    }
    for outcome in outcomes:
        key = (outcome.connection, outcome.source)
        row = rows.get(key)
        if row is None:
            row = rows[key] = SyncStateRow(connection=outcome.connection, source=outcome.source)
            session.add(row)
        if outcome.error is None:
            row.last_success_at = outcome.at
            row.last_error = None
            if outcome.full:
                row.last_full_sync_at = outcome.at
        else:
            row.last_error, row.last_error_at = outcome.error, outcome.at
        if outcome.api_usage is not None:
            row.api_used, row.api_limit, row.api_seen_at = outcome.api_usage
        row.unreadable = outcome.unreadable
