"""What a load costs the source while it runs: VACUUM and the load's snapshot."""

from __future__ import annotations

import re
import threading
import time

import psycopg

from etl_assets_tests.fault_worker import DAY, SMALL_BATCHES, slowly
from etl_assets_tests.support import Pipeline, run_sql, spec

WIDE_TABLE = """
CREATE TABLE wide (id bigint PRIMARY KEY, created_at timestamptz NOT NULL, body text);
INSERT INTO wide
SELECT g, timestamptz '2026-10-01 00:00+00' + g * interval '1 s', md5(g::text) || repeat('x', 60)
FROM generate_series(1, 60000) g;
CREATE TABLE hot (id int PRIMARY KEY, counter int NOT NULL);
INSERT INTO hot SELECT g, 0 FROM generate_series(1, 10000) g;
"""
NOT_YET_REMOVABLE = re.compile(r"(\d+) are dead but not yet removable")


def vacuum_hot(conninfo: str) -> int:
    """VACUUM the writers' table; how many dead rows it had to leave in place."""
    messages: list[str] = []
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.add_notice_handler(lambda notice: messages.append(notice.message_primary or ""))
        connection.execute("VACUUM (VERBOSE) hot")
    found = [int(m[1]) for text in messages if (m := NOT_YET_REMOVABLE.search(text))]
    assert found, messages
    return found[0]


def test_a_load_holds_back_vacuum_only_while_its_snapshot_is_open(pipeline: Pipeline) -> None:
    run_sql(pipeline.conninfo, WIDE_TABLE)
    table = spec(table="wide", columns=("id", "created_at", "body"))
    results: list[bool] = []
    load = threading.Thread(
        target=lambda: results.append(
            pipeline.materialize(
                table, partition=DAY, transform=slowly(0.5), source=SMALL_BATCHES
            ).success
        )
    )
    load.start()
    deadline = time.monotonic() + 60
    while not _load_is_reading(pipeline.conninfo):
        assert time.monotonic() < deadline, "the load never started reading"
        time.sleep(0.05)
    # A writer workload on another table while the load's snapshot is open.
    run_sql(pipeline.conninfo, "UPDATE hot SET counter = counter + 1")
    held_back = vacuum_hot(pipeline.conninfo)
    load.join()
    released = vacuum_hot(pipeline.conninfo)
    assert results == [True]
    # Every row version the writers replaced must wait for the load, and only for the load.
    assert held_back == 10_000
    assert released == 0


def _load_is_reading(conninfo: str) -> bool:
    with psycopg.connect(conninfo, autocommit=True) as connection:
        row = connection.execute(
            # Tests on other workers load tables of the same name in their own databases.
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name LIKE 'raw/testsrc/public/wide%' AND query LIKE 'COPY%'"
        ).fetchone()
    return bool(row and row[0])
