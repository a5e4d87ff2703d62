import yaml

from etl_assets.lib.postgres.catalog import CatalogColumn, CatalogType
from etl_assets.lib.postgres.introspect import (
    ColumnReport,
    TableReport,
    describe_estimate,
    report_table,
    yaml_entry,
    yaml_scalar,
)
from etl_assets.lib.postgres.sql import Relation
from etl_assets.lib.table.windows import Grain


def test_scalars_are_plain_only_when_yaml_reads_them_back_unchanged() -> None:
    for value in ["orders", "Mixed Case", "numeric(12,2)", "true", "a: b", "ü", "#x", "1e3"]:
        assert yaml.safe_load(f"k: {yaml_scalar(value)}") == {"k": value}
    assert yaml_scalar("orders") == "orders"


REPORT = TableReport(
    relation=Relation("sales", "Orders"),
    columns=(
        ColumnReport("id", "bigint", False, "int64", needs_text=False),
        ColumnReport("day", "date", False, "date32[day]", needs_text=False),
        ColumnReport("fee", "money", True, "no exact mapping", needs_text=True),
    ),
    primary_key=(),
    partition_candidates=("day",),
)


def test_an_entry_is_valid_yaml_with_the_contract_and_a_safe_partition_name() -> None:
    [entry] = yaml.safe_load(yaml_entry(REPORT, grain=Grain.DAILY, start="2026-10-01"))
    assert entry["partition_column"] == "day"
    assert entry["partition_name"] == "day_partition"
    assert entry["primary_key"] == ["id"]
    assert entry["columns"] == [
        {"name": "id", "type": "bigint", "nullable": False},
        {"name": "day", "type": "date", "nullable": False},
        {"name": "fee", "type": "money", "nullable": True, "as": "text"},
    ]
    assert "no PRIMARY KEY constraint" in yaml_entry(REPORT)


def test_not_null_time_columns_come_first_then_indexed_ones_then_by_type() -> None:
    # Pagila's customer: a nullable, indexed last_update and a NOT NULL create_date.
    types = {
        1082: CatalogType(1082, "date", "b", "D", 0, 0, -1),
        1114: CatalogType(1114, "timestamp", "b", "D", 0, 0, -1),
        1184: CatalogType(1184, "timestamptz", "b", "D", 0, 0, -1),
        20: CatalogType(20, "int8", "b", "N", 0, 0, -1),
    }
    columns = [
        CatalogColumn("customer_id", 1, "bigint", 20, -1, not_null=True),
        CatalogColumn("last_update", 2, "timestamp with time zone", 1184, -1, not_null=False),
        CatalogColumn("create_date", 3, "date", 1082, -1, not_null=True),
        CatalogColumn("seen", 4, "timestamp without time zone", 1114, -1, not_null=True),
        CatalogColumn("opened", 5, "timestamp with time zone", 1184, -1, not_null=False),
    ]
    report = report_table(
        Relation("public", "customer"),
        columns,
        types,
        primary_key=["customer_id"],
        indexed=["last_update", "create_date"],
    )
    assert report.partition_candidates == ("create_date", "seen", "last_update", "opened")
    [entry] = yaml.safe_load(yaml_entry(report))
    assert entry["partition_column"] == "create_date"


def test_a_relation_never_analyzed_has_an_unknown_estimate_not_zero() -> None:
    assert describe_estimate("r", -1) == "unknown (not analyzed)"
    assert describe_estimate("p", -1) == "unknown (not analyzed)"
    assert describe_estimate("r", 0) == "0"
    assert describe_estimate("m", 1_234_567) == "1,234,567"
    assert describe_estimate("v", -1) == "n/a (view)"
