"""Decoding a slot's pgoutput messages into the windows they touch, by hand and from a real slot."""

import datetime as dt
import struct
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from etl_assets.devstack.postgres import EmbeddedPostgres
from etl_assets.lib.errors import ExtractError
from etl_assets.lib.postgres.session import ConnectionSettings, Snapshot
from etl_assets.lib.postgres.sql import BoundKind
from etl_assets.lib.postgres.wal import (
    UNCHANGED_TOAST,
    ChangeKind,
    MessageTally,
    WatchedTable,
    advance_slot,
    decode_pgoutput,
    local_window_start,
    lsn_text,
    parse_lsn,
    peek_changes,
    slot_state,
    wal_problems,
)
from etl_assets.lib.table.windows import Grain
from etl_assets_tests.support import run_flushed, run_sql


def problems_of(conninfo: str, tables: list[WatchedTable]) -> list[str]:
    """What stops a slot of publication `etl_shop` on these tables, as the sensor reads it."""
    with Snapshot(ConnectionSettings(conninfo=conninfo), "test wal") as snapshot:
        return wal_problems(snapshot, "etl_shop", tables)


def text(value: str) -> bytes:
    return value.encode() + b"\x00"


def row(*values: str | None) -> bytes:
    encoded = struct.pack(">h", len(values))
    for value in values:
        if value is None:
            encoded += b"n"
        elif value == UNCHANGED_TOAST:
            encoded += b"u"
        else:
            data = value.encode()
            encoded += b"t" + struct.pack(">i", len(data)) + data
    return encoded


def begin() -> bytes:
    return b"B" + struct.pack(">qqi", 100, 0, 7)


def commit(end: int) -> bytes:
    return b"C" + struct.pack(">bqqq", 0, end - 8, end, 0)


RELATION = (
    b"R"
    + struct.pack(">I", 16384)
    + text("public")
    + text("orders")
    + struct.pack(">bh", ord("f"), 3)
    + b"".join(
        struct.pack(">b", 1) + text(name) + struct.pack(">Ii", 20, -1)
        for name in ("id", "placed_at", "note")
    )
)


def test_each_committed_row_change_is_decoded_with_its_old_and_new_values() -> None:
    oid = struct.pack(">I", 16384)
    messages = [
        begin(),
        RELATION,
        b"I" + oid + b"N" + row("1", "2026-10-01 12:00:00+00", "new"),
        b"U" + oid + b"O" + row("1", "2026-10-01 12:00:00+00", "new")
        + b"N" + row("1", "2026-10-03 08:00:00+00", UNCHANGED_TOAST),
        b"D" + oid + b"O" + row("2", "2025-12-06 00:00:00+00", None),
        b"T" + struct.pack(">ib", 1, 0) + oid,
        commit(5000),
        begin(),
        b"I" + oid + b"N" + row("3", "2026-10-02 00:00:00+00", "uncommitted"),
    ]  # fmt: skip
    changes = list(decode_pgoutput(messages))
    assert [c.kind for c in changes] == [
        ChangeKind.INSERT, ChangeKind.UPDATE, ChangeKind.DELETE, ChangeKind.TRUNCATE,
    ]  # fmt: skip
    insert, update, delete, truncate = changes
    assert {c.commit_end_lsn for c in changes} == {5000}
    assert (insert.relation.schema, insert.relation.table) == ("public", "orders")
    assert insert.relation.replica_identity == "f"
    assert insert.old is None
    assert insert.value("placed_at", insert.new) == "2026-10-01 12:00:00+00"
    assert update.value("placed_at", update.old) == "2026-10-01 12:00:00+00"
    assert update.value("placed_at", update.new) == "2026-10-03 08:00:00+00"
    assert update.value("note", update.new) == UNCHANGED_TOAST
    assert delete.new is None
    assert delete.value("placed_at", delete.old) == "2025-12-06 00:00:00+00"
    assert delete.value("note", delete.old) is None
    assert truncate.relation.table == "orders"


def test_a_tally_counts_the_messages_and_notes_the_last_commit_passing_through() -> None:
    oid = struct.pack(">I", 16384)
    insert = b"I" + oid + b"N" + row("1", "2026-10-01 12:00:00+00", "new")
    messages = [begin(), RELATION, insert, commit(5000), begin(), insert, commit(7000), begin()]
    tally = MessageTally(iter(messages))
    assert tally.last_commit_end is None
    assert len(list(decode_pgoutput(tally))) == 2
    assert tally.count == len(messages)
    assert tally.last_commit_end == 7000


def test_a_row_of_an_undescribed_table_is_refused() -> None:
    orphan = b"I" + struct.pack(">I", 99) + b"N" + row("1")
    with pytest.raises(ExtractError, match="relation 99 came before its description"):
        list(decode_pgoutput([begin(), orphan, commit(10)]))


@pytest.mark.parametrize(
    ("value", "kind", "grain", "start"),
    [
        # 23:30 UTC is already the next day in Berlin.
        ("2026-10-01 23:30:00+00", BoundKind.TIMESTAMPTZ, Grain.DAILY, dt.datetime(2026, 10, 2)),
        (
            "2026-10-01 23:30:00.5+00",
            BoundKind.TIMESTAMPTZ,
            Grain.HOURLY,
            dt.datetime(2026, 10, 2, 1),
        ),
        ("2026-10-01 23:30:00", BoundKind.TIMESTAMP, Grain.DAILY, dt.datetime(2026, 10, 1)),
        ("2026-10-01", BoundKind.DATE, Grain.MONTHLY, dt.datetime(2026, 10, 1)),
        ("2026-10-04", BoundKind.DATE, Grain.WEEKLY, dt.datetime(2026, 9, 28)),
        ("infinity", BoundKind.TIMESTAMPTZ, Grain.DAILY, None),
        ("0044-03-15 00:00:00+00 BC", BoundKind.TIMESTAMPTZ, Grain.DAILY, None),
        ("12000-01-01 00:00:00+00", BoundKind.TIMESTAMPTZ, Grain.DAILY, None),
        (None, BoundKind.TIMESTAMPTZ, Grain.DAILY, None),
    ],
)
def test_a_partition_value_names_the_local_start_of_its_window(
    value: str | None, kind: BoundKind, grain: Grain, start: dt.datetime | None
) -> None:
    assert local_window_start(value, kind, "Europe/Berlin", grain) == start


def test_lsns_read_and_write_as_postgres_does() -> None:
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert lsn_text(parse_lsn("16/B374D848")) == "16/B374D848"
    assert lsn_text(0) == "0/0"


def test_a_real_slot_reports_inserts_updates_and_deletes_with_the_partition_value(
    source_db: str,
) -> None:
    slot = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(source_db, autocommit=True) as connection:
        connection.execute("SET synchronous_commit = on")  # the slot reads flushed WAL only
        connection.execute(
            "CREATE TABLE orders (id bigint PRIMARY KEY, placed_at timestamptz NOT NULL,"
            " note text);"
            "ALTER TABLE orders REPLICA IDENTITY FULL;"
            "CREATE PUBLICATION etl_orders FOR TABLE orders;"
        )
        connection.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        try:
            connection.execute(
                "INSERT INTO orders VALUES (1, '2026-10-01 10:00+00', 'a'),"
                " (2, '2025-12-06 10:00+00', 'b')"
            )
            connection.execute("UPDATE orders SET placed_at = '2026-10-03 10:00+00' WHERE id = 1")
            connection.execute("DELETE FROM orders WHERE id = 2")
            connection.execute("SET TimeZone = 'UTC'")
            rows = connection.execute(
                "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes("
                "%s, NULL, NULL, 'proto_version', '1', 'publication_names', 'etl_orders')",
                (slot,),
            ).fetchall()
        finally:
            connection.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    changes = list(decode_pgoutput(bytes(data) for _, data in rows))
    assert [c.kind for c in changes] == [
        ChangeKind.INSERT, ChangeKind.INSERT, ChangeKind.UPDATE, ChangeKind.DELETE,
    ]  # fmt: skip
    starts = [
        [
            local_window_start(c.value("placed_at", r), BoundKind.TIMESTAMPTZ, "UTC", Grain.DAILY)
            for r in (c.old, c.new)
        ]
        for c in changes
    ]
    day = dt.datetime
    assert starts == [
        [None, day(2026, 10, 1)],
        [None, day(2025, 12, 6)],
        [day(2026, 10, 1), day(2026, 10, 3)],  # moved across windows: both are touched
        [day(2025, 12, 6), None],
    ]
    assert changes[0].commit_end_lsn < changes[2].commit_end_lsn < changes[3].commit_end_lsn


def test_what_stops_the_slot_is_named_with_its_fix(source_db: str) -> None:
    run_sql(
        source_db,
        "CREATE TABLE orders (id bigint PRIMARY KEY, placed_at timestamptz NOT NULL);"
        "CREATE TABLE payments (id bigint, paid_at timestamptz NOT NULL, PRIMARY KEY (id, paid_at))"
        " PARTITION BY RANGE (paid_at);"
        "CREATE TABLE payments_2026 PARTITION OF payments"
        " FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');"
        "CREATE TABLE payments_2025 PARTITION OF payments"
        " FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');"
        "ALTER TABLE payments_2025 REPLICA IDENTITY NOTHING;",
    )
    tables = [
        WatchedTable("public", "orders", "placed_at"),
        WatchedTable("public", "payments", "paid_at"),
    ]
    problems = problems_of(source_db, tables)
    assert problems == [
        "publication 'etl_shop' does not exist: run `etl-assets wal setup` or CREATE PUBLICATION "
        "etl_shop FOR TABLE ... WITH (publish_via_partition_root)",
        "public.orders's replica identity does not carry 'placed_at', so a deleted row cannot "
        "say which window it was in: ALTER TABLE public.orders REPLICA IDENTITY FULL (or USING "
        "INDEX an index including it)",
        "public.payments_2025's replica identity does not carry 'paid_at', so a deleted row "
        "cannot say which window it was in: ALTER TABLE public.payments_2025 REPLICA IDENTITY "
        "FULL (or USING INDEX an index including it)",
    ]
    run_sql(
        source_db,
        "ALTER TABLE orders REPLICA IDENTITY FULL;"
        "ALTER TABLE payments_2025 REPLICA IDENTITY DEFAULT;"
        "CREATE PUBLICATION etl_shop FOR TABLE payments WITH (publish_via_partition_root);",
    )
    problems = problems_of(source_db, tables)
    # The payments' primary key includes paid_at; the orders are not published yet.
    assert problems == [
        "public.orders is not in publication 'etl_shop': ALTER PUBLICATION etl_shop ADD TABLE "
        "public.orders"
    ]


def test_a_role_without_replication_is_told_how_to_get_it(source_db: str) -> None:
    role = f"reader_{uuid.uuid4().hex[:8]}"
    run_sql(
        source_db,
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'pw'").format(sql.Identifier(role)).as_string(),
    )
    conninfo = make_conninfo(source_db, user=role, password="pw")
    problems = problems_of(conninfo, [])
    assert problems[0].startswith("the role cannot read replication slots: ALTER ROLE")


def test_a_reader_role_with_replication_finds_nothing_missing(source_db: str) -> None:
    # As the sensor's role: not a superuser, and without USAGE on pg_toast (whose tables the
    # catalog queries must never name).
    role = f"reader_{uuid.uuid4().hex[:8]}"
    run_sql(
        source_db,
        sql.SQL(
            "CREATE ROLE {role} LOGIN REPLICATION PASSWORD 'pw';"
            "CREATE TABLE orders (id bigint PRIMARY KEY, placed_at timestamptz NOT NULL,"
            " note text);"
            "ALTER TABLE orders REPLICA IDENTITY FULL;"
            "GRANT SELECT ON orders TO {role};"
            "CREATE PUBLICATION etl_shop FOR TABLE orders WITH (publish_via_partition_root);"
        )
        .format(role=sql.Identifier(role))
        .as_string(),
    )
    conninfo = make_conninfo(source_db, user=role, password="pw")
    with Snapshot(ConnectionSettings(conninfo=conninfo), "test wal") as snapshot:
        problems = wal_problems(
            snapshot, "etl_shop", [WatchedTable("public", "orders", "placed_at")]
        )
    assert problems == []


def test_the_slot_is_peeked_in_whole_transactions_and_advanced_past_them(source_db: str) -> None:
    slot = f"test_{uuid.uuid4().hex[:12]}"
    run_sql(
        source_db,
        "CREATE TABLE orders (id bigint PRIMARY KEY, placed_at timestamptz NOT NULL);"
        "ALTER TABLE orders REPLICA IDENTITY FULL;"
        "CREATE PUBLICATION etl_orders FOR TABLE orders;",
    )
    run_sql(source_db, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    settings = ConnectionSettings(conninfo=source_db)
    try:
        for day in range(1, 4):
            run_flushed(
                source_db,
                "INSERT INTO orders SELECT g, %s::timestamptz"
                " FROM generate_series(%s::int8, %s::int8) g",
                (f"2026-10-0{day} 12:00+00", day * 10, day * 10 + 4),
            )
        with Snapshot(settings, "test wal") as snapshot:
            state = slot_state(snapshot, slot)
            assert state is not None
            assert state.plugin == "pgoutput"
            # Two changes asked for: the whole first transaction (five rows) comes.
            first = list(
                decode_pgoutput(peek_changes(snapshot, slot, "etl_orders", upto_changes=2))
            )
            everything = list(decode_pgoutput(peek_changes(snapshot, slot, "etl_orders")))
        assert len(first) == 5
        assert len(everything) == 15
        assert first == everything[:5]
        with Snapshot(settings, "test wal") as snapshot:
            advance_slot(snapshot, slot, first[-1].commit_end_lsn)
            rest = list(decode_pgoutput(peek_changes(snapshot, slot, "etl_orders")))
            after = slot_state(snapshot, slot)
        assert rest == everything[5:]
        assert after is not None
        assert after.confirmed_flush_lsn == first[-1].commit_end_lsn
        assert after.retained_bytes > 0
        with Snapshot(settings, "test wal") as snapshot:
            assert slot_state(snapshot, "no_such_slot") is None
    finally:
        run_sql(source_db, "SELECT pg_drop_replication_slot(%s)", (slot,))


def test_a_partitioned_table_must_be_published_through_its_root(source_db: str) -> None:
    run_sql(
        source_db,
        "CREATE TABLE payments (id bigint, paid_at timestamptz NOT NULL, PRIMARY KEY (id, paid_at))"
        " PARTITION BY RANGE (paid_at);"
        "CREATE TABLE payments_2026 PARTITION OF payments"
        " FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');"
        "CREATE PUBLICATION etl_shop FOR TABLE payments;",
    )
    tables = [WatchedTable("public", "payments", "paid_at")]
    problems = problems_of(source_db, tables)
    assert problems == [
        "publication 'etl_shop' publishes a partitioned table's changes under its partitions' "
        "names: ALTER PUBLICATION etl_shop SET (publish_via_partition_root = true)"
    ]


def test_a_server_without_logical_decoding_is_told_how_to_turn_it_on(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "postgres")
    server.start(extra_settings=["-c wal_level=replica"])
    try:
        conninfo = server.address.conninfo("postgres")
        problems = problems_of(conninfo, [])
    finally:
        server.stop()
    assert problems[0] == (
        "wal_level is 'replica': set wal_level = logical and restart the server (on RDS and "
        "Aurora: rds.logical_replication = 1; Cloud SQL: cloudsql.logical_decoding = on; "
        "Azure: wal_level = logical)"
    )
