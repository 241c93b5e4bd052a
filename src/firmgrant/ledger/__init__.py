"""The ledger: grants, the hash-chained event log and sync state, on SQLite or PostgreSQL."""

from __future__ import annotations

from firmgrant.ledger.chain import ChainReport, NewEvent, append_events, verify_chain
from firmgrant.ledger.db import ensure_schema, make_engine, safe_url, upgrade
from firmgrant.ledger.pages import PageCounts
from firmgrant.ledger.store import Ledger
from firmgrant.ledger.syncstate import SyncOutcome, SyncState
from firmgrant.settings import Settings


def open_ledger(settings: Settings, *, auto_upgrade: bool | None = None) -> Ledger:
    """The ledger of these settings, its schema checked.

    The embedded SQLite default upgrades itself on first use; PostgreSQL waits for
    ``firmgrant db upgrade`` (the Procfile's release phase) unless told otherwise.
    """
    engine = make_engine(settings.database_url.get_secret_value())
    if auto_upgrade is None:
        auto_upgrade = engine.dialect.name == "sqlite"
    ensure_schema(engine, auto_upgrade=auto_upgrade)
    return Ledger(engine)


__all__ = [
    "ChainReport",
    "Ledger",
    "NewEvent",
    "PageCounts",
    "SyncOutcome",
    "SyncState",
    "append_events",
    "ensure_schema",
    "make_engine",
    "open_ledger",
    "safe_url",
    "upgrade",
    "verify_chain",
]
