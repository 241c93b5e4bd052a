"""*Rule breaks*: every grant made while logged in as another user, and every use of access
with no valid grant at that moment (as last judged), the latest to have happened first."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import Session

from firmgrant.grant import folded
from firmgrant.ledger.models import AccessUseRow, EventRow, GrantRow
from firmgrant.lifecycle import EventKind

ALL = "all"


class BreakKind(StrEnum):
    """What broke the rules."""

    REJECTED = "rejected"  # a grant made while logged in as another user: never usable
    VIOLATION = "violation"  # support used access with no valid grant at that moment


@dataclass(frozen=True)
class BreakFilter:
    """The page's question: a kind (or all), an org (name or id), a support user, a period
    (when it happened, ``until`` exclusive)."""

    kind: str = ALL
    org: str = ""
    support_user: str = ""
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class RuleBreak:
    kind: BreakKind
    occurred_at: datetime  # when it happened
    recorded_at: datetime  # when firmgrant first recorded it
    grant_id: int | None
    org_id: str | None
    org_name: str | None
    grantor_username: str | None
    login_as_user: str | None  # rejected: who was logged in as the grantor
    support_user: str | None  # violation: who from support logged in
    reason: str

    def noticed_later(self, poll: Any) -> Any:
        late = self.recorded_at - self.occurred_at
        return late if late > poll else None


def _org(question: BreakFilter) -> ColumnElement[bool]:
    typed = question.org.strip()
    return or_(
        GrantRow.search_text.contains(folded(typed), autoescape=True),
        GrantRow.org_id.startswith(typed, autoescape=True),
    )


def _rejected(question: BreakFilter) -> Select[*tuple[Any, ...]]:
    query = select(GrantRow).where(GrantRow.via_login_as.is_(True))
    if question.org.strip():
        query = query.where(_org(question))
    if question.since:
        query = query.where(GrantRow.granted_at >= question.since)
    if question.until:
        query = query.where(GrantRow.granted_at < question.until)
    return query


def _violations(question: BreakFilter) -> Select[*tuple[Any, ...]]:
    query = (
        select(AccessUseRow, GrantRow)
        .outerjoin(GrantRow, GrantRow.id == AccessUseRow.grant_id)
        .where(AccessUseRow.valid.is_(False))
    )
    if question.org.strip():
        query = query.where(_org(question))
    if question.support_user.strip():
        query = query.where(
            func.lower(AccessUseRow.support_user) == question.support_user.strip().lower()
        )
    if question.since:
        query = query.where(AccessUseRow.at >= question.since)
    if question.until:
        query = query.where(AccessUseRow.at < question.until)
    return query


def rule_breaks(
    session: Session, question: BreakFilter, *, limit: int, offset: int
) -> tuple[list[RuleBreak], int]:
    """A page of rule breaks and how many match in all."""
    wanted = offset + limit
    rejected = question.kind in (ALL, BreakKind.REJECTED) and not question.support_user.strip()
    violations = question.kind in (ALL, BreakKind.VIOLATION)
    found: list[list[RuleBreak]] = []
    total = 0
    if rejected:
        query = _rejected(question)
        total += _count(session, query)
        first = query.order_by(GrantRow.granted_at.desc(), GrantRow.id.desc()).limit(wanted)
        found.append([_refused(grant) for grant in session.execute(first).scalars()])
    if violations:
        uses = _violations(question)
        total += _count(session, uses)
        page_of = uses.order_by(AccessUseRow.at.desc(), AccessUseRow.row_id.desc()).limit(wanted)
        found.append(_uses(session, session.execute(page_of).all()))
    merged = heapq.merge(*found, key=lambda b: b.occurred_at, reverse=True)
    return list(merged)[offset:wanted], total


def _count(session: Session, query: Select[*tuple[Any, ...]]) -> int:
    return int(session.execute(select(func.count()).select_from(query.subquery())).scalar_one())


def _refused(grant: GrantRow) -> RuleBreak:
    who = grant.login_as_user or "someone"
    return RuleBreak(
        BreakKind.REJECTED, grant.granted_at, grant.first_seen_at, grant.id, grant.org_id,
        grant.org_name, grant.grantor_username, grant.login_as_user, None,
        f"granted while {who} was logged in as {grant.grantor_username or 'the grantor'}",
    )  # fmt: skip


def _uses(session: Session, rows: Sequence[Any]) -> list[RuleBreak]:
    """Violations, each with what its event said and when it was first recorded."""
    said: dict[str, tuple[str | None, datetime]] = {}
    ids = [use.row_id for use, _ in rows]
    if ids:
        events = session.execute(
            select(EventRow.source_id, EventRow.reason, EventRow.at)
            .where(and_(EventRow.kind == EventKind.VIOLATION, EventRow.source_id.in_(ids)))
            .order_by(EventRow.id)
        )
        for source_id, reason, at in events:
            first = said.get(str(source_id))
            said[str(source_id)] = (reason, first[1] if first else at)
    breaks = []
    for use, grant in rows:
        reason, recorded = said.get(use.row_id, (None, use.at))
        breaks.append(
            RuleBreak(
                BreakKind.VIOLATION,
                use.at,
                recorded,
                use.grant_id,
                grant.org_id if grant else None,
                grant.org_name if grant else None,
                grant.grantor_username if grant else None,
                None,
                use.support_user,
                reason or f"{use.support_user} logged in with no valid grant then",
            )
        )
    return breaks
