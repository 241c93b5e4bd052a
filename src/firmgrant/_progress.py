"""Progress people can see: rich displays on a terminal (stderr), nothing anywhere else.

Off a terminal (a pipe, a log collector, a cron job) commands print only their usual one-line
summaries: a progress display there would be noise in every log.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@contextmanager
def export_progress() -> Iterator[Callable[[int, int], None]]:
    """``advance(done, total)`` through the log of an export."""
    if not sys.stderr.isatty():
        yield lambda done, total: None
        return
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("exporting events", total=None)
        yield lambda done, total: bar.update(task, advance=done, total=total)


@contextmanager
def work_progress(what: str, total: Callable[[], int]) -> Iterator[Callable[[], None]]:
    """``advance()`` once per item done of ``total()`` (asked only on a terminal): a bar
    with the count and the time left, e.g. while dispatch sends a thousand emails."""
    if not sys.stderr.isatty():
        yield lambda: None
        return
    columns = (TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar, _logs_above():
        task = bar.add_task(what, total=total())
        yield lambda: bar.advance(task)


@dataclass
class SyncProgress:
    """What a sync of many orgs has done so far; safe to update from the pool's threads."""

    orgs: int
    done: int = 0
    failed: int = 0
    records: int = 0
    _bar: Progress | None = None
    _task: TaskID | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fetched(self, records: int) -> None:
        """A page of ``records`` came in."""
        with self._lock:
            self.records += records
            self._show()

    def org_done(self, ok: bool) -> None:
        with self._lock:
            self.done += 1
            self.failed += not ok
            self._show()

    def _show(self) -> None:
        if self._bar is None or self._task is None:
            return
        elapsed = self._bar.tasks[0].elapsed or 0.0
        rate = self.records / elapsed if elapsed > 0 else 0.0
        self._bar.update(
            self._task,
            completed=self.done,
            records=f"{self.records:,} records ({rate:,.0f}/s)",
            failed=f", {self.failed} failed" if self.failed else "",
        )


@contextmanager
def sync_progress(orgs: int) -> Iterator[SyncProgress]:
    """Orgs done of ``orgs``, records fetched and their rate, while a sync runs (one big org's
    first sync shows its records coming in)."""
    progress = SyncProgress(orgs)
    if not sys.stderr.isatty():
        yield progress
        return
    columns = (
        TextColumn("syncing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("orgs{task.fields[failed]}"),
        TextColumn("{task.fields[records]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar, _logs_above():
        progress._bar = bar
        progress._task = bar.add_task("sync", total=orgs, records="0 records", failed="")
        yield progress
        progress._bar = None


@contextmanager
def _logs_above() -> Iterator[None]:
    """Log lines printed above the live display instead of through it: rich redirects
    ``sys.stderr`` while it runs, but logging's handlers hold the stream they were given."""
    original = sys.__stderr__
    moved = [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler, logging.StreamHandler) and handler.stream is original
    ]
    for handler in moved:
        handler.setStream(sys.stderr)
    try:
        yield
    finally:
        for handler in moved:
            handler.setStream(original)
