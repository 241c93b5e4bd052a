"""Turn a Salesforce record (a JSON object) into a GrantRecord, or say exactly why not."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from firmgrant.grant import DURATIONS, FIELD_LIMITS, SALESFORCE_STATUSES, GrantRecord
from firmgrant.settings import FieldMap
from firmgrant.timeutil import parse_sf_datetime

_DURATION_KEYS = {" ".join(d.split()): d for d in DURATIONS}


@dataclass(frozen=True, slots=True)
class InvalidRecord:
    """A record that cannot be mirrored: logged, recorded as an ``invalid`` event, skipped."""

    key: str  # the Salesforce Id, or a digest of the record when it has none
    source_id: str | None
    modstamp: datetime | None
    reason: str


class _Invalid(ValueError):
    pass


def _text(record: dict[str, Any], api_name: str, field: str, *, required: bool) -> str | None:
    value = record.get(api_name)
    if value is None or value == "":
        if required:
            raise _Invalid(f"{api_name} is missing")
        return None
    if not isinstance(value, str):
        raise _Invalid(f"{api_name} is not text")
    limit = FIELD_LIMITS[field]
    if len(value) > limit:
        raise _Invalid(f"{api_name} is {len(value)} characters long (at most {limit})")
    return value


def _time(record: dict[str, Any], api_name: str, *, required: bool) -> datetime | None:
    value = record.get(api_name)
    if value is None or value == "":
        if required:
            raise _Invalid(f"{api_name} is missing")
        return None
    try:
        return parse_sf_datetime(str(value))
    except ValueError as exc:
        raise _Invalid(f"{api_name} is {exc}") from None


def _required_text(record: dict[str, Any], api_name: str, field: str) -> str:
    value = _text(record, api_name, field, required=True)
    assert value is not None
    return value


def _required_time(record: dict[str, Any], api_name: str) -> datetime:
    value = _time(record, api_name, required=True)
    assert value is not None
    return value


def _flag(record: dict[str, Any], api_name: str) -> bool:
    value = record.get(api_name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _Invalid(f"{api_name} is not a boolean")
    return value


def record_parser(fields: FieldMap) -> Callable[[dict[str, Any]], GrantRecord | InvalidRecord]:
    """A parser for records named by ``fields``.

    The API names are copied into a plain namespace once: every attribute of a pydantic
    model goes through a Python-level ``__getattr__`` hook, for every field of every record.
    """
    names = SimpleNamespace(**fields.model_dump())

    def parse(record: dict[str, Any]) -> GrantRecord | InvalidRecord:
        source_id: str | None = None
        modstamp: datetime | None = None
        try:
            source_id = _required_text(record, names.id, "source_id")
            if len(source_id) not in (15, 18) or not source_id.isalnum():
                raise _Invalid(f"{names.id} {source_id!r} is not a Salesforce Id")
            modstamp = _required_time(record, names.modstamp)
            granted_at = _required_time(record, names.granted_at)
            expires_at = _required_time(record, names.expires_at)
            if expires_at <= granted_at:
                raise _Invalid(f"{names.expires_at} is not after {names.granted_at}")
            duration = _text(record, names.duration, "duration", required=False)
            if duration is not None:
                normalized = " ".join(duration.lower().split())
                if normalized not in _DURATION_KEYS:
                    raise _Invalid(f"{names.duration} {duration!r} is not a Salesforce duration")
                duration = _DURATION_KEYS[normalized]
            status = _required_text(record, names.status, "sf_status")
            if status not in SALESFORCE_STATUSES:
                raise _Invalid(f"{names.status} {status!r} is not one of {SALESFORCE_STATUSES}")
            org_id = _required_text(record, names.org_id, "org_id")
            grantee = _required_text(record, names.grantee, "grantee")
            return GrantRecord(
                source_id=source_id,
                org_id=org_id,
                org_name=_text(record, names.org_name, "org_name", required=False),
                grantor_id=_text(record, names.grantor_id, "grantor_id", required=False),
                grantor_username=_text(
                    record, names.grantor_username, "grantor_username", required=False
                ),
                grantor_email=_text(record, names.grantor_email, "grantor_email", required=False),
                grantee=grantee,
                duration=duration,
                granted_at=granted_at,
                expires_at=expires_at,
                via_login_as=_flag(record, names.via_login_as),
                login_as_user=_text(record, names.login_as_user, "login_as_user", required=False),
                sf_status=status,
                revoked_at=_time(record, names.revoked_at, required=False),
                revoke_reason=_text(record, names.revoke_reason, "revoke_reason", required=False),
                modstamp=modstamp,
                deleted=_flag(record, names.is_deleted),
            )
        except _Invalid as problem:
            key = source_id if source_id is not None else record_digest(record)
            return InvalidRecord(
                key=key, source_id=source_id, modstamp=modstamp, reason=str(problem)
            )

    return parse


def parse_record(record: dict[str, Any], fields: FieldMap) -> GrantRecord | InvalidRecord:
    """One record; a page goes through one :func:`record_parser`."""
    return record_parser(fields)(record)


def record_digest(record: dict[str, Any]) -> str:
    canonical = json.dumps(record, sort_keys=True, default=str, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:32]
