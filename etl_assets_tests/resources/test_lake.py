"""The S3 lake resource and IO manager: settings, hive names, and reading partitions back."""

from __future__ import annotations

import dagster as dg
import polars as pl
import pytest

from etl_assets.components.table_assets import LAKE_IO_MANAGER_KEY, build_table_assets
from etl_assets.lib.lake.objects import ServerSideEncryption
from etl_assets.resources.lake import HIVE_PARTITION_METADATA_KEY, S3Lake, partition_name
from etl_assets_tests.support import SOURCE, Pipeline, failure_text, run_sql, spec


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


def test_downstream_assets_read_exactly_the_partitions_they_depend_on(pipeline: Pipeline) -> None:
    run_sql(
        pipeline.conninfo,
        """
        CREATE TABLE events (id int PRIMARY KEY, created_at timestamptz NOT NULL);
        INSERT INTO events SELECT g, timestamptz '2026-10-01 00:00+00' + g * interval '1 hour'
        FROM generate_series(0, 95) g;
        """,
    )
    table = spec(columns=("id", "created_at"))
    assert pipeline.materialize(table, partition_range=("2026-10-01", "2026-10-03")).success
    built = build_table_assets(SOURCE, table, None)
    seen: dict[str, object] = {}

    @dg.asset(
        key=["curated", "counts"],
        ins={"events": dg.AssetIn(built.raw.key)},
        partitions_def=built.raw.partitions_def,
        io_manager_key=LAKE_IO_MANAGER_KEY,
    )
    def counts(events: pl.LazyFrame) -> pl.LazyFrame:
        seen["type"] = type(events)
        seen["ids"] = events.select("id").collect()["id"].to_list()
        return events.select(pl.len().alias("rows"))

    def materialize_counts(partition: str) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            [built.source, built.raw, counts],
            partition_key=partition,
            instance=pipeline.instance,
            resources=pipeline.resources(table),
            selection=[counts.key],
            raise_on_error=False,
        )

    assert materialize_counts("2026-10-02").success
    assert seen["type"] is pl.LazyFrame
    assert seen["ids"] == list(range(24, 48))
    key = "lake/curated/counts/day=2026-10-02/part-00000.parquet"
    body = pipeline.endpoint.client().get_object(Bucket=pipeline.bucket, Key=key)["Body"].read()
    assert pl.read_parquet(body)["rows"].to_list() == [24]

    missing = materialize_counts("2026-10-05")
    assert not missing.success
    assert "has no published data at s3://" in failure_text(missing)
    assert "materialize those partitions first" in failure_text(missing)
