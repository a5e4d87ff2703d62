"""The rules of the code's shape are lint, and the lint catches a break of each.

`make lint` runs ruff (with a ban on every private `dagster._*` package) and import-linter (the
layers defs > components > resources > lib, and no dagster in lib). Here a copy of the package
gets one violation at a time, and the same tools must refuse it.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The package and its lint configuration, copied where a test may break them."""
    shutil.copytree(ROOT / "etl_assets", tmp_path / "etl_assets")
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def lint(copy: Path, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / command[0]), *command[1:]],
        cwd=copy,
        env={**os.environ, "PYTHONPATH": str(copy), "COLUMNS": "400"},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_copy_passes_both_linters_before_anything_is_broken(copy: Path) -> None:
    assert lint(copy, "ruff", "check", "etl_assets").returncode == 0
    assert lint(copy, "lint-imports").returncode == 0


@pytest.mark.parametrize(
    "line",
    [
        "from dagster._core.events import DagsterEvent",
        "import dagster._utils",
        "from dagster._core.execution.context.system import StepExecutionContext",
    ],
)
def test_a_private_dagster_import_fails_lint(copy: Path, line: str) -> None:
    module = copy / "etl_assets" / "resources" / "lake.py"
    module.write_text(module.read_text() + f"\n{line}  # noqa: F401\n")
    result = lint(copy, "ruff", "check", "etl_assets")
    assert result.returncode != 0
    assert "TID251" in result.stdout
    assert "private Dagster API" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("lib/load.py", "import dagster", "lib never imports dagster"),
        ("lib/table/spec.py", "import etl_assets.resources.lake", "Layers"),
        ("resources/postgres.py", "import etl_assets.components.table_assets", "Layers"),
        ("components/incremental.py", "import etl_assets.defs.resources", "Layers"),
    ],
)
def test_an_import_across_the_layers_fails_lint(
    copy: Path, module: str, line: str, contract: str
) -> None:
    path = copy / "etl_assets" / module
    path.write_text(path.read_text() + f"\n{line}  # noqa: E402, F401\n")
    result = lint(copy, "lint-imports", "--no-cache")
    assert result.returncode != 0
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(line.startswith(contract) for line in broken), result.stdout


PRIVATE_CONTEXT_ATTRIBUTES = {"step_context", "previous_attempt_count", "_step_execution_context"}


def test_no_code_reaches_into_dagsters_execution_internals() -> None:
    # Attributes that are not part of Dagster's documented API, reached through a context.
    found = [
        f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}"
        for path in (ROOT / "etl_assets").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr in PRIVATE_CONTEXT_ATTRIBUTES
    ]
    assert found == []
