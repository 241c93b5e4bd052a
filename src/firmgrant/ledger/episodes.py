"""A grant row's facts for the rules (``policy.GrantFacts``)."""

from __future__ import annotations

from firmgrant.ledger.models import GrantRow
from firmgrant.policy import GrantFacts


def facts(grant: GrantRow) -> GrantFacts:
    """What the rules look at of a grant row (``policy.GrantFacts``)."""
    return GrantFacts(
        grant.granted_at, grant.expires_at, grant.via_login_as, grant.sf_status, grant.deleted
    )
