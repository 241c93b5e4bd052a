"""Salesforce access: firmgrant's own token requests, a retrying client, and grant sources."""

from firmgrant.grant import GrantRecord
from firmgrant.salesforce.auth import Authenticator, Token
from firmgrant.salesforce.client import ApiUsage, SalesforceClient, make_session
from firmgrant.salesforce.records import InvalidRecord, parse_record
from firmgrant.salesforce.sources import ObjectSource

__all__ = [
    "ApiUsage",
    "Authenticator",
    "GrantRecord",
    "InvalidRecord",
    "ObjectSource",
    "SalesforceClient",
    "Token",
    "make_session",
    "parse_record",
]
