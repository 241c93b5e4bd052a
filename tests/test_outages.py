"""The ledger's database going away while the worker runs: one line in the log (no driver
traceback), the dashboard answers 503, the worker keeps its schedule, and the next cycle
after the database is back does the work it missed. A real outage on PostgreSQL: the
worker's role is refused logins and its connections are ended, then let back in."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import Engine, make_url
from starlette.testclient import TestClient

from firmgrant.ledger import Ledger, make_engine, upgrade
from firmgrant.ledger.db import normalize_url
from firmgrant.ledger.models import GrantRow
from firmgrant.sandbox import SandboxOrg
from firmgrant.settings import Settings
from firmgrant.web import create_app
from firmgrant.worker import Worker
from tests.conftest import POSTGRES_URL
from tests.lifecycling import FakeClock, SmtpServer, worker_settings


@pytest.fixture
def admin() -> Iterator[Engine]:
    assert POSTGRES_URL, "postgres_url has checked it"
    engine = create_engine(normalize_url(POSTGRES_URL))
    yield engine
    engine.dispose()


@pytest.fixture
def worker_role(postgres_url: str, admin: Engine) -> Iterator[tuple[str, str]]:
    """A login role of the worker's own, and the schema's URL as that role."""
    role = f"fg_outage_{uuid.uuid4().hex[:8]}"
    with admin.begin() as connection:
        connection.execute(text(f'CREATE ROLE "{role}" LOGIN SUPERUSER'))
    url = make_url(postgres_url).set(username=role).render_as_string(hide_password=False)
    try:
        yield role, url
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'ALTER ROLE "{role}" LOGIN'))
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r"),
                {"r": role},
            )
            connection.execute(text(f'REASSIGN OWNED BY "{role}" TO CURRENT_USER'))
            connection.execute(text(f'DROP OWNED BY "{role}"'))
            connection.execute(text(f'DROP ROLE "{role}"'))


def _outage(admin: Engine, role: str, *, down: bool) -> None:
    with admin.begin() as connection:
        connection.execute(text(f'ALTER ROLE "{role}" {"NOLOGIN" if down else "LOGIN"}'))
        if down:
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r"),
                {"r": role},
            )


def test_a_database_outage_is_one_line_and_the_worker_catches_up_after_it(
    worker_role: tuple[str, str], admin: Engine, sandbox: SandboxOrg, smtp: SmtpServer,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    role, url = worker_role
    engine = make_engine(url)
    upgrade(engine)
    ledger = Ledger(engine)
    worker = Worker(worker_settings(sandbox, smtp.port), ledger, clock=FakeClock())
    first = sandbox.customers.grant(duration="1 Week")
    worker._guarded_cycle()  # the scheduler's tick

    _outage(admin, role, down=True)
    during = sandbox.customers.grant(duration="1 Month")
    caplog.clear()
    worker._guarded_cycle()
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage().split(":")[0] for r in failures] == ["cycle failed"]
    assert "cannot reach the ledger at postgresql" in failures[0].getMessage()
    assert failures[0].exc_info is None  # one line, no traceback
    assert "Traceback" not in caplog.text
    with TestClient(create_app(Settings(), ledger), base_url="http://127.0.0.1") as web:
        ready, scraped = web.get("/readyz"), web.get("/metrics")
    assert ready.status_code == 503
    assert "ledger unreachable" in ready.json()["problem"]
    assert scraped.status_code == 503  # a page that says so, not a 500
    assert "The ledger is unreachable" in scraped.text

    _outage(admin, role, down=False)
    caplog.clear()
    worker._guarded_cycle()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    with ledger.sessions() as session:
        found = set(session.scalars(select(GrantRow.source_id)))
    assert found == {first["Id"], during["Id"]}
    engine.dispose()
