"""The plain layout's target: each partition one Parquet object, published atomically.

`publish_file` streams a file into an invisible upload, verifies it and only then completes the
upload (`etl_assets.lib.lake.objects`); `ObjectTarget` does that at each partition's hive-style
key. Iceberg tables reuse `publish_file` for their data files (`etl_assets.lib.lake.iceberg`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, cast

from etl_assets.lib.errors import (
    NotPublishedError,
    PublishOutcomeUnknownError,
    UploadLeftBehindError,
)
from etl_assets.lib.lake.layout import LakeLayout
from etl_assets.lib.lake.objects import Encryption, PendingUpload, PublishedObject, S3Client
from etl_assets.lib.lake.parquet import WrittenFile
from etl_assets.lib.lake.target import PartitionFile, PublishedPartition, Verify

MIB = 1024 * 1024


@dataclass(frozen=True)
class UploadSettings:
    """How objects are uploaded."""

    encryption: Encryption
    part_size: int = 8 * MIB


def publish_file(
    client: S3Client,
    bucket: str,
    key: str,
    write: Callable[[IO[bytes]], WrittenFile],
    *,
    upload: UploadSettings,
    verify: Callable[[WrittenFile], None] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> PublishedFile:
    """Write one Parquet object at `key` with `write(sink)`, visible only once verified.

    `verify` runs after the file is finished and before it is published; raising there (or
    anywhere before) leaves the key holding its previous version, or nothing. `metadata` goes
    into the object's user metadata. A publishing request that fails is settled before this
    returns or raises (see `etl_assets.lib.lake.objects`).
    """
    started = time.perf_counter()
    pending = PendingUpload(
        client,
        bucket,
        key,
        encryption=upload.encryption,
        content_type="application/vnd.apache.parquet",
        part_size=upload.part_size,
        metadata=metadata,
    )
    try:
        with pending:
            # A RawIOBase is a binary file; typeshed just does not count it as IO[bytes].
            written = write(cast("IO[bytes]", pending))
            if verify is not None:
                verify(written)
            published = pending.publish()
    except (NotPublishedError, PublishOutcomeUnknownError):
        raise
    except Exception as error:
        if pending.abort_failure is None:
            raise
        raise UploadLeftBehindError(
            f"{error}; the incomplete upload could not be aborted either "
            f"({pending.abort_failure}): `etl-assets lake abort-uploads` or the bucket's "
            "lifecycle rule removes it"
        ) from error
    return PublishedFile(object=published, file=written, seconds=time.perf_counter() - started)


@dataclass(frozen=True)
class PublishedFile:
    """A Parquet object now visible at its key, and what it holds."""

    object: PublishedObject
    file: WrittenFile
    seconds: float


PARTITION_METADATA = "etl-assets-partition"
"""User-metadata key naming the partition an object holds."""


@dataclass(frozen=True)
class ObjectTarget:
    """The plain layout: each partition of an asset is one Parquet object at a hive-style key.

    `object_metadata` goes into every object's user metadata (the run that wrote it), next to
    the partition and the upload's own token.
    """

    client: S3Client
    layout: LakeLayout
    asset_path: tuple[str, ...]
    hive_name: str
    """The `<name>` of `<name>=<key>` directories; unused for an unpartitioned asset."""
    upload: UploadSettings
    object_metadata: Mapping[str, str] = field(default_factory=dict[str, str])

    def key(self, partition: str | None) -> str:
        """The object key of one partition (or of the unpartitioned asset, for None)."""
        if partition is None:
            return self.layout.unpartitioned_key(self.asset_path)
        return self.layout.partition_key(self.asset_path, self.hive_name, partition)

    def location(self, partition: str | None) -> str:
        """`s3://bucket/key` of one partition."""
        return self.layout.uri(self.key(partition))

    def publish(
        self,
        partition: str | None,
        file: PartitionFile,
        verify: Verify | None,
        properties: Mapping[str, str],
    ) -> PublishedPartition:
        """Write, verify and publish one partition's object (see `publish_file`).

        The object's user metadata carries the run (`object_metadata`) and the partition;
        `properties` are not recorded: the materialization holds them.
        """
        metadata = dict(self.object_metadata)
        if partition is not None:
            metadata[PARTITION_METADATA] = partition
        published = publish_file(
            self.client,
            self.layout.bucket,
            self.key(partition),
            file.write,
            upload=self.upload,
            verify=verify,
            metadata=metadata,
        )
        return PublishedPartition(published.object, published.file, published.seconds)
