"""A new user's journey through the Dagster UI, in headless Chromium against `make dev`'s stack.

Asset graph -> a raw asset -> materialize one partition -> backfill a range -> the run's checks
and metadata, with the Parquet objects checked in the bucket. Each step leaves a screenshot in
`test-artifacts/ui-journey/` (`ETL_ASSETS_UI_SCREENSHOTS` picks another folder, such as
`docs/images` to refresh the README's pictures).

Chromium is Debian's package (`make browser` installs it); Playwright only drives it, through
`executable_path`, and never downloads a browser.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Generator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from etl_assets.cli.main import set_pool_limits
from etl_assets.components.postgres_tables import declared_pools, declared_tables
from etl_assets.devstack.cli import start_daemon, start_webserver, stop_processes
from etl_assets.devstack.postgres import free_port
from etl_assets.devstack.stack import LAKE_BUCKET, LAKE_PREFIX, PROJECT_ROOT, DevStack, dev_stack
from etl_assets.devstack.verify import compare_table_partition
from etl_assets.lib.lake.preview import MASK
from etl_assets_tests.support import healthy_daemons, lake_objects, wait_for

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("ETL_ASSETS_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking switches Chromium keeps calling Google's services, which a
# closed network refuses; --no-sandbox because CI runs as root.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ORDERS = ["raw", "shop", "sales", "orders"]
ONE_PARTITION = "2026-10-02"
BACKFILL_RANGE = ("2026-10-03", "2026-10-05")
CHECKS = ("row_count_matches_source", "schema_matches_contract", "primary_key_unique_not_null")
RUN_TIMEOUT_MS = 240_000


@dataclass
class Serving:
    stack: DevStack
    port: int
    screenshots: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.stack.dagster_home))


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory) -> Generator[Serving]:
    """The dev stack with an empty lake: webserver, daemon, embedded Postgres and S3."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: run `make browser` (Debian's chromium package)")
    chosen = os.environ.get("ETL_ASSETS_UI_SCREENSHOTS")
    screenshots = Path(chosen) if chosen else PROJECT_ROOT / "test-artifacts" / "ui-journey"
    if not chosen:
        shutil.rmtree(screenshots, ignore_errors=True)  # only this run's pictures
    screenshots.mkdir(parents=True, exist_ok=True)
    state = tmp_path_factory.mktemp("stack")
    with dev_stack(state) as stack, ExitStack() as logs:
        set_pool_limits(declared_pools(), stack.process_environment())
        port = free_port()
        processes = [
            start_webserver(stack, port, log=logs.enter_context((state / "web.log").open("wb"))),
            start_daemon(stack, log=logs.enter_context((state / "daemon.log").open("wb"))),
        ]
        try:
            wait_for(
                lambda: {"BACKFILL", "QUEUED_RUN_COORDINATOR"} <= healthy_daemons(port),
                timeout=300,
                what="the webserver and daemon",
                poll=2,
            )
            yield Serving(stack, port, screenshots)
        finally:
            stop_processes(processes, timeout=60)


@contextmanager
def chromium() -> Generator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(serving: Serving) -> Generator[Page]:
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.set_default_timeout(60_000)
        yield page


class Journey:
    """Steps through the UI, numbering a screenshot after each."""

    def __init__(self, page: Page, serving: Serving) -> None:
        self.page = page
        self.serving = serving
        self.step = 0

    def open(self, path: str) -> None:
        self.page.goto(self.serving.url + path)
        # A new browser profile gets the community sign-up dialog once; it covers the page.
        skip = self.page.get_by_role("button", name="Skip")
        with contextlib.suppress(PlaywrightTimeoutError):
            skip.click(timeout=5_000)

    def shot(self, name: str) -> Path:
        self.step += 1
        path = self.serving.screenshots / f"{self.step:02d}-{name}.png"
        self.page.screenshot(path=str(path))
        return path

    def launch_from_asset_page(self, selection: str, button: str) -> None:
        """Open the asset's launch dialog, select partitions, and press `button`."""
        self.page.get_by_role("button", name="Materialize…").click()
        dialog = self.page.get_by_role("dialog")
        partitions = dialog.get_by_placeholder("No matching partitions")
        partitions.fill(selection)
        partitions.press("Enter")
        launch = dialog.get_by_role("button", name=button)
        expect(launch).to_be_enabled()
        self.shot(f"launch-{selection.strip('[]').replace('...', '-to-')}")
        launch.click()
        expect(dialog).to_be_hidden()


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
    journey = Journey(page, serving)
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
