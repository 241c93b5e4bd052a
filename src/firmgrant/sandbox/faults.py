"""Faults on demand, each what Salesforce really sends; deterministic under a random seed.

SPEC is comma-separated ``key=value``:

    expire-every=K      every K-th API call finds the session expired (401 INVALID_SESSION_ID)
    503-rate=P          a share P of API calls answer 503 SERVER_UNAVAILABLE
    slow-rate=P         a share P of API calls are delayed by slow-seconds
    slow-seconds=S      the delay (make it longer than the client's timeout for timeouts)
    daily-limit=N       the org's 24-hour API allocation (403 REQUEST_LIMIT_EXCEEDED past it)
    fail-records=ID+ID  these records fail in sObject Collections (UNABLE_TO_LOCK_ROW)
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass, field, replace

DEFAULT_DAILY_LIMIT = 100_000


@dataclass(frozen=True)
class FaultPlan:
    expire_every: int = 0
    rate_503: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 0.0
    daily_limit: int = DEFAULT_DAILY_LIMIT
    fail_records: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, spec: str | None) -> FaultPlan:
        plan = cls()
        for item in filter(None, (part.strip() for part in (spec or "").split(","))):
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"fault {item!r} needs a value (key=value)")
            try:
                plan = _SETTERS[key](plan, value)
            except KeyError:
                known = ", ".join(sorted(_SETTERS))
                raise ValueError(f"unknown fault {key!r} (known: {known})") from None
            except ValueError as exc:
                raise ValueError(f"fault {key}: {exc}") from None
        return plan


def _rate(value: str) -> float:
    rate = float(value)
    if not 0 <= rate <= 1:
        raise ValueError("a rate is between 0 and 1")
    return rate


def _count(value: str) -> int:
    count = int(value)
    if count < 0:
        raise ValueError("must not be negative")
    return count


_SETTERS = {
    "expire-every": lambda p, v: replace(p, expire_every=_count(v)),
    "503-rate": lambda p, v: replace(p, rate_503=_rate(v)),
    "slow-rate": lambda p, v: replace(p, slow_rate=_rate(v)),
    "slow-seconds": lambda p, v: replace(p, slow_seconds=float(v)),
    "daily-limit": lambda p, v: replace(p, daily_limit=_count(v)),
    "fail-records": lambda p, v: replace(p, fail_records=frozenset(filter(None, v.split("+")))),
}


class FaultInjector:
    """Decides, per API call in arrival order, which fault (if any) it meets."""

    def __init__(self, plan: FaultPlan, seed: int | None = None) -> None:
        self.plan = plan
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._calls = 0
        self._once: list[str] = []
        self.injected: Counter[str] = Counter()  # faults met so far, by kind

    def inject_next(self, kind: str, count: int = 1) -> None:
        """Make the next ``count`` API calls meet ``kind``: 503, expired, slow or limit."""
        if kind not in ("503", "expired", "slow", "limit"):
            raise ValueError(f"unknown one-shot fault {kind!r}")
        with self._lock:
            self._once.extend([kind] * count)

    def next_call(self) -> str | None:
        with self._lock:
            fault = self._draw()
            if fault is not None:
                self.injected[fault] += 1
            return fault

    def _draw(self) -> str | None:
        self._calls += 1
        if self._once:
            return self._once.pop(0)
        plan = self.plan
        # Draw every rate on every call so one fault's setting does not shift another's.
        draw_503, draw_slow = self._rng.random(), self._rng.random()
        if plan.expire_every and self._calls % plan.expire_every == 0:
            return "expired"
        if draw_503 < plan.rate_503:
            return "503"
        if draw_slow < plan.slow_rate:
            return "slow"
        return None
