import io
import threading
import uuid
from collections.abc import Iterator

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from etl_assets.lib.arrow_types import PlannedSchema
from etl_assets.lib.lake.parquet import (
    DictionaryChoice,
    ParquetSettings,
    dictionary_columns,
    row_groups,
    row_sizes,
    write_batches,
    write_frame,
)


def test_a_frame_with_no_rows_still_writes_a_valid_file_with_its_schema() -> None:
    planned = pa.schema([("id", pa.int64()), ("ref", pa.uuid())])
    frame = pl.LazyFrame(schema={"id": pl.Int64, "ref": pl.Binary})
    sink = io.BytesIO()
    written = write_frame(frame, PlannedSchema(planned, planned), sink, ParquetSettings())
    assert written.rows == 0
    sink.seek(0)
    table = pq.read_table(sink)
    assert table.num_rows == 0
    assert table.schema.field("ref").type == pa.uuid()


def test_row_groups_are_cut_by_bytes_and_every_row_is_written() -> None:
    rows = 200_000
    frame = pl.LazyFrame({"id": range(rows), "text": ["x" * 40] * rows})
    sink = io.BytesIO()
    written = write_frame(
        frame, PlannedSchema.none(), sink, ParquetSettings(row_group_bytes=2 * 1024 * 1024)
    )
    sink.seek(0)
    parquet = pq.ParquetFile(sink)
    assert written.rows == rows == parquet.metadata.num_rows
    assert written.row_groups == parquet.metadata.num_row_groups > 1
    assert parquet.metadata.row_group(0).column(0).compression == "ZSTD"
    assert written.size == len(sink.getvalue())


def test_pass_through_columns_keep_planned_types_in_the_file() -> None:
    value = uuid.uuid4()
    planned = pa.schema([("ref", pa.uuid()), ("doc", pa.json_(pa.string()))])
    frame = pl.from_arrow(
        pa.table({"ref": pa.array([value.bytes], pa.binary(16)), "doc": pa.array(['{"a":1}'])})
    )
    assert isinstance(frame, pl.DataFrame)
    sink = io.BytesIO()
    write_frame(
        frame.lazy().with_columns(pl.col("doc").cast(pl.String)),
        PlannedSchema(planned, planned),
        sink,
        ParquetSettings(),
    )
    sink.seek(0)
    table = pq.read_table(sink)
    assert table.schema.field("ref").type == pa.uuid()
    assert table.column("ref").to_pylist() == [value]
    assert table.schema.field("doc").type == pa.large_string()


def batches_of(table: pa.Table, rows: int) -> list[pa.RecordBatch]:
    return table.to_batches(max_chunksize=rows)


def test_row_groups_gather_small_batches_and_cut_large_ones_by_bytes() -> None:
    table = pa.table({"id": pa.array(range(100_000), pa.int64())})  # 800 kB
    budget = 100_000  # bytes: about 12,500 rows
    small = list(row_groups(batches_of(table, 1_000), table.schema, budget))
    large = list(row_groups([table.to_batches()[0]], table.schema, budget))
    for groups in (small, large):
        assert pa.concat_tables(groups).column("id").to_pylist() == list(range(100_000))
        assert all(group.nbytes <= budget + 8_000 for group in groups)
        assert len(groups) >= 8
    # Gathering does not copy: the groups still point at the batches' buffers.
    assert small[0].column("id").num_chunks > 1


def test_row_groups_end_at_the_same_rows_however_the_rows_are_batched() -> None:
    rows = 30_000
    table = pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "note": pa.array(["x" * (i % 97) if i % 5 else None for i in range(rows)]),
            "tags": pa.array([[i] * (i % 4) for i in range(rows)], pa.list_(pa.int32())),
            "ref": pa.array([uuid.UUID(int=i).bytes for i in range(rows)], pa.uuid()),
        }
    )
    cuts = [
        [group.num_rows for group in row_groups(batches_of(table, size), table.schema, 100_000)]
        for size in (1_000, 777, rows)
    ]
    assert cuts[0] == cuts[1] == cuts[2]
    assert len(cuts[0]) > 5
    assert sum(cuts[0]) == rows


def test_a_rows_size_counts_fixed_widths_and_value_lengths() -> None:
    batch = pa.record_batch(
        {
            "a": pa.array([1, 2, 3], pa.int32()),
            "s": pa.array(["", "abcd", None]),
            "l": pa.array([[1], [], [1, 2, 3]], pa.list_(pa.int64())),
            "flag": pa.array([True, False, None]),
        }
    )
    # int32: 4; a string: its bytes + a 4-byte offset; a list: 8 per int64 + a 4-byte offset;
    # a boolean counts as a byte.
    assert row_sizes(batch).tolist() == [4 + 4 + 8 + 4 + 1, 4 + 8 + 4 + 1, 4 + 4 + 24 + 4 + 1]
    assert row_sizes(batch.slice(1)).tolist() == [17, 37]


def test_dictionary_encoding_is_chosen_for_repeated_values_only() -> None:
    rows = 20_000
    table = pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "country": pa.array(["DE", "FR", "US", "JP"] * (rows // 4)),
            "note": pa.array([f"note {i}" for i in range(rows)]),
            "ref": pa.array([uuid.uuid4().bytes for _ in range(rows)], pa.uuid()),
            "tier": pa.array(["gold", "silver"] * (rows // 2)).dictionary_encode(),
            "tags": pa.array([[f"t{i % 7}"] for i in range(rows)], pa.list_(pa.string())),
            "flag": pa.array([True, False] * (rows // 2)),
        }
    )
    chosen = dictionary_columns(table)
    assert "country" in chosen
    assert "tier" in chosen
    assert "tags.list.element" in chosen
    assert not {"id", "note", "ref", "flag"} & set(chosen)

    sink = io.BytesIO()
    write_batches(table.to_batches(), table.schema, sink, ParquetSettings())
    sink.seek(0)
    columns = pq.ParquetFile(sink).metadata.row_group(0)
    encodings = {
        columns.column(i).path_in_schema: columns.column(i).encodings
        for i in range(columns.num_columns)
    }
    assert "RLE_DICTIONARY" in encodings["country"]
    assert "RLE_DICTIONARY" not in encodings["ref"]


def test_one_dictionary_choice_serves_every_file_of_a_load() -> None:
    repeated = pa.table({"code": pa.array(["a", "b"] * 5_000)})
    distinct = pa.table({"code": pa.array([str(i) for i in range(10_000)])})
    choice = DictionaryChoice()
    assert choice.columns(repeated) == ["code"]
    assert choice.columns(distinct) == ["code"]
    assert DictionaryChoice().columns(distinct) == []


def test_progress_is_reported_only_while_more_rows_follow() -> None:
    table = pa.table({"id": pa.array(range(100_000), pa.int64())})
    reports: list[int] = []
    settings = ParquetSettings(row_group_bytes=200_000)
    written = write_batches(
        batches_of(table, 5_000),
        table.schema,
        io.BytesIO(),
        settings,
        on_row_group=lambda rows, _: reports.append(rows),
    )
    assert written.row_groups == 4
    assert reports == [25_000, 50_000, 75_000]
    single: list[int] = []
    write_batches(
        batches_of(table.slice(0, 1_000), 100),
        table.schema,
        io.BytesIO(),
        settings,
        on_row_group=lambda rows, _: single.append(rows),
    )
    assert single == []


def test_a_stream_that_fails_mid_way_closes_its_writer_and_raises() -> None:
    table = pa.table({"id": pa.array(range(50_000), pa.int64())})

    def failing() -> Iterator[pa.RecordBatch]:
        yield from batches_of(table, 10_000)[:3]
        raise RuntimeError("source failed")

    with pytest.raises(RuntimeError, match="source failed"):
        write_batches(failing(), table.schema, io.BytesIO(), ParquetSettings(row_group_bytes=1))
    # Nothing is left running: the encoder thread has stopped.
    assert not [t for t in threading.enumerate() if t.name == "parquet-encode"]


def test_the_first_rows_are_kept_across_row_groups_when_asked() -> None:
    schema = pa.schema([("id", pa.int64())])
    batches = [pa.record_batch([pa.array([i, i + 1], pa.int64())], schema=schema) for i in (0, 2)]
    settings = ParquetSettings(row_group_bytes=16)  # one 2-row batch per row group
    kept = write_batches(iter(batches), schema, io.BytesIO(), settings, keep_rows=3)
    assert kept.row_groups == 2
    assert kept.first_rows == ({"id": 0}, {"id": 1}, {"id": 2})
    assert write_batches(iter(batches), schema, io.BytesIO(), settings).first_rows == ()


def test_the_written_schema_is_read_from_the_files_own_footer() -> None:
    schema = pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            pa.field("ref", pa.uuid()),
            pa.field("doc", pa.json_(pa.string())),
            pa.field("big", pa.decimal256(50, 5)),
        ]
    )
    batch = pa.record_batch(
        [
            pa.array([1], pa.int64()),
            pa.array([uuid.uuid4().bytes], pa.uuid()),
            pa.array(['{"a": 1}'], pa.json_(pa.string())),
            pa.array([None], pa.decimal256(50, 5)),
        ],
        schema=schema,
    )
    sink = io.BytesIO()
    written = write_batches([batch], schema, sink, ParquetSettings())
    sink.seek(0)
    assert written.schema is not schema
    assert written.schema.equals(pq.read_schema(sink))
    assert [f.type for f in written.schema] == [f.type for f in schema]
    assert not written.schema.field("id").nullable
