"""Settings: sources and precedence, and every bad setting stopping start-up by name."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from firmgrant.cli import main
from firmgrant.errors import ConfigError
from firmgrant.ledger.db import normalize_url
from firmgrant.settings import load_settings

SECRET = "s3cr3t-value-never-printed"


def test_defaults_match_the_design() -> None:
    settings = load_settings()
    assert settings.database_url.get_secret_value() == "sqlite:///var/firmgrant.db"
    assert settings.poll_seconds == 60
    assert settings.reminders == (timedelta(days=7), timedelta(days=1), timedelta(hours=1))
    assert settings.mail.backend == "file"
    assert (settings.mail.smtp_host, settings.mail.smtp_port) == ("localhost", 587)
    assert settings.mail.smtp_starttls is True
    assert settings.mail.file_dir == Path("var/outbox")
    assert settings.vendor.grantee_names == ["FirmWorks Support"]


def test_environment_nested_and_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIRMGRANT_REMINDERS", "3d, 2h")
    monkeypatch.setenv("FIRMGRANT_MAIL__FROM", "support@firmworks.example")
    monkeypatch.setenv("FIRMGRANT_VENDOR__GRANTEE_NAMES", "FirmWorks Support,FirmWorks EU")
    monkeypatch.setenv("FIRMGRANT_CONNECTIONS__PROD__AUTH", "token")
    monkeypatch.setenv("FIRMGRANT_CONNECTIONS__PROD__ACCESS_TOKEN", SECRET)
    monkeypatch.setenv(
        "FIRMGRANT_CONNECTIONS__PROD__INSTANCE_URL", "https://acme.my.salesforce.com/"
    )
    monkeypatch.setenv("FIRMGRANT_CONNECTIONS__PROD__SOURCE__FIELDS__GRANTEE", "Vendor__c")

    settings = load_settings()

    assert settings.reminders == (timedelta(days=3), timedelta(hours=2))
    assert settings.mail.from_ == "support@firmworks.example"
    assert settings.vendor.grantee_names == ["FirmWorks Support", "FirmWorks EU"]
    name, prod = settings.connection()
    assert name == "prod"
    assert prod.instance_url == "https://acme.my.salesforce.com"
    assert prod.source.fields.grantee == "Vendor__c"
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings.model_dump())


def test_toml_file_with_environment_taking_precedence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "firmgrant.toml").write_text(
        'poll_seconds = 120\nreminders = ["2d", "1h"]\n'
        '[connections.acme]\nauth = "client_credentials"\n'
        'login_url = "https://acme.my.salesforce.com"\nclient_id = "id"\n'
        f'client_secret = "{SECRET}"\n'
    )
    monkeypatch.setenv("FIRMGRANT_POLL_SECONDS", "30")

    settings = load_settings()

    assert settings.poll_seconds == 30
    assert settings.reminders == (timedelta(days=2), timedelta(hours=1))
    assert settings.connections["acme"].auth == "client_credentials"


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("FIRMGRANT_POLL_SECONDS=90\n")
    assert load_settings().poll_seconds == 90


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db.example:5432/d", "postgresql+psycopg://u:p@db.example:5432/d"),
        ("postgresql://u@h/d", "postgresql+psycopg://u@h/d"),
        ("sqlite:///var/x.db", "sqlite:///var/x.db"),
    ],
)
def test_heroku_database_url_is_honoured(
    monkeypatch: pytest.MonkeyPatch, given: str, expected: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", given)
    url = load_settings().database_url.get_secret_value()
    assert normalize_url(url) == expected


def test_firmgrant_database_url_wins_over_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://heroku/db")
    monkeypatch.setenv("FIRMGRANT_DATABASE_URL", "sqlite:///mine.db")
    assert load_settings().database_url.get_secret_value() == "sqlite:///mine.db"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"FIRMGRANT_POLL_SECONDS": "often"}, "FIRMGRANT_POLL_SECONDS"),
        ({"FIRMGRANT_POLL_SECONDS": "1"}, "FIRMGRANT_POLL_SECONDS"),
        ({"FIRMGRANT_REMINDERS": "7 days"}, "FIRMGRANT_REMINDERS"),
        ({"FIRMGRANT_MAIL__BACKEND": "pigeon"}, "FIRMGRANT_MAIL__BACKEND"),
        ({"FIRMGRANT_MAIL__SMTP_PORT": "99999"}, "FIRMGRANT_MAIL__SMTP_PORT"),
        ({"FIRMGRANT_VENDOR__PUBLISHER_ORG_ID": "001xyz"}, "FIRMGRANT_VENDOR__PUBLISHER_ORG_ID"),
        ({"FIRMGRANT_CONNECTIONS__A__AUTH": "kerberos"}, "FIRMGRANT_CONNECTIONS__A__AUTH"),
        (
            {"FIRMGRANT_CONNECTIONS__A__LOGIN_URL": "http://login.salesforce.com"},
            "FIRMGRANT_CONNECTIONS__A__LOGIN_URL",
        ),
        (
            {"FIRMGRANT_CONNECTIONS__A__SOURCE__OBJECT_NAME": "Grants; DROP"},
            "FIRMGRANT_CONNECTIONS__A__SOURCE__OBJECT_NAME",
        ),
        (
            {"FIRMGRANT_CONNECTIONS__A__SOURCE__FIELDS__GRANTEE": "Grantee__c, Id"},
            "FIRMGRANT_CONNECTIONS__A__SOURCE__FIELDS__GRANTEE",
        ),
        (
            {"FIRMGRANT_CONNECTIONS__A__AUTH": "jwt", "FIRMGRANT_CONNECTIONS__A__USERNAME": "u"},
            "FIRMGRANT_CONNECTIONS__A__CLIENT_ID",
        ),
        (
            {
                "FIRMGRANT_CONNECTIONS__A__AUTH": "jwt",
                "FIRMGRANT_CONNECTIONS__A__CLIENT_ID": "c",
                "FIRMGRANT_CONNECTIONS__A__USERNAME": "u",
                "FIRMGRANT_CONNECTIONS__A__PRIVATE_KEY_FILE": "/nonexistent/key.pem",
            },
            "FIRMGRANT_CONNECTIONS__A__PRIVATE_KEY_FILE",
        ),
        (
            {
                "FIRMGRANT_CONNECTIONS__A__AUTH": "password",
                "FIRMGRANT_CONNECTIONS__A__PASSWORD": SECRET,
                "FIRMGRANT_CONNECTIONS__A__CLIENT_SECRET": SECRET,
            },
            "FIRMGRANT_CONNECTIONS__A__USERNAME",
        ),
        ({"FIRMGRANT_CONNECTIONS__A__AUTH": "token"}, "FIRMGRANT_CONNECTIONS__A__ACCESS_TOKEN"),
        ({"FIRMGRANT_CONFIG": "/nonexistent/firmgrant.toml"}, "FIRMGRANT_CONFIG"),
    ],
)
def test_each_bad_setting_exits_2_naming_itself_and_no_secret(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    named: str,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    code = main(["check"])

    out, err = capsys.readouterr()
    assert code == 2
    assert named in err
    assert SECRET not in out + err


def test_a_bad_database_url_stops_start_up(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FIRMGRANT_DATABASE_URL", "mysql://root@localhost/x")
    assert main(["grants"]) == 2
    assert "FIRMGRANT_DATABASE_URL" in capsys.readouterr().err


@pytest.mark.parametrize("variable", ["FIRMGRANT_DATABASE_URL", "DATABASE_URL"])
@pytest.mark.parametrize(
    ("url", "problem"),
    [
        # An unescaped @ in the password: the rest reads as a port.
        ("postgresql://fg:Pa@ss:AtDbS3cret@127.0.0.1:5432/fg", "the port is not a number"),
        ("postgresql://fg:AtDbS3cret@127.0.0.1:5432x/fg", "the port is not a number"),
        ("postgresql://fg:Pa@ssAtDbS3cret@127.0.0.1/fg", "the host name contains '@'"),
    ],
)
@pytest.mark.parametrize("command", [["grants"], ["db", "upgrade"], ["check"]])
def test_a_database_url_that_does_not_parse_exits_2_without_its_password(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    url: str,
    problem: str,
    command: list[str],
) -> None:
    monkeypatch.setenv(variable, url)

    code = main(command)

    out, err = capsys.readouterr()
    assert code == 2
    assert "FIRMGRANT_DATABASE_URL or DATABASE_URL" in err
    assert problem in err
    assert "must be percent-encoded" in err
    assert "AtDbS3cret" not in out + err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FIRMGRANT_REMINDERS": "99999999999999w"}, "out of range: from 1m to 365d"),
        ({"FIRMGRANT_REMINDERS": "7d,0s"}, "0s is out of range: from 1m to 365d"),
        ({"FIRMGRANT_POLICY__MAX_DURATION": "5000000d"}, "out of range: from 1h to 366d"),
        ({"FIRMGRANT_POLICY__MAX_DURATION": "0s"}, "out of range: from 1h to 366d"),
    ],
)
def test_durations_out_of_range_stop_start_up_saying_the_range(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    message: str,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["grants"]) == 2
    err = capsys.readouterr().err
    assert next(iter(env)) in err
    assert message in err


def test_durations_in_range_are_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIRMGRANT_REMINDERS", "365d,1m")
    monkeypatch.setenv("FIRMGRANT_POLICY__MAX_DURATION", "1h")
    settings = load_settings()
    assert settings.reminders == (timedelta(days=365), timedelta(minutes=1))
    assert settings.policy.max_duration == timedelta(hours=1)


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("poll_seconds = = 3")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load_settings(config)


def test_unknown_toml_keys_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "typo.toml"
    config.write_text('[mail]\nbakend = "smtp"\n')
    with pytest.raises(ConfigError, match=r"FIRMGRANT_MAIL__BAKEND \(mail\.bakend\)"):
        load_settings(config)
    config.write_text("pol_seconds = 30\n")
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) pol_seconds"):
        load_settings(config)


def test_unrelated_variables_in_dotenv_are_ignored(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PORT=5000\nWEB_CONCURRENCY=2\n")
    assert load_settings().poll_seconds == 60


def test_a_key_that_cannot_sign_names_its_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    key = tmp_path / "key.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n")
    for name, value in {
        "AUTH": "jwt",
        "CLIENT_ID": "c",
        "USERNAME": "u",
        "PRIVATE_KEY_FILE": str(key),
        "LOGIN_URL": "https://login.example.test",
    }.items():
        monkeypatch.setenv(f"FIRMGRANT_CONNECTIONS__A__{name}", value)

    assert main(["sync"]) == 2
    assert "FIRMGRANT_CONNECTIONS__A__PRIVATE_KEY_FILE" in capsys.readouterr().err


def test_the_example_config_documents_every_setting_and_loads(tmp_path: Path) -> None:
    example = Path(__file__).parent.parent / "config" / "firmgrant.example.toml"
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "server.key").write_text("placeholder")
    settings = load_settings(example)
    text = example.read_text()
    sections = {
        "": settings,
        "vendor": settings.vendor,
        "sync": settings.sync,
        "mail": settings.mail,
        "policy": settings.policy,
        "worker": settings.worker,
        "web": settings.web,
        "connections.prod": settings.connections["prod"],
        "connections.prod.source": settings.connections["prod"].source,
        "connections.prod.source.fields": settings.connections["prod"].source.fields,
    }
    for section, model in sections.items():
        for name, info in type(model).model_fields.items():
            key = info.alias if info.alias and not info.alias.isupper() else name
            table = f"[{section}.{key}" if section else f"[{key}"
            assert f"{key} =" in text or table in text, f"{section}.{key} undocumented"
