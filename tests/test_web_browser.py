"""The dashboard in a real browser (Debian's Chromium, driven by Playwright) against a real
`firmgrant web` process over a ledger filled from the sandbox. Each page's screenshot goes
to var/screenshots/ for a person to look at."""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser, Dialog, Page, expect, sync_playwright
from sqlalchemy import select

from firmgrant.ledger import Ledger
from firmgrant.ledger.models import EventRow, GrantRow
from firmgrant.lifecycle import EventKind
from firmgrant.sandbox import SandboxOrg
from firmgrant.settings import Settings
from tests.webbing import (
    HOSTILE_ORG,
    PASSWORD,
    WebProcess,
    browser_path,
    filled_ledger,
    screenshot_path,
    serving,
    start_web,
    web_env,
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = browser_path()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


@dataclass
class Dashboard:
    web: WebProcess
    ledger: Ledger
    settings: Settings
    org: SandboxOrg

    def sf_status(self, source_id: str) -> str:
        return str(self.org.store.records["login_access_grant__c"][source_id]["Status__c"])


@pytest.fixture
def dashboard(sandbox: SandboxOrg, tmp_path: Path) -> Iterator[Dashboard]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger, settings = filled_ledger(sandbox, url)
    web = start_web(web_env(sandbox, url))
    yield Dashboard(web, ledger, settings, sandbox)
    web.stop()
    ledger.engine.dispose()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    dialogs: list[str] = []

    def refuse(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    opened.on("dialog", refuse)
    yield opened
    context.close()
    assert dialogs == [], f"a page opened a dialog: {dialogs}"


def sign_in(page: Page, base: str, name: str, path: str = "/") -> None:
    page.goto(base + path)
    expect(page).to_have_url(f"{base}/sign-in?next={path.replace('/', '%2F')}")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def usable_grants(ledger: Ledger) -> list[GrantRow]:
    with ledger.sessions() as session:
        rows = session.execute(
            select(GrantRow).where(GrantRow.sf_status == "Active", GrantRow.via_login_as.is_(False))
        ).scalars()
        return list(rows)


def test_an_admin_signs_in_searches_opens_a_grant_revokes_it_and_signs_out(
    dashboard: Dashboard, page: Page
) -> None:
    base = dashboard.web.url
    page.goto(base + "/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.screenshot(path=screenshot_path("sign-in"))
    sign_in(page, base, "ada")
    expect(page.get_by_role("heading", name="Orgs you may enter")).to_be_visible()
    rows = page.locator("#results tbody tr")
    assert rows.count() > 5
    expect(page.locator("#results")).not_to_contain_text("Login-As Ltd")  # never usable
    page.screenshot(path=screenshot_path("grants"), full_page=True)

    target = next(
        g for g in usable_grants(dashboard.ledger) if g.org_name and "<" not in g.org_name
    )
    assert target.org_name is not None
    # Typing searches as you type (htmx), without a click.
    page.get_by_label("Search").fill(target.org_name)
    expect(page).to_have_url(re.compile(re.escape("q=" + quote(target.org_name, safe=""))))
    expect(rows.first).to_contain_text(target.org_name)
    assert all(target.org_name in rows.nth(i).inner_text() for i in range(rows.count()))
    link = rows.first.get_by_role("link", name="Log in")
    expect(link).to_have_attribute(
        "href", f"https://support.firmworks.example/enter?org={target.org_id}&grant={target.id}"
    )

    page.get_by_role("link", name=target.org_name).first.click()
    expect(page.get_by_role("heading", name="History")).to_be_visible()
    expect(page.locator(".history")).to_contain_text(EventKind.DISCOVERED.value)
    page.screenshot(path=screenshot_path("grant"), full_page=True)
    page.get_by_role("link", name="Revoke…").click()
    expect(page.get_by_role("heading", name=f"Revoke {target.org_name}?")).to_be_visible()
    page.get_by_label("Reason").fill("the ticket is closed")
    page.screenshot(path=screenshot_path("revoke"))
    page.get_by_role("button", name="Revoke now").click()
    expect(page.locator(".flash")).to_contain_text("Revoked in Salesforce")
    assert dashboard.sf_status(target.source_id) == "Revoked"
    with dashboard.ledger.sessions() as session:
        asked = session.execute(
            select(EventRow).where(
                EventRow.grant_id == target.id, EventRow.kind == EventKind.REVOKE_REQUESTED
            )
        ).scalar_one()
    assert (asked.actor, asked.reason) == ("web:ada", "the ticket is closed")

    page.get_by_role("link", name="Rule breaks").click()
    expect(page.locator("table")).to_contain_text("Login-As Ltd")
    page.screenshot(path=screenshot_path("rule-breaks"), full_page=True)
    page.get_by_role("link", name="Connections").click()
    expect(page.locator("table")).to_contain_text("sandbox")
    page.screenshot(path=screenshot_path("connections"))
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.goto(base + "/grants/1")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    with dashboard.ledger.sessions() as session:
        kinds = [
            (e.kind, e.actor)
            for e in session.execute(
                select(EventRow).where(
                    EventRow.kind.in_([EventKind.SIGNED_IN, EventKind.SIGNED_OUT])
                )
            ).scalars()
        ]
    assert kinds == [(EventKind.SIGNED_IN, "web:ada"), (EventKind.SIGNED_OUT, "web:ada")]


def test_every_countdown_runs_on_the_servers_clock(
    sandbox: SandboxOrg, tmp_path: Path, page: Page
) -> None:
    """A server whose clock is not the browser's (the demo runs a day ahead): the page's
    live countdowns and its clock say what the server says, not what the browser thinks."""
    from firmgrant.lifecycle import ends_at
    from firmgrant.timeutil import utcnow

    ledger, settings = filled_ledger(sandbox, f"sqlite:///{tmp_path / 'ledger.db'}")
    target = max(usable_grants(ledger), key=lambda g: g.expires_at)
    end = ends_at(target.granted_at, target.expires_at, settings.policy.max_duration)
    shift = end - utcnow() - timedelta(hours=2, minutes=30)  # the server: 2.5 h to go
    assert shift > timedelta(days=1), "the browser's clock would say days"
    with serving(settings, ledger, lambda: utcnow() + shift) as base:
        sign_in(page, base, "sam")
        row = page.locator("#results tbody tr", has_text=target.org_id)
        words = row.first.locator(".words")
        expect(words).to_have_text(re.compile(r"\(in 2 hours (29|30) minutes\)"))
        server_day = (utcnow() + shift).strftime("%Y-%m-%d")
        expect(page.locator("[data-clock]")).to_contain_text(f"Now {server_day}")
    ledger.engine.dispose()


def test_the_list_flags_revocations_under_way_and_offers_only_what_can_be_done(
    dashboard: Dashboard, page: Page
) -> None:
    """A grant being revoked (or whose revocation failed) says so on its row, with
    Salesforce's words, and offers no *Log in*; *Revoke…* is offered only on access that
    can still be used; every status has its own colour; *Access to* names the grantee."""
    from firmgrant.jobs.revoke import request_revocation
    from firmgrant.ledger.models import RevocationRow
    from firmgrant.timeutil import utcnow

    base = dashboard.web.url
    failing, queued = usable_grants(dashboard.ledger)[:2]
    for grant in (failing, queued):
        assert request_revocation(
            dashboard.ledger, grant.id, reason="ticket closed", actor="web:ada", now=utcnow()
        )
    with dashboard.ledger.transaction() as session:
        row = session.get(RevocationRow, failing.id)
        assert row is not None
        row.state, row.last_error = (
            "failed",
            "UNABLE_TO_LOCK_ROW: unable to obtain exclusive access",
        )
    sign_in(page, base, "ada")
    rows = page.locator("#results tbody tr")
    bad = rows.filter(has_text=failing.org_id).filter(has=page.locator(".badge.revoke_failed"))
    expect(bad).to_have_count(1)
    expect(bad).to_contain_text("revocation failed, retried")
    expect(bad).to_contain_text("UNABLE_TO_LOCK_ROW")
    expect(bad.get_by_role("link", name="Log in")).to_have_count(0)
    pending = rows.filter(has=page.locator(".badge.pending_revocation"))
    expect(pending).to_have_count(1)
    expect(pending).to_contain_text("being revoked")
    expect(pending.get_by_role("link", name="Log in")).to_have_count(0)
    page.goto(f"{base}/grants/{failing.id}")
    expect(page.get_by_role("link", name="Revoke…")).to_have_count(0)

    page.goto(base + "/?status=all")
    colours = page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('.legend .badge')].map(
            b => [b.textContent, [getComputedStyle(b).backgroundColor,
                                  getComputedStyle(b).color].join()]))"""
    )
    assert len(colours) == 6
    assert len(set(colours.values())) == 6, f"one colour a status: {colours}"
    page.goto(base + "/?status=rejected")
    rejected = page.locator("#results tbody tr").filter(has_text="Login-As Ltd")
    expect(rejected).to_contain_text("FirmWorks Support")
    expect(rejected).not_to_contain_text("admin@loginas.example")
    rejected.get_by_role("link", name="Login-As Ltd").click()
    expect(page.get_by_role("heading", name="Facts")).to_be_visible()
    expect(page.get_by_role("link", name="Revoke…")).to_have_count(0)


def test_search_finds_names_whatever_their_case_and_accents(
    dashboard: Dashboard, page: Page
) -> None:
    """``Łódź`` found as typed, in capitals, or without its accents; on SQLite too, whose
    own lower() knows ASCII only."""
    with dashboard.ledger.sessions() as session:
        names = [n for n in session.execute(select(GrantRow.org_name)).scalars() if n]
    lodz = sorted(n for n in names if n.startswith("Łódź"))
    assert lodz, "the sandbox's seed names a Łódź org"
    base = dashboard.web.url
    sign_in(page, base, "sam")
    page.get_by_label("Status", exact=True).select_option("all")
    rows = page.locator("#results tbody tr")
    for typed in ("Łódź", "ŁÓDŹ", "lodz", "ódź Logi"):
        page.get_by_label("Search").fill(typed)
        expect(page.locator("#results .count")).to_have_text(
            f"{len(lodz)} grant{'s' if len(lodz) != 1 else ''}"
        )
        expect(rows.first).to_contain_text("Łódź Logistics")
    page.get_by_label("Search").fill("Études")
    expect(rows.first).to_contain_text("Société Générale d'Études")


def test_rule_breaks_lists_every_refused_grant_and_filters_by_kind_org_user_and_period(
    dashboard: Dashboard, page: Page
) -> None:
    """A Login-As grant deleted before firmgrant saw it live was never revoked, yet it broke
    the rule; a use of access outside any grant names its support user in its own column."""
    from firmgrant.jobs.sync import sync_connection
    from firmgrant.settings import VendorSettings
    from firmgrant.timeutil import utcnow
    from firmgrant.worker import Worker
    from tests.test_audit_source import audit_connection

    org = dashboard.org
    gone = org.customers.grant(
        duration="1 Week", org_name="Gone Before Seen Ltd", grantor="gil@gone.example",
        login_as_user="admin@gone.example",
    )  # fmt: skip
    org.customers.delete(gone["Id"])
    Worker(dashboard.settings, dashboard.ledger).cycle()
    tenant = org.tenants.add()
    tenant.use("ana.support@firmworks.example", f"jane@{tenant.domain}",
               at=utcnow() - timedelta(hours=3))  # fmt: skip
    vendor = VendorSettings(
        publisher_org_id=org.app.org_id, support_usernames=["*@firmworks.example"]
    )
    sync_connection(
        dashboard.ledger, "acme", audit_connection(org, tenant), vendor, dashboard.settings.sync
    )
    base = dashboard.web.url
    sign_in(page, base, "sam", "/rule-breaks")
    table = page.locator("table.breaks tbody")
    expect(table).to_contain_text("Gone Before Seen Ltd")
    expect(table).to_contain_text("Login-As Ltd")
    violation = table.locator("tr").filter(has_text="no valid grant")
    expect(violation).to_have_count(1)
    expect(violation.locator("td").nth(4)).to_have_text("ana.support@firmworks.example")
    page.screenshot(path=screenshot_path("rule-breaks"), full_page=True)

    page.get_by_label("What").select_option("violation")
    page.get_by_role("button", name="Show").click()
    expect(table.locator("tr")).to_have_count(1)
    page.get_by_label("What").select_option("all")
    page.get_by_label("Org").fill("gone before")
    page.get_by_role("button", name="Show").click()
    expect(table.locator("tr")).to_have_count(1)
    expect(table).to_contain_text("gil@gone.example")
    page.get_by_label("Org").fill("")
    page.get_by_label("Support user").fill("ANA.support@firmworks.example")
    page.get_by_role("button", name="Show").click()
    expect(table.locator("tr")).to_have_count(1)
    page.get_by_label("Support user").fill("")
    page.get_by_label("Since").fill("2h")
    page.get_by_role("button", name="Show").click()
    expect(table).to_contain_text("Gone Before Seen Ltd")
    expect(table.locator("tr").filter(has_text="no valid grant")).to_have_count(0)
    page.get_by_label("Since").fill("")
    page.get_by_label("Until").fill("2h")
    page.get_by_role("button", name="Show").click()
    expect(table.locator("tr")).to_have_count(1)
    expect(table).to_contain_text("ana.support@firmworks.example")
    page.get_by_label("Since").fill("last tuesday")
    page.get_by_role("button", name="Show").click()
    expect(page.locator(".problem")).to_contain_text("Since")


def test_connections_lists_every_org_with_its_state_and_schedule(
    dashboard: Dashboard, page: Page
) -> None:
    from firmgrant.ledger import registry
    from firmgrant.orgs import new_row, spec
    from firmgrant.timeutil import utcnow

    with dashboard.ledger.transaction() as session:
        registry.add(
            session,
            [
                new_row(
                    spec(
                        {
                            "name": name,
                            "login_url": "https://acme.my.salesforce.com",
                            "username": f"int@{name}.example",
                        },
                        "test",
                    ),
                    utcnow(),
                )
                for name in ("org10", "org2", "org1")
            ],
        )
        row = registry.find(session, "org2", lock=True)
        row.enabled, row.failures = False, 3
    base = dashboard.web.url
    sign_in(page, base, "ada", "/orgs")
    names = page.locator("table tbody tr td:first-child").all_inner_texts()
    assert [n.split()[0] for n in names] == ["org1", "org2", "org10", "sandbox"]
    disabled = page.locator("table tbody tr").filter(has_text="org2")
    expect(disabled.locator(".badge")).to_have_text("disabled")
    expect(page.locator("thead")).to_contain_text("Next sync")
    expect(page.locator("thead")).to_contain_text("Failures")
    expect(disabled.locator("td").nth(5)).to_have_text("3")
    # The object source's one connection brings grants from many customer orgs.
    sandbox = page.locator("table tbody tr").filter(has_text="sandbox")
    expect(sandbox.locator("td").nth(1)).to_have_text(re.compile(r"grants from \d+ orgs"))
    page.screenshot(path=screenshot_path("connections"), full_page=True)


def test_support_reads_but_gets_403_on_revoke(dashboard: Dashboard, page: Page) -> None:
    base = dashboard.web.url
    sign_in(page, base, "sam")
    target = usable_grants(dashboard.ledger)[0]
    page.goto(f"{base}/grants/{target.id}")
    expect(page.get_by_role("heading", name="Facts")).to_be_visible()
    expect(page.get_by_role("link", name="Revoke…")).to_have_count(0)
    expect(page.get_by_role("link", name="Connections")).to_have_count(0)
    response = page.goto(f"{base}/grants/{target.id}/revoke")
    assert response is not None
    assert response.status == 403
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    assert dashboard.sf_status(target.source_id) == "Active"


def test_a_form_without_its_csrf_token_is_refused(dashboard: Dashboard, page: Page) -> None:
    base = dashboard.web.url
    sign_in(page, base, "ada")
    target = usable_grants(dashboard.ledger)[0]
    page.goto(f"{base}/grants/{target.id}/revoke")
    page.get_by_label("Reason").fill("forged")
    page.locator("#main input[name=csrf]").evaluate("input => input.remove()")
    page.get_by_role("button", name="Revoke now").click()
    expect(page.locator(".problem")).to_contain_text("did not come from this dashboard")
    assert dashboard.sf_status(target.source_id) == "Active"


def test_an_org_name_with_markup_renders_as_text(dashboard: Dashboard, page: Page) -> None:
    base = dashboard.web.url
    sign_in(page, base, "sam")
    page.get_by_label("Search").fill("Sons")
    cell = page.get_by_role("link", name=HOSTILE_ORG)
    expect(cell).to_be_visible()
    cell.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(HOSTILE_ORG)
    assert page.evaluate("window.__pwned") is None


def test_compliance_downloads_the_export_with_its_manifest(
    dashboard: Dashboard, page: Page, tmp_path: Path
) -> None:
    base = dashboard.web.url
    sign_in(page, base, "cy", "/compliance")
    page.screenshot(path=screenshot_path("compliance"))
    page.get_by_role("button", name="Verify the chain now").click()
    expect(page.locator(".flash")).to_contain_text("The chain is intact")
    page.get_by_label("Format").select_option("ndjson")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download").click()
    saved = tmp_path / "export.zip"
    download.value.save_as(saved)
    with zipfile.ZipFile(saved) as archive:
        names = archive.namelist()
        assert len(names) == 2
        assert names[1] == names[0] + ".manifest.json"
        archive.extractall(tmp_path / "out")
    from firmgrant import export as exporting

    assert exporting.check_file(tmp_path / "out" / names[0]) is None
    page.get_by_label("Since").fill("yesterday")
    page.get_by_role("button", name="Download").click()
    expect(page.locator(".problem")).to_contain_text("Since")


def test_the_list_works_at_phone_width_and_without_javascript(
    dashboard: Dashboard, browser: Browser
) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, java_script_enabled=False)
    page = context.new_page()
    base = dashboard.web.url
    sign_in(page, base, "sam")
    page.get_by_label("Search").fill("Sons")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_role("link", name=HOSTILE_ORG)).to_be_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390
    page.screenshot(path=screenshot_path("grants-phone"), full_page=True)
    context.close()


def test_an_admin_manages_people_from_the_people_page(dashboard: Dashboard, page: Page) -> None:
    """Add with a one-time password (shown once, replaced at first sign-in), change a role,
    lock and unlock, reset a password, disable and enable: each an event naming the admin;
    the last admin cannot remove itself."""
    from firmgrant import accounts
    from firmgrant.errors import SignInRefused
    from firmgrant.timeutil import utcnow

    base = dashboard.web.url
    sign_in(page, base, "ada", "/people")
    rows = page.locator("table.people tbody tr")
    expect(rows).to_have_count(3)
    page.get_by_label("User name").fill("nina")
    page.get_by_label("Role", exact=True).select_option("support")
    page.get_by_role("button", name="Add", exact=True).click()
    expect(page.locator(".issued")).to_contain_text("One-time password for nina")
    one_time = page.locator("#one-time").inner_text()
    assert len(one_time) >= accounts.MIN_PASSWORD
    nina = rows.filter(has=page.locator("td:first-child", has_text="nina"))
    expect(nina).to_contain_text("must choose a password")
    page.goto(base + "/people")
    expect(page.locator(".issued")).to_have_count(0)  # shown once

    # Nina's first sign-in leads to choosing her own password, whatever she asks for.
    other = page.context.browser.new_context()  # type: ignore[union-attr]
    hers = other.new_page()
    hers.goto(base + "/rule-breaks")
    hers.get_by_label("User name").fill("nina")
    hers.get_by_label("Password").fill(one_time)
    hers.get_by_role("button", name="Sign in").click()
    expect(hers).to_have_url(base + "/password")
    hers.goto(base + "/")
    expect(hers).to_have_url(base + "/password")
    hers.get_by_label("Current password").fill(one_time)
    hers.get_by_label("New password (").fill("nina's own long password")
    hers.get_by_label("New password again").fill("nina's own long password")
    hers.get_by_role("button", name="Change password").click()
    expect(hers).to_have_url(base + "/")
    expect(hers.locator(".flash")).to_contain_text("Your password is changed")
    other.close()

    page.goto(base + "/people")
    nina.get_by_label("Role of nina").select_option("compliance")
    nina.get_by_role("button", name="Set role").click()
    expect(page.locator(".flash")).to_contain_text("nina is now compliance")
    expect(nina.locator("select")).to_have_value("compliance")

    for _ in range(dashboard.settings.web.sign_in_attempts):
        with pytest.raises(SignInRefused):
            accounts.sign_in(dashboard.ledger, "nina", "not her password", now=utcnow())
    page.reload()
    expect(nina.locator(".badge")).to_have_text("locked")
    nina.get_by_role("button", name="Unlock nina").click()
    expect(nina.locator(".badge")).to_have_text("enabled")
    nina.get_by_role("button", name="Reset the password of nina").click()
    expect(page.locator(".issued")).to_contain_text("One-time password for nina")
    assert page.locator("#one-time").inner_text() != one_time
    page.screenshot(path=screenshot_path("people"), full_page=True)
    nina.get_by_role("button", name="Disable nina").click()
    expect(nina.locator(".badge")).to_have_text("disabled")
    nina.get_by_role("button", name="Enable nina").click()
    expect(nina.locator(".badge")).to_have_text("must choose a password")

    ada = rows.filter(has=page.locator("td:first-child", has_text="ada"))
    ada.get_by_role("button", name="Disable ada").click()
    expect(page.locator(".problem")).to_contain_text("ada is the last enabled admin")
    with dashboard.ledger.sessions() as session:
        changes = session.execute(
            select(EventRow.actor, EventRow.payload)
            .where(EventRow.kind == EventKind.ACCOUNT_CHANGED)
            .order_by(EventRow.id)
        ).all()
    said = [(actor, json.loads(payload)) for actor, payload in changes]
    by_ada = [payload for actor, payload in said if actor == "web:ada"]
    assert [p["action"] for p in by_ada if p["user"] == "nina"] == [
        "added",
        "role",
        "unlocked",
        "password reset",
        "disabled",
        "enabled",
    ]
    assert ("web:nina", "password") in [(a, p["action"]) for a, p in said]
    assert one_time not in str(changes)


def test_the_demo_dashboard_shows_every_connection_open_revocations_and_log_in_links(
    browser: Browser, tmp_path: Path
) -> None:
    """`firmgrant demo --web` as a newcomer runs it: three roles to sign in as, the three
    audit orgs beside the object source on Connections, one revocation Salesforce refused and
    one not yet tried, and Log in links that open the sandbox's stand-in for the LMO."""
    import os
    import subprocess
    import sys
    import threading

    env = {k: v for k, v in os.environ.items() if not k.startswith("FIRMGRANT_")}
    env.update({"PORT": "0", "COLUMNS": "200"})
    demo = subprocess.Popen(
        [sys.executable, "-m", "firmgrant", "demo", "--web", "--dir", str(tmp_path / "demo")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    told: list[str] = []
    try:
        assert demo.stdout is not None
        for line in demo.stdout:  # the story, then the dashboard's URL as its last line
            told.append(line)
            if line.startswith("http://"):
                break
        threading.Thread(target=lambda: told.extend(demo.stdout or []), daemon=True).start()
        story = " ".join("".join(told).split())
        password = re.search(r"password (\S+)\. Its clock", story)
        assert password, story
        base = told[-1].strip()
        context = browser.new_context(ignore_https_errors=True)
        page = context.new_page()
        for name, sees, not_sees in (
            ("demo-compliance", "Compliance", "People"),
            ("demo-admin", "People", None),
        ):
            page.goto(base + "/sign-in")
            page.get_by_label("User name").fill(name)
            page.get_by_label("Password").fill(password.group(1))
            page.get_by_role("button", name="Sign in").click()
            nav = page.get_by_role("navigation", name="Main")
            expect(nav.get_by_role("link", name=sees, exact=True)).to_be_visible()
            if not_sees:
                expect(nav.get_by_role("link", name=not_sees, exact=True)).to_have_count(0)
                page.get_by_role("button", name="Sign out").click()
        page.goto(base + "/orgs")
        names = page.locator("table tbody tr td:first-child").all_inner_texts()
        assert [n.split()[0] for n in names] == ["org1", "org2", "org3", "sandbox"]
        page.goto(base + "/")
        refused = page.locator("#results tbody tr").filter(has_text="revocation failed, retried")
        expect(refused).to_have_count(1)
        expect(refused).to_contain_text("UNABLE_TO_LOCK_ROW")
        expect(refused.get_by_role("link", name="Log in")).to_have_count(0)
        page.goto(base + "/?status=all&q=Hofmann")
        expect(page.locator("#results tbody tr")).to_contain_text("being revoked")
        page.goto(base + "/")
        link = page.get_by_role("link", name="Log in").first
        href = link.get_attribute("href") or ""
        assert re.match(r"https://127\.0\.0\.1:\d+/subscriber-support/login\?org=00D", href)
        with context.expect_page() as opened:
            link.click()
        lmo = opened.value
        expect(lmo.locator("h1")).to_have_text("Subscriber Support Console (sandbox)")
        context.close()
    finally:
        demo.terminate()
        demo.wait(timeout=30)
    assert "Revocations still open" in story
