"""What a page of records changes in the ledger, and the events that record it.

Pure functions over a page and the rows it already has: which records are new, which
changed (and how: an extension, a customer's revocation, a deletion), and who did it.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from firmgrant.grant import MIRRORED_FIELDS, GrantRecord
from firmgrant.ledger.chain import NewEvent
from firmgrant.ledger.models import RevocationRow
from firmgrant.lifecycle import EventKind, SalesforceStatus
from firmgrant.timeutil import iso_z

if TYPE_CHECKING:
    from firmgrant.ledger.pages import PageCounts

COMPARED_FIELDS = tuple(f for f in MIRRORED_FIELDS if f != "modstamp")

# (kind, record, ledger id or None while new, changed fields)
Change = tuple[EventKind, GrantRecord, int | None, dict[str, list[Any]] | None]


def classify(
    by_id: dict[str, GrantRecord],
    existing: dict[str, tuple[int, dict[str, Any]]],
    counts: PageCounts,
) -> tuple[list[Change], list[GrantRecord]]:
    """What a page changes: the events to log (kind, record, ledger id or ``None`` while new,
    changed fields) and the records to write (a new modstamp alone is written, not logged)."""
    changed: list[Change] = []
    upserts: list[GrantRecord] = []
    for source_id, record in by_id.items():
        current = existing.get(source_id)
        if current is None:
            counts.inserted += 1
            counts.rejected += record.via_login_as and not record.deleted
            upserts.append(record)
            changed.append((EventKind.DISCOVERED, record, None, None))
            continue
        grant_id, values = current
        if _read_before_our_revocation(values, record):
            continue
        changes = {
            field: [jsonable(values[field]), jsonable(getattr(record, field))]
            for field in COMPARED_FIELDS
            if values[field] != getattr(record, field)
        }
        if not changes and values["modstamp"] == record.modstamp:
            continue
        upserts.append(record)
        if not changes:
            continue
        if "deleted" in changes and record.deleted:
            counts.deleted += 1
            kind = EventKind.DELETED
        else:
            counts.updated += 1
            counts.rejected += "via_login_as" in changes and record.via_login_as
            if "deleted" in changes:
                kind = EventKind.UNDELETED
            elif "sf_status" in changes and record.sf_status == SalesforceStatus.REVOKED:
                kind = EventKind.CUSTOMER_REVOKED  # ours update the ledger as they happen
            else:
                kind = EventKind.CHANGED
        changed.append((kind, record, grant_id, changes))
    return changed, upserts


def _read_before_our_revocation(values: dict[str, Any], record: GrantRecord) -> bool:
    """A page fetched before another replica's revocation was recorded, written after it.

    The ledger says Revoked: the revoke job wrote that itself, with no new modstamp. The
    record says Active and is no newer. Salesforce stamps every write, so a record that really
    became Active again has a newer SystemModstamp. Written as it was, this page would undo
    the revocation, and enforce would revoke the grant a second time (bench/chaos.py,
    postgres-down).
    """
    return (
        values["sf_status"] == SalesforceStatus.REVOKED
        and record.sf_status == SalesforceStatus.ACTIVE
        and record.modstamp <= values["modstamp"]
    )


def our_revocation(
    connection: str,
    record: GrantRecord,
    grant_id: int,
    now: datetime,
    revocation: RevocationRow,
    changes: dict[str, list[Any]] | None,
) -> NewEvent:
    """The ``revoked`` event of an attempt whose effect a sync found (see above): it
    happened when the record says it was revoked (the time the attempt sent)."""
    return NewEvent(
        kind=EventKind.REVOKED,
        at=now,
        occurred_at=record.revoked_at or now,
        connection=connection,
        source_id=record.source_id,
        grant_id=grant_id,
        actor=revocation.actor,
        reason=revocation.reason,
        # The snapshot first (canonical JSON sorts keys): the export finds it by its start.
        payload={
            "changes": changes,
            "grant": record.snapshot(),
            "revocation": {"attempt": revocation.attempts, "cause": revocation.cause},
        },
    )


def occurred_at(kind: EventKind, record: GrantRecord) -> datetime:
    """When a change a sync found happened, by the record: its revocation time where it says
    one, else its last modification (``SystemModstamp``)."""
    if kind == EventKind.CUSTOMER_REVOKED and record.revoked_at is not None:
        return record.revoked_at
    return record.modstamp


def actor(kind: EventKind, record: GrantRecord) -> str:
    if kind == EventKind.DISCOVERED:  # the grantor made it
        return f"salesforce:{record.grantor_username or record.grantor_id or 'unknown'}"
    if kind == EventKind.CUSTOMER_REVOKED:  # someone in the customer's org; the object names no one
        return f"customer:{record.org_id}"
    return "salesforce"


def jsonable(value: Any) -> Any:
    return iso_z(value) if isinstance(value, datetime) else value
