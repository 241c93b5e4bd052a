"""The compliance export: what an auditor receives, and proof it was not edited."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from firmgrant import __version__
from firmgrant import export as exporting
from firmgrant.cli import main
from firmgrant.export import Filters, parse_when
from firmgrant.jobs.history import grant_event
from firmgrant.ledger import Ledger, NewEvent, append_events, verify_chain
from firmgrant.ledger.models import GrantRow
from firmgrant.lifecycle import EventKind
from firmgrant.sandbox import SandboxOrg
from firmgrant.sandbox.schema import GRANT
from firmgrant.timeutil import iso_z, utcnow
from firmgrant.worker import Worker
from tests.lifecycling import worker_settings

FORMULA = '=HYPERLINK("http://evil.example","click")'
TRICKY = ["+1 Sales", "@SUM(A1)", "-2+3 Ltd", "\tTabbed", "\nNew line first", "\rCR first"]
INNER_BREAK = 'Line\nbreak, "quoted" Café'
YEAR = timedelta(days=365)  # policy.max_duration by default


def _history(org: SandboxOrg, ledger: Ledger, tmp_path: Path) -> dict[str, Any]:
    settings = worker_settings(
        org, 25, mail={"backend": "file", "file_dir": str(tmp_path / "outbox")}
    )
    rogue = org.customers.grant(
        duration="1 Week", org_name=FORMULA, grantor="ana@acme.example", login_as_user="x@acme"
    )
    renamed = org.customers.grant(duration="1 Month", org_name="Müller & Söhne")
    others = [
        org.customers.grant(duration="1 Week", org_name=name) for name in [*TRICKY, INNER_BREAK]
    ]
    ended = org.customers.grant(duration="1 Day", at=utcnow() - timedelta(days=2))
    Worker(settings, ledger).cycle()
    org.store.update(GRANT, renamed["Id"], {"Org_Name__c": "Müller Holding"})
    Worker(settings, ledger).cycle()
    return {"rogue": rogue, "renamed": renamed, "others": others, "ended": ended}


def _export(
    ledger: Ledger,
    fmt: str,
    filters: Filters | None = None,
    *,
    jobs: int = 1,
    chunk: int = exporting.CHUNK,
    cap: timedelta = YEAR,
) -> bytes:
    filters = filters or Filters()
    out = io.BytesIO()
    with ledger.sessions() as session:
        exporting.write(session, filters, fmt, out, cap=cap, jobs=jobs, chunk=chunk)
    return out.getvalue()


def test_each_format_holds_every_event_with_the_grant_as_it_was(
    sandbox: SandboxOrg, ledger: Ledger, tmp_path: Path
) -> None:
    made = _history(sandbox, ledger, tmp_path)
    rows = [json.loads(line) for line in _export(ledger, "ndjson").decode().splitlines()]
    assert [r["event_id"] for r in rows] == list(range(1, len(rows) + 1))
    assert json.loads(_export(ledger, "json")) == rows
    table = list(csv.DictReader(io.StringIO(_export(ledger, "csv").decode(), newline="")))
    assert [int(r["event_id"]) for r in table] == [r["event_id"] for r in rows]
    # The columns the README documents (compliance tools read them by name, in this order).
    assert list(table[0]) == [
        "event_id",
        "occurred_at",
        "event_at",
        "kind",
        "grant_id",
        "connection",
        "org_id",
        "org_name",
        "grantor_username",
        "grantor_email",
        "grantee",
        "granted_at",
        "expires_at",
        "status_after",
        "actor",
        "reason",
        "source_id",
        "sf_modstamp",
        "prev_hash",
        "hash",
    ]

    rogue = [r for r in rows if r["source_id"] == made["rogue"]["Id"]]
    assert [r["kind"] for r in rogue] == ["discovered", "rejected", "revoked", "notified"]
    assert {r["status_after"] for r in rogue} == {"rejected"}  # never usable, as in `grants`
    assert rogue[2]["actor"] == "system:firmgrant"
    assert "logged in as another user" in rogue[2]["reason"]
    assert {r["grantor_username"] for r in rogue} == {"ana@acme.example"}

    renamed = [r for r in rows if r["source_id"] == made["renamed"]["Id"]]
    assert [(r["kind"], r["org_name"]) for r in renamed] == [
        ("discovered", "Müller & Söhne"),
        ("changed", "Müller Holding"),
    ]
    assert renamed[0]["expires_at"][:19] == made["renamed"]["Expires_At__c"][:19]

    ended = [r for r in rows if r["source_id"] == made["ended"]["Id"]]
    # The record as first seen was last changed two days ago, when its day had not run out.
    assert ended[0]["occurred_at"] == ended[0]["sf_modstamp"] < ended[0]["event_at"]
    assert [(r["kind"], r["status_after"]) for r in ended] == [
        ("discovered", "active"),
        ("expired", "expired"),
        ("revoked", "revoked"),
        ("notified", "revoked"),
    ]


def test_csv_cells_cannot_become_formulas_and_hashes_stay_raw(
    sandbox: SandboxOrg, ledger: Ledger, tmp_path: Path
) -> None:
    _history(sandbox, ledger, tmp_path)
    raw = {r["hash"]: r for r in map(json.loads, _export(ledger, "ndjson").decode().splitlines())}
    text = _export(ledger, "csv").decode()
    assert "\r\n" in text  # RFC 4180 line ends
    table = list(csv.DictReader(io.StringIO(text, newline="")))
    names = {row["org_name"] for row in table}
    assert "'" + FORMULA in names
    assert INNER_BREAK in names  # quoted per RFC 4180, not altered
    for tricky in TRICKY:
        assert "'" + tricky in names
        assert any(r["org_name"] == tricky for r in raw.values())  # the raw value, in JSON
    for row in table:
        assert not row["org_name"].startswith(("=", "+", "-", "@", "\t", "\r", "\n"))
        assert row["hash"] in raw  # hashes and ids are exported untouched


def test_filters_by_org_time_and_connection(
    sandbox: SandboxOrg, ledger: Ledger, tmp_path: Path
) -> None:
    made = _history(sandbox, ledger, tmp_path)
    org_id = made["renamed"]["Org_Id__c"]
    only = [json.loads(x) for x in _export(ledger, "ndjson", Filters(org_id=org_id)).splitlines()]
    assert {r["org_id"] for r in only} == {org_id}
    assert len(only) == 2
    future = Filters(since=utcnow() + timedelta(days=1))
    assert _export(ledger, "ndjson", future) == b""
    assert _export(ledger, "json", future) == b"[]\n"
    assert _export(ledger, "ndjson", Filters(connection="elsewhere")) == b""
    everything = _export(ledger, "ndjson", Filters(until=utcnow() + timedelta(seconds=5)))
    assert everything == _export(ledger, "ndjson")
    # --until is exclusive: an event at exactly that time is left out, the ones before kept.
    rows = [json.loads(x) for x in everything.splitlines()]
    last_at = parse_when(rows[-1]["event_at"], utcnow())
    until = [json.loads(x) for x in _export(ledger, "ndjson", Filters(until=last_at)).splitlines()]
    assert until == [r for r in rows if r["event_at"] != rows[-1]["event_at"]]
    assert 0 < len(until) < len(rows)
    # --connection picks one connection's events out of two.
    with ledger.transaction() as session:
        append_events(
            session,
            [
                NewEvent(
                    kind=EventKind.INVALID, at=utcnow(), payload={}, connection="second", reason="x"
                )
            ],
        )
    second = [
        json.loads(x) for x in _export(ledger, "ndjson", Filters(connection="second")).splitlines()
    ]
    first = [
        json.loads(x) for x in _export(ledger, "ndjson", Filters(connection="sandbox")).splitlines()
    ]
    assert [(r["connection"], r["kind"]) for r in second] == [("second", "invalid")]
    assert first == rows


@pytest.mark.parametrize("fmt", exporting.FORMATS)
def test_the_file_is_the_same_however_many_processes_read_the_log(
    sandbox: SandboxOrg, ledger: Ledger, tmp_path: Path, fmt: str
) -> None:
    """Ranges of 3 ids: grants whose snapshot lies in an earlier range, empty ranges."""
    made = _history(sandbox, ledger, tmp_path)
    alone = _export(ledger, fmt)
    assert _export(ledger, fmt, jobs=2, chunk=3) == alone
    assert _export(ledger, fmt, jobs=1, chunk=3) == alone
    only = Filters(org_id=made["ended"]["Org_Id__c"])
    assert _export(ledger, fmt, only, jobs=2, chunk=3) == _export(ledger, fmt, only)


def test_an_event_without_a_snapshot_takes_the_grant_as_it_was_wherever_ranges_split(
    sandbox: SandboxOrg, ledger: Ledger, tmp_path: Path
) -> None:
    """A reminder, then a rename of the same grant: the reminder shows the old name and the
    change the new one, whether the two share a range or not."""
    settings = worker_settings(sandbox, 25, mail={"backend": "file", "file_dir": str(tmp_path)})
    made = sandbox.customers.grant(duration="1 Month", org_name="Old Name Ltd")
    sandbox.customers.grant(duration="1 Month", org_name="Another Ltd")  # shifts the ranges
    Worker(settings, ledger).cycle()
    with ledger.sessions() as session:
        grant = session.execute(
            select(GrantRow).where(GrantRow.source_id == made["Id"])
        ).scalar_one()
        session.expunge(grant)
    with ledger.transaction() as session:
        append_events(session, [grant_event(EventKind.REMINDED, grant, utcnow(), None)])
    sandbox.store.update(GRANT, made["Id"], {"Org_Name__c": "New Name Ltd"})
    Worker(settings, ledger).cycle()

    whole = _export(ledger, "ndjson")
    story = [
        (r["kind"], r["org_name"])
        for r in map(json.loads, whole.splitlines())
        if r["source_id"] == made["Id"]
    ]
    assert ("reminded", "Old Name Ltd") in story
    assert ("changed", "New Name Ltd") in story
    for chunk in range(2, 6):
        assert _export(ledger, "ndjson", chunk=chunk) == whole, chunk


# What OWASP's CSV-injection advice (and the README) lists as a cell's dangerous starts.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n")


def _as_csv_writer_writes(rows: list[tuple[Any, ...]]) -> str:
    """The slow, obvious CSV: every cell through csv.writer, formula starts neutralised."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for row in rows:
        cells = [str(value) for value in row]
        writer.writerow(["'" + c if c.startswith(FORMULA_PREFIXES) else c for c in cells])
    return out.getvalue()


@pytest.mark.parametrize("starts", ["=+-@\t", "=+-@\t\r\n"])
@pytest.mark.parametrize("companion", [None, 'a "quote"', "a\rCR", "a\nLF", "a, comma"])
def test_csv_lines_are_what_csv_writer_writes_for_every_awkward_cell(
    starts: str, companion: str | None
) -> None:
    """Formula starts at every position, ints among them, first or later in a range whose
    other cells need no quoting (checked as one text) or one does (checked line by line)."""
    from firmgrant.export.rows import _csv_text

    plain: tuple[Any, ...] = (7, "2026-11-01T00:00:00Z", *["x"] * (len(exporting.COLUMNS) - 2))
    tricky = [
        (*plain[:position], start + "SUM(A1)", *plain[position + 1 :])
        for start in starts
        for position in (0, 1, 6, len(plain) - 1)
    ]
    tricky += [(-5, *plain[1:]), (*plain[:3], -2, *plain[4:])]
    for cell in ("Café «Ltd»", companion):
        if cell is not None:
            tricky.append((*plain[:6], cell, *plain[7:]))
    tricky += [(*plain[:-1], ""), ("", *plain[1:])]  # empty cells at a line's ends
    chunks = [[plain, *tricky, plain], tricky, tricky[::-1]]
    for rows in [*chunks, *([tuple(map(str, row)) for row in rows] for rows in chunks)]:
        assert _csv_text(rows) == _as_csv_writer_writes(rows)
        parsed = list(csv.reader(io.StringIO(_csv_text(rows), newline="")))
        assert len(parsed) == len(rows)
        for row in parsed:
            assert not any(cell.startswith(FORMULA_PREFIXES) for cell in row), row
    assert _csv_text([]) == ""


def test_an_export_ends_at_the_chain_head_it_read_while_a_worker_appends(
    sandbox: SandboxOrg, ledger: Ledger, tmp_path: Path
) -> None:
    _history(sandbox, ledger, tmp_path)
    with ledger.sessions() as session:
        grant = session.execute(select(GrantRow).limit(1)).scalar_one()
        session.expunge(grant)

    def worker_appends(done: int, total: int) -> None:  # between two ranges of the export
        with ledger.transaction() as session:
            append_events(session, [grant_event(EventKind.REMINDED, grant, utcnow(), None)])

    out = io.BytesIO()
    with ledger.sessions() as session:
        result = exporting.write(
            session, Filters(), "ndjson", out, worker_appends, cap=YEAR, chunk=4
        )
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert result.rows == len(rows) == result.chain_head["event_id"]
    assert rows[-1]["hash"] == result.chain_head["hash"]
    with ledger.sessions() as session:  # the appends happened, and after the exported head
        assert verify_chain(session).events > result.rows


def test_export_file_manifest_and_verify_catch_a_one_byte_edit(
    sandbox: SandboxOrg,
    ledger: Ledger,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _history(sandbox, ledger, tmp_path)
    monkeypatch.setenv("FIRMGRANT_DATABASE_URL", str(ledger.engine.url.render_as_string(False)))
    target = tmp_path / "history.csv"
    assert main(["export", "--output", str(target), "--since", "1d"]) == 0
    manifest = json.loads((tmp_path / "history.csv.manifest.json").read_text())
    rows = list(csv.reader(io.StringIO(target.read_text(encoding="utf-8"), newline="")))
    assert manifest["rows"] == len(rows) - 1
    assert manifest["columns"] == rows[0], "the manifest names the file's columns"
    assert manifest["first_event"]["event_id"] == 1
    assert manifest["first_event"]["occurred_at"] <= manifest["first_event"]["event_at"]
    assert manifest["chain_head"]["event_id"] == manifest["last_event"]["event_id"]
    assert manifest["filters"]["since"] is not None
    assert manifest["sha256"] == hashlib.sha256(target.read_bytes()).hexdigest()
    assert manifest["firmgrant_version"] == __version__
    generated = datetime.fromisoformat(manifest["generated_at"].replace("Z", "+00:00"))
    assert abs(generated - utcnow()) < timedelta(minutes=5)
    assert not list(tmp_path.glob("*.partial")), "only the complete file is left"
    capsys.readouterr()
    assert main(["verify", "--export", str(target)]) == 0
    assert main(["verify"]) == 0
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    assert main(["verify", "--export", str(target)]) == 1
    assert "TAMPERED" in capsys.readouterr().err


def test_dates_accept_days_iso_times_and_ages() -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert parse_when("2026-11-01", now) == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_when("2026-11-01T10:30:00+01:00", now) == datetime(2026, 11, 1, 9, 30, tzinfo=UTC)
    assert parse_when("2026-11-01T10:30:00Z", now) == datetime(2026, 11, 1, 10, 30, tzinfo=UTC)
    assert parse_when("30d", now) == now - timedelta(days=30)
    with pytest.raises(ValueError, match="not a date"):
        parse_when("last tuesday", now)


def test_bad_export_date_or_place_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for since, problem in (
        ("yesterday-ish", "not a date"),
        ("1000000d", "1000000d is out of range: from 1s to 36500d"),
        ("99999999999999w", "out of range"),
        ("0001-01-01T00:00:00+01:00", "not a date"),  # before the first UTC time
    ):
        with pytest.raises(SystemExit) as usage:
            main(["export", "--since", since])
        assert usage.value.code == 2
        err = capsys.readouterr().err
        assert "usage: firmgrant export" in err
        assert problem in err
    for command in ("export", "verify"):
        with pytest.raises(SystemExit) as usage:
            main([command, "--jobs", "0"])
        assert usage.value.code == 2
        assert "number of processes" in capsys.readouterr().err
    assert main(["export", "--output", str(tmp_path / "no" / "such" / "dir.csv")]) == 2
    assert "cannot write" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [tmp_path / "var"]  # the default SQLite ledger only


def test_status_after_compares_expiry_and_event_time_exactly_whatever_their_shape() -> None:
    # iso_z drops a zero fraction, so the two texts may differ in shape; the export's
    # status must be what comparing the times says, at the boundary too.
    from firmgrant.export.rows import _status

    base = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    offsets = [timedelta(0), timedelta(microseconds=1), timedelta(seconds=1)]
    times = [base + d for d in offsets] + [base - d for d in offsets[1:]]
    for expires in times:
        for at in times:
            grant = ["00D", "n", "u", "e", "g", "2026-01-01T00:00:00Z", iso_z(expires), "m",
                     "Active", False, False, None]  # fmt: skip
            expected = "expired" if expires <= at else "active"
            assert _status(grant, iso_z(at), "2025-01-01T00:00:00Z") == expected, (expires, at)


def _failing_range(reader: Any, lo: int, hi: int) -> None:
    raise RuntimeError(f"range {lo}..{hi} unreadable")


def test_a_range_that_fails_leaves_the_garbage_collector_on(ledger: Ledger) -> None:
    """Ranges are read with automatic collection paused; a failure must not keep it so."""
    import gc

    from firmgrant.ledger.ranges import map_ranges

    with (
        ledger.sessions() as session,
        map_ranges(session, _failing_range, [(1, 2)]) as results,
        pytest.raises(RuntimeError, match="unreadable"),
    ):
        next(results)
    assert gc.isenabled()


def test_a_snapshot_missing_fields_exports_them_blank_and_one_without_org_is_none() -> None:
    """Payloads are the ledger's own, but a snapshot written before a field existed, or a
    payload with changes and no grant, must not stop an export."""
    from firmgrant.export.rows import _snapshot

    assert _snapshot(b'{"grant":{"org_id":"00D1","org_name":"Acme"}}') == [
        "00D1", "Acme", None, None, None, None, None, None, None, None, None, None,
    ]  # fmt: skip
    assert _snapshot('{"changes":{"org_name":["a","b"]}}') is None
    assert _snapshot(b'{"grant":{"org_id":null,"org_name":"x"}}') is None
    assert _snapshot(None) is None


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_progress_bar_on_a_terminal_and_nothing_extra_off_one(
    sandbox: SandboxOrg,
    ledger: Ledger,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _history(sandbox, ledger, tmp_path)
    monkeypatch.setenv("FIRMGRANT_DATABASE_URL", str(ledger.engine.url.render_as_string(False)))
    capsys.readouterr()
    assert main(["export", "--format", "ndjson"]) == 0  # to stdout: the data, nothing else
    out, err = capsys.readouterr()
    assert [json.loads(line)["event_id"] for line in out.splitlines()][:2] == [1, 2]
    assert err == ""

    assert main(["export", "--output", str(tmp_path / "quiet.csv")]) == 0  # no terminal
    out, err = capsys.readouterr()
    assert out == ""
    assert "exporting events" not in err

    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert main(["export", "--output", str(tmp_path / "shown.csv")]) == 0
    assert "exporting events" in terminal.getvalue()
    assert (tmp_path / "shown.csv").read_bytes() == (tmp_path / "quiet.csv").read_bytes()
