"""What a load tells Dagster: per-partition metadata, check evaluations, the run's results.

Everything here turns what `etl_assets.lib.load` reports (a published window, a refused one,
the checks of each) into public Dagster events and metadata values: the asset's body yields
them (see `etl_assets/resources/lake.py`). Metadata is what a person reads on a partition's
page; nothing in it is read back by the code.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import dagster as dg
import pyarrow as pa

from etl_assets.lib.lake.objects import PublishedObject
from etl_assets.lib.lake.preview import markdown_preview
from etl_assets.lib.lake.target import PublishedPartition
from etl_assets.lib.load import (
    LoadStart,
    PublishedWindow,
    WindowOutcome,
)
from etl_assets.lib.postgres.read import ReadStats
from etl_assets.lib.postgres.types import ColumnPlan, TablePlan
from etl_assets.lib.table.checks import CheckOutcome
from etl_assets.lib.table.spec import TableSpec

DATA_VERSION_TAG = "dagster/data_version"
"""The tag of an asset event that holds its data version.

Dagster stores a `MaterializeResult`'s `data_version` under this tag, and its staleness and
`AutomationCondition.data_version_changed()` read it from there; event validation lets a caller
set it on a `dg.AssetMaterialization` (as the webserver's `report_asset_materialization` does).
A range run records each partition's own version this way: a `MaterializeResult` holds one
version for every partition of the run.
"""


def partition_version(window: PublishedWindow, fingerprint_is_version: bool) -> str | None:
    """The data version of a published partition: its source fingerprint's, when that is one.

    A fingerprint blind to updates (key hash, no change column) would hide changed rows: such a
    partition gets no version of ours, and Dagster's own changes with every load.
    """
    return window.read.fingerprint.version if fingerprint_is_version else None


def partition_materialization(
    asset_key: dg.AssetKey,
    window: PublishedWindow,
    metadata: Mapping[str, Any],
    *,
    fingerprint_is_version: bool,
    run_id: str,
) -> dg.AssetMaterialization:
    """One published partition's own materialization, its data version in its tags.

    Without a fingerprint that sees updates the version is the run's: every load counts as a
    change downstream, never as none.
    """
    version = partition_version(window, fingerprint_is_version) or f"run-{run_id}"
    return dg.AssetMaterialization(
        asset_key=asset_key,
        partition=window.key,
        metadata=dict(metadata),
        tags={DATA_VERSION_TAG: version},
    )


def output_may_be_consumed(context: dg.AssetExecutionContext) -> bool:
    """Whether another step of the run may read this step's output: an asset or a check.

    Without the output Dagster would skip such a step. A run launched for assets (the UI,
    `dg launch`, a sensor's or a backfill's request) names them; one that names none (a whole
    job, `dg.materialize`) may hold anything. A run that names its checks (the UI, backfills)
    shows a check defined apart from this asset; one that does not runs the assets' own checks.
    """
    assets = context.run.asset_selection
    checks = context.run.asset_check_selection
    return (
        not assets
        or not assets <= context.assets_def.keys
        or (checks is not None and not checks <= context.assets_def.check_keys)
    )


def materialize_result(
    context: dg.AssetExecutionContext,
    asset_key: dg.AssetKey,
    *,
    published: Sequence[PublishedWindow],
    metadata: Mapping[str, Mapping[str, Any]],
    selected_checks: set[str],
    fingerprint_is_version: bool,
) -> Iterator[
    dg.MaterializeResult | dg.AssetMaterialization | dg.AssetCheckEvaluation | dg.Output[None]
]:
    """The events of a load that published every window it was asked for.

    One partition: its `MaterializeResult` carries its data version and its check results,
    which Dagster ties to the materialization. Several: each partition is recorded by its own
    `AssetMaterialization` with its own data version (the asset's output is skippable, so the
    step yields no output for it), unless another asset or check in the run may read this
    step's output: then one `MaterializeResult`, each partition's metadata added to
    its own materialization, and Dagster's one data version for all of them (downstream sees
    every partition of the range as changed). Each check of each partition is recorded as an
    evaluation of that partition (a check result of a step belongs to one partition at most);
    the check outputs are then marked done.
    """
    if len(published) == 1:
        [window] = published
        context.add_asset_metadata(
            dict(metadata[window.key]), asset_key=asset_key, partition_key=window.key
        )
        # The source's fingerprint is the partition's data version: reloading unchanged rows
        # leaves downstream partitions fresh.
        version = partition_version(window, fingerprint_is_version)
        yield dg.MaterializeResult(
            asset_key=asset_key,
            data_version=dg.DataVersion(version) if version else None,
            check_results=[
                dg.AssetCheckResult(
                    asset_key=asset_key,
                    check_name=check.name,
                    passed=check.passed,
                    metadata=check.metadata,
                    severity=dg.AssetCheckSeverity(check.severity.value),
                    description=check.description,
                )
                for check in window.checks
                if check.name in selected_checks
            ],
        )
        return
    if output_may_be_consumed(context):
        for key, values in metadata.items():
            context.add_asset_metadata(dict(values), asset_key=asset_key, partition_key=key)
        yield dg.MaterializeResult(asset_key=asset_key)
    else:
        for window in published:
            yield partition_materialization(
                asset_key,
                window,
                metadata[window.key],
                fingerprint_is_version=fingerprint_is_version,
                run_id=context.run.run_id,
            )
    yield from evaluations(asset_key, published, selected_checks)
    for spec in context.assets_def.check_specs:
        if spec.asset_key == asset_key and spec.name in selected_checks:
            yield dg.Output(None, output_name=spec.get_python_identifier())


def evaluations(
    asset_key: dg.AssetKey, outcomes: Sequence[WindowOutcome], selected_checks: set[str]
) -> Iterator[dg.AssetCheckEvaluation]:
    """One evaluation per selected check of each window, on that window's partition."""
    for outcome in outcomes:
        for check in outcome.checks:
            if check.name in selected_checks:
                yield check_evaluation(asset_key, outcome.key, check)


def check_evaluation(
    asset_key: dg.AssetKey, partition: str, outcome: CheckOutcome
) -> dg.AssetCheckEvaluation:
    """The Dagster evaluation of one check of one partition."""
    return dg.AssetCheckEvaluation(
        asset_key=asset_key,
        check_name=outcome.name,
        passed=outcome.passed,
        metadata=outcome.metadata,
        severity=dg.AssetCheckSeverity(outcome.severity.value),
        description=outcome.description,
        blocking=outcome.blocking,
        partition=partition,
    )


def partitions_table(published: Mapping[str | None, PublishedPartition]) -> str:
    """The partitions an IO manager published in one output, as a markdown table."""
    lines = ["| partition | rows | bytes | uri |", "| --- | --- | --- | --- |"]
    lines += [
        f"| {key} | {p.file.rows} | {p.object.size} | {p.object.uri} |"
        if p.object is not None
        else f"| {key} | {p.file.rows} | 0 | (no data file) |"
        for key, p in published.items()
    ]
    return "\n".join(lines)


def table_schema(schema: pa.Schema, plan: TablePlan | None = None) -> dg.TableSchema:
    """The column schema shown in the UI: Arrow type, and the Postgres type it came from."""
    columns: list[dg.TableColumn] = []
    for field in schema:
        description = None
        if plan is not None:
            try:
                description = _column_origin(plan.column(field.name))
            except KeyError:
                description = "computed by the transform"
        columns.append(
            dg.TableColumn(
                name=field.name,
                type=str(field.type),
                description=description,
                constraints=dg.TableColumnConstraints(nullable=field.nullable),
            )
        )
    return dg.TableSchema(columns=columns)


def _column_origin(column: ColumnPlan) -> str:
    text = f"postgres {column.declared_type}"
    if column.representation is not None:
        text += f", as {column.representation.value}"
    if column.enum_labels:
        text += f"; labels: {', '.join(column.enum_labels)}"
    return text


def published_metadata(
    published: PublishedPartition, link: str | None, plan: TablePlan | None = None
) -> dict[str, Any]:
    """What every published partition records; `link` is where a person can look at its file."""
    seconds = published.seconds
    return {
        "dagster/row_count": published.file.rows,
        "row_groups": published.file.row_groups,
        "dagster/column_schema": table_schema(published.file.schema, plan),
        "duration_seconds": round(seconds, 3),
        **(
            {"commit_seconds": round(published.commit_seconds, 3)}
            if published.commit_seconds
            else {}
        ),
        "rows_per_second": round(published.file.rows / seconds, 1) if seconds else 0.0,
        **(object_metadata(published.object, link) if published.object is not None else {}),
        # What the target adds: an Iceberg table's name, snapshot and partition.
        **published.details,
    }


def object_metadata(published: PublishedObject, link: str | None) -> dict[str, Any]:
    """Where a partition's data file is, and which version of it."""
    return {
        "dagster/uri": published.uri,
        "size_bytes": published.size,
        **({"lake_object": dg.MetadataValue.url(link)} if link else {}),
        "lake_object_etag": published.etag,
        **({"lake_object_version": published.version_id} if published.version_id else {}),
        **({"publish_settled": published.settled} if published.settled is not None else {}),
    }


def read_metadata(stats: ReadStats, plan: TablePlan) -> dict[str, Any]:
    """What the read of one window saw: the window, the snapshot's count, the fingerprint."""
    metadata: dict[str, Any] = {
        "window_start": dg.MetadataValue.timestamp(stats.window.start),
        "window_end": dg.MetadataValue.timestamp(stats.window.end),
        "window": stats.window.describe(),
        "source_snapshot_rows": stats.snapshot_rows,
        "source_rows_read": stats.rows_read,
        "source_batches": stats.batches,
        FINGERPRINT_METADATA_KEY: stats.fingerprint.text,
    }
    if plan.undeclared_columns:
        metadata["source_undeclared_columns"] = ", ".join(plan.undeclared_columns)
    return metadata


FINGERPRINT_METADATA_KEY = "source_fingerprint"
"""Materialization metadata: the window's fingerprint in the snapshot it was read from."""


def partition_metadata(
    window: PublishedWindow, start: LoadStart | None, link: str | None, spec: TableSpec
) -> dict[str, Any]:
    """Everything a published window's materialization records; `link` shows its object."""
    plan = start.plan if start else None
    published = window.published
    metadata = {
        **published_metadata(published, link, plan),
        **(read_metadata(window.read, plan) if plan else {}),
        "null_partition_rows": start.null_partition_rows if start else 0,
    }
    if spec.preview_rows:
        metadata["preview"] = dg.MetadataValue.md(
            markdown_preview(
                published.file.first_rows, published.file.schema.names, masked=spec.preview_mask
            )
        )
    return metadata
