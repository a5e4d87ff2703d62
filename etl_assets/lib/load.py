"""Loading a table's windows into the lake: each window read, written, checked and published.

One load holds one snapshot and one streaming read of its windows (`etl_assets.lib.postgres.read`).
For each window in order, its rows go into a file pending at its target (`LakeTarget`), the
window's checks are evaluated on the finished file, and only if every blocking one passes is
the file published. `load_windows` yields what happened to each window as soon as it is known,
so a caller can report every published window even when a later one fails:

* a window whose rows were refused (a value no Parquet type holds, a blocking check, an error
  in its transform) is skipped and the next one is read: `RefusedWindow`;
* a failure that no later window can escape (the source stream broke, the lake cannot be
  written) ends the load: the error is raised after the windows before it were yielded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO

import botocore.exceptions
import polars as pl
import pyarrow as pa

from etl_assets.lib.arrow_types import PlannedSchema
from etl_assets.lib.errors import (
    BlockingCheckError,
    NotPublishedError,
    PartitionWriteError,
    PublishOutcomeUnknownError,
    TableSchemaError,
    UploadLeftBehindError,
)
from etl_assets.lib.lake.objects import MIB
from etl_assets.lib.lake.parquet import (
    DictionaryChoice,
    ParquetSettings,
    WrittenFile,
    frame_schema,
    write_batches,
    write_frame,
)
from etl_assets.lib.lake.target import (
    Convert,
    LakeTarget,
    PublishedPartition,
    Verify,
)
from etl_assets.lib.postgres.read import OpenExtract, PartitionRead, ReadStats, TableExtract
from etl_assets.lib.postgres.types import TablePlan
from etl_assets.lib.table.checks import CheckOutcome
from etl_assets.lib.transient import transient_cause

Say = Callable[[str], None]


@dataclass(frozen=True)
class PublishedWindow:
    """A window now published in the lake, with what its read saw and its checks."""

    read: ReadStats
    checks: Sequence[CheckOutcome]
    published: PublishedPartition

    @property
    def key(self) -> str:
        """The window's partition key."""
        return self.read.window.key


@dataclass(frozen=True)
class RefusedWindow:
    """A window that was not published; the load went on with the next one."""

    read: ReadStats
    checks: Sequence[CheckOutcome]
    """The window's checks, when it got as far as evaluating them."""
    error: Exception

    @property
    def key(self) -> str:
        """The window's partition key."""
        return self.read.window.key


WindowOutcome = PublishedWindow | RefusedWindow


@dataclass(frozen=True)
class LoadStart:
    """What the load learned once its snapshot was open, before any window was read."""

    plan: TablePlan
    null_partition_rows: int


def load_windows(
    extract: TableExtract,
    target: LakeTarget,
    settings: ParquetSettings,
    *,
    name: str,
    hive_name: str | None,
    say: Say,
    warn: Say | None = None,
    on_start: Callable[[LoadStart], None] | None = None,
) -> Iterator[WindowOutcome]:
    """Read, write, check and publish every window of `extract`, one after the other.

    `name` labels messages (the asset); `say` receives progress lines and `warn` what a person
    should look at (rows skipped, windows not published); `on_start` learns the plan before
    the first window.
    """
    warn = warn or say
    spec = extract.spec
    with extract.open() as opened:
        if on_start is not None:
            on_start(LoadStart(opened.plan, opened.null_partition_rows))
        if opened.null_partition_rows:
            warn(
                f"{spec.qualified_name}: {opened.null_partition_rows} row(s) have a NULL "
                f"{spec.partition_column!r} and belong to no partition; they are not loaded"
            )
        if opened.plan.undeclared_columns:
            say(
                f"{spec.qualified_name} has columns the contract does not declare (not read): "
                f"{', '.join(opened.plan.undeclared_columns)}"
            )
        dictionary = DictionaryChoice()
        lines = PublishedLines(say, name)
        try:
            for read in opened.partitions:
                label = f"{name} [{read.window.key}]"
                yield _load_window(
                    opened,
                    read=read,
                    target=target,
                    settings=settings,
                    dictionary=dictionary,
                    hive_name=hive_name,
                    label=label,
                    say=say,
                    warn=warn,
                    lines=lines,
                )
        finally:
            lines.flush()


def _load_window(
    opened: OpenExtract,
    *,
    read: PartitionRead,
    target: LakeTarget,
    settings: ParquetSettings,
    dictionary: DictionaryChoice,
    hive_name: str | None,
    label: str,
    say: Say,
    warn: Say,
    lines: PublishedLines,
) -> WindowOutcome:
    spec = opened.spec
    key = read.window.key
    evaluated: list[CheckOutcome] = []

    def verify(written: WrittenFile) -> None:
        evaluated.extend(read.check_outcomes(written.schema))
        refuse_on_blocking_failures(evaluated, spec.qualified_name, key)

    content = partition_content(read, opened.plan, dictionary)
    try:
        published = publish_content(
            target,
            key,
            content,
            settings,
            label=label,
            hive_name=hive_name,
            verify=verify,
            keep_rows=spec.preview_rows,
            say=say,
            batches_read=lambda: read.stats.batches,
            properties=WindowProperties(read.stats),
            said=lambda line, published: lines.add(line, key, published),
        )
    except Exception as error:
        lines.flush()
        if opened.stream_failure is not None or ends_the_load(error):
            raise
        warn(f"{label}: not published, going on with the next window: {error}")
        return RefusedWindow(read.stats, tuple(evaluated), error)
    return PublishedWindow(read.stats, tuple(evaluated), published)


PROPERTY_PREFIX = "etl-assets."
"""Prefix of the properties a publish records where its target keeps them (Iceberg snapshots)."""


class WindowProperties(Mapping[str, str]):
    """What a window's publish says about itself: its partition, window and source fingerprint.

    The fingerprint is looked up when read: a target reads the properties only once the file
    is verified, and the window's count and fingerprint may still be on their way until then
    (taken alongside the rows, see `ConnectionSettings.sessions_per_load`).
    """

    PARTITION = f"{PROPERTY_PREFIX}partition"
    WINDOW = f"{PROPERTY_PREFIX}window"
    FINGERPRINT = f"{PROPERTY_PREFIX}source-fingerprint"

    def __init__(self, stats: ReadStats) -> None:
        self._stats = stats

    def __getitem__(self, key: str) -> str:
        if key == self.PARTITION:
            return self._stats.window.key
        if key == self.WINDOW:
            return self._stats.window.describe()
        if key == self.FINGERPRINT:
            return self._stats.fingerprint.text
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter((self.PARTITION, self.WINDOW, self.FINGERPRINT))

    def __len__(self) -> int:
        return 3


def ends_the_load(error: BaseException) -> bool:
    """Whether `error` stops every later window too: the lake could not be written.

    Refused values, blocking checks and transform errors belong to one window; a failing S3
    request, or a publish whose outcome could not be settled, would fail again.
    """
    lake_failures = (
        NotPublishedError,
        PublishOutcomeUnknownError,
        UploadLeftBehindError,
        TableSchemaError,
        botocore.exceptions.BotoCoreError,
        botocore.exceptions.ClientError,
    )
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, lake_failures):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def publish_content(
    target: LakeTarget,
    partition: str | None,
    content: FrameContent | BatchContent,
    settings: ParquetSettings,
    *,
    label: str,
    hive_name: str | None,
    say: Say,
    verify: Verify | None = None,
    keep_rows: int = 0,
    batches_read: Callable[[], int] | None = None,
    properties: Mapping[str, str] | None = None,
    said: Callable[[str, PublishedPartition], None] | None = None,
) -> PublishedPartition:
    """Write one partition's content as Parquet at the target and publish it.

    `properties` describe the publish for targets that record them (see `LakeTarget.publish`).
    The line saying what was published goes to `said` if given, else to `say`.
    """
    if hive_name is not None and hive_name in content.column_names():
        raise PartitionWriteError(
            f"{label}: the output has a column `{hive_name}`, the name of the lake's "
            f"{hive_name}=<key> partition directories; readers that apply hive "
            f"partitioning would see two `{hive_name}` columns. Rename the column, or set "
            "a different `partition_name`"
        )
    file = ContentFile(
        content, settings, keep_rows, lambda sink: ProgressLine(say, label, sink, batches_read)
    )
    published = target.publish(partition, file, verify, properties or {})
    seconds = published.seconds
    rate = published.file.rows / seconds if seconds else 0.0
    where = (
        f"{published.object.size} bytes to {published.object.uri}"
        if published.object is not None
        else f"no data file to {target.location(partition)}"
    )
    rows = published.file.rows
    line = f"{label}: published {rows} rows, {where} in {seconds:.2f}s ({rate:,.0f} rows/s)"
    if said is not None:
        said(line, published)
    else:
        say(line)
    return published


def refuse_on_blocking_failures(outcomes: Sequence[CheckOutcome], table: str, key: str) -> None:
    """Raise, describing every failed blocking check, if any failed."""
    failed = [o for o in outcomes if o.blocking and not o.passed]
    if failed:
        details = "; ".join(
            f"{o.name}: {o.description} {_evidence(o.metadata)}".strip() for o in failed
        )
        raise BlockingCheckError(f"{table} [{key}]: blocking check(s) failed: {details}")


def _evidence(metadata: Mapping[str, object]) -> str:
    samples = {k: v for k, v in metadata.items() if k.endswith("_sample") and v != "none"}
    return f"({', '.join(f'{k}: {v}' for k, v in samples.items())})" if samples else ""


@dataclass(frozen=True)
class FrameContent:
    """A partition given as a Polars plan: a curated asset's output, or a transformed window."""

    frame: pl.LazyFrame
    planned: PlannedSchema

    def column_names(self) -> list[str]:
        """The columns the file will have."""
        return self.frame.collect_schema().names()

    def schema(self) -> pa.Schema:
        """The Arrow schema of the rows (the plan's types where the transform kept a column)."""
        return frame_schema(self.frame, self.planned)

    def write(
        self,
        sink: IO[bytes],
        settings: ParquetSettings,
        progress: Callable[[int, int], None],
        keep_rows: int,
        *,
        file_schema: pa.Schema | None = None,
        convert: Convert | None = None,
    ) -> WrittenFile:
        """Run the plan on Polars' streaming engine into `sink`."""
        return write_frame(
            self.frame,
            self.planned,
            sink,
            settings,
            on_row_group=progress,
            keep_rows=keep_rows,
            file_schema=file_schema,
            convert=convert,
        )


@dataclass(frozen=True)
class BatchContent:
    """A window without a transform: the driver's batches go to the file without Polars."""

    batches: Callable[[], Iterator[pa.RecordBatch]]
    lake_schema: pa.Schema
    dictionary: DictionaryChoice

    def column_names(self) -> list[str]:
        """The columns the file will have."""
        return self.lake_schema.names

    def schema(self) -> pa.Schema:
        """The plan's lake schema."""
        return self.lake_schema

    def write(
        self,
        sink: IO[bytes],
        settings: ParquetSettings,
        progress: Callable[[int, int], None],
        keep_rows: int,
        *,
        file_schema: pa.Schema | None = None,
        convert: Convert | None = None,
    ) -> WrittenFile:
        """Write the batches into `sink`."""
        batches = self.batches()
        return write_batches(
            (convert(b) for b in batches) if convert is not None else batches,
            file_schema or self.lake_schema,
            sink,
            settings,
            on_row_group=progress,
            dictionary=self.dictionary,
            keep_rows=keep_rows,
        )


@dataclass(frozen=True)
class ContentFile:
    """One partition's content with how to write it: what a target is handed (`PartitionFile`)."""

    content: FrameContent | BatchContent
    settings: ParquetSettings
    keep_rows: int
    progress: Callable[[IO[bytes]], Callable[[int, int], None]]
    """Makes the progress callback for the sink the file is written to."""

    def schema(self) -> pa.Schema:
        """The lake schema of the rows."""
        return self.content.schema()

    def write(
        self,
        sink: IO[bytes],
        *,
        file_schema: pa.Schema | None = None,
        convert: Convert | None = None,
    ) -> WrittenFile:
        """Write the content to `sink` (converted to `file_schema` when a target asks)."""
        return self.content.write(
            sink,
            self.settings,
            self.progress(sink),
            self.keep_rows,
            file_schema=file_schema,
            convert=convert,
        )


def partition_content(
    read: PartitionRead, plan: TablePlan, dictionary: DictionaryChoice
) -> FrameContent | BatchContent:
    """What one window writes: the driver's batches, or its transformed frame."""
    if read.transform is None:
        return BatchContent(read.lake_batches, plan.arrow_schema, dictionary)
    return FrameContent(read.frame, PlannedSchema(plan.arrow_schema, plan.frame_schema))


class PublishedLines:
    """Says what a load published, at most one line every few seconds.

    A window's own line goes out when nothing was said for `every_seconds`; the windows
    published in the meantime are said together, on the next such line or at the end
    (`flush`). Each line is an event a run stores in its instance's database, so a range of
    many small windows says a few lines rather than one per window.
    """

    def __init__(self, say: Say, name: str, every_seconds: float = 5.0) -> None:
        self._say = say
        self._name = name
        self._every = every_seconds
        self._held: list[tuple[str, str, PublishedPartition]] = []
        self._last: float | None = None

    def add(self, line: str, key: str, published: PublishedPartition) -> None:
        """A window was published; `line` is what to say if it is said on its own."""
        self._held.append((line, key, published))
        if self._last is None or time.perf_counter() - self._last >= self._every:
            self.flush()

    def flush(self) -> None:
        """Say the windows held back, if any."""
        held, self._held = self._held, []
        if not held:
            return
        self._last = time.perf_counter()
        if len(held) == 1:
            self._say(held[0][0])
            return
        rows = sum(published.file.rows for _, _, published in held)
        seconds = sum(published.seconds for _, _, published in held)
        keys = f"{held[0][1]}...{held[-1][1]}"
        self._say(
            f"{self._name}: published {len(held)} partitions ({keys}), {rows:,} rows "
            f"in {seconds:.2f}s"
        )


class ProgressLine:
    """Says at most one line every few seconds while a partition's rows stream.

    Each line says how far the partition is: source batches read, rows written, Parquet
    written and acknowledged by the lake, and the rate so far.
    """

    def __init__(
        self,
        say: Say,
        label: str,
        sink: object,
        batches_read: Callable[[], int] | None,
        every_seconds: float = 5.0,
    ) -> None:
        self._say = say
        self._label = label
        self._sink = sink
        self._batches_read = batches_read
        self._every = every_seconds
        self._started = time.perf_counter()
        self._last: float | None = None

    def __call__(self, rows: int, size: int) -> None:
        """Called after each row group with the rows and bytes written so far."""
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
        self._say(f"{self._label}: {', '.join(parts)}")


def describe_load_failure(
    asset: str,
    *,
    keys: Sequence[str],
    published: Sequence[str],
    refused: Sequence[RefusedWindow],
    failure: Exception | None,
    unread: Sequence[str] = (),
) -> str:
    """What a load that failed did and did not publish, why, and the way out."""
    span = keys[0] if len(keys) == 1 else f"{keys[0]}...{keys[-1]}"
    if not published:
        outcome = "nothing was published"
    else:
        outcome = f"published {len(published)} of {len(keys)} partitions ({_listed(published)})"
    lines = [
        f"{asset} [{span}]: {outcome}; the previous version of every unpublished partition, "
        "if any, is unchanged."
    ]
    for window in refused:
        lines.append(f"Not published: {window.key}: {type(window.error).__name__}: {window.error}")
    if failure is not None:
        where = f" ({_listed(unread)} not read)" if unread and published else ""
        lines.append(f"The load stopped{where}: {type(failure).__name__}: {failure}")
        if isinstance(failure, PublishOutcomeUnknownError):
            lines.append(
                "Whether that partition is now published could not be told; materialize it "
                "again to settle it (a rerun replaces the object and records it)."
            )
        elif transient_cause(failure) is not None:
            lines.append(
                "The cause is transient: materialize the unpublished partitions again once it "
                "has passed."
            )
    return "\n".join(lines)


def _listed(keys: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(keys[:limit])
    return shown if len(keys) <= limit else f"{shown} and {len(keys) - limit} more"
