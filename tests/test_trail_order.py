"""Trail rows arriving in any order, in any pages, any number of times (property-based, on
SQLite and PostgreSQL): the grants end as one read of the whole trail leaves them, every row
is one event, every use of access is judged as one read judges it, and nothing fails."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from firmgrant.grant import MIRRORED_FIELDS
from firmgrant.ledger import Ledger
from firmgrant.ledger.models import AccessUseRow, EventRow, GrantRow
from firmgrant.ledger.trail import TrailPage
from firmgrant.salesforce.audit import AccessUse
from firmgrant.salesforce.display import AuditAction
from firmgrant.salesforce.fold import TrailRow

T0 = datetime(2026, 6, 1, 9, tzinfo=UTC)
NOW = datetime(2026, 12, 1, tzinfo=UTC)
ACTIONS = [AuditAction.GRANTED, AuditAction.CHANGED, AuditAction.REVOKED]
_names = itertools.count()


def row(number: int, action: AuditAction, user: str, delegate: bool) -> TrailRow:
    at = T0 + timedelta(hours=7 * number)
    expires = None if action == AuditAction.REVOKED else at + timedelta(days=3)
    return TrailRow(
        f"0Ym{number:015d}", action, at, user, f"{user}@acme.example", None,
        "admin@acme.example" if delegate else None, "FirmWorks Support", expires, "MDY",
        None, f"row {number}",
    )  # fmt: skip


def use(number: int, user: str) -> AccessUse:
    """Support logs in as the user, an hour after row ``number``'s time."""
    at = T0 + timedelta(hours=7 * number + 1)
    return AccessUse(f"0Ym{number:012d}USE", at, "ana@firmworks.example", user, None)


Read = TrailRow | AccessUse
trails = st.lists(
    st.tuples(st.sampled_from([*ACTIONS, None]), st.sampled_from(["0051", "0052"]), st.booleans()),
    min_size=1,
    max_size=12,
).map(
    lambda steps: [
        row(n, a, u, d and n % 5 == 0) if a is not None else use(n, u)
        for n, (a, u, d) in enumerate(steps)
    ]
)


def apply(ledger: Ledger, connection: str, read: list[Read]) -> None:
    rows = [r for r in read if isinstance(r, TrailRow)]
    uses = [r for r in read if isinstance(r, AccessUse)]
    page = TrailPage(rows, uses, "00D000000000001", "Acme")
    ledger.apply_trail_page(
        connection, "audit", page, [], now=NOW, cap=timedelta(days=365), newest=None
    )


def judged(ledger: Ledger, connection: str) -> dict[str, bool]:
    with ledger.sessions() as session:
        return {
            u.row_id: u.valid
            for u in session.execute(
                select(AccessUseRow).where(AccessUseRow.connection == connection)
            ).scalars()
        }


def state(ledger: Ledger, connection: str) -> tuple[dict[str, tuple[object, ...]], list[str]]:
    """The grants that stand (by Salesforce Id: every mirrored field), and the trail row of
    each row's event (a replaced grant's event is its replacer's second)."""
    with ledger.sessions() as session:
        grants = {
            g.source_id: tuple(getattr(g, f) for f in MIRRORED_FIELDS)
            for g in session.execute(select(GrantRow).where(GrantRow.connection == connection))
            .scalars()
            .all()
            if not g.deleted  # a grant opened from a change, before its granted row came
        }
        events = [
            json.loads(e.payload)["trail"]["id"]
            for e in session.execute(
                select(EventRow).where(EventRow.connection == connection)
            ).scalars()
            if e.kind not in ("vanished", "access_used", "violation")
            and not (e.reason or "").startswith("replaced")
        ]
    return grants, events


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(trail=trails, data=st.data())
def test_rows_in_any_order_and_pages_leave_what_one_read_leaves(
    ledger: Ledger, trail: list[Read], data: st.DataObject
) -> None:
    name = next(_names)
    once, pieces = f"once{name}", f"pieces{name}"
    apply(ledger, once, trail)
    arrivals = data.draw(st.permutations(trail))
    while arrivals:  # pages of any size, each row maybe read again later (a re-read)
        size = data.draw(st.integers(1, len(arrivals)))
        page, arrivals = arrivals[:size], arrivals[size:]
        again = data.draw(st.lists(st.sampled_from(trail), max_size=3))
        apply(ledger, pieces, page + again)

    grants_once, events_once = state(ledger, once)
    grants, events = state(ledger, pieces)
    assert grants == grants_once
    rows = [r.id for r in trail if isinstance(r, TrailRow)]
    assert sorted(events) == sorted(events_once) == sorted(rows)
    assert judged(ledger, pieces) == judged(ledger, once), "each use judged as one read does"
