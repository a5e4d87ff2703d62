"""The Postgres resource and IO manager: settings, and secrets kept out of everything recorded."""

from __future__ import annotations

import uuid

import dagster as dg
import pytest
from psycopg.conninfo import conninfo_to_dict

from etl_assets.components.table_assets import build_table_assets, postgres_io_manager_key
from etl_assets.devstack.postgres import ServerAddress
from etl_assets.resources.postgres import PostgresSource, PostgresWindowIOManager
from etl_assets_tests.support import SOURCE, Pipeline, run_sql, spec


def test_ssl_settings_override_the_dsn_and_the_password_stays_separate() -> None:
    source = PostgresSource(
        dsn="postgresql://reader@db.internal:6432/shop?sslmode=prefer",
        password="pw-not-in-dsn",
        sslmode="verify-full",
        sslrootcert="/etc/ssl/ca.pem",
    )
    settings = source.connection_settings()
    parts = conninfo_to_dict(settings.conninfo)
    assert parts["sslmode"] == "verify-full"
    assert parts["sslrootcert"] == "/etc/ssl/ca.pem"
    assert "password" not in parts
    assert settings.describe() == "reader@db.internal:6432/shop"
    session = conninfo_to_dict(settings.session_conninfo("raw/x/2026-10-01"))
    assert session["password"] == "pw-not-in-dsn"
    assert session["application_name"] == "raw/x/2026-10-01"
    assert "statement_timeout=3600000" in str(session["options"])


def test_the_password_never_reaches_the_event_log(
    pipeline: Pipeline, pg_server: ServerAddress, monkeypatch: pytest.MonkeyPatch
) -> None:
    source_db = pipeline.conninfo
    instance = pipeline.instance
    password = "Sup3r-Secret-Reader-Pw"
    run_sql(source_db, "CREATE TABLE events (id int PRIMARY KEY, created_at timestamptz NOT NULL)")
    run_sql(source_db, "INSERT INTO events VALUES (1, '2026-10-02 10:00+00')")
    run_sql(
        source_db,
        f"DROP ROLE IF EXISTS pw_reader; CREATE ROLE pw_reader LOGIN PASSWORD '{password}'",
    )
    run_sql(source_db, "GRANT SELECT ON events TO pw_reader")
    monkeypatch.setenv("TEST_READER_PASSWORD", password)
    dbname = conninfo_to_dict(source_db)["dbname"]
    dsn = f"postgresql://pw_reader@{pg_server.host}:{pg_server.port}/{dbname}"
    table = spec(columns=("id", "created_at"))
    built = build_table_assets(SOURCE, table, None)
    bound = pipeline.resources(table)
    bound[postgres_io_manager_key(SOURCE)] = PostgresWindowIOManager(
        source=PostgresSource(dsn=dsn, password=dg.EnvVar("TEST_READER_PASSWORD"))
    )
    result = dg.materialize(
        [built.source, built.raw],
        partition_key="2026-10-02",
        instance=instance,
        resources=bound,
        selection=[built.raw.key],
    )
    assert result.success
    recorded = [record.to_json() for record in instance.all_logs(result.run_id)]
    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    assert recorded
    assert not [entry for entry in recorded if password in entry]
    assert password not in str(run.run_config)
    assert password not in str(run.tags)


def test_libpq_variables_fill_in_what_the_dsn_leaves_out(
    pipeline: Pipeline, pg_server: ServerAddress, monkeypatch: pytest.MonkeyPatch
) -> None:
    source_db = pipeline.conninfo
    run_sql(source_db, "CREATE TABLE events (id int PRIMARY KEY, created_at timestamptz NOT NULL)")
    run_sql(source_db, "INSERT INTO events VALUES (1, '2026-10-02 10:00+00')")
    role = f"env_reader_{uuid.uuid4().hex[:8]}"
    run_sql(
        source_db,
        f"CREATE ROLE {role} LOGIN PASSWORD 'env-reader-pw'; GRANT SELECT ON events TO {role}",
    )
    # The DSN names only the host; user, password and database come from libpq's variables.
    monkeypatch.setenv("PGUSER", role)
    monkeypatch.setenv("PGPASSWORD", "env-reader-pw")
    monkeypatch.setenv("PGDATABASE", str(conninfo_to_dict(source_db)["dbname"]))
    monkeypatch.setenv("PGPORT", str(pg_server.port))
    table = spec(columns=("id", "created_at"))
    result = pipeline.materialize(
        table, partition="2026-10-02", source={"dsn": f"host={pg_server.host}"}
    )
    assert result.success
    assert pipeline.metadata(table, "2026-10-02")["dagster/row_count"] == 1
