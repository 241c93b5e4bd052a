"""The support dashboard: ``firmgrant web``, a server-rendered Starlette app on uvicorn.

It reads the ledger through the lifecycle's one status rule and talks to Salesforce only to
revoke. Public surface: :func:`create_app` and :func:`serve`.
"""

from firmgrant.web.app import create_app, serve

__all__ = ["create_app", "serve"]
