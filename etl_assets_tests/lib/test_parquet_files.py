import io
import uuid

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from etl_assets.lib.arrow_types import PlannedSchema
from etl_assets.lib.parquet_files import ParquetSettings, write_frame


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
