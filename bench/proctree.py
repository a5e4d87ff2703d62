"""A process and its descendants, read from Linux's /proc: what the benchmark charges to a run."""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command (in parentheses, it may hold spaces)."""
    try:
        return (PROC / str(pid) / "stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def process_tree(root: int) -> dict[int, list[str]]:
    """`root` and every live descendant, each with its stat fields (state first, then ppid)."""
    stats = {
        int(entry.name): fields
        for entry in PROC.iterdir()
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None
    }
    tree, grew = {root}, True
    while grew:
        children = {pid for pid, fields in stats.items() if int(fields[1]) in tree} - tree
        tree |= children
        grew = bool(children)
    return {pid: stats[pid] for pid in tree if pid in stats}


def tree_cpu_seconds(root: int) -> float:
    """CPU used so far by a process and its descendants, those it has reaped included."""
    tick = os.sysconf("SC_CLK_TCK")
    # utime, stime, and cutime, cstime: the reaped children's (Postgres' ended backends).
    return (
        sum(sum(int(value) for value in fields[11:15]) for fields in process_tree(root).values())
        / tick
    )


def tree_rss_mb(root: int) -> float:
    """The resident memory of a process and its descendants, summed."""
    page_mb = os.sysconf("SC_PAGE_SIZE") / 1024 / 1024
    total = 0.0
    for pid in process_tree(root):
        try:
            total += int((PROC / str(pid) / "statm").read_text().split()[1]) * page_mb
        except OSError:
            continue
    return total
