"""The reader against a real Postgres: one snapshot, exact counts, streamed batches."""

import datetime as dt
import io
import time
from collections.abc import Iterator

import polars as pl
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from etl_assets.lib.errors import ContractError, ExtractError
from etl_assets.lib.lake.parquet import ParquetSettings, write_batches
from etl_assets.lib.postgres import sql as q
from etl_assets.lib.postgres.read import (
    ReadStats,
    TableExtract,
    WindowCount,
    WindowCounts,
    WindowSplitter,
    lazy_frame,
    scan_node,
)
from etl_assets.lib.postgres.session import ConnectionSettings
from etl_assets.lib.table.checks import SCHEMA_CHECK, CheckOutcome
from etl_assets.lib.table.spec import NullPartitionRows
from etl_assets.lib.table.windows import PartitionWindow
from etl_assets_tests.support import on_every_batch, query, run_sql, spec

UTC = dt.UTC
DAY1 = PartitionWindow(
    "2026-10-01", dt.datetime(2026, 10, 1, tzinfo=UTC), dt.datetime(2026, 10, 2, tzinfo=UTC)
)
DAY2 = PartitionWindow("2026-10-02", DAY1.end, dt.datetime(2026, 10, 3, tzinfo=UTC))


def extract_of(
    conninfo: str,
    *windows: PartitionWindow,
    settings: ConnectionSettings | None = None,
    **overrides: object,
) -> TableExtract:
    return TableExtract(
        spec(**overrides),  # pyright: ignore[reportArgumentType]
        windows,
        settings or ConnectionSettings(conninfo=conninfo),
        application_name="raw/test/events/2026-10-01",
    )


def test_each_window_is_counted_and_read_in_one_snapshot(events_db: str) -> None:
    with extract_of(events_db, DAY1, DAY2).open() as opened:
        reads = list(opened.partitions)
        # Rows committed after the snapshot began are not part of this load.
        run_sql(events_db, "INSERT INTO events VALUES (1000, '2026-10-02 12:30+00', 1, 'late')")
        frames = [read.frame.collect() for read in reads]
    assert [read.stats.snapshot_rows for read in reads] == [24, 24]
    assert [f.height for f in frames] == [24, 24]
    assert [read.stats.rows_read for read in reads] == [24, 24]
    for read in reads:
        read.stats.check_complete("public.events")
    assert frames[0]["id"].to_list() == list(range(1, 25))
    assert frames[0].schema["amount"] == pl.Decimal(8, 2)


def test_rows_with_a_null_partition_column_fail_or_are_reported(events_db: str) -> None:
    run_sql(events_db, "INSERT INTO events VALUES (999, NULL, 1, 'orphan'), (998, NULL, 2, 'x')")
    failing = extract_of(events_db, DAY1)
    with (
        pytest.raises(ContractError, match=r"2 row\(s\) whose partition column 'created_at'"),
        failing.open(),
    ):
        pass
    reporting = extract_of(events_db, DAY1, null_partition_rows=NullPartitionRows.REPORT)
    with reporting.open() as opened:
        assert opened.null_partition_rows == 2
        assert sum(read.frame.collect().height for read in opened.partitions) == 24


def test_a_missing_column_is_refused_before_any_row_is_read(events_db: str) -> None:
    with (
        pytest.raises(ContractError, match="colour: declared, but the table has no such column"),
        extract_of(events_db, DAY1, columns=("id", "colour")).open(),
    ):
        pass


def test_a_row_limit_in_the_transform_still_drains_and_counts_the_window(events_db: str) -> None:
    with extract_of(events_db, DAY1, DAY2).with_transform(lambda f: f.head(3)).open() as opened:
        for read in opened.partitions:
            # The stream of the first window was drained, so the second one can start.
            assert read.frame.collect().height == 3
            read.stats.check_complete("public.events")
            assert read.stats.rows_read == 24


def schema_check(outcomes: list[CheckOutcome]) -> CheckOutcome:
    return next(o for o in outcomes if o.name == SCHEMA_CHECK)


def test_without_a_transform_the_file_must_have_exactly_the_planned_schema(
    events_db: str,
) -> None:
    with extract_of(events_db, DAY1).open() as opened:
        planned = opened.plan.arrow_schema
        read = next(opened.partitions)
        rows = pa.Table.from_batches(list(read.lake_batches()), schema=planned)
        assert schema_check(read.check_outcomes(rows.schema)).passed
        retyped = rows.schema.set(0, pa.field("id", pa.int32()))
        failed = schema_check(read.check_outcomes(retyped))
        assert failed.blocking
        assert not failed.passed
        assert "id: planned int64, written int32" in failed.description
        moved = pa.schema(list(reversed(list(rows.schema))))
        assert "columns in the order" in schema_check(read.check_outcomes(moved)).description


def test_a_transform_may_change_the_schema_and_the_check_reports_how(events_db: str) -> None:
    with extract_of(events_db, DAY1).with_transform(lambda f: f.drop("amount")).open() as opened:
        read = next(opened.partitions)
        written = read.frame.collect().to_arrow().schema
        check = schema_check(read.check_outcomes(written))
    assert check.passed
    assert check.metadata["written_vs_planned"].startswith("amount: not written")


def test_a_window_can_only_be_streamed_once(events_db: str) -> None:
    with extract_of(events_db, DAY1).open() as opened:
        read = next(opened.partitions)
        read.frame.collect()
        with pytest.raises(Exception, match="read twice"):
            read.frame.collect()


def test_pushed_down_predicates_and_projections_are_applied() -> None:
    frames = [pl.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})]
    frame = lazy_frame(frames[0].schema, lambda: iter(frames), "test")
    result = frame.filter(pl.col("a") >= 2).select("b").collect()
    assert result["b"].to_list() == ["y", "z"]


DAY3 = PartitionWindow("2026-10-03", DAY2.end, dt.datetime(2026, 10, 4, tzinfo=UTC))


def test_a_window_given_up_part_way_or_skipped_leaves_the_next_one_whole(events_db: str) -> None:
    run_sql(
        events_db,
        "INSERT INTO events SELECT g, timestamptz '2026-10-03 00:00+00' + (g - 49) * interval"
        " '1 hour', g, 'e' || g FROM generate_series(49, 72) g",
    )
    # Batches of a few rows, so a window spans many of them.
    tiny = ConnectionSettings(conninfo=events_db, batch_size_hint_bytes=64)
    with extract_of(events_db, DAY1, DAY2, DAY3, settings=tiny).open() as opened:
        first, second, third = opened.partitions
        batches = first.lake_batches()
        assert next(batches).num_rows < 24  # then day 1 is given up
        # Day 2 is skipped without being read; day 3 still gets exactly its own rows.
        ids = [i for batch in third.lake_batches() for i in batch.column("id").to_pylist()]
        assert opened.stream_failure is None
    assert ids == list(range(49, 73))
    assert second.stats.rows_read == 0


def tagged(*ordinals: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {q.WINDOW_ORDINAL: pa.array(ordinals, pa.int32()), "v": list(range(len(ordinals)))}
    )


def test_a_failed_stream_ends_every_later_window() -> None:
    def stream() -> Iterator[pa.RecordBatch]:
        yield tagged(0, 0, 1)
        raise OSError("server closed the connection unexpectedly")

    splitter = WindowSplitter(stream)
    assert [b.num_rows for b in splitter.window(0)] == [2]
    with pytest.raises(OSError, match="closed the connection"):
        list(splitter.window(1))
    assert isinstance(splitter.failure, OSError)
    with pytest.raises(ExtractError, match="the source stream failed before window 2"):
        list(splitter.window(2))
    with pytest.raises(ExtractError, match="read out of order"):
        list(splitter.window(1))


def sessions_of(conninfo: str, application_name: str) -> int:
    with psycopg.connect(conninfo) as connection:
        row = connection.execute(
            # Tests on other workers use the same names in their own databases.
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = %s AND datname = current_database()",
            (application_name,),
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("sessions", [1, 2])
def test_counts_are_taken_in_the_same_snapshot_before_or_alongside_the_rows(
    events_db: str, sessions: int
) -> None:
    side = "raw/test/events/2026-10-01 (side)"
    side_sessions_while_streaming: list[int] = []

    def observe() -> None:
        # The second session connects on its own thread: give it the time to show up (the
        # driver's first, brief connection to read the type catalog has the same name).
        deadline = time.monotonic() + (10 if sessions == 2 else 0)
        seen = sessions_of(events_db, side)
        while seen != sessions - 1 and time.monotonic() < deadline:
            time.sleep(0.01)
            seen = sessions_of(events_db, side)
        side_sessions_while_streaming.append(seen)

    settings = ConnectionSettings(conninfo=events_db, sessions_per_load=sessions)
    extract = extract_of(events_db, DAY1, DAY2, settings=settings).with_transform(
        on_every_batch(observe)
    )
    with extract.open() as opened:
        reads = list(opened.partitions)
        # Committed after the snapshot began: in neither the counts nor the rows, even when
        # the second session has not imported the snapshot yet.
        run_sql(events_db, "INSERT INTO events VALUES (1000, '2026-10-01 12:30+00', 1, 'late')")
        heights = [read.frame.collect().height for read in reads]
        fingerprints = [read.stats.fingerprint for read in reads]
    assert heights == [24, 24]
    assert [read.stats.snapshot_rows for read in reads] == [24, 24]
    for read in reads:
        read.stats.check_complete("public.events")
    # The second session is there while the rows stream, and only when asked for.
    assert side_sessions_while_streaming[0] == (1 if sessions == 2 else 0)
    assert sessions_of(events_db, side) == 0
    run_sql(events_db, "DELETE FROM events WHERE id = 1000")
    with extract_of(events_db, DAY1, DAY2).open() as again:
        assert [read.stats.fingerprint for read in again.partitions] == fingerprints


def test_counts_that_fail_alongside_the_rows_fail_the_window_that_needs_them() -> None:
    def fail() -> list[WindowCount]:
        raise ExtractError("the counting session was terminated")

    counts = WindowCounts(fail, alongside=True)
    stats = ReadStats(DAY1, counts)
    with pytest.raises(ExtractError, match="the counting session was terminated"):
        _ = stats.snapshot_rows
    with pytest.raises(ExtractError, match="the counting session was terminated"):
        _ = stats.fingerprint


def lake_files(extract: TableExtract) -> tuple[list[bytes], int]:
    """Each window's Parquet file as bytes, and how many sessions streamed the rows."""
    files: list[bytes] = []
    with extract.open() as opened:
        for read in opened.partitions:
            sink = io.BytesIO()
            write_batches(
                read.lake_batches(),
                opened.plan.arrow_schema,
                sink,
                ParquetSettings(row_group_bytes=64 * 1024),
            )
            read.stats.check_complete("public.events")
            files.append(sink.getvalue())
        return files, opened.readers


@pytest.fixture
def heap_events(source_db: str) -> str:
    """20,000 events of one day in a table without an index on the partition column."""
    run_sql(
        source_db,
        """
        CREATE TABLE events (id bigint PRIMARY KEY, created_at timestamptz, amount numeric(8, 2),
                             label text);
        INSERT INTO events
        SELECT g, timestamptz '2026-10-01 00:00+00' + (g % 86400) * interval '1 second',
               g * 1.5, repeat('e', g % 50) || g
        FROM generate_series(1, 20000) g;
        DELETE FROM events WHERE id % 7 = 0;
        INSERT INTO events SELECT g, timestamptz '2026-10-02 06:00+00', 1, 'next day'
        FROM generate_series(30001, 30100) g;
        ANALYZE events;
        """,
    )
    return source_db


@pytest.mark.parametrize("readers", [2, 4])
def test_readers_sharing_the_snapshot_make_the_same_file_as_one(
    heap_events: str, readers: int
) -> None:
    # Small batches: a page range per heap page, so each reader streams many ranges.
    one = ConnectionSettings(conninfo=heap_events, batch_size_hint_bytes=1024)
    several = ConnectionSettings(
        conninfo=heap_events, batch_size_hint_bytes=1024, readers_per_load=readers
    )
    single, single_readers = lake_files(extract_of(heap_events, DAY1, settings=one))
    parallel, parallel_readers = lake_files(extract_of(heap_events, DAY1, settings=several))
    assert (single_readers, parallel_readers) == (1, readers)
    assert parallel == single
    rows = pq.read_table(io.BytesIO(parallel[0]))
    assert rows.num_rows == 20_000 - 20_000 // 7
    assert pq.ParquetFile(io.BytesIO(parallel[0])).metadata.num_row_groups > 1
    # Windows are the parts of a range: each reader streams every other window.
    days = extract_of(heap_events, DAY1, DAY2, settings=several)
    assert lake_files(days) == (lake_files(extract_of(heap_events, DAY1, DAY2, settings=one))[0], 2)


def test_a_window_the_index_serves_is_read_by_one_session(events_db: str) -> None:
    two = ConnectionSettings(conninfo=events_db, readers_per_load=2)
    reader = "raw/test/events/2026-10-01 (reader 1)"
    extract = extract_of(events_db, DAY1, settings=two)
    run_sql(events_db, "CREATE INDEX ON events (created_at); ANALYZE events")
    with extract.open() as opened:
        assert opened.readers == 1
        assert sessions_of(events_db, reader) == 0
        assert [read.frame.collect().height for read in opened.partitions] == [24]


def test_further_readers_import_the_snapshot_and_close_with_the_load(heap_events: str) -> None:
    settings = ConnectionSettings(
        conninfo=heap_events, batch_size_hint_bytes=1024, readers_per_load=3
    )
    names = [f"raw/test/events/2026-10-01 (reader {n})" for n in (1, 2)]

    def readers_settle_at(expected: int) -> list[int]:
        # A closed connection's backend leaves pg_stat_activity a moment after it.
        deadline = time.monotonic() + 10
        while True:
            seen = [sessions_of(heap_events, name) for name in names]
            if seen == [expected] * len(names) or time.monotonic() > deadline:
                return seen

    with extract_of(heap_events, DAY1, settings=settings).open() as opened:
        assert readers_settle_at(1) == [1, 1]
        # Committed after the snapshot began: no reader sees it.
        run_sql(heap_events, "INSERT INTO events VALUES (99999, '2026-10-01 12:00+00', 1, 'late')")
        (read,) = opened.partitions
        assert read.frame.collect().height == 20_000 - 20_000 // 7
        read.stats.check_complete("public.events")
    assert readers_settle_at(0) == [0, 0]


def test_a_page_range_is_read_by_a_tid_range_scan(heap_events: str) -> None:
    part = q.ReadPart(0, 0, DAY1, q.PageRange(10, 20))
    statement = q.select_windows(
        q.Relation("public", "events"),
        [q.sql.Identifier("id")],
        "created_at",
        [part],
        q.BoundKind.TIMESTAMPTZ,
    )
    plan = "\n".join(str(row[0]) for row in query(heap_events, "EXPLAIN " + statement))
    assert "Tid Range Scan" in plan
    assert "ctid >= '(10,0)'::tid" in plan


def test_a_plan_is_read_from_its_json() -> None:
    assert scan_node('[{"Plan": {"Node Type": "Seq Scan", "Relation Name": "t"}}]') == "Seq Scan"
    assert scan_node('[{"Plan": {"Node Type": "Index Scan"}}]') == "Index Scan"
    assert scan_node("not json") is None
    assert scan_node('[{"Plan": {}}]') is None
