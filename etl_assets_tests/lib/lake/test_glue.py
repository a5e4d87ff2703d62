"""Registering lake tables in Glue: the type mapping, and registration against moto's server."""

from __future__ import annotations

import io
import uuid
from typing import Any

import boto3
import botocore.config
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from etl_assets.devstack.s3 import S3Endpoint
from etl_assets.lib.arrow_types import INTERVAL_TYPE
from etl_assets.lib.errors import GlueRegistrationError
from etl_assets.lib.lake.glue import (
    ASSET_PARAMETER,
    LEFT_OUT_PARAMETER,
    PARQUET_SERDE,
    DateProjection,
    GlueRegistration,
    GlueTable,
    glue_columns,
    glue_table_name,
    hive_type,
    java_date_format,
)
from etl_assets.lib.lake.layout import LakeLayout
from etl_assets.lib.table.windows import Grain

ORDERS = ("raw", "shop", "sales", "orders")

HIVE_TYPES = [
    (pa.bool_(), "boolean"),
    (pa.int8(), "tinyint"),
    (pa.int16(), "smallint"),
    (pa.int32(), "int"),
    (pa.int64(), "bigint"),
    (pa.uint8(), "smallint"),
    (pa.uint16(), "int"),
    (pa.uint32(), "bigint"),
    (pa.float32(), "float"),
    (pa.float64(), "double"),
    (pa.decimal128(12, 2), "decimal(12,2)"),
    (pa.decimal128(38, 10), "decimal(38,10)"),
    (pa.decimal256(38, 0), "decimal(38,0)"),
    (pa.string(), "string"),
    (pa.large_string(), "string"),
    (pa.json_(), "string"),
    (pa.binary(), "binary"),
    (pa.large_binary(), "binary"),
    (pa.date32(), "date"),
    (pa.timestamp("us"), "timestamp"),
    (pa.timestamp("us", "UTC"), "timestamp"),
    (pa.timestamp("ns", "Europe/Berlin"), "timestamp"),
    (pa.list_(pa.int32()), "array<int>"),
    (pa.large_list(pa.string()), "array<string>"),
    (INTERVAL_TYPE, "struct<months:int,days:int,microseconds:bigint>"),
    (
        pa.struct([("street", pa.string()), ("number", pa.int32()), ("since", pa.date32())]),
        "struct<street:string,number:int,since:date>",
    ),
    (
        pa.list_(pa.struct([("a", pa.list_(pa.decimal128(5, 1)))])),
        "array<struct<a:array<decimal(5,1)>>>",
    ),
    (pa.map_(pa.string(), pa.int64()), "map<string,bigint>"),
    (pa.dictionary(pa.int32(), pa.string()), "string"),
]

NO_HIVE_TYPE = [
    pa.time64("us"),
    pa.time32("ms"),
    pa.decimal256(50, 5),
    pa.uuid(),
    pa.binary(16),
    pa.uint64(),
    pa.float16(),
    pa.duration("us"),
    pa.month_day_nano_interval(),
    pa.null(),
    pa.list_(pa.time64("us")),
    pa.struct([("at", pa.time64("us"))]),
    pa.struct([("has space", pa.int32())]),
    pa.map_(pa.string(), pa.uuid()),
]


@pytest.mark.parametrize(("arrow", "hive"), HIVE_TYPES, ids=str)
def test_each_arrow_type_has_its_exact_hive_type(arrow: pa.DataType, hive: str) -> None:
    assert hive_type(arrow) == hive


@pytest.mark.parametrize("arrow", NO_HIVE_TYPE, ids=str)
def test_types_hive_cannot_hold_have_no_hive_type(arrow: pa.DataType) -> None:
    assert hive_type(arrow) is None


def footer_schema(schema: pa.Schema) -> pa.Schema:
    """The schema a reader gets from the footer of a Parquet file written with `schema`."""
    sink = io.BytesIO()
    pq.write_table(schema.empty_table(), sink)
    return pq.read_schema(io.BytesIO(sink.getvalue()))


def test_the_columns_come_from_the_files_footer_and_unmappable_ones_are_left_out() -> None:
    schema = pa.schema(
        [
            pa.field("Order ID", pa.int64(), metadata={"postgres.type": "bigint"}),
            pa.field("total", pa.decimal128(12, 2), metadata={"postgres.type": "numeric(12,2)"}),
            pa.field("u", pa.uuid(), metadata={"postgres.type": "uuid"}),
            pa.field("js", pa.json_(), metadata={"postgres.type": "jsonb"}),
            pa.field("tm", pa.time64("us")),
            pa.field("n_big", pa.decimal256(50, 5)),
            pa.field("iv", INTERVAL_TYPE),
            pa.field("Day", pa.string()),
        ]
    )
    columns = glue_columns(footer_schema(schema), partition_column="day")
    assert columns.columns == (
        {"Name": "order id", "Type": "bigint", "Comment": "bigint"},
        {"Name": "total", "Type": "decimal(12,2)", "Comment": "numeric(12,2)"},
        {"Name": "js", "Type": "string", "Comment": "jsonb"},
        {"Name": "iv", "Type": "struct<months:int,days:int,microseconds:bigint>"},
    )
    assert [name for name, _ in columns.left_out] == ["u", "tm", "n_big", "Day"]
    assert columns.describe_left_out() == (
        "u (extension<arrow.uuid>: no Hive type); tm (time64[us]: no Hive type); "
        "n_big (decimal256(50, 5): no Hive type); Day (its lower-case name 'day' is taken)"
    )


def test_the_database_is_the_source_and_the_table_the_rest_of_the_key() -> None:
    assert glue_table_name(ORDERS) == ("shop", "raw_sales_orders")
    assert glue_table_name(("curated", "shop", "order_payments")) == (
        "shop",
        "curated_order_payments",
    )
    assert glue_table_name(("marts", "Daily Revenue")) == ("marts", "daily_revenue")
    assert glue_table_name(("raw", "shop", 'Tortüre; --Schema "x"', "t"), "prod_") == (
        "prod_shop",
        "raw_tort_re____schema__x__t",
    )
    with pytest.raises(ValueError, match="'orders': a Glue table needs an asset key of two"):
        glue_table_name(("orders",))


def test_registration_modes_are_named_and_a_wrong_one_is_refused() -> None:
    assert GlueRegistration.parse(" Projection ") is GlueRegistration.PROJECTION
    with pytest.raises(ValueError, match="one of off, partitions, projection, got 'on'"):
        GlueRegistration.parse("on")


@pytest.mark.parametrize(
    ("grain", "first_key", "java", "unit"),
    [
        (Grain.HOURLY, "2026-10-01T00", "yyyy-MM-dd'T'HH", "HOURS"),
        (Grain.DAILY, "2026-10-01", "yyyy-MM-dd", "DAYS"),
        (Grain.WEEKLY, "2026-09-28", "yyyy-MM-dd", "WEEKS"),
        (Grain.MONTHLY, "2026-10", "yyyy-MM", "MONTHS"),
    ],
)
def test_each_grain_projects_its_keys(grain: Grain, first_key: str, java: str, unit: str) -> None:
    projection = DateProjection.for_grain(grain, grain.key_format, first_key)
    assert projection is not None
    template = "s3://lake/etl/raw/shop/sales/orders/day=${day}/"
    assert projection.parameters("day", template) == {
        "projection.enabled": "true",
        "projection.day.type": "date",
        "projection.day.format": java,
        "projection.day.range": f"{first_key},NOW+1DAYS",
        "projection.day.interval": "1",
        "projection.day.interval.unit": unit,
        "storage.location.template": template,
    }


def test_only_formats_java_can_spell_are_projected() -> None:
    assert java_date_format("%Y/%m/%d %H:%M:%S") == "yyyy/MM/dd HH:mm:ss"
    assert java_date_format("%Y-W%V") is None
    assert java_date_format("%Y-%j") is None
    assert DateProjection.for_grain(Grain.DAILY, "%d.%m.%Y'", "01.10.2026'") is None


# Registration against moto's server (which serves Glue at the S3 endpoint's address).


def a_table(
    endpoint: S3Endpoint,
    *,
    path: tuple[str, ...] = ORDERS,
    partition_name: str | None = "day",
    projection: DateProjection | None = None,
    bucket: str = "lake",
    prefix: str | None = None,
    client: Any = None,
) -> GlueTable:
    """A table in a database of its own (moto's catalog lives as long as the session)."""
    return GlueTable(
        client=client or endpoint.client("glue"),
        layout=LakeLayout(bucket, "etl"),
        asset_path=path,
        partition_name=partition_name,
        projection=projection,
        database_prefix=prefix or f"t{uuid.uuid4().hex[:10]}_",
    )


V1 = pa.schema(
    [
        pa.field("order_id", pa.int64(), metadata={"postgres.type": "bigint"}),
        pa.field("placed_at", pa.timestamp("us", "UTC")),
        pa.field("total", pa.decimal128(12, 2)),
    ]
)
V2 = V1.append(pa.field("tags", pa.list_(pa.string())))


def stored(table: GlueTable) -> dict[str, Any]:
    database, name = table.qualified_name.split(".")
    client: Any = table.client
    return client.get_table(DatabaseName=database, Name=name)["Table"]


def partitions(table: GlueTable) -> list[dict[str, Any]]:
    database, name = table.qualified_name.split(".")
    client: Any = table.client
    return client.get_partitions(DatabaseName=database, TableName=name)["Partitions"]


def test_a_publish_creates_the_database_the_table_and_the_partition(
    s3_endpoint: S3Endpoint,
) -> None:
    table = a_table(s3_endpoint)
    said = table.register("2026-10-01", V1)
    assert said == (
        f"Glue table {table.qualified_name} created; partition day=2026-10-01 registered"
    )
    database, name = table.qualified_name.split(".")
    assert (database.endswith("_shop"), name) == (True, "raw_sales_orders")
    glue: Any = table.client
    assert glue.get_database(Name=database)["Database"]["Name"] == database
    registered = stored(table)
    assert registered["TableType"] == "EXTERNAL_TABLE"
    assert registered["PartitionKeys"] == [{"Name": "day", "Type": "string"}]
    assert registered["Parameters"] == {
        "classification": "parquet",
        "EXTERNAL": "TRUE",
        ASSET_PARAMETER: "raw/shop/sales/orders",
    }
    storage = registered["StorageDescriptor"]
    assert storage["Location"] == "s3://lake/etl/raw/shop/sales/orders/"
    assert storage["SerdeInfo"]["SerializationLibrary"] == PARQUET_SERDE
    assert storage["Columns"] == [
        {"Name": "order_id", "Type": "bigint", "Comment": "bigint"},
        {"Name": "placed_at", "Type": "timestamp"},
        {"Name": "total", "Type": "decimal(12,2)"},
    ]
    [partition] = partitions(table)
    assert partition["Values"] == ["2026-10-01"]
    assert partition["StorageDescriptor"]["Location"] == (
        "s3://lake/etl/raw/shop/sales/orders/day=2026-10-01/"
    )
    assert partition["StorageDescriptor"]["Columns"] == storage["Columns"]


def test_a_rerun_registers_nothing_new(s3_endpoint: S3Endpoint) -> None:
    table = a_table(s3_endpoint)
    table.register("2026-10-01", V1)
    version = stored(table)["VersionId"]
    assert table.register("2026-10-01", V1) == (
        f"Glue table {table.qualified_name} unchanged; partition day=2026-10-01 unchanged"
    )
    assert stored(table)["VersionId"] == version
    assert [p["Values"] for p in partitions(table)] == [["2026-10-01"]]


def test_a_new_column_updates_the_table_and_the_republished_partition(
    s3_endpoint: S3Endpoint,
) -> None:
    table = a_table(s3_endpoint)
    table.register("2026-10-01", V1)
    table.register("2026-10-02", V1)
    assert table.register("2026-10-01", V2) == (
        f"Glue table {table.qualified_name} updated; partition day=2026-10-01 updated"
    )
    assert stored(table)["StorageDescriptor"]["Columns"][-1] == {
        "Name": "tags",
        "Type": "array<string>",
    }
    columns = {p["Values"][0]: len(p["StorageDescriptor"]["Columns"]) for p in partitions(table)}
    assert columns == {"2026-10-01": 4, "2026-10-02": 3}


def test_another_tools_table_parameters_survive_an_update(s3_endpoint: S3Endpoint) -> None:
    table = a_table(s3_endpoint)
    table.register("2026-10-01", V1)
    database, _ = table.qualified_name.split(".")
    existing = stored(table)
    glue: Any = table.client
    glue.update_table(
        DatabaseName=database,
        TableInput={
            k: existing[k]
            for k in ("Name", "Description", "TableType", "PartitionKeys", "StorageDescriptor")
        }
        | {"Parameters": existing["Parameters"] | {"owner_team": "data"}},
    )
    table.register("2026-10-01", V2)
    assert stored(table)["Parameters"]["owner_team"] == "data"


def test_columns_with_no_hive_type_are_left_out_and_named(s3_endpoint: S3Endpoint) -> None:
    table = a_table(s3_endpoint)
    schema = V1.append(pa.field("tm", pa.time64("us")))
    said = table.register("2026-10-01", schema)
    assert said.endswith(
        "columns with no Hive type left out (declare them `as: text`, or cast them in the "
        "asset, to register them): "
        "tm (time64[us]: no Hive type)"
    )
    registered = stored(table)
    assert [c["Name"] for c in registered["StorageDescriptor"]["Columns"]] == [
        "order_id",
        "placed_at",
        "total",
    ]
    assert registered["Parameters"][LEFT_OUT_PARAMETER] == "tm (time64[us]: no Hive type)"


def test_projection_writes_the_properties_and_registers_no_partition(
    s3_endpoint: S3Endpoint,
) -> None:
    projection = DateProjection.for_grain(Grain.DAILY, Grain.DAILY.key_format, "2026-10-01")
    table = a_table(s3_endpoint, projection=projection)
    assert table.register("2026-10-03", V1) == (
        f"Glue table {table.qualified_name} created; partition 2026-10-03 found by partition "
        "projection"
    )
    parameters = stored(table)["Parameters"]
    assert {k: v for k, v in parameters.items() if k.startswith(("projection.", "storage."))} == {
        "projection.enabled": "true",
        "projection.day.type": "date",
        "projection.day.format": "yyyy-MM-dd",
        "projection.day.range": "2026-10-01,NOW+1DAYS",
        "projection.day.interval": "1",
        "projection.day.interval.unit": "DAYS",
        "storage.location.template": "s3://lake/etl/raw/shop/sales/orders/day=${day}/",
    }
    assert partitions(table) == []


def test_switching_from_projection_to_partitions_drops_the_projection(
    s3_endpoint: S3Endpoint,
) -> None:
    projection = DateProjection.for_grain(Grain.DAILY, Grain.DAILY.key_format, "2026-10-01")
    projected = a_table(s3_endpoint, projection=projection)
    projected.register("2026-10-01", V1)
    prefix = projected.qualified_name.split("_")[0] + "_"
    per_partition = a_table(s3_endpoint, prefix=prefix, client=projected.client)
    assert per_partition.register("2026-10-01", V1).endswith(
        "updated; partition day=2026-10-01 registered"
    )
    assert not [k for k in stored(per_partition)["Parameters"] if k.startswith("projection.")]


def test_an_unpartitioned_asset_is_a_table_without_partition_keys(
    s3_endpoint: S3Endpoint,
) -> None:
    table = a_table(s3_endpoint, path=("curated", "shop", "customers"), partition_name=None)
    assert table.register(None, V1) == f"Glue table {table.qualified_name} created"
    registered = stored(table)
    assert registered["PartitionKeys"] == []
    assert registered["StorageDescriptor"]["Location"] == "s3://lake/etl/curated/shop/customers/"


def test_a_table_of_another_asset_or_lake_is_never_replaced(s3_endpoint: S3Endpoint) -> None:
    first = a_table(s3_endpoint, path=("raw", "shop", "sales", "orders"))
    first.register("2026-10-01", V1)
    prefix = first.qualified_name.split("_")[0] + "_"
    same_name = a_table(s3_endpoint, path=("raw", "shop", "sales_orders"), prefix=prefix)
    with pytest.raises(
        GlueRegistrationError,
        match=r"raw/shop/sales_orders: the Glue table \S+_shop.raw_sales_orders already exists "
        r"and registers the asset raw/shop/sales/orders at s3://lake/etl/raw/shop/sales/orders/; "
        r"it is left as it is. .*ETL_LAKE_GLUE_DATABASE_PREFIX",
    ):
        same_name.register("2026-10-01", V1)
    other_lake = a_table(s3_endpoint, bucket="staging-lake", prefix=prefix)
    with pytest.raises(GlueRegistrationError, match="at s3://lake/etl/raw/shop/sales/orders/"):
        other_lake.register("2026-10-01", V1)
    assert stored(first)["StorageDescriptor"]["Location"] == "s3://lake/etl/raw/shop/sales/orders/"


def test_glue_out_of_reach_fails_naming_the_table_and_the_published_partition(
    s3_endpoint: S3Endpoint,
) -> None:
    unreachable = boto3.client(
        "glue",
        endpoint_url="http://127.0.0.1:9",
        config=botocore.config.Config(retries={"total_max_attempts": 1}),
    )
    table = a_table(s3_endpoint, client=unreachable)
    with pytest.raises(
        GlueRegistrationError,
        match=r"raw/shop/sales/orders \[2026-10-01\]: published, but not registered in the Glue "
        r"table \S+_shop.raw_sales_orders: Glue could not be reached: .*Rerun the partition",
    ):
        table.register("2026-10-01", V1)
