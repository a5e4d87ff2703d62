import dagster as dg

from etl_assets.components.table_assets import lake_resources
from etl_assets.lib.lake.glue import GlueRegistration
from etl_assets.lib.lake.objects import ServerSideEncryption
from etl_assets.resources.catalog import IcebergCatalog
from etl_assets.resources.lake import S3Lake
from etl_assets.resources.settings import optional_env


def iceberg_catalog() -> IcebergCatalog | None:
    """The Iceberg catalog the environment names, if it names one."""
    kind = optional_env("ETL_ICEBERG_CATALOG")
    uri = optional_env("ETL_ICEBERG_CATALOG_URI")
    if kind is None and uri is None:
        return None
    return IcebergCatalog(
        kind=kind or "sql",
        uri=uri,
        warehouse=optional_env("ETL_ICEBERG_WAREHOUSE"),
        credential=optional_env("ETL_ICEBERG_REST_CREDENTIAL"),
        token=optional_env("ETL_ICEBERG_REST_TOKEN"),
    )


@dg.definitions
def resources() -> dg.Definitions:
    """The lake every asset writes to: raw assets through `lake`, others through its IO manager.

    docs/configuration.md lists each variable. The Iceberg catalog is configured when
    ETL_ICEBERG_CATALOG_URI (SQL, REST) or ETL_ICEBERG_CATALOG (glue) is set.
    """
    lake = S3Lake(
        bucket=dg.EnvVar("ETL_LAKE_BUCKET"),
        prefix=optional_env("ETL_LAKE_PREFIX") or "",
        sse=optional_env("ETL_LAKE_SSE") or ServerSideEncryption.S3.value,
        kms_key_id=optional_env("ETL_LAKE_KMS_KEY_ID"),
        glue_registration=optional_env("ETL_LAKE_GLUE_REGISTRATION") or GlueRegistration.OFF.value,
        glue_region=optional_env("ETL_LAKE_GLUE_REGION"),
        glue_endpoint_url=optional_env("ETL_LAKE_GLUE_ENDPOINT_URL"),
        glue_database_prefix=optional_env("ETL_LAKE_GLUE_DATABASE_PREFIX") or "",
        iceberg=iceberg_catalog(),
    )
    # Each run executes its steps in the run's own process: a launched run starts one Python
    # process instead of two (the multiprocess default spawns one more per step, ~2-4 s each).
    # Runs are the unit of parallelism here: the run queue and the source pools bound them.
    return dg.Definitions(
        resources=lake_resources(lake),
        executor=dg.in_process_executor,
    )
