"""The short chaos run (bench/chaos.py --short): 8 kills -9 of a worker on SQLite, a replica
killed among three on PostgreSQL and an SMTP outage, while customers act; nothing may be
lost, sent twice or revoked twice. The full run is `make chaos` (README "Reliability")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_URL, REQUIRE_POSTGRES

BENCH = Path(__file__).resolve().parents[1] / "bench"


def table(printed: str) -> dict[str, dict[str, str]]:
    """The printed table: each scenario's row as {column: cell}."""
    lines = [line for line in printed.splitlines() if "|" in line]
    header = [cell.strip() for cell in lines[0].split("|")]
    rows = [[cell.strip() for cell in line.split("|")] for line in lines[1:]]
    return {cells[0]: dict(zip(header, cells, strict=True)) for cells in rows}


@pytest.mark.timeout(900)
def test_a_short_chaos_run_loses_nothing_and_sends_nothing_twice() -> None:
    if not POSTGRES_URL:
        if REQUIRE_POSTGRES:
            pytest.fail(
                "FIRMGRANT_TEST_REQUIRE_POSTGRES=1 but FIRMGRANT_TEST_DATABASE_URL is unset"
            )
        pytest.skip("PostgreSQL not configured (set FIRMGRANT_TEST_DATABASE_URL)")
    done = subprocess.run(
        [sys.executable, "chaos.py", "--short", "--database", POSTGRES_URL],
        cwd=BENCH, capture_output=True, text=True, timeout=840, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    rows = table(done.stdout)
    assert sorted(rows) == ["kill-9", "replicas", "smtp"]
    for row in rows.values():
        assert int(row["grants"]) > 20  # customers did act
        assert int(row["emails"]) > 0
        assert (row["lost"], row["duplicates"], row["double"], row["verify"]) == (
            "0",
            "0",
            "0",
            "ok",
        )
    assert rows["kill-9"]["attacks"] == "8"
