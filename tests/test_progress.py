"""`firmgrant sync` over the registry: a progress display on a terminal (and only there),
each org's outcome left in the registry."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import threading
from pathlib import Path

from firmgrant.ledger import Ledger
from firmgrant.sandbox import SandboxOrg
from tests.test_orgs import register


def _env(sandbox: SandboxOrg, database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "FIRMGRANT_DATABASE_URL": database_url,
        "FIRMGRANT_REGISTRY__CLIENT_ID": sandbox.app.client_id,
        "FIRMGRANT_REGISTRY__PRIVATE_KEY_FILE": str(sandbox.state / "jwt.key"),
        "FIRMGRANT_REGISTRY__CA_BUNDLE": str(sandbox.state / "tls.crt"),
        "FIRMGRANT_VENDOR__PUBLISHER_ORG_ID": sandbox.app.org_id,
        "FIRMGRANT_VENDOR__SUPPORT_USERNAMES": "*@firmworks.example",
        "FIRMGRANT_SYNC__API_FLOOR": "0",
        "COLUMNS": "160",
    }


def _sync_on_a_terminal(env: dict[str, str]) -> tuple[int, str, str]:
    """`firmgrant sync` with its stderr on a pseudo-terminal: exit code, stdout, the terminal."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "firmgrant", "sync"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=slave,
        text=True,
    )
    os.close(slave)
    screen = bytearray()

    def drain() -> None:  # a full terminal buffer would stall the command
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the last writer closed the terminal
                return
            if not chunk:
                return
            screen.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    out, _ = process.communicate(timeout=120)
    reader.join(timeout=30)
    os.close(master)
    # What a person reads: the text without the terminal's colour and cursor codes.
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode("utf-8", "replace"))
    return process.returncode, out, text


def test_a_sync_of_many_orgs_shows_orgs_done_and_records_on_a_terminal_only(
    sandbox: SandboxOrg, ledger: Ledger, database_url: str, tmp_path: Path
) -> None:
    tenants = [sandbox.tenants.add() for _ in range(5)]
    for tenant in tenants:
        for n in range(3):
            tenant.grant(f"user{n}@{tenant.domain}", 7, vendor=("FirmWorks", sandbox.app.org_id))
    register(ledger, sandbox, tenants)
    env = _env(sandbox, database_url)

    code, out, screen = _sync_on_a_terminal(env)

    assert code == 0, screen
    assert "5/5 orgs" in screen, screen
    assert "15 records" in screen, "the three grants of each org, counted as they came"
    assert out.count("sync ") == 5, "the one-line summaries still go to stdout"
    log_lines = [line for line in screen.splitlines() if "INFO firmgrant" in line]
    assert log_lines
    assert all(line.startswith("20") for line in log_lines), (
        "log lines are printed above the display, never through it"
    )

    piped = subprocess.run(
        [sys.executable, "-m", "firmgrant", "sync"], env=env, capture_output=True, text=True
    )
    assert piped.returncode == 0, piped.stderr
    assert "orgs" not in piped.stderr
    assert "records" not in piped.stderr
    assert piped.stdout.count("sync ") == 5


def test_a_sync_by_hand_leaves_each_orgs_state_in_the_registry(
    sandbox: SandboxOrg, ledger: Ledger, database_url: str
) -> None:
    import json

    tenants = [sandbox.tenants.add() for _ in range(3)]
    register(ledger, sandbox, tenants, org2="nobody@customer2.example")  # a refused token
    env = _env(sandbox, database_url)

    done = subprocess.run(
        [sys.executable, "-m", "firmgrant", "sync"], env=env, capture_output=True, text=True
    )
    listed = subprocess.run(
        [sys.executable, "-m", "firmgrant", "orgs", "list", "--json"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip

    assert done.returncode == 3, done.stderr
    orgs = {o["name"]: o for o in json.loads(listed.stdout)}
    assert {name: o["state"] for name, o in orgs.items()} == {
        "org1": "ok", "org2": "auth_failed", "org3": "ok",
    }  # fmt: skip
    assert orgs["org1"]["org_id"] == tenants[0].org_id, "the org id learned on its first sync"
    assert orgs["org2"]["failures"] == 1
    assert orgs["org2"]["last_error"]
