"""Terminal and file output: rich tables for people, JSON and injection-safe CSV for tools."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import IO, TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from firmgrant.ledger.queries import JSON_KEYS, EventView, GrantView, Lifecycle
from firmgrant.lifecycle import GrantStatus
from firmgrant.timeutil import iso_z

if TYPE_CHECKING:
    from firmgrant.worker import CycleResult

# OWASP CSV injection: a spreadsheet treats cells starting with these as formulas.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n")


def safe_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return iso_z(value) or ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def write_csv(out: IO[str], header: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180
    writer.writerow(header)
    count = 0
    for row in rows:
        writer.writerow([safe_cell(cell) for cell in row])
        count += 1
    return count


_UNITS = ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second"))


def in_words(delta_seconds: float) -> str:
    """``in 2 days 23 hours`` / ``3 hours 5 minutes ago``: the largest unit and the next one
    down, like a person would say it (one unit alone, rounded down, hid nearly a day). Its
    twin is ``words`` in ``web/static/firmgrant.js``."""
    past = delta_seconds < 0
    left = int(abs(delta_seconds))
    text = "0 seconds"
    for index, (size, name) in enumerate(_UNITS):
        if left >= size:
            amount, rest = divmod(left, size)
            text = _plural(amount, name)
            if index + 1 < len(_UNITS) and rest >= _UNITS[index + 1][0]:
                smaller, unit = _UNITS[index + 1]
                text += " " + _plural(rest // smaller, unit)
            break
    return f"{text} ago" if past else f"in {text}"


def _plural(amount: int, unit: str) -> str:
    return f"{amount} {unit}{'' if amount == 1 else 's'}"


def grants_json(grants: Iterable[GrantView], out: IO[str]) -> None:
    """A JSON list, written as it streams (no whole list in memory)."""
    out.write("[")
    count = 0
    for count, grant in enumerate(grants, start=1):
        out.write(",\n" if count > 1 else "\n")
        out.write(json.dumps(grant.as_json(), ensure_ascii=False))
    out.write("\n]\n" if count else "]\n")


def grants_csv(grants: Iterable[GrantView], out: IO[str]) -> None:
    write_csv(out, JSON_KEYS, ([getattr(g, key) for key in JSON_KEYS] for g in grants))


_STATUS_STYLE: dict[str, str] = {
    GrantStatus.ACTIVE: "green",
    GrantStatus.EXPIRING: "yellow",
    GrantStatus.EXPIRED: "dim",
    GrantStatus.REVOKED: "dim",
    GrantStatus.REJECTED: "red",
    GrantStatus.DELETED: "dim",
}


TABLE_COLUMNS = ("ID", "Org", "Org name", "Grantor", "Access ends (UTC)", "Ends", "Status")


def _cells(grant: GrantView, now: datetime) -> tuple[str, ...]:
    """A grant as the table's columns say it: its real end (the cap included)."""
    return (
        str(grant.id),
        grant.org_id,
        grant.org_name or "",
        grant.grantor_username or grant.grantor_email or "",
        grant.ends_at.strftime("%Y-%m-%d %H:%M"),
        in_words((grant.ends_at - now).total_seconds()),
        grant.status,
    )


def grants_table(grants: Iterable[GrantView], console: Console, now: datetime) -> int:
    table = Table(show_lines=False, header_style="bold")
    for column in TABLE_COLUMNS:
        table.add_column(column, overflow="fold")
    count = 0
    for grant in grants:
        count += 1
        *cells, status = _cells(grant, now)
        # Text(), not strings: customer-supplied names must never be read as rich markup.
        table.add_row(
            *(Text(cell) for cell in cells), Text(status, style=_STATUS_STYLE.get(status, ""))
        )
    if count:
        console.print(table)
    console.print(f"{count} grant{'s' if count != 1 else ''}")
    return count


def grants_lines(grants: Iterable[GrantView], out: IO[str], now: datetime) -> int:
    """The table for a pipe: a header, then one grant a line, columns split by tabs (a tab
    or line break inside a name becomes a space), nothing cut or wrapped."""
    out.write("\t".join(TABLE_COLUMNS) + "\n")
    count = 0
    for grant in grants:
        out.write("\t".join(_flat(cell) for cell in _cells(grant, now)) + "\n")
        count += 1
    return count


def _flat(cell: str) -> str:
    return " ".join(cell.split()) if any(c in cell for c in "\t\r\n") else cell


def grant_story(
    grant: GrantView,
    events: Sequence[EventView],
    console: Console,
    lifecycle: Lifecycle | None = None,
    poll: timedelta = timedelta(seconds=60),
) -> None:
    details = Table.grid(padding=(0, 2))
    details.add_column(style="bold")
    details.add_column()
    for key, value in grant.as_json().items():
        details.add_row(key, Text("" if value is None else str(value)))
    if lifecycle is not None and lifecycle.revocation is not None:
        details.add_row("revocation", Text(lifecycle.revocation_words() or ""))
        details.add_row("revocation_reason", Text(lifecycle.revocation_reason or ""))
    console.print(details)
    if lifecycle is not None and lifecycle.emails:
        emails = Table(title="Emails", header_style="bold", title_justify="left")
        for column in ("Kind", "Due (UTC)", "State", "Note"):
            emails.add_column(column, overflow="fold")
        for kind, due, state, note in lifecycle.emails:
            emails.add_row(kind, iso_z(due), state, Text(note or ""))
        console.print(emails)
    history = Table(title="History", header_style="bold", title_justify="left")
    for column in ("#", "When (UTC)", "What", "Who", "Details"):
        history.add_column(column, overflow="fold")
    for event in events:
        when = event.occurred_at.strftime("%Y-%m-%d %H:%M:%S")
        late = event.noticed_later(poll)
        if late is not None:  # a trail row read long after it happened says so
            when += f" (noticed {in_words(late.total_seconds()).removeprefix('in ')} later)"
        history.add_row(
            str(event.id), when, event.kind, Text(event.actor), Text(_event_details(event))
        )
    console.print(history)


def _event_details(event: EventView) -> str:
    if event.reason:
        return event.reason
    changes = event.payload.get("changes")
    if isinstance(changes, dict):
        return "; ".join(f"{field}: {old} → {new}" for field, (old, new) in changes.items())
    grant = event.payload.get("grant")
    if isinstance(grant, dict):
        return f"expires {grant.get('expires_at')} ({grant.get('sf_status')})"
    return ""


def cycle_story(result: CycleResult) -> list[str]:
    """What one worker cycle did, in words (``run --once`` on stdout): each count says what it
    counts, so counts that differ (Login-As grants seen, revocations opened) explain themselves.
    """
    syncs, revokes, sent = result.syncs, result.revokes, result.dispatch
    failed = [s.connection for s in syncs if s.error]
    lines = [
        f"synced {len(syncs)} connection{'s' if len(syncs) != 1 else ''}"
        + (f" ({len(failed)} failed: {', '.join(failed[:5])})" if failed else "")
        + f": {sum(s.fetched for s in syncs):,} records read, "
        f"{sum(s.inserted for s in syncs):,} new grants, {sum(s.updated for s in syncs):,} changed,"
        f" {sum(s.rejected for s in syncs):,} of the new made while logged in as another user"
    ]
    if result.enforce:
        opened, login_as = result.enforce.to_revoke, result.enforce.rejected
        lines.append(
            f"revocations opened: {opened:,} — {login_as:,} for Login-As grants still live (their "
            f"grantors are told why), {opened - login_as:,} for access that ended; a grant "
            "already ended, revoked or deleted needs none"
        )
    elif not result.planned:
        lines.append("no planning: another worker held the lock (it enforces, reminds, notifies)")
    if revokes:
        lines.append(
            f"revoked in Salesforce: {sum(r.revoked for r in revokes):,}, "
            f"failed {sum(r.failed for r in revokes):,} (retried next cycle)"
        )
    if sent:
        lines.append(
            f"emails and notices: {sent.sent:,} sent, {sent.failed:,} to retry, "
            f"{sent.undeliverable:,} undeliverable, {sent.cancelled:,} no longer needed"
        )
    lines.append(f"{result.api_calls:,} API calls in {result.seconds:.1f} s")
    return lines
