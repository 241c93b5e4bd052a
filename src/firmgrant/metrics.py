"""Prometheus figures read from the ledger at each scrape: ``/metrics`` of ``firmgrant web``
and of ``firmgrant run --metrics-port``. One collector, so both say the same."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from firmgrant.ledger import Ledger, dashboard
from firmgrant.lifecycle import DEFAULT_EXPIRING_WITHIN, OrgState
from firmgrant.settings import Settings
from firmgrant.timeutil import utcnow


class LedgerCollector(Collector):
    """Grants by status, each connection's sync age, API remaining and state, and the
    revocation and outbox backlogs."""

    def __init__(
        self, settings: Settings, ledger: Ledger, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.settings, self.ledger, self.clock = settings, ledger, clock

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        with self.ledger.sessions() as session:
            counts = dashboard.status_counts(
                session, now=now, window=DEFAULT_EXPIRING_WITHIN,
                max_duration=self.settings.policy.max_duration,
            )  # fmt: skip
            health = dashboard.connections(session, list(self.settings.connections))
            backlogs = dashboard.backlogs(session)
        grants = GaugeMetricFamily(
            "firmgrant_grants", "Grants in the ledger by status", labels=["status"]
        )
        for status, count in counts.items():
            grants.add_metric([status], count)
        yield grants
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
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LedgerCollector(settings, ledger, clock))
    return registry


def serve_metrics(settings: Settings, ledger: Ledger, port: int, host: str = "0.0.0.0") -> None:  # noqa: S104 (a scrape target)
    """``/metrics`` on its own port in a daemon thread (the worker's ``--metrics-port``)."""
    start_http_server(port, addr=host, registry=registry_for(settings, ledger))
