"""The lake side: the S3 bucket resource that publishes partitions, and the lake IO manager.

How one partition reaches Dagster, for orientation:

* A raw asset's body receives a `TableExtract` from the Postgres IO manager and calls
  `S3Lake.load_extract`, which runs `etl_assets.lib.load.load_windows` (read, write, check,
  publish each window) and turns what happened into Dagster events: per partition its check
  evaluations and its materialization metadata (`add_asset_metadata(partition_key=...)`),
  then one `MaterializeResult` for the run. When a window fails, the partitions published
  before it (and after it, when the load could go on) are recorded one by one as
  `AssetMaterialization`s and the step fails saying what was and was not published: the
  instance always says what the lake holds.
* The publish happens in the asset's body, not in an IO manager, because only the body can
  report checks and per-partition materializations through public API, and only events the
  body yields survive a failure later in the same step.
* Curated assets return a `pl.LazyFrame` (or, in a range run, a mapping of partition key to
  frame) and the `LakeIOManager` publishes it; or they call `S3Lake.publish_frames` in their
  body to record metadata per partition of a range.
* An asset that takes a lake asset as input gets `LakeIOManager.load_input`: a `pl.LazyFrame`
  scanning exactly the upstream partitions the run depends on (or a `pl.DataFrame`, if that is
  the input's annotation).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import boto3
import botocore.config
import botocore.exceptions
import dagster as dg
import polars as pl
from pydantic import Field, PrivateAttr

from etl_assets.lib.arrow_types import PlannedSchema
from etl_assets.lib.errors import (
    LakeConfigurationError,
    LakeUnavailableError,
    SchemaDriftError,
)
from etl_assets.lib.lake.glue import DateProjection, GlueRegistration, GlueTable
from etl_assets.lib.lake.iceberg_names import qualified, table_identifier
from etl_assets.lib.lake.layout import LakeLayout, object_link
from etl_assets.lib.lake.objects import (
    MIB,
    Encryption,
    PublishedObject,
    S3Client,
    ServerSideEncryption,
)
from etl_assets.lib.lake.parquet import ParquetSettings
from etl_assets.lib.lake.publish import ObjectTarget, UploadSettings
from etl_assets.lib.lake.target import LakeTarget, PublishedPartition
from etl_assets.lib.load import (
    FrameContent,
    LoadStart,
    PublishedWindow,
    RefusedWindow,
    WindowOutcome,
    describe_load_failure,
    load_windows,
    publish_content,
)
from etl_assets.lib.postgres.read import TableExtract
from etl_assets.lib.table.checks import SCHEMA_CHECK, CheckOutcome
from etl_assets.lib.table.spec import LakeFormat
from etl_assets.lib.table.windows import grain_for_cron
from etl_assets.lib.transient import transient_cause
from etl_assets.resources.catalog import IcebergCatalog
from etl_assets.resources.reporting import (
    check_evaluation,
    evaluations,
    materialize_result,
    partition_materialization,
    partition_metadata,
    published_metadata,
)

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

    from etl_assets.lib.lake.iceberg import Maintenance

DEFAULT_PARTITION_NAME = "partition"
HIVE_PARTITION_METADATA_KEY = "etl_assets/hive_partition"
"""Asset metadata naming the hive partition directories; else derived from the partitions."""
LAKE_FORMAT_METADATA_KEY = "etl_assets/lake_format"
"""Asset metadata saying how the asset is kept in the lake (`parquet` when absent)."""
RUN_METADATA = "etl-assets-run"
"""User-metadata key of every published object: the Dagster run that wrote it."""
LAKE_CONFIGURATION_CODES = frozenset(
    {"404", "403", "NoSuchBucket", "AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId"}
)
"""HeadBucket answers that no retry changes: the bucket is missing or closed to this role."""

LakeEvent = (
    dg.MaterializeResult | dg.AssetMaterialization | dg.AssetCheckEvaluation | dg.Output[None]
)


class S3Lake(dg.ConfigurableResource):
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
        default=8, ge=1, description="Uncompressed Arrow MiB buffered per Parquet row group."
    )
    max_attempts: int = Field(
        default=5,
        ge=1,
        description="Attempts per S3 request; throttling, 5xx and lost connections are retried.",
    )
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
    glue_registration: str = Field(
        default=GlueRegistration.OFF.value,
        description=(
            "Register every asset as a table in the AWS Glue Data Catalog, so Athena reads it: "
            "off, partitions (each partition registered as it is published) or projection "
            "(Athena partition projection on the table, no call per partition)."
        ),
    )
    glue_region: str | None = Field(
        default=None,
        description="Region of the Glue catalog; defaults to `region`, then the AWS chain.",
    )
    glue_endpoint_url: str | None = Field(
        default=None,
        description="Glue endpoint; defaults to AWS_ENDPOINT_URL_GLUE, AWS_ENDPOINT_URL, then AWS.",
    )
    glue_database_prefix: str = Field(
        default="", description="Prepended to every Glue database name (one per source)."
    )

    iceberg: IcebergCatalog | None = Field(
        default=None,
        description="The Iceberg catalog of the tables declared `format: iceberg`.",
    )

    _client: Any = PrivateAttr(default=None)
    _glue_client: Any = PrivateAttr(default=None)

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
                    retries={"mode": "standard", "total_max_attempts": self.max_attempts},
                    max_pool_connections=16,
                ),
            )
        return self._client

    def glue_table(
        self,
        asset_key: dg.AssetKey,
        hive_name: str,
        partitions_def: dg.PartitionsDefinition[Any] | None,
        lake_format: LakeFormat = LakeFormat.PARQUET,
    ) -> GlueTable | None:
        """The Glue table an asset's publishes register in; None when registration is off.

        Iceberg tables are registered in their own catalog (a Glue catalog among them), so
        they never have one here. Raises (before anything is published) on a mode that does
        not exist or an asset key that names no Glue table. See `etl_assets.lib.lake.glue`.
        """
        mode = GlueRegistration.parse(self.glue_registration)
        if mode is GlueRegistration.OFF or lake_format is LakeFormat.ICEBERG:
            return None
        if self._glue_client is None:
            self._glue_client = boto3.client(
                "glue",
                region_name=self.glue_region or self.region,
                endpoint_url=self.glue_endpoint_url,
                config=botocore.config.Config(
                    retries={"mode": "standard", "total_max_attempts": self.max_attempts}
                ),
            )
        return GlueTable(
            client=self._glue_client,
            layout=self.layout(),
            asset_path=tuple(asset_key.path),
            partition_name=hive_name if partitions_def is not None else None,
            projection=date_projection(partitions_def)
            if mode is GlueRegistration.PROJECTION
            else None,
            database_prefix=self.glue_database_prefix,
        )

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

    def object_link(self, published: PublishedObject | None) -> str | None:
        """Where a person can look at a published object (the S3 console on AWS)."""
        if published is None:
            return None
        # The client's endpoint also reflects AWS_ENDPOINT_URL and the region's default.
        client: Any = self.client()
        return object_link(
            published.bucket,
            published.key,
            endpoint_url=self.endpoint_url or client.meta.endpoint_url,
            region=self.region or client.meta.region_name,
        )

    def check_bucket(self) -> None:
        """Raise, naming the bucket, unless it exists and these credentials may reach it.

        A definite answer (no such bucket, access denied) raises `LakeConfigurationError`; S3
        being unavailable (5xx, throttling, no connection, after the client's own retries)
        raises `LakeUnavailableError`, which a load retries.
        """
        client: Any = self.client()
        try:
            client.head_bucket(Bucket=self.bucket)
        except botocore.exceptions.ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in LAKE_CONFIGURATION_CODES:
                raise LakeConfigurationError(
                    f"bucket {self.bucket!r} does not exist or is not accessible with the AWS "
                    f"chain's credentials ({code}); check ETL_LAKE_BUCKET, the region and the role"
                ) from error
            raise LakeUnavailableError(
                f"S3 did not answer for bucket {self.bucket!r} ({code or error}): {error}"
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

    def target(
        self,
        asset_path: Sequence[str],
        hive_name: str,
        run_id: str,
        lake_format: LakeFormat = LakeFormat.PARQUET,
    ) -> LakeTarget:
        """Where an asset's partitions are published, each marked with `run_id`."""
        if lake_format is LakeFormat.ICEBERG:
            # pyiceberg is imported by the loads of Iceberg tables only.
            from etl_assets.lib.lake.iceberg import IcebergTarget  # noqa: PLC0415

            return IcebergTarget(
                catalog=self.iceberg_catalog("/".join(asset_path)),
                identifier=table_identifier(asset_path),
                partition_column=hive_name,
                client=self.client(),
                upload=self.upload_settings(),
                run_id=run_id,
            )
        return ObjectTarget(
            client=self.client(),
            layout=self.layout(),
            asset_path=tuple(asset_path),
            hive_name=hive_name,
            upload=self.upload_settings(),
            object_metadata={RUN_METADATA: run_id},
        )

    def iceberg_catalog(self, wanted_by: str) -> Catalog:
        """The catalog of the lake's Iceberg tables.

        `wanted_by` names who needs it, for the error when none is configured.
        """
        if self.iceberg is None:
            raise LakeConfigurationError(
                f"{wanted_by} is declared `format: iceberg`, but the lake has no Iceberg "
                "catalog: set ETL_ICEBERG_CATALOG_URI (and ETL_ICEBERG_CATALOG for glue or "
                "rest), see docs/configuration.md"
            )
        client: Any = self.client()
        return self.iceberg.catalog(
            default_warehouse=self.layout().uri(self.layout().dataset_prefix(["iceberg"])),
            s3_endpoint=self.endpoint_url or client.meta.endpoint_url,
            region=self.region or client.meta.region_name,
        )

    def maintain_iceberg(
        self,
        identifiers: Sequence[tuple[str, str]],
        *,
        orphan_min_age: dt.timedelta,
        snapshot_retention: dt.timedelta,
        dry_run: bool = False,
    ) -> Iterator[Maintenance]:
        """Expire old snapshots of these Iceberg tables and remove their orphan data files.

        A table never published yet has nothing to maintain and is skipped.
        """
        from etl_assets.lib.lake.iceberg import maintain  # noqa: PLC0415 - see `target`

        catalog = self.iceberg_catalog(", ".join(qualified(i) for i in identifiers))
        now = dt.datetime.now(dt.UTC)
        for identifier in identifiers:
            if not catalog.table_exists(identifier):
                continue
            yield maintain(
                catalog,
                identifier,
                self.client(),
                now=now,
                orphan_min_age=orphan_min_age,
                snapshot_retention=snapshot_retention,
                dry_run=dry_run,
            )

    def load_extract(
        self,
        context: dg.AssetExecutionContext,
        extract: TableExtract,
        asset_key: dg.AssetKey,
    ) -> Iterator[LakeEvent]:
        """Publish every window of `extract` as a partition of `asset_key`; yield the events.

        See the module docstring. Fails the step (after recording what was published) when a
        window was not published; asks Dagster to retry the step when the failure was
        transient and retries remain.
        """
        spec = extract.spec
        name = asset_key.to_user_string()
        target = self.target(
            asset_key.path, spec.hive_partition_name, context.run.run_id, spec.lake_format
        )
        started: list[LoadStart] = []
        outcomes: list[WindowOutcome] = []
        failure: Exception | None = None
        try:
            partitions_def = context.assets_def.specs_by_key[asset_key].partitions_def
            glue = self.glue_table(
                asset_key, spec.hive_partition_name, partitions_def, spec.lake_format
            )
            self.check_bucket()
            for outcome in load_windows(
                extract,
                target,
                self.parquet_settings(),
                name=name,
                hive_name=spec.hive_partition_name,
                say=context.log.info,
                warn=context.log.warning,
                on_start=started.append,
            ):
                outcomes.append(outcome)
                if glue is not None and isinstance(outcome, PublishedWindow):
                    context.log.info(glue.register(outcome.key, outcome.published.file.schema))
        except Exception as error:
            failure = error
        start = started[0] if started else None
        published = [o for o in outcomes if isinstance(o, PublishedWindow)]
        refused = [o for o in outcomes if isinstance(o, RefusedWindow)]
        metadata = {
            o.key: partition_metadata(o, start, self.object_link(o.published.object), spec)
            for o in published
        }
        selected = {k.name for k in context.selected_asset_check_keys if k.asset_key == asset_key}
        if failure is None and not refused:
            yield from materialize_result(
                context,
                asset_key,
                published=published,
                metadata=metadata,
                selected_checks=selected,
                fingerprint_is_version=spec.fingerprint_sees_updates,
            )
            return
        # Something was not published: record exactly what was, then fail.
        for window in published:
            yield partition_materialization(
                asset_key,
                window,
                metadata[window.key],
                fingerprint_is_version=spec.fingerprint_sees_updates,
                run_id=context.run.run_id,
            )
        yield from evaluations(asset_key, outcomes, selected)
        if isinstance(failure, SchemaDriftError) and SCHEMA_CHECK in selected:
            drifted = CheckOutcome(
                SCHEMA_CHECK, passed=False, blocking=True, description=str(failure)
            )
            for window in extract.windows:
                yield check_evaluation(asset_key, window.key, drifted)
        keys = [w.key for w in extract.windows]
        summary = describe_load_failure(
            name,
            keys=keys,
            published=[o.key for o in published],
            refused=refused,
            failure=failure,
            unread=[k for k in keys if k not in {o.key for o in outcomes}],
        )
        if failure is not None:
            context.log.error(
                f"{name}: the load stopped: {type(failure).__name__}: {failure}",
            )
            self._retry_if_transient(context, failure, summary)
        raise dg.Failure(
            description=summary,
            metadata={
                "published": ", ".join(o.key for o in published) or "none",
                "not_published": ", ".join(k for k in keys if k not in metadata) or "none",
            },
        ) from None

    def publish_frames(
        self,
        context: dg.AssetExecutionContext,
        frames: Mapping[str, pl.LazyFrame | pl.DataFrame],
        asset_key: dg.AssetKey | None = None,
    ) -> Iterator[dg.MaterializeResult]:
        """Publish one frame per partition and record each one's metadata.

        For an asset's body: every partition gets its own materialization metadata, also in a
        range run. Every partition of the run needs a frame.
        """
        key = asset_key or context.asset_key
        missing = set(context.partition_keys if context.has_partition_key_range else []) - set(
            frames
        )
        if missing:
            raise dg.Failure(f"no frame given for partition(s) {sorted(missing)}")
        asset = context.assets_def.specs_by_key[key]
        hive_name = partition_name(asset.partitions_def, asset.metadata)
        target = self.target(key.path, hive_name, context.run.run_id, lake_format(asset.metadata))
        glue = self.glue_table(key, hive_name, asset.partitions_def, lake_format(asset.metadata))
        for partition, frame in frames.items():
            published = self.publish_frame(
                context, key, target, partition, frame.lazy(), hive_name=hive_name, glue=glue
            )
            values = published_metadata(published, self.object_link(published.object))
            context.add_asset_metadata(values, asset_key=key, partition_key=partition)
        yield dg.MaterializeResult(asset_key=key)

    def publish_frame(
        self,
        context: dg.AssetExecutionContext | dg.OutputContext,
        asset_key: dg.AssetKey,
        target: LakeTarget,
        partition: str | None,
        frame: pl.LazyFrame,
        *,
        hive_name: str,
        glue: GlueTable | None = None,
    ) -> PublishedPartition:
        """Publish one partition's frame (None: the unpartitioned asset) at the target.

        With a Glue table, the partition is then registered in it.
        """
        label = asset_key.to_user_string() + (f" [{partition}]" if partition else "")
        published = publish_content(
            target,
            partition,
            FrameContent(frame, PlannedSchema.none()),
            self.parquet_settings(),
            label=label,
            hive_name=hive_name if partition is not None else None,
            say=context.log.info,
            properties={} if partition is None else {"etl-assets.partition": partition},
        )
        if glue is not None:
            context.log.info(glue.register(partition, published.file.schema))
        return published

    def _retry_if_transient(
        self, context: dg.AssetExecutionContext, error: Exception, summary: str
    ) -> None:
        """Ask Dagster to run the step again if `error` may not happen on a second attempt.

        Every partition is published atomically, so a retry republishes the partitions the
        failed attempt already published (same snapshot rules, same content) and goes on.
        """
        reason = transient_cause(error)
        if reason is None or self.transient_retries == 0:
            return
        attempt = context.retry_number + 1
        if attempt > self.transient_retries:
            context.log.error(f"{reason}; {self.transient_retries} retries used, giving up")
            return
        delay = self.retry_delay_seconds * 2 ** (attempt - 1)
        context.log.warning(
            f"{reason}; retrying (retry {attempt} of {self.transient_retries}) in {delay:g}s "
            f"after: {summary}"
        )
        raise dg.RetryRequested(
            max_retries=self.transient_retries, seconds_to_wait=delay
        ) from error


def lake_format(metadata: Mapping[str, Any]) -> LakeFormat:
    """How an asset is kept in the lake, from its definition metadata."""
    declared = metadata.get(LAKE_FORMAT_METADATA_KEY)
    return LakeFormat(str(getattr(declared, "value", declared))) if declared else LakeFormat.PARQUET


def date_projection(
    partitions_def: dg.PartitionsDefinition[Any] | None,
) -> DateProjection | None:
    """Athena's date projection of time partitions of a standard grain; None for others."""
    if not isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        return None
    grain = grain_for_cron(partitions_def.cron_schedule)
    if grain is None:
        return None
    first_key = partitions_def.start.strftime(partitions_def.fmt)
    return DateProjection.for_grain(grain, partitions_def.fmt, first_key)


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
