"""The lake side: an S3 bucket resource and the IO manager that writes and reads Parquet there.

Call chain, for orientation:

* A raw asset returns the `TableExtract` it got from the Postgres IO manager; Dagster calls
  `LakeIOManager.handle_output`, which opens the extract's snapshot and, for each partition
  of the run, streams the rows into a pending upload, verifies the file against the snapshot's
  count and publishes it at its hive-style key (`etl_assets.lib.lake`).
* A curated asset returns a `pl.LazyFrame` (one partition) or a mapping of partition key to
  `pl.LazyFrame` (a range); `handle_output` publishes each the same way.
* An asset that takes a lake asset as input gets `LakeIOManager.load_input`: a `pl.LazyFrame`
  scanning exactly the upstream partitions the run depends on (or a `pl.DataFrame`, if that is
  the input's annotation).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

import boto3
import botocore.config
import botocore.exceptions
import dagster as dg
import polars as pl
import pyarrow as pa
from dagster._core.events import DagsterEvent
from pydantic import Field, PrivateAttr

from etl_assets.lib.arrow_types import PlannedSchema
from etl_assets.lib.checks import SCHEMA_CHECK, CheckOutcome
from etl_assets.lib.extract import PartitionRead, ReadStats, TableExtract
from etl_assets.lib.lake import LakeLayout, object_link
from etl_assets.lib.parquet_files import (
    DictionaryChoice,
    ParquetSettings,
    WrittenFile,
    write_batches,
    write_frame,
)
from etl_assets.lib.pg_types import ColumnPlan, SchemaDriftError, TablePlan
from etl_assets.lib.preview import markdown_preview
from etl_assets.lib.publish import PublishedPartition, UploadSettings, publish_file
from etl_assets.lib.s3_objects import MIB, Encryption, S3Client, ServerSideEncryption
from etl_assets.lib.transient import transient_cause
from etl_assets.lib.windows import grain_for_cron

DEFAULT_PARTITION_NAME = "partition"
FINGERPRINT_METADATA_KEY = "source_fingerprint"
"""Materialization metadata: the window's fingerprint in the snapshot it was read from."""
HIVE_PARTITION_METADATA_KEY = "etl_assets/hive_partition"
"""Asset metadata naming the hive partition directories; else derived from the partitions."""


class S3Lake(dg.ConfigurableResource):  # pyright: ignore[reportMissingTypeArgument]
    """An S3 bucket (or an S3-compatible endpoint such as MinIO) holding the Parquet lake.

    Credentials always come from the standard AWS chain (environment, profile, instance or
    task role), never from configuration.
    """

    bucket: str = Field(description="Bucket holding the lake.")
    prefix: str = Field(default="", description="Key prefix under which every dataset lives.")
    region: str | None = Field(
        default=None, description="AWS region; defaults to the AWS chain (AWS_REGION, profile)."
    )
    endpoint_url: str | None = Field(
        default=None,
        description=(
            "S3 endpoint for MinIO or a local server; defaults to AWS_ENDPOINT_URL, then AWS."
        ),
    )
    sse: str = Field(
        default=ServerSideEncryption.S3.value,
        description="Server-side encryption on every PUT: AES256 (SSE-S3) or aws:kms (SSE-KMS).",
    )
    kms_key_id: str | None = Field(
        default=None, description="KMS key id or ARN for SSE-KMS; needs sse=aws:kms."
    )
    upload_part_mib: int = Field(
        default=8, ge=5, description="Multipart upload part size in MiB (S3 minimum is 5)."
    )
    row_group_mib: int = Field(
        default=16, ge=1, description="Uncompressed Arrow MiB buffered per Parquet row group."
    )
    max_attempts: int = Field(
        default=5,
        ge=1,
        description="Attempts per S3 request; throttling, 5xx and lost connections are retried.",
    )

    _client: Any = PrivateAttr(default=None)

    def layout(self) -> LakeLayout:
        """The key scheme of this lake."""
        return LakeLayout(bucket=self.bucket, prefix=self.prefix)

    def client(self) -> S3Client:
        """A boto3 S3 client (shared by this resource's threads; boto3 clients are thread-safe)."""
        if self._client is None:
            self._client = boto3.client(
                "s3",
                region_name=self.region,
                endpoint_url=self.endpoint_url,
                config=botocore.config.Config(
                    retries={"mode": "standard", "max_attempts": self.max_attempts},
                    max_pool_connections=16,
                ),
            )
        return self._client

    def upload_settings(self) -> UploadSettings:
        """How objects are uploaded and encrypted."""
        try:
            mode = ServerSideEncryption(self.sse)
        except ValueError:
            choices = ", ".join(m.value for m in ServerSideEncryption)
            raise ValueError(f"sse must be one of {choices}, got {self.sse!r}") from None
        return UploadSettings(
            encryption=Encryption(mode=mode, kms_key_id=self.kms_key_id),
            part_size=self.upload_part_mib * MIB,
        )

    def parquet_settings(self) -> ParquetSettings:
        """How files are encoded."""
        return ParquetSettings(row_group_bytes=self.row_group_mib * MIB)

    def polars_storage_options(self) -> dict[str, str]:
        """Options for `pl.scan_parquet`; credentials are left to Polars' AWS chain."""
        options: dict[str, str] = {}
        endpoint = self.endpoint_url
        if endpoint:
            options["aws_endpoint_url"] = endpoint
            if endpoint.startswith("http://"):
                options["aws_allow_http"] = "true"
        if self.region:
            options["aws_region"] = self.region
        return options

    def object_link(self, key: str) -> str:
        """Where a person can look at the object at `key` (the S3 console on AWS)."""
        # The client's endpoint also reflects AWS_ENDPOINT_URL and the region's default.
        client: Any = self.client()
        return object_link(
            self.bucket,
            key,
            endpoint_url=self.endpoint_url or client.meta.endpoint_url,
            region=self.region or client.meta.region_name,
        )

    def check_bucket(self) -> None:
        """Raise, naming the bucket, unless it exists and these credentials may reach it."""
        client: Any = self.client()
        try:
            client.head_bucket(Bucket=self.bucket)
        except botocore.exceptions.ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            raise LakeUnavailableError(
                f"bucket {self.bucket!r} does not exist or is not accessible with the AWS "
                f"chain's credentials ({code}); check ETL_LAKE_BUCKET, the region and the role"
            ) from error
        except botocore.exceptions.BotoCoreError as error:
            raise LakeUnavailableError(
                f"cannot reach the S3 endpoint for bucket {self.bucket!r}: {error}"
            ) from error

    def object_exists(self, key: str) -> bool:
        """Whether an object is published at `key`."""
        client: Any = self.client()
        try:
            client.head_object(Bucket=self.bucket, Key=key)
        except botocore.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True


class LakeIOManager(dg.ConfigurableIOManager):
    """Writes each partition as one Parquet object on S3, published atomically; reads them back."""

    lake: S3Lake = Field(description="The bucket and prefix of the lake.")
    transient_retries: int = Field(
        default=2,
        ge=0,
        description=(
            "Retries of a load that failed transiently (lost connection, server restarting, "
            "S3 unavailable); other failures fail at once."
        ),
    )
    retry_delay_seconds: float = Field(
        default=10.0, ge=0, description="Wait before the first such retry; doubles each time."
    )

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        """Publish every partition of the output (see the module docstring)."""
        if isinstance(obj, TableExtract):
            self.lake.check_bucket()
            published_keys: list[str] = []
            try:
                self._publish_extract(context, obj, published_keys)
            except Exception as error:
                if isinstance(error, SchemaDriftError):
                    drifted = CheckOutcome(
                        SCHEMA_CHECK, passed=False, blocking=True, description=str(error)
                    )
                    record_refused_checks(context, {w.key: [drifted] for w in obj.windows})
                self._retry_if_transient(context, error)
                if isinstance(error, PartitionWriteError | BlockingCheckError):
                    raise
                raise PartitionWriteError(
                    _extract_failure(context.asset_key.to_user_string(), obj, published_keys, error)
                ) from error
        elif isinstance(obj, pl.LazyFrame | pl.DataFrame):
            if context.has_asset_partitions and len(context.asset_partition_keys) > 1:
                raise dg.Failure(
                    f"{context.asset_key.to_user_string()}: a run over several partitions must "
                    "return a mapping of partition key to LazyFrame, not one frame"
                )
            key = context.asset_partition_key if context.has_asset_partitions else None
            self._publish_frames(context, {key: obj.lazy()})
        elif isinstance(obj, Mapping):
            frames: dict[str | None, pl.LazyFrame] = {}
            for key, frame in obj.items():  # pyright: ignore[reportUnknownVariableType]
                if not isinstance(frame, pl.LazyFrame | pl.DataFrame):
                    raise dg.Failure(f"partition {key!r}: expected a polars frame")
                frames[str(key)] = frame.lazy()  # pyright: ignore[reportUnknownArgumentType]
            missing = set(context.asset_partition_keys) - set(frames)
            if missing:
                raise dg.Failure(f"no frame returned for partition(s) {sorted(missing)}")
            self._publish_frames(context, frames)
        else:
            raise dg.Failure(
                f"{context.asset_key.to_user_string()} returned {type(obj).__name__}; the lake "
                "stores polars LazyFrames/DataFrames and source extracts"
            )

    def _retry_if_transient(self, context: dg.OutputContext, error: Exception) -> None:
        """Ask Dagster to run the step again if `error` may not happen on a second attempt.

        Every partition is published atomically, so a retry republishes the partitions the
        failed attempt already published (same snapshot rules, same content) and goes on.
        """
        reason = transient_cause(error)
        if reason is None or self.transient_retries == 0:
            return
        try:
            attempt = context.step_context.previous_attempt_count + 1
        except dg.DagsterInvariantViolationError:
            return  # not inside a run (a context built by hand): nothing can retry the step
        if attempt > self.transient_retries:
            context.log.error(f"{reason}; {self.transient_retries} retries used, giving up")
            return
        delay = self.retry_delay_seconds * 2 ** (attempt - 1)
        context.log.warning(
            f"{reason}; retrying (retry {attempt} of {self.transient_retries}) in {delay:g}s "
            f"after: {error}"
        )
        raise dg.RetryRequested(
            max_retries=self.transient_retries, seconds_to_wait=delay
        ) from error

    def load_input(self, context: dg.InputContext) -> pl.LazyFrame | pl.DataFrame:
        """Scan exactly the upstream partitions this run depends on."""
        path = context.asset_key.path
        layout = self.lake.layout()
        if context.has_asset_partitions:
            upstream = context.upstream_output
            name = partition_name(
                context.asset_partitions_def,
                upstream.definition_metadata if upstream is not None else {},
            )
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
        frame = pl.scan_parquet(
            [layout.uri(k) for k in keys],
            storage_options=self.lake.polars_storage_options(),
            hive_partitioning=False,
        )
        if context.dagster_type.typing_type is pl.DataFrame:
            return frame.collect()
        return frame

    def _publish_extract(
        self, context: dg.OutputContext, extract: TableExtract, published_keys: list[str]
    ) -> None:
        """Publish each window of `extract`, appending each key to `published_keys` once it is."""
        spec = extract.spec
        name = partition_name(context.asset_partitions_def, context.definition_metadata)
        with extract.open() as opened:
            if opened.null_partition_rows:
                context.log.warning(
                    f"{spec.qualified_name}: {opened.null_partition_rows} row(s) have a NULL "
                    f"{spec.partition_column!r} and belong to no partition; they are not loaded"
                )
            if opened.plan.undeclared_columns:
                context.log.info(
                    f"{spec.qualified_name} has columns the contract does not declare (not "
                    f"read): {', '.join(opened.plan.undeclared_columns)}"
                )
            dictionary = DictionaryChoice()
            for read in opened.partitions:
                key = self.lake.layout().partition_key(
                    context.asset_key.path, name, read.window.key
                )

                def verify(written: WrittenFile, read: PartitionRead = read) -> None:
                    outcomes = read.check_outcomes(written.schema)
                    try:
                        refuse_on_blocking_failures(outcomes, spec.qualified_name, read.window.key)
                    except BlockingCheckError:
                        record_refused_checks(context, {read.window.key: outcomes})
                        raise
                    extract.check_results[read.window.key] = outcomes

                published = self._publish(
                    context,
                    partition=read.window.key,
                    key=key,
                    content=_partition_content(read, opened.plan, dictionary),
                    hive_name=name,
                    verify=verify,
                    keep_rows=spec.preview_rows,
                    batches_read=lambda read=read: read.stats.batches,
                )
                metadata = {
                    **_published_metadata(published, self.lake.object_link(key), opened.plan),
                    **_read_metadata(read.stats, opened.plan),
                    "null_partition_rows": opened.null_partition_rows,
                }
                if spec.preview_rows:
                    metadata["preview"] = dg.MetadataValue.md(
                        markdown_preview(
                            published.file.first_rows,
                            published.file.schema.names,
                            masked=spec.preview_mask,
                        )
                    )
                _record_partition(context, read.window.key, metadata)
                published_keys.append(read.window.key)
                if len(extract.windows) == 1 and spec.fingerprint_sees_updates:
                    # The source's fingerprint is the partition's data version: reloading
                    # unchanged rows leaves downstream partitions fresh. A fingerprint blind to
                    # updates (key hash, no change column) would hide changed rows, and Dagster
                    # records one data version per run, not per partition of a range.
                    _set_data_version(context, dg.DataVersion(read.stats.fingerprint.version))

    def _publish_frames(
        self, context: dg.OutputContext, frames: Mapping[str | None, pl.LazyFrame]
    ) -> None:
        layout = self.lake.layout()
        path = context.asset_key.path
        name = (
            partition_name(context.asset_partitions_def, context.definition_metadata)
            if context.has_asset_partitions
            else ""
        )
        for partition, frame in frames.items():
            key = (
                layout.unpartitioned_key(path)
                if partition is None
                else layout.partition_key(path, name, partition)
            )
            published = self._publish(
                context,
                partition=partition,
                key=key,
                content=_FrameContent(frame, PlannedSchema.none()),
                hive_name=name if partition is not None else None,
            )
            _record_partition(
                context, partition, _published_metadata(published, self.lake.object_link(key))
            )

    def _publish(
        self,
        context: dg.OutputContext,
        *,
        partition: str | None,
        key: str,
        content: _FrameContent | _BatchContent,
        hive_name: str | None,
        verify: Callable[[WrittenFile], None] | None = None,
        keep_rows: int = 0,
        batches_read: Callable[[], int] | None = None,
    ) -> PublishedPartition:
        label = f"{context.asset_key.to_user_string()}" + (f" [{partition}]" if partition else "")
        if hive_name is not None and hive_name in content.column_names():
            raise PartitionWriteError(
                f"{label}: the output has a column `{hive_name}`, the name of the lake's "
                f"{hive_name}=<key> partition directories; readers that apply hive "
                f"partitioning would see two `{hive_name}` columns. Rename the column, or set "
                "a different `partition_name`"
            )
        try:
            parquet = self.lake.parquet_settings()
            published = publish_file(
                self.lake.client(),
                self.lake.bucket,
                key,
                lambda sink: content.write(
                    sink, parquet, _ProgressLog(context, label, sink, batches_read), keep_rows
                ),
                upload=self.lake.upload_settings(),
                verify=verify,
            )
        except Exception as error:
            raise PartitionWriteError(
                f"{label}: nothing was published to {self.lake.layout().uri(key)} "
                f"(the previous version, if any, is unchanged): {error}"
            ) from error
        rate = published.file.rows / published.seconds if published.seconds else 0.0
        context.log.info(
            f"{label}: published {published.file.rows} rows, {published.object.size} bytes "
            f"to {published.object.uri} in {published.seconds:.2f}s ({rate:,.0f} rows/s)"
        )
        return published


@dataclass(frozen=True)
class _FrameContent:
    """A partition given as a Polars plan: a curated asset's output, or a transformed window."""

    frame: pl.LazyFrame
    planned: PlannedSchema

    def column_names(self) -> list[str]:
        return self.frame.collect_schema().names()

    def write(
        self,
        sink: IO[bytes],
        settings: ParquetSettings,
        progress: Callable[[int, int], None],
        keep_rows: int,
    ) -> WrittenFile:
        return write_frame(
            self.frame, self.planned, sink, settings, on_row_group=progress, keep_rows=keep_rows
        )


@dataclass(frozen=True)
class _BatchContent:
    """A window without a transform: the driver's batches go to the file without Polars."""

    batches: Callable[[], Iterator[pa.RecordBatch]]
    schema: pa.Schema
    dictionary: DictionaryChoice

    def column_names(self) -> list[str]:
        return self.schema.names

    def write(
        self,
        sink: IO[bytes],
        settings: ParquetSettings,
        progress: Callable[[int, int], None],
        keep_rows: int,
    ) -> WrittenFile:
        return write_batches(
            self.batches(),
            self.schema,
            sink,
            settings,
            on_row_group=progress,
            dictionary=self.dictionary,
            keep_rows=keep_rows,
        )


def _partition_content(
    read: PartitionRead, plan: TablePlan, dictionary: DictionaryChoice
) -> _FrameContent | _BatchContent:
    if read.transform is None:
        return _BatchContent(read.lake_batches, plan.arrow_schema, dictionary)
    return _FrameContent(read.frame, PlannedSchema(plan.arrow_schema, plan.frame_schema))


def _extract_failure(
    asset: str, extract: TableExtract, published: Sequence[str], error: Exception
) -> str:
    """What a failed load did and did not publish, and why it failed."""
    keys = [w.key for w in extract.windows]
    span = keys[0] if len(keys) == 1 else f"{keys[0]}...{keys[-1]}"
    if not published:
        outcome = "nothing was published"
    else:
        outcome = (
            f"published {len(published)} of {len(keys)} partitions (through {published[-1]}), "
            "not the rest"
        )
    return (
        f"{asset} [{span}]: {outcome} (the previous version of every unpublished partition, if "
        f"any, is unchanged): {type(error).__name__}: {error}"
    )


class LakeUnavailableError(RuntimeError):
    """The lake's bucket cannot be reached: nothing is read from the source."""


class PartitionWriteError(RuntimeError):
    """Writing a partition failed before it was published."""


class BlockingCheckError(RuntimeError):
    """A blocking check failed: the partition was not published."""


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


def check_evaluations(
    asset_key: dg.AssetKey, results: Mapping[str, Sequence[CheckOutcome]]
) -> Iterator[dg.AssetCheckEvaluation]:
    """One evaluation per check and partition."""
    for partition, outcomes in results.items():
        for outcome in outcomes:
            yield check_evaluation(asset_key, partition, outcome)


def record_refused_checks(
    context: dg.OutputContext, results: Mapping[str, Sequence[CheckOutcome]]
) -> None:
    """Record the check evaluations of partitions that were refused, before the step fails.

    A refused partition has no materialization and the asset never returns its check results,
    so without this the UI would show the failed run but not which check refused what.
    `OutputContext.log_event` takes only materializations and observations; the step's event
    stream is where the asset's own check evaluations go too.
    """
    try:
        step = context.step_context
    except dg.DagsterInvariantViolationError:
        return  # not inside a run: nothing to record them in
    for evaluation in check_evaluations(context.asset_key, results):
        DagsterEvent.asset_check_evaluation(step, evaluation)


def refuse_on_blocking_failures(outcomes: Sequence[CheckOutcome], table: str, key: str) -> None:
    """Raise, describing every failed blocking check, if any failed."""
    failed = [o for o in outcomes if o.blocking and not o.passed]
    if failed:
        details = "; ".join(
            f"{o.name}: {o.description} {_evidence(o.metadata)}".strip() for o in failed
        )
        raise BlockingCheckError(f"{table} [{key}]: blocking check(s) failed: {details}")


def _evidence(metadata: Mapping[str, Any]) -> str:
    samples = {k: v for k, v in metadata.items() if k.endswith("_sample") and v != "none"}
    return f"({', '.join(f'{k}: {v}' for k, v in samples.items())})" if samples else ""


class _ProgressLog:
    """Logs at most one line every few seconds while a partition's rows stream.

    Each line says how far the partition is: source batches read, rows written, Parquet
    written and acknowledged by S3, and the rate so far.
    """

    def __init__(
        self,
        context: dg.OutputContext,
        label: str,
        sink: object,
        batches_read: Callable[[], int] | None,
        every_seconds: float = 5.0,
    ) -> None:
        self._context = context
        self._label = label
        self._sink = sink
        self._batches_read = batches_read
        self._every = every_seconds
        self._started = time.perf_counter()
        self._last: float | None = None

    def __call__(self, rows: int, size: int) -> None:
        now = time.perf_counter()
        if self._last is not None and now - self._last < self._every:
            return
        self._last = now
        rate = rows / (now - self._started)
        parts = [f"{rows:,} rows so far ({rate:,.0f} rows/s)"]
        if self._batches_read is not None:
            parts.append(f"{self._batches_read():,} source batches read")
        parts.append(f"{size / MIB:,.1f} MiB of Parquet written")
        uploaded = getattr(self._sink, "uploaded", None)
        if isinstance(uploaded, int):
            parts.append(f"{uploaded / MIB:,.1f} MiB uploaded")
        self._context.log.info(f"{self._label}: {', '.join(parts)}")


def partition_name(
    partitions_def: dg.PartitionsDefinition[Any] | None, metadata: Mapping[str, Any]
) -> str:
    """The hive partition name of an asset: declared in its metadata, or `day`, `hour`, ...

    for time partitions of a standard grain, or `partition`.
    """
    declared = metadata.get(HIVE_PARTITION_METADATA_KEY)
    if declared is not None:
        return str(getattr(declared, "value", declared))
    if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        grain = grain_for_cron(partitions_def.cron_schedule)
        if grain is not None:
            return grain.hive_name
    return DEFAULT_PARTITION_NAME


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


def _published_metadata(
    published: PublishedPartition, link: str, plan: TablePlan | None = None
) -> dict[str, Any]:
    """What every published partition records; `link` is where a person can look at it."""
    seconds = published.seconds
    return {
        "dagster/row_count": published.file.rows,
        "dagster/uri": published.object.uri,
        "size_bytes": published.object.size,
        "row_groups": published.file.row_groups,
        "dagster/column_schema": table_schema(published.file.schema, plan),
        "duration_seconds": round(seconds, 3),
        "rows_per_second": round(published.file.rows / seconds, 1) if seconds else 0.0,
        "lake_object": dg.MetadataValue.url(link),
    }


def _read_metadata(stats: ReadStats, plan: TablePlan) -> dict[str, Any]:
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


def _set_data_version(context: dg.OutputContext, version: dg.DataVersion) -> None:
    try:
        step = context.step_context
    except dg.DagsterInvariantViolationError:
        return  # a context built outside a run (a benchmark, a test) has no run to version
    step.set_data_version(context.asset_key, version)


def _record_partition(
    context: dg.OutputContext, partition: str | None, metadata: Mapping[str, Any]
) -> None:
    """Attach metadata to the materialization of one partition.

    `OutputContext.add_output_metadata` would give every partition of a range run the same
    values; the step context's `add_asset_metadata(partition_key=...)` is the per-partition
    form that `AssetExecutionContext.add_asset_metadata` also uses.
    """
    if partition is None or not context.has_asset_partitions:
        context.add_output_metadata(dict(metadata))
        return
    if len(context.asset_partition_keys) == 1:
        context.add_output_metadata(dict(metadata))
        return
    context.step_context.add_asset_metadata(
        dict(metadata), asset_key=context.asset_key, partition_key=partition
    )
