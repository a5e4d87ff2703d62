"""The Dagster objects one declared table becomes: a source spec and a raw asset.

(No `from __future__ import annotations` here: Dagster reads the asset body's annotations.)
"""

import datetime as dt
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg

from etl_assets.lib.errors import DeclarationError
from etl_assets.lib.lake.iceberg_names import table_identifier
from etl_assets.lib.lake.layout import PART_FILE_NAME
from etl_assets.lib.postgres.read import SourceWindows
from etl_assets.lib.table.checks import (
    PRIMARY_KEY_CHECK,
    ROW_COUNT_CHECK,
    SCHEMA_CHECK,
    column_check_name,
)
from etl_assets.lib.table.spec import LakeFormat, PrimaryKeyCheck, TableSpec
from etl_assets.lib.table.transforms import Transform
from etl_assets.resources.lake import (
    HIVE_PARTITION_METADATA_KEY,
    LAKE_FORMAT_METADATA_KEY,
    LakeEvent,
    S3Lake,
)
from etl_assets.resources.lake_io_manager import LakeIOManager

_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9_]+$")
RAW_KEY_PREFIX = "raw"
SOURCE_KEY_PREFIX = "postgres"
LAKE_IO_MANAGER_KEY = "lake_io_manager"
LAKE_RESOURCE_KEY = "lake"
"""The `S3Lake` resource raw assets publish through (the name of their body's parameter)."""


def lake_resources(lake: S3Lake) -> dict[str, S3Lake | LakeIOManager]:
    """The lake under the keys the assets use.

    Raw assets publish through the lake itself; other assets through its IO manager, which
    also reads partitions back for downstream assets.
    """
    return {LAKE_RESOURCE_KEY: lake, LAKE_IO_MANAGER_KEY: LakeIOManager(lake=lake)}


def key_segment(name: str) -> str:
    """`name` as an asset-key segment, which Dagster limits to letters, digits and `_`.

    Other names keep their safe characters and get a short hash of the original, so two
    tables whose names differ only in unsafe characters still get different keys.
    """
    if _SAFE_SEGMENT.match(name):
        return name
    readable = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "x"
    digest = hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:8]
    return f"{readable}_{digest}"


def _table_segments(source: str, spec: TableSpec) -> list[str]:
    return [source, key_segment(spec.table_schema), spec.asset_name or key_segment(spec.table)]


def raw_asset_key(source: str, spec: TableSpec) -> dg.AssetKey:
    """`raw/<source>/<schema>/<table>`: the key of the asset holding the table in the lake."""
    return dg.AssetKey([RAW_KEY_PREFIX, *_table_segments(source, spec)])


def source_asset_key(source: str, spec: TableSpec) -> dg.AssetKey:
    """`postgres/<source>/<schema>/<table>`: the key of the Postgres table itself."""
    return dg.AssetKey([SOURCE_KEY_PREFIX, *_table_segments(source, spec)])


def postgres_io_manager_key(source: str) -> str:
    """The resource key of the IO manager reading from the source called `source`."""
    return f"postgres_{source}"


def postgres_source_key(source: str) -> str:
    """The resource key of the source database `source` itself (a `PostgresSource`).

    The IO manager holds the same resource; the change sensors and reconcile schedules, which
    read the source without loading a partition, require it by this key.
    """
    return f"postgres_{source}_source"


def table_partitions(spec: TableSpec) -> dg.TimeWindowPartitionsDefinition:
    """One partition per closed window of the table's grain, from `start` to `end` (or now)."""
    fmt = spec.grain.key_format
    return dg.TimeWindowPartitionsDefinition(
        start=spec.start.strftime(fmt),
        end=spec.end.strftime(fmt) if spec.end else None,
        fmt=fmt,
        cron_schedule=spec.grain.cron_schedule,
        timezone=spec.timezone,
    )


def backfill_policy(max_partitions_per_run: int | None) -> dg.BackfillPolicy:
    """One run per backfill, or runs of at most `max_partitions_per_run` partitions."""
    if max_partitions_per_run is None:
        return dg.BackfillPolicy.single_run()
    return dg.BackfillPolicy.multi_run(max_partitions_per_run)


def pool_name(source: str) -> str:
    """The Dagster pool that bounds concurrent extractions from one source database."""
    return f"postgres_{source}"


def declared_columns(spec: TableSpec) -> dg.TableSchema:
    """The declared columns as the UI shows them: name, declared Postgres type, nullability."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=column.name,
                type=column.pg_type or "any type",
                description=(
                    f"read as {column.representation.value}" if column.representation else None
                ),
                constraints=(
                    dg.TableColumnConstraints(nullable=column.nullable)
                    if column.nullable is not None
                    else None
                ),
            )
            for column in spec.columns
        ]
    )


@dataclass(frozen=True)
class TableAssets:
    """The source spec (the Postgres table) and the raw asset (its copy in the lake)."""

    source: dg.AssetSpec
    raw: dg.AssetsDefinition
    partitions_def: dg.TimeWindowPartitionsDefinition


def build_table_assets(source: str, spec: TableSpec, transform: Transform | None) -> TableAssets:
    """The assets for one table declared for the source called `source`.

    The raw asset's body captures `spec` and `transform`: the declaration reaches the read
    as this object, never through metadata. Asset metadata says what a person reads on the
    asset's page: the source table, the window rule, the columns with their declared types and
    where the partitions go.
    """
    partitions_def = table_partitions(spec)
    hive_name = spec.hive_partition_name
    raw_key = raw_asset_key(source, spec)
    source_key = source_asset_key(source, spec)
    lake_path = "/".join(raw_key.path)
    window_rule = (
        f"`{spec.partition_column}` falls in the partition's half-open window [start, end): "
        f"{spec.grain.value} windows in {spec.timezone}, keyed by their start"
    )
    source_spec = dg.AssetSpec(
        key=source_key,
        description=(
            f"Postgres table `{spec.qualified_name}` of source `{source}`. "
            "Read-only: etl_assets never writes to it."
        ),
        group_name=spec.group,
        kinds={"postgres"},
        partitions_def=partitions_def,
        metadata={
            "dagster/table_name": spec.qualified_name,
            "dagster/column_schema": declared_columns(spec),
            "etl_assets/primary_key": ", ".join(spec.primary_key),
        },
    ).with_io_manager_key(postgres_io_manager_key(source))

    if spec.lake_format is LakeFormat.ICEBERG:
        namespace, table = table_identifier(raw_key.path)
        where = f"Iceberg table `{namespace}.{table}` partitioned by `{hive_name}`"
        lake_location = f"iceberg:{namespace}.{table} ({hive_name}=<key>)"
        replaced = "each partition replaced by one catalog commit"
    else:
        where = f"`<lake>/{lake_path}/{hive_name}=<key>/{PART_FILE_NAME}`"
        lake_location = f"{lake_path}/{hive_name}=<key>/{PART_FILE_NAME}"
        replaced = "one object per partition, replaced atomically"
    description = (
        f"Copy of Postgres `{spec.qualified_name}` (source `{source}`): the rows whose "
        f"{window_rule}.\n\nLake: {where}, {replaced}.\n\n"
        f"Columns: {', '.join(spec.column_names)}."
    )
    if transform is not None:
        description += f"\n\nTransform: `{spec.transform}`."

    raw_spec = dg.AssetSpec(
        key=raw_key,
        freshness_policy=freshness_policy(spec),
        deps=[source_key],
        partitions_def=partitions_def,
        # A range run records each partition by its own materialization, with its own data
        # version, instead of one output (see etl_assets/resources/reporting.py).
        skippable=True,
        group_name=spec.group,
        kinds={"postgres", "polars", spec.lake_format.value, "s3"},
        description=description,
        metadata={
            "dagster/column_schema": declared_columns(spec),
            "etl_assets/source_table": spec.qualified_name,
            "etl_assets/partition_column": spec.partition_column,
            "etl_assets/window": window_rule,
            "etl_assets/lake_path": lake_location,
            HIVE_PARTITION_METADATA_KEY: hive_name,
            LAKE_FORMAT_METADATA_KEY: spec.lake_format.value,
            "etl_assets/primary_key": ", ".join(spec.primary_key),
        },
    ).with_io_manager_key(LAKE_IO_MANAGER_KEY)

    # A multi_asset that can subset, so that check results may be reported per partition
    # (a range run has several) rather than once per step.
    @dg.multi_asset(
        name=raw_key.to_python_identifier(),
        specs=[raw_spec],
        check_specs=check_specs(spec, raw_key, partitions_def),
        ins={"source": dg.AssetIn(key=source_key)},
        backfill_policy=backfill_policy(spec.max_partitions_per_run),
        pool=pool_name(source),
        can_subset=True,
    )
    def raw_table(
        context: dg.AssetExecutionContext, source: SourceWindows, lake: S3Lake
    ) -> Iterator[LakeEvent]:
        if raw_key not in context.selected_asset_keys:
            # The checks are computed while the partition is written; alone they have no data.
            context.log.info(f"{raw_key.to_user_string()} not selected: nothing to read")
            return
        # The run's windows on the source, bound to this table's declaration and transform.
        extract = source.table(spec, reader=raw_key.to_user_string(), transform=transform)
        # Each partition is published once its blocking checks pass; the lake reports the
        # checks and the partitions' metadata as it goes (see etl_assets/resources/lake.py).
        yield from lake.load_extract(context, extract, raw_key)

    return TableAssets(source=source_spec, raw=raw_table, partitions_def=partitions_def)


FRESHNESS_MARGIN = dt.timedelta(hours=1)
"""How late past a window, its settle lag, a sensor tick and a load the default rule allows."""


def freshness_policy(spec: TableSpec) -> dg.FreshnessPolicy | None:
    """The table's freshness rule for Dagster's freshness status.

    Declared (`freshness`), or for a table kept current by a change sensor: stale once the
    latest load is older than the longest window, the settle lag and `FRESHNESS_MARGIN` (the
    newest window closes and is loaded within that), warned a quarter of the margin sooner.
    """
    declared = spec.freshness
    if declared is None:
        if spec.incremental is None:
            return None
        due = spec.grain.longest_window + spec.incremental.settle_lag
        return dg.FreshnessPolicy.time_window(
            fail_window=due + FRESHNESS_MARGIN, warn_window=due + FRESHNESS_MARGIN / 4
        )
    if declared.fail_after is not None:
        return dg.FreshnessPolicy.time_window(
            fail_window=declared.fail_after, warn_window=declared.warn_after
        )
    assert declared.deadline_cron is not None
    try:
        return dg.FreshnessPolicy.cron(
            deadline_cron=declared.deadline_cron,
            lower_bound_delta=spec.grain.shortest_window,
            timezone=spec.timezone,
        )
    except Exception as error:  # Dagster's own check of the cron against the period
        raise DeclarationError(
            f"table {spec.qualified_name}: field `freshness.deadline_cron`: "
            f"{declared.deadline_cron!r} ticks more often than a {spec.grain.value} window: "
            "a load each window cannot be due by every tick; use a coarser cron or `fail_after`"
        ) from error


def check_specs(
    spec: TableSpec, asset_key: dg.AssetKey, partitions_def: dg.PartitionsDefinition[str]
) -> list[dg.AssetCheckSpec]:
    """The per-partition checks of a raw asset."""

    def check(name: str, description: str, *, blocking: bool) -> dg.AssetCheckSpec:
        return dg.AssetCheckSpec(
            name,
            asset=asset_key,
            description=description,
            blocking=blocking,
            partitions_def=partitions_def,
        )

    specs = [
        check(
            ROW_COUNT_CHECK,
            "Rows read equal count(*) of the window in the same snapshot; checked before the "
            "partition is published.",
            blocking=True,
        ),
        check(
            SCHEMA_CHECK,
            "The live table has every declared column with its declared type and nullability; "
            "checked before a row is read.",
            blocking=True,
        ),
    ]
    if spec.primary_key_check is not PrimaryKeyCheck.OFF:
        specs.append(
            check(
                PRIMARY_KEY_CHECK,
                f"({', '.join(spec.primary_key)}) is unique and never NULL in the partition.",
                blocking=spec.primary_key_check is PrimaryKeyCheck.BLOCKING,
            )
        )
    specs += [
        check(
            column_check_name(column.name),
            f"Declared checks of column {column.name}: " + ", ".join(column.checks.rules),
            blocking=column.checks.blocking,
        )
        for column in spec.columns
        if column.checks.any
    ]
    return specs
