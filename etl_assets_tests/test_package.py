"""What importing the package does to the process: Arrow's allocator, and nothing else."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

POOL_AFTER_LOADING = """
import etl_assets.definitions
import pyarrow as pa
etl_assets.definitions.defs()
print(pa.default_memory_pool().backend_name)
"""


@pytest.mark.parametrize(("preset", "expected"), [(None, "system"), ("jemalloc", "jemalloc")])
def test_arrow_allocates_from_the_system_allocator_unless_told_otherwise(
    preset: str | None, expected: str
) -> None:
    environment = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if preset is not None:
        environment["ARROW_DEFAULT_MEMORY_POOL"] = preset
    loaded = subprocess.run(
        [sys.executable, "-c", POOL_AFTER_LOADING],
        capture_output=True,
        text=True,
        check=True,
        env=environment,
    )
    assert loaded.stdout.strip() == expected
