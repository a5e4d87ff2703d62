"""The demo source: a small shop with orders, payments and page views over 21 days.

The data is a pure function of the row number (no randomness, no clock), so every run of the
demo and the tests sees the same rows. It covers the types users meet most: numeric(12,2),
timestamptz, a timestamp without time zone, jsonb, uuid, text[] with NULL elements, an enum,
char(n) and nullable columns, plus rows exactly on window boundaries and rows whose partition
column is NULL.
"""

from __future__ import annotations

import datetime as dt

import psycopg
from psycopg import sql

DEMO_START = dt.date(2026, 10, 1)
DEMO_DAYS = 21
ORDERS_PER_DAY = 400
VIEWS_PER_DAY = 600
READER_ROLE = "etl_reader"

SCHEMA_SQL = """
CREATE SCHEMA sales;
CREATE SCHEMA web;
CREATE TYPE sales.order_status AS ENUM ('placed', 'paid', 'shipped', 'delivered', 'cancelled');

CREATE TABLE sales.orders (
    order_id     bigint PRIMARY KEY,
    customer_id  integer NOT NULL,
    placed_at    timestamptz NOT NULL,
    status       sales.order_status NOT NULL,
    total        numeric(12, 2) NOT NULL,
    currency     char(3) NOT NULL,
    tags         text[],
    attributes   jsonb,
    external_ref uuid NOT NULL,
    note         text,
    updated_at   timestamptz NOT NULL
);
CREATE INDEX ON sales.orders (placed_at);
CREATE INDEX ON sales.orders (updated_at);

CREATE TABLE sales.payments (
    payment_id bigint PRIMARY KEY,
    order_id   bigint NOT NULL REFERENCES sales.orders,
    paid_at    timestamptz NOT NULL,
    amount     numeric(12, 2) NOT NULL,
    method     text NOT NULL,
    card_last4 char(4),
    details    jsonb,
    updated_at timestamptz NOT NULL
);
CREATE INDEX ON sales.payments (paid_at);
CREATE INDEX ON sales.payments (updated_at);

-- viewed_at is wall-clock time in Europe/Berlin, as many web logs store it.
CREATE TABLE web.page_views (
    view_id     uuid PRIMARY KEY,
    viewed_at   timestamp,
    session_id  uuid NOT NULL,
    url         text NOT NULL,
    referrer    text,
    duration_ms integer,
    is_bot      boolean NOT NULL
);
CREATE INDEX ON web.page_views (viewed_at);
-- Its WAL sensor learns a deleted row's window from the old row, which must carry viewed_at.
ALTER TABLE web.page_views REPLICA IDENTITY FULL;
"""

# h(g, salt) is a deterministic 31-bit pseudo-random integer of the row number.
DATA_SQL = """
CREATE FUNCTION pg_temp.h(g bigint, salt text) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT ('x' || substr(md5(g::text || salt), 1, 8))::bit(32)::int::bigint & 2147483647
$$;

INSERT INTO sales.orders
SELECT g,
       1 + pg_temp.h(g, 'customer') % 2000,
       {start}::timestamptz + (g - 1) * (interval '1 day' / {orders_per_day}),
       (ARRAY['placed', 'paid', 'shipped', 'delivered', 'cancelled'])
           [1 + pg_temp.h(g, 'status') % 5]::sales.order_status,
       round((pg_temp.h(g, 'total') % 5000000) / 100.0, 2),
       (ARRAY['EUR', 'USD', 'GBP'])[1 + pg_temp.h(g, 'currency') % 3],
       CASE pg_temp.h(g, 'tags') % 4
           WHEN 0 THEN NULL
           WHEN 1 THEN ARRAY[]::text[]
           WHEN 2 THEN ARRAY['gift', NULL, 'express']
           ELSE ARRAY['repeat-customer'] END,
       CASE WHEN pg_temp.h(g, 'attrs') % 10 = 0 THEN NULL
            ELSE jsonb_build_object(
                'channel', (ARRAY['web', 'app', 'store'])[1 + pg_temp.h(g, 'channel') % 3],
                'items', 1 + pg_temp.h(g, 'items') % 6,
                'coupon', CASE WHEN g % 7 = 0 THEN 'AUTUMN10' END) END,
       md5(g::text || 'ref')::uuid,
       CASE WHEN g % 11 = 0 THEN 'leave at the door; ring twice — ✓' END,
       {start}::timestamptz + (g - 1) * (interval '1 day' / {orders_per_day})
           + (pg_temp.h(g, 'upd') % 86400) * interval '1 second'
FROM generate_series(1, {orders}) AS g;

INSERT INTO sales.payments
SELECT o.order_id * 10 + 1,
       o.order_id,
       o.placed_at + (pg_temp.h(o.order_id, 'pay') % 7200) * interval '1 second',
       o.total,
       (ARRAY['card', 'paypal', 'invoice'])[1 + pg_temp.h(o.order_id, 'method') % 3],
       CASE WHEN pg_temp.h(o.order_id, 'method') % 3 = 0
            THEN lpad((pg_temp.h(o.order_id, 'card') % 10000)::text, 4, '0') END,
       jsonb_build_object('provider_ref', md5(o.order_id::text || 'psp'),
                          'attempts', 1 + o.order_id % 3),
       o.updated_at
FROM sales.orders o
WHERE o.status <> 'placed';

INSERT INTO web.page_views
SELECT md5(g::text || 'view')::uuid,
       CASE WHEN g % 5000 = 17 THEN NULL
            ELSE {start}::timestamp + (g - 1) * (interval '1 day' / {views_per_day}) END,
       md5((g / 8)::text || 'session')::uuid,
       (ARRAY['/', '/products', '/products/42', '/cart', '/checkout', '/help'])
           [1 + pg_temp.h(g, 'url') % 6],
       CASE WHEN pg_temp.h(g, 'ref') % 3 = 0 THEN 'https://search.example/?q=shoes' END,
       CASE WHEN g % 13 = 0 THEN NULL ELSE (pg_temp.h(g, 'dur') % 600000)::integer END,
       pg_temp.h(g, 'bot') % 20 = 0
FROM generate_series(1, {views}) AS g;
"""


def seed_demo(conninfo: str, reader_password: str) -> None:
    """Create the demo schema and rows, and a read-only role `etl_reader` to extract with."""
    start = sql.Literal(DEMO_START.isoformat())
    data = sql.SQL(DATA_SQL).format(
        start=start,
        orders_per_day=sql.Literal(ORDERS_PER_DAY),
        views_per_day=sql.Literal(VIEWS_PER_DAY),
        orders=sql.Literal(ORDERS_PER_DAY * DEMO_DAYS),
        views=sql.Literal(VIEWS_PER_DAY * DEMO_DAYS),
    )
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(sql.SQL(SCHEMA_SQL))
        connection.execute(data)
        connection.execute("ANALYZE")
        create_reader_role(connection, reader_password, schemas=("sales", "web"))


def create_reader_role(
    connection: psycopg.Connection, password: str, schemas: tuple[str, ...]
) -> None:
    """A login role that can only read `schemas`, the activity view and replication slots.

    That is all extraction needs: `REPLICATION` lets the WAL sensor read its slot (on RDS the
    same comes from `GRANT rds_replication`).
    """
    role = sql.Identifier(READER_ROLE)
    exists = connection.execute(
        "SELECT 1 FROM pg_roles WHERE rolname = %s", (READER_ROLE,)
    ).fetchone()
    verb = sql.SQL("ALTER") if exists else sql.SQL("CREATE")
    connection.execute(
        sql.SQL("{verb} ROLE {role} LOGIN REPLICATION PASSWORD {password}").format(
            verb=verb, role=role, password=sql.Literal(password)
        )
    )
    # Change sensors must see every open transaction to be safe against late commits.
    connection.execute(sql.SQL("GRANT pg_read_all_stats TO {}").format(role))
    for schema in schemas:
        name = sql.Identifier(schema)
        connection.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(name, role))
        connection.execute(
            sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(name, role)
        )
