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
from firmgrant.grant import GrantRecord
from firmgrant.ledger import Ledger, PageCounts, SyncOutcome, SyncState
from firmgrant.ledger.episodes import known_org_name, known_uses, latest_by_grantor
from firmgrant.lifecycle import SourceKind
from firmgrant.salesforce.audit import AuditSource, fold
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
        for optional in ("error", "error_kind"):
            if data[optional] is None:
                del data[optional]
        return data

    def summary(self) -> str:
        keys = ("fetched", "inserted", "updated", "deleted", "invalid", "rejected", "api_calls")
        parts = " ".join(f"{key}={getattr(self, key)}" for key in keys)
        if self.used or self.violations:  # the audit source's uses of access
            parts += f" used={self.used} violations={self.violations}"
        outcome = f" error={self.error_kind}" if self.error else ""
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


def _mirror_audit(
    ledger: Ledger,
    name: str,
    source: AuditSource,
    client: SalesforceClient,
    since: datetime | None,
    counts: PageCounts,
    result: SyncResult,
    clock: Clock,
    stop: Callable[[], bool],
    cap: timedelta,
    fetched: Callable[[int], None],
) -> tuple[int, bool]:
    """Fold each page of audit rows into grants and write them (never "vanished": rows that
    aged out of the trail say nothing about the grants they made)."""
    mirrored, org_name, asked = 0, None, False
    for page in source.pages(client, since):
        if stop():
            log.info("%s: sync stopped early on request", name)
            return mirrored, True
        result.fetched += len(page.grants) + len(page.uses) + len(page.invalid)
        fetched(len(page.grants) + len(page.uses) + len(page.invalid))
        mirrored += len(page.grants) + len(page.uses)
        records: list[GrantRecord] = []
        current: dict[str, GrantRecord] = {}
        known: set[str] = set()
        if page.grants or page.uses:
            with ledger.sessions() as session:
                users = [row.user_id for row, _ in page.grants]
                current = latest_by_grantor(session, name, users)
                if page.grants:
                    org_name = org_name or known_org_name(session, name)
                known = known_uses(session, name, [use.row_id for use in page.uses])
        if page.grants:
            # The name is asked once on a first or full sync (it may have changed), or when
            # a grant needs it and the ledger has none: an idle sync stays one call.
            if not asked and (since is None or org_name is None):
                org_name, asked = source.org_name(client) or org_name, True
            records = fold(
                page.grants,
                current,
                org_id=client.org_id or name,
                org_name=org_name,
                zone=source.settings.time_zone,
            )
        if not (page.invalid or _later(page.newest, since, source)) and (
            all(current.get(r.grantor_id or "") == r for r in records)
            and all(use.row_id in known for use in page.uses)
        ):
            continue  # rows already mirrored (the overlap), or none: nothing to write
        written = ledger.apply_page(
            name,
            source.kind,
            records,
            page.invalid,
            now=clock(),
            uses=page.uses,
            cap=cap,
            newest=page.newest,
        )
        for problem in written.new_invalid:
            log.warning("%s: skipped audit row %s: %s", name, problem.key, problem.reason)
        log.debug("%s: a page of %d audit rows written", name, len(page.grants) + len(page.uses))
        counts += written
    return mirrored, False


def _later(newest: datetime | None, since: datetime | None, source: AuditSource) -> bool:
    """Whether a page's newest row may move the watermark (past the overlap it re-read)."""
    if newest is None:
        return False
    overlap = timedelta(seconds=source.settings.overlap_seconds)
    return since is None or newest > since + overlap


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
            mirrored, stopped = _mirror_audit(
                ledger, name, source, client, since, counts, result, clock, stop, cap, fetched
            )
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
    result.outcome = SyncOutcome(
        name,
        source.kind,
        at=clock(),
        error=result.error,
        # A sync from no watermark read everything too; a stopped one did not.
        full=(full or since is None) and not stopped,
        api_usage=(usage.used, usage.limit, usage.seen_at) if usage else None,
    )
    if record:
        ledger.record_sync_outcome(result.outcome)
    result.seconds = time.perf_counter() - started
    log.info(result.summary())
    return result


__all__ = ["NOTHING_MIRRORED", "SyncResult", "sync_connection"]
