"""The WAL sensor's ticks against a real Postgres with `wal_level=logical`, real runs and S3."""

from __future__ import annotations

import datetime as dt
import io
import uuid
from collections.abc import Generator, Sequence

import dagster as dg
import polars as pl
import psycopg
import pytest

from etl_assets.components import wal as wal_component
from etl_assets.components.incremental import REASON_TAG, SENSOR_NAME_TAG, recorded_fingerprints
from etl_assets.components.table_assets import (
    postgres_source_key,
    raw_asset_key,
    table_partitions,
)
from etl_assets.components.wal import (
    WalEvaluation,
    WalSettings,
    WalSource,
    WalTable,
    build_wal_sensor,
    evaluate_wal,
)
from etl_assets.lib.errors import WalNotReadyError
from etl_assets.lib.postgres.session import ConnectionSettings
from etl_assets.lib.postgres.wal_admin import drop_wal, setup_wal
from etl_assets.lib.table.spec import IncrementalSpec, TableSpec
from etl_assets.lib.wal_tick import WalCursor
from etl_assets_tests.support import (
    SOURCE,
    Pipeline,
    evaluate_sensor,
    query,
    revised,
    run_flushed,
    run_sql,
    spec,
)

DAY = dt.timedelta(days=1)
EVENTS = """
    CREATE TABLE events (id int PRIMARY KEY, created_at timestamptz NOT NULL, v text);
    ALTER TABLE events REPLICA IDENTITY FULL;
"""


class WalLake:
    """One WAL table of a source with its slot, the sensor's ticks on it, and the lake."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        days: int = 400,
        table: TableSpec | None = None,
        ddl: str = EVENTS,
        **settings: int,
    ) -> None:
        self.pipeline = pipeline
        run_sql(pipeline.conninfo, ddl)
        self.today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        if dt.datetime.now(dt.UTC) - self.today > dt.timedelta(hours=23, minutes=58):
            raise pytest.skip.Exception("a test must not straddle midnight")  # pragma: no cover
        start = (self.today - days * DAY).replace(tzinfo=None)
        self.table = table or revised(
            spec(columns=("id", "created_at", "v"), start=start, end=None),
            incremental=IncrementalSpec.model_validate({"mode": "wal", "settle_lag": "1s"}),
        )
        name = f"test_{uuid.uuid4().hex[:12]}"
        self.wal = WalSource.of(
            SOURCE,
            WalSettings(slot=name, publication=name, **settings),
            [WalTable(self.table, raw_asset_key(SOURCE, self.table), table_partitions(self.table))],
        )
        self.settings = ConnectionSettings(conninfo=pipeline.conninfo)
        self.setup_done = setup_wal(
            self.settings, self.wal.slot, self.wal.publication, [self.wal.tables[0].watched]
        )

    def close(self) -> None:
        drop_wal(self.settings, self.wal.slot, self.wal.publication)

    def key(self, days_ago: int) -> str:
        return (self.today - days_ago * DAY).strftime("%Y-%m-%d")

    def at(self, days_ago: int, hour: int = 12) -> dt.datetime:
        return self.today - days_ago * DAY + dt.timedelta(hours=hour)

    def write(self, statement: str, params: Sequence[object] = ()) -> None:
        run_flushed(self.pipeline.conninfo, statement, params)

    def tick(self, cursor: WalCursor, shift: dt.timedelta = dt.timedelta(0)) -> WalEvaluation:
        def recorded(table: WalTable, keys: Sequence[str]) -> dict[str, str | None]:
            return recorded_fingerprints(self.pipeline.instance, table.asset_key, keys)

        return evaluate_wal(self.wal, self.settings, cursor, recorded, clock_shift=shift)

    def load(self, *keys: str) -> None:
        for key in keys:
            self.pipeline.materialize(self.table, partition=key)

    def run(self, evaluation: WalEvaluation) -> list[str]:
        """Run what the tick requested; the partition keys, in order."""
        keys = [r.key for r in evaluation.requests]
        self.load(*keys)
        return keys

    def lake(self, key: str) -> list[tuple[object, ...]]:
        frame = pl.read_parquet(io.BytesIO(self.pipeline.partition_bytes(self.table, key)))
        return sorted(frame.select("id", "created_at", "v").rows())

    def source(self, key: str) -> list[tuple[object, ...]]:
        start = dt.datetime.strptime(key, "%Y-%m-%d").replace(tzinfo=dt.UTC)
        rows = query(
            self.pipeline.conninfo,
            "SELECT id, created_at, v FROM events WHERE created_at >= %s AND created_at < %s"
            " ORDER BY id",
            (start, start + DAY),
        )
        return [(i, c.astimezone(dt.UTC), v) for i, c, v in rows]


@pytest.fixture
def wal_lake(pipeline: Pipeline) -> Generator[WalLake]:
    lake = WalLake(pipeline)
    yield lake
    lake.close()


def started(lake: WalLake) -> WalCursor:
    """The cursor after the first tick, which requests nothing and only takes note."""
    first = lake.tick(WalCursor())
    assert first.requests == ()
    assert first.cursor.closed_through == {lake.table.qualified_name: lake.today}
    return first.cursor


def test_setup_creates_the_publication_before_the_slot(wal_lake: WalLake) -> None:
    assert wal_lake.setup_done == [
        f"created publication {wal_lake.wal.publication} for public.events",
        f"created logical replication slot {wal_lake.wal.slot} (pgoutput)",
    ]
    again = setup_wal(
        wal_lake.settings,
        wal_lake.wal.slot,
        wal_lake.wal.publication,
        [wal_lake.wal.tables[0].watched],
    )
    assert again == [
        f"publication {wal_lake.wal.publication} now holds public.events",
        f"slot {wal_lake.wal.slot} exists already",
    ]


def test_a_delete_300_days_old_reloads_that_window_and_only_that_one(wal_lake: WalLake) -> None:
    wal_lake.write(
        "INSERT INTO events VALUES (1, %s, 'a'), (2, %s, 'b'), (3, %s, 'c')",
        (wal_lake.at(300), wal_lake.at(300, 13), wal_lake.at(10)),
    )
    cursor = started(wal_lake)
    wal_lake.load(wal_lake.key(300), wal_lake.key(10))
    assert [r[0] for r in wal_lake.lake(wal_lake.key(300))] == [1, 2]
    wal_lake.write("DELETE FROM events WHERE id = 1")
    tick = wal_lake.tick(cursor)
    assert [(r.key, r.reason) for r in tick.requests] == [(wal_lake.key(300), "wal")]
    wal_lake.run(tick)
    assert [r[0] for r in wal_lake.lake(wal_lake.key(300))] == [2]
    assert wal_lake.lake(wal_lake.key(300)) == wal_lake.source(wal_lake.key(300))
    # Nothing more to do, and the slot was moved past the delete once its run was reserved.
    after = wal_lake.tick(tick.cursor)
    assert after.requests == ()
    assert tick.cursor.confirmed is not None
    assert after.slot.confirmed_flush_lsn == tick.cursor.confirmed


def test_insert_update_across_a_boundary_and_delete_without_a_change_column(
    wal_lake: WalLake,
) -> None:
    assert wal_lake.table.change_column is None
    wal_lake.write(
        "INSERT INTO events VALUES (1, %s, 'a'), (2, %s, 'b')",
        (wal_lake.at(5), wal_lake.at(3)),
    )
    cursor = started(wal_lake)
    wal_lake.load(wal_lake.key(5), wal_lake.key(3), wal_lake.key(4))
    wal_lake.write("INSERT INTO events VALUES (3, %s, 'new')", (wal_lake.at(4),))
    wal_lake.write("UPDATE events SET created_at = %s, v = 'moved' WHERE id = 1", (wal_lake.at(3),))
    wal_lake.write("UPDATE events SET v = 'edited' WHERE id = 2")
    tick = wal_lake.tick(cursor)
    assert sorted(wal_lake.run(tick)) == sorted(wal_lake.key(d) for d in (3, 4, 5))
    for days_ago in (3, 4, 5):
        assert wal_lake.lake(wal_lake.key(days_ago)) == wal_lake.source(wal_lake.key(days_ago))
    assert wal_lake.lake(wal_lake.key(5)) == []
    assert [r[2] for r in wal_lake.lake(wal_lake.key(3))] == ["moved", "edited"]
    wal_lake.write("DELETE FROM events WHERE id = 3")
    tick = wal_lake.tick(tick.cursor)
    assert wal_lake.run(tick) == [wal_lake.key(4)]
    assert wal_lake.lake(wal_lake.key(4)) == []


def test_a_transaction_committed_after_its_window_was_loaded_reloads_it(
    wal_lake: WalLake,
) -> None:
    cursor = started(wal_lake)
    with psycopg.connect(wal_lake.pipeline.conninfo) as late:
        late.execute("SET synchronous_commit = on")
        # Begun inside yesterday's window: its row is stamped in it.
        late.execute("INSERT INTO events VALUES (7, %s, 'late')", (wal_lake.at(1, 23),))
        # The tick moves the cursor past the row's record: a change counts once it commits.
        open_tick = wal_lake.tick(cursor)
        assert open_tick.requests == ()
        wal_lake.load(wal_lake.key(1))
        assert wal_lake.lake(wal_lake.key(1)) == []
        assert (
            wal_lake.tick(open_tick.cursor).slot.confirmed_flush_lsn == open_tick.cursor.confirmed
        )
        late.commit()
    tick = wal_lake.tick(open_tick.cursor)
    assert [(r.key, r.reason) for r in tick.requests] == [(wal_lake.key(1), "wal")]
    wal_lake.run(tick)
    assert [r[0] for r in wal_lake.lake(wal_lake.key(1))] == [7]


def test_a_bulk_delete_over_1000_windows_is_drained_without_skipping_or_repeating(
    pipeline: Pipeline,
) -> None:
    lake = WalLake(pipeline, days=1100, max_requests_per_tick=150)
    try:
        lake.write(
            "INSERT INTO events SELECT d, %s - d * interval '1 day', 'x'"
            " FROM generate_series(1, 1000) AS d",
            (lake.at(0),),
        )
        cursor = started(lake)
        lake.write("DELETE FROM events")
        seen: list[str] = []
        run_keys: set[str] = set()
        for _ in range(20):
            tick = lake.tick(cursor)
            repeated = lake.tick(cursor)  # a tick evaluated twice asks for the same runs
            assert [r.run_key for r in repeated.requests] == [r.run_key for r in tick.requests]
            assert len(tick.requests) <= 150
            seen += [r.key for r in tick.requests]
            run_keys |= {r.run_key for r in tick.requests}
            cursor = tick.cursor
            if not tick.requests:
                break
        assert sorted(seen) == sorted(lake.key(d) for d in range(1, 1001))
        assert len(seen) == len(run_keys) == 1000
        assert cursor.range_end is None
    finally:
        lake.close()


def test_unread_wal_past_the_limit_falls_back_to_reconciling(pipeline: Pipeline) -> None:
    lake = WalLake(pipeline, max_unread_wal_mb=1)
    try:
        run_sql(pipeline.conninfo, "CREATE TABLE noise (id int, pad text)")
        lake.write(
            "INSERT INTO events VALUES (1, %s, 'a'), (2, %s, 'b'), (3, %s, 'c')",
            (lake.at(300), lake.at(300, 13), lake.at(10)),
        )
        cursor = started(lake)
        lake.load(lake.key(300), lake.key(10))
        lake.write("DELETE FROM events WHERE id = 1")
        lake.write("INSERT INTO noise SELECT g, repeat('x', 500) FROM generate_series(1, 10000) g")
        tick = lake.tick(cursor)
        assert tick.fallback
        assert tick.slot.pending_bytes > 1024 * 1024
        assert "past the limit of 1 MB" in tick.notes[0]
        assert [(r.key, r.reason) for r in tick.requests] == [(lake.key(300), "wal-fallback")]
        lake.run(tick)
        assert lake.lake(lake.key(300)) == lake.source(lake.key(300))
        after = lake.tick(tick.cursor)
        assert not after.fallback
        assert after.requests == ()
        assert after.slot.pending_bytes < 1024 * 1024
    finally:
        lake.close()


def test_a_partitioned_table_is_followed_through_its_root(pipeline: Pipeline) -> None:
    ddl = """
        CREATE TABLE payment (
            payment_id int, paid_at timestamptz NOT NULL, amount numeric(6, 2),
            PRIMARY KEY (paid_at, payment_id)
        ) PARTITION BY RANGE (paid_at);
        CREATE TABLE payment_old PARTITION OF payment FOR VALUES FROM (MINVALUE) TO (now() - interval '30 days');
        CREATE TABLE payment_new PARTITION OF payment FOR VALUES FROM (now() - interval '30 days') TO (MAXVALUE);
    """  # noqa: E501
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    table = revised(
        spec(
            table="payment",
            partition_column="paid_at",
            primary_key=("payment_id",),
            columns=("payment_id", "paid_at", "amount"),
            start=(today - 400 * DAY).replace(tzinfo=None),
            end=None,
        ),
        incremental=IncrementalSpec.model_validate({"mode": "wal", "settle_lag": "1s"}),
    )
    lake = WalLake(pipeline, table=table, ddl=ddl)
    try:
        lake.write(
            "INSERT INTO payment VALUES (1, %s, 1.50), (2, %s, 2.50)", (lake.at(200), lake.at(2))
        )
        cursor = started(lake)
        lake.load(lake.key(200), lake.key(2))
        lake.write("DELETE FROM payment WHERE payment_id = 1")
        lake.write("UPDATE payment SET amount = 9.99 WHERE payment_id = 2")
        tick = lake.tick(cursor)
        assert sorted(lake.run(tick)) == sorted([lake.key(200), lake.key(2)])
        frame = pl.read_parquet(io.BytesIO(pipeline.partition_bytes(table, lake.key(2))))
        assert frame["amount"].cast(pl.Utf8).to_list() == ["9.99"]
        assert (
            pl.read_parquet(io.BytesIO(pipeline.partition_bytes(table, lake.key(200)))).height == 0
        )
    finally:
        lake.close()


def test_what_stops_the_sensor_is_named(wal_lake: WalLake) -> None:
    run_sql(wal_lake.pipeline.conninfo, "ALTER TABLE events REPLICA IDENTITY DEFAULT")
    with pytest.raises(WalNotReadyError, match="REPLICA IDENTITY FULL"):
        wal_lake.tick(WalCursor())
    run_sql(wal_lake.pipeline.conninfo, "ALTER TABLE events REPLICA IDENTITY FULL")
    drop_wal(wal_lake.settings, wal_lake.wal.slot, wal_lake.wal.publication)
    with pytest.raises(WalNotReadyError, match="etl-assets wal setup") as raised:
        wal_lake.tick(WalCursor())
    assert f"slot {wal_lake.wal.slot} does not exist" in str(raised.value)
    assert f"publication '{wal_lake.wal.publication}' does not exist" in str(raised.value)


def test_a_window_is_requested_once_when_it_closes(wal_lake: WalLake) -> None:
    cursor = started(wal_lake)
    wal_lake.write("INSERT INTO events VALUES (1, now(), 'open')")
    assert wal_lake.tick(cursor).requests == ()  # today's window is still open
    closed = wal_lake.tick(cursor, shift=DAY)
    assert [(r.key, r.reason, r.run_key) for r in closed.requests] == [
        (wal_lake.key(0), "closed", f"closed:public.events:{wal_lake.key(0)}")
    ]
    assert closed.cursor.closed_through == {"public.events": wal_lake.today + DAY}
    assert wal_lake.tick(closed.cursor, shift=DAY).requests == ()


def test_a_truncate_reloads_every_window_known_so_far(pipeline: Pipeline) -> None:
    lake = WalLake(pipeline, days=5)
    try:
        lake.write("INSERT INTO events VALUES (1, %s, 'a')", (lake.at(2),))
        cursor = started(lake)
        lake.write("TRUNCATE events")
        tick = lake.tick(cursor)
        assert [r.key for r in tick.requests] == [lake.key(d) for d in range(5, 0, -1)]
        assert {r.reason for r in tick.requests} == {"wal"}
    finally:
        lake.close()


def test_the_fallback_waits_for_transactions_open_at_its_position(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wal_component, "OPEN_TRANSACTIONS_WAIT_SECONDS", 1.0)
    lake = WalLake(pipeline, max_unread_wal_mb=1)
    try:
        run_sql(pipeline.conninfo, "CREATE TABLE noise (id int, pad text)")
        lake.write("INSERT INTO events VALUES (1, %s, 'a')", (lake.at(30),))
        cursor = started(lake)
        lake.load(lake.key(30))
        with psycopg.connect(pipeline.conninfo) as open_writer:
            open_writer.execute("INSERT INTO events VALUES (2, %s, 'open')", (lake.at(30),))
            lake.write(
                "INSERT INTO noise SELECT g, repeat('x', 500) FROM generate_series(1, 10000) g"
            )
            waiting = lake.tick(cursor)
            assert waiting.fallback
            assert waiting.requests == ()
            assert waiting.cursor == cursor  # the slot stays where it was
            assert "waiting for transactions" in waiting.notes[0]
            open_writer.commit()
        tick = lake.tick(cursor)
        assert tick.fallback
        assert [(r.key, r.reason) for r in tick.requests] == [(lake.key(30), "wal-fallback")]
    finally:
        lake.close()


def test_the_sensor_requests_each_touched_window_and_names_one_that_keeps_failing(
    wal_lake: WalLake,
) -> None:
    sensor = build_wal_sensor(wal_lake.wal, postgres_source_key(SOURCE))
    resources = wal_lake.pipeline.resources(wal_lake.table)
    instance = wal_lake.pipeline.instance

    def tick(cursor: str | None) -> dg.SensorResult:
        return evaluate_sensor(sensor, instance, resources, cursor)

    wal_lake.write("INSERT INTO events VALUES (1, %s, 'a')", (wal_lake.at(20),))
    first = tick(None)
    assert first.run_requests == []
    assert "MB of WAL retained" in str(first.skip_reason)
    wal_lake.write("UPDATE events SET v = 'b' WHERE id = 1")
    second = tick(first.cursor)
    [request] = second.run_requests or []
    key = wal_lake.key(20)
    assert request.partition_key == key
    assert request.asset_selection == [wal_lake.wal.tables[0].asset_key]
    assert request.tags[REASON_TAG] == "wal"

    # The requested run fails (the source lost a declared column), as the daemon would run it.
    run_sql(wal_lake.pipeline.conninfo, "ALTER TABLE events RENAME COLUMN v TO v_gone")
    tags = {SENSOR_NAME_TAG: sensor.name, "dagster/run_key": request.run_key or ""}
    failed = wal_lake.pipeline.materialize(
        wal_lake.table, partition=key, tags=tags, raise_on_error=False
    )
    assert not failed.success
    # The sensor still reads the slot (only the partition column matters to it), has nothing
    # new to request, and says which partition keeps failing.
    quiet = tick(second.cursor)
    assert quiet.run_requests == []
    assert f"latest run failed for {key} (1 failed run in a row)" in str(quiet.skip_reason)
