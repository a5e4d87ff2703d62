"""The Iceberg catalog the lake's Iceberg tables are registered in: SQL, Glue or REST.

A table declared `format: iceberg` is one Iceberg table in this catalog (see
`etl_assets/lib/lake/iceberg.py`). Credentials never sit in configuration: the SQL catalog's
URL (which may hold a password) and a REST catalog's credential or token are bound to
environment variables with `dg.EnvVar`; Glue and S3 use the standard AWS chain.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field, PrivateAttr

from etl_assets.lib.errors import DeclarationError

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

CATALOG_KINDS = ("sql", "glue", "rest")


class IcebergCatalog(dg.ConfigurableResource):
    """Where Iceberg tables are registered, and where their files go (the warehouse)."""

    kind: str = Field(
        default="sql",
        description=(
            "sql: a catalog in a relational database (Postgres); glue: AWS Glue; rest: an "
            "Iceberg REST catalog (S3 Tables, Polaris, Lakekeeper, Nessie, ...)."
        ),
    )
    uri: str | None = Field(
        default=None,
        description=(
            "sql: the SQLAlchemy URL of the catalog's database, e.g. "
            "postgresql+psycopg2://user:password@host:5432/iceberg (bind with dg.EnvVar); "
            "rest: the catalog's URL."
        ),
    )
    warehouse: str | None = Field(
        default=None,
        description=(
            "sql and glue: the S3 location under which new tables' files go (default: "
            "s3://<lake bucket>/<lake prefix>/iceberg); rest: the warehouse name or location "
            "the catalog expects."
        ),
    )
    name: str = Field(
        default="etl_assets", description="The catalog's name, as pyiceberg knows it."
    )
    credential: str | None = Field(
        default=None,
        description="rest: an OAuth2 client credential (client_id:secret); bind with dg.EnvVar.",
    )
    token: str | None = Field(
        default=None, description="rest: a bearer token; bind with dg.EnvVar."
    )
    properties: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Further pyiceberg catalog properties (no secrets: those go in the fields above)."
        ),
    )

    _catalog: Any = PrivateAttr(default=None)

    def catalog(
        self, *, default_warehouse: str, s3_endpoint: str | None, region: str | None
    ) -> Catalog:
        """The catalog, loaded once; its file IO reaches S3 at `s3_endpoint` (None: AWS)."""
        if self._catalog is None:
            # pyiceberg is imported by the loads that use a catalog, not by every process.
            from pyiceberg.catalog import load_catalog  # noqa: PLC0415

            self._catalog = load_catalog(
                self.name,
                **self.catalog_properties(
                    default_warehouse=default_warehouse, s3_endpoint=s3_endpoint, region=region
                ),
            )
        return self._catalog

    def catalog_properties(
        self, *, default_warehouse: str, s3_endpoint: str | None, region: str | None
    ) -> dict[str, str]:
        """The catalog's properties for pyiceberg (with the secrets bound to it)."""
        if self.kind not in CATALOG_KINDS:
            raise DeclarationError(
                f"unknown Iceberg catalog {self.kind!r} (ETL_ICEBERG_CATALOG): use one of "
                f"{', '.join(CATALOG_KINDS)}"
            )
        properties: dict[str, str] = {
            "type": self.kind,
            "warehouse": self.warehouse or default_warehouse,
        }
        if self.kind in ("sql", "rest"):
            if not self.uri:
                raise DeclarationError(
                    f"the {self.kind} Iceberg catalog needs its uri (ETL_ICEBERG_CATALOG_URI)"
                )
            properties["uri"] = self.uri
        if region:
            properties["s3.region"] = region
            if self.kind == "glue":
                properties["glue.region"] = region
        if s3_endpoint:
            # Glue's endpoint comes from the AWS chain (AWS_ENDPOINT_URL_GLUE, AWS_ENDPOINT_URL).
            properties["s3.endpoint"] = s3_endpoint
        if self.credential:
            properties["credential"] = self.credential
        if self.token:
            properties["token"] = self.token
        return {**properties, **self.properties}
