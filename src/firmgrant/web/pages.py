"""The pages support reads: grants usable now, one grant, rule breaks, the orgs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from firmgrant.accounts import Permission
from firmgrant.errors import DurationError, GrantNotFound
from firmgrant.export import parse_when
from firmgrant.ledger import dashboard, rule_breaks
from firmgrant.ledger.dashboard import ALL, GrantFilter, GrantSort
from firmgrant.ledger.queries import GrantView, find_grant, grant_events, grant_lifecycle
from firmgrant.lifecycle import (
    DEFAULT_EXPIRING_WITHIN,
    USABLE,
    EventKind,
    GrantStatus,
    RevocationStatus,
    ends_at,
)
from firmgrant.timeutil import parse_duration
from firmgrant.web.app import context_of, render
from firmgrant.web.auth import require

UNDER_WAY = (RevocationStatus.PENDING_REVOCATION, RevocationStatus.REVOKE_FAILED)
# What each status badge means (its colour is its own: see style.css).
LEGEND = (
    (GrantStatus.ACTIVE.value, "usable"),
    (GrantStatus.EXPIRING.value, "usable, ends within a day"),
    (GrantStatus.EXPIRED.value, "its end has come"),
    (GrantStatus.REVOKED.value, "revoked in Salesforce"),
    (GrantStatus.REJECTED.value, "made while logged in as another user: never usable"),
    (GrantStatus.DELETED.value, "gone from Salesforce"),
)
STATUSES = (GrantStatus.ACTIVE.value, GrantStatus.EXPIRING.value, *(
    s.value for s in GrantStatus if s not in (GrantStatus.ACTIVE, GrantStatus.EXPIRING)
), ALL)  # fmt: skip
MAX_SEARCH = 200


@dataclass(frozen=True)
class Row:
    """A grant as a list row shows it: its real end (cap included), where to log in (only
    while support may: usable, no revocation under way) and a revocation under way."""

    grant: GrantView
    ends: datetime
    login_url: str | None
    revocation: dashboard.OpenRevocation | None = None


def _filter(params: QueryParams) -> tuple[GrantFilter, int, list[str]]:
    problems: list[str] = []
    status = params.get("status") or GrantStatus.ACTIVE.value
    if status not in STATUSES:
        problems.append(f"Unknown status {status!r}: showing usable grants.")
        status = GrantStatus.ACTIVE.value
    search = (params.get("q") or "")[:MAX_SEARCH]
    within = None
    if params.get("within"):
        try:
            within = parse_duration(params["within"])
        except DurationError as exc:
            problems.append(f"Ending within: {exc}.")
    try:
        sort = GrantSort(params.get("sort") or GrantSort.EXPIRES)
    except ValueError:
        problems.append("Unknown sort order: sorted by expiry.")
        sort = GrantSort.EXPIRES
    page_text = params.get("page") or "1"
    page = int(page_text) if page_text.isdigit() and 0 < int(page_text) < 10**6 else 1
    question = GrantFilter(
        status=status,
        search=search,
        connection=params.get("connection") or None,
        ending_within=within,
        sort=sort,
        descending=params.get("dir") == "desc",
    )
    return question, page, problems


def login_link(template: str | None, grant: GrantView) -> str | None:
    if template is None:
        return None
    values = {
        "org_id": grant.org_id, "org_name": grant.org_name or "", "connection": grant.connection,
        "source_id": grant.source_id, "grant_id": str(grant.id),
        "grantor": grant.grantor_username or "",
    }  # fmt: skip
    return template.format(**{key: quote(value, safe="") for key, value in values.items()})


def grants_page(request: Request) -> Response:
    require(request)
    context = context_of(request)
    settings, now = context.settings, context.clock()
    question, page, problems = _filter(request.query_params)
    size = settings.web.page_size
    with context.ledger.sessions() as session:
        found, total = dashboard.grant_page(
            session, question, now=now, window=DEFAULT_EXPIRING_WITHIN,
            max_duration=settings.policy.max_duration, limit=size, offset=(page - 1) * size,
        )  # fmt: skip
        names = [c.name for c in dashboard.connections(session, list(settings.connections))]
        under_way = dashboard.open_revocations(session, [g.id for g in found])
    rows = [
        Row(
            g,
            g.ends_at,
            None
            if g.id in under_way or g.status not in USABLE
            else login_link(settings.web.login_url_template, g),
            under_way.get(g.id),
        )
        for g in found
    ]
    pages = max(1, -(-total // size))
    values: dict[str, Any] = {
        "rows": rows, "total": total, "page": min(page, pages), "pages": pages,
        "question": question, "within": request.query_params.get("within", ""),
        "problems": problems, "statuses": STATUSES, "sorts": list(GrantSort),
        "connections": names, "link": _linker(request.query_params), "now": now,
        "legend": LEGEND,
    }  # fmt: skip
    partial = (
        request.headers.get("hx-request") == "true"
        and request.headers.get("hx-target") == "results"
    )
    return render(request, "_results.html" if partial else "grants.html", values,
                  400 if problems else 200)  # fmt: skip


def _linker(params: QueryParams, path: str = "/") -> Any:
    """``link(page=2)``: this list's URL with some parameters changed."""

    def link(**changes: Any) -> str:
        merged = {**dict(params), **{k: str(v) for k, v in changes.items()}}
        kept = {k: v for k, v in merged.items() if v not in ("", None)}
        return f"{path}?{urlencode(kept)}" if kept else path

    return link


def grant_page(request: Request) -> Response:
    require(request)
    context = context_of(request)
    settings, now = context.settings, context.clock()
    with context.ledger.sessions() as session:
        try:
            grant = find_grant(
                session, str(request.path_params["grant_id"]), now=now,
                max_duration=settings.policy.max_duration,
            )  # fmt: skip
        except GrantNotFound:
            raise HTTPException(404, "No such grant in the ledger.") from None
        events = grant_events(session, grant.id)
        lifecycle = grant_lifecycle(session, grant.id)
    uses = [e for e in events if e.kind in (EventKind.ACCESS_USED, EventKind.VIOLATION)]
    values = {
        "grant": grant,
        "ends": ends_at(grant.granted_at, grant.expires_at, settings.policy.max_duration),
        # The latest to have happened first (a trail row read late finds its place).
        "events": sorted(events, key=lambda e: (e.occurred_at, e.id), reverse=True),
        "lifecycle": lifecycle, "uses": uses,
        "login_url": login_link(settings.web.login_url_template, grant),
        "in_setup_only": settings.in_setup_only(grant.connection), "now": now,
        "usable": grant.status in USABLE and lifecycle.revocation not in UNDER_WAY,
        # Something to revoke: access support may still use, and no revocation under way
        # (rejected and expired grants are the worker's to end, already queued).
        "revocable": grant.status in USABLE and lifecycle.revocation not in UNDER_WAY,
        "poll": timedelta(seconds=settings.poll_seconds),
    }  # fmt: skip
    return render(request, "grant.html", values)


def _breaks_filter(params: QueryParams, now: datetime) -> tuple[rule_breaks.BreakFilter, list[str]]:
    problems: list[str] = []
    kind = params.get("kind") or rule_breaks.ALL
    if kind not in (rule_breaks.ALL, *rule_breaks.BreakKind):
        problems.append(f"Unknown kind {kind[:40]!r}: showing every rule break.")
        kind = rule_breaks.ALL
    moments: dict[str, datetime] = {}
    for key in ("since", "until"):
        text = (params.get(key) or "").strip()[:40]
        if text:
            try:
                moments[key] = parse_when(text, now)
            except DurationError as exc:
                problems.append(f"{key.capitalize()}: {exc}.")
    question = rule_breaks.BreakFilter(
        kind=kind, org=(params.get("org") or "")[:MAX_SEARCH],
        support_user=(params.get("support_user") or "")[:MAX_SEARCH],
        since=moments.get("since"), until=moments.get("until"),
    )  # fmt: skip
    return question, problems


def rule_breaks_page(request: Request) -> Response:
    require(request)
    context = context_of(request)
    params = request.query_params
    page_text = params.get("page") or "1"
    page = int(page_text) if page_text.isdigit() and 0 < int(page_text) < 10**6 else 1
    question, problems = _breaks_filter(params, context.clock())
    size = context.settings.web.page_size
    with context.ledger.sessions() as session:
        found, total = rule_breaks.rule_breaks(
            session, question, limit=size, offset=(page - 1) * size
        )
    pages = max(1, -(-total // size))
    values = {
        "breaks": found, "total": total, "page": page, "pages": pages, "now": context.clock(),
        "poll": timedelta(seconds=context.settings.poll_seconds), "question": question,
        "kinds": [rule_breaks.ALL, *rule_breaks.BreakKind], "problems": problems,
        "params": params, "link": _linker(params, "/rule-breaks"),
    }  # fmt: skip
    return render(request, "rule_breaks.html", values, 400 if problems else 200)


def orgs_page(request: Request) -> Response:
    require(request, Permission.MANAGE_ORGS)
    context = context_of(request)
    with context.ledger.sessions() as session:
        found = dashboard.connections(session, list(context.settings.connections), count_orgs=True)
    return render(request, "orgs.html", {"connections": found, "now": context.clock()})


def routes() -> list[BaseRoute]:
    return [
        Route("/", grants_page, methods=["GET"]),
        Route("/grants/{grant_id:int}", grant_page, methods=["GET"]),
        Route("/rule-breaks", rule_breaks_page, methods=["GET"]),
        Route("/orgs", orgs_page, methods=["GET"]),
    ]
