"""The sandbox org: an emulated Salesforce over HTTPS on loopback (demo, tests, benchmarks)."""

from firmgrant.sandbox.faults import FaultPlan
from firmgrant.sandbox.server import CONNECTION, VENDOR, SandboxOrg

__all__ = ["CONNECTION", "VENDOR", "FaultPlan", "SandboxOrg"]
