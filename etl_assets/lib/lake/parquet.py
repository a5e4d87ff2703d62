"""Writing a stream of Arrow batches (or a Polars plan) into one Parquet file.

Batches are gathered into row groups of about `row_group_bytes` of Arrow data; each row group
is encoded on a background thread while the next one gathers, so encoding overlaps with
reading. Dictionary encoding is chosen per column from the first row group: it shrinks columns
with repeated values, and only costs time on columns whose values are mostly distinct (ids,
uuids, timestamps), where the encoder would try it and fall back to plain pages anyway.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from etl_assets.lib.arrow_types import PlannedSchema, conform_table, output_schema
from etl_assets.lib.errors import VerificationError
from etl_assets.lib.lake.preview import python_rows
from etl_assets.lib.pipeline import BackgroundWorker
from etl_assets.lib.postgres.types import POSTGRES_COLUMNS_KEY, postgres_columns

MIB = 1024 * 1024

DICTIONARY_SAMPLE_ROWS = 16_384
DICTIONARY_MAX_DISTINCT_SHARE = 0.5
"""Dictionary-encode a column when at most this share of the sampled values are distinct."""


@dataclass(frozen=True)
class ParquetSettings:
    """How files are encoded."""

    compression: Literal["zstd", "snappy", "gzip", "lz4", "brotli", "none"] = "zstd"
    compression_level: int | None = None
    row_group_bytes: int = 8 * MIB
    """Uncompressed Arrow bytes per row group: bounds memory, keeps groups large for readers."""


@dataclass(frozen=True)
class WrittenFile:
    """What a finished (not yet published) file holds."""

    rows: int
    row_groups: int
    schema: pa.Schema
    """The Arrow schema the file's footer gives a reader."""
    size: int
    first_rows: tuple[dict[str, object], ...] = ()
    """The first rows written, as Python values, when the writer was asked to keep some."""


def write_frame(
    frame: pl.LazyFrame,
    planned: PlannedSchema,
    sink: IO[bytes],
    settings: ParquetSettings,
    *,
    on_row_group: Callable[[int, int], None] | None = None,
    keep_rows: int = 0,
    file_schema: pa.Schema | None = None,
    convert: Callable[[pa.RecordBatch], pa.RecordBatch] | None = None,
) -> WrittenFile:
    """Execute `frame` on Polars' streaming engine and write its rows to `sink` as Parquet.

    Columns that pass through from `planned` keep their planned Arrow types (`frame_schema`
    gives the schema without running the plan). Each batch is then passed through `convert`
    into `file_schema`, if given. See `write_batches` for the rest.
    """
    schema = frame_schema(frame, planned)

    def batches() -> Iterator[pa.RecordBatch]:
        for chunk in frame.collect_batches(engine="streaming"):
            if chunk.height:
                for batch in conform_table(chunk.to_arrow(), schema).to_batches():
                    yield convert(batch) if convert is not None else batch

    return write_batches(
        batches(),
        file_schema or schema,
        sink,
        settings,
        on_row_group=on_row_group,
        keep_rows=keep_rows,
    )


def frame_schema(frame: pl.LazyFrame, planned: PlannedSchema) -> pa.Schema:
    """The Arrow schema `write_frame` writes `frame` in (before any conversion)."""
    return output_schema(frame.collect_schema(), planned)


class DictionaryChoice:
    """The columns to dictionary-encode, chosen from the first rows written, then kept.

    Share one between the files of one stream (the windows of one load): the choice is made
    once, and every file of the load is encoded alike.
    """

    def __init__(self) -> None:
        self._columns: list[str] | None = None

    def columns(self, first_rows: pa.Table) -> list[str]:
        """The chosen columns, choosing from `first_rows` the first time."""
        if self._columns is None:
            self._columns = dictionary_columns(first_rows)
        return self._columns


def write_batches(
    batches: Iterable[pa.RecordBatch],
    schema: pa.Schema,
    sink: IO[bytes],
    settings: ParquetSettings,
    *,
    on_row_group: Callable[[int, int], None] | None = None,
    dictionary: DictionaryChoice | None = None,
    keep_rows: int = 0,
) -> WrittenFile:
    """Write `batches` (all of `schema`) to `sink` as one Parquet file.

    The first `keep_rows` rows come back in `WrittenFile.first_rows` (as Python values, so
    the row group they came from is not held).

    A stream with no rows still yields a valid file carrying the schema. `on_row_group(rows,
    bytes)` reports progress each time a row group is followed by more rows (a file of one row
    group reports nothing). The file is checked (row count and columns from its own footer)
    before this returns.
    """
    file = _RowGroupWriter(schema, sink, settings, dictionary or DictionaryChoice())
    first_rows: list[dict[str, object]] = []
    try:
        for group in row_groups(batches, schema, settings.row_group_bytes):
            if file.rows_submitted and on_row_group is not None:
                on_row_group(file.rows_submitted, sink.tell())
            if len(first_rows) < keep_rows:
                first_rows += python_rows(group.slice(0, keep_rows - len(first_rows)))
            file.write(group)
        metadata = file.close()
    except BaseException:
        file.abandon()
        raise
    rows = file.rows_submitted
    if metadata.num_rows != rows:
        raise VerificationError(f"file footer says {metadata.num_rows} rows, {rows} were written")
    # The schema as a reader will see it, from the file's own footer.
    footer_schema = metadata.schema.to_arrow_schema()
    if footer_schema.names != schema.names:
        raise VerificationError(f"file has columns {footer_schema.names}, expected {schema.names}")
    return WrittenFile(
        rows=rows,
        row_groups=metadata.num_row_groups,
        schema=footer_schema,
        size=sink.tell(),
        first_rows=tuple(first_rows),
    )


def row_groups(
    batches: Iterable[pa.RecordBatch], schema: pa.Schema, group_bytes: int
) -> Iterator[pa.Table]:
    """`batches` regrouped into tables of about `group_bytes` of Arrow data, without copying.

    A group ends at the row where the rows' sizes (`row_sizes`) add up to `group_bytes`, so
    where groups end depends only on the rows, never on how they were cut into batches: the
    same rows make the same file whether one reader or several streamed them.
    """
    gathered: list[pa.RecordBatch] = []
    room = group_bytes
    for batch in batches:
        if not batch.num_rows:
            continue
        ends = np.cumsum(row_sizes(batch))
        start, used = 0, 0
        while start < batch.num_rows:
            last = int(np.searchsorted(ends, used + room, "left"))
            if last >= batch.num_rows:
                gathered.append(batch.slice(start))
                room -= int(ends[-1]) - used
                break
            gathered.append(batch.slice(start, last + 1 - start))
            yield pa.Table.from_batches(gathered, schema=schema)
            gathered, room = [], group_bytes
            start, used = last + 1, int(ends[last])
    if gathered:
        yield pa.Table.from_batches(gathered, schema=schema)


UNSIZED_VALUE_BYTES = 16
"""What `row_sizes` counts for a value whose size it does not measure (nested, extension)."""


def row_sizes(batch: pa.RecordBatch) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Each row's size in Arrow bytes: fixed widths, plus the lengths of strings and lists.

    A function of the row's values alone, whatever batch holds it.
    """
    sizes = np.zeros(batch.num_rows, dtype=np.int64)
    fixed = 0
    for column in batch.columns:
        if isinstance(column, pa.ExtensionArray):
            column = column.storage  # noqa: PLW2901 - its storage is what is measured
        data_type = column.type
        width = _fixed_bytes(data_type)
        if width is not None:
            fixed += width
            continue
        offsets = _offset_type(data_type)
        if offsets is None:
            fixed += UNSIZED_VALUE_BYTES
            continue
        lengths = _lengths(column, offsets)
        if pa.types.is_list(data_type) or pa.types.is_large_list(data_type):
            sizes += lengths * (_fixed_bytes(data_type.value_type) or 8)
        else:
            sizes += lengths
        fixed += offsets.itemsize
    return sizes + fixed


def _fixed_bytes(data_type: pa.DataType) -> int | None:
    """Bytes per value of a fixed-width type (a boolean counts as one); None for the rest."""
    try:
        bits = data_type.bit_width
    except ValueError:  # pyarrow's answer for a type without a fixed width
        return None
    return max(bits // 8, 1) if bits > 0 else None


def _offset_type(data_type: pa.DataType) -> np.dtype[Any] | None:
    if pa.types.is_string(data_type) or pa.types.is_binary(data_type):
        return np.dtype(np.int32)
    if pa.types.is_list(data_type):
        return np.dtype(np.int32)
    if pa.types.is_large_string(data_type) or pa.types.is_large_binary(data_type):
        return np.dtype(np.int64)
    if pa.types.is_large_list(data_type):
        return np.dtype(np.int64)
    return None


def _lengths(column: pa.Array, offsets: np.dtype[Any]) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Each value's length from the offsets buffer (0 for a null), read straight from it.

    (pyarrow's own conversions to numpy import pandas when it is installed.)
    """
    buffer = column.buffers()[1]
    if buffer is None or not len(column):
        return np.zeros(len(column), dtype=np.int64)
    count = column.offset + len(column) + 1
    values = np.frombuffer(memoryview(buffer), dtype=offsets, count=count)[column.offset :]
    return np.diff(values).astype(np.int64)


class _RowGroupWriter:
    """A Parquet writer fed whole row groups, encoding them on a background thread.

    The writer is created with the first row group, whose values choose the dictionary
    columns; a file with no rows gets the default encodings.
    """

    def __init__(
        self,
        schema: pa.Schema,
        sink: IO[bytes],
        settings: ParquetSettings,
        dictionary: DictionaryChoice,
    ) -> None:
        self._schema = schema
        self._dictionary = dictionary
        self._sink = sink
        self._settings = settings
        self._writer: pq.ParquetWriter | None = None
        self._encoder: BackgroundWorker[pa.Table] | None = None
        self.rows_submitted = 0

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            self._writer = self._open(self._dictionary.columns(table))
            writer = self._writer
            self._encoder = BackgroundWorker(
                lambda group: writer.write_table(group, row_group_size=group.num_rows),
                name="parquet-encode",
            )
        assert self._encoder is not None
        self._encoder.submit(table)
        self.rows_submitted += table.num_rows

    def close(self) -> pq.FileMetaData:
        if self._encoder is not None:
            self._encoder.finish()
        if self._writer is None:
            self._writer = self._open(True)
        self._writer.close()
        metadata = self._writer.writer.metadata
        assert metadata is not None
        return metadata

    def abandon(self) -> None:
        """Stop encoding; the sink holds an unfinished file that must not be published."""
        if self._encoder is not None:
            self._encoder.cancel()
        if self._writer is not None:
            # Closed now, not by the garbage collector later, when the sink may be gone; the
            # file is discarded, so whatever closing it raises does not matter.
            with contextlib.suppress(Exception):
                self._writer.close()

    def _open(self, use_dictionary: bool | list[str]) -> pq.ParquetWriter:
        return pq.ParquetWriter(
            self._sink,
            with_file_metadata(self._schema),
            compression=self._settings.compression,
            compression_level=self._settings.compression_level,
            # pyarrow takes a list of column paths too; its stubs only say bool.
            use_dictionary=use_dictionary,  # pyright: ignore[reportArgumentType]
            store_schema=True,
        )


def with_file_metadata(schema: pa.Schema) -> pa.Schema:
    """`schema` with the columns' Postgres origin also in the file's key-value metadata.

    Arrow readers see each field's metadata (kept in the footer's Arrow schema); readers of
    plain Parquet see the same in one JSON document under `postgres.columns`.
    """
    document = postgres_columns(schema)
    if document is None:
        return schema
    return schema.with_metadata({**(schema.metadata or {}), POSTGRES_COLUMNS_KEY: document})


def dictionary_columns(table: pa.Table) -> list[str]:
    """The Parquet column paths worth dictionary-encoding, judged from `table`'s first rows.

    A flat column qualifies when at most `DICTIONARY_MAX_DISTINCT_SHARE` of the sampled values
    are distinct; Arrow dictionary columns and the leaves of nested columns (lists, structs)
    always do, as their values are not sampled here.
    """
    sample = table.slice(0, DICTIONARY_SAMPLE_ROWS)
    chosen: list[str] = []
    paths = _leaf_paths(table.schema)
    for field in table.schema:
        leaves = paths[field.name]
        if pa.types.is_nested(field.type) or pa.types.is_dictionary(field.type):
            chosen += leaves
            continue
        if pa.types.is_boolean(field.type) or sample.num_rows == 0:
            continue
        column = sample.column(field.name)
        if isinstance(column.type, pa.BaseExtensionType):
            column = column.cast(column.type.storage_type)
        try:
            distinct = pc.count_distinct(column, mode="all").as_py()
        except pa.ArrowNotImplementedError:
            chosen += leaves  # a type Arrow cannot count: keep Parquet's default
            continue
        if distinct <= DICTIONARY_MAX_DISTINCT_SHARE * sample.num_rows:
            chosen += leaves
    return chosen


def _leaf_paths(schema: pa.Schema) -> dict[str, list[str]]:
    """Each top-level column's Parquet leaf paths (`tags.list.element`, `point.x`, ...)."""
    probe = pa.BufferOutputStream()
    pq.ParquetWriter(probe, schema).close()
    parquet_schema = pq.read_metadata(pa.BufferReader(probe.getvalue())).schema
    leaves = iter(parquet_schema.column(i).path for i in range(len(parquet_schema)))
    # Leaves come in schema order; counting them per column avoids splitting paths on dots,
    # which column names may contain.
    return {field.name: [next(leaves) for _ in range(_leaf_count(field.type))] for field in schema}


def _leaf_count(data_type: pa.DataType) -> int:
    if isinstance(data_type, pa.BaseExtensionType):
        return _leaf_count(data_type.storage_type)
    if isinstance(data_type, pa.StructType):
        return sum(_leaf_count(data_type.field(i).type) for i in range(data_type.num_fields))
    if isinstance(data_type, pa.MapType):
        return _leaf_count(data_type.key_type) + _leaf_count(data_type.item_type)
    if isinstance(data_type, pa.ListType | pa.LargeListType | pa.FixedSizeListType):
        return _leaf_count(data_type.value_type)
    return 1
