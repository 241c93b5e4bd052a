"""The ``firmgrant`` command line: argument parsing and exit codes; the work lives elsewhere.

Exit codes: 0 ok, 1 a check failed, 2 bad usage or settings, 3 Salesforce or the database
unreachable after retries.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console

from firmgrant import __version__, _commands, _orgs_commands, _users_commands, display
from firmgrant.errors import (
    ConfigError,
    DurationError,
    FirmgrantError,
    RegistryError,
    SalesforceError,
)
from firmgrant.ledger import Ledger, make_engine, open_ledger, safe_url, upgrade, verify_chain
from firmgrant.ledger.queries import (
    STATUS_CHOICES,
    GrantView,
    find_grant,
    grant_events,
    grant_lifecycle,
    list_grants,
)
from firmgrant.lifecycle import GrantStatus, SourceKind
from firmgrant.sandbox.schema import DURATIONS
from firmgrant.settings import Settings, load_settings
from firmgrant.timeutil import DurationRange, parse_duration, utcnow

# Commands import what they need when they run: `grants`, `export` and `verify` start
# without loading the Salesforce client, the worker or the sandbox.
log = logging.getLogger("firmgrant")


# A grant lasts a year at most: a longer window asks nothing more.
EXPIRING_WITHIN = DurationRange(timedelta(minutes=1), timedelta(days=366))


def _expiring_within(text: str) -> timedelta:
    try:
        return parse_duration(text, EXPIRING_WITHIN)
    except DurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _when(text: str) -> datetime:
    from firmgrant.export import parse_when

    try:
        return parse_when(text, utcnow())
    except DurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _jobs(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of processes from 1 to 64")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="firmgrant",
        description="Keeps a vendor's Login Access to its customers' Salesforce orgs honest.",
    )
    parser.add_argument("--version", action="version", version=f"firmgrant {__version__}")
    parser.add_argument(
        "--config", type=Path, help="TOML settings file (default config/firmgrant.toml)"
    )
    parser.add_argument(
        "--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="override the setting"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sync = commands.add_parser("sync", help="one sync of every connection (or one)")
    sync.add_argument("--full", action="store_true", help="ignore the watermark; find vanished")
    sync.add_argument("--json", action="store_true", help="print one JSON object")
    sync.add_argument("--connection", help="only this connection")

    grants = commands.add_parser("grants", help="grants in the ledger (what support sees)")
    grants.add_argument(
        "--status",
        choices=STATUS_CHOICES,
        default=GrantStatus.ACTIVE.value,
        help="active (usable now, includes expiring), expiring, expired, revoked, rejected, "
        "deleted or all (default: active)",
    )
    grants.add_argument("--org", help="only this Salesforce org id")
    grants.add_argument("--connection", help="only this connection")
    grants.add_argument(
        "--expiring-within",
        type=_expiring_within,
        metavar="DURATION",
        help="only grants ending within this time, e.g. 24h or 7d",
    )
    grants.add_argument("--format", choices=("table", "json", "csv"), default="table")
    grants.add_argument(
        "--limit", type=_positive, metavar="N", help="at most N grants (the soonest to end)"
    )

    run = commands.add_parser("run", help="the worker: sync, enforce, remind, revoke, dispatch")
    run.add_argument("--once", action="store_true", help="one full cycle, then exit (cron)")
    run.add_argument("--json-logs", action="store_true", help="log one JSON object per line")
    run.add_argument("--json", action="store_true", help="with --once: print the cycle as JSON")
    run.add_argument(
        "--metrics-port", type=int, metavar="P", help="serve Prometheus /metrics on this port"
    )

    web = commands.add_parser("web", help="the support dashboard (sign-in required)")
    web.add_argument(
        "--host", help="default 127.0.0.1, or 0.0.0.0 when $PORT is set (a platform's router)"
    )
    web.add_argument("--port", type=int, help="default $PORT, else 8000; 0 picks a free port")

    revoke = commands.add_parser("revoke", help="revoke a grant in Salesforce now")
    revoke.add_argument("grant_id", metavar="GRANT_ID", help="ledger id or Salesforce record Id")
    revoke.add_argument("--reason", required=True, help="recorded, and told to the grantor")
    revoke.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    show = commands.add_parser("show", help="one grant and its history")
    show.add_argument("grant_id", metavar="GRANT_ID", help="ledger id or Salesforce record Id")

    db = commands.add_parser("db", help="ledger database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_commands.add_parser("upgrade", help="apply migrations")

    export = commands.add_parser("export", help="compliance export of the event log")
    export.add_argument(
        "--since", type=_when, metavar="D", help="2026-11-01, an ISO time, or an age: 30d"
    )
    export.add_argument("--until", type=_when, metavar="D", help="same forms; exclusive")
    export.add_argument("--org", help="only this Salesforce org id")
    export.add_argument("--connection", help="only this connection")
    export.add_argument("--format", choices=("csv", "json", "ndjson"), default="csv")
    export.add_argument("--output", type=Path, metavar="FILE", help="default: stdout")
    export.add_argument(
        "--jobs", type=_jobs, metavar="N", help="processes reading the log (default: one per core)"
    )

    verify = commands.add_parser("verify", help="check the event log's hash chain")
    verify.add_argument("--export", type=Path, metavar="FILE", help="check a file's manifest")
    verify.add_argument(
        "--jobs", type=_jobs, metavar="N", help="processes reading the log (default: one per core)"
    )
    check = commands.add_parser("check", help="validate settings, the ledger and each connection")
    check.add_argument("--org", metavar="NAME", help="check this org of the registry instead")
    _orgs_commands.add_parser(commands)
    _users_commands.add_parser(commands)
    _sandbox_parser(commands)
    demo = commands.add_parser("demo", help="sandbox + SQLite ledger: a few cycles, explained")
    demo.add_argument("--dir", type=Path, default=Path("var/demo"), help="default var/demo")
    demo.add_argument(
        "--web", action="store_true", help="then serve the dashboard over the demo's ledger"
    )
    return parser


def _sandbox_parser(commands: Any) -> None:
    sandbox = commands.add_parser(
        "sandbox", help="serve the sandbox org (an emulated Salesforce) over HTTPS on loopback"
    )
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    sandbox.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="N",
        help="start with N valid grants naming the vendor",
    )
    sandbox.add_argument(
        "--customers",
        type=int,
        default=0,
        metavar="N",
        help="also serve N customer orgs with audit-trail histories (customers.env)",
    )
    sandbox.add_argument(
        "--random-seed", type=int, metavar="S", help="make data and faults repeatable"
    )
    sandbox.add_argument(
        "--faults", metavar="SPEC", help="e.g. expire-every=50,503-rate=0.1,daily-limit=5000"
    )
    sandbox.add_argument(
        "--state",
        type=Path,
        metavar="DIR",
        help="keep data, certificate and keys here (default: a temporary dir)",
    )
    actions = sandbox.add_subparsers(dest="sandbox_command", metavar="act")
    act = actions.add_parser("act", help="act as a customer in a running sandbox")
    act.add_argument("--state", type=Path, required=True, metavar="DIR", dest="act_state")
    verbs = act.add_subparsers(dest="action", required=True, metavar="ACTION")
    seed = verbs.add_parser("seed", help="add N realistic grants")
    seed.add_argument("count", type=int)
    seed.add_argument("--other", type=int, default=0, help="grants to other grantees")
    seed.add_argument("--malformed", type=int, default=0, help="records firmgrant must refuse")
    grant = verbs.add_parser("grant", help="a customer grants Login Access")
    grant.add_argument("--duration", choices=DURATIONS, default="1 Week")
    grant.add_argument("--org-name")
    grant.add_argument("--grantor", help="the granting user's username")
    grant.add_argument("--login-as", metavar="USER", help="granted while logged in as USER")
    extend = verbs.add_parser("extend", help="the customer sets a new duration from now")
    extend.add_argument("id")
    extend.add_argument("--duration", choices=DURATIONS, default="1 Week")
    revoke = verbs.add_parser("revoke", help="the customer revokes access")
    revoke.add_argument("id")
    revoke.add_argument("--reason", default="Revoked by the customer")
    verbs.add_parser("delete", help="the record is deleted").add_argument("id")
    verbs.add_parser("faults", help="replace the fault plan").add_argument("spec")
    fail_next = verbs.add_parser("fail-next", help="the next API calls meet a fault")
    fail_next.add_argument("kind", choices=("503", "expired", "slow", "limit"))
    fail_next.add_argument("--count", type=int, default=1)
    verbs.add_parser("stats", help="record count and API usage")
    orgs = verbs.add_parser("add-orgs", help="add N customer orgs (audit source)")
    orgs.add_argument("count", type=int)
    orgs.add_argument("--grants", type=int, default=0, help="history: grants per org")
    orgs.add_argument("--date-order", choices=("MDY", "DMY", "YMD"), default="MDY")
    orgs.add_argument("--locale", help="the org's default locale (de_DE, …): else by date order")
    orgs.add_argument("--time-zone", default="UTC")
    orgs.add_argument("--no-view-setup", action="store_true", help="cannot read the trail")
    orgs.add_argument("--no-manage-users", action="store_true", help="cannot end sessions")
    in_org = verbs.add_parser("in-org", help="a user of a customer org acts in Setup")
    in_org.add_argument("org", help="the org's number or Id")
    in_org.add_argument(
        "org_action", choices=("grant", "change", "revoke", "use", "salesforce", "other", "stats")
    )
    in_org.add_argument("--user", help="the customer user (default jane@customerN.example)")
    in_org.add_argument("--days", type=int, default=7)
    in_org.add_argument("--login-as", metavar="USER", help="done while USER was logged in as")
    in_org.add_argument("--support-user", help="for `use`: who from support logged in")
    in_org.add_argument("--locale", help="the user's own locale from now on (de_DE, ja_JP, …)")
    in_org.add_argument("--time-zone", help="the user's own time zone from now on")


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    # Alembic narrates every connection at INFO; what it did is reported by `db upgrade`.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, getattr(logging, level)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 with usage on a bad argument
    try:
        if args.command in ("sandbox", "demo"):
            # Neither needs the worker's settings: they bring their own org and ledger.
            _configure_logging(args.log_level or "WARNING")
            if args.command == "sandbox":
                return _sandbox(args)
            from firmgrant.demo import run_demo

            return run_demo(args.dir, web=args.web)
        settings = load_settings(args.config)
        _configure_logging(args.log_level or settings.log_level)
        return _dispatch(args, settings)
    except FirmgrantError as exc:
        print(f"firmgrant: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `firmgrant export | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def entry() -> None:
    sys.exit(main())


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    command = args.command
    if command == "db":
        return _db_upgrade(settings)
    if command == "check":
        return _check(settings, args.org)
    ledger = open_ledger(settings)
    if command == "orgs":
        return _orgs_commands.run(args, settings, ledger)
    if command == "users":
        return _users_commands.run(args, ledger)
    if command == "web":
        return _commands.web(ledger, _with_registry(ledger, settings), args.host, args.port)
    if command == "run":
        if args.json_logs:
            _commands.use_json_logs()
        if args.metrics_port is not None:
            from firmgrant.metrics import serve_metrics

            serve_metrics(settings, ledger, args.metrics_port)
        return _commands.run(ledger, settings, once=args.once, as_json=args.json)
    if command == "revoke":
        return _commands.revoke_by_hand(
            ledger, settings, args.grant_id, reason=args.reason, yes=args.yes
        )
    if command == "sync":
        settings = _with_registry(ledger, settings)
        if args.connection:
            name, conn = settings.connection(args.connection)
            settings = settings.model_copy(update={"connections": {name: conn}})
        return _commands.sync(ledger, settings, full=args.full, as_json=args.json)
    if command == "grants":
        return _grants(ledger, args, settings.policy.max_duration)
    if command == "show":
        poll = timedelta(seconds=settings.poll_seconds)
        return _show(ledger, args.grant_id, settings.policy.max_duration, poll)
    if command == "verify":
        return _commands.verify_export(args.export) if args.export else _verify(ledger, args.jobs)
    if command == "export":
        return _commands.export(ledger, args, settings.policy.max_duration)
    raise AssertionError(f"unhandled command {command}")


def _sandbox(args: argparse.Namespace) -> int:
    from firmgrant.sandbox import runner

    if args.sandbox_command == "act":
        values = {k: v for k, v in vars(args).items() if k not in ("command", "action")}
        return runner.act(args.act_state, args.action, values)
    return runner.serve(
        state=args.state,
        host=args.host,
        port=args.port,
        seed=args.seed,
        customers=args.customers,
        random_seed=args.random_seed,
        faults=args.faults,
    )


def _with_registry(ledger: Ledger, settings: Settings) -> Settings:
    from firmgrant.ledger import registry
    from firmgrant.orgs import with_orgs

    with ledger.sessions() as session:
        rows = registry.every(session)
    return with_orgs(settings, rows) if rows else settings


def _grants(ledger: Ledger, args: argparse.Namespace, cap: timedelta) -> int:
    now = utcnow()
    with ledger.sessions() as session:
        grants: Iterable[GrantView] = list_grants(
            session,
            now=now,
            status=args.status,
            org_id=args.org,
            connection=args.connection,
            expiring_within=args.expiring_within,
            max_duration=cap,
        )
        if args.limit is not None:
            grants = itertools.islice(grants, args.limit)
        if args.format == "json":
            display.grants_json(grants, sys.stdout)
        elif args.format == "csv":
            display.grants_csv(grants, sys.stdout)
        elif sys.stdout.isatty():
            display.grants_table(grants, Console(highlight=False), now)
        else:  # piped: one grant a line, every column named, nothing cut or wrapped
            display.grants_lines(grants, sys.stdout, now)
    return 0


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return int(text)


def _show(ledger: Ledger, grant_ref: str, cap: timedelta, poll: timedelta) -> int:
    with ledger.sessions() as session:
        grant = find_grant(session, grant_ref, now=utcnow(), max_duration=cap)
        display.grant_story(
            grant,
            grant_events(session, grant.id),
            Console(),
            grant_lifecycle(session, grant.id),
            poll=poll,
        )
    return 0


def _verify(ledger: Ledger, jobs: int | None) -> int:
    from firmgrant.ledger.ranges import default_jobs

    with ledger.sessions() as session:
        report = verify_chain(session, jobs=jobs or default_jobs())
    if report.ok:
        print(f"ok: {report.events} events, chain head {report.head_hash}")
        return 0
    print(f"TAMPERED: event {report.first_bad_id}: {report.problem}", file=sys.stderr)
    return 1


def _db_upgrade(settings: Settings) -> int:
    url = settings.database_url.get_secret_value()
    engine = make_engine(url)
    before, after = upgrade(engine)
    where = safe_url(str(engine.url))
    if before == after:
        print(f"ledger at {where}: already at schema {after}")
    else:
        print(f"ledger at {where}: upgraded from {before or 'empty'} to {after}")
    return 0


def _registered(ledger: Ledger, settings: Settings, org: str | None) -> tuple[Settings, int]:
    """The settings with the registry's orgs (``org`` alone checked, if named), and how many
    orgs the registry holds."""
    from firmgrant.ledger import registry
    from firmgrant.orgs import with_orgs

    with ledger.sessions() as session:
        rows = registry.every(session) if org is None else [registry.find(session, org)]
    if org is None:
        return settings, len(rows)
    return with_orgs(settings.model_copy(update={"connections": {}}), rows), len(rows)


def _check(settings: Settings, org: str | None = None) -> int:
    """Each problem on its own line; exit 1 if any check failed."""
    failures = 0

    def report(ok: bool, what: str) -> None:
        nonlocal failures
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {what}")

    report(True, "settings are valid")
    try:
        ledger = open_ledger(settings, auto_upgrade=False)
        report(True, f"ledger at {safe_url(str(ledger.engine.url))} is reachable and up to date")
        settings, registered = _registered(ledger, settings, org)
        if registered and org is None:
            print(f"note the registry holds {registered} orgs: `check --org NAME` checks one")
    except (ConfigError, RegistryError):
        raise  # a setting that does not parse, or an unknown org: exit 2
    except FirmgrantError as exc:
        report(False, str(exc))
        registered = 0
    if not settings.connections and not registered:
        report(False, "no Salesforce connection configured (FIRMGRANT_CONNECTIONS__<NAME>__…)")
    for name, conn in settings.connections.items():
        from firmgrant.salesforce.client import SalesforceClient

        client = SalesforceClient(name, conn, settings.sync)
        if conn.source.kind == SourceKind.AUDIT:
            unread = _unread(settings, name)
            for ok, what in _check_audit(client, unread):
                if ok is None:
                    print(f"note {what}")
                else:
                    report(ok, what)
            continue
        try:
            described = client.describe(conn.source.object_name)
        except SalesforceError as exc:
            report(False, f"connection {name}: {exc.detail}")
            continue
        except FirmgrantError as exc:
            report(False, f"connection {name}: {exc}")
            continue
        present = {field["name"] for field in described.get("fields", [])}
        wanted = set(conn.source.fields.model_dump().values())
        missing = sorted(wanted - present)
        report(
            not missing,
            f"connection {name}: {conn.source.object_name} "
            + (f"lacks fields {', '.join(missing)}" if missing else "has every mapped field")
            + (f" (API {client.usage.used}/{client.usage.limit})" if client.usage else ""),
        )
    mail_ok, mail_what = _check_mail(settings)
    report(mail_ok, mail_what)
    return 1 if failures else 0


def _unread(settings: Settings, name: str) -> str | None:
    """The first trail row the last syncs of this connection could not read, if any."""
    try:
        ledger = open_ledger(settings, auto_upgrade=False)
        return ledger.sync_state(name, SourceKind.AUDIT).unreadable
    except FirmgrantError:
        return None  # the ledger's own check says why


def _check_audit(client: Any, unread: str | None = None) -> list[tuple[bool | None, str]]:
    """An audit connection: can it read the trail, do its words read, can it end support's
    sessions?"""
    from firmgrant.salesforce.audit import permissions

    name = client.name
    try:
        readable, can_end = permissions(client)
    except FirmgrantError as exc:
        return [(False, f"connection {name}: {getattr(exc, 'detail', exc)}")]
    if readable is not None:
        return [
            (
                False,
                f"connection {name}: cannot read the Setup Audit Trail (the integration user "
                f"needs View Setup and Configuration): {readable}",
            )
        ]
    usage = f" (API {client.usage.used}/{client.usage.limit})" if client.usage else ""
    found: list[tuple[bool | None, str]] = [
        (True, f"connection {name}: reads the Setup Audit Trail of org {client.org_id}{usage}")
    ]
    found.append(_check_words(client, unread))
    if can_end:
        found.append((True, f"connection {name}: can end support's Login-As sessions"))
    else:
        found.append(
            (
                None,
                f"connection {name}: cannot end support's Login-As sessions (needs Manage "
                "Users): firmgrant will record sessions_not_ended and still tell the customer",
            )
        )
    return found


def _check_words(client: Any, unread: str | None) -> tuple[bool, str]:
    """Whether the trail's Login Access rows read (Salesforce's English wording, a date in
    numbers), in its latest rows and in what the syncs met; what to change if not."""
    from firmgrant.salesforce.audit import unreadable_sample
    from firmgrant.salesforce.profiles import learn_org, learn_user

    name = client.name
    try:
        read, problem = unreadable_sample(client)
    except FirmgrantError as exc:
        return False, f"connection {name}: the trail's rows could not be sampled: {exc}"
    problem = problem or unread
    if problem is None:
        return True, f"connection {name}: the trail's Login Access rows read ({read} sampled)"
    languages = []
    try:  # who may have written them in another language: the org's, the reader's
        org = learn_org(client)
        languages.append(f"the org's default language is {org.defaults.language or '?'}")
        if client.user_id:
            me = learn_user(client, client.user_id)
            languages.append(f"the integration user's is {me.language or '?'}")
    except FirmgrantError:
        pass
    said = f" ({'; '.join(languages)})" if languages else ""
    return False, (
        f"connection {name}: unreadable: {problem}. firmgrant reads Salesforce's English "
        f"wording{said}: set the language of the integration user and of the users who grant "
        "access to English (Setup → Users → Language), then run "
        f"`firmgrant sync --full --connection {name}` to read the trail again"
    )


def _check_mail(settings: Settings) -> tuple[bool, str]:
    """Whether the worker could hand an email over right now (nothing is sent)."""
    from firmgrant.errors import MailError
    from firmgrant.notify.send import SmtpBackend

    mail = settings.mail
    if mail.backend == "console":
        return True, "mail: console backend (emails are printed)"
    if mail.backend == "file":
        try:
            mail.file_dir.mkdir(parents=True, exist_ok=True)
            probe = mail.file_dir / ".firmgrant-check"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            return False, f"mail: cannot write to {mail.file_dir}: {exc.strerror}"
        return True, f"mail: .eml files go to {mail.file_dir}"
    from firmgrant.jobs.dispatch import sender_problem

    problem = sender_problem(settings)
    if problem:
        return False, f"mail: {problem}"
    backend = SmtpBackend(mail)
    try:
        backend.connect()
    except MailError as exc:
        return False, f"mail: {exc}"
    finally:
        backend.close()
    login = " and logged in" if mail.smtp_username else ""
    return True, f"mail: SMTP {mail.smtp_host}:{mail.smtp_port} answered{login}"
