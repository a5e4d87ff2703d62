"""A run worker in its own process, for the tests that kill one mid-upload.

`run(settings)` materializes the wide table's partition the way `test_faults` does in-process,
but slowly, so the parent has time to kill it while its upload is open.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable

import dagster as dg
import polars as pl

from etl_assets.devstack.s3 import S3Endpoint
from etl_assets.lib.table.spec import LakeFormat
from etl_assets.resources.catalog import IcebergCatalog
from etl_assets_tests.support import Pipeline, on_every_batch, revised, spec

DAY = "2026-10-01"
SMALL_PARTS = {"row_group_mib": 1, "upload_part_mib": 5}
SMALL_BATCHES = {"read_batch_mib": 1}


def slowly(seconds_per_batch: float) -> Callable[[pl.LazyFrame], pl.LazyFrame]:
    """A transform that takes its time over each batch, so a fault can land mid-read."""
    return on_every_batch(lambda: time.sleep(seconds_per_batch))


def run(settings_text: str) -> None:
    """Materialize a table's partition with the given connection, bucket and pace.

    The wide table's `DAY` unless the settings name another `table`, its `columns` and
    `partition`; into the Iceberg catalog at `iceberg_uri` when the settings give one.
    """
    settings = json.loads(settings_text)
    os.environ.update(settings["environment"])
    endpoint = S3Endpoint(url=settings["environment"]["AWS_ENDPOINT_URL"])
    table = spec(
        table=settings.get("table", "wide"),
        columns=tuple(settings.get("columns", ("id", "created_at", "body"))),
        end=dt.datetime.fromisoformat(settings.get("end", "2026-10-08")),
    )
    lake: dict[str, object] = dict(SMALL_PARTS)
    if settings.get("iceberg_uri"):
        table = revised(table, format=LakeFormat.ICEBERG)
        lake["iceberg"] = IcebergCatalog(uri=settings["iceberg_uri"])
    with dg.DagsterInstance.ephemeral() as instance:
        pipeline = Pipeline(instance, settings["conninfo"], settings["bucket"], endpoint)
        pipeline.materialize(
            table,
            partition=settings.get("partition", DAY),
            # Without a pace, no transform: the rows take the direct Arrow path to Parquet.
            transform=slowly(pace) if (pace := settings["seconds_per_batch"]) else None,
            lake=lake,
            source=SMALL_BATCHES,
        )
    # The last line tells the parent what the load imported.
    print(json.dumps({"pandas_imported": "pandas" in sys.modules}))  # noqa: T201
