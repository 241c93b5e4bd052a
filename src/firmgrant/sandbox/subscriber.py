"""The sandbox's stand-in for the License Management Org's *Log in* button (the Subscriber
Support Console): where the demo dashboard's *Log in* links go. It says which org support
would enter and under which grant, and logs nobody in."""

from __future__ import annotations

from html import escape

from firmgrant.sandbox.api import Request, Response

PATH = "/subscriber-support/login"
TEMPLATE = "?org={org_id}&grant={grant_id}"  # what the demo's login_url_template appends

_PAGE = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>Subscriber Support (sandbox)</title></head><body style="font-family:sans-serif">
<h1>Subscriber Support Console (sandbox)</h1>
<p>In Salesforce, your License Management Org would now log you in to org
<strong>{org}</strong>, under the grant firmgrant lists as <strong>{grant}</strong>.</p>
<p>This sandbox logs nobody in. In production, <code>FIRMGRANT_WEB__LOGIN_URL_TEMPLATE</code>
points at your own LMO or support console.</p></body></html>"""


def login_page(request: Request) -> Response:
    def given(name: str) -> str:
        return escape((request.query.get(name) or ["?"])[0][:40])

    body = _PAGE.format(org=given("org"), grant=given("grant")).encode()
    return Response(200, body, {"Content-Type": "text/html; charset=utf-8"})
