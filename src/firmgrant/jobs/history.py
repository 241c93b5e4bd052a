"""The jobs' view of a grant row: its facts for the rules (``ledger.episodes.facts``), and
events about it for the log."""

from __future__ import annotations

from datetime import datetime

from firmgrant.ledger import NewEvent
from firmgrant.ledger.chain import SYSTEM_ACTOR
from firmgrant.ledger.episodes import facts
from firmgrant.ledger.models import GrantRow
from firmgrant.lifecycle import EventKind

__all__ = ["facts", "grant_event"]


def grant_event(
    kind: EventKind,
    grant: GrantRow,
    now: datetime,
    reason: str | None,
    *,
    actor: str = SYSTEM_ACTOR,
    payload: dict[str, object] | None = None,
    **fields: object,
) -> NewEvent:
    """An event of the lifecycle about one grant (the jobs' and the CLI's)."""
    return NewEvent(
        kind=kind,
        at=now,
        connection=grant.connection,
        source_id=grant.source_id,
        grant_id=grant.id,
        actor=actor,
        reason=reason,
        payload={**(payload or {}), **fields},
    )
