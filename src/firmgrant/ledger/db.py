"""Engines for SQLite and PostgreSQL, and Alembic migrations run from inside the package."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, ExceptionContext, make_url
from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError
from sqlalchemy.pool import ConnectionPoolEntry

from firmgrant.errors import ConfigError, LedgerUnavailable, SchemaOutOfDate

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest migration. Kept here so that commands which only read the ledger need not
# load Alembic; a test holds it to Alembic's own answer.
HEAD_REVISION = "0014"


def normalize_url(url: str) -> str:
    """Heroku gives ``postgres://``; SQLAlchemy with psycopg 3 wants ``postgresql+psycopg://``."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def safe_url(url: str) -> str:
    """The URL with its password masked, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparseable URL)"


def _bind_none(value: None) -> None:
    return None


def _register_sqlite_adapters() -> None:
    """Make sqlite3 bind ``None`` and booleans without a failed lookup each time.

    For any value but an exact int, float or str, sqlite3 looks for an adapter, and when
    none is registered it asks its protocol type for ``__adapt__``, an AttributeError
    formatted and thrown away for every such value the sync binds. Registered, these bind
    exactly what sqlite3 binds anyway (NULL, 0, 1).
    Process-wide, as sqlite3's adapters are; neither changes what any value stores.
    """
    sqlite3.register_adapter(type(None), _bind_none)
    sqlite3.register_adapter(bool, int)


def _sqlite_pragmas(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # Checkpoint every ~40 MB of WAL instead of SQLite's 4 MB: an initial sync's pages
    # otherwise end nearly every commit with a checkpoint and its fsync.
    cursor.execute("PRAGMA wal_autocheckpoint=10000")
    cursor.close()


def _postgres_settings(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    # psycopg prepares a statement after five runs; PostgreSQL's generic plan for the
    # page's `source_id IN (… 2000 Ids …)` cannot hash the list and, before the fresh
    # table has statistics, filters every row linearly: 50 ms a page became seconds as an
    # initial sync grew. Custom plans keep the prepared statements and hash the list.
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET plan_cache_mode = force_custom_plan")
    dbapi_connection.commit()


_URL_SETTING = "FIRMGRANT_DATABASE_URL or DATABASE_URL (database_url)"
_ENCODE_HINT = "a password containing @ : / must be percent-encoded (%40 %3A %2F)"


def parse_database_url(url: str) -> URL:
    """The ledger's URL, or a ConfigError that says what is wrong and never shows the URL.

    SQLAlchemy's own errors quote the text they could not read, which may be a password.
    """
    try:
        parsed = make_url(normalize_url(url))
    except ArgumentError:
        raise ConfigError(
            f"{_URL_SETTING}: not a database URL; use sqlite:///var/firmgrant.db or "
            "postgresql://user:password@host:5432/db"
        ) from None
    except ValueError:  # int() of what stands after the last ':' before the host's end
        raise ConfigError(f"{_URL_SETTING}: the port is not a number — {_ENCODE_HINT}") from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(f"{_URL_SETTING}: only sqlite and postgresql are supported")
    if parsed.get_backend_name() == "postgresql" and parsed.host and "@" in parsed.host:
        raise ConfigError(f"{_URL_SETTING}: the host name contains '@' — {_ENCODE_HINT}")
    return parsed


def make_engine(url: str, **options: Any) -> Engine:
    parsed = parse_database_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        _register_sqlite_adapters()
        engine = create_engine(parsed, connect_args={"timeout": 30}, **options)
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(parsed, pool_pre_ping=True, **options)
        event.listen(engine, "connect", _postgres_settings)
    event.listen(engine, "handle_error", _outage)
    return engine


def _outage(context: ExceptionContext) -> None:
    """The database went away or cannot do its part (server down or restarting, connection
    dropped, disk full): a ``LedgerUnavailable`` with one line, not a driver traceback.
    Commands exit 3 with it; the worker logs it and tries again next cycle (the pool drops
    the dead connection: SQLAlchemy still sees the disconnect)."""
    if context.is_pre_ping:  # a stale pooled connection: the pool replaces it by itself
        return
    error = context.original_exception
    if isinstance(context.sqlalchemy_exception, (OperationalError, InterfaceError)):
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        url = safe_url(str(context.engine.url)) if context.engine is not None else "the ledger"
        if context.connection is None:  # connecting: the server is down or refuses us
            raise LedgerUnavailable(f"cannot reach the ledger at {url}: {first}") from None
        raise LedgerUnavailable(f"the ledger database at {url} failed: {first}") from None


def _config(engine: Engine) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def head_revision() -> str:
    """The newest migration, as Alembic finds it in ``migrations/``."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except OperationalError as exc:
        raise LedgerUnavailable(
            f"cannot reach the ledger at {safe_url(str(engine.url))}: "
            f"{str(exc.orig).strip().splitlines()[0] if exc.orig else exc}"
        ) from None


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Apply every pending migration; returns (revision before, revision after)."""
    from alembic import command

    before = current_revision(engine)
    command.upgrade(_config(engine), "head")
    return before, head_revision()


def ensure_schema(engine: Engine, *, auto_upgrade: bool) -> None:
    current = current_revision(engine)
    if current == HEAD_REVISION:
        return
    if auto_upgrade:
        upgrade(engine)
        return
    raise SchemaOutOfDate(
        f"the ledger at {safe_url(str(engine.url))} is at schema {current or 'empty'}, "
        f"this firmgrant needs {HEAD_REVISION}: run `firmgrant db upgrade`"
    )
