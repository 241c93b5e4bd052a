"""Settings from the environment (``FIRMGRANT_*``, nested with ``__``), ``.env`` and TOML.

Precedence, highest first: environment, ``.env``, ``config/firmgrant.toml`` (or the file named
by ``FIRMGRANT_CONFIG`` / ``--config``), defaults. ``DATABASE_URL`` (Heroku) is read too.
Any problem becomes a :class:`~firmgrant.errors.ConfigError` naming the environment variable
and the TOML key, never the value (it may be a secret).
"""

from __future__ import annotations

import os
import re
import tomllib
from contextvars import ContextVar
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from firmgrant.errors import ConfigError
from firmgrant.lifecycle import Channel, NoticeKind, SourceKind
from firmgrant.timeutil import DurationRange, parse_duration

ENV_PREFIX = "FIRMGRANT_"
DEFAULT_CONFIG_FILE = Path("config/firmgrant.toml")
SALESFORCE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
CONNECTION_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
ORG_ID = re.compile(r"^00D[A-Za-z0-9]{12}(?:[A-Za-z0-9]{3})?$")

_toml_file: ContextVar[Path] = ContextVar("firmgrant_toml_file", default=DEFAULT_CONFIG_FILE)


def _salesforce_name(value: str) -> str:
    if not SALESFORCE_NAME.match(value):
        raise ValueError(f"{value!r} is not a Salesforce API name (letters, digits, underscores)")
    return value


SalesforceName = Annotated[str, BeforeValidator(lambda v: _salesforce_name(str(v)))]


def _split_list(value: Any) -> Any:
    """Accept ``a,b`` from the environment as well as a real list from TOML."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


# A reminder before access ends, and the vendor's cap on a grant: Salesforce's longest
# grant is a year (366 days across a leap day); a cap of 0 would revoke every grant at once.
REMINDER_OFFSET = DurationRange(timedelta(minutes=1), timedelta(days=365))
MAX_DURATION = DurationRange(timedelta(hours=1), timedelta(days=366))


def _duration_in(allowed: DurationRange, value: Any) -> Any:
    """``7d`` parsed, a timedelta checked, both against ``allowed``; other types to pydantic."""
    if isinstance(value, str):
        return parse_duration(value, allowed)
    if isinstance(value, timedelta):
        return allowed.check(value)
    return value


def _parse_offsets(value: Any) -> Any:
    items = _split_list(value)
    if isinstance(items, list):
        return tuple(_duration_in(REMINDER_OFFSET, item) for item in items)
    return items


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class FieldMap(_Section):
    """Salesforce API names of the grant object's fields (``[connections.X.source.fields]``)."""

    id: SalesforceName = "Id"
    org_id: SalesforceName = "Org_Id__c"
    org_name: SalesforceName = "Org_Name__c"
    grantor_id: SalesforceName = "Grantor_Id__c"
    grantor_username: SalesforceName = "Grantor_Username__c"
    grantor_email: SalesforceName = "Grantor_Email__c"
    grantee: SalesforceName = "Grantee__c"
    duration: SalesforceName = "Access_Duration__c"
    granted_at: SalesforceName = "Granted_At__c"
    expires_at: SalesforceName = "Expires_At__c"
    via_login_as: SalesforceName = "Granted_Via_Login_As__c"
    login_as_user: SalesforceName = "Login_As_User__c"
    status: SalesforceName = "Status__c"
    revoked_at: SalesforceName = "Revoked_At__c"
    revoke_reason: SalesforceName = "Revoke_Reason__c"
    modstamp: SalesforceName = "SystemModstamp"
    is_deleted: SalesforceName = "IsDeleted"


def _time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not an IANA time zone such as Europe/Berlin") from None
    return value


def _optional_zone(value: object) -> str | None:
    return None if value in (None, "") else _time_zone(str(value))


class SourceSettings(_Section):
    # object: records of an SObject; audit: the customer org's Setup Audit Trail.
    kind: SourceKind = SourceKind.OBJECT
    object_name: SalesforceName = "Login_Access_Grant__c"
    fields: FieldMap = FieldMap()
    batch_size: int = Field(2000, ge=200, le=2000)
    overlap_seconds: int = Field(300, ge=0, le=86400)
    # audit: overrides of what the org's users tell (unset: learned from Salesforce): how
    # the trail writes dates in Display ("through 11/1/2030"), and the zone whose midnight
    # starts that date (access is treated as ending then).
    date_order: Literal["MDY", "DMY", "YMD"] | None = None
    time_zone: Annotated[str | None, BeforeValidator(_optional_zone)] = None


AuthKind = Literal["jwt", "client_credentials", "password", "token"]
_NEEDS: dict[str, tuple[str, ...]] = {
    "jwt": ("client_id", "username"),
    "client_credentials": ("client_id", "client_secret"),
    "password": ("client_id", "client_secret", "username", "password"),
    "token": ("access_token", "instance_url"),
}


class ConnectionSettings(_Section):
    """One Salesforce org the worker logs into."""

    login_url: str = "https://login.salesforce.com"
    auth: AuthKind = "jwt"
    client_id: str | None = None
    client_secret: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    security_token: SecretStr | None = None
    private_key: SecretStr | None = None
    private_key_file: Path | None = None
    audience: str | None = None
    access_token: SecretStr | None = None
    instance_url: str | None = None
    api_version: str = Field("62.0", pattern=r"^\d{2,3}\.0$")
    ca_bundle: Path | None = None
    timeout_seconds: float = Field(30.0, gt=0, le=600)
    source: SourceSettings = SourceSettings()

    @field_validator("login_url", "instance_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not re.match(r"^https://[^/\s]+(/[^\s]*)?$", value):
            raise ValueError("must be an https:// URL such as https://login.salesforce.com")
        return value.rstrip("/")

    def problems(self, key: str) -> list[str]:
        """What this connection is missing for its auth kind, as operator-facing messages."""
        found: list[str] = []
        for field in _NEEDS[self.auth]:
            if getattr(self, field) in (None, ""):
                found.append(
                    f"{env_name(key, field)} ({key}.{field}): required when auth = {self.auth!r}"
                )
        if self.auth == "jwt" and self.private_key is None and self.private_key_file is None:
            found.append(
                f"{env_name(key, 'private_key_file')} ({key}.private_key_file) or "
                f"{env_name(key, 'private_key')}: auth = 'jwt' needs the connected app's "
                "private key (PEM)"
            )
        if self.private_key_file is not None and not self.private_key_file.is_file():
            found.append(
                f"{env_name(key, 'private_key_file')} ({key}.private_key_file): "
                f"no such file: {self.private_key_file}"
            )
        if self.ca_bundle is not None and not self.ca_bundle.exists():
            found.append(
                f"{env_name(key, 'ca_bundle')} ({key}.ca_bundle): no such file: {self.ca_bundle}"
            )
        return found


class VendorSettings(_Section):
    name: str = "FirmWorks"
    grantee_names: Annotated[list[str], NoDecode, BeforeValidator(_split_list)] = Field(
        default_factory=lambda: ["FirmWorks Support"], min_length=1
    )
    publisher_org_id: str | None = None
    support_email: str | None = None
    # The support team's usernames in customer orgs (shell patterns: *@firmworks.example):
    # a Login-As use by one of them is support entering an org.
    support_usernames: Annotated[list[str], NoDecode, BeforeValidator(_split_list)] = Field(
        default_factory=list
    )

    @field_validator("publisher_org_id")
    @classmethod
    def _org_id(cls, value: str | None) -> str | None:
        if value is not None and not ORG_ID.match(value):
            raise ValueError("must be a 15 or 18 character org id starting with 00D")
        return value


class SyncSettings(_Section):
    api_floor: int = Field(500, ge=0)
    api_floor_recheck_seconds: int = Field(900, ge=0)
    retry_attempts: int = Field(5, ge=1, le=20)
    retry_timeout_seconds: float = Field(120.0, gt=0)
    full_every_hours: float = Field(24.0, gt=0)


CapDuration = Annotated[timedelta, BeforeValidator(partial(_duration_in, MAX_DURATION))]
EmailList = Annotated[list[str], NoDecode, BeforeValidator(_split_list)]


class MailSettings(_Section):
    backend: Literal["smtp", "file", "console"] = "file"
    from_: str | None = Field(None, alias="from")
    smtp_host: str = "localhost"
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    smtp_timeout_seconds: float = Field(30.0, gt=0, le=600)
    file_dir: Path = Path("var/outbox")
    # Overrides of the packaged templates (reminder/revoked/rejected .subject/.txt/.html.j2).
    templates_dir: Path | None = None
    # Admin contacts of every org, in addition to each org's own (``[orgs."00D…"]``).
    admin_contacts: EmailList = Field(default_factory=list)

    @field_validator("from_", "admin_contacts")
    @classmethod
    def _addresses(cls, value: Any) -> Any:
        for address in [value] if isinstance(value, str) else value or []:
            if "@" not in address or any(c in address for c in "\r\n"):
                raise ValueError("must be an email address such as support@firmworks.example")
        return value


class PolicySettings(_Section):
    # Salesforce's own maximum; a longer grant is honoured up to this and revoked there.
    max_duration: CapDuration = timedelta(days=365)


class RegistrySettings(_Section):
    """``[registry]``: what every org of the connection registry (``firmgrant orgs``) shares —
    the vendor's connected app — and how the worker polls them."""

    auth: Literal["jwt", "client_credentials"] = "jwt"
    client_id: str | None = None
    client_secret: SecretStr | None = None
    private_key: SecretStr | None = None
    private_key_file: Path | None = None
    ca_bundle: Path | None = None
    api_version: str = Field("62.0", pattern=r"^\d{2,3}\.0$")
    timeout_seconds: float = Field(30.0, gt=0, le=600)
    # Fernet keys (comma-separated, newest first) that encrypt per-org secrets at rest;
    # older keys still decrypt, so keys rotate (`firmgrant orgs rotate-keys`).
    keys: Annotated[list[SecretStr], NoDecode, BeforeValidator(_split_list)] = Field(
        default_factory=list
    )
    # Orgs one worker syncs at once, and how long it holds an org it took.
    pool: int = Field(4, ge=1, le=64)
    lease_seconds: int = Field(600, ge=10, le=86400)
    # A failing org waits poll_seconds × 2^failures, up to this, before it is tried again.
    backoff_max_seconds: int = Field(3600, ge=60, le=86400)


class WorkerSettings(_Section):
    # How long a worker holds a revocation or email it took before another may take it over.
    lease_seconds: int = Field(300, ge=10, le=86400)
    # Retries of a failed revocation or a temporarily refused email: backoff doubles up to this.
    retry_max_seconds: int = Field(3600, ge=1, le=86400)
    retry_first_seconds: int = Field(60, ge=0, le=86400)


LINK_FIELDS = ("org_id", "org_name", "connection", "source_id", "grant_id", "grantor")


class WebSettings(_Section):
    """``[web]``: the support dashboard (``firmgrant web``)."""

    # Signs the session cookie: the same on every replica, so a person stays signed in.
    session_secret: SecretStr | None = None
    # Where people reach the dashboard; https:// makes the cookie Secure.
    public_url: str = Field("http://127.0.0.1:8000", pattern=r"^https?://[^\s/?#]+(/\S*)?$")
    session_hours: float = Field(12.0, gt=0, le=24 * 30)
    sign_in_attempts: int = Field(5, ge=1, le=100)
    lockout_minutes: float = Field(15.0, ge=0, le=24 * 60)
    page_size: int = Field(50, ge=10, le=500)
    # Where support logs in to an org, e.g. "https://vendor.lightning.force.com/…?org={org_id}";
    # placeholders: {org_id} {org_name} {connection} {source_id} {grant_id} {grantor}.
    login_url_template: str | None = None
    # Single sign-on with OpenID Connect (Google Workspace, Okta, Entra ID, …): the issuer's
    # URL (its /.well-known/openid-configuration is read) and this app's client there. The
    # provider's redirect URI to register: <public_url>/sign-in/sso/callback.
    oidc_issuer: str | None = Field(None, pattern=r"^https?://[^\s?#]+$")
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    oidc_button: str = "Sign in with single sign-on"

    def url(self, path: str) -> str:
        """Where people reach ``path`` of the dashboard (links in notices, SSO's redirect)."""
        return self.public_url.rstrip("/") + path

    def sso_problems(self) -> list[str]:
        if self.oidc_issuer is None:
            return []
        problems = []
        if not self.oidc_issuer.startswith(("https://", "http://127.0.0.1", "http://localhost")):
            problems.append(
                f"{env_name('web', 'oidc_issuer')} (web.oidc_issuer): must start with https://"
            )
        if self.oidc_client_id is None:
            problems.append(
                f"{env_name('web', 'oidc_client_id')} (web.oidc_client_id): required with "
                "web.oidc_issuer: the client id the identity provider gave firmgrant"
            )
        return problems

    @field_validator("login_url_template")
    @classmethod
    def _placeholders(cls, value: str | None) -> str | None:
        if value is None:
            return value
        import string

        for _, field, _, _ in string.Formatter().parse(value):
            if field is not None and field not in LINK_FIELDS:
                raise ValueError(f"unknown placeholder {{{field}}}: use {', '.join(LINK_FIELDS)}")
        if not value.startswith("https://"):
            raise ValueError("must start with https://")
        return value


NOTICE_LEAD = DurationRange(timedelta(minutes=1), timedelta(days=30))


def _notice_kinds(value: Any) -> Any:
    items = _split_list(value)
    if not isinstance(items, list):
        return items
    words = {kind.word: kind for kind in NoticeKind}
    unknown = [str(item) for item in items if str(item) not in words]
    if unknown:
        raise ValueError(f"unknown notice {', '.join(unknown)}: use {', '.join(words)}")
    return [words[str(item)] for item in items]


class SupportSettings(_Section):
    """``[support]``: notices to the vendor's support team as grants arrive, are extended,
    are about to end or are rejected: by webhook, by email, or both."""

    # The support queue's addresses (sent through the mail backend, like customers' emails).
    email: EmailList = Field(default_factory=list)
    # A Slack incoming webhook, or any endpoint taking signed JSON (a secret: it carries a token).
    webhook_url: SecretStr | None = None
    webhook_format: Literal["slack", "json"] = "slack"
    # HMAC-SHA256 key of the json format's X-Firmgrant-Signature (required with it).
    webhook_secret: SecretStr | None = None
    webhook_timeout_seconds: float = Field(10.0, gt=0, le=120)
    notices: Annotated[list[NoticeKind], NoDecode, BeforeValidator(_notice_kinds)] = Field(
        default_factory=lambda: list(NoticeKind)
    )
    # How long before a grant's access ends support is told it is ending.
    ending_within: Annotated[timedelta, BeforeValidator(partial(_duration_in, NOTICE_LEAD))] = (
        timedelta(hours=1)
    )

    @field_validator("email")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        return MailSettings._addresses(value)  # type: ignore[no-any-return]

    @field_validator("webhook_url")
    @classmethod
    def _https(cls, value: SecretStr | None) -> SecretStr | None:
        url = value.get_secret_value() if value is not None else ""
        if value is not None and not url.startswith(
            ("https://", "http://127.0.0.1", "http://localhost")
        ):
            raise ValueError("must start with https:// (plain http only to 127.0.0.1 or localhost)")
        return value

    def channels(self) -> list[Channel]:
        """Where notices go: none when neither an address nor a webhook is set."""
        return [
            *([Channel.EMAIL] if self.email else []),
            *([Channel.WEBHOOK] if self.webhook_url is not None else []),
        ]

    def problems(self) -> list[str]:
        if self.webhook_format == "json" and self.webhook_secret is None:
            return [
                f"{env_name('support', 'webhook_secret')} (support.webhook_secret): required "
                "with webhook_format = json, so receivers can check the signature"
            ]
        return []


class OrgSettings(_Section):
    """``[orgs."00D…"]``: per customer org (TOML only: environment names lose the Id's case)."""

    admin_emails: EmailList = Field(default_factory=list)

    @field_validator("admin_emails")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        return MailSettings._addresses(value)  # type: ignore[no-any-return]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
        frozen=True,
    )

    database_url: SecretStr = Field(
        SecretStr("sqlite:///var/firmgrant.db"),
        validation_alias=AliasChoices("FIRMGRANT_DATABASE_URL", "DATABASE_URL", "database_url"),
    )
    poll_seconds: int = Field(60, ge=5, le=86400)
    reminders: Annotated[tuple[timedelta, ...], NoDecode, BeforeValidator(_parse_offsets)] = (
        timedelta(days=7),
        timedelta(days=1),
        timedelta(hours=1),
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    connections: dict[str, ConnectionSettings] = Field(default_factory=dict)
    vendor: VendorSettings = VendorSettings()
    sync: SyncSettings = SyncSettings()
    mail: MailSettings = MailSettings()
    policy: PolicySettings = PolicySettings()
    worker: WorkerSettings = WorkerSettings()
    registry: RegistrySettings = RegistrySettings()
    web: WebSettings = WebSettings()
    support: SupportSettings = SupportSettings()
    orgs: dict[str, OrgSettings] = Field(default_factory=dict)

    @field_validator("orgs")
    @classmethod
    def _org_ids(cls, value: dict[str, OrgSettings]) -> dict[str, OrgSettings]:
        for org_id in value:
            if not ORG_ID.match(org_id):
                raise ValueError(f"{org_id!r} is not an org id (00D…, 15 or 18 characters)")
        # The 15-character Id is the case-sensitive identity; the 18 adds a checksum.
        return {org_id[:15]: org for org_id, org in value.items()}

    def admin_contacts(self, org_id: str) -> list[str]:
        """Who besides the grantor hears about this org's grants (15- or 18-character Id)."""
        own = self.orgs.get(org_id[:15])
        return [*self.mail.admin_contacts, *(own.admin_emails if own else [])]

    @field_validator("connections")
    @classmethod
    def _connection_names(
        cls, value: dict[str, ConnectionSettings]
    ) -> dict[str, ConnectionSettings]:
        for name in value:
            if not CONNECTION_NAME.match(name):
                raise ValueError(
                    f"connection name {name!r} must be lower-case letters, digits, - or _"
                )
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=_toml_file.get())
        return (init_settings, env_settings, dotenv_settings, toml)

    def in_setup_only(self, connection: str) -> bool:
        """This connection's grants live only in the customer's Setup (the audit source):
        firmgrant cannot revoke them; the customer (and their admins) must."""
        found = self.connections.get(connection)
        return found is not None and found.source.kind == SourceKind.AUDIT

    def connection(self, name: str | None = None) -> tuple[str, ConnectionSettings]:
        if name is None:
            if len(self.connections) != 1:
                raise ConfigError(
                    "several connections are configured: name one with --connection"
                    if self.connections
                    else _NO_CONNECTION
                )
            return next(iter(self.connections.items()))
        try:
            return name, self.connections[name]
        except KeyError:
            known = ", ".join(sorted(self.connections)) or "none"
            raise ConfigError(f"no connection named {name!r} (configured: {known})") from None


_NO_CONNECTION = (
    "no Salesforce connection is configured: set FIRMGRANT_CONNECTIONS__<NAME>__LOGIN_URL, "
    "__AUTH and the keys the auth kind needs (see config/firmgrant.example.toml), or "
    "register customer orgs with `firmgrant orgs add` / `orgs import`"
)


def env_name(*parts: str | int) -> str:
    """``("connections", "main", "auth")`` → ``FIRMGRANT_CONNECTIONS__MAIN__AUTH``."""
    dotted = ".".join(str(p) for p in parts)
    return ENV_PREFIX + "__".join(part.upper() for part in dotted.split("."))


def _describe(error: Any) -> str:
    loc = [str(p) for p in error["loc"]]
    if loc and loc[0] in {"FIRMGRANT_DATABASE_URL", "DATABASE_URL", "database_url"}:
        loc = ["database_url"]
    # pydantic adds the validator's kind to the path for tagged unions; drop it from names.
    loc = [p for p in loc if not p.startswith("function-")]
    key = ".".join(loc) or "(settings)"
    # Only the message: the input value is never shown because it may be a secret.
    return f"{env_name(*loc) if loc else ENV_PREFIX + '*'} ({key}): {error['msg']}"


def load_settings(config_file: Path | None = None, env_file: Path | None = None) -> Settings:
    """Read and check every setting, or raise ConfigError listing each problem."""
    path = config_file or Path(os.environ.get("FIRMGRANT_CONFIG", str(DEFAULT_CONFIG_FILE)))
    if (config_file is not None or "FIRMGRANT_CONFIG" in os.environ) and not path.is_file():
        raise ConfigError(f"FIRMGRANT_CONFIG / --config: no such file: {path}")
    if path.is_file():
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        # Sections refuse unknown keys themselves; the top level ignores unknown environment
        # variables (a .env may hold PORT and friends), so TOML typos are caught here.
        unknown = sorted(set(document) - set(Settings.model_fields))
        if unknown:
            raise ConfigError(
                f"{path}: unknown setting(s) {', '.join(unknown)} "
                "(see config/firmgrant.example.toml)"
            )
    token = _toml_file.set(path)
    try:
        kwargs: dict[str, Any] = {} if env_file is None else {"_env_file": env_file}
        settings = Settings(**kwargs)
    except ValidationError as exc:
        problems = [_describe(error) for error in exc.errors()]
        raise ConfigError("invalid settings:\n  " + "\n  ".join(problems)) from None
    finally:
        _toml_file.reset(token)
    problems = [
        problem
        for name, connection in settings.connections.items()
        for problem in connection.problems(f"connections.{name}")
    ]
    problems += settings.support.problems() + settings.web.sso_problems()
    audit = sorted(n for n, c in settings.connections.items() if c.source.kind == SourceKind.AUDIT)
    if audit and settings.vendor.publisher_org_id is None:
        problems.append(
            f"{env_name('vendor', 'publisher_org_id')} (vendor.publisher_org_id): required by "
            f"the audit source (connections {', '.join(audit)}): the audit trail names the "
            "publisher by its org id"
        )
    if problems:
        raise ConfigError("invalid settings:\n  " + "\n  ".join(problems))
    return settings
