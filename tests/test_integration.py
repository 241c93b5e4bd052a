"""The worker against the sandbox org over HTTPS, no mocks: the ledger must match the org."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select

from firmgrant.jobs.sync import SyncResult, sync_connection
from firmgrant.ledger import Ledger, verify_chain
from firmgrant.ledger.models import GrantRow
from firmgrant.sandbox import VENDOR, FaultPlan, SandboxOrg
from firmgrant.settings import SyncSettings
from tests.sandboxing import sandbox_connection, vendor


def sync(ledger: Ledger, org: SandboxOrg, *, full: bool = False, **connection: Any) -> SyncResult:
    return sync_connection(
        ledger,
        "sandbox",
        sandbox_connection(org, **connection),
        vendor(org),
        SyncSettings(api_floor=0),
        full=full,
    )


def org_view(org: SandboxOrg) -> dict[str, tuple[Any, ...]]:
    """What the org holds for the vendor, in the ledger's terms."""
    return {
        r["Id"]: (
            datetime.fromisoformat(r["Expires_At__c"]),
            r["Status__c"],
            bool(r["IsDeleted"]),
            r["Org_Name__c"],
            r["Granted_Via_Login_As__c"],
        )
        for r in org.store.records["login_access_grant__c"].values()
        if r["Grantee__c"] == VENDOR
    }


def ledger_view(ledger: Ledger) -> dict[str, tuple[Any, ...]]:
    with ledger.sessions() as session:
        return {
            g.source_id: (g.expires_at, g.sf_status, g.deleted, g.org_name, g.via_login_as)
            for g in session.execute(select(GrantRow)).scalars()
        }


def assert_mirrored(ledger: Ledger, org: SandboxOrg) -> None:
    assert ledger_view(ledger) == org_view(org)
    with ledger.sessions() as session:
        assert verify_chain(session).ok


def test_initial_sync_across_pages_then_every_kind_of_change(
    ledger: Ledger, sandbox: SandboxOrg
) -> None:
    sandbox.customers.seed(2500, other_grantees=20)

    first = sync(ledger, sandbox, batch_size=500)

    assert (first.inserted, first.api_calls, first.error) == (2500, 5, None)
    assert_mirrored(ledger, sandbox)

    customers = sandbox.customers
    ids = list(org_view(sandbox))
    customers.grant(duration="1 Day", org_name='Zoë <script>alert(1)</script> & "Co"')
    customers.grant(login_as_user="admin@customer.example")
    customers.extend(ids[0], "1 Year")
    customers.revoke(ids[1])
    customers.delete(ids[2])

    second = sync(ledger, sandbox, batch_size=500)

    assert (second.inserted, second.updated, second.deleted, second.rejected) == (2, 2, 1, 1)
    assert second.api_calls == 1
    assert_mirrored(ledger, sandbox)


@pytest.mark.parametrize(
    ("plan", "connection", "fault", "recovery"),
    [
        (FaultPlan(expire_every=3), {}, "expired", "re-authenticating"),
        (FaultPlan(rate_503=0.3), {}, "503", "retrying query"),
        (
            FaultPlan(slow_rate=0.4, slow_seconds=1.0),
            {"timeout_seconds": 0.3},
            "slow",
            "retrying query",
        ),
    ],
    ids=["session-expiry", "503s", "timeouts"],
)
def test_faults_during_sync_still_end_with_an_exact_mirror(
    ledger: Ledger,
    sandbox: SandboxOrg,
    caplog: pytest.LogCaptureFixture,
    plan: FaultPlan,
    connection: dict[str, Any],
    fault: str,
    recovery: str,
) -> None:
    sandbox.customers.seed(1200)
    sandbox.faults.plan = plan

    with caplog.at_level(logging.INFO, logger="firmgrant.salesforce"):
        result = sync(ledger, sandbox, batch_size=200, **connection)
        for record_id in list(org_view(sandbox))[:5]:
            sandbox.customers.revoke(record_id)
        again = sync(ledger, sandbox, batch_size=200, **connection)

    assert (result.error, result.inserted) == (None, 1200)
    assert (again.error, again.updated) == (None, 5)
    assert_mirrored(ledger, sandbox)
    # The faults really came, and firmgrant recovered from each one (no other fault came).
    met = sandbox.faults.injected
    assert set(met) == {fault}
    recoveries = [r.getMessage() for r in caplog.records if recovery in r.getMessage()]
    assert len(recoveries) == met[fault], recoveries


def test_the_daily_limit_running_out_ends_the_cycle_and_the_next_one_finishes(
    ledger: Ledger, sandbox: SandboxOrg
) -> None:
    sandbox.customers.seed(1000)
    sandbox.faults.plan = FaultPlan(daily_limit=2)

    stopped = sync(ledger, sandbox, batch_size=200)
    state = ledger.sync_state("sandbox", "object")
    sandbox.faults.plan = FaultPlan()  # the org's 24-hour window moved on
    finished = sync(ledger, sandbox, batch_size=200)

    assert stopped.error_kind == "api_limit"
    assert stopped.inserted == 400, "the two pages read before the limit were kept"
    assert "TotalRequests Limit exceeded" in (state.last_error or "")
    assert (finished.error, finished.inserted) == (None, 600)
    assert_mirrored(ledger, sandbox)


def test_malformed_records_from_the_org_are_skipped_and_reported(
    ledger: Ledger, sandbox: SandboxOrg
) -> None:
    sandbox.customers.seed(30, malformed=3)
    result = sync(ledger, sandbox)
    assert (result.fetched, result.inserted, result.invalid) == (33, 30, 3)


def test_full_sync_against_the_org(ledger: Ledger, sandbox: SandboxOrg) -> None:
    sandbox.customers.seed(50)
    sync(ledger, sandbox)
    purged = next(iter(org_view(sandbox)))
    del sandbox.store.records["login_access_grant__c"][purged]

    full = sync(ledger, sandbox, full=True)

    assert (full.fetched, full.deleted) == (49, 1)
    assert ledger_view(ledger)[purged][2] is True


def test_the_connections_own_ca_bundle_wins_over_requests_environment_variables(
    ledger: Ledger, sandbox: SandboxOrg, monkeypatch: pytest.MonkeyPatch
) -> None:
    import certifi

    # Public CAs only: with these, plain requests would refuse the sandbox's certificate.
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.setenv(name, certifi.where())
    sandbox.customers.seed(10)

    result = sync(ledger, sandbox)

    assert (result.error, result.inserted) == (None, 10)
