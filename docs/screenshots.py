"""The README's screenshots, taken from `firmgrant demo --web` in Debian's Chromium.

    .venv/bin/python docs/screenshots.py        # writes docs/screenshots/*.png

CJK org names need a font with those glyphs (Debian: fonts-noto-cjk).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

OUT = Path(__file__).parent / "screenshots"
PAGES = {"rule-breaks": "/rule-breaks", "connections": "/orgs", "people": "/people"}


def sign_in(page: Page, base: str, name: str, password: str) -> None:
    page.goto(base + "/sign-in")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(base + "/")


def main() -> None:
    OUT.mkdir(exist_ok=True)
    env = {**os.environ, "PORT": "0", "COLUMNS": "200"}
    with tempfile.TemporaryDirectory() as scratch:
        demo = subprocess.Popen(
            [sys.executable, "-m", "firmgrant", "demo", "--web", "--dir", scratch], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert demo.stdout is not None
        told = []
        for line in demo.stdout:
            told.append(line)
            if line.startswith("http://"):
                break
        found = re.search(r"password (\S+)\. Its clock", " ".join("".join(told).split()))
        assert found, "".join(told)
        base, password = told[-1].strip(), found.group(1)
        try:
            shoot(base, password)
        finally:
            demo.terminate()
            demo.wait(timeout=30)


def shoot(base: str, password: str) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=os.environ.get("FIRMGRANT_TEST_BROWSER", "/usr/bin/chromium"),
            args=["--no-sandbox"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        sign_in(page, base, "demo-admin", password)
        page.screenshot(path=OUT / "list.png", full_page=True)
        refused = page.locator("#results tbody tr").filter(has_text="revocation failed")
        refused.locator("a[href^='/grants/']").first.click()
        page.screenshot(path=OUT / "grant.png", full_page=True)
        for name, path in PAGES.items():
            page.goto(base + path)
            page.screenshot(path=OUT / f"{name}.png", full_page=True)
        phone = browser.new_page(
            viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True
        )
        sign_in(phone, base, "demo-support", password)
        phone.screenshot(path=OUT / "phone.png")
        browser.close()


if __name__ == "__main__":
    main()
