"""Commands behind the CLI: ``run``, ``sync``, ``revoke``, ``export`` (parsing stays in cli.py)."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.prompt import Confirm

from firmgrant import export as exporting
from firmgrant._progress import export_progress, sync_progress
from firmgrant.errors import ConfigError
from firmgrant.export import Filters
from firmgrant.ledger import Ledger
from firmgrant.ledger.ranges import default_jobs
from firmgrant.settings import Settings
from firmgrant.timeutil import iso_z, utcnow

if TYPE_CHECKING:
    from firmgrant.jobs.sync import SyncResult
    from firmgrant.worker import CycleResult


def use_json_logs() -> None:
    from firmgrant.worker import JsonFormatter

    for handler in logging.getLogger().handlers:
        handler.setFormatter(JsonFormatter())


def cycle_json(result: CycleResult) -> dict[str, object]:
    return {
        "planned": result.planned,
        "planning": [iso_z(at) for at in result.planning] if result.planning else None,
        "api_calls": result.api_calls,
        "seconds": round(result.seconds, 3),
        "sync": [s.as_json() for s in result.syncs],
        "orgs": dict(result.org_states),
        "enforce": vars(result.enforce) if result.enforce else None,
        "remind": vars(result.remind) if result.remind else None,
        "revoke": [vars(r) for r in result.revokes],
        "dispatch": vars(result.dispatch) if result.dispatch else None,
    }


def run(ledger: Ledger, settings: Settings, *, once: bool, as_json: bool) -> int:
    if not settings.connections:
        from firmgrant.ledger import registry

        with ledger.sessions() as session:
            if not registry.every(session):
                settings.connection()  # raises the "no connection configured" ConfigError
    from firmgrant.jobs.dispatch import sender_problem

    problem = sender_problem(settings)
    if problem:
        raise ConfigError(problem)
    from firmgrant.worker import Worker

    with ledger.single_worker_lock():
        worker = Worker(settings, ledger)
        if not once:
            worker.run_forever()
            return 0
        result = worker.cycle()
        if as_json:
            print(json.dumps(cycle_json(result)))
        else:
            from firmgrant.display import cycle_story

            print("\n".join(cycle_story(result)))
        return result.exit_code


def revoke_by_hand(
    ledger: Ledger, settings: Settings, grant_ref: str, *, reason: str, yes: bool
) -> int:
    from firmgrant import revoke_now as hand

    grant = hand.pending(ledger, settings, grant_ref, utcnow())
    if hand.is_moot(grant):
        print(f"grant {grant.id} ({grant.source_id}) is already {grant.status}: nothing to do")
        return 0
    what = hand.describe(grant, hand.access_ends(grant, settings))
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
    done = hand.revoke_now(ledger, settings, grant, reason=reason, actor=f"cli:{getpass.getuser()}")
    if done.already_under_way:
        print(f"a revocation of grant {grant.id} is already under way; the worker retries it")
    if done.outcome == hand.HandOutcome.REVOKED:
        print(f"revoked {what}; the grantor is notified by the worker's next dispatch")
        return 0
    print(
        f"firmgrant: revoking {what} failed; the worker retries it (see `firmgrant show`)",
        file=sys.stderr,
    )
    return 3


def web(ledger: Ledger, settings: Settings, host: str | None, port: int | None) -> int:
    """``firmgrant web``: ``$PORT`` and an open host when a platform sets it (Heroku's way)."""
    import os

    from firmgrant.web import serve

    platform_port = os.environ.get("PORT")
    if port is None and platform_port is not None:
        if not platform_port.isdigit() or not 0 < int(platform_port) < 65536:
            raise ConfigError(f"PORT={platform_port!r} is not a port number")
        port = int(platform_port)
    if host is None:
        host = "0.0.0.0" if platform_port is not None else "127.0.0.1"  # noqa: S104
    serve(settings, ledger, host=host, port=8000 if port is None else port)
    return 0


def export(ledger: Ledger, args: argparse.Namespace, cap: timedelta) -> int:
    filters = Filters(
        since=args.since, until=args.until, org_id=args.org, connection=args.connection
    )
    jobs = args.jobs or default_jobs()
    with ledger.sessions() as session:
        if args.output is None:
            exporting.write(session, filters, args.format, sys.stdout.buffer, cap=cap, jobs=jobs)
            sys.stdout.flush()
            return 0
        # The file appears whole or not at all: an auditor never gets half an export.
        temporary = args.output.with_name(args.output.name + ".partial")
        try:
            with temporary.open("wb") as out, export_progress() as advance:
                result = exporting.write(
                    session, filters, args.format, out, advance, cap=cap, jobs=jobs
                )
            temporary.replace(args.output)
        except OSError as exc:
            print(f"firmgrant export: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
            return 2
        finally:
            temporary.unlink(missing_ok=True)
    record = exporting.manifest(filters, args.format, args.output, result, cap)
    exporting.manifest_path(args.output).write_text(json.dumps(record, indent=2) + "\n")
    print(
        f"{result.rows} events to {args.output} (sha256 {result.sha256[:16]}…); "
        f"manifest {exporting.manifest_path(args.output)}",
        file=sys.stderr,
    )
    return 0


def verify_export(path: Path) -> int:
    if not path.is_file():
        print(f"firmgrant verify: no such file: {path}", file=sys.stderr)
        return 2
    problem = exporting.check_file(path)
    if problem:
        print(f"TAMPERED: {problem}", file=sys.stderr)
        return 1
    record = json.loads(exporting.manifest_path(path).read_text(encoding="utf-8"))
    print(
        f"ok: {path} matches its manifest ({record['rows']} events, sha256 "
        f"{record['sha256'][:16]}…, chain head {record['chain_head']['hash'][:16]}…)"
    )
    return 0


def sync(ledger: Ledger, settings: Settings, *, full: bool, as_json: bool) -> int:
    """Sync every connection of ``settings`` now, with a progress display on a terminal."""
    from firmgrant.jobs.poll import Clients, sync_each

    names = list(settings.connections)
    if not names:
        settings.connection()  # raises the "no connection configured" ConfigError
    clients = Clients(connections=settings.registry.pool)
    with sync_progress(len(names)) as progress:
        results = sync_each(ledger, settings, names, full=full, clients=clients, progress=progress)
    if as_json:
        print(json.dumps(_combined(results)))
    else:
        for result in results:
            print(result.summary())
            if result.error:
                print(f"  error: {result.error}", file=sys.stderr)
    return max(result.exit_code for result in results)


def _combined(results: list[SyncResult]) -> dict[str, object]:
    if len(results) == 1:
        return results[0].as_json()
    keys = ("fetched", "inserted", "updated", "deleted", "invalid", "rejected", "api_calls")
    total: dict[str, object] = {key: sum(getattr(r, key) for r in results) for key in keys}
    total["seconds"] = round(sum(r.seconds for r in results), 3)
    total["connections"] = [r.as_json() for r in results]
    return total
