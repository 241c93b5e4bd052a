"""The sync of an audit connection: its org's trail, page by page, each row read the way the
org wrote it and applied once (:mod:`firmgrant.ledger.trail`).

What the org is (its Id, name, locale and zone) is asked on a first or full sync; each row
brings its granting user's locale and zone; the integration user's is asked (once, then
kept) only if a date reads in doubt. An idle sync (no new row) is the trail query alone: one
API call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from firmgrant.ledger import Ledger, PageCounts
from firmgrant.ledger.trail import TrailPage
from firmgrant.salesforce.audit import AuditPage, AuditSource, unreadable
from firmgrant.salesforce.client import SalesforceClient
from firmgrant.salesforce.dates import Locale, OrgProfile
from firmgrant.salesforce.fold import TrailRow
from firmgrant.salesforce.profiles import TrailReader, learn_org, learn_user, read_all
from firmgrant.salesforce.records import InvalidRecord
from firmgrant.timeutil import Clock

if TYPE_CHECKING:
    from firmgrant.jobs.sync import SyncResult

log = logging.getLogger("firmgrant.jobs.sync")


@dataclass
class _Org:
    """What this sync knows of the org so far."""

    profile: OrgProfile
    org_id: str
    reader_due: bool  # the integration user's locale is to be asked if a date is in doubt
    unreadable: str | None = None  # the first row of this sync that could not be read


def mirror_audit(
    ledger: Ledger,
    name: str,
    source: AuditSource,
    client: SalesforceClient,
    since: datetime | None,
    counts: PageCounts,
    result: SyncResult,
    *,
    full: bool,
    clock: Clock,
    stop: Callable[[], bool],
    cap: timedelta,
    fetched: Callable[[int], None],
) -> tuple[int, bool]:
    """Apply each page of new trail rows (never "vanished": rows that aged out of the trail
    say nothing about the grants they made): (rows read, stopped on request).
    ``result.unreadable`` says the first row that could not be read, if any."""
    mirrored, org = 0, None
    for page in source.pages(client, since):
        if stop():
            log.info("%s: sync stopped early on request", name)
            return mirrored, True
        read = len(page.grants) + len(page.uses) + len(page.invalid)
        result.fetched += read
        fetched(read)
        mirrored += len(page.grants) + len(page.uses)
        fresh = _unseen(ledger, name, page)
        news = bool(fresh) or (bool(page.uses) and _new_uses(ledger, name, page))
        if not (news or page.invalid or _later(page.newest, since, source)):
            continue  # rows already applied (the overlap), or none: nothing to write
        if org is None:
            org = _know_org(ledger, name, client, fresh=since is None or full, now=clock())
        rows, invalid = _read(ledger, name, client, source, org, page, fresh, clock())
        written = ledger.apply_trail_page(
            name,
            source.kind,
            TrailPage(rows, page.uses, org.org_id, org.profile.org_name),
            invalid,
            now=clock(),
            cap=cap,
            newest=page.newest,
        )
        for problem in written.new_invalid:
            log.warning("%s: skipped audit row %s: %s", name, problem.key, problem.reason)
        log.debug("%s: a page of %d audit rows written", name, read)
        if invalid and org.unreadable is None:
            org.unreadable = f"row {invalid[0].key}: {invalid[0].reason}"
        counts += written
    if org is None and (since is None or full):
        _know_org(ledger, name, client, fresh=True, now=clock())  # a trail with no rows yet
    result.unreadable = org.unreadable if org else None
    return mirrored, False


def _unseen(ledger: Ledger, name: str, page: AuditPage) -> set[str]:
    """The Ids of the page's grant rows not applied yet."""
    if not page.grants:
        return set()
    ids = [row.id for row, _ in page.grants]
    return set(ids) - ledger.known_trail_rows(name, ids)


def _new_uses(ledger: Ledger, name: str, page: AuditPage) -> bool:
    return ledger.trail_news(name, [], [use.row_id for use in page.uses])


def _later(newest: datetime | None, since: datetime | None, source: AuditSource) -> bool:
    """Whether a page's newest row may move the watermark (past the overlap it re-read)."""
    if newest is None:
        return False
    overlap = timedelta(seconds=source.settings.overlap_seconds)
    return since is None or newest > since + overlap


def _know_org(
    ledger: Ledger, name: str, client: SalesforceClient, *, fresh: bool, now: datetime
) -> _Org:
    """The org as the ledger knows it; asked of Salesforce on a first or full sync (it may
    have changed), or when the ledger knows nothing of it."""
    profile = ledger.org_profile(name)
    asked = fresh or profile is None
    if asked:
        learned = learn_org(client)
        reader_id = client.user_id or (profile.reader_id if profile else None)
        reader = profile.reader if profile else None
        profile = OrgProfile(learned.org_id, learned.org_name, learned.defaults, reader_id, reader)
        ledger.keep_org_profile(name, profile, now)
    assert profile is not None
    org_id = profile.org_id or client.org_id
    if org_id is None:  # neither Organization nor the token named it: never the name instead
        log.warning("%s: the org's Id is unknown (Organization returned none)", name)
    reader_due = profile.reader_id is not None and (asked or profile.reader is None)
    return _Org(profile, org_id or "", reader_due)


def _read(
    ledger: Ledger,
    name: str,
    client: SalesforceClient,
    source: AuditSource,
    org: _Org,
    page: AuditPage,
    fresh: set[str],
    now: datetime,
) -> tuple[list[TrailRow], list[InvalidRecord]]:
    """The page's new grant rows read in their users' locales, and its invalid rows with
    those whose date reads in no order."""

    def reader() -> Locale | None:
        if org.reader_due and org.profile.reader_id is not None:
            me = learn_user(client, org.profile.reader_id)
            org.profile, org.reader_due = replace(org.profile, reader=me), False
            ledger.keep_org_profile(name, org.profile, now)
        return org.profile.reader

    wanted = [(row, shown) for row, shown in page.grants if row.id in fresh]
    rows, unread = read_all(
        TrailReader(
            date_order=source.settings.date_order,
            time_zone=source.settings.time_zone,
            profile=org.profile,
            reader=reader,
        ),
        wanted,
    )
    return rows, [*page.invalid, *(unreadable(row, why) for row, why in unread)]
