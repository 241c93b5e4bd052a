"""*Compliance*: the export downloaded (a zip of the file and its manifest, streamed) and the
hash chain's verification."""

from __future__ import annotations

import io
import json
import queue
import threading
import time
import zipfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from firmgrant import export as exporting
from firmgrant.accounts import Permission
from firmgrant.errors import DurationError
from firmgrant.export.rows import FORMATS, Filters
from firmgrant.ledger import Ledger
from firmgrant.ledger.chain import read_chain_head, verify_chain
from firmgrant.timeutil import iso_z
from firmgrant.web.app import context_of, render
from firmgrant.web.auth import check_csrf, require


class _Cancelled(Exception):
    """The browser went away: the export stops."""


class _Pipe(io.RawIOBase):
    """A write-only, unseekable file whose bytes go to a bounded queue (so a slow browser
    slows the export instead of filling memory)."""

    def __init__(self, chunks: queue.Queue[bytes | BaseException | None], stop: threading.Event):
        self.chunks, self.stop = chunks, stop

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if self.stop.is_set():
            raise _Cancelled
        self.chunks.put(bytes(data))
        return len(data)


def zip_stream(
    ledger: Ledger, filters: Filters, fmt: str, cap: timedelta, name: str
) -> Iterator[bytes]:
    """The export and its manifest as one zip, made while it is sent."""
    chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=64)
    stop = threading.Event()

    member = zipfile.ZipInfo(name, date_time=time.gmtime()[:6])
    member.compress_type = zipfile.ZIP_DEFLATED

    def produce() -> None:
        try:
            with zipfile.ZipFile(_Pipe(chunks, stop), "w", zipfile.ZIP_DEFLATED) as archive:
                with (
                    ledger.sessions() as session,
                    archive.open(member, "w", force_zip64=True) as out,
                ):
                    result = exporting.write(session, filters, fmt, out, cap=cap)
                record = exporting.manifest(filters, fmt, Path(name), result, cap)
                archive.writestr(
                    exporting.manifest_path(Path(name)).name, json.dumps(record, indent=2) + "\n"
                )
            chunks.put(None)
        except _Cancelled:
            pass
        except BaseException as exc:  # handed to the response, which ends the download
            chunks.put(exc)

    threading.Thread(target=produce, name="export-download", daemon=True).start()
    try:
        while (item := chunks.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while not chunks.empty():  # let a producer blocked on a full queue see the stop
            chunks.get_nowait()


def _filters(request: Request) -> tuple[Filters, str, list[str]]:
    params, now = request.query_params, context_of(request).clock()
    problems: list[str] = []
    moments = {}
    for key in ("since", "until"):
        text = (params.get(key) or "").strip()
        if text:
            try:
                moments[key] = exporting.parse_when(text, now)
            except DurationError as exc:
                problems.append(f"{key.capitalize()}: {exc}.")
    fmt = params.get("format") or "csv"
    if fmt not in FORMATS:
        problems.append(f"Format: one of {', '.join(FORMATS)}.")
        fmt = "csv"
    filters = Filters(
        since=moments.get("since"), until=moments.get("until"),
        org_id=(params.get("org") or "").strip() or None,
        connection=(params.get("connection") or "").strip() or None,
    )  # fmt: skip
    return filters, fmt, problems


def compliance_page(request: Request) -> Response:
    require(request, Permission.EXPORT)
    context = context_of(request)
    with context.ledger.sessions() as session:
        head_id, head_hash = read_chain_head(session)
    values = {"head_id": head_id, "head_hash": head_hash, "formats": FORMATS,
              "problems": [], "params": request.query_params}  # fmt: skip
    return render(request, "compliance.html", values)


def download(request: Request) -> Response:
    require(request, Permission.EXPORT)
    context = context_of(request)
    filters, fmt, problems = _filters(request)
    if problems:
        with context.ledger.sessions() as session:
            head_id, head_hash = read_chain_head(session)
        values = {"head_id": head_id, "head_hash": head_hash, "formats": FORMATS,
                  "problems": problems, "params": request.query_params}  # fmt: skip
        return render(request, "compliance.html", values, 400)
    stamp = iso_z(context.clock()).replace(":", "").replace("-", "")
    name = f"firmgrant-export-{stamp}.{fmt}"
    body = zip_stream(context.ledger, filters, fmt, context.settings.policy.max_duration, name)
    return StreamingResponse(
        body,
        media_type="application/zip",
        headers={"content-disposition": f'attachment; filename="{name}.zip"'},
    )


def _verify(ledger: Ledger) -> str:
    with ledger.sessions() as session:
        report = verify_chain(session)
    if report.ok:
        return f"The chain is intact: {report.events} events, head {report.head_hash[:16]}…"
    return f"TAMPERED at event {report.first_bad_id}: {report.problem}"


async def verify(request: Request) -> Response:
    require(request, Permission.EXPORT)
    check_csrf(request, await request.form())
    request.session["flash"] = await run_in_threadpool(_verify, context_of(request).ledger)
    return RedirectResponse("/compliance", status_code=303)


def routes() -> list[BaseRoute]:
    return [
        Route("/compliance", compliance_page, methods=["GET"]),
        Route("/compliance/export", download, methods=["GET"]),
        Route("/compliance/verify", verify, methods=["POST"]),
    ]
