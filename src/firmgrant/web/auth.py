"""Who is asking: sessions, roles, CSRF tokens, sign-in (password, SSO), sign-out, and a
per-address limit on sign-in attempts."""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque
from datetime import timedelta
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from firmgrant import accounts
from firmgrant.accounts import Account, Permission
from firmgrant.errors import SignInRefused
from firmgrant.timeutil import iso_z
from firmgrant.web.app import PasswordChangeNeeded, SignInNeeded, context_of, render

CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
STALE_FORM = (
    "This form has expired or did not come from this dashboard: reload the page and try again."
)


def csrf_token(request: Request) -> str:
    token = request.session.get(CSRF_FIELD)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session[CSRF_FIELD] = token
    return token


def check_csrf(request: Request, form: FormData) -> None:
    """Every form carries the session's token (a forged cross-site post cannot know it)."""
    expected = request.session.get(CSRF_FIELD)
    given = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
    if not isinstance(expected, str) or not isinstance(given, str):
        raise HTTPException(403, STALE_FORM)
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise HTTPException(403, STALE_FORM)


def signed_in(request: Request) -> Account | None:
    """The person of this session, if it is still good (same epoch, within its hours)."""
    if "person" in request.scope.get("state", {}):
        cached: Account | None = request.state.person
        return cached
    person = _load(request)
    request.state.person = person
    return person


def _load(request: Request) -> Account | None:
    name, epoch, since = (request.session.get(k) for k in ("user", "epoch", "since"))
    if not isinstance(name, str) or not isinstance(epoch, int) or not isinstance(since, float):
        return None
    context = context_of(request)
    if time.time() - since > context.settings.web.session_hours * 3600:
        return None
    person = accounts.account(context.ledger, name)
    if person is None or not person.enabled or person.session_epoch != epoch:
        return None
    return person


def require(
    request: Request, permission: Permission = Permission.READ, *, changing_password: bool = False
) -> Account:
    """The signed-in person, if they may do this; else to the sign-in page, or a 403. Someone
    holding a one-time password goes to *Your password* first, whatever they asked."""
    person = signed_in(request)
    if person is None:
        back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInNeeded(back)
    if person.must_change_password and not changing_password:
        raise PasswordChangeNeeded
    if not person.may(permission):
        raise HTTPException(403, f"Your role ({person.role}) may not do this.")
    return person


def page_context(request: Request) -> dict[str, Any]:
    person = signed_in(request) if "session" in request.scope else None
    return {
        # The server's now: the page's countdowns and clock run from it, not the browser's.
        "server_now": iso_z(context_of(request).clock()),
        "person": person,
        "csrf": csrf_token(request) if "session" in request.scope else "",
        "may": (lambda p: person is not None and person.may(Permission(p))),
        "flash": request.session.pop("flash", None) if "session" in request.scope else None,
    }


class AttemptLimit:
    """At most ``limit`` sign-in attempts per client address per ``window`` in this process
    (accounts also lock in the ledger after repeated failures, across replicas)."""

    def __init__(self, limit: int = 20, window: float = 300.0) -> None:
        self.limit, self.window = limit, window
        self.seen: dict[str, deque[float]] = {}
        self.lock = threading.Lock()

    def allow(self, address: str) -> int | None:
        """``None`` if allowed, else the seconds to wait."""
        now = time.monotonic()
        with self.lock:
            recent = self.seen.setdefault(address, deque())
            while recent and recent[0] <= now - self.window:
                recent.popleft()
            if len(recent) >= self.limit:
                return int(recent[0] + self.window - now) + 1
            recent.append(now)
            if len(self.seen) > 10_000:  # forget idle addresses: memory stays bounded
                for key in [k for k, v in self.seen.items() if not v]:
                    del self.seen[key]
            return None


def safe_next(target: str | None) -> str:
    """Only a path of this site: never ``//elsewhere`` or ``https://elsewhere``."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


async def sign_in_page(request: Request) -> Response:
    if signed_in(request) is not None:
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    return render(request, "sign_in.html", {"next": safe_next(request.query_params.get("next")),
                                            "error": None, "name": ""})  # fmt: skip


async def sign_in(request: Request) -> Response:
    form = await request.form()
    check_csrf(request, form)
    name = str(form.get("name") or "").strip().lower()
    password = str(form.get("password") or "")
    back = safe_next(str(form.get("next") or ""))
    wait = request.app.state.attempts.allow(request.client.host if request.client else "?")
    if wait is not None:
        return _refused(request, name, back, f"Too many sign-in attempts: wait {wait} s.", 429)
    context = context_of(request)
    web = context.settings.web
    try:
        person = await run_in_threadpool(
            accounts.sign_in, context.ledger, name, password, now=context.clock(),
            limit=web.sign_in_attempts, lockout=timedelta(minutes=web.lockout_minutes),
        )  # fmt: skip
    except SignInRefused as refused:
        return _refused(request, name, back, f"Not signed in: {refused}.", 401)
    start_session(request, person)
    return RedirectResponse(back, status_code=303)


def _refused(request: Request, name: str, back: str, message: str, status: int) -> Response:
    return render(request, "sign_in.html", {"next": back, "error": message, "name": name}, status)


def start_session(request: Request, person: Account) -> None:
    """A fresh session (a new CSRF token too: nothing carries over from before sign-in)."""
    request.session.clear()
    request.session.update(
        {"user": person.name, "epoch": person.session_epoch, "since": time.time()}
    )
    csrf_token(request)


async def sign_out(request: Request) -> Response:
    form = await request.form()
    check_csrf(request, form)
    person = signed_in(request)
    if person is not None:
        context = context_of(request)
        await run_in_threadpool(accounts.sign_out, context.ledger, person, now=context.clock())
    request.session.clear()
    return RedirectResponse("/sign-in", status_code=303)


def routes() -> list[BaseRoute]:
    return [
        Route("/sign-in", sign_in_page, methods=["GET"]),
        Route("/sign-in", sign_in, methods=["POST"]),
        Route("/sign-out", sign_out, methods=["POST"]),
    ]


__all__ = ["check_csrf", "csrf_token", "require", "routes", "signed_in", "start_session"]
