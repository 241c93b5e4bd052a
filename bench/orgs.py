"""Benchmark: N customer orgs in the registry, a first and an idle cycle (prints, asserts nothing).

The sandbox serves N customer orgs (a few grants each, in their audit trails) as its own
process; they are registered with `firmgrant orgs import`. One worker (in this process, as
`firmgrant run` runs it) then runs two cycles: the first reads every trail, the idle one —
the steady state of a running worker — finds nothing new. Then `firmgrant run --once` runs
the idle cycle once more as a restarted worker does (every org's token asked anew).
With ``--replicas K`` (PostgreSQL) K `run --once` workers run each cycle at once and the
split is printed.

    .venv/bin/python bench/orgs.py 1000
    .venv/bin/python bench/orgs.py 1000 --replicas 2 --database postgresql://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from _processes import FIRMGRANT, measure, sandbox, scratch_ledger
from sqlalchemy import text

from firmgrant._commands import cycle_json
from firmgrant.ledger import Ledger, make_engine
from firmgrant.sandbox import read_connection_env
from firmgrant.settings import load_settings
from firmgrant.worker import Worker


def in_process(env: dict[str, str]) -> Iterator[tuple[list[dict[str, Any]], float, float]]:
    """Cycles of one long-lived worker in this process: JSON, wall seconds, peak RSS so far."""
    os.environ.update(env)
    settings = load_settings()
    ledger = Ledger(make_engine(settings.database_url.get_secret_value()))
    worker = Worker(settings, ledger)
    while True:
        started = time.perf_counter()
        result = worker.cycle()
        wall = time.perf_counter() - started
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        yield [cycle_json(result)], wall, rss


def all_due(database: str) -> None:
    """Every org due again: the next poll has come."""
    engine = make_engine(database)
    with engine.begin() as connection:
        connection.execute(text("UPDATE orgs SET next_sync_at = last_sync_at"))
    engine.dispose()


def cycle(env: dict[str, str], replicas: int) -> tuple[list[dict[str, Any]], float, float]:
    """One cycle by ``replicas`` workers at once: their JSON, wall seconds, largest peak RSS."""
    if replicas == 1:
        output, wall, rss = measure(env, "run", "--once", "--json", ok=(0, 3))
        return [json.loads(output)], wall, rss
    started = time.perf_counter()
    workers = [
        subprocess.Popen([FIRMGRANT, "run", "--once", "--json"], env=env, stdout=subprocess.PIPE,
                         text=True)
        for _ in range(replicas)
    ]  # fmt: skip
    outputs = [json.loads(worker.communicate()[0]) for worker in workers]
    return outputs, time.perf_counter() - started, 0.0


def report(title: str, outputs: list[dict[str, Any]], wall: float, rss: float, n: int) -> None:
    syncs = [s for output in outputs for s in output["sync"]]
    per_org = Counter(s["connection"] for s in syncs)
    calls = sum(s["api_calls"] for s in syncs)
    states: Counter[str] = Counter()
    for output in outputs:
        states.update({str(k): v for k, v in output.get("orgs", {}).items()})
    print(
        f"{title}: {len(per_org):,} of {n:,} orgs synced in {wall:.1f} s "
        f"({len(per_org) / wall:,.0f} orgs/s), {calls / max(len(per_org), 1):.2f} API calls "
        f"per org, {sum(s['inserted'] for s in syncs):,} grants new"
        + (f", peak RSS {rss:.0f} MiB" if rss else "")
    )
    if len(outputs) > 1:
        split = ", ".join(str(len(o["sync"])) for o in outputs)
        twice = sum(1 for count in per_org.values() if count > 1)
        print(f"    replicas synced {split} orgs; orgs synced twice in the cycle: {twice}")
    if states:
        print(f"    org states: {dict(states)}")
    revoked = sum(r["revoked"] + r["already"] + r["sessions"] for o in outputs for r in o["revoke"])
    sent = sum((o["dispatch"] or {}).get("sent", 0) for o in outputs)
    queued = sum((o["remind"] or {}).get("queued", 0) for o in outputs)
    if revoked or sent or queued:
        print(f"    besides the syncs: {revoked:,} revoked, {queued:,} reminders queued, "
              f"{sent:,} emails sent (the sandbox's histories hold ended grants)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("orgs", type=int, nargs="?", default=1000)
    parser.add_argument("--database", help="a PostgreSQL URL (default: a fresh SQLite file)")
    parser.add_argument("--replicas", type=int, default=1, help="workers per cycle (PostgreSQL)")
    parser.add_argument("--pool", type=int, default=8, help="orgs one worker syncs at once")
    args = parser.parse_args()
    if args.replicas > 1 and not args.database:
        parser.error("--replicas needs --database postgresql://… (SQLite allows one worker)")

    with scratch_ledger("firmgrant-bench-orgs-", args.database) as (work, database):
        started = time.perf_counter()
        with sandbox(work / "org", "--customers", str(args.orgs), "--random-seed", "1") as base_url:
            seeded = time.perf_counter() - started
            env = {
                **os.environ,
                **read_connection_env(work / "org" / "registry.env"),
                "FIRMGRANT_DATABASE_URL": database,
                "FIRMGRANT_LOG_LEVEL": "WARNING",
                "FIRMGRANT_SYNC__API_FLOOR": "0",
                "FIRMGRANT_REGISTRY__POOL": str(args.pool),
                "FIRMGRANT_MAIL__FILE_DIR": str(work / "outbox"),
            }
            subprocess.run([FIRMGRANT, "db", "upgrade"], env=env, check=True, capture_output=True)
            subprocess.run(
                [FIRMGRANT, "orgs", "import", str(work / "org" / "customers.csv")],
                env=env, check=True, capture_output=True,
            )  # fmt: skip
            if args.replicas == 1:
                worker = in_process(env)
                first = next(worker)
                all_due(database)
                idle = next(worker)
                all_due(database)
            else:
                first = cycle(env, args.replicas)
                all_due(database)
            restarted = cycle(env, args.replicas)

    print(f"sandbox {base_url}: {args.orgs:,} customer orgs seeded in {seeded:.1f} s")
    print(
        f"ledger: {'PostgreSQL' if args.database else 'SQLite'}; "
        f"{args.replicas} worker(s), pool {args.pool}"
    )
    if args.replicas == 1:
        report("first cycle", *first, args.orgs)
        report("idle cycle (running worker)", *idle, args.orgs)
    else:
        report("first cycle", *first, args.orgs)
    report("idle cycle (restarted worker)", *restarted, args.orgs)


if __name__ == "__main__":
    main()
