"""The ledger on SQLite and PostgreSQL: migrations, aware UTC times, the hash chain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import StatementError

from firmgrant.errors import SchemaOutOfDate
from firmgrant.ledger import Ledger, NewEvent, append_events, ensure_schema, make_engine, upgrade
from firmgrant.ledger.chain import verify_chain
from firmgrant.ledger.db import HEAD_REVISION, current_revision, head_revision
from firmgrant.ledger.models import EventRow, SyncStateRow
from firmgrant.lifecycle import EventKind

T0 = datetime(2026, 11, 1, 9, 30, tzinfo=UTC)


def test_migrations_create_the_schema_once(database_url: str) -> None:
    engine = make_engine(database_url)
    with pytest.raises(SchemaOutOfDate, match="firmgrant db upgrade"):
        ensure_schema(engine, auto_upgrade=False)

    assert head_revision() == HEAD_REVISION  # the read-only commands' shortcut is current
    assert upgrade(engine) == (None, head_revision())
    assert upgrade(engine) == (head_revision(), head_revision())
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_upgrading_a_filled_ledger_to_0003_keeps_every_event_and_its_chain(
    database_url: str,
) -> None:
    from alembic import command

    from firmgrant.ledger.db import _config

    engine = make_engine(database_url)
    command.upgrade(_config(engine), "0002")
    ledger = Ledger(engine)
    _legacy_history(ledger, 4)
    with ledger.sessions() as session:
        before = session.execute(text("SELECT id, hash FROM events ORDER BY id")).all()
    assert upgrade(engine) == ("0002", HEAD_REVISION)
    with ledger.sessions() as session:
        assert session.execute(text("SELECT id, hash FROM events ORDER BY id")).all() == before
        assert verify_chain(session).ok
    _history(ledger, 2)  # appending goes on where it stopped
    with ledger.sessions() as session:
        assert verify_chain(session).events == 6
        if engine.dialect.name == "sqlite":  # the id is the rowid: no index of its own
            indexes = session.execute(text("PRAGMA index_list('events')")).all()
            assert not [index for index in indexes if index[3] == "pk"]
    engine.dispose()


def test_upgrading_to_0012_makes_every_grant_findable_by_its_folded_names(
    database_url: str,
) -> None:
    from alembic import command

    from firmgrant.ledger.db import _config

    engine = make_engine(database_url)
    command.upgrade(_config(engine), "0011")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO grants (connection, source_id, org_id, org_name, grantor_username, "
                "grantee, granted_at, expires_at, via_login_as, sf_status, modstamp, deleted, "
                "first_seen_at, updated_at) VALUES ('c', 'a0B1', '00D1', 'Ørsted Vind A/S', "
                "'JÜRGEN@x.example', 'FirmWorks', :t, :t, false, 'Active', :t, false, :t, :t)"
            ),
            {"t": "2026-11-01 09:30:00.000000" if "sqlite" in database_url else T0},
        )
    upgrade(engine)
    with engine.connect() as connection:
        found = connection.execute(text("SELECT search_text FROM grants")).scalar_one()
    assert found == "orsted vind a/s\njurgen@x.example"
    engine.dispose()


def test_upgrading_to_0013_knows_how_long_every_grant_lasts(database_url: str) -> None:
    """The fill in SQL rounds up to whole seconds as lifecycle.lasts_seconds does, so the
    grants the cap ends are found on both databases."""
    from alembic import command

    from firmgrant.ledger._bulk import time_converter
    from firmgrant.ledger.db import _config
    from firmgrant.lifecycle import lasts_seconds

    engine = make_engine(database_url)
    command.upgrade(_config(engine), "0012")
    start = datetime(2026, 11, 1, 9, 30, 0, 250000, tzinfo=UTC)
    spans = [timedelta(days=1), timedelta(days=1, milliseconds=1),
             timedelta(days=1, milliseconds=-500), timedelta(days=366), timedelta(0)]  # fmt: skip
    to_db = time_converter(engine.dialect.name)
    with engine.begin() as connection:
        for number, span in enumerate(spans):
            connection.execute(
                text(
                    "INSERT INTO grants (connection, source_id, org_id, grantee, granted_at, "
                    "expires_at, via_login_as, sf_status, modstamp, deleted, first_seen_at, "
                    "updated_at) VALUES ('c', :id, '00D1', 'FirmWorks', :g, :e, false, 'Active', "
                    ":g, false, :g, :g)"
                ),
                {"id": f"a0B{number}", "g": to_db(start), "e": to_db(start + span)},
            )
    upgrade(engine)
    with engine.connect() as connection:
        found = connection.execute(
            text("SELECT lasts_seconds FROM grants ORDER BY source_id")
        ).scalars()
        assert list(found) == [lasts_seconds(start, start + span) for span in spans]
    assert [lasts_seconds(start, start + span) for span in spans] == [
        86400,
        86401,
        86400,
        31622400,
        0,
    ]
    engine.dispose()


def test_times_come_back_aware_utc(ledger: Ledger) -> None:
    paris = datetime(2026, 11, 1, 10, 30, 15, 123000, tzinfo=timezone(timedelta(hours=2)))
    with ledger.transaction() as session:
        session.add(SyncStateRow(connection="c", source="object", watermark=paris))
    with ledger.sessions() as session:
        row = session.get(SyncStateRow, ("c", "object"))
    assert row is not None
    assert row.watermark == paris
    assert row.watermark is not None
    assert row.watermark.utcoffset() == timedelta(0)
    assert row.watermark.hour == 8


def test_naive_datetimes_are_refused(ledger: Ledger) -> None:
    naive = SyncStateRow(connection="c", source="object", watermark=datetime(2026, 1, 1))
    with ledger.sessions() as session:
        session.add(naive)
        with pytest.raises(StatementError, match="naive datetime"):
            session.flush()


def _legacy_history(ledger: Ledger, count: int) -> None:
    """Events as a firmgrant before migration 0011 wrote them: no ``occurred_at`` column."""
    from firmgrant.ledger._bulk import iso_from_db, sqlite_time
    from firmgrant.ledger.chain import _hash, canonical_json, read_chain_head

    sqlite = ledger.engine.dialect.name == "sqlite"
    with ledger.transaction() as session:
        last, prev = read_chain_head(session)
        for i in range(count):
            at = T0 + timedelta(minutes=i)
            stored = sqlite_time(at) if sqlite else at
            row = ("discovered", None, "acme", f"a0B{i:015d}", "system:firmgrant", "ünïcode ✓")
            payload = canonical_json({"n": i})
            last += 1
            hash_ = _hash(prev, last, f'"{iso_from_db(stored)}"', None, *row, payload)
            session.execute(
                text(
                    "INSERT INTO events (id, at, kind, grant_id, connection, source_id, actor, "
                    "reason, payload, prev_hash, hash) VALUES (:id, :at, :kind, :grant_id, "
                    ":connection, :source_id, :actor, :reason, :payload, :prev, :hash)"
                ),
                dict(
                    zip(
                        ("kind", "grant_id", "connection", "source_id", "actor", "reason"),
                        row,
                        strict=True,
                    )
                )
                | {"id": last, "at": stored, "payload": payload, "prev": prev, "hash": hash_},
            )
            prev = hash_
        session.execute(
            text("UPDATE chain_head SET last_event_id = :id, hash = :hash WHERE id = 1"),
            {"id": last, "hash": prev},
        )


def _history(ledger: Ledger, count: int = 5) -> None:
    with ledger.transaction() as session:
        append_events(
            session,
            [
                NewEvent(
                    kind=EventKind.DISCOVERED,
                    at=T0 + timedelta(minutes=i),
                    payload={"n": i},
                    connection="acme",
                    source_id=f"a0B{i:015d}",
                    reason="ünïcode ✓",
                )
                for i in range(count)
            ],
        )


def _verify(ledger: Ledger) -> tuple[bool, int | None]:
    """The verdict, which must not depend on how the log is split between processes."""
    with ledger.sessions() as session:
        report = verify_chain(session)
    with ledger.sessions() as session:  # ranges of 2 ids: every boundary case is crossed
        split = verify_chain(session, chunk=2, jobs=2)
    assert (split.ok, split.first_bad_id, split.events) == (
        report.ok,
        report.first_bad_id,
        report.events,
    )
    return report.ok, report.first_bad_id


def test_an_untouched_chain_verifies(ledger: Ledger) -> None:
    _history(ledger)
    _history(ledger, 3)
    assert _verify(ledger) == (True, None)


def test_an_edited_field_is_caught_at_its_row(ledger: Ledger) -> None:
    _history(ledger)
    with ledger.transaction() as session:
        session.execute(update(EventRow).where(EventRow.id == 3).values(actor="someone else"))
    assert _verify(ledger) == (False, 3)


def test_an_edited_occurred_at_is_caught_at_its_row(ledger: Ledger) -> None:
    """When it happened is part of the record: moving it is tampering, even onto ``at``."""
    _history(ledger)
    with ledger.transaction() as session:
        session.execute(
            update(EventRow).where(EventRow.id == 2).values(occurred_at=T0 - timedelta(days=1))
        )
    assert _verify(ledger) == (False, 2)


def test_a_deleted_row_is_caught(ledger: Ledger) -> None:
    _history(ledger)
    with ledger.transaction() as session:
        session.execute(delete(EventRow).where(EventRow.id == 2))
    assert _verify(ledger) == (False, 3)


def test_a_deleted_last_row_is_caught_by_the_head(ledger: Ledger) -> None:
    _history(ledger)
    with ledger.transaction() as session:
        session.execute(delete(EventRow).where(EventRow.id == 5))
    ok, _ = _verify(ledger)
    assert not ok


def test_an_inserted_row_is_caught(ledger: Ledger) -> None:
    _history(ledger)
    with ledger.transaction() as session:
        forged = session.execute(select(EventRow).where(EventRow.id == 5)).scalar_one()
        session.add(
            EventRow(
                id=6,
                at=T0,
                kind="revoked",
                actor="x",
                payload="{}",
                prev_hash=forged.hash,
                hash="f" * 64,
            )
        )
    assert _verify(ledger) == (False, 6)


def test_swapped_rows_are_caught(ledger: Ledger) -> None:
    _history(ledger)
    with ledger.transaction() as session:
        two, three = (
            session.execute(select(EventRow).where(EventRow.id == n)).scalar_one() for n in (2, 3)
        )
        swapped = {
            column: (getattr(three, column), getattr(two, column))
            for column in ("at", "payload", "source_id", "prev_hash", "hash")
        }
        for column, (for_two, for_three) in swapped.items():
            setattr(two, column, for_two)
            setattr(three, column, for_three)
    assert _verify(ledger) == (False, 2)


def test_ids_are_gap_free_across_transactions(ledger: Ledger) -> None:
    _history(ledger, 2)
    _history(ledger, 2)
    with ledger.sessions() as session:
        ids = session.execute(text("SELECT id FROM events ORDER BY id")).scalars().all()
    assert ids == [1, 2, 3, 4]


def test_the_stored_hash_is_sha256_of_prev_hash_and_the_canonical_row(ledger: Ledger) -> None:
    """What an auditor recomputes the slow obvious way matches what the ledger stored."""
    import hashlib
    import json

    payload = {"grant": {"org_name": 'Zoë "Q" <b>', "n": 1}, "changes": {"x": [None, True]}}
    happened = T0 - timedelta(days=40, microseconds=7)
    events = [
        NewEvent(EventKind.CHANGED, T0, payload, "acme", "a0B000000000001AAA", None, "salesforce"),
        NewEvent(EventKind.REMINDED, T0 + timedelta(microseconds=5), {"due": "x"}, reason="ünï ✓"),
        NewEvent(
            EventKind.GRANTED, T0, {"n": 2}, "acme", "0Ym000000000001AAA", occurred_at=happened
        ),
    ]
    with ledger.transaction() as session:
        append_events(session, events)
    with ledger.sessions() as session:
        stored = session.execute(select(EventRow).order_by(EventRow.id)).scalars().all()

    prev = "0" * 64
    for row, event in zip(stored, events, strict=True):
        canonical = {
            "id": row.id,
            "at": event.at.isoformat().replace("+00:00", "Z"),
            "kind": event.kind,
            "grant_id": event.grant_id,
            "connection": event.connection,
            "source_id": event.source_id,
            "actor": event.actor,
            "reason": event.reason,
            "payload": event.payload,
        }
        if event.occurred_at is not None:  # named only where it differs from the recording
            canonical["occurred_at"] = event.occurred_at.isoformat().replace("+00:00", "Z")
        obvious = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert row.occurred_at == (event.occurred_at or event.at)
        assert row.prev_hash == prev
        assert row.hash == hashlib.sha256((prev + obvious).encode()).hexdigest()
        prev = row.hash


def test_canonical_json_is_the_stdlib_canonical_form_for_awkward_text() -> None:
    """The fast encoder writes what an auditor's `json.dumps(..., sort_keys=True)` writes."""
    import json

    from firmgrant.ledger.chain import canonical_json

    awkward = "".join(map(chr, range(0x80))) + "\u2028\u2029\ufeff é «» 😀 \x7f\x80\x9f"
    value = {
        "z": [awkward, 1, -2, 2**62, True, False, None],
        "ä": {"b": awkward, "B": 2, "é": {}, "e": []},
        "big": 2**70,  # past orjson's integers: the stdlib writes it
    }
    assert canonical_json(value) == json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def test_a_page_read_before_another_replicas_revocation_does_not_undo_it(ledger: Ledger) -> None:
    """Replicas revoke outside the planning lock: a sync may write a page fetched just
    before another replica revoked one of its grants. That stale Active must not reopen the
    grant, or enforce revokes it a second time (found by bench/chaos.py, postgres-down)."""
    from firmgrant.grant import GrantRecord
    from firmgrant.ledger.models import GrantRow

    now = datetime(2026, 12, 7, 10, 50, tzinfo=UTC)
    record = GrantRecord(
        source_id="a0B5e0000000037EAA", org_id="00D5e000000000NEA", org_name="Acme",
        grantor_id=None, grantor_username=None, grantor_email="ada@acme.example",
        grantee="FirmWorks Support", duration="1 Day", granted_at=now - timedelta(days=1),
        expires_at=now - timedelta(seconds=5), via_login_as=False, login_as_user=None,
        sf_status="Active", revoked_at=None, revoke_reason=None, modstamp=now - timedelta(days=1),
        deleted=False,
    )  # fmt: skip
    ledger.apply_page("sandbox", "object", [record], [], now=now)
    with ledger.transaction() as session:  # what the revoke job writes on another replica
        session.execute(update(GrantRow).values(sf_status="Revoked", revoked_at=now))
    stale = ledger.apply_page("sandbox", "object", [record], [], now=now)
    with ledger.sessions() as session:
        assert session.scalars(select(GrantRow.sf_status)).one() == "Revoked"
        kinds = session.scalars(select(EventRow.kind)).all()
    assert stale.updated == 0
    assert EventKind.CHANGED not in kinds
    # The customer really granted it again: a newer SystemModstamp is news.
    later = record._replace(modstamp=now + timedelta(seconds=1), expires_at=now + timedelta(days=1))
    assert ledger.apply_page("sandbox", "object", [later], [], now=now).updated == 1
    with ledger.sessions() as session:
        assert session.scalars(select(GrantRow.sf_status)).one() == "Active"
