"""Helpers for the dashboard's tests: a ledger filled from the sandbox, accounts, a real
`firmgrant web` process on loopback, and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from firmgrant import accounts
from firmgrant.ledger import Ledger, make_engine, upgrade
from firmgrant.sandbox import SandboxOrg, read_connection_env
from firmgrant.settings import Settings
from firmgrant.timeutil import utcnow
from firmgrant.worker import Worker
from tests.sandboxing import sandbox_connection, vendor

ROOT = Path(__file__).parent.parent
SCREENSHOTS = ROOT / "var" / "screenshots"
PASSWORD = "correct horse battery staple"
HOSTILE_ORG = "<script>window.__pwned = 1</script> & Sons"
PEOPLE = {
    "ada": accounts.Role.ADMIN,
    "sam": accounts.Role.SUPPORT,
    "cy": accounts.Role.COMPLIANCE,
}
LINK_TEMPLATE = "https://support.firmworks.example/enter?org={org_id}&grant={grant_id}"
SESSION_SECRET = "a test session secret, 32 bytes or more"


def settings_for(org: SandboxOrg, database_url: str) -> Settings:
    return Settings.model_validate(
        {
            "database_url": database_url,
            "connections": {"sandbox": sandbox_connection(org)},
            "vendor": vendor(org),
            "sync": {"api_floor": 0},
            "mail": {"backend": "file", "file_dir": "outbox", "from": "support@firmworks.example"},
            "web": {"login_url_template": LINK_TEMPLATE, "session_secret": SESSION_SECRET},
        }
    )


def filled_ledger(org: SandboxOrg, database_url: str, grants: int = 30) -> tuple[Ledger, Settings]:
    """The sandbox's customers' grants (one from an org with markup in its name), synced."""
    org.customers.seed(grants)
    org.customers.grant(duration="3 Days", org_name=HOSTILE_ORG, grantor="mallory@evil.example")
    org.customers.grant(
        duration="1 Year", org_name="Login-As Ltd", grantor="eve@loginas.example",
        login_as_user="admin@loginas.example",
    )  # fmt: skip
    settings = settings_for(org, database_url)
    engine = make_engine(database_url)
    upgrade(engine)
    ledger = Ledger(engine)
    Worker(settings, ledger).cycle()
    for name, role in PEOPLE.items():
        accounts.add_user(
            ledger, name, role, password=PASSWORD, email=f"{name}@firmworks.example",
            actor="test", now=utcnow(),
        )  # fmt: skip
    return ledger, settings


def web_env(org: SandboxOrg, database_url: str) -> dict[str, str]:
    org.write_files()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIRMGRANT_")}
    env.update(read_connection_env(org.state / "connection.env"))
    env.update(
        {
            "FIRMGRANT_DATABASE_URL": database_url,
            "FIRMGRANT_SYNC__API_FLOOR": "0",
            "FIRMGRANT_MAIL__FROM": "support@firmworks.example",
            "FIRMGRANT_WEB__LOGIN_URL_TEMPLATE": LINK_TEMPLATE,
            "FIRMGRANT_WEB__SESSION_SECRET": SESSION_SECRET,
        }
    )
    env.pop("PORT", None)
    return env


@dataclass
class WebProcess:
    """`firmgrant web --port 0` as a user runs it; its URL is the first line it prints."""

    process: subprocess.Popen[str]
    url: str
    log: list[str]

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(timeout=30)


def start_web(env: dict[str, str]) -> WebProcess:
    process = subprocess.Popen(
        [sys.executable, "-m", "firmgrant", "web", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    log: list[str] = []
    url = ""
    for line in process.stdout:  # bounded: the process prints its URL or exits
        log.append(line)
        if line.startswith("http://"):
            url = line.strip()
            break
    if not url:
        process.wait(timeout=30)
        pytest.fail(f"firmgrant web did not start: {''.join(log)}")
    for line in process.stdout:  # uvicorn's startup lines, up to "startup complete"
        log.append(line)
        if "startup complete" in line:
            break
    threading.Thread(target=lambda: log.extend(process.stdout or []), daemon=True).start()
    return WebProcess(process, url, log)


def browser_path() -> str:
    path = os.environ.get("FIRMGRANT_TEST_BROWSER", "/usr/bin/chromium")
    if not Path(path).exists():
        if os.environ.get("FIRMGRANT_TEST_REQUIRE_BROWSER") == "1":
            pytest.fail(f"FIRMGRANT_TEST_REQUIRE_BROWSER=1 but there is no browser at {path}")
        pytest.skip(f"no browser at {path} (apt-get install chromium)")
    return path


def screenshot_path(name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / f"{name}.png"


def dispose(ledger: Ledger) -> Iterator[None]:
    yield
    ledger.engine.dispose()


@contextmanager
def serving(settings: Settings, ledger: Ledger, clock: Callable[[], datetime]) -> Iterator[str]:
    """The dashboard in this process on a loopback port, on ``clock`` (a demo's shifted one,
    say); its URL. The socket listens before the server runs: nothing to wait for."""
    import uvicorn

    from firmgrant.web import create_app
    from firmgrant.web.app import listen

    listener = listen("127.0.0.1", 0)
    listener.listen(64)
    port = listener.getsockname()[1]
    app = create_app(settings, ledger, clock=clock)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listener.close()
