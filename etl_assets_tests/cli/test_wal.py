"""`etl-assets wal setup / status / drop` against a real Postgres with `wal_level=logical`."""

from __future__ import annotations

import argparse
import io
import uuid

import pytest

from etl_assets.cli.wal import add_wal_arguments, run_wal
from etl_assets.components.postgres_tables import (
    DeclaredTables,
    PostgresTablesComponent,
    SourceModel,
)
from etl_assets.components.wal import WalSettings
from etl_assets.lib.table.spec import IncrementalSpec
from etl_assets_tests.support import query, revised, run_sql, spec


def component(slot: str, *, wal: bool = True) -> PostgresTablesComponent:
    table = spec(columns=("id", "created_at", "v"), end=None)
    if wal:
        table = revised(table, incremental=IncrementalSpec.model_validate({"mode": "wal"}))
    return PostgresTablesComponent(
        source=SourceModel(
            name="shop",
            dsn_env="WAL_CLI_DSN",
            wal=WalSettings(slot=slot, publication=f"{slot}_pub"),
        ),
        tables=DeclaredTables([table]),
    )


def wal(action: str, source: PostgresTablesComponent) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    add_wal_arguments(parser)
    out = io.StringIO()
    status = run_wal(parser.parse_args([action]), out, [source])
    return status, out.getvalue()


def test_setup_status_and_drop(
    source_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WAL_CLI_DSN", source_db)
    run_sql(source_db, "CREATE TABLE events (id int PRIMARY KEY, created_at timestamptz, v text)")
    slot = f"cli_{uuid.uuid4().hex[:12]}"
    declared = component(slot)
    try:
        status, out = wal("setup", declared)
        assert status == 1
        assert f"created publication {slot}_pub for public.events" in out
        assert f"created logical replication slot {slot} (pgoutput)" in out
        assert "missing: public.events's replica identity does not carry 'created_at'" in out
        run_sql(source_db, "ALTER TABLE events REPLICA IDENTITY FULL")
        status, out = wal("status", declared)
        assert status == 0
        assert f"slot {slot}: " in out
        assert "MB of WAL retained" in out
        assert "ready: the WAL sensor can read the slot" in out
        pubviaroot = query(
            source_db, "SELECT pubviaroot FROM pg_publication WHERE pubname = %s", (f"{slot}_pub",)
        )
        assert pubviaroot == [(True,)]
    finally:
        status, out = wal("drop", declared)
    assert status == 0
    assert f"dropped slot {slot}" in out
    assert f"dropped publication {slot}_pub" in out
    assert (
        query(source_db, "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)) == []
    )
    status, out = wal("status", declared)
    assert status == 1
    assert f"slot {slot} does not exist: run `etl-assets wal setup`" in out
    # A source with no wal table has nothing to set up.
    assert wal("setup", component(slot, wal=False))[0] == 2
    assert "no table of any declared source" in capsys.readouterr().err
