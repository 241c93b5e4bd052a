"""Benchmark: export and verify of N events (prints figures, asserts nothing).

Builds a ledger of N/10 grants and N events (discoveries, changes with the grant's snapshot,
reminders without one), then runs ``firmgrant export`` (CSV and NDJSON) and
``firmgrant verify`` as separate processes: rows/s, seconds and each one's peak RSS.

    .venv/bin/python bench/export.py 1000000
    .venv/bin/python bench/export.py 1000000 --database postgresql://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime, timedelta

from _processes import measure, scratch_ledger

from firmgrant.grant import GrantRecord
from firmgrant.ledger import Ledger, NewEvent, append_events, make_engine, upgrade
from firmgrant.lifecycle import EventKind
from firmgrant.timeutil import iso_z

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _record(i: int) -> GrantRecord:
    return GrantRecord(
        source_id=f"a0B{i:015d}",
        org_id=f"00D{i % 5000:012d}",
        org_name=f"Société {i} «Ltd»" if i % 7 else f"=cmd|' /C calc'!A{i}",
        grantor_id=f"005{i:015d}",
        grantor_username=f"jürgen{i}@customer.example",
        grantor_email=f"jurgen{i}@customer.example",
        grantee="FirmWorks Support",
        duration="1 Month",
        granted_at=T0 + timedelta(minutes=i),
        expires_at=T0 + timedelta(days=30, minutes=i),
        via_login_as=i % 50 == 0,
        login_as_user=None,
        sf_status="Active",
        revoked_at=None,
        revoke_reason=None,
        modstamp=T0 + timedelta(minutes=i),
        deleted=False,
    )


def build(ledger: Ledger, events: int) -> None:
    """N/10 grants discovered, then a third reminders and two thirds changes.

    A change carries the grant's whole snapshot, as the sync writes it, so the export
    decodes what it would decode from a real ledger.
    """
    grants = max(events // 10, 1)
    for start in range(0, grants, 2000):
        page = [_record(i) for i in range(start, min(start + 2000, grants))]
        ledger.apply_page("bench", "object", page, [], now=T0 + timedelta(minutes=start))
    left, n = events - grants, 0
    while left > 0:
        batch = []
        for _ in range(min(10_000, left)):
            grant_id = n % grants + 1
            at = T0 + timedelta(days=1, seconds=n)
            payload: dict[str, object]
            if n % 3 == 0:
                payload = {"due_at": at.isoformat(), "email": "reminder"}  # no snapshot
                batch.append(NewEvent(EventKind.REMINDED, at, payload, "bench", None, grant_id))
            else:
                snapshot = _record(grant_id - 1).snapshot()
                old, snapshot["expires_at"] = snapshot["expires_at"], iso_z(at + timedelta(days=30))
                payload = {"changes": {"expires_at": [old, snapshot["expires_at"]]}}
                payload["grant"] = snapshot
                source_id = snapshot["source_id"]
                batch.append(
                    NewEvent(
                        EventKind.CHANGED, at, payload, "bench", source_id, grant_id, "salesforce"
                    )
                )
            n += 1
        with ledger.transaction() as session:
            append_events(session, batch)
        left -= len(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("events", type=int, nargs="?", default=1_000_000)
    parser.add_argument("--database", help="a PostgreSQL URL (default: a fresh SQLite file)")
    args = parser.parse_args()
    with scratch_ledger("firmgrant-bench-export-", args.database) as (work, database):
        engine = make_engine(database)
        upgrade(engine)
        started = time.perf_counter()
        build(Ledger(engine), args.events)
        engine.dispose()
        # The build leaves a gigabyte of dirty pages; written back during the export, they
        # would be measured as the export's. A ledger being exported has long settled.
        os.sync()
        print(
            f"built {args.events:,} events in {time.perf_counter() - started:.0f} s "
            f"({'PostgreSQL' if args.database else 'SQLite'})"
        )
        env = {**os.environ, "FIRMGRANT_DATABASE_URL": database, "FIRMGRANT_LOG_LEVEL": "WARNING"}
        for fmt in ("csv", "ndjson"):
            target = work / f"export.{fmt}"
            _, wall, rss = measure(env, "export", "--format", fmt, "--output", str(target))
            print(
                f"export {fmt}: {args.events / wall:,.0f} rows/s ({wall:.1f} s, process), "
                f"peak RSS {rss:.0f} MiB, {target.stat().st_size / 2**20:.0f} MiB file"
            )
        output, wall, rss = measure(env, "verify", ok=(0, 1))
        last = output.strip().splitlines()[-1] if output.strip() else ""
        print(f"verify: {wall:.1f} s, peak RSS {rss:.0f} MiB — {last[:60]}")


if __name__ == "__main__":
    main()
