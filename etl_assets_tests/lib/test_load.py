import datetime as dt

import botocore.exceptions
import pyarrow as pa
import pytest

from etl_assets.lib.errors import (
    BlockingCheckError,
    NotPublishedError,
    PublishOutcomeUnknownError,
    UnrepresentableValueError,
)
from etl_assets.lib.incremental import Fingerprint
from etl_assets.lib.lake.parquet import WrittenFile
from etl_assets.lib.lake.target import PublishedPartition
from etl_assets.lib.load import (
    PublishedLines,
    RefusedWindow,
    describe_load_failure,
    ends_the_load,
    refuse_on_blocking_failures,
)
from etl_assets.lib.postgres.read import ReadStats, WindowCount, WindowCounts
from etl_assets.lib.table.checks import CheckOutcome
from etl_assets.lib.table.windows import PartitionWindow
from etl_assets_tests.support import s3_error


def raised_from(error: Exception, cause: BaseException) -> Exception:
    try:
        raise error from cause
    except Exception as chained:
        return chained


def test_only_failures_of_the_lake_end_a_load() -> None:
    s3_500 = s3_error("InternalError", 500)
    assert ends_the_load(s3_500)
    assert ends_the_load(raised_from(RuntimeError("write failed"), s3_500))
    assert ends_the_load(NotPublishedError("x"))
    assert ends_the_load(PublishOutcomeUnknownError("x"))
    assert ends_the_load(botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"))
    # One window's problems: the next window is read all the same.
    assert not ends_the_load(UnrepresentableValueError("infinity"))
    assert not ends_the_load(BlockingCheckError("min"))
    assert not ends_the_load(ValueError("a transform's own error"))


def test_failed_blocking_checks_refuse_the_partition_with_their_evidence() -> None:
    passed = CheckOutcome("row_count_matches_source", passed=True, blocking=True, description="")
    warned = CheckOutcome("values_note", passed=False, blocking=False, description="warn only")
    refused = CheckOutcome(
        "values_amount",
        passed=False,
        blocking=True,
        description="amount: 1 row(s) break min",
        metadata={"violating_keys_sample": "(id=7)", "min_violations": 1},
    )
    refuse_on_blocking_failures([passed, warned], "public.t", "2026-10-01")
    with pytest.raises(BlockingCheckError) as raised:
        refuse_on_blocking_failures([passed, warned, refused], "public.t", "2026-10-01")
    assert str(raised.value) == (
        "public.t [2026-10-01]: blocking check(s) failed: values_amount: amount: 1 row(s) break "
        "min (violating_keys_sample: (id=7))"
    )


def test_a_failed_load_says_what_was_and_was_not_published_and_why() -> None:
    window = PartitionWindow(
        "2026-10-02",
        dt.datetime(2026, 10, 2, tzinfo=dt.UTC),
        dt.datetime(2026, 10, 3, tzinfo=dt.UTC),
    )
    refused = RefusedWindow(
        ReadStats(window, WindowCounts.known([WindowCount(1, Fingerprint(1, None, "1"))])),
        (),
        UnrepresentableValueError("t.c (date): the row with primary key (id=7) holds infinity"),
    )
    summary = describe_load_failure(
        "raw/s/t",
        keys=["2026-10-01", "2026-10-02", "2026-10-03", "2026-10-04"],
        published=["2026-10-01"],
        refused=[refused],
        failure=s3_error("InternalError", 500),
        unread=["2026-10-03", "2026-10-04"],
    )
    assert summary.splitlines() == [
        "raw/s/t [2026-10-01...2026-10-04]: published 1 of 4 partitions (2026-10-01); the previous "
        "version of every unpublished partition, if any, is unchanged.",
        "Not published: 2026-10-02: UnrepresentableValueError: t.c (date): the row with primary "
        "key (id=7) holds infinity",
        "The load stopped (2026-10-03, 2026-10-04 not read): ClientError: An error occurred "
        "(InternalError) when calling the UploadPart operation: InternalError",
        "The cause is transient: materialize the unpublished partitions again once it has passed.",
    ]
    unknown = describe_load_failure(
        "raw/s/t",
        keys=["2026-10-01"],
        published=[],
        refused=[],
        failure=PublishOutcomeUnknownError("x"),
    )
    assert unknown.startswith("raw/s/t [2026-10-01]: nothing was published;")
    assert "materialize it again to settle it" in unknown


def published(rows: int, seconds: float) -> PublishedPartition:
    schema = pa.schema([("id", pa.int64())])
    return PublishedPartition(None, WrittenFile(rows, 1, schema, 100), seconds)


def test_published_windows_are_said_together_between_lines() -> None:
    said: list[str] = []
    lines = PublishedLines(said.append, "raw/s/t", every_seconds=3600)
    for day, rows in ((1, 10), (2, 20), (3, 30)):
        lines.add(f"[2026-10-0{day}] alone", f"2026-10-0{day}", published(rows, 0.5))
    # The first window is said at once; the others wait for the next line, or the end.
    assert said == ["[2026-10-01] alone"]
    lines.flush()
    lines.flush()
    assert said == [
        "[2026-10-01] alone",
        "raw/s/t: published 2 partitions (2026-10-02...2026-10-03), 50 rows in 1.00s",
    ]
    every = PublishedLines(said.append, "raw/s/t", every_seconds=0)
    every.add("[2026-10-04] alone", "2026-10-04", published(1, 0.1))
    every.add("[2026-10-05] alone", "2026-10-05", published(1, 0.1))
    assert said[-2:] == ["[2026-10-04] alone", "[2026-10-05] alone"]
