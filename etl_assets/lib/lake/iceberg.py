"""Iceberg tables as a lake target: each Dagster partition is one partition of a catalog table.

A table's partition spec is identity on the partition key column (`day`, `hour`, ... or the
declared `partition_name`), which every data file carries: windows are cut in the table's own
timezone, which Iceberg's own day and hour transforms (UTC only) cannot express. Publishing one
partition:

1. the data file is streamed exactly as for the plain layout (same Parquet writer, same bounded
   memory) to a path of its own under the table's location,
   `data/<column>=<key>/<run>-<id>.parquet`, through an invisible upload; the blocking checks
   are evaluated on the finished file, and only then does the object appear, still outside the
   table;
2. one catalog commit replaces the partition: a transaction deletes the partition's files (a
   metadata-only delete: the filter matches whole files) and adds the new one. Readers see the
   old files or the new one, never both and never neither. A commit that loses to a concurrent
   one (another partition's run) is redone on the table as it now is, with backoff, a bounded
   number of times. Every snapshot's summary records the run, the partition, the window, the
   source's fingerprint, the rows, and the upload's token;
3. a commit whose outcome the catalog left unclear (the connection dropped) is settled by
   reading the table again and looking for the upload's token in its snapshots.

A failure or a kill before the commit changes nothing a reader sees; a file left by a killed run
is an orphan that `remove_orphan_files` deletes once it is older than any run may live.
`expire_snapshots` drops snapshots past their retention (time travel reaches back that far).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, urlsplit

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError
from pyiceberg.expressions import EqualTo, In, Reference
from pyiceberg.expressions.literals import literal
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.transforms import IdentityTransform

from etl_assets.lib.errors import (
    DeclarationError,
    NotPublishedError,
    PublishOutcomeUnknownError,
    SchemaDriftError,
    TableSchemaError,
    VerificationError,
)
from etl_assets.lib.lake.iceberg_names import qualified
from etl_assets.lib.lake.iceberg_types import (
    IcebergLayout,
    iceberg_layout,
    schema_changes,
    to_file_batch,
)
from etl_assets.lib.lake.objects import S3Client
from etl_assets.lib.lake.parquet import WrittenFile
from etl_assets.lib.lake.publish import PARTITION_METADATA, UploadSettings, publish_file
from etl_assets.lib.lake.target import PartitionFile, PublishedPartition, Verify

PROPERTY_PREFIX = "etl-assets."
UPLOAD_PROPERTY = f"{PROPERTY_PREFIX}upload"
"""The snapshot summary property holding the token of the upload a commit added."""
RUN_PROPERTY = f"{PROPERTY_PREFIX}run"
ROWS_PROPERTY = f"{PROPERTY_PREFIX}rows"
FORMAT_VERSION_PROPERTY = "format-version"
COMMIT_ATTEMPTS = 10
"""How many times a commit that lost to a concurrent one is redone before the publish fails."""
_DELETE_MATCHED_NOTHING = "Delete operation did not match any records"


@dataclass
class IcebergTarget:
    """One asset's Iceberg table in a catalog: each partition published by one commit."""

    catalog: Catalog
    identifier: tuple[str, str]
    partition_column: str
    client: S3Client
    """Uploads the data files (the catalog's own file IO reads them back)."""
    upload: UploadSettings
    run_id: str
    backoff_seconds: float = 0.1
    sleep: Callable[[float], None] = time.sleep
    _table: Table | None = field(default=None, init=False, repr=False)
    _layouts: dict[pa.Schema, IcebergLayout] = field(default_factory=dict, init=False, repr=False)

    @property
    def name(self) -> str:
        """`namespace.table`."""
        return qualified(self.identifier)

    def location(self, partition: str | None) -> str:
        """The table and partition, for messages."""
        return f"iceberg table {self.name} [{self.partition_column}={partition}]"

    def publish(
        self,
        partition: str | None,
        file: PartitionFile,
        verify: Verify | None,
        properties: Mapping[str, str],
    ) -> PublishedPartition:
        """Write the partition's data file, verify it, then commit it in place of the old ones."""
        if partition is None:
            raise DeclarationError(
                f"{self.name}: an Iceberg table here is partitioned by its time windows; an "
                "unpartitioned asset is published in the plain layout"
            )
        lake_schema = file.schema()
        layout = self.prepare(lake_schema)
        table = self._loaded()
        bucket, key = _bucket_and_key(
            f"{table.location().rstrip('/')}/data/{quote(self.partition_column)}="
            f"{quote(partition, safe='')}/{self.run_id}-{uuid.uuid4().hex}.parquet"
        )
        started = time.perf_counter()

        def checked(written: WrittenFile) -> None:
            # The file holds the table's columns; the checks speak of the lake's columns.
            if written.schema.names != layout.file_schema.names:
                raise VerificationError(
                    f"{self.name}: data file has columns {written.schema.names}, the table "
                    f"{layout.file_schema.names}"
                )
            if verify is not None:
                verify(replace(written, schema=lake_schema))

        staged = publish_file(
            self.client,
            bucket,
            key,
            lambda sink: file.write(
                sink,
                file_schema=layout.file_schema,
                convert=lambda batch: to_file_batch(batch, layout, partition_key=partition),
            ),
            upload=self.upload,
            verify=checked,
            metadata={PARTITION_METADATA: partition, RUN_PROPERTY: self.run_id},
        )
        token = uuid.uuid4().hex
        summary = {
            **properties,
            RUN_PROPERTY: self.run_id,
            ROWS_PROPERTY: str(staged.file.rows),
            UPLOAD_PROPERTY: token,
        }
        # A file without rows has no column bounds, which is where a table learns a file's
        # partition: an empty window is published by deleting the partition's files alone.
        added = staged.object.uri if staged.file.rows else None
        committing = time.perf_counter()
        try:
            snapshot = self._commit(partition, added, summary, token)
        except NotPublishedError:
            self._discard(bucket, key)
            raise
        commit_seconds = time.perf_counter() - committing
        if added is None:
            self._discard(bucket, key)
        return PublishedPartition(
            object=staged.object if added else None,
            file=replace(staged.file, schema=lake_schema),
            seconds=time.perf_counter() - started,
            commit_seconds=commit_seconds,
            details={
                "iceberg_table": self.name,
                # An empty window of a table that never held the partition changes nothing.
                **({"iceberg_snapshot_id": snapshot.snapshot_id} if snapshot else {}),
                "iceberg_partition": f"{self.partition_column}={partition}",
                "iceberg_metadata_location": self._loaded().metadata_location,
            },
        )

    def prepare(self, lake_schema: pa.Schema) -> IcebergLayout:
        """The table's layout for rows of `lake_schema`, the table created or evolved to it.

        Columns declared since the table was created are added (old files read them as NULL)
        and types are promoted where Iceberg allows; any other change is refused
        (`TableSchemaError`) before a data file is written. The layout carries the table's
        own field ids, which every data file is written with.
        """
        layout = self._layouts.get(lake_schema)
        if layout is not None:
            return layout
        planned = iceberg_layout(lake_schema, self.partition_column, table=self.name)
        table = self._evolve(self._ensure_table(planned), planned)
        layout = planned.for_table(table.schema(), table=self.name)
        self._layouts[lake_schema] = layout
        return layout

    def _ensure_table(self, layout: IcebergLayout) -> Table:
        namespace, _ = self.identifier
        try:
            self.catalog.create_namespace_if_not_exists(namespace)
        except Exception:
            # Runs of two tables of one namespace start at once: a catalog that checks, then
            # inserts (pyiceberg's SQL catalog) lets the second insert collide with the first.
            if not self.catalog.namespace_exists(namespace):
                raise
        table = self.catalog.create_table_if_not_exists(
            self.identifier,
            schema=layout.schema,
            partition_spec=layout.partition_spec,
            properties={FORMAT_VERSION_PROPERTY: "2", **layout.table_properties},
        )
        partitioned_by = [
            (table.schema().find_column_name(f.source_id), str(f.transform))
            for f in table.spec().fields
        ]
        if partitioned_by != [(self.partition_column, str(IdentityTransform()))]:
            raise TableSchemaError(
                f"the Iceberg table {self.name} is partitioned by {partitioned_by or 'nothing'}, "
                f"not by the identity of `{self.partition_column}`: each Dagster partition is "
                "one Iceberg partition here. Publish to a new table, or drop this one"
            )
        self._table = table
        return table

    def _evolve(self, table: Table, layout: IcebergLayout) -> Table:
        """The table with the planned columns (and the properties its files need)."""
        for attempt in range(COMMIT_ATTEMPTS):
            try:
                changes = schema_changes(table.schema(), layout.schema, table=self.name)
            except SchemaDriftError as error:
                raise TableSchemaError(str(error)) from error
            properties = {
                name: value
                for name, value in layout.table_properties.items()
                if table.properties.get(name) != value
            }
            if changes.empty and not properties:
                self._table = table
                return table
            try:
                with table.transaction() as transaction:
                    if not changes.empty:
                        with transaction.update_schema() as update:
                            changes.apply(update)
                    if properties:
                        transaction.set_properties(properties)
            except CommitFailedException:
                self._back_off(attempt)
                table = self.catalog.load_table(self.identifier)
                continue
            table = self.catalog.load_table(self.identifier)
            self._table = table
            return table
        raise TableSchemaError(
            f"{self.name}: its schema kept changing under {COMMIT_ATTEMPTS} attempts to evolve it"
        )

    def table(self) -> Table:
        """The table as the catalog has it now (`NoSuchTableError` if it was never published)."""
        self._table = self.catalog.load_table(self.identifier)
        return self._table

    def partitions_present(self, keys: Sequence[str]) -> set[str]:
        """Which of these partitions the table holds data files for."""
        try:
            table = self.table()
        except NoSuchTableError:
            return set()
        wanted = In(term=Reference(self.partition_column), values={literal(k) for k in keys})
        tasks = table.scan(row_filter=wanted).plan_files()
        return {str(task.file.partition[0]) for task in tasks}

    def _loaded(self) -> Table:
        if self._table is None:
            self._table = self.catalog.load_table(self.identifier)
        return self._table

    def _commit(
        self, partition: str, path: str | None, summary: Mapping[str, str], token: str
    ) -> Snapshot | None:
        """Replace the partition's files by `path` (None: by none) in one commit."""
        last_error: Exception | None = None
        # First on the table as this target last saw it (its own last commit, in a range run):
        # if another commit came since, the catalog refuses this one, and it is redone at once
        # on the table as it now is.
        cached = self._table
        for attempt in range(COMMIT_ATTEMPTS):
            table = cached or self.catalog.load_table(self.identifier)
            transaction = table.transaction()
            with warnings.catch_warnings():
                # The first publish of a partition has nothing to delete.
                warnings.filterwarnings("ignore", message=_DELETE_MATCHED_NOTHING)
                transaction.delete(
                    EqualTo(term=Reference(self.partition_column), value=literal(partition)),
                    snapshot_properties=dict(summary),
                )
            if path is not None:
                transaction.add_files(
                    [path], snapshot_properties=dict(summary), check_duplicate_files=False
                )
            try:
                committed = transaction.commit_transaction()
            except CommitFailedException:
                # Another run committed first: redo the commit on the table as it is now.
                if cached is None:
                    self._back_off(attempt)
                cached = None
                continue
            except Exception as unclear:  # the catalog's reply was lost, or it failed to answer
                cached = None
                found = self._settle(token, unclear)
                if found is not None:
                    return found
                last_error = unclear
                self._back_off(attempt)
                continue
            self._table = committed
            return committed.current_snapshot()
        cause = (
            "lost to concurrent ones"
            if last_error is None
            else f"failed, the last with {type(last_error).__name__}: {last_error}"
        )
        raise NotPublishedError(
            f"nothing was published to {self.location(partition)}: {COMMIT_ATTEMPTS} commits in "
            f"a row {cause}; the partition keeps its previous files"
        ) from last_error

    def _settle(self, token: str, unclear: Exception) -> Snapshot | None:
        """The snapshot a commit with an unclear outcome made, or None if it made none."""
        try:
            table = self.catalog.load_table(self.identifier)
        except Exception as unreachable:
            raise PublishOutcomeUnknownError(
                f"committing to {self.name} failed ({type(unclear).__name__}: {unclear}), and "
                f"the catalog could not be read to learn whether it took effect "
                f"({type(unreachable).__name__}: {unreachable}); the snapshot would carry "
                f"{UPLOAD_PROPERTY}={token}"
            ) from unclear
        self._table = table
        return next(
            (s for s in table.snapshots() if s.summary and s.summary.get(UPLOAD_PROPERTY) == token),
            None,
        )

    def _back_off(self, attempt: int) -> None:
        self.sleep(self.backoff_seconds * 2 ** min(attempt, 6) * (1 + random.random()))  # noqa: S311

    def _discard(self, bucket: str, key: str) -> None:
        """Delete a data file no commit took (it is never visible in the table)."""
        # If this fails too, the orphan is removed by remove_orphan_files later.
        with contextlib.suppress(Exception):
            self.client.delete_object(Bucket=bucket, Key=key)


def _bucket_and_key(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    if parts.scheme not in ("s3", "s3a"):
        raise DeclarationError(f"the Iceberg table's location {uri} is not on S3")
    return parts.netloc, parts.path.lstrip("/")


def referenced_files(table: Table) -> set[str]:
    """Every data file any snapshot of the table still refers to."""
    io = table.io
    files: set[str] = set()
    for snapshot in table.snapshots():
        for manifest in snapshot.manifests(io):
            for entry in manifest.fetch_manifest_entry(io, discard_deleted=False):
                files.add(entry.data_file.file_path)
    return files


@dataclass(frozen=True)
class OrphanFile:
    """A data file under a table's location that no snapshot refers to."""

    uri: str
    last_modified: dt.datetime
    size: int


def orphan_files(table: Table, client: Any, *, older_than: dt.datetime) -> Iterator[OrphanFile]:
    """Data files no snapshot refers to, last written before `older_than`.

    Files younger than that may belong to a run still publishing (written, not yet committed).
    """
    bucket, prefix = _bucket_and_key(f"{table.location().rstrip('/')}/data/")
    referenced = referenced_files(table)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            uri = f"s3://{bucket}/{item['Key']}"
            if uri not in referenced and item["LastModified"] < older_than:
                yield OrphanFile(uri, item["LastModified"], int(item["Size"]))


def remove_orphan_files(
    table: Table, client: Any, *, older_than: dt.datetime, dry_run: bool = False
) -> list[OrphanFile]:
    """Delete the table's orphan data files (see `orphan_files`); the ones found."""
    found = list(orphan_files(table, client, older_than=older_than))
    if not dry_run:
        for orphan in found:
            bucket, key = _bucket_and_key(orphan.uri)
            client.delete_object(Bucket=bucket, Key=key)
    return found


def expire_snapshots(table: Table, *, older_than: dt.datetime, dry_run: bool = False) -> list[int]:
    """Drop snapshots made before `older_than` (never the current one); the ids dropped.

    Time travel reaches back to the oldest snapshot kept; the files only expired snapshots
    referred to become orphans that `remove_orphan_files` deletes.
    """
    current = table.current_snapshot()
    expired = [
        s.snapshot_id
        for s in table.snapshots()
        if s.timestamp_ms < older_than.timestamp() * 1000
        and (current is None or s.snapshot_id != current.snapshot_id)
    ]
    if expired and not dry_run:
        table.maintenance.expire_snapshots().by_ids(expired).commit()
    return expired


@dataclass(frozen=True)
class Maintenance:
    """What one maintenance pass over a table did (or, in a dry run, would do)."""

    table: str
    expired_snapshots: tuple[int, ...]
    removed_files: tuple[OrphanFile, ...]

    def describe(self, *, dry_run: bool) -> str:
        """One line for a person."""
        verb = "would expire" if dry_run else "expired"
        removed = "would remove" if dry_run else "removed"
        size = sum(f.size for f in self.removed_files)
        return (
            f"{self.table}: {verb} {len(self.expired_snapshots)} snapshot(s), {removed} "
            f"{len(self.removed_files)} orphan file(s) ({size} bytes)"
        )


def maintain(
    catalog: Catalog,
    identifier: tuple[str, str],
    client: Any,
    *,
    now: dt.datetime,
    orphan_min_age: dt.timedelta,
    snapshot_retention: dt.timedelta,
    dry_run: bool = False,
) -> Maintenance:
    """Expire the table's snapshots past their retention, then remove its orphan data files.

    Orphans are files no kept snapshot refers to: written by runs killed before their commit,
    or left by expired snapshots. Only those older than `orphan_min_age` go, so a run still
    between writing its file and committing it keeps the file.
    """
    table = catalog.load_table(identifier)
    expired = expire_snapshots(table, older_than=now - snapshot_retention, dry_run=dry_run)
    table = catalog.load_table(identifier)
    removed = remove_orphan_files(table, client, older_than=now - orphan_min_age, dry_run=dry_run)
    return Maintenance(qualified(identifier), tuple(expired), tuple(removed))


def catalog_tables(catalog: Catalog) -> list[tuple[str, str]]:
    """Every table of every namespace in the catalog."""
    return [
        (str(namespace[0]), str(name))
        for namespace in catalog.list_namespaces()
        for _, name in catalog.list_tables(namespace)
    ]
