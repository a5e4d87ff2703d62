"""What `dg launch` tells a user whose load failed: the last error says what happened.

The demo stack's runs go through a proxy that answers every S3 request with 500, as S3 does
when it is unavailable; the load retries, then gives up.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from etl_assets.cli.main import set_pool_limits
from etl_assets.components.postgres_tables import declared_pools
from etl_assets.devstack.stack import PROJECT_ROOT, dev_stack
from etl_assets_tests.faults import Faults, FaultyS3Proxy, Rule

pytestmark = pytest.mark.slow


def test_s3_failing_throughout_ends_dg_launch_with_what_was_and_was_not_published(
    tmp_path: Path,
) -> None:
    faults = Faults(rules=[Rule("any", "error_500", times=1_000_000)])
    with dev_stack(tmp_path / "stack") as stack, FaultyS3Proxy(stack.s3.url, faults) as proxy:
        environment = {**stack.process_environment(), "AWS_ENDPOINT_URL": proxy.url}
        set_pool_limits(declared_pools(), environment)
        launched = subprocess.run(
            [
                str(Path(sys.executable).parent / "dg"),
                "launch",
                "--assets",
                "raw/shop/sales/orders",
                "--partition",
                "2026-10-02",
            ],
            cwd=PROJECT_ROOT,
            env=environment,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
    output = launched.stdout + launched.stderr
    assert launched.returncode != 0
    # Both retries were used before giving up.
    assert "retrying (retry 2 of 2)" in output
    # The run's failure, the last thing printed: the summary, then only its own short trace.
    last = output[output.rindex("RUN_FAILURE") :]
    message, _, trace = last.partition("Stack Trace:")
    assert "raw/shop/sales/orders [2026-10-02]: nothing was published" in message
    assert "S3 did not answer for bucket 'etl-lake' (500)" in message
    assert "materialize the unpublished partitions again once it has passed" in message
    assert "caused by" not in trace
    assert "Stack Trace:" not in trace
    assert [line for line in trace.splitlines() if line.strip()][-1] == (
        "Error: Materialization failed."
    )
