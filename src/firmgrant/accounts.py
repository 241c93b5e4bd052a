"""The dashboard's people: roles, what each may do, passwords (Argon2) and sign-in.

Accounts live in the ledger (``ledger.users``); adding, changing and disabling one, and
every sign-in and sign-out, are events in the hash chain with the person as actor.
"""

from __future__ import annotations

import functools
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from firmgrant.errors import AccountError, SignInRefused
from firmgrant.ledger import users as table
from firmgrant.ledger.chain import NewEvent, append_events
from firmgrant.ledger.models import UserRow
from firmgrant.lifecycle import EventKind

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from firmgrant.ledger import Ledger


class Role(StrEnum):
    """What a person does with the dashboard."""

    SUPPORT = "support"  # sees grants, their history and rule breaks
    COMPLIANCE = "compliance"  # sees, and downloads exports and the chain's verification
    ADMIN = "admin"  # all of it, and revokes, sees the orgs' connections and manages people


class Permission(StrEnum):
    """One thing a page or form needs."""

    READ = "read"  # grants, a grant's history, rule breaks
    REVOKE = "revoke"  # revoke a grant now
    MANAGE_ORGS = "manage_orgs"  # the connections' page
    EXPORT = "export"  # the compliance export and the chain's verification
    MANAGE_PEOPLE = "manage_people"  # the people page: accounts, roles, locks, passwords


PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.SUPPORT: frozenset({Permission.READ}),
    Role.COMPLIANCE: frozenset({Permission.READ, Permission.EXPORT}),
    Role.ADMIN: frozenset(Permission),
}


class SignInMethod(StrEnum):
    """How a person proved who they are."""

    PASSWORD = "password"  # noqa: S105 (a method name) a local account's Argon2-hashed password
    OIDC = "oidc"  # the vendor's identity provider (OpenID Connect)


# User names are what people type and what the ledger's events name as actor.
NAME = re.compile(r"^[a-z0-9][a-z0-9._@+-]{0,63}$")
MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # Argon2 takes any length; a cap stops a megabyte "password" costing CPU
REFUSED = "wrong user name or password, or the account is disabled"

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified when the user is unknown, so an unknown name costs the same time as a wrong
    password. Made on first need: an Argon2 hash takes 64 MiB, which every command paid at
    import (`firmgrant --version` peaked at 130 MiB, 64 without it)."""
    return _hasher.hash("firmgrant: no such user")


def prepare_sign_in() -> None:
    """Make the unknown-user hash now (the dashboard, at start-up), so the first sign-in of an
    unknown name takes no longer than any other."""
    _dummy_hash()


@dataclass(frozen=True)
class Account:
    """A person as the dashboard sees them: no password hash in here."""

    name: str
    email: str | None
    role: Role
    enabled: bool
    has_password: bool
    session_epoch: int
    last_sign_in_at: datetime | None
    locked_until: datetime | None
    must_change_password: bool = False  # signed in with a one-time password: chooses one next

    def may(self, permission: Permission) -> bool:
        return self.enabled and permission in PERMISSIONS[self.role]

    @property
    def actor(self) -> str:
        """How ledger events name this person."""
        return f"web:{self.name}"

    @classmethod
    def of(cls, row: UserRow) -> Account:
        return cls(
            name=row.name,
            email=row.email,
            role=Role(row.role),
            enabled=row.enabled,
            has_password=row.password_hash is not None,
            session_epoch=row.session_epoch,
            last_sign_in_at=row.last_sign_in_at,
            locked_until=row.locked_until,
            must_change_password=row.must_change_password,
        )


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise AccountError(
            f"user name {name!r}: use 1 to 64 lower-case letters, digits and . _ @ + -"
            " (starting with a letter or digit)"
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"a password has at most {MAX_PASSWORD} characters")
    return password


def _changed(
    session: Session, name: str, action: str, *, actor: str, now: datetime, **facts: Any
) -> None:
    payload = {"user": name, "action": action, **facts}
    append_events(session, [NewEvent(EventKind.ACCOUNT_CHANGED, now, payload, actor=actor)])


def one_time_password() -> str:
    """A password an admin hands over once; its holder chooses their own at first sign-in."""
    return secrets.token_urlsafe(15)  # 20 characters, 120 bits


def add_user(
    ledger: Ledger,
    name: str,
    role: Role,
    *,
    password: str | None,
    email: str | None,
    actor: str,
    now: datetime,
    one_time: bool = False,
) -> Account:
    """A new account; with no password it can sign in only by single sign-on (its email).
    A ``one_time`` password (made by an admin) must be replaced at first sign-in."""
    check_name(name)
    if password is None and email is None:
        raise AccountError("an account needs a password, an email for single sign-on, or both")
    row = UserRow(
        name=name,
        email=email,
        role=role.value,
        password_hash=_hasher.hash(check_password(password)) if password is not None else None,
        enabled=True,
        session_epoch=0,
        failed_sign_ins=0,
        created_at=now,
        must_change_password=one_time and password is not None,
    )
    with ledger.appending() as session:
        table.add(session, row)
        _changed(session, name, "added", actor=actor, now=now, role=role.value, email=email)
    return Account.of(row)


def set_password(
    ledger: Ledger, name: str, password: str, *, actor: str, now: datetime, one_time: bool = False
) -> Account:
    """A new password; the account's open sessions end and any lock lifts. A ``one_time``
    password (an admin's reset) must be replaced at the next sign-in."""
    hashed = _hasher.hash(check_password(password))
    with ledger.appending() as session:
        row = table.get(session, name, lock=True)
        row.password_hash = hashed
        row.session_epoch += 1
        row.failed_sign_ins, row.locked_until = 0, None
        row.must_change_password = one_time
        _changed(session, name, "password reset" if one_time else "password", actor=actor, now=now)
        return Account.of(row)


def reset_password(ledger: Ledger, name: str, *, actor: str, now: datetime) -> str:
    """A one-time password for the account (shown once to the admin who asked)."""
    password = one_time_password()
    set_password(ledger, name, password, actor=actor, now=now, one_time=True)
    return password


def change_own_password(
    ledger: Ledger, name: str, current: str, new: str, *, now: datetime
) -> Account:
    """A person replaces their password, proving the current one; their other sessions end."""
    check_password(new)
    if new == current:
        raise AccountError("the new password must differ from the current one")
    with ledger.sessions() as session:
        stored = table.get(session, name).password_hash
    if not _verify(stored, current[:MAX_PASSWORD]):  # slow on purpose: outside a transaction
        raise AccountError("the current password is wrong")
    return set_password(ledger, name, new, actor=f"web:{name}", now=now)


def _keep_an_admin(session: Session, row: UserRow, *, role: str, enabled: bool) -> None:
    """No change may leave the dashboard without an enabled admin: nobody could undo it."""
    if row.role != Role.ADMIN or not row.enabled or (role == Role.ADMIN and enabled):
        return
    if table.enabled_with_role(session, Role.ADMIN) <= 1:
        raise AccountError(f"{row.name} is the last enabled admin: make another admin first")


def set_role(ledger: Ledger, name: str, role: Role, *, actor: str, now: datetime) -> bool:
    """A new role (the account's sessions carry it at their next request). ``False`` if it
    already had it."""
    with ledger.appending() as session:
        row = table.get(session, name, lock=True)
        if row.role == role.value:
            return False
        _keep_an_admin(session, row, role=role.value, enabled=row.enabled)
        before, row.role = row.role, role.value
        _changed(session, name, "role", actor=actor, now=now, role=role.value, was=before)
    return True


def set_enabled(ledger: Ledger, name: str, enabled: bool, *, actor: str, now: datetime) -> bool:
    """Disable (its sessions end at their next request) or enable an account. ``False`` if
    it already was so."""
    with ledger.appending() as session:
        row = table.get(session, name, lock=True)
        if row.enabled == enabled:
            return False
        _keep_an_admin(session, row, role=row.role, enabled=enabled)
        row.enabled = enabled
        row.session_epoch += 1
        _changed(session, name, "enabled" if enabled else "disabled", actor=actor, now=now)
    return True


def unlock(ledger: Ledger, name: str, *, actor: str, now: datetime) -> bool:
    """Lift a lock after failed sign-ins now. ``False`` if the account was not locked."""
    with ledger.appending() as session:
        row = table.get(session, name, lock=True)
        if row.locked_until is None or row.locked_until <= now:
            return False
        row.locked_until, row.failed_sign_ins = None, 0
        _changed(session, name, "unlocked", actor=actor, now=now)
    return True


def every(ledger: Ledger) -> list[Account]:
    with ledger.sessions() as session:
        return [Account.of(row) for row in table.every(session)]


def account(ledger: Ledger, name: str) -> Account | None:
    with ledger.sessions() as session:
        row = table.find(session, name)
        return Account.of(row) if row else None


def _verify(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _dummy_hash(), password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


def sign_in(
    ledger: Ledger,
    name: str,
    password: str,
    *,
    now: datetime,
    limit: int = 5,
    lockout: timedelta = timedelta(minutes=15),
) -> Account:
    """A local account's sign-in. After ``limit`` failures in a row the account locks for
    ``lockout``; every refusal reads the same (:data:`REFUSED`)."""
    with ledger.sessions() as session:
        found = table.find(session, name) if NAME.match(name) else None
        stored = found.password_hash if found else None
    # Hashing runs outside any transaction: it is slow on purpose.
    ok = _verify(stored, password[:MAX_PASSWORD])
    if found is None:
        raise SignInRefused(REFUSED)
    refusal: SignInRefused | None = None
    with ledger.appending() as session:
        row = table.get(session, name, lock=True)
        if row.locked_until is not None and row.locked_until > now:
            refusal = _locked(row.locked_until - now)
        elif not ok or not row.enabled:
            until = table.record_failure(row, now=now, limit=limit, lockout=lockout)
            refusal = SignInRefused(REFUSED) if until is None else _locked(lockout)
        else:
            if _hasher.check_needs_rehash(row.password_hash or ""):
                row.password_hash = _hasher.hash(password)
            return _signed_in(session, row, SignInMethod.PASSWORD, now)
    raise refusal


def _locked(wait: timedelta) -> SignInRefused:
    seconds = int(wait.total_seconds()) + 1
    return SignInRefused(f"too many failed sign-ins: try again in {seconds} s", retry_after=seconds)


def sign_in_sso(ledger: Ledger, email: str, *, now: datetime) -> Account:
    """A person the identity provider vouched for: the account with that email, if enabled."""
    with ledger.appending() as session:
        row = table.by_email(session, email)
        if row is None or not row.enabled:
            raise SignInRefused(
                f"{email} has no enabled dashboard account: an admin adds it with"
                " `firmgrant users add NAME --email ADDRESS --role ROLE`"
            )
        return _signed_in(session, row, SignInMethod.OIDC, now)


def _signed_in(session: Session, row: UserRow, method: SignInMethod, now: datetime) -> Account:
    table.record_success(row, now=now)
    payload = {"user": row.name, "method": method.value, "role": row.role}
    append_events(session, [NewEvent(EventKind.SIGNED_IN, now, payload, actor=f"web:{row.name}")])
    return Account.of(row)


def sign_out(ledger: Ledger, person: Account, *, now: datetime) -> None:
    with ledger.appending() as session:
        payload = {"user": person.name}
        append_events(session, [NewEvent(EventKind.SIGNED_OUT, now, payload, actor=person.actor)])
