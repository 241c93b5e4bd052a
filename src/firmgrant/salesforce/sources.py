"""Where grants are read: the ``object`` source (an SObject read through the REST API)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from simple_salesforce.format import format_soql

from firmgrant.grant import GrantRecord
from firmgrant.salesforce.client import SalesforceClient
from firmgrant.salesforce.records import InvalidRecord, record_parser
from firmgrant.settings import SourceSettings, VendorSettings

Page = tuple[list[GrantRecord], list[InvalidRecord]]


class ObjectSource:
    """Grants stored as records of an SObject (default ``Login_Access_Grant__c``).

    Names were validated against ``^[A-Za-z][A-Za-z0-9_]*$`` by the settings; values go
    through ``format_soql``, so a grantee like ``O'Brien Support`` cannot break the query.
    """

    kind = "object"

    def __init__(self, settings: SourceSettings, vendor: VendorSettings) -> None:
        self.settings = settings
        self.vendor = vendor
        self._parse_record = record_parser(settings.fields)

    def soql(self, since: datetime | None) -> str:
        fields = self.settings.fields
        names = list(dict.fromkeys(fields.model_dump().values()))
        query = format_soql(
            "SELECT {:literal} FROM {:literal} WHERE {:literal} IN {}",
            ", ".join(names),
            self.settings.object_name,
            fields.grantee,
            list(self.vendor.grantee_names),
        )
        if since is not None:
            query += format_soql(" AND {:literal} > {}", fields.modstamp, since)
        # Ordered by modstamp so each committed page can advance the watermark safely.
        return query + f" ORDER BY {fields.modstamp} ASC, {fields.id} ASC"

    def pages(self, client: SalesforceClient, since: datetime | None) -> Iterator[Page]:
        """Parsed pages, deleted records included (``queryAll``).

        The next page is fetched while the caller writes this one: waiting on Salesforce
        and writing the ledger overlap. At most two pages are in memory.
        """
        raw_pages = client.query_pages(
            self.soql(since), include_deleted=True, batch_size=self.settings.batch_size
        )
        for raw in one_ahead(raw_pages, self.settings.batch_size):
            yield self.parse(raw)

    def parse(self, raw: list[dict[str, Any]]) -> Page:
        good: list[GrantRecord] = []
        bad: list[InvalidRecord] = []
        for record in raw:
            parsed = self._parse_record(record)
            (good if isinstance(parsed, GrantRecord) else bad).append(parsed)  # type: ignore[arg-type]
        return good, bad


def one_ahead(pages: Iterator[list[dict[str, Any]]], full: int) -> Iterator[list[dict[str, Any]]]:
    """Fetch page n+1 in a helper thread while page n is consumed.

    A first page shorter than ``full`` records (an idle sync's only page, nearly always) is
    the last in practice: the rest, if any, is read here with no helper thread, which would
    cost more to start than the page it waits for. Only one fetch is ever in flight, so the
    client and its session are never used by two threads at once. Errors surface, in order,
    where the page would have been.
    """
    first = next(pages, None)
    if first is None:
        return
    if len(first) < full:
        yield first
        yield from pages
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
        pending = pool.submit(next, pages, None)
        yield first
        while (page := pending.result()) is not None:
            pending = pool.submit(next, pages, None)
            yield page
