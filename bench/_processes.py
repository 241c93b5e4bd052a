"""What the benchmarks share: firmgrant as a measured child process, a scratch PostgreSQL schema."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FIRMGRANT = str(Path(sys.executable).with_name("firmgrant"))


def _tree(pid: int) -> list[int]:
    """The process and its descendants (export and verify fork workers)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        queue.extend(int(child) for child in children)
    return found


def _peak_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next(
        (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0
    )


def measure(
    env: dict[str, str], *argv: str, ok: tuple[int, ...] = (0,)
) -> tuple[str, float, float]:
    """One ``firmgrant`` process: its stdout, wall seconds, peak RSS in MiB (stderr passes).

    The RSS is the largest high-water mark (``VmHWM``) of the process or any worker it
    forks, sampled every 20 ms. (``wait4``'s ``ru_maxrss`` would do for one process, but
    Linux carries the high-water mark of the forking parent, this benchmark with its
    freshly built ledger, across ``exec`` into the child.)
    """
    started = time.perf_counter()
    child = subprocess.Popen([FIRMGRANT, *argv], env=env, stdout=subprocess.PIPE, text=True)
    peaks: dict[int, int] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            for pid in _tree(child.pid):
                peaks[pid] = max(peaks.get(pid, 0), _peak_kib(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    assert child.stdout is not None
    output = child.stdout.read()
    code = child.wait()
    done.set()
    sampler.join()
    wall = time.perf_counter() - started
    if code not in ok:
        sys.exit(f"firmgrant {' '.join(argv)} failed with {code}: {output.strip()[-300:]}")
    return output, wall, max(peaks.values(), default=0) / 1024


@contextmanager
def scratch_ledger(prefix: str, postgres: str | None) -> Iterator[tuple[Path, str]]:
    """A scratch directory and a ledger URL in it (SQLite) or in a fresh schema on
    ``postgres``; both gone afterwards."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    database, schema = f"sqlite:///{work / 'ledger.db'}", None
    if postgres:
        database, schema = postgres_schema(postgres)
    try:
        yield work, database
    finally:
        if postgres and schema:
            drop_schema(postgres, schema)
        shutil.rmtree(work, ignore_errors=True)


def postgres_schema(url: str) -> tuple[str, str]:
    """A fresh schema on that server, and a URL whose connections use it."""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    subprocess.run(["psql", url, "-qc", f"CREATE SCHEMA {schema}"], check=True)
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}", schema


def drop_schema(url: str, schema: str) -> None:
    subprocess.run(
        ["psql", url, "-qc", f"DROP SCHEMA {schema} CASCADE"], check=False, capture_output=True
    )


@contextmanager
def sandbox(state: Path, *argv: str) -> Iterator[str]:
    """``firmgrant sandbox --state STATE ARGV…`` as its own process: its base URL while it
    serves; stopped with SIGTERM afterwards."""
    import signal

    process = subprocess.Popen(
        [FIRMGRANT, "sandbox", "--state", str(state), *argv], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        yield process.stdout.readline().strip()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait()
