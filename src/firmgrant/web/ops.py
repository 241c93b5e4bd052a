"""For operators and their platform: ``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from firmgrant.errors import LedgerError
from firmgrant.ledger import dashboard
from firmgrant.metrics import registry_for
from firmgrant.timeutil import iso_z
from firmgrant.web.app import WebContext, context_of


def healthz(request: Request) -> Response:
    """The process is up and serving."""
    return JSONResponse({"ok": True})


def readyz(request: Request) -> Response:
    """The ledger answers and the worker's last sync is recent (3 poll intervals)."""
    context = context_of(request)
    settings, now = context.settings, context.clock()
    try:
        with context.ledger.sessions() as session:
            health = dashboard.connections(session, list(settings.connections))
    except (SQLAlchemyError, LedgerError) as exc:
        problem = f"ledger unreachable: {type(exc).__name__}"
        return JSONResponse({"ok": False, "problem": problem}, status_code=503)
    synced = [c.last_success_at for c in health if c.last_success_at is not None]
    if not synced:
        return JSONResponse({"ok": False, "problem": "no sync yet"}, status_code=503)
    last = max(synced)
    recent = now - last <= timedelta(seconds=3 * settings.poll_seconds + 60)
    body = {"ok": recent, "last_sync_at": iso_z(last)}
    if not recent:
        body["problem"] = "the last sync is old: is the worker running?"
    return JSONResponse(body, status_code=200 if recent else 503)


def install_metrics(app: Starlette, context: WebContext) -> None:
    app.state.metrics, app.state.metrics_collector = registry_for(
        context.settings, context.ledger, context.clock
    )


def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)


async def favicon(request: Request) -> Response:
    """Pages name their icon; a client that asks the conventional path is sent to it."""
    return RedirectResponse("/static/favicon.svg", status_code=301)


def routes() -> list[BaseRoute]:
    return [
        Route("/favicon.ico", favicon, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
