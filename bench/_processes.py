"""What the benchmarks share: firmgrant as a measured child process, a scratch PostgreSQL schema."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

FIRMGRANT = str(Path(sys.executable).with_name("firmgrant"))


def measure(
    env: dict[str, str], *argv: str, ok: tuple[int, ...] = (0,)
) -> tuple[str, float, float]:
    """One ``firmgrant`` process: its stdout, wall seconds, peak RSS in MiB (stderr passes).

    The RSS is the kernel's accounting for that one child (``os.wait4``).
    """
    started = time.perf_counter()
    child = subprocess.Popen([FIRMGRANT, *argv], env=env, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if code not in ok:
        sys.exit(f"firmgrant {' '.join(argv)} failed with {code}: {output.strip()[-300:]}")
    return output, wall, usage.ru_maxrss / 1024


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
