"""*Revoke* (admins): a confirmation with a reason, then the path of ``firmgrant revoke``."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from firmgrant import revoke_now as hand
from firmgrant.accounts import Permission
from firmgrant.errors import FirmgrantError, GrantNotFound
from firmgrant.ledger.queries import GrantView
from firmgrant.web.app import context_of, render
from firmgrant.web.auth import check_csrf, require

MAX_REASON = 500


def _grant(request: Request) -> GrantView:
    context = context_of(request)
    try:
        return hand.pending(
            context.ledger, context.settings, str(request.path_params["grant_id"]),
            context.clock(),
        )  # fmt: skip
    except GrantNotFound:
        raise HTTPException(404, "No such grant in the ledger.") from None


def _confirm(request: Request, grant: GrantView, reason: str, error: str | None) -> Response:
    settings = context_of(request).settings
    values = {
        "grant": grant, "reason": reason, "error": error,
        "what": hand.describe(grant, hand.access_ends(grant, settings)),
        "moot": hand.is_moot(grant), "in_setup_only": settings.in_setup_only(grant.connection),
        "max_reason": MAX_REASON,
    }  # fmt: skip
    return render(request, "revoke.html", values, 400 if error else 200)


def confirm_page(request: Request) -> Response:
    require(request, Permission.REVOKE)
    return _confirm(request, _grant(request), "", None)


async def revoke(request: Request) -> Response:
    person = require(request, Permission.REVOKE)
    form = await request.form()
    check_csrf(request, form)
    grant = await run_in_threadpool(_grant, request)
    reason = str(form.get("reason") or "").strip()
    if not reason:
        return _confirm(request, grant, reason, "Say why: the reason goes into the ledger.")
    if len(reason) > MAX_REASON:
        return _confirm(request, grant, reason[:MAX_REASON], f"At most {MAX_REASON} characters.")
    context = context_of(request)
    try:
        done = await run_in_threadpool(
            hand.revoke_now, context.ledger, context.settings, grant, reason=reason,
            actor=person.actor, clock=context.clock,
        )  # fmt: skip
    except FirmgrantError as exc:  # e.g. the connection's settings are incomplete
        return _confirm(request, grant, reason, f"Not revoked: {exc}")
    messages = {
        hand.HandOutcome.NOTHING_TO_DO: f"Nothing to do: the grant is already {grant.status}.",
        hand.HandOutcome.REVOKED: "Revoked in Salesforce; the grantor is told by email.",
        hand.HandOutcome.FAILED: (
            "Salesforce did not revoke it yet: the worker retries (see the revocation below)."
        ),
    }
    request.session["flash"] = messages[done.outcome]
    return RedirectResponse(f"/grants/{grant.id}", status_code=303)


def routes() -> list[BaseRoute]:
    return [
        Route("/grants/{grant_id:int}/revoke", confirm_page, methods=["GET"]),
        Route("/grants/{grant_id:int}/revoke", revoke, methods=["POST"]),
    ]
