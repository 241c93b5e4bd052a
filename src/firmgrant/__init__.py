"""firmgrant: keeps a vendor's Login Access to its customers' Salesforce orgs honest."""

# The one place the version is written (pyproject.toml reads it): importlib.metadata
# would cost every command its start-up time to find it.
__version__ = "0.1.0"

__all__ = ["__version__"]
