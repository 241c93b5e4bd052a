"""A customer user's Setup Audit Trail rows, folded into their grants one row at a time.

Salesforce keeps one grant per user and publisher. *Granted* opens a grant (its ledger Id is
that row's Id) and ends the user's grant still open, if any (replaced); *changed* moves the
open grant's expiry (or, if its *granted* row aged out of the trail, opens one from the
change); *revoked* ends it. Each row is a :class:`Step` with the grant as it stood before and
after it, so the ledger can record every row as its own event at its own time.

Pure functions: the ledger decides which rows are new and what the fold starts from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from firmgrant.grant import GrantRecord
from firmgrant.lifecycle import EventKind, SalesforceStatus
from firmgrant.salesforce.dates import Locale
from firmgrant.salesforce.display import AuditAction

NO_LOCALE = Locale()


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One Setup Audit Trail row, checked."""

    id: str
    action: AuditAction
    at: datetime
    user_id: str  # CreatedById: who acted (for a use: whose access was used)
    username: str | None
    email: str | None
    delegate: str | None  # DelegateUser: the Login-As user who really acted, if any
    display: str
    locale: Locale = NO_LOCALE  # the acting user's (CreatedBy's) locale and zone


@dataclass(frozen=True, slots=True)
class TrailRow:
    """A grant action of the trail with its expiry read: what the ledger keeps of it."""

    id: str
    action: AuditAction
    at: datetime
    user_id: str
    username: str | None
    email: str | None
    delegate: str | None
    publisher: str  # the vendor's name as the row writes it
    expires_at: datetime | None  # granted, changed: the start of the "through" date
    read_as: str | None  # the date order the "through" date was read in
    note: str | None  # what the cross-check said (a reading by another order, a suspect date)
    display: str

    @property
    def place(self) -> tuple[datetime, str]:
        """Its place in the trail: ``(CreatedDate, Id)``, the order Salesforce returns."""
        return self.at, self.id


class Step(NamedTuple):
    """What one row did."""

    row: TrailRow
    kind: EventKind  # GRANTED, CHANGED or CUSTOMER_REVOKED
    grant: GrantRecord | None  # the grant it went to, after it (None: nothing to go to)
    before: GrantRecord | None  # that grant before it (None: the row opened it)
    replaced: GrantRecord | None  # the user's open grant this one replaced, as it ended


def fold(
    rows: Sequence[TrailRow], start: GrantRecord | None, *, org_id: str, org_name: str | None
) -> list[Step]:
    """One step per row, in trail order, from the user's grant ``start`` (their latest before
    the first row, or ``None``)."""
    current, steps = start, []
    for row in sorted(rows, key=lambda r: r.place):
        open_ = current is not None and current.sf_status == SalesforceStatus.ACTIVE
        if row.action == AuditAction.REVOKED:
            if current is None or not open_:  # nothing open to end (its grant aged out)
                steps.append(Step(row, EventKind.CUSTOMER_REVOKED, None, current, None))
                continue
            after = current._replace(
                sf_status=SalesforceStatus.REVOKED.value,
                revoked_at=row.at,
                revoke_reason=f"revoked in Setup by {row.username or row.user_id}",
                modstamp=row.at,
            )
            steps.append(Step(row, EventKind.CUSTOMER_REVOKED, after, current, None))
        elif row.action == AuditAction.CHANGED and current is not None and open_:
            assert row.expires_at is not None
            after = current._replace(
                expires_at=row.expires_at,
                via_login_as=current.via_login_as or row.delegate is not None,
                login_as_user=current.login_as_user or row.delegate,
                modstamp=row.at,
            )
            steps.append(Step(row, EventKind.CHANGED, after, current, None))
        else:  # granted, or a change whose grant aged out of the trail: a new grant
            replaced = None
            if current is not None and open_:  # one grant per user: the new one replaces it
                replaced = current._replace(
                    sf_status=SalesforceStatus.EXPIRED.value, modstamp=row.at
                )
            after = opened(row, org_id, org_name)
            kind = EventKind.GRANTED if row.action == AuditAction.GRANTED else EventKind.CHANGED
            steps.append(Step(row, kind, after, None, replaced))
        current = after
    return steps


def opened(row: TrailRow, org_id: str, org_name: str | None) -> GrantRecord:
    """The grant a *granted* row (or a change whose grant aged out) opens."""
    assert row.expires_at is not None
    return GrantRecord(
        source_id=row.id,
        org_id=org_id,
        org_name=org_name,
        grantor_id=row.user_id,
        grantor_username=row.username,
        grantor_email=row.email,
        grantee=row.publisher,
        duration=None,
        granted_at=row.at,
        expires_at=row.expires_at,
        via_login_as=row.delegate is not None,
        login_as_user=row.delegate,
        sf_status=SalesforceStatus.ACTIVE.value,
        revoked_at=None,
        revoke_reason=None,
        modstamp=row.at,
        deleted=False,
    )


def final_states(steps: Sequence[Step]) -> dict[str, GrantRecord]:
    """Each grant the steps touched, as the last of them left it, by source id."""
    final: dict[str, GrantRecord] = {}
    for step in steps:
        if step.replaced is not None:
            final[step.replaced.source_id] = step.replaced
        if step.grant is not None:
            final[step.grant.source_id] = step.grant
    return final
