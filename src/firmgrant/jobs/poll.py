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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import requests
from requests.adapters import HTTPAdapter

from firmgrant._progress import SyncProgress
from firmgrant.jobs.sync import SyncResult, sync_connection
from firmgrant.ledger import Ledger, SyncState, registry, syncstate
from firmgrant.ledger.registry import OrgOutcome
from firmgrant.lifecycle import OrgState
from firmgrant.orgs import next_due, state_after
from firmgrant.salesforce.auth import Token
from firmgrant.salesforce.client import SalesforceClient, make_session
from firmgrant.settings import ConnectionSettings, Settings
from firmgrant.timeutil import Clock, utcnow

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
    full_due: Callable[[SyncState], bool],
    stop: Callable[[], bool] = lambda: False,
    progress: SyncProgress | None = None,
) -> list[tuple[SyncResult, OrgState]]:
    """Sync every registry org due now that no other worker holds: each one's result and the
    state it left the org in.

    A round of orgs costs the ledger one read (claim them, read their sync states) and one
    write (every outcome of the round): an idle org is one API call and little else.
    """
    shared = settings.registry
    results: list[tuple[SyncResult, OrgState]] = []
    # Orgs due when the cycle began: one synced early in a long cycle comes due again before
    # the cycle ends, and taking it again would keep the cycle from ever ending.
    started = clock()
    with ThreadPoolExecutor(shared.pool, thread_name_prefix="poll") as pool:
        while not stop():
            states = _claim(ledger, settings, clock, owner, started)
            if not states:
                break
            done = list(
                pool.map(
                    lambda name, state: _sync_org(
                        ledger,
                        settings,
                        clients,
                        name,
                        full=full_due(state),
                        clock=clock,
                        stop=stop,
                        state=state,
                        fetched=progress.fetched if progress else lambda records: None,
                    ),
                    states.keys(),
                    states.values(),
                )
            )
            for name in _record(ledger, settings, owner, clock(), done):
                log.warning(
                    "org %s: lease lost while syncing; its outcome is left to the new holder", name
                )
            results += [(result, state) for result, state, _ in done]
            for result, _, _ in done:
                if progress:
                    progress.org_done(result.error is None)
    return results


def _claim(
    ledger: Ledger, settings: Settings, clock: Clock, owner: str, due_by: datetime
) -> dict[str, SyncState]:
    """A round of due orgs leased to this worker, with their sync states."""
    shared = settings.registry
    with ledger.transaction() as session:
        names = [
            row.name
            for row in registry.claim(
                session,
                owner=owner,
                now=clock(),
                lease=timedelta(seconds=shared.lease_seconds),
                limit=shared.pool * CLAIM_ROUNDS,
                due_by=due_by,
            )
        ]
        keys = [(name, settings.connections[name].source.kind) for name in names]
        found = syncstate.read(session, keys) if keys else {}
    return {name: found[(name, kind)] for name, kind in keys}


def _sync_org(
    ledger: Ledger,
    settings: Settings,
    clients: Clients,
    name: str,
    *,
    full: bool,
    clock: Clock,
    stop: Callable[[], bool] = lambda: False,
    state: SyncState | None = None,
    fetched: Callable[[int], None] = lambda records: None,
) -> tuple[SyncResult, OrgState, SalesforceClient]:
    """One org's sync, its outcome left for :func:`_record` to write."""
    client = clients.get(settings, name)
    result = sync_connection(
        ledger,
        name,
        settings.connections[name],
        settings.vendor,
        settings.sync,
        full=full,
        client=client,
        clock=clock,
        stop=stop,
        cap=settings.policy.max_duration,
        state=state,
        record=False,
        fetched=fetched,
    )
    clients.keep_token(name, client)
    return result, state_after(result.error, result.error_kind, result.unreadable), client


def _record(
    ledger: Ledger,
    settings: Settings,
    owner: str | None,
    now: datetime,
    done: list[tuple[SyncResult, OrgState, SalesforceClient]],
) -> list[str]:
    """Every outcome of a round in one transaction: the sync states and the registry's rows;
    the orgs whose outcome was left out. ``owner`` ``None`` (``firmgrant sync``, no lease):
    every sync state is written, and registry rows no worker holds."""

    def outcome(result: SyncResult, state: OrgState, client: SalesforceClient) -> OrgOutcome:
        usage = client.usage
        return OrgOutcome(
            result.connection,
            state,
            result.unreadable if state == OrgState.UNREADABLE else result.error,
            next_sync_at=lambda failures: next_due(now, state, failures, settings),
            api_usage=(usage.used, usage.limit) if usage else None,
            org_id=client.org_id,
        )

    with ledger.transaction() as session:
        lost = registry.record(session, owner, now, [outcome(*entry) for entry in done])
        kept = [
            r.outcome
            for r, _, _ in done
            if r.outcome and (owner is None or r.connection not in lost)
        ]
        syncstate.record(session, kept)
    return lost


def sync_each(
    ledger: Ledger,
    settings: Settings,
    names: Sequence[str],
    *,
    full: bool,
    clients: Clients,
    progress: SyncProgress | None = None,
    clock: Clock = utcnow,
) -> list[SyncResult]:
    """Sync these connections now (``firmgrant sync``), the registry's pool of them at once;
    their results in the order given. No leases: an operator asked for exactly these; an
    org's outcome goes to the registry (``orgs list``) unless a worker holds it then."""

    def one(name: str) -> SyncResult:
        done = _sync_org(
            ledger,
            settings,
            clients,
            name,
            full=full,
            clock=clock,
            fetched=progress.fetched if progress else lambda records: None,
        )
        _record(ledger, settings, None, clock(), [done])
        result = done[0]
        if progress:
            progress.org_done(result.error is None)
        return result

    if len(names) == 1:
        return [one(names[0])]
    with ThreadPoolExecutor(settings.registry.pool, thread_name_prefix="sync") as pool:
        return list(pool.map(one, names))
