"""The lake's IO manager: curated outputs published, lake assets read back as LazyFrames."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from etl_assets.lib.table.spec import LakeFormat
from etl_assets.resources.lake import DEFAULT_PARTITION_NAME, S3Lake, lake_format, partition_name
from etl_assets.resources.reporting import (
    partitions_table,
    published_metadata,
)


class LakeIOManager(dg.ConfigurableIOManager):
    """Publishes the Polars frames of curated assets to the lake; reads lake partitions back."""

    lake: S3Lake = Field(description="The bucket and prefix of the lake.")

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        """Publish one frame, or one frame per partition of a range (a mapping by key)."""
        if isinstance(obj, pl.LazyFrame | pl.DataFrame):
            if context.has_asset_partitions and len(context.asset_partition_keys) > 1:
                raise dg.Failure(
                    f"{context.asset_key.to_user_string()}: a run over several partitions must "
                    "return a mapping of partition key to LazyFrame, not one frame"
                )
            key = context.asset_partition_key if context.has_asset_partitions else None
            frames: dict[str | None, pl.LazyFrame] = {key: obj.lazy()}
        elif isinstance(obj, Mapping):
            frames = {}
            for key, frame in obj.items():
                if not isinstance(frame, pl.LazyFrame | pl.DataFrame):
                    raise dg.Failure(f"partition {key!r}: expected a polars frame")
                frames[str(key)] = frame.lazy()
            missing = set(context.asset_partition_keys) - set(frames)
            if missing:
                raise dg.Failure(f"no frame returned for partition(s) {sorted(missing)}")
        else:
            raise dg.Failure(
                f"{context.asset_key.to_user_string()} returned {type(obj).__name__}; the lake "
                "stores polars LazyFrames and DataFrames"
            )
        hive_name = (
            partition_name(context.asset_partitions_def, context.definition_metadata)
            if context.has_asset_partitions
            else DEFAULT_PARTITION_NAME
        )
        kept_as = lake_format(context.definition_metadata)
        target = self.lake.target(context.asset_key.path, hive_name, context.run_id, kept_as)
        partitions_def = context.asset_partitions_def if context.has_asset_partitions else None
        glue = self.lake.glue_table(context.asset_key, hive_name, partitions_def, kept_as)
        published = {
            partition: self.lake.publish_frame(
                context, context.asset_key, target, partition, frame, hive_name=hive_name, glue=glue
            )
            for partition, frame in frames.items()
        }
        if len(published) == 1:
            [(_, only)] = published.items()
            context.add_output_metadata(
                published_metadata(only, self.lake.object_link(only.object))
            )
        else:
            # An IO manager records the same metadata on every partition of a range: a table
            # of them. (`S3Lake.publish_frames` records each partition's own.)
            context.add_output_metadata(
                {"partitions_published": dg.MetadataValue.md(partitions_table(published))}
            )

    def load_input(self, context: dg.InputContext) -> pl.LazyFrame | pl.DataFrame:
        """Scan exactly the upstream partitions this run depends on."""
        upstream = context.upstream_output
        metadata = upstream.definition_metadata if upstream is not None else {}
        if lake_format(metadata) is LakeFormat.ICEBERG:
            frame = self._scan_iceberg(context, metadata)
        else:
            frame = self._scan_objects(context, metadata)
        if context.dagster_type.typing_type is pl.DataFrame:
            return frame.collect()
        return frame

    def _scan_objects(self, context: dg.InputContext, metadata: Mapping[str, Any]) -> pl.LazyFrame:
        path = context.asset_key.path
        layout = self.lake.layout()
        if context.has_asset_partitions:
            name = partition_name(context.asset_partitions_def, metadata)
            keys = [layout.partition_key(path, name, k) for k in context.asset_partition_keys]
        else:
            keys = [layout.unpartitioned_key(path)]
        missing = [k for k in keys if not self.lake.object_exists(k)]
        if missing:
            raise dg.Failure(
                f"{context.asset_key.to_user_string()} has no published data at "
                f"{', '.join(layout.uri(k) for k in missing[:5])}; materialize those "
                "partitions first"
            )
        return pl.scan_parquet(
            [layout.uri(k) for k in keys],
            storage_options=self.lake.polars_storage_options(),
            hive_partitioning=False,
        )

    def _scan_iceberg(self, context: dg.InputContext, metadata: Mapping[str, Any]) -> pl.LazyFrame:
        """The upstream Iceberg table, pruned to the partitions of the run."""
        name = partition_name(context.asset_partitions_def, metadata)
        # Reading writes nothing: no run marks anything.
        target = self.lake.target(context.asset_key.path, name, "", LakeFormat.ICEBERG)
        from etl_assets.lib.lake.iceberg import IcebergTarget  # noqa: PLC0415 - as S3Lake.target

        assert isinstance(target, IcebergTarget)
        keys = list(context.asset_partition_keys)
        present = target.partitions_present(keys)
        missing = [k for k in keys if k not in present]
        if missing:
            raise dg.Failure(
                f"{context.asset_key.to_user_string()} has no published data for "
                f"{', '.join(missing[:5])} in {target.name}; materialize those partitions first"
            )
        table = target.table()
        return (
            pl.scan_iceberg(table, storage_options=self.lake.polars_storage_options())
            .filter(pl.col(name).is_in(keys))
            .drop(name)
        )
