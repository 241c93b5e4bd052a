"""The sandbox org served over HTTPS on loopback, with its state directory and control API."""

from __future__ import annotations

import json
import logging
import random
import secrets
import shlex
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt

from firmgrant.sandbox import subscriber
from firmgrant.sandbox.api import Request, Response, RestApi
from firmgrant.sandbox.certs import ensure_material, public_key_pem
from firmgrant.sandbox.customers import Customers
from firmgrant.sandbox.faults import FaultInjector, FaultPlan
from firmgrant.sandbox.oauth import ConnectedApp, Sessions
from firmgrant.sandbox.schema import GRANT, make_id
from firmgrant.sandbox.store import OrgStore, SalesforceFault
from firmgrant.sandbox.tenants import Tenants
from firmgrant.timeutil import Clock, parse_sf_datetime, utcnow

log = logging.getLogger("firmgrant.sandbox")
VENDOR = "FirmWorks Support"
CONNECTION = "sandbox"


def _token_user(body: bytes) -> str | None:
    """Whose token a token request asks for (routing only: the org checks it all)."""
    form = {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}
    if form.get("username"):
        return form["username"]
    try:
        claims = jwt.decode(form.get("assertion", ""), options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    sub = claims.get("sub")
    return sub if isinstance(sub, str) else None


def read_connection_env(path: Path) -> dict[str, str]:
    """The variables of a ``connection.env`` (what ``set -a; . connection.env`` exports)."""
    variables = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            variables[name] = shlex.split(value)[0]
    return variables


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    org: SandboxOrg
    tls: ssl.SSLContext
    keep_alive: float

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handshakes = 0  # TLS connections accepted
        self.counting = threading.Lock()

    def finish_request(self, request: Any, client_address: Any) -> None:
        # Headers and body go out in two writes: without this, Nagle's algorithm holds the
        # body until the client's delayed ACK, some 40 ms a response.
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The TLS handshake runs in the connection's own thread, never in the accept loop.
        try:
            request = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        with self.counting:
            self.handshakes += 1
        try:
            super().finish_request(request, client_address)
        finally:
            # shutdown_request() closes the raw socket, which wrapping detached: the TLS one
            # must be closed here, or a handler caught in a reference cycle keeps the
            # connection open, unserved, until a garbage collection, and a client reusing it
            # waits out its read timeout (a stale keep-alive cost an idle cycle 30 s).
            request.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.keep_alive)  # an idle keep-alive is dropped then

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        request = Request(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=self.rfile.read(length) if length else b"",
        )
        response = self.server.org.dispatch(request)
        payload = response.encoded()
        self.send_response(response.status)
        if payload and "Content-Type" not in response.headers:
            self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.client_address[0], *args)


class SandboxOrg:
    """An emulated Salesforce org: data, customers, auth, faults and its HTTPS server."""

    def __init__(
        self,
        state: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        random_seed: int | None = None,
        faults: FaultPlan | None = None,
        clock: Clock = utcnow,
        persist: bool = True,
        api_version: str = "62.0",
        keep_alive_seconds: float = 60.0,
    ) -> None:
        self.state = state.resolve()
        self.persist = persist
        ensure_material(self.state)
        self.store = OrgStore(clock=clock, api_version=api_version)
        self.app = self._connected_app()
        self.sessions = Sessions()
        self.faults = FaultInjector(faults or FaultPlan(), random_seed)
        self.customers = Customers(
            self.store,
            vendor=VENDOR,
            publisher_org_id=self.app.org_id,
            rng=random.Random(random_seed),
        )
        self._server = _Server((host, port), _Handler, bind_and_activate=True)
        self._server.org = self
        self._server.keep_alive = keep_alive_seconds
        self._server.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server.tls.load_cert_chain(self.state / "tls.crt", self.state / "tls.key")
        bound_host, bound_port = self._server.server_address[:2]
        self.base_url = f"https://{bound_host!s}:{bound_port}"
        self.api = RestApi(
            self.store, self.app, self.sessions, self.faults, self.base_url, api_version
        )
        self.tenants = Tenants(
            app=self.app,
            vendor=(VENDOR, self.app.org_id),
            make_api=lambda store: RestApi(
                store, self.app, self.sessions, self.faults, self.base_url, api_version
            ),
            clock=clock,
            rng=random.Random(random_seed),
        )
        self._thread: threading.Thread | None = None
        self._load()

    # -- identity and files ------------------------------------------------------------------
    def _connected_app(self) -> ConnectedApp:
        path = self.state / "app.json"
        if path.exists():
            data = json.loads(path.read_text())
        else:
            data = {
                "client_id": "3MVG9sandbox" + secrets.token_hex(12),
                "client_secret": secrets.token_hex(24),
                "username": "integration@firmworks.sandbox",
                "password": secrets.token_hex(8),
                "security_token": secrets.token_hex(6),
                "org_id": make_id("00D", 1, pod="5e0"),
                "user_id": make_id("005", 1, pod="5e0"),
                "control_key": secrets.token_hex(16),
            }
            path.write_text(json.dumps(data, indent=2))
            path.chmod(0o600)
        self.control_key: str = data.pop("control_key")
        return ConnectedApp(public_key_pem=public_key_pem(self.state / "jwt.crt"), **data)

    def connection_env(self) -> str:
        prefix = f"FIRMGRANT_CONNECTIONS__{CONNECTION.upper()}__"
        values = {
            f"{prefix}LOGIN_URL": self.base_url,
            f"{prefix}AUTH": "jwt",
            f"{prefix}CLIENT_ID": self.app.client_id,
            f"{prefix}USERNAME": self.app.username,
            f"{prefix}PRIVATE_KEY_FILE": str(self.state / "jwt.key"),
            f"{prefix}CA_BUNDLE": str(self.state / "tls.crt"),
            "FIRMGRANT_VENDOR__GRANTEE_NAMES": VENDOR,
            "FIRMGRANT_VENDOR__PUBLISHER_ORG_ID": self.app.org_id,
        }
        lines = [
            f"# firmgrant sandbox org at {self.base_url}: `set -a; . {self.state}/"
            "connection.env; set +a` and run firmgrant"
        ]
        lines += [f"{key}={shlex.quote(value)}" for key, value in values.items()]
        return "\n".join(lines) + "\n"

    def write_files(self) -> None:
        """``connection.env`` for workers and ``control.json`` for `firmgrant sandbox act`;
        ``customers.env`` (one audit connection per customer org) once there are some."""
        (self.state / "connection.env").write_text(self.connection_env())
        if self.tenants.orgs:
            (self.state / "customers.env").write_text(self.customers_env())
            (self.state / "customers.csv").write_text(self.customers_csv(), encoding="utf-8")
            (self.state / "registry.env").write_text(self.registry_env())
        control = self.state / "control.json"
        control.write_text(json.dumps({"url": self.base_url, "key": self.control_key}))
        control.chmod(0o600)

    def _load(self) -> None:
        path = self.state / "org.json"
        if not path.exists():
            return
        data = json.loads(path.read_text())
        with self.store.bulk():
            for object_name, records in data["records"].items():
                obj = self.store.object(object_name)
                for record in records:
                    self.store.restore(obj, record)
        self.store.restart_numbers(data["next_number"])
        self.store.observed = data.get("observed", True)
        self.customers.restart_orgs(data["orgs"])
        self.api.api_used = data.get("api_used", 0)
        self.tenants.load(data.get("tenants", []))

    def save(self) -> None:
        if not self.persist:
            return
        with self.store.lock:
            data = {
                "records": {
                    name: list(records.values()) for name, records in self.store.records.items()
                },
                "next_number": self.store.next_number(),
                "orgs": self.customers.orgs,
                "api_used": self.api.api_used,
                "observed": self.store.observed,
                "tenants": self.tenants.dump(),
            }
            tmp = self.state / "org.json.tmp"
            tmp.write_text(json.dumps(data, separators=(",", ":")))
            tmp.replace(self.state / "org.json")

    # -- serving -----------------------------------------------------------------------------
    @property
    def tls_connections(self) -> int:
        """TLS connections accepted so far (a client that keeps connections alive makes few)."""
        return self._server.handshakes

    def dispatch(self, request: Request) -> Response:
        """Control requests, then each customer org's own calls (by token or by the token
        request's user), then the vendor's org."""
        if request.path.startswith("/_sandbox/"):
            return self._control(request)
        if request.path == subscriber.PATH and request.method == "GET":
            return subscriber.login_page(request)
        if request.path == "/services/oauth2/token" and request.method == "POST":
            tenant = self.tenants.by_username(_token_user(request.body))
            if tenant is not None:
                tenant.api.app = self.tenants.app_for(tenant)
                return tenant.api.handle(request)  # type: ignore[no-any-return]
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        tenant = self.tenants.by_token(token)
        if tenant is not None:
            tenant.prune()
            return tenant.api.handle(request)  # type: ignore[no-any-return]
        return self.api.handle(request)

    def customers_csv(self) -> str:
        """The customer orgs as `firmgrant orgs import` reads them: how each writes dates is
        learned from the org, not written here."""
        lines = ["name,login_url,username,org_id,source,date_order,time_zone,admin_emails"]
        for org in self.tenants.orgs.values():
            lines.append(
                f"org{org.number},{self.base_url},{org.integration_username},{org.org_id},"
                f"audit,,,admin@{org.domain}"
            )
        return "\n".join(lines) + "\n"

    def registry_env(self) -> str:
        """The ``FIRMGRANT_REGISTRY__*`` lines for orgs imported from customers.csv."""
        values = {
            "FIRMGRANT_REGISTRY__CLIENT_ID": self.app.client_id,
            "FIRMGRANT_REGISTRY__PRIVATE_KEY_FILE": str(self.state / "jwt.key"),
            "FIRMGRANT_REGISTRY__CA_BUNDLE": str(self.state / "tls.crt"),
            "FIRMGRANT_VENDOR__GRANTEE_NAMES": VENDOR,
            "FIRMGRANT_VENDOR__PUBLISHER_ORG_ID": self.app.org_id,
            "FIRMGRANT_VENDOR__SUPPORT_USERNAMES": "*@firmworks.example",
        }
        lines = [
            f"# the vendor's app for the orgs of `firmgrant orgs import {self.state}/customers.csv`"
        ]
        return "\n".join(lines + [f"{k}={shlex.quote(v)}" for k, v in values.items()]) + "\n"

    def customers_env(self) -> str:
        """``FIRMGRANT_*`` lines for one audit connection per customer org."""
        lines = [f"# {len(self.tenants.orgs)} customer orgs of the sandbox at {self.base_url}"]
        common = {
            "LOGIN_URL": self.base_url,
            "AUTH": "jwt",
            "CLIENT_ID": self.app.client_id,
            "PRIVATE_KEY_FILE": str(self.state / "jwt.key"),
            "CA_BUNDLE": str(self.state / "tls.crt"),
            "SOURCE__KIND": "audit",
        }
        for org in self.tenants.orgs.values():
            prefix = f"FIRMGRANT_CONNECTIONS__ORG{org.number}__"
            values = {**common, "USERNAME": org.integration_username}
            lines += [f"{prefix}{key}={shlex.quote(value)}" for key, value in values.items()]
        lines += [
            "FIRMGRANT_VENDOR__GRANTEE_NAMES=" + shlex.quote(VENDOR),
            "FIRMGRANT_VENDOR__PUBLISHER_ORG_ID=" + self.app.org_id,
            "FIRMGRANT_VENDOR__SUPPORT_USERNAMES=" + shlex.quote("*@firmworks.example"),
        ]
        return "\n".join(lines) + "\n"

    def serve_forever(self) -> None:
        self._server.serve_forever(poll_interval=0.2)

    def start(self) -> SandboxOrg:
        """Serve in a background thread (tests, the demo, benchmarks)."""
        self._thread = threading.Thread(target=self.serve_forever, name="sandbox", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        """Ask ``serve_forever`` to return; safe to call from a signal handler's thread."""
        threading.Thread(target=self._server.shutdown, daemon=True).start()

    def close(self) -> None:
        self._server.server_close()
        self.save()

    def stop(self) -> None:
        self._server.shutdown()
        if self._thread is not None:
            self._thread.join()
        self.close()

    def __enter__(self) -> SandboxOrg:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- control API -------------------------------------------------------------------------
    def _control(self, request: Request) -> Response:
        if not secrets.compare_digest(request.headers.get("x-sandbox-key", ""), self.control_key):
            return Response(401, {"error": "missing or wrong X-Sandbox-Key (see control.json)"})
        body: dict[str, Any] = request.json() or {}
        parts = [p for p in request.path.split("/") if p][1:]
        try:
            return Response(200, self._act(request.method, parts, body))
        except SalesforceFault as exc:
            return Response(exc.status, exc.errors)
        except (ValueError, TypeError, KeyError) as exc:
            return Response(400, {"error": str(exc)})

    def _act_in_tenant(self, method: str, parts: list[str], body: dict[str, Any]) -> Any:
        answer = self.tenants.act(method, parts, body)
        if not parts and method == "POST":
            self.write_files()  # customers.env names the new orgs
        return answer

    def _act(self, method: str, parts: list[str], body: dict[str, Any]) -> Any:
        customers = self.customers
        if parts == ["seed"] and method == "POST":
            return customers.seed(
                int(body["count"]),
                other_grantees=int(body.get("other", 0)),
                malformed=int(body.get("malformed", 0)),
            )
        if parts == ["grants"] and method == "POST":
            return customers.grant(
                duration=body.get("duration", "1 Week"),
                org_name=body.get("org_name"),
                grantor=body.get("grantor"),
                login_as_user=body.get("login_as_user"),
                # Backdated, so a grant can end within seconds (the chaos harness's expiries).
                at=parse_sf_datetime(body["at"]) if body.get("at") else None,
            )
        if len(parts) == 3 and parts[0] == "grants" and method == "POST":
            record_id, action = parts[1], parts[2]
            if action == "extend":
                return customers.extend(record_id, body.get("duration", "1 Week"))
            if action == "revoke":
                return customers.revoke(record_id, body.get("reason", "Revoked by the customer"))
            if action == "delete":
                customers.delete(record_id)
                return {"deleted": record_id}
        if parts and parts[0] == "tenants":
            return self._act_in_tenant(method, parts[1:], body)
        if parts == ["faults"] and method == "PUT":
            self.faults.plan = FaultPlan.parse(body.get("spec", ""))
            return {"faults": body.get("spec", "")}
        if parts == ["faults", "next"] and method == "POST":
            self.faults.inject_next(body["kind"], int(body.get("count", 1)))
            return {"queued": body["kind"]}
        if parts == ["limits", "reset"] and method == "POST":
            self.api.api_used = 0
            return {"api_used": 0}
        if parts == ["stats"] and method == "GET":
            return {
                "tls_connections": self.tls_connections,
                "tokens_issued": self.sessions.issued,
                "grants": self.store.count(GRANT.name),
                "api_used": self.api.api_used,
                "daily_limit": self.faults.plan.daily_limit,
                "faults_injected": dict(self.faults.injected),
                "revoked_by_api": sum(self.api.revocations.values()),
                "revoked_more_than_once": sorted(
                    record_id for record_id, n in self.api.revocations.items() if n > 1
                ),
            }
        raise ValueError(f"unknown control action {method} /_sandbox/{'/'.join(parts)}")
