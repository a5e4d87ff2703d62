"""Writing one partition: stream to a pending upload, verify, then publish atomically."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, cast

from etl_assets.lib.parquet_files import WrittenFile
from etl_assets.lib.s3_objects import Encryption, PendingUpload, PublishedObject, S3Client

MIB = 1024 * 1024


@dataclass(frozen=True)
class UploadSettings:
    """How objects are uploaded."""

    encryption: Encryption
    part_size: int = 8 * MIB


@dataclass(frozen=True)
class PublishedPartition:
    """A partition that is now visible in the lake, and what it holds."""

    object: PublishedObject
    file: WrittenFile
    seconds: float


def publish_file(
    client: S3Client,
    bucket: str,
    key: str,
    write: Callable[[IO[bytes]], WrittenFile],
    *,
    upload: UploadSettings,
    verify: Callable[[WrittenFile], None] | None = None,
) -> PublishedPartition:
    """Write one Parquet object at `key` with `write(sink)`, visible only once verified.

    `verify` runs after the file is finished and before it is published; raising there (or
    anywhere before) leaves the key holding its previous version, or nothing.
    """
    started = time.perf_counter()
    pending = PendingUpload(
        client,
        bucket,
        key,
        encryption=upload.encryption,
        content_type="application/vnd.apache.parquet",
        part_size=upload.part_size,
    )
    try:
        with pending:
            # A RawIOBase is a binary file; typeshed just does not count it as IO[bytes].
            written = write(cast("IO[bytes]", pending))
            if verify is not None:
                verify(written)
            published = pending.publish()
    except Exception as error:
        if pending.abort_failure is None:
            raise
        raise UploadLeftBehindError(
            f"{error}; the incomplete upload could not be aborted either "
            f"({pending.abort_failure}): `etl-assets lake abort-uploads` or the bucket's "
            "lifecycle rule removes it"
        ) from error
    return PublishedPartition(object=published, file=written, seconds=time.perf_counter() - started)


class UploadLeftBehindError(RuntimeError):
    """Writing failed, and so did aborting the invisible upload: it stays until cleaned up."""
