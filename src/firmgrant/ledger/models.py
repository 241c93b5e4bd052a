"""The ledger's tables (SQLAlchemy 2 typed models). Migrations live in ``migrations/``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

from firmgrant.grant import FIELD_LIMITS
from firmgrant.ledger._bulk import sqlite_time

GENESIS_HASH = "0" * 64


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite as on PostgreSQL.

    SQLite has no datetime type: values are stored as fixed-width UTC text
    (``2026-05-20 20:49:32.000000``, the format SQLAlchemy's SQLite DATETIME uses, so it
    sorts and compares correctly) and converted with the C ``isoformat``/``fromisoformat``
    rather than SQLAlchemy's per-value Python formatting, which dominated sync time.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(26))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return sqlite_time(value)
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the ledger; use aware UTC datetimes")
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _text(field: str) -> String:
    return String(FIELD_LIMITS[field])


class Base(DeclarativeBase):
    pass


class GrantRow(Base):
    """One grant, keyed by (connection, Salesforce Id); mirrors the source's fields."""

    __tablename__ = "grants"
    __table_args__ = (
        UniqueConstraint("connection", "source_id", name="uq_grants_connection_source_id"),
        # When a grant ends, with what its status reads: the usable list is an index range.
        Index(
            "ix_grants_ending", "expires_at", "granted_at", "sf_status", "deleted", "via_login_as"
        ),
        Index("ix_grants_org_id", "org_id"),
        # The few grants the vendor's cap ends sooner than Salesforce (queries.by_end).
        Index("ix_grants_lasts", "lasts_seconds", "granted_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    connection: Mapped[str] = mapped_column(String(40))
    source_id: Mapped[str] = mapped_column(_text("source_id"))
    org_id: Mapped[str] = mapped_column(_text("org_id"))
    org_name: Mapped[str | None] = mapped_column(_text("org_name"))
    grantor_id: Mapped[str | None] = mapped_column(_text("grantor_id"))
    grantor_username: Mapped[str | None] = mapped_column(_text("grantor_username"))
    grantor_email: Mapped[str | None] = mapped_column(_text("grantor_email"))
    grantee: Mapped[str] = mapped_column(_text("grantee"))
    duration: Mapped[str | None] = mapped_column(_text("duration"))
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    via_login_as: Mapped[bool] = mapped_column(Boolean)
    login_as_user: Mapped[str | None] = mapped_column(_text("login_as_user"))
    sf_status: Mapped[str] = mapped_column(_text("sf_status"))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoke_reason: Mapped[str | None] = mapped_column(_text("revoke_reason"))
    modstamp: Mapped[datetime] = mapped_column(UTCDateTime())
    deleted: Mapped[bool] = mapped_column(Boolean)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Stamped by a full sync on every grant it saw, so the ones it did not see can be found.
    seen_run: Mapped[int | None] = mapped_column(BigInteger)
    # Org name and grantor, case and accents aside (grant.search_text): what search matches.
    search_text: Mapped[str | None] = mapped_column(Text)
    # How long Salesforce says access lasts (lifecycle.lasts_seconds): whether the cap ends it.
    lasts_seconds: Mapped[int] = mapped_column(BigInteger, server_default="0")


class EventRow(Base):
    """Append-only, hash-chained history: ``hash = sha256(prev_hash + canonical_json(row))``."""

    __tablename__ = "events"
    # A grant's events in id order (migration 0007; on SQLite an index holds the rowid).
    __table_args__ = (
        Index("ix_events_grant_id", "grant_id", "id"),
        Index("ix_events_at", "at"),
    )

    # On SQLite the rowid itself (migration 0003): one B-tree fewer to write and to read.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=False
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime())  # when it was recorded
    kind: Mapped[str] = mapped_column(String(32))
    grant_id: Mapped[int | None] = mapped_column(ForeignKey("grants.id"))
    connection: Mapped[str | None] = mapped_column(String(40))
    source_id: Mapped[str | None] = mapped_column(String(48))
    actor: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    # When it happened (migration 0011): an audit row's CreatedDate, a record's change time,
    # or ``at`` when firmgrant itself acted. Hashed where it differs from ``at``.
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=True)


class ChainHead(Base):
    """The last event's id and hash; locking this one row serialises appends."""

    __tablename__ = "chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_event_id: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class SyncStateRow(Base):
    __tablename__ = "sync_state"

    connection: Mapped[str] = mapped_column(String(40), primary_key=True)
    source: Mapped[str] = mapped_column(String(16), primary_key=True)
    watermark: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_full_sync_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    api_used: Mapped[int | None] = mapped_column(Integer)
    api_limit: Mapped[int | None] = mapped_column(Integer)
    api_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The first trail row the source could not read (id and text), while any is unread.
    unreadable: Mapped[str | None] = mapped_column(Text)


class InvalidRecordRow(Base):
    """Records already reported invalid, so a re-read does not report them twice."""

    __tablename__ = "invalid_records"

    connection: Mapped[str] = mapped_column(String(40), primary_key=True)
    record_key: Mapped[str] = mapped_column(String(48), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())


class _Work:
    """Columns of a leased, retried piece of work (see ``ledger/work.py``)."""

    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class RevocationRow(_Work, Base):
    """A grant to revoke in Salesforce: at expiry, at the vendor's cap, on a rule break, by hand.

    ``state`` (a ``lifecycle.WorkState``): ``pending`` (not tried yet), ``failed`` (last try
    failed; retried with backoff), ``landed`` (a sync found our attempt done in Salesforce;
    enforce queues its notice), ``revoked`` (done, or found already revoked/deleted),
    ``cancelled`` (the grant was extended before it was revoked).
    """

    __tablename__ = "revocations"
    __table_args__ = (Index("ix_revocations_due", "state", "next_attempt_at"),)

    grant_id: Mapped[int] = mapped_column(ForeignKey("grants.id"), primary_key=True)
    cause: Mapped[str] = mapped_column(String(16))  # a lifecycle.EndCause
    reason: Mapped[str] = mapped_column(String(1000))
    actor: Mapped[str] = mapped_column(String(255))
    # The Revoked_At__c the last attempt sent (whole seconds): with the reason, our marker.
    attempted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # What a finished revocation did (a lifecycle.RevocationOutcome) and what it said.
    outcome: Mapped[str | None] = mapped_column(String(24))
    note: Mapped[str | None] = mapped_column(Text)


class OutboxRow(_Work, Base):
    """One email or support notice to send, exactly once: unique per (grant, kind, due time,
    channel). ``kind``: a ``lifecycle.EmailKind`` (to the customer) or ``NoticeKind`` (to
    support); ``channel``: a ``lifecycle.Channel``; a webhook row has no recipients.

    ``state``: a ``lifecycle.WorkState``: ``pending``, ``failed`` (temporary failure,
    retried), ``sent``, ``undeliverable`` (refused for good: a 5xx), ``cancelled`` (an
    extension made a reminder obsolete).
    """

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint(
            "grant_id", "kind", "due_at", "channel", name="uq_outbox_grant_kind_due_channel"
        ),
        Index("ix_outbox_due", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    grant_id: Mapped[int] = mapped_column(ForeignKey("grants.id"))
    kind: Mapped[str] = mapped_column(String(16))  # a lifecycle.EmailKind or NoticeKind
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    channel: Mapped[str] = mapped_column(String(16), default="email", server_default="email")
    offset_seconds: Mapped[int | None] = mapped_column(Integer)
    recipients: Mapped[str] = mapped_column(Text)  # JSON list of addresses
    message_id: Mapped[str] = mapped_column(String(255))


class AccessUseRow(Base):
    """A use of Login-As access by the vendor's support, once per audit row."""

    __tablename__ = "access_uses"
    __table_args__ = (Index("ix_access_uses_grant_id", "grant_id"),)

    connection: Mapped[str] = mapped_column(String(40), primary_key=True)
    row_id: Mapped[str] = mapped_column(String(18), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    support_user: Mapped[str] = mapped_column(String(255))
    customer_user_id: Mapped[str] = mapped_column(String(18))
    grant_id: Mapped[int | None] = mapped_column(ForeignKey("grants.id"))
    valid: Mapped[bool] = mapped_column(Boolean)


class OrgRow(Base):
    """A customer org of the connection registry (``firmgrant orgs``)."""

    __tablename__ = "orgs"
    __table_args__ = (Index("ix_orgs_due", "enabled", "next_sync_at"),)

    name: Mapped[str] = mapped_column(String(40), primary_key=True)  # the connection's name
    org_id: Mapped[str | None] = mapped_column(String(18), unique=True)
    org_name: Mapped[str | None] = mapped_column(String(255))
    login_url: Mapped[str] = mapped_column(String(255))
    username: Mapped[str] = mapped_column(String(255))
    source_kind: Mapped[str] = mapped_column(String(16))  # a lifecycle.SourceKind
    # Overrides of what the org's users tell (NULL: learned from Salesforce).
    date_order: Mapped[str | None] = mapped_column(String(3))
    time_zone: Mapped[str | None] = mapped_column(String(64))
    admin_emails: Mapped[str] = mapped_column(Text)  # JSON list
    secret: Mapped[str | None] = mapped_column(Text)  # Fernet token (registry.keys)
    enabled: Mapped[bool] = mapped_column(Boolean)
    state: Mapped[str] = mapped_column(String(16))  # a lifecycle.OrgState
    failures: Mapped[int] = mapped_column(Integer)  # failed syncs in a row (backoff)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_sync_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    next_sync_at: Mapped[datetime] = mapped_column(UTCDateTime())
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    api_used: Mapped[int | None] = mapped_column(Integer)
    api_limit: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class UserRow(Base):
    """A person who signs in to the dashboard (``firmgrant users``, or first seen by SSO)."""

    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(255), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    # An Argon2 hash; none for an account that signs in only by single sign-on.
    password_hash: Mapped[str | None] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean)
    # Bumped when the password changes or the account is disabled: older sessions end.
    session_epoch: Mapped[int] = mapped_column(Integer)
    failed_sign_ins: Mapped[int] = mapped_column(Integer)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_sign_in_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Signed in with a one-time password an admin gave: chooses their own before anything else.
    must_change_password: Mapped[bool] = mapped_column(Boolean, server_default=false())


class TrailRow(Base):
    """A Setup Audit Trail row applied to the grants (the audit source), as Salesforce wrote it.

    Kept so that a re-read applies nothing twice, a row read late is folded in its place, and
    the trail outlives Salesforce's 180 days. ``expires_at`` is the expiry read from its
    ``display`` (``read_as`` the date order it was read in, ``note`` what the cross-check said).
    """

    __tablename__ = "trail_rows"
    __table_args__ = (Index("ix_trail_rows_user", "connection", "user_id", "at"),)

    connection: Mapped[str] = mapped_column(String(40), primary_key=True)
    row_id: Mapped[str] = mapped_column(String(18), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    action: Mapped[str] = mapped_column(String(40))  # a salesforce.display.AuditAction
    user_id: Mapped[str] = mapped_column(String(18))
    username: Mapped[str | None] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(255))
    delegate: Mapped[str | None] = mapped_column(String(255))
    publisher: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    read_as: Mapped[str | None] = mapped_column(String(3))
    note: Mapped[str | None] = mapped_column(Text)
    display: Mapped[str] = mapped_column(Text)
    grant_id: Mapped[int | None] = mapped_column(ForeignKey("grants.id"))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())


class OrgProfileRow(Base):
    """What an org told of itself and of the user firmgrant reads it as (the audit source)."""

    __tablename__ = "org_profiles"

    connection: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str | None] = mapped_column(String(18))
    org_name: Mapped[str | None] = mapped_column(String(255))
    time_zone: Mapped[str | None] = mapped_column(String(64))
    locale: Mapped[str | None] = mapped_column(String(16))
    language: Mapped[str | None] = mapped_column(String(16))
    reader_id: Mapped[str | None] = mapped_column(String(18))
    reader_time_zone: Mapped[str | None] = mapped_column(String(64))
    reader_locale: Mapped[str | None] = mapped_column(String(16))
    reader_language: Mapped[str | None] = mapped_column(String(16))
    learned_at: Mapped[datetime] = mapped_column(UTCDateTime())
