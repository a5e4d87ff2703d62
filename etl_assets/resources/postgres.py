"""The Postgres side: a source database resource and the IO manager that reads windows from it."""

from __future__ import annotations

import dagster as dg
from psycopg.conninfo import make_conninfo
from pydantic import Field

from etl_assets.lib.postgres.read import SourceWindows
from etl_assets.lib.postgres.session import MAX_READERS_PER_LOAD, ConnectionSettings
from etl_assets.lib.table.windows import PartitionWindow


class PostgresSource(dg.ConfigurableResource):
    """A Postgres database that tables are read from (read-only: it never writes).

    Settings not given here come from libpq's environment and files, as for `psql`:
    `PGHOST`, `PGPORT`, `PGDATABASE`, `PGUSER`, `PGPASSWORD`, `PGSSLMODE`, `PGSSLROOTCERT`,
    `~/.pgpass`, `PGSERVICE`.
    """

    dsn: str = Field(
        default="",
        description=(
            "libpq connection string or URI, e.g. postgresql://etl_reader@db:5432/shop. "
            "Bind with dg.EnvVar; keep the password out of it and use `password`."
        ),
    )
    password: str | None = Field(
        default=None,
        description="Password for the role in `dsn`; bind with dg.EnvVar, never a literal.",
    )
    sslmode: str | None = Field(
        default=None,
        description="libpq sslmode (disable, require, verify-ca, verify-full); overrides the DSN.",
    )
    sslrootcert: str | None = Field(
        default=None, description="Path of the CA certificate that verifies the server."
    )
    statement_timeout_seconds: int = Field(
        default=3600, gt=0, description="Longest a single read statement may run."
    )
    idle_in_transaction_timeout_seconds: int = Field(
        default=600,
        gt=0,
        description="Longest the read's snapshot may sit idle before the server ends it.",
    )
    connect_timeout_seconds: int = Field(
        default=10, gt=0, description="Longest to wait for a connection."
    )
    read_batch_mib: int = Field(
        default=4, gt=0, description="Arrow MiB per batch read from the server."
    )
    sessions_per_load: int = Field(
        default=1,
        ge=1,
        le=2,
        description=(
            "Sessions one load may hold at once. 1: the windows' counts and fingerprints are "
            "taken before their rows, on the load's one session. 2: on a second session "
            "sharing the snapshot while the rows stream, at the cost of a second connection."
        ),
    )
    readers_per_load: int = Field(
        default=1,
        ge=1,
        le=MAX_READERS_PER_LOAD,
        description=(
            "Sessions streaming one load's rows side by side, all in its snapshot: a range "
            "run's windows, or the heap pages of one window the server reads whole, are "
            "shared out among them; the files are the same as with one."
        ),
    )

    def connection_settings(self) -> ConnectionSettings:
        """The settings the extract code connects with."""
        overrides = {
            key: value
            for key, value in (("sslmode", self.sslmode), ("sslrootcert", self.sslrootcert))
            if value
        }
        return ConnectionSettings(
            conninfo=make_conninfo(self.dsn, **overrides),
            password=self.password,
            statement_timeout_ms=self.statement_timeout_seconds * 1000,
            idle_in_transaction_timeout_ms=self.idle_in_transaction_timeout_seconds * 1000,
            connect_timeout_s=self.connect_timeout_seconds,
            batch_size_hint_bytes=self.read_batch_mib * 1024 * 1024,
            sessions_per_load=self.sessions_per_load,
            readers_per_load=self.readers_per_load,
        )


class PostgresWindowIOManager(dg.ConfigurableIOManager):
    """Hands an asset the time windows of the partitions its run targets, on this source.

    What it returns, `SourceWindows`, reads nothing yet. The asset binds it to its table
    (`SourceWindows.table`): the table's declaration is captured by the asset built from it,
    so it never travels through Dagster. The lake then opens one `REPEATABLE READ READ ONLY`
    snapshot and streams every window through it. The IO manager owns where and when (the
    source, the windows of the run's partitions, cut in the partitions' own timezone); the
    asset owns what (the table). Source tables are never written: `handle_output` refuses.
    """

    source: PostgresSource = Field(description="The database the tables are read from.")

    def load_input(self, context: dg.InputContext) -> SourceWindows:
        """The windows of every partition of this input, in partition order."""
        name = context.asset_key.to_user_string()
        if not context.has_asset_partitions:
            raise dg.Failure(
                f"{name} is read by time window, but the run targets no partition; launch it "
                "for a partition or a partition range"
            )
        partitions_def = context.asset_partitions_def
        if not isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
            raise dg.Failure(f"{name} needs time-window partitions")
        windows = [
            PartitionWindow(key=key, start=window.start, end=window.end)
            for key in context.asset_partition_keys
            for window in [partitions_def.time_window_for_partition_key(key)]
        ]
        return SourceWindows(self.source.connection_settings(), tuple(windows))

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        """Sources are read-only."""
        raise dg.Failure("etl_assets never writes to a Postgres source")
