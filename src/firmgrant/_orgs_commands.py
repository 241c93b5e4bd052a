"""``firmgrant orgs``: the connection registry's commands (argument parsing and output)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from firmgrant import orgs
from firmgrant.errors import RegistryError
from firmgrant.ledger import Ledger, registry
from firmgrant.ledger.models import OrgRow
from firmgrant.lifecycle import OrgState, SourceKind
from firmgrant.settings import Settings
from firmgrant.timeutil import iso_z, utcnow


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("orgs", help="the connection registry: customer orgs")
    verbs = parser.add_subparsers(dest="orgs_command", required=True, metavar="ACTION")
    add = verbs.add_parser("add", help="register a customer org")
    add.add_argument("name", help="the connection's name: lower-case letters, digits, - or _")
    add.add_argument("--login-url", required=True, help="the org's My Domain, https://…")
    add.add_argument("--username", required=True, help="the integration user")
    add.add_argument("--org-id", help="00D… (15 or 18); learned on the first sync if not given")
    add.add_argument("--source", choices=[k.value for k in SourceKind], default="audit")
    add.add_argument(
        "--date-order",
        choices=("MDY", "DMY", "YMD"),
        help="override: how the org's trail writes dates (learned from its locales if not given)",
    )
    add.add_argument(
        "--time-zone", help="override: the zone of its trail's dates (learned if not given)"
    )
    add.add_argument("--admin-email", action="append", default=[], metavar="EMAIL")
    add.add_argument(
        "--secret-stdin", action="store_true", help="read a per-org client secret from stdin"
    )
    load = verbs.add_parser("import", help="register every org of a CSV file, or none")
    load.add_argument("file", help=f"columns: {','.join(orgs.COLUMNS)}")
    listing = verbs.add_parser("list", help="every org with its state")
    listing.add_argument("--json", action="store_true", help="the same as JSON, for tools")
    show = verbs.add_parser("show", help="one org")
    show.add_argument("name")
    for verb, what in (("disable", "stop syncing"), ("enable", "sync again"),
                       ("remove", "forget (its grants stay in the ledger)")):  # fmt: skip
        verbs.add_parser(verb, help=what).add_argument("name")
    verbs.add_parser("rotate-keys", help="re-encrypt every secret with the newest key")


def run(args: argparse.Namespace, settings: Settings, ledger: Ledger) -> int:
    verb, now = args.orgs_command, utcnow()
    if verb == "add":
        return _add(args, settings, ledger)
    if verb == "import":
        specs = orgs.read_csv(Path(args.file))
        with ledger.transaction() as session:
            registry.add(session, [orgs.new_row(spec, now) for spec in specs])
        print(f"registered {len(specs)} orgs")
        return 0
    if verb == "list":
        with ledger.sessions() as session:
            rows = sorted(registry.every(session), key=lambda row: registry.natural(row.name))
        if args.json:
            print(json.dumps([_as_json(row) for row in rows], ensure_ascii=False))
        elif sys.stdout.isatty():
            _table(rows, Console(highlight=False))
        else:  # piped: a header and one org a line, tab-separated, nothing cut
            for cells in [LIST_COLUMNS, *(_cells(row) for row in rows)]:
                print("\t".join(" ".join(cell.split()) for cell in cells))
        return 0
    if verb == "show":
        with ledger.sessions() as session:
            row = registry.find(session, args.name)
        print(json.dumps(_as_json(row), indent=2, ensure_ascii=False))
        return 0
    if verb == "rotate-keys":
        with ledger.transaction() as session:
            rows = [row for row in registry.every(session) if row.secret]
            for row in rows:
                row.secret = orgs.rotated(settings, row.secret or "")
        print(f"re-encrypted {len(rows)} secret(s) with the newest key")
        return 0
    with ledger.transaction() as session:
        if verb == "remove":
            registry.remove(session, args.name)
        else:
            row = registry.find(session, args.name, lock=True)
            row.enabled = verb == "enable"
            row.state = OrgState.NEW if row.enabled else OrgState.DISABLED
            row.next_sync_at = now
            if row.enabled:  # a fresh start; a disabled org keeps the failures that stopped it
                row.failures = 0
    print(f"org {args.name}: {verb}d")
    return 0


def _add(args: argparse.Namespace, settings: Settings, ledger: Ledger) -> int:
    spec = orgs.spec(
        {
            "name": args.name,
            "login_url": args.login_url,
            "username": args.username,
            "org_id": args.org_id,
            "source": args.source,
            "date_order": args.date_order,
            "time_zone": args.time_zone,
            "admin_emails": args.admin_email,
        },
        f"org {args.name!r}",
    )
    secret = None
    if args.secret_stdin:
        given = sys.stdin.readline().strip()
        if not given:
            raise RegistryError(f"org {args.name!r}: --secret-stdin read nothing")
        secret = orgs.seal(settings, given)
    with ledger.transaction() as session:
        registry.add(session, [orgs.new_row(spec, utcnow(), secret)])
    print(f"org {spec.name}: registered ({spec.source} source at {spec.login_url})")
    return 0


def _as_json(row: OrgRow) -> dict[str, Any]:
    """An org as `orgs list --json` and `orgs show` print it: never its secret."""
    return {
        "name": row.name,
        "org_id": row.org_id,
        "login_url": row.login_url,
        "username": row.username,
        "source": row.source_kind,
        "date_order": row.date_order,
        "time_zone": row.time_zone,
        "admin_emails": json.loads(row.admin_emails),
        "has_secret": row.secret is not None,
        "enabled": row.enabled,
        "state": row.state if row.enabled else OrgState.DISABLED.value,
        "failures": row.failures,
        "last_error": row.last_error,
        "last_sync_at": iso_z(row.last_sync_at) if row.last_sync_at else None,
        "next_sync_at": iso_z(row.next_sync_at),
        "api_used": row.api_used,
        "api_limit": row.api_limit,
    }


LIST_COLUMNS = ("Name", "Org", "Source", "State", "Last sync (UTC)", "Next sync (UTC)",
                "Failures", "API", "Last error")  # fmt: skip


def _cells(row: OrgRow) -> tuple[str, ...]:
    """An org as `orgs list` shows it (a disabled org says so, whatever its last sync)."""
    return (
        row.name,
        row.org_id or "",
        row.source_kind,
        row.state if row.enabled else OrgState.DISABLED.value,
        f"{row.last_sync_at:%Y-%m-%d %H:%M}" if row.last_sync_at else "never",
        f"{row.next_sync_at:%Y-%m-%d %H:%M}" if row.enabled else "—",
        str(row.failures),
        f"{row.api_used}/{row.api_limit}" if row.api_limit else "",
        row.last_error or "",
    )


def _table(rows: list[OrgRow], console: Console) -> None:
    table = Table(title=f"{len(rows)} orgs", title_justify="left")
    for column in LIST_COLUMNS:
        table.add_column(column, overflow="fold")
    for row in rows:
        cells = _cells(row)
        state = cells[3]
        table.add_row(
            *(Text(cell) for cell in cells[:3]),
            Text(state, style="green" if state == OrgState.OK else "red"),
            *(Text(cell) for cell in cells[4:]),
        )
    console.print(table)
