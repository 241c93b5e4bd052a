"""Support's uses of Login-As access (the audit source): each judged by the customer user's
grants as they stood at that moment, and judged again when a trail row read later changes
that moment (a revocation, an extension, a grant whose row was unreadable until now).

A use is recorded once (``access_uses``, by its audit row); a verdict that changes is a new
event beside the first, never an edit of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from firmgrant.grant import GrantRecord
from firmgrant.ledger.chain import NewEvent
from firmgrant.ledger.models import AccessUseRow
from firmgrant.lifecycle import USABLE, EventKind, SalesforceStatus, grant_status
from firmgrant.salesforce.fold import TrailRow, final_states, fold
from firmgrant.timeutil import iso_z

if TYPE_CHECKING:
    from firmgrant.salesforce.audit import AccessUse

# An event with its place in the trail: (CreatedDate, row Id, order within the row).
Placed = tuple[tuple[datetime, str, int], NewEvent]


def known(session: Session, connection: str, row_ids: Sequence[str]) -> set[str]:
    """Which of these audit rows' uses of access are recorded already."""
    if not row_ids:
        return set()
    return set(
        session.execute(
            select(AccessUseRow.row_id).where(
                AccessUseRow.connection == connection, AccessUseRow.row_id.in_(list(row_ids))
            )
        ).scalars()
    )


def unseen(session: Session, connection: str, uses: Sequence[AccessUse]) -> list[AccessUse]:
    """The uses not recorded before (each once)."""
    recorded = known(session, connection, [use.row_id for use in uses])
    fresh: dict[str, AccessUse] = {}
    for use in uses:
        if use.row_id not in recorded:
            fresh.setdefault(use.row_id, use)
    return list(fresh.values())


def recorded_since(
    session: Session, connection: str, since: Mapping[str, datetime]
) -> list[AccessUseRow]:
    """Each user's recorded uses at or after ``since[user]`` (a row dated then arrived)."""
    if not since:
        return []
    rows = session.execute(
        select(AccessUseRow)
        .where(
            AccessUseRow.connection == connection,
            or_(
                *(
                    (AccessUseRow.customer_user_id == user) & (AccessUseRow.at >= moment)
                    for user, moment in sorted(since.items())
                )
            ),
        )
        .order_by(AccessUseRow.at, AccessUseRow.row_id)
        .with_for_update()
    ).scalars()
    return list(rows)


@dataclass(frozen=True)
class Grants:
    """What a page knows of its users' grants: the ledger's (by user), this page's results
    (by Salesforce Id), each user's kept rows, ledger ids, and the vendor's cap."""

    episodes: Mapping[str, Sequence[tuple[int, GrantRecord]]]
    finals: Mapping[str, GrantRecord]
    kept: Mapping[str, Sequence[TrailRow]]
    ids: Mapping[str, int]
    cap: timedelta

    def standing(self, user: str) -> list[GrantRecord]:
        """The user's grants as they stand once this page is applied."""
        now = {r.source_id: r for _, r in self.episodes.get(user, ())}
        now.update({key: r for key, r in self.finals.items() if r.grantor_id == user})
        return [r for r in now.values() if not r.deleted]


class Verdict(NamedTuple):
    grant: GrantRecord | None  # the grant it fell under, or the latest before it
    grant_id: int | None
    status: str | None  # that grant's status then (a lifecycle.GrantStatus)

    @property
    def valid(self) -> bool:
        return self.status in USABLE


def judge(user: str, moment: datetime, grants: Grants) -> Verdict:
    """The user's grants as they stood at ``moment``: the one that let support in, if any."""
    then = stood_at(grants.standing(user), grants.kept.get(user, ()), moment)
    earlier = [g for g in then if g.granted_at <= moment]
    statuses = [(g, status_at(g, moment, grants.cap)) for g in earlier]
    grant, status = next(
        ((g, s) for g, s in statuses if s in USABLE), statuses[0] if statuses else (None, None)
    )
    return Verdict(grant, grants.ids.get(grant.source_id) if grant else None, status)


def status_at(grant: GrantRecord, moment: datetime, cap: timedelta) -> str:
    """The grant's status at that moment (a revocation counted from its own time)."""
    return grant_status(
        deleted=grant.deleted, via_login_as=grant.via_login_as, sf_status=grant.sf_status,
        granted_at=grant.granted_at, expires_at=grant.expires_at, now=moment, cap=cap,
        revoked_at=grant.revoked_at,
    )  # fmt: skip


def stood_at(
    records: Sequence[GrantRecord], kept: Sequence[TrailRow], moment: datetime
) -> list[GrantRecord]:
    """A user's grants (as they stand now) as they stood at ``moment``, the latest first:
    re-folded from their kept rows up to then, where the ledger keeps every grant's rows."""
    kept_ids = {row.id for row in kept}
    if records and all(record.source_id in kept_ids for record in records):
        first = records[0]
        upto = [row for row in kept if row.at <= moment]
        then = final_states(fold(upto, None, org_id=first.org_id, org_name=first.org_name))
        records = [then[r.source_id] for r in records if r.source_id in then]
    else:  # a grant replaced after that moment still stood then
        records = [
            r._replace(sf_status=SalesforceStatus.ACTIVE.value)
            if r.sf_status == SalesforceStatus.EXPIRED and r.modstamp > moment
            else r
            for r in records
        ]
    return sorted(records, key=lambda r: (r.granted_at, r.source_id), reverse=True)


def record(
    session: Session, connection: str, uses: Sequence[AccessUse], grants: Grants, now: datetime
) -> list[Placed]:
    """An ``access_used`` or ``violation`` event for each new use, judged at its moment."""
    events: list[Placed] = []
    for use in sorted(uses, key=lambda u: (u.at, u.row_id)):
        verdict = judge(use.customer_user_id, use.at, grants)
        session.add(
            AccessUseRow(
                connection=connection,
                row_id=use.row_id,
                at=use.at,
                support_user=use.support_user,
                customer_user_id=use.customer_user_id,
                grant_id=verdict.grant_id,
                valid=verdict.valid,
            )
        )
        events.append(((use.at, use.row_id, 1), event(connection, use, verdict, now)))
    return events


def rejudge(
    session: Session, connection: str, recorded: Sequence[AccessUseRow], grants: Grants,
    now: datetime,
) -> list[Placed]:  # fmt: skip
    """A new event for each recorded use whose verdict a row read now changes."""
    events: list[Placed] = []
    for row in recorded:
        verdict = judge(row.customer_user_id, row.at, grants)
        if (verdict.valid, verdict.grant_id) == (row.valid, row.grant_id):
            continue
        row.valid, row.grant_id = verdict.valid, verdict.grant_id
        use = _use_of(row)
        said = event(connection, use, verdict, now, again=True)
        events.append(((row.at, row.row_id, 2), said))
    return events


def _use_of(row: AccessUseRow) -> AccessUse:
    from firmgrant.salesforce.audit import AccessUse

    return AccessUse(row.row_id, row.at, row.support_user, row.customer_user_id, None)


def event(
    connection: str, use: AccessUse, verdict: Verdict, now: datetime, *, again: bool = False
) -> NewEvent:
    """A use of access by support, at the time the trail says it happened."""
    who = use.customer_username or use.customer_user_id
    grant = verdict.grant
    if verdict.valid:
        reason = f"{use.support_user} logged in as {who}"
    elif grant is None:
        reason = f"{use.support_user} logged in as {who}, who had granted no access"
    else:
        reason = (
            f"{use.support_user} logged in as {who} with no valid grant then: their latest "
            f"({grant.source_id}) was {verdict.status}"
        )
    if again:
        reason = f"judged again (a trail row dated before it was read since): {reason}"
    return NewEvent(
        kind=EventKind.ACCESS_USED if verdict.valid else EventKind.VIOLATION,
        at=now,
        occurred_at=use.at,
        connection=connection,
        source_id=use.row_id,
        grant_id=verdict.grant_id,
        actor=f"support:{use.support_user}",
        reason=reason,
        payload={
            "customer_user_id": use.customer_user_id,
            "customer_username": use.customer_username,
            "support_user": use.support_user,
            "used_at": iso_z(use.at),
        },
    )
