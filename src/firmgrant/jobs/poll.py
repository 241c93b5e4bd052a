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

import requests
from requests.adapters import HTTPAdapter

from firmgrant.jobs.sync import SyncResult, sync_connection
from firmgrant.ledger import Ledger, registry
from firmgrant.lifecycle import OrgState
from firmgrant.orgs import next_due, state_after
from firmgrant.salesforce.auth import Token
from firmgrant.salesforce.client import SalesforceClient, make_session
from firmgrant.settings import ConnectionSettings, Settings
from firmgrant.timeutil import Clock

log = logging.getLogger("firmgrant.jobs")
CLAIM_ROUNDS = 4  # orgs claimed per round: this many per thread of the pool


class Clients:
    """Salesforce clients by connection, the most recently used kept.

    Every client sends through one shared HTTPS pool (a kept-alive connection serves the next
    org on that host instead of a new TLS handshake), and the access token of a client let go
    is kept for the org's next one, so an idle cycle asks for no token. A token the org no
    longer honours is replaced on its first refusal (``INVALID_SESSION_ID``).
    """

    def __init__(self, size: int = 256, *, connections: int = 8) -> None:
        self.size = size
        self._clients: OrderedDict[str, SalesforceClient] = OrderedDict()
        self._tokens: dict[str, Token] = {}
        self._lock = threading.Lock()
        # Thread-safe (urllib3's pools are): one connection per polling thread and host.
        self._adapter = HTTPAdapter(pool_connections=64, pool_maxsize=connections)

    def get(self, settings: Settings, name: str) -> SalesforceClient:
        with self._lock:
            client = self._clients.get(name)
            connection = settings.connections[name]
            if client is None or client.settings != connection:
                token = self._tokens.get(name) if client is None else None
                client = SalesforceClient(
                    name, connection, settings.sync, session=self._session(connection), token=token
                )
                self._clients[name] = client
            self._clients.move_to_end(name)
            while len(self._clients) > self.size:
                self._clients.popitem(last=False)
            return client

    def keep_token(self, name: str, client: SalesforceClient) -> None:
        """Remember the token the org's client holds now, for its next client."""
        with self._lock:
            if client.token is not None:
                self._tokens[name] = client.token

    def _session(self, connection: ConnectionSettings) -> requests.Session:
        session = make_session(connection)
        session.mount("https://", self._adapter)
        return session

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

    # Orgs due when the cycle began: one synced early in a long cycle comes due again before
    # the cycle ends, and taking it again would keep the cycle from ever ending.
    started = clock()
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
                        due_by=started,
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
    clients.keep_token(name, client)
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
