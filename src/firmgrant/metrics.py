"""Prometheus figures read from the ledger at each scrape: ``/metrics`` of ``firmgrant web``
and of ``firmgrant run --metrics-port``. One collector, so both say the same.

Grants by status are the exception: counting them evaluates the status rule on every grant
(~50 ms per 100,000), too slow for a scrape. They are recounted in a background thread when
a scrape finds them older than ``COUNT_MAX_AGE``, and that scrape, like every other, answers
at once with the last count and its age (``firmgrant_grants_counted_age_seconds``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from firmgrant.ledger import Ledger, dashboard
from firmgrant.lifecycle import DEFAULT_EXPIRING_WITHIN, OrgState
from firmgrant.settings import Settings
from firmgrant.timeutil import utcnow

COUNT_MAX_AGE = timedelta(seconds=15)  # a typical scrape interval: counts lag by at most two


class GrantCounts:
    """Grants by status as last counted; a stale count starts one recount in the background."""

    def __init__(
        self, settings: Settings, ledger: Ledger, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.settings, self.ledger, self.clock = settings, ledger, clock
        self._lock = threading.Lock()
        self._counted: tuple[dict[str, int], datetime] | None = None
        self._recount: threading.Thread | None = None

    def get(self) -> tuple[dict[str, int], datetime]:
        """The last count and when it was taken (counted now if there is none yet)."""
        with self._lock:
            counted = self._counted
            stale = counted is not None and self.clock() - counted[1] > COUNT_MAX_AGE
            if stale and (self._recount is None or not self._recount.is_alive()):
                self._recount = threading.Thread(
                    target=self._count, name="firmgrant-grant-counts", daemon=True
                )
                self._recount.start()
        return counted if counted is not None else self._count()

    def wait(self, timeout: float | None = None) -> None:
        """Until a recount in progress is done (for a caller that must see it land)."""
        if self._recount is not None:
            self._recount.join(timeout)

    def _count(self) -> tuple[dict[str, int], datetime]:
        now = self.clock()
        with self.ledger.sessions() as session:
            counts = dashboard.status_counts(
                session, now=now, window=DEFAULT_EXPIRING_WITHIN,
                max_duration=self.settings.policy.max_duration,
            )  # fmt: skip
        with self._lock:
            if self._counted is None or self._counted[1] <= now:
                self._counted = (counts, now)
            return self._counted


class LedgerCollector(Collector):
    """Grants by status, each connection's sync age, API remaining and state, and the
    revocation and outbox backlogs."""

    def __init__(
        self, settings: Settings, ledger: Ledger, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.settings, self.ledger, self.clock = settings, ledger, clock
        self.grant_counts = GrantCounts(settings, ledger, clock)

    def collect(self) -> Iterator[Metric]:
        counts, counted_at = self.grant_counts.get()
        now = self.clock()
        with self.ledger.sessions() as session:
            health = dashboard.connections(session, list(self.settings.connections))
            backlogs = dashboard.backlogs(session)
        grants = GaugeMetricFamily(
            "firmgrant_grants", "Grants in the ledger by status, as last counted",
            labels=["status"],
        )  # fmt: skip
        for status, count in counts.items():
            grants.add_metric([status], count)
        yield grants
        yield GaugeMetricFamily(
            "firmgrant_grants_counted_age_seconds",
            "Seconds since firmgrant_grants was counted (recounted in the background)",
            value=max((now - counted_at).total_seconds(), 0.0),
        )
        yield from self._connections(health, now)
        revocations = GaugeMetricFamily(
            "firmgrant_revocations_open", "Revocations not done yet, by state", labels=["state"]
        )
        for state, count in sorted(backlogs["revocations"].items()):
            revocations.add_metric([state], count)
        yield revocations
        outbox = GaugeMetricFamily(
            "firmgrant_outbox_unsent", "Emails not sent yet, by state", labels=["state"]
        )
        for state, count in sorted(backlogs["outbox"].items()):
            outbox.add_metric([state], count)
        yield outbox

    @staticmethod
    def _connections(health: list[dashboard.ConnectionHealth], now: datetime) -> Iterator[Metric]:
        age = GaugeMetricFamily(
            "firmgrant_last_sync_age_seconds", "Seconds since the last successful sync",
            labels=["connection"],
        )  # fmt: skip
        remaining = GaugeMetricFamily(
            "firmgrant_api_remaining", "Salesforce API calls left today, as last seen",
            labels=["connection"],
        )  # fmt: skip
        states = GaugeMetricFamily(
            "firmgrant_connections", "Connections by state", labels=["state"]
        )
        by_state = dict.fromkeys((s.value for s in OrgState), 0)
        for org in health:
            if org.last_success_at is not None:
                age.add_metric([org.name], (now - org.last_success_at).total_seconds())
            if org.api_remaining is not None:
                remaining.add_metric([org.name], org.api_remaining)
            if org.state:
                by_state[org.state] = by_state.get(org.state, 0) + 1
        for state, count in by_state.items():
            states.add_metric([state], count)
        yield from (age, remaining, states)


def registry_for(
    settings: Settings, ledger: Ledger, clock: Callable[[], datetime] = utcnow
) -> tuple[CollectorRegistry, LedgerCollector]:
    registry = CollectorRegistry(auto_describe=False)
    collector = LedgerCollector(settings, ledger, clock)
    registry.register(collector)
    return registry, collector


def serve_metrics(settings: Settings, ledger: Ledger, port: int, host: str = "0.0.0.0") -> None:  # noqa: S104 (a scrape target)
    """``/metrics`` on its own port in a daemon thread (the worker's ``--metrics-port``)."""
    start_http_server(port, addr=host, registry=registry_for(settings, ledger)[0])
