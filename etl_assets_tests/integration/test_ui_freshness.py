"""A table past its freshness policy, as the freshness daemon records it and the Dagster UI
shows it, in headless Chromium against a real webserver and daemon.

The instance is the dev stack's (the repository's dagster.yaml, dagster-postgres); the workspace
is one code location, `freshness`, built from the component: two tables of the demo source, both
loaded once, one whose policy fails a minute after its latest load (the shortest window Dagster
accepts) and one that may wait a day. Once the daemon has found the first one failing, its asset
page says `Failed` under *Freshness policy* and the other one's says `Passing`. The screenshots
(`freshness-*.png`) go where test_ui_journey.py puts its own.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from playwright.sync_api import Page, expect

from etl_assets_tests.integration.ui import Journey, Serving, chromium_page, served
from etl_assets_tests.support import component_workspace, graphql, wait_for

pytestmark = pytest.mark.slow

LOCATION = "freshness"
DECLARATION = """
type: etl_assets.components.PostgresTablesComponent
attributes:
  source: {name: freshness, dsn_env: ETL_SHOP_PG_DSN, password_env: ETL_SHOP_PG_PASSWORD}
  tables:
    - schema: sales
      table: orders
      partition_column: placed_at
      grain: daily
      start: "2026-10-01"
      end: "2026-10-08"
      primary_key: [order_id]
      columns: [order_id, placed_at, total]
      freshness: {fail_after: 1m}
    - schema: sales
      table: payments
      partition_column: paid_at
      grain: daily
      start: "2026-10-01"
      end: "2026-10-08"
      primary_key: [payment_id]
      columns: [payment_id, paid_at, amount]
      freshness: {fail_after: 1d, warn_after: 23h}
"""
STALE = ["raw", "freshness", "sales", "orders"]
FRESH = ["raw", "freshness", "sales", "payments"]
PARTITION = "2026-10-01"
FAIL_AFTER_SECONDS = 60
FRESHNESS = """
query($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    __typename
    ... on AssetNode { freshnessStatusInfo { freshnessStatus } }
  }
  assetOrError(assetKey: $key) {
    __typename
    ... on Asset { freshnessStatusChangedTimestamp }
  }
}
"""


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory, ui_screenshots: Path) -> Generator[Serving]:
    """The dev stack, with a webserver and a daemon serving the `freshness` location."""
    workspace = component_workspace(tmp_path_factory.mktemp("workspace"), LOCATION, DECLARATION)
    state = tmp_path_factory.mktemp("stack")
    daemons = {"QUEUED_RUN_COORDINATOR", "FRESHNESS_DAEMON"}
    with served(state, ui_screenshots, daemons, workspace) as serving:
        yield serving


@pytest.fixture
def page(serving: Serving) -> Generator[Page]:
    with chromium_page() as page:
        yield page


@dataclass(frozen=True)
class Freshness:
    """An asset's freshness as the webserver reports it to the asset page."""

    status: str
    """HEALTHY (passing), WARNING, DEGRADED (failed) or UNKNOWN (not evaluated)."""
    changed_at: float | None
    """When the daemon last recorded a change of state (seconds since the epoch)."""


def freshness(serving: Serving, path: list[str]) -> Freshness:
    answer = graphql(serving.port, FRESHNESS, {"key": {"path": path}})
    node, asset = answer["assetNodeOrError"], answer["assetOrError"]
    assert node["__typename"] == "AssetNode", node
    changed = asset.get("freshnessStatusChangedTimestamp")
    return Freshness(
        node["freshnessStatusInfo"]["freshnessStatus"], changed / 1000 if changed else None
    )


def load(journey: Journey, instance: dg.DagsterInstance, path: list[str]) -> float:
    """Materialize one partition from the asset's page; when its materialization was recorded."""
    journey.open("/assets/" + "/".join(path))
    journey.launch_from_asset_page(PARTITION, "Launch 1 run")

    def latest() -> dg.EventLogEntry | None:
        return instance.get_latest_materialization_event(dg.AssetKey(path))

    wait_for(lambda: latest() is not None, 240, f"a materialization of {'/'.join(path)}", poll=2)
    entry = latest()
    assert entry is not None
    return entry.timestamp


def expect_freshness(page: Page, status: str, policy: str) -> None:
    """The asset page shows `status` in its Status row, at the top, and again in its *Freshness
    policy* section beside the latest load and `policy`, the policy in words."""
    # The first on the page is the Status row's; the second heads the section.
    heading = page.get_by_text("Freshness policy", exact=True).first
    expect(heading.locator("xpath=..").get_by_text(status, exact=True)).to_be_visible()
    section = (
        page.locator("div", has=page.get_by_text(policy))
        .filter(has=page.get_by_text("Last materialized"))
        .last
    )
    expect(section.get_by_text(status, exact=True)).to_be_visible()
    expect(section.get_by_text(policy)).to_be_visible()


def test_a_table_past_its_freshness_policy_shows_failed_and_a_current_one_passing(
    serving: Serving, page: Page
) -> None:
    journey = Journey(page, serving.url, serving.screenshots, prefix="freshness-")
    instance = serving.instance()
    # The repository's dagster.yaml: the daemon evaluates freshness policies.
    assert "FRESHNESS_DAEMON" in instance.get_required_daemon_types()
    stale_loaded = load(journey, instance, STALE)
    fresh_loaded = load(journey, instance, FRESH)

    wait_for(
        lambda: freshness(serving, STALE).status == "DEGRADED",
        timeout=300,
        what="the freshness daemon to find raw/freshness/sales/orders failing its policy",
        poll=5,
    )
    stale, fresh = freshness(serving, STALE), freshness(serving, FRESH)
    assert fresh.status == "HEALTHY"
    # The daemon recorded each state after its table's load; the failure once a minute had passed.
    assert stale.changed_at is not None
    assert stale.changed_at >= stale_loaded + FAIL_AFTER_SECONDS
    assert fresh.changed_at is not None
    assert fresh.changed_at >= fresh_loaded

    # Tall enough for the Status row and the Freshness policy section in one picture.
    page.set_viewport_size({"width": 1440, "height": 1040})
    journey.open("/assets/" + "/".join(STALE))
    expect_freshness(page, "Failed", "Fails if more than a minute since last materialization")
    journey.shot("stale-table-failed")

    journey.open("/assets/" + "/".join(FRESH))
    expect_freshness(page, "Passing", "Fails if more than 24 hours since last materialization")
    expect(
        page.get_by_text("Warns if more than 23 hours since last materialization")
    ).to_be_visible()
    journey.shot("current-table-passing")
