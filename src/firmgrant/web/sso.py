"""Single sign-on with OpenID Connect: the authorization-code flow with PKCE, by Authlib.

``/sign-in/sso`` sends the person to the identity provider with a fresh state, nonce and
PKCE verifier kept in their session; ``/sign-in/sso/callback`` checks the state, exchanges the
code (Authlib's requests client, authenticated with the client secret if there is one) and
checks the ID token with joserfc against the provider's published keys: signature, issuer,
audience, expiry, nonce. The verified email then names the account (``accounts.sign_in_sso``):
the identity provider says who someone is, firmgrant's accounts say what they may do.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from firmgrant import accounts
from firmgrant.errors import SignInRefused
from firmgrant.settings import WebSettings
from firmgrant.web.app import context_of, render
from firmgrant.web.auth import safe_next, start_session

CALLBACK = "/sign-in/sso/callback"
TIMEOUT = 10  # seconds, for each request to the identity provider
ALGORITHMS = ["RS256", "ES256", "PS256"]


class SsoFailed(Exception):
    """Single sign-on did not vouch for anyone; the message is for the person signing in."""


@dataclass
class Provider:
    """The identity provider's endpoints and keys, read once and kept (keys reread when a
    token names one we do not have: the provider rotated them)."""

    web: WebSettings
    _metadata: dict[str, Any] | None = None
    _keys: KeySet | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def metadata(self) -> dict[str, Any]:
        with self._lock:
            if self._metadata is None:
                issuer = (self.web.oidc_issuer or "").rstrip("/")
                self._metadata = _get_json(f"{issuer}/.well-known/openid-configuration")
            return self._metadata

    def keys(self, *, fresh: bool = False) -> KeySet:
        with self._lock:
            if self._keys is None or fresh:
                assert self._metadata is not None
                published: Any = _get_json(self._metadata["jwks_uri"])
                self._keys = KeySet.import_key_set(published)
            return self._keys

    def client(self) -> OAuth2Session:
        secret = self.web.oidc_client_secret
        return OAuth2Session(
            client_id=self.web.oidc_client_id,
            client_secret=secret.get_secret_value() if secret else None,
            scope="openid email profile",
            redirect_uri=self.web.url(CALLBACK),
            code_challenge_method="S256",
        )

    def authorization_url(self, state: str, nonce: str, verifier: str) -> str:
        url, _ = self.client().create_authorization_url(
            self.metadata()["authorization_endpoint"],
            state=state, code_verifier=verifier, nonce=nonce,
        )  # fmt: skip
        return str(url)

    def email_of(self, code: str, verifier: str, nonce: str) -> str:
        """Exchange the code; the verified email the ID token vouches for."""
        metadata = self.metadata()
        try:
            token = self.client().fetch_token(
                metadata["token_endpoint"], code=code, code_verifier=verifier, timeout=TIMEOUT
            )
        except (AuthlibBaseError, requests.RequestException, ValueError) as exc:
            problem = getattr(exc, "error", None) or type(exc).__name__
            raise SsoFailed(f"the identity provider refused the sign-in ({problem})") from None
        id_token = token.get("id_token")
        if not id_token:
            raise SsoFailed("the identity provider sent no ID token")
        claims = self._claims(str(id_token), metadata["issuer"], nonce)
        email = claims.get("email")
        if not email or claims.get("email_verified") is False:
            raise SsoFailed("the identity provider did not vouch for an email address")
        return str(email)

    def _claims(self, id_token: str, issuer: str, nonce: str) -> dict[str, Any]:
        try:
            try:
                decoded = jwt.decode(id_token, self.keys(), algorithms=ALGORITHMS)
            except JoseError:
                decoded = jwt.decode(id_token, self.keys(fresh=True), algorithms=ALGORITHMS)
            jwt.JWTClaimsRegistry(
                now=int(time.time()), leeway=60,
                iss={"essential": True, "value": issuer},
                aud={"essential": True, "value": self.web.oidc_client_id or ""},
                exp={"essential": True},
                nonce={"essential": True, "value": nonce},
            ).validate(decoded.claims)  # fmt: skip
        except JoseError as exc:
            raise SsoFailed(f"the ID token did not check out ({exc.error})") from None
        return dict(decoded.claims)


def _get_json(url: str) -> dict[str, Any]:
    try:
        response = requests.get(url, timeout=TIMEOUT)
        response.raise_for_status()
        found: dict[str, Any] = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise SsoFailed(f"the identity provider cannot be reached ({type(exc).__name__})") from None
    return found


def provider_of(request: Request) -> Provider:
    provider: Provider = request.app.state.sso
    return provider


async def start(request: Request) -> Response:
    if request.app.state.sso is None:
        return _failed(request, "Single sign-on is not set up on this dashboard.", 404)
    pending = {
        "state": secrets.token_urlsafe(24),
        "nonce": secrets.token_urlsafe(24),
        "verifier": secrets.token_urlsafe(48),
        "next": safe_next(request.query_params.get("next")),
    }
    try:
        url = await run_in_threadpool(
            provider_of(request).authorization_url,
            pending["state"], pending["nonce"], pending["verifier"],
        )  # fmt: skip
    except SsoFailed as exc:
        return _failed(request, f"Not signed in: {exc}.", 502)
    request.session["sso"] = pending
    return RedirectResponse(url, status_code=303)


async def callback(request: Request) -> Response:
    pending = request.session.pop("sso", None)
    params = request.query_params
    if request.app.state.sso is None:
        return _failed(request, "Single sign-on is not set up on this dashboard.", 404)
    if not isinstance(pending, dict) or params.get("state") != pending.get("state"):
        return _failed(request, "This sign-in link has expired: start again.", 400)
    if params.get("error") or not params.get("code"):
        said = params.get("error_description") or params.get("error") or "no code"
        return _failed(request, f"Not signed in: the identity provider said {said[:200]!r}.", 401)
    context = context_of(request)
    try:
        email = await run_in_threadpool(
            provider_of(request).email_of, str(params["code"]), pending["verifier"],
            pending["nonce"],
        )  # fmt: skip
        person = await run_in_threadpool(
            accounts.sign_in_sso, context.ledger, email, now=context.clock()
        )
    except (SsoFailed, SignInRefused) as exc:
        return _failed(request, f"Not signed in: {exc}.", 403)
    start_session(request, person)
    return RedirectResponse(str(pending.get("next") or "/"), status_code=303)


def _failed(request: Request, message: str, status: int) -> Response:
    return render(request, "sign_in.html", {"next": "/", "error": message, "name": ""}, status)


def routes() -> list[BaseRoute]:
    return [
        Route("/sign-in/sso", start, methods=["GET"]),
        Route(CALLBACK, callback, methods=["GET"]),
    ]


__all__ = ["CALLBACK", "Provider", "SsoFailed", "routes"]
