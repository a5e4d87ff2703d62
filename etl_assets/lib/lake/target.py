"""What a lake target is: where one asset's partitions are published, one partition at a time.

A load hands its target each partition as a `PartitionFile` (its rows, ready to be written as
one Parquet file) and a `verify` step (the blocking checks); the target writes the file where
nobody reads it yet, verifies it, and then makes it the partition's data in one atomic step.
Two targets exist:

* the plain layout, `etl_assets.lib.lake.publish.ObjectTarget`: each partition is one Parquet
  object at a hive-style key, replaced by completing an invisible multipart upload;
* Iceberg, `etl_assets.lib.lake.iceberg.IcebergTarget`: each partition is one data file of a
  catalog table, replaced by one catalog commit that removes the partition's old files and adds
  the new one.

Either way a failure before the atomic step leaves the partition as it was, and a publish
whose outcome S3 or the catalog left unclear is settled before anything is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Protocol

import pyarrow as pa

from etl_assets.lib.lake.objects import PublishedObject
from etl_assets.lib.lake.parquet import WrittenFile

Convert = Callable[[pa.RecordBatch], pa.RecordBatch]
Verify = Callable[[WrittenFile], None]


class PartitionFile(Protocol):
    """One partition's rows, ready to be written as one Parquet file."""

    def schema(self) -> pa.Schema:
        """The lake's Arrow schema of the rows (what the checks and the plan speak of)."""
        ...

    def write(
        self,
        sink: IO[bytes],
        *,
        file_schema: pa.Schema | None = None,
        convert: Convert | None = None,
    ) -> WrittenFile:
        """Write the rows to `sink`; a target may ask for each batch converted to `file_schema`."""
        ...


@dataclass(frozen=True)
class PublishedPartition:
    """A partition that is now visible in the lake, and what it holds."""

    object: PublishedObject | None
    """The data file (the plain layout's object, or the Iceberg table's new data file); None
    for an Iceberg partition without rows, which holds no data file."""
    file: WrittenFile
    seconds: float
    """From the first byte written to the partition being visible, the commit included."""
    commit_seconds: float = 0.0
    """Of those, the catalog commit that made it visible (an Iceberg table; 0 for objects)."""
    details: Mapping[str, str | int] = field(default_factory=dict[str, str | int])
    """What the target adds to the partition's metadata (an Iceberg table and snapshot)."""


class LakeTarget(Protocol):
    """Where the partitions of one asset are published, one partition at a time."""

    def location(self, partition: str | None) -> str:
        """Where a partition's data is published, for messages (`s3://...`)."""
        ...

    def publish(
        self,
        partition: str | None,
        file: PartitionFile,
        verify: Verify | None,
        properties: Mapping[str, str],
    ) -> PublishedPartition:
        """Write a partition's file, verify it, then publish it atomically.

        `properties` describe the publish (the run, the window, the source's fingerprint) for
        targets that record them. Raising anywhere before the publish leaves the partition as
        it was.
        """
        ...
