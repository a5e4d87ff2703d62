"""Reading a table's windows from Postgres in one read-only snapshot, as streamed Arrow batches.

One load opens one connection and one `REPEATABLE READ READ ONLY` transaction. Inside it, in
order: the catalog is read and every declared column planned (nothing is read if a column is
missing or unmappable); rows with a NULL partition column are counted; then for each window its
`count(*)` is taken and its rows are streamed through `COPY (SELECT ...) TO STDOUT` by the ADBC
driver. Counts and rows come from the same snapshot, so they must agree exactly.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self

import adbc_driver_postgresql.dbapi as adbc  # pyright: ignore[reportMissingTypeStubs]
import polars as pl
import pyarrow as pa
from polars.io.plugins import register_io_source
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from etl_assets.lib import sql as q
from etl_assets.lib.arrow_types import conform_batch, polars_schema
from etl_assets.lib.pg_types import (
    CatalogColumn,
    CatalogType,
    ContractError,
    TablePlan,
    catalog_column_from_row,
    catalog_type_from_row,
    columns_query,
    plan_table,
    types_query,
)
from etl_assets.lib.tables import NullPartitionRows, TableSpec
from etl_assets.lib.transforms import Transform
from etl_assets.lib.windows import PartitionWindow


class ExtractError(RuntimeError):
    """Reading from the source failed; the message says which table and window."""


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

    def session_conninfo(self, application_name: str) -> str:
        """The libpq connection string for one named session, with its time limits.

        Anything not given here (host, user, password, sslmode, ...) falls back to libpq's own
        environment variables and files (`PGHOST`, `PGPASSWORD`, `~/.pgpass`, ...).
        """
        base = conninfo_to_dict(self.conninfo)
        limits = (
            f"-c statement_timeout={int(self.statement_timeout_ms)}"
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


@dataclass
class ReadStats:
    """What one window's read saw; filled in while its rows stream."""

    window: PartitionWindow
    snapshot_rows: int
    """`count(*)` of the window in the read's snapshot."""
    rows_read: int = 0
    batches: int = 0
    arrow_bytes: int = 0
    seconds: float = 0.0
    complete: bool = False

    def check_complete(self, table: str) -> None:
        """Raise unless every row of the window was read, and no more."""
        if not self.complete:
            raise ExtractError(f"{table} window {self.window.key}: the read did not finish")
        if self.rows_read != self.snapshot_rows:
            raise ExtractError(
                f"{table} window {self.window.key}: read {self.rows_read} rows but the "
                f"snapshot counts {self.snapshot_rows}"
            )


BATCH_SIZE_HINT_OPTION = "adbc.postgresql.batch_size_hint_bytes"


class _Statement(Protocol):
    def set_options(self, **options: str) -> None: ...


class _Cursor(Protocol):
    adbc_statement: _Statement

    def execute(self, operation: str) -> None: ...
    def fetchall(self) -> list[tuple[Any, ...]]: ...
    def fetch_record_batch(self) -> pa.RecordBatchReader: ...
    def close(self) -> None: ...


class Snapshot:
    """One Postgres session holding a `REPEATABLE READ READ ONLY` transaction."""

    def __init__(self, settings: ConnectionSettings, application_name: str) -> None:
        self._settings = settings
        self._application_name = application_name
        self._connection: Any = None
        self._streaming = threading.Lock()

    def __enter__(self) -> Self:
        try:
            self._connection = adbc.connect(
                self._settings.session_conninfo(self._application_name), autocommit=True
            )
        except Exception as error:
            message = self._settings.redact(str(error))
            raise ExtractError(
                f"cannot connect to {self._settings.describe()}: {message}"
            ) from None
        self._execute(q.begin_snapshot())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            # Read-only: COMMIT and ROLLBACK are the same; ROLLBACK also works after an error.
            cursor = connection.cursor()
            cursor.execute("ROLLBACK")
            cursor.close()
        except Exception:  # noqa: S110 - the connection is closed below whatever happened
            pass
        finally:
            connection.close()

    def query(self, statement: str) -> list[tuple[Any, ...]]:
        """All rows of a small query."""
        cursor = self._cursor()
        try:
            cursor.execute(statement)
            return cursor.fetchall()
        finally:
            cursor.close()

    def scalar(self, statement: str) -> Any:
        """The single value of a one-row, one-column query."""
        rows = self.query(statement)
        return rows[0][0]

    def plan(self, spec: TableSpec) -> TablePlan:
        """Plan every declared column against the live catalog (see `etl_assets.lib.pg_types`)."""
        relation = q.Relation(spec.schema, spec.table)
        columns = [catalog_column_from_row(r) for r in self.query(columns_query(relation))]
        types = self._types_for(columns)
        return plan_table(relation, columns, types, spec.read_columns, spec.partition_column)

    def stream(self, statement: str) -> Iterator[pa.RecordBatch]:
        """The rows of `statement` as Arrow batches, pulled from the server as they are used."""
        if not self._streaming.acquire(blocking=False):
            raise ExtractError("a window is already streaming on this snapshot's connection")
        cursor = self._cursor()
        try:
            cursor.adbc_statement.set_options(
                **{BATCH_SIZE_HINT_OPTION: str(self._settings.batch_size_hint_bytes)}
            )
            cursor.execute(statement)
            reader = cursor.fetch_record_batch()
            yield from reader
        finally:
            cursor.close()
            self._streaming.release()

    def _types_for(self, columns: Sequence[CatalogColumn]) -> dict[int, CatalogType]:
        types: dict[int, CatalogType] = {}
        wanted = {c.type_oid for c in columns}
        while wanted:
            for row in self.query(types_query(wanted)):
                found = catalog_type_from_row(row)
                types[found.oid] = found
            referenced = {t.base_oid for t in types.values() if t.kind == "d"}
            referenced |= {t.element_oid for t in types.values() if t.element_oid}
            wanted = referenced - types.keys()
        return types

    def _cursor(self) -> _Cursor:
        if self._connection is None:
            raise ExtractError("the snapshot is not open")
        return self._connection.cursor()

    def _execute(self, statement: str) -> None:
        cursor = self._cursor()
        try:
            cursor.execute(statement)
        finally:
            cursor.close()


@dataclass
class PartitionRead:
    """One window of an open extract: its rows as a lazy frame, and what reading them saw."""

    window: PartitionWindow
    frame: pl.LazyFrame
    stats: ReadStats


@dataclass
class OpenExtract:
    """An extract whose snapshot is open: the plan, and the windows to read in order."""

    spec: TableSpec
    plan: TablePlan
    null_partition_rows: int
    partitions: Iterator[PartitionRead]


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
            yield OpenExtract(
                spec=self.spec,
                plan=plan,
                null_partition_rows=null_rows,
                partitions=self._partitions(snapshot, plan),
            )

    def _partitions(self, snapshot: Snapshot, plan: TablePlan) -> Iterator[PartitionRead]:
        for window in self.windows:
            count = q.count_window(
                plan.relation, self.spec.partition_column, window, plan.partition_bound
            )
            stats = ReadStats(window=window, snapshot_rows=int(snapshot.scalar(count)))
            statement = q.select_window(
                plan.relation,
                plan.select_list,
                self.spec.partition_column,
                window,
                plan.partition_bound,
            )
            frame = frame_from_batches(
                plan.arrow_schema,
                lambda statement=statement, stats=stats: _counted(
                    snapshot.stream(statement), plan.arrow_schema, stats
                ),
                name=f"{self.spec.qualified_name} {window.key}",
            )
            if self.transform is not None:
                frame = self.transform(frame)
            yield PartitionRead(window=window, frame=frame, stats=stats)


def _counted(
    batches: Iterator[pa.RecordBatch], schema: pa.Schema, stats: ReadStats
) -> Iterator[pa.RecordBatch]:
    started = time.perf_counter()
    if stats.batches or stats.complete:
        raise ExtractError(
            f"window {stats.window.key} was read twice: the transform must use its input once "
            "(add .cache() where the plan reuses it)"
        )
    for batch in batches:
        conformed = conform_batch(batch, schema)
        stats.batches += 1
        stats.rows_read += conformed.num_rows
        stats.arrow_bytes += conformed.nbytes
        yield conformed
    stats.complete = True
    stats.seconds = time.perf_counter() - started


def frame_from_batches(
    schema: pa.Schema,
    open_batches: Callable[[], Iterator[pa.RecordBatch]],
    name: str,
) -> pl.LazyFrame:
    """A LazyFrame whose rows are pulled from `open_batches()` when the plan executes.

    Projections, predicates and row limits that Polars pushes down are applied here batch by
    batch. The underlying stream is always drained to the end, even under a row limit, so the
    read's row count is complete and the connection is left ready for the next statement.
    """
    frame_schema = polars_schema(schema)

    def source(
        with_columns: list[str] | None,
        predicate: pl.Expr | None,
        n_rows: int | None,
        batch_size: int | None,
    ) -> Iterator[pl.DataFrame]:
        remaining = n_rows
        batches = open_batches()
        try:
            for batch in batches:
                if remaining is not None and remaining <= 0:
                    continue
                frame = pl.from_arrow(batch)
                assert isinstance(frame, pl.DataFrame)
                if predicate is not None:
                    frame = frame.filter(predicate)
                if with_columns is not None:
                    frame = frame.select(with_columns)
                if remaining is not None:
                    frame = frame.head(remaining)
                    remaining -= frame.height
                yield frame
        finally:
            for _ in batches:
                pass

    return register_io_source(
        source, schema=frame_schema, is_pure=False, explain_name="postgres", explain_detail=name
    )


def now_utc() -> dt.datetime:
    """The current time, timezone-aware (UTC)."""
    return dt.datetime.now(dt.UTC)
