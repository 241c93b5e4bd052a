"""The connection registry: customer orgs kept in the ledger (``firmgrant orgs``).

An org here needs only what differs per customer — its login URL (My Domain), the
integration user, the source and how its trail writes dates, its admins — while the vendor's
connected app (client id, private key) is shared, from ``[registry]`` in the settings.
A per-org secret (a client secret, say) is encrypted with ``registry.keys`` (Fernet; the
first key encrypts, every key decrypts, so keys rotate) and never printed.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from firmgrant.errors import AuthenticationError, ConfigError, RegistryError, SalesforceApiError
from firmgrant.ledger.models import OrgRow
from firmgrant.lifecycle import OrgState, SourceKind
from firmgrant.settings import (
    CONNECTION_NAME,
    ORG_ID,
    ConnectionSettings,
    MailSettings,
    OrgSettings,
    Settings,
    SourceSettings,
    _time_zone,
)

COLUMNS = ("name", "login_url", "username", "org_id", "source", "date_order", "time_zone",
           "admin_emails")  # fmt: skip


class OrgSpec(BaseModel):
    """One org as an operator gives it (a command's options or a CSV row), checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    login_url: str
    username: str = Field(min_length=1, max_length=255)
    org_id: str | None = None
    source: SourceKind = SourceKind.AUDIT
    date_order: str | None = None  # overrides: learned from the org when not given
    time_zone: str | None = None
    admin_emails: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not CONNECTION_NAME.match(value):
            raise ValueError("must be lower-case letters, digits, - or _ (at most 40)")
        return value

    @field_validator("login_url")
    @classmethod
    def _login_url(cls, value: str) -> str:
        return ConnectionSettings._url(value) or value

    @field_validator("org_id")
    @classmethod
    def _org_id(cls, value: str | None) -> str | None:
        if value and not ORG_ID.match(value):
            raise ValueError("must be a 15 or 18 character org id starting with 00D")
        return value or None

    @field_validator("date_order")
    @classmethod
    def _date_order(cls, value: str | None) -> str | None:
        if value is not None and value not in ("MDY", "DMY", "YMD"):
            raise ValueError("must be MDY, DMY or YMD (or empty: learned from the org)")
        return value

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return None if value is None else _time_zone(value)

    @field_validator("admin_emails")
    @classmethod
    def _emails(cls, value: list[str]) -> list[str]:
        return MailSettings._addresses(value)  # type: ignore[no-any-return]


def spec(values: dict[str, Any], where: str) -> OrgSpec:
    """An :class:`OrgSpec`, or a :class:`RegistryError` saying ``where`` and what is wrong."""
    try:
        return OrgSpec.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'row'}: {e['msg']}" for e in exc.errors()
        )
        raise RegistryError(f"{where}: {problems}") from None


def read_csv(path: Path) -> list[OrgSpec]:
    """Every row of an orgs CSV (header: the COLUMNS; admin_emails separated by ``;``), or
    a :class:`RegistryError` naming the first bad row: nothing is imported then."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{path}: cannot read: {exc}") from None
    rows = list(csv.DictReader(text.splitlines()))
    if not rows:
        raise RegistryError(f"{path}: no rows (header: {','.join(COLUMNS)})")
    unknown = sorted(set(rows[0]) - set(COLUMNS))
    if unknown:
        raise RegistryError(f"{path}: unknown column(s) {', '.join(unknown)}")
    specs = []
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        values = {k: v for k, v in row.items() if k in COLUMNS and v not in (None, "")}
        if "admin_emails" in values:
            values["admin_emails"] = [a.strip() for a in values["admin_emails"].split(";") if a]
        specs.append(spec(values, f"{path} line {number}"))
    first: dict[str, int] = {}
    for number, org in enumerate(specs, start=2):
        # Org Ids compare on their first 15 characters: the 18 only adds a checksum.
        for what, key in (("org", org.name), ("org id", (org.org_id or "")[:15])):
            if key and first.setdefault(f"{what}:{key}", number) != number:
                raise RegistryError(
                    f"{path} line {number}: {what} {key!r} is given twice "
                    f"(first on line {first[f'{what}:{key}']})"
                )
    return specs


def new_row(org: OrgSpec, now: datetime, secret: str | None = None) -> OrgRow:
    return OrgRow(
        name=org.name,
        org_id=org.org_id,
        login_url=org.login_url,
        username=org.username,
        source_kind=org.source,
        date_order=org.date_order,
        time_zone=org.time_zone,
        admin_emails=json.dumps(org.admin_emails),
        secret=secret,
        enabled=True,
        state=OrgState.NEW,
        failures=0,
        next_sync_at=now,
        created_at=now,
    )


# -- secrets ---------------------------------------------------------------------------------
def _fernet(settings: Settings) -> MultiFernet:
    keys = settings.registry.keys
    if not keys:
        raise ConfigError(
            "FIRMGRANT_REGISTRY__KEYS (registry.keys): a Fernet key is needed to keep an org's "
            'secret (make one with `python -c "from cryptography.fernet import Fernet; '
            'print(Fernet.generate_key().decode())"`)'
        )
    try:
        return MultiFernet([Fernet(key.get_secret_value().encode()) for key in keys])
    except ValueError:
        raise ConfigError(
            "FIRMGRANT_REGISTRY__KEYS (registry.keys): each key must be a Fernet key "
            "(32 url-safe base64-encoded bytes)"
        ) from None


def seal(settings: Settings, secret: str) -> str:
    return _fernet(settings).encrypt(secret.encode()).decode()


def unseal(settings: Settings, token: str, name: str) -> str:
    try:
        return _fernet(settings).decrypt(token.encode()).decode()
    except InvalidToken:
        raise ConfigError(
            f"org {name}: its secret does not open with any of FIRMGRANT_REGISTRY__KEYS "
            "(a key was removed before `firmgrant orgs rotate-keys`?)"
        ) from None


def rotated(settings: Settings, token: str) -> str:
    """The secret re-encrypted with the first (newest) key."""
    return _fernet(settings).rotate(token.encode()).decode()


# -- connections -----------------------------------------------------------------------------
def connection(settings: Settings, row: OrgRow) -> ConnectionSettings:
    """The connection of a registered org: its own URL and user, the vendor's shared app."""
    shared = settings.registry
    secret = unseal(settings, row.secret, row.name) if row.secret else None
    values: dict[str, Any] = {
        "login_url": row.login_url,
        "auth": shared.auth,
        "client_id": shared.client_id,
        "client_secret": secret
        or (shared.client_secret.get_secret_value() if shared.client_secret else None),
        "username": row.username,
        "private_key": shared.private_key,
        "private_key_file": shared.private_key_file,
        "ca_bundle": shared.ca_bundle,
        "api_version": shared.api_version,
        "timeout_seconds": shared.timeout_seconds,
        "source": SourceSettings.model_validate(
            {"kind": row.source_kind, "date_order": row.date_order, "time_zone": row.time_zone}
        ),
    }
    return ConnectionSettings.model_validate(values)


def with_orgs(settings: Settings, rows: Iterable[OrgRow]) -> Settings:
    """The settings with the registry's orgs as connections (and their admins as contacts);
    a connection defined in the settings keeps its own definition."""
    rows = list(rows)
    connections = {row.name: connection(settings, row) for row in rows}
    connections.update(settings.connections)
    orgs = dict(settings.orgs)
    for row in rows:
        emails = json.loads(row.admin_emails)
        if row.org_id and emails:
            known = orgs.get(row.org_id[:15])
            orgs[row.org_id[:15]] = OrgSettings(
                admin_emails=[*(known.admin_emails if known else []), *emails]
            )
    return settings.model_copy(update={"connections": connections, "orgs": orgs})


# -- outcomes --------------------------------------------------------------------------------
# Salesforce's answers to a user who lacks a permission the source needs.
_REFUSALS = (
    "INVALID_TYPE",
    "INSUFFICIENT_ACCESS",
    "API_DISABLED_FOR_ORG",
    "FUNCTIONALITY_NOT_ENABLED",
)


# Syncs that worked: the org is polled as usual, nothing is backed off.
SYNCING = (OrgState.OK, OrgState.UNREADABLE)


def state_after(
    error: str | None, error_kind: str | None, unreadable: str | None = None
) -> OrgState:
    """What a sync's outcome (``SyncResult.error``, ``error_kind`` and ``unreadable``) says
    of the org."""
    if error is None or (unreadable and error_kind == "nothing_mirrored"):
        # Rows came and some (or all) could not be read: the trail is reachable, its words
        # are not what firmgrant reads.
        return OrgState.UNREADABLE if unreadable else OrgState.OK
    if error_kind == AuthenticationError.__name__:
        return OrgState.AUTH_FAILED
    if error_kind == "api_limit":
        return OrgState.OVER_BUDGET
    if error_kind == SalesforceApiError.__name__ and any(r in error for r in _REFUSALS):
        return OrgState.NO_PERMISSION
    return OrgState.UNREACHABLE


def next_due(now: datetime, state: OrgState, failures: int, settings: Settings) -> datetime:
    """When to sync this org again: at the next poll, or after a backoff while it fails."""
    poll = timedelta(seconds=settings.poll_seconds)
    if state in SYNCING:
        return now + poll
    ceiling = timedelta(seconds=settings.registry.backoff_max_seconds)
    wait: timedelta = min(poll * 2 ** min(failures, 16), ceiling)
    return now + wait
