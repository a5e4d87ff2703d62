import pytest

from etl_assets.lib.table.contract import LiveColumn, canonical_type, contract_differences
from etl_assets.lib.table.spec import ColumnChecks, ColumnSpec, Representation


@pytest.mark.parametrize(
    ("declared", "canonical"),
    [
        ("int8", "bigint"),
        ("INT", "integer"),
        ("timestamptz", "timestamp with time zone"),
        ("timestamp", "timestamp without time zone"),
        ("timestamp(3) with time zone", "timestamp(3) with time zone"),
        ("timestamptz(3)", "timestamp(3) with time zone"),
        ("varchar(20)", "character varying(20)"),
        ("char(3)", "character(3)"),
        ("decimal(12, 2)", "numeric(12,2)"),
        ("text []", "text[]"),
        ("int4[]", "integer[]"),
        ("sales.order_status", "sales.order_status"),
        ("double   precision", "double precision"),
    ],
)
def test_declared_types_compare_in_format_type_spelling(declared: str, canonical: str) -> None:
    assert canonical_type(declared) == canonical


LIVE = [
    LiveColumn("id", "bigint", nullable=False),
    LiveColumn("total", "numeric(12,2)", nullable=False),
    LiveColumn("note", "text", nullable=True),
    LiveColumn("coupon_code", "text", nullable=True),
]


def test_a_matching_contract_has_no_differences_and_ignores_added_columns() -> None:
    declared = [
        ColumnSpec("id", "int8", nullable=False),
        ColumnSpec("total", "numeric(12,2)", nullable=False),
        ColumnSpec("note"),
    ]
    assert contract_differences(declared, LIVE) == []


def test_every_kind_of_drift_is_named() -> None:
    declared = [
        ColumnSpec("id", "integer", nullable=False),
        ColumnSpec("total", "numeric(12,2)", nullable=True),
        ColumnSpec("coupon", "text"),
    ]
    assert contract_differences(declared, LIVE) == [
        "id: declared type integer, live type bigint",
        "total: declared nullable, live NOT NULL",
        "coupon: declared, but the table has no such column "
        "(renamed? undeclared columns: note, coupon_code)",
    ]


def test_a_column_declared_in_yaml_is_the_column_declared_in_python() -> None:
    column = ColumnSpec(
        "amount",
        "money",
        nullable=True,
        representation=Representation.TEXT,
        checks=ColumnChecks(not_null=True, accepted_values=("a", "b"), min=0, max=9, blocking=True),
    )
    declared = {
        "name": "amount",
        "type": "money",
        "nullable": True,
        "as": "text",
        "checks": {"not_null": True, "accepted_values": ["a", "b"], "min": 0, "max": 9,
                   "blocking": True},
    }  # fmt: skip
    assert ColumnSpec.model_validate(declared) == column
    assert column.checks.rules == ["not_null", "accepted_values", "min", "max"]
    assert ColumnSpec.model_validate({"name": "bare"}) == ColumnSpec("bare")
