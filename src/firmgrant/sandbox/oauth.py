"""The sandbox's ``/services/oauth2/token``: JWT bearer, client credentials, password."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

import jwt

from firmgrant.timeutil import utcnow

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@dataclass
class ConnectedApp:
    client_id: str
    client_secret: str
    public_key_pem: bytes  # from the certificate uploaded to the connected app
    username: str
    password: str
    security_token: str
    org_id: str
    user_id: str


@dataclass
class Sessions:
    """Issued access tokens; expiring them is what an admin's "end all sessions" does."""

    tokens: set[str] = field(default_factory=set, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock)
    issued: int = 0  # tokens issued since the sandbox started

    def issue(self, org_id: str) -> str:
        token = f"{org_id[:15]}!{secrets.token_urlsafe(48)}"
        with self.lock:
            self.tokens.add(token)
            self.issued += 1
        return token

    def valid(self, token: str) -> bool:
        with self.lock:
            return token in self.tokens

    def expire_all(self) -> None:
        with self.lock:
            self.tokens.clear()


def _refuse(error: str, description: str) -> tuple[int, dict[str, Any]]:
    return 400, {"error": error, "error_description": description}


def token_request(
    form: dict[str, str], app: ConnectedApp, sessions: Sessions, base_url: str
) -> tuple[int, dict[str, Any]]:
    grant_type = form.get("grant_type")
    if grant_type == JWT_GRANT:
        try:
            claims = jwt.decode(
                form.get("assertion", ""),
                app.public_key_pem,
                algorithms=["RS256"],
                audience=[base_url, "https://login.salesforce.com", "https://test.salesforce.com"],
                options={"require": ["exp", "iss", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            return _refuse("invalid_grant", "expired authorization code")
        except jwt.InvalidAudienceError:
            return _refuse("invalid_grant", "audience is invalid")
        except jwt.PyJWTError:
            return _refuse("invalid_grant", "invalid assertion")
        if claims["iss"] != app.client_id:
            return _refuse("invalid_client_id", "client identifier invalid")
        if claims["sub"] != app.username:
            return _refuse("invalid_grant", "user hasn't approved this consumer")
        if claims["exp"] - utcnow().timestamp() > 300:
            return _refuse("invalid_grant", "invalid assertion")
    elif grant_type in ("client_credentials", "password"):
        if form.get("client_id") != app.client_id:
            return _refuse("invalid_client_id", "client identifier invalid")
        if not hmac.compare_digest(form.get("client_secret", ""), app.client_secret):
            return _refuse("invalid_client", "invalid client credentials")
        if grant_type == "password" and (
            form.get("username") != app.username
            or form.get("password") != app.password + app.security_token
        ):
            return _refuse("invalid_grant", "authentication failure")
    else:
        return _refuse("unsupported_grant_type", "grant type not supported")
    issued_at = str(int(utcnow().timestamp() * 1000))
    identity = f"{base_url}/id/{app.org_id}/{app.user_id}"
    signature = hmac.new(
        app.client_secret.encode(), (identity + issued_at).encode(), hashlib.sha256
    ).digest()
    return 200, {
        "access_token": sessions.issue(app.org_id),
        "instance_url": base_url,
        "id": identity,
        "token_type": "Bearer",
        "issued_at": issued_at,
        "signature": base64.b64encode(signature).decode(),
        "scope": "api",
    }
