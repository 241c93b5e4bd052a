"""What each audit connection's org and users told of themselves, kept between syncs.

Learned on a first or full sync (the org) and when a page brings a user not seen before: an
idle sync asks Salesforce nothing. The org's Id and name are what its grants carry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from firmgrant.ledger.models import GrantRow, OrgProfileRow, TrailUserRow
from firmgrant.salesforce.dates import Locale, OrgProfile


def read_profile(session: Session, connection: str) -> OrgProfile | None:
    row = session.get(OrgProfileRow, connection)
    if row is None:
        return None
    reader = (
        Locale(row.reader_time_zone, row.reader_locale, row.reader_language)
        if row.reader_id
        else None
    )
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


def read_users(session: Session, connection: str, user_ids: Iterable[str]) -> dict[str, Locale]:
    wanted = sorted(set(user_ids))
    if not wanted:
        return {}
    rows = session.execute(
        select(TrailUserRow).where(
            TrailUserRow.connection == connection, TrailUserRow.user_id.in_(wanted)
        )
    ).scalars()
    return {row.user_id: Locale(row.time_zone, row.locale, row.language) for row in rows}


def keep_users(
    session: Session, connection: str, users: Mapping[str, Locale], now: datetime
) -> None:
    for user_id in sorted(users):
        locale = users[user_id]
        row = session.get(TrailUserRow, (connection, user_id), with_for_update=True)
        if row is None:
            row = TrailUserRow(connection=connection, user_id=user_id)
            session.add(row)
        row.time_zone, row.locale, row.language = locale.time_zone, locale.locale, locale.language
        row.learned_at = now
