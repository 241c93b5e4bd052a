"""firmgrant: keeps a vendor's Login Access to its customers' Salesforce orgs honest."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("firmgrant")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
