"""``firmgrant users``: the dashboard's local accounts (argument parsing and output)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from firmgrant import accounts
from firmgrant.errors import AccountError
from firmgrant.ledger import Ledger
from firmgrant.timeutil import iso_z, utcnow


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("users", help="the dashboard's accounts")
    verbs = parser.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    add = verbs.add_parser("add", help="add an account (asks for its password)")
    add.add_argument("name", help="lower-case letters, digits and . _ @ + -")
    add.add_argument("--role", required=True, choices=[role.value for role in accounts.Role])
    add.add_argument("--email", help="the address the identity provider vouches for (SSO)")
    add.add_argument(
        "--sso-only", action="store_true", help="no password: sign in by single sign-on only"
    )
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    listing = verbs.add_parser("list", help="every account")
    listing.add_argument("--json", action="store_true")
    verbs.add_parser("disable", help="disable an account (its sessions end)").add_argument("name")
    verbs.add_parser("enable", help="enable a disabled account").add_argument("name")
    role = verbs.add_parser("role", help="change an account's role")
    role.add_argument("name")
    role.add_argument("role", choices=[role.value for role in accounts.Role])
    verbs.add_parser("unlock", help="lift a lock after failed sign-ins").add_argument("name")
    passwd = verbs.add_parser("passwd", help="set an account's password (its sessions end)")
    passwd.add_argument("name")
    passwd.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )


def _password(from_stdin: bool) -> str:
    if from_stdin:
        given = sys.stdin.readline().rstrip("\n")
        if not given:
            raise AccountError("--password-stdin read nothing")
        return accounts.check_password(given)
    if not sys.stdin.isatty():
        raise AccountError("no terminal to ask for a password: pass --password-stdin")
    first = getpass.getpass("Password: ")
    accounts.check_password(first)
    if getpass.getpass("Again: ") != first:
        raise AccountError("the two passwords differ")
    return first


def run(args: argparse.Namespace, ledger: Ledger) -> int:
    verb, now, actor = args.users_command, utcnow(), f"cli:{getpass.getuser()}"
    if verb == "add":
        accounts.check_name(args.name)
        if args.sso_only and not args.email:
            raise AccountError("--sso-only needs --email (the address the provider vouches for)")
        password = None if args.sso_only else _password(args.password_stdin)
        person = accounts.add_user(
            ledger,
            args.name,
            accounts.Role(args.role),
            password=password,
            email=args.email,
            actor=actor,
            now=now,
        )
        print(f"user {person.name}: added ({person.role})")
        return 0
    if verb == "list":
        people = accounts.every(ledger)
        if args.json:
            print(json.dumps([_as_json(person) for person in people]))
        else:
            _table(people)
        return 0
    if verb == "passwd":
        if accounts.account(ledger, args.name) is None:
            raise AccountError(f"no user {args.name!r} (see `firmgrant users list`)")
        accounts.set_password(
            ledger, args.name, _password(args.password_stdin), actor=actor, now=now
        )
        print(f"user {args.name}: password changed; open sessions end")
        return 0
    if verb == "role":
        changed = accounts.set_role(
            ledger, args.name, accounts.Role(args.role), actor=actor, now=now
        )
        print(f"user {args.name}: " + ("now " if changed else "already ") + args.role)
        return 0
    if verb == "unlock":
        changed = accounts.unlock(ledger, args.name, actor=actor, now=now)
        print(f"user {args.name}: " + ("unlocked" if changed else "was not locked"))
        return 0
    enabled = verb == "enable"
    changed = accounts.set_enabled(ledger, args.name, enabled, actor=actor, now=now)
    print(f"user {args.name}: {verb}d" if changed else f"user {args.name} already {verb}d")
    return 0


def _as_json(person: accounts.Account) -> dict[str, Any]:
    return {
        "name": person.name,
        "email": person.email,
        "role": person.role.value,
        "enabled": person.enabled,
        "password": person.has_password,
        "last_sign_in_at": iso_z(person.last_sign_in_at) if person.last_sign_in_at else None,
        "locked_until": iso_z(person.locked_until) if person.locked_until else None,
        "must_change_password": person.must_change_password,
    }


def _table(people: list[accounts.Account]) -> None:
    table = Table("name", "role", "email", "sign-in", "enabled", "last sign-in")
    for person in people:
        table.add_row(
            person.name,
            person.role.value,
            person.email or "—",
            "password" + (" + SSO" if person.email else "") if person.has_password else "SSO",
            "yes" if person.enabled else "no",
            f"{person.last_sign_in_at:%Y-%m-%d %H:%M} UTC" if person.last_sign_in_at else "never",
        )
    Console().print(table)
