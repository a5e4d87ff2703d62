"""The whole local stack: embedded Postgres (source + Dagster instance), S3 endpoint, env vars.

State lives in one directory (`.devstack/` for `make demo` and `make dev`) and is reset every
time a stack starts: the source data, the lake and the Dagster instance always begin fresh.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Generator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from pyiceberg.catalog import Catalog, load_catalog

from etl_assets.components.postgres_tables import declared_sources
from etl_assets.devstack.postgres import EmbeddedPostgres
from etl_assets.devstack.s3 import LocalS3, S3Endpoint, create_bucket
from etl_assets.devstack.seed import READER_ROLE, seed_demo
from etl_assets.lib.postgres.session import ConnectionSettings
from etl_assets.lib.postgres.wal_admin import setup_wal

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SOURCE_DATABASE = "shop"
INSTANCE_DATABASE = "dagster"
CATALOG_DATABASE = "iceberg"
"""The Iceberg SQL catalog's database (tables declared `format: iceberg`)."""
LAKE_BUCKET = "etl-lake"
LAKE_PREFIX = "lake"


@dataclass(frozen=True)
class DevStack:
    """A running stack and the environment that points the project at it."""

    base_dir: Path
    postgres: EmbeddedPostgres
    s3: S3Endpoint
    environment: Mapping[str, str]
    dagster_home: Path
    wal_sensors: tuple[str, ...] = ()
    """The WAL sensors whose slots the stack set up, ready to be turned on."""

    def source_conninfo(self) -> str:
        """Superuser connection to the demo source database."""
        return self.postgres.address.conninfo(SOURCE_DATABASE)

    def iceberg_catalog(self) -> Catalog:
        """The stack's Iceberg SQL catalog, as an outside reader opens it."""
        return load_catalog(
            "etl_assets",
            type="sql",
            uri=self.environment["ETL_ICEBERG_CATALOG_URI"],
            warehouse=f"s3://{LAKE_BUCKET}/{LAKE_PREFIX}/iceberg",
            **{
                "s3.endpoint": self.s3.url,
                "s3.region": self.s3.region,
                "s3.access-key-id": self.s3.access_key,
                "s3.secret-access-key": self.s3.secret_key,
            },
        )

    def process_environment(self) -> dict[str, str]:
        """`os.environ` with the stack's variables on top, for child processes."""
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        return {**inherited, **self.environment}


def stack_environment(
    postgres: EmbeddedPostgres, s3: S3Endpoint, reader_password: str, dagster_home: Path
) -> dict[str, str]:
    """Every variable the project reads, as `.env.example` documents them."""
    address = postgres.address
    return {
        "ETL_SHOP_PG_DSN": (
            f"postgresql://{READER_ROLE}@{address.host}:{address.port}/{SOURCE_DATABASE}"
            "?sslmode=disable"
        ),
        "ETL_SHOP_PG_PASSWORD": reader_password,
        "ETL_LAKE_BUCKET": LAKE_BUCKET,
        "ETL_LAKE_PREFIX": LAKE_PREFIX,
        "DAGSTER_HOME": str(dagster_home),
        # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3, which dagster-postgres' run
        # storage cannot use (NOTIFY with a bind parameter); psycopg2 is what it is built on.
        "ETL_ASSETS_DAGSTER_PG_URL": address.url(INSTANCE_DATABASE, driver="postgresql+psycopg2"),
        "ETL_ICEBERG_CATALOG_URI": address.url(CATALOG_DATABASE, driver="postgresql+psycopg2"),
        **s3.environment(),
    }


@contextmanager
def environment_applied(environment: Mapping[str, str]) -> Generator[None]:
    """Set `environment` in this process (AWS_* replaced wholesale); restore it afterwards."""
    saved = dict(os.environ)
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        del os.environ[name]
    os.environ.update(environment)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def set_up_wal(conninfo: str) -> list[str]:
    """Create the publication and slot of each declared source with WAL tables.

    As `etl-assets wal setup` does, by the superuser, who owns the demo tables. Returns the WAL
    sensors that can now be turned on, one line each.
    """
    ready: list[str] = []
    for component in declared_sources():
        wal = component.wal_source()
        if wal is not None:
            setup_wal(ConnectionSettings(conninfo=conninfo), wal.slot, wal.publication, wal.watched)
            names = ", ".join(t.name for t in wal.tables)
            ready.append(f"postgres_{wal.source}__wal (slot {wal.slot}: {names})")
    return ready


@contextmanager
def dev_stack(base_dir: Path, *, seed: bool = True) -> Generator[DevStack]:
    """Start everything in a fresh `base_dir`, with its environment applied to this process."""
    shutil.rmtree(base_dir, ignore_errors=True)
    base_dir.mkdir(parents=True)
    with ExitStack() as cleanup:
        postgres = cleanup.enter_context(EmbeddedPostgres(base_dir / "postgres"))
        s3 = cleanup.enter_context(LocalS3())
        postgres.create_database(SOURCE_DATABASE)
        postgres.create_database(INSTANCE_DATABASE)
        postgres.create_database(CATALOG_DATABASE)
        reader_password = secrets.token_urlsafe(18)
        if seed:
            seed_demo(postgres.address.conninfo(SOURCE_DATABASE), reader_password)
            wal_sensors = set_up_wal(postgres.address.conninfo(SOURCE_DATABASE))
        else:
            wal_sensors = []
        create_bucket(s3, LAKE_BUCKET)
        dagster_home = base_dir / "dagster_home"
        dagster_home.mkdir()
        # The repo's dagster.yaml is the instance config; DAGSTER_HOME only holds local files.
        (dagster_home / "dagster.yaml").symlink_to(PROJECT_ROOT / "dagster.yaml")
        environment = stack_environment(postgres, s3, reader_password, dagster_home)
        env_file = base_dir / "stack.env"
        env_file.write_text("".join(f"export {k}='{v}'\n" for k, v in environment.items()))
        env_file.chmod(0o600)
        cleanup.enter_context(environment_applied(environment))
        yield DevStack(
            base_dir=base_dir,
            postgres=postgres,
            s3=s3,
            environment=environment,
            dagster_home=dagster_home,
            wal_sensors=tuple(wal_sensors),
        )
