"""firmgrant's own OAuth 2.0 token request against a configurable login URL.

simple-salesforce only logs in at ``https://{domain}.salesforce.com``; firmgrant asks the
configured ``login_url`` (My Domain, test.salesforce.com, or the sandbox org on loopback) and
hands the resulting token to simple-salesforce.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from pydantic import SecretStr

from firmgrant.errors import AuthenticationError, ConfigError
from firmgrant.salesforce._retry import TransientHTTPError, with_backoff
from firmgrant.settings import ConnectionSettings, SyncSettings, env_name
from firmgrant.timeutil import utcnow

log = logging.getLogger("firmgrant.salesforce")
JWT_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# Salesforce accepts assertions valid for at most 3 minutes.
JWT_LIFETIME = timedelta(minutes=3)


@dataclass(frozen=True)
class Token:
    access_token: SecretStr = field(repr=False)
    instance_url: str
    identity: str | None = None  # the token response's ``id``: …/id/<org id>/<user id>

    @property
    def org_id(self) -> str | None:
        """The org's 18-character Id from the identity URL; else the 15 that starts every
        Salesforce access token (``00D…!…``)."""
        if self.identity:
            parts = self.identity.rstrip("/").split("/")
            if len(parts) >= 2 and parts[-2].startswith("00D"):
                return parts[-2]
        head = self.access_token.get_secret_value().partition("!")[0]
        return head if head.startswith("00D") and len(head) in (15, 18) else None

    @property
    def user_id(self) -> str | None:
        """The Id of the user the token acts as, from the identity URL (``…/<user id>``)."""
        last = (self.identity or "").rstrip("/").rpartition("/")[2]
        return last if last.startswith("005") and len(last) in (15, 18) else None


@functools.lru_cache(maxsize=8)
def _signing_key(pem: str) -> Any:
    """The key loaded once: loading checks the RSA key, far slower than signing with it, and
    every org of the registry signs with the vendor's one key."""
    return serialization.load_pem_private_key(pem.encode(), password=None)


class Authenticator:
    """Gets access tokens for one connection, the way its ``auth`` setting says."""

    def __init__(
        self,
        name: str,
        settings: ConnectionSettings,
        session: requests.Session,
        policy: SyncSettings,
    ) -> None:
        self.name = name
        self.settings = settings
        self.session = session
        self.policy = policy

    @property
    def can_refresh(self) -> bool:
        """A ready-made token (``auth = "token"``) cannot be renewed by firmgrant."""
        return self.settings.auth != "token"

    def authenticate(self) -> Token:
        settings = self.settings
        if settings.auth == "token":
            assert settings.access_token is not None
            assert settings.instance_url is not None
            return Token(settings.access_token, settings.instance_url)
        form = self._form()
        url = f"{settings.login_url}/services/oauth2/token"
        body = with_backoff("token request", self.name, self.policy, lambda: self._post(url, form))
        try:
            token = Token(
                SecretStr(body["access_token"]),
                body["instance_url"].rstrip("/"),
                body.get("id") if isinstance(body.get("id"), str) else None,
            )
        except (KeyError, AttributeError, TypeError):
            raise AuthenticationError(
                "token response lacks access_token or instance_url", connection=self.name
            ) from None
        log.info("%s: authenticated (%s) at %s", self.name, settings.auth, token.instance_url)
        return token

    def _post(self, url: str, form: dict[str, str]) -> dict[str, Any]:
        response = self.session.post(url, data=form, timeout=self.settings.timeout_seconds)
        if response.status_code >= 500:
            raise TransientHTTPError(response.status_code, "token request")
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or not isinstance(body, dict):
            error = body.get("error", f"HTTP {response.status_code}") if body else "no JSON body"
            detail = body.get("error_description", "") if body else ""
            raise AuthenticationError(
                f"token request to {url} refused ({self.settings.auth}): {error}"
                + (f": {detail}" if detail else ""),
                connection=self.name,
            )
        return body

    def _form(self) -> dict[str, str]:
        s = self.settings
        assert s.client_id is not None
        if s.auth == "jwt":
            assert s.username is not None
            now = utcnow()
            claims = {
                "iss": s.client_id,
                "sub": s.username,
                "aud": s.audience or s.login_url,
                "exp": int((now + JWT_LIFETIME).timestamp()),
            }
            try:
                assertion = jwt.encode(claims, self._private_key(), algorithm="RS256")
            except (ValueError, TypeError, jwt.InvalidKeyError):
                raise ConfigError(
                    f"{self._key_setting()}: the private key cannot sign RS256 (need an RSA key)"
                ) from None
            return {"grant_type": JWT_GRANT_TYPE, "assertion": assertion}
        assert s.client_secret is not None
        form = {
            "client_id": s.client_id,
            "client_secret": s.client_secret.get_secret_value(),
        }
        if s.auth == "client_credentials":
            return {"grant_type": "client_credentials", **form}
        assert s.username is not None
        assert s.password is not None
        token = s.security_token.get_secret_value() if s.security_token else ""
        return {
            "grant_type": "password",
            **form,
            "username": s.username,
            "password": s.password.get_secret_value() + token,
        }

    def _private_key(self) -> Any:
        s = self.settings
        if s.private_key is not None:
            pem = s.private_key.get_secret_value()
        else:
            assert s.private_key_file is not None
            pem = s.private_key_file.read_text(encoding="ascii", errors="replace")
        if "PRIVATE KEY-----" not in pem:
            raise ConfigError(f"{self._key_setting()}: not a PEM private key")
        return _signing_key(pem)

    def _key_setting(self) -> str:
        field_name = "private_key" if self.settings.private_key is not None else "private_key_file"
        return env_name("connections", self.name, field_name)
