"""The plain layout registered in Glue, and queries answered through the catalog alone.

Each query here does what Athena does with a Glue table: it learns the columns and the
partitions' locations from the catalog (GetTable and GetPartitions, or the table's partition
projection properties), reads exactly those locations (pyarrow, resolving Parquet columns by name
regardless of case, as Athena does), and is compared with the source window read with psycopg.
moto's server stands in for Glue; what it does not check is listed in docs/lake.md.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds

from etl_assets.components.table_assets import raw_asset_key, table_partitions
from etl_assets.devstack.s3 import S3Endpoint
from etl_assets.devstack.verify import (
    compare_rows,
    lake_filesystem,
    lake_rows,
    read_source_window,
    values_equal,
)
from etl_assets.lib.lake.glue import LEFT_OUT_PARAMETER, glue_table_name
from etl_assets.lib.table.spec import TableSpec
from etl_assets_tests.integration.test_types import (
    COLUMNS,
    DAY,
    KEY,
    TORTURE_DDL,
    composite_dates_as_text,
    create,
    create_rows,
    expected_rows,
    torture_spec,
)
from etl_assets_tests.support import SOURCE, Pipeline, failure_text, lake_objects, run_sql, spec

DAYS = ("2026-10-01", "2026-10-02", "2026-10-03")
EVENTS = spec(columns=("id", "created_at", "amount", "label", "tags", "tm"))


def registering(pipeline: Pipeline, mode: str) -> dict[str, str]:
    """Lake settings that register in Glue, in a database prefix of this test's own."""
    return {
        "glue_registration": mode,
        "glue_endpoint_url": pipeline.endpoint.url,
        "glue_database_prefix": f"t{uuid.uuid4().hex[:10]}_",
    }


def create_events(pipeline: Pipeline) -> None:
    run_sql(
        pipeline.conninfo,
        """
        CREATE TABLE events (id int PRIMARY KEY, created_at timestamptz NOT NULL,
                             amount numeric(9, 2), label text, tags text[], tm time);
        INSERT INTO events
        SELECT g, timestamptz '2026-10-01 00:00+00' + g * interval '37 minutes', g / 4.0,
               CASE WHEN g % 5 = 0 THEN NULL ELSE 'label ' || g END,
               ARRAY['t' || g, NULL], time '00:00' + g * interval '1 minute'
        FROM generate_series(0, 115) g;
        """,
    )


@dataclass(frozen=True)
class CatalogTable:
    """What a query engine learns from the catalog about one table."""

    columns: tuple[str, ...]
    partition_column: str | None
    parameters: dict[str, str]
    version: str
    locations: dict[str, str]
    """Registered partition value -> location."""


def catalog_table(endpoint: S3Endpoint, settings: dict[str, str], table: TableSpec) -> CatalogTable:
    """GetTable and GetPartitions of the table's raw asset."""
    path = raw_asset_key(SOURCE, table).path
    database, name = glue_table_name(path, settings["glue_database_prefix"])
    client = endpoint.client("glue")
    found = client.get_table(DatabaseName=database, Name=name)["Table"]
    locations: dict[str, str] = {}
    for page in client.get_paginator("get_partitions").paginate(
        DatabaseName=database, TableName=name
    ):
        for partition in page["Partitions"]:
            [value] = partition["Values"]
            locations[value] = partition["StorageDescriptor"]["Location"]
    keys = found["PartitionKeys"]
    return CatalogTable(
        columns=tuple(c["Name"] for c in found["StorageDescriptor"]["Columns"]),
        partition_column=keys[0]["Name"] if keys else None,
        parameters=found["Parameters"],
        version=found["VersionId"],
        locations=locations,
    )


def read_location(endpoint: S3Endpoint, location: str, columns: tuple[str, ...]) -> pa.Table:
    """Every Parquet file under `location`, with the catalog's columns matched by name."""
    dataset = ds.dataset(
        location.removeprefix("s3://"), format="parquet", filesystem=lake_filesystem(endpoint)
    )
    by_lower_name = {name.lower(): name for name in dataset.schema.names}
    return dataset.to_table(columns=[by_lower_name[c] for c in columns])


def source_rows(pipeline: Pipeline, table: TableSpec, key: str, columns: tuple[str, ...]) -> Any:
    window = table_partitions(table).time_window_for_partition_key(key)
    return read_source_window(
        pipeline.conninfo,
        schema=table.table_schema,
        table=table.table,
        columns=columns,
        partition_column=table.partition_column,
        start=window.start,
        end=window.end,
        order_by=table.primary_key,
    )


def test_a_query_through_the_glue_catalog_reads_the_source_value_for_value(
    pipeline: Pipeline,
) -> None:
    create_events(pipeline)
    settings = registering(pipeline, "partitions")
    assert pipeline.materialize(EVENTS, partition_range=(DAYS[0], DAYS[-1]), lake=settings).success
    catalog = catalog_table(pipeline.endpoint, settings, EVENTS)
    assert catalog.partition_column == "day"
    # `time` has no Hive type: the table leaves it out and says so; the rest reads as usual.
    assert catalog.columns == ("id", "created_at", "amount", "label", "tags")
    assert catalog.parameters[LEFT_OUT_PARAMETER] == "tm (time64[us]: no Hive type)"
    assert sorted(catalog.locations) == list(DAYS)
    for key, location in catalog.locations.items():
        assert location == (f"s3://{pipeline.bucket}/lake/raw/testsrc/public/events/day={key}/")
        lake = read_location(pipeline.endpoint, location, catalog.columns)
        comparison = compare_rows(
            source_rows(pipeline, EVENTS, key, catalog.columns), lake_rows(lake, ["id"])
        )
        assert comparison.equal, (key, comparison.describe())
        assert comparison.compared_columns == catalog.columns
        assert comparison.source_rows > 30
    # A rerun of a partition changes nothing in the catalog.
    assert pipeline.materialize(EVENTS, partition=DAYS[1], lake=settings).success
    again = catalog_table(pipeline.endpoint, settings, EVENTS)
    assert (again.version, again.locations) == (catalog.version, catalog.locations)


JAVA_TO_STRFTIME = {"yyyy": "%Y", "MM": "%m", "dd": "%d"}
UNITS = {"DAYS": dt.timedelta(days=1)}


def projected_locations(catalog: CatalogTable, now: dt.datetime) -> dict[str, str]:
    """The partitions Athena projects from the table's properties, as of `now` (UTC).

    Implements what this lake's daily tables use: `date` type, a `yyyy-MM-dd` format, a range
    from a first key to `NOW+1DAYS`, an interval in days and a location template.
    """
    column = catalog.partition_column
    assert column is not None
    parameters = catalog.parameters
    assert parameters["projection.enabled"] == "true"
    assert parameters[f"projection.{column}.type"] == "date"
    key_format = parameters[f"projection.{column}.format"]
    for java, python in JAVA_TO_STRFTIME.items():
        key_format = key_format.replace(java, python)
    first, last = parameters[f"projection.{column}.range"].split(",")
    assert last == "NOW+1DAYS"
    step = UNITS[parameters[f"projection.{column}.interval.unit"]] * int(
        parameters[f"projection.{column}.interval"]
    )
    template = parameters["storage.location.template"]
    locations: dict[str, str] = {}
    value = dt.datetime.strptime(first, key_format)
    while value <= now + dt.timedelta(days=1):
        key = value.strftime(key_format)
        locations[key] = template.replace(f"${{{column}}}", key)
        value += step
    return locations


def test_partition_projection_finds_every_published_partition(pipeline: Pipeline) -> None:
    create_events(pipeline)
    settings = registering(pipeline, "projection")
    assert pipeline.materialize(EVENTS, partition_range=(DAYS[0], DAYS[-1]), lake=settings).success
    catalog = catalog_table(pipeline.endpoint, settings, EVENTS)
    assert catalog.locations == {}
    # A query of the three days, run the day after the last one.
    projected = projected_locations(catalog, now=dt.datetime(2026, 10, 4))
    wanted = {k: v for k, v in projected.items() if DAYS[0] <= k <= DAYS[-1]}
    assert sorted(wanted) == list(DAYS)
    objects = lake_objects(pipeline.endpoint, pipeline.bucket)
    for key, location in wanted.items():
        prefix = location.removeprefix(f"s3://{pipeline.bucket}/")
        assert [k for k in objects if k.startswith(prefix)] == [f"{prefix}part-00000.parquet"]
        lake = read_location(pipeline.endpoint, location, catalog.columns)
        comparison = compare_rows(
            source_rows(pipeline, EVENTS, key, catalog.columns), lake_rows(lake, ["id"])
        )
        assert comparison.equal, (key, comparison.describe())


def test_nothing_is_registered_unless_asked(pipeline: Pipeline) -> None:
    create_events(pipeline)
    assert pipeline.materialize(EVENTS, partition=DAYS[0]).success
    databases = pipeline.endpoint.client("glue").get_databases()["DatabaseList"]
    assert SOURCE not in {d["Name"] for d in databases}


def test_a_glue_failure_fails_the_run_and_records_the_published_partition(
    pipeline: Pipeline,
) -> None:
    create_events(pipeline)
    settings = registering(pipeline, "partitions") | {"glue_endpoint_url": "http://127.0.0.1:9"}
    result = pipeline.materialize(
        EVENTS,
        partition=DAYS[0],
        lake=settings,
        writer={"max_attempts": 1, "transient_retries": 0},
        raise_on_error=False,
    )
    assert not result.success
    text = failure_text(result)
    assert "published 1 of 1 partitions (2026-10-01)" in text
    assert "published, but not registered in the Glue table" in text
    assert "Rerun the partition once Glue answers" in text
    assert pipeline.metadata(EVENTS, DAYS[0])["dagster/row_count"] > 0


def test_every_type_the_lake_writes_is_registered_exactly_or_left_out_by_name(
    pipeline: Pipeline,
) -> None:
    create(pipeline, TORTURE_DDL)
    create_rows(pipeline)
    table = torture_spec()
    settings = registering(pipeline, "partitions")
    assert pipeline.materialize(table, partition=DAY, lake=settings).success
    path = raw_asset_key(SOURCE, table).path
    database, name = glue_table_name(path, settings["glue_database_prefix"])
    registered = pipeline.endpoint.client("glue").get_table(DatabaseName=database, Name=name)[
        "Table"
    ]
    types = {c["Name"]: c["Type"] for c in registered["StorageDescriptor"]["Columns"]}
    assert types == {
        "order id": "bigint",
        "created at": "timestamp",
        "select": "smallint",
        "naïve": "int",
        "semi;--colon": "bigint",
        "n_exact": "decimal(38,10)",
        "n_free": "string",
        "r": "float",
        "d": "double",
        "b": "boolean",
        "t": "string",
        "vc": "string",
        "bp": "string",
        "by": "binary",
        "en": "string",
        "dt": "date",
        "ts": "timestamp",
        "tstz": "timestamp",
        "ttz": "string",
        "iv": "struct<months:int,days:int,microseconds:bigint>",
        "js": "string",
        "jsb": "string",
        "arr": "array<int>",
        "tarr": "array<string>",
        "earr": "array<string>",
        "comp": "struct<street:string,number:int,since:date>",
        "dom": "decimal(12,2)",
    }
    assert registered["Parameters"][LEFT_OUT_PARAMETER] == (
        "n_big (decimal256(50, 5): no Hive type); tm (time64[us]: no Hive type); "
        "u (extension<arrow.uuid>: no Hive type)"
    )
    # Every registered column reads back, through the catalog, exactly as Postgres states it.
    catalog = catalog_table(pipeline.endpoint, settings, table)
    lake = read_location(pipeline.endpoint, catalog.locations[DAY], catalog.columns)
    actual = sorted(composite_dates_as_text(lake.to_pylist()), key=lambda r: r[KEY])
    expected = expected_rows(pipeline.conninfo)
    assert [r[KEY] for r in actual] == [1, 2, 3]
    read = [c for c in COLUMNS if c.lower() in catalog.columns]
    assert len(read) == len(COLUMNS) - 3
    for want, got in zip(expected, actual, strict=True):
        for column in read:
            assert values_equal(want[column], got[column]), (column, want[column], got[column])
