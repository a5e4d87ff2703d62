import pyarrow as pa
import pytest

from etl_assets.lib.pg_types import (
    CatalogColumn,
    CatalogType,
    ContractError,
    Planner,
    UnsupportedColumnError,
    numeric_precision_scale,
    plan_table,
)
from etl_assets.lib.sql import BoundKind, Relation

RELATION = Relation("sales", "orders")


def base(oid: int, name: str, category: str = "U", element: int = 0) -> CatalogType:
    return CatalogType(oid, name, "b", category, element, 0, -1)


TYPES = {
    t.oid: t
    for t in [
        base(20, "int8", "N"),
        base(23, "int4", "N"),
        base(25, "text", "S"),
        base(1700, "numeric", "N"),
        base(1184, "timestamptz", "D"),
        base(1114, "timestamp", "D"),
        base(1082, "date", "D"),
        base(2950, "uuid"),
        base(3802, "jsonb"),
        base(1009, "_text", "A", element=25),
        base(1007, "_int4", "A", element=23),
        base(790, "money", "N"),
        base(869, "inet", "I"),
        CatalogType(90001, "order_status", "e", "E", 0, 0, -1, ("placed", "paid")),
        CatalogType(90002, "_order_status", "b", "A", 90001, 0, -1),
        CatalogType(90003, "positive_money", "d", "N", 0, 1700, (12 << 16 | 2) + 4),
        CatalogType(90004, "amount_domain", "d", "N", 0, 90003, -1),
    ]
}


def column(name: str, oid: int, typmod: int = -1, not_null: bool = False) -> CatalogColumn:
    return CatalogColumn(name, 1, f"type{oid}", oid, typmod, not_null)


@pytest.mark.parametrize(
    ("typmod", "expected"),
    [
        (-1, None),
        ((12 << 16 | 2) + 4, (12, 2)),
        ((38 << 16 | 0) + 4, (38, 0)),
        ((5 << 16 | 0x7FE) + 4, (5, -2)),
    ],
)
def test_numeric_typmods_decode(typmod: int, expected: tuple[int, int] | None) -> None:
    assert numeric_precision_scale(typmod) == expected


@pytest.mark.parametrize(
    ("oid", "typmod", "arrow_type"),
    [
        (20, -1, pa.int64()),
        (25, -1, pa.string()),
        (1700, (12 << 16 | 2) + 4, pa.decimal128(12, 2)),
        (1700, (50 << 16 | 10) + 4, pa.decimal256(50, 10)),
        (1700, -1, pa.string()),
        (1184, -1, pa.timestamp("us", tz="UTC")),
        (1114, -1, pa.timestamp("us")),
        (2950, -1, pa.uuid()),
        (3802, -1, pa.json_(pa.string())),
        (1009, -1, pa.list_(pa.string())),
        (90001, -1, pa.string()),
        (90002, -1, pa.list_(pa.string())),
        (90003, -1, pa.decimal128(12, 2)),
        (90004, -1, pa.decimal128(12, 2)),
    ],
)
def test_columns_map_to_exact_arrow_types(oid: int, typmod: int, arrow_type: pa.DataType) -> None:
    plan = Planner(RELATION, TYPES).plan_column(column("c", oid, typmod))
    assert plan.arrow_type == arrow_type


def test_enums_are_read_as_text_and_keep_their_labels() -> None:
    planner = Planner(RELATION, TYPES)
    plan = planner.plan_column(column("status", 90001))
    assert plan.select.as_string() == '"status"::text AS "status"'
    assert plan.enum_labels == ("placed", "paid")
    array_plan = planner.plan_column(column("history", 90002))
    assert array_plan.select.as_string() == '"history"::text[] AS "history"'
    assert array_plan.enum_labels == ("placed", "paid")


@pytest.mark.parametrize("oid", [790, 869])
def test_types_without_an_exact_mapping_are_refused_by_name(oid: int) -> None:
    with pytest.raises(UnsupportedColumnError, match=r"sales\.orders\.odd has type type\d+"):
        Planner(RELATION, TYPES).plan_column(column("odd", oid))


def test_a_plan_keeps_declared_order_and_reports_undeclared_columns() -> None:
    live = [
        CatalogColumn("id", 1, "bigint", 20, -1, True),
        CatalogColumn("placed_at", 2, "timestamp with time zone", 1184, -1, True),
        CatalogColumn("note", 3, "text", 25, -1, False),
        CatalogColumn("secret", 4, "text", 25, -1, False),
    ]
    plan = plan_table(RELATION, live, TYPES, ["note", "id", "placed_at"], "placed_at")
    assert [c.name for c in plan.columns] == ["note", "id", "placed_at"]
    assert plan.undeclared_columns == ("secret",)
    assert plan.partition_bound is BoundKind.TIMESTAMPTZ
    assert plan.arrow_schema.field("id").nullable is False
    assert plan.arrow_schema.field("note").nullable is True


def test_missing_tables_columns_and_bad_partition_columns_are_contract_errors() -> None:
    live = [CatalogColumn("id", 1, "bigint", 20, -1, True)]
    with pytest.raises(ContractError, match="does not exist or is not visible"):
        plan_table(RELATION, [], TYPES, ["id"], "id")
    with pytest.raises(ContractError, match=r"has no column\(s\) ghost; its columns are id"):
        plan_table(RELATION, live, TYPES, ["id", "ghost"], "id")
    with pytest.raises(ContractError, match="cannot hold a time window"):
        plan_table(RELATION, live, TYPES, ["id"], "id")
