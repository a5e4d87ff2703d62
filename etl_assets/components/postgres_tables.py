"""The YAML component that declares one Postgres source and the tables copied from it.

Each table entry is validated straight into a `TableSpec` (`etl_assets/lib/table/spec.py`), the
one typed form of a table's declaration; the assets, checks, sensor and schedule built for the
table all capture that object. A problem in an entry is reported with the file, the table and
the field.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import dagster as dg
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic_core import core_schema

from etl_assets.components.incremental import build_change_sensor, build_reconcile_schedule
from etl_assets.components.lake_maintenance import build_iceberg_maintenance
from etl_assets.components.table_assets import (
    build_table_assets,
    pool_name,
    postgres_io_manager_key,
    postgres_source_key,
    raw_asset_key,
    table_partitions,
)
from etl_assets.components.wal import WalSettings, WalSource, WalTable, build_wal_sensor
from etl_assets.lib.lake.iceberg_names import table_identifier
from etl_assets.lib.postgres.session import MAX_READERS_PER_LOAD
from etl_assets.lib.table.spec import (
    LakeFormat,
    TableSpec,
)
from etl_assets.lib.table.transforms import load_transform
from etl_assets.resources.postgres import PostgresSource, PostgresWindowIOManager

SOURCE_NAME = r"^[a-z][a-z0-9_]{0,39}$"
PROJECT_DEFS = Path(__file__).resolve().parents[1] / "defs"
"""The project's defs folder, where each source is declared in a `defs.yaml`."""
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
    format: LakeFormat = Field(
        default=LakeFormat.PARQUET,
        description=(
            "How the source's tables are kept in the lake, unless a table says otherwise: "
            "parquet (one object per partition) or iceberg (a table in the Iceberg catalog)."
        ),
    )
    max_concurrent_extractions: int = Field(
        default=4,
        ge=1,
        description=(
            "At most this many partitions of this source's tables are extracted at once (the "
            "Dagster pool postgres_<name>); apply it with `etl-assets pools --apply`."
        ),
    )
    sessions_per_load: int = Field(
        default=1,
        ge=1,
        le=2,
        description=(
            "Sessions one extraction may hold at once. 1 (default): the windows' counts and "
            "fingerprints are taken before their rows. 2: on a second session sharing the "
            "snapshot while the rows stream (see docs/performance.md for what it measured). "
            "The source then sees up to max_concurrent_extractions x sessions_per_load sessions."
        ),
    )
    readers_per_load: int = Field(
        default=1,
        ge=1,
        le=MAX_READERS_PER_LOAD,
        description=(
            "Sessions streaming one extraction's rows side by side, all in its snapshot: a "
            "range run's windows, or the heap pages of a window the server reads whole, are "
            "shared out among them, and the files are the same as with one (see "
            "docs/performance.md). Each extraction then holds up to readers_per_load + "
            "sessions_per_load - 1 sessions."
        ),
    )
    wal: WalSettings | None = Field(
        default=None,
        description=(
            "The logical replication slot and publication read for the tables declared with "
            "`incremental: {mode: wal}`, and its limits. Omitted: the defaults (slot and "
            "publication etl_assets_<name>)."
        ),
    )


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
    lets `TableSpec` do the validation, so each message can name the table it is about.
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


class DeclaredTables(list[TableSpec]):
    """A source's tables, each entry validated into its `TableSpec`.

    (Its own class, so that Dagster takes the YAML schema from the resolver below and does not
    derive one from `TableSpec`, whose fields carry pydantic constraints.)
    """

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: object, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        """Validated as a list of `TableSpec`."""
        return core_schema.no_info_after_validator_function(cls, handler(list[TableSpec]))


def resolve_tables(context: dg.ResolutionContext, entries: Sequence[Any]) -> DeclaredTables:
    """Validate each table entry; a problem is reported with the table it belongs to."""
    tables = DeclaredTables()
    for entry in entries:
        data: dict[str, Any] = (
            entry.model_dump(by_alias=True, exclude_unset=True)
            if isinstance(entry, BaseModel)
            else dict(entry)
        )
        try:
            tables.append(TableSpec.model_validate(data))
        except ValidationError as error:
            raise ValueError(f"{_table_label(data)}: {_describe_problems(error)}") from None
    return tables


ResolvedTables = Annotated[
    DeclaredTables,
    dg.Resolver(
        resolve_tables,
        model_field_type=list[_schema_of_entries(TableSpec)],
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

    def table_specs(self) -> list[TableSpec]:
        """The declared tables, each with the source's lake format unless it declares its own."""
        return [
            declared
            if declared.format is not None
            else declared.model_copy(update={"format": self.source.format})
            for declared in self.tables
        ]

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        """The source specs, raw assets, the source resource and the IO manager reading it."""
        assets: list[dg.AssetsDefinition | dg.AssetSpec] = []
        sensors: list[dg.SensorDefinition] = []
        schedules: list[dg.ScheduleDefinition] = []
        source_key = postgres_source_key(self.source.name)
        specs = self.table_specs()
        for spec in specs:
            transform = load_transform(spec.transform) if spec.transform else None
            built = build_table_assets(self.source.name, spec, transform)
            assets += [built.source, built.raw]
            if spec.incremental is not None and not spec.wal:
                sensors.append(
                    build_change_sensor(spec, built.raw.key, built.partitions_def, source_key)
                )
            if spec.reconcile is not None:
                schedules.append(
                    build_reconcile_schedule(spec, built.raw.key, built.partitions_def, source_key)
                )
        wal = self.wal_source()
        if wal is not None:
            sensors.append(build_wal_sensor(wal, source_key))
        jobs: list[dg.JobDefinition] = []
        iceberg_tables = [
            table_identifier(raw_asset_key(self.source.name, spec).path)
            for spec in specs
            if spec.lake_format is LakeFormat.ICEBERG
        ]
        if iceberg_tables:
            job, schedule = build_iceberg_maintenance(self.source.name, iceberg_tables)
            jobs.append(job)
            schedules.append(schedule)
        source = self._source()
        return dg.Definitions(
            assets=assets,
            sensors=sensors,
            schedules=schedules,
            jobs=jobs,
            resources={
                source_key: source,
                postgres_io_manager_key(self.source.name): PostgresWindowIOManager(source=source),
            },
        )

    def wal_source(self) -> WalSource | None:
        """How the source's WAL is read, when any of its tables is declared with `mode: wal`."""
        tables = [
            WalTable(spec, raw_asset_key(self.source.name, spec), table_partitions(spec))
            for spec in self.table_specs()
            if spec.wal
        ]
        if not tables:
            return None
        return WalSource.of(self.source.name, self.source.wal or WalSettings(), tables)

    def _source(self) -> PostgresSource:
        source = self.source
        return PostgresSource(
            dsn=dg.EnvVar(source.dsn_env),
            password=dg.EnvVar(source.password_env) if source.password_env else None,
            sslmode=source.sslmode,
            sslrootcert=source.sslrootcert,
            statement_timeout_seconds=source.statement_timeout_seconds,
            sessions_per_load=source.sessions_per_load,
            readers_per_load=source.readers_per_load,
        )


def declared_sources(path_within_project: Path = PROJECT_DEFS) -> list[PostgresTablesComponent]:
    """Every source the project declares: the `PostgresTablesComponent`s of its defs folder.

    Finding them imports the defs folder's modules; the beta and preview Dagster APIs those use
    on purpose (docs/development.md) are not news to whoever asks for the sources.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        warnings.simplefilter("ignore", dg.PreviewWarning)
        tree = dg.ComponentTree.for_project(path_within_project)
        return tree.get_all_components(of_type=PostgresTablesComponent)


def declared_tables(
    sources: Sequence[PostgresTablesComponent] | None = None,
) -> dict[str, TableSpec]:
    """Each declared table by its raw asset's key (`raw/<source>/<schema>/<table>`)."""
    return {
        raw_asset_key(component.source.name, spec).to_user_string(): spec
        for component in (declared_sources() if sources is None else sources)
        for spec in component.table_specs()
    }


def declared_pools(sources: Sequence[PostgresTablesComponent] | None = None) -> dict[str, int]:
    """Each source's extraction pool and its declared limit."""
    return {
        pool_name(component.source.name): component.source.max_concurrent_extractions
        for component in (declared_sources() if sources is None else sources)
    }
