"""`firmgrant sandbox`: serve the org in the foreground, or act as a customer against it."""

from __future__ import annotations

import ipaddress
import json
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

import requests

from firmgrant.errors import ConfigError, SandboxUnreachable
from firmgrant.sandbox.faults import FaultPlan
from firmgrant.sandbox.server import SandboxOrg


def _loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ConfigError(f"--host {host}: the sandbox serves on loopback only (e.g. 127.0.0.1)")


def serve(
    *,
    state: Path | None,
    host: str,
    port: int,
    seed: int,
    random_seed: int | None,
    customers: int = 0,
    faults: str | None,
) -> int:
    """Write ``connection.env``, print the base URL as the first line, serve until signalled."""
    _loopback(host)
    try:
        plan = FaultPlan.parse(faults)
    except ValueError as exc:
        raise ConfigError(f"--faults: {exc}") from None
    temporary = None
    if state is None:
        temporary = tempfile.TemporaryDirectory(prefix="firmgrant-sandbox-")
        state = Path(temporary.name)
    try:
        org = SandboxOrg(
            state,
            host=host,
            port=port,
            random_seed=random_seed,
            faults=plan,
            persist=temporary is None,
        )
    except OSError as exc:
        raise ConfigError(f"--port {port}: cannot listen on {host}: {exc.strerror}") from None

    def stop(signum: int, frame: FrameType | None) -> None:
        org.shutdown()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        if seed:
            org.customers.seed(seed)
        if customers:
            org.tenants.seed(customers)
        org.write_files()
        print(org.base_url, flush=True)
        print(
            f"state in {org.state}; connection settings in {org.state / 'connection.env'}",
            file=sys.stderr,
            flush=True,
        )
        org.serve_forever()
    finally:
        org.close()
        if temporary is not None:
            temporary.cleanup()
    return 0


def act(state: Path, action: str, args: dict[str, Any]) -> int:
    """Send one control request to a running sandbox and print its JSON answer."""
    control_file = state / "control.json"
    if not control_file.is_file():
        raise ConfigError(f"--state {state}: no control.json here; is the sandbox running?")
    control = json.loads(control_file.read_text())
    method, path, body = _ACTIONS[action](args)
    session = requests.Session()
    session.trust_env = False  # loopback only; never a proxy, always our own certificate
    try:
        response = session.request(
            method,
            control["url"] + path,
            json=body,
            verify=str(state / "tls.crt"),
            headers={"X-Sandbox-Key": control["key"]},
            timeout=120,
        )
    except requests.RequestException as exc:
        raise SandboxUnreachable(f"sandbox at {control['url']} unreachable: {exc}") from None
    print(json.dumps(response.json(), indent=2, ensure_ascii=False))
    return 0 if response.ok else 1


_ACTIONS: dict[str, Any] = {
    "seed": lambda a: (
        "POST",
        "/_sandbox/seed",
        {"count": a["count"], "other": a["other"], "malformed": a["malformed"]},
    ),
    "grant": lambda a: (
        "POST",
        "/_sandbox/grants",
        {
            "duration": a["duration"],
            "org_name": a["org_name"],
            "grantor": a["grantor"],
            "login_as_user": a["login_as"],
        },
    ),
    "extend": lambda a: ("POST", f"/_sandbox/grants/{a['id']}/extend", {"duration": a["duration"]}),
    "revoke": lambda a: ("POST", f"/_sandbox/grants/{a['id']}/revoke", {"reason": a["reason"]}),
    "delete": lambda a: ("POST", f"/_sandbox/grants/{a['id']}/delete", {}),
    "faults": lambda a: ("PUT", "/_sandbox/faults", {"spec": a["spec"]}),
    "fail-next": lambda a: (
        "POST",
        "/_sandbox/faults/next",
        {"kind": a["kind"], "count": a["count"]},
    ),
    "stats": lambda a: ("GET", "/_sandbox/stats", None),
    "add-orgs": lambda a: (
        "POST",
        "/_sandbox/tenants",
        {
            "count": a["count"],
            "grants": a["grants"],
            "date_order": a["date_order"],
            "locale": a["locale"],
            "time_zone": a["time_zone"],
            "view_setup": not a["no_view_setup"],
            "manage_users": not a["no_manage_users"],
        },
    ),
    "in-org": lambda a: (
        "GET" if a["org_action"] == "stats" else "POST",
        f"/_sandbox/tenants/{a['org']}/{a['org_action']}",
        {
            key: value
            for key, value in {
                "user": a["user"],
                "days": a["days"],
                "login_as": a["login_as"],
                "support_user": a["support_user"],
                "locale": a["locale"],
                "time_zone": a["time_zone"],
            }.items()
            if value is not None
        },
    ),
}
