"""Benchmark: the dashboard's list page and ``/metrics`` over N synced grants (prints only).

The sandbox serves N grants; ``firmgrant sync`` fills a fresh ledger; ``firmgrant web`` serves
it on loopback as its own process, as a user runs it. One signed-in client asks each question
R times over one kept-alive connection (after a warm-up) and the latencies are printed as
p50 / p95 / max, measured from request sent to the last byte read.

    .venv/bin/python bench/web.py 100000
    .venv/bin/python bench/web.py 100000 --database postgresql://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import signal
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx2 as httpx
from _processes import FIRMGRANT, sandbox, scratch_ledger

from firmgrant.sandbox import read_connection_env

PASSWORD = secrets.token_urlsafe(24)  # the throw-away ledger's one account
PARTIAL = {"hx-request": "true", "hx-target": "results"}  # what htmx sends for live search
QUESTIONS: dict[str, tuple[str, dict[str, str]]] = {
    "list (usable, by expiry)": ("/", {}),
    "list page 50": ("/?page=50", {}),
    "search 'acme'": ("/?q=acme", {}),
    "search an org id prefix": ("/?q=00D", {}),
    "sorted by org, descending": ("/?sort=org&dir=desc", {}),
    "all statuses": ("/?status=all", {}),
    "ending within 1 day": ("/?within=1d", {}),
    "live search (htmx partial)": ("/?q=ac", PARTIAL),
    "/metrics": ("/metrics", {}),
}


@contextmanager
def web(env: dict[str, str]) -> Iterator[str]:
    """``firmgrant web --port 0``: its URL while it serves, SIGTERM afterwards."""
    process = subprocess.Popen(
        [FIRMGRANT, "web", "--port", "0"], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        if not url.startswith("http"):
            raise SystemExit(f"firmgrant web did not start: {url!r}")
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait()


def signed_in(url: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=60)
    for _ in range(100):  # the URL is printed just before uvicorn listens
        try:
            form = client.get("/sign-in").text
            break
        except httpx.ConnectError:
            time.sleep(0.05)
    match = re.search(r'name="csrf" value="([^"]+)"', form)
    assert match, "no CSRF token on the sign-in page"
    answer = client.post(
        "/sign-in", data={"name": "bench", "password": PASSWORD, "csrf": match[1], "next": "/"}
    )
    if answer.status_code != 303:
        raise SystemExit(f"sign-in refused: {answer.status_code}")
    return client


def timings(client: httpx.Client, path: str, headers: dict[str, str], rounds: int) -> list[float]:
    found = []
    for _ in range(3):
        client.get(path, headers=headers).raise_for_status()
    for _ in range(rounds):
        started = time.perf_counter()
        client.get(path, headers=headers).raise_for_status()
        found.append((time.perf_counter() - started) * 1000)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grants", type=int, nargs="?", default=100_000)
    parser.add_argument("--rounds", type=int, default=60, help="requests per question")
    parser.add_argument("--database", help="a PostgreSQL URL (default: a fresh SQLite file)")
    args = parser.parse_args()

    with (
        scratch_ledger("firmgrant-bench-web-", args.database) as (work, database),
        sandbox(work / "org", "--seed", str(args.grants), "--random-seed", "1"),
    ):
        env = {
            **os.environ,
            **read_connection_env(work / "org" / "connection.env"),
            "FIRMGRANT_DATABASE_URL": database,
            "FIRMGRANT_LOG_LEVEL": "WARNING",
            "FIRMGRANT_WEB__SESSION_SECRET": os.urandom(24).hex(),
        }
        env.pop("PORT", None)
        for argv in (["db", "upgrade"], ["sync"]):
            subprocess.run([FIRMGRANT, *argv], env=env, check=True, capture_output=True)
        subprocess.run(
            [FIRMGRANT, "users", "add", "bench", "--role", "admin", "--password-stdin"],
            env=env, input=PASSWORD + "\n", text=True, check=True, capture_output=True,
        )  # fmt: skip
        with web(env) as url:
            client = signed_in(url)
            results = {
                name: timings(client, path, headers, args.rounds)
                for name, (path, headers) in QUESTIONS.items()
            }
            client.close()
    ledger = "PostgreSQL" if args.database else "SQLite"
    print(f"firmgrant web over {args.grants:,} grants ({ledger}), {args.rounds} requests each")
    print(f"{'question':<30} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for name, found in results.items():
        p95 = statistics.quantiles(found, n=20)[-1]
        print(f"{name:<30} {statistics.median(found):8.1f} {p95:8.1f} {max(found):8.1f}")


if __name__ == "__main__":
    main()
