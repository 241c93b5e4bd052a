"""The sync job: incremental (or full) mirror of one connection's grants into the ledger."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from firmgrant._collector import collector_per_batch
from firmgrant.errors import ApiLimitExceeded, SalesforceError
from firmgrant.jobs.sync_audit import mirror_audit
from firmgrant.ledger import Ledger, PageCounts, SyncOutcome, SyncState
from firmgrant.lifecycle import SourceKind
from firmgrant.salesforce.audit import AuditSource
from firmgrant.salesforce.client import ApiUsage, SalesforceClient
from firmgrant.salesforce.sources import ObjectSource
from firmgrant.settings import ConnectionSettings, PolicySettings, SyncSettings, VendorSettings
from firmgrant.timeutil import Clock, utcnow

log = logging.getLogger("firmgrant.jobs.sync")
DEFAULT_CAP = PolicySettings().max_duration
# A sync that fetched records, reported some newly invalid and could mirror none of them:
# a non-conforming endpoint or a changed format. It must not look like success to cron.
NOTHING_MIRRORED = "nothing_mirrored"


@dataclass
class SyncResult:
    connection: str
    full: bool
    fetched: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    invalid: int = 0
    rejected: int = 0
    used: int = 0  # audit source: support's uses of Login-As access under a valid grant
    violations: int = 0  # and uses with no valid grant at that moment
    api_calls: int = 0
    seconds: float = 0.0
    error: str | None = None
    error_kind: str | None = None
    # audit source: the first trail row that cannot be read (its Id, why and its text),
    # while any can not: the org is ``unreadable`` until a full read finds none.
    unreadable: str | None = None
    # What the ledger's sync state is told: written by sync_connection, or by its caller
    # together with others' (``record=False``).
    outcome: SyncOutcome | None = field(default=None, repr=False, compare=False)

    @property
    def exit_code(self) -> int:
        """0 mirrored, 1 records came and none could be mirrored, 3 Salesforce unreachable."""
        if self.error_kind == NOTHING_MIRRORED:
            return 1
        return 3 if self.error else 0

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["outcome"]
        data["seconds"] = round(self.seconds, 3)
        for optional in ("error", "error_kind", "unreadable"):
            if data[optional] is None:
                del data[optional]
        return data

    def summary(self) -> str:
        keys = ("fetched", "inserted", "updated", "deleted", "invalid", "rejected", "api_calls")
        parts = " ".join(f"{key}={getattr(self, key)}" for key in keys)
        if self.used or self.violations:  # the audit source's uses of access
            parts += f" used={self.used} violations={self.violations}"
        outcome = f" error={self.error_kind}" if self.error else ""
        if self.unreadable:
            outcome += " unreadable=yes"
        return f"sync {self.connection}{' full' if self.full else ''}: {parts} " + (
            f"seconds={self.seconds:.2f}{outcome}"
        )


def _known_usage(state: SyncState, policy: SyncSettings, clock: Clock) -> ApiUsage | None:
    """The org's API usage from the last sync, if recent enough to trust for the floor."""
    if state.api_used is None or state.api_limit is None or state.api_seen_at is None:
        return None
    if clock() - state.api_seen_at > timedelta(seconds=policy.api_floor_recheck_seconds):
        return None  # the org's 24-hour window has moved on; spend a call to find out
    return ApiUsage(state.api_used, state.api_limit, state.api_seen_at)


def _mirror(
    ledger: Ledger,
    name: str,
    source: ObjectSource,
    client: SalesforceClient,
    since: datetime | None,
    seen_run: int | None,
    counts: PageCounts,
    result: SyncResult,
    clock: Clock,
    stop: Callable[[], bool],
    fetched: Callable[[int], None],
) -> tuple[int, bool]:
    """Write the source's pages as they come: (valid records read, stopped on request)."""
    mirrored = 0
    with collector_per_batch() as collect_page_garbage:
        for records, invalid in source.pages(client, since):
            if stop():  # the watermark is per page: the next sync goes on from here
                log.info("%s: sync stopped early on request", name)
                return mirrored, True  # an unfinished full sync must not call the rest vanished
            result.fetched += len(records) + len(invalid)
            fetched(len(records) + len(invalid))
            mirrored += len(records)
            page = ledger.apply_page(
                name, source.kind, records, invalid, now=clock(), seen_run=seen_run
            )
            for problem in page.new_invalid:  # re-reads of a known bad record stay quiet
                log.warning("%s: skipped record %s: %s", name, problem.key, problem.reason)
            counts += page
            collect_page_garbage()
    if seen_run is not None:
        counts.deleted += ledger.mark_vanished(name, seen_run, clock())
    return mirrored, False


def sync_connection(
    ledger: Ledger,
    name: str,
    settings: ConnectionSettings,
    vendor: VendorSettings,
    policy: SyncSettings,
    *,
    full: bool = False,
    client: SalesforceClient | None = None,
    clock: Clock = utcnow,
    stop: Callable[[], bool] = lambda: False,
    cap: timedelta = DEFAULT_CAP,
    state: SyncState | None = None,
    record: bool = True,
    fetched: Callable[[int], None] = lambda records: None,
) -> SyncResult:
    """Mirror one connection's grants. Errors are recorded and returned, not raised.

    ``state`` is the connection's sync state if the caller read it already; with
    ``record=False`` the outcome is left in ``result.outcome`` for the caller to write.
    ``fetched`` hears of each page's records as they come (a progress display).
    """
    started = time.perf_counter()
    result = SyncResult(connection=name, full=full)
    source: ObjectSource | AuditSource = (
        AuditSource(settings.source, vendor)
        if settings.source.kind == SourceKind.AUDIT
        else ObjectSource(settings.source, vendor)
    )
    if state is None:
        state = ledger.sync_state(name, source.kind)
    if client is None:
        client = SalesforceClient(name, settings, policy, usage=_known_usage(state, policy, clock))
    since = None
    if not full and state.watermark is not None:
        since = state.watermark - timedelta(seconds=settings.source.overlap_seconds)
    # A full sync of the object source finds what vanished; the audit trail forgets by design.
    seen_run = (
        int(clock().timestamp() * 1000) if full and isinstance(source, ObjectSource) else None
    )
    calls_before = client.api_calls
    counts, mirrored, stopped = PageCounts(), 0, False
    try:
        if isinstance(source, AuditSource):
            mirrored, stopped = mirror_audit(
                ledger, name, source, client, since, counts, result,
                full=full, clock=clock, stop=stop, cap=cap, fetched=fetched,
            )  # fmt: skip
        else:
            mirrored, stopped = _mirror(
                ledger, name, source, client, since, seen_run, counts, result, clock, stop, fetched
            )
    except SalesforceError as exc:
        result.error = str(exc)
        result.error_kind = "api_limit" if isinstance(exc, ApiLimitExceeded) else type(exc).__name__
        log.error("%s: sync stopped: %s", name, exc)
    if result.error is None and counts.invalid and not mirrored:
        first = counts.new_invalid[0]
        result.error = (
            f"fetched {result.fetched} records and could mirror none: every one is invalid "
            f"(record {first.key}: {first.reason})"
        )
        result.error_kind = NOTHING_MIRRORED
        log.error("%s: %s", name, result.error)
    result.inserted, result.updated = counts.inserted, counts.updated
    result.deleted, result.invalid = counts.deleted, counts.invalid
    result.rejected = counts.rejected
    result.used, result.violations = counts.used, counts.violations
    result.api_calls = client.api_calls - calls_before
    usage = client.usage
    # A sync from no watermark read everything too; a stopped one did not.
    read_all = (full or since is None) and not stopped and result.error is None
    if result.unreadable is None and not read_all:
        result.unreadable = state.unreadable  # rows behind the watermark are still unread
    result.outcome = SyncOutcome(
        name,
        source.kind,
        at=clock(),
        error=result.error,
        full=(full or since is None) and not stopped,
        api_usage=(usage.used, usage.limit, usage.seen_at) if usage else None,
        unreadable=result.unreadable,
    )
    if record:
        ledger.record_sync_outcome(result.outcome)
    result.seconds = time.perf_counter() - started
    log.info(result.summary())
    return result


__all__ = ["NOTHING_MIRRORED", "SyncResult", "sync_connection"]
