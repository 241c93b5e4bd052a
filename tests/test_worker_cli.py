"""`firmgrant run` and `firmgrant revoke` as an operator runs them: processes, signals, kills.

The sandbox org runs in the test process (HTTPS on loopback), the worker in its own
process; emails go to aiosmtpd or to the file outbox.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from firmgrant.cli import main
from firmgrant.ledger import Ledger, make_engine
from firmgrant.policy import GrantFacts, reminder_due, revocation_needed
from firmgrant.sandbox import VENDOR, FaultPlan, SandboxOrg, read_connection_env
from firmgrant.timeutil import parse_sf_datetime, utcnow
from firmgrant.worker import single_worker_lock
from tests.conftest import _postgres_schema_url
from tests.lifecycling import SUPPORT, SmtpServer

FIRMGRANT = [sys.executable, "-m", "firmgrant"]
OFFSETS = (timedelta(days=7), timedelta(days=1), timedelta(hours=1))
YEAR = timedelta(days=365)


def worker_env(org: SandboxOrg, database_url: str, **mail: str) -> dict[str, str]:
    org.write_files()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIRMGRANT_")}
    env.update(read_connection_env(org.state / "connection.env"))
    env.update(
        {
            "FIRMGRANT_DATABASE_URL": database_url,
            "FIRMGRANT_SYNC__API_FLOOR": "0",
            "FIRMGRANT_VENDOR__SUPPORT_EMAIL": SUPPORT,
            "FIRMGRANT_MAIL__FROM": f"FirmWorks Support <{SUPPORT}>",
            "FIRMGRANT_LOG_LEVEL": "INFO",
        }
    )
    env.update({f"FIRMGRANT_MAIL__{k.upper()}": v for k, v in mail.items()})
    return env


def smtp_mail(port: int) -> dict[str, str]:
    return {
        "backend": "smtp",
        "smtp_host": "127.0.0.1",
        "smtp_port": str(port),
        "smtp_starttls": "false",
    }


def run_once(env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [*FIRMGRANT, "run", "--once", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def wait_for_line(process: subprocess.Popen[str], marker: str, timeout: float = 60) -> None:
    """Until the process writes a stderr line containing ``marker`` (a bounded wait)."""
    assert process.stderr is not None
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    while True:
        line = lines.get(timeout=timeout)
        assert line is not None, f"the process ended without logging {marker!r}"
        if marker in line:
            return


def expected_work(org: SandboxOrg) -> tuple[int, int, int]:
    """(reminders, rejections, revocations) due now, read from the org's own records."""
    now = utcnow()
    reminders = rejections = revocations = 0
    for record in org.store.records["login_access_grant__c"].values():
        if record["Grantee__c"] != VENDOR or record["IsDeleted"]:
            continue
        facts = GrantFacts(
            parse_sf_datetime(record["Granted_At__c"]),
            parse_sf_datetime(record["Expires_At__c"]),
            bool(record["Granted_Via_Login_As__c"]),
            record["Status__c"],
            False,
        )
        verdict = revocation_needed(facts, now, YEAR)
        revocations += verdict is not None
        rejections += verdict is not None and verdict.cause == "login_as"
        reminders += reminder_due(facts, OFFSETS, YEAR, now) is not None
    return reminders, rejections, revocations


@pytest.mark.ledger
def test_two_runs_against_2000_grants_send_and_revoke_exactly_once(
    sandbox: SandboxOrg, smtp: SmtpServer, tmp_path: Path
) -> None:
    sandbox.customers.seed(2000)
    reminders, rejections, revocations = expected_work(sandbox)
    assert min(reminders, rejections, revocations) > 0  # the seed covers every case
    env = worker_env(sandbox, f"sqlite:///{tmp_path / 'ledger.db'}", **smtp_mail(smtp.port))

    first = run_once(env)

    mail = smtp.mailbox
    assert len(mail.of_kind("ends in")) == reminders
    assert len(mail.of_kind("not accepted")) == rejections
    assert len(mail.of_kind("has ended")) == revocations - rejections
    assert sum(sandbox.api.revocations.values()) == revocations
    assert max(sandbox.api.revocations.values()) == 1
    assert first["revoke"][0]["revoked"] == revocations

    second = run_once(env)
    assert second["api_calls"] == 1
    assert len(mail.messages) == reminders + revocations
    assert sum(sandbox.api.revocations.values()) == revocations


@pytest.mark.ledger
def test_sigkill_at_any_point_then_restart_loses_and_repeats_nothing(
    sandbox: SandboxOrg, tmp_path: Path
) -> None:
    sandbox.customers.seed(600)
    reminders, _, revocations = expected_work(sandbox)
    outbox = tmp_path / "outbox"
    env = worker_env(sandbox, f"sqlite:///{tmp_path / 'ledger.db'}", file_dir=str(outbox))
    env["FIRMGRANT_LOG_LEVEL"] = "DEBUG"
    # Each kill lands after the worker has logged this line: after the sync, after planning,
    # during a revocation batch, and between two emails.
    for marker in ("sync sandbox", "remind:", "revoking a batch", "email sent"):
        # A slow org keeps the revocation call in flight until the kill lands, however
        # loaded the machine (the org applies the update after the worker is gone).
        slow = marker == "revoking a batch"
        sandbox.faults.plan = FaultPlan(slow_rate=1.0 if slow else 0.0, slow_seconds=1.0)
        process = subprocess.Popen(
            [*FIRMGRANT, "run", "--once"], env=env, stderr=subprocess.PIPE, text=True
        )
        assert process.stderr is not None
        for line in process.stderr:
            if marker in line:
                process.send_signal(signal.SIGKILL)
                break
        process.wait()
        process.stderr.close()
    sandbox.faults.plan = FaultPlan()
    # A lease outlives any request (300 s against a 30 s timeout): by the time another worker
    # may take a row over, what the killed one had in flight has landed.
    assert sandbox.api.wait_idle(timeout=30)
    # Leases of killed workers must run out before a restart may take their rows over.
    with Ledger(make_engine(env["FIRMGRANT_DATABASE_URL"])).transaction() as session:
        from sqlalchemy import update

        from firmgrant.ledger.models import OutboxRow, RevocationRow

        # The kills left work in flight: revocations and emails claimed, outcome unknown.
        for model in (OutboxRow, RevocationRow):
            in_flight = session.execute(
                update(model)
                .where(model.lease_until.is_not(None))
                .values(lease_until=utcnow() - timedelta(seconds=1))  # as if waited out
            )
            assert in_flight.rowcount > 0, f"no {model.__tablename__} row in flight"  # type: ignore[attr-defined]
    run_once(env)
    final = run_once(env)

    assert len(list(outbox.glob("*.eml"))) == reminders + revocations
    assert max(sandbox.api.revocations.values()) == 1
    assert sum(sandbox.api.revocations.values()) == revocations
    assert final["api_calls"] == 1


def test_second_worker_on_one_sqlite_ledger_refuses_to_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("FIRMGRANT_DATABASE_URL", url)
    monkeypatch.setenv("FIRMGRANT_CONNECTIONS__MAIN__AUTH", "token")
    monkeypatch.setenv("FIRMGRANT_CONNECTIONS__MAIN__ACCESS_TOKEN", "00Dx!token")
    monkeypatch.setenv("FIRMGRANT_CONNECTIONS__MAIN__INSTANCE_URL", "https://acme.example")
    with single_worker_lock(Ledger(make_engine(url))):
        code = main(["run", "--once"])
    assert code == 2
    assert "another worker" in capsys.readouterr().err


@pytest.mark.ledger
def test_sigterm_finishes_the_cycle_in_hand_and_exits_0(
    sandbox: SandboxOrg, tmp_path: Path
) -> None:
    sandbox.customers.seed(300)
    _, _, revocations = expected_work(sandbox)
    # A slow org: the signal lands while the revocation batch is with Salesforce.
    sandbox.faults.plan = FaultPlan(slow_rate=1.0, slow_seconds=0.5)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    env = worker_env(sandbox, url, file_dir=str(tmp_path / "o"))
    env["FIRMGRANT_POLL_SECONDS"] = "3600"
    process = subprocess.Popen(
        [*FIRMGRANT, "run", "--json-logs"], env=env, stderr=subprocess.PIPE, text=True
    )
    assert process.stderr is not None
    for line in process.stderr:
        if json.loads(line)["message"].startswith("remind:"):
            process.send_signal(signal.SIGTERM)
            break
    _, rest = process.communicate(timeout=60)
    messages = [json.loads(line)["message"] for line in rest.splitlines()]
    assert process.returncode == 0
    assert any("SIGTERM" in m for m in messages)
    # The batch in hand was finished and recorded, then the cycle stopped before sending.
    assert sum(sandbox.api.revocations.values()) == revocations
    assert any(m.startswith("revoke:") and f"revoked={revocations}" in m for m in messages)
    assert not any(m.startswith("dispatch:") for m in messages)
    assert any(m.startswith("cycle:") and m.endswith("stopped") for m in messages)
    with Ledger(make_engine(url)).sessions() as session:
        from sqlalchemy import func, select

        from firmgrant.ledger.models import RevocationRow

        leased = select(func.count()).where(RevocationRow.lease_owner.is_not(None))
        assert session.execute(leased).scalar_one() == 0


@pytest.mark.ledger
def test_revoke_by_hand_asks_off_a_terminal_and_records_who(
    sandbox: SandboxOrg,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    grant = sandbox.customers.grant(duration="1 Month")
    env = worker_env(sandbox, f"sqlite:///{tmp_path / 'ledger.db'}", file_dir=str(tmp_path / "o"))
    for key, value in env.items():
        if key.startswith("FIRMGRANT_"):
            monkeypatch.setenv(key, value)
    assert main(["sync"]) == 0
    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # noqa: SIM115 - not a terminal
    assert main(["revoke", grant["Id"], "--reason", "contract ended"]) == 2
    assert "--yes" in capsys.readouterr().err
    assert sandbox.api.revocations[grant["Id"]] == 0

    assert main(["revoke", grant["Id"], "--reason", "contract ended", "--yes"]) == 0
    assert sandbox.api.revocations[grant["Id"]] == 1
    record = sandbox.store.records["login_access_grant__c"][grant["Id"]]
    assert record["Revoke_Reason__c"] == "contract ended"
    capsys.readouterr()
    assert main(["show", grant["Id"]]) == 0
    story = capsys.readouterr().out
    assert "revoke_requested" in story
    assert "cli:" in story
    assert main(["revoke", grant["Id"], "--reason", "again", "--yes"]) == 0
    assert sandbox.api.revocations[grant["Id"]] == 1  # already revoked: nothing to do


@pytest.mark.ledger
def test_three_replicas_on_postgresql_share_the_work_exactly_once(
    sandbox: SandboxOrg, smtp: SmtpServer
) -> None:
    sandbox.customers.seed(1500)
    reminders, _, revocations = expected_work(sandbox)
    for url in _postgres_schema_url():
        env = worker_env(sandbox, url, **smtp_mail(smtp.port))
        subprocess.run([*FIRMGRANT, "db", "upgrade"], env=env, check=True, capture_output=True)
        replicas = [
            subprocess.Popen(
                [*FIRMGRANT, "run", "--once", "--json"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            for _ in range(3)
        ]
        outputs = [json.loads(p.communicate(timeout=120)[0]) for p in replicas]
        assert all(p.returncode == 0 for p in replicas)
        # Any one replica may plan; the work is shared and done once.
        ids = smtp.mailbox.message_ids()
        assert len(ids) == len(set(ids)) == reminders + revocations
        assert max(sandbox.api.revocations.values()) == 1
        assert sum(sandbox.api.revocations.values()) == revocations
        assert sum(o["planned"] for o in outputs) >= 1


def test_a_worker_killed_while_its_revocation_is_with_salesforce_leaves_a_true_history(
    sandbox: SandboxOrg, smtp: SmtpServer, tmp_path: Path
) -> None:
    sandbox.customers.seed(200)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    env = worker_env(sandbox, url, **smtp_mail(smtp.port))
    subprocess.run([*FIRMGRANT, "sync"], env=env, check=True, capture_output=True, timeout=120)
    env["FIRMGRANT_LOG_LEVEL"] = "DEBUG"
    # A slow org: the revocation call is with Salesforce when the kill lands, and Salesforce
    # carries it out after the worker is gone.
    sandbox.faults.plan = FaultPlan(slow_rate=1.0, slow_seconds=2.0)
    process = subprocess.Popen(
        [*FIRMGRANT, "run", "--once"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for_line(process, "revoking a batch")
        assert sandbox.api.wait_busy(timeout=30)  # the request has reached the org
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        process.kill()
        process.wait(timeout=30)
    assert sandbox.api.wait_idle(timeout=30)  # ... and has landed
    landed = {record_id for record_id, count in sandbox.api.revocations.items() if count}
    assert landed, "the killed worker's revocations reached the org"
    assert smtp.mailbox.messages == []
    sandbox.faults.plan = FaultPlan()

    run_once(env)
    final = run_once(env)

    records = sandbox.store.records["login_access_grant__c"]
    with Ledger(make_engine(url)).sessions() as session:
        from sqlalchemy import select

        from firmgrant.ledger.models import EventRow, GrantRow

        history = session.execute(
            select(GrantRow.source_id, EventRow.kind, EventRow.actor, EventRow.reason)
            .join(GrantRow, GrantRow.id == EventRow.grant_id)
            .where(GrantRow.source_id.in_(landed))
        ).all()
    for source_id in landed:
        story = [(kind, actor, reason) for sid, kind, actor, reason in history if sid == source_id]
        kinds = [kind for kind, _, _ in story]
        assert "customer_revoked" not in kinds, story
        assert "revocation_settled" not in kinds, story
        [revoked] = [item for item in story if item[0] == "revoked"]
        assert revoked[1] == "system:firmgrant"
        assert revoked[2] == records[source_id]["Revoke_Reason__c"]
    # Each grantor whose access ended (not the Login-As ones: they were told it was refused)
    # hears of it exactly once.
    ended = Counter(str(m["X-Envelope-To"]) for m in smtp.mailbox.of_kind("has ended"))
    expected = {
        records[source_id]["Grantor_Email__c"]
        for source_id in landed
        if not records[source_id]["Granted_Via_Login_As__c"]
    }
    assert expected
    assert set(ended) == expected
    assert set(ended.values()) == {1}
    assert max(sandbox.api.revocations.values()) == 1
    assert final["api_calls"] == 1
    assert final["dispatch"]["sent"] == 0
