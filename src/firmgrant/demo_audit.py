"""The demo's second act: grants customers make in Setup, read from their audit trails."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from rich.console import Console
from rich.text import Text

from firmgrant.ledger import Ledger
from firmgrant.ledger.chain import read_chain_head
from firmgrant.ledger.queries import events_after
from firmgrant.lifecycle import EventKind
from firmgrant.sandbox import VENDOR, SandboxOrg
from firmgrant.sandbox.tenants import SUPPORT_USERS, TenantOptions
from firmgrant.settings import ConnectionSettings, Settings, SourceSettings
from firmgrant.timeutil import Clock
from firmgrant.worker import Worker

# The events of this act worth a line each (the rest are in `firmgrant show`).
_TOLD = {
    EventKind.GRANTED,
    EventKind.DISCOVERED,
    EventKind.CHANGED,
    EventKind.CUSTOMER_REVOKED,
    EventKind.REJECTED,
    EventKind.EXPIRED,
    EventKind.SESSIONS_ENDED,
    EventKind.SESSIONS_NOT_ENDED,
    EventKind.ACCESS_USED,
    EventKind.VIOLATION,
    EventKind.NOTIFIED,
}


def audit_story(
    console: Console, org: SandboxOrg, ledger: Ledger, settings: Settings, clock: Clock
) -> Settings:
    """Three customer orgs act in Setup; the worker reads their trails and acts. The
    settings of their three audit connections come back (the dashboard shows them)."""
    console.rule("Grants made in Setup: the audit source")
    console.print(
        "Customers grant access in Setup → Grant Account Login Access. Salesforce keeps no "
        "record of it, only a row in the customer's own Setup Audit Trail; firmgrant reads "
        'one trail per customer org (`source.kind = "audit"`), each row its own event at '
        "the time the trail gives, its dates read in the locale and time zone the org's users "
        "told Salesforce (nothing configured).\n"
    )
    vendor, now = (VENDOR, org.app.org_id), clock()
    tenants = org.tenants
    tokyo = tenants.add(
        TenantOptions(locale="ja_JP", time_zone="Asia/Tokyo"), name="Nakamura 株式会社"
    )
    obrien = tenants.add(name="O'Brien & Sons <Ltd>")
    baker = tenants.add(TenantOptions(locale="de_DE", time_zone="Europe/Berlin"),
                        name="Bäckerei Müller GmbH")  # fmt: skip
    ana, aiko, li = SUPPORT_USERS[0], f"aiko@{tokyo.domain}", f"li@{tokyo.domain}"
    siobhan, jurgen = f"siobhan@{obrien.domain}", f"jürgen@{baker.domain}"
    tokyo.grant(aiko, 7, vendor=vendor, at=now - timedelta(days=2))
    tokyo.use(ana, aiko, at=now - timedelta(days=1))
    tokyo.grant(li, 3, vendor=vendor, at=now - timedelta(hours=5))
    obrien.grant(siobhan, 365, vendor=vendor, login_as=f"admin@{obrien.domain}")
    obrien.use(ana, siobhan)
    baker.grant(jurgen, 1, vendor=vendor, at=now - timedelta(days=10))
    baker.use(ana, jurgen, at=now - timedelta(hours=1))
    baker.grant(jurgen, 7, vendor=vendor, to_salesforce=True)
    _say(
        console,
        f"{tokyo.name}: aiko granted a week and support logged in; li granted 3 days",
        f"{obrien.name}: siobhan's year was granted while admin was logged in as her; "
        "support logged in under it",
        f"{baker.name}: jürgen's day of access ended a week ago, yet support logged in an hour "
        "ago; jürgen also granted Salesforce's own support (not ours: ignored)",
    )
    audit = settings.model_copy(
        update={
            "connections": {
                f"org{t.number}": _connection(org, t.integration_username)
                for t in tenants.orgs.values()
            },
            "vendor": settings.vendor.model_copy(
                update={"support_usernames": ["*@firmworks.example"]}
            ),
        }
    )
    _cycle(console, ledger, Worker(audit, ledger, clock=clock), "A cycle over 3 customer orgs")
    tokyo.grant(aiko, 30, vendor=vendor, verb="changed")
    tokyo.revoke(li, vendor=vendor)
    _say(console, f"{tokyo.name}: aiko extends to a month; li revokes hers")
    _cycle(console, ledger, Worker(audit, ledger, clock=clock), "The next cycle")
    sessions = obrien.live_sessions(siobhan) + baker.live_sessions(jurgen)
    quiet = Worker(audit, ledger, clock=clock).cycle()
    console.print(
        f"Support's Login-As sessions left where access is not valid: {sessions}. "
        f"A quiet cycle: {quiet.api_calls} API calls (one per org), "
        f"{quiet.dispatch.sent if quiet.dispatch else 0} emails."
    )
    return audit


def _say(console: Console, *lines: str) -> None:
    for line in lines:
        console.print(Text("  " + line))


def _cycle(console: Console, ledger: Ledger, worker: Worker, title: str) -> None:
    before = _last_event(ledger)
    result = worker.cycle()
    console.print(
        f"\n[bold]{title}[/]: {sum(s.inserted for s in result.syncs)} grants found, "
        f"{sum(s.updated for s in result.syncs)} changed, "
        f"{sum(s.used for s in result.syncs)} use(s) of access under a grant, "
        f"{sum(s.violations for s in result.syncs)} outside any — {result.api_calls} API calls"
    )
    with ledger.sessions() as session:
        for event in events_after(session, before):
            if event.kind in _TOLD:
                detail = event.reason or _grant_text(json.loads(event.payload))
                when = f"{(event.occurred_at or event.at):%m-%d %H:%M}"
                line = f"    {when} {event.kind}: {event.connection} — {detail}"
                console.print(Text(line))


def _connection(org: SandboxOrg, username: str) -> ConnectionSettings:
    """An audit connection: how its org writes dates is learned, not set."""
    return ConnectionSettings(
        login_url=org.base_url,
        auth="jwt",
        client_id=org.app.client_id,
        username=username,
        private_key_file=org.state / "jwt.key",
        ca_bundle=org.state / "tls.crt",
        source=SourceSettings(kind="audit"),
    )


def _grant_text(payload: dict[str, Any]) -> str:
    grant = payload.get("grant") or {}
    if not grant:
        return str(payload.get("email", ""))
    return (
        f"{grant.get('grantor_username')} of {grant.get('org_name')}, until "
        f"{grant.get('expires_at')} ({grant.get('sf_status')}"
        f"{', via Login-As' if grant.get('via_login_as') else ''})"
    )


def _last_event(ledger: Ledger) -> int:
    with ledger.sessions() as session:
        return read_chain_head(session)[0]
