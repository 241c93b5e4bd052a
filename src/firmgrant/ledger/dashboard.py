"""What the dashboard reads: a page of grants, the connections' health, and the
figures behind ``/metrics``. Statuses come from the one rule (``lifecycle.grant_status_sql``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, and_, distinct, func, or_, select
from sqlalchemy.orm import Session

from firmgrant.grant import folded
from firmgrant.ledger.models import (
    GrantRow,
    OrgProfileRow,
    OrgRow,
    OutboxRow,
    RevocationRow,
    SyncStateRow,
)
from firmgrant.ledger.queries import (
    STORED_KEYS,
    GrantView,
    by_end,
    ends_after,
    ends_by,
    grant_view,
    status_expression,
)
from firmgrant.ledger.registry import natural
from firmgrant.lifecycle import (
    OPEN_STATES,
    REVOCATION_STATUS,
    USABLE,
    GrantStatus,
    OrgState,
    WorkState,
)


class GrantSort(StrEnum):
    """The columns the grants' list sorts by."""

    EXPIRES = "expires"  # when access ends, soonest first
    GRANTED = "granted"  # when it was granted
    ORG = "org"  # the org's name (or Id)
    GRANTOR = "grantor"  # who granted it


_SORT_COLUMNS: dict[GrantSort, Any] = {  # the expiry sort: queries.by_end
    GrantSort.GRANTED: GrantRow.granted_at,
    GrantSort.ORG: func.coalesce(GrantRow.org_name, GrantRow.org_id),
    GrantSort.GRANTOR: GrantRow.grantor_username,
}


ALL = "all"
_LASTING = (GrantStatus.ACTIVE.value, GrantStatus.EXPIRING.value)  # statuses whose access lasts
_NEVER = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class GrantFilter:
    """A list page's question; ``status`` is a GrantStatus, or ``all``."""

    status: str = GrantStatus.ACTIVE.value
    search: str = ""
    connection: str | None = None
    ending_within: timedelta | None = None
    sort: GrantSort = GrantSort.EXPIRES
    descending: bool = False


def _matches(search: str) -> ColumnElement[bool]:
    """Org name or grantor (anywhere, case and accents aside: ``grant.folded``, the same on
    both databases) or org / record Id (from the start)."""
    needle = folded(search.strip())
    return or_(
        GrantRow.search_text.contains(needle, autoescape=True),
        GrantRow.org_id.startswith(search.strip(), autoescape=True),
        GrantRow.source_id.startswith(search.strip(), autoescape=True),
    )


def grant_page(
    session: Session,
    question: GrantFilter,
    *,
    now: datetime,
    window: timedelta,
    max_duration: timedelta,
    limit: int,
    offset: int,
) -> tuple[list[GrantView], int]:
    """One page of grants and how many match in all."""
    status_col = status_expression(now, window, max_duration).label("status")
    conditions: list[ColumnElement[bool]] = []
    if question.status == GrantStatus.ACTIVE.value:  # usable now: active or expiring
        conditions.append(status_col.in_([s.value for s in USABLE]))
    elif question.status != ALL:
        conditions.append(status_col == question.status)
    if question.status in _LASTING:  # implied by the status: lets the index on expires_at serve
        conditions.append(ends_after(now, max_duration))
    if question.search.strip():
        conditions.append(_matches(question.search))
    if question.connection:
        conditions.append(GrantRow.connection == question.connection)
    if question.ending_within is not None:
        conditions.append(ends_by(now + question.ending_within, max_duration))
    where = and_(*conditions) if conditions else and_(True)
    total = session.execute(select(func.count()).select_from(GrantRow).where(where)).scalar_one()
    columns = [getattr(GrantRow, name) for name in STORED_KEYS]
    query = select(*columns, status_col).where(where)
    if question.sort == GrantSort.EXPIRES:  # when access really ends, the cap included
        rows: Iterable[Any] = by_end(
            session, query, max_duration, descending=question.descending, limit=limit,
            offset=offset,
        )  # fmt: skip
    else:
        keys = (_SORT_COLUMNS[question.sort], GrantRow.id)
        ordered = query.order_by(*(k.desc() if question.descending else k.asc() for k in keys))
        rows = session.execute(ordered.limit(limit).offset(offset))
    return [grant_view(row, max_duration) for row in rows], total


@dataclass(frozen=True)
class OpenRevocation:
    """A revocation of a listed grant not done yet: queued, or failed and retried."""

    state: str  # a RevocationStatus: pending_revocation or revoke_failed
    reason: str  # why it was asked for
    error: str | None  # what Salesforce said, if the last try failed


def open_revocations(session: Session, grant_ids: list[int]) -> dict[int, OpenRevocation]:
    """The revocations under way of these grants, by grant id."""
    if not grant_ids:
        return {}
    rows = session.execute(
        select(RevocationRow).where(
            RevocationRow.grant_id.in_(grant_ids),
            RevocationRow.state.in_([s.value for s in OPEN_STATES]),
        )
    ).scalars()
    return {
        row.grant_id: OpenRevocation(
            REVOCATION_STATUS[WorkState(row.state)], row.reason, row.last_error
        )
        for row in rows
    }


@dataclass(frozen=True)
class ConnectionHealth:
    """A connection as the orgs' page and ``/metrics`` show it."""

    name: str
    registered: bool  # in the registry (else: from settings)
    org_id: str | None
    org_name: str | None
    state: str | None  # an OrgState for registered orgs
    enabled: bool
    last_success_at: datetime | None
    last_error_at: datetime | None
    last_error: str | None
    api_used: int | None
    api_limit: int | None
    unreadable: str | None = None  # the first trail row the syncs could not read, if any
    next_sync_at: datetime | None = None  # registered orgs; settings' connections: each cycle
    failures: int = 0  # failed syncs in a row
    grant_orgs: int = 0  # customer orgs it brought grants from (many: the object source)

    @property
    def api_remaining(self) -> int | None:
        if self.api_used is None or self.api_limit is None:
            return None
        return self.api_limit - self.api_used


def connections(
    session: Session, configured: list[str], *, count_orgs: bool = False
) -> list[ConnectionHealth]:
    """Every connection the ledger knows: the registry's orgs and the settings' names; with
    ``count_orgs``, how many customer orgs each brought grants from (a scan of the grants:
    the Connections page asks, the list's filter and ``/metrics`` do not)."""
    states: dict[str, SyncStateRow] = {}
    for row in session.execute(select(SyncStateRow)).scalars():
        known = states.get(row.connection)
        if known is None or (row.last_success_at or _NEVER) > (known.last_success_at or _NEVER):
            states[row.connection] = row
    found = {
        org.name: _registered(org, states.get(org.name))
        for org in session.execute(select(OrgRow).order_by(OrgRow.name)).scalars()
    }
    profiles = {row.connection: row for row in session.execute(select(OrgProfileRow)).scalars()}
    for name in configured:
        if name not in found:
            found[name] = _configured(name, states.get(name), profiles.get(name))
    orgs = _grant_orgs(session, list(found)) if count_orgs else {}
    return [
        replace(found[name], grant_orgs=orgs.get(name, 0)) for name in sorted(found, key=natural)
    ]


def _grant_orgs(session: Session, names: list[str]) -> dict[str, int]:
    counted = (
        select(GrantRow.connection, func.count(distinct(GrantRow.org_id)))
        .where(GrantRow.connection.in_(names))
        .group_by(GrantRow.connection)
    )
    return {row[0]: row[1] for row in session.execute(counted)}


def _registered(org: OrgRow, state: SyncStateRow | None) -> ConnectionHealth:
    return ConnectionHealth(
        name=org.name, registered=True, org_id=org.org_id, org_name=org.org_name,
        state=org.state if org.enabled else OrgState.DISABLED, enabled=org.enabled,
        next_sync_at=org.next_sync_at if org.enabled else None, failures=org.failures,
        last_success_at=org.last_sync_at or (state.last_success_at if state else None),
        last_error_at=state.last_error_at if state else None, last_error=org.last_error,
        api_used=org.api_used, api_limit=org.api_limit,
        unreadable=state.unreadable if state else None,
    )  # fmt: skip


def _configured(
    name: str, state: SyncStateRow | None, profile: OrgProfileRow | None
) -> ConnectionHealth:
    failing = state is not None and state.last_error_at is not None and (
        state.last_success_at is None or state.last_error_at > state.last_success_at
    )  # fmt: skip
    unreadable = state.unreadable if state else None
    working = OrgState.UNREADABLE if unreadable else OrgState.OK
    return ConnectionHealth(
        name=name, registered=False, org_id=profile.org_id if profile else None,
        org_name=profile.org_name if profile else None,
        state=(OrgState.UNREACHABLE if failing else working) if state else OrgState.NEW,
        enabled=True, last_success_at=state.last_success_at if state else None,
        last_error_at=state.last_error_at if state else None,
        last_error=state.last_error if failing and state else unreadable,
        api_used=state.api_used if state else None, api_limit=state.api_limit if state else None,
        unreadable=unreadable,
    )  # fmt: skip


def status_counts(
    session: Session, *, now: datetime, window: timedelta, max_duration: timedelta
) -> dict[str, int]:
    """Grants by status (every status present, zero if none)."""
    status_col = status_expression(now, window, max_duration)
    counts = dict.fromkeys((s.value for s in GrantStatus), 0)
    for status, count in session.execute(select(status_col, func.count()).group_by(status_col)):
        counts[status] = count
    return counts


def backlogs(session: Session) -> dict[str, dict[str, int]]:
    """Open revocations and unsent emails by state."""
    revocations = dict(
        session.execute(
            select(RevocationRow.state, func.count())
            .where(RevocationRow.state.in_([s.value for s in OPEN_STATES]))
            .group_by(RevocationRow.state)
        ).all()
    )
    outbox = dict(
        session.execute(
            select(OutboxRow.state, func.count())
            .where(OutboxRow.state.in_([WorkState.PENDING.value, WorkState.FAILED.value]))
            .group_by(OutboxRow.state)
        ).all()
    )
    return {"revocations": revocations, "outbox": outbox}
