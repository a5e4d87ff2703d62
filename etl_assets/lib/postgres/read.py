"""Reading a table's windows from Postgres in one read-only snapshot, as streamed Arrow batches.

One load reads in one session and one `REPEATABLE READ READ ONLY` transaction (the ADBC driver
connects once before it, with the same name and settings, to read the server's type catalog).
Inside it, in order: the catalog is read and every declared column planned against the
contract (nothing is read if the table drifted or a column is unmappable); rows with a NULL
partition column are counted; then for each window its `count(*)` is taken and its rows are
streamed through `COPY (SELECT ...) TO STDOUT` by the ADBC driver. Counts and rows come from
the same snapshot, so they must agree exactly. Each batch is checked for values no Arrow type
holds (refused with the row's primary key), converted to the plan's types and observed by the
row checks. With `readers_per_load` above one, further sessions import the snapshot and stream
parts of the read side by side (`PartStreams`); the writer still takes the rows in one order.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
from polars.io.plugins import register_io_source
from psycopg import sql

from etl_assets.lib.arrow_types import (
    conform_batch,
    frame_from_arrow,
    polars_schema,
)
from etl_assets.lib.errors import ContractError, ExtractError
from etl_assets.lib.incremental import Fingerprint
from etl_assets.lib.postgres import sql as q
from etl_assets.lib.postgres.session import ConnectionSettings, Snapshot
from etl_assets.lib.postgres.types import (
    TablePlan,
)
from etl_assets.lib.postgres.values import refuse_unrepresentable, to_plan
from etl_assets.lib.table.checks import (
    ROW_COUNT_CHECK,
    SCHEMA_CHECK,
    CheckOutcome,
    RowChecks,
    describe_key,
)
from etl_assets.lib.table.spec import NullPartitionRows, PrimaryKeyCheck, TableSpec
from etl_assets.lib.table.transforms import Transform
from etl_assets.lib.table.windows import PartitionWindow


@dataclass(frozen=True)
class WindowCount:
    """A window's `count(*)` and fingerprint, taken in the read's snapshot."""

    rows: int
    fingerprint: Fingerprint


class WindowCounts:
    """Every window's count and fingerprint, taken by one query in the read's snapshot.

    Either before the rows, on the load's own session, or alongside them, on a second session
    importing the snapshot (`alongside`): the query then runs on its own thread while the rows
    stream, and `of` waits for it.
    """

    def __init__(self, take: Callable[[], list[WindowCount]], *, alongside: bool) -> None:
        self._counts: list[WindowCount] | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if alongside:
            self._thread = threading.Thread(
                target=self._take, args=(take,), name="postgres-counts", daemon=True
            )
            self._thread.start()
        else:
            self._counts = take()

    @classmethod
    def known(cls, counts: Sequence[WindowCount]) -> WindowCounts:
        """Counts already taken."""
        return cls(lambda: list(counts), alongside=False)

    def wait(self) -> None:
        """Return once the query has finished (at once if it ran before the rows)."""
        if self._thread is not None:
            self._thread.join()

    def of(self, position: int) -> WindowCount:
        """The count and fingerprint of the window at `position`; raises if the query failed."""
        self.wait()
        if self._error is not None:
            raise self._error
        assert self._counts is not None
        return self._counts[position]

    def _take(self, take: Callable[[], list[WindowCount]]) -> None:
        try:
            self._counts = take()
        except BaseException as error:  # raised by `of` to whoever needs the counts
            self._error = error


@dataclass
class ReadStats:
    """What one window's read saw; filled in while its rows stream."""

    window: PartitionWindow
    counts: WindowCounts
    """Every window's count and fingerprint in the read's snapshot; this one's is at `position`."""
    position: int = 0
    rows_read: int = 0
    batches: int = 0
    arrow_bytes: int = 0
    complete: bool = False

    @property
    def snapshot_rows(self) -> int:
        """`count(*)` of the window in the read's snapshot."""
        return self.counts.of(self.position).rows

    @property
    def fingerprint(self) -> Fingerprint:
        """The window's fingerprint in the read's snapshot."""
        return self.counts.of(self.position).fingerprint

    def check_complete(self, table: str) -> None:
        """Raise unless every row of the window was read, and no more."""
        if not self.complete:
            raise ExtractError(f"{table} window {self.window.key}: the read did not finish")
        if self.rows_read != self.snapshot_rows:
            raise ExtractError(
                f"{table} window {self.window.key}: read {self.rows_read} rows but the "
                f"snapshot counts {self.snapshot_rows}"
            )


@dataclass
class PartitionRead:
    """One window of an open extract: its rows, and what reading them saw.

    The rows are read once, either as Arrow batches in the lake's types (`lake_batches`, the
    direct path when there is no transform) or as a Polars frame with the transform applied
    (`frame`).
    """

    window: PartitionWindow
    stats: ReadStats
    checks: RowChecks
    transform: Transform | None
    _snapshot: Snapshot
    _spec: TableSpec
    _plan: TablePlan
    _batches: Callable[[], Iterator[pa.RecordBatch]]
    """The window's rows in the plan's frame types, refused, checked and counted as they pass."""
    _frame: pl.LazyFrame | None = None

    @property
    def frame(self) -> pl.LazyFrame:
        """The rows as a lazy Polars frame, transformed if the asset has a transform."""
        if self._frame is None:
            frame = lazy_frame(
                polars_schema(self._plan.frame_schema),
                lambda: (frame_from_arrow(batch) for batch in self._batches()),
                name=f"{self._spec.qualified_name} {self.window.key}",
            )
            self._frame = self.transform(frame) if self.transform is not None else frame
        return self._frame

    def lake_batches(self) -> Iterator[pa.RecordBatch]:
        """The rows as Arrow batches in the lake's types (`TablePlan.arrow_schema`)."""
        if self.transform is not None:
            raise ExtractError("a transformed window is read through its frame")
        lake_schema = self._plan.arrow_schema
        converts = lake_schema != self._plan.frame_schema
        for batch in self._batches():
            yield conform_batch(batch, lake_schema) if converts else batch

    def check_outcomes(self, written: pa.Schema) -> list[CheckOutcome]:
        """Every check of this window, once its rows are read and written.

        Blocking ones gate publishing. `written` is the schema of the file about to be published.
        """
        table = self._spec.qualified_name
        complete = self.stats.complete and self.stats.rows_read == self.stats.snapshot_rows
        # Without a transform the file must be exactly the planned schema; a transform may
        # drop, add or retype columns, which the metadata reports.
        differences = written_vs_planned(self._plan.arrow_schema, written)
        written_as_planned = self.transform is not None or differences == AS_PLANNED
        outcomes = [
            CheckOutcome(
                name=ROW_COUNT_CHECK,
                passed=complete,
                blocking=True,
                description=(
                    f"{self.stats.rows_read} rows read, {self.stats.snapshot_rows} counted by "
                    "count(*) in the same snapshot"
                ),
                metadata={
                    "rows_read": self.stats.rows_read,
                    "snapshot_count": self.stats.snapshot_rows,
                    "read_finished": self.stats.complete,
                },
            ),
            CheckOutcome(
                name=SCHEMA_CHECK,
                passed=written_as_planned,
                blocking=True,
                description=(
                    f"{table} has every declared column with its declared type and "
                    "nullability (checked before reading)"
                    + (
                        ""
                        if written_as_planned
                        else f", but the file to publish differs from the plan: {differences}"
                    )
                ),
                metadata={
                    "declared_columns": ", ".join(
                        f"{c.name} {c.declared_type}" for c in self._plan.columns
                    ),
                    "undeclared_columns": ", ".join(self._plan.undeclared_columns) or "none",
                    "written_vs_planned": differences,
                },
            ),
        ]
        if self.checks.checks_primary_key:
            duplicates = self._confirmed_duplicates() if self.checks.duplicate_key_hashes() else []
            outcomes.append(
                self.checks.primary_key_outcome(
                    blocking=self._spec.primary_key_check is PrimaryKeyCheck.BLOCKING,
                    unique_index=self._plan.unique_index,
                    duplicates=duplicates,
                )
            )
        outcomes += self.checks.column_outcomes()
        return outcomes

    def _confirmed_duplicates(self) -> list[str]:
        # The main session may still be streaming later windows: ask on the side session.
        key = self._spec.primary_key
        statement = q.render(
            sql.SQL(
                "SELECT {key} FROM {relation} WHERE {predicate} GROUP BY {key}"
                " HAVING count(*) > 1 LIMIT 5"
            ).format(
                key=sql.SQL(", ").join(sql.Identifier(c) for c in key),
                relation=self._plan.relation.identifier(),
                predicate=q.window_predicate(
                    self._spec.partition_column, self.window, self._plan.partition_bound
                ),
            )
        )
        return [describe_key(key, row) for row in self._snapshot.side_query(statement)]


@dataclass
class OpenExtract:
    """An extract whose snapshot is open: the plan, and the windows to read in order.

    A window whose rows were refused or whose transform failed can be given up: the next one
    is read all the same, unless the source stream itself failed (`stream_failure`).
    """

    spec: TableSpec
    plan: TablePlan
    null_partition_rows: int
    partitions: Iterator[PartitionRead]
    _streams: PartStreams

    @property
    def readers(self) -> int:
        """How many sessions stream the rows (see `ConnectionSettings.readers_per_load`)."""
        return self._streams.readers

    @property
    def stream_failure(self) -> BaseException | None:
        """The error a source stream raised, after which no later window can be read."""
        return self._streams.failure


@dataclass(frozen=True)
class SourceWindows:
    """The windows one run reads from one source, before a table is named.

    What the Postgres IO manager hands an asset; `table` binds it to the table's declaration.
    """

    settings: ConnectionSettings
    windows: tuple[PartitionWindow, ...]

    @property
    def span(self) -> str:
        """The windows' keys as `first` or `first...last`."""
        first, last = self.windows[0].key, self.windows[-1].key
        return first if first == last else f"{first}...{last}"

    def table(
        self, spec: TableSpec, *, reader: str, transform: Transform | None = None
    ) -> TableExtract:
        """These windows of the declared table; the session is named `<reader>/<span>`."""
        return TableExtract(spec, self.windows, self.settings, f"{reader}/{self.span}", transform)


class TableExtract:
    """The rows of some windows of one table, not yet read: what an asset receives as input.

    Nothing touches the database until `open()`; the asset can add its transform first with
    `with_transform`. The writer then opens the snapshot and pulls each window's frame through
    Polars' streaming engine, so memory does not grow with the window.
    """

    def __init__(
        self,
        spec: TableSpec,
        windows: Sequence[PartitionWindow],
        settings: ConnectionSettings,
        application_name: str,
        transform: Transform | None = None,
    ) -> None:
        if not windows:
            raise ValueError("an extract needs at least one window")
        self.spec = spec
        self.windows = tuple(windows)
        self.settings = settings
        self.application_name = application_name
        self.transform = transform

    def with_transform(self, transform: Transform | None) -> TableExtract:
        """The same extract with `transform` applied to every window's frame."""
        if transform is None:
            return self
        return TableExtract(
            self.spec, self.windows, self.settings, self.application_name, transform
        )

    @contextmanager
    def open(self) -> Generator[OpenExtract]:
        """Open the snapshot, plan the columns, check NULL partition rows, then read windows."""
        with Snapshot(self.settings, self.application_name) as snapshot:
            plan = snapshot.plan(self.spec)
            relation = plan.relation
            null_rows = int(
                snapshot.scalar(q.count_null_partition_rows(relation, self.spec.partition_column))
            )
            if null_rows and self.spec.null_partition_rows is NullPartitionRows.FAIL:
                raise ContractError(
                    f"{self.spec.qualified_name} has {null_rows} row(s) whose partition column "
                    f"{self.spec.partition_column!r} is NULL, so they belong to no partition; "
                    "fix them at the source, or set `null_partition_rows: report` to load the "
                    "rest and record the count"
                )
            snapshot.export_snapshot()
            alongside = self.settings.sessions_per_load > 1
            counts = WindowCounts(
                lambda: self._window_counts(snapshot, plan, side=alongside), alongside=alongside
            )
            stats = [
                ReadStats(window, counts, position) for position, window in enumerate(self.windows)
            ]
            try:
                parts = self._read_parts(snapshot, plan)
                streams = PartStreams.open(
                    snapshot,
                    parts,
                    self.settings,
                    lambda mine: q.select_windows(
                        plan.relation,
                        plan.select_list,
                        self.spec.partition_column,
                        mine,
                        plan.partition_bound,
                    ),
                )
                yield OpenExtract(
                    spec=self.spec,
                    plan=plan,
                    null_partition_rows=null_rows,
                    partitions=self._partitions(snapshot, plan, stats, streams),
                    _streams=streams,
                )
            finally:
                # The side session closes with the snapshot: not while the counts still run.
                counts.wait()

    def _read_parts(self, snapshot: Snapshot, plan: TablePlan) -> list[q.ReadPart]:
        """The parts the rows are read in: one per window, or ranges of heap pages of one.

        A single window is split into page ranges only when there are further readers to share
        them, the table is a plain one, and the server would read the window by scanning the
        whole heap anyway: the ranges, read in order, give the rows of that very scan.
        """
        parts = q.window_parts(self.windows)
        if self.settings.readers_per_load == 1 or len(parts) > 1:
            return parts
        relkind, size, block, version = snapshot.query(q.heap_facts(plan.relation))[0]
        if relkind != "r" or int(version) < TID_RANGE_SCAN_VERSION:
            return parts
        read = q.select_windows(
            plan.relation, plan.select_list, self.spec.partition_column, parts, plan.partition_bound
        )
        explained = snapshot.query(q.explain_json(read), copy=False)[0][0]
        if scan_node(str(explained)) != "Seq Scan":
            return parts
        block = int(block)
        pages = -(-int(size) // block)  # rounded up: the last page may be partly filled
        part_pages = max(
            self.settings.batch_size_hint_bytes // block, -(-pages // MAX_PAGE_RANGES), 1
        )
        firsts = list(range(0, pages, part_pages))
        if len(firsts) < 2:
            return parts
        window = self.windows[0]
        return [
            q.ReadPart(
                ordinal,
                0,
                window,
                q.PageRange(first, firsts[ordinal + 1] if ordinal + 1 < len(firsts) else None),
            )
            for ordinal, first in enumerate(firsts)
        ]

    def _partitions(
        self,
        snapshot: Snapshot,
        plan: TablePlan,
        stats: Sequence[ReadStats],
        streams: PartStreams,
    ) -> Iterator[PartitionRead]:
        spec = self.spec
        for position, window in enumerate(self.windows):
            checks = RowChecks(
                spec.primary_key,
                spec.columns,
                hash_keys=plan.unique_index is None,
                check_primary_key=spec.primary_key_check is not PrimaryKeyCheck.OFF,
            )
            yield PartitionRead(
                window,
                stats[position],
                checks,
                self.transform,
                snapshot,
                spec,
                plan,
                lambda position=position, checks=checks: read_batches(
                    streams.window(position), plan, spec, stats[position], checks
                ),
            )

    def _window_counts(
        self, snapshot: Snapshot, plan: TablePlan, *, side: bool
    ) -> list[WindowCount]:
        """Each window's count and fingerprint, in one query in the read's snapshot.

        On the load's own session before the rows, or (`side`) on the second session that
        imports the snapshot, while the rows stream on the first.
        """
        spec = self.spec
        run = snapshot.side_query if side else snapshot.query
        rows = run(
            q.window_stats(
                plan.relation,
                spec.partition_column,
                self.windows,
                plan.partition_bound,
                q.fingerprint_aggregates(spec.change_column, spec.fingerprint_columns),
            )
        )
        counts: list[WindowCount] = []
        for ordinal, count, newest, digest in rows:
            if int(ordinal) != len(counts):
                raise ExtractError(f"window counts out of order at window {len(counts)}")
            fingerprint = Fingerprint(int(count), str(newest) if newest else None, str(digest))
            counts.append(WindowCount(int(count), fingerprint))
        if len(counts) != len(self.windows):
            raise ExtractError(f"{len(counts)} window counts for {len(self.windows)} windows")
        return counts


TID_RANGE_SCAN_VERSION = 140000
"""Postgres 14 added TID range scans, which read a range of heap pages without the rest."""
MAX_PAGE_RANGES = 256
"""At most this many page ranges per window: each is one branch of a reader's statement."""


def scan_node(explained: str) -> str | None:
    """The node type at the top of an `EXPLAIN (FORMAT JSON)` plan (None if unreadable)."""
    try:
        node = json.loads(explained)[0]["Plan"]["Node Type"]
    except (ValueError, LookupError, TypeError):
        return None
    return node if isinstance(node, str) else None


class PartStreams:
    """A read's parts, streamed by one or more sessions of its snapshot, handed out by window.

    Reader `i` streams parts `i`, `i + n`, `i + 2n`, ... of `n` readers as one statement, on a
    thread, a few batches ahead; the writer takes the parts in order, so the rows come in the
    same order as from one reader. The first reader is the load's own session; the others
    import its snapshot.
    """

    def __init__(self, parts: Sequence[q.ReadPart], splitters: Sequence[WindowSplitter]) -> None:
        self._splitters = tuple(splitters)
        self._parts_of: dict[int, list[q.ReadPart]] = {}
        for part in parts:
            self._parts_of.setdefault(part.position, []).append(part)

    @classmethod
    def open(
        cls,
        snapshot: Snapshot,
        parts: Sequence[q.ReadPart],
        settings: ConnectionSettings,
        statement: Callable[[Sequence[q.ReadPart]], str],
    ) -> PartStreams:
        """Streams of `parts` over up to `readers_per_load` sessions, started at once if several.

        The readers share the read-ahead: each holds `read_ahead_batches / readers` batches
        (at least one), so several readers keep about as much in memory as one.
        """
        count = max(min(settings.readers_per_load, len(parts)), 1)
        depth = max(settings.read_ahead_batches // count, 1)
        sessions = [snapshot] + [snapshot.reader() for _ in range(count - 1)]
        splitters = [
            WindowSplitter(
                lambda session=session, mine=parts[i::count]: session.stream(statement(mine), depth)
            )
            for i, session in enumerate(sessions)
        ]
        if count > 1:
            for splitter in splitters:
                splitter.start()
        return cls(parts, splitters)

    @property
    def readers(self) -> int:
        """How many sessions stream the parts."""
        return len(self._splitters)

    @property
    def failure(self) -> BaseException | None:
        """The first error a reader's stream raised, if one did."""
        return next((s.failure for s in self._splitters if s.failure is not None), None)

    def window(self, position: int) -> Iterator[pa.RecordBatch]:
        """The batches of window `position`: its parts' rows, part after part."""
        for part in self._parts_of[position]:
            yield from self._splitters[part.ordinal % len(self._splitters)].window(part.ordinal)


class WindowSplitter:
    """Hands out the rows of one multi-window stream, window by window, in order.

    Rows arrive grouped by window position (see `etl_assets.lib.sql.select_windows`); a batch
    that straddles two windows is cut, and the rest kept for the next window. A window may be
    skipped or given up part way (its rows were refused, its transform failed): the rows of
    earlier windows still in the stream are passed over when a later window is asked for. If
    the stream itself fails, `failure` says so and no later window can be read.
    """

    def __init__(self, open_stream: Callable[[], Iterator[pa.RecordBatch]]) -> None:
        self._open_stream = open_stream
        self._stream: Iterator[pa.RecordBatch] | None = None
        self._pending: pa.RecordBatch | None = None
        self._next = 0
        self.failure: BaseException | None = None
        """The error the stream itself raised, if it did."""

    def start(self) -> None:
        """Start the stream now, so that it reads ahead before its first window is asked for."""
        if self._stream is None:
            self._stream = self._open_stream()
            self._pending = self._read()

    def window(self, position: int) -> Iterator[pa.RecordBatch]:
        """The batches of window `position` (without the position column)."""
        if position < self._next:
            raise ExtractError(
                f"window {position} read out of order (windows up to {self._next - 1} were "
                "read already): each window's frame must be written once, in order"
            )
        self._next = position + 1
        if self.failure is not None:
            raise ExtractError(
                f"the source stream failed before window {position}: {self.failure}"
            ) from self.failure
        if self._stream is None:
            self._stream = self._open_stream()
        while True:
            batch = self._pending if self._pending is not None else self._read()
            self._pending = None
            if batch is None:
                return
            # Ordinals ascend through the stream: earlier windows' leftover rows come first,
            # then this window's, then later windows'.
            ordinals = _int32_values(batch, q.WINDOW_ORDINAL)
            first = int(np.searchsorted(ordinals, position, "left"))
            end = int(np.searchsorted(ordinals, position, "right"))
            if end < batch.num_rows:
                self._pending = batch.slice(end)
            if end > first:
                yield batch.slice(first, end - first).drop_columns([q.WINDOW_ORDINAL])
            if self._pending is not None:
                return

    def _read(self) -> pa.RecordBatch | None:
        assert self._stream is not None
        try:
            return next(self._stream, None)
        except BaseException as error:
            self.failure = error
            raise


def _int32_values(batch: pa.RecordBatch, name: str) -> np.ndarray[Any, np.dtype[np.int32]]:
    """The values of a non-null int32 column, read straight from its buffer.

    (pyarrow's own conversions to and from Python or numpy import pandas when it is
    installed: a second and ~60 MB for a process that never uses it.)
    """
    column = batch.column(name)
    if column.type != pa.int32() or column.null_count:
        raise ExtractError(f"{name} must be a non-null int32 column, got {column.type}")
    data = column.buffers()[1]
    assert data is not None
    values = np.frombuffer(memoryview(data), dtype=np.int32, count=column.offset + len(column))
    return values[column.offset :]


AS_PLANNED = "as planned"
"""What `written_vs_planned` says of a file with exactly the planned columns and types."""


def written_vs_planned(planned: pa.Schema, written: pa.Schema) -> str:
    """How the written file differs from the plan: columns dropped, retyped, added or moved."""
    notes: list[str] = []
    for name in planned.names:
        if name not in written.names:
            notes.append(f"{name}: not written")
        elif written.field(name).type != planned.field(name).type:
            notes.append(
                f"{name}: planned {planned.field(name).type}, written {written.field(name).type}"
            )
    added = [name for name in written.names if name not in planned.names]
    if added:
        notes.append(f"not planned: {', '.join(added)}")
    if not notes and planned.names != written.names:
        notes.append(f"columns in the order {', '.join(written.names)}")
    return "; ".join(notes) or AS_PLANNED


def read_batches(
    batches: Iterator[pa.RecordBatch],
    plan: TablePlan,
    spec: TableSpec,
    stats: ReadStats,
    checks: RowChecks,
) -> Iterator[pa.RecordBatch]:
    """Each batch refused if it holds an unrepresentable value, converted, checked, counted.

    The batches come out in the plan's frame types (`TablePlan.frame_schema`).
    """
    if stats.batches or stats.complete:
        raise ExtractError(
            f"window {stats.window.key} was read twice: the transform must use its input once "
            "(add .cache() where the plan reuses it)"
        )
    for batch in batches:
        if plan.hazards:
            refuse_unrepresentable(batch, plan, spec)
        converted = to_plan(batch, plan)
        checks.observe_batch(converted)
        stats.batches += 1
        stats.rows_read += converted.num_rows
        stats.arrow_bytes += converted.nbytes
        yield converted
    stats.complete = True


def lazy_frame(
    schema: pl.Schema,
    open_frames: Callable[[], Iterator[pl.DataFrame]],
    name: str,
) -> pl.LazyFrame:
    """A LazyFrame whose rows are pulled from `open_frames()` when the plan executes.

    Projections, predicates and row limits that Polars pushes down are applied here frame by
    frame. The underlying stream is always drained to the end, even under a row limit, so the
    read's row count is complete and the connection is left ready for the next statement.
    """

    def source(
        with_columns: list[str] | None,
        predicate: pl.Expr | None,
        n_rows: int | None,
        batch_size: int | None,
    ) -> Iterator[pl.DataFrame]:
        remaining = n_rows
        frames = open_frames()
        try:
            for frame in frames:
                if remaining is not None and remaining <= 0:
                    continue
                if predicate is not None:
                    frame = frame.filter(predicate)  # noqa: PLW2901 - narrowed step by step
                if with_columns is not None:
                    frame = frame.select(with_columns)  # noqa: PLW2901
                if remaining is not None:
                    frame = frame.head(remaining)  # noqa: PLW2901
                    remaining -= frame.height
                yield frame
        finally:
            for _ in frames:
                pass

    return register_io_source(
        source, schema=schema, is_pure=False, explain_name="postgres", explain_detail=name
    )
