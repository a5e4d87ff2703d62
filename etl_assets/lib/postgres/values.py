"""The driver's Arrow batches as the plan promises: values refused by name, columns converted."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from etl_assets.lib.arrow_types import (
    conform_array,
    decimal_from_scaled,
    struct_from_fields,
)
from etl_assets.lib.errors import UnrepresentableValueError
from etl_assets.lib.postgres.types import (
    HAZARD_ALIAS,
    ReadKind,
    TablePlan,
)
from etl_assets.lib.table.checks import (
    describe_key,
)
from etl_assets.lib.table.spec import TableSpec


def refuse_unrepresentable(batch: pa.RecordBatch, plan: TablePlan, spec: TableSpec) -> None:
    """Raise, naming the column, its type and the row's key, if a row holds such a value."""
    flags = batch.column(HAZARD_ALIAS)
    if flags.null_count == len(flags):
        return
    index = int(pc.index(pc.is_valid(flags), True).as_py())
    # The flag is the position of the hazard found in the plan (see TablePlan.select_list).
    column, hazard = plan.hazards[int(flags[index].as_py())]
    names = batch.schema.names
    key = [batch.column(k)[index].as_py() if k in names else "?" for k in spec.primary_key]
    raise UnrepresentableValueError(
        f"{spec.qualified_name}.{column.name} ({column.declared_type}): the row with "
        f"primary key {describe_key(spec.primary_key, key)} holds {hazard.values}, which no "
        "Parquet type holds exactly. Declare the column with `as: text` to keep Postgres' text "
        "form of every value, or fix the row at the source"
    )


def to_plan(batch: pa.RecordBatch, plan: TablePlan) -> pa.RecordBatch:
    """The driver's batch as the plan's schema: one array per declared column."""
    arrays: list[Any] = []
    position = 0
    for column in plan.columns:
        width = len(column.selects)
        selected = [batch.column(position + i) for i in range(width)]
        position += width
        if column.kind is ReadKind.COMPOSITE:
            assert isinstance(column.arrow_type, pa.StructType)
            frame_struct = column.frame_type
            assert isinstance(frame_struct, pa.StructType)
            arrays.append(struct_from_fields(selected[:-1], selected[-1], frame_struct))
        elif column.kind is ReadKind.SCALED_DECIMAL:
            assert isinstance(column.arrow_type, pa.Decimal128Type)
            arrays.append(decimal_from_scaled(selected[0], column.arrow_type))
        else:
            arrays.append(conform_array(selected[0], column.frame_type))
    return pa.RecordBatch.from_arrays(arrays, schema=plan.frame_schema)
