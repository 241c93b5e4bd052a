"""The grant as firmgrant understands it, independent of where it was read or stored."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple

from firmgrant.lifecycle import SalesforceStatus
from firmgrant.timeutil import iso_z

# Salesforce's own choices for Login Access durations; one year is the maximum it allows.
DURATIONS = ("1 day", "3 days", "1 week", "1 month", "1 year")
SALESFORCE_STATUSES = tuple(status.value for status in SalesforceStatus)

# Column widths of the ledger, and the longest value a record may carry for each field.
FIELD_LIMITS: dict[str, int] = {
    "source_id": 18,
    "org_id": 18,
    "org_name": 255,
    "grantor_id": 18,
    "grantor_username": 255,
    "grantor_email": 255,
    "grantee": 255,
    "duration": 16,
    "login_as_user": 255,
    "sf_status": 16,
    "revoke_reason": 1000,
}


class GrantRecord(NamedTuple):
    """One grant as the source reports it (the mirrored fields, nothing of ours).

    A named tuple rather than a frozen dataclass: the sync builds one per record, and a
    frozen dataclass sets each field through ``object.__setattr__``.
    """

    source_id: str
    org_id: str
    org_name: str | None
    grantor_id: str | None
    grantor_username: str | None
    grantor_email: str | None
    grantee: str
    duration: str | None
    granted_at: datetime
    expires_at: datetime
    via_login_as: bool
    login_as_user: str | None
    sf_status: str
    revoked_at: datetime | None
    revoke_reason: str | None
    modstamp: datetime
    deleted: bool

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready copy for the event log (times as ISO ``Z`` strings)."""
        snapshot: dict[str, Any] = dict(zip(MIRRORED_FIELDS, self, strict=True))
        for name in TIME_FIELDS:
            snapshot[name] = iso_z(snapshot[name])
        return snapshot


MIRRORED_FIELDS = GrantRecord._fields
TIME_FIELDS = ("granted_at", "expires_at", "revoked_at", "modstamp")


# Letters that Unicode does not decompose into a base letter and an accent.
_UNACCENTED = str.maketrans({"ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "æ": "ae",
                             "œ": "oe", "ı": "i", "ħ": "h", "ŧ": "t"})  # fmt: skip


@lru_cache(maxsize=4096)
def folded(text: str) -> str:
    """Text as a search compares it: case and accents aside (``Ørsted`` → ``orsted``,
    ``Łódź`` → ``lodz``, ``Études`` → ``etudes``); the same on SQLite and PostgreSQL."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return bare.translate(_UNACCENTED)


def search_text(record: GrantRecord) -> str:
    """What a grant is found by in the dashboard's search box: its org name and grantor."""
    return search_key(record.org_name, record.grantor_username)


def search_key(org_name: str | None, grantor_username: str | None) -> str:
    return f"{folded(org_name or '')}\n{folded(grantor_username or '')}"
