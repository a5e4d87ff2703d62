"""Streaming a Polars plan into one Parquet file, row group by row group."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Literal

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from etl_assets.lib.arrow_types import PlannedSchema, conform_table, output_schema

MIB = 1024 * 1024


class VerificationError(RuntimeError):
    """A written file does not hold what was streamed into it; it must not be published."""


@dataclass(frozen=True)
class ParquetSettings:
    """How files are encoded."""

    compression: Literal["zstd", "snappy", "gzip", "lz4", "brotli", "none"] = "zstd"
    compression_level: int | None = None
    row_group_bytes: int = 64 * MIB
    """Uncompressed Arrow bytes buffered per row group: bounds memory, keeps groups large."""


@dataclass(frozen=True)
class WrittenFile:
    """What a finished (not yet published) file holds."""

    rows: int
    row_groups: int
    schema: pa.Schema
    size: int


def write_frame(
    frame: pl.LazyFrame,
    planned: PlannedSchema,
    sink: IO[bytes],
    settings: ParquetSettings,
    on_row_group: Callable[[int, int], None] | None = None,
) -> WrittenFile:
    """Execute `frame` on Polars' streaming engine and write its rows to `sink` as Parquet.

    Columns that pass through from `planned` keep their planned Arrow types. A frame with no
    rows still yields a valid file carrying the schema. `on_row_group(rows, bytes)` is called
    after each row group, for progress reporting. The file is checked (row count and columns
    from its own footer) before this returns.
    """
    schema = output_schema(frame.collect_schema(), planned)
    rows = 0
    buffered: list[pa.Table] = []
    buffered_bytes = 0
    writer = pq.ParquetWriter(
        sink,
        schema,
        compression=settings.compression,
        compression_level=settings.compression_level,
        store_schema=True,
    )
    try:
        for batch in frame.collect_batches(engine="streaming"):
            if batch.height == 0:
                continue
            table = conform_table(batch.to_arrow(), schema)
            buffered.append(table)
            buffered_bytes += table.nbytes
            if buffered_bytes >= settings.row_group_bytes:
                rows += _flush(writer, buffered, settings.row_group_bytes)
                if on_row_group is not None:
                    on_row_group(rows, sink.tell())
                buffered, buffered_bytes = [], 0
        if buffered:
            rows += _flush(writer, buffered, settings.row_group_bytes)
    finally:
        writer.close()
    metadata = writer.writer.metadata
    if metadata.num_rows != rows:
        raise VerificationError(f"file footer says {metadata.num_rows} rows, {rows} were written")
    written_columns = metadata.schema.to_arrow_schema().names
    if written_columns != schema.names:
        raise VerificationError(f"file has columns {written_columns}, expected {schema.names}")
    return WrittenFile(
        rows=rows, row_groups=metadata.num_row_groups, schema=schema, size=sink.tell()
    )


def _flush(writer: pq.ParquetWriter, tables: list[pa.Table], row_group_bytes: int) -> int:
    table = pa.concat_tables(tables).combine_chunks()
    bytes_per_row = max(table.nbytes / max(table.num_rows, 1), 1.0)
    rows_per_group = max(int(row_group_bytes / bytes_per_row), 1)
    writer.write_table(table, row_group_size=rows_per_group)
    return table.num_rows
