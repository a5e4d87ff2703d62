"""The Dagster UI served on the dev stack, driven in headless Chromium; where screenshots go.

A webserver and a daemon run on the dev stack's dagster-postgres instance (the repository's
dagster.yaml). Chromium is Debian's package (`make browser` installs it); Playwright only drives
it, through `executable_path`, and never downloads a browser. Screenshots go to
`test-artifacts/ui-journey/`, emptied once per session, or to the folder `ETL_ASSETS_UI_SCREENSHOTS`
names (left as it is: `docs/images` refreshes the pictures of docs/ui.md).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Collection, Generator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from playwright.sync_api import Page, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from etl_assets.devstack.cli import DEFAULT_WORKSPACE, start_daemon, start_webserver, stop_processes
from etl_assets.devstack.postgres import free_port
from etl_assets.devstack.stack import PROJECT_ROOT, DevStack, dev_stack
from etl_assets_tests.support import daemon_report, healthy_daemons, wait_for

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
SCREENSHOTS_VARIABLE = "ETL_ASSETS_UI_SCREENSHOTS"
DEFAULT_SCREENSHOTS = PROJECT_ROOT / "test-artifacts" / "ui-journey"


def screenshots_folder() -> Path:
    """The folder for this session's screenshots, created; the default one emptied first."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: run `make browser` (Debian's chromium package)")
    chosen = os.environ.get(SCREENSHOTS_VARIABLE)
    folder = Path(chosen) if chosen else DEFAULT_SCREENSHOTS
    if not chosen:
        shutil.rmtree(folder, ignore_errors=True)  # only this session's pictures
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class Serving:
    """The dev stack, the webserver's port, and the folder for screenshots."""

    stack: DevStack
    port: int
    screenshots: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.stack.dagster_home))


@contextmanager
def served(
    state: Path,
    screenshots: Path,
    daemons: Collection[str],
    workspace: Path = DEFAULT_WORKSPACE,
) -> Generator[Serving]:
    """The dev stack in `state`, with a webserver and a daemon loading `workspace` (their logs
    beside it), once the webserver reports `daemons` healthy."""
    with dev_stack(state) as stack, ExitStack() as logs:
        port = free_port()
        processes = [
            start_webserver(
                stack,
                port,
                log=logs.enter_context((state / "web.log").open("wb")),
                workspace=workspace,
            ),
            start_daemon(
                stack,
                log=logs.enter_context((state / "daemon.log").open("wb")),
                workspace=workspace,
            ),
        ]
        try:
            try:
                wait_for(
                    lambda: set(daemons) <= healthy_daemons(port),
                    timeout=300,
                    what=f"the webserver, and the daemon running {sorted(daemons)}",
                    poll=2,
                )
            except AssertionError as timed_out:
                raise AssertionError(f"{timed_out}:\n{daemon_report(port)}") from None
            yield Serving(stack, port, screenshots)
        finally:
            stop_processes(processes, timeout=60)


@contextmanager
def chromium_page() -> Generator[Page]:
    """A page of a new headless Chromium, closed afterwards."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


class Journey:
    """Steps through the UI at `url`, numbering a screenshot after each (after `prefix`)."""

    def __init__(self, page: Page, url: str, screenshots: Path, prefix: str = "") -> None:
        self.page = page
        self.url = url
        self.screenshots = screenshots
        self.prefix = prefix
        self.step = 0

    def open(self, path: str) -> None:
        self.page.goto(self.url + path)
        # A new browser profile gets the community sign-up dialog once; it covers the page.
        skip = self.page.get_by_role("button", name="Skip")
        with contextlib.suppress(PlaywrightTimeoutError):
            skip.click(timeout=5_000)

    def shot(self, name: str) -> Path:
        self.step += 1
        path = self.screenshots / f"{self.prefix}{self.step:02d}-{name}.png"
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
