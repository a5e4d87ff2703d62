"""What the Postgres tests share: a small events table, and an extract over its windows."""

import pytest

from etl_assets_tests.support import run_sql


@pytest.fixture
def events_db(source_db: str) -> str:
    run_sql(
        source_db,
        """
        CREATE TABLE events (id bigint PRIMARY KEY, created_at timestamptz, amount numeric(8, 2),
                             label text);
        INSERT INTO events
        SELECT g, timestamptz '2026-10-01 00:00+00' + (g - 1) * interval '1 hour', g * 1.5, 'e' || g
        FROM generate_series(1, 48) g;
        """,
    )
    return source_db
