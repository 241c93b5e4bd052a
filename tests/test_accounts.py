"""The dashboard's accounts: `firmgrant users`, Argon2 sign-in, lockout, and the ledger
events that record who changed what and who signed in."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from firmgrant import accounts
from firmgrant.accounts import Permission, Role
from firmgrant.cli import main
from firmgrant.errors import AccountError, SignInRefused
from firmgrant.ledger import Ledger
from firmgrant.ledger.chain import verify_chain
from firmgrant.ledger.models import EventRow, UserRow
from firmgrant.lifecycle import EventKind

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
PASSWORD = "correct horse battery"


def add(ledger: Ledger, name: str = "alice", role: Role = Role.SUPPORT) -> accounts.Account:
    return accounts.add_user(
        ledger, name, role, password=PASSWORD, email=None, actor="cli:test", now=NOW
    )


def events(ledger: Ledger) -> list[EventRow]:
    with ledger.sessions() as session:
        return list(session.execute(select(EventRow).order_by(EventRow.id)).scalars())


def test_sign_in_with_the_right_password_is_recorded_with_the_person_as_actor(
    ledger: Ledger,
) -> None:
    add(ledger)
    person = accounts.sign_in(ledger, "alice", PASSWORD, now=NOW)
    assert person.name == "alice"
    assert person.may(Permission.READ)
    assert not person.may(Permission.REVOKE)
    kinds = [(e.kind, e.actor) for e in events(ledger)]
    assert kinds == [(EventKind.ACCOUNT_CHANGED, "cli:test"), (EventKind.SIGNED_IN, "web:alice")]
    with ledger.sessions() as session:
        assert verify_chain(session).ok
        row = session.get(UserRow, "alice")
        assert row is not None
        assert row.password_hash is not None
        assert row.password_hash.startswith("$argon2id$")
        assert PASSWORD not in row.password_hash


def test_wrong_password_unknown_user_and_disabled_account_read_the_same(ledger: Ledger) -> None:
    add(ledger)
    add(ledger, "bob")
    accounts.set_enabled(ledger, "bob", False, actor="cli:test", now=NOW)
    refusals = []
    for name, password in (("alice", "wrong password!"), ("nobody", PASSWORD), ("bob", PASSWORD)):
        with pytest.raises(SignInRefused) as refused:
            accounts.sign_in(ledger, name, password, now=NOW)
        refusals.append(str(refused.value))
    assert len(set(refusals)) == 1
    assert PASSWORD not in refusals[0]
    assert EventKind.SIGNED_IN not in [e.kind for e in events(ledger)]


def test_repeated_failures_lock_the_account_for_a_while(ledger: Ledger) -> None:
    add(ledger)
    for _ in range(4):
        with pytest.raises(SignInRefused) as refused:
            accounts.sign_in(ledger, "alice", "not the password", now=NOW, limit=5)
        assert refused.value.retry_after is None
    with pytest.raises(SignInRefused) as refused:
        accounts.sign_in(ledger, "alice", "not the password", now=NOW, limit=5)
    assert refused.value.retry_after == 15 * 60 + 1
    # Even the right password waits out the lock...
    with pytest.raises(SignInRefused, match="too many failed sign-ins"):
        accounts.sign_in(ledger, "alice", PASSWORD, now=NOW + timedelta(minutes=14))
    # ...and works once it has passed.
    assert accounts.sign_in(ledger, "alice", PASSWORD, now=NOW + timedelta(minutes=16))


def test_a_new_password_or_disabling_ends_open_sessions(ledger: Ledger) -> None:
    before = add(ledger).session_epoch
    accounts.set_password(ledger, "alice", "another long password", actor="cli:t", now=NOW)
    changed = accounts.account(ledger, "alice")
    assert changed is not None
    assert changed.session_epoch > before
    with pytest.raises(SignInRefused):
        accounts.sign_in(ledger, "alice", PASSWORD, now=NOW)
    assert accounts.sign_in(ledger, "alice", "another long password", now=NOW)
    assert accounts.set_enabled(ledger, "alice", False, actor="cli:t", now=NOW)
    disabled = accounts.account(ledger, "alice")
    assert disabled is not None
    assert disabled.session_epoch > changed.session_epoch
    assert not disabled.may(Permission.READ)


def test_sso_sign_in_finds_the_account_by_email_whatever_its_case(ledger: Ledger) -> None:
    accounts.add_user(
        ledger, "carol", Role.COMPLIANCE, password=None, email="Carol@Vendor.example",
        actor="cli:test", now=NOW,
    )  # fmt: skip
    person = accounts.sign_in_sso(ledger, "carol@vendor.EXAMPLE", now=NOW)
    assert person.name == "carol"
    assert person.may(Permission.EXPORT)
    with pytest.raises(SignInRefused, match="no enabled dashboard account"):
        accounts.sign_in_sso(ledger, "mallory@vendor.example", now=NOW)
    # An SSO-only account has no password to guess.
    with pytest.raises(SignInRefused):
        accounts.sign_in(ledger, "carol", "", now=NOW)


@pytest.mark.parametrize(
    ("name", "password", "message"),
    [
        ("Alice", PASSWORD, "user name 'Alice'"),
        ("alice", "short", "at least 12 characters"),
        ("a" * 65, PASSWORD, "1 to 64"),
    ],
)
def test_bad_account_input_is_refused_and_nothing_is_written(
    ledger: Ledger, name: str, password: str, message: str
) -> None:
    with pytest.raises(AccountError, match=message):
        accounts.add_user(
            ledger, name, Role.ADMIN, password=password, email=None, actor="t", now=NOW
        )
    assert accounts.every(ledger) == []
    assert events(ledger) == []


def test_users_cli(
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    ledger: Ledger,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("FIRMGRANT_DATABASE_URL", database_url)
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["users", "add", "alice", "--role", "admin", "--password-stdin"]) == 0
    assert "user alice: added (admin)" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["users", "add", "alice", "--role", "admin", "--password-stdin"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["users", "add", "bob", "--role", "support", "--sso-only"]) == 2
    assert "--sso-only needs --email" in capsys.readouterr().err
    assert main(["users", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(p["name"], p["role"], p["enabled"]) for p in listed] == [("alice", "admin", True)]
    assert "hash" not in json.dumps(listed)
    assert main(["users", "disable", "alice"]) == 2
    assert "alice is the last enabled admin: make another admin first" in capsys.readouterr().err
    assert main(["users", "add", "bob", "--role", "support", "--sso-only",
                 "--email", "bob@firmworks.example"]) == 0  # fmt: skip
    assert main(["users", "role", "bob", "admin"]) == 0
    assert "user bob: now admin" in capsys.readouterr().out
    assert main(["users", "disable", "alice"]) == 0
    assert main(["users", "disable", "alice"]) == 0
    assert "already disabled" in capsys.readouterr().out
    assert main(["users", "unlock", "bob"]) == 0
    assert "user bob: was not locked" in capsys.readouterr().out
    assert main(["users", "disable", "nobody"]) == 2
    assert "no user 'nobody'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["users", "add", "carol", "--role", "owner"])
    assert usage.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
