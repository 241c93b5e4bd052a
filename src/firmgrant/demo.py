"""`firmgrant demo`: the sandbox org, a SQLite ledger, a few worker cycles, told as a story."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

from pydantic import SecretStr
from rich.console import Console
from rich.table import Table
from rich.text import Text

from firmgrant.demo_audit import audit_story
from firmgrant.demo_open import open_revocations
from firmgrant.display import cycle_story
from firmgrant.ledger import Ledger, emails, make_engine, upgrade, verify_chain
from firmgrant.ledger.chain import read_chain_head
from firmgrant.ledger.queries import events_after, list_grants
from firmgrant.lifecycle import EmailKind, WorkState
from firmgrant.sandbox import CONNECTION, VENDOR, SandboxOrg, subscriber
from firmgrant.settings import (
    ConnectionSettings,
    MailSettings,
    Settings,
    SyncSettings,
    VendorSettings,
    WebSettings,
)
from firmgrant.timeutil import utcnow
from firmgrant.worker import CycleResult, Worker


def _connection(org: SandboxOrg) -> ConnectionSettings:
    return ConnectionSettings(
        login_url=org.base_url,
        auth="jwt",
        client_id=org.app.client_id,
        username=org.app.username,
        private_key_file=org.state / "jwt.key",
        ca_bundle=org.state / "tls.crt",
    )


def _settings(org: SandboxOrg, base: Path) -> Settings:
    # Everything the demo depends on is given here, so no FIRMGRANT_* variable of the
    # user's (an smtp backend, say) can send the demo's emails anywhere. The dashboard's
    # *Log in* links go to the sandbox's stand-in for the License Management Org.
    return Settings(
        web=WebSettings(login_url_template=org.base_url + subscriber.PATH + subscriber.TEMPLATE),
        database_url=SecretStr(f"sqlite:///{base / 'firmgrant.db'}"),
        connections={CONNECTION: _connection(org)},
        vendor=VendorSettings(
            grantee_names=[VENDOR],
            publisher_org_id=org.app.org_id,
            support_email="support@firmworks.example",
        ),
        sync=SyncSettings(),
        mail=MailSettings.model_validate(
            {"backend": "file", "file_dir": base / "outbox", "from": "support@firmworks.example"}
        ),
    )


def _cycle(console: Console, worker: Worker, title: str) -> CycleResult:
    result = worker.cycle()
    console.print(f"[bold]{title}[/]:")
    for line in cycle_story(result):  # what `firmgrant run --once` prints
        console.print(Text("    " + line))
    return result


def _print_events(console: Console, ledger: Ledger, after: int) -> int:
    with ledger.sessions() as session:
        events = events_after(session, after)
    for event in events:
        console.print(
            Text(
                f"    ledger event #{event.id}: {event.kind} {event.source_id}"
                f"{' — ' + event.reason if event.reason else ''}"
            )
        )
    return events[-1].id if events else after


def run_demo(base: Path, *, web: bool = False) -> int:
    console = Console(highlight=False)
    if base.exists():
        shutil.rmtree(base)  # every demo tells the same story from the start
    base.mkdir(parents=True)
    console.rule("firmgrant demo")
    clock = _DemoClock()
    with SandboxOrg(base / "sandbox", random_seed=2026, persist=False, clock=clock) as org:
        settings = _settings(org, base)
        ledger = Ledger(make_engine(settings.database_url.get_secret_value()))
        upgrade(ledger.engine)
        worker = Worker(settings, ledger, clock=clock)
        made = org.customers.seed(40, other_grantees=5, malformed=2)
        console.print(
            f"Sandbox org at {org.base_url} (HTTPS, its own certificate). Customers have made "
            f"{made['grants']} grants to {VENDOR!r} — {made['login_as']} of them while logged in "
            f"as another user — plus {made['other_grantees']} to another vendor and "
            f"{made['malformed']} malformed records. The worker warns of each malformed record "
            "(the two log lines below), records it once and goes on with the rest.\n"
        )
        _cycle(console, worker, "Cycle 1, first sync")
        with ledger.sessions() as session:
            last = read_chain_head(session)[0]  # the story starts here

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
            usable = list(
                list_grants(session, now=clock(), max_duration=settings.policy.max_duration)
            )
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
        _cycle(console, worker, "Cycle 2, incremental sync")
        last = _print_events(console, ledger, last)
        clock.shift += timedelta(days=1)
        console.print("\n[bold]A day passes[/] (the worker's clock moves on).")
        _cycle(console, worker, "Cycle 3, a day later")
        _print_events(console, ledger, last)
        _cycle(console, worker, "Cycle 4, nothing to do")
        _story_of_the_ledger(console, ledger, settings, clock())
        audit = audit_story(console, org, ledger, settings, clock)
        open_revocations(console, org, ledger, settings, clock)
        with ledger.sessions() as session:
            report = verify_chain(session)
        console.print(
            f"\nEvent log: {report.events} events, hash chain "
            f"{'intact' if report.ok else 'BROKEN'} (head {report.head_hash[:16]}…)."
        )
        if web:  # every connection of the story: the object source's and the three orgs'
            everything = settings.model_copy(update={
                "connections": {**settings.connections, **audit.connections},
                "vendor": audit.vendor,
            })  # fmt: skip
            _serve_dashboard(console, everything, ledger, clock)
        ledger.engine.dispose()
    database = base / "firmgrant.db"
    console.print(
        f"\nFiles: ledger {database} — try `FIRMGRANT_DATABASE_URL=sqlite:///{database} "
        f"{_command()} grants` (or `… show ID`, `… export --output history.csv`); emails as "
        f".eml files in {base / 'outbox'}/."
    )
    if not web:
        console.print(
            "The support dashboard over this demo: `make demo-web` (or `firmgrant demo --web`)."
        )
    return 0


def _serve_dashboard(
    console: Console, settings: Settings, ledger: Ledger, clock: _DemoClock
) -> None:
    """The dashboard over the demo's ledger, the sandbox still up (so *Revoke* works)."""
    import secrets

    from firmgrant import accounts
    from firmgrant.web import serve

    password = secrets.token_urlsafe(12)
    for name, role in (
        ("demo-admin", accounts.Role.ADMIN),
        ("demo-support", accounts.Role.SUPPORT),
        ("demo-compliance", accounts.Role.COMPLIANCE),
    ):
        accounts.add_user(
            ledger, name, role, password=password, email=None, actor="system:demo", now=clock()
        )
    console.print(
        "\n[bold]The dashboard[/]: sign in as demo-support (the orgs support may enter, rule "
        "breaks), demo-compliance (and the export) or demo-admin (and revoking, connections, "
        f"people), password {password}. Its clock is the story's, a day ahead. A *Log in* link "
        "opens the sandbox's stand-in for your License Management Org (its own certificate: "
        "the browser asks once). Ctrl-C stops it. Its URL:"
    )
    # The demo's sessions live as long as this process: a random secret, no warning about it.
    from pydantic import SecretStr

    web = settings.web.model_copy(update={"session_secret": SecretStr(secrets.token_hex(32))})
    settings = settings.model_copy(update={"web": web})
    with contextlib.suppress(KeyboardInterrupt):
        port = int(os.environ.get("PORT", "8000"))
        serve(settings, ledger, host="127.0.0.1", port=port, clock=clock)


class _DemoClock:
    """The demo's one clock: real time, moved on when the story says a day passes. The
    sandbox (its customers' records and trail), the worker and the dashboard all read it."""

    def __init__(self) -> None:
        self.shift = timedelta(0)

    def __call__(self) -> datetime:
        return utcnow() + self.shift


def _command() -> str:
    """How this firmgrant was started, so the hint works from a venv too (`make demo`)."""
    here = Path(sys.argv[0])
    return str(here) if here.name == "firmgrant" and not shutil.which("firmgrant") else "firmgrant"


def _story_of_the_ledger(
    console: Console, ledger: Ledger, settings: Settings, now: datetime
) -> None:
    with ledger.sessions() as session:
        every = list(
            list_grants(session, now=now, status="all", max_duration=settings.policy.max_duration)
        )
        every_email = emails.listing(session)
    counts = Counter(grant.status for grant in every)
    console.print(
        "\nThe ledger now holds "
        + ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
        + " grants (rejected Login-As grants are never listed as usable)."
    )
    table = Table(title=f"Emails ({settings.mail.file_dir}/)", title_justify="left")
    for column in ("Kind", "Org", "To", "State"):
        table.add_column(column)
    for kind, state, org_name, grantor_email in every_email[:15]:
        table.add_row(kind, Text(org_name or ""), Text(grantor_email or ""), state)
    if len(every_email) > 15:
        table.add_row("…", f"{len(every_email) - 15} more", "", "")
    console.print(table)
    by_kind = Counter(kind for kind, state, *_ in every_email if state == WorkState.SENT)
    console.print(
        f"Written: {by_kind[EmailKind.REMINDER]} reminders, "
        f"{by_kind[EmailKind.REVOKED]} revocation notices, "
        f"{by_kind[EmailKind.REJECTED]} rejections; the text of each is in its .eml file."
    )
