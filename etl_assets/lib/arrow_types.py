"""Conversions between the Arrow types a reader delivers and the types the plan promises."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

# pyarrow's classes are generic only in its type stubs, so the aliases stay strings.
AnyArray: TypeAlias = "pa.Array[Any]"
AnyField: TypeAlias = "pa.Field[Any]"


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
    return pc.cast(array, target, safe=True)


def conform_batch(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """The batch with every column converted to its type in `schema` (matched by position)."""
    arrays = [conform_array(batch.column(i), schema.field(i).type) for i in range(len(schema))]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


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
    frame = pl.from_arrow(data)  # pyright: ignore[reportUnknownMemberType]
    assert isinstance(frame, pl.DataFrame)
    return frame


def polars_schema(schema: pa.Schema) -> pl.Schema:
    """The Polars schema of frames built from batches of `schema`."""
    return frame_from_arrow(schema.empty_table()).schema


def output_schema(frame_schema: pl.Schema, planned: pa.Schema) -> pa.Schema:
    """The Arrow schema to write for a frame whose columns may come from a plan.

    A column a transform passed through unchanged gets its planned type back (a uuid stays a
    Parquet UUID, not bytes); any other column keeps the type Polars gives it.
    """
    natural = pl.DataFrame(schema=frame_schema).to_arrow().schema
    planned_by_name: Mapping[str, AnyField] = {
        planned.field(i).name: planned.field(i) for i in range(len(planned))
    }
    planned_polars = polars_schema(planned) if len(planned) else pl.Schema()
    fields: list[AnyField] = []
    for name in natural.names:
        plan_field = planned_by_name.get(name)
        if plan_field is not None and planned_polars.get(name) == frame_schema[name]:
            fields.append(plan_field)
        else:
            fields.append(natural.field(name))
    return pa.schema(fields)
