"""Change sensors and reconciliation against a real Postgres, one test per transition."""

from __future__ import annotations

import dataclasses
import datetime as dt

import dagster as dg
import psycopg
import pytest

from etl_assets.components.incremental import (
    build_change_sensor,
    build_reconcile_schedule,
    evaluate_changes,
)
from etl_assets.components.table_assets import build_table_assets, postgres_io_manager_key
from etl_assets.lib.extract import ConnectionSettings
from etl_assets.lib.incremental import ChangeCursor, TickPlan
from etl_assets.lib.tables import IncrementalSpec, ReconcileSpec, TableSpec
from etl_assets.lib.windows import Grain
from etl_assets_tests.support import Pipeline, query, run_sql, spec

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
        self.hour = now.replace(minute=0, second=0, microsecond=0)
        start = (self.hour - 48 * HOUR).astimezone(dt.UTC).replace(tzinfo=None)
        self.table: TableSpec = dataclasses.replace(
            spec(
                columns=("id", "created_at", "updated_at", "v"),
                grain=Grain.HOURLY,
                start=start,
                end=None,
            ),
            incremental=IncrementalSpec("updated_at", settle_lag=dt.timedelta(seconds=1)),
            reconcile=ReconcileSpec(cron="0 * * * *", partitions=3),
        )
        self.built = build_table_assets(self.table, None)
        self.settings = ConnectionSettings(conninfo=pipeline.conninfo)

    def key(self, window_start: dt.datetime) -> str:
        return window_start.astimezone(dt.UTC).strftime(Grain.HOURLY.key_format)

    def insert(self, row_id: int, created_at: dt.datetime) -> None:
        run_sql(
            self.pipeline.conninfo,
            "INSERT INTO events (id, created_at) VALUES (%s, %s)",
            (row_id, created_at),
        )

    def tick(self, cursor: ChangeCursor, shift: dt.timedelta = dt.timedelta(0)) -> TickPlan:
        return evaluate_changes(
            self.table,
            self.built.partitions_def,
            self.settings,
            cursor,
            purpose="test",
            clock_shift=shift,
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


def test_a_failed_partition_is_requested_again_after_new_changes(source: Source) -> None:
    source.insert(6, source.hour - 5 * HOUR)
    cursor = source.tick(ChangeCursor()).cursor
    run_sql(source.pipeline.conninfo, "UPDATE events SET v = 'a', updated_at = now() WHERE id = 6")
    first = source.tick(cursor)
    # Suppose the run for first's request failed: the same run key would never run again.
    run_sql(source.pipeline.conninfo, "UPDATE events SET v = 'b', updated_at = now() WHERE id = 6")
    second = source.tick(first.cursor)
    assert [r.key for r in first.requests] == [r.key for r in second.requests]
    assert first.requests[0].run_key != second.requests[0].run_key


def test_the_dagster_sensor_stores_its_cursor_and_requests_partitions(source: Source) -> None:
    resource_key = postgres_io_manager_key(source.table.source)
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
    resource_key = postgres_io_manager_key(source.table.source)
    schedule = build_reconcile_schedule(
        source.table, source.built.raw.key, source.built.partitions_def, resource_key
    )
    resources = source.pipeline.resources(source.table)

    def evaluate() -> object:
        with dg.build_schedule_context(
            instance=source.pipeline.instance,
            resources=resources,
            scheduled_execution_time=source.hour + dt.timedelta(minutes=1),
        ) as context:
            return schedule(context)

    unchanged = evaluate()
    assert isinstance(unchanged, dg.SkipReason)
    assert "match the source" in str(unchanged.skip_message)
    run_sql(source.pipeline.conninfo, "DELETE FROM events WHERE id = 11")  # no change column moves
    drifted = evaluate()
    assert isinstance(drifted, list)
    assert [r.partition_key for r in drifted] == [key]
    assert drifted[0].tags["etl_assets/reason"] == "reconcile"
