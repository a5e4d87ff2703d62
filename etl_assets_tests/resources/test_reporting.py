"""What a load reports: metadata a person reads, and one evaluation per check and partition."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pyarrow as pa

from etl_assets.lib.incremental import Fingerprint
from etl_assets.lib.lake.objects import PublishedObject
from etl_assets.lib.lake.parquet import WrittenFile
from etl_assets.lib.lake.target import PublishedPartition
from etl_assets.lib.load import PublishedWindow, RefusedWindow
from etl_assets.lib.postgres.read import ReadStats, WindowCount, WindowCounts
from etl_assets.lib.table.checks import CheckOutcome
from etl_assets.lib.table.windows import PartitionWindow
from etl_assets.resources.reporting import (
    DATA_VERSION_TAG,
    evaluations,
    partition_materialization,
    partitions_table,
    published_metadata,
)

UTC = dt.UTC
DAY = PartitionWindow(
    "2026-10-01", dt.datetime(2026, 10, 1, tzinfo=UTC), dt.datetime(2026, 10, 2, tzinfo=UTC)
)
NEXT = PartitionWindow("2026-10-02", DAY.end, dt.datetime(2026, 10, 3, tzinfo=UTC))


def published(rows: int, version: str | None = None) -> PublishedPartition:
    schema = pa.schema([pa.field("id", pa.int64(), nullable=False)])
    return PublishedPartition(
        object=PublishedObject("lake", "k/part-00000.parquet", 123, '"etag"', version),
        file=WrittenFile(rows=rows, row_groups=1, schema=schema, size=123),
        seconds=0.5,
    )


def read(window: PartitionWindow) -> ReadStats:
    return ReadStats(
        window, WindowCounts.known([WindowCount(3, Fingerprint(3, None, "7"))]), rows_read=3
    )


def test_a_published_partition_records_its_object_and_what_it_holds() -> None:
    metadata = published_metadata(published(3, version="v7"), "http://s3/lake/k")
    assert metadata["dagster/row_count"] == 3
    assert metadata["dagster/uri"] == "s3://lake/k/part-00000.parquet"
    assert metadata["lake_object_etag"] == '"etag"'
    assert metadata["lake_object_version"] == "v7"
    assert metadata["rows_per_second"] == 6.0
    schema = metadata["dagster/column_schema"]
    assert isinstance(schema, dg.TableSchema)
    assert [(c.name, c.type) for c in schema.columns] == [("id", "int64")]
    assert "publish_settled" not in metadata


def test_each_selected_check_of_each_window_is_one_evaluation_on_its_partition() -> None:
    ok = CheckOutcome("row_count_matches_source", passed=True, blocking=True, description="ok")
    bad = CheckOutcome("values_total", passed=False, blocking=True, description="1 row")
    outcomes = [
        PublishedWindow(read(DAY), (ok,), published(3)),
        RefusedWindow(read(NEXT), (ok, bad), ValueError("refused")),
    ]
    key = dg.AssetKey(["raw", "s", "t"])
    found = [
        (e.check_name, e.partition, e.passed)
        for e in evaluations(key, outcomes, {"row_count_matches_source", "values_total"})
    ]
    assert found == [
        ("row_count_matches_source", "2026-10-01", True),
        ("row_count_matches_source", "2026-10-02", True),
        ("values_total", "2026-10-02", False),
    ]
    # A check left out of the run's selection is not reported.
    assert [e.check_name for e in evaluations(key, outcomes, {"values_total"})] == ["values_total"]


def test_an_io_managers_range_output_records_a_table_of_its_partitions() -> None:
    table = partitions_table({"2026-10-01": published(3), "2026-10-02": published(0)})
    assert table.splitlines() == [
        "| partition | rows | bytes | uri |",
        "| --- | --- | --- | --- |",
        "| 2026-10-01 | 3 | 123 | s3://lake/k/part-00000.parquet |",
        "| 2026-10-02 | 0 | 123 | s3://lake/k/part-00000.parquet |",
    ]


def test_a_partitions_own_materialization_carries_its_data_version() -> None:
    key = dg.AssetKey(["raw", "s", "t"])
    window = PublishedWindow(read(DAY), (), published(3))
    own = partition_materialization(
        key, window, {"rows": 3}, fingerprint_is_version=True, run_id="r1"
    )
    assert (own.partition, own.tags) == (
        "2026-10-01",
        {DATA_VERSION_TAG: Fingerprint(3, None, "7").version},
    )
    # A fingerprint blind to updates is no version: the run's stands in, new on every load.
    blind = partition_materialization(
        key, window, {"rows": 3}, fingerprint_is_version=False, run_id="r1"
    )
    assert blind.tags == {DATA_VERSION_TAG: "run-r1"}


def test_dagster_keeps_a_data_version_under_the_tag_we_set() -> None:
    @dg.asset
    def versioned() -> dg.MaterializeResult:
        return dg.MaterializeResult(data_version=dg.DataVersion("v-42"))

    result = dg.materialize([versioned])
    [event] = result.get_asset_materialization_events()
    assert event.materialization.tags is not None
    assert event.materialization.tags[DATA_VERSION_TAG] == "v-42"
