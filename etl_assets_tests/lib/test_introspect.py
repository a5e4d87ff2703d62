import yaml

from etl_assets.lib.introspect import ColumnReport, TableReport, yaml_entry, yaml_scalar
from etl_assets.lib.sql import Relation
from etl_assets.lib.windows import Grain


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
