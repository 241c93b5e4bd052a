"""The connection registry: `firmgrant orgs`, its bad input, its secrets, and the worker
polling registered orgs against the sandbox's customer orgs with broken ones among them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from firmgrant.cli import main
from firmgrant.errors import RegistryError
from firmgrant.ledger import Ledger
from firmgrant.lifecycle import OrgState
from firmgrant.sandbox import SandboxOrg
from firmgrant.sandbox.faults import FaultInjector, FaultPlan
from firmgrant.sandbox.tenants import CustomerOrg, TenantOptions
from firmgrant.settings import Settings
from firmgrant.worker import Worker
from tests.lifecycling import SUPPORT

GOOD = "https://acme.my.salesforce.com"


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, database_url: str, ledger: Ledger) -> Ledger:
    monkeypatch.setenv("FIRMGRANT_DATABASE_URL", database_url)
    return ledger


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def listed(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    code, out, _ = run(capsys, "orgs", "list", "--json")
    assert code == 0
    return list(json.loads(out))


def test_orgs_are_added_listed_disabled_enabled_and_removed(
    cli: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    add = ["orgs", "add", "acme", "--login-url", GOOD, "--username", "int@acme.example"]
    assert (
        run(capsys, *add, "--org-id", "00D5e000003BCefEAG", "--admin-email", "a@acme.example")[0]
        == 0
    )
    assert run(capsys, "orgs", "add", "bakery", "--login-url", "https://bakery.my.salesforce.com",
               "--username", "int@bakery.example", "--date-order", "DMY")[0] == 0  # fmt: skip
    assert run(capsys, "orgs", "disable", "bakery")[0] == 0

    orgs = {org["name"]: org for org in listed(capsys)}

    assert orgs["acme"]["org_id"] == "00D5e000003BCefEAG"
    assert orgs["acme"]["admin_emails"] == ["a@acme.example"]
    assert (orgs["acme"]["state"], orgs["bakery"]["state"]) == ("new", "disabled")
    assert orgs["bakery"]["date_order"] == "DMY"
    assert run(capsys, "orgs", "enable", "bakery")[0] == 0
    assert run(capsys, "orgs", "remove", "acme")[0] == 0
    assert [(o["name"], o["state"]) for o in listed(capsys)] == [("bakery", "new")]
    code, _, err = run(capsys, "orgs", "show", "acme")
    assert (code, err.strip()) == (
        2,
        "firmgrant: no org 'acme' in the registry (see `firmgrant orgs list`)",
    )


def test_orgs_list_piped_is_one_org_a_line_in_natural_order_with_schedule_and_failures(
    cli: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("org10", "org2", "org1"):
        assert run(capsys, "orgs", "add", name, "--login-url", GOOD,
                   "--username", f"int@{name}.example")[0] == 0  # fmt: skip
    error = "Salesforce said INVALID_SESSION_ID: " + "the session expired or is invalid; " * 4
    with cli.transaction() as session:
        session.execute(
            text("UPDATE orgs SET failures = 3, state = 'unreachable', last_error = :e "
                 "WHERE name = 'org2'"), {"e": error},
        )  # fmt: skip
    assert run(capsys, "orgs", "disable", "org2")[0] == 0

    code, out, _ = run(capsys, "orgs", "list")

    lines = [line.split("\t") for line in out.splitlines()]
    assert code == 0
    assert lines[0] == ["Name", "Org", "Source", "State", "Last sync (UTC)", "Next sync (UTC)",
                        "Failures", "API", "Last error"]  # fmt: skip
    rows = {cells[0]: dict(zip(lines[0], cells, strict=True)) for cells in lines[1:]}
    assert list(rows) == ["org1", "org2", "org10"]
    assert (rows["org2"]["State"], rows["org2"]["Failures"]) == ("disabled", "3")
    assert rows["org2"]["Last error"] == " ".join(error.split())  # whole, on its line
    assert rows["org2"]["Next sync (UTC)"] == "—"
    assert (rows["org1"]["Next sync (UTC)"][:2], rows["org1"]["State"]) == ("20", "new")


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--org-id", "00X5e000003BCef"], "org_id: Value error, must be a 15 or 18 character"),
        (["--login-url", "http://acme.example"], "login_url: Value error, must be an https:// URL"),
        (["--time-zone", "Mars/Olympus"], "time_zone: Value error, 'Mars/Olympus' is not an IANA"),
        (["--admin-email", "nobody"], "admin_emails: Value error, must be an email address"),
    ],
)
def test_bad_org_input_is_refused_with_the_field_named(
    cli: Ledger, capsys: pytest.CaptureFixture[str], extra: list[str], says: str
) -> None:
    argv = ["orgs", "add", "acme", "--login-url", GOOD, "--username", "int@acme.example"]
    code, _, err = run(capsys, *argv, *extra)
    assert code == 2
    assert says in err
    assert listed(capsys) == []


def test_a_duplicate_org_is_refused(cli: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["orgs", "add", "acme", "--login-url", GOOD, "--username", "int@acme.example"]
    assert run(capsys, *argv, "--org-id", "00D5e000003BCef")[0] == 0
    code, _, err = run(capsys, *argv)
    assert (code, "org 'acme' is already registered" in err) == (2, True)
    again = ["orgs", "add", "other", "--login-url", GOOD, "--username", "x@y.example"]
    code, _, err = run(capsys, *again, "--org-id", "00D5e000003BCefEAG")
    assert (code, "org id 00D5e000003BCefEAG is already registered" in err) == (2, True)


def test_a_csv_with_one_broken_row_imports_nothing_and_names_the_row(
    cli: Ledger, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    good = tmp_path / "orgs.csv"
    header = "name,login_url,username,org_id,source,date_order,time_zone,admin_emails\n"
    good.write_text(
        header
        + f"acme,{GOOD},int@acme.example,00D5e000003BCef,audit,MDY,UTC,"
        + "a@acme.example;b@acme.example\n"
        + "bakery,https://bakery.my.salesforce.com,int@bakery.example,,audit,DMY,Europe/Berlin,\n",
        encoding="utf-8",
    )
    broken = tmp_path / "broken.csv"
    broken.write_text(
        header
        + f"one,{GOOD},int@one.example,,audit,MDY,UTC,\n"
        + "two,https://two.example,int@two.example,00Dbad,audit,MDY,UTC,\n",
        encoding="utf-8",
    )

    code, _, err = run(capsys, "orgs", "import", str(broken))
    assert code == 2
    assert f"{broken} line 3: org_id: Value error" in err
    assert listed(capsys) == []
    assert run(capsys, "orgs", "import", str(good))[0] == 0
    orgs = {o["name"]: o for o in listed(capsys)}
    assert orgs["acme"]["admin_emails"] == ["a@acme.example", "b@acme.example"]
    assert orgs["bakery"]["time_zone"] == "Europe/Berlin"
    code, _, err = run(capsys, "orgs", "import", str(good))
    assert (code, "already registered" in err) == (2, True)
    assert len(listed(capsys)) == 2, "a second import of the same file adds nothing"


@pytest.mark.parametrize(
    ("second", "says"),
    [
        ("acme,https://b.my.salesforce.com,i@b.example,,", "line 3: org 'acme' is given twice"),
        ("b,https://b.my.salesforce.com,i@b.example,00D5e000003BCefEAG,",
         "line 3: org id '00D5e000003BCef' is given twice (first on line 2)"),
    ],
)  # fmt: skip
def test_a_csv_giving_one_org_twice_imports_nothing_and_names_both_lines(
    cli: Ledger, capsys: pytest.CaptureFixture[str], tmp_path: Path, second: str, says: str
) -> None:
    twice = tmp_path / "twice.csv"
    twice.write_text(
        "name,login_url,username,org_id,source\n"
        f"acme,{GOOD},int@acme.example,00D5e000003BCef,audit\n{second}audit\n",
        encoding="utf-8",
    )
    code, _, err = run(capsys, "orgs", "import", str(twice))
    assert code == 2
    assert says in err
    assert listed(capsys) == []


def test_an_orgs_secret_is_sealed_never_shown_and_survives_a_key_rotation(
    cli: Ledger,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    monkeypatch.setenv("FIRMGRANT_REGISTRY__KEYS", old)
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("s3cret-value\n"))
    argv = ["orgs", "add", "acme", "--login-url", GOOD, "--username", "int@acme.example"]
    assert run(capsys, *argv, "--secret-stdin")[0] == 0
    code, shown, _ = run(capsys, "orgs", "show", "acme")
    assert code == 0
    assert "s3cret" not in shown
    assert json.loads(shown)["has_secret"] is True
    with cli.engine.connect() as connection:
        stored = connection.execute(text("SELECT secret FROM orgs")).scalar_one()
    assert "s3cret" not in stored

    monkeypatch.setenv("FIRMGRANT_REGISTRY__KEYS", f"{new},{old}")
    assert run(capsys, "orgs", "rotate-keys")[0] == 0
    with cli.engine.connect() as connection:
        rotated = connection.execute(text("SELECT secret FROM orgs")).scalar_one()
    assert Fernet(new.encode()).decrypt(rotated.encode()) == b"s3cret-value"

    monkeypatch.setenv("FIRMGRANT_REGISTRY__KEYS", Fernet.generate_key().decode())
    from firmgrant.ledger import registry
    from firmgrant.orgs import connection as org_connection
    from firmgrant.settings import load_settings

    with cli.sessions() as session:
        row = registry.find(session, "acme")
    with pytest.raises(
        Exception, match="does not open with any of FIRMGRANT_REGISTRY__KEYS"
    ) as raised:
        org_connection(load_settings(), row)
    assert "s3cret" not in str(raised.value)


# -- the worker over registered orgs -------------------------------------------------------
def registry_settings(org: SandboxOrg, database_url: str, **overrides: Any) -> Settings:
    return Settings(
        database_url=database_url,
        registry={
            "client_id": org.app.client_id,
            "private_key_file": org.state / "jwt.key",
            "ca_bundle": org.state / "tls.crt",
            "pool": 3,
        },
        vendor={
            "publisher_org_id": org.app.org_id,
            "support_usernames": ["*@firmworks.example"],
            "support_email": SUPPORT,
        },
        sync={"api_floor": 0},
        mail={"backend": "file", "file_dir": org.state / "outbox"},
        **overrides,
    )


def register(ledger: Ledger, org: SandboxOrg, tenants: list[CustomerOrg], **names: str) -> None:
    from firmgrant.ledger import registry
    from firmgrant.orgs import new_row, spec
    from firmgrant.timeutil import utcnow

    with ledger.transaction() as session:
        registry.add(
            session,
            [
                new_row(
                    spec(
                        {
                            "name": f"org{t.number}",
                            "login_url": org.base_url,
                            "username": names.get(f"org{t.number}", t.integration_username),
                        },
                        "test",
                    ),
                    utcnow(),
                )
                for t in tenants
            ],
        )


def test_broken_orgs_are_marked_and_backed_off_while_the_others_finish(
    sandbox: SandboxOrg, ledger: Ledger, database_url: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    tenants = [sandbox.tenants.add() for _ in range(3)]
    tenants.append(sandbox.tenants.add(TenantOptions(view_setup=False)))
    tenants += [sandbox.tenants.add() for _ in range(2)]
    for tenant in tenants:
        tenant.grant(f"jane@{tenant.domain}", 7, vendor=("FirmWorks Support", sandbox.app.org_id))
    tenants[4].api.api_used = 10**9  # over its daily limit
    tenants[5].api.faults = FaultInjector(FaultPlan(rate_503=1.0))  # down
    register(ledger, sandbox, tenants, org1="nobody@customer1.example")  # a refused token
    settings = registry_settings(sandbox, database_url)

    result = Worker(settings, ledger).cycle()

    states = {s.connection: s for s in result.syncs}
    assert sorted(states) == [f"org{n}" for n in range(1, 7)]
    monkeypatch.setenv("FIRMGRANT_DATABASE_URL", database_url)
    orgs = {o["name"]: o for o in listed(capsys)}
    assert {name: o["state"] for name, o in orgs.items()} == {
        "org1": OrgState.AUTH_FAILED,
        "org2": OrgState.OK,
        "org3": OrgState.OK,
        "org4": OrgState.NO_PERMISSION,
        "org5": OrgState.OVER_BUDGET,
        "org6": OrgState.UNREACHABLE,
    }
    assert "sObject type 'SetupAuditTrail' is not supported" in str(orgs["org4"]["last_error"])
    assert (orgs["org2"]["failures"], orgs["org1"]["failures"]) == (0, 1)
    assert orgs["org1"]["next_sync_at"] > orgs["org2"]["next_sync_at"], "a failing org backs off"
    with ledger.sessions() as session:
        from firmgrant.ledger.queries import list_grants
        from firmgrant.timeutil import utcnow

        held = {
            g.connection
            for g in list_grants(session, now=utcnow(), max_duration=settings.policy.max_duration)
        }
    assert held == {"org2", "org3"}, "the working orgs' grants are mirrored"
    second = Worker(settings, ledger).cycle()
    assert second.syncs == [], "nothing is due again before the next poll"


def test_check_org_explains_one_registered_org(
    sandbox: SandboxOrg, ledger: Ledger, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from firmgrant.cli import _check

    tenants = [sandbox.tenants.add(), sandbox.tenants.add(TenantOptions(view_setup=False))]
    register(ledger, sandbox, tenants)
    settings = registry_settings(sandbox, database_url)

    assert _check(settings, "org1") == 0
    good = capsys.readouterr().out
    assert _check(settings, "org2") == 1
    blind = capsys.readouterr().out

    assert "ok   connection org1: reads the Setup Audit Trail of org " in good
    assert "org2" not in good, "only the org asked for is checked"
    assert "FAIL connection org2: cannot read the Setup Audit Trail" in blind
    with pytest.raises(RegistryError, match="no org 'org9' in the registry"):
        _check(settings, "org9")


def test_a_cycle_longer_than_the_poll_interval_syncs_each_org_once_and_ends(
    sandbox: SandboxOrg, ledger: Ledger, database_url: str
) -> None:
    """10,000 orgs take longer than a minute: an org synced early comes due again before the
    cycle ends, and must wait for the next cycle instead of keeping this one going."""
    from datetime import timedelta

    from firmgrant.jobs.poll import Clients, poll
    from firmgrant.timeutil import utcnow

    tenants = [sandbox.tenants.add() for _ in range(8)]
    register(ledger, sandbox, tenants)
    worker = Worker(registry_settings(sandbox, database_url, poll_seconds=5), ledger)
    settings = worker.current_settings()  # with the registry's orgs as connections
    ticks = iter(range(10**6))
    start = utcnow()

    def clock() -> Any:  # every reading a minute later: each org's sync outlasts the poll
        return start + timedelta(minutes=next(ticks))

    def enough() -> bool:  # a cycle that would never end is cut short here, and fails below
        return sum(int(t.api.api_used) for t in tenants) > 6 * len(tenants)

    results = poll(ledger, settings, Clients(), clock=clock, owner="w1",
                   full_due=lambda state: False, stop=enough)  # fmt: skip
    synced = [result.connection for result, _ in results]
    assert sorted(synced) == sorted(f"org{t.number}" for t in tenants)


def test_an_idle_cycle_asks_no_token_and_opens_no_connection_beyond_the_client_cache(
    sandbox: SandboxOrg, ledger: Ledger, database_url: str
) -> None:
    """Thousands of orgs, more than the clients kept: each org's token is kept for its next
    client and one HTTPS pool serves them all, so the steady state is one API call an org."""
    from firmgrant.jobs.poll import Clients

    tenants = [sandbox.tenants.add() for _ in range(6)]
    for tenant in tenants:
        tenant.grant(f"jane@{tenant.domain}", 7, vendor=("FirmWorks Support", sandbox.app.org_id))
    register(ledger, sandbox, tenants)
    settings = registry_settings(sandbox, database_url)
    worker = Worker(settings, ledger)
    worker.clients = Clients(size=2, connections=settings.registry.pool)  # fewer than the orgs
    first = worker.cycle()
    assert sum(s.inserted for s in first.syncs) == 6
    tokens, connections = sandbox.sessions.issued, sandbox.tls_connections
    assert tokens == 6
    assert 1 <= connections <= settings.registry.pool
    with ledger.transaction() as session:  # the next poll has come
        session.execute(text("UPDATE orgs SET next_sync_at = last_sync_at"))

    idle = worker.cycle()

    assert sorted(s.connection for s in idle.syncs) == [f"org{t.number}" for t in tenants]
    assert [s.api_calls for s in idle.syncs] == [1] * 6
    assert sandbox.sessions.issued == tokens, "no token asked again"
    # The pool's threads may overlap more in this cycle than in the first (a third connection
    # once, in `make test`); twelve syncs on at most `pool` connections is the reuse.
    assert connections <= sandbox.tls_connections <= settings.registry.pool, "kept-alive reuse"


def test_a_kept_token_the_org_has_ended_is_replaced_on_its_first_refusal(
    sandbox: SandboxOrg, ledger: Ledger, database_url: str
) -> None:
    from firmgrant.jobs.poll import Clients

    tenants = [sandbox.tenants.add() for _ in range(3)]
    register(ledger, sandbox, tenants)
    settings = registry_settings(sandbox, database_url)
    worker = Worker(settings, ledger)
    worker.clients = Clients(size=1)
    worker.cycle()
    sandbox.sessions.expire_all()  # an admin ended every session: the kept tokens are dead
    with ledger.transaction() as session:
        session.execute(text("UPDATE orgs SET next_sync_at = last_sync_at"))

    again = worker.cycle()

    assert [s.error for s in again.syncs] == [None] * 3
    assert sandbox.sessions.issued == 6, "one new token an org"
