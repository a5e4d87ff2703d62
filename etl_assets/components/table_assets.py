"""The Dagster objects one declared table becomes: a source spec and a raw asset."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from etl_assets.lib.extract import TableExtract
from etl_assets.lib.lake import PART_FILE_NAME
from etl_assets.lib.tables import TableSpec
from etl_assets.lib.transforms import Transform
from etl_assets.resources.lake import HIVE_PARTITION_METADATA_KEY
from etl_assets.resources.postgres import READER_METADATA_KEY, TABLE_METADATA_KEY

RAW_KEY_PREFIX = "raw"
SOURCE_KEY_PREFIX = "postgres"
LAKE_IO_MANAGER_KEY = "lake_io_manager"


def raw_asset_key(spec: TableSpec) -> dg.AssetKey:
    """`raw/<source>/<schema>/<table>`: the key of the asset holding the table in the lake."""
    return dg.AssetKey([RAW_KEY_PREFIX, spec.source, spec.schema, spec.table])


def source_asset_key(spec: TableSpec) -> dg.AssetKey:
    """`postgres/<source>/<schema>/<table>`: the key of the Postgres table itself."""
    return dg.AssetKey([SOURCE_KEY_PREFIX, spec.source, spec.schema, spec.table])


def postgres_io_manager_key(source: str) -> str:
    """The resource key of the IO manager reading from the source called `source`."""
    return f"postgres_{source}"


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


@dataclass(frozen=True)
class TableAssets:
    """The source spec (the Postgres table) and the raw asset (its copy in the lake)."""

    source: dg.AssetSpec
    raw: dg.AssetsDefinition


def build_table_assets(spec: TableSpec, transform: Transform | None) -> TableAssets:
    """The assets for one declared table."""
    partitions_def = table_partitions(spec)
    hive_name = spec.hive_partition_name
    raw_key = raw_asset_key(spec)
    source_key = source_asset_key(spec)
    lake_path = "/".join(raw_key.path)
    window_rule = (
        f"`{spec.partition_column}` falls in the partition's half-open window [start, end): "
        f"{spec.grain.value} windows in {spec.timezone}, keyed by their start"
    )
    source_spec = dg.AssetSpec(
        key=source_key,
        description=(
            f"Postgres table `{spec.qualified_name}` of source `{spec.source}`. "
            "Read-only: etl_assets never writes to it."
        ),
        group_name=spec.group,
        kinds={"postgres"},
        partitions_def=partitions_def,
        metadata={"etl_assets/primary_key": ", ".join(spec.primary_key)},
    ).with_io_manager_key(postgres_io_manager_key(spec.source))

    description = (
        f"Copy of Postgres `{spec.qualified_name}` (source `{spec.source}`): the rows whose "
        f"{window_rule}.\n\nLake: `<lake>/{lake_path}/{hive_name}=<key>/{PART_FILE_NAME}`, one "
        f"object per partition, replaced atomically.\n\nColumns: {', '.join(spec.columns)}."
    )
    if transform is not None:
        description += f"\n\nTransform: `{spec.transform}`."

    @dg.asset(
        key=raw_key,
        ins={
            "source": dg.AssetIn(
                key=source_key,
                metadata={
                    TABLE_METADATA_KEY: spec.to_metadata(),
                    READER_METADATA_KEY: raw_key.to_user_string(),
                },
            )
        },
        partitions_def=partitions_def,
        backfill_policy=backfill_policy(spec.max_partitions_per_run),
        io_manager_key=LAKE_IO_MANAGER_KEY,
        group_name=spec.group,
        kinds={"postgres", "polars", "parquet", "s3"},
        description=description,
        metadata={
            TABLE_METADATA_KEY: spec.to_metadata(),
            "etl_assets/source_table": spec.qualified_name,
            "etl_assets/partition_column": spec.partition_column,
            "etl_assets/window": window_rule,
            "etl_assets/lake_path": f"{lake_path}/{hive_name}=<key>/{PART_FILE_NAME}",
            HIVE_PARTITION_METADATA_KEY: hive_name,
            "etl_assets/primary_key": ", ".join(spec.primary_key),
        },
    )
    def raw_table(source: TableExtract) -> TableExtract:
        return source.with_transform(transform)

    return TableAssets(source=source_spec, raw=raw_table)
