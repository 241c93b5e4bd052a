"""The chaos harness's attacks on firmgrant, one function per scenario; each returns how many
attacks it made and notes in ``stage.problems`` what it saw go wrong while attacking."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from _chaos_world import Customers, Mail, Sandbox, Worker


class Unable(Exception):
    """This machine cannot make the attack (no root for a mount, no pg_ctlcluster): a failure."""


@dataclass
class Stage:
    work: Path
    logs: Path
    sandbox: Sandbox
    mail: Mail
    rng: random.Random
    database: str
    env: dict[str, str]
    customers: Customers | None = None
    problems: list[str] = field(default_factory=list)
    undo: list[Callable[[], None]] = field(default_factory=list)  # run by restore()
    cleanup: list[Callable[[], None]] = field(default_factory=list)  # run by close()

    def worker(self, log: str) -> Worker:
        return Worker(self.env, self.logs / log)

    def pause(self, low: float, high: float) -> None:
        time.sleep(self.rng.uniform(low, high))  # a random instant to attack at

    def restore(self) -> None:
        """Undo what the attack did to the machine (mounts, fillers, a stopped server)."""
        while self.undo:
            self.undo.pop()()

    def close(self) -> None:
        """After the measurement: unmount what prepare_ledger mounted."""
        while self.cleanup:
            self.cleanup.pop()()

    def stop(self, worker: Worker, what: str) -> None:
        """SIGTERM, as an orchestrator stops a worker: it must exit 0."""
        code = worker.terminate()
        if code == -signal.SIGTERM:
            return  # still starting: the signal's default action ended it before any work
        if code is None:
            self.problems.append(f"{what}: still running 120 s after SIGTERM (killed)")
        elif code != 0:
            self.problems.append(f"{what}: exited {code} on SIGTERM")


def prepare_ledger(stage: Stage, scenario: str) -> str:
    """The ledger URL: for disk-full, a SQLite file on a small file system of its own."""
    if scenario != "disk-full":
        return stage.database
    disk = stage.work / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(disk)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        raise SystemExit(f"disk-full needs to mount a tmpfs (root): {mounted.stderr.strip()}")
    stage.cleanup.append(lambda: _unmount(disk))
    return f"sqlite:///{disk / 'ledger.db'}"


def _unmount(disk: Path) -> None:
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _exited(worker: Worker, seconds: float) -> int | None:
    try:
        return worker.process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return None


def kill9(stage: Stage, kills: int) -> int:
    """One worker, killed -9 at a random instant (mostly mid-cycle: a cycle starts at start-up)."""
    for _ in range(kills):
        worker = stage.worker("kill9.log")
        code = _exited(worker, stage.rng.uniform(0.5, 5.0))
        if code is not None:
            stage.problems.append(f"the worker exited by itself ({code}) before its kill")
        worker.kill()
    return kills


def replicas(stage: Stage, count: int, kills: int) -> int:
    """``count`` workers on PostgreSQL; one at random killed -9 and restarted, ``kills`` times."""
    workers = [stage.worker(f"replica{i}.log") for i in range(count)]
    ends = time.monotonic() + 20  # at least 20 s of replicas working side by side
    for _ in range(kills):
        stage.pause(0.5, 3.0)
        victim = stage.rng.randrange(count)
        workers[victim].kill()
        workers[victim] = stage.worker(f"replica{victim}.log")
    time.sleep(max(0.0, ends - time.monotonic()))
    for index, worker in enumerate(workers):
        if not worker.alive():
            stage.problems.append(f"replica {index} died ({worker.process.returncode})")
        stage.stop(worker, f"replica {index}")
    return kills


def _pg_ctl(action: str) -> None:
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not versions or not shutil.which("pg_ctlcluster"):
        raise Unable("postgres-down needs the local cluster and pg_ctlcluster")
    command = ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main"]
    if (
        action == "start"
        and subprocess.run([*command, "status"], capture_output=True).returncode == 0
    ):
        return  # running already (restore after an attack that failed before its stop)
    done = subprocess.run([*command, action], capture_output=True, text=True)
    if done.returncode != 0:
        raise Unable(f"pg_ctlcluster {action}: {(done.stdout + done.stderr).strip()}")


def postgres_down(stage: Stage) -> int:
    """Two replicas; PostgreSQL restarted mid-cycle, then stopped for 30 s and started."""
    workers = [stage.worker(f"replica{i}.log") for i in range(2)]
    stage.undo.append(lambda: _pg_ctl("start"))
    stage.pause(2, 5)
    _pg_ctl("restart")
    stage.pause(5, 10)
    _pg_ctl("stop")
    time.sleep(30)
    _pg_ctl("start")
    time.sleep(15)  # the replicas catch up by themselves
    for index, worker in enumerate(workers):
        if not worker.alive():
            stage.problems.append(f"replica {index} died ({worker.process.returncode})")
        stage.stop(worker, f"replica {index}")
    logged = "".join(p.read_text() for p in stage.logs.glob("replica*.log"))
    if "cycle failed" not in logged:
        stage.problems.append("no cycle met the outage (no 'cycle failed' in the logs)")
    return 2


def smtp(stage: Stage, short: bool) -> int:
    """The mail server down, then refusing everything with 451, then one address with 550."""
    phase = 10 if short else 25
    worker = stage.worker("smtp.log")
    time.sleep(phase)
    stage.mail.down()
    stage.undo.append(stage.mail.up)
    time.sleep(phase)
    stage.undo.pop()()
    stage.mail.refuse("451 4.3.0 Try again later")
    time.sleep(phase)
    stage.mail.refuse(None)
    refused = f"user1@customer{stage.sandbox.tenants[0]}.example"
    stage.mail.refuse_address(refused, "550 5.1.1 No such user here")
    time.sleep(phase)
    stage.stop(worker, "worker")
    logged = (stage.logs / "smtp.log").read_text()
    if not re.search(r"dispatch: .*failed=[1-9]", logged):
        stage.problems.append("no dispatch met the outage (no failed emails logged)")
    return 3


def disk_full(stage: Stage) -> int:
    """The SQLite ledger's file system filled up while the worker runs, later freed."""
    disk = Path(stage.database.removeprefix("sqlite:///")).parent
    worker = stage.worker("disk.log")
    time.sleep(8)
    filler = disk / "filler"
    with filler.open("wb") as stream:  # until ENOSPC: nothing left for the ledger
        try:
            while True:
                stream.write(b"\0" * (1 << 20))
                stream.flush()
        except OSError:
            pass
    stage.undo.append(lambda: filler.unlink(missing_ok=True))
    kills = 0
    for _ in range(2):  # a full disk across restarts too
        time.sleep(8)
        worker.kill()
        kills += 1
        worker = stage.worker("disk.log")
    time.sleep(8)
    filler.unlink()
    time.sleep(12)
    stage.stop(worker, "worker")
    if not re.search(r"disk is full|No space left", (stage.logs / "disk.log").read_text()):
        stage.problems.append("the ledger never met the full disk (not in the log)")
    return 1 + kills


# Each job, and the log line of the step before it: SIGTERM when that line appears.
JOBS = (
    ("poll", r"a cycle every"),
    ("mirror", r"poll: \d+ orgs"),
    ("enforce", r"sync sandbox"),
    ("remind", r"enforce: "),
    ("notices", r"remind: "),
    ("revoke", r"notices: "),
    ("dispatch", r"revoke: "),
)


def _wait_for(log: Path, offset: int, pattern: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, log.read_text()[offset:]):
            return True
        time.sleep(0.02)  # reading a log from outside the process
    return False


def sigterm(stage: Stage) -> int:
    """For each job, twice: SIGTERM the moment it starts; the worker must exit 0."""
    log = stage.logs / "sigterm.log"
    log.touch()
    signals = 0
    for job, before in JOBS:
        for _ in range(2):
            offset = len(log.read_text())
            worker = stage.worker("sigterm.log")
            if not _wait_for(log, offset, before, 90):
                stage.problems.append(f"{job}: never started within 90 s")
                worker.kill()
                continue
            stage.stop(worker, f"SIGTERM in {job}")
            signals += 1
            if "then stopping" not in log.read_text()[offset:]:
                stage.problems.append(f"{job}: no graceful stop logged")
    return signals


def keep_logs(logs: Path, kept: Path) -> None:
    shutil.rmtree(kept, ignore_errors=True)
    shutil.copytree(logs, kept)
