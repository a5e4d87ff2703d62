"""Materializing partitions end to end: Postgres -> Polars -> Parquet on S3, on a real instance."""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import re
import urllib.parse

import dagster as dg
import polars as pl
import pytest

from etl_assets.components.table_assets import raw_asset_key
from etl_assets.devstack.verify import compare_table_partition, read_lake_partition
from etl_assets.lib.lake.preview import MASK, NULL
from etl_assets.lib.table.spec import ColumnChecks, ColumnSpec, NullPartitionRows, TableSpec
from etl_assets.lib.table.windows import Grain
from etl_assets_tests.support import (
    LAKE_PREFIX,
    SOURCE,
    Pipeline,
    check_results,
    failure_text,
    materialized_partitions,
    on_every_batch,
    query,
    revised,
    run_sql,
    spec,
)

EVENTS_DDL = """
CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE TABLE events (
    id         bigint PRIMARY KEY,
    created_at timestamptz NOT NULL,
    amount     numeric(12, 2),
    label      text,
    tags       text[],
    payload    jsonb,
    ref        uuid,
    feeling    mood,
    code       char(4),
    ratio      double precision,
    due_date   date,
    local_ts   timestamp,
    flag       boolean,
    blob       bytea,
    small      smallint
);
"""
ALL_COLUMNS = (
    "id", "created_at", "amount", "label", "tags", "payload", "ref", "feeling", "code",
    "ratio", "due_date", "local_ts", "flag", "blob", "small",
)  # fmt: skip

# A row every 7 minutes from 2026-10-01 00:00 UTC for 7 days, NULLs sprinkled in every column.
EVENTS_ROWS = """
INSERT INTO events
SELECT g,
       timestamptz '2026-10-01 00:00:00+00' + (g - 1) * interval '7 minutes',
       CASE WHEN g % 9 = 0 THEN NULL ELSE round(g * 1.37, 2) END,
       CASE WHEN g % 5 = 0 THEN NULL ELSE 'label ' || g || ' ✓ ünïcode' END,
       CASE g % 3 WHEN 0 THEN NULL WHEN 1 THEN ARRAY['a', NULL, 'c'] ELSE ARRAY[]::text[] END,
       CASE WHEN g % 4 = 0 THEN NULL
            ELSE jsonb_build_object('n', g, 'nested', jsonb_build_array(1, 'x', NULL)) END,
       md5(g::text)::uuid,
       (CASE WHEN g % 2 = 0 THEN 'happy' ELSE 'sad' END)::mood,
       lpad(g::text, 2, '0'),
       g / 7.0,
       date '2026-10-01' + (g % 30),
       timestamp '2026-10-01 00:00:00' + g * interval '1 second',
       g % 2 = 0,
       decode(md5(g::text), 'hex'),
       (g % 1000)::smallint
FROM generate_series(1, 1440) AS g;
"""

WIDE_TABLE = """
CREATE TABLE wide (id bigint PRIMARY KEY, created_at timestamptz NOT NULL, body text);
INSERT INTO wide
SELECT g, timestamptz '2026-10-01 00:00+00' + g * interval '100 ms', md5(g::text) || repeat('x', 60)
FROM generate_series(1, 200000) g;
"""
DAY_IDS = "SELECT id FROM events WHERE created_at >= %s::date AND created_at < %s::date + 1"
SMALL_PARTS = {"row_group_mib": 1, "upload_part_mib": 5}
SMALL_BATCHES = {"read_batch_mib": 1}


@pytest.fixture
def events(pipeline: Pipeline) -> Pipeline:
    run_sql(pipeline.conninfo, EVENTS_DDL)
    run_sql(pipeline.conninfo, EVENTS_ROWS)
    return pipeline


def events_spec(
    null_partition_rows: NullPartitionRows = NullPartitionRows.FAIL,
) -> TableSpec:
    return spec(columns=ALL_COLUMNS, null_partition_rows=null_partition_rows)


def assert_partition_equals_source(pipeline: Pipeline, table: TableSpec, key: str) -> None:
    comparison = compare_table_partition(
        pipeline.conninfo,
        pipeline.endpoint,
        f"{pipeline.bucket}/{LAKE_PREFIX}",
        asset=raw_asset_key(SOURCE, table).to_user_string(),
        table=table,
        key=key,
    )
    assert comparison.equal, comparison.describe()
    assert comparison.compared_columns == table.read_columns
    assert comparison.source_rows > 0


def count_day(conninfo: str, table: str, day: str) -> int:
    return query(
        conninfo,
        f"SELECT count(*) FROM {table} WHERE created_at >= %s::date AND created_at < %s::date + 1",
        (day, day),
    )[0][0]


def test_a_partition_holds_exactly_its_window_with_every_value(events: Pipeline) -> None:
    table = events_spec()
    assert events.materialize(table, partition="2026-10-02").success
    assert_partition_equals_source(events, table, "2026-10-02")
    metadata = events.metadata(table, "2026-10-02")
    expected = count_day(events.conninfo, "events", "2026-10-02")
    assert metadata["dagster/row_count"] == expected
    assert metadata["source_snapshot_rows"] == expected
    key = "lake/raw/testsrc/public/events/day=2026-10-02/part-00000.parquet"
    assert metadata["dagster/uri"] == f"s3://{events.bucket}/{key}"
    assert metadata["size_bytes"] == events.objects()[key]
    assert metadata["window_start"] == dt.datetime(2026, 10, 2, tzinfo=dt.UTC).timestamp()
    assert metadata["window_end"] == dt.datetime(2026, 10, 3, tzinfo=dt.UTC).timestamp()
    assert metadata["window"] == "[2026-10-02T00:00:00+00:00, 2026-10-03T00:00:00+00:00)"
    schema = metadata["dagster/column_schema"]
    assert isinstance(schema, dg.TableSchema)
    columns = {c.name: c for c in schema.columns}
    assert list(columns) == list(ALL_COLUMNS)
    assert (columns["amount"].type, columns["amount"].description) == (
        "decimal128(12, 2)",
        "postgres numeric(12,2)",
    )
    assert columns["feeling"].description == "postgres mood; labels: happy, sad"
    assert columns["id"].constraints.nullable is False
    assert columns["label"].constraints.nullable is True
    seconds = metadata["duration_seconds"]
    assert 0 < seconds < 60
    # duration_seconds is rounded to the millisecond; the rate was computed before rounding.
    rate = metadata["rows_per_second"]
    assert expected / (seconds + 0.0005) <= rate <= expected / max(seconds - 0.0005, 1e-9)


def test_the_materialization_shows_a_masked_preview_and_a_link_to_the_object(
    events: Pipeline,
) -> None:
    table = revised(events_spec(), preview_rows=3, preview_mask=("label", "blob"))
    assert events.materialize(table, partition="2026-10-02").success
    metadata = events.metadata(table, "2026-10-02")

    lines = metadata["preview"].splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[:4] == ["id", "created_at", "amount", "label (masked)"]
    assert len(lines) == 2 + 3
    day_ids = {row[0] for row in query(events.conninfo, DAY_IDS, ("2026-10-02", "2026-10-02"))}
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    assert {int(row[0]) for row in rows} <= day_ids
    assert {row[header.index("label (masked)")] for row in rows} <= {MASK, NULL}
    assert "ünïcode" not in metadata["preview"]

    link = metadata["lake_object"]
    assert link == f"{events.endpoint.url}/{metadata['dagster/uri'].removeprefix('s3://')}"
    bucket, key = urllib.parse.urlsplit(link).path.lstrip("/").split("/", 1)
    assert events.endpoint.client().head_object(Bucket=bucket, Key=key)["ContentLength"] == (
        len(events.partition_bytes(table, "2026-10-02"))
    )


def test_a_range_run_publishes_and_records_each_partition_on_its_own(events: Pipeline) -> None:
    table = events_spec()
    result = events.materialize(table, partition_range=("2026-10-01", "2026-10-03"))
    assert result.success
    assert len(result.get_asset_materialization_events()) == 3
    prefix = "lake/raw/testsrc/public/events"
    assert events.objects().keys() == {
        f"{prefix}/day=2026-10-0{d}/part-00000.parquet" for d in (1, 2, 3)
    }
    for day in ("2026-10-01", "2026-10-02", "2026-10-03"):
        metadata = events.metadata(table, day)
        assert metadata["dagster/row_count"] == count_day(events.conninfo, "events", day)
        assert metadata["window"].startswith(f"[{day}T00:00:00+00:00")
        assert_partition_equals_source(events, table, day)


def test_adjacent_partitions_tile_the_table_and_boundary_rows_land_once(pipeline: Pipeline) -> None:
    run_sql(
        pipeline.conninfo,
        """
        CREATE TABLE ticks (id int PRIMARY KEY, created_at timestamptz NOT NULL);
        -- each midnight, a microsecond either side of it, and noon
        INSERT INTO ticks
        SELECT row_number() OVER (), t FROM (
            SELECT d + o AS t
            FROM generate_series(timestamptz '2026-10-01 00:00+00', '2026-10-08 00:00+00',
                                 interval '1 day') d,
                 unnest(ARRAY[interval '0', interval '-1 microsecond',
                              interval '1 microsecond', interval '12 hours']) o) s;
        """,
    )
    table = spec(table="ticks", columns=("id", "created_at"))
    assert pipeline.materialize(table, partition_range=("2026-10-01", "2026-10-07")).success
    days = [f"2026-10-0{d}" for d in range(1, 8)]
    counts = {day: pipeline.metadata(table, day)["dagster/row_count"] for day in days}
    in_range = query(
        pipeline.conninfo,
        "SELECT count(*) FROM ticks"
        " WHERE created_at >= '2026-10-01+00' AND created_at < '2026-10-08+00'",
    )[0][0]
    assert sum(counts.values()) == in_range
    assert set(counts.values()) == {4}  # midnight, +1us, noon, and the next day's -1us
    lake = read_lake_partition(
        pipeline.endpoint,
        f"{pipeline.bucket}/{LAKE_PREFIX}/raw/testsrc/public/ticks",
        "day",
        days[1],
    )
    times = sorted(t for t in lake.column("created_at").to_pylist() if t is not None)
    assert times[0] == dt.datetime(2026, 10, 2, tzinfo=dt.UTC)
    assert times[-1] == dt.datetime(2026, 10, 3, tzinfo=dt.UTC) - dt.timedelta(microseconds=1)


def test_a_dst_day_in_a_non_utc_timezone_is_one_partition(pipeline: Pipeline) -> None:
    run_sql(
        pipeline.conninfo,
        """
        CREATE TABLE readings (id int PRIMARY KEY, at timestamptz NOT NULL,
                               local_at timestamp NOT NULL);
        INSERT INTO readings
        SELECT row_number() OVER (), t, t AT TIME ZONE 'Europe/Berlin'
        FROM generate_series(timestamptz '2026-10-24 00:00 Europe/Berlin',
                             timestamptz '2026-10-27 00:00 Europe/Berlin' - interval '10 minutes',
                             interval '10 minutes') t;
        """,
    )
    instant = spec(
        table="readings",
        partition_column="at",
        columns=("id", "at"),
        timezone="Europe/Berlin",
        start=dt.datetime(2026, 10, 24),
        end=dt.datetime(2026, 10, 27),
    )
    wall_clock = spec(
        asset_name="readings_wallclock",
        table="readings",
        partition_column="local_at",
        columns=("id", "local_at"),
        timezone="Europe/Berlin",
        start=dt.datetime(2026, 10, 24),
        end=dt.datetime(2026, 10, 27),
    )
    days = ("2026-10-24", "2026-10-25", "2026-10-26")
    rows: dict[tuple[str, str], int] = {}
    for table in (instant, wall_clock):
        assert pipeline.materialize(table, partition_range=(days[0], days[-1])).success
        for day in days:
            rows[table.partition_column, day] = pipeline.metadata(table, day)["dagster/row_count"]
    # The fall-back day lasts 25 hours. Its naive wall-clock times repeat 02:00-03:00, and both
    # rows of each repeated wall time belong to that calendar day, so both columns agree.
    assert rows == {
        ("at", "2026-10-24"): 144,
        ("at", "2026-10-25"): 150,
        ("at", "2026-10-26"): 144,
        ("local_at", "2026-10-24"): 144,
        ("local_at", "2026-10-25"): 150,
        ("local_at", "2026-10-26"): 144,
    }


def test_an_hourly_window_on_the_repeated_hour_refuses_a_naive_column(pipeline: Pipeline) -> None:
    run_sql(pipeline.conninfo, "CREATE TABLE t (id int PRIMARY KEY, local_at timestamp)")
    table = spec(
        table="t",
        partition_column="local_at",
        columns=("id", "local_at"),
        grain=Grain.HOURLY,
        timezone="Europe/Berlin",
        start=dt.datetime(2026, 10, 25),
        end=dt.datetime(2026, 10, 26),
    )
    result = pipeline.materialize(table, partition="2026-10-25T02", raise_on_error=False)
    assert not result.success
    assert "repeats or skips" in failure_text(result)
    assert pipeline.objects() == {}


def test_a_rerun_replaces_the_partition_instead_of_adding_to_it(events: Pipeline) -> None:
    table = events_spec()
    assert events.materialize(table, partition="2026-10-02").success
    first = events.objects()
    run_sql(events.conninfo, "UPDATE events SET label = 'changed' WHERE id = 300")
    assert events.materialize(table, partition="2026-10-02").success
    second = events.objects()
    assert first.keys() == second.keys()
    assert len(second) == 1
    assert_partition_equals_source(events, table, "2026-10-02")
    body = events.endpoint.client().get_object(Bucket=events.bucket, Key=next(iter(second)))
    labels = pl.read_parquet(body["Body"].read())
    assert labels.filter(pl.col("id") == 300)["label"].to_list() == ["changed"]


def fail_after_some_batches(frame: pl.LazyFrame) -> pl.LazyFrame:
    batches_seen = itertools.count(1)

    def explode_late() -> None:
        if next(batches_seen) >= 6:
            raise RuntimeError("transform failed mid-way")

    return on_every_batch(explode_late)(frame)


PROGRESS = re.compile(
    r"\[2026-10-01\]: (?P<rows>[\d,]+) rows so far \([\d,]+ rows/s\), (?P<batches>[\d,]+) source "
    r"batches read, (?P<written>[\d.]+) MiB of Parquet written, (?P<uploaded>[\d.]+) MiB uploaded$"
)


def test_a_long_partition_reports_its_progress_while_it_streams(pipeline: Pipeline) -> None:
    run_sql(pipeline.conninfo, WIDE_TABLE)
    table = spec(table="wide", columns=("id", "created_at", "body"))
    result = pipeline.materialize(
        table, partition="2026-10-01", lake=SMALL_PARTS, source=SMALL_BATCHES
    )
    lines = [e.message for e in pipeline.instance.all_logs(result.run_id) if e.message]
    progress = [match for line in lines if (match := PROGRESS.search(line))]
    assert progress, "\n".join(lines)
    first = progress[0]
    total_rows = query(pipeline.conninfo, "SELECT count(*) FROM wide")[0][0]
    assert 0 < int(first["rows"].replace(",", "")) < total_rows
    assert int(first["batches"].replace(",", "")) >= 1
    assert 0 <= float(first["uploaded"]) <= float(first["written"])


def test_a_write_that_fails_mid_way_never_publishes_a_partial_partition(
    pipeline: Pipeline,
) -> None:
    run_sql(pipeline.conninfo, WIDE_TABLE)
    table = spec(table="wide", columns=("id", "created_at", "body"))
    client = pipeline.endpoint.client()

    def fail_mid_way() -> dg.ExecuteInProcessResult:
        result = pipeline.materialize(
            table,
            partition="2026-10-01",
            transform=fail_after_some_batches,
            raise_on_error=False,
            lake=SMALL_PARTS,
            source=SMALL_BATCHES,
        )
        assert not result.success
        error = failure_text(result)
        assert "raw/testsrc/public/wide [2026-10-01]: nothing was published" in error
        assert "transform failed mid-way" in error
        # The failure came after row groups had been written and uploaded.
        logs = [e.message for e in pipeline.instance.all_logs(result.run_id) if e.message]
        assert any("rows so far" in m for m in logs)
        assert client.list_multipart_uploads(Bucket=pipeline.bucket).get("Uploads", []) == []
        return result

    # A new partition: nothing appears.
    fail_mid_way()
    assert pipeline.objects() == {}

    # An existing partition: the previous version stays, byte for byte.
    assert pipeline.materialize(table, partition="2026-10-01", lake=SMALL_PARTS).success
    before = pipeline.objects()
    key = next(iter(before))
    etag = client.head_object(Bucket=pipeline.bucket, Key=key)["ETag"]
    fail_mid_way()
    assert pipeline.objects() == before
    assert client.head_object(Bucket=pipeline.bucket, Key=key)["ETag"] == etag


def test_rows_without_a_partition_value_fail_the_run_or_are_reported(events: Pipeline) -> None:
    run_sql(events.conninfo, "ALTER TABLE events ALTER COLUMN created_at DROP NOT NULL")
    run_sql(events.conninfo, "INSERT INTO events (id) VALUES (90001), (90002)")
    failed = events.materialize(events_spec(), partition="2026-10-02", raise_on_error=False)
    assert not failed.success
    assert "2 row(s) whose partition column 'created_at' is NULL" in failure_text(failed)
    assert "null_partition_rows: report" in failure_text(failed)
    assert events.objects() == {}

    reported = events_spec(null_partition_rows=NullPartitionRows.REPORT)
    result = events.materialize(reported, partition="2026-10-02")
    assert result.success
    assert events.metadata(reported, "2026-10-02")["null_partition_rows"] == 2
    logs = events.instance.all_logs(result.run_id)
    warnings = [e.message for e in logs if e.level == logging.WARNING]
    assert any("2 row(s) have a NULL 'created_at'" in str(m) for m in warnings)


def test_a_column_named_like_the_partition_directories_is_refused(events: Pipeline) -> None:
    result = events.materialize(
        events_spec(),
        partition="2026-10-02",
        transform=lambda frame: frame.with_columns(pl.lit(1).alias("day")),
        raise_on_error=False,
    )
    assert not result.success
    assert "has a column `day`" in failure_text(result)
    assert events.objects() == {}


RANGE = ("2026-10-01", "2026-10-03")


@pytest.mark.parametrize(
    ("bad_row", "columns", "reason"),
    [
        (
            "UPDATE events SET due_date = 'infinity' WHERE id = 300",
            ("id", "created_at", "due_date"),
            "UnrepresentableValueError: public.events.due_date (date): the row with primary key "
            "(id=300) holds infinity",
        ),
        (
            "UPDATE events SET amount = -1 WHERE id = 300",
            ("id", "created_at", ColumnSpec("amount", checks=ColumnChecks(min=0, blocking=True))),
            "BlockingCheckError: public.events [2026-10-02]: blocking check(s) failed: "
            "values_amount: amount: 1 row(s) break min (violating_keys_sample: (id=300))",
        ),
    ],
)
def test_a_range_with_one_bad_window_publishes_and_records_the_others(
    events: Pipeline, bad_row: str, columns: tuple[str | ColumnSpec, ...], reason: str
) -> None:
    # Row 300 lies in the middle day of the range; the days around it are clean.
    run_sql(events.conninfo, bad_row)
    table = spec(columns=columns)
    result = events.materialize(table, partition_range=RANGE, raise_on_error=False)
    assert not result.success
    assert materialized_partitions(events, table, result.run_id) == ["2026-10-01", "2026-10-03"]
    assert sorted(events.objects()) == [
        f"{LAKE_PREFIX}/raw/testsrc/public/events/day={day}/part-00000.parquet"
        for day in ("2026-10-01", "2026-10-03")
    ]
    for day in ("2026-10-01", "2026-10-03"):
        assert_partition_equals_source(events, table, day)
    error = failure_text(result)
    assert (
        "raw/testsrc/public/events [2026-10-01...2026-10-03]: published 2 of 3 partitions "
        "(2026-10-01, 2026-10-03)"
    ) in error
    assert f"Not published: 2026-10-02: {reason}" in error
    checks = check_results(events, result)
    assert checks["row_count_matches_source", "2026-10-01"]
    assert checks["row_count_matches_source", "2026-10-03"]
    if "values_amount" in reason:
        assert checks == {
            **{(name, day): True for name, day in checks if day != "2026-10-02"},
            ("row_count_matches_source", "2026-10-02"): True,
            ("schema_matches_contract", "2026-10-02"): True,
            ("primary_key_unique_not_null", "2026-10-02"): True,
            ("values_amount", "2026-10-02"): False,
        }
