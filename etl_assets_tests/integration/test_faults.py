"""Faults during a materialization: the lake never holds a partial or mixed partition.

Each test first publishes a good version of a partition, then breaks a second load of it in one
way, and checks that the key still holds the good version byte for byte, that the error names
the asset, the partition and the cause, and what happens to retries and leftover uploads.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from etl_assets.cli.main import main as etl_assets_main
from etl_assets.lib.lake.cleanup import incomplete_uploads
from etl_assets.lib.table.spec import TableSpec
from etl_assets_tests.fault_worker import DAY, SMALL_BATCHES, SMALL_PARTS, slowly
from etl_assets_tests.faults import Faults, FaultyS3Proxy, Rule
from etl_assets_tests.support import LAKE_PREFIX, Pipeline, failure_text, query, run_sql, spec

WIDE_TABLE = """
CREATE TABLE wide (id bigint PRIMARY KEY, created_at timestamptz NOT NULL, body text);
INSERT INTO wide
SELECT g, timestamptz '2026-10-01 00:00+00' + g * interval '100 ms',
       md5('a' || g) || md5('b' || g) || md5('c' || g)
FROM generate_series(1, 200000) g;
"""
ASSET = "raw/testsrc/public/wide"
NO_RETRIES = {"transient_retries": 0}
TERMINATED_BACKEND = (
    "terminating connection due to administrator command",
    "server closed the connection unexpectedly",
)


def wide() -> TableSpec:
    return spec(table="wide", columns=("id", "created_at", "body"))


@pytest.fixture
def published(pipeline: Pipeline) -> bytes:
    """The wide table, with a good version of its partition already in the lake."""
    run_sql(pipeline.conninfo, WIDE_TABLE)
    assert pipeline.materialize(wide(), partition=DAY, lake=SMALL_PARTS).success
    return pipeline.partition_bytes(wide(), DAY)


def digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def lake_key() -> str:
    return f"{LAKE_PREFIX}/{ASSET}/day={DAY}/part-00000.parquet"


def terminate_when_reading(conninfo: str, stop: threading.Event) -> list[int]:
    """Terminate the load's backend once its COPY is running; returns the pids terminated."""
    terminated: list[int] = []

    def watch() -> None:
        while not stop.is_set() and not terminated:
            rows = query(
                conninfo,
                # Only this test's database: other workers load assets of the same name.
                "SELECT pid FROM pg_stat_activity WHERE application_name LIKE %s"
                " AND datname = current_database() AND state = 'active'"
                " AND query LIKE 'COPY%%'",
                [f"{ASSET}%"],
            )
            for (pid,) in rows:
                run_sql(conninfo, "SELECT pg_terminate_backend(%s)", [pid])
                terminated.append(int(pid))
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()
    return terminated


def load_terminating_the_read(
    pipeline: Pipeline, *, writer: Mapping[str, Any]
) -> tuple[dg.ExecuteInProcessResult, list[int]]:
    """Load the wide table's partition, terminating its backend once; the pids terminated."""
    stop = threading.Event()
    terminated = terminate_when_reading(pipeline.conninfo, stop)
    try:
        result = pipeline.materialize(
            wide(),
            partition=DAY,
            transform=slowly(0.05),
            raise_on_error=False,
            lake=SMALL_PARTS,
            source=SMALL_BATCHES,
            writer=writer,
        )
    finally:
        stop.set()
    return result, terminated


def test_a_backend_terminated_mid_read_is_retried_and_the_partition_published_once(
    pipeline: Pipeline, published: bytes
) -> None:
    result, terminated = load_terminating_the_read(
        pipeline, writer={"transient_retries": 2, "retry_delay_seconds": 0.1}
    )
    assert len(terminated) == 1
    assert result.success
    events = pipeline.instance.all_logs(result.run_id)
    retries = [e for e in events if e.dagster_event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert len(retries) == 1
    logs = [e.message or "" for e in events]
    assert any("lost the connection to Postgres" in m and "retrying" in m for m in logs)
    materializations = pipeline.instance.fetch_materializations(
        dg.AssetKey(ASSET.split("/")), limit=10
    ).records
    assert len(materializations) == 2  # the good version, then this run's single one
    assert digest(pipeline.partition_bytes(wide(), DAY)) == digest(published)


def test_a_backend_terminated_mid_read_without_retries_fails_naming_it_and_keeps_the_lake(
    pipeline: Pipeline, published: bytes
) -> None:
    result, terminated = load_terminating_the_read(pipeline, writer=NO_RETRIES)
    assert terminated
    assert not result.success
    error = failure_text(result)
    assert f"{ASSET} [{DAY}]: nothing was published" in error
    # libpq reports the server's FATAL message, or only the closed socket when that arrives
    # first; which one depends on timing.
    assert any(text in error for text in TERMINATED_BACKEND), error
    assert pipeline.partition_bytes(wide(), DAY) == published
    assert incomplete_uploads(pipeline.endpoint.client(), pipeline.bucket) == []


def test_a_statement_timeout_fails_the_load_without_a_retry_and_keeps_the_lake(
    pipeline: Pipeline, published: bytes
) -> None:
    # Another session holds the table: the load's first statement on it waits past the limit.
    with psycopg.connect(pipeline.conninfo) as blocker:
        blocker.execute("LOCK TABLE wide IN ACCESS EXCLUSIVE MODE")
        result = pipeline.materialize(
            wide(),
            partition=DAY,
            raise_on_error=False,
            lake=SMALL_PARTS,
            source={"statement_timeout_seconds": 1},
            writer={"transient_retries": 2, "retry_delay_seconds": 0.1},
        )
        blocker.rollback()
    assert not result.success
    error = failure_text(result)
    assert f"{ASSET} [{DAY}]" in error
    assert "canceling statement due to statement timeout" in error
    events = pipeline.instance.all_logs(result.run_id)
    assert not [e for e in events if e.dagster_event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert pipeline.partition_bytes(wide(), DAY) == published


def test_s3_errors_on_some_parts_are_retried_by_the_client(
    pipeline: Pipeline, published: bytes
) -> None:
    faults = Faults(failing_part_uploads=2)
    with FaultyS3Proxy(pipeline.endpoint.url, faults) as proxy:
        result = pipeline.materialize(
            wide(), partition=DAY, lake={**SMALL_PARTS, "endpoint_url": proxy.url}
        )
    assert result.success
    assert faults.failing_part_uploads == 0
    parts = [r for r in faults.requests if r[0] == "PUT" and "partNumber=" in r[1]]
    assert len(parts) == faults.part_uploads_seen + 2
    assert pipeline.partition_bytes(wide(), DAY) == published


def test_s3_failing_every_part_fails_the_load_and_leaves_no_upload(
    pipeline: Pipeline, published: bytes
) -> None:
    faults = Faults(failing_part_uploads=1_000)
    result = load_through(
        pipeline, faults, writer={"transient_retries": 1, "retry_delay_seconds": 0.1}
    )
    assert not result.success
    error = failure_text(result)
    assert f"{ASSET} [{DAY}]: nothing was published" in error
    assert "InternalError" in error
    events = pipeline.instance.all_logs(result.run_id)
    assert (
        len([e for e in events if e.dagster_event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY])
        == 1
    )
    assert pipeline.partition_bytes(wide(), DAY) == published
    assert incomplete_uploads(pipeline.endpoint.client(), pipeline.bucket) == []


CHANGE_ROWS = "UPDATE wide SET body = upper(body) WHERE id % 1000 = 0"
"""A change to the window, so the next version differs from the published one."""


def retries_of(pipeline: Pipeline, result: dg.ExecuteInProcessResult) -> int:
    events = pipeline.instance.all_logs(result.run_id)
    return len([e for e in events if e.dagster_event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY])


def materializations_of(pipeline: Pipeline, run_id: str) -> list[str | None]:
    records = pipeline.instance.fetch_materializations(
        dg.AssetKey(ASSET.split("/")), limit=100
    ).records
    return [
        r.asset_materialization.partition
        for r in records
        if r.run_id == run_id and r.asset_materialization is not None
    ]


def load_through(
    pipeline: Pipeline, faults: Faults, *, writer: Mapping[str, Any] = NO_RETRIES
) -> dg.ExecuteInProcessResult:
    """Load the wide table's partition through the faulty proxy (2 attempts per request)."""
    with FaultyS3Proxy(pipeline.endpoint.url, faults) as proxy:
        return pipeline.materialize(
            wide(),
            partition=DAY,
            raise_on_error=False,
            lake={**SMALL_PARTS, "endpoint_url": proxy.url, "max_attempts": 2},
            writer=writer,
        )


def test_a_lost_reply_to_the_complete_records_the_partition_as_published(
    pipeline: Pipeline, published: bytes
) -> None:
    # S3 completes the upload, but the reply never arrives (every attempt of the client).
    run_sql(pipeline.conninfo, CHANGE_ROWS)
    faults = Faults(rules=[Rule("complete", "drop_reply", times=1_000)])
    result = load_through(pipeline, faults)
    completes = [r for r in faults.requests if r[0] == "POST" and "uploadId=" in r[1]]
    assert completes  # the complete reached S3 and its reply was dropped
    assert result.success
    assert materializations_of(pipeline, result.run_id) == [DAY]
    new = pipeline.partition_bytes(wide(), DAY)
    assert digest(new) != digest(published)
    assert pq.read_table(io.BytesIO(new)).num_rows == pq.read_table(io.BytesIO(published)).num_rows
    head = pipeline.endpoint.client().head_object(Bucket=pipeline.bucket, Key=lake_key())
    metadata = pipeline.metadata(wide(), DAY)
    # The materialization names the object's real version, and how the publish was settled.
    assert metadata["lake_object_etag"] == head["ETag"]
    assert head["Metadata"]["etl-assets-run"] == result.run_id
    assert "ConnectionClosedError" in metadata["publish_settled"]
    assert incomplete_uploads(pipeline.endpoint.client(), pipeline.bucket) == []


def test_a_complete_that_never_reached_s3_reports_nothing_published(
    pipeline: Pipeline, published: bytes
) -> None:
    run_sql(pipeline.conninfo, CHANGE_ROWS)
    faults = Faults(rules=[Rule("complete", "drop", times=1_000)])
    result = load_through(pipeline, faults)
    assert not result.success
    error = failure_text(result)
    assert f"{ASSET} [{DAY}]: nothing was published" in error
    assert pipeline.partition_bytes(wide(), DAY) == published
    assert materializations_of(pipeline, result.run_id) == []
    # Settling aborted the upload: nothing is left to clean up.
    assert incomplete_uploads(pipeline.endpoint.client(), pipeline.bucket) == []


def test_s3_unavailable_when_the_run_starts_is_retried_and_publishes(
    pipeline: Pipeline, published: bytes
) -> None:
    # The first requests of the run, the bucket check among them, answer 500: more of them
    # than the client's own attempts, so the load itself must retry.
    faults = Faults(rules=[Rule("any", "error_500", times=3)])
    run_sql(pipeline.conninfo, CHANGE_ROWS)
    result = load_through(
        pipeline, faults, writer={"transient_retries": 2, "retry_delay_seconds": 0.1}
    )
    assert result.success, failure_text(result)
    assert retries_of(pipeline, result) == 1
    logs = [e.message or "" for e in pipeline.instance.all_logs(result.run_id)]
    assert any("S3 error 500" in m and "retrying (retry 1 of 2)" in m for m in logs)
    assert not any("does not exist" in m for m in logs)
    assert digest(pipeline.partition_bytes(wide(), DAY)) != digest(published)
    assert materializations_of(pipeline, result.run_id) == [DAY]


def test_s3_failing_mid_upload_then_at_the_bucket_check_is_retried_both_times(
    pipeline: Pipeline, published: bytes
) -> None:
    # Attempt 1 fails on its part uploads; the retry then meets 500s at its bucket check,
    # which is S3 being unavailable, not a missing bucket: the second retry publishes.
    faults = Faults(
        rules=[
            Rule("part_upload", "error_500", times=4),
            Rule("bucket_check", "error_500", times=2),
        ]
    )
    result = load_through(
        pipeline, faults, writer={"transient_retries": 2, "retry_delay_seconds": 0.1}
    )
    assert result.success, failure_text(result)
    assert [rule.times for rule in faults.rules] == [0, 0]
    assert retries_of(pipeline, result) == 2
    logs = [e.message or "" for e in pipeline.instance.all_logs(result.run_id)]
    assert any("retrying (retry 2 of 2)" in m and "LakeUnavailableError" in m for m in logs)
    assert digest(pipeline.partition_bytes(wide(), DAY)) == digest(published)


def test_s3_failing_throughout_ends_with_what_was_and_was_not_published(
    pipeline: Pipeline, published: bytes
) -> None:
    faults = Faults(rules=[Rule("any", "error_500", times=100_000)])
    result = load_through(
        pipeline, faults, writer={"transient_retries": 1, "retry_delay_seconds": 0.1}
    )
    assert not result.success
    assert retries_of(pipeline, result) == 1
    error = failure_text(result)
    summary = error.split("\n\nStack Trace:")[0]
    assert f"{ASSET} [{DAY}]: nothing was published" in summary
    assert "S3 did not answer for bucket" in summary
    assert "500" in summary
    assert "materialize the unpublished partitions again" in summary
    # The summary is the whole error: no chain of causes follows it.
    assert "caused by" not in error
    assert pipeline.partition_bytes(wide(), DAY) == published


def test_an_endpoint_gone_mid_upload_keeps_the_lake_and_its_upload_is_cleaned_up_later(
    pipeline: Pipeline, published: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    faults = Faults(vanish_after_part_uploads=1)
    result = load_through(pipeline, faults)
    assert not result.success
    error = failure_text(result)
    assert f"{ASSET} [{DAY}]: nothing was published" in error
    assert "abort-uploads" in error  # the abort could not reach the endpoint either
    assert pipeline.partition_bytes(wide(), DAY) == published
    client = pipeline.endpoint.client()
    assert [u.key for u in incomplete_uploads(client, pipeline.bucket)] == [lake_key()]

    for name, value in pipeline.endpoint.environment().items():
        monkeypatch.setenv(name, value)
    out = io.StringIO()
    code = etl_assets_main(
        ["lake", "abort-uploads", "--bucket", pipeline.bucket, "--min-age", "0s"], out=out
    )
    assert code == 0
    assert f"aborted s3://{pipeline.bucket}/{lake_key()}" in out.getvalue()
    assert incomplete_uploads(client, pipeline.bucket) == []


def test_every_put_carries_the_encryption_header_a_deny_unencrypted_policy_checks(
    pipeline: Pipeline, published: bytes
) -> None:
    # moto does not evaluate policy conditions, so the requests themselves are checked: AWS's
    # documented "deny unencrypted uploads" policy tests this header on PutObject and on
    # CreateMultipartUpload (parts carry none; S3 refuses it there).
    faults = Faults()
    with FaultyS3Proxy(pipeline.endpoint.url, faults) as proxy:
        # Multipart (5 MiB parts), then a single PUT (parts larger than the file).
        for lake in (SMALL_PARTS, {"upload_part_mib": 512}):
            assert pipeline.materialize(
                wide(), partition=DAY, lake={**lake, "endpoint_url": proxy.url}
            ).success
    creates = [h for m, path, h in faults.requests if m == "POST" and path.endswith("?uploads")]
    puts = [
        h
        for m, path, h in faults.requests
        if m == "PUT" and "partNumber=" not in path and "uploadId=" not in path
    ]
    assert len(creates) == 1
    assert len(puts) == 1
    assert all(h.get("x-amz-server-side-encryption") == "AES256" for h in creates + puts)
    head = pipeline.endpoint.client().head_object(Bucket=pipeline.bucket, Key=lake_key())
    assert head["ServerSideEncryption"] == "AES256"


def test_two_runs_of_one_partition_at_once_leave_one_complete_version(
    pipeline: Pipeline, published: bytes, tmp_path: Path
) -> None:
    # Two run workers, as the run launcher starts them: separate processes.
    first = start_worker(pipeline, tmp_path / "first", seconds_per_batch=0.1)
    time.sleep(0.5)
    # Rows arrive between the two snapshots: the runs read different versions of the window.
    run_sql(
        pipeline.conninfo,
        "INSERT INTO wide SELECT g, timestamptz '2026-10-01 12:00+00' + g * interval '1 ms', 'new'"
        " FROM generate_series(300001, 301000) g",
    )
    second = start_worker(pipeline, tmp_path / "second", seconds_per_batch=0.1)
    for worker, folder in ((first, "first"), (second, "second")):
        assert worker.wait(180) == 0, (tmp_path / folder / "worker.log").read_text()[-3000:]
    # The key holds one run's complete file: one snapshot's rows, each once.
    table = pq.read_table(io.BytesIO(pipeline.partition_bytes(wide(), DAY)))
    before = pq.read_table(io.BytesIO(published)).num_rows
    assert table.num_rows in (before, before + 1_000)
    assert pc.count_distinct(table.column("id")).as_py() == table.num_rows


RUN_WORKER = """
import sys
from etl_assets_tests.fault_worker import run
run(sys.argv[1])
"""


def start_worker(
    pipeline: Pipeline, folder: Path, *, seconds_per_batch: float, **settings: object
) -> subprocess.Popen[bytes]:
    """A run worker process loading a partition (the wide table's unless `settings` say
    otherwise, see `fault_worker.run`); its output in folder/worker.log."""
    folder.mkdir()
    everything = {
        "conninfo": pipeline.conninfo,
        "bucket": pipeline.bucket,
        "prefix": LAKE_PREFIX,
        "environment": pipeline.endpoint.environment(),
        "seconds_per_batch": seconds_per_batch,
        **settings,
    }
    with (folder / "worker.log").open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-c", RUN_WORKER, json.dumps(everything)],
            env={**os.environ, "DAGSTER_HOME": str(folder)},
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def test_a_load_without_a_transform_never_imports_pandas(
    pipeline: Pipeline, published: bytes, tmp_path: Path
) -> None:
    # pyarrow imports pandas on some conversions (timestamps to Python, tables from Python
    # objects): ~0.3 s and ~30 MB a run would pay for nothing.
    worker = start_worker(pipeline, tmp_path / "worker", seconds_per_batch=0)
    log = (tmp_path / "worker" / "worker.log").read_text
    assert worker.wait(180) == 0, log()[-3000:]
    assert json.loads(log().strip().splitlines()[-1]) == {"pandas_imported": False}
    # The same rows, loaded in another process without a transform: the same file.
    assert pipeline.partition_bytes(wide(), DAY) == published


def test_a_run_worker_killed_mid_upload_leaves_the_previous_version_and_a_rerun_matches(
    pipeline: Pipeline, published: bytes, tmp_path: Path
) -> None:
    worker = start_worker(pipeline, tmp_path / "worker", seconds_per_batch=0.2)
    log = tmp_path / "worker" / "worker.log"
    client = pipeline.endpoint.client()
    deadline = time.monotonic() + 120
    while not incomplete_uploads(client, pipeline.bucket):
        assert worker.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "the worker never started uploading"
        time.sleep(0.1)
    worker.send_signal(signal.SIGKILL)
    worker.wait(30)
    assert pipeline.partition_bytes(wide(), DAY) == published
    assert [u.key for u in incomplete_uploads(client, pipeline.bucket)] == [lake_key()]
    # A rerun of the same partition writes the same bytes as the first version.
    assert pipeline.materialize(wide(), partition=DAY, lake=SMALL_PARTS).success
    assert digest(pipeline.partition_bytes(wide(), DAY)) == digest(published)
