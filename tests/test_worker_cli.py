"""`firmgrant run` and `firmgrant revoke` as an operator runs them: processes, signals, kills.

The sandbox org runs in the test process (HTTPS on loopback), the worker in its own
process; emails go to aiosmtpd or to the file outbox.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from firmgrant.cli import main
from firmgrant.ledger import Ledger, make_engine, upgrade
from firmgrant.sandbox import VENDOR, FaultPlan, SandboxOrg, read_connection_env
from firmgrant.sandbox.soql import sf_datetime
from firmgrant.timeutil import parse_sf_datetime, utcnow
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


def prepared(database_url: str) -> str:
    """The ledger's schema in place (SQLite would do it itself, PostgreSQL waits for it)."""
    engine = make_engine(database_url)
    upgrade(engine)
    engine.dispose()
    return database_url


def run_once(env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [*FIRMGRANT, "run", "--once", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


class Watched:
    """A worker process whose stderr is read as it comes: every wait on it is bounded."""

    def __init__(self, argv: list[str], env: dict[str, str], **popen: Any) -> None:
        self.process = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True, **popen)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, marker: str, timeout: float = 120) -> str:
        """Until a stderr line containing ``marker`` comes."""
        while True:
            line = self._queue.get(timeout=timeout)
            assert line is not None, f"the worker ended without logging {marker!r}"
            if marker in line:
                return line

    def kill(self) -> None:
        """SIGKILL, and make sure that is what ended it."""
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(timeout=30) == -signal.SIGKILL

    def finish(self, timeout: float = 120) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=30)
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)


OFFSETS_BEFORE_END = (timedelta(days=7), timedelta(days=1), timedelta(hours=1))


def _boundaries(record: dict[str, Any]) -> list[datetime]:
    """When something happens to a grant: a reminder, its end, the one-year cap."""
    granted = parse_sf_datetime(record["Granted_At__c"])
    expires = parse_sf_datetime(record["Expires_At__c"])
    return [expires, granted + YEAR, *(expires - offset for offset in OFFSETS_BEFORE_END)]


def keep_clear_of_boundaries(org: SandboxOrg, margin: timedelta = timedelta(minutes=10)) -> None:
    """Move the seeded grants with a boundary near now a little later (before any sync).

    Expectations are computed now and the worker acts a minute later: a reminder coming due
    or a grant ending in between would make either one right. A grant's boundaries lie at
    least an hour apart, so moving the nearest to ``now + 2 × margin`` clears them all.
    """
    now = utcnow()
    for record in org.store.records["login_access_grant__c"].values():
        near = [b for b in _boundaries(record) if now - margin < b <= now + margin]
        if near:
            shift = now + 2 * margin - min(near)
            for field in ("Granted_At__c", "Expires_At__c"):
                record[field] = sf_datetime(parse_sf_datetime(record[field]) + shift)


def expected_work(org: SandboxOrg) -> tuple[int, int, int]:
    """(reminders, rejections, revocations) due now, by the plain rules, from the org's
    own records (not through firmgrant's policy code)."""
    now = utcnow()
    reminders = rejections = revocations = 0
    for record in org.store.records["login_access_grant__c"].values():
        if record["Grantee__c"] != VENDOR or record["IsDeleted"]:
            continue
        if record["Status__c"] != "Active":
            continue  # the customer or Salesforce ended it: nothing for the vendor to do
        granted = parse_sf_datetime(record["Granted_At__c"])
        ends = min(parse_sf_datetime(record["Expires_At__c"]), granted + YEAR)
        if record["Granted_Via_Login_As__c"]:
            rejections += 1  # refused, revoked and explained, whatever its dates
            revocations += 1
        elif ends <= now:
            revocations += 1
        elif any(granted < ends - offset <= now for offset in OFFSETS_BEFORE_END):
            reminders += 1  # the nearest reminder that has come due, once
    return reminders, rejections, revocations


def seeded(org: SandboxOrg, count: int) -> tuple[int, int, int]:
    org.customers.seed(count)
    keep_clear_of_boundaries(org)
    work = expected_work(org)
    assert min(work) > 0, "the seed covers every case"
    return work


def test_two_runs_against_2000_grants_send_and_revoke_exactly_once(
    sandbox: SandboxOrg, smtp: SmtpServer, database_url: str
) -> None:
    reminders, rejections, revocations = seeded(sandbox, 2000)
    env = worker_env(sandbox, prepared(database_url), **smtp_mail(smtp.port))

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


def test_sigkill_at_any_point_then_restart_loses_and_repeats_nothing(
    sandbox: SandboxOrg, smtp: SmtpServer, database_url: str
) -> None:
    reminders, _, revocations = seeded(sandbox, 600)
    env = worker_env(sandbox, prepared(database_url), **smtp_mail(smtp.port))
    env["FIRMGRANT_LOG_LEVEL"] = "DEBUG"
    env["FIRMGRANT_WORKER__LEASE_SECONDS"] = "10"
    mail = smtp.mailbox
    # Each kill lands after the worker has logged this line: after the sync, after planning,
    # during a revocation batch, between two emails, and once the mail server has a message
    # but the worker has not yet heard "250 OK" (so it cannot have recorded it).
    for marker in ("sync sandbox", "remind:", "revoking a batch", "email sent", "SMTP"):
        # A slow org keeps the revocation call in flight until the kill lands, however
        # loaded the machine (the org applies the update after the worker is gone).
        slow = marker == "revoking a batch"
        sandbox.faults.plan = FaultPlan(slow_rate=1.0 if slow else 0.0, slow_seconds=1.0)
        mail.held = marker == "SMTP"
        worker = Watched([*FIRMGRANT, "run", "--once"], env)
        try:
            if marker == "SMTP":
                assert mail.arrived.wait(timeout=120)
            else:
                worker.wait_for(marker)
            worker.kill()
        finally:
            mail.release.set()
            worker.close()
    sandbox.faults.plan = FaultPlan()
    held_back = str(mail.messages[-1]["Message-ID"])
    # What the killed workers had in flight lands; their leases (10 s) run out.
    assert sandbox.api.wait_idle(timeout=30)
    wait_out_leases(env["FIRMGRANT_DATABASE_URL"])
    run_once(env)
    final = run_once(env)

    ids = Counter(mail.message_ids())
    assert len(ids) == reminders + revocations  # each email, by its key's Message-ID, once
    resent = {message_id for message_id, count in ids.items() if count > 1}
    assert held_back in resent  # the one documented window: the same Message-ID again
    assert set(ids.values()) <= {1, 2}
    assert max(sandbox.api.revocations.values()) == 1
    assert sum(sandbox.api.revocations.values()) == revocations
    assert final["api_calls"] == 1


def wait_out_leases(database_url: str) -> None:
    """Until every lease the killed workers held has run out (leases are wall-clock time)."""
    from sqlalchemy import func, select

    from firmgrant.ledger.models import OrgRow, OutboxRow, RevocationRow

    engine = make_engine(database_url)
    with engine.connect() as connection:
        last = max(
            connection.execute(select(func.max(model.lease_until))).scalar() or utcnow()
            for model in (OutboxRow, RevocationRow, OrgRow)
        )
    engine.dispose()
    assert last - utcnow() <= timedelta(seconds=10), "a lease is no longer than the setting"
    threading.Event().wait(max(0.0, (last - utcnow()).total_seconds()) + 0.1)


def test_second_worker_on_one_sqlite_ledger_refuses_to_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("FIRMGRANT_DATABASE_URL", url)
    monkeypatch.setenv("FIRMGRANT_CONNECTIONS__MAIN__AUTH", "token")
    monkeypatch.setenv("FIRMGRANT_CONNECTIONS__MAIN__ACCESS_TOKEN", "00Dx!token")
    monkeypatch.setenv("FIRMGRANT_CONNECTIONS__MAIN__INSTANCE_URL", "https://acme.example")
    with Ledger(make_engine(url)).single_worker_lock():
        code = main(["run", "--once"])
    assert code == 2
    assert "another worker" in capsys.readouterr().err


def test_sigterm_finishes_the_cycle_in_hand_and_exits_0(
    sandbox: SandboxOrg, database_url: str, tmp_path: Path
) -> None:
    _, _, revocations = seeded(sandbox, 300)
    # A slow org: the signal lands while the revocation batch is with Salesforce.
    sandbox.faults.plan = FaultPlan(slow_rate=1.0, slow_seconds=0.5)
    url = prepared(database_url)
    env = worker_env(sandbox, url, file_dir=str(tmp_path / "o"))
    env["FIRMGRANT_POLL_SECONDS"] = "3600"
    env["FIRMGRANT_LOG_LEVEL"] = "DEBUG"
    worker = Watched([*FIRMGRANT, "run", "--json-logs"], env)
    try:
        worker.wait_for("revoking a batch")
        assert sandbox.api.wait_busy(timeout=30)  # the batch is with Salesforce now
        worker.process.send_signal(signal.SIGTERM)
        assert worker.finish() == 0
    finally:
        worker.close()
    messages = [json.loads(line)["message"] for line in worker.lines if line.startswith("{")]
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


def test_sigterm_the_moment_the_worker_starts_stops_it(
    sandbox: SandboxOrg, database_url: str, tmp_path: Path
) -> None:
    """An orchestrator may stop a worker it has just started: the signal lands before the
    scheduler runs (found by bench/chaos.py: such a worker never stopped)."""
    env = worker_env(sandbox, prepared(database_url), file_dir=str(tmp_path / "o"))
    for _ in range(3):
        worker = Watched([*FIRMGRANT, "run"], env)
        try:
            worker.wait_for("a cycle every")
            worker.process.send_signal(signal.SIGTERM)
            assert worker.finish(timeout=60) == 0
        finally:
            worker.close()
        assert any("SIGTERM" in line for line in worker.lines)


def test_revoke_by_hand_asks_off_a_terminal_and_records_who(
    sandbox: SandboxOrg,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    grant = sandbox.customers.grant(duration="1 Month")
    env = worker_env(sandbox, prepared(database_url), file_dir=str(tmp_path / "o"))
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


def test_three_replicas_on_postgresql_share_the_work_exactly_once(
    sandbox: SandboxOrg, smtp: SmtpServer
) -> None:
    reminders, _, revocations = seeded(sandbox, 1500)
    for url in _postgres_schema_url():
        env = worker_env(sandbox, prepared(url), **smtp_mail(smtp.port))
        env["FIRMGRANT_WORKER__LEASE_SECONDS"] = "10"
        env["FIRMGRANT_LOG_LEVEL"] = "DEBUG"
        # A first replica is killed mid-cycle with revocations in hand, while two more start.
        doomed = Watched([*FIRMGRANT, "run", "--once"], env)
        replicas: list[subprocess.Popen[str]] = []
        try:
            doomed.wait_for("revoking a batch")
            replicas = [
                subprocess.Popen(
                    [*FIRMGRANT, "run", "--once", "--json"],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(2)
            ]
            doomed.kill()
            done = [p.communicate(timeout=240) for p in replicas]
            # A replica's traceback (a deadlock, say) is what a failure here has to show.
            assert all(p.returncode == 0 for p in replicas), [err[-3000:] for _, err in done]
            outputs = [json.loads(out) for out, _ in done]
        finally:
            doomed.close()
            for replica in replicas:
                if replica.poll() is None:
                    replica.kill()
        # Replicas plan one at a time: their planning spells never overlap.
        spells = sorted(tuple(o["planning"]) for o in outputs if o["planned"])
        assert all(end <= start for (_, end), (start, _) in itertools.pairwise(spells))
        # What the killed replica held is taken over once its leases run out.
        assert sandbox.api.wait_idle(timeout=30)
        wait_out_leases(url)
        run_once(env)
        ids = smtp.mailbox.message_ids()
        assert len(set(ids)) == reminders + revocations
        assert set(Counter(ids).values()) <= {1, 2}  # a resend keeps its Message-ID
        assert max(sandbox.api.revocations.values()) == 1
        assert sum(sandbox.api.revocations.values()) == revocations


def test_a_worker_killed_while_its_revocation_is_with_salesforce_leaves_a_true_history(
    sandbox: SandboxOrg, smtp: SmtpServer, database_url: str
) -> None:
    sandbox.customers.seed(200)
    url = prepared(database_url)
    env = worker_env(sandbox, url, **smtp_mail(smtp.port))
    subprocess.run([*FIRMGRANT, "sync"], env=env, check=True, capture_output=True, timeout=120)
    env["FIRMGRANT_LOG_LEVEL"] = "DEBUG"
    # A slow org: the revocation call is with Salesforce when the kill lands, and Salesforce
    # carries it out after the worker is gone.
    sandbox.faults.plan = FaultPlan(slow_rate=1.0, slow_seconds=2.0)
    worker = Watched([*FIRMGRANT, "run", "--once"], env)
    try:
        worker.wait_for("revoking a batch")
        assert sandbox.api.wait_busy(timeout=30)  # the request has reached the org
        worker.kill()
    finally:
        worker.close()
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


def test_secrets_never_reach_the_logs_even_at_debug(
    sandbox: SandboxOrg, smtp: SmtpServer, tmp_path: Path
) -> None:
    sandbox.customers.seed(50)
    app = sandbox.app
    env = worker_env(sandbox, f"sqlite:///{tmp_path / 'ledger.db'}", **smtp_mail(smtp.port))
    smtp_password = "smtp-Pa55-w0rd-secret"
    env.update(
        {
            "FIRMGRANT_LOG_LEVEL": "DEBUG",
            "FIRMGRANT_CONNECTIONS__SANDBOX__AUTH": "password",
            "FIRMGRANT_CONNECTIONS__SANDBOX__CLIENT_SECRET": app.client_secret,
            "FIRMGRANT_CONNECTIONS__SANDBOX__PASSWORD": app.password,
            "FIRMGRANT_CONNECTIONS__SANDBOX__SECURITY_TOKEN": app.security_token,
            "FIRMGRANT_MAIL__SMTP_USERNAME": "mailer",
            "FIRMGRANT_MAIL__SMTP_PASSWORD": smtp_password,
        }
    )
    # The mail server offers no login: the attempt fails, and says so without the password.
    done = subprocess.run(
        [*FIRMGRANT, "run", "--once", "--json-logs"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    logs = done.stdout + done.stderr
    assert done.returncode == 0, logs
    assert "SMTP AUTH extension not supported by server" in logs
    assert sandbox.sessions.tokens, "the worker was given access tokens"
    secrets = [app.client_secret, app.password, app.security_token, smtp_password]
    secrets += list(sandbox.sessions.tokens)
    for secret in secrets:
        assert secret not in logs


def test_sigint_stops_the_worker_cleanly(sandbox: SandboxOrg, tmp_path: Path) -> None:
    env = worker_env(sandbox, f"sqlite:///{tmp_path / 'ledger.db'}", file_dir=str(tmp_path / "o"))
    env["FIRMGRANT_POLL_SECONDS"] = "3600"
    worker = Watched([*FIRMGRANT, "run"], env)
    try:
        worker.wait_for("cycle:")  # the first cycle is done; the worker waits for the next
        worker.process.send_signal(signal.SIGINT)
        assert worker.finish() == 0
    finally:
        worker.close()
    assert any("SIGINT" in line for line in worker.lines)
    assert not any("Traceback" in line for line in worker.lines)


def test_an_audit_sync_killed_mid_trail_resumes_with_nothing_lost_or_repeated(
    sandbox: SandboxOrg, database_url: str
) -> None:
    tenant = sandbox.tenants.add()
    vendor = (VENDOR, sandbox.app.org_id)
    start = utcnow() - timedelta(days=100)
    for n in range(600):  # 600 grants, every third one changed a day later: 800 rows
        user = f"user{n}@{tenant.domain}"
        tenant.grant(user, 30, vendor=vendor, at=start + timedelta(minutes=n))
        if n % 3 == 0:
            tenant.grant(user, 365, vendor=vendor, at=start + timedelta(days=1, minutes=n),
                         verb="changed")  # fmt: skip
    sandbox.write_files()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIRMGRANT_")}
    env.update(read_connection_env(sandbox.state / "customers.env"))
    env.update(
        {
            "FIRMGRANT_DATABASE_URL": prepared(database_url),
            "FIRMGRANT_SYNC__API_FLOOR": "0",
            "FIRMGRANT_CONNECTIONS__ORG1__SOURCE__BATCH_SIZE": "200",
            "FIRMGRANT_LOG_LEVEL": "DEBUG",
        }
    )
    worker = Watched([*FIRMGRANT, "sync"], env)
    try:
        worker.wait_for("a page of 200 audit rows written")
        worker.wait_for("a page of 200 audit rows written")
        worker.kill()
    finally:
        worker.close()
    resumed = subprocess.run(
        [*FIRMGRANT, "sync", "--json"], env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr

    engine = make_engine(database_url)
    with engine.connect() as connection:
        grants: dict[str, Any] = {
            row[0]: row[1]
            for row in connection.execute(text("SELECT source_id, expires_at FROM grants"))
        }
        events = connection.execute(
            text("SELECT kind, source_id, payload FROM events ORDER BY id")
        ).all()
    engine.dispose()
    rows = tenant.store.records["setupaudittrail"].values()
    opened = {r["Id"] for r in rows if r["Action"] == "loginasgrantedtopartnerbt"}
    assert set(grants) == opened, "every grant of the trail, none twice"
    granted = Counter(source_id for kind, source_id, _ in events if kind == "granted")
    assert set(granted.values()) == {1}
    assert len(events) == len(set(events)), "no event written twice"
    by_row = Counter(json.loads(payload)["trail"]["id"] for _, _, payload in events)
    assert set(by_row) == {r["Id"] for r in rows}, "each of the 800 trail rows an event"
    assert set(by_row.values()) == {1}, "and only one"
    changed = {source_id for kind, source_id, _ in events if kind == "changed"}
    long_lived = {s for s, e in grants.items() if str(e) > str(start + timedelta(days=300))}
    assert changed <= long_lived
    assert len(long_lived) == 200, "each change applied once, whatever the page it fell on"


def registry_env(sandbox: SandboxOrg, database_url: str) -> dict[str, str]:
    sandbox.write_files()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIRMGRANT_")}
    env.update(read_connection_env(sandbox.state / "registry.env"))
    env.update(
        {
            "FIRMGRANT_DATABASE_URL": database_url,
            "FIRMGRANT_SYNC__API_FLOOR": "0",
            "FIRMGRANT_MAIL__BACKEND": "file",
            "FIRMGRANT_MAIL__FILE_DIR": str(sandbox.state / "outbox"),
            "FIRMGRANT_REGISTRY__POOL": "3",
            "FIRMGRANT_REGISTRY__LEASE_SECONDS": "10",
            "FIRMGRANT_LOG_LEVEL": "INFO",
        }
    )
    return env


def registered_orgs(sandbox: SandboxOrg, count: int, database_url: str) -> dict[str, str]:
    vendor = (VENDOR, sandbox.app.org_id)
    for _ in range(count):
        tenant = sandbox.tenants.add()
        tenant.grant(f"jane@{tenant.domain}", 7, vendor=vendor, at=utcnow() - timedelta(hours=1))
    env = registry_env(sandbox, prepared(database_url))
    imported = subprocess.run(
        [*FIRMGRANT, "orgs", "import", str(sandbox.state / "customers.csv")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert imported.returncode == 0, imported.stderr
    return env


def synced(output: str) -> list[str]:
    return [sync["connection"] for sync in json.loads(output)["sync"]]


def test_three_replicas_on_postgresql_split_200_orgs_with_no_org_synced_twice(
    sandbox: SandboxOrg, postgres_url: str
) -> None:
    env = registered_orgs(sandbox, 200, postgres_url)
    replicas = [
        subprocess.Popen([*FIRMGRANT, "run", "--once", "--json"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for _ in range(3)
    ]  # fmt: skip
    outputs = [replica.communicate(timeout=300)[0] for replica in replicas]

    by_replica = [synced(output) for output in outputs]
    every = [name for names in by_replica for name in names]
    assert sorted(every) == sorted(f"org{n}" for n in range(1, 201)), "each org once"
    assert sum(1 for names in by_replica if names) >= 2, "the replicas shared the orgs"
    with make_engine(postgres_url).connect() as connection:
        states: dict[str, int] = dict(
            connection.execute(text("SELECT state, count(*) FROM orgs GROUP BY state")).all()
        )
        grants = connection.execute(text("SELECT count(*) FROM grants")).scalar_one()
    assert states == {"ok": 200}
    assert grants == 200


def test_a_replica_killed_mid_cycle_leaves_its_orgs_to_the_others(
    sandbox: SandboxOrg, postgres_url: str
) -> None:
    env = registered_orgs(sandbox, 200, postgres_url)
    env["FIRMGRANT_LOG_LEVEL"] = "INFO"
    doomed = Watched([*FIRMGRANT, "run", "--once", "--json"], env, stdout=subprocess.DEVNULL)
    survivor = subprocess.Popen(
        [*FIRMGRANT, "run", "--once", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        for _ in range(5):
            doomed.wait_for("firmgrant.jobs.sync: sync org")
        doomed.kill()
    finally:
        doomed.close()
    first = synced(survivor.communicate(timeout=300)[0])
    wait_out_leases(postgres_url)
    rerun = run_once(env)

    again = first + [s["connection"] for s in rerun["sync"]]
    assert len(again) == len(set(again)), "no org synced twice by the survivors"
    with make_engine(postgres_url).connect() as connection:
        states: dict[str, int] = dict(
            connection.execute(text("SELECT state, count(*) FROM orgs GROUP BY state")).all()
        )
        unsynced = connection.execute(
            text("SELECT count(*) FROM orgs WHERE last_sync_at IS NULL")
        ).scalar_one()
        grants = connection.execute(text("SELECT count(*) FROM grants")).scalar_one()
    assert (states, unsynced, grants) == ({"ok": 200}, 0, 200), "every org synced, nothing lost"


def test_run_once_says_what_each_count_counts_and_shows_progress_on_a_terminal(
    sandbox: SandboxOrg, tmp_path: Path
) -> None:
    """Two Login-As grants seen, one revocation opened: the summary says why they differ.
    On a terminal (a pty here) the syncs and the sending show progress as they go."""
    import pty

    for _ in range(5):
        sandbox.customers.grant(duration="1 Day", at=utcnow() - timedelta(hours=23))  # reminded
    long_ago = utcnow() - timedelta(days=3)
    for at, status in ((None, "Active"), (long_ago, "Expired")):
        sandbox.customers.grant(
            duration="1 Day", login_as_user="admin@loginas.example", at=at, status=status
        )
    env = worker_env(sandbox, prepared(f"sqlite:///{tmp_path / 'l.db'}"), file_dir=str(tmp_path))
    env.update({"COLUMNS": "120", "TERM": "xterm"})
    controller, terminal = pty.openpty()
    done = subprocess.Popen([*FIRMGRANT, "run", "--once"], env=env, stdout=subprocess.PIPE,
                            stderr=terminal, text=True)  # fmt: skip
    os.close(terminal)
    shown = bytearray()
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the worker exited: the terminal's other end is closed
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    out = done.communicate(timeout=120)[0]

    assert done.returncode == 0, shown.decode(errors="replace")
    said = out.splitlines()
    assert said[0].startswith("synced 1 connection: ")
    assert said[0].endswith(", 2 of the new made while logged in as another user")
    opened = next(line for line in said if line.startswith("revocations opened:"))
    assert " 1 for Login-As grants still live " in opened
    assert "a grant already ended, revoked or deleted needs none" in opened
    assert any(re.match(r"emails and notices: \d+ sent, 0 to retry", line) for line in said)
    display = shown.decode(errors="replace")
    assert "syncing" in display
    assert re.search(r"sending\s.*\d+/\d+", display)
