"""docs/scaling.md quotes `make bench`: its measured figures must be in the results it cites."""

from __future__ import annotations

import re
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DOC = PROJECT_ROOT / "docs" / "scaling.md"


def cited_results() -> list[Path]:
    cited = sorted(set(re.findall(r"bench/results/[\w.-]+\.md", DOC.read_text())))
    assert cited, "docs/scaling.md should cite the results it quotes"
    paths = [PROJECT_ROOT / name for name in cited]
    for path in paths:
        assert path.exists(), f"{path} does not exist"
    return paths


def test_the_plan_names_make_bench_and_the_machine_it_ran_on() -> None:
    text = DOC.read_text()
    assert "`make bench`" in text
    for results in cited_results():
        machine = next(
            line for line in results.read_text().splitlines() if line.startswith("Machine:")
        )
        facts = re.findall(r"\d+ cores|\d+ GiB|Python [\d.]+|PostgreSQL [\d.]+|moto", machine)
        assert len(facts) == 5, machine
        for fact in facts:
            assert fact in text, f"docs/scaling.md does not say {fact!r} ({results.name})"


def test_every_measured_figure_is_in_the_cited_results() -> None:
    cells = {
        cell.strip()
        for results in cited_results()
        for line in results.read_text().splitlines()
        for cell in line.split("|")
    }
    section = DOC.read_text().split("## 1.")[1].split("## 2.")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    quoted = [n for row in rows[1:] for n in re.findall(r"\b(\d+(?:\.\d+)?) (?:s|MB)\b", row)]
    assert len(quoted) == 16
    missing = [n for n in quoted if n not in cells]
    assert missing == [], f"not in {[path.name for path in cited_results()]}: {missing}"
