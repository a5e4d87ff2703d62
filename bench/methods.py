"""One benchmark measurement, run in its own process: `python -m bench.methods '<json>'`.

The parent measures the process's peak RSS; this prints one JSON line with the wall time of
the work itself (imports and connections set up before the clock starts are excluded alike
for every method), the rows moved, and the Parquet bytes written.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import urlparse

import boto3
from psycopg import sql

from bench.proctree import tree_rss_mb

BENCH_SOURCE = "bench"
"""The source name of the benchmark table."""
COLUMNS = [
    "id", "created_at", "account_id", "amount", "quantity", "score", "is_paid", "currency",
    "country", "note", "tags", "payload", "ref", "event_date", "tier", "session_id",
    "duration_ms", "discount", "referrer", "updated_at",
]  # fmt: skip


def main() -> None:
    """Run the method named in the JSON argument and print its result."""
    job = json.loads(sys.argv[1])
    method = METHODS[job["method"]]
    result = method(job)
    print(json.dumps(result), flush=True)  # noqa: T201 - the parent reads this line


def _s3(job: dict[str, Any]) -> Any:
    s3 = job["s3"]
    return boto3.client(
        "s3",
        endpoint_url=s3["url"],
        aws_access_key_id=s3["key"],
        aws_secret_access_key=s3["secret"],
        region_name="us-east-1",
    )


def _parquet_bytes(job: dict[str, Any], prefix: str) -> int:
    client = _s3(job)
    total = 0
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=job["s3"]["bucket"], Prefix=prefix
    ):
        total += sum(item["Size"] for item in page.get("Contents", []))
    return total


def _window_query(job: dict[str, Any], catalog: str | None = None) -> sql.Composed:
    """The window's rows, every column; `catalog` qualifies the table (DuckDB's `pg`)."""
    window = job["window"]
    names = (catalog, "bench", job["table"]) if catalog else ("bench", job["table"])
    return sql.SQL(
        "SELECT {columns} FROM {table} WHERE created_at >= {start}::timestamptz"
        " AND created_at < {end}::timestamptz"
    ).format(
        columns=sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS),
        table=sql.Identifier(*names),
        start=sql.Literal(window["start"]),
        end=sql.Literal(window["end"]),
    )


def _timed(work: Callable[[], int], job: dict[str, Any], prefix: str | None) -> dict[str, Any]:
    started, cpu_started = time.perf_counter(), time.process_time()
    rows = work()
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        # This process's CPU over the timed work, every thread; a launched run's is in its
        # own process and not counted here.
        "cpu_seconds": time.process_time() - cpu_started,
        "rows": rows,
        "parquet_bytes": _parquet_bytes(job, prefix) if prefix else 0,
    }


def copy_drain(job: dict[str, Any]) -> dict[str, Any]:
    """(a) The limit: drain `COPY (SELECT ...) TO STDOUT (FORMAT binary)` over one connection."""
    import psycopg  # noqa: PLC0415 - each method imports only what it uses

    with psycopg.connect(job["conninfo"]) as connection:

        def work() -> int:
            total = 0
            with connection.cursor().copy(
                sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(_window_query(job))
            ) as copy:
                for block in copy:
                    total += len(block)
            return job["window"]["rows"]

        return _timed(work, job, None)


def table_spec(job: dict[str, Any]) -> Any:
    """The benchmark table as a TableSpec with the job's grain."""
    from etl_assets.lib.table.spec import ColumnSpec, TableSpec  # noqa: PLC0415
    from etl_assets.lib.table.windows import Grain  # noqa: PLC0415

    grain = Grain(job["window"]["grain"])
    return TableSpec(
        schema="bench",
        table=job["table"],
        partition_column="created_at",
        grain=grain,
        start=dt.datetime(2026, 9, 1),
        end=dt.datetime(2026, 10, 1),
        timezone="UTC",
        primary_key=("id",),
        columns=tuple(ColumnSpec(c) for c in COLUMNS),
    )


def lake(job: dict[str, Any], prefix: str) -> Any:
    """The lake resource writing under `prefix` on the job's S3 endpoint."""
    from etl_assets.resources.lake import S3Lake  # noqa: PLC0415

    s3 = job["s3"]
    return S3Lake(bucket=s3["bucket"], prefix=prefix, endpoint_url=s3["url"], region="us-east-1")


def lake_resources(job: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The lake and its IO manager, under the keys the assets use."""
    from etl_assets.components.table_assets import lake_resources as bound  # noqa: PLC0415

    return dict(bound(lake(job, prefix)))


def environment(job: dict[str, Any]) -> None:
    """The AWS chain's variables for the local endpoint."""
    s3 = job["s3"]
    os.environ.update(
        AWS_ACCESS_KEY_ID=s3["key"],
        AWS_SECRET_ACCESS_KEY=s3["secret"],
        AWS_REGION="us-east-1",
    )


def ours(job: dict[str, Any]) -> dict[str, Any]:
    """(b) Our extraction: the Postgres IO manager's read, then the lake's load, outside Dagster."""
    return _load(job, f"ours/{job['run']}")


def ours_two_sessions(job: dict[str, Any]) -> dict[str, Any]:
    """(b) The same with `sessions_per_load: 2`: the counts are taken alongside the rows."""
    return _load(job, f"ours2/{job['run']}", sessions_per_load=2)


def ours_readers_2(job: dict[str, Any]) -> dict[str, Any]:
    """(b) The same with `readers_per_load: 2`: two sessions of the snapshot stream the rows."""
    return _load(job, f"ours_r2/{job['run']}", readers_per_load=2)


def ours_readers_4(job: dict[str, Any]) -> dict[str, Any]:
    """(b) The same with `readers_per_load: 4`."""
    return _load(job, f"ours_r4/{job['run']}", readers_per_load=4)


def ours_windows(job: dict[str, Any]) -> dict[str, Any]:
    """Thirty daily windows in one load, as plain Parquet objects; each window's publish time."""
    daily = {**job, "window": {**job["window"], "grain": "daily"}}
    return _load(daily, f"windows/{job['run']}", (DAYS[0], DAYS[-1]))


def ours_windows_readers_2(job: dict[str, Any]) -> dict[str, Any]:
    """The thirty daily windows with `readers_per_load: 2`: each session every other window."""
    daily = {**job, "window": {**job["window"], "grain": "daily"}}
    return _load(daily, f"windows_r2/{job['run']}", (DAYS[0], DAYS[-1]), readers_per_load=2)


def ours_iceberg_windows(job: dict[str, Any]) -> dict[str, Any]:
    """The same thirty windows committed to an Iceberg table; each window's publish and commit.

    The SQL catalog lives on the same Postgres server, a fresh catalog database each time.
    """
    import psycopg  # noqa: PLC0415

    from etl_assets.lib.table.spec import LakeFormat  # noqa: PLC0415
    from etl_assets.resources.catalog import IcebergCatalog  # noqa: PLC0415

    database = f"iceberg_{job['run'].replace('-', '_')}"
    with psycopg.connect(job["conninfo"], autocommit=True) as connection:
        name = sql.Identifier(database)
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        connection.execute(sql.SQL("CREATE DATABASE {}").format(name))
    catalog = IcebergCatalog(uri=job["catalog_server"] + database)
    daily = {**job, "window": {**job["window"], "grain": "daily"}}
    return _load(daily, f"iceberg/{job['run']}", (DAYS[0], DAYS[-1]), LakeFormat.ICEBERG, catalog)


def _load(
    job: dict[str, Any],
    prefix: str,
    partitions: tuple[str, str] | None = None,
    lake_format: Any = None,
    catalog: Any = None,
    *,
    sessions_per_load: int = 1,
    readers_per_load: int = 1,
) -> dict[str, Any]:
    """Read the job's window (or a range of partitions) and load it, timing each window."""
    import dagster as dg  # noqa: PLC0415

    from etl_assets.components.table_assets import (  # noqa: PLC0415
        build_table_assets,
        source_asset_key,
    )
    from etl_assets.lib.load import RefusedWindow, load_windows  # noqa: PLC0415
    from etl_assets.lib.table.spec import LakeFormat  # noqa: PLC0415
    from etl_assets.resources.postgres import PostgresSource, PostgresWindowIOManager  # noqa: PLC0415

    environment(job)
    spec = table_spec(job)
    built = build_table_assets(BENCH_SOURCE, spec, None)
    reader = PostgresWindowIOManager(
        source=PostgresSource(
            dsn=job["conninfo"],
            sessions_per_load=sessions_per_load,
            readers_per_load=readers_per_load,
        )
    )
    writer = lake(job, prefix)
    if catalog is not None:
        writer = writer.model_copy(update={"iceberg": catalog})
    windows: list[dict[str, float]] = []

    # The input context a run hands the IO manager, built before the clock starts: in a run
    # Dagster has it ready, and building it outside one loads Dagster's resource machinery.
    context = (
        dg.build_input_context(
            asset_key=source_asset_key(BENCH_SOURCE, spec),
            asset_partition_key_range=dg.PartitionKeyRange(*partitions),
            asset_partitions_def=built.partitions_def,
        )
        if partitions
        else dg.build_input_context(
            asset_key=source_asset_key(BENCH_SOURCE, spec),
            partition_key=job["window"]["key"],
            asset_partitions_def=built.partitions_def,
        )
    )

    def work() -> int:
        extract = reader.load_input(context).table(spec, reader=built.raw.key.to_user_string())
        target = writer.target(
            built.raw.key.path,
            spec.hive_partition_name,
            job["run"],
            lake_format or LakeFormat.PARQUET,
        )
        rows = 0
        for outcome in load_windows(
            extract,
            target,
            writer.parquet_settings(),
            name=built.raw.key.to_user_string(),
            hive_name=spec.hive_partition_name,
            say=lambda _: None,
        ):
            if isinstance(outcome, RefusedWindow):
                raise outcome.error
            published = outcome.published
            rows += published.file.rows
            windows.append(
                {
                    "publish": published.seconds - published.commit_seconds,
                    "commit": published.commit_seconds,
                }
            )
        assert partitions is not None or rows == job["window"]["rows"]
        return rows

    return {**_timed(work, job, prefix), "windows": windows}


def _materialize(job: dict[str, Any], prefix: str, partitions: list[list[str]]) -> dict[str, Any]:
    import dagster as dg  # noqa: PLC0415

    from etl_assets.components.table_assets import (  # noqa: PLC0415
        build_table_assets,
        postgres_io_manager_key,
    )
    from etl_assets.resources.postgres import PostgresSource, PostgresWindowIOManager  # noqa: PLC0415

    environment(job)
    spec = table_spec(job)
    built = build_table_assets(BENCH_SOURCE, spec, None)
    resources = {
        postgres_io_manager_key(BENCH_SOURCE): PostgresWindowIOManager(
            source=PostgresSource(dsn=job["conninfo"])
        ),
        **lake_resources(job, prefix),
    }

    with dg.DagsterInstance.ephemeral() as instance:

        def work() -> int:
            for first, last in partitions:
                tags = {}
                if first != last:
                    tags = {
                        "dagster/asset_partition_range_start": first,
                        "dagster/asset_partition_range_end": last,
                    }
                result = dg.materialize(
                    [built.source, built.raw],
                    partition_key=first if first == last else None,
                    tags=tags,
                    instance=instance,
                    resources=resources,
                    selection=[built.raw.key],
                )
                assert result.success
            return job["window"]["rows"]

        return _timed(work, job, prefix)


def dagster_run(job: dict[str, Any]) -> dict[str, Any]:
    """(c) The same window as one Dagster materialization (in-process run, ephemeral instance)."""
    key = job["window"]["key"]
    return _materialize(job, f"dagster/{job['run']}", [[key, key]])


def dagster_cli(job: dict[str, Any]) -> dict[str, Any]:
    """(c) The same window as a run launched the way a deployment runs it: a new process.

    `dagster asset materialize` starts Python, loads the definitions and runs the step with
    Dagster's default executor, on a throwaway dagster-postgres instance. The wall time covers
    all of it; the peak RSS is the largest of the processes involved.
    """
    return _launched(job, f"dagster_cli/{job['run']}", ["--partition", job["window"]["key"]])


def dagster_cli_range(job: dict[str, Any]) -> dict[str, Any]:
    """The 30 daily partitions as one launched range run (`--partition-range`)."""
    daily = {**job, "window": {**job["window"], "grain": "daily"}}
    span = f"{DAYS[0]}...{DAYS[-1]}"
    return _launched(daily, f"dagster_cli_range/{job['run']}", ["--partition-range", span])


def _launched(job: dict[str, Any], prefix: str, partitions: list[str]) -> dict[str, Any]:
    """One `dagster asset materialize` process on a fresh dagster-postgres instance.

    The instance's database is created and migrated before the clock, as a deployment's exists
    before its runs; the events the run stored are counted after it.
    """
    import subprocess  # noqa: PLC0415
    import tempfile  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    import psycopg  # noqa: PLC0415
    from psycopg.conninfo import make_conninfo  # noqa: PLC0415

    database = f"dagster_{job['run'].replace('-', '_')}"
    with psycopg.connect(job["conninfo"], autocommit=True) as connection:
        name = sql.Identifier(database)
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        connection.execute(sql.SQL("CREATE DATABASE {}").format(name))
    instance_conninfo = make_conninfo(job["conninfo"], dbname=database)
    home = Path(tempfile.mkdtemp(prefix="bench-dagster-home-"))
    # psycopg2's scheme: dagster-postgres does not work with SQLAlchemy's psycopg 3 default.
    storage = {"postgres": {"postgres_url": job["catalog_server"] + database}}
    (home / "dagster.yaml").write_text(
        json.dumps({"telemetry": {"enabled": False}, "storage": storage})
    )
    variables = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "ETL_ASSETS_BENCH_JOB": json.dumps({**job, "prefix": prefix}),
    }
    executable = Path(sys.executable).parent / "dagster"
    subprocess.run(  # noqa: S603
        [str(executable), "instance", "migrate"], env=variables, check=True, capture_output=True
    )
    command = [
        str(executable), "asset", "materialize", "-m", "bench.defs",
        "--select", f"raw/bench/bench/{job['table']}", *partitions,
    ]  # fmt: skip
    peak_kb = 0
    tree_peak_mb = 0.0

    def work() -> int:
        nonlocal peak_kb, tree_peak_mb
        process = subprocess.Popen(  # noqa: S603 - our own command line
            command, env=variables, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        with TreeMemory(process.pid) as tree:
            assert process.stderr is not None
            errors = process.stderr.read()
            _, status, usage = os.wait4(process.pid, 0)
        peak_kb, tree_peak_mb = usage.ru_maxrss, tree.peak_mb
        if os.waitstatus_to_exitcode(status):
            raise RuntimeError(errors.decode()[-2000:])
        return job["window"]["rows"]

    result = _timed(work, job, prefix)
    with psycopg.connect(instance_conninfo) as connection:
        stored = connection.execute("SELECT count(*) FROM event_logs").fetchone()
    # The children's peak, as the kernel counted it (the largest of the run's processes), and
    # the peak of the whole process tree's resident memory, summed over its processes.
    return {
        **result,
        "child_rss_mb": peak_kb / 1024,
        "tree_rss_mb": tree_peak_mb,
        "events": int(stored[0]) if stored else 0,
    }


def definitions_load(job: dict[str, Any]) -> dict[str, Any]:
    """What every launched run pays before its work: start Python and load the definitions.

    The same definitions `dagster_cli` loads (`bench.defs`), in a new process; no instance,
    no run. A launched run's fixed cost is compared with this.
    """
    import subprocess  # noqa: PLC0415

    variables = {**os.environ, "ETL_ASSETS_BENCH_JOB": json.dumps({**job, "prefix": "defs"})}
    command = [sys.executable, "-c", "import bench.defs"]

    def work() -> int:
        subprocess.run(command, env=variables, check=True, capture_output=True)  # noqa: S603
        return 0

    return _timed(work, job, None)


class TreeMemory:
    """The peak resident memory of a process and all its descendants, summed.

    Sampled on a thread every 20 ms while in the `with` block (Linux: read from /proc).
    """

    def __init__(self, root: int) -> None:
        self._root = root
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_mb = max(self.peak_mb, tree_rss_mb(self._root))


DAYS = [f"2026-09-{d:02d}" for d in range(1, 31)]


def backfill_single_run(job: dict[str, Any]) -> dict[str, Any]:
    """A 30-partition daily backfill as one run (the default backfill policy)."""
    daily = {**job, "window": {**job["window"], "grain": "daily"}}
    return _materialize(daily, f"backfill1/{job['run']}", [[DAYS[0], DAYS[-1]]])


def backfill_run_per_partition(job: dict[str, Any]) -> dict[str, Any]:
    """The same backfill as 30 runs, one per partition."""
    daily = {**job, "window": {**job["window"], "grain": "daily"}}
    return _materialize(daily, f"backfill30/{job['run']}", [[d, d] for d in DAYS])


def pandas_chunks(job: dict[str, Any]) -> dict[str, Any]:
    """(d) The naive baseline: pandas `read_sql` in chunks, each chunk `to_parquet` on S3."""
    # The peers are imported by name: the `bench` group installs them, the others do not.
    pd: Any = importlib.import_module("pandas")
    import pyarrow.fs as pafs  # noqa: PLC0415
    import sqlalchemy  # noqa: PLC0415
    from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415

    parts = conninfo_to_dict(job["conninfo"])
    engine = sqlalchemy.create_engine(
        f"postgresql+psycopg2://{parts['user']}:{parts['password']}@{parts['host']}:"
        f"{parts['port']}/{parts['dbname']}"
    )
    endpoint = urlparse(job["s3"]["url"])
    filesystem = pafs.S3FileSystem(
        access_key=job["s3"]["key"],
        secret_key=job["s3"]["secret"],
        endpoint_override=endpoint.netloc,
        scheme="http",
        region="us-east-1",
    )
    prefix = f"pandas/{job['run']}"

    def work() -> int:
        rows = 0
        with engine.connect().execution_options(stream_results=True) as connection:
            chunks = pd.read_sql(
                sqlalchemy.text(_window_query(job).as_string()), connection, chunksize=100_000
            )
            for index, chunk in enumerate(chunks):
                # Types pandas cannot write to Parquet as they come (uuid, dict) become text.
                for column in ("ref", "payload"):
                    chunk[column] = chunk[column].astype(str)
                chunk.to_parquet(
                    f"{job['s3']['bucket']}/{prefix}/part-{index:05d}.parquet",
                    filesystem=filesystem,
                    compression="zstd",
                    index=False,
                )
                rows += len(chunk)
        return rows

    return _timed(work, job, prefix)


def _duckdb_extension(name: str, entrypoint: str | None = None) -> str:
    """The extension file shipped by the `duckdb-extension-<name>` wheel, loadable offline.

    DuckDB finds an extension's entry point from the file name, so an extension whose internal
    name differs (postgres is `postgres_scanner`) is linked under that name first.
    """
    import importlib  # noqa: PLC0415
    import tempfile  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    import duckdb  # noqa: PLC0415

    package = importlib.import_module(f"duckdb_extension_{name}")
    root = Path(str(package.__file__)).parent / "extensions" / f"v{duckdb.__version__}"
    shipped = root / f"{name}.duckdb_extension"
    if entrypoint is None:
        return str(shipped)
    linked = Path(tempfile.mkdtemp()) / f"{entrypoint}.duckdb_extension"
    linked.symlink_to(shipped)
    return str(linked)


def duckdb_scanner(job: dict[str, Any]) -> dict[str, Any]:
    """(e) DuckDB's postgres scanner, `COPY ... TO 's3://...' (FORMAT parquet)`."""
    import duckdb  # noqa: PLC0415
    from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415

    connection = duckdb.connect()
    for extension in (
        _duckdb_extension("postgres", "postgres_scanner"),
        _duckdb_extension("httpfs"),
    ):
        connection.load_extension(extension)
    endpoint = urlparse(job["s3"]["url"])
    connection.execute(
        "CREATE SECRET (TYPE s3, KEY_ID ?, SECRET ?, REGION 'us-east-1', ENDPOINT ?,"
        " URL_STYLE 'path', USE_SSL false)",
        [job["s3"]["key"], job["s3"]["secret"], endpoint.netloc],
    )
    parts = conninfo_to_dict(job["conninfo"])
    libpq = " ".join(f"{k}={v}" for k, v in parts.items())
    connection.execute(
        sql.SQL("ATTACH {} AS pg (TYPE postgres, READ_ONLY)").format(sql.Literal(libpq)).as_string()
    )
    prefix = f"duckdb/{job['run']}"
    copy = sql.SQL("COPY ({select}) TO {target} (FORMAT parquet, COMPRESSION zstd)").format(
        select=_window_query(job, catalog="pg"),
        target=sql.Literal(f"s3://{job['s3']['bucket']}/{prefix}/data.parquet"),
    )

    def work() -> int:
        connection.execute(copy.as_string())
        return job["window"]["rows"]

    return _timed(work, job, prefix)


def _dlt(job: dict[str, Any], backend: Literal["connectorx", "pyarrow"]) -> dict[str, Any]:
    import tempfile  # noqa: PLC0415

    s3 = job["s3"]
    os.environ.update(
        {
            "DESTINATION__FILESYSTEM__CREDENTIALS__AWS_ACCESS_KEY_ID": s3["key"],
            "DESTINATION__FILESYSTEM__CREDENTIALS__AWS_SECRET_ACCESS_KEY": s3["secret"],
            "DESTINATION__FILESYSTEM__CREDENTIALS__ENDPOINT_URL": s3["url"],
            "DESTINATION__FILESYSTEM__CREDENTIALS__REGION_NAME": "us-east-1",
            "RUNTIME__LOG_LEVEL": "WARNING",
            "DLT_DATA_DIR": tempfile.mkdtemp(prefix="dlt-data-"),
        }
    )
    dlt: Any = importlib.import_module("dlt")
    sql_table: Any = importlib.import_module("dlt.sources.sql_database").sql_table
    from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415

    parts = conninfo_to_dict(job["conninfo"])
    url = (
        f"postgresql://{parts['user']}:{parts['password']}@{parts['host']}:{parts['port']}"
        f"/{parts['dbname']}"
    )
    window = job["window"]
    prefix = f"dlt_{backend}/{job['run']}"

    def where(query: Any, table: Any) -> Any:
        start = dt.datetime.fromisoformat(window["start"])
        end = dt.datetime.fromisoformat(window["end"])
        return query.where(table.c.created_at >= start).where(table.c.created_at < end)

    def work() -> int:
        source = sql_table(
            credentials=url,
            schema="bench",
            table=job["table"],
            backend=backend,
            query_adapter_callback=where,
            chunk_size=100_000,
        )
        pipeline = dlt.pipeline(
            pipeline_name=f"bench_{backend}_{job['run'].replace('/', '_')}",
            destination=dlt.destinations.filesystem(bucket_url=f"s3://{s3['bucket']}/{prefix}"),
            dataset_name="bench",
            pipelines_dir=tempfile.mkdtemp(prefix="dlt-pipelines-"),
        )
        pipeline.run(source, loader_file_format="parquet")
        return window["rows"]

    return _timed(work, job, prefix)


def dlt_connectorx(job: dict[str, Any]) -> dict[str, Any]:
    """(e) dlt `sql_database` with the connectorx backend, to Parquet on S3."""
    return _dlt(job, "connectorx")


def dlt_pyarrow(job: dict[str, Any]) -> dict[str, Any]:
    """(e) dlt `sql_database` with its default pyarrow backend, to Parquet on S3."""
    return _dlt(job, "pyarrow")


METHODS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "copy_drain": copy_drain,
    "ours": ours,
    "ours_two_sessions": ours_two_sessions,
    "ours_readers_2": ours_readers_2,
    "ours_readers_4": ours_readers_4,
    "ours_windows_readers_2": ours_windows_readers_2,
    "dagster_cli_range": dagster_cli_range,
    "ours_windows": ours_windows,
    "ours_iceberg_windows": ours_iceberg_windows,
    "dagster": dagster_run,
    "dagster_cli": dagster_cli,
    "definitions_load": definitions_load,
    "pandas": pandas_chunks,
    "duckdb": duckdb_scanner,
    "dlt_connectorx": dlt_connectorx,
    "dlt_pyarrow": dlt_pyarrow,
    "backfill_single_run": backfill_single_run,
    "backfill_run_per_partition": backfill_run_per_partition,
}


if __name__ == "__main__":
    main()
