"""The benchmark's source table: ~20 columns of mixed types, rows spread over 30 days."""

from __future__ import annotations

import psycopg
from psycopg import sql

SCHEMA = "bench"
FIRST_DAY = "2026-09-01"
DAYS = 30

DDL = """
CREATE SCHEMA IF NOT EXISTS bench;
DO $$ BEGIN
    CREATE TYPE bench.tier AS ENUM ('free', 'pro', 'enterprise');
EXCEPTION WHEN duplicate_object THEN NULL; END $$;
CREATE TABLE {table} (
    id          bigint PRIMARY KEY,
    created_at  timestamptz NOT NULL,
    account_id  bigint NOT NULL,
    amount      numeric(12, 2) NOT NULL,
    quantity    integer NOT NULL,
    score       double precision,
    is_paid     boolean NOT NULL,
    currency    char(3) NOT NULL,
    country     text NOT NULL,
    note        text,
    tags        text[],
    payload     jsonb,
    ref         uuid NOT NULL,
    event_date  date NOT NULL,
    tier        bench.tier NOT NULL,
    session_id  bigint,
    duration_ms integer,
    discount    numeric(12, 2),
    referrer    text,
    updated_at  timestamptz NOT NULL
);
"""

ROWS = """
INSERT INTO {table}
SELECT g,
       {first}::timestamptz + (g - 1) * ({days} * interval '1 day' / {rows}),
       1 + (g * 7919) % 50000,
       round(((g * 104729) % 1000000) / 100.0, 2),
       (1 + g % 9)::int,
       CASE WHEN g % 17 = 0 THEN NULL ELSE (g % 1000) / 7.0 END,
       g % 3 = 0,
       (ARRAY['EUR', 'USD', 'GBP', 'JPY'])[1 + g % 4],
       (ARRAY['de', 'fr', 'us', 'jp', 'br', 'in'])[1 + g % 6],
       CASE WHEN g % 5 = 0 THEN NULL ELSE 'note number ' || g END,
       CASE g % 4 WHEN 0 THEN NULL WHEN 1 THEN ARRAY['a', 'b'] ELSE ARRAY['x', NULL, 'z'] END,
       CASE WHEN g % 10 = 0 THEN NULL
            ELSE jsonb_build_object('k', g % 100, 'flag', g % 2 = 0, 'name', 'item ' || g % 37) END,
       md5(g::text)::uuid,
       ({first}::timestamptz + (g - 1) * ({days} * interval '1 day' / {rows}))::date,
       (ARRAY['free', 'pro', 'enterprise'])[1 + g % 3]::bench.tier,
       CASE WHEN g % 7 = 0 THEN NULL ELSE g / 13 END,
       CASE WHEN g % 11 = 0 THEN NULL ELSE ((g * 31) % 600000)::int END,
       CASE WHEN g % 4 = 0 THEN round((g % 500) / 100.0, 2) END,
       CASE WHEN g % 3 = 0 THEN 'https://ref.example/' || g % 97 END,
       {first}::timestamptz + (g - 1) * ({days} * interval '1 day' / {rows}) + interval '1 hour'
FROM generate_series(1::bigint, {rows}) AS g;
"""


def table_name(rows: int) -> str:
    """`events_1m`, `events_5m`, ..."""
    return f"events_{rows // 1_000_000}m" if rows >= 1_000_000 else f"events_{rows}"


def ensure_table(conninfo: str, rows: int) -> str:
    """Create and fill `bench.<table_name(rows)>` unless it already holds `rows` rows."""
    name = table_name(rows)
    table = sql.Identifier(SCHEMA, name)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        exists = connection.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (f"{SCHEMA}.{name}",)
        ).fetchone()
        if exists and exists[0]:
            count = connection.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
            if count and count[0] == rows:
                return name
            connection.execute(sql.SQL("DROP TABLE {}").format(table))
        connection.execute(sql.SQL(DDL).format(table=table))
        connection.execute(
            sql.SQL(ROWS).format(
                table=table,
                first=sql.Literal(FIRST_DAY),
                days=sql.Literal(DAYS),
                rows=sql.Literal(rows),
            )
        )
        connection.execute(sql.SQL("CREATE INDEX ON {} (created_at)").format(table))
        connection.execute(sql.SQL("VACUUM ANALYZE {}").format(table))
    return name
