"""The events of an audit page's rows: one per row at the row's time, one for a grant a new
grant replaced, one for a grant that turned out to be another's change. Each carries the
row's Id and words (the record outlives the trail) and the grant as the ledger holds it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from firmgrant.grant import MIRRORED_FIELDS, GrantRecord
from firmgrant.ledger.access import Placed
from firmgrant.ledger.chain import NewEvent
from firmgrant.ledger.changes import jsonable
from firmgrant.lifecycle import EventKind
from firmgrant.salesforce.display import AuditAction
from firmgrant.salesforce.fold import Step, TrailRow

if TYPE_CHECKING:
    from firmgrant.ledger.trail import Plan


def of_rows(
    connection: str,
    plans: dict[str, Plan],
    finals: dict[str, GrantRecord],
    ids: dict[str, int],
    org_id: str,
    now: datetime,
) -> list[Placed]:
    """An event per new row (and one for a grant it replaced), placed in the trail.

    An event carries the grant as the ledger holds it once the row is recorded: after that
    row, for rows read in order; as re-folded, for a row read late (the export's
    ``status_after`` then counts a revocation from its own time)."""
    events: list[Placed] = []
    for plan_ in plans.values():
        for step in plan_.steps:
            if step.row.id not in plan_.new:
                continue  # a kept row re-folded for a late one: recorded already
            row = step.row

            def shown(record: GrantRecord, late: bool = plan_.late) -> GrantRecord:
                return finals.get(record.source_id, record) if late else record

            if step.replaced is not None:
                replaced = _replaced(connection, step, shown(step.replaced), ids, now)
                events.append(((row.at, row.id, 0), replaced))
            event = _row_event(connection, step, plan_, shown, ids, org_id, now)
            events.append(((row.at, row.id, 1), event))
        for gone in plan_.dissolved:
            late = min((s.row for s in plan_.steps if s.row.id in plan_.new), key=lambda r: r.place)
            owner = next((s.grant for s in plan_.steps if s.row.id == gone.source_id), None)
            event = _dissolved(connection, gone, owner, ids, late.at, now)
            events.append(((late.at, late.id, 2), event))
    return events


def _dissolved(
    connection: str,
    gone: GrantRecord,
    owner: GrantRecord | None,
    ids: dict[str, int],
    read: datetime,
    now: datetime,
) -> NewEvent:
    """A grant opened from a change whose own granted row was read late (at ``read``): it
    was that grant's change, not a grant of its own."""
    whose = f"the grant {owner.source_id}" if owner is not None else "an earlier grant"
    return NewEvent(
        kind=EventKind.VANISHED,
        at=now,
        occurred_at=read,
        connection=connection,
        source_id=gone.source_id,
        grant_id=ids.get(gone.source_id),
        reason=f"not a grant of its own: its change belongs to {whose}, whose row was read late",
        payload={"deleted": True, "grant": gone._replace(deleted=True).snapshot()},
    )


def _row_event(
    connection: str,
    step: Step,
    plan_: Plan,
    shown: Callable[[GrantRecord], GrantRecord],
    ids: dict[str, int],
    org_id: str,
    now: datetime,
) -> NewEvent:
    row = step.row
    grant = step.grant or step.before
    payload: dict[str, Any] = {"trail": _trail(row)}
    reasons = [row.note] if row.note else []
    if grant is not None:
        payload["grant"] = shown(grant).snapshot()
    if step.before is not None and step.grant is not None:
        payload["changes"] = _changes(step.before, step.grant)
    if not plan_.kept:
        reasons.append(
            "read after later rows of this user that predate the rows the ledger keeps: "
            "recorded, the grant left as it stands"
        )
    elif row.action == AuditAction.REVOKED:
        who = row.username or row.user_id
        reasons.insert(0, f"revoked in Setup by {who}")
        if step.grant is None:
            reasons.append(
                "the grant had already ended"
                if step.before is not None
                else "no grant of theirs is in the ledger (older than the trail)"
            )
    elif step.kind == EventKind.CHANGED and step.before is None:
        reasons.append("its grant is older than the trail: opened from this change")
    if grant is None:
        payload["org_id"] = org_id
    actor = (
        f"customer:{org_id}"
        if step.kind == EventKind.CUSTOMER_REVOKED
        else f"salesforce:{row.username or row.user_id}"
    )
    return NewEvent(
        kind=step.kind,
        at=now,
        occurred_at=row.at,
        connection=connection,
        source_id=grant.source_id if grant is not None else row.id,
        grant_id=ids.get(grant.source_id) if grant is not None else None,
        actor=actor,
        reason="; ".join(reasons) or None,
        payload=payload,
    )


def _replaced(
    connection: str, step: Step, replaced: GrantRecord, ids: dict[str, int], now: datetime
) -> NewEvent:
    """The user's open grant, ended by a new one (Salesforce keeps one per user)."""
    row = step.row
    return NewEvent(
        kind=EventKind.CHANGED,
        at=now,
        occurred_at=row.at,
        connection=connection,
        source_id=replaced.source_id,
        grant_id=ids.get(replaced.source_id),
        actor=f"salesforce:{row.username or row.user_id}",
        reason=f"replaced by a new grant ({row.id})",
        payload={
            "changes": {"sf_status": ["Active", replaced.sf_status]},
            "grant": replaced.snapshot(),
            "trail": _trail(row),
        },
    )


def _trail(row: TrailRow) -> dict[str, Any]:
    """The row as Salesforce wrote it, in the chain: the record outlives the trail."""
    found: dict[str, Any] = {"id": row.id, "action": row.action.value, "display": row.display}
    if row.delegate:
        found["delegate"] = row.delegate
    if row.read_as:
        found["read_as"] = row.read_as
    return found


def _changes(before: GrantRecord, after: GrantRecord) -> dict[str, list[Any]]:
    return {
        name: [jsonable(getattr(before, name)), jsonable(getattr(after, name))]
        for name in MIRRORED_FIELDS
        if name != "modstamp" and getattr(before, name) != getattr(after, name)
    }
