"""What the end-to-end suites in a browser share."""

from __future__ import annotations

from pathlib import Path

import pytest

from etl_assets_tests.integration.ui import screenshots_folder


@pytest.fixture(scope="session")
def ui_screenshots() -> Path:
    """Where the browser suites save their screenshots (emptied once, not once per suite)."""
    return screenshots_folder()
