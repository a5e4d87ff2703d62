"""The Iceberg catalog resource: the properties each kind of catalog is loaded with."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from etl_assets.lib.errors import DeclarationError
from etl_assets.resources.catalog import IcebergCatalog

WAREHOUSE = "s3://lake/prefix/iceberg"


def test_a_sql_catalog_is_its_database_and_the_lakes_warehouse() -> None:
    catalog = IcebergCatalog(uri="postgresql+psycopg2://etl:pw@db:5432/iceberg")
    assert catalog.catalog_properties(
        default_warehouse=WAREHOUSE, s3_endpoint=None, region=None
    ) == {
        "type": "sql",
        "uri": "postgresql+psycopg2://etl:pw@db:5432/iceberg",
        "warehouse": "s3://lake/prefix/iceberg",
    }


def test_s3_is_reached_at_the_lakes_endpoint_and_region_and_glue_in_that_region() -> None:
    catalog = IcebergCatalog(kind="glue", warehouse="s3://tables/warehouse")
    assert catalog.catalog_properties(
        default_warehouse="s3://lake/iceberg",
        s3_endpoint="http://127.0.0.1:9000",
        region="eu-west-1",
    ) == {
        "type": "glue",
        "warehouse": "s3://tables/warehouse",
        "s3.endpoint": "http://127.0.0.1:9000",
        "s3.region": "eu-west-1",
        "glue.region": "eu-west-1",
    }


def test_a_rest_catalog_carries_its_credential_token_and_extra_properties() -> None:
    catalog = IcebergCatalog(
        kind="rest",
        uri="https://polaris.example.com/api/catalog",
        warehouse="analytics",
        credential="client:secret",
        token="bearer-token",
        properties={"scope": "PRINCIPAL_ROLE:ALL"},
    )
    assert catalog.catalog_properties(
        default_warehouse=WAREHOUSE, s3_endpoint=None, region=None
    ) == {
        "type": "rest",
        "uri": "https://polaris.example.com/api/catalog",
        "warehouse": "analytics",
        "credential": "client:secret",
        "token": "bearer-token",
        "scope": "PRINCIPAL_ROLE:ALL",
    }


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("hive", "unknown Iceberg catalog 'hive' (ETL_ICEBERG_CATALOG): use one of"),
        ("sql", "the sql Iceberg catalog needs its uri (ETL_ICEBERG_CATALOG_URI)"),
        ("rest", "the rest Iceberg catalog needs its uri (ETL_ICEBERG_CATALOG_URI)"),
    ],
)
def test_a_catalog_it_cannot_load_is_refused_saying_which_setting(kind: str, message: str) -> None:
    with pytest.raises(DeclarationError, match=re.escape(message)):
        IcebergCatalog(kind=kind).catalog_properties(
            default_warehouse=WAREHOUSE, s3_endpoint=None, region=None
        )


LOADED_MODULES = """
import sys
import etl_assets.definitions
import etl_assets.lib.load
import etl_assets.resources.lake_io_manager
etl_assets.definitions.defs()
print(sorted(name for name in sys.modules if name.split(".")[0] in ("pyiceberg", "pandas")))
"""


def test_only_loads_that_use_a_catalog_import_pyiceberg() -> None:
    # The definitions (an Iceberg table among them) and the load path of a Parquet table.
    loaded = subprocess.run(
        [sys.executable, "-c", LOADED_MODULES], capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]"
