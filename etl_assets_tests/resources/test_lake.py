"""The S3 lake resource: settings, hive names, Athena projection and Glue registration.

No `from __future__ import annotations` here: Dagster reads the `context` annotation of an asset
defined in a test at run time.
"""

import uuid
from collections.abc import Iterator
from typing import Any

import dagster as dg
import polars as pl
import pytest

from etl_assets.lib.lake.glue import DateProjection
from etl_assets.lib.lake.objects import ServerSideEncryption
from etl_assets.resources.lake import (
    HIVE_PARTITION_METADATA_KEY,
    S3Lake,
    date_projection,
    partition_name,
)
from etl_assets_tests.resources.test_lake_io_manager import counts_asset, hourly_events
from etl_assets_tests.support import SOURCE, Pipeline


def test_encryption_settings_are_checked() -> None:
    kms = S3Lake(bucket="b", sse="aws:kms", kms_key_id="alias/lake").upload_settings()
    assert kms.encryption.mode is ServerSideEncryption.KMS
    assert kms.encryption.request_args() == {
        "ServerSideEncryption": "aws:kms",
        "SSEKMSKeyId": "alias/lake",
    }
    with pytest.raises(ValueError, match="sse must be one of AES256, aws:kms"):
        S3Lake(bucket="b", sse="none").upload_settings()


def test_polars_reads_from_the_same_endpoint() -> None:
    assert S3Lake(
        bucket="b", endpoint_url="http://127.0.0.1:9000", region="eu-west-1"
    ).polars_storage_options() == {
        "aws_endpoint_url": "http://127.0.0.1:9000",
        "aws_allow_http": "true",
        "aws_region": "eu-west-1",
    }


def test_hive_partition_names_come_from_metadata_or_the_grain() -> None:
    daily = dg.DailyPartitionsDefinition("2026-10-01")
    assert partition_name(daily, {}) == "day"
    assert partition_name(daily, {HIVE_PARTITION_METADATA_KEY: "d"}) == "d"
    assert partition_name(dg.StaticPartitionsDefinition(["a"]), {}) == "partition"


def test_athena_projects_time_partitions_of_a_standard_grain_only() -> None:
    daily = date_projection(dg.DailyPartitionsDefinition("2026-10-01"))
    assert daily == DateProjection("yyyy-MM-dd", "DAYS", "2026-10-01")
    hourly = date_projection(dg.HourlyPartitionsDefinition("2026-10-01-05:00"))
    assert hourly == DateProjection("yyyy-MM-dd-HH:mm", "HOURS", "2026-10-01-05:00")
    weekly = date_projection(
        dg.TimeWindowPartitionsDefinition(
            start="2026-09-28", fmt="%Y-%m-%d", cron_schedule="0 0 * * 1"
        )
    )
    assert weekly == DateProjection("yyyy-MM-dd", "WEEKS", "2026-09-28")
    at_six = dg.TimeWindowPartitionsDefinition(
        start="2026-10-01", fmt="%Y-%m-%d", cron_schedule="0 6 * * *"
    )
    assert date_projection(at_six) is None
    assert date_projection(dg.StaticPartitionsDefinition(["eu", "us"])) is None
    assert date_projection(None) is None


def test_glue_registration_is_off_by_default_and_checked_before_publishing() -> None:
    key = dg.AssetKey(["raw", "shop", "sales", "orders"])
    daily = dg.DailyPartitionsDefinition("2026-10-01")
    assert S3Lake(bucket="b").glue_table(key, "day", daily) is None
    with pytest.raises(ValueError, match="glue_registration must be one of off, partitions"):
        S3Lake(bucket="b", glue_registration="yes").glue_table(key, "day", daily)
    lake = S3Lake(bucket="b", region="eu-west-1", glue_registration="projection")
    with pytest.raises(ValueError, match="'orders': a Glue table needs an asset key of two"):
        lake.glue_table(dg.AssetKey("orders"), "day", daily)
    table = lake.glue_table(key, "day", daily)
    assert table is not None
    assert (table.qualified_name, table.partition_name) == ("shop.raw_sales_orders", "day")
    assert table.projection == DateProjection("yyyy-MM-dd", "DAYS", "2026-10-01")
    client: Any = table.client
    assert client.meta.region_name == "eu-west-1"
    unpartitioned = S3Lake(bucket="b", glue_registration="partitions", glue_region="us-west-2")
    table = unpartitioned.glue_table(dg.AssetKey(["curated", "x"]), "partition", None)
    assert table is not None
    assert table.partition_name is None
    client = table.client
    assert client.meta.region_name == "us-west-2"


def test_curated_partitions_are_registered_when_published(pipeline: Pipeline) -> None:
    table, built = hourly_events(pipeline, days=2)
    counts = counts_asset(built, {})

    @dg.asset(
        key=["curated", SOURCE, "ids"],
        ins={"events": dg.AssetIn(built.raw.key)},
        partitions_def=built.raw.partitions_def,
    )
    def ids(
        context: dg.AssetExecutionContext, events: pl.LazyFrame, lake: S3Lake
    ) -> Iterator[dg.MaterializeResult]:
        yield from lake.publish_frames(context, {context.partition_key: events.select("id")})

    prefix = f"t{uuid.uuid4().hex[:10]}_"
    settings = {
        "glue_registration": "partitions",
        "glue_endpoint_url": pipeline.endpoint.url,
        "glue_database_prefix": prefix,
    }
    result = dg.materialize(
        [built.source, built.raw, counts, ids],
        partition_key="2026-10-02",
        instance=pipeline.instance,
        resources=pipeline.resources(table, lake=settings),
        selection=[counts.key, ids.key],
    )
    assert result.success
    glue = pipeline.endpoint.client("glue")
    for database, name, columns in [
        (f"{prefix}curated", "counts", [{"Name": "rows", "Type": "bigint"}]),
        (f"{prefix}{SOURCE}", "curated_ids", [{"Name": "id", "Type": "int"}]),
    ]:
        registered = glue.get_table(DatabaseName=database, Name=name)["Table"]
        assert registered["StorageDescriptor"]["Columns"] == columns
        [partition] = glue.get_partitions(DatabaseName=database, TableName=name)["Partitions"]
        asset = "curated/counts" if name == "counts" else f"curated/{SOURCE}/ids"
        assert (partition["Values"], partition["StorageDescriptor"]["Location"]) == (
            ["2026-10-02"],
            f"s3://{pipeline.bucket}/lake/{asset}/day=2026-10-02/",
        )
