"""Conversions between the Arrow types a reader delivers and the types the plan promises."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias, cast

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

# pyarrow's classes are generic only in its type stubs, so the aliases stay strings.
AnyArray: TypeAlias = "pa.Array[Any]"
AnyField: TypeAlias = "pa.Field[Any]"

INTERVAL_TYPE = pa.struct(
    [
        pa.field("months", pa.int32()),
        pa.field("days", pa.int32()),
        pa.field("microseconds", pa.int64()),
    ]
)
"""Postgres keeps an interval as months, days and microseconds; so does the lake."""


def conform_array(array: AnyArray, target: pa.DataType) -> AnyArray:
    """`array` as type `target`; raises (never truncates or rounds) when a value does not fit."""
    source_type: pa.DataType = array.type
    if source_type == target:
        return array
    if isinstance(array, pa.ExtensionArray) and not isinstance(target, pa.BaseExtensionType):
        storage: AnyArray = array.storage
        if storage.type == target:
            return storage
        array = storage
    if isinstance(target, pa.BaseExtensionType):
        converted = conform_array(array, target.storage_type)
        return pa.ExtensionArray.from_storage(target, converted)
    if _holds_intervals(source_type, target):
        return _conform_intervals(array, target)
    return pc.cast(array, target, safe=True)


def decimal_from_scaled(array: AnyArray, target: pa.Decimal128Type) -> AnyArray:
    """int64 values `v` as the decimals `v / 10^scale` of `target`, exactly.

    Decimal128 stores the unscaled integer: Arrow's exact cast to a scale-0 decimal wide
    enough for any int64, viewed with the target's scale, is that integer. Raises if a value
    has more digits than the target's precision.
    """
    if target.precision < _INT64_DIGITS:
        extremes = pc.min_max(array)
        low, high = extremes["min"].as_py(), extremes["max"].as_py()
        if low is not None and max(-low, high) >= 10**target.precision:
            raise ValueError(f"a value has more than {target.precision} digits for {target}")
    return pc.cast(array, pa.decimal128(_INT64_DIGITS, 0), safe=True).view(target)


_INT64_DIGITS = 19
"""Arrow casts int64 only to decimals of at least 19 digits."""


def _conform_intervals(array: AnyArray, target: pa.DataType) -> AnyArray:
    """Intervals in Postgres' binary form as structs, also inside lists and structs.

    Arrow's cast cannot turn bytes into a struct at any depth, so each container is rebuilt
    around converted children.
    """
    if target == INTERVAL_TYPE and pa.types.is_binary(array.type):
        return interval_struct(array)
    rebuilt = rebuild_container(array, target, conform_array)
    if rebuilt is None:
        raise TypeError(f"cannot convert {array.type} to {target}")
    return rebuilt


def rebuild_container(
    array: AnyArray, target: pa.DataType, convert: Callable[[AnyArray, pa.DataType], AnyArray]
) -> AnyArray | None:
    """A list (or large list) or struct `array` as `target`, its children put through `convert`.

    The container keeps its own validity; None when `array` and `target` are not both lists or
    both structs.
    """
    if isinstance(array, pa.ListArray | pa.LargeListArray) and isinstance(target, pa.ListType):
        # A sliced list's offsets start past 0: rebase them onto the values they cover.
        offsets: AnyArray = array.offsets
        first: int = offsets[0].as_py()
        last: int = offsets[-1].as_py()
        covered: AnyArray = array.values
        values = convert(covered.slice(first, last - first), target.value_type)
        rebased = pc.cast(pc.subtract(offsets, first), pa.int32(), safe=True)
        return pa.ListArray.from_arrays(
            cast("pa.Int32Array", rebased), values, type=target, mask=array.is_null()
        )
    if isinstance(array, pa.StructArray) and isinstance(target, pa.StructType):
        children = [convert(child, target.field(i).type) for i, child in enumerate(array.flatten())]
        return pa.StructArray.from_arrays(
            children,
            fields=[target.field(i) for i in range(target.num_fields)],
            mask=array.is_null(),
        )
    return None


def _holds_intervals(source: pa.DataType, target: pa.DataType) -> bool:
    """Whether `target` has an interval where `source` has its binary form."""
    if target == INTERVAL_TYPE:
        return pa.types.is_binary(source)
    children = child_types(source, target)
    return children is not None and any(_holds_intervals(s, t) for s, t in children)


def child_types(
    source: pa.DataType, target: pa.DataType
) -> list[tuple[pa.DataType, pa.DataType]] | None:
    """The pairs of child types of two lists, or of two structs with as many fields; else None."""
    if isinstance(source, pa.ListType) and isinstance(target, pa.ListType):
        return [(source.value_type, target.value_type)]
    if (
        isinstance(source, pa.StructType)
        and isinstance(target, pa.StructType)
        and source.num_fields == target.num_fields
    ):
        return [(source.field(i).type, target.field(i).type) for i in range(source.num_fields)]
    return None


def conform_batch(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """The batch with every column converted to its type in `schema` (matched by position)."""
    arrays = [conform_array(batch.column(i), schema.field(i).type) for i in range(len(schema))]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


# `interval_send`: the time part in microseconds, then days, then months, big-endian.
_INTERVAL_WIRE = np.dtype([("microseconds", ">i8"), ("days", ">i4"), ("months", ">i4")])


def interval_struct(array: AnyArray) -> AnyArray:
    """Intervals in Postgres' binary form (`interval_send`) as a struct `INTERVAL_TYPE`.

    The three fields are Postgres' own, so every interval Postgres holds is kept exactly.
    """
    fixed = pc.cast(array, pa.binary(_INTERVAL_WIRE.itemsize))  # refuses any other length
    data_buffer = fixed.buffers()[1]
    assert data_buffer is not None
    values = np.frombuffer(
        memoryview(data_buffer), dtype=_INTERVAL_WIRE, count=len(fixed) + fixed.offset
    )[fixed.offset :]
    children = [
        pa.array(values["months"].astype(np.int32), pa.int32()),
        pa.array(values["days"].astype(np.int32), pa.int32()),
        pa.array(values["microseconds"].astype(np.int64), pa.int64()),
    ]
    return pa.StructArray.from_arrays(children, fields=list(INTERVAL_TYPE), mask=array.is_null())


def struct_from_fields(
    fields: list[AnyArray], validity: AnyArray, target: pa.StructType
) -> AnyArray:
    """A struct array from one array per field and a boolean validity array."""
    converted = [conform_array(array, target.field(i).type) for i, array in enumerate(fields)]
    return pa.StructArray.from_arrays(
        converted,
        fields=[target.field(i) for i in range(target.num_fields)],
        mask=pc.equal(validity.fill_null(False), pa.scalar(False)),
    )


def conform_table(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The table with every column converted to its type in `schema` (matched by name)."""
    columns = [
        conform_array(table.column(name).combine_chunks(), schema.field(name).type)
        for name in schema.names
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def frame_from_arrow(data: pa.RecordBatch | pa.Table) -> pl.DataFrame:
    """A Polars DataFrame over Arrow data (zero-copy where Polars can)."""
    # Polars' annotation of from_arrow names pyarrow generics without parameters.
    frame = pl.from_arrow(data)
    assert isinstance(frame, pl.DataFrame)
    return frame


def polars_schema(schema: pa.Schema) -> pl.Schema:
    """The Polars schema of frames built from batches of `schema`."""
    return frame_from_arrow(schema.empty_table()).schema


@dataclass(frozen=True)
class PlannedSchema:
    """What a plan promises: the lake's Arrow types, and the types frames carry them in."""

    lake: pa.Schema
    frames: pa.Schema

    @classmethod
    def none(cls) -> PlannedSchema:
        """No plan: every column keeps the type Polars gives it."""
        return cls(pa.schema([]), pa.schema([]))


def output_schema(frame_schema: pl.Schema, planned: PlannedSchema) -> pa.Schema:
    """The Arrow schema to write for a frame whose columns may come from a plan.

    A column a transform passed through unchanged gets its planned type back (a uuid stays a
    Parquet UUID, not bytes; a wide decimal carried as text is decimal256 again); any other
    column keeps the type Polars gives it.
    """
    natural = pl.DataFrame(schema=frame_schema).to_arrow().schema
    lake = planned.lake
    lake_by_name: Mapping[str, AnyField] = {
        lake.field(i).name: lake.field(i) for i in range(len(lake))
    }
    planned_polars = polars_schema(planned.frames) if len(planned.frames) else pl.Schema()
    fields: list[AnyField] = []
    for name in natural.names:
        plan_field = lake_by_name.get(name)
        if plan_field is not None and planned_polars.get(name) == frame_schema[name]:
            fields.append(plan_field)
        else:
            fields.append(natural.field(name))
    return pa.schema(fields)
