"""Shared fixtures: a clean environment, ledgers on SQLite and PostgreSQL, a fake org."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import responses
import stamina
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import create_engine, text

from firmgrant.ledger import Ledger, make_engine, upgrade
from firmgrant.ledger.db import normalize_url
from firmgrant.sandbox import SandboxOrg
from firmgrant.sandbox.certs import ensure_material
from tests.fakeorg import FakeOrg
from tests.lifecycling import SmtpServer, free_port

POSTGRES_URL = os.environ.get("FIRMGRANT_TEST_DATABASE_URL")
REQUIRE_POSTGRES = os.environ.get("FIRMGRANT_TEST_REQUIRE_POSTGRES") == "1"


@pytest.fixture(autouse=True, scope="session")
def _no_retry_waits() -> None:
    stamina.set_testing(True, attempts=3)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No developer settings leak in: no FIRMGRANT_* variables, an empty working directory."""
    for name in list(os.environ):
        if (name.startswith("FIRMGRANT_") and not name.startswith("FIRMGRANT_TEST_")) or (
            name == "DATABASE_URL"
        ):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _postgres_schema_url() -> Iterator[str]:
    if not POSTGRES_URL:
        if REQUIRE_POSTGRES:
            pytest.fail(
                "FIRMGRANT_TEST_REQUIRE_POSTGRES=1 but FIRMGRANT_TEST_DATABASE_URL is unset"
            )
        pytest.skip("PostgreSQL not configured (set FIRMGRANT_TEST_DATABASE_URL)")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalize_url(POSTGRES_URL))
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:
        admin.dispose()
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL required but unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL schema (replicas need PostgreSQL: SQLite allows one worker)."""
    yield from _postgres_schema_url()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty ledger database: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        yield from _postgres_schema_url()


@pytest.fixture
def ledger(database_url: str) -> Iterator[Ledger]:
    engine = make_engine(database_url)
    upgrade(engine)
    yield Ledger(engine)
    engine.dispose()


@pytest.fixture(scope="session")
def rsa_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture
def fake_org(rsa_key_pem: str) -> Iterator[FakeOrg]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield FakeOrg(mock, rsa_key_pem)


@pytest.fixture(scope="session")
def sandbox_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TLS and connected-app keys, made once: RSA key generation is the slow part."""
    state = tmp_path_factory.mktemp("sandbox-keys")
    ensure_material(state)
    return state


@pytest.fixture
def sandbox(tmp_path: Path, sandbox_keys: Path) -> Iterator[SandboxOrg]:
    """A fresh sandbox org serving HTTPS on an ephemeral loopback port."""
    state = tmp_path / "org"
    shutil.copytree(sandbox_keys, state)
    with SandboxOrg(state, random_seed=11, persist=False) as org:
        yield org


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """A real SMTP server (aiosmtpd) on a loopback port; its mailbox keeps what it accepted."""
    server = SmtpServer(free_port())
    server.start()
    yield server
    server.stop()
