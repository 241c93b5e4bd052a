"""The dashboard's app: routes, middleware (sessions, security headers), templates."""

from __future__ import annotations

import logging
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from firmgrant import display
from firmgrant.errors import ConfigError, LedgerError
from firmgrant.ledger import Ledger
from firmgrant.settings import Settings
from firmgrant.timeutil import iso_z, utcnow

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
SESSION_COOKIE = "firmgrant_session"

# No inline script or style, no other origin: an org name with <script> in it stays text even
# if a template forgot to escape it.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


@dataclass
class WebContext:
    """What every page needs, injected (tests pass their own clock)."""

    settings: Settings
    ledger: Ledger
    templates: Jinja2Templates
    clock: Callable[[], datetime]


class SignInNeeded(Exception):
    """The visitor must sign in first; carries where to come back to."""

    def __init__(self, back_to: str) -> None:
        super().__init__(back_to)
        self.back_to = back_to


class PasswordChangeNeeded(Exception):
    """The person signed in with a one-time password: they choose their own first."""


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response (and HSTS behind HTTPS)."""

    def __init__(self, app: ASGIApp, *, https: bool) -> None:
        self.app = app
        self.headers = [*SECURITY_HEADERS]
        if https:
            self.headers.append((b"strict-transport-security", b"max-age=31536000"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *self.headers]
            await send(message)

        await self.app(scope, receive, with_headers)


def _environment(clock: Callable[[], datetime]) -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template is HTML
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )

    def when(moment: datetime | None) -> str:
        return "—" if moment is None else f"{moment:%Y-%m-%d %H:%M} UTC"

    def words(moment: datetime | None) -> str:
        if moment is None:
            return ""
        return display.in_words((moment - clock()).total_seconds())

    def later(span: timedelta | None) -> str:
        """``noticed 3 days later``: how long after it happened firmgrant recorded it."""
        if span is None:
            return ""
        return f"noticed {display.in_words(span.total_seconds()).removeprefix('in ')} later"

    env.filters["when"] = when
    env.filters["words"] = words
    env.filters["later"] = later
    env.filters["iso"] = lambda moment: iso_z(moment) if moment else ""
    return env


def _session_secret(settings: Settings) -> str:
    if settings.web.session_secret is not None:
        return settings.web.session_secret.get_secret_value()
    log.warning(
        "FIRMGRANT_WEB__SESSION_SECRET is not set: sessions end when this process stops and"
        " are not shared with other replicas"
    )
    return secrets.token_urlsafe(32)


def create_app(
    settings: Settings, ledger: Ledger, *, clock: Callable[[], datetime] = utcnow
) -> Starlette:
    from firmgrant import accounts
    from firmgrant.web import auth, compliance, ops, pages, people, revoking, sso

    accounts.prepare_sign_in()
    https = settings.web.public_url.startswith("https://")
    templates = Jinja2Templates(env=_environment(clock))
    context = WebContext(settings, ledger, templates, clock)
    routes = [
        *auth.routes(),
        *sso.routes(),
        *pages.routes(),
        *revoking.routes(),
        *people.routes(),
        *compliance.routes(),
        *ops.routes(),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [
        Middleware(SecurityHeaders, https=https),
        Middleware(
            SessionMiddleware,
            secret_key=_session_secret(settings),
            session_cookie=SESSION_COOKIE,
            max_age=int(settings.web.session_hours * 3600),
            same_site="lax",
            https_only=https,
        ),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            SignInNeeded: _to_sign_in,
            PasswordChangeNeeded: _to_password,
            HTTPException: _error_page,
            LedgerError: _ledger_down,
        },
    )
    app.state.context = context
    app.state.attempts = auth.AttemptLimit()
    app.state.sso = sso.Provider(settings.web) if settings.web.oidc_issuer else None
    templates.env.globals["sso_button"] = settings.web.oidc_button if app.state.sso else None
    ops.install_metrics(app, context)
    return app


def context_of(request: Request) -> WebContext:
    found: WebContext = request.app.state.context
    return found


async def _to_password(request: Request, exc: Exception) -> Response:
    return RedirectResponse("/password", status_code=303)


async def _to_sign_in(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInNeeded)
    from urllib.parse import urlencode

    return RedirectResponse(f"/sign-in?{urlencode({'next': exc.back_to})}", status_code=303)


async def _ledger_down(request: Request, exc: Exception) -> Response:
    """The database is down: a plain page (the usual one reads the person from it), 503."""
    log.error("%s %s: %s", request.method, request.url.path, exc)
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Unavailable</title>'
        "</head><body><h1>The ledger is unreachable</h1><p>firmgrant cannot reach its database"
        " right now. Try again in a minute; operators: see /readyz and the logs.</p></body></html>"
    )
    return HTMLResponse(page, status_code=503, headers={"Retry-After": "30"})


async def _error_page(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    context = context_of(request)
    from firmgrant.web.auth import page_context

    return context.templates.TemplateResponse(
        request,
        "error.html",
        {**page_context(request), "status": exc.status_code, "message": exc.detail},
        status_code=exc.status_code,
        headers=exc.headers,
    )


def render(request: Request, name: str, values: dict[str, Any], status_code: int = 200) -> Response:
    """A page, with what every page shows (the person, their CSRF token)."""
    from firmgrant.web.auth import page_context

    return context_of(request).templates.TemplateResponse(
        request, name, {**page_context(request), **values}, status_code=status_code
    )


def listen(host: str, port: int) -> socket.socket:
    """A bound TCP listener for uvicorn (``port`` 0 picks a free one); a port that is taken
    is a ``ConfigError`` naming it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it a kept-alive client waits ~40 ms (Nagle and delayed ACK) for each body.
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return listener


def serve(
    settings: Settings,
    ledger: Ledger,
    *,
    host: str,
    port: int,
    clock: Callable[[], datetime] = utcnow,
) -> None:
    """Serve the dashboard until SIGINT or SIGTERM (uvicorn's graceful shutdown); the first
    line on stdout is its URL (``--port 0`` picks a free port)."""
    import uvicorn

    app = create_app(settings, ledger, clock=clock)
    listener = listen(host, port)
    bound = listener.getsockname()[1]
    shown = f"[{host}]" if listener.family == socket.AF_INET6 else host
    print(f"http://{shown}:{bound}", flush=True)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        proxy_headers=True,  # X-Forwarded-Proto from the platform's router (Heroku and the like)
        server_header=False,
        access_log=False,
    )
    uvicorn.Server(config).run(sockets=[listener])
