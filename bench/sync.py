"""Benchmark: initial and idle sync of N grants from the sandbox org (prints, asserts nothing).

The sandbox runs as its own process (the org is never the worker), the worker as another,
exactly as a user runs them: ``firmgrant sandbox`` and ``firmgrant sync --json``. The
worker's peak RSS is its high-water mark (``VmHWM``), see ``_processes.measure``.

    .venv/bin/python bench/sync.py 100000
    .venv/bin/python bench/sync.py 1000000 --database postgresql://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from typing import Any

from _processes import FIRMGRANT, measure, sandbox, scratch_ledger

from firmgrant.sandbox import read_connection_env


def run_worker(env: dict[str, str], *argv: str) -> tuple[dict[str, Any], float, float]:
    """One ``firmgrant`` run: its JSON output, wall seconds and peak RSS in MiB."""
    output, wall, rss = measure(env, *argv)
    return json.loads(output), wall, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grants", type=int, nargs="?", default=100_000)
    parser.add_argument("--database", help="a PostgreSQL URL (default: a fresh SQLite file)")
    args = parser.parse_args()

    with scratch_ledger("firmgrant-bench-", args.database) as (work, database):
        started = time.perf_counter()
        with sandbox(work / "org", "--seed", str(args.grants), "--random-seed", "1") as base_url:
            seeded = time.perf_counter() - started
            env = {
                **os.environ,
                **read_connection_env(work / "org" / "connection.env"),
                "FIRMGRANT_DATABASE_URL": database,
                "FIRMGRANT_LOG_LEVEL": "WARNING",
            }
            subprocess.run([FIRMGRANT, "db", "upgrade"], env=env, check=True, capture_output=True)
            first, first_wall, first_rss = run_worker(env, "sync", "--json")
            idle, idle_wall, idle_rss = run_worker(env, "sync", "--json")

    n = args.grants
    print(f"sandbox {base_url}: seeded {n:,} grants in {seeded:.1f} s")
    print(f"ledger: {'PostgreSQL' if args.database else 'SQLite'}")
    print(
        f"initial sync: {first['inserted']:,} inserted in {first['seconds']:.2f} s "
        f"= {first['inserted'] / first['seconds']:,.0f} records/s "
        f"(process wall {first_wall:.2f} s), {first['api_calls']} API calls "
        f"(ceil(N/2000) = {-(-n // 2000)}), peak RSS {first_rss:.0f} MiB"
    )
    print(
        f"idle sync: {idle['inserted']} inserted, {idle['updated']} updated, "
        f"{idle['api_calls']} API call(s), {idle['seconds']:.3f} s "
        f"(process wall {idle_wall:.2f} s), peak RSS {idle_rss:.0f} MiB"
    )


if __name__ == "__main__":
    main()
