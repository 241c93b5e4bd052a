"""The public surface: what `firmgrant` exports, and every deliberate error in one tree."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import firmgrant
from firmgrant import errors

# The tree errors.py draws, written out: a change to it is a change to a public contract.
TREE = {
    "FirmgrantError": "Exception",
    "ConfigError": "FirmgrantError",
    "WorkerLocked": "ConfigError",
    "DurationError": "FirmgrantError",
    "LedgerError": "FirmgrantError",
    "LedgerUnavailable": "LedgerError",
    "SchemaOutOfDate": "LedgerError",
    "GrantNotFound": "FirmgrantError",
    "SalesforceError": "FirmgrantError",
    "AuthenticationError": "SalesforceError",
    "SalesforceUnavailable": "SalesforceError",
    "ApiLimitExceeded": "SalesforceError",
    "SalesforceApiError": "SalesforceError",
    "MailError": "FirmgrantError",
    "TemporaryMailError": "MailError",
    "MailServerUnavailable": "TemporaryMailError",
    "PermanentMailError": "MailError",
    "WebhookError": "FirmgrantError",
    "WebhookUnavailable": "WebhookError",
    "WebhookRefused": "WebhookError",
    "SandboxUnreachable": "FirmgrantError",
    "RegistryError": "FirmgrantError",
    "AccountError": "FirmgrantError",
    "SignInRefused": "AccountError",
}
EXIT_CODES = {
    "ConfigError": 2,
    "DurationError": 2,
    "SchemaOutOfDate": 2,
    "WorkerLocked": 2,
    "RegistryError": 2,
    "AccountError": 2,
}


def test_the_package_exports_its_version_only() -> None:
    assert firmgrant.__all__ == ["__version__"]


def test_errors_py_holds_the_tree_its_docstring_draws() -> None:
    found = {
        name: cls.__bases__[0].__name__
        for name, cls in vars(errors).items()
        if inspect.isclass(cls) and issubclass(cls, Exception)
    }
    assert found == TREE
    drawn = errors.__doc__ or ""
    for name in TREE:
        assert name in drawn, f"{name} is not in the docstring's tree"
    assert issubclass(errors.DurationError, ValueError)  # argparse and pydantic report it
    for name, code in EXIT_CODES.items():
        assert getattr(errors, name).exit_code == code


def test_no_module_raises_an_error_of_its_own_making() -> None:
    outside = []
    for module in pkgutil.walk_packages(firmgrant.__path__, "firmgrant."):
        if module.name.endswith("__main__") or ".migrations" in module.name:
            continue
        loaded = importlib.import_module(module.name)
        for name, cls in vars(loaded).items():
            if (
                inspect.isclass(cls)
                and issubclass(cls, errors.FirmgrantError)
                and cls.__module__ != "firmgrant.errors"
            ):
                outside.append(f"{module.name}.{name}")
    assert outside == []
