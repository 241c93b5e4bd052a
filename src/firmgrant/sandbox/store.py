"""The sandbox org's data: records, a modstamp index, query cursors, validated writes."""

from __future__ import annotations

import bisect
import itertools
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from firmgrant.sandbox.schema import OBJECTS, FieldDef, ObjectDef, make_id
from firmgrant.sandbox.soql import Query, Record, parse_query, sf_datetime, sort_records
from firmgrant.timeutil import Clock, utcnow

MAX_OPEN_CURSORS = 50
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class SalesforceFault(Exception):
    """An error Salesforce would answer with: HTTP status plus a list of error objects."""

    def __init__(self, status: int, code: str, message: str, fields: list[str] | None = None):
        super().__init__(message)
        self.status = status
        self.errors = [{"message": message, "errorCode": code, "fields": fields or []}]


@dataclass
class _Cursor:
    object_name: str
    fields: tuple[FieldDef, ...]
    rows: list[Record]


class OrgStore:
    """Thread-safe: every public method holds the store's lock."""

    def __init__(
        self,
        *,
        clock: Clock = utcnow,
        api_version: str = "62.0",
        hidden: frozenset[str] = frozenset(),
        undeletable: frozenset[str] = frozenset(),
        first_number: int = 0,
    ) -> None:
        self.lock = threading.RLock()
        # What the connected user's permissions hide or forbid (lower-case object names):
        # a hidden object does not exist for its queries; an undeletable one refuses deletes.
        self.visible = {name: obj for name, obj in OBJECTS.items() if name not in hidden}
        self.undeletable = undeletable
        self.clock = clock
        self.api_version = api_version
        self.records: dict[str, dict[str, Record]] = {name: {} for name in OBJECTS}
        self._index: dict[str, list[tuple[str, str]]] = {name: [] for name in OBJECTS}
        self._number = first_number  # orgs of one sandbox number their records apart
        self._cursors: OrderedDict[str, _Cursor] = OrderedDict()
        self._cursor_numbers = itertools.count(1)
        self._last_stamp = ""
        self._bulk = 0
        self._bulk_stamp: str | None = None
        # Once a query has been answered, a client may hold a watermark: from then on every
        # write carries the time it was made as SystemModstamp, as in Salesforce. Before,
        # seeded records may carry past stamps: the org's history, as if written back then.
        self.observed = False

    @contextmanager
    def bulk(self) -> Iterator[None]:
        """Many writes at once (seeding): the modstamp index is rebuilt once at the end, and
        the writes share one SystemModstamp, as a bulk load's records do."""
        with self.lock:
            self._bulk += 1
            try:
                yield
            finally:
                self._bulk -= 1
                if not self._bulk:
                    self._bulk_stamp = None
                    for name, records in self.records.items():
                        self._index[name] = sorted(
                            (r["SystemModstamp"], i)
                            for i, r in records.items()
                            if "SystemModstamp" in r
                        )

    # -- time and ids ------------------------------------------------------------------------
    def stamp(self, at: datetime | None = None) -> str:
        """A modstamp; live changes get strictly increasing ones so the index stays sorted."""
        if at is not None:
            return sf_datetime(at)
        if self._bulk:
            if self._bulk_stamp is None:
                self._bulk_stamp = self._next_stamp()
            return self._bulk_stamp
        return self._next_stamp()

    def _next_stamp(self) -> str:
        stamp = sf_datetime(self.clock())
        if stamp <= self._last_stamp:
            last = datetime.strptime(self._last_stamp, "%Y-%m-%dT%H:%M:%S.%f%z")
            stamp = sf_datetime(last + timedelta(milliseconds=1))
        self._last_stamp = stamp
        return stamp

    def new_id(self, obj: ObjectDef) -> str:
        self._number += 1
        return make_id(obj.key_prefix, self._number)

    def next_number(self) -> int:
        return self._number + 1

    def restart_numbers(self, next_number: int) -> None:
        self._number = max(self._number, next_number - 1)

    def object(self, name: str) -> ObjectDef:
        """An object the connected user can see (REST calls name them)."""
        obj = self.visible.get(name.lower())
        if obj is None:
            raise SalesforceFault(404, "NOT_FOUND", "The requested resource does not exist")
        return obj

    # -- raw writes (seeding, customers) -----------------------------------------------------
    def put(self, obj: ObjectDef, values: Record, *, at: datetime | None = None) -> Record:
        """Insert without validation, as data loaded long ago might be. Returns the record.

        ``at`` back-dates the audit fields (``CreatedDate``, ``LastModifiedDate``) of objects
        whose audit fields a data load may set; ``SystemModstamp`` (and the audit fields of
        system objects such as SetupAuditTrail) is the time of the write, unless no query has
        been answered yet: then the record is the org's history, written at ``at``.
        """
        with self.lock:
            written = self.stamp(None if self.observed else at)
            record: Record = {f.name: f.default for f in obj.fields}
            record.update(values)
            record["Id"] = values.get("Id") or self.new_id(obj)
            settable = obj.audit_fields_settable or not self.observed
            audit = sf_datetime(at) if at is not None and settable else written
            for system in ("CreatedDate", "LastModifiedDate"):
                if obj.field(system) is not None:
                    record[system] = record.get(system) or audit
            if obj.field("SystemModstamp") is not None:
                record["SystemModstamp"] = written
            return self._stored(obj, record)

    def restore(self, obj: ObjectDef, record: Record) -> Record:
        """A record saved by an earlier run of the sandbox, stamps and all."""
        with self.lock:
            return self._stored(obj, dict(record))

    def _stored(self, obj: ObjectDef, record: Record) -> Record:
        self.records[obj.name.lower()][record["Id"]] = record
        self._indexed(obj, record)
        return record

    def touch(self, obj: ObjectDef, record: Record, changes: Record) -> Record:
        with self.lock:
            record.update(changes)
            stamp = self.stamp()
            if obj.field("SystemModstamp") is not None:
                record["LastModifiedDate"] = record["SystemModstamp"] = stamp
            self._indexed(obj, record)
            return record

    def _indexed(self, obj: ObjectDef, record: Record) -> None:
        stamp = record.get("SystemModstamp")
        if stamp is None or self._bulk:
            return
        index = self._index[obj.name.lower()]
        entry = (stamp, record["Id"])
        if not index or index[-1] <= entry:
            index.append(entry)
        else:
            bisect.insort(index, entry)
        if len(index) > 2 * len(self.records[obj.name.lower()]) + 1000:
            live = self.records[obj.name.lower()]
            index[:] = sorted((r["SystemModstamp"], i) for i, r in live.items())

    # -- validated REST writes ---------------------------------------------------------------
    def create(self, obj: ObjectDef, values: Record) -> Record:
        if not obj.createable:
            raise SalesforceFault(
                400, "INVALID_TYPE_FOR_OPERATION", f"entity type {obj.name} does not support insert"
            )
        clean = self.validate(obj, values, creating=True)
        return self.put(obj, clean)

    def update(self, obj: ObjectDef, record_id: str, values: Record) -> Record:
        with self.lock:
            record = self.get(obj, record_id)
            clean = self.validate(obj, values, creating=False)
            return self.touch(obj, record, clean)

    def check_delete(self, obj: ObjectDef) -> None:
        if obj.name.lower() in self.undeletable:
            raise SalesforceFault(
                400,
                "INSUFFICIENT_ACCESS_OR_READONLY",
                "insufficient access rights on object id",
            )

    def delete(self, obj: ObjectDef, record_id: str) -> None:
        self.check_delete(obj)
        with self.lock:
            record = self.get(obj, record_id)
            if not obj.deletable:
                raise SalesforceFault(
                    400,
                    "INVALID_TYPE_FOR_OPERATION",
                    f"entity type {obj.name} does not support delete",
                )
            if obj.field("IsDeleted") is None:
                del self.records[obj.name.lower()][record["Id"]]
            else:
                self.touch(obj, record, {"IsDeleted": True})

    def get(self, obj: ObjectDef, record_id: str, *, deleted_ok: bool = False) -> Record:
        with self.lock:
            records = self.records[obj.name.lower()]
            record = records.get(record_id)
            if record is None and len(record_id) == 15:
                record = next((r for i, r in records.items() if i[:15] == record_id), None)
            if record is None or (record.get("IsDeleted") and not deleted_ok):
                raise SalesforceFault(
                    404,
                    "NOT_FOUND",
                    "The requested resource does not exist"
                    if record is None
                    else "entity is deleted",
                )
            return record

    def validate(self, obj: ObjectDef, values: Record, *, creating: bool) -> Record:
        clean: Record = {}
        for name, value in values.items():
            if name == "attributes" or (name.lower() == "id" and not creating):
                continue
            field = obj.field(name)
            if field is None:
                raise SalesforceFault(
                    400,
                    "INVALID_FIELD",
                    f"No such column '{name}' on sobject of type {obj.name}",
                    [name],
                )
            if not (field.createable if creating else field.updateable):
                verb = "create" if creating else "update"
                raise SalesforceFault(
                    400,
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to {verb} fields: {field.name}. Please check the security settings "
                    "of this field and verify that it is read/write for your profile or "
                    "permission set.",
                    [field.name],
                )
            clean[field.name] = _coerce(field, value)
        if creating:
            missing = [
                f.name
                for f in obj.fields
                if f.createable
                and not f.nillable
                and f.default is None
                and clean.get(f.name) in (None, "")
            ]
            if missing:
                raise SalesforceFault(
                    400,
                    "REQUIRED_FIELD_MISSING",
                    f"Required fields are missing: [{', '.join(missing)}]",
                    missing,
                )
        return clean

    # -- queries -----------------------------------------------------------------------------
    def query(self, soql: str, *, include_deleted: bool, batch_size: int) -> dict[str, Any]:
        with self.lock:
            self.observed = True
            query = parse_query(soql, self.visible)
            rows = list(self._matching(query, include_deleted))
            if query.order:
                sort_records(rows, query.order)
            rows = rows[query.offset :]
            if query.limit is not None:
                rows = rows[: query.limit]
            if query.fields is None:
                return {"totalSize": len(rows), "done": True, "records": []}
            locator = f"01g5e{next(self._cursor_numbers):010d}AAA"
            self._cursors[locator] = _Cursor(query.obj.name, query.fields, rows)
            while len(self._cursors) > MAX_OPEN_CURSORS:
                self._cursors.popitem(last=False)
            return self.page(locator, 0, batch_size)

    def page(self, locator: str, offset: int, batch_size: int) -> dict[str, Any]:
        with self.lock:
            cursor = self._cursors.get(locator)
            if cursor is None or offset > len(cursor.rows):
                raise SalesforceFault(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
            self._cursors.move_to_end(locator)
            end = offset + batch_size
            chunk = cursor.rows[offset:end]
            version = self.api_version
            url = f"/services/data/v{version}/sobjects/{cursor.object_name}/"
            names = [f.name for f in cursor.fields]
            users = self.records.get("user", {})
            records = [
                {
                    "attributes": {"type": cursor.object_name, "url": url + r["Id"]},
                    **_shaped(names, r, version, users),
                }
                for r in chunk
            ]
            done = end >= len(cursor.rows)
            body: dict[str, Any] = {"totalSize": len(cursor.rows), "done": done, "records": records}
            # Cursors stay open (the oldest is closed past MAX_OPEN_CURSORS), so a client that
            # timed out may ask for the same page again, as Salesforce allows.
            if not done:
                body["nextRecordsUrl"] = f"/services/data/v{version}/query/{locator}-{end}"
            return body

    def _matching(self, query: Query, include_deleted: bool) -> Iterator[Record]:
        records = self.records[query.obj.name.lower()]
        candidates: Iterable[Record] = records.values()
        if query.modstamp_floor is not None:
            floor, inclusive = query.modstamp_floor
            index = self._index[query.obj.name.lower()]
            start = (
                bisect.bisect_left(index, (floor, ""))
                if inclusive
                else bisect.bisect_right(index, (floor, "\uffff"))
            )
            candidates = (
                record
                for stamp, record_id in index[start:]
                if (record := records.get(record_id)) is not None
                and record["SystemModstamp"] == stamp
            )
        where = query.where
        for record in candidates:
            if record.get("IsDeleted") and not include_deleted:
                continue
            if where is None or where(record):
                yield record

    def count(self, object_name: str) -> int:
        with self.lock:
            return len(self.records[object_name.lower()])


def _shaped(names: list[str], record: Record, version: str, users: dict[str, Record]) -> Record:
    """Fields as Salesforce answers them: ``CreatedBy.Username`` nested under ``CreatedBy``,
    read from the user's record as it is now (the row's own copy if the org has none)."""
    out: Record = {}
    for name in names:
        relation, dot, field = name.partition(".")
        if not dot:
            out[name] = record.get(name)
            continue
        target = record.get(relation + "Id")
        if target is None:
            out[relation] = None
            continue
        nested = out.setdefault(
            relation,
            {
                "attributes": {
                    "type": "User",
                    "url": f"/services/data/v{version}/sobjects/User/{target}",
                }
            },
        )
        user = users.get(target)
        nested[field] = user[field] if user is not None and field in user else record.get(name)
    return out


def _coerce(field: FieldDef, value: Any) -> Any:
    if value is None:
        if not field.nillable:
            raise SalesforceFault(
                400,
                "REQUIRED_FIELD_MISSING",
                f"Required fields are missing: [{field.name}]",
                [field.name],
            )
        return None
    if field.type == "boolean":
        if not isinstance(value, bool):
            raise SalesforceFault(
                400,
                "JSON_PARSER_ERROR",
                f"Cannot deserialize instance of boolean from VALUE_STRING value {value}",
            )
        return value
    if field.type == "datetime":
        try:
            parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                raise ValueError
        except ValueError:
            raise SalesforceFault(
                400,
                "JSON_PARSER_ERROR",
                f"Cannot deserialize instance of datetime from VALUE_STRING value {value} "
                "or request may be missing a required field",
            ) from None
        return sf_datetime(parsed)
    if field.type == "int":
        return int(value)
    text = str(value)
    if field.length and len(text) > field.length:
        raise SalesforceFault(
            400,
            "STRING_TOO_LONG",
            f"{field.label or field.name}: data value too large: {text[:20]}... "
            f"(max length={field.length})",
            [field.name],
        )
    if field.type == "email" and text and not _EMAIL.match(text):
        raise SalesforceFault(
            400,
            "INVALID_EMAIL_ADDRESS",
            f"{field.name}: invalid email address: {text}",
            [field.name],
        )
    if field.restricted and text not in field.picklist:
        raise SalesforceFault(
            400,
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            f"{field.name.removesuffix('__c')}: bad value for restricted picklist field: {text}",
            [field.name],
        )
    return text
