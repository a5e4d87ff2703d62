"""Change sensors and reconciliation against a real Postgres, one test per transition."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import time
import uuid

import dagster as dg
import polars as pl
import psycopg
import pytest
from psycopg import sql

from etl_assets.components.incremental import (
    SENSOR_NAME_TAG,
    build_change_sensor,
    build_reconcile_schedule,
    evaluate_changes,
    failing_partitions,
)
from etl_assets.components.table_assets import build_table_assets, postgres_source_key
from etl_assets.lib.incremental import ChangeCursor, TickPlan
from etl_assets.lib.postgres.session import ConnectionSettings
from etl_assets.lib.table.spec import IncrementalSpec, ReconcileSpec, TableSpec
from etl_assets.lib.table.windows import Grain
from etl_assets_tests.support import (
    SOURCE,
    Pipeline,
    evaluate_sensor,
    query,
    revised,
    run_sql,
    spec,
)

HOUR = dt.timedelta(hours=1)


class Source:
    """One table with a change column, its spec, and the sensor's decisions on it."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        run_sql(
            pipeline.conninfo,
            """
            CREATE TABLE events (
                id         int PRIMARY KEY,
                created_at timestamptz NOT NULL,
                updated_at timestamptz NOT NULL DEFAULT now(),
                v          text
            );
            CREATE INDEX ON events (updated_at);
            """,
        )
        now = query(pipeline.conninfo, "SELECT now()")[0][0]
        to_next_hour = 3600 - (now.minute * 60 + now.second)
        if to_next_hour < 120:
            # A test stands within one hour; crossing into the next would close a window mid-test.
            time.sleep(to_next_hour + 2)
            now = query(pipeline.conninfo, "SELECT now()")[0][0]
        self.hour = now.replace(minute=0, second=0, microsecond=0)
        start = (self.hour - 48 * HOUR).astimezone(dt.UTC).replace(tzinfo=None)
        self.table: TableSpec = revised(
            spec(
                columns=("id", "created_at", "updated_at", "v"),
                grain=Grain.HOURLY,
                start=start,
                end=None,
            ),
            incremental=IncrementalSpec(
                change_column="updated_at", settle_lag=dt.timedelta(seconds=1)
            ),
            reconcile=ReconcileSpec(cron="0 * * * *", partitions=3),
        )
        self.built = build_table_assets(SOURCE, self.table, None)
        self.settings = ConnectionSettings(conninfo=pipeline.conninfo)

    def key(self, window_start: dt.datetime) -> str:
        return window_start.astimezone(dt.UTC).strftime(Grain.HOURLY.key_format)

    def insert(self, row_id: int, created_at: dt.datetime) -> None:
        run_sql(
            self.pipeline.conninfo,
            "INSERT INTO events (id, created_at) VALUES (%s, %s)",
            (row_id, created_at),
        )

    def tick(
        self, cursor: ChangeCursor, shift: dt.timedelta = dt.timedelta(0), max_requests: int = 100
    ) -> TickPlan:
        return evaluate_changes(
            self.table,
            self.built.partitions_def,
            self.settings,
            cursor,
            purpose="test",
            clock_shift=shift,
            max_requests=max_requests,
        )


@pytest.fixture
def source(pipeline: Pipeline) -> Source:
    return Source(pipeline)


def requested(plan: TickPlan) -> list[tuple[str, str]]:
    return [(r.key, r.reason) for r in plan.requests]


def test_first_tick_watches_from_now_and_requests_no_history(source: Source) -> None:
    source.insert(1, source.hour - 2 * HOUR)
    plan = source.tick(ChangeCursor())
    assert plan.requests == ()
    assert plan.cursor.closed_through == source.hour
    assert plan.cursor.watermark is not None
    assert plan.cursor.watermark >= source.hour


def test_nothing_new_requests_nothing(source: Source) -> None:
    first = source.tick(ChangeCursor())
    second = source.tick(first.cursor)
    assert second.requests == ()
    assert second.cursor.closed_through == first.cursor.closed_through


def test_new_rows_in_an_open_window_are_not_requested_yet(source: Source) -> None:
    first = source.tick(ChangeCursor())
    source.insert(2, source.hour + dt.timedelta(minutes=1))
    plan = source.tick(first.cursor)
    assert plan.requests == ()
    assert plan.cursor.watermark is not None
    assert first.cursor.watermark is not None
    assert plan.cursor.watermark > first.cursor.watermark


def test_a_window_is_requested_when_it_closes(source: Source) -> None:
    first = source.tick(ChangeCursor())
    source.insert(3, source.hour + dt.timedelta(minutes=1))
    plan = source.tick(first.cursor, shift=HOUR)  # an hour later: this hour's window has closed
    assert requested(plan) == [(source.key(source.hour), "closed")]


def test_a_late_update_to_a_closed_window_reloads_it(source: Source) -> None:
    source.insert(4, source.hour - 3 * HOUR)
    first = source.tick(ChangeCursor())
    run_sql(
        source.pipeline.conninfo, "UPDATE events SET v = 'late', updated_at = now() WHERE id = 4"
    )
    plan = source.tick(first.cursor)
    assert requested(plan) == [(source.key(source.hour - 3 * HOUR), "changed")]


def test_a_transaction_open_across_a_window_end_is_not_missed_once_it_commits(
    source: Source,
) -> None:
    first = source.tick(ChangeCursor())
    with psycopg.connect(source.pipeline.conninfo) as writer:
        # The row is stamped now(), the transaction's start, but commits only later.
        writer.execute("INSERT INTO events (id, created_at) VALUES (5, now())")
        held = source.tick(first.cursor, shift=HOUR)
        assert held.requests == ()  # closed by the clock, but a writer from before its end is open
        assert held.cursor.watermark is not None
        assert first.cursor.watermark is not None
        assert held.cursor.watermark <= query(source.pipeline.conninfo, "SELECT now()")[0][0]
        writer.commit()
    released = source.tick(held.cursor, shift=HOUR)
    assert requested(released) == [(source.key(source.hour), "closed")]
    rows = query(source.pipeline.conninfo, "SELECT updated_at FROM events WHERE id = 5")
    assert held.cursor.watermark <= rows[0][0]  # the row is still ahead of the watermark


def test_a_bulk_update_over_more_windows_than_a_tick_requests_reaches_each_window_once(
    source: Source,
) -> None:
    hours = [source.hour - n * HOUR for n in range(2, 7)]
    for row_id, window in enumerate(hours, start=20):
        source.insert(row_id, window + dt.timedelta(minutes=5))
    first = source.tick(ChangeCursor())
    # One transaction: every row gets the same updated_at, so only the key breaks the tie.
    run_sql(source.pipeline.conninfo, "UPDATE events SET v = 'bulk', updated_at = now()")
    ticks = [source.tick(first.cursor, max_requests=2)]
    while ticks[-1].cursor.backlog_until is not None:
        assert len(ticks) < 5, "the backlog never drained"
        ticks.append(source.tick(ticks[-1].cursor, max_requests=2))
    assert [len(t.requests) for t in ticks] == [2, 2, 1]
    keys = [r.key for t in ticks for r in t.requests]
    assert sorted(keys) == sorted(source.key(h) for h in hours)
    assert source.tick(ticks[-1].cursor, max_requests=2).requests == ()


def test_a_prepared_transaction_holds_every_window_until_it_is_committed(source: Source) -> None:
    if (
        query(source.pipeline.conninfo, "SELECT current_setting('max_prepared_transactions')::int")[
            0
        ][0]
        == 0
    ):
        pytest.skip("the server has two-phase commit off (max_prepared_transactions = 0)")
    first = source.tick(ChangeCursor())
    gid = f"etl-assets-test-{uuid.uuid4().hex}"
    with psycopg.connect(source.pipeline.conninfo, autocommit=True) as writer:
        writer.execute("BEGIN")
        writer.execute("INSERT INTO events (id, created_at) VALUES (30, now())")
        writer.execute(sql.SQL("PREPARE TRANSACTION {}").format(sql.Literal(gid)))
        try:
            held = source.tick(first.cursor, shift=HOUR)
            assert held.requests == ()
            assert held.cursor == first.cursor
            assert "pg_prepared_xacts" in held.notes[0]
        finally:
            writer.execute(sql.SQL("COMMIT PREPARED {}").format(sql.Literal(gid)))
    released = source.tick(first.cursor, shift=HOUR)
    assert requested(released) == [(source.key(source.hour), "closed")]


def test_a_failed_partition_is_visible_and_requested_again_after_new_changes(
    source: Source,
) -> None:
    source.insert(6, source.hour - 5 * HOUR)
    key = source.key(source.hour - 5 * HOUR)
    resource_key = postgres_source_key(SOURCE)
    sensor = build_change_sensor(
        source.table, source.built.raw.key, source.built.partitions_def, resource_key
    )
    resources = source.pipeline.resources(source.table)
    instance = source.pipeline.instance

    def tick(cursor: str | None) -> dg.SensorResult:
        return evaluate_sensor(sensor, instance, resources, cursor)

    first = tick(None)
    run_sql(source.pipeline.conninfo, "UPDATE events SET v = 'a', updated_at = now() WHERE id = 6")
    second = tick(first.cursor)
    [request] = second.run_requests or []
    assert request.partition_key == key

    # The requested run fails (the source lost a declared column), as the daemon would run it.
    run_sql(source.pipeline.conninfo, "ALTER TABLE events RENAME COLUMN v TO v_gone")
    sensor_tags = {SENSOR_NAME_TAG: sensor.name, "dagster/run_key": request.run_key or ""}
    failed = source.pipeline.materialize(
        source.table, partition=key, tags=sensor_tags, raise_on_error=False
    )
    assert not failed.success
    run_sql(source.pipeline.conninfo, "ALTER TABLE events RENAME COLUMN v_gone TO v")

    # The next tick has nothing new to request, and says which partition keeps failing.
    assert failing_partitions(instance, sensor.name, source.built.raw.key) == {key: 1}
    quiet = tick(second.cursor)
    assert quiet.run_requests == []
    assert f"latest run failed for {key} (1 failed run in a row)" in str(quiet.skip_reason)

    # New changes: requested again under a run key no earlier run holds (so the daemon runs it).
    run_sql(source.pipeline.conninfo, "UPDATE events SET v = 'b', updated_at = now() WHERE id = 6")
    again = tick(quiet.cursor)
    [retry] = again.run_requests or []
    assert retry.partition_key == key
    used = {run.tags.get("dagster/run_key") for run in instance.get_runs()}
    assert request.run_key in used
    assert retry.run_key not in used
    # Rematerialized from the UI (no sensor tag): the partition is no longer failing.
    assert source.pipeline.materialize(source.table, partition=key).success
    assert failing_partitions(instance, sensor.name, source.built.raw.key) == {}


def test_the_dagster_sensor_stores_its_cursor_and_requests_partitions(source: Source) -> None:
    resource_key = postgres_source_key(SOURCE)
    sensor = build_change_sensor(
        source.table, source.built.raw.key, source.built.partitions_def, resource_key
    )
    resources = source.pipeline.resources(source.table)
    source.insert(7, source.hour - 4 * HOUR)
    with dg.build_sensor_context(instance=source.pipeline.instance, resources=resources) as context:
        first = sensor(context)
    assert isinstance(first, dg.SensorResult)
    assert first.run_requests == []
    run_sql(source.pipeline.conninfo, "UPDATE events SET v = 'x', updated_at = now() WHERE id = 7")
    with dg.build_sensor_context(
        instance=source.pipeline.instance, resources=resources, cursor=first.cursor
    ) as context:
        second = sensor(context)
    assert isinstance(second, dg.SensorResult)
    [run] = second.run_requests or []
    assert run.partition_key == source.key(source.hour - 4 * HOUR)
    assert run.asset_selection == [source.built.raw.key]
    assert run.tags["etl_assets/reason"] == "changed"


def test_reconciliation_finds_a_hard_delete_and_nothing_else(source: Source) -> None:
    window = source.hour - 2 * HOUR
    for row_id, minutes in ((10, 5), (11, 10), (12, 15)):
        source.insert(row_id, window + dt.timedelta(minutes=minutes))
    key = source.key(window)
    for partition in (source.key(source.hour - 3 * HOUR), key, source.key(source.hour - HOUR)):
        assert source.pipeline.materialize(source.table, partition=partition).success
    resource_key = postgres_source_key(SOURCE)
    schedule = build_reconcile_schedule(
        source.table, source.built.raw.key, source.built.partitions_def, resource_key
    )
    resources = source.pipeline.resources(source.table)

    def evaluate(reconcile: dg.ScheduleDefinition = schedule) -> object:
        with dg.build_schedule_context(
            instance=source.pipeline.instance,
            resources=resources,
            scheduled_execution_time=source.hour + dt.timedelta(minutes=1),
        ) as context:
            return reconcile(context)

    unchanged = evaluate()
    assert isinstance(unchanged, dg.SkipReason)
    assert "match the source" in str(unchanged.skip_message)
    run_sql(source.pipeline.conninfo, "DELETE FROM events WHERE id = 11")  # no change column moves
    drifted = evaluate()
    assert isinstance(drifted, list)
    assert [r.partition_key for r in drifted] == [key]
    assert drifted[0].tags["etl_assets/reason"] == "reconcile"

    # Under a settle lag of three hours the drifted window has not settled: the schedule compares
    # the three newest windows that have, which were never loaded, so it requests those.
    assert source.table.incremental is not None
    settling = revised(
        source.table,
        incremental=revised(source.table.incremental, settle_lag=3 * HOUR),
    )
    patient = build_reconcile_schedule(
        settling, source.built.raw.key, source.built.partitions_def, resource_key
    )
    settled = evaluate(patient)
    assert isinstance(settled, list)
    assert [r.partition_key for r in settled] == [
        source.key(source.hour - hours * HOUR) for hours in (6, 5, 4)
    ]


def latest_data_version(source: Source, key: str) -> str:
    [record] = source.pipeline.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=source.built.raw.key, asset_partitions=[key]), limit=1
    ).records
    materialization = record.asset_materialization
    assert materialization is not None
    assert materialization.tags is not None
    return materialization.tags["dagster/data_version"]


def test_the_fingerprint_is_the_data_version_so_unchanged_reloads_keep_it(source: Source) -> None:
    window = source.hour - 2 * HOUR
    source.insert(40, window + dt.timedelta(minutes=5))
    key = source.key(window)
    assert source.pipeline.materialize(source.table, partition=key).success
    first = latest_data_version(source, key)
    assert source.pipeline.materialize(source.table, partition=key).success
    assert latest_data_version(source, key) == first
    run_sql(source.pipeline.conninfo, "UPDATE events SET v = 'x', updated_at = now() WHERE id = 40")
    assert source.pipeline.materialize(source.table, partition=key).success
    assert latest_data_version(source, key) != first


def test_a_fingerprint_blind_to_updates_is_not_the_data_version(source: Source) -> None:
    # No change column and a key-only hash: an update would leave the fingerprint unchanged.
    blind = revised(source.table, incremental=None, reconcile=None)
    window = source.hour - 2 * HOUR
    source.insert(41, window + dt.timedelta(minutes=5))
    key = source.key(window)
    assert source.pipeline.materialize(blind, partition=key).success
    first = latest_data_version(source, key)
    run_sql(source.pipeline.conninfo, "UPDATE events SET v = 'y' WHERE id = 41")
    assert source.pipeline.materialize(blind, partition=key).success
    assert latest_data_version(source, key) != first


def test_a_range_run_records_each_partitions_own_fingerprint_as_its_data_version(
    source: Source,
) -> None:
    windows = [source.hour - hours * HOUR for hours in (7, 6, 5, 4, 3)]
    for row_id, window in enumerate(windows, start=50):
        source.insert(row_id, window + dt.timedelta(minutes=5))
    keys = [source.key(window) for window in windows]
    assert source.pipeline.materialize(source.table, partition_range=(keys[0], keys[-1])).success
    versions = {key: latest_data_version(source, key) for key in keys}
    assert len(set(versions.values())) == 5
    for key, version in versions.items():
        recorded = source.pipeline.metadata(source.table, key)["source_fingerprint"]
        assert version == hashlib.sha256(recorded.encode()).hexdigest()[:16]
    # A single-partition run of unchanged rows records the fingerprint's version: the same.
    assert source.pipeline.materialize(source.table, partition=keys[2]).success
    assert latest_data_version(source, keys[2]) == versions[keys[2]]

    run_sql(
        source.pipeline.conninfo,
        "UPDATE events SET v = 'changed', updated_at = now() WHERE id IN (51, 53)",
    )
    assert source.pipeline.materialize(source.table, partition_range=(keys[0], keys[-1])).success
    changed = {key for key in keys if latest_data_version(source, key) != versions[key]}
    assert changed == {keys[1], keys[3]}


def test_a_range_run_of_a_fingerprint_blind_to_updates_changes_every_version(
    source: Source,
) -> None:
    blind = revised(source.table, incremental=None, reconcile=None)
    windows = [source.hour - hours * HOUR for hours in (3, 2)]
    for row_id, window in enumerate(windows, start=60):
        source.insert(row_id, window + dt.timedelta(minutes=5))
    keys = (source.key(windows[0]), source.key(windows[1]))
    assert source.pipeline.materialize(blind, partition_range=keys).success
    first = {key: latest_data_version(source, key) for key in keys}
    assert source.pipeline.materialize(blind, partition_range=keys).success
    assert all(latest_data_version(source, key) != first[key] for key in keys)


def test_a_range_run_with_a_downstream_asset_in_it_feeds_that_asset(source: Source) -> None:
    windows = [source.hour - hours * HOUR for hours in (3, 2)]
    for row_id, window in enumerate(windows, start=70):
        source.insert(row_id, window + dt.timedelta(minutes=5))
    keys = [source.key(window) for window in windows]

    @dg.asset(
        partitions_def=source.built.partitions_def,
        deps=[source.built.raw.key],
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def downstream() -> None:
        """Depends on the raw asset; skipped if the raw step yielded no output."""

    # A run that names both assets, as the UI's or a backfill's does.
    job = dg.define_asset_job("raw_and_downstream")
    result = (
        dg.Definitions(
            assets=[source.built.source, source.built.raw, downstream],
            jobs=[job],
            resources=source.pipeline.resources(source.table),
        )
        .resolve_job_def(job.name)
        .execute_in_process(
            instance=source.pipeline.instance,
            tags={
                "dagster/asset_partition_range_start": keys[0],
                "dagster/asset_partition_range_end": keys[1],
            },
            asset_selection=[source.built.raw.key, downstream.key],
        )
    )
    assert result.success
    assert [e.partition for e in result.asset_materializations_for_node("downstream")] == keys
    # One output for the range: Dagster's one version for both partitions.
    versions = {latest_data_version(source, key) for key in keys}
    assert len(versions) == 1


def test_a_partitioned_table_is_followed_by_its_change_column(pipeline: Pipeline) -> None:
    run_sql(
        pipeline.conninfo,
        """
        CREATE TABLE ledger (
            id         int,
            booked_at  timestamptz NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now(),
            v          text,
            PRIMARY KEY (id, booked_at)
        ) PARTITION BY RANGE (booked_at);
        CREATE TABLE ledger_old PARTITION OF ledger
            FOR VALUES FROM (MINVALUE) TO (now() - interval '3 days');
        CREATE TABLE ledger_new PARTITION OF ledger
            FOR VALUES FROM (now() - interval '3 days') TO (MAXVALUE);
        """,
    )
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    table = revised(
        spec(
            table="ledger",
            partition_column="booked_at",
            columns=("id", "booked_at", "updated_at", "v"),
            start=(today - dt.timedelta(days=10)).replace(tzinfo=None),
            end=None,
        ),
        incremental=IncrementalSpec(change_column="updated_at", settle_lag=dt.timedelta(seconds=1)),
    )
    old, new = today - dt.timedelta(days=5, hours=-12), today - dt.timedelta(days=2, hours=-12)
    run_sql(
        pipeline.conninfo,
        "INSERT INTO ledger (id, booked_at, v) VALUES (1, %s, 'a'), (2, %s, 'b')",
        (old, new),
    )
    built = build_table_assets(SOURCE, table, None)
    settings = ConnectionSettings(conninfo=pipeline.conninfo)

    def tick(cursor: ChangeCursor) -> TickPlan:
        return evaluate_changes(table, built.partitions_def, settings, cursor, purpose="test")

    first = tick(ChangeCursor())
    keys = [day.strftime("%Y-%m-%d") for day in (old, new)]
    for key in keys:
        pipeline.materialize(table, partition=key)
    run_sql(pipeline.conninfo, "UPDATE ledger SET v = 'changed', updated_at = now() WHERE id = 1")
    plan = tick(first.cursor)
    assert requested(plan) == [(keys[0], "changed")]
    pipeline.materialize(table, partition=keys[0])
    lake = pl.read_parquet(io.BytesIO(pipeline.partition_bytes(table, keys[0])))
    assert lake.select("id", "v").rows() == [(1, "changed")]
    assert query(pipeline.conninfo, "SELECT tableoid::regclass::text FROM ledger WHERE id = 1") == [
        ("ledger_old",)
    ]
