"""`firmgrant demo`: the sandbox org, a SQLite ledger, a few worker cycles, told as a story."""

from __future__ import annotations

import shutil
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy import select

from firmgrant.display import in_words
from firmgrant.jobs.sync import SyncResult, sync_connection
from firmgrant.ledger import Ledger, make_engine, upgrade, verify_chain
from firmgrant.ledger.models import EventRow
from firmgrant.ledger.queries import list_grants
from firmgrant.sandbox import CONNECTION, VENDOR, SandboxOrg
from firmgrant.settings import ConnectionSettings, Settings, SyncSettings, VendorSettings
from firmgrant.timeutil import format_duration, utcnow

# The demo brings its own org and ledger but reminds at the product's default offsets.
REMINDERS: tuple[timedelta, ...] = Settings.model_fields["reminders"].default


def _connection(org: SandboxOrg) -> ConnectionSettings:
    return ConnectionSettings(
        login_url=org.base_url,
        auth="jwt",
        client_id=org.app.client_id,
        username=org.app.username,
        private_key_file=org.state / "jwt.key",
        ca_bundle=org.state / "tls.crt",
    )


def _cycle(console: Console, ledger: Ledger, org: SandboxOrg, title: str) -> SyncResult:
    result = sync_connection(
        ledger,
        CONNECTION,
        _connection(org),
        VendorSettings(grantee_names=[VENDOR], publisher_org_id=org.app.org_id),
        SyncSettings(),
    )
    console.print(
        f"[bold]{title}[/]: fetched {result.fetched}, new {result.inserted}, changed "
        f"{result.updated}, deleted {result.deleted}, refused as malformed {result.invalid}, "
        f"Login-As (rejected) {result.rejected} — {result.api_calls} API call"
        f"{'s' if result.api_calls != 1 else ''}, {result.seconds:.2f} s"
    )
    return result


def _events_since(ledger: Ledger, after: int) -> list[EventRow]:
    with ledger.sessions() as session:
        return list(
            session.execute(
                select(EventRow).where(EventRow.id > after).order_by(EventRow.id)
            ).scalars()
        )


def run_demo(base: Path) -> int:
    console = Console(highlight=False)
    if base.exists():
        shutil.rmtree(base)  # every demo tells the same story from the start
    base.mkdir(parents=True)
    database = base / "firmgrant.db"
    ledger = Ledger(make_engine(f"sqlite:///{database}"))
    upgrade(ledger.engine)
    console.rule("firmgrant demo")
    with SandboxOrg(base / "sandbox", random_seed=2026, persist=False) as org:
        made = org.customers.seed(40, other_grantees=5, malformed=2)
        console.print(
            f"Sandbox org at {org.base_url} (HTTPS, its own certificate). Customers have made "
            f"{made['grants']} grants to {VENDOR!r} — {made['login_as']} of them while logged in "
            f"as another user — plus {made['other_grantees']} to another vendor and "
            f"{made['malformed']} malformed records.\n"
        )
        _cycle(console, ledger, org, "Cycle 1, first sync")
        last = len(_events_since(ledger, 0))

        console.print("\nMeanwhile, in customers' orgs:")
        grants = org.customers
        new = grants.grant(
            duration="3 Days", org_name="Bäckerei Müller GmbH", grantor="jürgen@baeckerei.example"
        )
        rogue = grants.grant(
            duration="1 Year",
            org_name="O'Brien & Sons <Ltd>",
            grantor="siobhan@obrien.example",
            login_as_user="admin@obrien.example",
        )
        with ledger.sessions() as session:
            usable = list(list_grants(session, now=utcnow()))
        extended, revoked, deleted = usable[0], usable[1], usable[2]
        grants.extend(extended.source_id, "1 Month")
        grants.revoke(revoked.source_id)
        grants.delete(deleted.source_id)
        for line in (
            f"  {new['Grantor_Username__c']} granted 3 days of access ({new['Org_Name__c']})",
            f"  {rogue['Grantor_Username__c']} granted a year while logged in as "
            f"{rogue['Login_As_User__c']}: not valid",
            f"  {extended.grantor_username} extended access to a month ({extended.org_name})",
            f"  {revoked.grantor_username} revoked access ({revoked.org_name})",
            f"  a grant record of {deleted.org_name} was deleted",
        ):
            console.print(Text(line))
        console.print()
        _cycle(console, ledger, org, "Cycle 2, incremental sync")
        for event in _events_since(ledger, last):
            console.print(
                Text(
                    f"    ledger event #{event.id}: {event.kind} {event.source_id}"
                    f"{' — ' + event.reason if event.reason else ''}"
                )
            )
        _cycle(console, ledger, org, "Cycle 3, nothing changed")
        console.print(
            "    (the last 5 minutes of changes are re-read on purpose, to catch late "
            "commits; nothing new is written)"
        )
        _story_of_the_ledger(console, ledger)
    with ledger.sessions() as session:
        report = verify_chain(session)
    console.print(
        f"\nEvent log: {report.events} events, hash chain "
        f"{'intact' if report.ok else 'BROKEN'} (head {report.head_hash[:16]}…)."
    )
    console.print(
        f"\nFiles: ledger {database} — try `FIRMGRANT_DATABASE_URL=sqlite:///{database} "
        f"{_command()} grants`; email outbox var/demo/outbox/ (sending arrives with the "
        "reminder and revocation jobs)."
    )
    ledger.engine.dispose()
    return 0


def _command() -> str:
    """How this firmgrant was started, so the hint works from a venv too (`make demo`)."""
    here = Path(sys.argv[0])
    return str(here) if here.name == "firmgrant" and not shutil.which("firmgrant") else "firmgrant"


def _story_of_the_ledger(console: Console, ledger: Ledger) -> None:
    now = utcnow()
    with ledger.sessions() as session:
        every = list(list_grants(session, now=now, status="all"))
    counts = Counter(grant.status for grant in every)
    console.print(
        "\nThe ledger now holds "
        + ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
        + " grants."
    )
    soon = [
        g
        for g in every
        if g.status in ("active", "expiring") and g.expires_at - now <= max(REMINDERS)
    ]
    table = Table(title="What support may use, ending within 7 days", title_justify="left")
    for column in ("Org", "Grantor", "Ends", "Reminder due"):
        table.add_column(column)
    for grant in soon[:12]:
        left = grant.expires_at - now
        due = min((o for o in REMINDERS if o >= left), default=None)
        table.add_row(
            Text(grant.org_name or grant.org_id),
            Text(grant.grantor_username or ""),
            in_words(left.total_seconds()),
            f"{format_duration(due)} reminder" if due else "",
        )
    console.print(table)
    rejected = [g for g in every if g.status == "rejected"]
    console.print(
        f"Would be emailed: {len(soon)} expiry reminders and {len(rejected)} rejection "
        "notices (Login-As grants are never listed as usable)."
    )
