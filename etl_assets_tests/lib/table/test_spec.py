import datetime as dt

from etl_assets.lib.table.contract import ColumnSpec
from etl_assets.lib.table.spec import NullPartitionRows, TableSpec
from etl_assets.lib.table.windows import Grain


def test_a_declaration_survives_its_metadata_form() -> None:
    spec = TableSpec(
        source="shop",
        schema="sales",
        table="orders",
        partition_column="placed_at",
        grain=Grain.WEEKLY,
        start=dt.datetime(2026, 9, 28),
        end=dt.datetime(2026, 12, 28),
        timezone="Europe/Berlin",
        primary_key=("order_id",),
        columns=(ColumnSpec("order_id", "bigint", nullable=False), ColumnSpec("total")),
        transform="pkg.mod:fn",
        group="sales",
        null_partition_rows=NullPartitionRows.REPORT,
        max_partitions_per_run=7,
        partition_name="wk",
        preview_rows=3,
        preview_mask=("total",),
    )
    assert TableSpec.from_metadata(spec.to_metadata()) == spec
    assert spec.read_columns == ("order_id", "total", "placed_at")
    assert spec.hive_partition_name == "wk"
    assert spec.qualified_name == "sales.orders"


def test_defaults_survive_too() -> None:
    spec = TableSpec(
        source="s",
        schema="public",
        table="t",
        partition_column="ts",
        grain=Grain.DAILY,
        start=dt.datetime(2026, 1, 1),
        end=None,
        timezone="UTC",
        primary_key=("id",),
        columns=(ColumnSpec("id"), ColumnSpec("ts")),
    )
    assert TableSpec.from_metadata(spec.to_metadata()) == spec
    assert spec.read_columns == ("id", "ts")
    assert spec.hive_partition_name == "day"
