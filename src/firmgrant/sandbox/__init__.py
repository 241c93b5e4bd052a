"""The sandbox org: an emulated Salesforce over HTTPS on loopback (demo, tests, benchmarks)."""

from firmgrant.sandbox.faults import FaultPlan
from firmgrant.sandbox.server import CONNECTION, VENDOR, SandboxOrg, read_connection_env

__all__ = ["CONNECTION", "VENDOR", "FaultPlan", "SandboxOrg", "read_connection_env"]
