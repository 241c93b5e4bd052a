"""*People* (admins): the dashboard's accounts — add one, change its role, disable or enable
it, unlock it, give it a one-time password; and every person's own *Your password* page.

Each change goes through :mod:`firmgrant.accounts` (its rules, e.g. one enabled admin always
remains, and its events in the chain). A one-time password is shown once, in the response to
the form that made it: never in a redirect, the session cookie or a log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from firmgrant import accounts
from firmgrant.accounts import Account, Permission, Role
from firmgrant.errors import AccountError, SignInRefused
from firmgrant.web.app import context_of, render
from firmgrant.web.auth import check_csrf, require, start_session

ROLE_WORDS = {
    Role.SUPPORT: "sees grants, their history and rule breaks",
    Role.COMPLIANCE: "also downloads exports and verifies the chain",
    Role.ADMIN: "also revokes, sees the connections and manages people",
}
NO_STORE = {"cache-control": "no-store"}  # a page with a one-time password is not kept


@dataclass(frozen=True)
class Issued:
    """A one-time password just made, for the page that shows it once."""

    name: str
    password: str


def _page(
    request: Request,
    *,
    error: str | None = None,
    issued: Issued | None = None,
    form: FormData | None = None,
) -> Response:
    context = context_of(request)
    values: dict[str, Any] = {
        "people": accounts.every(context.ledger), "roles": list(Role), "role_words": ROLE_WORDS,
        "now": context.clock(), "error": error, "issued": issued, "form": form or {},
    }  # fmt: skip
    response = render(request, "people.html", values, 400 if error else 200)
    response.headers.update(NO_STORE)
    return response


def people_page(request: Request) -> Response:
    require(request, Permission.MANAGE_PEOPLE)
    return _page(request)


async def add(request: Request) -> Response:
    person = require(request, Permission.MANAGE_PEOPLE)
    form = await request.form()
    check_csrf(request, form)
    name = str(form.get("name") or "").strip().lower()
    email = str(form.get("email") or "").strip() or None
    role_text, sso_only = str(form.get("role") or ""), form.get("method") == "sso"
    if role_text not in tuple(Role):
        return await run_in_threadpool(_page, request, error="Choose a role.", form=form)
    password = None if sso_only else accounts.one_time_password()
    context = context_of(request)
    try:
        await run_in_threadpool(
            accounts.add_user, context.ledger, name, Role(role_text), password=password,
            email=email, actor=person.actor, now=context.clock(), one_time=True,
        )  # fmt: skip
    except AccountError as exc:
        return await run_in_threadpool(_page, request, error=f"Not added: {exc}.", form=form)
    if password is None:
        request.session["flash"] = f"Added {name} ({role_text}): signs in by single sign-on."
        return RedirectResponse("/people", status_code=303)
    return await run_in_threadpool(_page, request, issued=Issued(name, password))


async def change(request: Request) -> Response:
    """One change to one account: ``role``, ``disable``, ``enable``, ``unlock`` or
    ``reset-password``."""
    person = require(request, Permission.MANAGE_PEOPLE)
    form = await request.form()
    check_csrf(request, form)
    name, action = request.path_params["name"], request.path_params["action"]
    context = context_of(request)
    common: dict[str, Any] = {"actor": person.actor, "now": context.clock()}
    try:
        if action == "reset-password":
            made = await run_in_threadpool(
                lambda: accounts.reset_password(context.ledger, name, **common)
            )
            return await run_in_threadpool(_page, request, issued=Issued(name, made))
        said = await run_in_threadpool(_apply, context.ledger, name, action, form, common)
    except AccountError as exc:
        return await run_in_threadpool(_page, request, error=f"Not changed: {exc}.")
    request.session["flash"] = said
    return RedirectResponse("/people", status_code=303)


def _apply(ledger: Any, name: str, action: str, form: FormData, common: dict[str, Any]) -> str:
    """Do a change that shows no secret; what the page then says."""
    if action == "role":
        role_text = str(form.get("role") or "")
        if role_text not in tuple(Role):
            raise AccountError(f"{role_text[:20]!r} is not a role")
        changed = accounts.set_role(ledger, name, Role(role_text), **common)
        return f"{name} is now {role_text}." if changed else f"{name} already was {role_text}."
    if action in ("disable", "enable"):
        changed = accounts.set_enabled(ledger, name, action == "enable", **common)
        return f"{name}: {action}d." if changed else f"{name} already was {action}d."
    if action == "unlock":
        accounts.unlock(ledger, name, **common)
        return f"{name}: unlocked; they may sign in again."
    raise AccountError(f"no such change: {action[:20]!r}")


def password_page(request: Request) -> Response:
    person = require(request, Permission.READ, changing_password=True)
    return _password(request, person, None)


def _password(request: Request, person: Account, error: str | None) -> Response:
    values = {"error": error, "min_password": accounts.MIN_PASSWORD}
    return render(request, "password.html", {"person": person, **values}, 400 if error else 200)


async def change_password(request: Request) -> Response:
    person = require(request, Permission.READ, changing_password=True)
    form = await request.form()
    check_csrf(request, form)
    current, new = str(form.get("current") or ""), str(form.get("new") or "")
    if new != str(form.get("again") or ""):
        return _password(request, person, "The two new passwords differ.")
    context = context_of(request)
    try:
        changed = await run_in_threadpool(
            accounts.change_own_password, context.ledger, person.name, current, new,
            now=context.clock(),
        )  # fmt: skip
    except (AccountError, SignInRefused) as exc:
        return _password(request, person, f"Not changed: {exc}.")
    start_session(request, changed)  # its other sessions ended with the old password
    request.session["flash"] = "Your password is changed; other sessions of yours have ended."
    return RedirectResponse("/", status_code=303)


def routes() -> list[BaseRoute]:
    return [
        Route("/people", people_page, methods=["GET"]),
        Route("/people", add, methods=["POST"]),
        Route("/people/{name}/{action}", change, methods=["POST"]),
        Route("/password", password_page, methods=["GET"]),
        Route("/password", change_password, methods=["POST"]),
    ]
