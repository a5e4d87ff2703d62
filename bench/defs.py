"""Definitions for one benchmark table, for `dagster asset materialize -m bench.defs`.

The table, the window's grain, the source and the lake come from the job description in
`ETL_ASSETS_BENCH_JOB` (set by `bench.methods.dagster_cli`).
"""

from __future__ import annotations

import json
import os

import dagster as dg

from bench.methods import BENCH_SOURCE, environment, lake_resources, table_spec
from etl_assets.components.table_assets import (
    build_table_assets,
    postgres_io_manager_key,
)
from etl_assets.resources.postgres import PostgresSource, PostgresWindowIOManager

JOB_VARIABLE = "ETL_ASSETS_BENCH_JOB"

_job = json.loads(os.environ[JOB_VARIABLE])
environment(_job)
_spec = table_spec(_job)
_built = build_table_assets(BENCH_SOURCE, _spec, None)

defs = dg.Definitions(
    assets=[_built.source, _built.raw],
    resources={
        postgres_io_manager_key(BENCH_SOURCE): PostgresWindowIOManager(
            source=PostgresSource(dsn=_job["conninfo"])
        ),
        **lake_resources(_job, _job["prefix"]),
    },
    executor=dg.in_process_executor,  # as etl_assets/defs/resources.py sets it
)
