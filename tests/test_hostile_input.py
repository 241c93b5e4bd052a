"""Hostile input, property-based: whatever a Salesforce record, an audit row, a grantee name,
a setting, a CSV cell or a CLI argument holds, firmgrant answers with a clear error or a
recorded skip, never a traceback, never a half-written import, never a secret in the message.

The examples are bounded (``HOSTILE``) so the suite stays fast; the strategies aim at what
breaks parsers: wrong types, missing keys, huge and empty values, quotes, backslashes,
control characters and non-Latin text.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from firmgrant.cli import main
from firmgrant.errors import ConfigError
from firmgrant.grant import FIELD_LIMITS, GrantRecord
from firmgrant.salesforce.audit import AuditSource
from firmgrant.salesforce.records import InvalidRecord, parse_record
from firmgrant.salesforce.sources import ObjectSource
from firmgrant.sandbox.schema import OBJECTS
from firmgrant.sandbox.soql import parse_query
from firmgrant.settings import FieldMap, SourceSettings, VendorSettings, load_settings
from tests.webbing import SESSION_SECRET

HOSTILE = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SECRET = "s3cr3t-Tok3n-never-shown"

# Text that breaks parsers: quotes, backslashes, controls, other scripts, very long.
nasty_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="'\"\\%_*\n\r\t\x00<>&;{}", max_size=20),
    st.sampled_from(["", " ", "O'Brien", "\\'", "株式会社", "\u202etxt", "a" * 5000]),
)
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    nasty_text,
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
MISSING = object()

GOOD_RECORD: dict[str, Any] = {
    "Id": "a0B5e000000ABCdEAF",
    "Org_Id__c": "00D5e000003BCef",
    "Org_Name__c": "Acme",
    "Grantor_Id__c": "0055e000001ABCdEAF",
    "Grantor_Username__c": "ada@acme.example",
    "Grantor_Email__c": "ada@acme.example",
    "Grantee__c": "FirmWorks Support",
    "Access_Duration__c": "1 Week",
    "Granted_At__c": "2026-05-20T20:49:32.000+0000",
    "Expires_At__c": "2026-05-27T20:49:32.000+0000",
    "Granted_Via_Login_As__c": False,
    "Login_As_User__c": None,
    "Status__c": "Active",
    "Revoked_At__c": None,
    "Revoke_Reason__c": None,
    "SystemModstamp": "2026-05-20T20:49:32.000+0000",
    "IsDeleted": False,
}

GOOD_ROW: dict[str, Any] = {
    "Id": "0Ym5e000000ABCdEAF",
    "Action": "loginasgrantedtopartnerbt",
    "CreatedDate": "2026-05-20T20:49:32.000+0000",
    "CreatedById": "0055e000001ABCdEAF",
    "CreatedBy": {"Username": "ada@acme.example", "Email": "ada@acme.example"},
    "DelegateUser": None,
    "Display": "ada@acme.example has granted user login access through 5/27/2026 to "
    "package publisher FirmWorks Support (00D5e000000VEND)",
}


def spoiled(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """The good record with some fields replaced by junk or taken away."""
    changes = st.dictionaries(st.sampled_from(sorted(base)), st.one_of(junk, st.just(MISSING)))

    def apply(found: dict[str, Any]) -> dict[str, Any]:
        record = dict(base)
        for name, value in found.items():
            if value is MISSING:
                record.pop(name, None)
            else:
                record[name] = value
        return record

    return changes.map(apply)


def _well_formed(grant: GrantRecord) -> None:
    for name, limit in FIELD_LIMITS.items():
        value = getattr(grant, name, None)
        assert value is None or (isinstance(value, str) and len(value) <= limit), name
    for name in ("granted_at", "expires_at", "modstamp"):
        moment = getattr(grant, name)
        assert isinstance(moment, datetime)
        assert moment.tzinfo is not None


@HOSTILE
@given(record=spoiled(GOOD_RECORD))
@example(record={**GOOD_RECORD, "Org_Name__c": "a" * 5000, "Grantee__c": "b" * 300})
def test_a_malformed_grant_record_is_refused_with_a_short_reason(record: dict[str, Any]) -> None:
    parsed = parse_record(record, FieldMap())
    if isinstance(parsed, InvalidRecord):
        assert parsed.key
        assert parsed.reason
        assert len(parsed.reason) < 400  # a line in a log, not the record dumped
    else:
        _well_formed(parsed)


@HOSTILE
@given(rows=st.lists(spoiled(GOOD_ROW), min_size=1, max_size=5))
def test_malformed_audit_rows_are_each_skipped_or_read_and_the_rest_goes_on(
    rows: list[dict[str, Any]],
) -> None:
    vendor = VendorSettings(grantee_names=["FirmWorks Support"], publisher_org_id="00D5e000000VEND")
    page = AuditSource(SourceSettings(kind="audit"), vendor).parse([*rows, GOOD_ROW])
    assert len(page.invalid) + len(page.grants) + len(page.uses) <= len(rows) + 1
    assert page.grants
    assert page.grants[-1][0].id == GOOD_ROW["Id"]  # the good row after them is still read
    for invalid in page.invalid:
        assert invalid.key
        assert invalid.reason
        assert len(invalid.reason) < 400


@HOSTILE
@given(names=st.lists(nasty_text.filter(lambda t: "\x00" not in t), min_size=1, max_size=3))
def test_any_grantee_name_reaches_salesforce_as_the_same_literal(names: list[str]) -> None:
    """A grantee like ``O'Brien \\ Support`` is quoted, not spliced, into the SOQL: the
    sandbox's parser (Salesforce's grammar) reads back exactly the names given."""
    source = ObjectSource(SourceSettings(), VendorSettings(grantee_names=names))
    query = parse_query(source.soql(datetime(2026, 5, 20, tzinfo=UTC)), OBJECTS)
    assert query.where is not None
    record = dict(GOOD_RECORD)
    for name in names:
        assert query.where({**record, "Grantee__c": name})
    outsider = "".join(names) + "x"
    assert not query.where({**record, "Grantee__c": outsider})


@HOSTILE
@given(
    setting=st.sampled_from(
        [
            "FIRMGRANT_POLL_SECONDS",
            "FIRMGRANT_REMINDERS",
            "FIRMGRANT_LOG_LEVEL",
            "FIRMGRANT_MAIL__SMTP_PORT",
            "FIRMGRANT_WEB__PUBLIC_URL",
            "FIRMGRANT_WORKER__LEASE_SECONDS",
            "FIRMGRANT_SUPPORT__WEBHOOK_URL",
            "FIRMGRANT_REGISTRY__KEYS",
        ]
    ),
    value=nasty_text.filter(lambda t: "\x00" not in t),
)
def test_a_bad_setting_names_itself_and_never_echoes_a_secret(
    setting: str, value: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key in [k for k in os.environ if k.startswith("FIRMGRANT_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("FIRMGRANT_CONFIG", str(tmp_path / "none.toml"))
    (tmp_path / "none.toml").write_text("")
    monkeypatch.setenv("FIRMGRANT_WEB__SESSION_SECRET", SECRET)
    monkeypatch.setenv(setting, value)
    try:
        load_settings()
    except ConfigError as exc:
        message = str(exc)
        section, _, name = setting.removeprefix("FIRMGRANT_").lower().partition("__")
        assert (name or section) in message
        assert SECRET not in message
        if setting.endswith(("WEBHOOK_URL", "KEYS")):
            assert value not in message or len(value) < 3  # a secret's bad value is not shown


cells = nasty_text.map(lambda t: t.replace("\x00", ""))
GOOD_ORG = "00D5e000000GOOD"
# Each example of these starts a ledger: fewer of them.
FEWER = settings(HOSTILE, max_examples=20)


@FEWER
@given(rows=st.lists(st.tuples(cells, cells, cells), min_size=1, max_size=4))
def test_a_csv_with_any_cells_imports_whole_or_not_at_all(
    rows: list[tuple[str, str, str]],
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import csv

    work = tmp_path_factory.mktemp("csv")
    path = work / "orgs.csv"
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["name", "org_id", "login_url", "username"])
        writer.writerow(["good", GOOD_ORG, "https://good.my.salesforce.com", "i@good.example"])
        writer.writerows(("org", *row) for row in rows)
    os.environ["FIRMGRANT_DATABASE_URL"] = f"sqlite:///{work / 'ledger.db'}"
    try:
        code = main(["orgs", "import", str(path)])
        listed = main(["orgs", "list", "--json"])
    finally:
        del os.environ["FIRMGRANT_DATABASE_URL"]
    out, err = capsys.readouterr()
    assert listed == 0
    assert "Traceback" not in err
    if code == 0:  # then every row was good and every row is in
        assert GOOD_ORG in out
        assert len(json.loads(out)) == 1 + len(rows)
    else:
        assert code in (1, 2)
        assert re.search(r"line ([3-9]|\d\d)\b", err), err  # the bad row, not the good one
        assert GOOD_ORG not in out  # nothing half-imported


@FEWER
@given(
    argv=st.sampled_from(
        [
            ["grants", "--status"],
            ["show"],
            ["export", "--since"],
            ["export", "--format"],
            ["orgs", "show"],
            ["verify", "--jobs"],
            ["revoke"],
            ["sync", "--connection"],
            ["users", "add"],
        ]
    ),
    value=cells,
)
def test_a_bad_cli_argument_gets_a_message_and_an_exit_code_never_a_traceback(
    argv: list[str], value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.environ["FIRMGRANT_DATABASE_URL"] = f"sqlite:///{tmp_path / 'ledger.db'}"
    try:
        try:
            code = main([*argv, value])
        except SystemExit as exc:  # argparse's usage error
            code = exc.code if isinstance(exc.code, int) else 2
    finally:
        del os.environ["FIRMGRANT_DATABASE_URL"]
    captured = capsys.readouterr()
    assert code in (0, 1, 2, 3)
    assert "Traceback" not in captured.err + captured.out
    if code:
        assert captured.err.strip(), "a failure says why"


query_values = nasty_text.map(lambda t: t.replace("\x00", ""))


@FEWER
@given(
    params=st.dictionaries(
        st.sampled_from(["status", "sort", "within", "page", "q", "org", "connection"]),
        query_values,
        max_size=4,
    ),
    reason=query_values,
    name=query_values,
    password=query_values,
    forwarded=query_values,
)
def test_any_form_field_or_query_gets_an_answer_never_a_500(
    web_site: Any,
    params: dict[str, str],
    reason: str,
    name: str,
    password: str,
    forwarded: str,
) -> None:
    client = web_site.client
    # A header is ASCII on the wire (the client refuses anything else).
    headers = {"X-Forwarded-For": "".join(c for c in forwarded if " " <= c <= "~")[:200]}
    answers = [client.get("/", params=params, headers=headers)]
    token = web_site.csrf("/grants/1/revoke")
    answers.append(client.post("/grants/1/revoke", data={"csrf": token, "reason": reason}))
    answers.append(
        client.post(
            "/sign-in",
            data={"name": name, "password": password, "next": reason},
            follow_redirects=False,
        )
    )
    for answer in answers:
        assert answer.status_code in (200, 303, 400, 403, 404, 409, 429), answer.text[:300]
        assert SESSION_SECRET not in answer.text


@pytest.fixture
def web_site(sandbox: Any, tmp_path: Path) -> Any:
    from starlette.testclient import TestClient

    from firmgrant.web import create_app
    from tests.test_web_http import Site
    from tests.webbing import filled_ledger

    ledger, config = filled_ledger(sandbox, f"sqlite:///{tmp_path / 'web.db'}", grants=6)
    with TestClient(create_app(config, ledger), base_url="http://127.0.0.1") as client:
        site = Site(client, ledger, config, sandbox)
        assert site.sign_in("ada") == 303
        yield site
    ledger.engine.dispose()
