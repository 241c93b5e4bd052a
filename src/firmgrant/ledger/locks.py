"""Who may work on a ledger: one planner at a time on PostgreSQL, one worker on SQLite.

PostgreSQL: a session advisory lock lets one replica at a time plan (sync, enforce, remind);
the others skip planning and only revoke and send (rows leased one by one). SQLite allows one
writer process: a lock file next to the database keeps a second worker from starting.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from sqlalchemy import Engine, text

from firmgrant.errors import WorkerLocked
from firmgrant.ledger.work import worker_name

PLANNING_LOCK = 0x6669726D  # "firm": the advisory lock id of the planning half


@contextmanager
def planning_lock(engine: Engine) -> Iterator[bool]:
    """``True`` while this process may plan; ``False`` if another replica is planning."""
    if engine.dialect.name != "postgresql":
        yield True  # one worker per SQLite ledger (see single_worker_lock)
        return
    with engine.connect() as connection:
        locked = connection.execute(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": PLANNING_LOCK}
        ).scalar_one()
        connection.commit()
        try:
            yield bool(locked)
        finally:
            if locked:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": PLANNING_LOCK})
                connection.commit()


@contextmanager
def single_worker_lock(engine: Engine) -> Iterator[None]:
    """On SQLite, hold ``<database>.worker.lock`` for the process's life (the kernel frees it)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    path = Path(f"{database}.worker.lock")
    handle: IO[str] = path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise WorkerLocked(
                f"another worker ({holder}) already runs on the SQLite ledger {database}; "
                "SQLite supports one worker: use PostgreSQL for several"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(worker_name())
        handle.flush()
        yield
    finally:
        handle.close()
