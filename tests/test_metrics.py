"""/metrics' grants by status: a scrape answers at once with the last count and its age;
a count older than COUNT_MAX_AGE is redone in the background and the next scrape has it."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from firmgrant.ledger import Ledger
from firmgrant.ledger.models import GrantRow
from firmgrant.metrics import COUNT_MAX_AGE, registry_for
from firmgrant.settings import Settings
from tests.lifecycling import FakeClock


def _add_grant(ledger: Ledger, number: int, clock: FakeClock) -> None:
    now = clock()
    row = GrantRow(
        connection="c", source_id=f"a0B{number:015d}", org_id="00D000000000001",
        grantee="FirmWorks Support", sf_status="Active", deleted=False, via_login_as=False,
        granted_at=now, expires_at=now + timedelta(days=30),
        modstamp=now, first_seen_at=now, updated_at=now,
    )  # fmt: skip
    with ledger.transaction() as session:
        session.add(row)


def _scrape(registry: object) -> dict[str, float]:
    text = generate_latest(registry).decode()  # type: ignore[arg-type]
    figures: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "firmgrant_grants" and sample.labels["status"] == "active":
                figures["active"] = sample.value
            if sample.name == "firmgrant_grants_counted_age_seconds":
                figures["age"] = sample.value
    return figures


def test_grant_counts_answer_at_once_and_are_recounted_when_old(ledger: Ledger) -> None:
    clock = FakeClock()
    _add_grant(ledger, 1, clock)
    registry, collector = registry_for(Settings(), ledger, clock)
    assert _scrape(registry) == {"active": 1, "age": 0}  # the first scrape counts

    _add_grant(ledger, 2, clock)
    clock.advance(timedelta(seconds=5))
    assert _scrape(registry) == {"active": 1, "age": 5}  # young enough: the last count

    clock.advance(COUNT_MAX_AGE)
    assert _scrape(registry)["active"] == 1  # old: answered at once, recounted behind it
    collector.grant_counts.wait(timeout=30)
    assert _scrape(registry) == {"active": 2, "age": 0}
