"""One Postgres session holding one read-only snapshot: connecting, naming, limiting, querying.

Every session the project opens (loads, sensors, reconciliation, introspect) is a `Snapshot`:
read-only from its first statement (`default_transaction_read_only` as a startup option, so the
driver's own catalog queries at connect are read-only too), named (`application_name`),
time-limited (`statement_timeout`, `idle_in_transaction_session_timeout`), with session
settings that make every text rendering independent of the server's defaults and the client's
environment. The ADBC driver connects once before the session, with the same name and settings,
to read the server's type catalog.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import adbc_driver_manager
import adbc_driver_postgresql  # pyright: ignore[reportMissingTypeStubs]
import pyarrow as pa
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from etl_assets.lib.errors import ExtractError
from etl_assets.lib.pipeline import read_ahead
from etl_assets.lib.postgres import sql as q
from etl_assets.lib.postgres.catalog import (
    CatalogColumn,
    CatalogType,
    TableCatalog,
    catalog_column_from_row,
    catalog_type_from_row,
    columns_query,
    referenced_type_oids,
    types_query,
    unique_indexes_query,
)
from etl_assets.lib.postgres.types import TablePlan, partition_column_bound, plan_table
from etl_assets.lib.table.spec import TableSpec

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
    batch_size_hint_bytes: int = 4 * 1024 * 1024
    """Arrow bytes per batch the driver aims for: bounds memory, keeps the pipeline moving."""
    read_ahead_batches: int = 2
    """Batches the driver may decode ahead of the writer, on its own thread."""
    sessions_per_load: int = 1
    """Sessions one load may hold at once. With 1, the windows' counts and fingerprints are
    taken before their rows on the load's session; with 2, on a second session importing the
    same snapshot while the rows stream (the side session that confirms duplicate keys)."""
    readers_per_load: int = 1
    """Sessions of one load streaming its rows, all in the same snapshot. With more than one,
    a load's windows (or the heap pages of a single window the server reads whole) are split
    into parts that the readers stream side by side; the writer takes the parts in order, so
    the files are the same as with one reader."""

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


MAX_READERS_PER_LOAD = 8
"""The most sessions one load may stream its rows through."""

BATCH_SIZE_HINT_OPTION = "adbc.postgresql.batch_size_hint_bytes"
USE_COPY_OPTION = "adbc.postgresql.use_copy"


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
        self._readers: list[Snapshot] = []
        """Further sessions streaming rows of this snapshot (see `reader`)."""
        self._side_lock = threading.Lock()
        """Side queries come from more than one thread (counts alongside the rows, checks)."""

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
        readers, self._readers = self._readers, []
        for reader in readers:
            reader.__exit__(None, None, None)
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

    def query(self, statement: str, *, copy: bool = True) -> list[tuple[Any, ...]]:
        """All rows of a small query, as tuples of Python values.

        `copy=False` runs it as a plain query, for statements `COPY` cannot wrap (`EXPLAIN`).
        """
        handle = self._statement(statement)
        try:
            if not copy:
                handle.set_options(**{USE_COPY_OPTION: "false"})
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
        with self._side_lock:
            if self._side is None:
                self._side = self._importer(self._exported, f"{self._application_name} (side)"[:63])
            return self._side.query(statement)

    def reader(self) -> Snapshot:
        """A further session importing this snapshot, to stream rows beside this one.

        Named `<name> (reader N)`; closed with this session. Needs `export_snapshot` first.
        """
        if self._exported is None:
            raise ExtractError("further readers need export_snapshot() first")
        suffix = f" (reader {len(self._readers) + 1})"
        name = self._application_name[: 63 - len(suffix)] + suffix
        reader = self._importer(self._exported, name)
        self._readers.append(reader)
        return reader

    def _importer(self, snapshot_id: str, application_name: str) -> Snapshot:
        """An open session named `application_name` that adopts the exported snapshot."""
        session = Snapshot(self._settings, application_name)
        session._snapshot_id = snapshot_id
        return session.__enter__()

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
        """Plan every declared column against the live catalog (see `lib/postgres/types.py`)."""
        catalog = self.catalog(q.Relation(spec.table_schema, spec.table))
        return plan_table(
            catalog.relation,
            catalog.columns,
            catalog.types,
            spec.read_column_specs,
            spec.partition_column,
            primary_key=spec.primary_key,
            unique_indexes=catalog.unique_indexes,
        )

    def partition_bound(self, spec: TableSpec) -> q.BoundKind:
        """How the table's live partition column compares with window bounds."""
        catalog = self.catalog(q.Relation(spec.table_schema, spec.table))
        return partition_column_bound(
            catalog.relation, catalog.columns, catalog.types, spec.partition_column
        )

    def stream(self, statement: str, depth: int | None = None) -> Iterator[pa.RecordBatch]:
        """The rows of `statement` as Arrow batches, decoded a few batches ahead on a thread.

        The driver decodes with the GIL released, so decoding overlaps with whatever the
        caller does with each batch; at most `depth` (by default `read_ahead_batches`) wait in
        memory.
        """
        if not self._streaming.acquire(blocking=False):
            raise ExtractError("a window is already streaming on this snapshot's connection")
        stream = self._stream(statement, depth or self._settings.read_ahead_batches)
        self._active_stream = stream
        return stream

    def _stream(self, statement: str, depth: int) -> Generator[pa.RecordBatch]:
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
            yield from read_ahead(reader, depth, name="postgres-read-ahead")
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
