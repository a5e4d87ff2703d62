"""The YAML component: good declarations build assets, bad ones fail naming file, table, field."""

from __future__ import annotations

import textwrap
from collections.abc import Generator
from pathlib import Path

import dagster as dg
import pytest
from dagster.components.testing import DefsFolderSandbox, create_defs_folder_sandbox

from etl_assets.components.lake_maintenance import MAINTENANCE_CRON
from etl_assets.components.table_assets import lake_resources
from etl_assets.resources.lake import S3Lake
from etl_assets.resources.postgres import PostgresSource

GOOD_TABLE = """
    - schema: sales
      table: orders
      partition_column: placed_at
      grain: daily
      start: "2026-10-01"
      primary_key: [order_id]
      columns: [order_id, placed_at, total]
"""


def defs_yaml(tables: str, source: str = "{name: shop, dsn_env: SHOP_DSN}") -> str:
    return (
        "type: etl_assets.components.PostgresTablesComponent\n"
        "attributes:\n"
        f"  source: {source}\n"
        "  tables:\n" + textwrap.indent(textwrap.dedent(tables).strip("\n"), "    ") + "\n"
    )


@pytest.fixture
def sandbox() -> Generator[DefsFolderSandbox]:
    with create_defs_folder_sandbox() as folder:
        yield folder


def load(sandbox: DefsFolderSandbox, text: str) -> dg.Definitions:
    path = sandbox.defs_folder_path / "shop"
    path.mkdir(exist_ok=True)
    (path / "defs.yaml").write_text(text)
    with sandbox.build_all_defs() as defs:
        return defs


def load_error(sandbox: DefsFolderSandbox, text: str) -> str:
    with pytest.raises(Exception) as raised:  # noqa: PT011 - the chain is inspected below
        load(sandbox, text)
    messages: list[str] = []
    error: BaseException | None = raised.value
    while error is not None:
        messages.append(str(error))
        error = error.__cause__ or error.__context__
    return "\n".join(messages)


def test_a_declared_table_becomes_a_source_spec_and_a_raw_asset(sandbox: DefsFolderSandbox) -> None:
    lake = dg.Definitions(resources=lake_resources(S3Lake(bucket="lake")))
    defs = dg.Definitions.merge(load(sandbox, defs_yaml(GOOD_TABLE)), lake)
    specs = {s.key.to_user_string(): s for s in defs.resolve_all_asset_specs()}
    assert set(specs) == {"postgres/shop/sales/orders", "raw/shop/sales/orders"}
    raw = specs["raw/shop/sales/orders"]
    assert raw.kinds == {"postgres", "polars", "parquet", "s3"}
    assert [dep.asset_key.to_user_string() for dep in raw.deps] == ["postgres/shop/sales/orders"]
    assert raw.description is not None
    assert "Postgres `sales.orders`" in raw.description
    assert "[start, end)" in raw.description
    assert "raw/shop/sales/orders/day=<key>/part-00000.parquet" in raw.description
    columns = raw.metadata["dagster/column_schema"]
    assert isinstance(columns, dg.TableSchema)
    assert [c.name for c in columns.columns] == ["order_id", "placed_at", "total"]
    assert isinstance(raw.partitions_def, dg.TimeWindowPartitionsDefinition)
    assert raw.partitions_def.get_first_partition_key() == "2026-10-01"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (("grain: daily", "grain: fortnightly"), "field `grain`"),
        (("      columns: [order_id, placed_at, total]\n", ""), "field `columns` is required"),
        (("grain: daily", "grain: daily\n      colour: red"), "unknown field `colour`"),
        (('start: "2026-10-01"', 'start: "2026-10-01T12:00"'), "field `start`"),
        (
            ("timezone" if False else "grain: daily", "grain: daily\n      timezone: Mars/Base"),
            "field `timezone`",
        ),
        (("primary_key: [order_id]", "primary_key: [id]"), "field `primary_key`"),
        (("columns: [order_id, placed_at, total]", "columns: []"), "field `columns`"),
        (
            ("columns: [order_id, placed_at, total]", "columns: [order_id, day]"),
            "field `partition_name`",
        ),
        (("grain: daily", "grain: daily\n      preview_mask: [email]"), "field `preview_mask`"),
        (("grain: daily", "grain: daily\n      preview_rows: 500"), "field `preview_rows`"),
    ],
)
def test_a_bad_entry_fails_naming_the_file_the_table_and_the_field(
    sandbox: DefsFolderSandbox, change: tuple[str, str], field: str
) -> None:
    text = defs_yaml(GOOD_TABLE.replace(*change))
    message = load_error(sandbox, text)
    assert str(Path("defs") / "shop" / "defs.yaml") in message
    assert "table sales.orders" in message
    assert field in message


def test_a_bad_transform_path_fails_naming_the_file_the_table_and_the_field(
    sandbox: DefsFolderSandbox,
) -> None:
    text = defs_yaml(GOOD_TABLE + "      transform: no_such_package.transforms:clean\n")
    message = load_error(sandbox, text)
    assert str(Path("defs") / "shop" / "defs.yaml") in message
    assert "table sales.orders: field `transform`" in message
    assert "cannot import module 'no_such_package.transforms'" in message


def test_a_table_declared_twice_is_refused(sandbox: DefsFolderSandbox) -> None:
    assert "declared twice" in load_error(sandbox, defs_yaml(GOOD_TABLE + GOOD_TABLE))


def test_source_settings_are_validated(sandbox: DefsFolderSandbox) -> None:
    message = load_error(sandbox, defs_yaml(GOOD_TABLE, source="{name: Shop!, dsn_env: X}"))
    assert "name" in message
    assert "should match pattern" in message


def test_the_sessions_per_load_of_a_source_reach_its_reader(sandbox: DefsFolderSandbox) -> None:
    two = "{name: shop, dsn_env: SHOP_DSN, sessions_per_load: 2}"
    for source, sessions in (("{name: shop, dsn_env: SHOP_DSN}", 1), (two, 2)):
        resource = load(sandbox, defs_yaml(GOOD_TABLE, source=source)).resources
        reader = resource["postgres_shop_source"] if resource else None
        assert isinstance(reader, PostgresSource)
        assert reader.sessions_per_load == sessions
        settings = reader.model_copy(update={"dsn": "host=db"}).connection_settings()
        assert settings.sessions_per_load == sessions
    three = "{name: shop, dsn_env: SHOP_DSN, sessions_per_load: 3}"
    message = load_error(sandbox, defs_yaml(GOOD_TABLE, source=three))
    assert "sessions_per_load" in message
    assert "less than or equal to 2" in message


def test_the_readers_per_load_of_a_source_reach_its_reader(sandbox: DefsFolderSandbox) -> None:
    four = "{name: shop, dsn_env: SHOP_DSN, readers_per_load: 4}"
    for source, readers in (("{name: shop, dsn_env: SHOP_DSN}", 1), (four, 4)):
        resource = load(sandbox, defs_yaml(GOOD_TABLE, source=source)).resources
        reader = resource["postgres_shop_source"] if resource else None
        assert isinstance(reader, PostgresSource)
        settings = reader.model_copy(update={"dsn": "host=db"}).connection_settings()
        assert settings.readers_per_load == readers
    for wrong, complaint in (("0", "greater than or equal to 1"), ("9", "less than or equal to 8")):
        source = f"{{name: shop, dsn_env: SHOP_DSN, readers_per_load: {wrong}}}"
        message = load_error(sandbox, defs_yaml(GOOD_TABLE, source=source))
        assert "readers_per_load" in message
        assert complaint in message


def test_malformed_yaml_fails_naming_the_file_and_the_line(sandbox: DefsFolderSandbox) -> None:
    text = defs_yaml(GOOD_TABLE).replace("      grain: daily\n", "      grain: [daily\n")
    message = load_error(sandbox, text)
    assert str(Path("defs") / "shop" / "defs.yaml") in message
    assert "line" in message.lower()


LAKE_DEFS = """
import dagster as dg

from etl_assets.components.table_assets import lake_resources
from etl_assets.resources.lake import S3Lake
from etl_assets.resources.postgres import PostgresSource


@dg.definitions
def lake() -> dg.Definitions:
    return dg.Definitions(resources=lake_resources(S3Lake(bucket="lake")))
"""


def load_with_lake(sandbox: DefsFolderSandbox, text: str) -> dg.Definitions:
    """The component's definitions beside the lake's resources, as the project has them."""
    (sandbox.defs_folder_path / "lake.py").write_text(LAKE_DEFS)
    return load(sandbox, text)


def test_a_source_with_iceberg_tables_has_a_stopped_daily_maintenance_schedule(
    sandbox: DefsFolderSandbox,
) -> None:
    iceberg = GOOD_TABLE.replace("table: orders", "table: payments") + "      format: iceberg\n"
    defs = load_with_lake(sandbox, defs_yaml(GOOD_TABLE + iceberg))
    schedule = defs.resolve_schedule_def("shop_iceberg_maintenance_daily")
    assert schedule.cron_schedule == MAINTENANCE_CRON
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    job = defs.resolve_job_def("shop_iceberg_maintenance")
    assert job.description is not None
    assert "raw_shop.sales__payments" in job.description
    assert "sales__orders" not in job.description


def test_a_source_format_applies_to_each_table_that_declares_none(
    sandbox: DefsFolderSandbox,
) -> None:
    source = "{name: shop, dsn_env: SHOP_DSN, format: iceberg}"
    defs = load_with_lake(sandbox, defs_yaml(GOOD_TABLE, source=source))
    job = defs.resolve_job_def("shop_iceberg_maintenance")
    assert job.description is not None
    assert "raw_shop.sales__orders" in job.description


def test_a_source_without_iceberg_tables_has_no_maintenance(sandbox: DefsFolderSandbox) -> None:
    defs = load(sandbox, defs_yaml(GOOD_TABLE))
    assert not list(defs.schedules or [])
    assert not list(defs.jobs or [])


WAL_TABLE = GOOD_TABLE + "      incremental: {mode: wal, settle_lag: 5m}\n"


def test_wal_tables_of_a_source_share_one_wal_sensor_and_have_no_change_sensor(
    sandbox: DefsFolderSandbox,
) -> None:
    defs = load(sandbox, defs_yaml(WAL_TABLE))
    sensors = {s.name: s for s in defs.sensors or []}
    assert set(sensors) == {"postgres_shop__wal"}
    sensor = sensors["postgres_shop__wal"]
    assert sensor.required_resource_keys == {"postgres_shop_source"}
    assert sensor.minimum_interval_seconds == 30
    assert "slot etl_assets_shop" in (sensor.description or "")


def test_a_sources_wal_settings_name_its_slot_and_are_validated(
    sandbox: DefsFolderSandbox,
) -> None:
    source = "{name: shop, dsn_env: SHOP_DSN, wal: {slot: lake_slot, interval_seconds: 10}}"
    defs = load(sandbox, defs_yaml(WAL_TABLE, source=source))
    [sensor] = defs.sensors or []
    assert "slot lake_slot" in (sensor.description or "")
    assert sensor.minimum_interval_seconds == 10
    bad = "{name: shop, dsn_env: SHOP_DSN, wal: {slot: Lake-Slot}}"
    assert "should match pattern" in load_error(sandbox, defs_yaml(WAL_TABLE, source=bad))


def test_change_column_mode_needs_its_change_column(sandbox: DefsFolderSandbox) -> None:
    text = defs_yaml(GOOD_TABLE + "      incremental: {settle_lag: 5m}\n")
    message = load_error(sandbox, text)
    assert "table sales.orders" in message
    assert "`change_column` is required in change_column mode" in message
