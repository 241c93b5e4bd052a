"""Helpers for tests that talk to the sandbox org over HTTPS."""

from __future__ import annotations

from typing import Any

import requests
from simple_salesforce.api import Salesforce

from firmgrant.sandbox import VENDOR, SandboxOrg
from firmgrant.settings import ConnectionSettings, SourceSettings, VendorSettings


def sandbox_connection(org: SandboxOrg, **overrides: Any) -> ConnectionSettings:
    """What the sandbox's connection.env says, as settings."""
    values: dict[str, Any] = {
        "login_url": org.base_url,
        "auth": "jwt",
        "client_id": org.app.client_id,
        "username": org.app.username,
        "private_key_file": org.state / "jwt.key",
        "ca_bundle": org.state / "tls.crt",
    }
    batch_size = overrides.pop("batch_size", None)
    if batch_size:
        values["source"] = SourceSettings(batch_size=batch_size)
    return ConnectionSettings.model_validate({**values, **overrides})


def vendor(org: SandboxOrg) -> VendorSettings:
    return VendorSettings(grantee_names=[VENDOR], publisher_org_id=org.app.org_id)


def independent_client(org: SandboxOrg) -> Salesforce:
    """simple-salesforce on its own, as any Salesforce client would use the org."""
    session = requests.Session()
    session.trust_env = False
    session.verify = str(org.state / "tls.crt")
    token = session.post(
        f"{org.base_url}/services/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": org.app.client_id,
            "client_secret": org.app.client_secret,
        },
        timeout=10,
    ).json()
    return Salesforce(
        instance_url=token["instance_url"], session_id=token["access_token"], session=session
    )
