"""The YAML component that declares one Postgres source and the tables copied from it."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, cast

import dagster as dg
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from etl_assets.components.incremental import build_change_sensor, build_reconcile_schedule
from etl_assets.components.table_assets import (
    build_freshness_checks,
    build_table_assets,
    postgres_io_manager_key,
    postgres_source_key,
)
from etl_assets.lib.errors import TransformError
from etl_assets.lib.incremental import parse_duration
from etl_assets.lib.table.contract import ColumnChecks, ColumnSpec, Representation
from etl_assets.lib.table.spec import (
    IncrementalSpec,
    NullPartitionRows,
    PrimaryKeyCheck,
    ReconcileCompare,
    ReconcileSpec,
    TableSpec,
)
from etl_assets.lib.table.transforms import load_transform
from etl_assets.lib.table.windows import Grain, parse_timezone, parse_window_start
from etl_assets.resources.postgres import PostgresSource, PostgresWindowIOManager

_CRON = re.compile(
    r"^\s*([0-9*/,\-]+|[A-Za-z]{3}(-[A-Za-z]{3})?)(\s+([0-9*/,\-]+|[A-Za-z]{3}(-[A-Za-z]{3})?)){4}\s*$"
)
SOURCE_NAME = r"^[a-z][a-z0-9_]{0,39}$"
ENV_VAR_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class SourceModel(dg.Resolvable, dg.Model):
    """Which Postgres database the tables come from, and how to reach it."""

    name: str = Field(
        pattern=SOURCE_NAME,
        description=(
            "Short name of the source (lowercase letters, digits, _). It is part of every asset "
            "key (raw/<name>/<schema>/<table>), of the IO manager key postgres_<name> and of "
            "the source resource key postgres_<name>_source."
        ),
    )
    dsn_env: str = Field(
        pattern=ENV_VAR_NAME,
        description=(
            "Name of the environment variable holding the libpq connection string or URI "
            "(e.g. postgresql://etl_reader@db:5432/shop?sslmode=verify-full). It may be empty: "
            "libpq then uses PGHOST, PGPORT, PGDATABASE, PGUSER, ..."
        ),
    )
    password_env: str | None = Field(
        default=None,
        pattern=ENV_VAR_NAME,
        description=(
            "Name of the environment variable holding the password. Without it, libpq's "
            "PGPASSWORD or ~/.pgpass apply."
        ),
    )
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] | None = (
        Field(default=None, description="libpq sslmode; overrides the one in the DSN.")
    )
    sslrootcert: str | None = Field(
        default=None, description="Path of the CA certificate that verifies the server."
    )
    statement_timeout_seconds: int = Field(
        default=3600, gt=0, description="Longest a single read statement may run on the source."
    )
    max_concurrent_extractions: int = Field(
        default=4,
        ge=1,
        description=(
            "At most this many partitions of this source's tables are extracted at once (the "
            "Dagster pool postgres_<name>); apply it with `etl-assets pools --apply`."
        ),
    )


class ColumnChecksModel(dg.Resolvable, dg.Model):
    """Data checks of one column, evaluated on every row read, reported per partition."""

    not_null: bool = Field(default=False, description="No row may hold NULL.")
    accepted_values: list[str | int | float | bool] | None = Field(
        default=None, min_length=1, description="Every non-NULL value must be one of these."
    )
    min: float | int | str | None = Field(
        default=None, description="Every non-NULL value must be >= this (numbers, dates as text)."
    )
    max: float | int | str | None = Field(
        default=None, description="Every non-NULL value must be <= this."
    )
    blocking: bool = Field(
        default=False,
        description=(
            "A failing blocking check keeps the partition from being published and fails the "
            "run; a non-blocking one is reported with the published partition."
        ),
    )

    def to_checks(self) -> ColumnChecks:
        """The plain form."""
        return ColumnChecks(
            not_null=self.not_null,
            accepted_values=tuple(self.accepted_values) if self.accepted_values else None,
            min=self.min,
            max=self.max,
            blocking=self.blocking,
        )


class ColumnModel(dg.Resolvable, dg.Model):
    """One column of the contract. A bare name in `columns` is a column with no pinned type."""

    name: str = Field(min_length=1, max_length=63, description="Column name, as in Postgres.")
    type: str | None = Field(
        default=None,
        description=(
            "The Postgres type the contract expects, as `format_type()` prints it (e.g. "
            "numeric(12,2), timestamp with time zone, text[]); the run fails if the live column "
            "has another type. Omitted: any type."
        ),
    )
    nullable: bool | None = Field(
        default=None,
        description="Whether the contract allows NULLs; the run fails if the live column differs.",
    )
    as_: Literal["text"] | None = Field(
        default=None,
        alias="as",
        description=(
            "Representation for a type or value with no exact Parquet mapping (money, inet, "
            "ranges, infinite timestamps, ...), or one a reader cannot read (uuid, time and "
            "numeric(p > 38) for Spark and Athena): text keeps each value as the type's output "
            "function writes it, exactly what psql and COPY print."
        ),
    )
    checks: ColumnChecksModel | None = Field(default=None, description="Data checks.")

    def to_spec(self) -> ColumnSpec:
        """The plain form."""
        return ColumnSpec(
            name=self.name,
            pg_type=self.type,
            nullable=self.nullable,
            representation=Representation(self.as_) if self.as_ else None,
            checks=self.checks.to_checks() if self.checks else ColumnChecks(),
        )


class IncrementalModel(dg.Resolvable, dg.Model):
    """Sensor-driven loading: closed windows, and closed windows whose rows changed later."""

    change_column: str = Field(
        min_length=1,
        description=(
            "A timestamptz or timestamp column every insert and update sets to its time "
            "(e.g. updated_at = now()), ideally indexed: the sensor reads ranges of it."
        ),
    )
    settle_lag: str = Field(
        default="10m",
        description="A window counts as closed this long after its end (30s, 10m, 2h, 1d).",
    )
    interval_seconds: int = Field(default=60, ge=10, description="Seconds between sensor ticks.")

    @field_validator("settle_lag")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    def to_spec(self) -> IncrementalSpec:
        """The plain form."""
        return IncrementalSpec(
            change_column=self.change_column,
            settle_lag=parse_duration(self.settle_lag),
            interval_seconds=self.interval_seconds,
        )


class ReconcileModel(dg.Resolvable, dg.Model):
    """A schedule that re-fingerprints recent closed partitions and reloads those that drifted."""

    cron: str = Field(description="When to reconcile, in the table's timezone, e.g. '15 3 * * *'.")
    partitions: int = Field(
        default=7, ge=1, le=1000, description="How many of the newest closed partitions to check."
    )
    compare: Literal["key", "rows"] = Field(
        default="key",
        description=(
            "key: row count, newest change and a hash of the primary keys (finds inserts and "
            "deletes); rows: a hash of every declared column (also finds silent updates)."
        ),
    )

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        return _checked_cron(value)

    def to_spec(self) -> ReconcileSpec:
        """The plain form."""
        return ReconcileSpec(
            cron=self.cron, partitions=self.partitions, compare=ReconcileCompare(self.compare)
        )


class TableModel(dg.Resolvable, dg.Model):
    """One source table copied to the lake, one partition per time window."""

    table_schema: str = Field(
        alias="schema",
        min_length=1,
        max_length=63,
        description="Postgres schema of the table (case-sensitive, unquoted).",
    )
    table: str = Field(
        min_length=1,
        max_length=63,
        description="Postgres table (or view) name (case-sensitive, unquoted).",
    )
    partition_column: str = Field(
        min_length=1,
        max_length=63,
        description=(
            "timestamptz, timestamp or date column that decides a row's partition: a row "
            "belongs to the window [start, end) containing its value. A timestamp without time "
            "zone is read as wall-clock time in `timezone`."
        ),
    )
    grain: Literal["hourly", "daily", "weekly", "monthly"] = Field(
        description="Window length. Weekly windows start on Monday."
    )
    start: str = Field(
        description="Start of the first window, a local date or datetime in `timezone`."
    )
    end: str | None = Field(
        default=None,
        description="End of the last window (exclusive); omitted, windows continue up to now.",
    )
    timezone: str = Field(default="UTC", description="IANA timezone the windows are cut in.")
    primary_key: list[str] = Field(
        min_length=1, description="Column(s) identifying a row; must be among `columns`."
    )
    columns: list[str | ColumnModel] = Field(
        min_length=1,
        description=(
            "The columns to read, in output order: names, or objects with name, type, "
            "nullable, as and checks (the contract; `etl-assets introspect` prints one). Only "
            "these are read: new columns at the source are ignored until declared here."
        ),
    )
    transform: str | None = Field(
        default=None,
        description=(
            "Dotted path of a function LazyFrame -> LazyFrame applied to each partition between "
            "read and write, e.g. etl_assets.defs.shop.transforms:clean_orders."
        ),
    )
    group: str | None = Field(default=None, description="Dagster asset group of the assets.")
    null_partition_rows: Literal["fail", "report"] = Field(
        default="fail",
        description=(
            "Rows whose partition column is NULL belong to no window. fail: the run fails and "
            "says how many; report: they are skipped, counted in metadata and logged."
        ),
    )

    max_partitions_per_run: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Backfill policy: a backfill reads at most this many partitions per run. Omitted, a "
            "backfill of any range is one run that reads its windows one after another in one "
            "snapshot and still publishes and records each partition on its own."
        ),
    )

    partition_name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description=(
            "Name of the lake's partition directories (<name>=<key>); defaults to the grain's: "
            "hour, day, week or month. It must differ from every column name."
        ),
    )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        parse_timezone(value)
        return value

    asset_name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_]+$",
        description=(
            "Last segment of the asset key raw/<source>/<schema>/<asset_name>; defaults to the "
            "table name (made key-safe: letters, digits and _, with a short hash otherwise)."
        ),
    )
    incremental: IncrementalModel | None = Field(
        default=None, description="Sensor-driven incremental loading (off without it)."
    )
    reconcile: ReconcileModel | None = Field(
        default=None, description="Scheduled reconciliation of recent partitions."
    )
    primary_key_check: Literal["warn", "blocking", "off"] = Field(
        default="warn",
        description=(
            "The per-partition check that the primary key is unique and never NULL: warn "
            "reports a failure, blocking also keeps the partition from being published."
        ),
    )
    freshness_deadline_cron: str | None = Field(
        default=None,
        description=(
            "Cron (in `timezone`) by which the newest closed partition must be materialized, "
            "e.g. '0 3 * * *': a freshness check fails after that deadline until it is."
        ),
    )

    preview_rows: int = Field(
        default=5,
        ge=0,
        le=50,
        description=(
            "Rows of each published partition shown as a markdown table in its "
            "materialization's metadata (stored in the Dagster event log); 0 turns it off."
        ),
    )
    preview_mask: list[str] = Field(
        default_factory=list,
        description=(
            "Columns whose values the preview shows as `***` (e-mail addresses, names, "
            "secrets): the lake holds them, the event log does not."
        ),
    )

    @field_validator("freshness_deadline_cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        return _checked_cron(value) if value is not None else None

    @field_validator("transform")
    @classmethod
    def _importable_transform(cls, value: str | None) -> str | None:
        # Imported while the YAML is validated, so a bad path is reported with its file and line.
        if value is not None:
            try:
                load_transform(value)
            except TransformError as error:
                raise ValueError(str(error)) from None
        return value

    @field_validator("primary_key")
    @classmethod
    def _no_duplicate_keys(cls, value: list[str]) -> list[str]:
        return _without_duplicates(value)

    @field_validator("columns")
    @classmethod
    def _no_duplicate_columns(cls, value: list[str | ColumnModel]) -> list[str | ColumnModel]:
        _without_duplicates([c if isinstance(c, str) else c.name for c in value])
        return value

    @property
    def column_names(self) -> list[str]:
        """The declared columns' names."""
        return [c if isinstance(c, str) else c.name for c in self.columns]

    @model_validator(mode="after")
    def _consistent(self) -> TableModel:
        grain = Grain(self.grain)
        try:
            start = parse_window_start(self.start, grain)
        except ValueError as error:
            raise ValueError(f"field `start`: {error}") from None
        if self.end is not None:
            try:
                end = parse_window_start(self.end, grain)
            except ValueError as error:
                raise ValueError(f"field `end`: {error}") from None
            if end <= start:
                raise ValueError(f"field `end`: {self.end} is not after start {self.start}")
        hive_name = self.partition_name or grain.hive_name
        if hive_name in self.column_names:
            raise ValueError(
                f"field `partition_name`: the lake's partition directories are named "
                f"{hive_name}=<key>, which readers would confuse with column `{hive_name}`; "
                "set `partition_name` to a name no column has"
            )
        missing = [c for c in self.primary_key if c not in self.column_names]
        if missing:
            raise ValueError(f"field `primary_key`: {', '.join(missing)} not in `columns`")
        unknown = [c for c in self.preview_mask if c not in self.column_names]
        if unknown and self.transform is None:
            # With a transform, a masked column may be one the transform computes.
            raise ValueError(f"field `preview_mask`: {', '.join(unknown)} not in `columns`")
        return self

    def to_spec(self, source: str) -> TableSpec:
        """The plain declaration used by the reader and writer."""
        grain = Grain(self.grain)
        return TableSpec(
            source=source,
            schema=self.table_schema,
            table=self.table,
            partition_column=self.partition_column,
            grain=grain,
            start=parse_window_start(self.start, grain),
            end=parse_window_start(self.end, grain) if self.end else None,
            timezone=self.timezone,
            primary_key=tuple(self.primary_key),
            columns=tuple(
                ColumnSpec(c) if isinstance(c, str) else c.to_spec() for c in self.columns
            ),
            transform=self.transform,
            group=self.group,
            null_partition_rows=NullPartitionRows(self.null_partition_rows),
            max_partitions_per_run=self.max_partitions_per_run,
            partition_name=self.partition_name,
            primary_key_check=PrimaryKeyCheck(self.primary_key_check),
            asset_name=self.asset_name,
            incremental=self.incremental.to_spec() if self.incremental else None,
            reconcile=self.reconcile.to_spec() if self.reconcile else None,
            freshness_deadline_cron=self.freshness_deadline_cron,
            preview_rows=self.preview_rows,
            preview_mask=tuple(self.preview_mask),
        )


def _checked_cron(value: str) -> str:
    if not _CRON.match(value):
        raise ValueError(f"{value!r} is not a cron expression (e.g. '15 3 * * *')")
    return value


def _without_duplicates(names: list[str]) -> list[str]:
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"lists {', '.join(duplicates)} more than once")
    return names


def _table_label(data: object) -> str:
    if isinstance(data, Mapping):
        entry = cast("Mapping[str, object]", data)
        return f"table {entry.get('schema', '?')}.{entry.get('table', '?')}"
    return "table entry"


def _describe_problems(error: ValidationError) -> str:
    problems: list[str] = []
    for problem in error.errors():
        field = ".".join(str(part) for part in problem["loc"])
        if problem["type"] == "extra_forbidden":
            problems.append(f"unknown field `{field}`")
        elif problem["type"] == "missing":
            problems.append(f"field `{field}` is required")
        elif field:
            problems.append(f"field `{field}`: {problem['msg']}")
        else:
            problems.append(problem["msg"].removeprefix("Value error, "))
    return "; ".join(problems)


def _schema_of_entries(model: type[BaseModel]) -> type[BaseModel]:
    """`model`'s fields and descriptions, every field optional and of any type.

    Dagster validates YAML against this before the component sees it; keeping it permissive
    lets `TableModel` do the validation, so each message can name the table it is about.
    """
    fields: dict[str, Any] = {
        name: (Any, Field(default=None, alias=info.alias, description=info.description))
        for name, info in model.model_fields.items()
    }
    return create_model(
        "TableEntry",
        __config__=ConfigDict(extra="allow", populate_by_name=True),
        __doc__=model.__doc__,
        **fields,
    )


def resolve_tables(context: dg.ResolutionContext, entries: Sequence[Any]) -> list[TableModel]:
    """Validate each table entry; a problem is reported with the table it belongs to."""
    tables: list[TableModel] = []
    for entry in entries:
        data: dict[str, Any] = (
            entry.model_dump(by_alias=True, exclude_unset=True)
            if isinstance(entry, BaseModel)
            else dict(entry)
        )
        try:
            tables.append(TableModel.model_validate(data))
        except ValidationError as error:
            raise ValueError(f"{_table_label(data)}: {_describe_problems(error)}") from None
    return tables


ResolvedTables = Annotated[
    list[TableModel],
    dg.Resolver(
        resolve_tables,
        model_field_type=list[_schema_of_entries(TableModel)],  # pyright: ignore[reportInvalidTypeForm]
        description="The tables to copy, each with its partitioning and columns.",
    ),
]


class PostgresTablesComponent(dg.Component, dg.Resolvable, dg.Model):
    """Copies time windows of Postgres tables into the Parquet lake, one asset per table.

    Each table becomes `raw/<source>/<schema>/<table>`, partitioned by its grain; materializing
    a partition reads exactly that window in one read-only snapshot and publishes it as one
    Parquet object on S3. The tables' upstream `postgres/<source>/<schema>/<table>` stands for
    the source table itself.
    """

    source: SourceModel = Field(description="The Postgres database the tables are read from.")
    tables: ResolvedTables = Field(
        min_length=1, description="The tables to copy, each with its partitioning and columns."
    )

    @model_validator(mode="after")
    def _unique_tables(self) -> PostgresTablesComponent:
        seen: set[tuple[str, str]] = set()
        for table in self.tables:
            name = (table.table_schema, table.table)
            if name in seen:
                raise ValueError(f"table {table.table_schema}.{table.table} is declared twice")
            seen.add(name)
        return self

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        """The source specs, raw assets, the source resource and the IO manager reading it."""
        assets: list[dg.AssetsDefinition | dg.AssetSpec] = []
        freshness_checks: list[dg.AssetChecksDefinition] = []
        sensors: list[dg.SensorDefinition] = []
        schedules: list[dg.ScheduleDefinition] = []
        source_key = postgres_source_key(self.source.name)
        for table in self.tables:
            spec = table.to_spec(self.source.name)
            transform = load_transform(table.transform) if table.transform else None
            built = build_table_assets(
                spec, transform, pool_limit=self.source.max_concurrent_extractions
            )
            assets += [built.source, built.raw]
            if spec.incremental is not None:
                sensors.append(
                    build_change_sensor(spec, built.raw.key, built.partitions_def, source_key)
                )
            if spec.reconcile is not None:
                schedules.append(
                    build_reconcile_schedule(spec, built.raw.key, built.partitions_def, source_key)
                )
            freshness_checks += build_freshness_checks(spec, built.raw)
        if freshness_checks:
            sensors.append(
                dg.build_sensor_for_freshness_checks(
                    freshness_checks=freshness_checks,
                    name=f"{self.source.name}_freshness_checks",
                    default_status=dg.DefaultSensorStatus.STOPPED,
                )
            )
        source = self._source()
        return dg.Definitions(
            assets=assets,
            asset_checks=freshness_checks,
            sensors=sensors,
            schedules=schedules,
            resources={
                source_key: source,
                postgres_io_manager_key(self.source.name): PostgresWindowIOManager(source=source),
            },
        )

    def _source(self) -> PostgresSource:
        source = self.source
        return PostgresSource(
            dsn=dg.EnvVar(source.dsn_env),
            password=dg.EnvVar(source.password_env) if source.password_env else None,
            sslmode=source.sslmode,
            sslrootcert=source.sslrootcert,
            statement_timeout_seconds=source.statement_timeout_seconds,
        )
