from etl_assets.components.postgres_tables import PostgresTablesComponent

__all__ = ["PostgresTablesComponent"]
