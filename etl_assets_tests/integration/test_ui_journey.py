"""A new user's journey through the Dagster UI, in headless Chromium against `make dev`'s stack.

Asset graph -> a raw asset -> materialize one partition -> backfill a range -> the run's checks
and metadata, with the Parquet objects checked in the bucket. Each step leaves a screenshot in
`test-artifacts/ui-journey/` (`ETL_ASSETS_UI_SCREENSHOTS` picks another folder, such as
`docs/images` to refresh the README's pictures); the browser and the stack are set up in `ui.py`.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import dagster as dg
import pytest
from playwright.sync_api import Page, expect

from etl_assets.cli.main import set_pool_limits
from etl_assets.components.postgres_tables import declared_pools, declared_tables
from etl_assets.devstack.stack import LAKE_BUCKET, LAKE_PREFIX
from etl_assets.devstack.verify import compare_table_partition
from etl_assets.lib.lake.preview import MASK
from etl_assets_tests.integration.ui import Journey, Serving, chromium_page, served
from etl_assets_tests.support import lake_objects, wait_for

pytestmark = pytest.mark.slow

ORDERS = ["raw", "shop", "sales", "orders"]
ONE_PARTITION = "2026-10-02"
BACKFILL_RANGE = ("2026-10-03", "2026-10-05")
CHECKS = ("row_count_matches_source", "schema_matches_contract", "primary_key_unique_not_null")
RUN_TIMEOUT_MS = 240_000


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory, ui_screenshots: Path) -> Generator[Serving]:
    """The dev stack with an empty lake: webserver, daemon, embedded Postgres and S3."""
    state = tmp_path_factory.mktemp("stack")
    with served(state, ui_screenshots, {"BACKFILL", "QUEUED_RUN_COORDINATOR"}) as serving:
        set_pool_limits(declared_pools(), serving.stack.process_environment())
        yield serving


@pytest.fixture
def page(serving: Serving) -> Generator[Page]:
    with chromium_page() as page:
        yield page


def succeeded_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS])))


def run_for_partitions(instance: dg.DagsterInstance, first: str, last: str) -> dg.DagsterRun:
    """The finished run that materialized `first`...`last` (one partition when equal)."""

    def matching() -> list[dg.DagsterRun]:
        runs: list[dg.DagsterRun] = []
        for run in succeeded_runs(instance):
            tags = run.tags
            single = tags.get("dagster/partition")
            ranged = (
                tags.get("dagster/asset_partition_range_start"),
                tags.get("dagster/asset_partition_range_end"),
            )
            if (first == last and single == first) or ranged == (first, last):
                runs.append(run)
        return runs

    wait_for(lambda: bool(matching()), timeout=RUN_TIMEOUT_MS / 1000, what=f"a run of {first}")
    (run,) = matching()
    return run


def test_materialize_backfill_and_read_the_checks_in_the_browser(
    serving: Serving, page: Page
) -> None:
    journey = Journey(page, serving.url, serving.screenshots)
    instance = serving.instance()

    journey.open("/asset-groups")
    for group in ("shop_sales", "shop_web", "shop_curated"):
        expect(page.get_by_text(group, exact=True).first).to_be_visible()
    journey.shot("asset-graph")

    journey.open("/assets/" + "/".join(ORDERS))
    expect(page.get_by_text("Copy of Postgres").first).to_be_visible()
    journey.shot("raw-asset")

    journey.launch_from_asset_page(ONE_PARTITION, "Launch 1 run")
    single = run_for_partitions(instance, ONE_PARTITION, ONE_PARTITION)

    first, last = BACKFILL_RANGE
    journey.open("/assets/" + "/".join(ORDERS))
    journey.launch_from_asset_page(f"[{first}...{last}]", "Launch backfill")
    backfill_run = run_for_partitions(instance, first, last)

    journey.open(f"/runs/{backfill_run.run_id}")
    expect(page.get_by_text("Success").first).to_be_visible(timeout=RUN_TIMEOUT_MS)
    # The run's log, narrowed to the extraction step: its checks and materializations.
    page.get_by_placeholder("Filter…").fill("step:" + "__".join(ORDERS))
    asset_label = " / ".join(ORDERS)
    for check in CHECKS:
        succeeded = f"Check {check} succeeded for materialization of {asset_label}"
        expect(page.get_by_text(succeeded).first).to_be_visible()
    journey.shot("backfill-run")

    journey.open("/assets/" + "/".join(ORDERS) + "?view=checks")
    for check in CHECKS:
        entry = page.locator("span", has=page.locator(f"[title='{check}']")).first
        expect(entry).to_contain_text("Succeeded")
    page.get_by_text(CHECKS[0], exact=True).first.click()
    expect(page.get_by_text("snapshot_count").first).to_be_visible()
    journey.shot("checks")

    journey.open("/assets/" + "/".join(ORDERS) + f"?view=partitions&partition={ONE_PARTITION}")
    for label in ("source_snapshot_rows", "window", "lake_object", "dagster/uri"):
        expect(page.get_by_text(label, exact=True).first).to_be_visible()
    journey.shot("partition-metadata")
    page.get_by_text("[Show Markdown]").first.click()
    preview = page.get_by_role("dialog")
    expect(preview).to_contain_text("customer_id (masked)")
    expect(preview.get_by_text(MASK, exact=True).first).to_be_visible()
    journey.shot("partition-preview")

    # Neither the source's password nor the AWS secret key shows anywhere a user can look.
    secrets = [
        serving.stack.environment[n] for n in ("ETL_SHOP_PG_PASSWORD", "AWS_SECRET_ACCESS_KEY")
    ]
    for path, shown in (
        ("/locations/etl_assets/resources", "postgres_shop"),
        ("/locations/etl_assets/resources/postgres_shop", "PostgresWindowIOManager"),
        ("/locations/etl_assets/resources/lake", "transient_retries"),
        ("/locations/etl_assets/resources/lake_io_manager", "LakeIOManager"),
        ("/locations/etl_assets/jobs/__ASSET_JOB/playground", "transient_retries"),
        (f"/runs/{single.run_id}", "Success"),
    ):
        journey.open(path)
        expect(page.get_by_text(shown).first).to_be_visible()
        content = page.content()
        assert all(secret not in content for secret in secrets), path

    assert single.run_id != backfill_run.run_id
    orders = declared_tables()["/".join(ORDERS)]
    objects = lake_objects(serving.stack.s3, LAKE_BUCKET)
    for day in (ONE_PARTITION, "2026-10-03", "2026-10-04", "2026-10-05"):
        key = f"{LAKE_PREFIX}/{'/'.join(ORDERS)}/day={day}/part-00000.parquet"
        assert objects.get(key, 0) > 0, f"{key} missing from {sorted(objects)}"
        comparison = compare_table_partition(
            serving.stack.source_conninfo(),
            serving.stack.s3,
            f"{LAKE_BUCKET}/{LAKE_PREFIX}",
            asset="/".join(ORDERS),
            table=orders,
            key=day,
        )
        assert comparison.equal, comparison.describe()
