"""The sandbox org: an emulated Salesforce over HTTPS on loopback (demo, tests, benchmarks).

The server (TLS, JWT, cryptography) loads on first use: the CLI reads the picklists in
``sandbox.schema`` for every command and should not pay for the server to do so.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from firmgrant.sandbox.faults import FaultPlan
    from firmgrant.sandbox.server import CONNECTION, VENDOR, SandboxOrg, read_connection_env

_HOMES = {
    "FaultPlan": "firmgrant.sandbox.faults",
    "CONNECTION": "firmgrant.sandbox.server",
    "VENDOR": "firmgrant.sandbox.server",
    "SandboxOrg": "firmgrant.sandbox.server",
    "read_connection_env": "firmgrant.sandbox.server",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


__all__ = ["CONNECTION", "VENDOR", "FaultPlan", "SandboxOrg", "read_connection_env"]
