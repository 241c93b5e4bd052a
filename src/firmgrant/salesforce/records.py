"""Turn a Salesforce record (a JSON object) into a GrantRecord, or say exactly why not."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
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
    except ValueError:
        raise _Invalid(f"{api_name} is not a datetime: {str(value)[:40]!r}") from None


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
    """A parser for records named by ``fields``: their API names read once, not per record
    (an attribute of a pydantic model costs a Python-level ``__getattr__`` hook)."""
    id_name, modstamp_name, is_deleted = fields.id, fields.modstamp, fields.is_deleted
    org_id, org_name, grantee, status = (
        fields.org_id,
        fields.org_name,
        fields.grantee,
        fields.status,
    )
    grantor_id, grantor_username, grantor_email = (
        fields.grantor_id,
        fields.grantor_username,
        fields.grantor_email,
    )
    granted_at_name, expires_at_name, revoked_at, revoke_reason = (
        fields.granted_at,
        fields.expires_at,
        fields.revoked_at,
        fields.revoke_reason,
    )
    duration_name, via_login_as, login_as_user = (
        fields.duration,
        fields.via_login_as,
        fields.login_as_user,
    )

    def parse(record: dict[str, Any]) -> GrantRecord | InvalidRecord:
        source_id: str | None = None
        modstamp: datetime | None = None
        try:
            source_id = _required_text(record, id_name, "source_id")
            if len(source_id) not in (15, 18) or not source_id.isalnum():
                raise _Invalid(f"{id_name} {source_id!r} is not a Salesforce Id")
            modstamp = _required_time(record, modstamp_name)
            granted_at = _required_time(record, granted_at_name)
            expires_at = _required_time(record, expires_at_name)
            if expires_at <= granted_at:
                raise _Invalid(f"{expires_at_name} is not after {granted_at_name}")
            duration = _text(record, duration_name, "duration", required=False)
            if duration is not None:
                normalized = " ".join(duration.lower().split())
                if normalized not in _DURATION_KEYS:
                    raise _Invalid(f"{duration_name} {duration!r} is not a Salesforce duration")
                duration = _DURATION_KEYS[normalized]
            sf_status = _required_text(record, status, "sf_status")
            if sf_status not in SALESFORCE_STATUSES:
                raise _Invalid(f"{status} {sf_status!r} is not one of {SALESFORCE_STATUSES}")
            org = _required_text(record, org_id, "org_id")
            grantee_name = _required_text(record, grantee, "grantee")
            return GrantRecord(
                source_id=source_id,
                org_id=org,
                org_name=_text(record, org_name, "org_name", required=False),
                grantor_id=_text(record, grantor_id, "grantor_id", required=False),
                grantor_username=_text(
                    record, grantor_username, "grantor_username", required=False
                ),
                grantor_email=_text(record, grantor_email, "grantor_email", required=False),
                grantee=grantee_name,
                duration=duration,
                granted_at=granted_at,
                expires_at=expires_at,
                via_login_as=_flag(record, via_login_as),
                login_as_user=_text(record, login_as_user, "login_as_user", required=False),
                sf_status=sf_status,
                revoked_at=_time(record, revoked_at, required=False),
                revoke_reason=_text(record, revoke_reason, "revoke_reason", required=False),
                modstamp=modstamp,
                deleted=_flag(record, is_deleted),
            )
        except _Invalid as problem:
            key = source_id if source_id is not None else _digest(record)
            return InvalidRecord(
                key=key, source_id=source_id, modstamp=modstamp, reason=str(problem)
            )

    return parse


def parse_record(record: dict[str, Any], fields: FieldMap) -> GrantRecord | InvalidRecord:
    """One record; a page goes through one :func:`record_parser`."""
    return record_parser(fields)(record)


def _digest(record: dict[str, Any]) -> str:
    canonical = json.dumps(record, sort_keys=True, default=str, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:32]
