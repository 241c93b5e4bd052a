"""The sandbox's SOQL subset: every supported clause, and the errors for everything else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from simple_salesforce.exceptions import SalesforceMalformedRequest

from firmgrant.sandbox import SandboxOrg
from firmgrant.sandbox.schema import GRANT
from firmgrant.sandbox.soql import SoqlError, sf_datetime
from firmgrant.sandbox.store import OrgStore
from tests.sandboxing import independent_client

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store() -> OrgStore:
    store = OrgStore(clock=lambda: T0)
    rows = [
        ("Acme", "1 Day", "Active", False, None, 0),
        ("acme labs", "1 Week", "Active", True, "admin@acme.example", 1),
        ("Bäckerei 100%", "1 Year", "Revoked", False, None, 2),
        ("O'Brien_Sons", None, "Expired", False, None, 3),
    ]
    for name, duration, status, login_as, user, hours in rows:
        store.put(
            GRANT,
            {
                "Org_Id__c": f"00D{hours:012d}",
                "Org_Name__c": name,
                "Grantee__c": "FirmWorks Support",
                "Access_Duration__c": duration,
                "Status__c": status,
                "Granted_Via_Login_As__c": login_as,
                "Login_As_User__c": user,
                "Granted_At__c": sf_datetime(T0 + timedelta(hours=hours)),
            },
            at=T0 + timedelta(hours=hours),
        )
    return store


def names(store: OrgStore, where: str, *, order: str = "Org_Name__c ASC") -> list[str]:
    page = store.query(
        f"SELECT Org_Name__c FROM Login_Access_Grant__c {where} ORDER BY {order}",
        include_deleted=False,
        batch_size=2000,
    )
    return [r["Org_Name__c"] for r in page["records"]]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("WHERE Org_Name__c = 'ACME'", ["Acme"]),  # text compares case-insensitively
        ("WHERE Org_Name__c != 'Acme'", ["acme labs", "Bäckerei 100%", "O'Brien_Sons"]),
        ("WHERE Org_Name__c <> 'Acme'", ["acme labs", "Bäckerei 100%", "O'Brien_Sons"]),
        ("WHERE Granted_At__c < 2026-11-01T13:00:00Z", ["Acme"]),
        ("WHERE Granted_At__c <= 2026-11-01T13:00:00Z", ["Acme", "acme labs"]),
        ("WHERE Granted_At__c > 2026-11-01T14:00:00.000+0000", ["O'Brien_Sons"]),
        ("WHERE Granted_At__c >= 2026-11-01T16:00:00+02:00", ["Bäckerei 100%", "O'Brien_Sons"]),
        ("WHERE Granted_Via_Login_As__c = true", ["acme labs"]),
        ("WHERE Granted_Via_Login_As__c = FALSE AND Status__c = 'Active'", ["Acme"]),
        ("WHERE Status__c = 'Revoked' OR Status__c = 'Expired'", ["Bäckerei 100%", "O'Brien_Sons"]),
        ("WHERE NOT Status__c = 'Active'", ["Bäckerei 100%", "O'Brien_Sons"]),
        (
            "WHERE (Status__c = 'Active' OR Status__c = 'Expired') "
            "AND Granted_Via_Login_As__c = false",
            ["Acme", "O'Brien_Sons"],
        ),
        ("WHERE Status__c IN ('Revoked', 'Expired')", ["Bäckerei 100%", "O'Brien_Sons"]),
        ("WHERE Status__c NOT IN ('Revoked', 'Expired')", ["Acme", "acme labs"]),
        ("WHERE Org_Name__c LIKE 'acme%'", ["Acme", "acme labs"]),
        ("WHERE Org_Name__c LIKE '%100\\%'", ["Bäckerei 100%"]),
        ("WHERE Org_Name__c LIKE 'O\\'Brien\\_Sons'", ["O'Brien_Sons"]),
        ("WHERE Org_Name__c LIKE 'A_me'", ["Acme"]),
        ("WHERE Access_Duration__c = null", ["O'Brien_Sons"]),
        ("WHERE Login_As_User__c != null", ["acme labs"]),
        ("WHERE Org_Id__c = '00D000000000002'", ["Bäckerei 100%"]),
        ("", ["Acme", "acme labs", "Bäckerei 100%", "O'Brien_Sons"]),
    ],
)
def test_where_clauses(store: OrgStore, where: str, expected: list[str]) -> None:
    assert names(store, where) == expected


def test_order_by_limit_offset_and_nulls(store: OrgStore) -> None:
    assert names(store, "", order="Granted_At__c DESC") == [
        "O'Brien_Sons",
        "Bäckerei 100%",
        "acme labs",
        "Acme",
    ]
    assert names(store, "", order="Access_Duration__c ASC NULLS LAST, Org_Name__c DESC") == [
        "Acme",
        "acme labs",
        "Bäckerei 100%",
        "O'Brien_Sons",
    ]
    assert names(store, "", order="Access_Duration__c ASC")[0] == "O'Brien_Sons"  # nulls first
    page = store.query(
        "SELECT Id FROM Login_Access_Grant__c ORDER BY Org_Name__c LIMIT 2 OFFSET 1",
        include_deleted=False,
        batch_size=2000,
    )
    assert page["totalSize"] == 2


def test_count_and_deleted_rows(store: OrgStore) -> None:
    record = next(iter(store.records["login_access_grant__c"].values()))
    store.delete(GRANT, record["Id"])
    count = "SELECT COUNT() FROM Login_Access_Grant__c"
    assert store.query(count, include_deleted=False, batch_size=2000)["totalSize"] == 3
    assert store.query(count, include_deleted=True, batch_size=2000) == {
        "totalSize": 4,
        "done": True,
        "records": [],
    }


def test_modstamp_filter_sees_later_changes_in_modstamp_order(store: OrgStore) -> None:
    later = T0 + timedelta(hours=5)
    store.clock = lambda: later
    record = next(iter(store.records["login_access_grant__c"].values()))
    store.touch(GRANT, record, {"Org_Name__c": "Acme renamed"})
    soql = (
        "SELECT Org_Name__c FROM Login_Access_Grant__c WHERE Grantee__c IN ('FirmWorks "
        "Support') AND SystemModstamp > 2026-11-01T14:30:00Z"
    )
    page = store.query(soql, include_deleted=True, batch_size=2000)
    assert [r["Org_Name__c"] for r in page["records"]] == ["O'Brien_Sons", "Acme renamed"]


@pytest.mark.parametrize(
    ("soql", "code", "fragment"),
    [
        ("SELECT Id FROM", "MALFORMED_QUERY", "unexpected token: <EOF>"),
        ("SELECT Id FROM Login_Access_Grant__c WHERE", "MALFORMED_QUERY", "ERROR at Row:1"),
        ("SELECT Id, FROM Login_Access_Grant__c", "MALFORMED_QUERY", "unexpected token"),
        ("SELECT Id FROM Login_Access_Grant__c GROUP BY Id", "MALFORMED_QUERY", "GROUP"),
        ("SELECT MAX(Granted_At__c) FROM Login_Access_Grant__c", "MALFORMED_QUERY", "unexpected"),
        ("SELECT Owner.Name FROM Login_Access_Grant__c", "INVALID_FIELD", "No such column"),
        ("SELECT Foo__c FROM Login_Access_Grant__c", "INVALID_FIELD", "No such column 'Foo__c'"),
        ("SELECT Id FROM Account", "INVALID_TYPE", "sObject type 'Account' is not supported"),
        (
            "SELECT Id FROM Login_Access_Grant__c WHERE Granted_At__c > '2026-01-01'",
            "INVALID_FIELD",
            "must be of type dateTime and should not be enclosed in quotes",
        ),
        (
            "SELECT Id FROM Login_Access_Grant__c WHERE Granted_Via_Login_As__c = 'true'",
            "INVALID_FIELD",
            "must be of type boolean",
        ),
        (
            "SELECT Id FROM Login_Access_Grant__c WHERE Granted_At__c LIKE '2026%'",
            "INVALID_FIELD",
            "must be of type dateTime",
        ),
        (
            "SELECT Id FROM Login_Access_Grant__c OFFSET 2001",
            "NUMBER_OUTSIDE_VALID_RANGE",
            "Maximum SOQL offset",
        ),
    ],
)
def test_unsupported_or_wrong_queries(store: OrgStore, soql: str, code: str, fragment: str) -> None:
    with pytest.raises(SoqlError) as caught:
        store.query(soql, include_deleted=False, batch_size=2000)
    assert caught.value.code == code
    assert fragment in caught.value.message


def test_query_errors_travel_as_salesforce_error_bodies(sandbox: SandboxOrg) -> None:
    sf = independent_client(sandbox)
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.query("SELECT Id FROM Login_Access_Grant__c WHERE")
    assert caught.value.content[0]["errorCode"] == "MALFORMED_QUERY"  # type: ignore[index]
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.query("SELECT Nope__c FROM Login_Access_Grant__c")
    assert caught.value.content[0]["errorCode"] == "INVALID_FIELD"  # type: ignore[index]


def test_an_unknown_locator_is_refused(sandbox: SandboxOrg) -> None:
    sf = independent_client(sandbox)
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.query_more("/services/data/v62.0/query/01g5e0000000999AAA-2000", identifier_is_url=True)
    assert caught.value.content[0]["errorCode"] == "INVALID_QUERY_LOCATOR"  # type: ignore[index]


def test_the_last_page_can_be_asked_for_again(store: OrgStore) -> None:
    """A client that timed out reading the last page retries the same nextRecordsUrl."""
    first = store.query("SELECT Id FROM Login_Access_Grant__c", include_deleted=False, batch_size=2)
    locator = first["nextRecordsUrl"].rsplit("/", 1)[1].split("-")[0]
    last = store.page(locator, 2, 2)
    again = store.page(locator, 2, 2)
    assert last["done"] is True
    assert again == last


RACE = """
import importlib, threading
import firmgrant.sandbox.soql as soql
from firmgrant.sandbox.schema import OBJECTS
failed = 0
for _ in range(20):
    importlib.reload(soql)  # fresh parse actions: pyparsing learns their arity on first use
    barrier, errors = threading.Barrier(8), []
    def parse():
        barrier.wait()
        try:
            soql.parse_query(
                "SELECT Id FROM SetupAuditTrail WHERE CreatedDate > 2026-01-01T00:00:00Z "
                "AND Action IN ('a', 'b') AND Display LIKE 'x%' ORDER BY CreatedDate LIMIT 5",
                OBJECTS,
            )
        except Exception as exc:
            errors.append(exc)
    threads = [threading.Thread(target=parse) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failed += bool(errors)
print(failed)
"""


def test_queries_parsed_by_many_threads_at_once_all_succeed() -> None:
    """The sandbox answers each request in its own thread: a freshly started org hit by a
    pool of workers answered some first queries with a 500 (pyparsing's TypeError)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", RACE], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "0", done.stderr[-2000:]
