"""Real services for the tests: a Postgres server, an S3 endpoint, a Dagster instance.

Postgres is an embedded server started here (see `etl_assets.devstack.postgres`), or the server
named by `ETL_ASSETS_TEST_PG_DSN` (a superuser libpq connection string). S3 is moto's server
on 127.0.0.1. The Dagster instance stores runs and events in Postgres (dagster-postgres).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Generator
from pathlib import Path

import dagster as dg
import pytest

from etl_assets.devstack.postgres import (
    EmbeddedPostgres,
    ServerAddress,
    create_database,
    external_server,
)
from etl_assets.devstack.s3 import LocalS3, S3Endpoint, create_bucket
from etl_assets_tests.support import Pipeline

EXTERNAL_PG_ENV = "ETL_ASSETS_TEST_PG_DSN"
SERVICE_FIXTURES = frozenset(
    {"pg_server", "source_db", "s3_endpoint", "bucket", "instance", "catalog_uri"}
)
"""Fixtures that start or need a live Postgres or S3 endpoint."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a live service `services`: `-m "not services"` leaves the
    millisecond ones (`make test-unit`)."""
    for item in items:
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Generator[ServerAddress]:
    """A Postgres server for the whole session (one per xdist worker)."""
    external = os.environ.get(EXTERNAL_PG_ENV)
    if external:
        yield external_server(external)
        return
    server = EmbeddedPostgres(tmp_path_factory.mktemp("postgres"))
    # Two-phase commit on, so the sensor tests can hold a prepared transaction open; logical
    # decoding on, for the WAL tests.
    server.start(extra_settings=["-c max_prepared_transactions=8"])
    try:
        yield server.address
    finally:
        server.stop()


@pytest.fixture
def source_db(pg_server: ServerAddress) -> str:
    """A fresh, empty database on the server; returns its superuser conninfo."""
    return create_database(pg_server, f"src_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def catalog_uri(pg_server: ServerAddress) -> str:
    """A fresh database on the server for an Iceberg SQL catalog; its SQLAlchemy URL."""
    name = f"iceberg_{uuid.uuid4().hex[:12]}"
    create_database(pg_server, name)
    return pg_server.url(name, driver="postgresql+psycopg2")


@pytest.fixture(scope="session")
def s3_endpoint() -> Generator[S3Endpoint]:
    """moto's S3 server on 127.0.0.1 for the session."""
    with LocalS3() as endpoint:
        yield endpoint


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """No test sees the machine's AWS settings; S3 tests see only the local endpoint's."""
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-access-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret-key")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    if "s3_endpoint" in request.fixturenames:
        endpoint: S3Endpoint = request.getfixturevalue("s3_endpoint")
        for name, value in endpoint.environment().items():
            monkeypatch.setenv(name, value)


@pytest.fixture
def bucket(s3_endpoint: S3Endpoint) -> str:
    """A fresh, empty bucket."""
    name = f"lake-{uuid.uuid4().hex[:12]}"
    create_bucket(s3_endpoint, name)
    return name


@pytest.fixture
def pipeline(
    source_db: str, instance: dg.DagsterInstance, s3_endpoint: S3Endpoint, bucket: str
) -> Pipeline:
    """An empty source database, an empty bucket and the instance, to run assets against."""
    return Pipeline(instance, source_db, bucket, s3_endpoint)


@pytest.fixture(scope="session")
def instance_database(pg_server: ServerAddress, worker_id: str) -> str:
    """The database holding this xdist worker's test Dagster instance storage.

    One per worker, so that workers sharing an external server never see each other's runs.
    """
    name = f"dagster_test_{worker_id}"
    create_database(pg_server, name)
    return pg_server.url(name, driver="postgresql+psycopg2")


@pytest.fixture
def instance(instance_database: str, tmp_path: Path) -> Generator[dg.DagsterInstance]:
    """A Dagster instance on dagster-postgres storage, empty at the start of each test.

    The storage database belongs to one xdist worker, whose tests run one at a time; wiping
    its runs and event log keeps one test's runs and materializations out of the next one's
    counts.
    """
    overrides = {"storage": {"postgres": {"postgres_url": instance_database}}}
    with dg.instance_for_test(overrides=overrides, temp_dir=str(tmp_path)) as test_instance:
        test_instance.wipe()
        yield test_instance
