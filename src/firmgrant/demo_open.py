"""The demo's last act: two revocations still open when the story ends, as the dashboard
shows them — one Salesforce refused (the worker retries it), one planned and not yet tried."""

from __future__ import annotations

from datetime import timedelta

from rich.console import Console
from rich.text import Text

from firmgrant import revoke_now as hand
from firmgrant.jobs.enforce import enforce
from firmgrant.jobs.sync import sync_connection
from firmgrant.ledger import Ledger
from firmgrant.ledger.queries import list_grants
from firmgrant.sandbox import CONNECTION, FaultPlan, SandboxOrg
from firmgrant.settings import Settings
from firmgrant.timeutil import Clock


def open_revocations(
    console: Console, org: SandboxOrg, ledger: Ledger, settings: Settings, clock: Clock
) -> None:
    console.rule("Revocations still open")
    cap = settings.policy.max_duration
    with ledger.sessions() as session:
        usable = list(list_grants(session, now=clock(), max_duration=cap))
    refused = usable[-1]  # the one whose access lasts longest
    org.faults.plan = FaultPlan(fail_records=frozenset({refused.source_id}))
    console.print(
        Text(
            f"An admin revokes {refused.org_name}'s access by hand. The sandbox refuses that "
            "record on purpose, so Salesforce answers UNABLE_TO_LOCK_ROW (the warning below):"
        )
    )
    done = hand.revoke_now(
        ledger, settings, refused, reason="the customer asked by phone", actor="cli:demo-admin",
        clock=clock,
    )  # fmt: skip
    console.print(
        Text(
            f"  {done.outcome}. The grant stays live in Salesforce; the dashboard flags it "
            '"revocation failed, retried" with Salesforce\'s words and offers no Log in, '
            "until a worker's retry lands."
        )
    )
    ended = org.customers.grant(
        duration="1 Day", org_name="Hofmann & Töchter KG", grantor="greta@hofmann.example",
        at=clock() - timedelta(days=1, minutes=5),
    )  # fmt: skip
    connection = settings.connections[CONNECTION]
    sync_connection(
        ledger, CONNECTION, connection, settings.vendor, settings.sync, clock=clock, cap=cap
    )
    planned = enforce(ledger, settings, now=clock())
    console.print(
        Text(
            f"{ended['Grantor_Username__c']}'s day of access ({ended['Org_Name__c']}) ended five "
            f"minutes ago. A worker synced it and planned {planned.to_revoke} revocation, then "
            'stopped before its revoke step (a deploy, say): the dashboard flags it "being '
            'revoked" until a worker runs again.'
        )
    )
