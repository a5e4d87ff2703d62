import datetime as dt

import pyarrow as pa
import pytest

from etl_assets.lib.errors import ContractError, UnsupportedColumnError
from etl_assets.lib.postgres.catalog import CatalogColumn, CatalogType, CompositeField
from etl_assets.lib.postgres.sql import BoundKind, Relation, render
from etl_assets.lib.postgres.types import (
    HAZARD_ALIAS,
    INTERVAL_TYPE,
    Planner,
    ReadKind,
    hazard_flag,
    numeric_precision_scale,
    plan_table,
)
from etl_assets.lib.table.spec import ColumnSpec, Representation

RELATION = Relation("sales", "orders")
NUMERIC_12_2 = (12 << 16 | 2) + 4


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
        base(1083, "time", "D"),
        base(1266, "timetz", "D"),
        base(1186, "interval", "T"),
        base(2950, "uuid"),
        base(3802, "jsonb"),
        base(1009, "_text", "A", element=25),
        base(1007, "_int4", "A", element=23),
        base(1182, "_date", "A", element=1082),
        base(1115, "_timestamp", "A", element=1114),
        base(1187, "_interval", "A", element=1186),
        base(790, "money", "N"),
        base(869, "inet", "I"),
        CatalogType(90001, "order_status", "e", "E", 0, 0, -1, ("placed", "paid")),
        CatalogType(90002, "_order_status", "b", "A", 90001, 0, -1),
        CatalogType(90003, "positive_money", "d", "N", 0, 1700, NUMERIC_12_2),
        CatalogType(90004, "amount_domain", "d", "N", 0, 90003, -1),
        CatalogType(
            90005,
            "address",
            "c",
            "C",
            0,
            0,
            -1,
            fields=(CompositeField("street", 25, -1), CompositeField("since", 1082, -1)),
        ),
        CatalogType(90006, "_address", "b", "A", 90005, 0, -1),
        CatalogType(90007, "int4range", "r", "R", 0, 0, -1),
    ]
}


def column(name: str, oid: int, typmod: int = -1, not_null: bool = False) -> CatalogColumn:
    return CatalogColumn(name, 1, f"type{oid}", oid, typmod, not_null)


def plan(oid: int, typmod: int = -1, spec: ColumnSpec | None = None):
    return Planner(RELATION, TYPES).plan_column(column("c", oid, typmod), spec)


@pytest.mark.parametrize(
    ("typmod", "expected"),
    [
        (-1, None),
        (NUMERIC_12_2, (12, 2)),
        ((38 << 16 | 0) + 4, (38, 0)),
        ((5 << 16 | 0x7FE) + 4, (5, -2)),
    ],
)
def test_numeric_typmods_decode(typmod: int, expected: tuple[int, int] | None) -> None:
    assert numeric_precision_scale(typmod) == expected


INFINITE = "infinity or -infinity"
LATE = "a time after 294247-01-10 04:00:54.775807"
LATE_UTC = "a time after 294247-01-10 04:00:54.775807+00"
SHAPE = "a multi-dimensional array, or one not indexed from 1"


@pytest.mark.parametrize(
    ("oid", "typmod", "arrow_type", "hazards"),
    [
        (20, -1, pa.int64(), []),
        (25, -1, pa.string(), []),
        (1700, NUMERIC_12_2, pa.decimal128(12, 2), ["NaN"]),
        (1700, (50 << 16 | 10) + 4, pa.decimal256(50, 10), ["NaN"]),
        (1700, -1, pa.string(), []),
        (1184, -1, pa.timestamp("us", tz="UTC"), [INFINITE, LATE_UTC]),
        (1114, -1, pa.timestamp("us"), [INFINITE, LATE]),
        (1082, -1, pa.date32(), [INFINITE]),
        (1083, -1, pa.time64("us"), ["24:00:00"]),
        (1266, -1, pa.string(), []),
        (1186, -1, INTERVAL_TYPE, [INFINITE]),
        (2950, -1, pa.uuid(), []),
        (3802, -1, pa.json_(pa.string()), []),
        (1009, -1, pa.list_(pa.string()), [SHAPE]),
        (1182, -1, pa.list_(pa.date32()), [SHAPE, f"an element that is {INFINITE}"]),
        (90001, -1, pa.string(), []),
        (90002, -1, pa.list_(pa.string()), [SHAPE]),
        (90003, -1, pa.decimal128(12, 2), ["NaN"]),
        (90004, -1, pa.decimal128(12, 2), ["NaN"]),
    ],
)
def test_columns_map_to_exact_arrow_types_and_know_their_unrepresentable_values(
    oid: int, typmod: int, arrow_type: pa.DataType, hazards: list[str]
) -> None:
    planned = plan(oid, typmod)
    assert planned.arrow_type == arrow_type
    assert [h.values for h in planned.hazards] == hazards


def test_timestamps_past_int64_microseconds_are_hazards_at_the_last_one_that_fits() -> None:
    # 2^63 - 1 microseconds after 1970-01-01 is 294247-01-10 04:00:54.775807: the Gregorian
    # calendar repeats every 400 years (146097 days), so 735 cycles earlier it is 247-01-10.
    cycles = 735 * 146_097 * 86_400 * 10**6
    latest = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=2**63 - 1 - cycles)
    assert latest == dt.datetime(294_247 - 735 * 400, 1, 10, 4, 0, 54, 775_807)
    assert [render(h.predicate) for h in plan(1114).hazards] == [
        'NOT isfinite("c")',
        "\"c\" > '294247-01-10 04:00:54.775807'::timestamp",
    ]
    assert render(plan(1184).hazards[1].predicate) == (
        "\"c\" > '294247-01-10 04:00:54.775807+00'::timestamptz"
    )


def test_unconstrained_numeric_and_timetz_keep_postgres_text() -> None:
    assert render(plan(1700).selects[0]) == '("c")::text AS "c"'
    assert render(plan(1266).selects[0]) == '("c")::text AS "c"'


def numeric(precision: int, scale: int) -> int:
    return (precision << 16 | scale) + 4


def test_numerics_of_up_to_18_digits_are_read_as_scaled_int8() -> None:
    amount = plan(1700, NUMERIC_12_2)
    assert amount.kind is ReadKind.SCALED_DECIMAL
    assert render(amount.selects[0]) == '(NULLIF("c", \'NaN\') * 100)::int8 AS "c"'
    widest = plan(1700, numeric(18, 18))
    assert (widest.kind, widest.arrow_type) == (ReadKind.SCALED_DECIMAL, pa.decimal128(18, 18))
    assert render(widest.selects[0]) == (
        '(NULLIF("c", \'NaN\') * 1000000000000000000)::int8 AS "c"'
    )
    assert render(plan(1700, numeric(18, 0)).selects[0]) == (
        '(NULLIF("c", \'NaN\') * 1)::int8 AS "c"'
    )
    assert plan(90004).kind is ReadKind.SCALED_DECIMAL  # through two domains


def test_wider_numerics_and_those_in_arrays_and_composites_are_read_as_they_are() -> None:
    wide = plan(1700, numeric(19, 2))
    assert (wide.kind, wide.arrow_type) == (ReadKind.DIRECT, pa.decimal128(19, 2))
    assert render(wide.selects[0]) == '"c" AS "c"'
    types = {
        **TYPES,
        1231: base(1231, "_numeric", "A", element=1700),
        90008: CatalogType(
            90008, "priced", "c", "C", 0, 0, -1, fields=(CompositeField("p", 90003, -1),)
        ),
    }
    planner = Planner(RELATION, types)
    in_array = planner.plan_column(column("c", 1231, NUMERIC_12_2))
    assert (in_array.kind, in_array.arrow_type) == (ReadKind.DIRECT, pa.list_(pa.decimal128(12, 2)))
    assert render(in_array.selects[0]) == '"c" AS "c"'
    in_composite = planner.plan_column(column("c", 90008))
    assert in_composite.kind is ReadKind.COMPOSITE
    assert render(in_composite.selects[0]) == '("c")."p" AS "__etl_assets_c.0"'


def test_intervals_are_read_in_postgres_binary_form_also_in_arrays() -> None:
    interval = plan(1186)
    assert interval.kind is ReadKind.INTERVAL
    assert render(interval.selects[0]) == 'interval_send("c") AS "c"'
    intervals = plan(1187)
    assert intervals.arrow_type == pa.list_(INTERVAL_TYPE)
    assert render(intervals.selects[0]) == (
        'CASE WHEN "c" IS NULL THEN NULL ELSE ARRAY(SELECT interval_send(u.v) FROM unnest("c")'
        ' WITH ORDINALITY AS u(v, n) ORDER BY u.n) END AS "c"'
    )


def test_enums_are_read_as_text_and_keep_their_labels() -> None:
    status = plan(90001)
    assert render(status.selects[0]) == '("c")::text AS "c"'
    assert status.enum_labels == ("placed", "paid")
    history = plan(90002)
    assert render(history.selects[0]) == '("c")::text[] AS "c"'
    assert history.enum_labels == ("placed", "paid")


def test_arrays_of_hazardous_elements_check_every_element() -> None:
    hazards = plan(1182).hazards
    assert [render(h.predicate) for h in hazards] == [
        '(array_ndims("c") > 1 OR array_lower("c", 1) <> 1)',
        "NOT isfinite(u.v)",
    ]
    assert render(hazard_flag(hazards)) == (
        'CASE WHEN (array_ndims("c") > 1 OR array_lower("c", 1) <> 1) THEN 0'
        ' WHEN EXISTS (SELECT 1 FROM unnest("c") AS u(v) WHERE (NOT isfinite(u.v))) THEN 1 END'
    )


def test_the_flag_names_the_hazard_found_and_tests_an_arrays_elements_in_one_pass() -> None:
    hazards = plan(1115).hazards  # timestamp[]
    assert [h.values for h in hazards] == [
        SHAPE,
        f"an element that is {INFINITE}",
        f"an element that is {LATE}",
    ]
    either = "(NOT isfinite(u.v)) OR (u.v > '294247-01-10 04:00:54.775807'::timestamp)"
    assert render(hazard_flag(hazards)) == (
        "CASE"
        ' WHEN (array_ndims("c") > 1 OR array_lower("c", 1) <> 1) THEN 0'
        f' WHEN EXISTS (SELECT 1 FROM unnest("c") AS u(v) WHERE {either})'
        " THEN (SELECT min(CASE WHEN NOT isfinite(u.v) THEN 1"
        " WHEN u.v > '294247-01-10 04:00:54.775807'::timestamp THEN 2 END)"
        ' FROM unnest("c") AS u(v))'
        " END"
    )


def test_a_composite_becomes_a_struct_read_field_by_field() -> None:
    address = plan(90005)
    assert address.kind is ReadKind.COMPOSITE
    assert address.arrow_type == pa.struct([("street", pa.string()), ("since", pa.date32())])
    assert [render(s) for s in address.selects] == [
        '("c")."street" AS "__etl_assets_c.0"',
        '("c")."since" AS "__etl_assets_c.1"',
        'num_nulls("c") = 0 AS "__etl_assets_c.valid"',
    ]
    assert [render(h.predicate) for h in address.hazards] == ['NOT isfinite(("c")."since")']
    assert [h.values for h in address.hazards] == [f"{INFINITE} in field since"]


@pytest.mark.parametrize("oid", [790, 869, 90006, 90007])
def test_types_without_an_exact_mapping_are_refused_with_the_way_out(oid: int) -> None:
    with pytest.raises(
        UnsupportedColumnError, match=r"sales\.orders\.c has type type\d+"
    ) as raised:
        plan(oid)
    assert "`as: text`" in str(raised.value)


@pytest.mark.parametrize("oid", [790, 869, 90006, 90007, 1184])
def test_as_text_reads_any_type_as_its_output_function_writes_it(oid: int) -> None:
    planned = plan(oid, spec=ColumnSpec("c", representation=Representation.TEXT))
    assert planned.arrow_type == pa.string()
    assert planned.hazards == ()
    assert render(planned.selects[0]) == (
        'CASE WHEN "c" IS DISTINCT FROM NULL THEN format(\'%s\', "c") END AS "c"'
    )


def test_reader_aliases_are_reserved() -> None:
    with pytest.raises(UnsupportedColumnError, match="reserved"):
        Planner(RELATION, TYPES).plan_column(column("__etl_assets_x", 20))


LIVE = [
    CatalogColumn("id", 1, "bigint", 20, -1, True),
    CatalogColumn("placed_at", 2, "timestamp with time zone", 1184, -1, True),
    CatalogColumn("note", 3, "text", 25, -1, False),
    CatalogColumn("secret", 4, "text", 25, -1, False),
]


def test_a_plan_keeps_declared_order_and_flags_every_hazard_in_one_column() -> None:
    declared = [
        ColumnSpec("note"),
        ColumnSpec("id", "bigint", nullable=False),
        ColumnSpec("placed_at"),
    ]
    table = plan_table(
        RELATION, LIVE, TYPES, declared, "placed_at", primary_key=["id"],
        unique_indexes=[("orders_pkey", ["id"])],
    )  # fmt: skip
    assert [c.name for c in table.columns] == ["note", "id", "placed_at"]
    assert table.undeclared_columns == ("secret",)
    assert table.partition_bound is BoundKind.TIMESTAMPTZ
    assert table.arrow_schema.field("id").nullable is False
    assert table.unique_index == "orders_pkey"
    assert table.primary_key_not_null
    assert render(table.select_list[-1]) == (
        'CASE WHEN NOT isfinite("placed_at") THEN 0'
        " WHEN \"placed_at\" > '294247-01-10 04:00:54.775807+00'::timestamptz THEN 1"
        f' END AS "{HAZARD_ALIAS}"'
    )
    assert [(c.name, h.values) for c, h in table.hazards] == [
        ("placed_at", INFINITE),
        ("placed_at", LATE_UTC),
    ]


def test_drift_and_missing_tables_are_contract_errors() -> None:
    with pytest.raises(ContractError, match="does not exist or is not visible"):
        plan_table(RELATION, [], TYPES, [ColumnSpec("id")], "placed_at")
    with pytest.raises(ContractError) as raised:
        plan_table(
            RELATION, LIVE, TYPES,
            [ColumnSpec("id", "integer"), ColumnSpec("colour"), ColumnSpec("note", nullable=False)],
            "placed_at",
        )  # fmt: skip
    assert str(raised.value).splitlines() == [
        "the live table sales.orders does not match its contract:",
        "  - id: declared type integer, live type bigint",
        "  - colour: declared, but the table has no such column "
        "(renamed? undeclared columns: placed_at, secret)",
        "  - note: declared NOT NULL, live nullable",
        "Update the table's `columns` in its defs.yaml (`etl-assets introspect` prints the "
        "live contract), or fix the table.",
    ]
    with pytest.raises(ContractError, match="cannot hold a time window"):
        plan_table(RELATION, LIVE, TYPES, [ColumnSpec("id")], "id")
