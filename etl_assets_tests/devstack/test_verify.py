import datetime as dt
import decimal
import uuid

import pyarrow as pa

from etl_assets.devstack.verify import compare_rows, lake_rows, values_equal

UTC = dt.UTC


def test_identical_rows_compare_equal_on_shared_columns() -> None:
    ref = uuid.uuid4()
    source = [{"id": 1, "amount": decimal.Decimal("1.50"), "ref": ref, "doc": {"a": [1, None]}}]
    lake = lake_rows(
        pa.table(
            {
                "id": [1],
                "amount": pa.array([decimal.Decimal("1.50")], pa.decimal128(5, 2)),
                "ref": pa.array([ref.bytes], pa.uuid()),
                "doc": pa.array(['{"a": [1, null]}'], pa.json_(pa.string())),
                "extra": ["added by a transform"],
            }
        ),
        order_by=("id",),
    )
    comparison = compare_rows(source, lake)
    assert comparison.equal, comparison.describe()
    assert comparison.compared_columns == ("id", "amount", "ref", "doc")
    assert comparison.only_in_lake == ("extra",)
    assert comparison.describe() == "equal: 1 row x 4 cols (the transform adds extra)"


def test_differences_are_found_and_named() -> None:
    comparison = compare_rows([{"id": 1, "v": "a"}], [{"id": 1, "v": "b"}])
    assert not comparison.equal
    assert comparison.describe() == "MISMATCH: row 0 column v: source 'a', lake 'b'"
    assert not compare_rows([{"id": 1}], []).equal


def test_equality_is_exact() -> None:
    assert not values_equal(decimal.Decimal("1.5"), decimal.Decimal("1.50"))
    assert not values_equal(dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 1, tzinfo=UTC))
    assert not values_equal(1, 1.0)
    assert not values_equal(True, 1)
    assert values_equal(float("nan"), float("nan"))
    assert values_equal([None, "a"], [None, "a"])
    assert values_equal(memoryview(b"ab"), b"ab")
    assert values_equal(None, None)
