"""Refusing values no Parquet type holds, naming the column, the hazard and the row."""

import pyarrow as pa
import pytest

from etl_assets.lib.errors import UnrepresentableValueError
from etl_assets.lib.postgres.types import HAZARD_ALIAS, plan_table
from etl_assets.lib.postgres.values import refuse_unrepresentable
from etl_assets.lib.table.spec import ColumnSpec
from etl_assets_tests.lib.postgres.test_types import LIVE, RELATION, TYPES
from etl_assets_tests.support import spec


def test_a_refusal_names_the_hazard_the_row_holds_and_only_it() -> None:
    declared = (ColumnSpec("id"), ColumnSpec("placed_at"), ColumnSpec("note"))
    plan = plan_table(
        RELATION, LIVE, TYPES, declared, "placed_at", primary_key=["id"]
    )  # placed_at: infinity (hazard 0), or after 294247-01-10 04:00:54.775807 (hazard 1)
    table = spec(schema="sales", table="orders", partition_column="placed_at", columns=declared)
    batch = pa.record_batch(
        [
            pa.array([7, 8], pa.int64()),
            pa.array([0, 0], pa.timestamp("us", "UTC")),
            pa.array(["a", "b"]),
            pa.array([None, 1], pa.int32()),
        ],
        names=["id", "placed_at", "note", HAZARD_ALIAS],
    )
    with pytest.raises(UnrepresentableValueError) as raised:
        refuse_unrepresentable(batch, plan, table)
    assert str(raised.value).startswith(
        "sales.orders.placed_at (timestamp with time zone): the row with primary key (id=8)"
        " holds a time after 294247-01-10 04:00:54.775807+00, which no Parquet type holds"
        " exactly. Declare the column with `as: text`"
    )
    refuse_unrepresentable(batch.slice(0, 1), plan, table)  # no flag: nothing to refuse
