"""How the command line reaches a source: the environment variables it is told to read."""

from __future__ import annotations

import os

from etl_assets.lib.postgres.session import ConnectionSettings


def env_settings(dsn_env: str | None, password_env: str | None) -> ConnectionSettings:
    """The source whose DSN and password are in these variables (neither: libpq's own)."""
    dsn = ""
    if dsn_env:
        if dsn_env not in os.environ:
            raise ValueError(f"environment variable {dsn_env} is not set")
        dsn = os.environ[dsn_env]
    password = None
    if password_env:
        if password_env not in os.environ:
            raise ValueError(f"environment variable {password_env} is not set")
        password = os.environ[password_env]
    return ConnectionSettings(conninfo=dsn, password=password, statement_timeout_ms=60_000)
