"""Every error firmgrant raises on purpose, in one hierarchy.

    FirmgrantError
    ├── ConfigError                a setting is missing or wrong (exit 2)
    │   └── WorkerLocked           another worker already runs on this SQLite ledger
    ├── DurationError              a duration that does not parse or is out of range
    │                              (also a ValueError: argparse and pydantic report it; exit 2)
    ├── LedgerError                the ledger database
    │   ├── LedgerUnavailable      cannot connect (exit 3)
    │   └── SchemaOutOfDate        migrations not applied (exit 2)
    ├── GrantNotFound              no grant with that id in the ledger
    ├── RegistryError              an unknown org, or bad input for one (exit 2)
    ├── AccountError               a dashboard account: unknown, taken, or bad input (exit 2)
    │   └── SignInRefused          wrong name or password, disabled, or locked for a while
    ├── SalesforceError            anything from a Salesforce org
    │   ├── AuthenticationError    the token request was refused
    │   ├── SalesforceUnavailable  5xx, timeouts, connection errors after retries (exit 3)
    │   ├── ApiLimitExceeded       REQUEST_LIMIT_EXCEEDED or below the configured floor
    │   └── SalesforceApiError     any other error body Salesforce sent
    ├── MailError                  an email could not be handed over
    │   ├── TemporaryMailError     try this one again later (connection refused, a 4xx)
    │   │   └── MailServerUnavailable  no message can go now (server down, login refused)
    │   └── PermanentMailError     refused for good (a 5xx, an address it cannot carry)
    ├── WebhookError               the support team's webhook did not take a notice
    │   ├── WebhookUnavailable     try again later (timeout, connection refused, 5xx, 429)
    │   └── WebhookRefused         refused for good (another 4xx)
    └── SandboxUnreachable         `sandbox act` cannot reach the running sandbox (exit 3)

Messages never carry secrets: they name settings, connections and Salesforce
error codes, not tokens, keys or passwords.
"""

from __future__ import annotations


class FirmgrantError(Exception):
    """Base of every error firmgrant raises on purpose."""

    exit_code = 1


class ConfigError(FirmgrantError):
    """A setting is missing or invalid; the message names it and the fix."""

    exit_code = 2


class LedgerError(FirmgrantError):
    """The ledger database could not do what was asked."""

    exit_code = 3


class LedgerUnavailable(LedgerError):
    """The ledger database cannot be reached."""


class SchemaOutOfDate(LedgerError):
    """The ledger's schema is behind this version of firmgrant."""

    exit_code = 2


class GrantNotFound(FirmgrantError):
    """No grant in the ledger has that id."""


class RegistryError(FirmgrantError):
    """An org of the connection registry is missing, or input for it is bad (exit 2); the
    message names the org or the CSV row, and nothing was half-written."""

    exit_code = 2


class AccountError(FirmgrantError):
    """A dashboard account is unknown or taken, or input for one is bad (exit 2)."""

    exit_code = 2


class SignInRefused(AccountError):
    """A sign-in failed. The message is the same whatever the cause (unknown name, wrong
    password, disabled account), so it tells an attacker nothing; ``locked`` says when an
    account locked by repeated failures opens again."""

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SalesforceError(FirmgrantError):
    """Something went wrong talking to a Salesforce org."""

    exit_code = 3

    def __init__(self, message: str, *, connection: str | None = None) -> None:
        super().__init__(f"[{connection}] {message}" if connection else message)
        self.connection = connection
        self.detail = message


class AuthenticationError(SalesforceError):
    """The org refused firmgrant's token request (wrong key, user, secret …)."""


class SalesforceUnavailable(SalesforceError):
    """Server errors, timeouts or connection failures outlasted the retries."""


class ApiLimitExceeded(SalesforceError):
    """The org's daily API allocation ran out, or fell below firmgrant's floor."""


class SalesforceApiError(SalesforceError):
    """Salesforce answered with an error body firmgrant does not retry."""

    def __init__(
        self,
        message: str,
        *,
        connection: str | None = None,
        status: int | None = None,
        error_code: str | None = None,
    ) -> None:
        super().__init__(message, connection=connection)
        self.status = status
        self.error_code = error_code


class WorkerLocked(ConfigError):
    """Another worker already runs on this SQLite ledger (SQLite allows one)."""


class DurationError(FirmgrantError, ValueError):
    """A duration that does not parse or lies outside its range; the message says which."""

    exit_code = 2


class MailError(FirmgrantError):
    """An email could not be handed over."""


class TemporaryMailError(MailError):
    """This email may go later: the server refused it for now (a 4xx) or could not be reached."""


class PermanentMailError(MailError):
    """This email will never go as it is: a 5xx, or an address the server cannot carry."""


class MailServerUnavailable(TemporaryMailError):
    """The server cannot be reached or logged into: no other message would fare better."""


class WebhookError(FirmgrantError):
    """A support notice could not be posted to the webhook (the message never holds its URL)."""


class WebhookUnavailable(WebhookError):
    """The webhook is down or busy for now: no other notice would fare better; retried."""


class WebhookRefused(WebhookError):
    """The webhook refused this notice for good (a 4xx other than 408 and 429)."""


class SandboxUnreachable(FirmgrantError):
    """`firmgrant sandbox act` could not reach the running sandbox."""

    exit_code = 3
