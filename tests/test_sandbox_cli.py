"""`firmgrant sandbox` and `firmgrant demo` as a user runs them."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmgrant.cli import main
from firmgrant.sandbox import read_connection_env

FIRMGRANT = [sys.executable, "-m", "firmgrant"]


def first_line(process: subprocess.Popen[str], timeout: float = 60) -> str:
    """The process's first stdout line (the sandbox prints it when ready), waited for at most
    ``timeout`` seconds."""
    stdout = process.stdout
    assert stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    return lines.get(timeout=timeout).strip()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    state = tmp_path / "org"
    process = subprocess.Popen(
        [*FIRMGRANT, "sandbox", "--state", str(state), "--seed", "2500", "--random-seed", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # nobody reads it: a full pipe would stall the sandbox
        text=True,
    )
    try:
        yield process, first_line(process), state
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def test_sandbox_then_sync_twice_as_the_design_says(
    running: tuple[subprocess.Popen[str], str, Path], tmp_path: Path
) -> None:
    process, first_line, state = running
    env = {
        **os.environ,
        **read_connection_env(state / "connection.env"),
        "FIRMGRANT_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
    }

    def sync() -> dict[str, object]:
        done = subprocess.run(
            [*FIRMGRANT, "sync", "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        result: dict[str, object] = json.loads(done.stdout)
        return result

    first, second = sync(), sync()
    # Customers keep granting while the worker runs: records written now carry the time of
    # the write as SystemModstamp (whatever history they tell), so an incremental sync
    # finds every one, not only those whose back-dated stamp happens to be recent.
    subprocess.run(
        [*FIRMGRANT, "sandbox", "act", "--state", str(state), "seed", "200"],
        env=env,
        capture_output=True,
        check=True,
        timeout=120,
    )
    third, fourth = sync(), sync()
    process.send_signal(signal.SIGTERM)

    assert first_line.startswith("https://127.0.0.1:")
    assert env["FIRMGRANT_CONNECTIONS__SANDBOX__LOGIN_URL"] == first_line
    assert (first["inserted"], first["api_calls"]) == (2500, 2)
    assert (second["inserted"], second["updated"], second["api_calls"]) == (0, 0, 1)
    assert (third["inserted"], third["updated"]) == (200, 0)
    assert (fourth["inserted"], fourth["updated"]) == (0, 0)
    assert process.wait(timeout=30) == 0, "SIGTERM stops it cleanly"
    assert (state / "org.json").exists(), "the state directory keeps the org's data"


def test_acting_as_a_customer_from_the_command_line(
    running: tuple[subprocess.Popen[str], str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, state = running
    assert (
        main(
            [
                "sandbox",
                "act",
                "--state",
                str(state),
                "grant",
                "--duration",
                "3 Days",
                "--org-name",
                "Zoë's Café",
                "--login-as",
                "admin@zoe.example",
            ]
        )
        == 0
    )
    granted = json.loads(capsys.readouterr().out)
    assert main(["sandbox", "act", "--state", str(state), "revoke", granted["Id"]]) == 0
    revoked = json.loads(capsys.readouterr().out)
    assert main(["sandbox", "act", "--state", str(state), "stats"]) == 0
    stats = json.loads(capsys.readouterr().out)

    assert granted["Org_Name__c"] == "Zoë's Café"
    assert granted["Granted_Via_Login_As__c"] is True
    assert revoked["Status__c"] == "Revoked"
    assert stats["grants"] == 2501


def test_the_sandbox_restarts_from_its_state(tmp_path: Path) -> None:
    state = tmp_path / "org"
    for _ in range(2):
        process = subprocess.Popen(
            [*FIRMGRANT, "sandbox", "--state", str(state), "--seed", "7"],
            stdout=subprocess.PIPE,
            text=True,
        )
        first_line(process)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    data = json.loads((state / "org.json").read_text())
    assert len(data["records"]["login_access_grant__c"]) == 14, "seeded twice, both kept"


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["sandbox", "--faults", "lightning=1"], "--faults"),
        (["sandbox", "--faults", "503-rate=2"], "--faults"),
        (["sandbox", "--host", "0.0.0.0"], "--host"),  # noqa: S104 (refused: that is the point)
    ],
)
def test_bad_sandbox_options_exit_2(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert named in capsys.readouterr().err


def test_demo_tells_the_story(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--dir", str(tmp_path / "demo")]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps to the terminal width
    assert "Cycle 1, first sync: synced 1 connection: 42 records read, 40 new grants" in out
    assert "Cycle 4, nothing to do: synced 1 connection: " in out
    quiet = out.split("Cycle 4, nothing to do:")[1]
    assert "revocations opened: 0 — 0 for Login-As grants still live" in quiet
    assert "emails and notices: 0 sent" in quiet
    assert "The worker warns of each malformed record (the two log lines below)" in out
    assert "Salesforce answers UNABLE_TO_LOCK_ROW (the warning below)" in out
    assert 'the dashboard flags it "being revoked" until a worker runs again' in out
    assert "hash chain intact" in out
    assert "sessions_ended: org2 — 1 Login-As session(s) of support ended" in out
    assert "violation: org3 — ana.support@firmworks.example logged in as" in out
    assert "changed: org1 — aiko@customer1.example" in out
    assert "customer_revoked: org1 — revoked in Setup by li@customer1.example" in out
    assert "granted: org3 — jürgen@customer3.example of Bäckerei Müller GmbH" in out
    assert "A quiet cycle: 3 API calls (one per org), 0 emails." in out
    assert (tmp_path / "demo" / "firmgrant.db").exists()
    emails = list((tmp_path / "demo" / "outbox").glob("*.eml"))
    subjects = [
        line
        for eml in emails
        for line in eml.read_text("utf-8").splitlines()
        if line.startswith("Subject:")
    ]
    assert any("ends in" in s for s in subjects)
    assert any("has ended" in s for s in subjects)
    assert any("not accepted" in s for s in subjects)


def test_the_demo_ledger_exports_and_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["demo", "--dir", str(tmp_path / "demo")]) == 0
    monkeypatch.setenv("FIRMGRANT_DATABASE_URL", f"sqlite:///{tmp_path / 'demo' / 'firmgrant.db'}")
    target = tmp_path / "history.ndjson"
    assert main(["export", "--format", "ndjson", "--output", str(target)]) == 0
    kinds = {json.loads(line)["kind"] for line in target.read_text().splitlines()}
    assert {"discovered", "granted", "rejected", "revoked", "reminded", "notified"} <= kinds
    capsys.readouterr()
    assert main(["verify", "--export", str(target)]) == 0
    assert main(["verify"]) == 0
    assert capsys.readouterr().out.count("ok:") == 2


def test_customer_orgs_from_the_command_line_then_the_worker_reads_their_trails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "org"
    process = subprocess.Popen(
        [*FIRMGRANT, "sandbox", "--state", str(state), "--customers", "2", "--random-seed", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        first_line(process)
        act = ["sandbox", "act", "--state", str(state)]
        assert main([*act, "add-orgs", "1", "--date-order", "DMY", "--no-manage-users"]) == 0
        added = json.loads(capsys.readouterr().out)
        grant = [*act, "in-org", "3", "grant", "--user", "zoë@customer3.example", "--days", "3"]
        assert main(grant) == 0
        row = json.loads(capsys.readouterr().out)
        use = [*act, "in-org", "3", "use", "--user", "zoë@customer3.example"]
        assert main(use) == 0
        capsys.readouterr()
        assert main([*act, "in-org", "3", "stats"]) == 0
        stats = json.loads(capsys.readouterr().out)
        env = read_connection_env(state / "customers.env")
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("FIRMGRANT_DATABASE_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
        monkeypatch.setenv("FIRMGRANT_MAIL__FILE_DIR", str(tmp_path / "outbox"))
        assert main(["run", "--once", "--json"]) == 0
        cycle = json.loads(capsys.readouterr().out)
        assert main(["grants", "--format", "json"]) == 0
        usable = json.loads(capsys.readouterr().out)
    finally:
        process.kill()
        process.wait(timeout=30)

    assert added[0]["options"]["date_order"] == "DMY"
    assert row["Action"] == "loginasgrantedtopartnerbt"
    assert stats["login_as_sessions"]["zoë@customer3.example"] == 1
    assert sorted(s["connection"] for s in cycle["sync"]) == ["org1", "org2", "org3"]
    assert row["Id"] in {g["source_id"] for g in usable}
    assert {s["connection"]: s["used"] for s in cycle["sync"]}["org3"] == 1
