"""Backoff for transient failures, shared by the token request and REST calls."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import requests
import stamina
from simple_salesforce.exceptions import SalesforceGeneralError

from firmgrant.errors import SalesforceUnavailable
from firmgrant.settings import SyncSettings

T = TypeVar("T")
log = logging.getLogger("firmgrant.salesforce")


class TransientHTTPError(Exception):
    """A 5xx answer worth trying again (raised by our own calls, e.g. the token request)."""

    def __init__(self, status: int, what: str) -> None:
        super().__init__(f"{what}: HTTP {status}")
        self.status = status


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, requests.Timeout | requests.ConnectionError | TransientHTTPError):
        return True
    # simple-salesforce raises SalesforceGeneralError for any status it has no class for
    return isinstance(exc, SalesforceGeneralError) and exc.status >= 500


def with_backoff(what: str, connection: str, policy: SyncSettings, fn: Callable[[], T]) -> T:
    """Run ``fn``, retrying transient failures with exponential backoff and jitter.

    stamina.set_testing(True) turns the waits off in tests.
    """
    try:
        for attempt in stamina.retry_context(
            on=is_transient,
            attempts=policy.retry_attempts,
            timeout=policy.retry_timeout_seconds,
            wait_initial=0.5,
            wait_max=30.0,
        ):
            with attempt:
                if attempt.num > 1:
                    log.warning("%s: retrying %s (attempt %d)", connection, what, attempt.num)
                return fn()
    except Exception as exc:
        if is_transient(exc):
            raise SalesforceUnavailable(
                f"{what} still failing after {policy.retry_attempts} attempts: {_summary(exc)}",
                connection=connection,
            ) from exc
        raise
    raise AssertionError("unreachable: retry_context always runs at least once")


def _summary(exc: Exception) -> str:
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        return "could not connect"
    status = getattr(exc, "status", None)
    return f"HTTP {status}" if status else type(exc).__name__
