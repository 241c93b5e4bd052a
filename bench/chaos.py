"""Chaos: attack firmgrant while customers act, settle, count what was lost (prints a table).

Each scenario gets a fresh sandbox org (one object-source org and three customer orgs read
from their Setup Audit Trails, with mild faults: 503s, expired sessions, slow calls, a record
that fails), a fresh ledger, a real SMTP server and customers granting, extending, revoking,
deleting and using access all the time. It attacks the worker, then settles with the faults
off and measures (see _chaos_measure.py). Exit status 1 if anything was lost, sent twice,
revoked twice, the chain broke, work was left undone or any process died in a traceback.

    .venv/bin/python bench/chaos.py --database postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/chaos.py --short --database …   # CI: 8 kills, 1 replica kill, SMTP
    .venv/bin/python bench/chaos.py --only kill-9 --kills 20
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import _chaos_attacks as attacks
from _chaos_measure import Figures, measure, settle
from _chaos_world import MILD_FAULTS, Customers, Mail, Sandbox, firmgrant, worker_env
from _processes import scratch_ledger

# Where a bad scenario's logs (every process's stderr, duplicates.txt) are kept.
KEPT = Path(__file__).resolve().parents[1] / "var" / "chaos"


@dataclass(frozen=True)
class Scenario:
    name: str
    postgres: bool  # needs --database
    attack: Callable[[attacks.Stage], int]  # returns how many attacks it made
    what: str


def scenarios(kills: int, short: bool) -> list[Scenario]:
    replica_kills = 1 if short else kills
    return [
        Scenario("kill-9", False, lambda s: attacks.kill9(s, kills),
                 f"`firmgrant run` killed -9 at {kills} random instants, restarted each time"),
        Scenario("replicas", True, lambda s: attacks.replicas(s, 3, replica_kills),
                 f"3 replicas on PostgreSQL, {replica_kills} random kills -9 among them"),
        Scenario("postgres-down", True, attacks.postgres_down,
                 "PostgreSQL restarted mid-cycle, then down 30 s, under 2 replicas"),
        Scenario("smtp", False, lambda s: attacks.smtp(s, short),
                 "mail server down, then 451 for all, then 550 for one address"),
        Scenario("disk-full", False, attacks.disk_full,
                 "the SQLite ledger's file system full mid-sync (tmpfs), then freed"),
        Scenario("sigterm", False, attacks.sigterm,
                 "SIGTERM as each job starts (sync, enforce, remind, notices, revoke, dispatch)"),
    ]  # fmt: skip


def run_scenario(scenario: Scenario, postgres: str | None, seed: int, short: bool) -> Figures:
    figures = Figures(scenario.name)
    started = time.monotonic()
    with ExitStack() as stack:
        work, database = stack.enter_context(
            scratch_ledger(f"firmgrant-chaos-{scenario.name}-",
                           postgres if scenario.postgres else None)
        )  # fmt: skip
        logs = work / "logs"
        logs.mkdir()
        sandbox = Sandbox(work, tenants=3)
        stack.callback(sandbox.stop)
        mail = Mail()
        stack.callback(mail.down)
        stage = attacks.Stage(work, logs, sandbox, mail, random.Random(seed), database, {})
        stack.callback(stage.close)
        database = stage.database = attacks.prepare_ledger(stage, scenario.name)
        stage.env = env = worker_env(sandbox, mail, database)
        for step in (("db", "upgrade"), ("orgs", "import", str(sandbox.state / "customers.csv"))):
            done = firmgrant(env, *step)
            if done.returncode != 0:
                sys.exit(f"firmgrant {' '.join(step)}: {done.stderr.strip()}")
        # Settling waits for the last such grant to end: a shorter wait in the short run.
        customers = Customers(sandbox.control, sandbox.tenants, seed, 25 if short else 60)
        for _ in range(40):  # a few grants before the worker starts
            customers.act()
        failing = customers.deeds.live_object_grants()[0]  # a record whose revocation fails
        sandbox.control.faults(f"{MILD_FAULTS},fail-records={failing}")
        customers.start()
        stage.customers = customers
        try:
            figures.attacks = scenario.attack(stage)
        except attacks.Unable as exc:
            figures.problems.append(str(exc))
        stage.restore()
        figures.problems += settle(env, sandbox, mail, customers, database, logs)
        measure(figures, env, sandbox, mail, customers, database, logs)
        figures.problems += stage.problems
        if figures.bad():
            kept = KEPT / scenario.name
            attacks.keep_logs(logs, kept)
            figures.problems.append(f"logs kept in {kept}")
    figures.seconds = time.monotonic() - started
    return figures


COLUMNS = ("scenario", "attacks", "grants", "emails", "resends", "look-alike", "revocations",
           "lost", "duplicates", "double", "verify", "full sync", "undone", "tracebacks",
           "seconds")  # fmt: skip


def table(rows: list[Figures]) -> str:
    cells = [COLUMNS] + [
        (f.scenario, str(f.attacks), str(f.grants), str(f.emails), str(f.resends),
         str(f.lookalikes), str(f.revocations), str(f.lost), str(f.duplicates), str(f.double),
         "ok" if f.chain_ok else "BROKEN", str(f.full_sync_changes), str(f.undone),
         str(f.tracebacks), f"{f.seconds:.0f}")
        for f in rows
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = [" | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                        enumerate(zip(row, widths, strict=True))) for row in cells]  # fmt: skip
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", help="PostgreSQL URL for the replica and outage scenarios")
    parser.add_argument("--kills", type=int, default=50, help="kills in kill-9 and replicas")
    parser.add_argument(
        "--short", action="store_true", help="CI's run: 8 kills, 1 replica kill, the SMTP outage"
    )
    parser.add_argument("--only", action="append", help="run only this scenario (repeatable)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()  # fmt: skip
    kills = 8 if args.short else args.kills
    chosen = scenarios(kills, args.short)
    names = [s.name for s in chosen]
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            parser.error(f"--only {', '.join(unknown)}: known scenarios are {', '.join(names)}")
        chosen = [s for s in chosen if s.name in args.only]
    elif args.short:
        chosen = [s for s in chosen if s.name in ("kill-9", "replicas", "smtp")]
    if any(s.postgres for s in chosen) and not args.database:
        parser.error("the replica and PostgreSQL scenarios need --database postgresql://…")
    rows = []
    for index, scenario in enumerate(chosen):
        print(f"{scenario.name}: {scenario.what} …", file=sys.stderr, flush=True)
        try:
            rows.append(run_scenario(scenario, args.database, args.seed + index, args.short))
        except Exception as exc:  # the harness's own failure: a row that says so
            rows.append(Figures(scenario.name, problems=[f"the harness failed: {exc!r}"]))
    print(table(rows))
    for row in rows:
        for problem in row.problems:
            print(f"{row.scenario}: {problem}")
    sys.exit(1 if any(row.bad() for row in rows) else 0)


if __name__ == "__main__":
    main()
