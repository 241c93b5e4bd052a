"""The chaos harness's world: the sandbox org as its own process, a real SMTP server, customers
acting all the time, and ``firmgrant run`` workers as processes that can be killed.

Everything the customers do is written down (``Deeds``), so the measurement afterwards knows
what the ledger must hold without asking firmgrant.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from _processes import FIRMGRANT

from firmgrant.sandbox import read_connection_env

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.lifecycling import SmtpServer, free_port  # the tests' mail server

SENDER = "support@firmworks.example"
SUPPORT_QUEUE = "queue@firmworks.example"
# Mild faults while the customers act (faults.py): 503s, expired sessions, slow calls.
MILD_FAULTS = "503-rate=0.03,expire-every=40,slow-rate=0.02,slow-seconds=0.4"
DURATIONS = ("1 Day", "3 Days", "1 Week")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


class Control:
    """The sandbox's control API (``X-Sandbox-Key``), as `firmgrant sandbox act` uses it."""

    def __init__(self, state: Path) -> None:
        control = json.loads((state / "control.json").read_text())
        self.url, self.key = control["url"], control["key"]
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.verify = str(state / "tls.crt")
        self.lock = threading.Lock()

    def __call__(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        with self.lock:  # one requests.Session, several threads
            try:
                response = self._send(method, path, body)
            except requests.ConnectionError:  # a kept-alive connection the server had closed
                response = self._send(method, path, body)
        response.raise_for_status()
        return response.json()

    def _send(self, method: str, path: str, body: dict[str, Any] | None) -> requests.Response:
        return self.session.request(
            method, f"{self.url}/_sandbox/{path}", json=body,
            headers={"X-Sandbox-Key": self.key}, timeout=60,
        )  # fmt: skip

    def faults(self, spec: str) -> None:
        self("PUT", "faults", {"spec": spec})


@dataclass
class Deeds:
    """What the customers did: the grants the ledger must come to hold."""

    object_grants: dict[str, bool] = field(default_factory=dict)  # record Id → deleted
    # (connection, audit row Id) of new grants made in Setup: ids are each org's own.
    audit_grants: set[tuple[str, str]] = field(default_factory=set)
    actions: Counter[str] = field(default_factory=Counter)
    ends: dict[str, float] = field(default_factory=dict)  # record Id → its end (epoch s)
    never_extend: set[str] = field(default_factory=set)  # Login-As grants, customer revoked
    last_end: float | None = None  # when the last grant made to end soon ends (epoch seconds)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def live_object_grants(self) -> list[str]:
        with self.lock:
            return [rid for rid, deleted in self.object_grants.items() if not deleted]

    def extendable(self, now: float) -> list[str]:
        """Grants a customer may extend without racing firmgrant's revocation: open, not
        Login-As, more than 10 s from their end (an ended grant firmgrant may be revoking)."""
        with self.lock:
            return [rid for rid, deleted in self.object_grants.items() if not deleted
                    and rid not in self.never_extend and self.ends[rid] > now + 10]  # fmt: skip


class Customers(threading.Thread):
    """Customers granting, extending, revoking, deleting and using access, a few times a second.

    A third of the new grants are backdated so that they end within a minute: reminders,
    expiries and revocations happen during the run, not a week later.
    """

    def __init__(
        self, control: Control, tenants: list[str], seed: int, ends_within: float = 60
    ) -> None:
        super().__init__(name="customers", daemon=True)
        self.control, self.tenants = control, tenants
        self.ends_within = ends_within  # the latest end of a grant made to end soon (s)
        self.rng = random.Random(seed)
        self.deeds = Deeds()
        self.halt = threading.Event()
        self.failure: str | None = None  # why the customers stopped early, if they did

    def run(self) -> None:
        try:
            while not self.halt.wait(self.rng.uniform(0.05, 0.4)):
                self.act()
        except Exception as exc:  # reported as the scenario's problem, not a silent lull
            self.failure = f"the customers stopped acting: {exc!r}"

    def act(self) -> None:
        rng = self.rng
        live = self.deeds.live_object_grants()
        choices: list[tuple[str, float]] = [("grant", 4), ("login_as", 0.4), ("in_setup", 3)]
        if live:
            choices += [("extend", 1), ("revoke", 0.8), ("delete", 0.3)]
        action = rng.choices([c for c, _ in choices], [w for _, w in choices])[0]
        getattr(self, f"do_{action}")(live)
        with self.deeds.lock:
            self.deeds.actions[action] += 1

    def do_grant(self, live: list[str], login_as: str | None = None) -> None:
        duration = self.rng.choice(DURATIONS)
        body: dict[str, Any] = {"duration": duration, "login_as_user": login_as}
        if self.rng.random() < 0.35:  # ends within seconds
            length = {"1 Day": 1, "3 Days": 3, "1 Week": 7}[duration]
            ends_in = timedelta(seconds=self.rng.uniform(10, self.ends_within))
            body["at"] = _iso(datetime.now(UTC) - timedelta(days=length) + ends_in)
        record = self.control("POST", "grants", body)
        ends = datetime.fromisoformat(record["Expires_At__c"].replace("+0000", "+00:00"))
        with self.deeds.lock:
            self.deeds.object_grants[record["Id"]] = False
            self.deeds.ends[record["Id"]] = ends.timestamp()
            if "at" in body:
                self.deeds.last_end = max(self.deeds.last_end or 0, ends.timestamp())
            if login_as:
                self.deeds.never_extend.add(record["Id"])

    def do_login_as(self, live: list[str]) -> None:
        self.do_grant(live, login_as=f"admin@customer{self.rng.randint(1, 999)}.example")

    def do_extend(self, live: list[str]) -> None:
        open_ = self.deeds.extendable(time.time())
        if not open_:
            return
        record_id = self.rng.choice(open_)
        record = self.control("POST", f"grants/{record_id}/extend",
                              {"duration": self.rng.choice(DURATIONS)})  # fmt: skip
        ends = datetime.fromisoformat(record["Expires_At__c"].replace("+0000", "+00:00"))
        with self.deeds.lock:
            self.deeds.ends[record_id] = ends.timestamp()

    def do_revoke(self, live: list[str]) -> None:
        open_ = self.deeds.extendable(time.time())
        if not open_:
            return
        record_id = self.rng.choice(open_)
        self.control("POST", f"grants/{record_id}/revoke", {"reason": "chaos"})
        with self.deeds.lock:
            self.deeds.never_extend.add(record_id)

    def do_delete(self, live: list[str]) -> None:
        record_id = self.rng.choice(live)
        self.control("POST", f"grants/{record_id}/delete", {})
        with self.deeds.lock:
            self.deeds.object_grants[record_id] = True

    def do_in_setup(self, live: list[str]) -> None:
        """A customer org's admin in Setup: the audit trail's grants, changes, revocations."""
        rng = self.rng
        org = rng.choice(self.tenants)
        domain = f"customer{org}.example"  # tenants.py names them so
        user = f"user{rng.randint(1, 6)}@{domain}"
        verb = rng.choices(["grant", "change", "revoke", "use", "login_as"], [4, 1, 1, 1, 0.3])[0]
        body: dict[str, Any] = {"user": user, "days": rng.choice([1, 3, 7])}
        if verb == "login_as":
            verb, body["login_as"] = "grant", f"admin@{domain}"
        row = self.control("POST", f"tenants/{org}/{verb}", body)
        if verb == "grant":
            with self.deeds.lock:
                self.deeds.audit_grants.add((f"org{org}", row["Id"]))  # orgs import names


class Sandbox:
    """``firmgrant sandbox`` with a few customer orgs, in its own process."""

    def __init__(self, work: Path, tenants: int) -> None:
        self.state = work / "org"
        self.process = subprocess.Popen(
            [FIRMGRANT, "sandbox", "--state", str(self.state), "--customers", str(tenants),
             "--random-seed", "7"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        self.base_url = self.process.stdout.readline().strip()
        self.control = Control(self.state)
        self.tenants = [str(t["number"]) for t in self.control("GET", "tenants")]

    def env(self) -> dict[str, str]:
        return {
            **read_connection_env(self.state / "connection.env"),
            **read_connection_env(self.state / "registry.env"),
        }

    def stats(self) -> dict[str, Any]:
        return dict(self.control("GET", "stats"))

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


class Mail:
    """The customers' mail server (aiosmtpd in this process): it can go down and refuse."""

    def __init__(self) -> None:
        self.server = SmtpServer(free_port())
        self.server.start()

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def messages(self) -> list[Any]:
        with self.server.mailbox.lock:
            return list(self.server.mailbox.messages)

    def down(self) -> None:
        self.server.stop()

    def up(self) -> None:
        self.server.start()

    def refuse(self, answer: str | None) -> None:
        self.server.mailbox.refuse_all = answer

    def refuse_address(self, address: str, answer: str) -> None:
        self.server.mailbox.refusals[address] = [answer] * 100_000


def worker_env(sandbox: Sandbox, mail: Mail, database: str) -> dict[str, str]:
    """A worker's settings, from the environment as an operator sets them."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("FIRMGRANT_")}
    return {
        **env,
        **sandbox.env(),
        "FIRMGRANT_DATABASE_URL": database,
        "FIRMGRANT_POLL_SECONDS": "5",
        "FIRMGRANT_SYNC__API_FLOOR": "0",
        "FIRMGRANT_VENDOR__SUPPORT_EMAIL": SENDER,
        "FIRMGRANT_SUPPORT__EMAIL": SUPPORT_QUEUE,
        "FIRMGRANT_MAIL__BACKEND": "smtp",
        "FIRMGRANT_MAIL__SMTP_HOST": "127.0.0.1",
        "FIRMGRANT_MAIL__SMTP_PORT": str(mail.port),
        "FIRMGRANT_MAIL__SMTP_STARTTLS": "false",
        "FIRMGRANT_MAIL__SMTP_TIMEOUT_SECONDS": "5",
        "FIRMGRANT_MAIL__FROM": f"FirmWorks Support <{SENDER}>",
        # Short leases and backoffs: a killed worker's work is taken over within seconds.
        "FIRMGRANT_WORKER__LEASE_SECONDS": "10",
        "FIRMGRANT_WORKER__RETRY_FIRST_SECONDS": "1",
        "FIRMGRANT_WORKER__RETRY_MAX_SECONDS": "5",
        "FIRMGRANT_REGISTRY__LEASE_SECONDS": "10",
        "FIRMGRANT_REGISTRY__BACKOFF_MAX_SECONDS": "60",
    }


class Worker:
    """One ``firmgrant run`` process; its stderr goes to a log file kept for the traceback count."""

    def __init__(self, env: dict[str, str], log: Path, *argv: str) -> None:
        self.log = log
        with log.open("a") as stream:
            self.process = subprocess.Popen(
                [FIRMGRANT, "run", *argv], env=env, stdout=subprocess.DEVNULL, stderr=stream
            )

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def terminate(self, timeout: float = 120) -> int | None:
        """SIGTERM; the exit code, or None (and a kill) if it did not stop within ``timeout``."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None


def firmgrant(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FIRMGRANT, *argv], env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
