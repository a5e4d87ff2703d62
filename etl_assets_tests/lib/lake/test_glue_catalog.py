"""pyiceberg's Glue catalog against moto's server: what a Glue-backed Iceberg lake can rely on.

These pin the catalog properties that work against a Glue endpoint other than AWS's, the shape
of a partition's commit (`add_files` into an identity partition on the partition key, in one
transaction), and what moto's Glue does not enforce, for the catalog resource built on them.
"""

from __future__ import annotations

import datetime as dt
import io
import uuid
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog.glue import GlueCatalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import DecimalType, LongType, NestedField, StringType, TimestamptzType

from etl_assets.devstack.s3 import S3Endpoint

SCHEMA = Schema(
    NestedField(1, "order_id", LongType(), required=True),
    NestedField(2, "placed_at", TimestamptzType(), required=True),
    NestedField(3, "total", DecimalType(12, 2), required=False),
    NestedField(4, "day", StringType(), required=True),
)
BY_DAY = PartitionSpec(
    PartitionField(source_id=4, field_id=1000, transform=IdentityTransform(), name="day")
)
ARROW = pa.schema(
    [
        pa.field("order_id", pa.int64(), nullable=False),
        pa.field("placed_at", pa.timestamp("us", "UTC"), nullable=False),
        pa.field("total", pa.decimal128(12, 2)),
        pa.field("day", pa.string(), nullable=False),
    ]
)


def catalog_properties(endpoint: S3Endpoint) -> dict[str, str]:
    """Everything a `GlueCatalog` on a non-AWS endpoint needs; keys come from the environment.

    `s3.region` matters: without it pyiceberg asks S3 itself which region the bucket is in.
    """
    return {
        "glue.endpoint": endpoint.url,
        "glue.region": endpoint.region,
        "s3.endpoint": endpoint.url,
        "s3.region": endpoint.region,
    }


@pytest.fixture
def catalog(s3_endpoint: S3Endpoint, bucket: str, monkeypatch: pytest.MonkeyPatch) -> GlueCatalog:
    """A catalog that reaches moto only through its properties (no AWS_ENDPOINT_URL, no region)."""
    for name in ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(s3_endpoint.environment())
    return GlueCatalog("lake", **catalog_properties(s3_endpoint))


def put_file(endpoint: S3Endpoint, bucket: str, key: str, rows: list[dict[str, Any]]) -> str:
    """A Parquet object holding `rows` (as the lake writes them); returns its s3:// path."""
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=ARROW), sink)
    endpoint.client().put_object(Bucket=bucket, Key=key, Body=sink.getvalue())
    return f"s3://{bucket}/{key}"


def orders(day: str, ids: range) -> list[dict[str, Any]]:
    placed = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)
    return [
        {"order_id": i, "placed_at": placed, "total": Decimal(f"{i}.50"), "day": day} for i in ids
    ]


def glue_table(endpoint: S3Endpoint, namespace: str) -> dict[str, Any]:
    """The Glue table `<namespace>.orders` as boto3 returns it."""
    return endpoint.client("glue").get_table(DatabaseName=namespace, Name="orders")["Table"]


def a_namespace(catalog: GlueCatalog, bucket: str) -> str:
    namespace = f"ns_{uuid.uuid4().hex[:10]}"
    catalog.create_namespace(namespace, {"location": f"s3://{bucket}/iceberg/{namespace}"})
    return namespace


def test_a_partition_committed_with_add_files_reads_back_from_the_catalog(
    catalog: GlueCatalog, s3_endpoint: S3Endpoint, bucket: str
) -> None:
    namespace = a_namespace(catalog, bucket)
    assert (namespace,) in catalog.list_namespaces()
    table = catalog.create_table(f"{namespace}.orders", schema=SCHEMA, partition_spec=BY_DAY)
    assert table.location() == f"s3://{bucket}/iceberg/{namespace}/orders"
    path = put_file(
        s3_endpoint,
        bucket,
        f"iceberg/{namespace}/orders/data/day=2026-10-01/part-00000.parquet",
        orders("2026-10-01", range(1, 4)),
    )
    summary = {"dagster.run-id": "run-1", "dagster.partition": "2026-10-01"}
    with table.transaction() as transaction:
        transaction.add_files([path], snapshot_properties=summary)

    loaded = catalog.load_table(f"{namespace}.orders")
    snapshot = loaded.current_snapshot()
    assert snapshot is not None
    assert snapshot.summary is not None
    assert {k: snapshot.summary[k] for k in summary} == summary
    assert snapshot.summary["added-records"] == "3"
    files = loaded.inspect.files().select(["file_path", "partition"]).to_pylist()
    assert files == [{"file_path": path, "partition": {"day": "2026-10-01"}}]
    rows = loaded.scan(row_filter="day == '2026-10-01'").to_arrow()
    assert rows.sort_by("order_id").to_pylist() == orders("2026-10-01", range(1, 4))
    # Glue holds the pointer to the table's current metadata, as any Glue reader expects.
    glue = glue_table(s3_endpoint, namespace)
    assert glue["Parameters"]["table_type"] == "ICEBERG"
    assert glue["Parameters"]["metadata_location"] == loaded.metadata_location


def test_one_transaction_replaces_a_partitions_files_and_leaves_the_others(
    catalog: GlueCatalog, s3_endpoint: S3Endpoint, bucket: str
) -> None:
    namespace = a_namespace(catalog, bucket)
    table = catalog.create_table(f"{namespace}.orders", schema=SCHEMA, partition_spec=BY_DAY)
    data = f"iceberg/{namespace}/orders/data"
    v1 = put_file(
        s3_endpoint, bucket, f"{data}/day=2026-10-01/v1.parquet", orders("2026-10-01", range(1, 4))
    )
    other = put_file(
        s3_endpoint,
        bucket,
        f"{data}/day=2026-10-02/v1.parquet",
        orders("2026-10-02", range(10, 12)),
    )
    table.add_files([v1, other])
    before = table.current_snapshot()
    assert before is not None

    v2 = put_file(
        s3_endpoint, bucket, f"{data}/day=2026-10-01/v2.parquet", orders("2026-10-01", range(5, 7))
    )
    version = glue_table(s3_endpoint, namespace)["VersionId"]
    with table.transaction() as transaction:
        transaction.delete("day == '2026-10-01'")
        transaction.add_files([v2])
    # One catalog commit (one new Glue table version) holding two snapshots: the delete and the
    # append. Readers of the current table never see the partition empty.
    assert int(glue_table(s3_endpoint, namespace)["VersionId"]) == int(version) + 1
    assert [s.snapshot_id for s in table.snapshots()][:1] == [before.snapshot_id]
    assert len(table.snapshots()) == 3

    loaded = catalog.load_table(f"{namespace}.orders")
    assert sorted(r["file_path"] for r in loaded.inspect.files().to_pylist()) == sorted([other, v2])
    assert loaded.scan(row_filter="day == '2026-10-01'").to_arrow().num_rows == 2
    assert loaded.scan(row_filter="day == '2026-10-02'").to_arrow().num_rows == 2
    # The snapshot before the replace still reads v1 (time travel).
    old = loaded.scan(snapshot_id=before.snapshot_id, row_filter="day == '2026-10-01'")
    assert old.to_arrow().sort_by("order_id")["order_id"].to_pylist() == [1, 2, 3]


def test_add_files_takes_the_partition_from_the_files_column_not_its_path(
    catalog: GlueCatalog, s3_endpoint: S3Endpoint, bucket: str
) -> None:
    """A file without the partition column lands in the NULL partition, silently."""
    namespace = a_namespace(catalog, bucket)
    schema = Schema(*SCHEMA.fields[:3], NestedField(4, "day", StringType(), required=False))
    table = catalog.create_table(f"{namespace}.orders", schema=schema, partition_spec=BY_DAY)
    sink = io.BytesIO()
    rows = [{k: v for k, v in r.items() if k != "day"} for r in orders("2026-10-01", range(2))]
    pq.write_table(pa.Table.from_pylist(rows, schema=ARROW.remove(3)), sink)
    key = f"iceberg/{namespace}/orders/data/day=2026-10-01/part-00000.parquet"
    s3_endpoint.client().put_object(Bucket=bucket, Key=key, Body=sink.getvalue())
    table.add_files([f"s3://{bucket}/{key}"])
    assert [r["partition"] for r in table.inspect.files().to_pylist()] == [{"day": None}]
    assert table.scan(row_filter="day == '2026-10-01'").to_arrow().num_rows == 0


def test_a_commit_from_stale_metadata_is_retried_by_pyiceberg_and_none_is_lost(
    catalog: GlueCatalog, s3_endpoint: S3Endpoint, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    namespace = a_namespace(catalog, bucket)
    catalog.create_table(f"{namespace}.orders", schema=SCHEMA, partition_spec=BY_DAY)
    first = catalog.load_table(f"{namespace}.orders")
    second = catalog.load_table(f"{namespace}.orders")
    data = f"iceberg/{namespace}/orders/data"
    day1 = put_file(s3_endpoint, bucket, f"{data}/1.parquet", orders("2026-10-01", range(3)))
    day2 = put_file(s3_endpoint, bucket, f"{data}/2.parquet", orders("2026-10-02", range(2)))
    first.add_files([day1])
    # `second` still holds the metadata from before that commit: pyiceberg's own check
    # (AssertRefSnapshotId) refuses it, and the transaction refreshes and commits again.
    second.add_files([day2])
    assert "Commit failed due to a concurrent update, retrying (1/4)" in caplog.text
    loaded = catalog.load_table(f"{namespace}.orders")
    assert len(loaded.snapshots()) == 2
    assert loaded.scan().to_arrow().num_rows == 5


def test_what_moto_does_not_check(s3_endpoint: S3Endpoint) -> None:
    """Real Glue refuses or normalizes each of these; moto's server takes them as given."""
    glue = s3_endpoint.client("glue")
    database = f"moto_{uuid.uuid4().hex[:10]}"
    glue.create_database(DatabaseInput={"Name": database})
    storage = {"Columns": [{"Name": "x", "Type": "not a hive type"}], "Location": "s3://b/t/"}
    glue.create_table(
        DatabaseName=database, TableInput={"Name": "Mixed", "StorageDescriptor": storage}
    )
    # Names are not lower-cased (Glue stores `mixed`), column types are not parsed.
    assert (
        glue.get_table(DatabaseName=database, Name="Mixed")["Table"]["StorageDescriptor"] == storage
    )
    with pytest.raises(glue.exceptions.EntityNotFoundException):
        glue.get_table(DatabaseName=database, Name="mixed")
    # UpdateTable's VersionId (Glue's optimistic lock, which pyiceberg passes) is not compared.
    assert glue.get_table(DatabaseName=database, Name="Mixed")["Table"]["VersionId"] == "1"
    glue.update_table(
        DatabaseName=database,
        TableInput={"Name": "Mixed", "StorageDescriptor": storage, "Parameters": {"v": "2"}},
        VersionId="999",
    )
    assert glue.get_table(DatabaseName=database, Name="Mixed")["Table"]["Parameters"] == {"v": "2"}
