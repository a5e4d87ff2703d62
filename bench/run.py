"""`make bench`: speed and memory of etl_assets and its peers, measured in one interleaved run.

Each measurement runs in its own process (`bench.methods`), so its peak RSS is its own. Every
method reads the same window of the same table from the same embedded Postgres and (except the
COPY drain, the limit) writes Parquet to the same local S3 endpoint, a moto server in its own
process. Results are the median of `--reps` rounds; within a round, methods alternate.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import psycopg
from psycopg import sql

from bench.data import ensure_table
from bench.proctree import tree_cpu_seconds
from etl_assets.devstack.postgres import EmbeddedPostgres, create_database, free_port

ROOT = Path(__file__).resolve().parent
WORK = ROOT / "work"
RESULTS = ROOT / "results"
BUCKET = "bench-lake"
KEY = "bench-access-key"
SECRET = "bench-secret-key"  # noqa: S105 - the local endpoint accepts anything

WINDOW_METHODS = [
    "copy_drain", "ours", "ours_two_sessions", "ours_readers_2", "ours_readers_4", "dagster",
    "dagster_cli", "definitions_load", "duckdb", "dlt_connectorx", "dlt_pyarrow", "pandas",
]  # fmt: skip
BACKFILL_METHODS = [
    "ours", "backfill_single_run", "backfill_run_per_partition", "dagster_cli_range",
]  # fmt: skip
LARGE_METHODS = ["copy_drain", "ours", "duckdb"]
"""What the large sizes are measured with: the limit, ours and the fastest peer."""
WINDOWS_METHODS = ["ours_windows", "ours_windows_readers_2", "ours_iceberg_windows"]
"""Thirty daily windows in one load: the plain layout's publish, and Iceberg's commit."""
DAY = {
    "key": "2026-09-15",
    "grain": "daily",
    "start": "2026-09-15T00:00:00+00:00",
    "end": "2026-09-16T00:00:00+00:00",
}
MONTH = {
    "key": "2026-09",
    "grain": "monthly",
    "start": "2026-09-01T00:00:00+00:00",
    "end": "2026-10-01T00:00:00+00:00",
}


@dataclass
class Sample:
    """One measurement."""

    seconds: float
    rows: int
    parquet_bytes: int
    peak_rss_mb: float
    windows: list[dict[str, float]] = field(default_factory=list[dict[str, float]])
    """Per window of a multi-window load: `publish` (write, verify, upload) and `commit`."""
    tree_rss_mb: float = 0.0
    """For a launched run: the peak of its whole process tree's resident memory, summed."""
    cpu_seconds: float = 0.0
    """CPU of the measured process over the timed work (all its threads)."""
    postgres_cpu_seconds: float = 0.0
    """CPU the Postgres server spent while the measurement ran (its backends included)."""
    s3_cpu_seconds: float = 0.0
    """CPU the S3 stand-in (moto's server) spent while the measurement ran."""
    events: int = 0
    """For a launched run: the events its dagster-postgres instance stored."""


@dataclass
class Cell:
    """All measurements of one method in one scenario."""

    samples: list[Sample] = field(default_factory=list[Sample])
    error: str | None = None

    def median(self, attribute: str) -> float:
        """The median of one field over the samples."""
        return statistics.median(getattr(s, attribute) for s in self.samples)


def measure(job: dict[str, Any], servers: dict[str, int] | None = None) -> Sample:
    """Run one method in a child process; its peak RSS is the kernel's figure for that process.

    `servers` (name to root pid: `postgres`, `s3`) are charged the CPU they spent meanwhile.
    """
    servers = servers or {}
    before = {name: tree_cpu_seconds(pid) for name, pid in servers.items()}
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(  # noqa: S603 - our own module
            [sys.executable, "-m", "bench.methods", json.dumps(job)],
            cwd=ROOT.parent,
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        assert process.stdout is not None
        stdout = process.stdout.read().decode()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode:
            errors.seek(0)
            raise RuntimeError(f"{job['method']} failed:\n{errors.read().decode()[-3000:]}")
    spent = {name: tree_cpu_seconds(pid) - before[name] for name, pid in servers.items()}
    result = json.loads(stdout.strip().splitlines()[-1])
    return Sample(
        result["seconds"],
        result["rows"],
        result["parquet_bytes"],
        max(usage.ru_maxrss / 1024, result.get("child_rss_mb", 0.0)),
        result.get("windows", []),
        result.get("tree_rss_mb", 0.0),
        result.get("cpu_seconds", 0.0),
        spent.get("postgres", 0.0),
        spent.get("s3", 0.0),
        result.get("events", 0),
    )


def start_s3() -> tuple[subprocess.Popen[bytes], str]:
    """Moto's server in its own process, so it does not share a GIL with anything measured."""
    port = free_port()
    process = subprocess.Popen(  # noqa: S603
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )
    for _ in range(100):
        try:
            client.create_bucket(Bucket=BUCKET)
            break
        except Exception:
            time.sleep(0.1)
    return process, url


def machine() -> str:
    """CPU, cores and memory of this machine."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        total_kb = int(meminfo.read_text().split()[1])
        memory = f", {total_kb / 1024 / 1024:.0f} GiB RAM"
    return f"{cpu}, {os.cpu_count()} cores{memory}, Python {platform.python_version()}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__)
    parser.add_argument("--sizes", default="1,5", help="table sizes in millions of rows")
    parser.add_argument(
        "--large-sizes",
        default="20",
        help="sizes (millions of rows) measured with the drain, ours and DuckDB only ('' for none)",
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--methods", default=",".join(WINDOW_METHODS))
    parser.add_argument("--no-backfill", action="store_true")
    parser.add_argument(
        "--no-windows", action="store_true", help="skip the per-window publish and commit costs"
    )
    return parser


Scenario = tuple[int, str, dict[str, Any], list[str]]
"""Rows of the table, the window's label, the window, the methods measured on it."""


def plan_scenarios(
    args: argparse.Namespace, sizes: list[int], large_sizes: list[int]
) -> list[Scenario]:
    """Every (table, window, methods) the run measures, in order."""
    methods = args.methods.split(",")
    scenarios: list[Scenario] = []
    for rows in sizes:
        scenarios.append((rows, "1 day", DAY, methods))
        scenarios.append((rows, "30 days", MONTH, methods))
        if not args.no_backfill:
            scenarios.append((rows, "30-day backfill", MONTH, BACKFILL_METHODS))
        if not args.no_windows:
            scenarios.append((rows, "30 daily windows", MONTH, WINDOWS_METHODS))
    for rows in large_sizes:
        large_methods = [m for m in methods if m in LARGE_METHODS]
        scenarios.append((rows, "1 day", DAY, large_methods))
        scenarios.append((rows, "30 days", MONTH, large_methods))
    return scenarios


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table and write it to bench/results/<date>.md."""
    args = _parser().parse_args(argv)
    sizes = [int(float(s) * 1_000_000) for s in args.sizes.split(",")]
    large_sizes = [int(float(s) * 1_000_000) for s in args.large_sizes.split(",") if s]
    WORK.mkdir(exist_ok=True)
    s3_process, s3_url = start_s3()
    postgres = EmbeddedPostgres(WORK / "postgres", port=free_port())
    postgres.start(["-c shared_buffers=512MB", "-c work_mem=64MB"])
    postmaster = int((postgres.data_dir / "postmaster.pid").read_text().split()[0])
    servers = {"postgres": postmaster, "s3": s3_process.pid}
    cells: dict[tuple[str, str, str], Cell] = {}
    try:
        conninfo = create_database(postgres.address, "bench")
        with psycopg.connect(conninfo) as connection:
            server = connection.execute("SHOW server_version").fetchone()
        tables = {}
        for rows in [*sizes, *large_sizes]:
            print(f"preparing {rows:,} rows ...", flush=True)  # noqa: T201
            tables[rows] = ensure_table(conninfo, rows)
        scenarios = plan_scenarios(args, sizes, large_sizes)
        window_rows = _window_rows(conninfo, tables)
        for rep in range(args.reps):
            for rows, label, window, scenario_methods in scenarios:
                for method in scenario_methods:
                    cell = cells.setdefault((f"{rows // 1_000_000}M", label, method), Cell())
                    if cell.error:
                        continue
                    job = {
                        "method": method,
                        "conninfo": conninfo,
                        "table": tables[rows],
                        "window": {**window, "rows": window_rows[(tables[rows], window["key"])]},
                        "s3": {"url": s3_url, "bucket": BUCKET, "key": KEY, "secret": SECRET},
                        "run": f"{rows}-{window['key']}-{rep}",
                        # SQLAlchemy's URL of the server, to which a catalog database is added.
                        "catalog_server": postgres.address.url("", driver="postgresql+psycopg2"),
                    }
                    try:
                        sample = measure(job, servers)
                    except RuntimeError as error:
                        lines = [line for line in str(error).splitlines() if line.strip()]
                        cell.error = (lines[-1] if lines else "no message")[:120]
                        print(f"  {method}: FAILED\n{error}", flush=True)  # noqa: T201
                        continue
                    cell.samples.append(sample)
                    print(  # noqa: T201
                        f"  round {rep + 1} {rows // 1_000_000}M {label:<16} {method:<27}"
                        f" {sample.seconds:7.2f}s {sample.peak_rss_mb:7.0f} MB",
                        flush=True,
                    )
        report = format_report(cells, machine(), str(server[0]) if server else "?", args.reps)
    finally:
        postgres.stop()
        s3_process.terminate()
    print("\n" + report)  # noqa: T201
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{dt.date.today().isoformat()}.md"
    path.write_text(report)
    print(f"written to {path.relative_to(ROOT.parent)}")  # noqa: T201
    return 0


def _window_rows(conninfo: str, tables: dict[int, str]) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    with psycopg.connect(conninfo) as connection:
        for table in tables.values():
            for window in (DAY, MONTH):
                row = connection.execute(
                    sql.SQL(
                        "SELECT count(*) FROM {} WHERE created_at >= %s AND created_at < %s"
                    ).format(sql.Identifier("bench", table)),
                    (window["start"], window["end"]),
                ).fetchone()
                counts[(table, window["key"])] = int(row[0]) if row else 0
    return counts


def format_report(
    cells: dict[tuple[str, str, str], Cell], host: str, server: str, reps: int
) -> str:
    """The results as a markdown table, with the ratio to the COPY drain of the same window."""
    lines = [
        f"# etl_assets benchmark, {dt.date.today().isoformat()}",
        "",
        f"Machine: {host}; PostgreSQL {server} (embedded, same machine); S3: moto server on "
        f"127.0.0.1. Median of {reps} interleaved rounds; each measurement in its own process.",
        "",
        "| table | window | method | wall s | rows/s | Parquet MB/s | x COPY drain "
        "| peak RSS MB | Parquet MB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (size, label, method), cell in cells.items():
        if cell.error:
            lines.append(f"| {size} | {label} | {method} | failed: {cell.error} | | | | | |")
            continue
        if not cell.samples:
            continue
        seconds = cell.median("seconds")
        rows = cell.samples[0].rows
        parquet_mb = cell.median("parquet_bytes") / 1e6
        whole_window = label in ("30-day backfill", "30 daily windows")
        limit = cells.get((size, "30 days" if whole_window else label, "copy_drain"))
        ratio = seconds / limit.median("seconds") if limit and limit.samples else float("nan")
        lines.append(
            f"| {size} | {label} | {method} | {seconds:.2f} | {rows / seconds:,.0f} | "
            f"{(parquet_mb / seconds) if parquet_mb else 0:.1f} | {ratio:.2f} | "
            f"{cell.median('peak_rss_mb'):.0f} | {parquet_mb:.1f} |"
        )
    lines += ["", *format_cpu(cells), *format_window_costs(cells), *format_targets(cells)]
    return "\n".join(lines) + "\n"


CPU_METHODS = (
    "copy_drain", "ours", "ours_two_sessions", "ours_readers_2", "ours_readers_4", "dagster",
    "duckdb",
)  # fmt: skip
"""The methods whose work runs in the measured process, so its CPU is theirs."""


def format_cpu(cells: dict[tuple[str, str, str], Cell]) -> list[str]:
    """Where the CPU goes: the reading process, the Postgres server and the S3 stand-in."""
    lines = [
        "## CPU per stage",
        "",
        "CPU seconds over the timed work: the measured process (every thread: decoding, "
        "checks, Parquet encoding, upload), the Postgres server (the backend producing the "
        "rows, and the counts), and moto's server, which stands in for S3 here. A wall time "
        "under the sum means the stages overlapped on the machine's cores.",
        "",
        "| table | window | method | wall s | process CPU s | Postgres CPU s | S3 server CPU s |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for (size, label, method), cell in cells.items():
        if method not in CPU_METHODS or label not in ("1 day", "30 days") or not cell.samples:
            continue
        lines.append(
            f"| {size} | {label} | {method} | {cell.median('seconds'):.2f} | "
            f"{cell.median('cpu_seconds'):.2f} | {cell.median('postgres_cpu_seconds'):.2f} | "
            f"{cell.median('s3_cpu_seconds'):.2f} |"
        )
    return [*lines, ""]


def percentile(values: list[float], fraction: float) -> float:
    """The value at `fraction` of the sorted values (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def format_window_costs(cells: dict[tuple[str, str, str], Cell]) -> list[str]:
    """Each window's publish and commit cost in the multi-window loads, over every round."""
    rows: list[str] = []
    for (size, label, method), cell in cells.items():
        windows = [w for sample in cell.samples for w in sample.windows]
        if not windows:
            continue
        publish = [w["publish"] * 1000 for w in windows]
        commit = [w["commit"] * 1000 for w in windows]
        rows.append(
            f"| {size} | {label} | {method} | {len(windows)} | "
            f"{statistics.median(publish):.0f} | {percentile(publish, 0.95):.0f} | "
            f"{statistics.median(commit):.0f} | {percentile(commit, 0.95):.0f} |"
        )
    if not rows:
        return []
    return [
        "## Cost per window",
        "",
        "Publish: writing, verifying and uploading the window's file; commit: the catalog "
        "commit that makes it visible (Iceberg; the plain layout has none: its object is "
        "visible once uploaded). Milliseconds over every window of every round.",
        "",
        "| table | load | method | windows | publish median ms | publish p95 ms "
        "| commit median ms | commit p95 ms |",
        "|---|---|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
    ]


MONTH_LABEL = "30 days"


def format_targets(cells: dict[tuple[str, str, str], Cell]) -> list[str]:
    """Each target of the benchmark with its measured figure, for the sizes that were run."""
    targets = _Targets(cells)
    lines = ["## Targets", "", "| target | measured | |", "|---|---|---|"]
    sizes = sorted({size for size, _, _ in cells}, key=lambda s: int(s.rstrip("M")))
    for size in sizes:
        lines += targets.speed(size) + targets.runs(size) + targets.launched_run(size)
    if len(sizes) >= 2:
        lines += targets.growth(sizes[0], sizes[-1])
    return lines


def _verdict(met: bool) -> str:
    return "met" if met else "missed"


class _Targets:
    """The figures of each target, from the measured cells."""

    def __init__(self, cells: dict[tuple[str, str, str], Cell]) -> None:
        self._cells = cells

    def seconds(self, size: str, label: str, method: str) -> float | None:
        """The median wall time of one cell, if it was measured."""
        return self.median(size, label, method, "seconds")

    def median(self, size: str, label: str, method: str, attribute: str) -> float | None:
        """The median of one field of one cell, if it was measured."""
        cell = self._cells.get((size, label, method))
        return cell.median(attribute) if cell and cell.samples else None

    def speed(self, size: str) -> list[str]:
        """The whole window against the drain and the peers; the 20 M one-day window."""
        lines: list[str] = []
        ours = self.seconds(size, MONTH_LABEL, "ours")
        drain = self.seconds(size, MONTH_LABEL, "copy_drain")
        for method, label in (
            ("ours", ""),
            ("ours_two_sessions", ", sessions_per_load 2,"),
            ("ours_readers_2", ", readers_per_load 2,"),
            ("ours_readers_4", ", readers_per_load 4,"),
        ):
            took = self.seconds(size, MONTH_LABEL, method)
            if took and drain:
                lines.append(
                    f"| {size}: whole window{label} <= 1.2x the COPY drain | {took / drain:.2f}x "
                    f"({took:.2f} s vs {drain:.2f} s) | {_verdict(took / drain <= 1.2)} |"
                )
        for method in ("duckdb", "dlt_connectorx", "dlt_pyarrow", "pandas"):
            peer = self.seconds(size, MONTH_LABEL, method)
            if ours and peer:
                lines.append(
                    f"| {size}: faster than {method} | {ours:.2f} s vs {peer:.2f} s | "
                    f"{_verdict(ours < peer)} |"
                )
        day, duckdb = self.seconds(size, "1 day", "ours"), self.seconds(size, "1 day", "duckdb")
        if size == "20M" and day and duckdb:
            lines.append(
                f"| {size}: one-day window >= 3x faster than duckdb | {duckdb / day:.2f}x "
                f"({day:.2f} s vs {duckdb:.2f} s) | {_verdict(duckdb >= 3 * day)} |"
            )
        return lines

    def runs(self, size: str) -> list[str]:
        """Peak RSS, Dagster's overhead in and out of process, and backfills."""
        lines: list[str] = []
        ours = self.seconds(size, MONTH_LABEL, "ours")
        peak = self.median(size, MONTH_LABEL, "ours", "peak_rss_mb")
        if peak:
            lines.append(
                f"| {size}: peak RSS <= 300 MB | {peak:.0f} MB | {_verdict(peak <= 300)} |"
            )
        for method in ("dagster", "dagster_cli"):
            run = self.seconds(size, MONTH_LABEL, method)
            if ours and run:
                overhead = run - ours
                lines.append(
                    f"| {size}: Dagster overhead <= 2 s ({method}) | {overhead:+.2f} s | "
                    f"{_verdict(overhead <= 2)} |"
                )
        bulk = self.seconds(size, "30-day backfill", "ours")
        for method, how in (
            ("backfill_single_run", "single-run backfill (in process)"),
            ("dagster_cli_range", "range run launched on a dagster-postgres instance"),
        ):
            single = self.seconds(size, "30-day backfill", method)
            if single and bulk:
                lines.append(
                    f"| {size}: 30-partition {how} <= 1.3x one bulk extraction | "
                    f"{single / bulk:.2f}x ({single:.2f} s vs {bulk:.2f} s) | "
                    f"{_verdict(single / bulk <= 1.3)} |"
                )
        return lines

    def launched_run(self, size: str) -> list[str]:
        """A launched run's fixed cost and its process tree's memory."""
        lines: list[str] = []
        launched = self.seconds(size, "1 day", "dagster_cli")
        in_process = self.seconds(size, "1 day", "ours")
        start = self.seconds(size, "1 day", "definitions_load")
        if launched and in_process and start:
            fixed = launched - in_process
            lines.append(
                f"| {size}: a launched one-day run's fixed cost <= 1.5x starting Python and "
                f"loading the definitions | {fixed / start:.2f}x ({fixed:.2f} s vs {start:.2f} s)"
                f" | {_verdict(fixed <= 1.5 * start)} |"
            )
        for label, method in (("1 day", "dagster_cli"), ("30-day backfill", "dagster_cli_range")):
            events = self.median(size, label, method, "events")
            if events:
                lines.append(
                    f"| {size}: events stored by a launched run ({label}) | {events:.0f} | |"
                )
        tree = self.median(size, MONTH_LABEL, "dagster_cli", "tree_rss_mb")
        if tree:
            lines.append(
                f"| {size}: a launched run's process tree peak RSS <= 350 MB | {tree:.0f} MB | "
                f"{_verdict(tree <= 350)} |"
            )
        return lines

    def growth(self, small: str, large: str) -> list[str]:
        """How memory and time grow from the smallest size to the largest."""
        lines: list[str] = []
        first = self.median(small, MONTH_LABEL, "ours", "peak_rss_mb")
        last = self.median(large, MONTH_LABEL, "ours", "peak_rss_mb")
        if first and last:
            growth = last / first - 1
            lines.append(
                f"| peak RSS flat: {large} within 10% of {small} | {last:.0f} MB vs "
                f"{first:.0f} MB ({growth:+.0%}) | {_verdict(growth <= 0.10)} |"
            )
        small_s = self.seconds(small, MONTH_LABEL, "ours")
        large_s = self.seconds(large, MONTH_LABEL, "ours")
        if small_s and large_s:
            lines.append(
                f"| cost from {small} to {large} rows (information) | {small_s:.2f} s to "
                f"{large_s:.2f} s ({large_s / small_s:.2f}x) | |"
            )
        return lines


if __name__ == "__main__":
    sys.exit(main())
