"""What each audit connection's org told of itself (and of the user firmgrant reads it as),
kept between syncs: asked on a first or full sync, so an idle sync asks Salesforce nothing.
The org's Id and name are what its grants carry."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from firmgrant.ledger.models import GrantRow, OrgProfileRow
from firmgrant.salesforce.dates import Locale, OrgProfile


def read_profile(session: Session, connection: str) -> OrgProfile | None:
    row = session.get(OrgProfileRow, connection)
    if row is None:
        return None
    told = (row.reader_time_zone, row.reader_locale, row.reader_language)
    reader = Locale(*told) if row.reader_id and any(told) else None  # None: not asked yet
    return OrgProfile(
        row.org_id,
        row.org_name,
        Locale(row.time_zone, row.locale, row.language),
        row.reader_id,
        reader,
    )


def keep_profile(session: Session, connection: str, profile: OrgProfile, now: datetime) -> None:
    """Keep what the org told; grants a connection recorded under its own name (before the
    org's Id was learned) get the Id."""
    row = session.get(OrgProfileRow, connection, with_for_update=True)
    if row is None:
        row = OrgProfileRow(connection=connection)
        session.add(row)
    row.org_id, row.org_name = profile.org_id, profile.org_name
    row.time_zone, row.locale = profile.defaults.time_zone, profile.defaults.locale
    row.language, row.reader_id = profile.defaults.language, profile.reader_id
    reader = profile.reader or Locale()
    row.reader_time_zone, row.reader_locale = reader.time_zone, reader.locale
    row.reader_language, row.learned_at = reader.language, now
    if profile.org_id:
        session.execute(
            update(GrantRow)
            .where(GrantRow.connection == connection, GrantRow.org_id == connection)
            .values(org_id=profile.org_id)
        )
