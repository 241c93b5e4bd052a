"""The audit source's pages in the ledger: every trail row its own event, at its own time.

Salesforce keeps about 180 days of Setup Audit Trail; the ledger keeps every row it applied
(``trail_rows``) and an event per row, dated by the row's ``CreatedDate``. A row already
kept is never applied again (the overlap, a full re-read, a replica reading the same page).
A row read in order folds onto the user's latest grant; a row read late (a re-read finds it
behind rows already applied) re-folds the user's kept rows from the grant it falls in, so
the grants end as one read of the whole trail would leave them. A use of access is judged
by the user's grants as they stood at that moment.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from firmgrant.grant import MIRRORED_FIELDS, GrantRecord
from firmgrant.ledger import access, trail_events
from firmgrant.ledger.chain import NewEvent
from firmgrant.ledger.models import AccessUseRow, GrantRow
from firmgrant.ledger.models import TrailRow as TrailRowModel
from firmgrant.lifecycle import EventKind
from firmgrant.salesforce.display import AuditAction
from firmgrant.salesforce.fold import Step, TrailRow, final_states, fold

if TYPE_CHECKING:
    from firmgrant.ledger.pages import PageCounts
    from firmgrant.salesforce.audit import AccessUse

Upsert = Callable[[list[GrantRecord]], dict[str, int]]


@dataclass(frozen=True)
class TrailPage:
    """A page of one org's trail, read: the vendor's grant actions and support's uses."""

    rows: Sequence[TrailRow]
    uses: Sequence[AccessUse]
    org_id: str
    org_name: str | None


class Plan(NamedTuple):
    """What one user's new rows do."""

    steps: list[Step]  # every row folded: the new ones, and for a late row the kept ones
    new: frozenset[str]  # the Ids of this page's new rows among them
    late: bool  # re-folded from kept rows: an event shows the grant as it now stands
    kept: bool  # False: their grants predate the kept rows; recorded, not re-folded
    # Grants the re-fold no longer makes: one opened from a change whose granted row was
    # read late belongs to that grant now.
    dissolved: tuple[GrantRecord, ...] = ()


def known_row_ids(session: Session, connection: str, row_ids: Sequence[str]) -> set[str]:
    """Which of these trail rows are applied already."""
    if not row_ids:
        return set()
    return set(
        session.execute(
            select(TrailRowModel.row_id).where(
                TrailRowModel.connection == connection,
                TrailRowModel.row_id.in_(list(row_ids)),
            )
        ).scalars()
    )


def known_use_ids(session: Session, connection: str, row_ids: Sequence[str]) -> set[str]:
    """Which of these uses of access are recorded already."""
    return access.known(session, connection, row_ids)


def unseen(session: Session, connection: str, rows: Sequence[TrailRow]) -> list[TrailRow]:
    """The rows not applied before (the same row twice in a page counts once), in trail
    order. Dropping this rule re-applies the overlap's rows: their events twice."""
    known = known_row_ids(session, connection, [row.id for row in rows])
    fresh = {row.id: row for row in rows if row.id not in known}
    return sorted(fresh.values(), key=lambda r: r.place)


def episodes_of(
    session: Session, connection: str, users: Iterable[str]
) -> dict[str, list[tuple[int, GrantRecord]]]:
    """Each user's grants in this connection (ledger id and record), oldest first; not one
    dissolved into another (marked deleted: the trail never gave it)."""
    wanted = sorted(set(users))
    found: dict[str, list[tuple[int, GrantRecord]]] = defaultdict(list)
    if not wanted:
        return found
    columns = [getattr(GrantRow, name) for name in MIRRORED_FIELDS]
    rows = session.execute(
        select(GrantRow.id, *columns)
        .where(
            GrantRow.connection == connection,
            GrantRow.grantor_id.in_(wanted),
            GrantRow.deleted.is_(False),
        )
        .order_by(GrantRow.granted_at, GrantRow.id)
    )
    for row in rows:
        record = GrantRecord(*row[1:])
        found[record.grantor_id or ""].append((row[0], record))
    return found


def kept_rows(session: Session, connection: str, users: Iterable[str]) -> dict[str, list[TrailRow]]:
    """Each user's kept trail rows, in trail order."""
    wanted = sorted(set(users))
    found: dict[str, list[TrailRow]] = defaultdict(list)
    if not wanted:
        return found
    rows = session.execute(
        select(TrailRowModel)
        .where(TrailRowModel.connection == connection, TrailRowModel.user_id.in_(wanted))
        .order_by(TrailRowModel.at, TrailRowModel.row_id)
    ).scalars()
    for row in rows:
        found[row.user_id].append(
            TrailRow(
                row.row_id,
                AuditAction(row.action),
                row.at,
                row.user_id,
                row.username,
                row.email,
                row.delegate,
                row.publisher,
                row.expires_at,
                row.read_as,
                row.note,
                row.display,
            )
        )
    return found


def last_kept(session: Session, connection: str, users: Iterable[str]) -> dict[str, datetime]:
    """The time of each user's latest kept row (one index range each)."""
    wanted = sorted(set(users))
    if not wanted:
        return {}
    found = session.execute(
        select(TrailRowModel.user_id, func.max(TrailRowModel.at))
        .where(TrailRowModel.connection == connection, TrailRowModel.user_id.in_(wanted))
        .group_by(TrailRowModel.user_id)
    )
    return dict(found.all())  # rows are (user, time) tuples


def is_late(
    new: Sequence[TrailRow],
    episodes: Sequence[tuple[int, GrantRecord]],
    last: datetime | None,
) -> bool:
    """Whether a new row lies behind a row already applied for the user: one that changed
    their grants (the latest's last change), or one that changed none (``last``: a
    revocation of nothing open)."""
    applied = [t for t in (episodes[-1][1].modstamp if episodes else None, last) if t]
    return bool(applied) and new[0].at < max(applied)


def plan(
    new: Sequence[TrailRow],
    episodes: Sequence[tuple[int, GrantRecord]],
    kept: Sequence[TrailRow],
    *,
    late: bool,
    org_id: str,
    org_name: str | None,
) -> Plan:
    """How one user's new rows (in trail order) fold into their grants: onto their latest
    grant, or (``late``) re-folded with their ``kept`` rows from the grant the first falls in."""
    ids = frozenset(row.id for row in new)
    if not late:
        start = episodes[-1][1] if episodes else None
        return Plan(fold(new, start, org_id=org_id, org_name=org_name), ids, False, True)
    # The grant the first new row falls in, and every later one, re-folded from their rows.
    first = new[0].at
    anchor = next((r for _, r in reversed(episodes) if r.granted_at <= first), None)
    since = anchor.granted_at if anchor is not None else None
    involved = [r for _, r in episodes if since is None or r.granted_at >= since]
    kept_ids = {row.id for row in kept}
    if any(record.source_id not in kept_ids for record in involved):
        return Plan([_unapplied(row) for row in new], ids, True, False)
    rows = [row for row in kept if since is None or row.at >= since] + list(new)
    steps = fold(rows, None, org_id=org_id, org_name=org_name)
    made = final_states(steps)
    gone = tuple(r for r in involved if r.source_id not in made and not r.deleted)
    return Plan(steps, ids, True, True, gone)


def _unapplied(row: TrailRow) -> Step:
    kind = {
        AuditAction.GRANTED: EventKind.GRANTED,
        AuditAction.CHANGED: EventKind.CHANGED,
    }.get(row.action, EventKind.CUSTOMER_REVOKED)
    return Step(row, kind, None, None, None)


class _Reading(NamedTuple):
    """What the ledger holds for a page's users, read before anything is written."""

    by_user: dict[str, list[TrailRow]]  # the new rows, by user, in trail order
    uses: list[AccessUse]  # the uses not recorded yet
    recorded: list[AccessUseRow]  # recorded uses a new row dated before may judge otherwise
    episodes: dict[str, list[tuple[int, GrantRecord]]]
    kept: dict[str, list[TrailRow]]
    late: set[str]


def _read(session: Session, connection: str, page: TrailPage) -> _Reading:
    by_user: dict[str, list[TrailRow]] = defaultdict(list)
    for row in unseen(session, connection, page.rows):
        by_user[row.user_id].append(row)
    fresh = access.unseen(session, connection, page.uses)
    recorded = access.recorded_since(
        session, connection, {user: rows[0].at for user, rows in by_user.items()}
    )
    using = {use.customer_user_id for use in fresh} | {u.customer_user_id for u in recorded}
    episodes = episodes_of(session, connection, by_user.keys() | using)
    last = last_kept(session, connection, by_user.keys())
    late = {user for user, rows in by_user.items() if is_late(rows, episodes[user], last.get(user))}
    kept = kept_rows(session, connection, late | using)
    return _Reading(by_user, fresh, recorded, episodes, kept, late)


def apply(
    session: Session,
    connection: str,
    page: TrailPage,
    *,
    now: datetime,
    cap: timedelta,
    counts: PageCounts,
    upsert: Upsert,
) -> list[NewEvent]:
    """Apply a page's new rows and uses: the grants written (by ``upsert``), the rows kept,
    and their events in trail order."""
    read = _read(session, connection, page)
    plans = {
        user: plan(
            rows,
            read.episodes[user],
            read.kept[user],
            late=user in read.late,
            org_id=page.org_id,
            org_name=page.org_name,
        )
        for user, rows in read.by_user.items()
    }
    finals = {
        source_id: record
        for plan_ in plans.values()
        if plan_.kept
        for source_id, record in final_states(plan_.steps).items()
    }
    for plan_ in plans.values():  # the record is gone: what it held is another grant's now
        finals.update({r.source_id: r._replace(deleted=True) for r in plan_.dissolved})
    current = {r.source_id: (i, r) for grants in read.episodes.values() for i, r in grants}
    written = [r for key, r in finals.items() if key not in current or current[key][1] != r]
    _count(written, current, counts)
    ids = {key: grant_id for key, (grant_id, _) in current.items()}
    ids.update(upsert(written) if written else {})
    placed = trail_events.of_rows(connection, plans, finals, ids, page.org_id, now)
    _keep(session, connection, plans, ids, now)
    kept = dict(read.kept)
    for user, rows in read.by_user.items():  # their uses are judged by these rows too
        kept[user] = sorted([*kept.get(user, []), *rows], key=lambda r: r.place)
    grants = access.Grants(read.episodes, finals, kept, ids, cap)
    used = access.record(session, connection, read.uses, grants, now)
    counts.used += sum(e.kind == EventKind.ACCESS_USED for _, e in used)
    counts.violations += sum(e.kind == EventKind.VIOLATION for _, e in used)
    used += access.rejudge(session, connection, read.recorded, grants, now)
    # In trail order: several rows of one user in one page are several events, in order.
    return [event for _, event in sorted([*placed, *used], key=lambda pair: pair[0])]


def _count(
    written: Sequence[GrantRecord],
    current: dict[str, tuple[int, GrantRecord]],
    counts: PageCounts,
) -> None:
    for record in written:
        known = current.get(record.source_id)
        before = known[1] if known is not None else None
        if before is None:
            counts.inserted += 1
            counts.rejected += record.via_login_as
        else:
            counts.updated += 1
            counts.rejected += record.via_login_as and not before.via_login_as


def _keep(
    session: Session, connection: str, plans: dict[str, Plan], ids: dict[str, int], now: datetime
) -> None:
    for plan_ in plans.values():
        for step in plan_.steps:
            if step.row.id not in plan_.new:
                continue
            row, grant = step.row, step.grant or step.before
            session.add(
                TrailRowModel(
                    connection=connection,
                    row_id=row.id,
                    at=row.at,
                    action=row.action.value,
                    user_id=row.user_id,
                    username=row.username,
                    email=row.email,
                    delegate=row.delegate,
                    publisher=row.publisher,
                    expires_at=row.expires_at,
                    read_as=row.read_as,
                    note=row.note,
                    display=row.display,
                    grant_id=ids.get(grant.source_id) if grant is not None else None,
                    recorded_at=now,
                )
            )
