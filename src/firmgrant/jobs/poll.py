"""poll: sync the registry's due orgs, several at once, each under a lease.

Replicas share the orgs: each claims a handful of due orgs (skipping those another replica
holds), syncs them in a bounded thread pool, and records each org's outcome and next due
time. A failing org (refused token, missing permission, no API budget left, no answer) is
marked and backed off; it never holds up the others. A replica killed mid-cycle leaves
leases that run out; another replica takes those orgs then.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from firmgrant.jobs.sync import SyncResult, sync_connection
from firmgrant.ledger import Ledger, registry
from firmgrant.lifecycle import OrgState
from firmgrant.orgs import next_due, state_after
from firmgrant.salesforce.client import SalesforceClient
from firmgrant.settings import Settings
from firmgrant.timeutil import Clock

log = logging.getLogger("firmgrant.jobs")
CLAIM_ROUNDS = 4  # orgs claimed per round: this many per thread of the pool


class Clients:
    """Salesforce clients by connection, the most recently used kept (tokens are reused)."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._clients: OrderedDict[str, SalesforceClient] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, settings: Settings, name: str) -> SalesforceClient:
        with self._lock:
            client = self._clients.get(name)
            if client is None or client.settings != settings.connections[name]:
                client = SalesforceClient(name, settings.connections[name], settings.sync)
                self._clients[name] = client
            self._clients.move_to_end(name)
            while len(self._clients) > self.size:
                self._clients.popitem(last=False)
            return client

    def put(self, name: str, client: SalesforceClient) -> None:
        with self._lock:
            self._clients[name] = client


def poll(
    ledger: Ledger,
    settings: Settings,
    clients: Clients,
    *,
    clock: Clock,
    owner: str,
    full_due: Callable[[str], bool],
    stop: Callable[[], bool] = lambda: False,
) -> list[tuple[SyncResult, OrgState]]:
    """Sync every registry org due now that no other worker holds: each one's result and the
    state it left the org in."""
    shared = settings.registry
    lease = timedelta(seconds=shared.lease_seconds)
    results: list[tuple[SyncResult, OrgState]] = []

    def one(name: str) -> tuple[SyncResult, OrgState]:
        return _sync_org(ledger, settings, clients, name, clock, owner, full_due, stop)

    with ThreadPoolExecutor(shared.pool, thread_name_prefix="poll") as pool:
        while not stop():
            with ledger.transaction() as session:
                claimed = [
                    row.name
                    for row in registry.claim(
                        session,
                        owner=owner,
                        now=clock(),
                        lease=lease,
                        limit=shared.pool * CLAIM_ROUNDS,
                    )
                ]
            if not claimed:
                break
            results.extend(pool.map(one, claimed))
    return results


def _sync_org(
    ledger: Ledger,
    settings: Settings,
    clients: Clients,
    name: str,
    clock: Clock,
    owner: str,
    full_due: Callable[[str], bool],
    stop: Callable[[], bool],
) -> tuple[SyncResult, OrgState]:
    client = clients.get(settings, name)
    result = sync_connection(
        ledger,
        name,
        settings.connections[name],
        settings.vendor,
        settings.sync,
        full=full_due(name),
        client=client,
        clock=clock,
        stop=stop,
        cap=settings.policy.max_duration,
    )
    state = state_after(result.error, result.error_kind)
    now = clock()
    usage = client.usage
    with ledger.transaction() as session:
        kept = registry.record(
            session,
            name,
            owner,
            state=state,
            error=result.error,
            now=now,
            next_sync_at=lambda failures: next_due(now, state, failures, settings),
            api_usage=(usage.used, usage.limit) if usage else None,
            org_id=client.org_id,
        )
    if not kept:
        log.warning("org %s: lease lost while syncing; its outcome is left to the new holder", name)
    return result, state
