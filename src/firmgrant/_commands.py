"""The lifecycle commands behind the CLI: ``run`` and ``revoke`` (parsing stays in cli.py)."""

from __future__ import annotations

import getpass
import json
import logging
import sys

from rich.console import Console
from rich.prompt import Confirm

from firmgrant.errors import ConfigError
from firmgrant.jobs.revoke import request_revocation, revoke
from firmgrant.ledger import Ledger
from firmgrant.ledger.queries import find_grant
from firmgrant.settings import Settings
from firmgrant.timeutil import utcnow
from firmgrant.worker import CycleResult, JsonFormatter, Worker, single_worker_lock


def use_json_logs() -> None:
    for handler in logging.getLogger().handlers:
        handler.setFormatter(JsonFormatter())


def _check_mail(settings: Settings) -> None:
    mail = settings.mail
    if mail.backend == "smtp" and not (mail.from_ or settings.vendor.support_email):
        raise ConfigError(
            "FIRMGRANT_MAIL__FROM (mail.from): required with the smtp backend "
            "(or set FIRMGRANT_VENDOR__SUPPORT_EMAIL)"
        )


def cycle_json(result: CycleResult) -> dict[str, object]:
    return {
        "planned": result.planned,
        "api_calls": result.api_calls,
        "seconds": round(result.seconds, 3),
        "sync": [s.as_json() for s in result.syncs],
        "enforce": vars(result.enforce) if result.enforce else None,
        "remind": vars(result.remind) if result.remind else None,
        "revoke": [vars(r) for r in result.revokes],
        "dispatch": vars(result.dispatch) if result.dispatch else None,
    }


def run(ledger: Ledger, settings: Settings, *, once: bool, as_json: bool) -> int:
    if not settings.connections:
        settings.connection()  # raises the "no connection configured" ConfigError
    _check_mail(settings)
    with single_worker_lock(ledger):
        worker = Worker(settings, ledger)
        if not once:
            worker.run_forever()
            return 0
        result = worker.cycle()
        if as_json:
            print(json.dumps(cycle_json(result)))
        return 3 if result.failed else 0


def revoke_by_hand(
    ledger: Ledger, settings: Settings, grant_ref: str, *, reason: str, yes: bool
) -> int:
    now = utcnow()
    with ledger.sessions() as session:
        grant = find_grant(session, grant_ref, now=now, max_duration=settings.policy.max_duration)
    if grant.status in ("revoked", "deleted") or grant.revoked_at is not None:
        print(f"grant {grant.id} ({grant.source_id}) is already {grant.status}: nothing to do")
        return 0
    what = (
        f"grant {grant.id} ({grant.source_id}) of {grant.org_name or grant.org_id} "
        f"to {grant.grantee}, until {grant.expires_at:%Y-%m-%d %H:%M} UTC"
    )
    if not yes:
        if not sys.stdin.isatty():
            print(
                "firmgrant: revoke asks for confirmation: pass --yes when not on a terminal",
                file=sys.stderr,
            )
            return 2
        if not Confirm.ask(f"Revoke {what}?", default=False, console=Console()):
            print("not revoked")
            return 1
    actor = f"cli:{getpass.getuser()}"
    if not request_revocation(ledger, grant.id, reason=reason, actor=actor, now=now):
        print(f"a revocation of grant {grant.id} is already under way; the worker retries it")
    worker = Worker(settings, ledger)
    outcome = revoke(
        ledger,
        settings,
        grant.connection,
        worker.client(grant.connection),
        clock=utcnow,
        owner=worker.owner,
        grant_ids=[grant.id],
    )
    if outcome.revoked or outcome.already:
        print(f"revoked {what}; the grantor is notified by the worker's next dispatch")
        return 0
    print(
        f"firmgrant: revoking {what} failed; the worker retries it (see `firmgrant show`)",
        file=sys.stderr,
    )
    return 3
