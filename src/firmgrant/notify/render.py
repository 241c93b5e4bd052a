"""Emails from Jinja2 templates: a subject, a plain-text and an HTML part per kind.

HTML parts are autoescaped (``select_autoescape`` is told that ``*.html.j2`` is HTML: its
defaults would leave them raw) and every template is ``StrictUndefined``: a
missing value fails the render instead of mailing a blank. Customer-controlled text (org
names, usernames) only ever reaches a template as data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from jinja2 import (
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PackageLoader,
    StrictUndefined,
    select_autoescape,
)

from firmgrant.display import in_words
from firmgrant.lifecycle import EmailKind, NoticeKind
from firmgrant.timeutil import format_duration


def environment(override_dir: Path | None = None) -> Environment:
    """Packaged templates, optionally overridden file by file from ``override_dir``."""
    loaders: list[Any] = [PackageLoader("firmgrant", "templates/emails")]
    if override_dir is not None:
        loaders.insert(0, FileSystemLoader(override_dir))
    return Environment(
        loader=ChoiceLoader(loaders),
        autoescape=select_autoescape(enabled_extensions=("html.j2", "html")),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


def utc_text(at: datetime) -> str:
    return at.strftime("%A %d %B %Y, %H:%M UTC")


def context(
    *,
    vendor_name: str,
    support_email: str | None,
    org_id: str,
    org_name: str | None,
    grantor_username: str | None,
    grantor_email: str | None,
    grantee: str,
    granted_at: datetime,
    ends_at: datetime,
    now: datetime,
    login_as_user: str | None = None,
    reason: str | None = None,
    event_at: datetime | None = None,
    offset: timedelta | None = None,
    in_setup_only: bool = False,
) -> dict[str, Any]:
    """Everything a template may use; times in UTC and in words relative to ``now``."""
    return {
        "vendor_name": vendor_name,
        "support_email": support_email,
        "org_id": org_id,
        "org_label": org_name or org_id,
        "grantor_label": grantor_username or grantor_email or "a user of your org",
        "grantor_email": grantor_email,
        "grantee": grantee,
        "granted_at_utc": utc_text(granted_at),
        "expires_at_utc": utc_text(ends_at),
        "expires_in_words": in_words((ends_at - now).total_seconds()),
        "login_as_user": login_as_user,
        "reason": reason or "",
        "event_at_utc": utc_text(event_at or now),
        "offset": format_duration(offset) if offset is not None else "",
        # The grant exists only in the customer's Setup: only they can revoke it there.
        "in_setup_only": in_setup_only,
    }


NOTICE_KINDS = frozenset(k.value for k in NoticeKind)


def render(env: Environment, kind: str, values: dict[str, Any]) -> Rendered:
    """The email of this kind (an ``EmailKind`` or a ``NoticeKind``; anything else is a bug:
    ``ValueError``)."""
    kind = NoticeKind(kind) if kind in NOTICE_KINDS else EmailKind(kind)
    # A subject is one line, whatever a customer put in an org name.
    subject = " ".join(env.get_template(f"{kind}.subject.j2").render(values).split())
    values = {**values, "subject": subject}
    return Rendered(
        subject=subject,
        text=env.get_template(f"{kind}.txt.j2").render(values),
        html=env.get_template(f"{kind}.html.j2").render(values),
    )
