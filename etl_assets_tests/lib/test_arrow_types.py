import decimal
import struct
import uuid

import polars as pl
import pyarrow as pa
import pytest

from etl_assets.lib.arrow_types import (
    INTERVAL_TYPE,
    PlannedSchema,
    conform_array,
    conform_batch,
    decimal_from_scaled,
    output_schema,
    polars_schema,
)


def test_numeric_text_becomes_an_exact_decimal() -> None:
    text = pa.array(["1.50", None, "-99999999.99"])
    result = conform_array(text, pa.decimal128(10, 2))
    assert result.to_pylist() == [decimal.Decimal("1.50"), None, decimal.Decimal("-99999999.99")]


def test_a_value_that_does_not_fit_raises_instead_of_rounding() -> None:
    with pytest.raises(pa.ArrowInvalid):
        conform_array(pa.array(["1.234"]), pa.decimal128(10, 2))


def test_bytes_become_uuid_and_back() -> None:
    value = uuid.uuid4()
    as_uuid = conform_array(pa.array([value.bytes, None], pa.large_binary()), pa.uuid())
    assert as_uuid.type == pa.uuid()
    assert as_uuid.to_pylist() == [value, None]
    assert conform_array(as_uuid, pa.binary(16)).to_pylist() == [value.bytes, None]


def test_batches_take_the_plans_types_by_position() -> None:
    schema = pa.schema([("a", pa.decimal128(5, 1)), ("b", pa.string())])
    batch = pa.record_batch([pa.array(["1.5"]), pa.array(["x"])], names=["a", "b"])
    assert conform_batch(batch, schema).schema == schema


def test_columns_a_transform_passed_through_get_their_planned_types_back() -> None:
    planned = pa.schema([("ref", pa.uuid()), ("payload", pa.json_(pa.string())), ("n", pa.int32())])
    frame = pl.DataFrame(schema=polars_schema(planned)).with_columns(
        pl.col("n").cast(pl.Int64), pl.lit("x").alias("added")
    )
    schema = output_schema(frame.schema, PlannedSchema(lake=planned, frames=planned))
    assert schema.field("ref").type == pa.uuid()
    assert schema.field("payload").type == pa.json_(pa.string())
    assert schema.field("n").type == pa.int64()  # retyped by the transform: Polars' type wins
    assert schema.field("added").type == pa.large_string()


def test_wide_decimals_travel_as_text_and_are_written_as_decimal256() -> None:
    lake = pa.schema([("n", pa.decimal256(50, 5))])
    frames = pa.schema([("n", pa.string())])
    frame = pl.DataFrame({"n": ["123456789012345678901234567890123456789012345.12345"]})
    schema = output_schema(frame.schema, PlannedSchema(lake=lake, frames=frames))
    assert schema.field("n").type == pa.decimal256(50, 5)


def wire(microseconds: int, days: int, months: int) -> bytes:
    """An interval as Postgres' `interval_send` writes it."""
    return struct.pack(">qii", microseconds, days, months)


def test_intervals_inside_lists_and_structs_become_structs_even_in_a_slice() -> None:
    day, month = wire(0, 1, 0), wire(2, 0, -1)
    lists = pa.array([[day], None, [month, None], []], pa.list_(pa.binary())).slice(1)
    converted = conform_array(lists, pa.list_(INTERVAL_TYPE))
    assert converted.to_pylist() == [
        None,
        [{"months": -1, "days": 0, "microseconds": 2}, None],
        [],
    ]
    records = pa.StructArray.from_arrays(
        [pa.array([day, month], pa.binary()), pa.array(["a", "b"])],
        names=["length", "label"],
        mask=pa.array([False, True]),
    )
    target = pa.struct([pa.field("length", INTERVAL_TYPE), pa.field("label", pa.string())])
    assert conform_array(records, target).to_pylist() == [
        {"length": {"months": 0, "days": 1, "microseconds": 0}, "label": "a"},
        None,
    ]


def test_every_interval_postgres_holds_is_kept_exactly() -> None:
    # Time parts far past what nanoseconds in 64 bits hold (about 2,562,047 hours).
    extremes = [
        (2**63 - 1, 2**31 - 1, 2**31 - 1),
        (-(2**63), -(2**31), -(2**31)),
        (3_000_000 * 3_600_000_000, 0, 0),
        (-1, 1, -1),
    ]
    values = pa.array([wire(*e) for e in extremes] + [None], pa.binary())
    assert conform_array(values, INTERVAL_TYPE).to_pylist() == [
        {"months": m, "days": d, "microseconds": us} for us, d, m in extremes
    ] + [None]
    assert conform_array(values.slice(2, 2), INTERVAL_TYPE).to_pylist()[0] == {
        "months": 0,
        "days": 0,
        "microseconds": 10_800_000_000_000_000,
    }
    with pytest.raises(pa.ArrowInvalid):
        conform_array(pa.array([b"\x00" * 15], pa.binary()), INTERVAL_TYPE)


def test_scaled_integers_become_the_exact_decimals_they_stand_for() -> None:
    scaled = pa.array([999_999_999_999, -999_999_999_999, None, 0, -1, 5], pa.int64())
    decimals = decimal_from_scaled(scaled, pa.decimal128(12, 2))
    assert decimals.type == pa.decimal128(12, 2)
    assert decimals.to_pylist() == [
        decimal.Decimal("9999999999.99"),
        decimal.Decimal("-9999999999.99"),
        None,
        decimal.Decimal("0.00"),
        decimal.Decimal("-0.01"),
        decimal.Decimal("0.05"),
    ]
    assert decimal_from_scaled(scaled.slice(1, 2), pa.decimal128(12, 2)).to_pylist() == [
        decimal.Decimal("-9999999999.99"),
        None,
    ]
    widest = pa.array([10**18 - 1, -(10**18 - 1)], pa.int64())
    assert decimal_from_scaled(widest, pa.decimal128(18, 18)).to_pylist() == [
        decimal.Decimal("0.999999999999999999"),
        decimal.Decimal("-0.999999999999999999"),
    ]
    assert decimal_from_scaled(pa.array([None], pa.int64()), pa.decimal128(4, 1)).null_count == 1


@pytest.mark.parametrize("value", [10**12, -(10**12)])
def test_a_scaled_integer_with_more_digits_than_the_decimal_holds_is_refused(value: int) -> None:
    with pytest.raises(ValueError, match=r"more than 12 digits for decimal128\(12, 2\)"):
        decimal_from_scaled(pa.array([1, value], pa.int64()), pa.decimal128(12, 2))
