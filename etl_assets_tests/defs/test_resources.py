"""The lake resource's environment variables, and the documentation that lists them."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import pytest
import yaml

from etl_assets.components.table_assets import LAKE_IO_MANAGER_KEY
from etl_assets.defs.resources import resources
from etl_assets.resources.lake_io_manager import LakeIOManager

ROOT = Path(__file__).resolve().parents[2]
ENV_NAME = re.compile(r"^#?\s*([A-Z][A-Z0-9_]+)=", re.MULTILINE)


def lake_from_environment() -> LakeIOManager:
    bound = resources().resources
    assert bound is not None
    manager = bound[LAKE_IO_MANAGER_KEY]
    with dg.build_resources({"lake": manager}) as built:
        lake = built.lake
    assert isinstance(lake, LakeIOManager)
    return lake


def test_the_lake_defaults_to_sse_s3_and_no_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETL_LAKE_BUCKET", "company-lake")
    for name in ("ETL_LAKE_PREFIX", "ETL_LAKE_SSE", "ETL_LAKE_KMS_KEY_ID"):
        monkeypatch.delenv(name, raising=False)
    lake = lake_from_environment().lake
    assert (lake.bucket, lake.prefix, lake.sse, lake.kms_key_id) == (
        "company-lake",
        "",
        "AES256",
        None,
    )


def test_the_lake_takes_its_prefix_and_sse_kms_key_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    monkeypatch.setenv("ETL_LAKE_BUCKET", "company-lake")
    monkeypatch.setenv("ETL_LAKE_PREFIX", "lake")
    monkeypatch.setenv("ETL_LAKE_SSE", "aws:kms")
    monkeypatch.setenv("ETL_LAKE_KMS_KEY_ID", key)
    lake = lake_from_environment().lake
    assert (lake.prefix, lake.sse, lake.kms_key_id) == ("lake", "aws:kms", key)
    assert (
        lake.layout()
        .uri(lake.layout().unpartitioned_key(["x"]))
        .startswith("s3://company-lake/lake/")
    )


GLUE_VARIABLES = (
    "ETL_LAKE_GLUE_REGISTRATION",
    "ETL_LAKE_GLUE_REGION",
    "ETL_LAKE_GLUE_ENDPOINT_URL",
    "ETL_LAKE_GLUE_DATABASE_PREFIX",
)


def test_glue_registration_is_off_unless_the_environment_turns_it_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ETL_LAKE_BUCKET", "company-lake")
    for name in GLUE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    lake = lake_from_environment().lake
    assert (lake.glue_registration, lake.glue_region, lake.glue_endpoint_url) == ("off", None, None)
    assert lake.glue_database_prefix == ""
    values = ("projection", "eu-central-1", "https://glue.eu-central-1.amazonaws.com", "prod_")
    for name, value in zip(GLUE_VARIABLES, values, strict=True):
        monkeypatch.setenv(name, value)
    lake = lake_from_environment().lake
    settings = (
        lake.glue_registration,
        lake.glue_region,
        lake.glue_endpoint_url,
        lake.glue_database_prefix,
    )
    assert settings == values
    table = lake.glue_table(
        dg.AssetKey(["raw", "shop", "sales", "orders"]),
        "day",
        dg.DailyPartitionsDefinition("2026-10-01"),
    )
    assert table is not None
    assert table.qualified_name == "prod_shop.raw_sales_orders"
    assert table.projection is not None


def variables_read_by_the_project() -> set[str]:
    """Every variable named in the code, the table YAML and dagster.yaml."""
    names: set[str] = set()
    for path in (ROOT / "etl_assets" / "defs").rglob("*.py"):
        names |= set(re.findall(r"(?:EnvVar|optional_env)\(\"([A-Z0-9_]+)\"\)", path.read_text()))
    for path in (ROOT / "etl_assets" / "defs").rglob("defs.yaml"):
        source = yaml.safe_load(path.read_text())["attributes"]["source"]
        names |= {source[field] for field in ("dsn_env", "password_env") if field in source}
    names |= set(re.findall(r"env: ([A-Z0-9_]+)", (ROOT / "dagster.yaml").read_text()))
    return names


def test_env_example_and_the_docs_list_every_variable_the_project_reads() -> None:
    read = variables_read_by_the_project()
    assert {"ETL_LAKE_BUCKET", "ETL_SHOP_PG_DSN", "ETL_ASSETS_DAGSTER_PG_URL"} <= read
    example = set(ENV_NAME.findall((ROOT / ".env.example").read_text()))
    assert read - example == set(), ".env.example misses variables the project reads"
    doc = (ROOT / "docs" / "configuration.md").read_text()
    table = doc[doc.index("## Environment variables") :]
    table = table[: table.index("\n## ")]
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))
    assert example - documented == set(), "the variable table of docs/configuration.md misses some"


ICEBERG_VARIABLES = (
    "ETL_ICEBERG_CATALOG",
    "ETL_ICEBERG_CATALOG_URI",
    "ETL_ICEBERG_WAREHOUSE",
    "ETL_ICEBERG_REST_CREDENTIAL",
    "ETL_ICEBERG_REST_TOKEN",
)


def test_no_iceberg_catalog_unless_the_environment_names_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ETL_LAKE_BUCKET", "company-lake")
    for name in ICEBERG_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert lake_from_environment().lake.iceberg is None


def test_a_rest_catalog_takes_its_secrets_from_the_environment_unseen_by_the_definitions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ETL_LAKE_BUCKET", "company-lake")
    monkeypatch.setenv("ETL_ICEBERG_CATALOG", "rest")
    monkeypatch.setenv("ETL_ICEBERG_CATALOG_URI", "https://catalog.example.com/api/catalog")
    monkeypatch.setenv("ETL_ICEBERG_WAREHOUSE", "analytics")
    monkeypatch.setenv("ETL_ICEBERG_REST_CREDENTIAL", "client:very-secret")
    monkeypatch.delenv("ETL_ICEBERG_REST_TOKEN", raising=False)
    definitions = resources()
    # The definitions hold the variables' names, never their values.
    assert "very-secret" not in repr(definitions.resources)
    catalog = lake_from_environment().lake.iceberg
    assert catalog is not None
    assert (catalog.kind, catalog.uri, catalog.warehouse, catalog.credential) == (
        "rest",
        "https://catalog.example.com/api/catalog",
        "analytics",
        "client:very-secret",
    )
