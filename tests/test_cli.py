"""The command line as a user runs it: output formats, exit codes, sync end to end."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from firmgrant.cli import main
from firmgrant.ledger import Ledger
from tests.fakeorg import CLIENT_ID, CLIENT_SECRET, LOGIN_URL, FakeOrg, sf_time
from tests.lifecycling import SmtpServer, free_port

# The keys of `grants --format json`, as DESIGN.md fixes them (scripts read them).
DESIGNED_KEYS = [
    "id",
    "connection",
    "org_id",
    "org_name",
    "grantor_username",
    "grantor_email",
    "grantee",
    "granted_at",
    "expires_at",
    "status",
    "via_login_as",
    "login_as_user",
    "source_id",
    "revoked_at",
    "revoke_reason",
    "ends_at",  # beyond DESIGN's keys: when access really ends, the vendor's cap included
]


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch, database_url: str, ledger: Ledger) -> Ledger:
    """Environment as an operator would set it, pointing at the fake org and the test ledger."""
    monkeypatch.setenv("FIRMGRANT_DATABASE_URL", database_url)
    for key, value in {
        "LOGIN_URL": LOGIN_URL,
        "AUTH": "client_credentials",
        "CLIENT_ID": CLIENT_ID,
        "CLIENT_SECRET": CLIENT_SECRET,
    }.items():
        monkeypatch.setenv(f"FIRMGRANT_CONNECTIONS__ACME__{key}", value)
    return ledger


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_sync_json_twice_against_an_unchanged_org(
    configured: Ledger, fake_org: FakeOrg, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(2500):
        fake_org.grant()

    code1, out1, _ = run(capsys, "sync", "--json")
    code2, out2, _ = run(capsys, "sync", "--json")

    first, second = json.loads(out1), json.loads(out2)
    keys = {
        "fetched",
        "inserted",
        "updated",
        "deleted",
        "invalid",
        "rejected",
        "api_calls",
        "seconds",
    }
    assert keys <= set(first)
    assert (code1, first["inserted"], first["api_calls"]) == (0, 2500, 2)
    assert (code2, second["inserted"], second["updated"], second["api_calls"]) == (0, 0, 0, 1)
    assert CLIENT_SECRET not in out1 + out2


def test_sync_exits_3_when_salesforce_stays_down(
    configured: Ledger, fake_org: FakeOrg, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(3):
        fake_org.fail_next("query", 503, [{"message": "down", "errorCode": "SERVER_UNAVAILABLE"}])
    code, out, _ = run(capsys, "sync", "--json")
    assert code == 3
    assert json.loads(out)["error_kind"] == "SalesforceUnavailable"


@pytest.fixture
def synced(configured: Ledger, fake_org: FakeOrg, capsys: pytest.CaptureFixture[str]) -> FakeOrg:
    fake_org.grant(Org_Name__c='=HYPERLINK("http://evil","x")', Org_Id__c="00D5e000000ACME01")
    fake_org.grant(Granted_Via_Login_As__c=True, Login_As_User__c="admin@customer.example")
    ten_days_ago = datetime.now(UTC) - timedelta(days=10)
    fake_org.grant(
        Granted_At__c=sf_time(ten_days_ago),
        Expires_At__c=sf_time(ten_days_ago + timedelta(days=3)),
        Access_Duration__c="3 Days",
    )
    fake_org.grant(Org_Name__c="Zoë & Co <b>[bold]")
    assert main(["sync"]) == 0
    capsys.readouterr()
    return fake_org


def test_grants_json_has_the_designed_keys_and_only_usable_grants(
    synced: FakeOrg, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "grants", "--format", "json")
    grants = json.loads(out)
    assert code == 0
    assert all(list(g) == DESIGNED_KEYS for g in grants)
    assert {g["org_name"] for g in grants} == {
        '=HYPERLINK("http://evil","x")',
        "Zoë & Co <b>[bold]",
    }
    assert all(g["status"] in ("active", "expiring") for g in grants)
    assert all(g["expires_at"].endswith("Z") for g in grants)


def test_grants_filters(synced: FakeOrg, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "grants", "--status", "rejected", "--format", "json")
    assert [g["login_as_user"] for g in json.loads(out)] == ["admin@customer.example"]
    _, out, _ = run(capsys, "grants", "--status", "expired", "--format", "json")
    assert len(json.loads(out)) == 1
    _, out, _ = run(capsys, "grants", "--org", "00D5e000000ACME01", "--format", "json")
    assert [g["org_id"] for g in json.loads(out)] == ["00D5e000000ACME01"]
    _, out, _ = run(capsys, "grants", "--status", "all", "--format", "json")
    assert len(json.loads(out)) == 4
    _, out, _ = run(capsys, "grants", "--expiring-within", "1h", "--format", "json")
    assert json.loads(out) == [], "the usable grants end in a week"


def test_grants_csv_neutralises_formulas(
    synced: FakeOrg, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run(capsys, "grants", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == DESIGNED_KEYS
    names = {row["org_name"] for row in rows}
    assert '\'=HYPERLINK("http://evil","x")' in names
    assert "Zoë & Co <b>[bold]" in names


def test_grants_table_is_readable(
    synced: FakeOrg, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # a person's terminal
    code, out, _ = run(capsys, "grants")
    assert code == 0
    assert "Zoë & Co <b>[bold]" in out, "customer text is shown as is, never as markup"
    assert "Access ends (UTC)" in out
    assert "2 grants" in out


def test_piped_grants_are_one_line_each_with_every_column_named(
    synced: FakeOrg, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pipe (grep, a script) gets a header and one grant a line, nothing cut or wrapped;
    ``--limit`` keeps the soonest to end."""
    code, out, _ = run(capsys, "grants")
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split("\t") == [
        "ID", "Org", "Org name", "Grantor", "Access ends (UTC)", "Ends", "Status",
    ]  # fmt: skip
    assert len(lines) == 3, "two usable grants, a line each"
    assert all(len(line.split("\t")) == 7 for line in lines)
    assert all(re.fullmatch(r"in 6 days( \d+ hours?)?", line.split("\t")[5]) for line in lines[1:])
    _, limited, _ = run(capsys, "grants", "--limit", "1")
    assert limited.splitlines() == lines[:2]
    with pytest.raises(SystemExit) as bad:
        main(["grants", "--limit", "0"])
    assert bad.value.code == 2
    assert "--limit: '0' is not a whole number of 1 or more" in capsys.readouterr().err


def test_show_tells_a_grants_story(
    synced: FakeOrg, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps table cells to the terminal's width
    record = next(iter(synced.records.values()))
    synced.update(record["Id"], Status__c="Revoked", Revoked_At__c=sf_time(synced.clock))
    assert main(["sync"]) == 0
    capsys.readouterr()

    code, out, _ = run(capsys, "show", record["Id"])

    assert code == 0
    assert "discovered" in out
    assert "customer_revoked" in out
    assert "Active → Revoked" in out
    code, out, _ = run(capsys, "show", "1")
    assert code == 0
    assert record["Id"] in out


def test_show_unknown_grant_exits_1(configured: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "show", "a0B000000000000XYZ")
    assert code == 1
    assert "no grant" in err


def test_verify_reports_ok(synced: FakeOrg, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "verify")
    assert code == 0
    assert out.startswith("ok: 4 events")


def test_verify_names_the_first_tampered_row_and_exits_1(
    synced: FakeOrg, configured: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    from sqlalchemy import text

    with configured.transaction() as session:
        session.execute(text("UPDATE events SET actor = 'someone else' WHERE id = 3"))

    code, _, err = run(capsys, "verify")

    assert code == 1
    assert err.startswith("TAMPERED: event 3: contents do not match the hash (edited row)")


def test_revoke_of_an_unknown_grant_exits_1(
    configured: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "revoke", "4242", "--reason", "contract ended", "--yes")
    assert code == 1
    assert "no grant '4242' in the ledger" in err
    assert out == ""


def test_run_once_exits_3_when_salesforce_stays_down(
    configured: Ledger, fake_org: FakeOrg, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(3):
        fake_org.fail_next("query", 503, [{"message": "down", "errorCode": "SERVER_UNAVAILABLE"}])
    code, out, _ = run(capsys, "run", "--once", "--json")
    assert code == 3
    [sync] = json.loads(out)["sync"]
    assert sync["error_kind"] == "SalesforceUnavailable"


@pytest.mark.parametrize(
    "argv",
    [
        ["nonsense"],
        ["grants", "--format", "xml"],
        ["grants", "--expiring-within", "soon"],
        ["grants", "--expiring-within", "99999999999999w"],
        ["grants", "--expiring-within", "5000000d"],
        ["grants", "--expiring-within", "0s"],
        ["show"],
        ["db"],
        [],
    ],
)
def test_bad_arguments_print_usage_and_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "usage: firmgrant" in capsys.readouterr().err


def test_python_dash_m_and_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "firmgrant", "--version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0
    assert done.stdout.startswith("firmgrant ")


def test_check_passes_against_a_well_configured_org(
    configured: Ledger, fake_org: FakeOrg, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "check")
    assert code == 0, out
    assert "ok   connection acme: Login_Access_Grant__c has every mapped field" in out


def test_check_tries_the_mail_server(
    configured: Ledger,
    fake_org: FakeOrg,
    smtp: SmtpServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FIRMGRANT_MAIL__BACKEND", "smtp")
    monkeypatch.setenv("FIRMGRANT_MAIL__FROM", "support@firmworks.example")
    monkeypatch.setenv("FIRMGRANT_MAIL__SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("FIRMGRANT_MAIL__SMTP_PORT", str(smtp.port))
    monkeypatch.setenv("FIRMGRANT_MAIL__SMTP_STARTTLS", "false")
    code, out, _ = run(capsys, "check")
    assert code == 0, out
    assert f"ok   mail: SMTP 127.0.0.1:{smtp.port} answered" in out
    assert smtp.mailbox.messages == []  # nothing is sent
    smtp.stop()
    code, out, _ = run(capsys, "check")
    assert code == 1
    assert f"FAIL mail: SMTP server 127.0.0.1:{smtp.port} unavailable" in out


def test_check_logs_in_over_starttls_and_never_shows_the_password(
    configured: Ledger,
    fake_org: FakeOrg,
    sandbox_keys: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    certificate = sandbox_keys / "tls.crt"
    server = SmtpServer(
        free_port(), tls=(certificate, sandbox_keys / "tls.key"), login=("mailer", "s3cret-pw")
    )
    server.start()
    try:
        # The server's certificate is trusted as an internal CA would be (OpenSSL's variable).
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate))
        for key, value in {
            "BACKEND": "smtp",
            "FROM": "support@firmworks.example",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(server.port),
            "SMTP_STARTTLS": "true",
            "SMTP_USERNAME": "mailer",
            "SMTP_PASSWORD": "s3cret-pw",
        }.items():
            monkeypatch.setenv(f"FIRMGRANT_MAIL__{key}", value)
        code, out, _ = run(capsys, "check")
        assert code == 0, out
        assert f"ok   mail: SMTP 127.0.0.1:{server.port} answered and logged in" in out
        assert server.logins == ["mailer"]

        monkeypatch.setenv("FIRMGRANT_MAIL__SMTP_PASSWORD", "wrong-pw-guess")
        code, out, err = run(capsys, "check")
        assert code == 1
        assert "FAIL mail: SMTP login refused (535)" in out
        assert "wrong-pw-guess" not in out + err
        assert server.logins == ["mailer"]
    finally:
        server.stop()


def test_check_names_each_problem(
    configured: Ledger,
    fake_org: FakeOrg,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_org.fields.remove("Login_As_User__c")
    monkeypatch.setenv("FIRMGRANT_CONNECTIONS__OTHER__LOGIN_URL", "https://login.example.test")
    monkeypatch.setenv("FIRMGRANT_CONNECTIONS__OTHER__AUTH", "client_credentials")
    monkeypatch.setenv("FIRMGRANT_CONNECTIONS__OTHER__CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("FIRMGRANT_CONNECTIONS__OTHER__CLIENT_SECRET", "wrong")

    code, out, _ = run(capsys, "check")

    assert code == 1
    assert "FAIL connection acme: Login_Access_Grant__c lacks fields Login_As_User__c" in out
    assert "FAIL connection other: token request" in out
    assert "invalid_client" in out
    assert "wrong" not in out.replace("wrong key", "")


def test_an_unreachable_database_exits_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FIRMGRANT_DATABASE_URL", "postgresql://nobody:pw-secret@127.0.0.1:9/x")
    code, _, err = run(capsys, "grants")
    assert code == 3
    assert "cannot reach the ledger at postgresql+psycopg://nobody:***@127.0.0.1:9/x" in err
    assert "pw-secret" not in err


def test_sync_that_mirrors_nothing_exits_1_and_says_why(
    configured: Ledger, fake_org: FakeOrg, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_org.grant(Expires_At__c="2026-05-27T10:00:00")
    code, out, err = run(capsys, "sync", "--json")
    assert code == 1
    result = json.loads(out)
    assert (result["fetched"], result["invalid"], result["error_kind"]) == (
        1,
        1,
        "nothing_mirrored",
    )
    assert "could mirror none" in err
    assert "Expires_At__c is a datetime without a UTC offset" in err


def test_a_grant_ending_at_the_vendors_cap_is_expiring_under_every_filter(
    configured: Ledger,
    fake_org: FakeOrg,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FIRMGRANT_POLICY__MAX_DURATION", "30d")
    granted = datetime.now(UTC) - timedelta(days=29, hours=12)  # the cap ends it in 12 hours
    capped = fake_org.grant(
        Granted_At__c=sf_time(granted),
        Expires_At__c=sf_time(granted + timedelta(days=90)),
        Access_Duration__c=None,
    )
    fake_org.grant()  # a week from now: neither
    assert main(["sync"]) == 0
    capsys.readouterr()

    _, by_status, _ = run(capsys, "grants", "--status", "expiring", "--format", "json")
    _, by_window, _ = run(capsys, "grants", "--expiring-within", "24h", "--format", "json")
    _, too_soon, _ = run(capsys, "grants", "--expiring-within", "6h", "--format", "json")

    assert [g["source_id"] for g in json.loads(by_status)] == [capped["Id"]]
    assert [g["source_id"] for g in json.loads(by_window)] == [capped["Id"]]
    assert json.loads(too_soon) == []


def test_the_export_tells_the_same_status_as_grants_under_the_vendors_cap(
    configured: Ledger,
    fake_org: FakeOrg,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FIRMGRANT_POLICY__MAX_DURATION", "30d")
    granted = datetime.now(UTC) - timedelta(days=31)
    long = fake_org.grant(
        Granted_At__c=sf_time(granted),
        Expires_At__c=sf_time(granted + timedelta(days=90)),
        Access_Duration__c=None,
    )
    assert main(["sync"]) == 0
    capsys.readouterr()

    _, listed, _ = run(capsys, "grants", "--status", "all", "--format", "json")
    code, exported, _ = run(capsys, "export", "--format", "ndjson")

    assert code == 0
    assert [g["status"] for g in json.loads(listed)] == ["expired"]
    [discovered] = [json.loads(line) for line in exported.splitlines()]
    assert discovered["source_id"] == long["Id"]
    assert discovered["status_after"] == "expired"  # was "active": the cap was ignored
