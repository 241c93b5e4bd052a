"""``firmgrant run``: the cycle (sync, enforce, remind, revoke, dispatch) and its scheduler.

One APScheduler 3.x ``BackgroundScheduler`` runs the cycle every ``poll_seconds`` on a single
worker thread (cycles never overlap; a late one is coalesced, not queued) while the main
thread waits for a stop. SIGTERM/SIGINT ask the cycle to stop after the item in hand (a
page, a batch of 200 revocations, one email) and the process exits 0.

Replicas on PostgreSQL: the planning half of a cycle (sync, enforce, remind) runs under a
session advisory lock, so one replica at a time plans while the others skip it; revocations
and emails are leased row by row (``FOR UPDATE SKIP LOCKED``), so all replicas work them.
SQLite allows one worker: a second one finds the lock file taken and refuses to start.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

from firmgrant._progress import SyncProgress, sync_progress, work_progress
from firmgrant.errors import LedgerError
from firmgrant.jobs.dispatch import DispatchResult, dispatch
from firmgrant.jobs.enforce import EnforceResult, enforce
from firmgrant.jobs.notices import NoticeResult, plan_notices
from firmgrant.jobs.poll import Clients, poll
from firmgrant.jobs.remind import RemindResult, remind
from firmgrant.jobs.revoke import RevokeResult, revoke
from firmgrant.jobs.sync import SyncResult, sync_connection
from firmgrant.ledger import Ledger, SyncState, emails, registry, revocations
from firmgrant.ledger.work import worker_name
from firmgrant.notify.render import environment
from firmgrant.notify.send import Backend, make_backend
from firmgrant.notify.webhook import WebhookBackend
from firmgrant.orgs import with_orgs
from firmgrant.salesforce.client import SalesforceClient
from firmgrant.settings import Settings
from firmgrant.timeutil import Clock, utcnow

log = logging.getLogger("firmgrant.worker")


@dataclass
class CycleResult:
    planned: bool = True  # False: another replica held the planning lock
    # When this worker held the planning lock (wall clock): replicas plan one at a time.
    planning: tuple[datetime, datetime] | None = None
    syncs: list[SyncResult] = field(default_factory=list)
    enforce: EnforceResult | None = None
    remind: RemindResult | None = None
    notices: NoticeResult | None = None
    revokes: list[RevokeResult] = field(default_factory=list)
    dispatch: DispatchResult | None = None
    seconds: float = 0.0
    # Registry orgs this worker synced, counted by the state their sync left them in.
    org_states: Counter[str] = field(default_factory=Counter)

    @property
    def api_calls(self) -> int:
        return sum(s.api_calls for s in self.syncs) + sum(r.api_calls for r in self.revokes)

    @property
    def exit_code(self) -> int:
        """``run --once``'s: the worst sync's (see SyncResult), 3 if revoking failed."""
        worst = max((s.exit_code for s in self.syncs), default=0)
        return 3 if any(r.error for r in self.revokes) else worst


class Worker:
    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        *,
        clock: Clock = utcnow,
        backend: Backend | None = None,
        clients: dict[str, SalesforceClient] | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.clock = clock
        self.owner = worker_name()
        self.stopping = threading.Event()
        self.templates = environment(settings.mail.templates_dir)
        self._backend = backend
        self.clients = Clients(connections=settings.registry.pool)
        for name, client in (clients or {}).items():
            self.clients.put(name, client)

    def client(self, name: str, settings: Settings | None = None) -> SalesforceClient:
        """A client per connection, kept across cycles so tokens are reused."""
        return self.clients.get(settings or self.settings, name)

    def current_settings(self) -> Settings:
        """The settings with the registry's orgs as connections, as they are now."""
        with self.ledger.sessions() as session:
            rows = registry.every(session)
        return with_orgs(self.settings, rows) if rows else self.settings

    def stop(self) -> None:
        self.stopping.set()

    # -- one cycle ---------------------------------------------------------------------------
    def cycle(self) -> CycleResult:
        """Poll the registry's due orgs; then, if this worker holds the planning lock, sync
        the settings' connections and plan (enforce, remind, notices); revoke; send."""
        started = time.perf_counter()
        result = CycleResult()
        stop = self.stopping.is_set
        settings = self.current_settings()
        with sync_progress(self._orgs_due()) as progress:
            self._poll(settings, result, progress)
            with self.ledger.planning_lock() as planning:
                result.planned = planning
                if planning:
                    planning_from = utcnow()
                    self._sync_settings(result, progress)
                    if not stop():
                        self._plan(settings, result)
                    result.planning = (planning_from, utcnow())
                else:
                    log.info("planning skipped: another worker holds the lock")
        self._revoke(settings, result)
        if not stop():
            self._dispatch(settings, result)
        result.seconds = time.perf_counter() - started
        log.info(
            "cycle: api_calls=%d seconds=%.2f%s",
            result.api_calls,
            result.seconds,
            " stopped" if stop() else "",
        )
        return result

    def _orgs_due(self) -> int:
        """What a cycle's syncs will cover: the registry's due orgs and the settings'."""
        with self.ledger.sessions() as session:
            return registry.count_due(session, self.clock()) + len(self.settings.connections)

    def _poll(self, settings: Settings, result: CycleResult, progress: SyncProgress) -> None:
        polled = poll(
            self.ledger, settings, self.clients, clock=self.clock, owner=self.owner,
            full_due=self._full_due, stop=self.stopping.is_set, progress=progress,
        )  # fmt: skip
        result.syncs += [sync for sync, _ in polled]
        result.org_states.update(state for _, state in polled)
        if polled:
            log.info(
                "poll: %d orgs: %s",
                len(polled),
                " ".join(f"{state}={n}" for state, n in sorted(result.org_states.items())),
            )

    def _sync_settings(self, result: CycleResult, progress: SyncProgress) -> None:
        """The connections of the settings (one planning worker syncs them)."""
        for name, conn in self.settings.connections.items():
            if self.stopping.is_set():
                break
            state = self.ledger.sync_state(name, conn.source.kind)
            sync = sync_connection(
                self.ledger, name, conn, self.settings.vendor, self.settings.sync,
                full=self._full_due(state), state=state, client=self.client(name),
                clock=self.clock, stop=self.stopping.is_set,
                cap=self.settings.policy.max_duration, fetched=progress.fetched,
            )  # fmt: skip
            progress.org_done(sync.error is None)
            result.syncs.append(sync)

    def _plan(self, settings: Settings, result: CycleResult) -> None:
        result.enforce = enforce(self.ledger, settings, now=self.clock())
        log.info(result.enforce.summary())
        result.remind = remind(self.ledger, settings, now=self.clock())
        log.info(result.remind.summary())
        result.notices = plan_notices(self.ledger, settings, now=self.clock())
        log.info(result.notices.summary())

    def _revoke(self, settings: Settings, result: CycleResult) -> None:
        with self.ledger.sessions() as session:
            due = set(revocations.connections_due(session, self.clock()))
        for name in [n for n in settings.connections if n in due]:
            if self.stopping.is_set():
                break
            outcome = revoke(
                self.ledger, settings, name, self.client(name, settings), clock=self.clock,
                owner=self.owner, stop=self.stopping.is_set,
            )  # fmt: skip
            log.info("%s %s", outcome.summary(), name)
            result.revokes.append(outcome)

    def _dispatch(self, settings: Settings, result: CycleResult) -> None:
        backend = self._backend or make_backend(self.settings.mail)
        with work_progress("sending", self._due_emails) as advance:
            result.dispatch = dispatch(
                self.ledger, settings, backend, self.templates, clock=self.clock,
                owner=self.owner, stop=self.stopping.is_set, webhook=self._webhook(settings),
                advance=advance,
            )  # fmt: skip
        log.info(result.dispatch.summary())

    def _due_emails(self) -> int:
        with self.ledger.sessions() as session:
            return emails.count_due(session, self.clock())

    @staticmethod
    def _webhook(settings: Settings) -> WebhookBackend | None:
        """The support team's webhook, if one is set (dispatch closes it after its run)."""
        return WebhookBackend(settings.support) if settings.support.webhook_url else None

    def _full_due(self, state: SyncState) -> bool:
        """Level-triggered daily reconcile: due when the last full sync is old enough."""
        if state.watermark is None:
            return False  # the first sync reads everything anyway
        every = timedelta(hours=self.settings.sync.full_every_hours)
        last = state.last_full_sync_at
        return last is None or self.clock() - last >= every

    # -- forever -----------------------------------------------------------------------------
    def run_forever(self) -> None:
        """Cycles until SIGTERM/SIGINT (or ``stop()``), then the cycle in hand finishes."""
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.interval import IntervalTrigger

        poll = self.settings.poll_seconds
        scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=1)}, timezone=UTC
        )
        scheduler.add_job(
            self._guarded_cycle,
            IntervalTrigger(seconds=poll, timezone=UTC),
            id="cycle",
            name="sync, enforce, remind, revoke, dispatch",
            next_run_time=utcnow(),
            max_instances=1,  # never two cycles at once in one process
            coalesce=True,  # after a long cycle or a pause, run once, not once per missed tick
            misfire_grace_time=poll,  # a tick late by less than a period still runs
        )

        # The handler only sets the flag: a signal landing before the scheduler runs (a
        # BlockingScheduler's shutdown raised then, and the worker never stopped) is kept.
        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("%s: finishing the item in hand, then stopping", signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        log.info("worker %s: a cycle every %d s", self.owner, poll)
        scheduler.start()
        try:
            self.stopping.wait()
        finally:
            scheduler.shutdown(wait=True)  # the cycle in hand stops after its item

    def _guarded_cycle(self) -> None:
        try:
            self.cycle()
        except LedgerError as exc:
            log.error("cycle failed: %s", exc)
        except Exception:
            # A bug must not kill the scheduler: log it whole and try again next tick.
            log.exception("cycle failed")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + "Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


JsonFormatter.converter = time.gmtime
