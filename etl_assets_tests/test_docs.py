"""The README and the pages under docs/ point at things that exist, and the README stays short.

Every relative link leads to a file (and, for a link to a page's heading, to that heading); every
`etl_assets/...` and `etl_assets_tests/...` path the pages name exists in the repository, and every
test they name by `file::test` is defined there; every test the Guarantees table names exists;
the table declarations shown are ones the component accepts. No service is needed.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
README_MAX_LINES = 200

FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *$", re.MULTILINE)
# A path of the repository's code or tests, wherever the page names it (prose, tables, diagrams);
# one that follows `/` is part of an example output (`.../etl_assets/defs/...`), not a path.
CODE_PATH = re.compile(r"(?<![\w./-])((?:etl_assets|etl_assets_tests)/[\w./-]*)")
NAMED_TEST = re.compile(r"(etl_assets_tests/[\w/]+\.py)::(test_\w+)")
GUARANTEE_TEST = re.compile(r"^(?:([\w/]+\.py))?(?:::(test_\w+))?$")


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def prose(page: Path) -> str:
    """The page without its fenced blocks (code, diagrams, example output)."""
    return FENCE.sub("", page.read_text())


def anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {anchor(heading) for heading in HEADING.findall(prose(page))}


def defines_test(path: Path, name: str) -> bool:
    return re.search(rf"^(?:async )?def {name}\(", path.read_text(), re.MULTILINE) is not None


def test_the_readme_is_a_landing_page_of_at_most_200_lines() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move the rest under docs/"


def test_the_readme_links_every_page_under_docs() -> None:
    linked = {
        (README.parent / target.split("#")[0]).resolve() for target in LINK.findall(prose(README))
    }
    unlinked = [page_id(page) for page in PAGES[1:] if page.resolve() not in linked]
    assert unlinked == [], f"README.md does not link {unlinked}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(page: Path) -> None:
    broken: list[str] = []
    for target in LINK.findall(prose(page)):
        if re.match(r"[a-z]+:", target):
            continue  # http(s):, mailto:
        path, _, fragment = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{target}: no heading #{fragment} in {page_id(linked)}")
    assert broken == [], f"{page_id(page)}: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_code_path_named_exists_in_the_repository(page: Path) -> None:
    text = page.read_text()
    named = {path.rstrip("./") for path in CODE_PATH.findall(text)}
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert missing == [], f"{page_id(page)} names paths that do not exist: {missing}"
    undefined = [
        f"{path}::{name}"
        for path, name in NAMED_TEST.findall(text)
        if (ROOT / path).exists() and not defines_test(ROOT / path, name)
    ]
    assert undefined == [], f"{page_id(page)} names tests that do not exist: {undefined}"


def guarantee_rows() -> list[tuple[str, str]]:
    """(promise, proven-by cell) for each row of the Guarantees table."""
    text = (DOCS / "guarantees.md").read_text()
    table = text[text.index("| Promise | Proven by |") :]
    table = table[: table.index("\n\n")]
    rows: list[tuple[str, str]] = []
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows.append((cells[0], cells[-1]))
    return rows


def test_every_test_the_guarantees_name_exists() -> None:
    missing: list[str] = []
    for promise, proof in guarantee_rows():
        current: Path | None = None
        names = re.findall(r"`([^`]+)`", proof)
        assert names, f"no test proves: {promise}"
        for named in names:
            match = GUARANTEE_TEST.match(named)
            assert match is not None, f"not a test path: {named!r} ({promise})"
            path, test = match.group(1), match.group(2)
            if path is not None:
                current = ROOT / "etl_assets_tests" / str(path)
                if not current.exists():
                    missing.append(f"{named}: no such file")
                    continue
            if test is not None:
                assert current is not None, f"{named!r} names no file before it ({promise})"
                if current.exists() and not defines_test(current, test):
                    missing.append(f"{current.relative_to(ROOT)}::{test}")
    assert missing == [], f"the Guarantees table names tests that do not exist: {missing}"


def yaml_block(page: Path, heading: str) -> dict[str, Any]:
    text = page.read_text()
    section = text[text.index(heading) :]
    block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert block is not None, f"{page_id(page)}: no YAML under {heading!r}"
    document = yaml.safe_load(block.group(1))
    assert isinstance(document, dict)
    return document


def resolve(document: dict[str, Any]) -> Any:
    """The component a `defs.yaml` document declares, resolved from its attributes."""
    module, _, name = str(document["type"]).rpartition(".")
    component = getattr(importlib.import_module(module), name)
    return component.resolve_from_dict(document["attributes"])


def test_the_readmes_first_table_is_a_declaration_the_component_accepts() -> None:
    document = yaml_block(README, "## A first table")
    shop = yaml.safe_load((ROOT / "etl_assets" / "defs" / "shop" / "defs.yaml").read_text())
    assert document["type"] == shop["type"]
    component = resolve(document)
    assert [(t.table_schema, t.table) for t in component.tables] == [("sales", "orders")]


def test_the_full_declaration_is_one_the_component_accepts() -> None:
    document = yaml_block(DOCS / "declaring-tables.md", "## A declaration")
    [table] = document["attributes"]["tables"]
    # The transform names a module of the reader's own (`my_package`), which is not installed.
    assert table.pop("transform").startswith("my_package.")
    component = resolve(document)
    [resolved] = component.tables
    declared = [
        column if isinstance(column, str) else column["name"] for column in table["columns"]
    ]
    assert [c if isinstance(c, str) else c.name for c in resolved.columns] == declared


def test_the_freshness_setting_shown_is_the_one_every_instance_config_holds() -> None:
    shown = yaml_block(DOCS / "contract-and-checks.md", "## Freshness")
    for config in (ROOT / "dagster.yaml", *sorted((ROOT / "deploy").glob("*/dagster.yaml"))):
        document = yaml.safe_load(config.read_text())
        assert {"freshness": document.get("freshness")} == shown, config.relative_to(ROOT)
