"""Reading a table's windows from Postgres in one read-only snapshot, as streamed Arrow batches.

One load reads in one session and one `REPEATABLE READ READ ONLY` transaction (the ADBC driver
connects once before it, with the same name and settings, to read the server's type catalog).
Inside it, in order: the catalog is read and every declared column planned against the
contract (nothing is read if the table drifted or a column is unmappable); rows with a NULL
partition column are counted; then for each window its `count(*)` is taken and its rows are
streamed through `COPY (SELECT ...) TO STDOUT` by the ADBC driver. Counts and rows come from
the same snapshot, so they must agree exactly. Each batch is checked for values no Arrow type
holds (refused with the row's primary key), converted to the plan's types and observed by the
row checks.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import adbc_driver_manager  # pyright: ignore[reportMissingTypeStubs]
import adbc_driver_postgresql  # pyright: ignore[reportMissingTypeStubs]
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from polars.io.plugins import register_io_source
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from etl_assets.lib.arrow_types import (
    conform_array,
    conform_batch,
    frame_from_arrow,
    polars_schema,
    struct_from_fields,
)
from etl_assets.lib.errors import ContractError, ExtractError, UnrepresentableValueError
from etl_assets.lib.incremental import Fingerprint
from etl_assets.lib.pipeline import read_ahead
from etl_assets.lib.postgres import sql as q
from etl_assets.lib.postgres.types import (
    HAZARD_ALIAS,
    CatalogColumn,
    CatalogType,
    ReadKind,
    TablePlan,
    catalog_column_from_row,
    catalog_type_from_row,
    columns_query,
    plan_table,
    referenced_type_oids,
    types_query,
    unique_indexes_query,
)
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

# Settings that make every text rendering (`as: text`, timetz) the same whatever the server's
# defaults or the client's environment (PGTZ, PGDATESTYLE, PGOPTIONS, ...): the same rows always
# give the same bytes. They are SET after connecting, so nothing libpq applies overrides them.
DETERMINISTIC_SESSION = (
    "SET TimeZone = 'UTC'",
    "SET DateStyle = 'ISO, YMD'",
    "SET IntervalStyle = 'postgres'",
    "SET extra_float_digits = 3",
    "SET bytea_output = 'hex'",
    "SET lc_monetary = 'C'",
    "SET lc_numeric = 'C'",
    "SET client_encoding = 'UTF8'",
    # A multi-window read is a UNION ALL whose branches must run in order, one after another.
    "SET max_parallel_workers_per_gather = 0",
    # A scan that joins another one already running on the table would start mid-table:
    # starting at the beginning, the same rows come in the same order and make the same file.
    "SET synchronize_seqscans = off",
)


@dataclass(frozen=True)
class ConnectionSettings:
    """How to reach one Postgres source. `conninfo` may hold a password: never log it."""

    conninfo: str = field(repr=False)
    password: str | None = field(default=None, repr=False)
    statement_timeout_ms: int = 3_600_000
    idle_in_transaction_timeout_ms: int = 600_000
    connect_timeout_s: int = 10
    batch_size_hint_bytes: int = 8 * 1024 * 1024
    """Arrow bytes per batch the driver aims for: bounds memory, keeps the pipeline moving."""
    read_ahead_batches: int = 2
    """Batches the driver may decode ahead of the writer, on its own thread."""

    def session_conninfo(self, application_name: str) -> str:
        """The libpq connection string for one named, read-only session, with its time limits.

        The settings travel in the startup packet, so they hold from the session's first
        statement: the ADBC driver's own catalog queries at connect run before the load's
        `BEGIN ... READ ONLY`. They come after any `options` of the DSN, so they win over it.
        Anything not given here (host, user, password, sslmode, ...) falls back to libpq's own
        environment variables and files (`PGHOST`, `PGPASSWORD`, `~/.pgpass`, ...).
        """
        base = conninfo_to_dict(self.conninfo)
        limits = (
            "-c default_transaction_read_only=on"
            f" -c statement_timeout={int(self.statement_timeout_ms)}"
            f" -c idle_in_transaction_session_timeout={int(self.idle_in_transaction_timeout_ms)}"
        )
        options = f"{base['options']} {limits}" if base.get("options") else limits
        extra: dict[str, Any] = {
            "application_name": application_name[:63],
            "options": options,
            "connect_timeout": base.get("connect_timeout") or self.connect_timeout_s,
        }
        if self.password:
            extra["password"] = self.password
        return make_conninfo(self.conninfo, **extra)

    def redact(self, text: str) -> str:
        """`text` with any password this source knows replaced by `***`."""
        secrets = [self.password, str(conninfo_to_dict(self.conninfo).get("password") or "")]
        for secret in secrets:
            if secret:
                text = text.replace(secret, "***")
        return re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", text)

    def describe(self) -> str:
        """`user@host:port/dbname` for messages, without secrets."""
        parts = conninfo_to_dict(self.conninfo)
        user = parts.get("user") or "$PGUSER"
        host = parts.get("host") or "$PGHOST"
        port = parts.get("port") or "5432"
        dbname = parts.get("dbname") or "$PGDATABASE"
        return f"{user}@{host}:{port}/{dbname}"


@dataclass(frozen=True)
class WindowCount:
    """A window's `count(*)` and fingerprint, taken in the read's snapshot."""

    rows: int
    fingerprint: Fingerprint


@dataclass
class ReadStats:
    """What one window's read saw; filled in while its rows stream."""

    window: PartitionWindow
    counted: WindowCount
    """The window's count and fingerprint, taken in the read's snapshot before its rows."""
    rows_read: int = 0
    batches: int = 0
    arrow_bytes: int = 0
    complete: bool = False

    @property
    def snapshot_rows(self) -> int:
        """`count(*)` of the window in the read's snapshot."""
        return self.counted.rows

    @property
    def fingerprint(self) -> Fingerprint:
        """The window's fingerprint in the read's snapshot."""
        return self.counted.fingerprint

    def check_complete(self, table: str) -> None:
        """Raise unless every row of the window was read, and no more."""
        if not self.complete:
            raise ExtractError(f"{table} window {self.window.key}: the read did not finish")
        if self.rows_read != self.snapshot_rows:
            raise ExtractError(
                f"{table} window {self.window.key}: read {self.rows_read} rows but the "
                f"snapshot counts {self.snapshot_rows}"
            )


@dataclass(frozen=True)
class TableCatalog:
    """The catalog's description of one table."""

    relation: q.Relation
    columns: Sequence[CatalogColumn]
    types: Mapping[int, CatalogType]
    unique_indexes: Sequence[tuple[str, Sequence[str]]]


BATCH_SIZE_HINT_OPTION = "adbc.postgresql.batch_size_hint_bytes"


class Snapshot:
    """One Postgres session holding a `REPEATABLE READ READ ONLY` transaction.

    Opening it connects twice, one connection after the other: the driver's `AdbcDatabase`
    connects to read the server's version and type catalog and disconnects, then the
    `AdbcConnection` opens the session itself. Both start read-only, named and time-limited
    (`ConnectionSettings.session_conninfo`).
    """

    def __init__(self, settings: ConnectionSettings, application_name: str) -> None:
        self._settings = settings
        self._application_name = application_name
        self._database: Any = None
        self._connection: Any = None
        self._streaming = threading.Lock()
        self._active_stream: Generator[pa.RecordBatch] | None = None
        self._snapshot_id: str | None = None
        """For a side session: the exported snapshot to adopt."""
        self._exported: str | None = None
        self._side: Snapshot | None = None

    def __enter__(self) -> Self:
        try:
            # The driver's low-level API: the DB-API layer on top would import pandas and
            # pyarrow.dataset, costing a second and ~60 MB per process for nothing used here.
            self._database = adbc_driver_postgresql.connect(
                self._settings.session_conninfo(self._application_name)
            )
            self._connection = adbc_driver_manager.AdbcConnection(self._database)
        except Exception as error:
            self._close_handles()
            message = self._settings.redact(str(error))
            raise ExtractError(
                f"cannot connect to {self._settings.describe()}: {message}"
            ) from None
        try:
            for statement in DETERMINISTIC_SESSION:
                self._execute(statement)
            self._execute(q.begin_snapshot())
            if self._snapshot_id is not None:
                # A side session of another snapshot: adopt that snapshot.
                self._execute(q.render(q.set_snapshot(self._snapshot_id)))
        except BaseException:
            self._close_handles()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        side, self._side = self._side, None
        if side is not None:
            side.__exit__(None, None, None)
        stream, self._active_stream = self._active_stream, None
        if stream is not None:
            # Stops its read-ahead thread before the connection under it goes away.
            stream.close()
        if self._connection is None:
            return
        try:
            # Read-only: COMMIT and ROLLBACK are the same; ROLLBACK also works after an error.
            self._execute("ROLLBACK")
        except Exception:  # noqa: S110 - the connection is closed below whatever happened
            pass
        finally:
            self._close_handles()

    def query(self, statement: str) -> list[tuple[Any, ...]]:
        """All rows of a small query, as tuples of Python values."""
        handle = self._statement(statement)
        try:
            stream, _ = handle.execute_query()
            table = pa.RecordBatchReader.from_stream(stream).read_all()
        finally:
            handle.close()
        columns = [column.to_pylist() for column in table.columns]
        return list(zip(*columns, strict=True))

    def export_snapshot(self) -> None:
        """Export the snapshot while the session is idle, so `side_query` can share it later."""
        self._exported = str(self.scalar("SELECT pg_export_snapshot()"))

    def side_query(self, statement: str) -> list[tuple[Any, ...]]:
        """A small query in this snapshot while this session may be busy streaming.

        It runs on a second session that imports the snapshot `export_snapshot` exported
        (opened on first use, closed with this one).
        """
        if self._exported is None:
            raise ExtractError("side queries need export_snapshot() before streaming")
        if self._side is None:
            side = Snapshot(self._settings, f"{self._application_name} (side)"[:63])
            side._snapshot_id = self._exported
            self._side = side.__enter__()
        return self._side.query(statement)

    def scalar(self, statement: str) -> Any:
        """The single value of a one-row, one-column query."""
        rows = self.query(statement)
        return rows[0][0]

    def catalog(self, relation: q.Relation) -> TableCatalog:
        """What the catalog says about a table: columns, their types, unique indexes."""
        columns = [catalog_column_from_row(r) for r in self.query(columns_query(relation))]
        unique_indexes = [
            (str(name), tuple(str(c) for c in index_columns))
            for name, index_columns in self.query(unique_indexes_query(relation))
        ]
        return TableCatalog(relation, columns, self._types_for(columns), unique_indexes)

    def plan(self, spec: TableSpec) -> TablePlan:
        """Plan every declared column against the live catalog (see `etl_assets.lib.postgres.types`)."""
        catalog = self.catalog(q.Relation(spec.schema, spec.table))
        return plan_table(
            catalog.relation,
            catalog.columns,
            catalog.types,
            spec.read_column_specs,
            spec.partition_column,
            primary_key=spec.primary_key,
            unique_indexes=catalog.unique_indexes,
        )

    def stream(self, statement: str) -> Iterator[pa.RecordBatch]:
        """The rows of `statement` as Arrow batches, decoded a few batches ahead on a thread.

        The driver decodes with the GIL released, so decoding overlaps with whatever the
        caller does with each batch; at most `read_ahead_batches` wait in memory.
        """
        if not self._streaming.acquire(blocking=False):
            raise ExtractError("a window is already streaming on this snapshot's connection")
        stream = self._stream(statement)
        self._active_stream = stream
        return stream

    def _stream(self, statement: str) -> Generator[pa.RecordBatch]:
        try:
            handle = self._statement(statement)
        except BaseException:
            self._streaming.release()
            raise
        try:
            handle.set_options(
                **{BATCH_SIZE_HINT_OPTION: str(self._settings.batch_size_hint_bytes)}
            )
            result, _ = handle.execute_query()
            reader = pa.RecordBatchReader.from_stream(result)
            yield from read_ahead(
                reader, self._settings.read_ahead_batches, name="postgres-read-ahead"
            )
        finally:
            handle.close()
            self._active_stream = None
            self._streaming.release()

    def _types_for(self, columns: Sequence[CatalogColumn]) -> dict[int, CatalogType]:
        types: dict[int, CatalogType] = {}
        wanted = {c.type_oid for c in columns}
        while wanted:
            for row in self.query(types_query(wanted)):
                found = catalog_type_from_row(row)
                types[found.oid] = found
            wanted = referenced_type_oids(types.values()) - types.keys()
        return types

    def _statement(self, statement: str) -> Any:
        if self._connection is None:
            raise ExtractError("the snapshot is not open")
        handle = adbc_driver_manager.AdbcStatement(self._connection)
        try:
            handle.set_sql_query(statement)
        except BaseException:
            handle.close()
            raise
        return handle

    def _execute(self, statement: str) -> None:
        handle = self._statement(statement)
        try:
            handle.execute_update()
        finally:
            handle.close()

    def _close_handles(self) -> None:
        connection, self._connection = self._connection, None
        database, self._database = self._database, None
        try:
            if connection is not None:
                connection.close()
        finally:
            if database is not None:
                database.close()


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
    _splitter: WindowSplitter

    @property
    def stream_failure(self) -> BaseException | None:
        """The error the source stream raised, after which no later window can be read."""
        return self._splitter.failure


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
            stats = self._window_stats(snapshot, plan)
            snapshot.export_snapshot()
            # One streaming statement reads every window in order; each window's frame pulls
            # its own rows from it.
            splitter = WindowSplitter(
                lambda: snapshot.stream(
                    q.select_windows(
                        plan.relation,
                        plan.select_list,
                        self.spec.partition_column,
                        self.windows,
                        plan.partition_bound,
                    )
                )
            )
            yield OpenExtract(
                spec=self.spec,
                plan=plan,
                null_partition_rows=null_rows,
                partitions=self._partitions(snapshot, plan, stats, splitter),
                _splitter=splitter,
            )

    def _partitions(
        self,
        snapshot: Snapshot,
        plan: TablePlan,
        stats: Sequence[ReadStats],
        splitter: WindowSplitter,
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
                    splitter.window(position), plan, spec, stats[position], checks
                ),
            )

    def _window_stats(self, snapshot: Snapshot, plan: TablePlan) -> list[ReadStats]:
        """Each window's count and fingerprint, in one query on the load's own session.

        Taken before the rows, not on a second session while they stream: a load holds one
        connection to the source (two only while duplicate keys are being confirmed).
        """
        spec = self.spec
        rows = snapshot.query(
            q.window_stats(
                plan.relation,
                spec.partition_column,
                self.windows,
                plan.partition_bound,
                q.fingerprint_aggregates(spec.change_column, spec.fingerprint_columns),
            )
        )
        stats: list[ReadStats] = []
        for (ordinal, count, newest, digest), window in zip(rows, self.windows, strict=True):
            if int(ordinal) != len(stats):
                raise ExtractError(f"window counts out of order at window {len(stats)}")
            fingerprint = Fingerprint(int(count), str(newest) if newest else None, str(digest))
            stats.append(ReadStats(window, WindowCount(int(count), fingerprint)))
        return stats


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
        f"{spec.schema}.{spec.table}.{column.name} ({column.declared_type}): the row with "
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
        else:
            arrays.append(conform_array(selected[0], column.frame_type))
    return pa.RecordBatch.from_arrays(arrays, schema=plan.frame_schema)


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
