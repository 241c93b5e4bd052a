"""The sandbox's REST surface: routes a request to the store, answering as Salesforce does."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import orjson

from firmgrant.sandbox.faults import FaultInjector
from firmgrant.sandbox.oauth import ConnectedApp, Sessions, token_request
from firmgrant.sandbox.schema import GRANT, OBJECTS
from firmgrant.sandbox.soql import SoqlError
from firmgrant.sandbox.store import OrgStore, SalesforceFault

COLLECTION_LIMIT = 200
_DATA = re.compile(r"^/services/data/v(\d+\.\d)(/.*)?$")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes = b""

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            raise SalesforceFault(
                400, "JSON_PARSER_ERROR", "Unexpected character in body"
            ) from None


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):  # a page (its headers name its type)
            return self.body
        return orjson.dumps(self.body)  # compact UTF-8, as Salesforce sends it


class RestApi:
    def __init__(
        self,
        store: OrgStore,
        app: ConnectedApp,
        sessions: Sessions,
        faults: FaultInjector,
        base_url: str,
        version: str,
    ) -> None:
        self.store = store
        self.app = app
        self.sessions = sessions
        self.faults = faults
        self.base_url = base_url
        self.version = version
        self.api_used = 0
        self._usage_lock = threading.Lock()
        # Updates through the API that set a grant's Status__c to Revoked, per record: what a
        # test reads to prove the worker revoked each grant once.
        self.revocations: Counter[str] = Counter()
        self.in_flight = 0  # API requests being handled (their client may be gone)
        self._idle = threading.Condition()

    def wait_busy(self, timeout: float) -> bool:
        """Until an API request is being handled: a client's call has reached the org."""
        with self._idle:
            return self._idle.wait_for(lambda: self.in_flight > 0, timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Until no API request is being handled: what a killed client left in flight lands."""
        with self._idle:
            return self._idle.wait_for(lambda: self.in_flight == 0, timeout)

    def _updated(self, obj: Any, record: dict[str, Any], clean: dict[str, Any]) -> str:
        if obj.name == GRANT.name and clean.get("Status__c") == "Revoked":
            self.revocations[str(record["Id"])] += 1
        return str(self.store.touch(obj, record, clean)["Id"])

    # -- entry -------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        if request.path == "/services/oauth2/token" and request.method == "POST":
            form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
            status, body = token_request(form, self.app, self.sessions, self.base_url)
            return Response(status, body)
        if request.path.rstrip("/") == "/services/data":
            return Response(
                200,
                [
                    {
                        "label": "Winter '25",
                        "url": f"/services/data/v{self.version}",
                        "version": self.version,
                    }
                ],
            )
        match = _DATA.match(request.path)
        if not match:
            return _error(404, "NOT_FOUND", "The requested resource does not exist")
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not self.sessions.valid(token):
            return _error(401, "INVALID_SESSION_ID", "Session expired or invalid")
        with self._idle:
            self.in_flight += 1
            self._idle.notify_all()
        try:
            response = self._with_faults(request, match.group(1), match.group(2) or "/")
        finally:
            with self._idle:
                self.in_flight -= 1
                self._idle.notify_all()
        response.headers["Sforce-Limit-Info"] = (
            f"api-usage={self.api_used}/{self.faults.plan.daily_limit}"
        )
        return response

    def _with_faults(self, request: Request, version: str, rest: str) -> Response:
        fault = self.faults.next_call()
        if fault == "limit" or self.api_used >= self.faults.plan.daily_limit:
            return _error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        if fault == "expired":
            self.sessions.expire_all()
            return _error(401, "INVALID_SESSION_ID", "Session expired or invalid")
        if fault == "503":
            return _error(503, "SERVER_UNAVAILABLE", "Server temporarily unavailable")
        if fault == "slow":
            time.sleep(self.faults.plan.slow_seconds)  # an injected fault, not synchronisation
        with self._usage_lock:
            self.api_used += 1
        if version != self.version and version not in ("59.0", "60.0", "61.0", "62.0"):
            return _error(404, "NOT_FOUND", "The requested resource does not exist")
        try:
            return self._route(request, rest)
        except SalesforceFault as exc:
            return Response(exc.status, exc.errors)
        except SoqlError as exc:
            return _error(400, exc.code, exc.message)

    # -- routes ------------------------------------------------------------------------------
    def _route(self, request: Request, rest: str) -> Response:
        parts = [p for p in rest.split("/") if p]
        method = request.method
        if not parts:
            return Response(
                200,
                {
                    name: f"/services/data/v{self.version}/{name}"
                    for name in ("sobjects", "query", "queryAll", "limits", "composite")
                },
            )
        head = parts[0]
        if head == "limits" and method == "GET":
            daily = self.faults.plan.daily_limit
            return Response(
                200, {"DailyApiRequests": {"Max": daily, "Remaining": daily - self.api_used}}
            )
        if head in ("query", "queryAll") and method == "GET":
            size = _batch_size(request.headers.get("sforce-query-options", ""))
            if len(parts) == 1:
                soql = request.query.get("q", [""])[0]
                return Response(
                    200, self.store.query(soql, include_deleted=head == "queryAll", batch_size=size)
                )
            locator, _, offset = parts[1].rpartition("-")
            if not locator or not offset.isdigit():
                return _error(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
            return Response(200, self.store.page(locator, int(offset), size))
        if head == "sobjects":
            return self._sobjects(request, parts[1:])
        if parts[:2] == ["composite", "sobjects"]:
            return self._collection(request, parts[2:])
        return _error(404, "NOT_FOUND", "The requested resource does not exist")

    def _sobjects(self, request: Request, parts: list[str]) -> Response:
        method = request.method
        if not parts:
            return Response(
                200,
                {
                    "encoding": "UTF-8",
                    "maxBatchSize": COLLECTION_LIMIT,
                    "sobjects": [o.summary(self.version) for o in OBJECTS.values()],
                },
            )
        obj = self.store.object(parts[0])
        if len(parts) == 1:
            if method == "POST":
                record = self.store.create(obj, _record_body(request))
                return Response(201, {"id": record["Id"], "success": True, "errors": []})
            return Response(200, {"objectDescribe": obj.summary(self.version), "recentItems": []})
        if parts[1] == "describe":
            described = obj.describe(self.version)
            # Describe answers for the connected user: what their permissions allow.
            described["deletable"] = (
                obj.deletable and obj.name.lower() not in self.store.undeletable
            )
            return Response(200, described)
        record_id = parts[1]
        if method == "GET":
            record = self.store.get(obj, record_id)
            wanted = request.query.get("fields", [""])[0]
            names = (
                [f.name for f in obj.fields]
                if not wanted
                else [(obj.field(n) or _no_field(obj.name, n)).name for n in wanted.split(",")]
            )
            return Response(200, self._shape(obj.name, record, names))
        if method == "PATCH":
            with self.store.lock:
                record = self.store.get(obj, record_id)
                self._updated(
                    obj, record, self.store.validate(obj, _record_body(request), creating=False)
                )
            return Response(204)
        if method == "DELETE":
            self.store.delete(obj, record_id)
            return Response(204)
        return _error(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed")

    def _shape(self, object_name: str, record: dict[str, Any], names: list[str]) -> dict[str, Any]:
        url = f"/services/data/v{self.version}/sobjects/{object_name}/{record['Id']}"
        return {
            "attributes": {"type": object_name, "url": url},
            **{name: record.get(name) for name in names},
        }

    # -- sObject Collections -----------------------------------------------------------------
    def _collection(self, request: Request, parts: list[str]) -> Response:
        method = request.method
        if method == "GET":
            obj = self.store.object(parts[0]) if parts else _missing()
            ids = request.query.get("ids", [""])[0].split(",")
            names = [
                (obj.field(n) or _no_field(obj.name, n)).name
                for n in request.query.get("fields", ["Id"])[0].split(",")
            ]
            out: list[Any] = []
            for record_id in ids:
                try:
                    out.append(self._shape(obj.name, self.store.get(obj, record_id), names))
                except SalesforceFault:
                    out.append(None)
            return Response(200, out)
        if method == "DELETE":
            ids = [i for i in request.query.get("ids", [""])[0].split(",") if i]
            all_or_none = request.query.get("allOrNone", ["false"])[0] == "true"
            items: list[tuple[str, dict[str, Any]]] = [("delete", {"id": i}) for i in ids]
        else:
            body = request.json() or {}
            records = body.get("records") or []
            all_or_none = bool(body.get("allOrNone", False))
            verb = "create" if method == "POST" else "update" if method == "PATCH" else None
            if verb is None:
                return _error(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed")
            items = [(verb, r) for r in records]
        if len(items) > COLLECTION_LIMIT:
            return _error(
                400,
                "EXCEEDED_ID_LIMIT",
                "record limit reached. cannot submit more than 200 records into this call",
            )
        with self.store.lock:
            return Response(200, self._apply_all(items, all_or_none))

    def _apply_all(self, items: list[tuple[str, dict[str, Any]]], all_or_none: bool) -> list[Any]:
        failures: list[list[dict[str, Any]] | None] = []
        plans = []
        for verb, item in items:  # validate everything first, so allOrNone changes nothing
            try:
                plans.append(self._plan(verb, item))
                failures.append(None)
            except SalesforceFault as exc:
                plans.append(None)
                failures.append(
                    [
                        {
                            "statusCode": e["errorCode"],
                            "message": e["message"],
                            "fields": e["fields"],
                        }
                        for e in exc.errors
                    ]
                )
        if all_or_none and any(failures):
            rolled = [
                {
                    "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                    "message": "Record rolled back because not all records were valid and "
                    "the request was using AllOrNone header",
                    "fields": [],
                }
            ]
            return [
                {"id": _item_id(item), "success": False, "errors": errors or rolled}
                for (_, item), errors in zip(items, failures, strict=True)
            ]
        results = []
        for (verb, item), plan, errors in zip(items, plans, failures, strict=True):
            if errors or plan is None:
                results.append({"id": _item_id(item), "success": False, "errors": errors})
                continue
            record_id = plan()
            result = {"id": record_id, "success": True, "errors": []}
            if verb == "create":
                result["created"] = True
            results.append(result)
        return results

    def _plan(self, verb: str, item: dict[str, Any]) -> Any:
        if verb == "create":
            obj = self.store.object((item.get("attributes") or {}).get("type", ""))
            clean = self.store.validate(obj, item, creating=True)
            return lambda: self.store.put(obj, clean)["Id"]
        record_id = str(item.get("id") or item.get("Id") or "")
        owner = next((o for o in OBJECTS.values() if record_id.startswith(o.key_prefix)), None)
        if owner is None:
            raise SalesforceFault(400, "MALFORMED_ID", f"malformed id {record_id}")
        target = owner
        if record_id in self.faults.plan.fail_records or record_id[:15] in {
            r[:15] for r in self.faults.plan.fail_records
        }:
            raise SalesforceFault(
                400,
                "UNABLE_TO_LOCK_ROW",
                f"unable to obtain exclusive access to this record or 1 records: {record_id}",
            )
        record = self.store.get(target, record_id, deleted_ok=True)
        if record.get("IsDeleted"):
            raise SalesforceFault(400, "ENTITY_IS_DELETED", "entity is deleted")
        if verb == "delete":
            self.store.check_delete(target)

            def delete() -> str:
                self.store.delete(target, record_id)
                return str(record["Id"])

            return delete
        clean = self.store.validate(target, item, creating=False)
        return lambda: self._updated(target, record, clean)


def _error(status: int, code: str, message: str) -> Response:
    return Response(status, [{"message": message, "errorCode": code, "fields": []}])


def _batch_size(header: str) -> int:
    match = re.search(r"batchSize=(\d+)", header)
    size = int(match.group(1)) if match else 2000
    return max(200, min(2000, size))


def _record_body(request: Request) -> dict[str, Any]:
    body = request.json()
    if not isinstance(body, dict):
        raise SalesforceFault(400, "JSON_PARSER_ERROR", "Expected a JSON object")
    return body


def _item_id(item: dict[str, Any]) -> str | None:
    return item.get("id") or item.get("Id")


def _no_field(object_name: str, name: str) -> Any:
    raise SalesforceFault(
        400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {object_name}", [name]
    )


def _missing() -> Any:
    raise SalesforceFault(404, "NOT_FOUND", "The requested resource does not exist")
