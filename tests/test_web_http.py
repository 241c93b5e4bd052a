"""The dashboard over HTTP (Starlette's TestClient, in process) on SQLite and PostgreSQL:
who may see what, forms refused without their token, bad input answered with a message,
sign-in limits, and the operators' endpoints."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from starlette.testclient import TestClient

from firmgrant import accounts
from firmgrant.ledger import Ledger
from firmgrant.sandbox import SandboxOrg
from firmgrant.settings import Settings
from firmgrant.timeutil import utcnow
from firmgrant.web import create_app
from firmgrant.web.app import SESSION_COOKIE
from tests.webbing import PASSWORD, SESSION_SECRET, filled_ledger


@dataclass
class Site:
    client: TestClient
    ledger: Ledger
    settings: Settings
    org: SandboxOrg

    def sign_in(self, name: str, password: str = PASSWORD) -> int:
        form = {"csrf": self.csrf("/sign-in"), "name": name, "password": password, "next": "/"}
        return self.client.post("/sign-in", data=form, follow_redirects=False).status_code

    def csrf(self, path: str) -> str:
        page = self.client.get(path).text
        found = re.search(r'name="csrf" value="([^"]+)"', page)
        assert found, page
        return found.group(1)


@pytest.fixture
def site(sandbox: SandboxOrg, database_url: str) -> Iterator[Site]:
    ledger, settings = filled_ledger(sandbox, database_url, grants=12)
    with TestClient(create_app(settings, ledger), base_url="http://127.0.0.1") as client:
        yield Site(client, ledger, settings, sandbox)
    ledger.engine.dispose()


PAGES = ["/", "/grants/1", "/grants/1/revoke", "/rule-breaks", "/orgs", "/compliance",
         "/compliance/export", "/people", "/password"]  # fmt: skip


def test_every_page_sends_an_anonymous_visitor_to_sign_in(site: Site) -> None:
    for path in PAGES:
        answer = site.client.get(path, follow_redirects=False)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/sign-in?next="), path
    assert site.client.get("/healthz").json() == {"ok": True}


@pytest.mark.parametrize(
    ("name", "forbidden"),
    [("sam", ["/grants/1/revoke", "/orgs", "/compliance", "/compliance/export", "/people"]),
     ("cy", ["/grants/1/revoke", "/orgs", "/people"])],
)  # fmt: skip
def test_roles_get_403_on_what_they_may_not_do(site: Site, name: str, forbidden: list[str]) -> None:
    assert site.sign_in(name) == 303
    for path in PAGES:
        status = site.client.get(path).status_code
        assert status == (403 if path in forbidden else 200), path


def test_posts_without_the_session_token_are_refused(site: Site) -> None:
    assert site.sign_in("ada") == 303
    for path, form in (("/grants/1/revoke", {"reason": "x"}), ("/compliance/verify", {}),
                       ("/people", {"name": "mallory", "role": "admin"}),
                       ("/people/sam/role", {"role": "admin"}), ("/people/sam/disable", {}),
                       ("/people/sam/reset-password", {}), ("/password", {}),
                       ("/sign-out", {})):  # fmt: skip
        answer = site.client.post(path, data={**form, "csrf": "guessed"})
        assert answer.status_code == 403, path
        assert "did not come from this dashboard" in answer.text
    # Still signed in: the forged sign-out did nothing; nor did the forged account changes.
    assert site.client.get("/").status_code == 200
    sam = accounts.account(site.ledger, "sam")
    assert sam is not None
    assert (sam.role, sam.enabled, accounts.account(site.ledger, "mallory")) == (
        accounts.Role.SUPPORT,
        True,
        None,
    )
    assert (
        site.client.post("/sign-in", data={"name": "ada", "password": PASSWORD}).status_code == 403
    )


def test_the_people_page_answers_bad_forms_and_keeps_an_admin(site: Site) -> None:
    assert site.sign_in("ada") == 303
    token = site.csrf("/people")
    for path, form, says in (
        ("/people", {"name": "Bad Name!", "role": "support"}, "Not added: user name"),
        ("/people", {"name": "zed", "role": "root"}, "Choose a role."),
        ("/people", {"name": "zed", "role": "support", "method": "sso"}, "an email for single"),
        ("/people", {"name": "sam", "role": "support"}, "already exists"),
        ("/people/nobody/disable", {}, "no user &#39;nobody&#39;"),
        ("/people/sam/rename", {}, "no such change"),
        ("/people/sam/role", {"role": "root"}, "is not a role"),
        ("/people/ada/role", {"role": "support"}, "ada is the last enabled admin"),
        ("/people/ada/disable", {}, "ada is the last enabled admin"),
    ):
        answer = site.client.post(path, data={**form, "csrf": token})
        assert answer.status_code == 400, path
        assert says in answer.text, path
    ada = accounts.account(site.ledger, "ada")
    assert ada is not None
    assert (ada.role, ada.enabled) == (accounts.Role.ADMIN, True)


def test_every_page_names_an_icon_that_is_there(site: Site) -> None:
    """No page leaves the browser asking for a favicon that is not there (a 404 a page)."""
    assert site.sign_in("ada") == 303
    for path in ("/sign-in", "/", "/grants/1", "/rule-breaks", "/people"):
        icon = re.search(r'<link rel="icon" href="([^"]+)"', site.client.get(path).text)
        assert icon, path
        answer = site.client.get(icon.group(1))
        assert answer.status_code == 200, path
        assert answer.headers["content-type"].startswith("image/svg+xml")
    asked = site.client.get("/favicon.ico", follow_redirects=True)
    assert (asked.status_code, asked.url.path) == (200, "/static/favicon.svg")


def test_bad_input_gets_a_message_not_a_500(site: Site) -> None:
    assert site.sign_in("ada") == 303
    for query, message in (
        ("?within=soon", "Ending within"),
        ("?status=bogus", "Unknown status"),
        ("?sort=%3Cx%3E", "Unknown sort order"),
    ):
        answer = site.client.get("/" + query)
        assert answer.status_code == 400, query
        assert message in answer.text
    assert site.client.get("/?page=-3&q=" + "%25" * 500).status_code == 200
    assert site.client.get("/grants/999999").status_code == 404
    assert site.client.get("/compliance/export?since=tomorrowish").status_code == 400
    token = site.csrf("/grants/1/revoke")
    empty = site.client.post("/grants/1/revoke", data={"csrf": token, "reason": "  "})
    assert empty.status_code == 400
    assert "Say why" in empty.text
    long = site.client.post("/grants/1/revoke", data={"csrf": token, "reason": "x" * 501})
    assert long.status_code == 400
    assert "At most 500" in long.text


def test_a_wrong_password_is_refused_and_locks_after_repeated_tries(site: Site) -> None:
    for _ in range(site.settings.web.sign_in_attempts - 1):
        assert site.sign_in("ada", "not the password") == 401
    assert site.sign_in("ada", "not the password") == 401
    # Locked now, in the ledger: even the right password waits.
    page = site.client.post(
        "/sign-in",
        data={"csrf": site.csrf("/sign-in"), "name": "ada", "password": PASSWORD, "next": "/"},
    )
    assert page.status_code == 401
    assert "too many failed sign-ins" in page.text
    assert site.sign_in("sam") == 303  # others are not affected


def test_one_address_is_limited_in_its_attempts(site: Site) -> None:
    codes = [site.sign_in(f"nobody{i}", "x") for i in range(21)]
    assert codes[:20] == [401] * 20
    assert codes[20] == 429


def test_a_disabled_account_or_new_password_ends_its_sessions(site: Site) -> None:
    assert site.sign_in("sam") == 303
    assert site.client.get("/", follow_redirects=False).status_code == 200
    accounts.set_password(site.ledger, "sam", "a brand new password", actor="t", now=utcnow())
    assert site.client.get("/", follow_redirects=False).status_code == 303


def test_a_redirect_after_sign_in_stays_on_this_site(site: Site) -> None:
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        form = {"csrf": site.csrf("/sign-in"), "name": "sam", "password": PASSWORD, "next": target}
        answer = site.client.post("/sign-in", data=form, follow_redirects=False)
        assert answer.headers["location"] == "/"
        site.client.cookies.clear()


def test_secrets_stay_out_of_pages_logs_and_headers(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert site.sign_in("ada") == 303
    cookie = site.client.cookies[SESSION_COOKIE]
    pages = "".join(site.client.get(path).text for path in PAGES[:-1])
    for secret in (PASSWORD, cookie, SESSION_SECRET):
        assert secret not in pages
        assert secret not in caplog.text
    answer = site.client.get("/")
    assert "default-src 'self'" in answer.headers["content-security-policy"]
    assert answer.headers["x-frame-options"] == "DENY"
    set_cookie = (
        site.client.post(
            "/sign-in", data={"csrf": site.csrf("/sign-in"), "name": "ada", "password": PASSWORD}
        )
        .history[0]
        .headers["set-cookie"]
        .lower()
    )
    assert "httponly" in set_cookie
    assert "samesite=lax" in set_cookie


def test_metrics_and_readiness_say_what_the_ledger_holds(site: Site) -> None:
    text = site.client.get("/metrics").text
    usable = re.search(r'^firmgrant_grants\{status="active"\} (\d+)', text, re.M)
    rejected = re.search(r'^firmgrant_grants\{status="rejected"\} (\d+)', text, re.M)
    assert usable
    assert int(usable.group(1)) > 0
    assert rejected
    assert int(rejected.group(1)) >= 1
    assert re.search(r'^firmgrant_last_sync_age_seconds\{connection="sandbox"\} ', text, re.M)
    assert re.search(r'^firmgrant_connections\{state="ok"\} 1\.0', text, re.M)
    ready = site.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["ok"] is True


def test_the_listener_answers_kept_alive_clients_without_nagle_stalls() -> None:
    """Accepted connections get TCP_NODELAY, so a body written after its headers is not held
    back ~40 ms waiting for the client's delayed ACK on every kept-alive request."""
    import asyncio
    import socket

    from firmgrant.web.app import listen

    async def accepted_nodelay() -> int:
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_connect(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connect, sock=listen("127.0.0.1", 0))
        port = server.sockets[0].getsockname()[1]
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            return await asyncio.wait_for(seen, timeout=10)
        finally:
            writer.close()
            server.close()
            await server.wait_closed()

    assert asyncio.run(accepted_nodelay()) != 0


def test_a_taken_port_is_a_clear_error() -> None:
    from firmgrant.errors import ConfigError
    from firmgrant.web.app import listen

    taken = listen("127.0.0.1", 0)
    taken.listen()
    port = taken.getsockname()[1]
    with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
        listen("127.0.0.1", port)
    taken.close()
