"""The event log read in id ranges, by worker processes, results back in id order.

Export and verify read every row of an append-only log. Rows up to the chain head never
change, so ranges of ids can be read by separate processes, each with its own connection,
and their results put back in order: one CPython process decodes, formats or hashes about
one core's worth, the pool uses the others. At most ``4 × jobs`` ranges are in flight, so
memory stays flat however long the log is. Tasks get a :class:`Reader` (a plain DBAPI
connection: millions of rows are too many for per-row ORM work) and an inclusive range.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from firmgrant._collector import collector_per_batch

T = TypeVar("T")


@dataclass(frozen=True)
class Reader:
    """A DBAPI connection and its dialect (``sqlite`` or ``postgresql``)."""

    connection: Any
    dialect: str

    def sql(self, text: str) -> str:
        """``text`` with its ``?`` placeholders as this driver wants them (psycopg's
        ``%s``, and a literal ``%`` doubled)."""
        return text if self.dialect == "sqlite" else text.replace("%", "%%").replace("?", "%s")

    def rows(
        self, sql: str, params: Sequence[Any] = (), *, binary: bool = False
    ) -> list[tuple[Any, ...]]:
        """The rows of ``sql``; ``binary`` asks PostgreSQL for its binary format (a
        ``bytea`` arrives as bytes, not as hex text to decode)."""
        binary = binary and self.dialect == "postgresql"
        cursor = self.connection.cursor(binary=True) if binary else self.connection.cursor()
        try:
            cursor.execute(self.sql(sql), tuple(params))
            return cursor.fetchall()  # type: ignore[no-any-return]
        finally:
            cursor.close()


def session_reader(session: Session) -> Reader:
    """The session's own connection, inside its transaction."""
    connection = session.connection()
    return Reader(connection.connection.driver_connection, connection.dialect.name)


def default_jobs() -> int:
    """One worker per core this process may use, at most eight."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, cores or 1))


def spans(first: int | None, last: int | None, size: int) -> list[tuple[int, int]]:
    """Inclusive ``(lo, hi)`` ranges of ``size`` ids covering ``first..last``."""
    if first is None or last is None or last < first:
        return []
    return [(lo, min(lo + size - 1, last)) for lo in range(first, last + 1, size)]


def _shareable_url(session: Session) -> str | None:
    """A URL other processes can open, or ``None`` (an in-memory SQLite is this process's)."""
    url = session.connection().engine.url
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        return None
    return url.render_as_string(hide_password=False)


def _context(task: Callable[..., Any]) -> Any:
    """fork when this process runs one thread: instant, and the modules are already loaded.

    A child forked from a threaded process (a test's servers, say) can inherit a lock some
    other thread held mid-operation; then a fork server, started clean, forks the workers.
    """
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([task.__module__])
    return context


_reader: Reader | None = None  # a worker process's own connection
_pooled: Any = None  # what keeps it open: the pool closes a connection nobody holds


def _open(url: str) -> None:
    global _reader, _pooled
    from sqlalchemy.pool import NullPool

    from firmgrant.ledger.db import make_engine

    engine = make_engine(url, poolclass=NullPool)
    _pooled = engine.raw_connection()
    _reader = Reader(_pooled.driver_connection, engine.dialect.name)
    if _reader.dialect == "postgresql":
        # A range's queries are small, but without statistics their estimates pass
        # jit_above_cost: compiling cost more server time than running (1M-event export
        # 18.6 s -> 12.7 s).
        _reader.connection.execute("SET jit = off")


def _collected(
    task: Callable[..., T], reader: Reader, lo: int, hi: int, args: tuple[Any, ...]
) -> T:
    with collector_per_batch() as collect_range_garbage:
        result = task(reader, lo, hi, *args)
        collect_range_garbage()
    return result


def _run(task: Callable[..., T], lo: int, hi: int, args: tuple[Any, ...]) -> T:
    assert _reader is not None, "worker started without a connection"
    return _collected(task, _reader, lo, hi, args)


def _widen_result_pipe(pool: ProcessPoolExecutor) -> None:
    """Let a whole range's result (a few hundred KB) through the pool's result pipe at once.

    Through Linux's default 64 KB, every result crossed in a dozen writes and wake-ups.
    Only Linux can; the pipe is the pool's own (private), so anything unexpected leaves it
    as it was.
    """
    queue = getattr(pool, "_result_queue", None)
    reader = getattr(queue, "_reader", None)
    try:
        import fcntl

        fcntl.fcntl(reader.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)  # type: ignore[union-attr]
    except (ImportError, AttributeError, OSError):
        pass


@contextmanager
def map_ranges(
    session: Session,
    task: Callable[..., T],
    ranges: Sequence[tuple[int, int]],
    args: tuple[Any, ...] = (),
    *,
    jobs: int = 1,
) -> Iterator[Iterator[T]]:
    """``task(reader, lo, hi, *args)`` for each range, results in range order.

    ``task`` must be a module-level function (workers import it by name). With one job,
    a single range or an in-memory database, ranges run here on the session's connection.
    Leaving the block early (verify found a bad row) stops the workers.
    """
    url = _shareable_url(session)
    if jobs <= 1 or len(ranges) < 2 or url is None:
        reader = session_reader(session)
        yield (_collected(task, reader, lo, hi, args) for lo, hi in ranges)
        return
    # A pool that notices a worker dying (BrokenProcessPool) rather than waiting forever.
    with ProcessPoolExecutor(
        min(jobs, len(ranges)), mp_context=_context(task), initializer=_open, initargs=(url,)
    ) as pool:
        _widen_result_pipe(pool)
        try:

            def in_order() -> Iterator[T]:
                pending: deque[Future[T]] = deque()
                for lo, hi in ranges:
                    pending.append(pool.submit(_run, task, lo, hi, args))
                    # Results are taken in order: with four ranges per worker queued, one
                    # slow range does not leave the other workers idle behind it.
                    if len(pending) >= 4 * jobs:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()

            yield in_order()
        finally:
            pool.shutdown(cancel_futures=True)


__all__ = ["Reader", "default_jobs", "map_ranges", "session_reader", "spans"]
