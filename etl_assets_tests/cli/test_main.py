"""`etl-assets introspect`: what it prints, and that its YAML entry works as printed."""

from __future__ import annotations

import io
import textwrap

import dagster as dg
import pyarrow.parquet as pq
import pytest
import yaml
from dagster.components.testing import create_defs_folder_sandbox

from etl_assets.cli.main import main
from etl_assets.components.table_assets import lake_resources
from etl_assets.devstack.verify import compare_table_partition
from etl_assets.lib.table.spec import TableSpec
from etl_assets.resources.lake import S3Lake
from etl_assets_tests.support import LAKE_PREFIX, Pipeline, run_sql

DDL = """
CREATE SCHEMA "Shop Floor";
CREATE TABLE "Shop Floor"."Orders; --x" (
    "Order Id"  bigint PRIMARY KEY,
    placed_at   timestamptz NOT NULL,
    updated     timestamp,
    day         date,
    total       numeric(12, 2) NOT NULL,
    fee         money,
    tags        text[],
    "naïve"     text
);
CREATE INDEX ON "Shop Floor"."Orders; --x" (placed_at);
INSERT INTO "Shop Floor"."Orders; --x"
SELECT g, timestamptz '2026-10-03 05:00+00' + g * interval '5 hours', NULL, NULL, g * 1.25,
       g * 2, ARRAY['a', NULL], 'ü' || g
FROM generate_series(1, 30) g;
"""


@pytest.fixture
def shop(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> Pipeline:
    run_sql(pipeline.conninfo, DDL)
    monkeypatch.setenv("INTROSPECT_DSN", pipeline.conninfo)
    return pipeline


def run(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["introspect", "--dsn-env", "INTROSPECT_DSN", *args], out=out)
    return code, out.getvalue()


def test_listing_shows_the_readable_tables(shop: Pipeline) -> None:
    code, text = run()
    assert code == 0
    [line] = [line for line in text.splitlines() if line.startswith("Shop Floor.Orders; --x")]
    # Never analyzed: Postgres does not know how many rows it has (reltuples is -1), not 0.
    assert line.split()[-4:] == ["table", "unknown", "(not", "analyzed)"]
    run_sql(shop.conninfo, 'ANALYZE "Shop Floor"."Orders; --x"')
    [line] = [line for line in run()[1].splitlines() if line.startswith("Shop Floor.Orders")]
    assert line.split()[-2:] == ["table", "30"]


def test_a_table_report_plans_every_column_and_ranks_partition_candidates(shop: Pipeline) -> None:
    code, text = run("Shop Floor.Orders; --x")
    assert code == 0
    assert "decimal128(12, 2) (refuses NaN)" in text
    assert "no exact mapping: declared `as: text`" in text
    assert "primary key: Order Id" in text
    assert "partition-column candidates: placed_at, updated, day" in text
    assert "- {name: fee, type: money, nullable: true, as: text}" in text
    assert 'start: "2026-10-03"' in text


def test_an_unknown_table_or_column_is_a_clear_error(
    shop: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("public.nope")[0] == 2
    assert "does not exist or is not visible" in capsys.readouterr().err
    assert run("Shop Floor.Orders; --x", "--columns", "ghost")[0] == 2
    assert "has no column(s) ghost" in capsys.readouterr().err


def test_the_printed_entry_loads_and_materializes_unchanged(shop: Pipeline) -> None:
    code, entry = run("Shop Floor.Orders; --x", "--yaml-only")
    assert code == 0
    defs_yaml = (
        "type: etl_assets.components.PostgresTablesComponent\n"
        "attributes:\n"
        "  source: {name: floor, dsn_env: INTROSPECT_DSN}\n"
        "  tables:\n" + textwrap.indent(entry, "    ")
    )
    with create_defs_folder_sandbox() as sandbox:
        folder = sandbox.defs_folder_path / "floor"
        folder.mkdir()
        (folder / "defs.yaml").write_text(defs_yaml)
        with sandbox.build_all_defs() as loaded:
            lake = S3Lake(bucket=shop.bucket, prefix=LAKE_PREFIX, endpoint_url=shop.endpoint.url)
            defs = dg.Definitions.merge(loaded, dg.Definitions(resources=lake_resources(lake)))
            [raw] = [s for s in defs.resolve_all_asset_specs() if s.key.path[0] == "raw"]
            [table] = [TableSpec.model_validate(e) for e in yaml.safe_load(entry)]
            assert table.partition_column == "placed_at"
            job = defs.resolve_implicit_global_asset_job_def()
            result = job.execute_in_process(
                instance=shop.instance, partition_key="2026-10-04", asset_selection=[raw.key]
            )
    assert result.success
    [key] = shop.objects()
    assert key.startswith(f"{LAKE_PREFIX}/raw/floor/Shop_Floor_")
    body = shop.endpoint.client().get_object(Bucket=shop.bucket, Key=key)["Body"].read()
    rows = pq.read_table(io.BytesIO(body)).to_pylist()
    assert len(rows) == 5
    assert rows[0]["fee"] == "$8.00"
    # Every value, against the source window read independently.
    comparison = compare_table_partition(
        shop.conninfo,
        shop.endpoint,
        f"{shop.bucket}/{LAKE_PREFIX}",
        asset=raw.key.to_user_string(),
        table=table,
        key="2026-10-04",
    )
    assert comparison.equal, comparison.describe()
    assert comparison.compared_columns == table.read_columns


def test_a_not_null_time_column_is_proposed_over_a_nullable_indexed_one(shop: Pipeline) -> None:
    # As in Pagila's customer table.
    run_sql(
        shop.conninfo,
        "CREATE TABLE customer (customer_id int PRIMARY KEY, create_date date NOT NULL,"
        " last_update timestamptz DEFAULT now());"
        " CREATE INDEX ON customer (last_update);"
        " INSERT INTO customer VALUES (1, '2026-10-01', NULL), (2, '2026-10-02', now())",
    )
    code, text = run("public.customer")
    assert code == 0
    assert "partition-column candidates: create_date, last_update" in text
    assert "partition_column: create_date" in text
    assert 'start: "2026-10-01"' in text
