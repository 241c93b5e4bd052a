"""The dashboard's accounts table: add, find, change, and count failed sign-ins."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from firmgrant.errors import AccountError
from firmgrant.ledger.models import UserRow


def add(session: Session, row: UserRow) -> None:
    """Register an account (the caller's transaction); a name or email taken is refused."""
    if session.get(UserRow, row.name) is not None:
        raise AccountError(f"user {row.name!r} already exists")
    if row.email and by_email(session, row.email) is not None:
        raise AccountError(f"email {row.email!r} belongs to another user")
    session.add(row)


def find(session: Session, name: str, *, lock: bool = False) -> UserRow | None:
    return session.get(UserRow, name, with_for_update=lock)


def get(session: Session, name: str, *, lock: bool = False) -> UserRow:
    row = find(session, name, lock=lock)
    if row is None:
        raise AccountError(f"no user {name!r} (see `firmgrant users list`)")
    return row


def by_email(session: Session, email: str) -> UserRow | None:
    """The account with this email, compared without regard to case (as mail is)."""
    return session.execute(
        select(UserRow).where(func.lower(UserRow.email) == email.lower())
    ).scalar_one_or_none()


def enabled_with_role(session: Session, role: str) -> int:
    """How many enabled accounts have this role, their rows locked (FOR UPDATE) so that two
    changes at once cannot both count the other's account."""
    rows = session.execute(
        select(UserRow.name)
        .where(UserRow.role == role, UserRow.enabled.is_(True))
        .with_for_update()
    ).all()
    return len(rows)


def every(session: Session) -> list[UserRow]:
    return list(session.execute(select(UserRow).order_by(UserRow.name)).scalars())


def record_failure(
    row: UserRow, *, now: datetime, limit: int, lockout: timedelta
) -> datetime | None:
    """Count a failed sign-in; after ``limit`` in a row the account locks until the returned
    time (then the count starts again)."""
    row.failed_sign_ins += 1
    if row.failed_sign_ins >= limit:
        row.failed_sign_ins = 0
        row.locked_until = now + lockout
        return row.locked_until
    return None


def record_success(row: UserRow, *, now: datetime) -> None:
    row.failed_sign_ins = 0
    row.locked_until = None
    row.last_sign_in_at = now
